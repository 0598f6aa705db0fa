//! The Secrets of cloud-init volumes (`userDataSecretRef`, `networkDataSecretRef`), as
//! KubeVirt gives them to its launcher pod: each a secret volume mounted read-only in the
//! compute container ([`CloudInitSecret`]), where virt-handler reads the data through the
//! launcher's `/proc/<pid>/root` (docs/contracts.md). The node mounts the Secret with its
//! own rights, as for any pod: nothing else on the node reads Secrets, and the pod does
//! not start until the Secret exists (the node's FailedMount Events name it).

use crds::VirtualMachineInstance;
use k8s_openapi::api::core::v1::{Event, Pod, SecretVolumeSource, Volume, VolumeMount};

use ferrovirt_node_contract::paths::CloudInitSecret;

/// The secret volumes and the compute container's mounts of them.
pub fn render(vmi: &VirtualMachineInstance) -> (Vec<Volume>, Vec<VolumeMount>) {
    let (mut volumes, mut mounts) = (Vec::new(), Vec::new());
    for (i, v) in vmi.spec.volumes.iter().enumerate() {
        let Some(ci) = &v.cloud_init_no_cloud else {
            continue;
        };
        for (which, secret) in [
            (CloudInitSecret::UserData, &ci.user_data_secret_ref),
            (CloudInitSecret::NetworkData, &ci.network_data_secret_ref),
        ] {
            let Some(secret) = secret else { continue };
            volumes.push(Volume {
                name: which.pod_volume(i),
                secret: Some(SecretVolumeSource {
                    secret_name: Some(secret.name.clone()),
                    ..Default::default()
                }),
                ..Default::default()
            });
            mounts.push(VolumeMount {
                name: which.pod_volume(i),
                mount_path: which.dir_in_pod(i),
                read_only: Some(true),
                ..Default::default()
            });
        }
    }
    (volumes, mounts)
}

/// A Secret (or ConfigMap) the launcher pod needs to start, as the pod has it: the pod's
/// volume, the VMI's field that names it, its kind (`Secret`, `ConfigMap`) and name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodSecret {
    pub volume: String,
    pub field: String,
    pub kind: &'static str,
    pub secret: String,
}

/// The Secrets and ConfigMaps a VMI's launcher pod waits for: those of its cloud-init
/// volumes and of its configMap and secret volumes ([`super::config::required_objects`]).
pub fn secrets(vmi: &VirtualMachineInstance) -> Vec<PodSecret> {
    let mut out = Vec::new();
    for (i, v) in vmi.spec.volumes.iter().enumerate() {
        let Some(ci) = &v.cloud_init_no_cloud else {
            continue;
        };
        for (which, secret, field) in [
            (
                CloudInitSecret::UserData,
                &ci.user_data_secret_ref,
                "userDataSecretRef",
            ),
            (
                CloudInitSecret::NetworkData,
                &ci.network_data_secret_ref,
                "networkDataSecretRef",
            ),
        ] {
            if let Some(secret) = secret {
                out.push(PodSecret {
                    volume: which.pod_volume(i),
                    field: format!("spec.volumes[{i}].cloudInitNoCloud.{field}"),
                    kind: "Secret",
                    secret: secret.name.clone(),
                });
            }
        }
    }
    out.extend(super::config::required_objects(vmi));
    out
}

/// Whether the node may be waiting to mount a Secret or ConfigMap of the launcher pod
/// ([`secrets`]): the VMI has one, and the pod is bound to a node, Pending, its launcher
/// not started.
pub fn may_wait_for_secret(vmi: &VirtualMachineInstance, pod: &Pod) -> bool {
    let status = pod.status.as_ref();
    let pending = status.and_then(|s| s.phase.as_deref()).unwrap_or("Pending") == "Pending";
    let bound = pod.spec.as_ref().is_some_and(|s| s.node_name.is_some());
    let started = status
        .and_then(|s| s.container_statuses.as_ref())
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c.state.as_ref().is_some_and(|st| st.waiting.is_none()))
        });
    pending && bound && !started && !secrets(vmi).is_empty()
}

/// The node's latest `FailedMount` Event among `events` (the pod's) about each volume of
/// [`secrets`], as the VMI's words: per volume, in the order of `spec.volumes`, the field,
/// the object and the node's message (kubelet's `MountVolume.SetUp failed for volume
/// "cloudinit-1-userdata" : secret "ud" not found`), joined by `; `.
pub fn mount_failure(vmi: &VirtualMachineInstance, events: &[Event]) -> Option<String> {
    let when = |e: &Event| {
        e.last_timestamp
            .as_ref()
            .map(|t| t.0)
            .or(e.event_time.as_ref().map(|t| t.0))
            .or(e.metadata.creation_timestamp.as_ref().map(|t| t.0))
    };
    let failed: Vec<String> = secrets(vmi)
        .iter()
        .filter_map(|s| {
            let latest = events
                .iter()
                .filter(|e| e.reason.as_deref() == Some("FailedMount"))
                .filter_map(|e| Some((when(e), e.message.as_deref()?)))
                .filter(|(_, m)| m.contains(&format!("\"{}\"", s.volume)))
                .max_by_key(|(t, _)| *t)?;
            Some(format!(
                "{}: {} {:?}: {}",
                s.field, s.kind, s.secret, latest.1
            ))
        })
        .collect();
    (!failed.is_empty()).then(|| failed.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vmi() -> VirtualMachineInstance {
        serde_yaml::from_str(
            r#"
metadata: {name: ci, namespace: ns1}
spec:
  domain: {devices: {}}
  volumes:
  - {name: root, containerDisk: {image: "reg/disk:1"}}
  - {name: ci, cloudInitNoCloud: {userDataSecretRef: {name: my-ud}}}
"#,
        )
        .unwrap()
    }

    fn event(reason: &str, message: &str, at: &str) -> Event {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "e"}, "involvedObject": {},
            "reason": reason, "message": message, "lastTimestamp": at
        }))
        .unwrap()
    }

    #[test]
    fn the_nodes_latest_failed_mount_of_a_secret_names_the_field_and_the_secret() {
        let v = vmi();
        let events = [
            event(
                "FailedMount",
                "MountVolume.SetUp failed for volume \"cloudinit-1-userdata\" : secret \"my-ud\" not found",
                "2026-12-03T04:00:05Z",
            ),
            event(
                "FailedMount",
                "Unable to attach or mount volumes: unmounted volumes=[cloudinit-1-userdata]: timed out",
                "2026-12-03T04:00:01Z",
            ),
            event(
                "Scheduled",
                "Successfully assigned ns1/p to node",
                "2026-12-03T04:00:09Z",
            ),
            event(
                "FailedMount",
                "MountVolume.SetUp failed for volume \"other\" : x",
                "2026-12-03T04:00:09Z",
            ),
        ];
        assert_eq!(
            mount_failure(&v, &events).as_deref(),
            Some(
                "spec.volumes[1].cloudInitNoCloud.userDataSecretRef: Secret \"my-ud\": \
                 MountVolume.SetUp failed for volume \"cloudinit-1-userdata\" : secret \"my-ud\" not found"
            )
        );
        assert_eq!(mount_failure(&v, &events[2..3]), None);

        // A ConfigMap volume waited for too: each volume's latest word, in spec order.
        let mut both = v.clone();
        both.spec
            .volumes
            .push(serde_yaml::from_str("{name: cm, configMap: {name: app-config}}").unwrap());
        let mut events = events.to_vec();
        events.push(event(
            "FailedMount",
            "MountVolume.SetUp failed for volume \"config-map-2\" : configmap \"app-config\" not found",
            "2026-12-03T04:00:02Z",
        ));
        let message = mount_failure(&both, &events).unwrap();
        assert!(
            message.starts_with(
                "spec.volumes[1].cloudInitNoCloud.userDataSecretRef: Secret \"my-ud\": "
            ) && message.ends_with(
                "; spec.volumes[2].configMap: ConfigMap \"app-config\": MountVolume.SetUp \
                 failed for volume \"config-map-2\" : configmap \"app-config\" not found"
            ),
            "{message}"
        );
    }

    #[test]
    fn only_a_pending_bound_pod_not_started_may_wait_for_a_secret() {
        let v = vmi();
        let pod = |yaml: &str| -> Pod { serde_yaml::from_str(yaml).unwrap() };
        assert!(may_wait_for_secret(
            &v,
            &pod(
                "spec: {nodeName: n, containers: []}\nstatus: {phase: Pending, containerStatuses: [{name: compute, image: i, imageID: '', ready: false, restartCount: 0, state: {waiting: {reason: ContainerCreating}}}]}"
            )
        ));
        assert!(!may_wait_for_secret(
            &v,
            &pod("spec: {containers: []}\nstatus: {phase: Pending}")
        ));
        assert!(!may_wait_for_secret(
            &v,
            &pod("spec: {nodeName: n, containers: []}\nstatus: {phase: Running}")
        ));
        let mut plain = v.clone();
        plain.spec.volumes.truncate(1);
        assert!(!may_wait_for_secret(
            &plain,
            &pod("spec: {nodeName: n, containers: []}\nstatus: {phase: Pending}")
        ));
    }
}
