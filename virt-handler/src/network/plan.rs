//! The pure part: a VMI's interfaces and the pod's interface in, the links, NAT rules,
//! DHCP offers, domain NICs and status entries out. Applied by [`super::apply`].

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, Ipv6Addr};

use crds::{
    InterfaceModel, Protocol, VirtualMachineInstanceNetworkInterface, VirtualMachineInstanceSpec,
};
use ferrovirt_node_contract::protocol::DhcpInterface;
use serde::{Deserialize, Serialize};

use super::mac_address;
use crate::{Error, Result};

/// The bridge and the tap of the (one) pod-network interface, KubeVirt's names.
pub const BRIDGE: &str = "k6t-eth0";
pub const TAP: &str = "tap0";
/// The nftables table masquerade adds (family ip, and ip6 where the pod has IPv6).
pub const NFT_TABLE: &str = "ferrovirt_nat";
/// KubeVirt's default guest network for masquerade.
pub const DEFAULT_VM_CIDR: &str = "10.0.2.0/24";
/// KubeVirt's guest IPv6 network for masquerade (`vmIPv6NetworkCIDR`'s default; the field
/// itself is not in Ferrovirt's schema): the bridge has the first address, the guest the
/// second.
pub const DEFAULT_VM_CIDR6: &str = "fd10:0:2::/120";
/// The bridge's own address with the bridge binding: link-local, so the pod's routes do not
/// change; the DHCP server answers from it (KubeVirt uses the same idea).
pub const BRIDGE_BINDING_SERVER: &str = "169.254.75.10";
/// A tap's most queues (the kernel's), KubeVirt's cap on virtio-net queue pairs.
const MULTI_QUEUE_MAX: u32 = 256;

/// The pod's interface as found before anything changed (cached in the VMI directory,
/// since the bridge binding takes its address away).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodInterface {
    pub name: String,
    pub mac: String,
    pub mtu: u16,
    /// The IPv4 address and prefix length.
    pub ipv4: Option<(Ipv4Addr, u8)>,
    /// Other addresses (IPv6), as text, for status only.
    #[serde(default)]
    pub other_ips: Vec<String>,
    pub gateway4: Option<Ipv4Addr>,
}

/// One change to the pod's network namespace, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    Sysctl {
        key: String,
        value: String,
    },
    /// Drops every address of a link (the bridge binding moves the pod's to the guest).
    FlushAddresses {
        dev: String,
    },
    LinkDown {
        dev: String,
    },
    SetMac {
        dev: String,
        mac: String,
    },
    Bridge {
        name: String,
        mtu: u16,
    },
    Address {
        dev: String,
        cidr: String,
    },
    /// A tap the launcher's QEMU (running as `owner`) opens by name.
    Tap {
        name: String,
        owner: u32,
        mtu: u16,
        /// Made with several queues (`multi_queue`), one per guest queue pair.
        multi_queue: bool,
    },
    Enslave {
        dev: String,
        bridge: String,
    },
    LinkUp {
        dev: String,
    },
}

/// A guest NIC in the pod's namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Nic {
    pub interface: String,
    pub mac: String,
    pub backend: Backend,
    /// virtio-net queue pairs (`networkInterfaceMultiqueue`): one per vCPU.
    pub queues: Option<u32>,
}

/// What a guest NIC is attached to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Backend {
    /// A tap the plan's steps make (masquerade, bridge).
    Tap(String),
    /// passt, which libvirt starts in the pod's namespace (the launcher's) for the NIC:
    /// it copies the pod interface's address, routes and DNS to the guest by its own
    /// DHCP, and forwards the pod's ports to it (all when `ports` is empty).
    Passt { pod_interface: String, ports: Ports },
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    pub steps: Vec<Step>,
    /// An nftables script (`nft -f -`), when NAT is needed.
    pub nft: Option<String>,
    pub nics: Vec<Nic>,
    pub dhcp: Vec<DhcpInterface>,
    pub status: Planned,
}

/// The status entries of the pod-network interfaces, and which of them show their
/// addresses only once the launcher's DHCP server has a lease for the guest
/// ([`super::status`]); the others (passt, whose own DHCP server gives the guest the
/// pod's address) show them from the start, as KubeVirt does.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Planned {
    pub entries: Vec<VirtualMachineInstanceNetworkInterface>,
    pub by_dhcp: BTreeSet<String>,
}

/// The binding an interface asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Binding {
    Masquerade,
    Bridge,
    Passt,
}

/// The binding plugin name Ferrovirt implements (as `passtBinding`).
pub const PASST_PLUGIN: &str = "passt";

/// The binding of interface `i` (`field` names its fields): exactly one of masquerade,
/// bridge, passtBinding, or a binding plugin registered in the cluster configuration
/// (`registered`; `None`: not checked, for a plan made again after a handler restart).
pub fn binding(
    iface: &crds::Interface,
    i: usize,
    registered: Option<&BTreeSet<String>>,
) -> Result<Binding> {
    let field = |f: &str| format!("spec.domain.devices.interfaces[{i}].{f}");
    let set = [
        iface.masquerade.is_some(),
        iface.bridge.is_some(),
        iface.passt_binding.is_some(),
        iface.binding.is_some(),
    ];
    if set.iter().filter(|b| **b).count() != 1 {
        return Err(Error::unsupported(
            field("name"),
            format!(
                "logical {} interface must have exactly one binding method or binding plugin",
                iface.name
            ),
        ));
    }
    if let Some(plugin) = &iface.binding {
        if registered.is_some_and(|r| !r.contains(&plugin.name)) {
            return Err(Error::unsupported(
                field("binding.name"),
                format!(
                    "couldn't find configuration for network binding: {} (register it in the \
                     kubevirt-config ConfigMap's {} list)",
                    plugin.name,
                    crate::config::NETWORK_BINDINGS
                ),
            ));
        }
        if plugin.name != PASST_PLUGIN {
            return Err(Error::unsupported(
                field("binding.name"),
                format!(
                    "network binding plugin {:?} is not implemented: Ferrovirt implements {PASST_PLUGIN:?}",
                    plugin.name
                ),
            ));
        }
        return Ok(Binding::Passt);
    }
    Ok(if iface.masquerade.is_some() {
        Binding::Masquerade
    } else if iface.bridge.is_some() {
        Binding::Bridge
    } else {
        Binding::Passt
    })
}

pub struct Input<'a> {
    pub spec: &'a VirtualMachineInstanceSpec,
    pub uid: &'a str,
    /// The guest's hostname (spec.hostname, else the VMI's name), offered by DHCP.
    pub hostname: &'a str,
    pub pod: &'a PodInterface,
    /// The launcher's uid: owner of the tap.
    pub owner: u32,
    /// The launcher's gid: passt (running as the launcher) answers the guest's pings
    /// with ping sockets, which the pod's `ping_group_range` must allow it.
    pub group: u32,
    /// The binding plugins the cluster configuration registers; `None`: not checked.
    pub registered: Option<&'a BTreeSet<String>>,
}

/// The plan for the VMI's pod-network interface (KubeVirt allows one).
pub fn plan(input: &Input) -> Result<Plan> {
    let spec = input.spec;
    let mut out = Plan::default();
    for (i, iface) in spec.domain.devices.interfaces.iter().enumerate() {
        let field = |f: &str| format!("spec.domain.devices.interfaces[{i}].{f}");
        let (net_index, network) = spec
            .networks
            .iter()
            .enumerate()
            .find(|(_, n)| n.name == iface.name)
            .ok_or_else(|| {
                Error::unsupported(field("name"), format!("no network named {:?}", iface.name))
            })?;
        let Some(pod_net) = &network.pod else {
            return Err(Error::unsupported(
                format!("spec.networks[{net_index}]"),
                "only the pod network is supported",
            ));
        };
        if !out.nics.is_empty() {
            return Err(Error::unsupported(
                field("name"),
                "only one interface may use the pod network",
            ));
        }
        let hostname = Some(input.hostname.to_owned()).filter(|h| !h.is_empty());
        let pod = input.pod;
        let pod_ip = pod.ipv4.ok_or_else(|| {
            Error::unsupported(
                field("name"),
                format!("the pod's {} has no IPv4 address", pod.name),
            )
        })?;
        let mut ips = vec![pod_ip.0.to_string()];
        ips.extend(pod.other_ips.iter().cloned());
        // KubeVirt's virtio-net multi-queue: a queue pair per vCPU, at most a tap's 256,
        // for virtio NICs (the other models have one queue).
        let queues = (spec.domain.devices.network_interface_multiqueue == Some(true)
            && iface.model.unwrap_or(InterfaceModel::Virtio) == InterfaceModel::Virtio)
            .then(|| spec.domain.vcpus().min(MULTI_QUEUE_MAX));
        let dhcp = match binding(iface, i, input.registered)? {
            Binding::Masquerade => {
                let mac = guest_mac(iface.mac_address.as_deref(), input.uid, &iface.name);
                let cidr = pod_net
                    .vm_network_cidr
                    .as_deref()
                    .unwrap_or(DEFAULT_VM_CIDR);
                let (gateway, guest, prefix) = vm_network(cidr).ok_or_else(|| {
                    Error::unsupported(
                        format!("spec.networks[{net_index}].pod.vmNetworkCIDR"),
                        format!("{cidr:?} is not an IPv4 network with room for two hosts"),
                    )
                })?;
                out.steps.extend([
                    sysctl("net.ipv4.ip_forward", "1"),
                    // The output chain DNATs 127.0.0.1 (kubectl port-forward) to the guest.
                    sysctl("net.ipv4.conf.all.route_localnet", "1"),
                    Step::Bridge {
                        name: BRIDGE.into(),
                        mtu: pod.mtu,
                    },
                    Step::Address {
                        dev: BRIDGE.into(),
                        cidr: format!("{gateway}/{prefix}"),
                    },
                    Step::Tap {
                        name: TAP.into(),
                        owner: input.owner,
                        mtu: pod.mtu,
                        multi_queue: queues.is_some_and(|q| q > 1),
                    },
                    Step::Enslave {
                        dev: TAP.into(),
                        bridge: BRIDGE.into(),
                    },
                    Step::LinkUp { dev: TAP.into() },
                    Step::LinkUp { dev: BRIDGE.into() },
                ]);
                let ports = ports(iface, i)?;
                let mut script = nft(&pod.name, guest, gateway, &ports);
                // IPv6 where the pod has it, as KubeVirt: the bridge gets fd10:0:2::1/120,
                // the guest fd10:0:2::2 by DHCPv6, NAT66 with the same ports.
                let ipv6 = (!pod.other_ips.is_empty()).then(vm_network6);
                if let Some((gateway6, guest6, prefix6)) = ipv6 {
                    out.steps.extend([
                        sysctl("net.ipv6.conf.all.forwarding", "1"),
                        // The bridge's addresses are usable at once (the DHCPv6 server
                        // answers from its link-local one before the guest's link is up).
                        sysctl(&format!("net.ipv6.conf.{BRIDGE}.accept_dad"), "0"),
                    ]);
                    // After the bridge exists (its sysctl) and before it is up.
                    let at = out
                        .steps
                        .iter()
                        .position(|s| matches!(s, Step::LinkUp { dev } if dev == BRIDGE))
                        .unwrap_or(out.steps.len());
                    out.steps.insert(
                        at,
                        Step::Address {
                            dev: BRIDGE.into(),
                            cidr: format!("{gateway6}/{prefix6}"),
                        },
                    );
                    script.push_str(&nft6(&pod.name, guest6, gateway6, &ports));
                }
                out.nft = Some(script);
                DhcpInterface {
                    interface: iface.name.clone(),
                    bridge: BRIDGE.into(),
                    server_ip: gateway.to_string(),
                    mac,
                    ip: guest.to_string(),
                    prefix,
                    router: Some(gateway.to_string()),
                    mtu: Some(pod.mtu),
                    hostname,
                    ipv6: ipv6.map(|(_, guest6, _)| guest6.to_string()),
                }
            }
            Binding::Bridge => {
                // The guest gets the pod's IPv4 address only (DHCP; KubeVirt's bridge
                // binding gives it no IPv6 one either): only that one is reported.
                ips.truncate(1);
                if !iface.ports.is_empty() {
                    return Err(Error::unsupported(
                        field("ports"),
                        "ports are only forwarded with the masquerade binding (a bridged guest has the pod's address and gets every port)",
                    ));
                }
                // The guest takes the pod's MAC (unless the spec names one) and address;
                // the pod's link gets another MAC so the bridge does not own the guest's.
                let mac = match &iface.mac_address {
                    Some(m) => normalize_mac(m),
                    None => pod.mac.to_ascii_lowercase(),
                };
                let pod_link_mac = mac_address(input.uid, &format!("{}/pod", iface.name));
                out.steps.extend([
                    Step::FlushAddresses {
                        dev: pod.name.clone(),
                    },
                    Step::LinkDown {
                        dev: pod.name.clone(),
                    },
                    Step::SetMac {
                        dev: pod.name.clone(),
                        mac: pod_link_mac,
                    },
                    Step::Bridge {
                        name: BRIDGE.into(),
                        mtu: pod.mtu,
                    },
                    Step::Address {
                        dev: BRIDGE.into(),
                        cidr: format!("{BRIDGE_BINDING_SERVER}/32"),
                    },
                    Step::Enslave {
                        dev: pod.name.clone(),
                        bridge: BRIDGE.into(),
                    },
                    Step::Tap {
                        name: TAP.into(),
                        owner: input.owner,
                        mtu: pod.mtu,
                        multi_queue: queues.is_some_and(|q| q > 1),
                    },
                    Step::Enslave {
                        dev: TAP.into(),
                        bridge: BRIDGE.into(),
                    },
                    Step::LinkUp {
                        dev: pod.name.clone(),
                    },
                    Step::LinkUp { dev: TAP.into() },
                    Step::LinkUp { dev: BRIDGE.into() },
                ]);
                DhcpInterface {
                    interface: iface.name.clone(),
                    bridge: BRIDGE.into(),
                    server_ip: BRIDGE_BINDING_SERVER.into(),
                    mac,
                    ip: pod_ip.0.to_string(),
                    prefix: pod_ip.1,
                    router: pod.gateway4.map(|g| g.to_string()),
                    mtu: Some(pod.mtu),
                    hostname,
                    ipv6: None,
                }
            }
            Binding::Passt => {
                if queues.is_some() {
                    return Err(Error::unsupported(
                        "spec.domain.devices.networkInterfaceMultiqueue",
                        format!(
                            "interface {} uses passt, which has one queue: multi-queue needs \
                             a tap (the bridge or masquerade binding)",
                            iface.name
                        ),
                    ));
                }
                let mac = guest_mac(iface.mac_address.as_deref(), input.uid, &iface.name);
                // passt, running as the launcher's user, answers the guest's pings from
                // the pod with ping sockets (KubeVirt's passt binding sets the same).
                out.steps.push(sysctl(
                    "net.ipv4.ping_group_range",
                    &format!("{} {}", input.group, input.group),
                ));
                out.nics.push(Nic {
                    interface: iface.name.clone(),
                    mac: mac.clone(),
                    backend: Backend::Passt {
                        pod_interface: pod.name.clone(),
                        ports: ports(iface, i)?,
                    },
                    queues: None,
                });
                out.status.entries.push(status(&iface.name, &mac, ips));
                continue;
            }
        };
        out.nics.push(Nic {
            interface: iface.name.clone(),
            mac: dhcp.mac.clone(),
            backend: Backend::Tap(TAP.into()),
            queues,
        });
        // Both bindings: the guest is reached at the pod's addresses (KubeVirt's status).
        out.status.entries.push(status(&iface.name, &dhcp.mac, ips));
        out.status.by_dhcp.insert(iface.name.clone());
        out.dhcp.push(dhcp);
    }
    if !out.nics.is_empty() {
        // The launcher runs as uid 107 without effective capabilities and serves DHCP on
        // port 67 (masquerade, bridge), or its passt binds the forwarded ports of the
        // pod: low ports are open to every user in the pod's namespace, as KubeVirt's
        // handler (and its passt binding) sets it for a non-root launcher
        // (docs/security.md).
        out.steps
            .push(sysctl("net.ipv4.ip_unprivileged_port_start", "0"));
    }
    Ok(out)
}

fn sysctl(key: &str, value: &str) -> Step {
    Step::Sysctl {
        key: key.into(),
        value: value.into(),
    }
}

fn status(name: &str, mac: &str, ips: Vec<String>) -> VirtualMachineInstanceNetworkInterface {
    VirtualMachineInstanceNetworkInterface {
        name: Some(name.into()),
        ip_address: ips.first().cloned(),
        ip_addresses: ips,
        mac: Some(mac.into()),
        interface_name: None,
        info_source: Some("domain".into()),
    }
}

pub fn normalize_mac(m: &str) -> String {
    m.replace('-', ":").to_ascii_lowercase()
}

/// The guest's MAC: the spec's, else a stable one derived from the VMI.
pub fn guest_mac(spec: Option<&str>, uid: &str, interface: &str) -> String {
    spec.map(normalize_mac)
        .unwrap_or_else(|| mac_address(uid, interface))
}

/// (gateway, guest, prefix) of a masquerade network: its first and second host.
fn vm_network(cidr: &str) -> Option<(Ipv4Addr, Ipv4Addr, u8)> {
    let (addr, prefix) = cidr.split_once('/')?;
    let addr: Ipv4Addr = addr.parse().ok()?;
    let prefix: u8 = prefix.parse().ok().filter(|p| (1..=30).contains(p))?;
    let net = u32::from(addr) & (u32::MAX << (32 - u32::from(prefix)));
    Some((Ipv4Addr::from(net + 1), Ipv4Addr::from(net + 2), prefix))
}

/// (gateway, guest, prefix) of KubeVirt's IPv6 masquerade network.
fn vm_network6() -> (Ipv6Addr, Ipv6Addr, u8) {
    let (addr, prefix) = DEFAULT_VM_CIDR6.split_once('/').unwrap_or_default();
    let net = u128::from(addr.parse::<Ipv6Addr>().unwrap_or(Ipv6Addr::UNSPECIFIED));
    (
        Ipv6Addr::from(net + 1),
        Ipv6Addr::from(net + 2),
        prefix.parse().unwrap_or(120),
    )
}

/// The forwarded ports by protocol; empty: everything is forwarded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ports {
    pub tcp: Vec<u16>,
    pub udp: Vec<u16>,
}

fn ports(iface: &crds::Interface, i: usize) -> Result<Ports> {
    let mut p = Ports {
        tcp: vec![],
        udp: vec![],
    };
    for (j, port) in iface.ports.iter().enumerate() {
        let n = u16::try_from(port.port)
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| {
                Error::unsupported(
                    format!("spec.domain.devices.interfaces[{i}].ports[{j}].port"),
                    format!("{} is not a port number", port.port),
                )
            })?;
        match port.protocol.unwrap_or(Protocol::Tcp) {
            Protocol::Tcp => p.tcp.push(n),
            Protocol::Udp => p.udp.push(n),
        }
    }
    Ok(p)
}

fn set(ports: &[u16]) -> String {
    let v: Vec<String> = ports.iter().map(u16::to_string).collect();
    format!("{{ {} }}", v.join(", "))
}

/// KubeVirt's masquerade NAT, as one nftables table: what comes in on the pod's link (and
/// what the pod sends to 127.0.0.1) goes to the guest, only the listed ports if any; what
/// the guest sends out leaves with the pod's address.
fn nft(pod_if: &str, guest: Ipv4Addr, gateway: Ipv4Addr, ports: &Ports) -> String {
    nat(
        "ip",
        "127.0.0.1",
        pod_if,
        &guest.to_string(),
        &gateway.to_string(),
        ports,
    )
}

/// The same for IPv6 (KubeVirt's NAT66): table ip6, the pod's `::1` for the local side.
fn nft6(pod_if: &str, guest: Ipv6Addr, gateway: Ipv6Addr, ports: &Ports) -> String {
    nat(
        "ip6",
        "::1",
        pod_if,
        &guest.to_string(),
        &gateway.to_string(),
        ports,
    )
}

fn nat(
    family: &str,
    loopback: &str,
    pod_if: &str,
    guest: &str,
    gateway: &str,
    ports: &Ports,
) -> String {
    let t = NFT_TABLE;
    let mut inbound = Vec::new();
    let mut local = Vec::new();
    let mut post = Vec::new();
    if ports.tcp.is_empty() && ports.udp.is_empty() {
        inbound.push(format!("dnat to {guest}"));
        local.push(format!("{family} daddr {loopback} dnat to {guest}"));
        post.push(format!("{family} saddr {loopback} snat to {gateway}"));
    } else {
        for (proto, list) in [("tcp", &ports.tcp), ("udp", &ports.udp)] {
            if list.is_empty() {
                continue;
            }
            let s = set(list);
            inbound.push(format!("{proto} dport {s} dnat to {guest}"));
            local.push(format!(
                "{family} daddr {loopback} {proto} dport {s} dnat to {guest}"
            ));
            post.push(format!(
                "{proto} dport {s} {family} saddr {loopback} snat to {gateway}"
            ));
        }
    }
    let lines = |v: &[String]| v.iter().map(|r| format!("    {r}\n")).collect::<String>();
    format!(
        "table {family} {t} {{\n\
         \x20 chain prerouting {{\n    type nat hook prerouting priority dstnat;\n    iifname \"{pod_if}\" jump inbound\n  }}\n\
         \x20 chain output {{\n    type nat hook output priority -100;\n{local}  }}\n\
         \x20 chain postrouting {{\n    type nat hook postrouting priority srcnat;\n    {family} saddr {guest} masquerade\n    oifname \"{BRIDGE}\" jump postinbound\n  }}\n\
         \x20 chain inbound {{\n{inbound}  }}\n\
         \x20 chain postinbound {{\n{post}  }}\n\
         }}\n",
        local = lines(&local),
        inbound = lines(&inbound),
        post = lines(&post),
    )
}
