//! Pod networking on the real node (kubelet, containerd, the CNI bridge, kube-proxy), with
//! virt-api's webhooks in the path. Two VMIs boot at once, each in a launcher pod with a
//! network namespace of its own that virt-handler prepares (docs/networking.md):
//! - "web", masquerade without `ports`: the guest gets 10.0.2.2 by DHCP; `kubectl get vmi`
//!   shows the pod's IP once the guest holds its lease; another pod pings the guest and
//!   GETs its httpd through the pod IP and through a ClusterIP Service made by
//!   `ferroctl expose`;
//! - KubeVirt's own vmi-masquerade.yaml, unchanged (its containerDisk name pushed with the
//!   Ferrovirt guest's disk): admitted by the webhook with its `ports` ([http 80]), boots,
//!   port 80 answers through its pod IP and 8080 (served by the guest, not listed) does
//!   not; from its console the guest pings and GETs "web" through web's pod IP;
//! - "passt", the passt binding plugin (`binding: {name: passt}`, registered in
//!   kubevirt-config's `ferrovirt.networkBindings`) with `ports: [80]`: the guest takes
//!   its launcher pod's IP from passt's DHCP (printed on its console), `kubectl get vmi`
//!   shows it, and from the client pod port 80 answers at it, 8080 does not;
//! - the guest agent's interfaces merged into status.interfaces ("web" and "passt": the
//!   guest's interface name, infoSource "domain, guest-agent", the pod's address kept);
//! - IPv6 (the node's pod network is dual-stack): the masquerade guests get fd10:0:2::2
//!   by DHCPv6 from their launchers and passt's guest its pod's IPv6 address from passt;
//!   status.interfaces[0].ipAddresses lists the pod's IPv4 and IPv6 addresses; from the
//!   client pod the guests answer at their pods' IPv6 addresses, on the listed ports only;
//! - httpGet and tcpSocket probes, run by kubelet against the pod's address: web's
//!   readiness probe (GET :80) makes it Ready, passt's (TCP :8080, not forwarded) keeps it
//!   not Ready with kubelet's Unhealthy Event, and a fourth VMI's liveness probe (TCP
//!   :1500, where nothing listens) fails, which ends that VMI.
//!
//! Every address is inside the node's namespaces, which the harness creates.

use std::time::{Duration, Instant};

use ferrovirt_node_contract::paths::SERIAL_LOG;
use ferrovirt_tests::aggregation::{ferroctl, start_virt_api, virtctl_path};
use ferrovirt_tests::console::Client;
use ferrovirt_tests::node::{RealNode, busybox_layout};
use ferrovirt_tests::wait;
use ferrovirt_tests::{ControlPlane, SYSTEM_NAMESPACE, Stack, TestNamespace, examples_dir, shared};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};

const BOOT_TIMEOUT: Duration = Duration::from_secs(300);
/// The Ferrovirt guest's disk under the name KubeVirt's examples use (e2e.rs too).
const DISK: &str = "kubevirt/cirros-container-disk-demo:devel";
/// The containerDisk vmi-masquerade.yaml names: the image store holds the same guest disk
/// under it.
const FEDORA_DISK: &str = "kubevirt/fedora-with-test-tooling-container-disk:devel";

async fn kubectl(cp: &ControlPlane, ns: &str, args: &[&str]) -> String {
    let mut all = vec!["-n", ns];
    all.extend_from_slice(args);
    cp.kubectl(all)
        .await
        .expect("kubectl runs")
        .expect_success()
        .to_string()
}

/// Runs `script` in the client pod until its output contains `want` (kube-proxy and the
/// guest's httpd may need a moment); returns the last output.
async fn eventually(cp: &ControlPlane, ns: &str, script: &str, want: &str) -> String {
    let start = Instant::now();
    loop {
        let out = cp
            .kubectl(["exec", "-n", ns, "client", "--", "/bin/sh", "-c", script])
            .await
            .expect("kubectl runs");
        let text = format!("{}{}", out.stdout, out.stderr);
        if text.contains(want) || start.elapsed() > Duration::from_secs(60) {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Waits (at most 90 s) until kubelet's `Unhealthy` Events include one of pod
/// `pod_prefix`… with `message` (e.g. "Readiness probe failed"); panics otherwise.
async fn unhealthy(cp: &ControlPlane, ns: &str, pod_prefix: &str, message: &str) {
    let jsonpath = "jsonpath={range .items[*]}{.involvedObject.name} {.message}{\"\\n\"}{end}";
    let args = [
        "get",
        "events",
        "--field-selector",
        "reason=Unhealthy",
        "-o",
        jsonpath,
    ];
    wait::eventually(
        &format!("kubelet's Unhealthy Event {message:?} of pod {pod_prefix}…"),
        Duration::from_secs(90),
        || async {
            let out = kubectl(cp, ns, &args).await;
            out.lines()
                .any(|l| l.starts_with(pod_prefix) && l.contains(message))
                .then_some(())
        },
    )
    .await
}

/// The launcher pod's IPv4 address of the VMI with `uid`.
async fn pod_ip(cp: &ControlPlane, ns: &str, uid: &str) -> String {
    pod_ips(cp, ns, uid)
        .await
        .into_iter()
        .find(|ip| !ip.contains(':'))
        .expect("the launcher pod's IPv4 address")
}

/// The launcher pod's IPv6 address (the node's pod network is dual-stack).
async fn pod_ip6(cp: &ControlPlane, ns: &str, uid: &str) -> String {
    let ips = pod_ips(cp, ns, uid).await;
    ips.iter()
        .find(|ip| ip.contains(':'))
        .cloned()
        .unwrap_or_else(|| panic!("the launcher pod has no IPv6 address: {ips:?}"))
}

/// The launcher pod's IPs (status.podIPs) of the VMI with `uid`.
async fn pod_ips(cp: &ControlPlane, ns: &str, uid: &str) -> Vec<String> {
    let pods: Api<Pod> = Api::namespaced(cp.client().await.unwrap(), ns);
    pods.list(&ListParams::default().labels(&format!("kubevirt.io/created-by={uid}")))
        .await
        .unwrap()
        .items
        .pop()
        .expect("the launcher pod")
        .status
        .and_then(|s| s.pod_ips)
        .expect("the launcher pod's IPs")
        .into_iter()
        .map(|p| p.ip)
        .collect()
}

/// The address a guest printed on its serial console after its DHCP lease.
fn printed_ip(stack: &Stack, uid: &str) -> Option<String> {
    printed(stack, uid, "FERROVIRT IP: ")
}

/// What a guest printed after `prefix` on its serial console.
fn printed(stack: &Stack, uid: &str, prefix: &str) -> Option<String> {
    let log = std::fs::read_to_string(stack.vmi_dir(uid).join(SERIAL_LOG)).ok()?;
    log.lines()
        .find_map(|l| l.split(prefix).nth(1))
        .map(|ip| ip.trim().to_owned())
}

/// Waits until the guest of `uid` printed the IPv6 address DHCPv6 gave it; returns it.
async fn wait_for_ipv6(stack: &Stack, uid: &str, logs: &dyn Fn() -> String) -> String {
    let started = Instant::now();
    loop {
        if let Some(ip) = printed(stack, uid, "FERROVIRT IPV6: ") {
            return ip;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no DHCPv6 address printed by the guest of {uid}:\n{}",
            logs()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Waits until every VMI of `names` has printed its DHCP address on the serial console
/// (the serial log of its per-VMI directory); returns their uids in that order.
async fn wait_for_leases(
    cp: &ControlPlane,
    stack: &Stack,
    ns: &str,
    names: &[&str],
    logs: &dyn Fn() -> String,
) -> Vec<String> {
    let vmis: Api<crds::VirtualMachineInstance> = Api::namespaced(cp.client().await.unwrap(), ns);
    let started = Instant::now();
    let mut uids = vec![None; names.len()];
    loop {
        for (name, uid) in names.iter().zip(uids.iter_mut()) {
            if uid.is_none()
                && let Some(vmi) = vmis.get_opt(name).await.unwrap()
                && let Some(id) = vmi.metadata.uid.clone()
                && printed_ip(stack, &id).is_some()
            {
                eprintln!(
                    "MEASURE real node: apply -> {name}'s DHCP address in {:.1} s",
                    started.elapsed().as_secs_f64()
                );
                *uid = Some(id);
            }
        }
        if uids.iter().all(Option::is_some) {
            return uids.into_iter().flatten().collect();
        }
        assert!(
            started.elapsed() < BOOT_TIMEOUT,
            "no DHCP address printed by {:?}:\n{}",
            names
                .iter()
                .zip(&uids)
                .filter(|(_, u)| u.is_none())
                .map(|(n, _)| n)
                .collect::<Vec<_>>(),
            logs()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Waits until `kubectl get vmi NAME` shows `ip` (the printer column reads
/// status.interfaces[0].ipAddress, written once virt-handler sees the guest's lease).
async fn ip_column_shows(cp: &ControlPlane, ns: &str, name: &str, ip: &str) {
    let started = Instant::now();
    loop {
        let table = kubectl(cp, ns, &["get", "vmi", name]).await;
        if table.contains(ip) {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "kubectl get vmi {name} lacks {ip}:\n{table}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Waits until `kubectl get vmi NAME -o jsonpath=...` prints `want` (virt-handler writes
/// status.interfaces as the leases and the guest agent's report come in).
async fn vmi_shows(
    cp: &ControlPlane,
    ns: &str,
    name: &str,
    jsonpath: &str,
    want: &str,
    logs: &dyn Fn() -> String,
) {
    let started = Instant::now();
    loop {
        let got = kubectl(
            cp,
            ns,
            &["get", "vmi", name, "-o", &format!("jsonpath={jsonpath}")],
        )
        .await;
        if got == want {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "{name}'s {jsonpath} is {got:?}, not {want:?}\n{}",
            logs()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn masquerade_guests_are_reached_from_pods_and_from_each_other() {
    let cp = shared().await;
    let disks = [DISK, FEDORA_DISK].map(|d| format!("registry:5000/{d}"));
    let (node, launcher) = RealNode::with_images(cp, "net", &disks.each_ref().map(String::as_str))
        .await
        .unwrap_or_else(|e| panic!("starting the real node with the images: {e}"));
    let busybox = node
        .push(&busybox_layout().unwrap(), "ferrovirt/busybox:1.35")
        .await
        .unwrap_or_else(|e| panic!("pushing busybox: {e}"));
    let virt_api = start_virt_api(cp).await.unwrap();
    ferrovirt_tests::webhooks::register(cp, &virt_api)
        .await
        .unwrap_or_else(|e| panic!("registering virt-api's webhooks: {e}"));
    let stack = Stack::start_on_real_node(cp, &node, &launcher)
        .await
        .unwrap_or_else(|e| panic!("starting Ferrovirt: {e}\n{}", node.log_tails(20)));
    // The passt binding plugin, registered as KubeVirt's CR registers it.
    cp.kubectl([
        "-n",
        SYSTEM_NAMESPACE,
        "patch",
        "configmap",
        "kubevirt-config",
        "--type",
        "merge",
        "-p",
        r#"{"data":{"ferrovirt.networkBindings":"passt"}}"#,
    ])
    .await
    .unwrap()
    .expect_success();
    let ns = TestNamespace::create(cp, "net-node").await.unwrap();
    let ns = ns.name();
    let logs = || format!("{}\n{}", stack.log_tails(30), node.log_tails(30));

    let yaml = format!(
        "apiVersion: kubevirt.io/v1
kind: VirtualMachineInstance
metadata:
  name: web
spec:
  # httpGet and tcpSocket probes go to the launcher pod (kubelet probes the pod's address,
  # which masquerade forwards to the guest): Ready once the guest serves 80.
  readinessProbe: {{httpGet: {{port: 80}}, initialDelaySeconds: 1, periodSeconds: 2}}
  domain:
    # Two vCPUs and virtio-net multi-queue: two queue pairs on a multi-queue tap.
    cpu: {{cores: 2}}
    memory: {{guest: 256Mi}}
    devices:
      networkInterfaceMultiqueue: true
      disks: [{{name: containerdisk, disk: {{bus: virtio}}}}]
      interfaces: [{{name: default, masquerade: {{}}}}]
  networks: [{{name: default, pod: {{}}}}]
  volumes: [{{name: containerdisk, containerDisk: {{image: registry:5000/{DISK}}}}}]
---
apiVersion: kubevirt.io/v1
kind: VirtualMachineInstance
metadata:
  name: passt
spec:
  # passt forwards only port 80: a readiness probe on 8080 never passes.
  readinessProbe: {{tcpSocket: {{port: 8080}}, initialDelaySeconds: 1, periodSeconds: 2}}
  domain:
    memory: {{guest: 256Mi}}
    devices:
      disks: [{{name: containerdisk, disk: {{bus: virtio}}}}]
      interfaces: [{{name: default, binding: {{name: passt}}, ports: [{{port: 80}}]}}]
  networks: [{{name: default, pod: {{}}}}]
  volumes: [{{name: containerdisk, containerDisk: {{image: registry:5000/{DISK}}}}}]
---
apiVersion: kubevirt.io/v1
kind: VirtualMachineInstance
metadata:
  name: dead
spec:
  # Nothing in the guest listens on 1500: the liveness probe fails and the VMI ends, as
  # in KubeVirt's own probe tests.
  livenessProbe: {{tcpSocket: {{port: 1500}}, periodSeconds: 2, failureThreshold: 2}}
  terminationGracePeriodSeconds: 1
  domain:
    memory: {{guest: 128Mi}}
    devices:
      disks: [{{name: containerdisk, disk: {{bus: virtio}}}}]
      interfaces: [{{name: default, masquerade: {{}}}}]
  networks: [{{name: default, pod: {{}}}}]
  volumes: [{{name: containerdisk, containerDisk: {{image: registry:5000/{DISK}}}}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: client}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  containers:
  - name: client
    image: {busybox}
    command: [/bin/sh, -c, 'sleep 3600']
",
        node = node.name()
    );
    cp.kubectl_with_stdin(["apply", "-n", ns, "-f", "-"], Some(&yaml))
        .await
        .unwrap()
        .expect_success();
    // KubeVirt's example as it is: the webhook admits its ports.
    let example = examples_dir().join("vmi-masquerade.yaml");
    let admitted = cp
        .kubectl(["apply", "-n", ns, "-f", example.to_str().unwrap()])
        .await
        .unwrap();
    assert!(
        admitted.success(),
        "vmi-masquerade.yaml refused: {}",
        admitted.stderr
    );

    let uids = wait_for_leases(cp, &stack, ns, &["web", "vmi-masquerade", "passt"], &logs).await;
    let web_ip = pod_ip(cp, ns, &uids[0]).await;
    let example_ip = pod_ip(cp, ns, &uids[1]).await;
    let passt_ip = pod_ip(cp, ns, &uids[2]).await;
    // Masquerade guests have KubeVirt's 10.0.2.2; passt's guest its pod's own address.
    for (uid, want) in [
        (&uids[0], "10.0.2.2"),
        (&uids[1], "10.0.2.2"),
        (&uids[2], passt_ip.as_str()),
    ] {
        assert_eq!(printed_ip(&stack, uid).as_deref(), Some(want), "{}", logs());
    }

    // The readiness probes, through kubelet: web's httpGet on 80 passes, so its VMI is
    // Ready (KubeVirt takes Ready from the pod); passt's tcpSocket on 8080, a port passt
    // does not forward, fails, and kubelet says so.
    let ready = "{.status.conditions[?(@.type==\"Ready\")].status}";
    vmi_shows(cp, ns, "web", ready, "True", &logs).await;
    unhealthy(cp, ns, "virt-launcher-passt-", "Readiness probe failed").await;
    vmi_shows(cp, ns, "passt", ready, "False", &logs).await;
    // dead's liveness probe fails: kubelet stops its compute container and the VMI ends.
    let phase = wait::eventually_or(
        "dead's VMI final (Succeeded or Failed) after its liveness probe failed",
        Duration::from_secs(90),
        || async {
            let phase = kubectl(
                cp,
                ns,
                &["get", "vmi", "dead", "-o", "jsonpath={.status.phase}"],
            )
            .await;
            (phase == "Succeeded" || phase == "Failed").then_some(phase)
        },
        &logs,
    )
    .await;
    eprintln!("real node: dead's VMI ended {phase} after its liveness probe failed");
    unhealthy(cp, ns, "virt-launcher-dead-", "Liveness probe failed").await;

    // kubectl get vmi shows each launcher pod's IP once its guest holds the lease.
    ip_column_shows(cp, ns, "web", &web_ip).await;
    ip_column_shows(cp, ns, "vmi-masquerade", &example_ip).await;
    ip_column_shows(cp, ns, "passt", &passt_ip).await;

    // The guest agent's report merged as KubeVirt merges it: the guest's interface name,
    // infoSource "domain, guest-agent", and the pod's address kept (masquerade's guest has
    // 10.0.2.2; passt's has the pod's).
    for (name, ip) in [("web", &web_ip), ("passt", &passt_ip)] {
        let jsonpath = "{.status.interfaces[0].interfaceName}|{.status.interfaces[0].infoSource}|{.status.interfaces[0].ipAddress}";
        let want = format!("eth0|domain, guest-agent|{ip}");
        vmi_shows(cp, ns, name, jsonpath, &want, &logs).await;
    }

    // IPv6 (the node's pods are dual-stack): the masquerade guests got KubeVirt's
    // fd10:0:2::2 by DHCPv6 from their launchers; status.interfaces lists the pod's IPv6
    // address next to its IPv4 one. The GETs below go to both families.
    let ipv6_started = Instant::now();
    let web_ip6 = pod_ip6(cp, ns, &uids[0]).await;
    let example_ip6 = pod_ip6(cp, ns, &uids[1]).await;
    let passt_ip6 = pod_ip6(cp, ns, &uids[2]).await;
    for (uid, want) in [
        (&uids[0], "fd10:0:2::2"),
        (&uids[1], "fd10:0:2::2"),
        // passt's own DHCPv6 gives its guest the pod's IPv6 address.
        (&uids[2], passt_ip6.as_str()),
    ] {
        assert_eq!(wait_for_ipv6(&stack, uid, &logs).await, want);
    }
    for (name, ip, ip6) in [
        ("web", &web_ip, &web_ip6),
        ("vmi-masquerade", &example_ip, &example_ip6),
    ] {
        let jsonpath = "{.status.interfaces[0].ipAddresses[*]}";
        vmi_shows(cp, ns, name, jsonpath, &format!("{ip} {ip6}"), &logs).await;
    }
    eprintln!(
        "MEASURE real node: the guests' IPv6 addresses and status took {:.1} s",
        ipv6_started.elapsed().as_secs_f64()
    );

    // From another pod: ping and HTTP through the pod IP (everything is forwarded: no ports).
    let ping = eventually(
        cp,
        ns,
        &format!("ping -c 3 -W 2 {web_ip}"),
        " 0% packet loss",
    )
    .await;
    assert!(
        ping.contains(" 0% packet loss"),
        "ping {web_ip}: {ping}\n{}",
        logs()
    );
    let get = |ip: &str, port: u16| {
        format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 5 {ip} {port}; echo nc-exit-$?")
    };
    // Over IPv4 and IPv6 (NAT66 for masquerade, passt's own for passt).
    for (ip, port) in [
        (&web_ip, 80),
        (&web_ip, 8080),
        (&example_ip, 80),
        (&passt_ip, 80),
        (&web_ip6, 80),
        (&web_ip6, 8080),
        (&example_ip6, 80),
        (&passt_ip6, 80),
    ] {
        let http = eventually(cp, ns, &get(ip, port), "ferrovirt guest").await;
        assert!(
            http.contains("ferrovirt guest"),
            "GET {ip} port {port}: {http}\n{}",
            logs()
        );
    }
    // networkInterfaceMultiqueue: web's NIC has a queue pair per vCPU, vmi-masquerade's
    // (one vCPU, no multi-queue) one; as each guest lists them in /sys/class/net.
    for (ip, want) in [
        (&web_ip, "queues: rx-0 rx-1 tx-0 tx-1"),
        (&example_ip, "queues: rx-0 tx-0"),
    ] {
        let get =
            format!("printf 'GET /queues HTTP/1.0\\r\\n\\r\\n' | nc -w 5 {ip} 80; echo nc-exit-$?");
        let queues = eventually(cp, ns, &get, want).await;
        assert!(
            queues.contains(want),
            "GET {ip}/queues: {queues}\n{}",
            logs()
        );
    }
    // vmi-masquerade.yaml forwards only its port 80: its guest's 8080 is not reached (web's
    // is, above), the pod itself refuses the connection; passt forwards only the listed
    // port 80 too; over either family.
    for ip in [&example_ip, &passt_ip, &example_ip6, &passt_ip6] {
        let closed = eventually(cp, ns, &get(ip, 8080), "nc-exit-").await;
        assert!(
            closed.contains("nc-exit-") && !closed.contains("ferrovirt guest"),
            "GET {ip} port 8080 (not in ports) answered: {closed}"
        );
    }

    // Guest to guest through the pod IPs: from vmi-masquerade's console, ping and GET web.
    let mut console = Client::spawn(
        &virtctl_path(),
        &cp.kubeconfig(),
        &["-n", ns, "console", "vmi-masquerade"],
    )
    .unwrap();
    // The markers are computed by the guest's shell, so the echoed command lines do not
    // hold them.
    console
        .send(
            format!(
                "\nping -c 2 -W 3 {web_ip} >/dev/null && echo ping-$((1+1))-ok; \
                 printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 5 {web_ip} 80 | grep -q 'ferrovirt guest' \
                 && echo http-$((2+2))-ok\n"
            )
            .as_bytes(),
        )
        .unwrap();
    console
        .expect("ping-2-ok", false, Duration::from_secs(30))
        .await;
    console
        .expect("http-4-ok", false, Duration::from_secs(30))
        .await;
    console.send(b"\x1d").unwrap();
    let _ = console.exit(Duration::from_secs(10)).await;

    // Through a ClusterIP Service made by ferroctl expose (kube-proxy on the node).
    ferroctl(
        &cp.kubeconfig(),
        &[
            "-n",
            ns,
            "expose",
            "vmi",
            "web",
            "--name",
            "web",
            "--port",
            "8000",
            "--target-port",
            "80",
        ],
    )
    .await
    .unwrap()
    .expect_success();
    let cluster_ip = kubectl(
        cp,
        ns,
        &["get", "svc", "web", "-o", "jsonpath={.spec.clusterIP}"],
    )
    .await;
    let get = format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {cluster_ip} 8000");
    let http = eventually(cp, ns, &get, "ferrovirt guest").await;
    assert!(
        http.contains("ferrovirt guest"),
        "GET {cluster_ip}:8000 (Service): {http}\n{}",
        logs()
    );

    kubectl(
        cp,
        ns,
        &[
            "delete",
            "vmi",
            "web",
            "vmi-masquerade",
            "passt",
            "dead",
            "--wait=false",
        ],
    )
    .await;
}
