//! configMap, secret, serviceAccount and downwardAPI volumes: their files, read where the
//! launcher pod has them (node-contract's [`ConfigVolume::dir_in_pod`]), become an ISO
//! 9660 disk labelled as KubeVirt labels it (`volumeLabel`, else `cfgdata`). The disk is
//! made when the domain is prepared: later changes of the ConfigMap or Secret do not
//! reach a running guest (KubeVirt's ISO disks do not change either).

use std::fs::File;
use std::path::Path;

use crds::ConfigVolumeSource;
use ferrovirt_node_contract::paths::ConfigVolume;

use super::launcher_root::{SECRET_MAX_BYTES, read_tree};
use crate::{Error, Result};

/// The kind of a config volume's source.
pub fn kind(source: ConfigVolumeSource<'_>) -> ConfigVolume {
    match source {
        ConfigVolumeSource::ConfigMap(_) => ConfigVolume::ConfigMap,
        ConfigVolumeSource::Secret(_) => ConfigVolume::Secret,
        ConfigVolumeSource::ServiceAccount(_) => ConfigVolume::ServiceAccount,
        ConfigVolumeSource::DownwardApi(_) => ConfigVolume::DownwardApi,
    }
}

/// The files of the config volume `volume` (at `index` in `spec.volumes`), each with its
/// path in the volume, read through `launcher_root` (the launcher's `/proc/<pid>/root`).
pub fn read_files(
    volume: &str,
    index: usize,
    kind: ConfigVolume,
    launcher_root: Option<&Path>,
) -> Result<Vec<(String, Vec<u8>)>> {
    let field = format!("spec.volumes[{index}].{}", kind.field());
    let fail = |m: String| Error::volume(volume, format!("{field}: {m}"));
    let root = launcher_root.ok_or_else(|| {
        fail(
            "the launcher's files are not visible from virt-handler (it needs the host's PID \
             namespace) to read the volume"
                .into(),
        )
    })?;
    let root_dir = File::open(root).map_err(|e| fail(format!("{}: {e}", root.display())))?;
    let files = read_tree(&root_dir, &kind.dir_in_pod(index), SECRET_MAX_BYTES).map_err(fail)?;
    tracing::info!(
        volume,
        files = files.len(),
        bytes = files.iter().map(|f| f.1.len()).sum::<usize>(),
        "read a config volume in the launcher pod"
    );
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_volume_virt_handler_cannot_see_is_named_with_its_field() {
        let err = read_files("cm", 2, ConfigVolume::ConfigMap, None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("spec.volumes[2].configMap") && err.contains("PID namespace"),
            "{err}"
        );
        let tree = tempfile::tempdir().unwrap();
        let err = read_files("sa", 0, ConfigVolume::ServiceAccount, Some(tree.path()))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("spec.volumes[0].serviceAccount")
                && err.contains("/var/run/secrets/kubernetes.io/serviceaccount"),
            "{err}"
        );
    }
}
