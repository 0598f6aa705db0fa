//! The image store (docs/contracts.md, "Image store"): containerDisk and kernel-boot images
//! unpacked as directories on a host, for devnode (which has no container runtime and
//! serves them through its stand-in disk containers) and for tests that run a launcher
//! on the host. `hack/build-guest-images.sh` fills it; `hack/build-images.sh` makes OCI
//! images of it for a real node.

/// The directory name of an image reference in the store: `quay.io/kubevirt/cirros:v1`
/// -> `quay.io_kubevirt_cirros_v1`; no tag means `:latest`.
pub fn dir_name(reference: &str) -> String {
    let last = reference.rsplit('/').next().unwrap_or(reference);
    let full = if last.contains(':') || reference.contains('@') {
        reference.to_owned()
    } else {
        format!("{reference}:latest")
    };
    full.replace(['/', ':'], "_")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_references_as_the_contract_says() {
        assert_eq!(
            dir_name("quay.io/kubevirt/cirros-container-disk-demo"),
            "quay.io_kubevirt_cirros-container-disk-demo_latest"
        );
        assert_eq!(
            dir_name("registry:5000/kubevirt/alpine:devel"),
            "registry_5000_kubevirt_alpine_devel"
        );
        assert_eq!(
            dir_name("registry:5000/kubevirt/alpine"),
            "registry_5000_kubevirt_alpine_latest"
        );
        assert_eq!(
            dir_name("ferrovirt/guest-kernel:latest"),
            "ferrovirt_guest-kernel_latest"
        );
    }
}
