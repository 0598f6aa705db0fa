//! The VM lifecycle subresources, `start`, `stop` and `restart`, as KubeVirt's
//! `pkg/virt-api/rest/lifecycle.go` decides them: from the VM, its instance (if any) and
//! the request's options, either a refusal ([`Status`]) or the JSON patches to send.
//! Pure: the handler fetches and writes.
//!
//! Every patch carries a `test` of the value it replaces, so a request that races with
//! another writer fails instead of overwriting it.

use crds::RunStrategy;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::status::{Kind, Status};

/// A write to send, in order.
#[derive(Clone, Debug, PartialEq)]
pub enum Write {
    /// JSON patch on the VM (its spec).
    Vm(Vec<Value>),
    /// JSON patch on the VM's `status` subresource.
    VmStatus(Vec<Value>),
    /// JSON patch on the VMI.
    Vmi(Vec<Value>),
}

/// The writes of one request, in order. A shortened grace period is written first and not
/// put back when a later write fails: the CRD lets a VMI's grace period only go down
/// (crds/src/rules.rs), as a shorter one is what the user asked for anyway.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    pub writes: Vec<Write>,
}

/// `StartOptions`
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StartOptions {
    #[serde(default)]
    pub paused: bool,
    #[serde(default)]
    pub dry_run: Vec<String>,
}

/// `StopOptions`
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StopOptions {
    pub grace_period: Option<i64>,
    #[serde(default)]
    pub dry_run: Vec<String>,
}

/// `RestartOptions`
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RestartOptions {
    pub grace_period_seconds: Option<i64>,
    #[serde(default)]
    pub dry_run: Vec<String>,
}

/// Decodes a request body; an empty body is the default options.
pub fn options<T: Default + for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, Status> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| {
        Status::bad_request(&format!(
            "Can not unmarshal Request body to struct, error: {e}"
        ))
    })
}

const NOT_RUNNING: &str = "VM is not running";

/// KubeVirt's `vm.RunStrategy()`: `running` and `runStrategy` are exclusive; neither is
/// Halted.
pub fn run_strategy(vm: &Value) -> Result<RunStrategy, Status> {
    let spec = &vm["spec"];
    match (spec.get("running"), spec.get("runStrategy")) {
        (Some(r), Some(s)) if !r.is_null() && !s.is_null() => Err(Status::internal(
            "running and runstrategy are mutually exclusive",
        )),
        (Some(Value::Bool(true)), _) => Ok(RunStrategy::Always),
        (Some(Value::Bool(_)), _) => Ok(RunStrategy::Halted),
        (_, Some(s)) if !s.is_null() => serde_json::from_value(s.clone())
            .map_err(|e| Status::internal(&format!("runStrategy {s}: {e}"))),
        _ => Ok(RunStrategy::Halted),
    }
}

/// The instance as these decisions see it.
#[derive(Clone, Copy, Debug)]
struct Vmi<'a> {
    uid: &'a str,
    phase: &'a str,
    grace: Option<i64>,
}

impl<'a> Vmi<'a> {
    fn of(v: &'a Value) -> Self {
        Self {
            uid: v["metadata"]["uid"].as_str().unwrap_or_default(),
            phase: v["status"]["phase"].as_str().unwrap_or_default(),
            grace: v["spec"]["terminationGracePeriodSeconds"].as_i64(),
        }
    }
    fn is_final(&self) -> bool {
        matches!(self.phase, "Succeeded" | "Failed")
    }
}

fn name(vm: &Value) -> &str {
    vm["metadata"]["name"].as_str().unwrap_or_default()
}

/// A Start request; `paused` asks for a paused start (KubeVirt's start request data
/// `paused: "true"`, which the controller turns into the VMI's `startStrategy: Paused`).
fn start_request(paused: bool) -> Value {
    if paused {
        json!({"action": "Start", "data": {"paused": "true"}})
    } else {
        json!({"action": "Start"})
    }
}

fn stop_request(vmi: &Vmi) -> Value {
    json!({"action": "Stop", "uid": vmi.uid})
}

/// KubeVirt's `getChangeRequestJson`: a VM without status gets one; otherwise the current
/// requests are tested and the new ones added (none pending) or a lone Stop replaces
/// them; anything else is already underway. A recorded start failure is cleared.
fn change_requests(vm: &Value, changes: Vec<Value>) -> Result<Write, Status> {
    let status = &vm["status"];
    let empty = status.is_null() || status.as_object().is_some_and(|o| o.is_empty());
    let mut ops = Vec::new();
    if empty {
        ops.push(
            json!({"op": "add", "path": "/status", "value": {"stateChangeRequests": changes}}),
        );
    } else {
        let current = status
            .get("stateChangeRequests")
            .cloned()
            .unwrap_or(Value::Null);
        ops.push(json!({"op": "test", "path": "/status/stateChangeRequests", "value": current}));
        let pending = current.as_array().is_some_and(|a| !a.is_empty());
        let lone_stop = changes.len() == 1 && changes[0]["action"] == "Stop";
        if !pending {
            ops.push(json!({"op": "add", "path": "/status/stateChangeRequests", "value": changes}));
        } else if lone_stop {
            ops.push(
                json!({"op": "replace", "path": "/status/stateChangeRequests", "value": changes}),
            );
        } else {
            return Err(Status::internal(
                "unable to complete request: stop/start already underway",
            ));
        }
        if status.get("startFailure").is_some_and(|f| !f.is_null()) {
            ops.push(json!({"op": "remove", "path": "/status/startFailure"}));
        }
    }
    Ok(Write::VmStatus(ops))
}

/// KubeVirt's `getRunningPatch`: `runStrategy` Always/Halted when the VM uses it, else the
/// deprecated `running`.
fn running_patch(vm: &Value, running: bool) -> Write {
    let spec = &vm["spec"];
    let ops = match spec.get("runStrategy").filter(|s| !s.is_null()) {
        Some(current) => vec![
            json!({"op": "test", "path": "/spec/runStrategy", "value": current}),
            json!({"op": "replace", "path": "/spec/runStrategy",
                   "value": if running { "Always" } else { "Halted" }}),
        ],
        None => vec![
            json!({"op": "test", "path": "/spec/running",
                   "value": spec.get("running").cloned().unwrap_or(Value::Null)}),
            json!({"op": "replace", "path": "/spec/running", "value": running}),
        ],
    };
    Write::Vm(ops)
}

/// KubeVirt's `patchVMITerminationGracePeriod`.
fn grace_patch(vmi: &Vmi, seconds: i64) -> Write {
    Write::Vmi(vec![
        json!({"op": "test", "path": "/spec/terminationGracePeriodSeconds", "value": vmi.grace}),
        json!({"op": "replace", "path": "/spec/terminationGracePeriodSeconds", "value": seconds}),
    ])
}

fn template_starts_paused(vm: &Value) -> bool {
    vm["spec"]["template"]["spec"]["startStrategy"] == "Paused"
}

/// PUT `start`.
pub fn start(vm: &Value, vmi: Option<&Value>, opts: &StartOptions) -> Result<Plan, Status> {
    let name = name(vm);
    let vmi = vmi.map(Vmi::of);
    if let Some(v) = vmi
        && !v.is_final()
        && !matches!(v.phase, "" | "Unknown")
    {
        return Err(Status::conflict(
            Kind::VirtualMachine,
            name,
            "VM is already running",
        ));
    }
    let strategy = run_strategy(vm)?;
    let paused = opts.paused;
    let write = match strategy {
        // A paused start of a Halted VM goes through a Start request, which the controller
        // answers by switching the VM to Always (unless the template starts paused anyway).
        RunStrategy::Halted if paused && !template_starts_paused(vm) => {
            change_requests(vm, vec![start_request(true)])?
        }
        RunStrategy::Halted => running_patch(vm, true),
        RunStrategy::RerunOnFailure | RunStrategy::Manual => {
            let restart = match (strategy, vmi) {
                (RunStrategy::RerunOnFailure, Some(v)) if v.phase == "Failed" => {
                    return Err(Status::conflict(
                        Kind::VirtualMachine,
                        name,
                        "RerunOnFailure does not support starting VM from failed state",
                    ));
                }
                (RunStrategy::RerunOnFailure, Some(v)) => (v.phase == "Succeeded").then_some(v),
                (_, Some(v)) => v.is_final().then_some(v),
                (_, None) => None,
            };
            let changes = match restart {
                Some(v) => vec![stop_request(&v), start_request(paused)],
                None => vec![start_request(paused)],
            };
            change_requests(vm, changes)?
        }
        RunStrategy::Always | RunStrategy::Once => {
            let why = format!(
                "{} does not support manual start requests",
                strategy.as_str()
            );
            return Err(Status::conflict(Kind::VirtualMachine, name, &why));
        }
    };
    Ok(Plan {
        writes: vec![write],
    })
}

/// PUT `stop`.
pub fn stop(vm: &Value, vmi: Option<&Value>, opts: &StopOptions) -> Result<Plan, Status> {
    let name = name(vm);
    let strategy = run_strategy(vm)?;
    let vmi = vmi.map(Vmi::of);
    let live = vmi.filter(|v| !v.is_final());
    let mut writes = Vec::new();
    // A shorter grace period goes to the instance first, as in KubeVirt.
    let grace_write = match (live, opts.grace_period) {
        (Some(v), Some(g)) => Some(grace_patch(&v, g)),
        _ => None,
    };
    match strategy {
        RunStrategy::Halted => {
            let Some(v) = live else {
                return Err(Status::conflict(Kind::VirtualMachine, name, NOT_RUNNING));
            };
            let old = v.grace.unwrap_or(0);
            let shorter = opts
                .grace_period
                .is_some_and(|g| v.grace.is_none() || g < old);
            if !shorter {
                // Checked before anything is written (KubeVirt patches the grace period
                // first and then refuses; a refused request here changes nothing).
                return Err(Status::conflict(
                    Kind::VirtualMachine,
                    name,
                    "Halted only supports manual stop requests with a shorter graceperiod",
                ));
            }
            writes.extend(grace_write);
            writes.push(change_requests(vm, vec![stop_request(&v)])?);
        }
        RunStrategy::RerunOnFailure | RunStrategy::Manual => {
            let Some(v) = live else {
                return Err(Status::conflict(Kind::VirtualMachine, name, NOT_RUNNING));
            };
            let change = change_requests(vm, vec![stop_request(&v)])?;
            writes.extend(grace_write);
            writes.push(change);
        }
        RunStrategy::Always | RunStrategy::Once => {
            writes.extend(grace_write);
            writes.push(running_patch(vm, false));
        }
    }
    Ok(Plan { writes })
}

/// PUT `restart`.
pub fn restart(vm: &Value, vmi: Option<&Value>, opts: &RestartOptions) -> Result<Plan, Status> {
    match opts.grace_period_seconds {
        Some(g) if g > 0 => {
            return Err(Status::bad_request(
                "For force restart, only gracePeriod=0 is supported for now",
            ));
        }
        Some(g) if g < 0 => {
            return Err(Status::bad_request(
                "gracePeriod has to be greater or equal to 0",
            ));
        }
        _ => {}
    }
    let name = name(vm);
    let strategy = run_strategy(vm)?;
    if matches!(strategy, RunStrategy::Halted | RunStrategy::Once) {
        // "RunStategy" is KubeVirt's spelling; clients may match on it.
        let why = format!(
            "RunStategy {} does not support manual restart requests",
            strategy.as_str()
        );
        return Err(Status::conflict(Kind::VirtualMachine, name, &why));
    }
    let Some(v) = vmi.map(Vmi::of) else {
        return Err(Status::conflict(
            Kind::VirtualMachine,
            name,
            "VM is not running: Halted",
        ));
    };
    let change = change_requests(vm, vec![stop_request(&v), start_request(false)])?;
    if opts.grace_period_seconds == Some(0) {
        // Force restart: the shortest safe grace period before the requests.
        return Ok(Plan {
            writes: vec![grace_patch(&v, 1), change],
        });
    }
    Ok(Plan {
        writes: vec![change],
    })
}

#[cfg(test)]
mod tests;
