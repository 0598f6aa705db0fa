//! A pod's sandbox, for `shareProcessNamespace: true` (the launcher pod sets it): one
//! process, `devnode pause`, started through the shim like a container, is PID 1 of a new
//! PID namespace that every container of the pod joins, as kubelet's pause container holds
//! a pod's namespaces. It reaps the orphans it inherits and exits on SIGTERM/SIGINT; when
//! it ends, the kernel kills whatever still runs in the namespace. Recorded in the pod dir
//! as the container [`NAME`] (not a valid container name, so no clash).

use std::path::PathBuf;

use k8s_openapi::api::core::v1::Pod;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::wait::{WaitPidFlag, waitpid};
use nix::unistd::Pid;

use crate::state::{PodDir, ShimSpec, Started};
use crate::{Ctx, env};

/// The sandbox's name in the pod dir (`_sandbox.started.json`, `_sandbox.log`).
pub const NAME: &str = "_sandbox";

/// Whether the pod shares one PID namespace between its containers.
pub fn wanted(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.share_process_namespace)
        .unwrap_or(false)
}

/// The PID namespace the pod's containers join.
pub fn pid_namespace(sandbox: &Started) -> PathBuf {
    PathBuf::from(format!("/proc/{}/ns/pid", sandbox.pid))
}

/// What the shim runs for the sandbox.
pub fn spec(ctx: &Ctx, pod: &Pod, dir: &PodDir) -> ShimSpec {
    let exe = ctx.self_exe.to_string_lossy().into_owned();
    ShimSpec {
        path: ctx.self_exe.clone(),
        argv: vec![exe, "pause".into()],
        env: vec![],
        cwd: None,
        hostname: env::hostname(pod),
        mounts: vec![],
        uid: None,
        gid: None,
        log: dir.log(NAME),
        started_file: dir.started(NAME),
        exit_file: dir.exited(NAME),
        logs_on_error: false,
        pid_namespace: None,
    }
}

/// `devnode pause`: waits for SIGTERM/SIGINT, reaping children meanwhile. Returns 0.
pub fn pause() -> i32 {
    let mut set = SigSet::empty();
    for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGCHLD] {
        set.add(s);
    }
    if set.thread_block().is_err() {
        return 1;
    }
    loop {
        match set.wait() {
            Ok(Signal::SIGCHLD) => {
                while let Ok(status) = waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                    if status == nix::sys::wait::WaitStatus::StillAlive {
                        break;
                    }
                }
            }
            Ok(_) => return 0,
            Err(_) => continue,
        }
    }
}
