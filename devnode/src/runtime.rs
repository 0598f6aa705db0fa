//! devnode's side of a container: start a shim, learn the container's PID, follow it to
//! its exit (also across devnode restarts), signal it.

use crate::state::{Exited, ShimSpec, Started, is_alive, read_json, write_json};
use crate::{Ctx, Error, Result};
use chrono::Utc;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;

/// A container's end, sent to its pod worker.
#[derive(Debug)]
pub struct Exit {
    pub container: String,
    pub exited: Exited,
}

/// The exit record the shim wrote, or a "lost" one when it wrote none (shim killed).
pub fn read_exit(path: &Path) -> Exited {
    read_json(path).unwrap_or_else(|| Exited {
        exit_code: 137,
        signal: None,
        reason: Some("ContainerStatusUnknown".into()),
        message: Some("the container's supervisor ended without recording its exit status".into()),
        finished_at: Utc::now(),
    })
}

/// Starts a container through a new shim. Returns its Started record, or None when it
/// failed to start (its Exit is sent all the same).
pub async fn start(
    ctx: &Ctx,
    container: &str,
    spec: &ShimSpec,
    spec_path: &Path,
    exits: mpsc::Sender<Exit>,
) -> Result<Option<Started>> {
    write_json(spec_path, spec)?;
    let mut child = tokio::process::Command::new(&ctx.self_exe)
        .arg("shim")
        .arg(spec_path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(false)
        .spawn()
        .map_err(Error::io(format!(
            "run the shim {}",
            ctx.self_exe.display()
        )))?;
    let mut line = String::new();
    if let Some(out) = child.stdout.take() {
        let _ = BufReader::new(out).read_line(&mut line).await;
    }
    let started = serde_json::from_str::<serde_json::Value>(&line)
        .ok()
        .and_then(|v| serde_json::from_value::<Started>(v.get("started")?.clone()).ok());
    let exit_file = spec.exit_file.clone();
    let name = container.to_string();
    tokio::spawn(async move {
        let _ = child.wait().await;
        let _ = exits
            .send(Exit {
                container: name,
                exited: read_exit(&exit_file),
            })
            .await;
    });
    Ok(started)
}

/// Follows a container started by an earlier devnode: polls its shim until it is gone.
pub fn follow(container: &str, started: &Started, exit_file: &Path, exits: mpsc::Sender<Exit>) {
    let (pid, start) = (started.shim_pid, started.shim_start);
    let exit_file = exit_file.to_path_buf();
    let name = container.to_string();
    tokio::spawn(async move {
        while is_alive(pid, start) {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let _ = exits
            .send(Exit {
                container: name,
                exited: read_exit(&exit_file),
            })
            .await;
    });
}

/// Signals a container's main process if it is still the one recorded.
pub fn signal(started: &Started, sig: Signal) {
    if is_alive(started.pid, started.pid_start)
        && let Err(e) = kill(Pid::from_raw(started.pid), sig)
    {
        tracing::warn!(pid = started.pid, %sig, error = %e, "cannot signal container");
    }
}

/// `devnode stop-all`: SIGKILLs every live container recorded under the state dir.
pub fn stop_all(state_dir: &Path) -> Result<()> {
    let pods = state_dir.join("pods");
    let Ok(entries) = std::fs::read_dir(&pods) else {
        return Ok(());
    };
    for pod in entries.flatten() {
        let Ok(files) = std::fs::read_dir(pod.path()) else {
            continue;
        };
        for f in files.flatten() {
            let path = f.path();
            if !path.to_string_lossy().ends_with(".started.json") {
                continue;
            }
            if let Some(s) = read_json::<Started>(&path)
                && is_alive(s.pid, s.pid_start)
            {
                println!("killing {} (pid {})", path.display(), s.pid);
                signal(&s, Signal::SIGKILL);
            }
        }
    }
    Ok(())
}
