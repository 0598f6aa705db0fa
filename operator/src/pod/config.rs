//! configMap, secret, serviceAccount and downwardAPI volumes, as KubeVirt gives them to
//! its launcher pod: a pod volume of the same kind per VMI volume, mounted read-only in
//! the compute container at node-contract's [`ConfigVolume::dir_in_pod`]; a
//! serviceAccount volume makes the pod run as that ServiceAccount, with its token mounted
//! (only then: every other launcher pod has `automountServiceAccountToken: false`).
//! virt-handler reads the files through the launcher's `/proc/<pid>/root` and writes them
//! into the disk the guest sees (docs/contracts.md). The node mounts them with its own
//! rights, as for any pod, and the pod does not start until a ConfigMap or Secret that is
//! not `optional` exists (the node's FailedMount Events name it, [`super::cloudinit`]).

use crds::{ConfigVolumeSource, VirtualMachineInstance};
use k8s_openapi::api::core::v1::{
    ConfigMapVolumeSource, DownwardAPIVolumeSource, SecretVolumeSource, Volume, VolumeMount,
};

use ferrovirt_node_contract::paths::ConfigVolume;

use super::cloudinit::PodSecret;

/// The launcher pod's part of a VMI's config volumes.
#[derive(Debug, Default)]
pub struct Rendered {
    pub volumes: Vec<Volume>,
    pub mounts: Vec<VolumeMount>,
    /// The ServiceAccount of a serviceAccount volume: the pod's `serviceAccountName`.
    pub service_account: Option<String>,
}

pub fn render(vmi: &VirtualMachineInstance) -> Rendered {
    let mut out = Rendered::default();
    for (i, v) in vmi.spec.volumes.iter().enumerate() {
        let Some(source) = v.config_source() else {
            continue;
        };
        let (kind, source) = match source {
            ConfigVolumeSource::ConfigMap(c) => (
                ConfigVolume::ConfigMap,
                Volume {
                    config_map: Some(ConfigMapVolumeSource {
                        name: c.name.clone(),
                        optional: c.optional,
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            ),
            ConfigVolumeSource::Secret(s) => (
                ConfigVolume::Secret,
                Volume {
                    secret: Some(SecretVolumeSource {
                        secret_name: Some(s.secret_name.clone()),
                        optional: s.optional,
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            ),
            ConfigVolumeSource::DownwardApi(d) => (
                ConfigVolume::DownwardApi,
                Volume {
                    downward_api: Some(DownwardAPIVolumeSource {
                        items: Some(d.fields.clone()),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            ),
            ConfigVolumeSource::ServiceAccount(sa) => {
                out.service_account = Some(sa.service_account_name.clone());
                continue;
            }
        };
        let name = kind.pod_volume(i).expect("a pod volume of its own");
        out.volumes.push(Volume {
            name: name.clone(),
            ..source
        });
        out.mounts.push(VolumeMount {
            name,
            mount_path: kind.dir_in_pod(i),
            read_only: Some(true),
            ..Default::default()
        });
    }
    out
}

/// The ConfigMaps and Secrets of config volumes that the pod needs to start (not
/// `optional`).
pub fn required_objects(vmi: &VirtualMachineInstance) -> Vec<PodSecret> {
    let mut out = Vec::new();
    for (i, v) in vmi.spec.volumes.iter().enumerate() {
        let (kind, object, name, optional) = match v.config_source() {
            Some(ConfigVolumeSource::ConfigMap(c)) => {
                (ConfigVolume::ConfigMap, "ConfigMap", &c.name, c.optional)
            }
            Some(ConfigVolumeSource::Secret(s)) => {
                (ConfigVolume::Secret, "Secret", &s.secret_name, s.optional)
            }
            _ => continue,
        };
        if optional == Some(true) {
            continue;
        }
        out.push(PodSecret {
            volume: kind.pod_volume(i).expect("a pod volume of its own"),
            field: format!("spec.volumes[{i}].{}", kind.field()),
            kind: object,
            secret: name.clone(),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_config_volume_is_a_pod_volume_of_its_kind_mounted_read_only() {
        let vmi: VirtualMachineInstance = serde_yaml::from_str(
            r#"
metadata: {name: cfg, namespace: ns1}
spec:
  domain: {devices: {}}
  volumes:
  - {name: root, containerDisk: {image: "reg/disk:1"}}
  - {name: cm, configMap: {name: app-config, volumeLabel: APPCFG}}
  - {name: sec, secret: {secretName: app-secret, optional: true}}
  - {name: sa, serviceAccount: {serviceAccountName: robot}}
  - name: labels
    downwardAPI:
      fields:
      - {path: labels, fieldRef: {fieldPath: metadata.labels}}
"#,
        )
        .unwrap();
        let r = render(&vmi);
        assert_eq!(r.service_account.as_deref(), Some("robot"));
        let names: Vec<_> = r.volumes.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(names, ["config-map-1", "secret-2", "downwardapi-4"]);
        assert_eq!(r.volumes[0].config_map.as_ref().unwrap().name, "app-config");
        assert_eq!(r.volumes[1].secret.as_ref().unwrap().optional, Some(true));
        let items = r.volumes[2].downward_api.as_ref().unwrap().items.as_ref();
        assert_eq!(
            items.unwrap()[0].field_ref.as_ref().unwrap().field_path,
            "metadata.labels"
        );
        let mounts: Vec<_> = r
            .mounts
            .iter()
            .map(|m| (m.mount_path.as_str(), m.read_only))
            .collect();
        assert_eq!(
            mounts,
            [
                ("/var/run/ferrovirt-private/config-map/1", Some(true)),
                ("/var/run/ferrovirt-private/secret/2", Some(true)),
                ("/var/run/ferrovirt-private/downwardapi/4", Some(true)),
            ]
        );
        // The optional Secret does not hold the pod back; the ConfigMap does.
        let required = required_objects(&vmi);
        assert_eq!(required.len(), 1);
        assert_eq!(
            (
                required[0].volume.as_str(),
                required[0].field.as_str(),
                required[0].kind
            ),
            ("config-map-1", "spec.volumes[1].configMap", "ConfigMap")
        );
    }
}
