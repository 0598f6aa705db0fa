//! What the cluster should look like, and what is wrong with a snapshot of it: a pure
//! function, so the checks are tested without a cluster.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// What a VM should be doing once the cluster has settled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// A Running VMI with a live guest (Always, RerunOnFailure).
    Running,
    /// No VMI (Halted; RerunOnFailure after its guest powered off cleanly).
    Stopped,
}

/// One VM as the API server and the node show it.
#[derive(Clone, Debug, Default)]
pub struct VmState {
    pub name: String,
    pub printable: Option<String>,
    pub vmi: Option<VmiState>,
}

#[derive(Clone, Debug, Default)]
pub struct VmiState {
    pub uid: String,
    pub phase: Option<String>,
    pub age: Duration,
}

/// Everything one look at the cluster sees.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub namespace: String,
    pub vms: Vec<(VmState, Expect)>,
    /// (pid, the VMI uid it serves)
    pub launchers: Vec<(u32, String)>,
    /// (pid, parent pid, libvirt domain name)
    pub qemus: Vec<(u32, u32, String)>,
    /// The per-VMI directories in the node's run dir.
    pub vmi_dirs: Vec<String>,
    /// Pods in the namespace: (name, the VMI uid of its `kubevirt.io/created-by` label).
    pub pods: Vec<(String, Option<String>)>,
}

/// What is wrong: `broken` breaks an invariant at any moment; `pending` is fine while
/// the cluster settles and a violation once it should have.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Findings {
    pub broken: Vec<(&'static str, String)>,
    pub pending: Vec<(&'static str, String)>,
    pub stuck: Vec<(&'static str, String)>,
}

impl Findings {
    pub fn settled(&self) -> bool {
        self.broken.is_empty() && self.pending.is_empty()
    }
}

const FINAL: [&str; 2] = ["Succeeded", "Failed"];

pub fn evaluate(s: &Snapshot, stuck_after: Duration) -> Findings {
    let mut f = Findings::default();
    let uids: BTreeSet<&str> = s
        .vms
        .iter()
        .filter_map(|(vm, _)| vm.vmi.as_ref().map(|v| v.uid.as_str()))
        .collect();
    let launcher_uid: BTreeMap<u32, &str> = s
        .launchers
        .iter()
        .map(|(pid, uid)| (*pid, uid.as_str()))
        .collect();

    // Invariants, whatever the moment.
    let mut per_uid: BTreeMap<&str, u32> = BTreeMap::new();
    for (_, uid) in &s.launchers {
        *per_uid.entry(uid).or_default() += 1;
    }
    for (uid, n) in &per_uid {
        if *n > 1 {
            f.broken.push((
                "two launchers for one VMI",
                format!("VMI {uid}: {n} launchers"),
            ));
        }
    }
    let mut qemu_per_uid: BTreeMap<&str, u32> = BTreeMap::new();
    let mut qemu_per_domain: BTreeMap<&str, u32> = BTreeMap::new();
    for (pid, ppid, domain) in &s.qemus {
        *qemu_per_domain.entry(domain).or_default() += 1;
        match launcher_uid.get(ppid) {
            Some(uid) => *qemu_per_uid.entry(uid).or_default() += 1,
            None => f.pending.push((
                "orphan QEMU, launcher, directory or pod",
                format!("QEMU {pid} ({domain}) has no launcher as parent"),
            )),
        }
    }
    for (uid, n) in &qemu_per_uid {
        if *n > 1 {
            f.broken.push((
                "two QEMU for one VMI",
                format!("VMI {uid}: {n} QEMU processes"),
            ));
        }
    }
    for (domain, n) in &qemu_per_domain {
        if *n > 1 {
            f.broken.push((
                "two QEMU for one VMI",
                format!("domain {domain}: {n} QEMU processes"),
            ));
        }
    }

    // Each VM as expected.
    for (vm, expect) in &s.vms {
        let name = &vm.name;
        let printable = vm.printable.as_deref().unwrap_or("none");
        if let Some(vmi) = &vm.vmi {
            let phase = vmi.phase.as_deref().unwrap_or("none");
            if !FINAL.contains(&phase) && phase != "Running" && vmi.age > stuck_after {
                f.stuck.push((
                    "VMI stuck short of a final phase",
                    format!(
                        "VMI {name} ({}) in phase {phase} for {} s",
                        vmi.uid,
                        vmi.age.as_secs()
                    ),
                ));
            }
        }
        match expect {
            Expect::Running => {
                let running = vm
                    .vmi
                    .as_ref()
                    .is_some_and(|v| v.phase.as_deref() == Some("Running"));
                if !running {
                    let phase = vm.vmi.as_ref().and_then(|v| v.phase.clone());
                    f.pending.push((
                        "VM not as expected after settling",
                        format!(
                            "VM {name} should run: VMI phase {}",
                            phase.as_deref().unwrap_or("(no VMI)")
                        ),
                    ));
                    continue;
                }
                let uid = vm.vmi.as_ref().map(|v| v.uid.as_str()).unwrap_or_default();
                let n = qemu_per_uid.get(uid).copied().unwrap_or(0);
                if n != 1 {
                    f.pending.push((
                        "VM not as expected after settling",
                        format!("VM {name} is Running but its VMI {uid} has {n} QEMU processes"),
                    ));
                }
                if printable != "Running" {
                    f.pending.push((
                        "VM status untrue after settling",
                        format!("VM {name} runs but printableStatus is {printable}"),
                    ));
                }
            }
            Expect::Stopped => {
                if let Some(vmi) = &vm.vmi {
                    f.pending.push((
                        "VM not as expected after settling",
                        format!(
                            "VM {name} should be stopped: VMI {} in phase {}",
                            vmi.uid,
                            vmi.phase.as_deref().unwrap_or("none")
                        ),
                    ));
                } else if printable != "Stopped" {
                    f.pending.push((
                        "VM status untrue after settling",
                        format!("VM {name} is stopped but printableStatus is {printable}"),
                    ));
                }
            }
        }
    }

    // Nothing left behind by VMIs that are gone.
    let orphan = "orphan QEMU, launcher, directory or pod";
    for (pid, uid) in &s.launchers {
        if !uids.contains(uid.as_str()) {
            f.pending.push((
                orphan,
                format!("launcher {pid} of VMI {uid}, which is gone"),
            ));
        }
    }
    for uid in &s.vmi_dirs {
        if !uids.contains(uid.as_str()) {
            f.pending
                .push((orphan, format!("directory of VMI {uid}, which is gone")));
        }
    }
    for (pod, uid) in &s.pods {
        if !uid.as_deref().is_some_and(|u| uids.contains(u)) {
            f.pending.push((
                orphan,
                format!("pod {}/{pod} of VMI {uid:?}, which is gone", s.namespace),
            ));
        }
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm(name: &str, uid: Option<&str>, phase: &str, printable: &str) -> VmState {
        VmState {
            name: name.into(),
            printable: Some(printable.into()),
            vmi: uid.map(|u| VmiState {
                uid: u.into(),
                phase: Some(phase.into()),
                age: Duration::from_secs(10),
            }),
        }
    }

    fn healthy() -> Snapshot {
        Snapshot {
            namespace: "chaos".into(),
            vms: vec![
                (vm("a", Some("u1"), "Running", "Running"), Expect::Running),
                (vm("h", None, "", "Stopped"), Expect::Stopped),
            ],
            launchers: vec![(10, "u1".into())],
            qemus: vec![(11, 10, "chaos_a".into())],
            vmi_dirs: vec!["u1".into()],
            pods: vec![("virt-launcher-a-x".into(), Some("u1".into()))],
        }
    }

    #[test]
    fn a_healthy_cluster_is_settled() {
        let f = evaluate(&healthy(), Duration::from_secs(60));
        assert_eq!(f, Findings::default());
        assert!(f.settled());
    }

    #[test]
    fn doubles_break_invariants_and_leftovers_are_orphans() {
        let mut s = healthy();
        s.launchers.push((20, "u1".into()));
        s.qemus.push((21, 20, "chaos_a".into()));
        s.qemus.push((30, 1, "chaos_old".into()));
        s.vmi_dirs.push("gone".into());
        s.pods.push(("p".into(), Some("gone".into())));
        let f = evaluate(&s, Duration::from_secs(60));
        let kinds: Vec<&str> = f.broken.iter().map(|(k, _)| *k).collect();
        assert_eq!(
            kinds,
            [
                "two launchers for one VMI",
                "two QEMU for one VMI",
                "two QEMU for one VMI"
            ]
        );
        let orphans = f
            .pending
            .iter()
            .filter(|(k, _)| k.starts_with("orphan"))
            .count();
        assert_eq!((f.pending.len(), orphans), (4, 3), "{:?}", f.pending);
        assert!(
            f.pending
                .iter()
                .any(|(_, d)| d.contains("VMI u1 has 2 QEMU"))
        );
    }

    #[test]
    fn wrong_phase_status_and_stuck_vmis_are_named() {
        let mut s = healthy();
        s.vms[0].0.vmi.as_mut().unwrap().phase = Some("Scheduled".into());
        s.vms[0].0.vmi.as_mut().unwrap().age = Duration::from_secs(600);
        s.vms[1].0.printable = Some("Running".into());
        let f = evaluate(&s, Duration::from_secs(60));
        assert!(!f.settled());
        assert_eq!(f.stuck.len(), 1);
        assert!(
            f.pending[0]
                .1
                .contains("VM a should run: VMI phase Scheduled"),
            "{:?}",
            f.pending
        );
        assert!(
            f.pending[1].1.contains("printableStatus is Running"),
            "{:?}",
            f.pending
        );
    }
}
