//! `status.printableStatus` of a VM, as KubeVirt derives it: the first status that holds,
//! in KubeVirt's order of precedence. Pure.

use crds::printable_status as ps;
use crds::{RunStrategy, VmiPhase};

/// What the printable status is derived from.
#[derive(Clone, Copy, Debug, Default)]
pub struct Facts {
    /// The VM has a deletionTimestamp.
    pub vm_deleting: bool,
    pub vmi: Option<VmiFacts>,
    /// A VMI was just created in this pass (KubeVirt: a pending create expectation).
    pub start_expected: bool,
    /// The VMI was just deleted in this pass.
    pub stop_expected: bool,
    /// status.startFailure.consecutiveFailCount.
    pub start_failures: u32,
    pub strategy: Option<RunStrategy>,
}

/// What matters of the VMI.
#[derive(Clone, Copy, Debug, Default)]
pub struct VmiFacts {
    /// None: not processed yet.
    pub phase: Option<VmiPhase>,
    pub deleting: bool,
    /// Condition Paused is True.
    pub paused: bool,
    /// Condition PodScheduled is False with reason Unschedulable.
    pub unschedulable: bool,
    /// Condition Synchronized is False with reason FailedPvcNotFound (a claim of its
    /// volumes does not exist).
    pub pvc_not_found: bool,
}

impl VmiFacts {
    fn is_final(&self) -> bool {
        self.phase.is_some_and(VmiPhase::is_final)
    }
}

/// The printable status.
pub fn printable_status(f: &Facts) -> &'static str {
    let vmi = f.vmi.as_ref();
    let running = vmi.is_some_and(|v| v.phase == Some(VmiPhase::Running));
    if f.vm_deleting {
        ps::TERMINATING
    } else if vmi.is_some_and(|v| !v.is_final() && (v.deleting || f.stop_expected)) {
        ps::STOPPING
    } else if running && vmi.is_some_and(|v| v.paused) {
        ps::PAUSED
    } else if running {
        ps::RUNNING
    } else if vmi.is_some_and(|v| v.pvc_not_found) {
        ps::ERROR_PVC_NOT_FOUND
    } else if vmi.is_some_and(|v| v.unschedulable) {
        ps::ERROR_UNSCHEDULABLE
    } else if match vmi {
        None => f.start_expected,
        Some(v) => matches!(
            v.phase,
            None | Some(VmiPhase::Pending | VmiPhase::Scheduling | VmiPhase::Scheduled)
        ),
    } {
        ps::STARTING
    } else if vmi.is_none_or(|v| v.is_final())
        && !f.start_expected
        && f.start_failures > 0
        && matches!(
            f.strategy,
            Some(RunStrategy::Always | RunStrategy::RerunOnFailure | RunStrategy::Once)
        )
    {
        ps::CRASH_LOOP_BACK_OFF
    } else if match vmi {
        Some(v) => v.is_final(),
        None => !f.start_expected,
    } {
        ps::STOPPED
    } else {
        ps::UNKNOWN
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vmi(phase: Option<VmiPhase>) -> Option<VmiFacts> {
        Some(VmiFacts {
            phase,
            ..Default::default()
        })
    }

    #[test]
    fn each_status() {
        let base = Facts {
            strategy: Some(RunStrategy::Always),
            ..Default::default()
        };
        let cases: Vec<(Facts, &str)> = vec![
            (
                Facts {
                    vm_deleting: true,
                    vmi: vmi(Some(VmiPhase::Running)),
                    ..base
                },
                ps::TERMINATING,
            ),
            (
                Facts {
                    vmi: Some(VmiFacts {
                        phase: Some(VmiPhase::Running),
                        deleting: true,
                        ..Default::default()
                    }),
                    ..base
                },
                ps::STOPPING,
            ),
            (
                Facts {
                    vmi: vmi(Some(VmiPhase::Running)),
                    stop_expected: true,
                    ..base
                },
                ps::STOPPING,
            ),
            (
                Facts {
                    vmi: Some(VmiFacts {
                        phase: Some(VmiPhase::Running),
                        paused: true,
                        ..Default::default()
                    }),
                    ..base
                },
                ps::PAUSED,
            ),
            (
                Facts {
                    vmi: vmi(Some(VmiPhase::Running)),
                    ..base
                },
                ps::RUNNING,
            ),
            (
                Facts {
                    vmi: Some(VmiFacts {
                        phase: Some(VmiPhase::Scheduling),
                        unschedulable: true,
                        ..Default::default()
                    }),
                    ..base
                },
                ps::ERROR_UNSCHEDULABLE,
            ),
            (
                Facts {
                    vmi: Some(VmiFacts {
                        phase: Some(VmiPhase::Pending),
                        pvc_not_found: true,
                        ..Default::default()
                    }),
                    ..base
                },
                ps::ERROR_PVC_NOT_FOUND,
            ),
            (
                Facts {
                    vmi: vmi(None),
                    ..base
                },
                ps::STARTING,
            ),
            (
                Facts {
                    vmi: vmi(Some(VmiPhase::Pending)),
                    ..base
                },
                ps::STARTING,
            ),
            (
                Facts {
                    vmi: vmi(Some(VmiPhase::Scheduling)),
                    ..base
                },
                ps::STARTING,
            ),
            (
                Facts {
                    vmi: vmi(Some(VmiPhase::Scheduled)),
                    ..base
                },
                ps::STARTING,
            ),
            (
                Facts {
                    start_expected: true,
                    ..base
                },
                ps::STARTING,
            ),
            (
                Facts {
                    start_failures: 2,
                    ..base
                },
                ps::CRASH_LOOP_BACK_OFF,
            ),
            (
                Facts {
                    vmi: vmi(Some(VmiPhase::Failed)),
                    start_failures: 1,
                    ..base
                },
                ps::CRASH_LOOP_BACK_OFF,
            ),
            (
                Facts {
                    vmi: vmi(Some(VmiPhase::Failed)),
                    start_failures: 1,
                    strategy: Some(RunStrategy::Manual),
                    ..base
                },
                ps::STOPPED,
            ),
            (Facts { ..base }, ps::STOPPED),
            (
                Facts {
                    vmi: vmi(Some(VmiPhase::Succeeded)),
                    ..base
                },
                ps::STOPPED,
            ),
            (
                Facts {
                    vmi: vmi(Some(VmiPhase::Unknown)),
                    ..base
                },
                ps::UNKNOWN,
            ),
        ];
        for (facts, want) in cases {
            assert_eq!(printable_status(&facts), want, "{facts:?}");
        }
    }

    #[test]
    fn stopping_wins_over_starting_and_terminating_over_all() {
        let f = Facts {
            vmi: Some(VmiFacts {
                phase: Some(VmiPhase::Scheduling),
                deleting: true,
                unschedulable: true,
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(printable_status(&f), ps::STOPPING);
        assert_eq!(
            printable_status(&Facts {
                vm_deleting: true,
                ..f
            }),
            ps::TERMINATING
        );
    }
}
