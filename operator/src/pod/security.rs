//! The launcher pod's security contexts, as KubeVirt's non-root mode renders them
//! (docs/security.md): every container runs as the `qemu` user (uid and gid 107,
//! [`LAUNCHER_UID`]), never as root, with no privilege escalation; the compute container
//! keeps only `NET_BIND_SERVICE` of its capabilities (bounding set), the disk containers
//! none; the pod asks for the runtime's default seccomp profile. The node-side half:
//! virt-handler hands each per-VMI directory and every file it prepares to uid 107.

use k8s_openapi::api::core::v1::{
    Capabilities, PodSecurityContext, SeccompProfile, SecurityContext,
};

pub use ferrovirt_node_contract::paths::{LAUNCHER_GID, LAUNCHER_UID};

/// The one capability KubeVirt's non-root compute container keeps (its DHCP server binds
/// port 67; virt-handler also opens the low ports in the pod's network namespace).
pub const COMPUTE_CAPABILITIES: &[&str] = &["NET_BIND_SERVICE"];

/// The pod's: uid, gid and fsGroup 107, non-root enforced by the node, RuntimeDefault
/// seccomp.
pub fn pod() -> PodSecurityContext {
    PodSecurityContext {
        run_as_user: Some(LAUNCHER_UID.into()),
        run_as_group: Some(LAUNCHER_GID.into()),
        run_as_non_root: Some(true),
        fs_group: Some(LAUNCHER_GID.into()),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            localhost_profile: None,
        }),
        ..Default::default()
    }
}

/// The compute container's (virt-launcher, its libvirt and QEMU).
pub fn compute() -> SecurityContext {
    container(COMPUTE_CAPABILITIES)
}

/// The compute container's for a VMI with a passt interface (docs/networking.md) or a
/// filesystem (virtiofs): passt, which the launcher starts, sandboxes itself in a user
/// namespace of its own, and so does the launcher's virtiofsd, and the runtime's default
/// seccomp profile refuses `unshare` without CAP_SYS_ADMIN (passt then exits: "Couldn't
/// create user namespace: Operation not permitted"). Only such pods run the compute
/// container without a seccomp filter; everything else stays as [`compute`].
pub fn compute_with_user_namespaces() -> SecurityContext {
    SecurityContext {
        seccomp_profile: Some(SeccompProfile {
            type_: "Unconfined".into(),
            localhost_profile: None,
        }),
        ..compute()
    }
}

/// The compute container's `sc` for a VMI whose memory is bound to host NUMA nodes
/// (`cpu.numa.guestMappingPassthrough`): libvirt's `set_mempolicy` and QEMU's `mbind` on
/// QEMU's own memory, which the kernel allows any process but the runtime's default seccomp
/// profile allows only to containers whose capabilities include `SYS_NICE`. The capability
/// is added to the bounding set only: the non-root launcher never has it effective.
/// (KubeVirt's root-mode compute container always has it.)
pub fn with_memory_policy(mut sc: SecurityContext) -> SecurityContext {
    if let Some(caps) = sc.capabilities.as_mut() {
        caps.add
            .get_or_insert_default()
            .push(MEMORY_POLICY_CAPABILITY.into());
    }
    sc
}

/// The capability [`with_memory_policy`] adds.
pub const MEMORY_POLICY_CAPABILITY: &str = "SYS_NICE";

/// The disk containers' and their init container's: no capabilities at all. The
/// launcher and QEMU may open `/proc/<pid>/root` of their processes only while these
/// have the same uid and no capability the opener lacks (ptrace read access).
pub fn disk() -> SecurityContext {
    container(&[])
}

fn container(add: &[&str]) -> SecurityContext {
    SecurityContext {
        run_as_user: Some(LAUNCHER_UID.into()),
        run_as_group: Some(LAUNCHER_GID.into()),
        run_as_non_root: Some(true),
        allow_privilege_escalation: Some(false),
        privileged: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            add: (!add.is_empty()).then(|| add.iter().map(|c| c.to_string()).collect()),
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_root_as_kubevirt_renders_it() {
        let p = pod();
        assert_eq!(
            (p.run_as_user, p.run_as_group, p.fs_group, p.run_as_non_root),
            (Some(107), Some(107), Some(107), Some(true))
        );
        assert_eq!(p.seccomp_profile.unwrap().type_, "RuntimeDefault");
        let c = compute();
        assert_eq!((c.run_as_user, c.run_as_non_root), (Some(107), Some(true)));
        assert_eq!(c.allow_privilege_escalation, Some(false));
        let caps = c.capabilities.unwrap();
        assert_eq!(caps.drop.unwrap(), ["ALL"]);
        assert_eq!(caps.add.unwrap(), ["NET_BIND_SERVICE"]);
        let d = disk();
        assert_eq!(d.run_as_user, Some(107));
        assert_eq!(d.capabilities.unwrap().add, None);
        let numa = with_memory_policy(compute()).capabilities.unwrap();
        assert_eq!(numa.add.unwrap(), ["NET_BIND_SERVICE", "SYS_NICE"]);
        assert_eq!(numa.drop.unwrap(), ["ALL"]);
    }
}
