//! Pod networking: virt-handler prepares the launcher pod's network namespace before the
//! domain starts (docs/networking.md). For the masquerade binding a bridge `k6t-eth0`
//! with the guest network's gateway address, a tap `tap0` for QEMU, and an nftables table
//! with KubeVirt's NAT; for the bridge binding the pod's address and MAC move to the
//! guest. The launcher's DHCP server (virt-launcher/src/dhcp/) then gives the guest its
//! address.
//!
//! For the passt binding nothing is made: libvirt starts passt in the launcher (so in the
//! pod's namespace) for the guest's NIC; only two sysctls let it, as the launcher's
//! non-root user, bind the pod's low ports and answer pings.
//!
//! [`plan`] is pure; [`netns`] and [`links`] run `ip`, `nft` and `sysctl` in the pod's
//! namespace with `nsenter`. Nothing is changed when the launcher shares our network
//! namespace (devnode): the guest then keeps QEMU's user-mode network.

mod links;
pub mod netns;
pub mod plan;
#[cfg(test)]
mod plan_tests;
pub mod status;

use std::collections::BTreeSet;
use std::path::Path;

use crds::VirtualMachineInstanceSpec;

pub use netns::NetNs;
pub use plan::{Backend, Nic, Plan, Planned, PodInterface};

use crate::{Error, Result};

/// A stable, locally administered unicast MAC for an interface without one.
pub fn mac_address(uid: &str, interface: &str) -> String {
    // FNV-1a over uid and name: stable across handler restarts, distinct per interface.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in uid.bytes().chain([0]).chain(interface.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let b = h.to_be_bytes();
    format!(
        "02:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        b[0], b[1], b[2], b[3], b[4]
    )
}

/// The pod's interface KubeVirt's pod network is on.
pub const POD_INTERFACE: &str = "eth0";
/// Where the pod's interface as first found is kept, in the VMI's directory.
pub const CACHE_FILE: &str = "pod-interface.json";

/// How the guest's interfaces are attached.
#[derive(Clone, Debug, PartialEq)]
pub enum Attachment {
    /// QEMU's user-mode network: the launcher shares the node's network namespace.
    UserMode,
    /// Taps in the pod's namespace, as planned.
    Pod(Plan),
}

impl Attachment {
    pub fn nics(&self) -> Option<&[Nic]> {
        match self {
            Attachment::UserMode => None,
            Attachment::Pod(p) => Some(&p.nics),
        }
    }
}

/// What [`prepare`] needs about the VMI and its launcher.
pub struct Target<'a> {
    pub spec: &'a VirtualMachineInstanceSpec,
    pub uid: &'a str,
    pub hostname: &'a str,
    /// The launcher's pid (in our PID namespace) and uid.
    pub pid: u32,
    pub owner: u32,
    /// The VMI's directory on the node, for [`CACHE_FILE`].
    pub vmi_dir: &'a Path,
    /// The binding plugins the cluster configuration registers.
    pub registered: &'a BTreeSet<String>,
}

/// Prepares the launcher's network namespace for the VMI's interfaces (blocking: run it
/// on a blocking thread). Idempotent: a retry removes what an interrupted attempt made.
pub fn prepare(t: &Target) -> Result<Attachment> {
    if t.spec.domain.devices.interfaces.is_empty() {
        return Ok(Attachment::UserMode);
    }
    // Each binding is one this node implements and the configuration registers, also
    // where user-mode networking stands in for it.
    for (i, iface) in t.spec.domain.devices.interfaces.iter().enumerate() {
        plan::binding(iface, i, Some(t.registered))?;
    }
    let ns = NetNs::of(t.pid);
    if ns.is_ours()? {
        tracing::info!(
            pid = t.pid,
            "the launcher shares the node's network namespace: user-mode networking"
        );
        return Ok(Attachment::UserMode);
    }
    let pod = pod_interface(&ns, t.vmi_dir)?;
    let plan = plan::plan(&plan::Input {
        spec: t.spec,
        uid: t.uid,
        hostname: t.hostname,
        pod: &pod,
        owner: t.owner,
        group: netns::gid_of(t.pid).unwrap_or(t.owner),
        registered: Some(t.registered),
    })?;
    apply(&ns, &plan)?;
    tracing::info!(pid = t.pid, pod_ip = ?pod.ipv4, nics = plan.nics.len(), "pod network prepared");
    Ok(Attachment::Pod(plan))
}

/// The passt processes the launcher starts for the plan's passt NICs, their sockets in
/// the VMI's directory as the launcher sees it (`launcher_dir`), where the domain's QEMU
/// arguments name them too.
pub fn passt(
    plan: &Plan,
    launcher_dir: &Path,
) -> Vec<ferrovirt_node_contract::protocol::PasstInterface> {
    let dir = ferrovirt_node_contract::paths::VmiDir::new(launcher_dir);
    plan.nics
        .iter()
        .filter_map(|nic| match &nic.backend {
            Backend::Passt {
                pod_interface,
                ports,
            } => Some(ferrovirt_node_contract::protocol::PasstInterface {
                interface: nic.interface.clone(),
                socket: dir.passt_socket(&nic.interface).display().to_string(),
                pod_interface: pod_interface.clone(),
                tcp: ports.tcp.clone(),
                udp: ports.udp.clone(),
            }),
            Backend::Tap(_) => None,
        })
        .collect()
}

/// Applies a plan in a namespace.
pub fn apply(ns: &NetNs, plan: &Plan) -> Result<()> {
    links::clean(ns, plan::NFT_TABLE);
    links::apply(ns, &plan.steps)?;
    if let Some(rules) = &plan.nft {
        ns.run("nft", &["-f", "-"], Some(rules))?;
    }
    Ok(())
}

/// The interfaces' status of a VMI whose pod network was prepared earlier (a handler
/// restart finds its domain running): planned again from the cached pod interface,
/// nothing changed. `None` when nothing was cached (user-mode networking).
pub fn cached_status(
    spec: &VirtualMachineInstanceSpec,
    uid: &str,
    hostname: &str,
    vmi_dir: &Path,
) -> Option<Planned> {
    let text = std::fs::read_to_string(vmi_dir.join(CACHE_FILE)).ok()?;
    let pod: PodInterface = serde_json::from_str(&text).ok()?;
    let input = plan::Input {
        spec,
        uid,
        hostname,
        pod: &pod,
        owner: 0,
        group: 0,
        // Registered when it started; the configuration may have changed since.
        registered: None,
    };
    plan::plan(&input).ok().map(|p| p.status)
}

/// The pod's interface as first seen (cached: the bridge binding takes its address).
fn pod_interface(ns: &NetNs, vmi_dir: &Path) -> Result<PodInterface> {
    let cache = vmi_dir.join(CACHE_FILE);
    if let Ok(text) = std::fs::read_to_string(&cache)
        && let Ok(pod) = serde_json::from_str(&text)
    {
        return Ok(pod);
    }
    let pod = ns.pod_interface(POD_INTERFACE)?;
    std::fs::write(&cache, serde_json::to_vec(&pod)?).map_err(Error::io("writing", &cache))?;
    Ok(pod)
}

#[cfg(test)]
mod mac_tests {
    #[test]
    fn generated_macs_are_stable_and_local() {
        let a = super::mac_address("uid-1", "default");
        assert_eq!(a, super::mac_address("uid-1", "default"));
        assert_ne!(a, super::mac_address("uid-1", "other"));
        assert!(a.starts_with("02:") && a.len() == 17, "{a}");
    }
}
