//! Pod networking without Kubernetes: the test makes two network namespaces of its own,
//! "pod" and "peer", joined by a veth, starts the real virt-launcher inside "pod", has
//! virt-handler's network code prepare that namespace (bridge, tap, nftables NAT) and the
//! launcher's DHCP server give the guest its address, then boots the Ferrovirt test guest.
//! Masquerade: the guest printed 10.0.2.2 (from DHCP); an HTTP GET from "peer" to the
//! pod's address reaches the guest's httpd on the forwarded port; the port not listed in
//! `ports` is not reachable from "peer" (though the guest serves it: reachable from the
//! pod's own namespace on the guest's address). Bridge: the guest took the pod's address
//! and MAC by DHCP and answers on any port at that address. passt: libvirt starts passt
//! in "pod"; the guest takes the pod's address from passt's DHCP and serves the listed
//! port (only) at it. Every address used is one
//! this test created inside its own namespaces; nothing is routed off the machine.

/// Not a test of the suite: bench/network.sh runs it (`--ignored`).
#[path = "network/bench.rs"]
mod bench;
mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{
    GUEST_LINE, KERNEL_BOOT_CONTAINER, cache, guest_cmdline, start_launcher_wrapped, wait_for_line,
};
use ferrovirt_node_contract::client::LauncherClient;
use ferrovirt_node_contract::paths::{LAUNCHER_SOCKET, SERIAL_LOG};
use virt_handler::config::Virtualization;
use virt_handler::domain::{Input, convert_with};
use virt_handler::network::{self, Attachment, NetNs};
use virt_handler::volumes::{plan, prepare, prepare_firmware};

const POD_IP: &str = "10.199.0.2";
const PEER_IP: &str = "10.199.0.1";
/// Dual-stack, as the real node's pods are: a ULA of the test's own.
const POD_IP6: &str = "fd99:199::2";
const PEER_IP6: &str = "fd99:199::1";

/// A named network namespace (`ip netns add`), deleted on drop.
struct Ns(String);

impl Ns {
    fn new(test: &str, role: &str) -> Ns {
        let name = format!("fvnet-{}-{test}-{role}", std::process::id());
        sh(&["ip", "netns", "add", &name]);
        let ns = Ns(name);
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }
    fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.0)
    }
    fn ip(&self, args: &[&str]) {
        let mut v = vec!["ip", "-n", &self.0];
        v.extend_from_slice(args);
        sh(&v);
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn sh(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e} (install iproute2 and nftables: hack/setup.sh)",
                args[0]
            )
        });
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `f` on a thread that has entered the namespace at `ns` (setns).
fn in_netns<T: Send + 'static>(ns: &Path, f: impl FnOnce() -> T + Send + 'static) -> T {
    let file = std::fs::File::open(ns).unwrap();
    std::thread::spawn(move || {
        use std::os::fd::AsRawFd;
        // SAFETY: setns(2) on an fd we own, on this thread only.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
        f()
    })
    .join()
    .unwrap()
}

/// An HTTP/1.0 GET; the whole answer, or the connection error.
fn http_get(addr: &str, port: u16) -> std::io::Result<String> {
    let addr: SocketAddr = match addr.contains(':') {
        true => format!("[{addr}]:{port}"),
        false => format!("{addr}:{port}"),
    }
    .parse()
    .unwrap();
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
    let mut body = String::new();
    s.read_to_string(&mut body)?;
    Ok(body)
}

/// Retries a GET while the guest's httpd may still be starting.
fn http_get_eventually(ns: &Path, addr: &'static str, port: u16) -> String {
    let start = Instant::now();
    loop {
        match in_netns(ns, move || http_get(addr, port)) {
            Ok(body) => return body,
            Err(e) if start.elapsed() > Duration::from_secs(60) => {
                panic!("GET http://{addr}:{port}/ never answered: {e}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(300)),
        }
    }
}

/// Two namespaces joined by a veth, the real launcher in "pod" with the namespace
/// prepared for `interface` (a VMI interface on the pod network), the guest booted with
/// the plan's DHCP offers, and the guest's DHCP line seen.
struct Fixture {
    pod: Ns,
    peer: Ns,
    client: LauncherClient,
    plan: network::Plan,
    /// The VMI's directory (serial0.sock, serial0.log).
    dir: PathBuf,
    /// Preparing the namespace; define -> ready line; define -> the guest's DHCP line.
    timings: (Duration, Duration, Duration),
    _launcher: common::Proc,
    _run_dir: tempfile::TempDir,
}

/// The namespaces "pod" (POD_IP) and "peer" (PEER_IP), joined by a veth.
fn pod_and_peer(test: &str) -> (Ns, Ns) {
    let pod = Ns::new(test, "pod");
    let peer = Ns::new(test, "peer");
    // The veth is created inside "pod" with its other end straight in "peer".
    pod.ip(&[
        "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", &peer.0,
    ]);
    pod.ip(&["addr", "add", &format!("{POD_IP}/24"), "dev", "eth0"]);
    peer.ip(&["addr", "add", &format!("{PEER_IP}/24"), "dev", "eth0"]);
    pod.ip(&[
        "addr",
        "add",
        &format!("{POD_IP6}/64"),
        "dev",
        "eth0",
        "nodad",
    ]);
    peer.ip(&[
        "addr",
        "add",
        &format!("{PEER_IP6}/64"),
        "dev",
        "eth0",
        "nodad",
    ]);
    pod.ip(&["link", "set", "eth0", "up"]);
    peer.ip(&["link", "set", "eth0", "up"]);
    (pod, peer)
}

async fn boot(test: &str, interface: serde_json::Value, guest_ip: &str) -> Fixture {
    let cmdline = guest_cmdline();
    let (pod, peer) = pod_and_peer(test);
    let passt = !interface["passtBinding"].is_null() || !interface["binding"].is_null();
    if passt {
        // As in a pod: passt copies the pod's default route to the guest (and takes its
        // template interface from it). It leads to "peer", which has none.
        pod.ip(&["route", "add", "default", "via", PEER_IP]);
        pod.ip(&["-6", "route", "add", "default", "via", PEER_IP6]);
    }

    let uid = format!("net-{test}");
    let vmi: crds::VirtualMachineInstance = serde_json::from_value(serde_json::json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
        "metadata": {"name": "web", "namespace": "default", "uid": uid},
        "spec": {
            "domain": {
                "memory": {"guest": "256Mi"},
                "firmware": {"uuid": "c0ffee00-0000-4000-8000-00000000000a", "kernelBoot": {
                    "kernelArgs": cmdline,
                    "container": {"image": "ferrovirt/guest-kernel:latest", "kernelPath": "/boot/vmlinuz", "initrdPath": "/boot/initrd.img"}
                }},
                "devices": {"interfaces": [interface]}
            },
            "networks": [{"name": "default", "pod": {}}]
        }
    }))
    .unwrap();
    let run_dir = tempfile::Builder::new()
        .prefix("vn")
        .tempdir_in("/tmp")
        .unwrap();
    let dir = run_dir.path().join(&uid);
    std::fs::create_dir_all(&dir).unwrap();

    // The launcher, inside "pod" (nsenter execs it: the child is the launcher itself).
    let netns_arg = format!("--net={}", pod.path().display());
    let launcher =
        start_launcher_wrapped(&["nsenter", &netns_arg, "--"], &dir, "web", &uid, 5, &[]);
    let mut client = LauncherClient::connect(dir.join(LAUNCHER_SOCKET))
        .await
        .unwrap();
    client.ping().await.unwrap();
    let peer_cred = client.peer().expect("SO_PEERCRED gives the launcher's pid");
    assert!(
        !NetNs::of(peer_cred.pid).is_ours().unwrap(),
        "the launcher runs in the test's pod namespace"
    );

    // What the worker does: network, volumes, convert, define and start with DHCP.
    let t0 = Instant::now();
    let spec = vmi.spec.clone();
    let (pid, owner, vmi_dir, vmi_uid) = (peer_cred.pid, peer_cred.uid, dir.clone(), uid.clone());
    let attachment = tokio::task::spawn_blocking(move || {
        network::prepare(&network::Target {
            spec: &spec,
            uid: &vmi_uid,
            hostname: "web",
            pid,
            owner,
            vmi_dir: &vmi_dir,
            registered: &["passt".to_owned()].into(),
        })
    })
    .await
    .unwrap()
    .unwrap_or_else(|e| panic!("{}", ferrovirt_runtime::chain(&e)));
    let network_took = t0.elapsed();
    let Attachment::Pod(net_plan) = attachment.clone() else {
        panic!("expected taps in the pod namespace, got {attachment:?}");
    };
    assert_eq!(
        net_plan.status.entries[0].ip_address.as_deref(),
        Some(POD_IP)
    );

    let plans = plan(&vmi.spec, &dir, &BTreeMap::new(), &Default::default()).unwrap();
    let images =
        virt_handler::volumes::containerdisk::from_store(&vmi.spec, &cache().join("images"));
    prepare_firmware(&vmi.spec.domain, &dir, &images).unwrap();
    prepare(&plans, &dir, &images, None, &uid, "web").unwrap();
    let xml = convert_with(
        &Input {
            namespace: "default",
            name: "web",
            uid: &uid,
            spec: &vmi.spec,
            virtualization: Virtualization::Emulation,
            vmi_dir: &dir,
            kernel_root: &images[KERNEL_BOOT_CONTAINER].launcher,
            volumes: &plans,
            pod_cpus: &[],
            host_nodes: &[],
        },
        &attachment,
    )
    .unwrap();
    if passt {
        assert!(xml.contains("<qemu:arg value='-netdev'/>"), "{xml}");
        // passt runs as the directory's owner (the pod's launcher is uid 107; this
        // test's is root, and passt started as root would run as nobody).
        std::os::unix::fs::chown(&dir, Some(107), Some(107)).unwrap();
    } else {
        assert!(xml.contains("<target dev='tap0' managed='no'/>"), "{xml}");
    }
    let started = Instant::now();
    client
        .define_and_start_net(
            &xml,
            false,
            false,
            net_plan.dhcp.clone(),
            network::passt(&net_plan, &dir),
            Vec::new(),
        )
        .await
        .unwrap_or_else(|e| panic!("{}\n{xml}", ferrovirt_runtime::chain(&e)));

    let serial = dir.join(SERIAL_LOG);
    wait_for_line(&serial, GUEST_LINE);
    let ready = started.elapsed();
    wait_for_line(&serial, &format!("FERROVIRT IP: {guest_ip}"));
    let lease = started.elapsed();
    eprintln!(
        "MEASURE {test}: network prepared in {:.0} ms; define -> ready {:.1} s, -> DHCP lease {:.1} s",
        network_took.as_secs_f64() * 1e3,
        ready.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    let leases = client.leases().await.unwrap();
    if passt {
        assert!(
            leases.is_empty(),
            "passt's DHCP served the guest: {leases:?}"
        );
    } else {
        // The DHCPv6 lease may come before or after this line (masquerade).
        let v4: Vec<_> = leases.iter().filter(|l| !l.ip.contains(':')).collect();
        assert_eq!(v4.len(), 1, "{leases:?}");
        assert_eq!(v4[0].ip, guest_ip);
        assert_eq!(v4[0].mac, net_plan.nics[0].mac);
    }
    Fixture {
        pod,
        peer,
        client,
        plan: net_plan,
        dir,
        timings: (network_took, ready, lease),
        _launcher: launcher,
        _run_dir: run_dir,
    }
}

/// `GET http://ADDR:port/` from `ns` reaches the guest's httpd (retried while it starts).
fn reaches_guest(ns: &Path, addr: &'static str, port: u16) {
    let body = http_get_eventually(ns, addr, port);
    assert!(
        body.contains("ferrovirt guest"),
        "GET {addr} port {port}: {body:?}"
    );
}

/// From the peer, the pod's `addr` forwards port 80 (in `ports`) to the guest and not
/// 8080, which the guest serves too: the pod's own 8080 is closed.
fn forwards_80_only(f: &Fixture, addr: &'static str) {
    reaches_guest(&f.peer.path(), addr, 80);
    let refused = in_netns(&f.peer.path(), move || http_get(addr, 8080));
    assert!(
        refused.is_err(),
        "port 8080 at {addr} is not in ports yet answered: {refused:?}"
    );
}

#[tokio::test]
async fn masquerade_guest_gets_dhcp_and_serves_only_its_ports_through_the_pod_ip() {
    let iface = serde_json::json!({"name": "default", "masquerade": {}, "ports": [{"name": "http", "port": 80}]});
    let mut f = boot("masq", iface, "10.0.2.2").await;

    // The forwarded port, from the peer, through the pod's address; 8080 is served by the
    // guest (from the pod's own namespace, on the guest's address) but not forwarded.
    forwards_80_only(&f, POD_IP);
    reaches_guest(&f.pod.path(), "10.0.2.2", 8080);

    // IPv6, as KubeVirt's masquerade: the guest got fd10:0:2::2 by DHCPv6 from the
    // launcher, and the pod's IPv6 address forwards port 80 (NAT66), not 8080.
    wait_for_line(&f.dir.join(SERIAL_LOG), "FERROVIRT IPV6: fd10:0:2::2");
    let leases = f.client.leases().await.unwrap();
    assert!(
        leases
            .iter()
            .any(|l| l.ip == "fd10:0:2::2" && l.mac == f.plan.nics[0].mac),
        "the DHCPv6 lease: {leases:?}"
    );
    forwards_80_only(&f, POD_IP6);
    reaches_guest(&f.pod.path(), "fd10:0:2::2", 8080);

    f.client.destroy().await.unwrap();
}

#[tokio::test]
async fn bridge_guest_takes_the_pods_address_and_mac() {
    let iface = serde_json::json!({"name": "default", "bridge": {}});
    let mut f = boot("bridge", iface, POD_IP).await;
    // The guest has the pod's MAC (the pod's link got another one).
    let pod_link: serde_json::Value = serde_json::from_slice(
        &Command::new("ip")
            .args(["-n", &f.pod.0, "-j", "link", "show", "eth0"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert_ne!(
        pod_link[0]["address"].as_str(),
        Some(f.plan.nics[0].mac.as_str()),
        "the pod's link kept the MAC the guest took"
    );
    // Any port of the guest at the pod's address, from the peer.
    reaches_guest(&f.peer.path(), POD_IP, 8080);
    f.client.destroy().await.unwrap();
}

#[tokio::test]
async fn passt_guest_takes_the_pods_address_and_serves_only_its_ports() {
    let iface = serde_json::json!({"name": "default", "passtBinding": {}, "ports": [{"name": "http", "port": 80}]});
    let mut f = boot("passt", iface, POD_IP).await;
    // The listed port, from the peer, at the pod's address (passt listens there); 8080,
    // which the guest serves too, is not forwarded.
    forwards_80_only(&f, POD_IP);
    // IPv6 is passt's own: its DHCPv6 gives the guest the pod's IPv6 address, and it
    // forwards the listed port at that address too.
    wait_for_line(
        &f.dir.join(SERIAL_LOG),
        &format!("FERROVIRT IPV6: {POD_IP6}"),
    );
    forwards_80_only(&f, POD_IP6);
    f.client.destroy().await.unwrap();
}
