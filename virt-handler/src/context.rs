//! What every worker of the node controller shares: the clients, this node's run
//! directory and settings, and the steps they take on a VMI (preparing its domain, writing
//! its status, telling of it in Events). The controller builds it; workers and the node
//! labeller use it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crds::VirtualMachineInstance;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder};
use kube::{Api, Resource, ResourceExt};

use ferrovirt_node_contract::pod::VIRT_HANDLER_FIELD_MANAGER as FIELD_MANAGER;

use crate::config::Virtualization;
use crate::kvm::KvmStatus;
use crate::metrics::Metrics;
use crate::status::{self, Observation};
use crate::vmi_dir::RunDir;
use crate::volumes::hostdisk::FileId;
use crate::{Error, Result, domain, volumes};

/// How long the disk containers of a launcher pod may take to answer on their sockets once
/// the launcher is ready (they start with it; the VMI is Scheduled once they run).
const DISK_CONTAINER_WAIT: Duration = Duration::from_secs(60);

/// What every worker shares.
pub struct Context {
    pub client: kube::Client,
    pub node: String,
    pub run_dir: RunDir,
    /// The per-VMI directory as launchers see it; `None`: the host path.
    pub launcher_vmi_dir: Option<PathBuf>,
    pub namespace: String,
    pub use_emulation_default: bool,
    pub kvm: KvmStatus,
    /// kubelet's CPU manager state file, if the node has a kubelet.
    pub cpu_manager_state: Option<PathBuf>,
    pub metrics: Arc<Metrics>,
    pub recorder: Recorder,
}

/// What [`Context::prepare_domain`] made: the domain XML, the host disks as checked, and
/// the virtiofsd processes the launcher starts before the domain.
pub struct PreparedDomain {
    pub xml: String,
    pub host_disks: Vec<(usize, FileId)>,
    pub virtiofs: Vec<ferrovirt_node_contract::protocol::VirtiofsShare>,
}

impl Context {
    /// The per-VMI directory as the launcher of `uid` sees it.
    pub fn launcher_dir(&self, uid: &str) -> PathBuf {
        self.launcher_vmi_dir
            .clone()
            .unwrap_or_else(|| self.run_dir.vmi(uid).dir)
    }

    /// Resolves PVCs, prepares volumes and firmware, and converts the spec; also returns
    /// the host disks as checked (see [`volumes::prepare`]) and the filesystems' virtiofsd
    /// processes for the launcher. `launcher_pid` (in this handler's PID namespace, from
    /// the launcher's socket) is where the launcher pod's cloud-init Secrets are read;
    /// `virtiofs_storage`: KubeVirt's gate for virtiofs on claims is on.
    pub async fn prepare_domain(
        &self,
        vmi: &VirtualMachineInstance,
        virtualization: Virtualization,
        host_disks: &volumes::HostDiskPolicy,
        virtiofs_storage: bool,
        network: &crate::network::Attachment,
        launcher_pid: Option<u32>,
    ) -> Result<PreparedDomain> {
        let ns = vmi.namespace().unwrap_or_default();
        let uid = vmi.uid().unwrap_or_default();
        let launcher_root = launcher_pid.map(|pid| PathBuf::from(format!("/proc/{pid}/root")));
        let claims = self.claim_dirs(&ns, vmi, launcher_root.as_deref()).await?;
        if let Some(claim) = crate::backend_storage::claim(vmi)? {
            use crate::backend_storage as bs;
            // Where the launcher pod mounts it; else (a launcher outside a pod) its volume.
            let in_pod = launcher_root.as_deref().and_then(bs::open_in_launcher);
            tracing::info!(claim, in_pod = in_pod.is_some(), "backend-storage claim");
            let dir = match in_pod {
                Some(dir) => dir,
                None => {
                    let path = self
                        .claim_dir(&ns, claim)
                        .await?
                        .map_err(|why| bs::unusable(claim, why))?;
                    bs::open_on_host(&path).map_err(|e| {
                        bs::unusable(claim, format!("opening {}: {e}", path.display()))
                    })?
                }
            };
            let vars = crate::firmware::efi_firmware(&vmi.spec.domain).map(|(_, vars)| vars);
            bs::prepare(vmi, claim, &dir, &self.run_dir.vmi(&uid).dir, vars)?;
        }
        let launcher_dir = self.launcher_dir(&uid);
        let virtiofs =
            volumes::virtiofs::shares(&vmi.spec, &launcher_dir, &claims, virtiofs_storage)?;
        let plans = volumes::plan(&vmi.spec, &launcher_dir, &claims, host_disks)?;
        // The launcher pod's disk containers: where their images are, here and for QEMU.
        let (spec, vmi_dir) = (vmi.spec.clone(), self.run_dir.vmi(&uid));
        let images = tokio::task::spawn_blocking(move || {
            volumes::containerdisk::locate_all(&spec, &vmi_dir, DISK_CONTAINER_WAIT)
        })
        .await??;
        let kernel_root = images
            .get(ferrovirt_node_contract::pod::KERNEL_BOOT_CONTAINER)
            .map_or_else(|| PathBuf::from("/"), |r| r.launcher.clone());
        // The CPUs the launcher's container may run on, for dedicated CPUs.
        let dedicated = vmi
            .spec
            .domain
            .cpu
            .as_ref()
            .and_then(|c| c.dedicated_cpu_placement);
        let pod_cpus = match launcher_pid {
            Some(pid) if dedicated == Some(true) => launcher_cpus(pid)?,
            _ => Vec::new(),
        };
        // The host's NUMA nodes, for a guest whose cells follow them.
        let host_nodes = if vmi
            .spec
            .domain
            .cpu
            .as_ref()
            .is_some_and(crds::Cpu::numa_passthrough)
        {
            domain::host_nodes(Path::new(HOST_NUMA_NODES))?
        } else {
            Vec::new()
        };
        let xml = domain::convert_with(
            &domain::Input {
                namespace: &ns,
                name: &vmi.name_any(),
                uid: &uid,
                spec: &vmi.spec,
                virtualization,
                vmi_dir: &launcher_dir,
                kernel_root: &kernel_root,
                volumes: &plans,
                pod_cpus: &pod_cpus,
                host_nodes: &host_nodes,
            },
            network,
        )?;
        let host_dir = self.run_dir.vmi(&uid).dir;
        let hostname = vmi.spec.hostname.clone().unwrap_or_else(|| vmi.name_any());
        let domain_spec = vmi.spec.domain.clone();
        let host_disks = tokio::task::spawn_blocking(move || {
            volumes::prepare_firmware(&domain_spec, &host_dir, &images)?;
            volumes::prepare(
                &plans,
                &host_dir,
                &images,
                launcher_root.as_deref(),
                &uid,
                &hostname,
            )
        })
        .await??;
        Ok(PreparedDomain {
            xml,
            host_disks,
            virtiofs,
        })
    }

    /// The directory of each claim volume (persistentVolumeClaim, dataVolume), by volume
    /// name: where the launcher pod mounts it (node-contract's `claim_dir_in_pod`), seen
    /// through `launcher_root`; a launcher outside a pod (virt-handler's own tests) uses
    /// the claim's bound hostPath or local volume. With the size a missing disk image is
    /// made ([`volumes::image_size`]).
    async fn claim_dirs(
        &self,
        ns: &str,
        vmi: &VirtualMachineInstance,
        launcher_root: Option<&Path>,
    ) -> Result<BTreeMap<String, volumes::ClaimDir>> {
        let mut out = BTreeMap::new();
        let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), ns);
        for (i, v) in vmi.spec.volumes.iter().enumerate() {
            let Some(claim) = v.claim_name() else {
                continue;
            };
            let unusable = |m: String| Error::volume(&v.name, format!("claim {claim:?}: {m}"));
            let pvc = pvcs
                .get_opt(claim)
                .await?
                .ok_or_else(|| unusable("not found".into()))?;
            let block = ferrovirt_node_contract::paths::claim_is_block(
                pvc.spec.as_ref().and_then(|s| s.volume_mode.as_deref()),
            );
            let in_pod = PathBuf::from(if block {
                ferrovirt_node_contract::paths::claim_device_in_pod(i)
            } else {
                ferrovirt_node_contract::paths::claim_dir_in_pod(i)
            });
            let mounted = launcher_root.is_some_and(|root| in_launcher(root, &in_pod));
            let launcher = if mounted {
                in_pod
            } else {
                let path = self.claim_dir(ns, claim).await?.map_err(unusable)?;
                // A block volume's path is the administrator's (often a link such as
                // /dev/disk/by-id/...): resolved once, as kubelet does; the device at its
                // end is then opened without following links.
                match block {
                    true => std::fs::canonicalize(&path).map_err(|e| {
                        unusable(format!("the volume's device {}: {e}", path.display()))
                    })?,
                    false => path,
                }
            };
            tracing::info!(volume = %v.name, claim, dir = %launcher.display(), in_pod = mounted,
                block, "claim directory");
            let size = |q: Option<&Quantity>| q.and_then(crds::quantity::bytes);
            let request = size(
                pvc.spec
                    .as_ref()
                    .and_then(|s| s.resources.as_ref()?.requests.as_ref()?.get("storage")),
            );
            let capacity = size(
                pvc.status
                    .as_ref()
                    .and_then(|s| s.capacity.as_ref()?.get("storage")),
            );
            out.insert(
                v.name.clone(),
                volumes::ClaimDir {
                    launcher,
                    in_pod: mounted,
                    image_size: volumes::image_size(request, capacity).filter(|_| !block),
                    block,
                },
            );
        }
        Ok(out)
    }

    /// The path of the hostPath or local PersistentVolume bound to `claim`, or why
    /// there is none.
    async fn claim_dir(
        &self,
        ns: &str,
        claim: &str,
    ) -> Result<std::result::Result<PathBuf, String>> {
        let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), ns);
        let Some(pvc) = pvcs.get_opt(claim).await? else {
            return Ok(Err("not found".into()));
        };
        let Some(pv_name) = pvc.spec.and_then(|s| s.volume_name) else {
            return Ok(Err("not bound to a volume".into()));
        };
        let Some(pv) = Api::<PersistentVolume>::all(self.client.clone())
            .get_opt(&pv_name)
            .await?
        else {
            return Ok(Err(format!("volume {pv_name:?} not found")));
        };
        let spec = pv.spec.unwrap_or_default();
        Ok(spec
            .host_path
            .map(|h| h.path)
            .or(spec.local.map(|l| l.path))
            .map(PathBuf::from)
            .ok_or_else(|| {
                format!(
                    "volume {pv_name:?} is neither hostPath nor local; only those are supported"
                )
            }))
    }

    /// Publishes a Warning Event on the VMI (best effort: a failure is only logged).
    pub async fn warn(&self, vmi: &VirtualMachineInstance, reason: &str, note: String) {
        let event = KubeEvent {
            type_: EventType::Warning,
            reason: reason.into(),
            note: Some(note),
            action: "Observe".into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, &vmi.object_ref(&())).await {
            tracing::warn!(reason, error = %e, "publishing an Event failed");
        }
    }

    /// Publishes a Warning Event on this handler's Node (best effort, as [`Self::warn`]).
    pub async fn warn_node(&self, reason: &str, note: String) {
        let event = KubeEvent {
            type_: EventType::Warning,
            reason: reason.into(),
            note: Some(note),
            action: "Label".into(),
            secondary: None,
        };
        let node = k8s_openapi::api::core::v1::ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Node".into()),
            name: Some(self.node.clone()),
            ..Default::default()
        };
        if let Err(e) = self.recorder.publish(&event, &node).await {
            tracing::warn!(reason, error = %e, "publishing an Event failed");
        }
    }

    /// Writes the status after `obs` on the VMI (fresh from the API; a forced server-side
    /// apply guarded by its resourceVersion, [`status::apply`], retried on conflict). A VMI
    /// that is gone is fine.
    pub async fn write_status(
        &self,
        vmi: &VirtualMachineInstance,
        obs: &Observation,
    ) -> Result<()> {
        let api: Api<VirtualMachineInstance> =
            Api::namespaced(self.client.clone(), &vmi.namespace().unwrap_or_default());
        let name = vmi.name_any();
        let uid = vmi.uid().unwrap_or_default();
        for _ in 0..8 {
            let Some(current) = api.get_opt(&name).await? else {
                return Ok(());
            };
            if current.uid().as_deref() != Some(uid.as_str()) {
                return Ok(());
            }
            let now = Time(k8s_openapi::jiff::Timestamp::now());
            let old = current.status.clone().unwrap_or_default();
            let Some(new) = status::next(&old, &current.spec, &uid, &self.node, obs, now) else {
                return Ok(());
            };
            let body = status::apply(&name, &new, current.resource_version().as_deref());
            match api
                .patch(
                    &name,
                    &PatchParams::apply(FIELD_MANAGER).force(),
                    &Patch::Apply(&body),
                )
                .await
            {
                Ok(_) => {
                    self.metrics.status_written();
                    tracing::info!(phase = ?new.phase, reason = ?new.reason, "VMI status written");
                    return Ok(());
                }
                Err(kube::Error::Api(s)) if s.is_conflict() => continue,
                Err(kube::Error::Api(s)) if s.is_not_found() => return Ok(()),
                Err(e) => return Err(e.into()),
            }
        }
        tracing::warn!("status write kept conflicting; the next event retries");
        Ok(())
    }
}

/// Where the kernel lists the host's NUMA nodes and their CPUs.
const HOST_NUMA_NODES: &str = "/sys/devices/system/node";

/// The CPUs the process `pid` may run on (`Cpus_allowed_list` of its status): a container's
/// cpuset, which kubelet's static CPU manager makes the pod's own CPUs.
fn launcher_cpus(pid: u32) -> Result<Vec<u32>> {
    let path = PathBuf::from(format!("/proc/{pid}/status"));
    let status = std::fs::read_to_string(&path).map_err(Error::io("reading", &path))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .and_then(domain::parse_cpu_list)
        .ok_or_else(|| {
            Error::io("reading", &path)(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "no Cpus_allowed_list",
            ))
        })
}

/// Whether the launcher pod under `root` (`/proc/<pid>/root`) has `path` (a claim's mount
/// or device), resolved inside its tree; nothing at the end is opened.
fn in_launcher(root: &Path, path: &Path) -> bool {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return false;
    };
    use volumes::launcher_root::{fd_path, open_in_launcher};
    open_in_launcher(root, &dir.to_string_lossy())
        .is_ok_and(|d| std::fs::symlink_metadata(fd_path(&d).join(name)).is_ok())
}
