//! The real launcher binary, a real embedded libvirt and a TCG guest: boot, ACPI
//! poweroff on SIGTERM, crash, destroy, and no QEMU left behind.

mod common;

use std::time::{Duration, Instant};

use common::{GUEST_LINE, Launcher, domain_xml, guest, is_qemu, wait_for_serial_line, wait_until};
use ferrovirt_node_contract::protocol::{DomainState, Event, StopReason};

/// Under TCG on a shared 2-core machine, with other guests booting in parallel.
const BOOT_TIMEOUT: Duration = Duration::from_secs(240);

#[tokio::test]
async fn boots_and_powers_off_through_acpi_on_sigterm() {
    let guest = guest();
    let mut launcher = Launcher::start(120);
    let mut client = launcher.client().await;
    assert_eq!(client.ping().await.unwrap().pid, launcher.child.id());
    assert_eq!(client.domain_info().await.unwrap(), None);

    let xml = domain_xml("boot", launcher.dir.path(), &guest);
    let started = Instant::now();
    let info = client.define_and_start(&xml).await.unwrap();
    launcher.qemu_pid = info.qemu_pid;
    assert_eq!(info.state, DomainState::Running);
    let qemu = info.qemu_pid.expect("qemu pid");
    assert!(is_qemu(qemu), "pid {qemu} is not QEMU");

    // Same domain again: answered with its info, nothing restarted.
    let again = client.define_and_start(&xml).await.unwrap();
    assert_eq!(
        (again.uuid, again.qemu_pid),
        (info.uuid.clone(), Some(qemu))
    );

    let serial = launcher.path("serial0.log");
    wait_for_serial_line(&serial, GUEST_LINE, BOOT_TIMEOUT);
    eprintln!(
        "MEASURE define_and_start -> {GUEST_LINE:?}: {:.1}s; launcher VmRSS with the guest running: {} KiB",
        started.elapsed().as_secs_f64(),
        launcher.rss_kib()
    );

    let mut events = launcher.client().await.watch_events().await.unwrap();
    assert_eq!(events.next().await.unwrap(), Some(Event::Started));

    launcher.signal(libc::SIGTERM);
    assert_eq!(
        events.next().await.unwrap(),
        Some(Event::Stopped {
            reason: StopReason::Shutdown
        })
    );
    let status = launcher.wait_exit(Duration::from_secs(60));
    assert_eq!(status.code(), Some(0), "clean poweroff exits 0");
    assert!(
        std::fs::read_to_string(&serial)
            .unwrap()
            .contains("POWER BUTTON"),
        "the guest saw the ACPI power button"
    );
    wait_until(Duration::from_secs(5), "QEMU gone", || !is_qemu(qemu));
    assert!(!launcher.path("ready").exists() && !launcher.path("launcher.sock").exists());
}

#[tokio::test]
async fn qemu_killed_means_a_nonzero_exit() {
    let guest = guest();
    let mut launcher = Launcher::start(30);
    let mut client = launcher.client().await;
    let info = client
        .define_and_start(&domain_xml("crash", launcher.dir.path(), &guest))
        .await
        .unwrap();
    launcher.qemu_pid = info.qemu_pid;
    let qemu = info.qemu_pid.expect("qemu pid");
    let mut events = launcher.client().await.watch_events().await.unwrap();
    assert_eq!(events.next().await.unwrap(), Some(Event::Started));

    // SAFETY: kill(2) on the QEMU this test started.
    unsafe { libc::kill(qemu as i32, libc::SIGKILL) };
    match events.next().await.unwrap() {
        Some(Event::Stopped { reason }) => {
            assert!(
                matches!(reason, StopReason::Crashed | StopReason::Failed),
                "{reason:?}"
            )
        }
        other => panic!("expected a stop, got {other:?}"),
    }
    let status = launcher.wait_exit(Duration::from_secs(30));
    assert_eq!(status.code(), Some(2), "a crash exits 2");
    wait_until(Duration::from_secs(5), "QEMU gone", || !is_qemu(qemu));
}

#[tokio::test]
async fn destroy_request_means_exit_3() {
    let guest = guest();
    let mut launcher = Launcher::start(30);
    let mut client = launcher.client().await;
    let info = client
        .define_and_start(&domain_xml("destroy", launcher.dir.path(), &guest))
        .await
        .unwrap();
    launcher.qemu_pid = info.qemu_pid;
    client.pause().await.unwrap();
    assert_eq!(
        client.domain_info().await.unwrap().unwrap().state,
        DomainState::Paused
    );
    client.unpause().await.unwrap();
    client.destroy().await.unwrap();
    let status = launcher.wait_exit(Duration::from_secs(30));
    assert_eq!(status.code(), Some(3));
    wait_until(Duration::from_secs(5), "QEMU gone", || {
        !is_qemu(info.qemu_pid.unwrap())
    });
}

#[tokio::test]
async fn sigterm_before_any_domain_exits_zero() {
    let mut launcher = Launcher::start(30);
    let mut client = launcher.client().await;
    let err = client.shutdown().await.unwrap_err();
    assert!(err.to_string().contains("no domain"), "{err}");
    launcher.signal(libc::SIGTERM);
    assert_eq!(launcher.wait_exit(Duration::from_secs(10)).code(), Some(0));
    assert!(!launcher.path("ready").exists() && !launcher.path("launcher.sock").exists());
}

/// A client that sends a line without end is cut off at the bound; the launcher's memory
/// stays flat and it goes on answering others (issue 12).
#[tokio::test]
async fn an_endless_request_line_is_cut_off_and_the_launcher_keeps_serving() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut launcher = Launcher::start(30);
    launcher.client().await.ping().await.expect("first ping");
    let before = launcher.rss_kib();
    let mut hostile = tokio::net::UnixStream::connect(launcher.path("launcher.sock"))
        .await
        .expect("connecting");
    let chunk = vec![b'x'; 1 << 20];
    let mut sent = 0usize;
    // Four times the bound: the launcher must hang up before it has all of it.
    while sent < 4 * ferrovirt_node_contract::frame::MAX_LINE {
        if hostile.write_all(&chunk).await.is_err() {
            break;
        }
        sent += chunk.len();
    }
    let mut rest = Vec::new();
    let closed =
        tokio::time::timeout(Duration::from_secs(30), hostile.read_to_end(&mut rest)).await;
    assert!(
        matches!(closed, Ok(Ok(_)) | Ok(Err(_))),
        "the launcher kept a connection open after {sent} bytes without a newline"
    );
    let grown = launcher.rss_kib().saturating_sub(before);
    assert!(
        grown < 2 * (ferrovirt_node_contract::frame::MAX_LINE as u64 / 1024),
        "launcher RSS grew by {grown} KiB for one endless line"
    );
    let pong = launcher
        .client()
        .await
        .ping()
        .await
        .expect("ping after the endless line");
    assert_eq!(pong.pid, launcher.pid());
    launcher.signal(libc::SIGTERM);
    assert_eq!(launcher.wait_exit(Duration::from_secs(10)).code(), Some(0));
}

#[tokio::test]
async fn grace_period_expiry_destroys_and_exits_zero() {
    let guest = guest();
    let mut launcher = Launcher::start(3);
    let mut client = launcher.client().await;
    let info = client
        .define_and_start(&domain_xml("grace", launcher.dir.path(), &guest))
        .await
        .unwrap();
    launcher.qemu_pid = info.qemu_pid;
    // A paused guest cannot answer the power button.
    client.pause().await.unwrap();
    let mut events = launcher.client().await.watch_events().await.unwrap();
    assert_eq!(events.next().await.unwrap(), Some(Event::Started));
    assert_eq!(events.next().await.unwrap(), Some(Event::Paused));

    launcher.signal(libc::SIGTERM);
    assert_eq!(
        events.next().await.unwrap(),
        Some(Event::Stopped {
            reason: StopReason::Destroyed
        })
    );
    assert_eq!(launcher.wait_exit(Duration::from_secs(30)).code(), Some(0));
    wait_until(Duration::from_secs(5), "QEMU gone", || {
        !is_qemu(info.qemu_pid.unwrap())
    });
}
