//! virt-handler serves the kubelet device plugins (device-plugin/) when it is given the
//! kubelet's plugin directory, and takes their sockets away when it stops. The plugins
//! themselves are tested against a kubelet in device-plugin/tests (a real one in
//! kubelet.rs); this checks the handler's flags and lifecycle around them.

mod common;

use std::os::unix::net::UnixListener;
use std::time::Duration;

use common::cluster::{Handler, setup, temp_run_dir};
use common::wait_for;
use ferrovirt_tests::shared;

const SOCKETS: [&str; 3] = [
    "kubevirt-kvm.sock",
    "kubevirt-tun.sock",
    "kubevirt-vhost-net.sock",
];

#[tokio::test]
async fn the_handler_serves_the_device_plugins_in_the_kubelets_directory_until_it_stops() {
    let cp = shared().await;
    let (_client, ns, node) = setup(cp, "devplug", "true").await;
    let run = temp_run_dir();
    let dir = run.path().join("device-plugins");
    std::fs::create_dir_all(&dir).unwrap();
    // Where the kubelet would listen: registration is attempted (and retried) against it.
    let _kubelet = UnixListener::bind(dir.join("kubelet.sock")).unwrap();

    // Without the flag (devnode): no plugins.
    let plain = Handler::start(cp, &node, run.path(), ns.name(), &[]);
    wait_for(Duration::from_secs(30), "the plain handler's start", || {
        plain.log_text().contains("virt-handler starting")
    });
    std::thread::sleep(Duration::from_secs(2));
    for s in SOCKETS {
        assert!(!dir.join(s).exists(), "{s} without --device-plugin-dir");
    }
    drop(plain);

    let mut handler = Handler::start(
        cp,
        &node,
        run.path(),
        ns.name(),
        &["--device-plugin-dir", dir.to_str().unwrap()],
    );
    wait_for(Duration::from_secs(60), "the plugins' sockets", || {
        SOCKETS.iter().all(|s| dir.join(s).exists())
    });
    assert!(
        handler
            .log_text()
            .contains("serving the kubelet device plugins"),
        "{}",
        handler.log_text()
    );
    // SAFETY: kill(2) on the handler this test started.
    unsafe { libc::kill(handler.proc.0.id() as i32, libc::SIGTERM) };
    assert_eq!(handler.proc.wait_exit(Duration::from_secs(30)), Some(0));
    for s in SOCKETS {
        assert!(
            !dir.join(s).exists(),
            "{s} left behind after the handler stopped"
        );
    }
}
