//! The decision table of start, stop and restart, case by case against lifecycle.go.

use super::*;

fn vm(spec: Value, status: Value) -> Value {
    json!({"metadata": {"name": "vm1", "namespace": "ns"}, "spec": spec, "status": status})
}

fn vmi(phase: &str) -> Value {
    json!({"metadata": {"uid": "uid-1"}, "spec": {"terminationGracePeriodSeconds": 30},
           "status": {"phase": phase}})
}

fn conflict(r: Result<Plan, Status>) -> String {
    let s = r.expect_err("a refusal");
    assert_eq!(s.code, 409, "{s:?}");
    s.message().to_string()
}

/// The writes of an accepted request.
fn writes(r: Result<Plan, Status>) -> Vec<Write> {
    r.expect("accepted").writes
}

/// A tested switch of a spec field.
fn spec_switch(field: &str, from: Value, to: Value) -> Write {
    let path = format!("/spec/{field}");
    Write::Vm(vec![
        json!({"op": "test", "path": path, "value": from}),
        json!({"op": "replace", "path": path, "value": to}),
    ])
}

/// A tested write of the state change requests.
fn requests(current: Value, op: &str, new: Value) -> Vec<Value> {
    vec![
        json!({"op": "test", "path": "/status/stateChangeRequests", "value": current}),
        json!({"op": op, "path": "/status/stateChangeRequests", "value": new}),
    ]
}

fn none() -> StartOptions {
    StartOptions::default()
}

const PREFIX: &str = "Operation cannot be fulfilled on virtualmachine.kubevirt.io \"vm1\": ";

#[test]
fn start_halted_switches_the_spec_with_a_test() {
    let w = writes(start(
        &vm(json!({"runStrategy": "Halted"}), json!({})),
        None,
        &none(),
    ));
    assert_eq!(
        w,
        [spec_switch("runStrategy", "Halted".into(), "Always".into())]
    );
    let w = writes(start(
        &vm(json!({"running": false}), json!({})),
        None,
        &none(),
    ));
    assert_eq!(w, [spec_switch("running", false.into(), true.into())]);
}

#[test]
fn start_manual_adds_a_start_request() {
    let status = json!({"printableStatus": "Stopped"});
    let w = writes(start(
        &vm(json!({"runStrategy": "Manual"}), status),
        None,
        &none(),
    ));
    assert_eq!(
        w,
        [Write::VmStatus(requests(
            Value::Null,
            "add",
            json!([{"action": "Start"}])
        ))]
    );
}

#[test]
fn start_manual_without_status_adds_the_status() {
    let w = writes(start(
        &vm(json!({"runStrategy": "Manual"}), Value::Null),
        None,
        &none(),
    ));
    let add = json!({"op": "add", "path": "/status",
        "value": {"stateChangeRequests": [{"action": "Start"}]}});
    assert_eq!(w, [Write::VmStatus(vec![add])]);
}

#[test]
fn start_manual_after_a_finished_vmi_stops_it_first_and_clears_start_failure() {
    let status = json!({"printableStatus": "Stopped", "startFailure": {"consecutiveFailCount": 1}});
    let w = writes(start(
        &vm(json!({"runStrategy": "Manual"}), status),
        Some(&vmi("Succeeded")),
        &none(),
    ));
    let mut ops = requests(
        Value::Null,
        "add",
        json!([{"action": "Stop", "uid": "uid-1"}, {"action": "Start"}]),
    );
    ops.push(json!({"op": "remove", "path": "/status/startFailure"}));
    assert_eq!(w, [Write::VmStatus(ops)]);
}

#[test]
fn start_refusals_carry_kubevirts_messages() {
    let running = vmi("Running");
    let m = conflict(start(
        &vm(json!({"runStrategy": "Manual"}), json!({})),
        Some(&running),
        &Default::default(),
    ));
    assert_eq!(m, format!("{PREFIX}VM is already running"));
    for s in ["Always", "Once"] {
        let m = conflict(start(
            &vm(json!({"runStrategy": s}), json!({})),
            None,
            &Default::default(),
        ));
        assert_eq!(
            m,
            format!("{PREFIX}{s} does not support manual start requests")
        );
    }
    let m = conflict(start(
        &vm(json!({"runStrategy": "RerunOnFailure"}), json!({})),
        Some(&vmi("Failed")),
        &Default::default(),
    ));
    assert_eq!(
        m,
        format!("{PREFIX}RerunOnFailure does not support starting VM from failed state")
    );
}

#[test]
fn a_vmi_in_phase_unknown_or_unset_does_not_block_start() {
    for phase in ["", "Unknown"] {
        start(
            &vm(json!({"runStrategy": "Halted"}), json!({})),
            Some(&vmi(phase)),
            &Default::default(),
        )
        .unwrap_or_else(|e| panic!("phase {phase:?}: {e:?}"));
    }
}

#[test]
fn start_while_requests_are_pending_is_underway() {
    let status = json!({"stateChangeRequests": [{"action": "Start"}]});
    let e = start(
        &vm(json!({"runStrategy": "Manual"}), status),
        None,
        &Default::default(),
    )
    .unwrap_err();
    assert_eq!(e.code, 500);
    assert!(
        e.message().ends_with("stop/start already underway"),
        "{e:?}"
    );
}

fn paused() -> StartOptions {
    StartOptions {
        paused: true,
        ..Default::default()
    }
}

#[test]
fn start_paused_of_a_manual_vm_asks_for_a_paused_start() {
    let status = json!({"printableStatus": "Stopped"});
    let w = writes(start(
        &vm(json!({"runStrategy": "Manual"}), status),
        None,
        &paused(),
    ));
    assert_eq!(
        w,
        [Write::VmStatus(requests(
            Value::Null,
            "add",
            json!([{"action": "Start", "data": {"paused": "true"}}])
        ))]
    );
}

#[test]
fn start_paused_of_a_halted_vm_goes_through_a_start_request() {
    let w = writes(start(
        &vm(json!({"runStrategy": "Halted"}), Value::Null),
        None,
        &paused(),
    ));
    let add = json!({"op": "add", "path": "/status",
        "value": {"stateChangeRequests": [{"action": "Start", "data": {"paused": "true"}}]}});
    assert_eq!(w, [Write::VmStatus(vec![add])]);
    // A template that starts paused anyway only needs the switch to Always.
    let spec = json!({"runStrategy": "Halted",
        "template": {"spec": {"startStrategy": "Paused"}}});
    let w = writes(start(&vm(spec, Value::Null), None, &paused()));
    assert!(matches!(&w[..], [Write::Vm(_)]), "{w:?}");
}

#[test]
fn running_and_run_strategy_together_are_an_internal_error() {
    let e = start(
        &vm(json!({"running": true, "runStrategy": "Always"}), json!({})),
        None,
        &Default::default(),
    )
    .unwrap_err();
    assert_eq!(e.code, 500);
}

#[test]
fn stop_always_switches_to_halted() {
    let w = writes(stop(
        &vm(json!({"runStrategy": "Always"}), json!({})),
        Some(&vmi("Running")),
        &Default::default(),
    ));
    assert_eq!(
        w,
        [spec_switch("runStrategy", "Always".into(), "Halted".into())]
    );
}

#[test]
fn stop_with_grace_period_patches_the_vmi_first() {
    let opts = StopOptions {
        grace_period: Some(0),
        ..Default::default()
    };
    let plan = stop(
        &vm(json!({"running": true}), json!({})),
        Some(&vmi("Running")),
        &opts,
    )
    .unwrap();
    assert_eq!(
        plan.writes[0],
        Write::Vmi(vec![
            json!({"op": "test", "path": "/spec/terminationGracePeriodSeconds", "value": 30}),
            json!({"op": "replace", "path": "/spec/terminationGracePeriodSeconds", "value": 0}),
        ])
    );
    assert!(matches!(plan.writes[1], Write::Vm(_)));
}

#[test]
fn stop_manual_replaces_a_pending_request_with_stop() {
    let status = json!({"stateChangeRequests": [{"action": "Start"}]});
    let w = writes(stop(
        &vm(json!({"runStrategy": "Manual"}), status),
        Some(&vmi("Running")),
        &Default::default(),
    ));
    let ops = requests(
        json!([{"action": "Start"}]),
        "replace",
        json!([{"action": "Stop", "uid": "uid-1"}]),
    );
    assert_eq!(w, [Write::VmStatus(ops)]);
}

#[test]
fn stop_refusals() {
    for s in ["Manual", "RerunOnFailure", "Halted"] {
        let m = conflict(stop(
            &vm(json!({"runStrategy": s}), json!({})),
            None,
            &Default::default(),
        ));
        assert_eq!(m, format!("{PREFIX}VM is not running"), "{s}");
        let m = conflict(stop(
            &vm(json!({"runStrategy": s}), json!({})),
            Some(&vmi("Succeeded")),
            &Default::default(),
        ));
        assert_eq!(m, format!("{PREFIX}VM is not running"), "{s}");
    }
    let longer = StopOptions {
        grace_period: Some(60),
        ..Default::default()
    };
    let m = conflict(stop(
        &vm(json!({"runStrategy": "Halted"}), json!({})),
        Some(&vmi("Running")),
        &longer,
    ));
    assert_eq!(
        m,
        format!("{PREFIX}Halted only supports manual stop requests with a shorter graceperiod")
    );
    let shorter = StopOptions {
        grace_period: Some(5),
        ..Default::default()
    };
    let plan = stop(
        &vm(json!({"runStrategy": "Halted"}), json!({})),
        Some(&vmi("Running")),
        &shorter,
    )
    .unwrap();
    assert_eq!(plan.writes.len(), 2);
}

#[test]
fn restart_requests_stop_then_start() {
    let status = json!({"printableStatus": "Running"});
    let w = writes(restart(
        &vm(json!({"runStrategy": "Always"}), status),
        Some(&vmi("Running")),
        &Default::default(),
    ));
    let ops = requests(
        Value::Null,
        "add",
        json!([{"action": "Stop", "uid": "uid-1"}, {"action": "Start"}]),
    );
    assert_eq!(w, [Write::VmStatus(ops)]);
}

#[test]
fn force_restart_shortens_the_grace_period_first() {
    let opts = RestartOptions {
        grace_period_seconds: Some(0),
        ..Default::default()
    };
    let plan = restart(
        &vm(json!({"runStrategy": "Always"}), json!({"x": 1})),
        Some(&vmi("Running")),
        &opts,
    )
    .unwrap();
    assert_eq!(plan.writes.len(), 2);
    assert_eq!(
        plan.writes[0],
        Write::Vmi(vec![
            json!({"op": "test", "path": "/spec/terminationGracePeriodSeconds", "value": 30}),
            json!({"op": "replace", "path": "/spec/terminationGracePeriodSeconds", "value": 1}),
        ])
    );
}

#[test]
fn restart_refusals() {
    for s in ["Halted", "Once"] {
        let m = conflict(restart(
            &vm(json!({"runStrategy": s}), json!({})),
            Some(&vmi("Running")),
            &Default::default(),
        ));
        assert_eq!(
            m,
            format!("{PREFIX}RunStategy {s} does not support manual restart requests")
        );
    }
    let m = conflict(restart(
        &vm(json!({"runStrategy": "Always"}), json!({})),
        None,
        &Default::default(),
    ));
    assert_eq!(m, format!("{PREFIX}VM is not running: Halted"));
    for (g, msg) in [
        (
            5,
            "For force restart, only gracePeriod=0 is supported for now",
        ),
        (-1, "gracePeriod has to be greater or equal to 0"),
    ] {
        let opts = RestartOptions {
            grace_period_seconds: Some(g),
            ..Default::default()
        };
        let e = restart(
            &vm(json!({"runStrategy": "Always"}), json!({})),
            Some(&vmi("Running")),
            &opts,
        )
        .unwrap_err();
        assert_eq!((e.code, e.message()), (400, msg));
    }
}

#[test]
fn options_accept_an_empty_body_and_refuse_bad_json() {
    let o: StopOptions = options(b"").unwrap();
    assert_eq!(o.grace_period, None);
    let o: StopOptions = options(br#"{"gracePeriod": 3}"#).unwrap();
    assert_eq!(o.grace_period, Some(3));
    assert_eq!(options::<StopOptions>(b"{").unwrap_err().code, 400);
}
