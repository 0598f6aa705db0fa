//! The runStrategy decision table: what the VM controller does with a VM's instance, as
//! KubeVirt's VM controller does it. Pure: no API calls, no clock.

use std::time::Duration;

use crds::{RunStrategy, StateChangeRequestAction, VirtualMachineStateChangeRequest, VmiPhase};

/// What the VM controller sees of the VM's instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmiView<'a> {
    pub uid: &'a str,
    /// None: not processed yet (as good as Pending).
    pub phase: Option<VmiPhase>,
    /// It has a deletionTimestamp: it is being stopped already.
    pub deleting: bool,
    /// It reached Running at some point (phaseTransitionTimestamps).
    pub was_running: bool,
}

impl VmiView<'_> {
    fn is_final(&self) -> bool {
        self.phase.is_some_and(VmiPhase::is_final)
    }
}

/// The inputs of one decision.
#[derive(Clone, Copy, Debug)]
pub struct Inputs<'a> {
    pub strategy: RunStrategy,
    pub vmi: Option<VmiView<'a>>,
    pub requests: &'a [VirtualMachineStateChangeRequest],
    /// `status.runStrategy`: set once a VMI was created; RerunOnFailure starts when it
    /// differs (the strategy was just switched to RerunOnFailure).
    pub status_run_strategy: Option<RunStrategy>,
    /// Time left of the crash-loop back-off (zero: none).
    pub backoff_left: Duration,
}

/// What to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Leave things as they are.
    Nothing,
    /// Create the VMI.
    Start,
    /// The VMI should be created, but not before the back-off has passed.
    WaitBackoff(Duration),
    /// Delete the VMI (a guest shutdown is requested through its pod).
    Stop,
    /// RerunOnFailure after a failure: delete the VMI and queue a Start request, so a
    /// new one starts once the old one is gone.
    StopAndRequestStart,
    /// Halted with a Start request (KubeVirt's start-paused path): switch the spec to
    /// runStrategy Always (or `running: true`), which then starts the VM.
    SwitchToAlways,
}

/// The first request is a Start.
pub fn has_start_request(requests: &[VirtualMachineStateChangeRequest]) -> bool {
    requests
        .first()
        .is_some_and(|r| r.action == StateChangeRequestAction::Start)
}

/// The first request is a Start asking for a paused start (`virtctl start --paused`: data
/// `paused: "true"`, KubeVirt's `StartRequestDataPausedKey`).
pub fn has_start_paused_request(requests: &[VirtualMachineStateChangeRequest]) -> bool {
    requests.first().is_some_and(|r| {
        r.action == StateChangeRequestAction::Start
            && r.data
                .as_ref()
                .and_then(|d| d.get("paused"))
                .is_some_and(|v| v == "true")
    })
}

/// The first request is a Stop for this VMI.
pub fn has_stop_request_for(requests: &[VirtualMachineStateChangeRequest], vmi_uid: &str) -> bool {
    requests.first().is_some_and(|r| {
        r.action == StateChangeRequestAction::Stop && r.uid.as_deref() == Some(vmi_uid)
    })
}

/// The decision table.
pub fn decide(i: &Inputs) -> Decision {
    let start_or_wait = || {
        if i.backoff_left > Duration::ZERO {
            Decision::WaitBackoff(i.backoff_left)
        } else {
            Decision::Start
        }
    };
    match i.strategy {
        RunStrategy::Always => match i.vmi {
            // A VMI always exists: a finished or stop-requested one is replaced (deleted
            // here, created again once it is gone).
            Some(v) if v.deleting => Decision::Nothing,
            Some(v) if v.is_final() || has_stop_request_for(i.requests, v.uid) => Decision::Stop,
            Some(_) => Decision::Nothing,
            None => start_or_wait(),
        },
        RunStrategy::RerunOnFailure => match i.vmi {
            Some(v) if v.deleting => Decision::Nothing,
            Some(v) if v.phase == Some(VmiPhase::Failed) => Decision::StopAndRequestStart,
            // A guest shutdown is respected: the finished VMI goes, nothing replaces it.
            Some(v)
                if v.phase == Some(VmiPhase::Succeeded)
                    || has_stop_request_for(i.requests, v.uid) =>
            {
                Decision::Stop
            }
            Some(_) => Decision::Nothing,
            None if has_start_request(i.requests)
                || i.status_run_strategy != Some(RunStrategy::RerunOnFailure) =>
            {
                start_or_wait()
            }
            None => Decision::Nothing,
        },
        RunStrategy::Once => match i.vmi {
            // Runs once; a finished VMI stays as it is.
            Some(_) => Decision::Nothing,
            None => start_or_wait(),
        },
        RunStrategy::Manual => match i.vmi {
            Some(v) if !v.deleting && has_stop_request_for(i.requests, v.uid) => Decision::Stop,
            Some(_) => Decision::Nothing,
            None if has_start_request(i.requests) => Decision::Start,
            None => Decision::Nothing,
        },
        RunStrategy::Halted => match i.vmi {
            Some(v) if !v.deleting => Decision::Stop,
            Some(_) => Decision::Nothing,
            None if has_start_request(i.requests) => Decision::SwitchToAlways,
            None => Decision::Nothing,
        },
    }
}

/// Whether the first state change request has been acted on and is removed, judged on
/// the VMI as seen before acting (so a request is removed on the pass after its effect
/// shows).
pub fn first_request_done(
    requests: &[VirtualMachineStateChangeRequest],
    vmi: Option<VmiView>,
) -> bool {
    let Some(first) = requests.first() else {
        return false;
    };
    match first.action {
        StateChangeRequestAction::Stop => match (vmi, first.uid.as_deref()) {
            // No VMI: it was stopped. No UID: it can never be acted on.
            (None, _) | (_, None) => true,
            // A VMI other than the one to stop: that one is gone already.
            (Some(v), Some(uid)) => v.uid != uid,
        },
        StateChangeRequestAction::Start => vmi.is_some_and(|v| !v.deleting && !v.is_final()),
    }
}

/// Should the VM be running according to its strategy, requests and instance? (KubeVirt's
/// `isSetToStart`.)
pub fn is_set_to_start(i: &Inputs) -> bool {
    match i.strategy {
        RunStrategy::Always => true,
        RunStrategy::Halted => false,
        RunStrategy::Manual => match i.vmi {
            Some(v) => !has_stop_request_for(i.requests, v.uid),
            None => has_start_request(i.requests),
        },
        RunStrategy::RerunOnFailure => match i.vmi {
            Some(v) => v.phase != Some(VmiPhase::Succeeded),
            None => {
                has_start_request(i.requests)
                    || i.status_run_strategy != Some(RunStrategy::RerunOnFailure)
            }
        },
        RunStrategy::Once => i.vmi.is_none(),
    }
}

/// Start failures, for the crash-loop back-off: how many starts in a row ended before the
/// guest ever ran.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StartFailures {
    pub last_failed_vmi_uid: String,
    pub consecutive: u32,
}

/// KubeVirt's back-off before the next start after `fail_count` failed starts: an
/// interval of max/30 (at least 10 s) times the count squared, plus up to half of that at
/// random (`jitter` in [0, 1)) so failing VMs spread out, capped at `max`.
pub fn backoff_delay(fail_count: u32, max: Duration, jitter: f64) -> Duration {
    let count = u64::from(fail_count.max(1));
    let interval = (max.as_secs() / 30).max(10);
    let delay = interval.saturating_mul(count.saturating_mul(count));
    let random = ((delay / 2 + 1) as f64 * jitter.clamp(0.0, 0.999_999)) as u64;
    Duration::from_secs(delay.saturating_add(random)).min(max)
}

/// What becomes of the start-failure record after seeing `vmi`: cleared once a VMI runs
/// or the strategy does not restart on its own; one more failure when a VMI finished
/// without ever running (counted once per VMI); otherwise unchanged. `Some(true)` in the
/// second field means a new failure was recorded (its back-off starts now).
pub fn next_start_failures(
    prev: Option<&StartFailures>,
    vmi: Option<VmiView>,
    strategy: RunStrategy,
) -> (Option<StartFailures>, bool) {
    let restarts = matches!(
        strategy,
        RunStrategy::Always | RunStrategy::RerunOnFailure | RunStrategy::Once
    );
    if vmi.is_some_and(|v| v.was_running) || !restarts {
        return (None, false);
    }
    match vmi {
        Some(v) if v.is_final() => {
            if prev.is_some_and(|p| p.last_failed_vmi_uid == v.uid) {
                return (prev.cloned(), false);
            }
            let consecutive = prev.map_or(1, |p| p.consecutive + 1);
            (
                Some(StartFailures {
                    last_failed_vmi_uid: v.uid.to_string(),
                    consecutive,
                }),
                true,
            )
        }
        _ => (prev.cloned(), false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use RunStrategy::*;

    fn stop(uid: &str) -> VirtualMachineStateChangeRequest {
        VirtualMachineStateChangeRequest {
            action: StateChangeRequestAction::Stop,
            uid: Some(uid.into()),
            data: None,
        }
    }
    fn start() -> VirtualMachineStateChangeRequest {
        VirtualMachineStateChangeRequest {
            action: StateChangeRequestAction::Start,
            uid: None,
            data: None,
        }
    }

    /// The VMI outcomes of the table: none yet / running / Succeeded / Failed / deleted
    /// (gone after having run) / being deleted.
    #[derive(Clone, Copy, Debug)]
    enum Outcome {
        NeverCreated,
        Running,
        Succeeded,
        Failed,
        Deleted,
        Deleting,
    }

    fn view(o: Outcome) -> Option<VmiView<'static>> {
        let v = |phase, deleting| {
            Some(VmiView {
                uid: "u1",
                phase: Some(phase),
                deleting,
                was_running: true,
            })
        };
        match o {
            Outcome::NeverCreated | Outcome::Deleted => None,
            Outcome::Running => v(VmiPhase::Running, false),
            Outcome::Succeeded => v(VmiPhase::Succeeded, false),
            Outcome::Failed => v(VmiPhase::Failed, false),
            Outcome::Deleting => v(VmiPhase::Running, true),
        }
    }

    fn decide_for(strategy: RunStrategy, o: Outcome) -> Decision {
        // After a VMI existed, status.runStrategy is set; before, it is not.
        let status_run_strategy = match o {
            Outcome::NeverCreated => None,
            _ => Some(strategy),
        };
        decide(&Inputs {
            strategy,
            vmi: view(o),
            requests: &[],
            status_run_strategy,
            backoff_left: Duration::ZERO,
        })
    }

    #[test]
    fn every_run_strategy_against_every_outcome() {
        use Decision::*;
        use Outcome::*;
        let table = [
            // (strategy, outcome, decision)
            (Always, NeverCreated, Start),
            (Always, Running, Nothing),
            (Always, Succeeded, Stop), // replaced: deleted now, created once gone
            (Always, Failed, Stop),
            (Always, Deleted, Start),
            (Always, Deleting, Nothing),
            (RerunOnFailure, NeverCreated, Start),
            (RerunOnFailure, Running, Nothing),
            (RerunOnFailure, Succeeded, Stop), // a guest shutdown is respected
            (RerunOnFailure, Failed, StopAndRequestStart),
            (RerunOnFailure, Deleted, Nothing),
            (RerunOnFailure, Deleting, Nothing),
            (Once, NeverCreated, Start),
            (Once, Running, Nothing),
            (Once, Succeeded, Nothing),
            (Once, Failed, Nothing),
            (Once, Deleted, Start), // KubeVirt: a Once VM without a VMI starts one
            (Once, Deleting, Nothing),
            (Manual, NeverCreated, Nothing),
            (Manual, Running, Nothing),
            (Manual, Succeeded, Nothing),
            (Manual, Failed, Nothing),
            (Manual, Deleted, Nothing),
            (Manual, Deleting, Nothing),
            (Halted, NeverCreated, Nothing),
            (Halted, Running, Stop),
            (Halted, Succeeded, Stop),
            (Halted, Failed, Stop),
            (Halted, Deleted, Nothing),
            (Halted, Deleting, Nothing),
        ];
        for (strategy, outcome, want) in table {
            assert_eq!(
                decide_for(strategy, outcome),
                want,
                "{strategy:?} with {outcome:?}"
            );
        }
    }

    #[test]
    fn requests() {
        let running = view(Outcome::Running);
        fn i<'a>(
            strategy: RunStrategy,
            vmi: Option<VmiView<'a>>,
            requests: &'a [VirtualMachineStateChangeRequest],
        ) -> Inputs<'a> {
            Inputs {
                strategy,
                vmi,
                requests,
                status_run_strategy: Some(strategy),
                backoff_left: Duration::ZERO,
            }
        }
        // Manual: start and stop requests act.
        assert_eq!(decide(&i(Manual, None, &[start()])), Decision::Start);
        assert_eq!(decide(&i(Manual, running, &[stop("u1")])), Decision::Stop);
        // A stop for another VMI is ignored (and dropped).
        assert_eq!(
            decide(&i(Manual, running, &[stop("other")])),
            Decision::Nothing
        );
        assert!(first_request_done(&[stop("other")], running));
        // Restart = [Stop(uid), Start] on Always: stop now, start once gone.
        assert_eq!(
            decide(&i(Always, running, &[stop("u1"), start()])),
            Decision::Stop
        );
        assert!(!first_request_done(&[stop("u1"), start()], running));
        assert!(first_request_done(&[stop("u1"), start()], None));
        assert_eq!(decide(&i(Always, None, &[start()])), Decision::Start);
        assert!(!first_request_done(&[start()], None));
        assert!(first_request_done(&[start()], running));
        // A Start is not done while the only VMI is finished or going.
        assert!(!first_request_done(&[start()], view(Outcome::Succeeded)));
        assert!(!first_request_done(&[start()], view(Outcome::Deleting)));
        // RerunOnFailure: a stop request stops; a start request after a shutdown starts.
        assert_eq!(
            decide(&i(RerunOnFailure, running, &[stop("u1")])),
            Decision::Stop
        );
        assert_eq!(
            decide(&i(RerunOnFailure, None, &[start()])),
            Decision::Start
        );
        // Halted + start request: switch to Always.
        assert_eq!(
            decide(&i(Halted, None, &[start()])),
            Decision::SwitchToAlways
        );
        // A stop without UID is dropped.
        let no_uid = VirtualMachineStateChangeRequest {
            action: StateChangeRequestAction::Stop,
            uid: None,
            data: None,
        };
        assert!(first_request_done(&[no_uid], running));
    }

    #[test]
    fn rerun_on_failure_starts_when_switched_to() {
        let i = Inputs {
            strategy: RerunOnFailure,
            vmi: None,
            requests: &[],
            status_run_strategy: Some(Halted),
            backoff_left: Duration::ZERO,
        };
        assert_eq!(decide(&i), Decision::Start);
    }

    #[test]
    fn backoff_waits_and_grows_to_the_cap() {
        let i = Inputs {
            strategy: Always,
            vmi: None,
            requests: &[],
            status_run_strategy: Some(Always),
            backoff_left: Duration::from_secs(7),
        };
        assert_eq!(decide(&i), Decision::WaitBackoff(Duration::from_secs(7)));
        let max = Duration::from_secs(300);
        assert_eq!(backoff_delay(1, max, 0.0), Duration::from_secs(10));
        assert_eq!(backoff_delay(2, max, 0.0), Duration::from_secs(40));
        assert!(backoff_delay(1, max, 0.99) <= Duration::from_secs(15));
        assert_eq!(backoff_delay(3, max, 0.0), Duration::from_secs(90));
        assert_eq!(backoff_delay(10, max, 0.5), max);
        assert_eq!(backoff_delay(0, max, 0.0), Duration::from_secs(10));
    }

    #[test]
    fn start_failures_count_once_per_vmi_and_clear_when_a_guest_ran() {
        let failed_early = |uid| {
            Some(VmiView {
                uid,
                phase: Some(VmiPhase::Failed),
                deleting: false,
                was_running: false,
            })
        };
        let (one, new) = next_start_failures(None, failed_early("a"), Always);
        assert!(new);
        assert_eq!(one.as_ref().unwrap().consecutive, 1);
        let (same, new) = next_start_failures(one.as_ref(), failed_early("a"), Always);
        assert!(!new);
        assert_eq!(same, one);
        let (two, _) = next_start_failures(one.as_ref(), failed_early("b"), Always);
        assert_eq!(two.as_ref().unwrap().consecutive, 2);
        // Nothing changes while there is no VMI or it runs not yet.
        assert_eq!(next_start_failures(two.as_ref(), None, Always).0, two);
        // Cleared once a VMI ran, or under Manual/Halted.
        let ran = Some(VmiView {
            uid: "c",
            phase: Some(VmiPhase::Failed),
            deleting: false,
            was_running: true,
        });
        assert_eq!(next_start_failures(two.as_ref(), ran, Always).0, None);
        assert_eq!(next_start_failures(two.as_ref(), None, Manual).0, None);
    }

    #[test]
    fn set_to_start() {
        fn i(strategy: RunStrategy, vmi: Option<VmiView<'static>>) -> Inputs<'static> {
            Inputs {
                strategy,
                vmi,
                requests: &[],
                status_run_strategy: Some(strategy),
                backoff_left: Duration::ZERO,
            }
        }
        assert!(is_set_to_start(&i(Always, None)));
        assert!(!is_set_to_start(&i(Halted, view(Outcome::Running))));
        assert!(!is_set_to_start(&i(
            RerunOnFailure,
            view(Outcome::Succeeded)
        )));
        assert!(is_set_to_start(&i(RerunOnFailure, view(Outcome::Failed))));
        assert!(!is_set_to_start(&i(Once, view(Outcome::Failed))));
        assert!(!is_set_to_start(&i(Manual, None)));
    }
}
