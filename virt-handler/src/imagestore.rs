//! The node's image store (docs/contracts.md "Image store"): an image reference maps to
//! `<store>/<reference with '/' and ':' replaced by '_'>/`, laid out as the image is.

use std::path::PathBuf;

use crate::{Error, Result};

#[derive(Clone, Debug)]
pub struct ImageStore {
    pub root: PathBuf,
}

/// `quay.io/kubevirt/cirros:v1` -> `quay.io_kubevirt_cirros_v1`; no tag means `:latest`.
pub fn escape(reference: &str) -> String {
    let last = reference.rsplit('/').next().unwrap_or(reference);
    let full = if last.contains(':') || reference.contains('@') {
        reference.to_owned()
    } else {
        format!("{reference}:latest")
    };
    full.replace(['/', ':'], "_")
}

impl ImageStore {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        ImageStore { root: root.into() }
    }

    /// Where the image's files are (whether or not it exists).
    pub fn dir(&self, reference: &str) -> PathBuf {
        self.root.join(escape(reference))
    }

    /// A file named by an absolute path inside the image.
    pub fn file(&self, reference: &str, path_in_image: &str) -> PathBuf {
        self.dir(reference)
            .join(path_in_image.trim_start_matches('/'))
    }

    /// The disk image of a containerDisk: `path` in the image, or the one file under
    /// `/disk/`. Reads the file system.
    pub fn container_disk(&self, reference: &str, path: Option<&str>) -> Result<PathBuf> {
        let dir = self.dir(reference);
        if !dir.is_dir() {
            return Err(Error::ImageNotFound {
                image: reference.to_owned(),
                store: self.root.clone(),
            });
        }
        if let Some(path) = path {
            let file = self.file(reference, path);
            return if file.is_file() {
                Ok(file)
            } else {
                Err(Error::volume(
                    "containerDisk",
                    format!("{path} is not a file in image {reference}"),
                ))
            };
        }
        let disk = dir.join("disk");
        let mut files: Vec<PathBuf> = std::fs::read_dir(&disk)
            .map_err(Error::io("reading", &disk))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        match files.len() {
            1 => Ok(files.remove(0)),
            n => Err(Error::volume(
                "containerDisk",
                format!("image {reference} has {n} files under /disk/, expected one (set path)"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_references_as_the_contract_says() {
        assert_eq!(
            escape("quay.io/kubevirt/cirros-container-disk-demo"),
            "quay.io_kubevirt_cirros-container-disk-demo_latest"
        );
        assert_eq!(
            escape("registry:5000/kubevirt/alpine:devel"),
            "registry_5000_kubevirt_alpine_devel"
        );
        assert_eq!(
            escape("registry:5000/kubevirt/alpine"),
            "registry_5000_kubevirt_alpine_latest"
        );
        assert_eq!(
            escape("ferrovirt/guest-kernel:latest"),
            "ferrovirt_guest-kernel_latest"
        );
    }

    #[test]
    fn finds_the_one_disk_file() {
        let root = tempfile::tempdir().unwrap();
        let store = ImageStore::new(root.path());
        let disk = store.dir("img:1").join("disk");
        std::fs::create_dir_all(&disk).unwrap();
        std::fs::write(disk.join("a.qcow2"), b"").unwrap();
        assert_eq!(
            store.container_disk("img:1", None).unwrap(),
            disk.join("a.qcow2")
        );
        assert_eq!(
            store
                .container_disk("img:1", Some("/disk/a.qcow2"))
                .unwrap(),
            disk.join("a.qcow2")
        );
        std::fs::write(disk.join("b.qcow2"), b"").unwrap();
        assert!(store.container_disk("img:1", None).is_err());
        assert!(matches!(
            store.container_disk("other", None),
            Err(Error::ImageNotFound { .. })
        ));
    }
}
