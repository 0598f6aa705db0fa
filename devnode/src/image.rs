//! How a container image and command become a host executable and its argv.
//!
//! An image that is a directory of the image store (`--image-store`: the reference with
//! '/' and ':' as '_', `:latest` when untagged) is a containerDisk or kernel-boot image:
//! devnode runs only `container-disk` in it, itself (see [`crate::containerdisk`]).
//! Otherwise `ferrovirt/virt-launcher:dev` (with the default prefix) runs
//! `<bin-dir>/virt-launcher`. A container `command` replaces that entrypoint: an absolute
//! `command[0]` runs that host binary as is (e.g. `/bin/sh`), any other is looked up in
//! bin-dir. `args` follow.

use crate::{Error, Result};
use k8s_openapi::api::core::v1::Container;
use std::path::{Path, PathBuf};

/// The image's repository, without tag or digest.
pub fn repository(image: &str) -> &str {
    let no_digest = image.split('@').next().unwrap_or(image);
    match no_digest.rfind(':') {
        Some(i) if !no_digest[i..].contains('/') => &no_digest[..i],
        _ => no_digest,
    }
}

/// What an image is to devnode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// A Ferrovirt binary of bin-dir.
    Binary(String),
    /// A directory of the image store: the image's file tree.
    Store(PathBuf),
}

/// The store's directory name of an image reference (docs/contracts.md, "Image store").
pub use ferrovirt_node_contract::imagestore::dir_name as store_name;

/// The image store first, then the binary prefix; neither is kubelet's ErrImagePull, with
/// a message naming the image.
pub fn resolve(image: &str, prefix: &str, store: &Path) -> Result<Source> {
    let dir = store.join(store_name(image));
    if !image.is_empty() && dir.is_dir() {
        return Ok(Source::Store(dir));
    }
    binary_for_image(image, prefix)
        .map(Source::Binary)
        .map_err(|e| {
            Error::Image(format!(
                "{e}; nor is it in the image store {} (hack/build-guest-images.sh)",
                store.display()
            ))
        })
}

/// The binary an image runs: the last path segment of its repository, if the repository
/// starts with the prefix.
pub fn binary_for_image(image: &str, prefix: &str) -> Result<String> {
    let repo = repository(image);
    let name = repo.rsplit('/').next().unwrap_or(repo);
    if !repo.starts_with(prefix) || name.is_empty() {
        return Err(Error::Image(format!(
            "devnode runs only images whose repository starts with {prefix:?} (as host binaries from its bin-dir); {image:?} is not one"
        )));
    }
    Ok(name.to_string())
}

/// The executable and argv of a container, before `$(VAR)` expansion.
pub fn command(c: &Container, image_binary: &str, bin_dir: &Path) -> (PathBuf, Vec<String>) {
    let args = c.args.clone().unwrap_or_default();
    match c.command.as_deref() {
        Some([first, rest @ ..]) => {
            let path = if Path::new(first).is_absolute() {
                PathBuf::from(first)
            } else {
                bin_dir.join(first)
            };
            let mut argv = vec![first.clone()];
            argv.extend(rest.iter().cloned());
            argv.extend(args);
            (path, argv)
        }
        _ => {
            let path = bin_dir.join(image_binary);
            let mut argv = vec![path.to_string_lossy().into_owned()];
            argv.extend(args);
            (path, argv)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_maps_to_last_segment() {
        assert_eq!(
            binary_for_image("ferrovirt/virt-launcher:dev", "ferrovirt/").unwrap(),
            "virt-launcher"
        );
        assert_eq!(
            binary_for_image("ferrovirt/virt-handler", "ferrovirt/").unwrap(),
            "virt-handler"
        );
        assert_eq!(
            binary_for_image("ferrovirt/x/y:1@sha256:ab", "ferrovirt/").unwrap(),
            "y"
        );
        assert_eq!(
            binary_for_image("localhost:5000/ferrovirt/a:v", "localhost:5000/ferrovirt/").unwrap(),
            "a"
        );
    }

    #[test]
    fn other_images_are_refused_with_the_prefix_named() {
        let e = binary_for_image("quay.io/kubevirt/virt-launcher:v1", "ferrovirt/").unwrap_err();
        assert!(e.to_string().contains("\"ferrovirt/\""), "{e}");
        assert!(binary_for_image("busybox", "ferrovirt/").is_err());
    }

    #[test]
    fn store_images_come_first_and_names_escape_as_the_store_does() {
        assert_eq!(
            store_name("quay.io/kubevirt/cirros-container-disk-demo"),
            "quay.io_kubevirt_cirros-container-disk-demo_latest"
        );
        assert_eq!(
            store_name("registry:5000/kubevirt/alpine:devel"),
            "registry_5000_kubevirt_alpine_devel"
        );
        let store = tempfile::tempdir().unwrap();
        std::fs::create_dir(store.path().join("ferrovirt_guest-kernel_latest")).unwrap();
        assert_eq!(
            resolve("ferrovirt/guest-kernel:latest", "ferrovirt/", store.path()).unwrap(),
            Source::Store(store.path().join("ferrovirt_guest-kernel_latest"))
        );
        assert_eq!(
            resolve("ferrovirt/virt-launcher:dev", "ferrovirt/", store.path()).unwrap(),
            Source::Binary("virt-launcher".into())
        );
        let e = resolve("example.org/missing/disk:1", "ferrovirt/", store.path())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("example.org/missing/disk:1") && e.contains("image store"),
            "{e}"
        );
    }

    #[test]
    fn repository_strips_tag_but_not_port() {
        assert_eq!(repository("reg:5000/a/b"), "reg:5000/a/b");
        assert_eq!(repository("reg:5000/a/b:t"), "reg:5000/a/b");
    }

    fn container(command: Option<&[&str]>, args: &[&str]) -> Container {
        Container {
            name: "c".into(),
            command: command.map(|c| c.iter().map(|s| s.to_string()).collect()),
            args: Some(args.iter().map(|s| s.to_string()).collect()),
            ..Default::default()
        }
    }

    #[test]
    fn command_resolution() {
        let bin = Path::new("/opt/bin");
        let (p, argv) = command(&container(None, &["--x"]), "virt-launcher", bin);
        assert_eq!(p, Path::new("/opt/bin/virt-launcher"));
        assert_eq!(argv, ["/opt/bin/virt-launcher", "--x"]);
        let (p, argv) = command(
            &container(Some(&["virt-launcher", "-v"]), &["--y"]),
            "ignored",
            bin,
        );
        assert_eq!(p, Path::new("/opt/bin/virt-launcher"));
        assert_eq!(argv, ["virt-launcher", "-v", "--y"]);
        let (p, argv) = command(&container(Some(&["/bin/sh", "-c"]), &["exit 3"]), "x", bin);
        assert_eq!(p, Path::new("/bin/sh"));
        assert_eq!(argv, ["/bin/sh", "-c", "exit 3"]);
    }
}
