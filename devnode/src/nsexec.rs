//! `devnode nsexec <pid> -- cmd...`: runs a command inside a container's PID, mount and UTS
//! namespaces (for exec probes). Single-threaded: setns into a mount namespace refuses
//! multi-threaded callers.

use nix::sched::{CloneFlags, setns};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, fork};
use std::os::unix::process::CommandExt;

/// Returns the command's exit code (126 when it could not be run).
pub fn run(pid: i32, command: &[String]) -> i32 {
    for (ns, flag) in [
        ("pid", CloneFlags::CLONE_NEWPID),
        ("uts", CloneFlags::CLONE_NEWUTS),
        ("mnt", CloneFlags::CLONE_NEWNS),
    ] {
        let path = format!("/proc/{pid}/ns/{ns}");
        let joined = match std::fs::File::open(&path) {
            Ok(f) => setns(f, flag).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = joined {
            eprintln!("devnode nsexec: join {path}: {e}");
            return 126;
        }
    }
    // Joining a PID namespace applies to children only: fork.
    // SAFETY: single-threaded process.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            let e = std::process::Command::new(&command[0])
                .args(&command[1..])
                .exec();
            eprintln!("devnode nsexec: exec {}: {e}", command[0]);
            // SAFETY: leave the child without running destructors.
            unsafe { libc::_exit(127) }
        }
        Ok(ForkResult::Parent { child }) => loop {
            match waitpid(child, None) {
                Ok(WaitStatus::Exited(_, code)) => return code,
                Ok(WaitStatus::Signaled(_, sig, _)) => return 128 + sig as i32,
                Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => return 126,
            }
        },
        Err(e) => {
            eprintln!("devnode nsexec: fork: {e}");
            126
        }
    }
}
