//! `spec.domain.devices.filesystems` as KubeVirt converts them: a virtiofs `<filesystem>`
//! per shared volume, its vhost-user socket the one the launcher's virtiofsd listens on
//! (`volumes::virtiofs`), its tag the volume's name. vhost-user needs the guest's memory
//! shared with virtiofsd: the domain's memory then comes from a shared memfd
//! ([`super::memory_backing`]).

use std::path::Path;

use crds::Filesystem;
use ferrovirt_node_contract::paths::VmiDir;

use super::xml::Xml;

/// KubeVirt's queue size for the virtiofs device.
const QUEUE_SIZE: &str = "1024";

/// The `<filesystem>` elements; `vmi_dir` as the launcher sees it.
pub fn filesystems(x: &mut Xml, filesystems: &[Filesystem], vmi_dir: &Path) {
    let dir = VmiDir::new(vmi_dir);
    for fs in filesystems {
        x.open(
            "filesystem",
            &[("type", "mount"), ("accessmode", "passthrough")],
        );
        x.empty("driver", &[("type", "virtiofs"), ("queue", QUEUE_SIZE)]);
        x.empty(
            "source",
            &[(
                "socket",
                &dir.virtiofs_socket(&fs.name).display().to_string(),
            )],
        );
        x.empty("target", &[("dir", &fs.name)]);
        x.close();
    }
}
