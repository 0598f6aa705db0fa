//! Table tests of the VM controller's plan ([`plan`], [`plan_status`]): what a reconcile
//! writes, decided from the VM and its VMI as seen, without an API server.

use super::*;

fn vm(run_strategy: &str, extra_status: &str) -> VirtualMachine {
    serde_yaml::from_str(&format!(
        r#"
metadata: {{name: vm1, namespace: ns, uid: u-vm, generation: 2, resourceVersion: "10"}}
spec:
  runStrategy: {run_strategy}
  template: {{spec: {{domain: {{devices: {{}}}}}}}}
status: {{{extra_status}}}
"#
    ))
    .unwrap()
}

/// The VM's VMI (controlled by it, its template's hash) in `phase`.
fn vmi(vm: &VirtualMachine, phase: &str, ran: bool) -> VirtualMachineInstance {
    let mut v = instance_for(vm);
    v.metadata.uid = Some("u-vmi".into());
    let ran = if ran {
        "phaseTransitionTimestamps: [{phase: Running}],"
    } else {
        ""
    };
    v.status = Some(
        serde_yaml::from_str(&format!(
            "{{phase: {phase}, reason: GuestCrashed, {ran} conditions: [{{type: Ready, status: 'False', reason: GuestCrashed, message: boom}}]}}"
        ))
        .unwrap(),
    );
    v
}

fn seen<'a>(vm: &'a VirtualMachine, found: Option<&'a VirtualMachineInstance>) -> Seen<'a> {
    Seen {
        vm,
        found,
        now: Timestamp::from_second(1_700_000_000).unwrap(),
        max_backoff: Duration::from_secs(300),
    }
}

fn resolved() -> Option<Result<Resolved>> {
    Some(Ok(Resolved::default()))
}

/// What a plan says, in short: the decision, the instance write, whether a Start request
/// is stored first, the stop Event's type and reason, the generation annotated, an error.
#[derive(Debug, PartialEq)]
struct Short {
    decision: Decision,
    write: &'static str,
    stores_start: bool,
    stop_event: Option<(EventType, String)>,
    annotate: Option<i64>,
    error: bool,
}

fn short(p: &Plan) -> Short {
    Short {
        decision: p.decision,
        write: match &p.write {
            InstanceWrite::None => "none",
            InstanceWrite::Create(_) => "create",
            InstanceWrite::Delete => "delete",
            InstanceWrite::SwitchToAlways => "switch",
        },
        stores_start: p.store_start_request.is_some(),
        stop_event: p.stop_event.as_ref().map(|e| (e.type_, e.reason.clone())),
        annotate: p.annotate_generation,
        error: p.error.is_some(),
    }
}

fn expect(
    decision: Decision,
    write: &'static str,
    stores_start: bool,
    stop_event: Option<(EventType, &str)>,
) -> Short {
    Short {
        decision,
        write,
        stores_start,
        stop_event: stop_event.map(|(t, r)| (t, r.to_string())),
        annotate: None,
        error: false,
    }
}

#[test]
fn the_writes_follow_the_strategy_and_the_instance() {
    let always = vm("Always", "");
    let halted = vm("Halted", "");
    let rerun = vm("RerunOnFailure", "");
    let halted_start = vm("Halted", "stateChangeRequests: [{action: Start}]");
    let mut deleting = vm("Always", "");
    deleting.metadata.deletion_timestamp = Some(Time(Timestamp::from_second(1).unwrap()));
    let mut foreign = vmi(&always, "Running", true);
    foreign.metadata.owner_references = None;

    let running = vmi(&always, "Running", true);
    let halted_running = vmi(&halted, "Running", true);
    let crashed_after_running = vmi(&rerun, "Failed", true);
    let always_failed_at_start = vmi(&always, "Failed", false);
    let cases: Vec<(
        &str,
        &VirtualMachine,
        Option<&VirtualMachineInstance>,
        Short,
    )> = vec![
        (
            "Always without a VMI creates it",
            &always,
            None,
            expect(Decision::Start, "create", false, None),
        ),
        (
            "Always with its VMI running does nothing",
            &always,
            Some(&running),
            expect(Decision::Nothing, "none", false, None),
        ),
        (
            "Halted with a running VMI deletes it, quietly",
            &halted,
            Some(&halted_running),
            expect(Decision::Stop, "delete", false, None),
        ),
        (
            "RerunOnFailure after a crash stores a Start request before the delete",
            &rerun,
            Some(&crashed_after_running),
            expect(
                Decision::StopAndRequestStart,
                "delete",
                true,
                Some((EventType::Warning, "GuestCrashed")),
            ),
        ),
        (
            "a VMI that failed before it ran is deleted without the stop Event (the back-off tells it)",
            &always,
            Some(&always_failed_at_start),
            expect(Decision::Stop, "delete", false, None),
        ),
        (
            "Halted with a Start request switches the spec",
            &halted_start,
            None,
            expect(Decision::SwitchToAlways, "switch", false, None),
        ),
        (
            "a VM being deleted writes nothing",
            &deleting,
            None,
            expect(Decision::Nothing, "none", false, None),
        ),
        (
            "a VMI of another owner is left alone",
            &always,
            Some(&foreign),
            expect(Decision::Nothing, "none", false, None),
        ),
    ];
    for (what, vm, found, want) in cases {
        let resolved = if vm.metadata.deletion_timestamp.is_some() {
            None
        } else {
            resolved()
        };
        let p = plan(&seen(vm, found), resolved);
        assert_eq!(short(&p), want, "{what}");
        assert_eq!(
            p.foreign,
            found.is_some_and(|f| f.metadata.owner_references.is_none()),
            "{what}"
        );
    }
}

#[test]
fn the_start_request_is_appended_and_the_back_off_waits() {
    let rerun = vm(
        "RerunOnFailure",
        "stateChangeRequests: [{action: Stop, uid: other}]",
    );
    let crashed = vmi(&rerun, "Failed", true);
    let p = plan(&seen(&rerun, Some(&crashed)), resolved());
    let stored = p.store_start_request.expect("a Start request is stored");
    assert_eq!(
        stored.len(),
        2,
        "appended after the requests there: {stored:?}"
    );
    assert_eq!(stored[1], VirtualMachineStateChangeRequest::default());

    // A VMI that failed before it ran: counted, and the next start waits.
    let always = vm("Always", "");
    let failed = vmi(&always, "Failed", false);
    let p = plan(&seen(&always, Some(&failed)), resolved());
    assert!(p.new_failure);
    let f = p.start_failure.as_ref().unwrap();
    assert_eq!(f.consecutive_fail_count, Some(1));
    assert_eq!(f.last_failed_vmi_uid.as_deref(), Some("u-vmi"));
    assert!(f.retry_after_timestamp.is_some());
}

#[test]
fn an_unresolved_instancetype_creates_nothing_and_is_the_error() {
    let always = vm("Always", "");
    let p = plan(
        &seen(&always, None),
        Some(Err(Error::InvalidObject("no instancetype".into()))),
    );
    assert_eq!(
        short(&p),
        Short {
            error: true,
            ..expect(Decision::Start, "none", false, None)
        }
    );
}

#[test]
fn the_generation_annotation_follows_an_unchanged_template() {
    let mut always = vm("Always", "");
    let mut running = vmi(&always, "Running", true);
    always.metadata.generation = Some(3);
    let p = plan(&seen(&always, Some(&running)), resolved());
    assert_eq!(
        p.annotate_generation,
        Some(3),
        "same template, older generation"
    );
    assert_eq!(p.observed_generation, Some(2));
    running.metadata.deletion_timestamp = Some(Time(Timestamp::from_second(1).unwrap()));
    let p = plan(&seen(&always, Some(&running)), resolved());
    assert_eq!(p.annotate_generation, None, "not on a VMI being deleted");
}

fn done(vm: &VirtualMachine) -> Done {
    Done {
        current: vm.clone(),
        started: None,
        start_expected: false,
        stop_expected: false,
        observed_generation: vm.metadata.generation,
        error: None,
    }
}

#[test]
fn the_status_tells_of_the_instance_just_created_and_drops_the_done_request() {
    let manual = vm("Manual", "stateChangeRequests: [{action: Start}]");
    let s = seen(&manual, None);
    let p = plan(&s, resolved());
    assert_eq!(short(&p), expect(Decision::Start, "create", false, None));
    let InstanceWrite::Create(created) = &p.write else {
        unreachable!()
    };
    let mut created = (**created).clone();
    created.metadata.uid = Some("u-new".into());
    let d = Done {
        started: Some(created),
        start_expected: true,
        ..done(&manual)
    };
    let next = plan_status(&s, &p, &d);
    assert!(
        !leaves_status_to_cache(&manual.status.clone().unwrap(), &p, &d, &next),
        "the pass that fulfils the Start request writes it"
    );
    let status = next.status.expect("the status changes");
    assert_eq!(status.created, Some(true));
    assert_eq!(status.run_strategy, Some(RunStrategy::Manual));
    assert!(status.state_change_requests.is_empty(), "{status:?}");
    assert_eq!(status.printable_status.as_deref(), Some("Starting"));
    assert_eq!(
        next.printable_change,
        Some((String::new(), "Starting".to_string()))
    );
    assert!(next.events.is_empty(), "{:?}", next.events);

    // Seen again with that status, nothing more to write.
    let mut again = manual.clone();
    again.status = Some(status);
    let mut cached = d.started.clone().unwrap();
    cached.status = None;
    let s = seen(&again, Some(&cached));
    let p = plan(&s, resolved());
    assert_eq!(short(&p), expect(Decision::Nothing, "none", false, None));
    let next = plan_status(&s, &p, &done(&again));
    assert!(next.status.is_none(), "{:?}", next.status);
}

#[test]
fn a_start_without_requests_leaves_the_status_to_the_vmis_watch_event() {
    let always = vm("Always", "");
    let s = seen(&always, None);
    let p = plan(&s, resolved());
    let InstanceWrite::Create(created) = &p.write else {
        panic!("{:?}", short(&p))
    };
    let d = Done {
        started: Some((**created).clone()),
        start_expected: true,
        ..done(&always)
    };
    let next = plan_status(&s, &p, &d);
    let old = VirtualMachineStatus::default();
    assert!(leaves_status_to_cache(&old, &p, &d, &next));
    // Not when no VMI was created, the create failed, or an Event waits for the write.
    let none = done(&always);
    assert!(!leaves_status_to_cache(
        &old,
        &p,
        &none,
        &plan_status(&s, &p, &none)
    ));
    let failed = Done {
        started: d.started.clone(),
        error: Some(Error::InvalidObject("refused".into())),
        ..done(&always)
    };
    assert!(!leaves_status_to_cache(&old, &p, &failed, &next));
    let told = StatusPlan {
        events: vec![PlannedEvent {
            type_: EventType::Warning,
            reason: "DataVolumeError".into(),
            note: "x".into(),
        }],
        ..Default::default()
    };
    assert!(!leaves_status_to_cache(&old, &p, &d, &told));
}

#[test]
fn a_foreign_vmi_and_a_failed_write_show_in_the_failure_condition() {
    let always = vm("Always", "");
    let mut foreign = vmi(&always, "Running", true);
    foreign.metadata.owner_references = None;
    let s = seen(&always, Some(&foreign));
    let p = plan(&s, resolved());
    let status = plan_status(&s, &p, &done(&always)).status.unwrap();
    let failure = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Failure")
        .unwrap();
    assert_eq!(failure.reason.as_deref(), Some("FailedCreate"));
    assert!(
        failure
            .message
            .as_deref()
            .unwrap()
            .contains("not controlled by this VirtualMachine")
    );

    let s = seen(&always, None);
    let p = plan(&s, resolved());
    let d = Done {
        error: Some(Error::InvalidObject("refused".into())),
        ..done(&always)
    };
    let status = plan_status(&s, &p, &d).status.unwrap();
    let failure = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Failure")
        .unwrap();
    assert_eq!(
        failure.message.as_deref(),
        Some(ferrovirt_runtime::chain(&Error::InvalidObject("refused".into())).as_str())
    );
    assert_eq!(status.created, Some(false));
}

#[test]
fn a_start_failure_is_told_with_its_count_and_wait() {
    let always = vm("Always", "");
    let failed = vmi(&always, "Failed", false);
    let s = seen(&always, Some(&failed));
    let p = plan(&s, resolved());
    let d = Done {
        stop_expected: true,
        ..done(&always)
    };
    let next = plan_status(&s, &p, &d);
    let told: Vec<_> = next
        .events
        .iter()
        .map(|e| (e.type_, e.reason.as_str()))
        .collect();
    assert_eq!(
        told,
        [
            (EventType::Warning, "GuestCrashed"),
            (EventType::Warning, "CrashLoopBackOff")
        ]
    );
    assert!(
        next.events[0]
            .note
            .contains("start failure 1 in a row, the next start waits"),
        "{}",
        next.events[0].note
    );
    assert_eq!(
        next.events[1].note,
        "printableStatus (none) -> CrashLoopBackOff"
    );
}
