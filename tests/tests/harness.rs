//! The harness never leaves a control plane behind: not when the test process panics, not
//! when it is killed, and not when the thread that started it ends (PR_SET_PDEATHSIG
//! follows the forking thread).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ferrovirt_tests::pid_alive;

struct Probe {
    child: Child,
    stderr: tempfile::NamedTempFile,
    pids: Vec<u32>,
    dir: String,
}

fn start_probe(mode: &str) -> Probe {
    // Its log and panic message go to a file, shown only when it did not start.
    let stderr = tempfile::NamedTempFile::new().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_harness-probe"))
        .arg(mode)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr.reopen().unwrap())
        .spawn()
        .expect("running harness-probe");
    let mut pids = Vec::new();
    let mut dir = String::new();
    let stdout = child.stdout.take().unwrap();
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        if let Some(p) = line.strip_prefix("PIDS ") {
            pids = p.split_whitespace().map(|p| p.parse().unwrap()).collect();
        } else if let Some(d) = line.strip_prefix("DIR ") {
            dir = d.to_string();
        } else if line == "READY" {
            break;
        }
    }
    assert_eq!(
        pids.len(),
        4,
        "harness-probe did not start the control plane:\n{}",
        std::fs::read_to_string(stderr.path()).unwrap_or_default()
    );
    Probe {
        child,
        stderr,
        pids,
        dir,
    }
}

fn assert_all_gone(pids: &[u32]) {
    let started = Instant::now();
    while pids.iter().any(|p| pid_alive(*p)) && started.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let left: Vec<u32> = pids.iter().copied().filter(|p| pid_alive(*p)).collect();
    assert!(
        left.is_empty(),
        "control-plane processes left running: {left:?}"
    );
}

#[test]
fn control_plane_stops_when_the_test_process_panics() {
    let mut probe = start_probe("panic");
    let status = probe.child.wait().unwrap();
    let stderr = std::fs::read_to_string(probe.stderr.path()).unwrap_or_default();
    assert!(
        !status.success() && stderr.contains("panics on purpose"),
        "harness-probe did not panic:\n{stderr}"
    );
    assert_all_gone(&probe.pids);
    assert!(
        !std::path::Path::new(&probe.dir).exists(),
        "{} was not removed",
        probe.dir
    );
}

#[test]
fn control_plane_stops_when_the_test_process_is_killed() {
    let mut probe = start_probe("wait");
    probe.child.kill().unwrap(); // SIGKILL: no exit hook runs, only the death signal
    probe.child.wait().unwrap();
    assert_all_gone(&probe.pids);
    // Nothing removed it (the next control plane would): tidy up here.
    std::fs::remove_dir_all(&probe.dir).unwrap();
}
