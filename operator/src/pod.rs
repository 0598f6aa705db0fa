//! The launcher pod of a VMI (docs/contracts.md), and the memory it requests. Pure.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crds::{Tpm, VirtualMachineInstance, VirtualMachineInstanceSpec};
use k8s_openapi::api::core::v1::{
    Container, EmptyDirVolumeSource, ExecAction, HostPathVolumeSource, Pod, PodSpec, Probe,
    ResourceRequirements, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};

use crate::{Error, Result};

pub use claims::BlockClaims;

mod claims;
pub mod cloudinit;
mod config;
mod disks;
pub mod probes;
mod security;

/// The pod's labels, annotation, mounts and defaults are the node contract's
/// (node-contract/): `kubevirt.io=virt-launcher`, `kubevirt.io/created-by=<vmi uid>`,
/// `vm.kubevirt.io/name` ([`vm_name_label`]), `kubevirt.io/domain`; the per-VMI directory
/// at [`VMI_DIR_IN_POD`]; the node-wide cache of libvirt's QEMU capabilities probe at
/// [`CAPABILITIES_DIR_IN_POD`] (without it every VM's first start spends about 4 s
/// probing QEMU).
pub use ferrovirt_node_contract::paths::{CAPABILITIES_DIR_IN_POD, VMI_DIR_IN_POD};
use ferrovirt_node_contract::paths::{READY_FILE, RunDir};
pub use ferrovirt_node_contract::pod::{
    APP_LABEL, APP_LABEL_VALUE, CREATED_BY_LABEL, DEFAULT_GRACE_SECONDS, DOMAIN_ANNOTATION,
    KVM_RESOURCE, TUN_RESOURCE, VM_NAME_LABEL, VMI_ID_LABEL, vmi_id,
};
use ferrovirt_node_contract::pod::{
    CPU_MANAGER_LABEL, LAUNCHER_COMMAND, NODE_SCHEDULABLE_LABEL, REALTIME_LABEL,
};

/// The longest label value Kubernetes accepts.
pub const LABEL_VALUE_MAX: usize = 63;
pub use ferrovirt_node_contract::pod::COMPUTE_CONTAINER;
/// The pod's volume of the per-VMI directory.
const VMI_DIR_VOLUME: &str = "vmi-dir";
/// Seconds the pod gets beyond the VMI's grace period: the launcher powers the guest off
/// itself when the VMI's grace period is over, and then needs time to exit.
pub const GRACE_MARGIN_SECONDS: i64 = 15;

const MIB: u64 = 1024 * 1024;

/// Memory a VM needs beyond its guest RAM, in MiB (docs/operator.md has the measurements):
/// - virt-launcher with libvirt's embedded QEMU driver: 30 MiB,
/// - QEMU itself (binary, heap, firmware, device state): 50 MiB,
/// - the TCG translation cache under software emulation: 64 MiB (QEMU's default cache
///   grows up to 1 GiB; measured 52 MiB after a boot to a shell),
/// - guest page tables: 1 MiB per 512 MiB of guest RAM, rounded up,
/// - 2 MiB per vCPU beyond the first (thread stacks, per-vCPU state),
/// - 8 MiB for swtpm when the guest has a TPM (5.5 MiB RSS measured after its startup;
///   KubeVirt adds 53Mi, swtpm's virtual size).
pub fn memory_overhead_mib(guest_mib: u64, vcpus: u32, tpm: bool) -> u64 {
    const LAUNCHER_AND_LIBVIRT: u64 = 30;
    const QEMU_BASE: u64 = 50;
    const TCG_CACHE: u64 = 64;
    const SWTPM: u64 = 8;
    LAUNCHER_AND_LIBVIRT
        + QEMU_BASE
        + TCG_CACHE
        + guest_mib.div_ceil(512)
        + 2 * u64::from(vcpus.saturating_sub(1))
        + if tpm { SWTPM } else { 0 }
}

/// How pods are rendered: the operator's flags.
#[derive(Clone, Debug)]
pub struct LauncherConfig {
    pub image: String,
    /// The node run dir on the host (`--node-run-dir`).
    pub node_run_dir: PathBuf,
}

/// The name of a VMI's launcher pod: fixed per VMI, so a second create of it fails
/// instead of making a second pod.
pub fn pod_name(vmi_name: &str, vmi_uid: &str) -> String {
    let short: String = vmi_uid
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(5)
        .collect();
    format!("virt-launcher-{vmi_name}-{short}")
}

/// KubeVirt's annotation of a temporary pod that only consumes the claims of a VMI's
/// DataVolumes waiting for their first consumer ([`render_first_consumer`]).
pub const EPHEMERAL_PROVISIONING_ANNOTATION: &str = "kubevirt.io/ephemeral-provisioning";

/// The name of a VMI's first-consumer pod: its launcher pod's, `-wffc` added.
pub fn first_consumer_pod_name(vmi_name: &str, vmi_uid: &str) -> String {
    format!("{}-wffc", pod_name(vmi_name, vmi_uid))
}

/// KubeVirt's temporary pod for DataVolumes in a `WaitForFirstConsumer` class: the launcher
/// pod as [`render`] makes it (its claims, resources and placement, so the scheduler binds
/// the claims where the VMI fits), named by [`first_consumer_pod_name`] and annotated
/// [`EPHEMERAL_PROVISIONING_ANNOTATION`], whose one container (compute) exits at once
/// instead of running a launcher. CDI fills the claims once they are bound; then the real
/// launcher pod is made and this one deleted.
pub fn render_first_consumer(
    vmi: &VirtualMachineInstance,
    cfg: &LauncherConfig,
    block: &BlockClaims,
) -> Result<Pod> {
    let mut pod = render(vmi, cfg, block)?;
    let (name, uid) = (vmi.name_any(), vmi.uid().unwrap_or_default());
    pod.metadata.name = Some(first_consumer_pod_name(&name, &uid));
    pod.metadata
        .annotations
        .get_or_insert_default()
        .insert(EPHEMERAL_PROVISIONING_ANNOTATION.into(), "true".into());
    // Not the VMI's launcher: virt-handler, which finds those by this label, leaves it be.
    if let Some(labels) = pod.metadata.labels.as_mut() {
        labels.remove(CREATED_BY_LABEL);
    }
    if let Some(spec) = pod.spec.as_mut() {
        spec.init_containers = None;
        spec.containers.retain(|c| c.name == COMPUTE_CONTAINER);
        for c in &mut spec.containers {
            c.command = Some(vec!["/bin/true".into()]);
            c.args = None;
            c.readiness_probe = None;
            c.liveness_probe = None;
            c.startup_probe = None;
            c.lifecycle = None;
        }
    }
    Ok(pod)
}

/// The value of [`VM_NAME_LABEL`], as KubeVirt's virt-controller derives it (the guest's
/// hostname): `spec.hostname` if set, else the VMI's name up to its first dot, cut to the
/// 63 characters a label value may have. A cut that ends in `-` or `.` (not allowed at
/// the end of a label value) loses those characters too.
pub fn vm_name_label(vmi: &VirtualMachineInstance) -> String {
    let name = vmi.metadata.name.as_deref().unwrap_or_default();
    let source = match vmi.spec.hostname.as_deref() {
        Some(h) if !h.is_empty() => h,
        _ => name.split('.').next().unwrap_or_default(),
    };
    let cut: String = source.chars().take(LABEL_VALUE_MAX).collect();
    cut.trim_end_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string()
}

/// The VMI's grace period in seconds.
pub fn grace_seconds(vmi: &VirtualMachineInstance) -> i64 {
    vmi.spec
        .termination_grace_period_seconds
        .unwrap_or(DEFAULT_GRACE_SECONDS)
        .max(0)
}

/// Guest memory in bytes: `domain.memory.guest`, else `resources.requests.memory`.
pub fn guest_memory_bytes(vmi: &VirtualMachineInstance) -> Result<u64> {
    let d = &vmi.spec.domain;
    let q = d
        .memory
        .as_ref()
        .and_then(|m| m.guest.as_ref())
        .or_else(|| {
            d.resources
                .as_ref()
                .and_then(|r| r.requests.as_ref())
                .and_then(|r| r.get("memory"))
        })
        .ok_or_else(|| {
            Error::InvalidSpec(
                "no guest memory: set domain.memory.guest or domain.resources.requests.memory"
                    .into(),
            )
        })?;
    crds::quantity::bytes(q)
        .ok_or_else(|| Error::InvalidSpec(format!("memory quantity {:?} is not understood", q.0)))
}

fn mib_quantity(bytes: u64) -> Quantity {
    Quantity(format!("{}Mi", bytes.div_ceil(MIB)))
}

/// The launcher pod of `vmi`; `block` holds the positions of its claim volumes whose claim
/// is in block mode (read by the VMI controller before the pod, `crate::claims`).
pub fn render(
    vmi: &VirtualMachineInstance,
    cfg: &LauncherConfig,
    block: &BlockClaims,
) -> Result<Pod> {
    let name = vmi
        .metadata
        .name
        .clone()
        .ok_or_else(|| Error::InvalidObject("VMI without a name".into()))?;
    let namespace = vmi
        .metadata
        .namespace
        .clone()
        .ok_or_else(|| Error::InvalidObject(format!("VMI {name} without a namespace")))?;
    let uid = vmi
        .metadata
        .uid
        .clone()
        .ok_or_else(|| Error::InvalidObject(format!("VMI {name} without a UID")))?;
    let grace = grace_seconds(vmi);

    let guest = guest_memory_bytes(vmi)?;
    let vcpus = vmi.spec.domain.vcpus();
    let tpm = Tpm::present(vmi.spec.domain.devices.tpm.as_ref());
    let overhead = memory_overhead_mib(guest.div_ceil(MIB), vcpus, tpm) * MIB;
    let vmi_resources = vmi.spec.domain.resources.as_ref();
    let vmi_requests = vmi_resources.and_then(|r| r.requests.as_ref());
    let vmi_limits = vmi_resources.and_then(|r| r.limits.as_ref());

    let hugepages = vmi
        .spec
        .domain
        .memory
        .as_ref()
        .and_then(|m| m.hugepages.as_ref())
        .map(|h| h.page_size);
    // As KubeVirt: with hugepages, the guest's memory is requested (and limited) as
    // `hugepages-<size>`, and the memory request is the overhead alone. Else the VMI's
    // memory request, else its limit, else its guest memory, is requested: a request
    // below `memory.guest` overcommits the node's memory (KubeVirt's user guide, "Node
    // overcommit"; an instancetype's `overcommitPercent` sets such a request).
    let requested = |list: Option<&BTreeMap<String, Quantity>>, what: &str| {
        list.and_then(|l| l.get("memory"))
            .map(|q| {
                crds::quantity::bytes(q).ok_or_else(|| {
                    Error::InvalidSpec(format!("memory {what} {:?} is not understood", q.0))
                })
            })
            .transpose()
            .map(|b| b.filter(|b| *b > 0))
    };
    let in_memory = if hugepages.is_some() {
        0
    } else {
        requested(vmi_requests, "request")?
            .or(requested(vmi_limits, "limit")?)
            .unwrap_or(guest)
    };
    let mut requests = BTreeMap::new();
    requests.insert("memory".to_string(), mib_quantity(in_memory + overhead));
    // KubeVirt's default: 100m per vCPU (a cpuAllocationRatio of 10) unless requested.
    let cpu = vmi_requests
        .and_then(|r| r.get("cpu").cloned())
        .unwrap_or_else(|| Quantity(format!("{}m", 100 * vcpus)));
    requests.insert("cpu".to_string(), cpu);
    requests.insert(KVM_RESOURCE.to_string(), Quantity("1".into()));
    let mut limits = BTreeMap::new();
    limits.insert(KVM_RESOURCE.to_string(), Quantity("1".into()));
    // As KubeVirt: /dev/net/tun for the guest's taps on the pod network.
    if !vmi.spec.domain.devices.interfaces.is_empty() {
        requests.insert(TUN_RESOURCE.to_string(), Quantity("1".into()));
        limits.insert(TUN_RESOURCE.to_string(), Quantity("1".into()));
    }
    if let Some(l) = vmi_limits {
        if let Some(cpu) = l.get("cpu") {
            limits.insert("cpu".to_string(), cpu.clone());
        }
        if let Some(mem) = l.get("memory") {
            let bytes = crds::quantity::bytes(mem).ok_or_else(|| {
                Error::InvalidSpec(format!("memory limit {:?} is not understood", mem.0))
            })?;
            let beyond_guest = if hugepages.is_some() {
                bytes.saturating_sub(guest)
            } else {
                bytes.max(guest)
            };
            limits.insert("memory".to_string(), mib_quantity(beyond_guest + overhead));
        }
    }
    if let Some(size) = hugepages {
        let resource = format!("hugepages-{}", size.as_str());
        requests.insert(resource.clone(), mib_quantity(guest));
        limits.insert(resource, mib_quantity(guest));
    }
    let dedicated = dedicated_cpus(vmi);
    if let Some(cpus) = dedicated {
        // As KubeVirt: a Guaranteed pod, its CPUs whole and its requests its limits, so
        // kubelet's static CPU manager gives it CPUs of its own.
        let cpus = Quantity(cpus.to_string());
        requests.insert("cpu".into(), cpus.clone());
        limits.insert("cpu".into(), cpus);
        match limits.get("memory").cloned() {
            Some(m) => requests.insert("memory".into(), m),
            None => limits.insert("memory".into(), requests["memory"].clone()),
        };
    }

    let mut labels = vmi.metadata.labels.clone().unwrap_or_default();
    labels.insert(APP_LABEL.into(), APP_LABEL_VALUE.into());
    labels.insert(CREATED_BY_LABEL.into(), uid.clone());
    labels.insert(VM_NAME_LABEL.into(), vm_name_label(vmi));
    labels.insert(VMI_ID_LABEL.into(), vmi_id(&name));
    // As KubeVirt: the VMI's annotations (but kubectl's and KubeVirt's API-version
    // bookkeeping) are the pod's too, so a downwardAPI volume shows them to the guest.
    let mut annotations: BTreeMap<String, String> = vmi
        .metadata
        .annotations
        .iter()
        .flatten()
        .filter(|(k, _)| {
            !k.starts_with("kubectl.kubernetes.io")
                && !k.starts_with("kubevirt.io/storage-observed-api-version")
                && !k.starts_with("kubevirt.io/latest-observed-api-version")
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    annotations.insert(DOMAIN_ANNOTATION.to_string(), name.clone());

    let owner = OwnerReference {
        api_version: VirtualMachineInstance::api_version(&()).into_owned(),
        kind: VirtualMachineInstance::kind(&()).into_owned(),
        name: name.clone(),
        uid: uid.clone(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    };
    let run_dir = RunDir::new(&cfg.node_run_dir);
    let host_dir = run_dir.vmi(&uid).dir;

    let container = Container {
        name: COMPUTE_CONTAINER.into(),
        image: Some(cfg.image.clone()),
        image_pull_policy: Some("IfNotPresent".into()),
        // A launcher that fails says why on its last log line: the node makes the end of
        // the log the termination message, and the VMI's status carries it.
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        command: Some(vec![LAUNCHER_COMMAND.into()]),
        args: Some(vec![
            "--vmi-namespace".into(),
            namespace.clone(),
            "--vmi-name".into(),
            name.clone(),
            "--vmi-uid".into(),
            uid.clone(),
            "--vmi-dir".into(),
            VMI_DIR_IN_POD.into(),
            "--grace-period-seconds".into(),
            grace.to_string(),
            "--capabilities-cache".into(),
            CAPABILITIES_DIR_IN_POD.into(),
        ]),
        resources: Some(ResourceRequirements {
            requests: Some(requests),
            limits: Some(limits),
            ..Default::default()
        }),
        volume_mounts: Some(vec![
            VolumeMount {
                name: VMI_DIR_VOLUME.into(),
                mount_path: VMI_DIR_IN_POD.into(),
                ..Default::default()
            },
            VolumeMount {
                name: "capabilities".into(),
                mount_path: CAPABILITIES_DIR_IN_POD.into(),
                ..Default::default()
            },
        ]),
        security_context: Some({
            let sc = if uses_passt(vmi) || uses_virtiofs(vmi) {
                security::compute_with_user_namespaces()
            } else {
                security::compute()
            };
            let numa = vmi
                .spec
                .domain
                .cpu
                .as_ref()
                .is_some_and(crds::Cpu::numa_passthrough);
            if numa {
                security::with_memory_policy(sc)
            } else {
                sc
            }
        }),
        readiness_probe: Some(Probe {
            exec: Some(ExecAction {
                command: Some(vec![
                    "test".into(),
                    "-e".into(),
                    format!("{VMI_DIR_IN_POD}/{READY_FILE}"),
                ]),
            }),
            period_seconds: Some(1),
            timeout_seconds: Some(1),
            success_threshold: Some(1),
            failure_threshold: Some(5),
            ..Default::default()
        }),
        ..Default::default()
    };

    let disks = disks::render(vmi, &cfg.image, VMI_DIR_VOLUME, dedicated.is_some())?;
    let (secret_volumes, secret_mounts) = cloudinit::render(vmi);
    let config = config::render(vmi);
    let claims = claims::render(vmi, block);
    let mut container = container;
    probes::apply(vmi, &mut container);
    container.volume_mounts.get_or_insert_default().extend(
        secret_mounts
            .into_iter()
            .chain(config.mounts)
            .chain(claims.mounts),
    );
    if !claims.devices.is_empty() {
        container.volume_devices = Some(claims.devices);
    }
    let mut containers = vec![container];
    containers.extend(disks.containers);
    let mut volumes = vec![
        host_dir_volume(VMI_DIR_VOLUME, &host_dir),
        host_dir_volume("capabilities", &run_dir.capabilities()),
    ];
    volumes.extend(disks.volumes);
    volumes.extend(secret_volumes);
    volumes.extend(config.volumes);
    volumes.extend(claims.volumes);
    if let Some((v, m)) = crate::backend_storage::pod_volume(vmi) {
        volumes.push(v);
        containers[0].volume_mounts.get_or_insert_default().push(m);
    }
    if hugepages.is_some() {
        let (v, m) = hugepage_volumes();
        volumes.extend(v);
        containers[0]
            .volume_mounts
            .get_or_insert_default()
            .extend(m);
    }

    let spec = &vmi.spec;
    Ok(Pod {
        metadata: ObjectMeta {
            name: Some(pod_name(&name, &uid)),
            namespace: Some(namespace),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        spec: Some(PodSpec {
            init_containers: (!disks.init.is_empty()).then_some(disks.init),
            containers,
            volumes: Some(volumes),
            // The launcher and QEMU reach the disk containers' files through
            // /proc/<pid>/root: one PID namespace for the pod.
            share_process_namespace: Some(true),
            security_context: Some(security::pod()),
            restart_policy: Some("Never".into()),
            termination_grace_period_seconds: Some(grace + GRACE_MARGIN_SECONDS),
            // As KubeVirt: a serviceAccount volume's ServiceAccount is the pod's, its
            // token mounted by the node; other launcher pods get no token.
            automount_service_account_token: Some(config.service_account.is_some()),
            service_account_name: config.service_account,
            node_selector: Some(node_selector(spec)),
            affinity: spec.affinity.clone(),
            tolerations: spec.tolerations.clone(),
            hostname: spec.hostname.clone(),
            subdomain: spec.subdomain.clone(),
            // Scheduling and DNS fields go to the pod unchanged, as in KubeVirt.
            priority_class_name: spec.priority_class_name.clone(),
            scheduler_name: spec.scheduler_name.clone(),
            topology_spread_constraints: spec.topology_spread_constraints.clone(),
            dns_policy: spec.dns_policy.map(|p| p.as_str().to_owned()),
            dns_config: spec.dns_config.clone(),
            ..Default::default()
        }),
        status: None,
    })
}

/// A hostPath volume of a directory on the node, created when missing.
/// A filesystem (virtiofs): the launcher runs virtiofsd in a user namespace, see
/// [`security::compute_with_user_namespaces`].
fn uses_virtiofs(vmi: &VirtualMachineInstance) -> bool {
    !vmi.spec.domain.devices.filesystems.is_empty()
}

/// An interface with the passt binding (core or plugin): see
/// [`security::compute_with_user_namespaces`].
fn uses_passt(vmi: &VirtualMachineInstance) -> bool {
    vmi.spec
        .domain
        .devices
        .interfaces
        .iter()
        .any(|i| i.passt_binding.is_some() || i.binding.as_ref().is_some_and(|b| b.name == "passt"))
}

/// KubeVirt's hugepages volumes: hugetlbfs emptyDirs at `/dev/hugepages` and at
/// libvirt's directory under it. The guest's memory itself comes from a memfd (the domain's
/// memoryBacking), which needs no mount; the pod's hugepages request reserves the pages.
fn hugepage_volumes() -> (Vec<Volume>, Vec<VolumeMount>) {
    [
        ("hugepages", "/dev/hugepages"),
        ("hugetblfs-dir", "/dev/hugepages/libvirt/qemu"),
    ]
    .into_iter()
    .map(|(name, path)| {
        let volume = Volume {
            name: name.into(),
            empty_dir: Some(EmptyDirVolumeSource {
                medium: Some("HugePages".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mount = VolumeMount {
            name: name.into(),
            mount_path: path.into(),
            ..Default::default()
        };
        (volume, mount)
    })
    .unzip()
}

fn host_dir_volume(name: &str, path: &std::path::Path) -> Volume {
    Volume {
        name: name.into(),
        host_path: Some(HostPathVolumeSource {
            path: path.to_string_lossy().into_owned(),
            type_: Some("DirectoryOrCreate".into()),
        }),
        ..Default::default()
    }
}

/// The launcher pod's node selector, as KubeVirt's: only nodes whose virt-handler runs
/// (it labels its Node `kubevirt.io/schedulable=true` once it has probed KVM and serves),
/// for dedicated CPUs only nodes with the static CPU manager (`kubevirt.io/cpumanager`),
/// for realtime vCPUs only nodes that run realtime threads unthrottled
/// (`kubevirt.io/realtime`), then the VMI's own `nodeSelector`, which may override it.
fn node_selector(spec: &VirtualMachineInstanceSpec) -> BTreeMap<String, String> {
    let mut selector = BTreeMap::from([(NODE_SCHEDULABLE_LABEL.to_owned(), "true".to_owned())]);
    for (label, _) in feature_selectors(spec) {
        selector.insert(label.to_owned(), "true".to_owned());
    }
    selector.extend(spec.node_selector.clone().unwrap_or_default());
    selector
}

/// The node labels (set to `true` by virt-handler where the node can serve the feature)
/// that the launcher pod selects for the VMI's fields, as KubeVirt's: (label, field).
pub fn feature_selectors(spec: &VirtualMachineInstanceSpec) -> Vec<(&'static str, &'static str)> {
    let cpu = spec.domain.cpu.as_ref();
    let mut out = Vec::new();
    if cpu.and_then(|c| c.dedicated_cpu_placement) == Some(true) {
        out.push((CPU_MANAGER_LABEL, "spec.domain.cpu.dedicatedCpuPlacement"));
    }
    if cpu.is_some_and(|c| c.realtime.is_some()) {
        out.push((REALTIME_LABEL, "spec.domain.cpu.realtime"));
    }
    out
}

/// The whole CPUs a VMI with dedicated CPUs asks of its node, as KubeVirt counts them: its
/// CPU limit (or request) if it gives one, else its vCPUs; one more for an isolated
/// emulator thread. None: the VMI shares the node's CPUs.
fn dedicated_cpus(vmi: &VirtualMachineInstance) -> Option<u64> {
    let domain = &vmi.spec.domain;
    let cpu = domain.cpu.as_ref()?;
    if cpu.dedicated_cpu_placement != Some(true) {
        return None;
    }
    use crds::ResourceSection::{Limits, Requests};
    let cpus = domain
        .resource_cpus([Limits, Requests])
        .and_then(|(_, _, cpus)| cpus)
        .filter(|c| *c > 0)
        .unwrap_or(u64::from(domain.vcpus()));
    Some(cpus + u64::from(cpu.isolate_emulator_thread == Some(true)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vmi(yaml: &str) -> VirtualMachineInstance {
        let mut vmi: VirtualMachineInstance = serde_yaml::from_str(yaml).unwrap();
        vmi.metadata.uid = Some("0b8f6a5e-1111-2222-3333-444455556666".into());
        vmi
    }

    const BASIC: &str = r#"
apiVersion: kubevirt.io/v1
kind: VirtualMachineInstance
metadata: {name: testvm, namespace: ns1, labels: {app: web}}
spec:
  terminationGracePeriodSeconds: 20
  nodeSelector: {disk: ssd}
  tolerations: [{key: dedicated, operator: Exists, effect: NoSchedule}]
  affinity:
    nodeAffinity:
      requiredDuringSchedulingIgnoredDuringExecution:
        nodeSelectorTerms: [{matchExpressions: [{key: zone, operator: In, values: [a]}]}]
  domain:
    cpu: {cores: 2}
    memory: {guest: 128Mi}
    devices: {}
"#;

    fn cfg() -> LauncherConfig {
        LauncherConfig {
            image: "ferrovirt/virt-launcher:dev".into(),
            node_run_dir: "/var/run/ferrovirt".into(),
        }
    }

    #[test]
    fn scheduling_and_dns_fields_go_to_the_pod() {
        let pod = render(
            &vmi(r#"
apiVersion: kubevirt.io/v1
kind: VirtualMachineInstance
metadata: {name: testvm, namespace: ns1}
spec:
  priorityClassName: vm-high
  schedulerName: my-scheduler
  topologySpreadConstraints:
  - {maxSkew: 1, topologyKey: kubernetes.io/hostname, whenUnsatisfiable: DoNotSchedule}
  dnsPolicy: None
  dnsConfig: {nameservers: [10.0.0.53], searches: [example.test]}
  domain: {memory: {guest: 128Mi}, devices: {}}
"#),
            &cfg(),
            &BlockClaims::new(),
        )
        .unwrap();
        let spec = pod.spec.unwrap();
        assert_eq!(spec.priority_class_name.as_deref(), Some("vm-high"));
        assert_eq!(spec.scheduler_name.as_deref(), Some("my-scheduler"));
        let spread = &spec.topology_spread_constraints.unwrap()[0];
        assert_eq!(
            (spread.max_skew, spread.topology_key.as_str()),
            (1, "kubernetes.io/hostname")
        );
        assert_eq!(spec.dns_policy.as_deref(), Some("None"));
        let dns = spec.dns_config.unwrap();
        assert_eq!(dns.nameservers.unwrap(), ["10.0.0.53"]);
        assert_eq!(dns.searches.unwrap(), ["example.test"]);
    }

    #[test]
    fn the_first_consumer_pod_is_the_launcher_pod_that_runs_nothing() {
        let vmi = vmi(&format!(
            "{BASIC}  volumes: [{{name: root, dataVolume: {{name: dv1}}}}, {{name: c, containerDisk: {{image: ferrovirt/disk}}}}]\n"
        ));
        let launcher = render(&vmi, &cfg(), &BlockClaims::new()).unwrap();
        let temp = render_first_consumer(&vmi, &cfg(), &BlockClaims::new()).unwrap();
        assert_eq!(
            temp.metadata.name.as_deref(),
            Some(format!("{}-wffc", launcher.name_any()).as_str())
        );
        assert_eq!(
            temp.annotations()[EPHEMERAL_PROVISIONING_ANNOTATION],
            "true"
        );
        assert_eq!(temp.labels()[APP_LABEL], APP_LABEL_VALUE);
        assert!(
            !temp.labels().contains_key(CREATED_BY_LABEL),
            "virt-handler's label"
        );
        assert_eq!(temp.owner_references(), launcher.owner_references());
        let (t, l) = (temp.spec.unwrap(), launcher.spec.unwrap());
        assert_eq!(t.volumes, l.volumes, "the same claims");
        assert_eq!(
            (&t.node_selector, &t.affinity, &t.tolerations),
            (&l.node_selector, &l.affinity, &l.tolerations)
        );
        assert!(t.init_containers.is_none());
        assert_eq!(t.containers.len(), 1);
        let (tc, lc) = (&t.containers[0], &l.containers[0]);
        assert_eq!(tc.name, COMPUTE_CONTAINER);
        assert_eq!(tc.command.as_deref(), Some(&["/bin/true".to_string()][..]));
        assert_eq!(
            (tc.args.as_ref(), tc.readiness_probe.as_ref()),
            (None, None)
        );
        assert_eq!(tc.resources, lc.resources, "placed where the VMI fits");
        assert_eq!(tc.volume_mounts, lc.volume_mounts);
    }

    #[test]
    fn unset_scheduling_fields_leave_the_pods_defaults() {
        let spec = render(&vmi(BASIC), &cfg(), &BlockClaims::new())
            .unwrap()
            .spec
            .unwrap();
        assert_eq!(spec.priority_class_name, None);
        assert_eq!(spec.scheduler_name, None);
        assert_eq!(spec.dns_policy, None);
        assert_eq!(spec.dns_config, None);
    }

    #[test]
    fn only_a_passt_or_virtiofs_vmis_compute_container_runs_without_seccomp() {
        let seccomp = |v: &VirtualMachineInstance| {
            let pod = render(v, &cfg(), &BlockClaims::new()).unwrap();
            let c = &pod.spec.unwrap().containers[0];
            c.security_context
                .as_ref()
                .unwrap()
                .seccomp_profile
                .as_ref()
                .map(|p| p.type_.clone())
        };
        assert_eq!(seccomp(&vmi(BASIC)), None, "the pod's RuntimeDefault");
        for binding in ["passtBinding: {}", "binding: {name: passt}"] {
            let mut v = vmi(BASIC);
            v.spec.domain.devices.interfaces =
                vec![serde_yaml::from_str(&format!("{{name: default, {binding}}}")).unwrap()];
            v.spec.networks = vec![serde_yaml::from_str("{name: default, pod: {}}").unwrap()];
            assert_eq!(seccomp(&v).as_deref(), Some("Unconfined"), "{binding}");
        }
        let mut v = vmi(BASIC);
        v.spec.domain.devices.filesystems =
            vec![serde_yaml::from_str("{name: cm, virtiofs: {}}").unwrap()];
        assert_eq!(seccomp(&v).as_deref(), Some("Unconfined"), "virtiofs");
    }

    #[test]
    fn renders_the_contract() {
        let pod = render(&vmi(BASIC), &cfg(), &BlockClaims::new()).unwrap();
        let meta = &pod.metadata;
        assert_eq!(meta.name.as_deref(), Some("virt-launcher-testvm-0b8f6"));
        let labels = meta.labels.as_ref().unwrap();
        assert_eq!(labels["kubevirt.io"], "virt-launcher");
        assert_eq!(
            labels["kubevirt.io/created-by"],
            "0b8f6a5e-1111-2222-3333-444455556666"
        );
        assert_eq!(labels["vm.kubevirt.io/name"], "testvm");
        assert_eq!(labels["app"], "web", "the VMI's labels are copied");
        assert_eq!(
            meta.annotations.as_ref().unwrap()["kubevirt.io/domain"],
            "testvm"
        );
        let owner = &meta.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.controller),
            ("VirtualMachineInstance", Some(true))
        );

        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(spec.termination_grace_period_seconds, Some(35));
        assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
        let selector = spec.node_selector.as_ref().unwrap();
        assert_eq!(selector["disk"], "ssd");
        // Only nodes whose virt-handler runs, as KubeVirt's launcher pods.
        assert_eq!(selector["kubevirt.io/schedulable"], "true");
        assert_eq!(
            spec.tolerations.as_ref().unwrap()[0].key.as_deref(),
            Some("dedicated")
        );
        assert!(spec.affinity.as_ref().unwrap().node_affinity.is_some());
        let vol = &spec.volumes.as_ref().unwrap()[0];
        let hp = vol.host_path.as_ref().unwrap();
        assert_eq!(
            hp.path,
            "/var/run/ferrovirt/vmis/0b8f6a5e-1111-2222-3333-444455556666"
        );
        assert_eq!(hp.type_.as_deref(), Some("DirectoryOrCreate"));

        let c = &spec.containers[0];
        assert_eq!(c.name, "compute");
        assert_eq!(c.image.as_deref(), Some("ferrovirt/virt-launcher:dev"));
        assert_eq!(
            c.command.as_deref(),
            Some(&["virt-launcher".to_string()][..])
        );
        let args = c.args.as_ref().unwrap().join(" ");
        assert_eq!(
            args,
            "--vmi-namespace ns1 --vmi-name testvm --vmi-uid 0b8f6a5e-1111-2222-3333-444455556666 \
             --vmi-dir /var/run/ferrovirt/vmi --grace-period-seconds 20 \
             --capabilities-cache /var/run/ferrovirt/capabilities"
        );
        assert_eq!(
            c.volume_mounts.as_ref().unwrap()[0].mount_path,
            "/var/run/ferrovirt/vmi"
        );
        let probe = c.readiness_probe.as_ref().unwrap().exec.as_ref().unwrap();
        assert_eq!(
            probe.command.as_ref().unwrap().join(" "),
            "test -e /var/run/ferrovirt/vmi/ready"
        );

        let res = c.resources.as_ref().unwrap();
        let req = res.requests.as_ref().unwrap();
        // 128 + 30 + 50 + 64 + 1 (page tables) + 2 (second vCPU)
        assert_eq!(req["memory"].0, "275Mi");
        assert_eq!(req["cpu"].0, "200m");
        assert_eq!(req[KVM_RESOURCE].0, "1");
        assert_eq!(res.limits.as_ref().unwrap()[KVM_RESOURCE].0, "1");
        assert!(!res.limits.as_ref().unwrap().contains_key("memory"));
    }

    #[test]
    fn disk_images_are_containers_of_the_pod() {
        let v = vmi(r##"
metadata: {name: cd, namespace: ns1}
spec:
  domain:
    memory: {guest: 64Mi}
    firmware:
      kernelBoot:
        container: {image: "reg/kernel:1", kernelPath: /boot/vmlinuz, imagePullPolicy: Always}
    devices: {}
  volumes:
  - {name: containerdisk, containerDisk: {image: "quay.io/kubevirt/cirros-container-disk-demo"}}
  - {name: ci, cloudInitNoCloud: {userData: "#cloud-config"}}
"##);
        let spec = render(&v, &cfg(), &BlockClaims::new())
            .unwrap()
            .spec
            .unwrap();
        assert_eq!(spec.share_process_namespace, Some(true));
        let init = spec.init_containers.as_ref().unwrap();
        assert_eq!(init.len(), 1);
        assert_eq!(init[0].name, "container-disk-binary");
        assert_eq!(
            init[0].image.as_deref(),
            Some("ferrovirt/virt-launcher:dev")
        );
        assert_eq!(
            init[0].command.as_ref().unwrap().join(" "),
            "container-disk --copy-to /var/run/ferrovirt/container-disk-binary/container-disk"
        );
        let names: Vec<&str> = spec.containers.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["compute", "volumecontainerdisk", "kernel-boot"]);
        let disk = &spec.containers[1];
        assert_eq!(
            disk.image.as_deref(),
            Some("quay.io/kubevirt/cirros-container-disk-demo")
        );
        assert_eq!(disk.image_pull_policy, None, "the API server's default");
        assert_eq!(
            disk.command.as_ref().unwrap().join(" "),
            "/var/run/ferrovirt/container-disk-binary/container-disk --socket \
             /var/run/ferrovirt/vmi/container-disks/volumecontainerdisk.sock"
        );
        let sc = disk.security_context.as_ref().unwrap();
        assert_eq!(sc.run_as_user, Some(107), "the launcher's uid");
        assert_eq!(
            sc.capabilities.as_ref().unwrap().drop.as_deref(),
            Some(&["ALL".to_string()][..])
        );
        let mounts: Vec<&str> = disk
            .volume_mounts
            .iter()
            .flatten()
            .map(|m| m.name.as_str())
            .collect();
        assert_eq!(mounts, ["container-disk-binary", "vmi-dir"]);
        let kernel = &spec.containers[2];
        assert_eq!(kernel.image.as_deref(), Some("reg/kernel:1"));
        assert_eq!(kernel.image_pull_policy.as_deref(), Some("Always"));
        assert!(kernel.command.as_ref().unwrap()[2].ends_with("/kernel-boot.sock"));
        assert!(
            spec.volumes
                .iter()
                .flatten()
                .any(|v| v.name == "container-disk-binary" && v.empty_dir.is_some())
        );

        // Without disk images: no init container and no extra volume.
        let plain = render(&vmi(BASIC), &cfg(), &BlockClaims::new())
            .unwrap()
            .spec
            .unwrap();
        assert!(plain.init_containers.is_none());
        assert_eq!(plain.containers.len(), 1);
        assert_eq!(plain.volumes.unwrap().len(), 2);

        let mut long = v.clone();
        long.spec.volumes[0].name = "d".repeat(58);
        let e = render(&long, &cfg(), &BlockClaims::new())
            .unwrap_err()
            .to_string();
        assert!(e.contains("spec.volumes[0].name"), "{e}");
    }

    #[test]
    fn cloud_init_secrets_are_secret_volumes_of_the_compute_container() {
        let v = vmi(r##"
metadata: {name: ci, namespace: ns1}
spec:
  domain: {memory: {guest: 64Mi}, devices: {}}
  volumes:
  - {name: root, containerDisk: {image: "reg/disk:1"}}
  - {name: ci, cloudInitNoCloud: {userDataSecretRef: {name: my-ud}, networkDataSecretRef: {name: my-nd}}}
  - {name: inline, cloudInitNoCloud: {userData: "#cloud-config"}}
"##);
        let spec = render(&v, &cfg(), &BlockClaims::new())
            .unwrap()
            .spec
            .unwrap();
        let secrets: Vec<(&str, &str)> = spec
            .volumes
            .iter()
            .flatten()
            .filter_map(|v| Some((v.name.as_str(), v.secret.as_ref()?.secret_name.as_deref()?)))
            .collect();
        assert_eq!(
            secrets,
            [
                ("cloudinit-1-userdata", "my-ud"),
                ("cloudinit-1-networkdata", "my-nd")
            ]
        );
        let mounts: Vec<(&str, &str, Option<bool>)> = spec.containers[0]
            .volume_mounts
            .iter()
            .flatten()
            .skip(2)
            .map(|m| (m.name.as_str(), m.mount_path.as_str(), m.read_only))
            .collect();
        assert_eq!(
            mounts,
            [
                (
                    "cloudinit-1-userdata",
                    "/var/run/ferrovirt-private/cloud-init/1/userdata",
                    Some(true)
                ),
                (
                    "cloudinit-1-networkdata",
                    "/var/run/ferrovirt-private/cloud-init/1/networkdata",
                    Some(true)
                )
            ]
        );
        // Only the compute container (virt-handler reads through the launcher) has them.
        assert!(
            spec.containers[1]
                .volume_mounts
                .iter()
                .flatten()
                .all(|m| !m.name.starts_with("cloudinit"))
        );
    }

    #[test]
    fn resources_from_requests_and_limits() {
        let v = vmi(r#"
metadata: {name: big, namespace: ns1}
spec:
  domain:
    resources: {requests: {memory: 1Gi, cpu: "1"}, limits: {memory: 2Gi, cpu: "2"}}
    devices: {}
"#);
        let pod = render(&v, &cfg(), &BlockClaims::new()).unwrap();
        let res = pod.spec.as_ref().unwrap().containers[0]
            .resources
            .clone()
            .unwrap();
        assert_eq!(res.requests.as_ref().unwrap()["memory"].0, "1170Mi"); // 1024 + 144 + 2
        assert_eq!(res.requests.as_ref().unwrap()["cpu"].0, "1");
        assert_eq!(res.limits.as_ref().unwrap()["memory"].0, "2194Mi"); // 2048 + 144 + 2 (overhead of the guest)
        assert_eq!(res.limits.as_ref().unwrap()["cpu"].0, "2");
        assert_eq!(pod.spec.unwrap().termination_grace_period_seconds, Some(45));
    }

    #[test]
    fn a_memory_request_below_the_guest_memory_overcommits_the_node() {
        let request = |resources: &str| {
            let v = vmi(&format!(
                "metadata: {{name: o, namespace: n}}\nspec:\n  domain:\n    memory: {{guest: 2Gi}}\n    resources: {resources}\n    devices: {{}}\n"
            ));
            let pod = render(&v, &cfg(), &BlockClaims::new()).unwrap();
            let res = pod.spec.unwrap().containers[0].resources.clone().unwrap();
            res.requests.unwrap()["memory"].0.clone()
        };
        // The overhead of a 2 GiB guest: 30 + 50 + 64 + 4.
        assert_eq!(request("{}"), "2196Mi");
        assert_eq!(request("{requests: {memory: 1Gi}}"), "1172Mi");
        // A limit alone is the request, as in KubeVirt.
        assert_eq!(request("{limits: {memory: 3Gi}}"), "3220Mi");
    }

    #[test]
    fn a_tpm_adds_swtpm_to_the_memory_overhead_and_a_disabled_one_does_not() {
        let memory = |tpm: &str| {
            let v = vmi(&format!(
                "metadata: {{name: t, namespace: n}}\nspec:\n  domain:\n    memory: {{guest: 128Mi}}\n    devices: {{{tpm}}}\n"
            ));
            let pod = render(&v, &cfg(), &BlockClaims::new()).unwrap();
            let res = pod.spec.unwrap().containers[0].resources.clone().unwrap();
            res.requests.unwrap()["memory"].0.clone()
        };
        assert_eq!(memory(""), "273Mi"); // 128 + 30 + 50 + 64 + 1
        assert_eq!(memory("tpm: {}"), "281Mi"); // and 8 for swtpm
        assert_eq!(memory("tpm: {enabled: false}"), "273Mi");
    }

    #[test]
    fn dedicated_cpus_make_a_guaranteed_pod_for_a_cpu_manager_node() {
        let v = vmi(r#"
metadata: {name: d, namespace: n}
spec:
  domain:
    cpu: {cores: 2, dedicatedCpuPlacement: true, isolateEmulatorThread: true}
    memory: {guest: 128Mi}
    devices: {}
  volumes:
  - {name: root, containerDisk: {image: cirros}}
"#);
        let spec = render(&v, &cfg(), &BlockClaims::new())
            .unwrap()
            .spec
            .unwrap();
        let res = spec.containers[0].resources.as_ref().unwrap();
        let (req, lim) = (res.requests.as_ref().unwrap(), res.limits.as_ref().unwrap());
        // Two vCPUs and the emulator thread's CPU.
        assert_eq!((req["cpu"].0.as_str(), lim["cpu"].0.as_str()), ("3", "3"));
        assert_eq!(req["memory"], lim["memory"]);
        // Every container (the disk's and the init container too) requests its limits:
        // the Guaranteed QoS class.
        for c in spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
        {
            let r = c.resources.as_ref().unwrap();
            for k in ["cpu", "memory"] {
                assert_eq!(
                    r.requests.as_ref().unwrap().get(k),
                    r.limits.as_ref().unwrap().get(k),
                    "{} {k}",
                    c.name
                );
            }
        }
        let selector = spec.node_selector.unwrap();
        assert_eq!(selector["kubevirt.io/cpumanager"], "true");
        assert!(!selector.contains_key("kubevirt.io/realtime"));
        let compute = spec.containers[0].security_context.clone().unwrap();
        let caps = compute.capabilities.unwrap().add.unwrap();
        assert!(!caps.contains(&"SYS_NICE".to_string()), "{caps:?}");
        // Realtime vCPUs (with NUMA passthrough): only nodes that run realtime threads
        // unthrottled; the memory policy's syscalls allowed by the default seccomp profile.
        let mut rt = v.clone();
        let cpu = rt.spec.domain.cpu.as_mut().unwrap();
        cpu.realtime = Some(Default::default());
        cpu.numa = Some(crds::Numa {
            guest_mapping_passthrough: Some(Default::default()),
        });
        let rt_spec = render(&rt, &cfg(), &BlockClaims::new())
            .unwrap()
            .spec
            .unwrap();
        assert_eq!(
            rt_spec.node_selector.as_ref().unwrap()["kubevirt.io/realtime"],
            "true"
        );
        let compute = rt_spec.containers[0].security_context.clone().unwrap();
        assert_eq!(
            compute.capabilities.unwrap().add.unwrap(),
            ["NET_BIND_SERVICE", "SYS_NICE"]
        );
        // Shared CPUs: none of it.
        let v = vmi(
            "metadata: {name: s, namespace: n}\nspec: {domain: {memory: {guest: 128Mi}, devices: {}}}",
        );
        let spec = render(&v, &cfg(), &BlockClaims::new())
            .unwrap()
            .spec
            .unwrap();
        assert!(
            !spec
                .node_selector
                .unwrap()
                .contains_key("kubevirt.io/cpumanager")
        );
        let res = spec.containers[0].resources.clone().unwrap();
        assert!(!res.limits.unwrap().contains_key("cpu"));
    }

    #[test]
    fn hugepages_hold_the_guest_memory_and_the_memory_request_is_the_overhead() {
        let v = vmi(r#"
metadata: {name: h, namespace: n}
spec:
  domain:
    memory: {guest: 128Mi, hugepages: {pageSize: 2Mi}}
    resources: {limits: {memory: 160Mi}}
    devices: {}
"#);
        let spec = render(&v, &cfg(), &BlockClaims::new())
            .unwrap()
            .spec
            .unwrap();
        let c = &spec.containers[0];
        let res = c.resources.as_ref().unwrap();
        let (req, lim) = (res.requests.as_ref().unwrap(), res.limits.as_ref().unwrap());
        assert_eq!(req["hugepages-2Mi"].0, "128Mi");
        assert_eq!(lim["hugepages-2Mi"].0, "128Mi");
        assert_eq!(req["memory"].0, "145Mi"); // the overhead: 30 + 50 + 64 + 1
        assert_eq!(lim["memory"].0, "177Mi"); // 32 beyond the guest + the overhead
        let mounts: Vec<(&str, &str)> = c
            .volume_mounts
            .iter()
            .flatten()
            .map(|m| (m.name.as_str(), m.mount_path.as_str()))
            .collect();
        assert!(
            mounts.contains(&("hugepages", "/dev/hugepages")),
            "{mounts:?}"
        );
        let hugetlbfs = spec
            .volumes
            .iter()
            .flatten()
            .filter(|v| v.empty_dir.as_ref().and_then(|e| e.medium.as_deref()) == Some("HugePages"))
            .count();
        assert_eq!(hugetlbfs, 2);
    }

    #[test]
    fn a_pod_network_interface_asks_for_tun_and_the_pod_carries_the_vmi_id() {
        let v = vmi(r#"
metadata: {name: net, namespace: ns1}
spec:
  domain:
    memory: {guest: 128Mi}
    devices: {interfaces: [{name: default, masquerade: {}}]}
  networks: [{name: default, pod: {}}]
"#);
        let pod = render(&v, &cfg(), &BlockClaims::new()).unwrap();
        let res = pod.spec.as_ref().unwrap().containers[0]
            .resources
            .clone()
            .unwrap();
        assert_eq!(res.requests.as_ref().unwrap()[TUN_RESOURCE].0, "1");
        assert_eq!(res.limits.as_ref().unwrap()[TUN_RESOURCE].0, "1");
        assert_eq!(pod.metadata.labels.unwrap()[VMI_ID_LABEL], "net");
        let without = render(&vmi(BASIC), &cfg(), &BlockClaims::new()).unwrap();
        let res = without.spec.unwrap().containers[0]
            .resources
            .clone()
            .unwrap();
        assert!(!res.requests.unwrap().contains_key(TUN_RESOURCE));
    }

    #[test]
    fn the_vm_name_label_fits_a_label_value() {
        let mut v = vmi(BASIC);
        let long = format!("{}-{}", "a".repeat(62), "b".repeat(10));
        v.metadata.name = Some(long.clone());
        let pod = render(&v, &cfg(), &BlockClaims::new()).unwrap();
        assert_eq!(
            pod.metadata.labels.as_ref().unwrap()[VM_NAME_LABEL],
            "a".repeat(62),
            "cut at 63, no trailing '-'"
        );
        v.metadata.name = Some("web.example".into());
        assert_eq!(
            vm_name_label(&v),
            "web",
            "the hostname part of a dotted name"
        );
        v.spec.hostname = Some("guest1".into());
        assert_eq!(vm_name_label(&v), "guest1", "spec.hostname wins");
        let labels = render(&v, &cfg(), &BlockClaims::new())
            .unwrap()
            .metadata
            .labels
            .unwrap();
        assert!(
            labels.values().all(|l| l.len() <= LABEL_VALUE_MAX),
            "{labels:?}"
        );
    }

    #[test]
    fn no_memory_is_an_error() {
        let v = vmi("metadata: {name: x, namespace: n}\nspec: {domain: {devices: {}}}\n");
        assert!(matches!(
            render(&v, &cfg(), &BlockClaims::new()),
            Err(Error::InvalidSpec(_))
        ));
    }

    #[test]
    fn memory_in_every_form_the_api_server_accepts() {
        // `+1Gi` and `1Pi` were InvalidSpec before the parser moved to crds::quantity.
        for (guest, bytes) in [("+1Gi", 1u64 << 30), ("1Pi", 1 << 50), ("1E3", 1000)] {
            let v = vmi(&format!(
                "metadata: {{name: x, namespace: n}}\nspec: {{domain: {{memory: {{guest: \"{guest}\"}}, devices: {{}}}}}}\n"
            ));
            assert_eq!(guest_memory_bytes(&v).unwrap(), bytes, "{guest}");
        }
    }
}
