//! The figures bench/network.sh prints: TCP throughput between the guest and the pod's
//! peer in both directions, the peer's round trip to the pod's address, and what
//! preparing the pod network costs before the domain starts, for the masquerade, bridge
//! and passt bindings (the launcher with its DHCP server or its passt, virt-handler's
//! network code, libvirt). For passt the "DHCP lease" column is the guest's line after
//! passt's DHCP. Ignored in the suite: speed is not
//! asserted; bench/network.sh runs it with `--ignored` and turns its `BENCH|` lines into
//! a table. Every address is inside the two namespaces the fixture makes.

use std::os::unix::net::UnixStream;
use std::sync::mpsc;

use super::*;

/// What each transfer moves.
const MIB: usize = 16;
const RUNS: usize = 3;
const PORT: u16 = 5001;
const STEP: Duration = Duration::from_secs(120);

/// The guest's serial console on a socket: commands typed, output read.
struct Console(UnixStream, String);

impl Console {
    fn open(socket: &Path) -> Console {
        let s = UnixStream::connect(socket).unwrap_or_else(|e| panic!("{}: {e}", socket.display()));
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        Console(s, String::new())
    }

    /// Types `command`; waits for `marker` in what follows. The marker is computed by the
    /// guest's shell (`$((..))`) so that the echoed command line does not hold it.
    fn run(&mut self, command: &str, marker: &str) {
        self.1.clear();
        self.0.write_all(format!("{command}\n").as_bytes()).unwrap();
        let start = Instant::now();
        let mut buf = [0u8; 4096];
        while !self.1.contains(marker) {
            assert!(
                start.elapsed() < STEP,
                "no {marker:?} from the guest after {command:?}:\n{}",
                self.1
            );
            if let Ok(n) = self.0.read(&mut buf) {
                self.1.push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        }
    }
}

/// Mbit/s of `bytes` over `took`.
fn rate(bytes: usize, took: Duration) -> f64 {
    bytes as f64 * 8.0 / took.as_secs_f64() / 1e6
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// A second address of "peer", the guest's target: passt maps the gateway's address (the
/// peer's first) to the pod's own loopback, as it does in a pod.
const PEER_TARGET: &str = "10.199.0.5";
/// The same over IPv6 (masquerade's NAT66).
const PEER_TARGET6: &str = "fd99:199::5";

/// Guest -> peer: a server in "peer" counts what the guest's `dd | nc` sends.
fn guest_to_peer(peer: &Path, console: &mut Console, target: &'static str) -> f64 {
    let (ready_tx, ready_rx) = mpsc::channel();
    let file = std::fs::File::open(peer).unwrap();
    let server = std::thread::spawn(move || {
        use std::os::fd::AsRawFd;
        // SAFETY: setns(2) on an fd we own, on this thread only.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
        let listener = std::net::TcpListener::bind((target, PORT)).unwrap();
        ready_tx.send(()).unwrap();
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = vec![0u8; 1 << 16];
        let mut total = 0;
        let mut first = None;
        while total < MIB << 20 {
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0, "the guest stopped sending after {total} bytes");
            first.get_or_insert_with(Instant::now);
            total += n;
        }
        rate(total, first.unwrap().elapsed())
    });
    ready_rx.recv().unwrap();
    console.run(
        &format!(
            "dd if=/dev/zero bs=65536 count={} 2>/dev/null | nc {target} {PORT}; echo sent-$((1+1))",
            MIB * 16
        ),
        "sent-2",
    );
    server.join().unwrap()
}

/// Peer -> guest: the peer GETs a file of MIB MiB from the guest's httpd at `addr`:80.
fn peer_to_guest(peer: &Path, addr: &'static str) -> f64 {
    in_netns(peer, move || {
        let mut s = TcpStream::connect((addr, 80)).unwrap();
        s.set_read_timeout(Some(STEP)).unwrap();
        let start = Instant::now();
        s.write_all(b"GET /big HTTP/1.0\r\n\r\n").unwrap();
        let mut body = Vec::new();
        s.read_to_end(&mut body).unwrap();
        assert!(body.len() > MIB << 20, "GET /big: {} bytes", body.len());
        rate(body.len(), start.elapsed())
    })
}

/// The peer's average round trip to `addr` (busybox ping, 20 echoes), in ms.
fn ping_ms(peer: &Ns, addr: &str) -> f64 {
    let out = Command::new("ip")
        .args([
            "netns", "exec", &peer.0, "busybox", "ping", "-c", "20", "-q",
        ])
        .arg(addr)
        .output()
        .expect("busybox (busybox-static) for ping");
    let text = String::from_utf8_lossy(&out.stdout);
    // "round-trip min/avg/max = 0.5/0.9/2.1 ms"
    text.lines()
        .find_map(|l| l.split(" = ").nth(1))
        .and_then(|v| v.split('/').nth(1)?.parse().ok())
        .unwrap_or_else(|| panic!("ping {addr}: {text}"))
}

/// Throughput both ways and latency for a booted guest, reached by the peer at the pod's
/// address, printed as one `BENCH|` line; with `ipv6` a second line for the same over the
/// pod's IPv6 address (once the guest printed its DHCPv6 address).
fn measure(binding: &str, dir: &Path, peer: &Ns, timings: [f64; 3], ipv6: bool) {
    peer.ip(&["addr", "add", &format!("{PEER_TARGET}/24"), "dev", "eth0"]);
    peer.ip(&[
        "addr",
        "add",
        &format!("{PEER_TARGET6}/64"),
        "dev",
        "eth0",
        "nodad",
    ]);
    let mut console = Console::open(&dir.join(ferrovirt_node_contract::paths::SERIAL_SOCKET));
    console.run(
        &format!(
            "dd if=/dev/zero of=/www/big bs=1048576 count={MIB} 2>/dev/null; echo big-$((2+2))"
        ),
        "big-4",
    );
    let mut families = vec![(binding.to_owned(), PEER_TARGET, POD_IP)];
    if ipv6 {
        wait_for_line(&dir.join(SERIAL_LOG), "FERROVIRT IPV6: ");
        families.push((format!("{binding} IPv6"), PEER_TARGET6, POD_IP6));
    }
    for (name, target, pod) in families {
        let out: Vec<f64> = (0..RUNS)
            .map(|_| guest_to_peer(&peer.path(), &mut console, target))
            .collect();
        let inbound: Vec<f64> = (0..RUNS)
            .map(|_| peer_to_guest(&peer.path(), pod))
            .collect();
        let rtt = ping_ms(peer, pod);
        println!(
            "BENCH|{name}|{:.1}|{:.1}|{rtt:.2}|{:.0}|{:.1}|{:.1}",
            median(out),
            median(inbound),
            timings[0],
            timings[1],
            timings[2]
        );
    }
}

fn secs(t: (Duration, Duration, Duration)) -> [f64; 3] {
    [
        t.0.as_secs_f64() * 1e3,
        t.1.as_secs_f64(),
        t.2.as_secs_f64(),
    ]
}

#[tokio::test]
#[ignore = "a benchmark: bench/network.sh runs it"]
async fn bench_network() {
    for (binding, iface, guest_ip) in [
        (
            "masquerade",
            serde_json::json!({"name": "default", "masquerade": {}}),
            "10.0.2.2",
        ),
        (
            "bridge",
            serde_json::json!({"name": "default", "bridge": {}}),
            POD_IP,
        ),
        (
            "passt",
            // Port 80 only: without ports passt binds every port, more sockets than this
            // machine's open-file limit (20,000) allows (docs/networking.md).
            serde_json::json!({"name": "default", "passtBinding": {}, "ports": [{"port": 80}]}),
            POD_IP,
        ),
    ] {
        let mut f = boot(&format!("bench{binding}"), iface, guest_ip).await;
        measure(
            binding,
            &f.dir,
            &f.peer,
            secs(f.timings),
            binding == "masquerade",
        );
        f.client.destroy().await.unwrap();
    }
}
