//! The per-container supervisor, `devnode shim <spec.json>`: devnode runs its own
//! executable again for each container start.
//!
//! The shim leaves devnode's session (so devnode can exit or restart without its pods),
//! unshares a PID namespace and forks: the child is PID 1 of the new PID namespace. The
//! child unshares a mount and UTS namespace of its own, makes every mount private (nothing leaks to the host), mounts a
//! fresh /proc, bind-mounts the volumes, sets the hostname to the pod's, and execs the
//! container's command. When that process dies, the kernel kills everything left in its
//! PID namespace, daemons included: nothing outlives its pod. The child also dies with
//! the shim (PR_SET_PDEATHSIG). The shim records the child's PID and start time, forwards
//! SIGTERM/SIGINT/SIGHUP to it, waits for it and records its exit status.
//!
//! With `shareProcessNamespace` the child joins the pod's PID namespace instead, held by
//! the pod's sandbox (`devnode pause`, its PID 1, see [`crate::sandbox`]); then processes
//! left by a container live until the sandbox ends with the pod.
//!
//! As for any PID 1, the kernel drops signals the container's process has no handler for
//! (a plain `sh` ignores SIGTERM): such containers end by SIGKILL after the grace period.

use crate::state::{Exited, Mount, ShimSpec, Started, process_start, read_json, write_json};
use crate::{Error, Result};
use chrono::Utc;
use nix::mount::{MsFlags, mount};
use nix::sched::{CloneFlags, unshare};
use nix::sys::signal::Signal;
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, Gid, Pid, Uid, fork};
use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicI32, Ordering};

static CHILD: AtomicI32 = AtomicI32::new(0);

extern "C" fn forward(sig: libc::c_int) {
    let pid = CHILD.load(Ordering::Relaxed);
    if pid > 0 {
        // SAFETY: kill is async-signal-safe.
        unsafe { libc::kill(pid, sig) };
    }
}

/// Runs the shim; the return value is its exit code (the container's, or 127).
pub fn run(spec_path: &Path) -> i32 {
    match supervise(spec_path) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("devnode shim: {}", crate::chain(&e));
            127
        }
    }
}

fn cstr(s: &[u8]) -> Result<CString> {
    CString::new(s)
        .map_err(|_| Error::Invalid("NUL byte in command, argument or environment".into()))
}

fn supervise(spec_path: &Path) -> Result<i32> {
    let _ = nix::unistd::setsid();
    // SAFETY: setting a signal disposition to SIG_IGN.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    let spec: ShimSpec = read_json(spec_path)
        .ok_or_else(|| Error::Invalid(format!("cannot read shim spec {}", spec_path.display())))?;
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&spec.log)
        .map_err(Error::io(format!("open {}", spec.log.display())))?;
    // SAFETY: plain fd duplication; the shim's own diagnostics go to the container log.
    unsafe { libc::dup2(log.as_raw_fd(), 2) };
    let _ = std::fs::remove_file(&spec.exit_file);
    let _ = std::fs::remove_file(&spec.started_file);

    let path = cstr(spec.path.as_os_str().as_bytes())?;
    let argv = spec
        .argv
        .iter()
        .map(|a| cstr(a.as_bytes()))
        .collect::<Result<Vec<_>>>()?;
    let envp = spec
        .env
        .iter()
        .map(|(k, v)| cstr(format!("{k}={v}").as_bytes()))
        .collect::<Result<Vec<_>>>()?;

    // The new PID namespace applies to the next child; the mount and UTS namespaces are the
    // child's alone (the shim keeps the host's /proc to read its own and the child's PIDs).
    match &spec.pid_namespace {
        // The pod's shared PID namespace (shareProcessNamespace), held by its sandbox.
        Some(ns) => {
            let f = File::open(ns).map_err(Error::io(format!("open {}", ns.display())))?;
            nix::sched::setns(f, CloneFlags::CLONE_NEWPID).map_err(Error::sys(format!(
                "join the pod's PID namespace {}",
                ns.display()
            )))?
        }
        None => {
            unshare(CloneFlags::CLONE_NEWPID).map_err(Error::sys("unshare the PID namespace"))?
        }
    }
    let (err_r, err_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(Error::sys("pipe"))?;
    // SAFETY: the shim is single-threaded (it runs before any async runtime).
    match unsafe { fork() }.map_err(Error::sys("fork"))? {
        ForkResult::Child => {
            drop(err_r);
            let e = container(&spec, &log, &path, &argv, &envp);
            let mut w = File::from(err_w);
            let _ = w.write_all(crate::chain(&e).as_bytes());
            // SAFETY: leave without running the parent's destructors.
            unsafe { libc::_exit(127) }
        }
        ForkResult::Parent { child } => parent(&spec, child, err_r, err_w),
    }
}

fn parent(spec: &ShimSpec, child: Pid, err_r: OwnedFd, err_w: OwnedFd) -> Result<i32> {
    drop(err_w);
    CHILD.store(child.as_raw(), Ordering::Relaxed);
    for sig in [
        libc::SIGTERM,
        libc::SIGINT,
        libc::SIGHUP,
        libc::SIGQUIT,
        libc::SIGUSR1,
        libc::SIGUSR2,
    ] {
        // SAFETY: the handler only calls kill.
        unsafe { libc::signal(sig, forward as *const () as libc::sighandler_t) };
    }
    let mut failure = String::new();
    let _ = File::from(err_r).read_to_string(&mut failure);
    let mut stdout = std::io::stdout();
    if !failure.is_empty() {
        let _ = wait(child);
        let exited = Exited {
            exit_code: 128,
            signal: None,
            reason: Some("StartError".into()),
            message: Some(failure),
            finished_at: Utc::now(),
        };
        write_json(&spec.exit_file, &exited)?;
        let _ = writeln!(stdout, "{}", serde_json::json!({"failed": exited.message}));
        return Ok(128);
    }
    let me = std::process::id() as i32;
    let started = Started {
        pid: child.as_raw(),
        pid_start: process_start(child.as_raw()).unwrap_or(0),
        shim_pid: me,
        shim_start: process_start(me).unwrap_or(0),
        started_at: Utc::now(),
    };
    write_json(&spec.started_file, &started)?;
    let _ = writeln!(stdout, "{}", serde_json::json!({"started": started}));
    let _ = stdout.flush();
    // Let go of devnode's pipe: devnode may exit while the container runs.
    if let Ok(null) = File::open("/dev/null") {
        // SAFETY: plain fd duplication.
        unsafe { libc::dup2(null.as_raw_fd(), 1) };
    }
    let (exit_code, signal) = wait(child);
    let exited = Exited {
        exit_code,
        signal,
        reason: None,
        message: (exit_code != 0 && spec.logs_on_error)
            .then(|| log_tail(&spec.log))
            .flatten(),
        finished_at: Utc::now(),
    };
    write_json(&spec.exit_file, &exited)?;
    Ok(exit_code)
}

/// The end of a container's log as kubelet takes it for `FallbackToLogsOnError`: the last
/// 80 lines, at most the last 2048 bytes; `None` when the log is empty.
fn log_tail(log: &Path) -> Option<String> {
    const MAX_LINES: usize = 80;
    const MAX_BYTES: u64 = 2048;
    let mut file = File::open(log).ok()?;
    let len = file.metadata().ok()?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(MAX_BYTES)))
        .ok()?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).ok()?;
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(MAX_LINES)..].join("\n");
    (!tail.trim().is_empty()).then_some(tail)
}

/// Waits for the child; a signal death is reported as 128 + signal, as shells do.
fn wait(child: Pid) -> (i32, Option<i32>) {
    loop {
        match waitpid(child, None) {
            Ok(WaitStatus::Exited(_, code)) => return (code, None),
            Ok(WaitStatus::Signaled(_, sig, _)) => return (128 + sig as i32, Some(sig as i32)),
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return (255, None),
        }
    }
}

/// In the child (PID 1 of the new namespace): set up mounts and exec. Returns only on error.
fn container(
    spec: &ShimSpec,
    log: &File,
    path: &CString,
    argv: &[CString],
    envp: &[CString],
) -> Error {
    match setup(spec, log) {
        Ok(()) => match nix::unistd::execve(path, argv, envp) {
            Err(e) => Error::Sys(format!("exec {}", spec.path.display()), e),
        },
        Err(e) => e,
    }
}

fn setup(spec: &ShimSpec, log: &File) -> Result<()> {
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)
        .map_err(Error::sys("set parent-death signal"))?;
    unshare(CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWUTS)
        .map_err(Error::sys("unshare mount and UTS namespaces"))?;
    let none: Option<&str> = None;
    mount(none, "/", none, MsFlags::MS_REC | MsFlags::MS_PRIVATE, none)
        .map_err(Error::sys("make mounts private"))?;
    mount(
        Some("proc"),
        "/proc",
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        none,
    )
    .map_err(Error::sys("mount /proc"))?;
    nix::unistd::sethostname(&spec.hostname).map_err(Error::sys("set hostname"))?;
    for m in &spec.mounts {
        bind(m)?;
    }
    if let Some(cwd) = &spec.cwd {
        std::fs::create_dir_all(cwd)
            .map_err(Error::io(format!("create working dir {}", cwd.display())))?;
        nix::unistd::chdir(cwd).map_err(Error::sys(format!("chdir {}", cwd.display())))?;
    }
    let null = File::open("/dev/null").map_err(Error::io("open /dev/null"))?;
    // SAFETY: plain fd duplication onto stdin, stdout and stderr.
    unsafe {
        libc::dup2(null.as_raw_fd(), 0);
        libc::dup2(log.as_raw_fd(), 1);
        libc::dup2(log.as_raw_fd(), 2);
    }
    if let Some(gid) = spec.gid {
        nix::unistd::setgroups(&[]).map_err(Error::sys("setgroups"))?;
        nix::unistd::setgid(Gid::from_raw(gid)).map_err(Error::sys("setgid"))?;
    }
    if let Some(uid) = spec.uid {
        nix::unistd::setuid(Uid::from_raw(uid)).map_err(Error::sys("setuid"))?;
    }
    Ok(())
}

/// Bind-mounts a volume, creating the target (a directory, or a file for a file source).
fn bind(m: &Mount) -> Result<()> {
    let is_dir = m.source.is_dir();
    if is_dir {
        std::fs::create_dir_all(&m.target)
            .map_err(Error::io(format!("create {}", m.target.display())))?;
    } else if !m.target.exists() {
        if let Some(parent) = m.target.parent() {
            std::fs::create_dir_all(parent)
                .map_err(Error::io(format!("create {}", parent.display())))?;
        }
        File::create(&m.target).map_err(Error::io(format!("create {}", m.target.display())))?;
    }
    let none: Option<&str> = None;
    let what = format!("bind {} at {}", m.source.display(), m.target.display());
    mount(
        Some(&m.source),
        &m.target,
        none,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        none,
    )
    .map_err(Error::sys(what.clone()))?;
    if m.read_only {
        let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
        mount(none, &m.target, none, flags, none)
            .map_err(Error::sys(format!("{what} read-only")))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_termination_message_is_the_logs_end_as_kubelet_cuts_it() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("c.log");
        assert_eq!(log_tail(&log), None, "no log");
        std::fs::write(&log, "\n  \n").unwrap();
        assert_eq!(log_tail(&log), None, "blank log");
        let lines: String = (0..100).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&log, &lines).unwrap();
        let tail = log_tail(&log).unwrap();
        assert_eq!(tail.lines().count(), 80);
        assert!(
            tail.starts_with("line 20\n") && tail.ends_with("line 99"),
            "{tail}"
        );
        std::fs::write(&log, format!("{}\nlast words", "x".repeat(5000))).unwrap();
        let tail = log_tail(&log).unwrap();
        assert!(
            tail.len() <= 2048 && tail.ends_with("\nlast words"),
            "{}",
            tail.len()
        );
    }
}
