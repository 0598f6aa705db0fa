//! KubeVirt's contract with CDI (the Containerized Data Importer), as virt-controller keeps
//! it (KubeVirt's `handleDataVolumes` and `areDataVolumesReady`):
//! - a VM creates each of its `dataVolumeTemplates` as a DataVolume
//!   (`cdi.kubevirt.io/v1beta1`) owned by it, whatever its runStrategy, and starts its
//!   instance only once they have succeeded or wait for their first consumer; meanwhile
//!   its printableStatus is `Provisioning`, or `DataVolumeError` when CDI reports a failure;
//! - a VMI with `dataVolume` volumes gets its launcher pod only once their DataVolumes have
//!   succeeded: until then it stays Pending with condition `DataVolumesReady` False
//!   (`NotAllDVsReady`), with a temporary pod that consumes the claims of those waiting
//!   for their first consumer ([`DvGate::FirstConsumer`]); then virt-handler uses the claim
//!   of the same name as it uses a `persistentVolumeClaim` volume's.
//! - without CDI (the API server serves no DataVolume), the VM's Failure condition and the
//!   VMI's DataVolumesReady condition name the field and say that CDI is needed (virt-api
//!   refuses such objects on create already; this is the backstop without virt-api).
//!
//! DataVolumes are read with a GET per reconcile (no watch: CDI may be absent), and the
//! reconcile looks again every [`POLL`] while one is not ready (every 30 s while CDI
//! reports a failure).

use std::time::Duration;

use crds::cdi;
use crds::{Condition, VirtualMachine, VirtualMachineInstance, VirtualMachineStatus, VmiPhase};
use kube::api::{Api, DynamicObject, PostParams};
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use serde_json::json;

use crate::{Context, Error, Result};

/// How often a reconcile looks again while a DataVolume is not ready.
pub(crate) const POLL: Duration = Duration::from_secs(2);
/// How often a VM looks again while CDI reports a DataVolume's failure.
const ERROR_POLL: Duration = Duration::from_secs(30);
/// The VMI condition KubeVirt aggregates its DataVolumes' readiness in.
pub(crate) const DATA_VOLUMES_READY: &str = "DataVolumesReady";
/// CDI's phase of a DataVolume whose claim waits for a pod to consume it first.
const WAIT_FOR_FIRST_CONSUMER: &str = "WaitForFirstConsumer";

/// What a VMI's DataVolumes allow before its launcher pod ([`gate_vmi`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DvGate {
    /// No pod yet: a DataVolume is not ready (or CDI failed one, or is missing).
    Hold,
    /// The launcher pod may be made.
    Ready,
    /// Every DataVolume is ready or waits for its first consumer, and one does: a
    /// temporary pod consumes their claims first (KubeVirt's), the launcher pod waits.
    FirstConsumer,
}

/// One DataVolume an object uses, as found.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Dv {
    pub name: String,
    /// It is one of the VM's `dataVolumeTemplates` (the VM waits for those).
    pub templated: bool,
    /// It exists.
    pub exists: bool,
    /// Its `status.phase` (empty: none yet).
    pub phase: String,
    /// CDI's error, as KubeVirt's `HasDataVolumeErrors` reads it.
    pub error: Option<String>,
    /// CDI's condition Bound is True (its claim is bound).
    pub bound: bool,
}

impl Dv {
    fn from_object(name: &str, templated: bool, dv: Option<&DynamicObject>) -> Dv {
        let Some(dv) = dv else {
            return Dv {
                name: name.into(),
                templated,
                ..Default::default()
            };
        };
        let status = &dv.data["status"];
        let phase = status["phase"].as_str().unwrap_or_default().to_string();
        let running_error = status["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| {
                c["type"] == "Running"
                    && c["status"] == "False"
                    && matches!(c["reason"].as_str(), Some("Error" | "ImagePullFailed"))
            })
            .map(|c| {
                format!(
                    "DataVolume {name} importer has stopped running due to an error: {}",
                    c["message"].as_str().unwrap_or_default()
                )
            });
        let error = if phase == "Failed" {
            Some(format!("DataVolume {name} is in Failed phase"))
        } else {
            running_error
        };
        let bound = status["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Bound" && c["status"] == "True");
        Dv {
            name: name.into(),
            templated,
            exists: true,
            phase,
            error,
            bound,
        }
    }

    fn ready(&self) -> bool {
        self.exists && cdi::phase_is_ready(&self.phase)
    }

    /// CDI waits for a pod to consume its claim (a `WaitForFirstConsumer` class) before
    /// it fills it.
    fn waits_for_consumer(&self) -> bool {
        self.exists && self.phase == WAIT_FOR_FIRST_CONSUMER
    }

    /// How it stands, for messages.
    fn state(&self) -> String {
        match (self.exists, self.phase.as_str()) {
            (false, _) => format!("DataVolume {} does not exist", self.name),
            (true, "") => format!("DataVolume {} has no phase yet", self.name),
            (true, p) => format!("DataVolume {} is {p}", self.name),
        }
    }
}

/// What a reconcile found of the DataVolumes an object uses.
#[derive(Debug, Default)]
pub(crate) struct Found {
    /// The field that uses DataVolumes, when the cluster serves none (no CDI).
    pub cdi_missing: Option<String>,
    pub dvs: Vec<Dv>,
    /// Reading or creating a DataVolume failed.
    pub error: Option<Error>,
}

impl Found {
    fn uses_any(&self) -> bool {
        self.cdi_missing.is_some() || !self.dvs.is_empty() || self.error.is_some()
    }

    /// The VM may start its instance: every DataVolume of its templates is ready, or waits
    /// for its first consumer, which the instance's pod is (KubeVirt's `handleDataVolumes`).
    fn templates_ready(&self) -> bool {
        self.cdi_missing.is_none()
            && self.error.is_none()
            && (self.dvs.iter().filter(|d| d.templated))
                .all(|d| d.ready() || d.waits_for_consumer())
    }

    /// KubeVirt's `HasDataVolumeErrors` over the template's volumes.
    fn volume_error(&self) -> Option<&str> {
        self.dvs.iter().find_map(|d| d.error.as_deref())
    }

    /// KubeVirt's `HasDataVolumeProvisioning`: a DataVolume exists and is not ready, other
    /// than one waiting for its first consumer whose claim is not bound yet.
    fn provisioning(&self) -> bool {
        self.dvs
            .iter()
            .any(|d| d.exists && !d.ready() && (d.bound || !d.waits_for_consumer()))
    }
}

/// Whether the API server serves CDI's DataVolume (API discovery).
async fn served(ctx: &Context) -> Result<bool> {
    ctx.metrics.request("discovery", "datavolumes");
    match ctx.client.list_api_group_resources(cdi::API_VERSION).await {
        Ok(list) => Ok(list.resources.iter().any(|r| r.name == cdi::PLURAL)),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(false),
        Err(e) => Err(e.into()),
    }
}

async fn get(api: &Api<DynamicObject>, name: &str, ctx: &Context) -> Result<Option<DynamicObject>> {
    ctx.metrics.request("get", "datavolumes");
    Ok(api.get_opt(name).await?)
}

/// The DataVolume KubeVirt makes of a template: the template's metadata and spec, owned
/// (controlled) by the VM, allowed to adopt a claim of its name.
pub(crate) fn from_template(
    vm: &VirtualMachine,
    t: &crds::DataVolumeTemplateSpec,
) -> DynamicObject {
    let mut annotations = t.metadata.annotations.clone().unwrap_or_default();
    annotations.insert(cdi::ALLOW_CLAIM_ADOPTION.into(), "true".into());
    let mut dv =
        DynamicObject::new(&t.metadata.name, &cdi::api_resource()).data(json!({"spec": t.spec}));
    dv.metadata.namespace = vm.namespace();
    dv.metadata.labels = t.metadata.labels.clone();
    dv.metadata.annotations = Some(annotations);
    dv.metadata.owner_references = vm.controller_owner_ref(&()).map(|mut o| {
        o.block_owner_deletion = Some(true);
        vec![o]
    });
    dv
}

/// The `dataVolume` volumes of `volumes`: their index and their DataVolume's name.
fn data_volumes_of(volumes: &[crds::Volume]) -> Vec<(usize, &str)> {
    volumes
        .iter()
        .enumerate()
        .filter_map(|(i, v)| v.data_volume.as_ref().map(|d| (i, d.name.as_str())))
        .collect()
}

/// The VM's DataVolumes: creates those of its templates that do not exist (KubeVirt's
/// `handleDataVolumes`, Events included) and reads those its template's volumes name.
pub(crate) async fn sync_vm(vm: &VirtualMachine, ctx: &Context) -> Found {
    let templates = &vm.spec.data_volume_templates;
    let volumes = data_volumes_of(&vm.spec.template.spec.volumes);
    let mut found = Found::default();
    if templates.is_empty() && volumes.is_empty() {
        return found;
    }
    match served(ctx).await {
        Ok(true) => {}
        Ok(false) => {
            found.cdi_missing = Some(if templates.is_empty() {
                format!("spec.template.spec.volumes[{}].dataVolume", volumes[0].0)
            } else {
                "spec.dataVolumeTemplates".into()
            });
            return found;
        }
        Err(e) => {
            found.error = Some(e);
            return found;
        }
    }
    let api: Api<DynamicObject> = Api::namespaced_with(
        ctx.client.clone(),
        &vm.namespace().unwrap_or_default(),
        &cdi::api_resource(),
    );
    for t in templates {
        let name = &t.metadata.name;
        let current = match get(&api, name, ctx).await {
            Ok(dv) => dv,
            Err(e) => {
                found.error = Some(e);
                return found;
            }
        };
        let dv = match current {
            Some(dv) => Some(dv),
            None if vm.meta().deletion_timestamp.is_some() => None,
            None => match create(vm, t, &api, ctx).await {
                Ok(dv) => Some(dv),
                Err(e) => {
                    found.error = Some(e);
                    return found;
                }
            },
        };
        found.dvs.push(Dv::from_object(name, true, dv.as_ref()));
    }
    for (_, name) in volumes {
        if found.dvs.iter().any(|d| d.name == name) {
            continue;
        }
        match get(&api, name, ctx).await {
            Ok(dv) => found.dvs.push(Dv::from_object(name, false, dv.as_ref())),
            Err(e) => {
                found.error = Some(e);
                return found;
            }
        }
    }
    found
}

async fn create(
    vm: &VirtualMachine,
    t: &crds::DataVolumeTemplateSpec,
    api: &Api<DynamicObject>,
    ctx: &Context,
) -> Result<DynamicObject> {
    let name = &t.metadata.name;
    ctx.metrics.request("create", "datavolumes");
    let pp = PostParams {
        field_manager: Some(crate::FIELD_MANAGER.into()),
        ..Default::default()
    };
    match api.create(&pp, &from_template(vm, t)).await {
        Ok(dv) => {
            tracing::info!(datavolume = %name, "created the DataVolume");
            ctx.event(
                vm.object_ref(&()),
                EventType::Normal,
                "SuccessfulDataVolumeCreate",
                format!("Created DataVolume {name}"),
            );
            Ok(dv)
        }
        Err(e) => {
            let message = crate::error::api_message(&e);
            ctx.event(
                vm.object_ref(&()),
                EventType::Warning,
                "FailedDataVolumeCreate",
                format!("Error creating DataVolume {name}: {message}"),
            );
            Err(Error::FailedDataVolumeCreate(name.clone(), e))
        }
    }
}

/// What a VM's DataVolumes do to its reconcile ([`Found::gate`]).
#[derive(Debug, Default)]
pub(crate) struct VmGate {
    /// No instance is created yet: a template's DataVolume is not ready (or unknown).
    pub hold_start: bool,
    /// For the Failure condition: CDI is missing, or a DataVolume could not be read or
    /// created.
    pub error: Option<Error>,
    /// Look again this soon: a DataVolume is not ready.
    pub requeue: Option<Duration>,
}

impl Found {
    /// The VM's reconcile with its DataVolumes: no instance is created until its templates'
    /// DataVolumes are ready; without CDI, or when a DataVolume cannot be read or created,
    /// the Failure condition says why; every [`POLL`] it looks again while one is not ready.
    pub(crate) fn gate(&mut self) -> VmGate {
        if !self.uses_any() {
            return VmGate::default();
        }
        let mut gate = VmGate {
            hold_start: !self.templates_ready(),
            ..Default::default()
        };
        if let Some(field) = &self.cdi_missing {
            gate.error = Some(Error::NoDataVolumeApi(cdi::needed(field)));
        } else if let Some(e) = self.error.take() {
            gate.error = Some(e);
        } else if self.volume_error().is_some() {
            // CDI retries a failed import at its own pace.
            gate.requeue = Some(ERROR_POLL);
        } else if self.dvs.iter().any(|d| !d.ready()) {
            gate.requeue = Some(POLL);
        }
        gate
    }
}

/// The VM's printableStatus with its DataVolumes, in KubeVirt's precedence: below
/// Terminating, Stopping, Migrating, Paused, Running and ErrorPvcNotFound, a DataVolume's
/// error shows as `DataVolumeError`, one that is not ready yet as `Provisioning`.
/// `status` is the status to write (None: unchanged from `old`) and `change` its
/// printableStatus change, both updated; returns KubeVirt's Warning (reason, note) to tell
/// when the status turns to DataVolumeError.
pub(crate) fn show_vm(
    status: &mut Option<VirtualMachineStatus>,
    change: &mut Option<(String, String)>,
    old: &VirtualMachineStatus,
    found: &Found,
) -> Option<(String, String)> {
    use crds::printable_status as ps;
    let current = status.as_ref().unwrap_or(old);
    let shown_now = current.printable_status.as_deref().unwrap_or_default();
    if matches!(
        shown_now,
        ps::TERMINATING
            | ps::STOPPING
            | ps::MIGRATING
            | ps::PAUSED
            | ps::RUNNING
            | ps::ERROR_PVC_NOT_FOUND
    ) {
        return None;
    }
    let (shown, error) = match found.volume_error() {
        Some(e) => (ps::DATA_VOLUME_ERROR, Some(e)),
        None if found.provisioning() => (ps::PROVISIONING, None),
        None => return None,
    };
    if shown_now == shown {
        return None;
    }
    let mut next = current.clone();
    next.printable_status = Some(shown.into());
    let before = old.printable_status.clone().unwrap_or_default();
    *change = (before != shown).then(|| (before.clone(), shown.to_string()));
    *status = (&next != old).then_some(next);
    // KubeVirt's FailedDataVolumeImport, once per change.
    error
        .filter(|_| before != shown)
        .map(|e| ("FailedDataVolumeImport".to_string(), e.to_string()))
}

/// A VMI's DataVolumes before its launcher pod exists: the status to write while they are
/// not ready (Pending, `DataVolumesReady` False naming what it waits for; Failed when CDI
/// failed one, as KubeVirt), or once they are (`DataVolumesReady` True), and what they
/// allow. While one waits for its first consumer (and the others are ready), the status
/// (changed or not) with [`DvGate::FirstConsumer`]. `None`: the VMI uses none, or is past
/// Pending, or they are ready and nothing changes.
pub(crate) async fn gate_vmi(
    vmi: &VirtualMachineInstance,
    ctx: &Context,
) -> Result<Option<(crds::VirtualMachineInstanceStatus, DvGate)>> {
    let old = vmi.status.clone().unwrap_or_default();
    if !matches!(old.phase, None | Some(VmiPhase::Pending)) {
        return Ok(None);
    }
    let used = data_volumes_of(&vmi.spec.volumes);
    let Some(&(first, _)) = used.first() else {
        return Ok(None);
    };
    let mut status = old.clone();
    let condition = |ok: bool, reason: &str, message: String| Condition {
        type_: DATA_VOLUMES_READY.into(),
        status: if ok { "True" } else { "False" }.into(),
        reason: Some(reason.into()),
        message: Some(message),
        ..Default::default()
    };
    if !served(ctx).await? {
        status.phase = Some(VmiPhase::Pending);
        let field = format!("spec.volumes[{first}].dataVolume");
        crds::condition::set(
            &mut status.conditions,
            condition(false, "CDINotInstalled", cdi::needed(&field)),
        );
        return Ok(Some((status, DvGate::Hold)));
    }
    let api: Api<DynamicObject> = Api::namespaced_with(
        ctx.client.clone(),
        &vmi.namespace().unwrap_or_default(),
        &cdi::api_resource(),
    );
    let mut dvs = Vec::new();
    for (_, name) in &used {
        let dv = get(&api, name, ctx).await?;
        dvs.push(Dv::from_object(name, false, dv.as_ref()));
    }
    if dvs.iter().all(Dv::ready) {
        let ready = condition(
            true,
            "AllDVsReady",
            "All of the VMI's DVs are bound and ready".into(),
        );
        crds::condition::set(&mut status.conditions, ready);
        return Ok((status != old).then_some((status, DvGate::Ready)));
    }
    let waiting: Vec<String> = dvs.iter().filter(|d| !d.ready()).map(Dv::state).collect();
    let message = format!("Not all of the VMI's DVs are ready: {}", waiting.join("; "));
    if dvs.iter().all(|d| d.ready() || d.waits_for_consumer()) {
        status.phase = Some(VmiPhase::Pending);
        crds::condition::set(
            &mut status.conditions,
            condition(false, "NotAllDVsReady", message),
        );
        return Ok(Some((status, DvGate::FirstConsumer)));
    }
    if let Some(e) = dvs.iter().find_map(|d| d.error.clone()) {
        // KubeVirt fails a VMI whose DataVolume failed before its pod was made.
        status.phase = Some(VmiPhase::Failed);
        status.reason = Some("FailedDataVolumeImport".into());
        crds::condition::set(
            &mut status.conditions,
            condition(false, "NotAllDVsReady", e),
        );
    } else {
        status.phase = Some(VmiPhase::Pending);
        crds::condition::set(
            &mut status.conditions,
            condition(false, "NotAllDVsReady", message),
        );
    }
    Ok(Some((status, DvGate::Hold)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// `from_template`'s object as the API server receives it.
    fn wire(dv: &DynamicObject) -> Value {
        serde_json::to_value(dv).unwrap()
    }

    fn vm() -> VirtualMachine {
        serde_yaml::from_str(
            "apiVersion: kubevirt.io/v1\nkind: VirtualMachine\nmetadata: {name: v, namespace: n, uid: u1}\n\
             spec:\n  dataVolumeTemplates:\n  - metadata: {name: d, labels: {a: b}}\n    spec: {storage: {resources: {requests: {storage: 1Gi}}}, source: {blank: {}}}\n\
             \x20 template: {spec: {domain: {devices: {}}, volumes: [{name: root, dataVolume: {name: d}}]}}\n",
        )
        .unwrap()
    }

    #[test]
    fn a_template_becomes_a_data_volume_owned_by_the_vm() {
        let vm = vm();
        let dv = wire(&from_template(&vm, &vm.spec.data_volume_templates[0]));
        assert_eq!(dv["apiVersion"], "cdi.kubevirt.io/v1beta1");
        assert_eq!(dv["kind"], "DataVolume");
        assert_eq!(dv["metadata"]["name"], "d");
        assert_eq!(dv["metadata"]["namespace"], "n");
        assert_eq!(dv["metadata"]["labels"]["a"], "b");
        assert_eq!(
            dv["metadata"]["annotations"][cdi::ALLOW_CLAIM_ADOPTION],
            "true"
        );
        let owner = &dv["metadata"]["ownerReferences"][0];
        assert_eq!(
            (
                owner["kind"].as_str(),
                owner["uid"].as_str(),
                owner["controller"].as_bool()
            ),
            (Some("VirtualMachine"), Some("u1"), Some(true))
        );
        assert_eq!(dv["spec"]["source"], json!({"blank": {}}));
    }

    fn dv(status: Value) -> DynamicObject {
        DynamicObject::new("d", &cdi::api_resource()).data(json!({"status": status}))
    }

    #[test]
    fn phases_and_errors_read_as_kubevirt_reads_them() {
        let ready = Dv::from_object("d", true, Some(&dv(json!({"phase": "Succeeded"}))));
        assert!(ready.ready() && ready.error.is_none());
        let importing = Dv::from_object("d", true, Some(&dv(json!({"phase": "ImportInProgress"}))));
        assert!(!importing.ready() && importing.error.is_none());
        let failed = Dv::from_object("d", true, Some(&dv(json!({"phase": "Failed"}))));
        assert_eq!(
            failed.error.as_deref(),
            Some("DataVolume d is in Failed phase")
        );
        let pull = Dv::from_object(
            "d",
            true,
            Some(&dv(json!({"phase": "ImportInProgress", "conditions": [
                {"type": "Running", "status": "False", "reason": "ImagePullFailed", "message": "no such image"}]}))),
        );
        assert_eq!(
            pull.error.as_deref(),
            Some("DataVolume d importer has stopped running due to an error: no such image")
        );
        let missing = Dv::from_object("d", true, None);
        assert!(!missing.ready());
        assert_eq!(missing.state(), "DataVolume d does not exist");
    }

    /// One template's DataVolume, in `phase`.
    fn found_in(phase: &str) -> Found {
        Found {
            dvs: vec![Dv::from_object(
                "d",
                true,
                Some(&dv(json!({"phase": phase}))),
            )],
            ..Default::default()
        }
    }

    #[test]
    fn the_vm_shows_provisioning_then_its_own_status() {
        let old = VirtualMachineStatus {
            printable_status: Some("Stopped".into()),
            ..Default::default()
        };
        let shown = |old: &VirtualMachineStatus, found: &Found| {
            let (mut status, mut change) = (None, None);
            let warning = show_vm(&mut status, &mut change, old, found);
            (status, change, warning)
        };
        let importing = found_in("ImportInProgress");
        let (status, change, warning) = shown(&old, &importing);
        let status = status.expect("a status to write");
        assert_eq!(status.printable_status.as_deref(), Some("Provisioning"));
        assert_eq!(change, Some(("Stopped".into(), "Provisioning".into())));
        assert_eq!(warning, None);
        // Unchanged: nothing to write.
        assert_eq!(shown(&status, &importing), (None, None, None));
        // A failed import is DataVolumeError, with KubeVirt's Warning.
        let (status, _, warning) = shown(&old, &found_in("Failed"));
        assert_eq!(
            status.unwrap().printable_status.as_deref(),
            Some("DataVolumeError")
        );
        assert_eq!(warning.unwrap().0, "FailedDataVolumeImport");
        // Running wins over both.
        let running = VirtualMachineStatus {
            printable_status: Some("Running".into()),
            ..Default::default()
        };
        assert_eq!(shown(&running, &found_in("Failed")), (None, None, None));
    }

    #[test]
    fn the_vm_waits_for_its_templates_and_names_a_missing_cdi() {
        let mut ready = found_in("Succeeded");
        let gate = ready.gate();
        assert!(!gate.hold_start && gate.error.is_none() && gate.requeue.is_none());
        let gate = found_in("ImportInProgress").gate();
        assert!(gate.hold_start && gate.error.is_none());
        assert_eq!(gate.requeue, Some(POLL));
        assert_eq!(found_in("Failed").gate().requeue, Some(ERROR_POLL));
        let mut missing = Found {
            cdi_missing: Some("spec.dataVolumeTemplates".into()),
            ..Default::default()
        };
        let gate = missing.gate();
        assert!(gate.hold_start);
        let e = gate.error.expect("an error");
        assert_eq!(e.reason(), "FailedDataVolumeCreate");
        assert!(
            e.to_string()
                .starts_with("spec.dataVolumeTemplates needs CDI"),
            "{e}"
        );
    }

    #[test]
    fn a_data_volume_waiting_for_its_first_consumer_lets_the_vm_start() {
        // KubeVirt: the instance is the consumer, so the VM starts it; not provisioning
        // until CDI says the claim is bound.
        let mut waiting = found_in("WaitForFirstConsumer");
        assert!(waiting.dvs[0].waits_for_consumer() && !waiting.dvs[0].ready());
        assert!(waiting.templates_ready());
        assert!(!waiting.provisioning());
        let gate = waiting.gate();
        assert!(!gate.hold_start && gate.error.is_none());
        assert_eq!(gate.requeue, Some(POLL));
        let bound = Found {
            dvs: vec![Dv::from_object(
                "d",
                true,
                Some(&dv(json!({"phase": "WaitForFirstConsumer", "conditions": [
                    {"type": "Bound", "status": "True"}]}))),
            )],
            ..Default::default()
        };
        assert!(bound.provisioning());
        assert!(found_in("ImportInProgress").provisioning());
        assert!(!found_in("PendingPopulation").provisioning());
    }
}
