//! KubeVirt's realtime vCPUs (`spec.domain.cpu.realtime`): once QEMU runs (paused), the
//! vCPU threads of the mask get the SCHED_FIFO policy at priority 1. virt-handler sets it,
//! as KubeVirt's handler does (pkg/hypervisor/kvm/realtime.go): the launcher and QEMU run
//! without CAP_SYS_NICE. When the kernel refuses, the VMI fails naming the field and why,
//! so a realtime VMI never runs without its realtime vCPUs.

use std::path::PathBuf;

use crds::VirtualMachineInstanceSpec;

use crate::{Error, Result};

const FIELD: &str = "spec.domain.cpu.realtime";

/// The realtime priority KubeVirt gives the vCPU threads.
const PRIORITY: i32 = 1;

/// Gives the realtime vCPUs of `spec` (running in the QEMU under `launcher_pid`, host
/// pids) SCHED_FIFO. Returns the (vCPU, thread id) pairs set; nothing without
/// `cpu.realtime`.
pub fn apply(spec: &VirtualMachineInstanceSpec, launcher_pid: u32) -> Result<Vec<(u32, i32)>> {
    let Some(realtime) = spec.domain.cpu.as_ref().and_then(|c| c.realtime.as_ref()) else {
        return Ok(Vec::new());
    };
    let qemu = qemu_under(launcher_pid).ok_or_else(|| {
        Error::unsupported(
            FIELD,
            format!("no QEMU process runs under the launcher (pid {launcher_pid})"),
        )
    })?;
    let threads = vcpu_threads(qemu)?;
    // The vCPUs the guest starts with: a hotplug headroom's have no thread yet.
    let started = threads.len() as u32;
    let cpu = spec.domain.cpu.clone().unwrap_or_default();
    let headroom = cpu.max_sockets.map_or(spec.domain.vcpus(), |m| {
        m * cpu.cores.unwrap_or(1) * cpu.threads.unwrap_or(1)
    });
    let wanted = realtime
        .vcpus(headroom.max(started))
        .map_err(|why| Error::unsupported(format!("{FIELD}.mask"), why))?;
    let mut set = Vec::new();
    for vcpu in wanted.into_iter().filter(|v| *v < started) {
        let tid = *threads.get(&vcpu).ok_or_else(|| {
            Error::unsupported(FIELD, format!("QEMU {qemu} has no thread for vCPU {vcpu}"))
        })?;
        set_fifo(tid).map_err(|e| refused(vcpu, tid, e))?;
        set.push((vcpu, tid));
    }
    tracing::info!(?set, "realtime vCPU threads run SCHED_FIFO at priority 1");
    Ok(set)
}

/// SCHED_FIFO at [`PRIORITY`] for thread `tid`.
pub fn set_fifo(tid: i32) -> std::io::Result<()> {
    let param = libc::sched_param {
        sched_priority: PRIORITY,
    };
    // SAFETY: sched_setscheduler reads the one sched_param it is given.
    if unsafe { libc::sched_setscheduler(tid, libc::SCHED_FIFO, &param) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The scheduling policy of thread `tid` (`policy` of /proc/<tid>/sched: 1 is SCHED_FIFO).
pub fn policy(tid: i32) -> Option<i32> {
    // SAFETY: sched_getscheduler takes a thread id only.
    let p = unsafe { libc::sched_getscheduler(tid) };
    (p >= 0).then_some(p)
}

/// The VMI's failure when the kernel refuses SCHED_FIFO: with EPERM from a cgroup without
/// a realtime budget, says so and what the node needs.
fn refused(vcpu: u32, tid: i32, e: std::io::Error) -> Error {
    let mut why = format!("the kernel refused SCHED_FIFO for vCPU {vcpu}'s thread {tid}: {e}");
    if e.raw_os_error() == Some(libc::EPERM)
        && let Some((cgroup, budget)) = rt_budget(tid)
    {
        why.push_str(&format!(
            "; its cpu cgroup {cgroup} has a realtime budget (cpu.rt_runtime_us) of {budget}"
        ));
        if budget == 0 {
            why.push_str(
                ": with the kernel's realtime group scheduling on cgroup v1, kubelet and the \
                 container runtime leave every pod's cgroup without one, so realtime VMIs need \
                 a node whose pod cgroups get a budget or whose kernel has realtime throttling \
                 off (kernel.sched_rt_runtime_us = -1)",
            );
        }
    }
    Error::unsupported(FIELD, why)
}

/// The cpu cgroup of thread `tid` and its `cpu.rt_runtime_us`, read through the host's
/// cgroup mount (PID 1's root: virt-handler runs with the host's PIDs); None when either
/// cannot be read.
fn rt_budget(tid: i32) -> Option<(String, i64)> {
    let cgroups = std::fs::read_to_string(format!("/proc/{tid}/cgroup")).ok()?;
    let (hierarchy, path) = cgroups.lines().find_map(|l| {
        let mut f = l.splitn(3, ':');
        let (_, controllers, path) = (f.next()?, f.next()?, f.next()?);
        controllers
            .split(',')
            .any(|c| c == "cpu")
            .then(|| (controllers.to_owned(), path.to_owned()))
    })?;
    let rel = path.trim_start_matches('/');
    [
        PathBuf::from("/proc/1/root/sys/fs/cgroup").join(&hierarchy),
        PathBuf::from("/sys/fs/cgroup").join(&hierarchy),
    ]
    .iter()
    .find_map(|mount| {
        let value = std::fs::read_to_string(mount.join(rel).join("cpu.rt_runtime_us")).ok()?;
        value.trim().parse().ok()
    })
    .map(|budget| (path, budget))
}

/// The QEMU process among the descendants of `ancestor`.
fn qemu_under(ancestor: u32) -> Option<u32> {
    let parent = |pid: u32| -> Option<u32> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The fields after the command, which is in parentheses and may hold anything.
        let rest = &stat[stat.rfind(')')? + 2..];
        rest.split_whitespace().nth(1)?.parse().ok()
    };
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let comm = std::fs::read_to_string(e.path().join("comm")).ok()?;
        if !comm.starts_with("qemu-system") {
            return None;
        }
        let mut p = pid;
        for _ in 0..16 {
            p = parent(p)?;
            if p == ancestor {
                return Some(pid);
            }
            if p <= 1 {
                return None;
            }
        }
        None
    })
}

/// QEMU's vCPU threads by vCPU: the tasks named `CPU <n>/KVM` (or `/TCG` under software
/// emulation).
fn vcpu_threads(qemu: u32) -> Result<std::collections::BTreeMap<u32, i32>> {
    let dir = PathBuf::from(format!("/proc/{qemu}/task"));
    let tasks = std::fs::read_dir(&dir).map_err(Error::io("reading", &dir))?;
    Ok(tasks
        .flatten()
        .filter_map(|t| {
            let tid: i32 = t.file_name().to_str()?.parse().ok()?;
            let vcpu = vcpu_of(&std::fs::read_to_string(t.path().join("comm")).ok()?)?;
            Some((vcpu, tid))
        })
        .collect())
}

/// The vCPU a QEMU thread's name says it runs (`CPU 3/KVM`, `CPU 0/TCG`).
fn vcpu_of(comm: &str) -> Option<u32> {
    let rest = comm.trim_end().strip_prefix("CPU ")?;
    let (n, accel) = rest.split_once('/')?;
    matches!(accel, "KVM" | "TCG").then_some(())?;
    n.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vcpu_threads_are_known_by_name() {
        assert_eq!(vcpu_of("CPU 0/KVM\n"), Some(0));
        assert_eq!(vcpu_of("CPU 12/TCG\n"), Some(12));
        assert_eq!(vcpu_of("IO mon_iothread\n"), None);
        assert_eq!(vcpu_of("CPU 1/XYZ"), None);
    }

    /// The kernel's EPERM names the field, the thread's cpu cgroup and its realtime budget.
    #[test]
    fn a_refusal_names_the_field_and_the_cgroups_budget() {
        // SAFETY: gettid has no arguments.
        let tid = unsafe { libc::gettid() };
        let msg = refused(1, tid, std::io::Error::from_raw_os_error(libc::EPERM)).to_string();
        assert!(msg.starts_with(FIELD), "{msg}");
        assert!(msg.contains("refused SCHED_FIFO for vCPU 1"), "{msg}");
        let (cgroup, budget) = rt_budget(tid).expect("this thread's cpu cgroup and budget");
        assert!(
            msg.contains(&format!(
                "its cpu cgroup {cgroup} has a realtime budget (cpu.rt_runtime_us) of {budget}"
            )),
            "{msg}"
        );
        // The same figure as the cgroup's file says.
        let file = std::path::Path::new("/sys/fs/cgroup/cpu")
            .join(cgroup.trim_start_matches('/'))
            .join("cpu.rt_runtime_us");
        let text = std::fs::read_to_string(&file).unwrap();
        assert_eq!(text.trim(), budget.to_string(), "{}", file.display());
    }

    /// The syscall path itself, on a thread of this test, which runs as root in the
    /// machine's root cpu cgroup (a realtime budget of 950 ms a second).
    #[test]
    fn a_thread_gets_sched_fifo() {
        let (tx, rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let t = std::thread::spawn(move || {
            // SAFETY: gettid has no arguments.
            tx.send(unsafe { libc::gettid() }).unwrap();
            done_rx.recv().ok();
        });
        let tid = rx.recv().unwrap();
        assert_eq!(policy(tid), Some(libc::SCHED_OTHER));
        if let Err(e) = set_fifo(tid) {
            panic!(
                "{} (the test needs root in a cpu cgroup with a realtime budget)",
                refused(0, tid, e)
            );
        }
        assert_eq!(policy(tid), Some(libc::SCHED_FIFO));
        done_tx.send(()).unwrap();
        t.join().unwrap();
    }
}
