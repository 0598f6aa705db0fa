//! `status.interfaces` of a VMI on the pod network, from what the node knows about each
//! interface. KubeVirt merges, in order: the domain's interfaces (name, MAC; infoSource
//! `domain`) with the pod interface's addresses, then what the guest agent reports
//! (`guest-agent`), then Multus (`multus-status`). Ferrovirt has the first two: the
//! domain's entries ([`interfaces`]), gated on the DHCP lease the guest took from the
//! launcher (an address is shown only once the guest holds it), and the guest agent's
//! ([`with_agent`]).

use crds::VirtualMachineInstanceNetworkInterface as Iface;
use crds::VirtualMachineInstanceSpec;
use ferrovirt_node_contract::agent::GuestInterface;
use ferrovirt_node_contract::protocol::Lease;

use super::Planned;

/// The planned entries (name, MAC, the pod's addresses: where the guest is reached, as
/// KubeVirt reports them) with the addresses of a family kept only for the interfaces whose
/// MAC the launcher's DHCP server (IPv4) or DHCPv6 server (IPv6) gave an address of that
/// family, of those it serves; without one, the interface is listed with name and MAC only.
/// Interfaces another DHCP server serves (passt) keep their addresses.
pub fn interfaces(planned: &Planned, leases: &[Lease]) -> Vec<Iface> {
    planned
        .entries
        .iter()
        .map(|entry| {
            let by_us = entry
                .name
                .as_ref()
                .is_some_and(|n| planned.by_dhcp.contains(n));
            if !by_us {
                return entry.clone();
            }
            let leased = |v6: bool| {
                leases.iter().any(|l| {
                    Some(&l.interface) == entry.name.as_ref()
                        && l.ip.contains(':') == v6
                        && entry
                            .mac
                            .as_ref()
                            .is_some_and(|m| m.eq_ignore_ascii_case(&l.mac))
                })
            };
            let (v4, v6) = (leased(false), leased(true));
            let ips: Vec<String> = entry
                .ip_addresses
                .iter()
                .filter(|a| if a.contains(':') { v6 } else { v4 })
                .cloned()
                .collect();
            Iface {
                ip_address: ips.first().cloned(),
                ip_addresses: ips,
                ..entry.clone()
            }
        })
        .collect()
}

/// Every planned interface has its lease: nothing more to wait for.
pub fn all_leased(planned: &Planned, leases: &[Lease]) -> bool {
    interfaces(planned, leases) == planned.entries
}

/// KubeVirt's infoSource values.
pub const DOMAIN_AND_AGENT: &str = "domain, guest-agent";
pub const AGENT: &str = "guest-agent";
/// KubeVirt lists at most this many interfaces the domain does not have.
const GUEST_ONLY_LIMIT: usize = 10;

/// The guest agent's interfaces merged into the domain's entries, as KubeVirt merges them:
/// an entry of the same MAC takes the guest's interface name and infoSource `domain,
/// guest-agent`, and per address family the guest's addresses where the entry has none of
/// that family or the guest reports none (the pod's address stays where the guest is
/// reached through it: masquerade's 10.0.2.2 does not replace it); a masquerade guest's
/// link-local IPv6 addresses, unreachable from the pod network, are left out. Interfaces
/// of the guest the domain does not have follow (at most 10), infoSource `guest-agent`.
pub fn with_agent(
    mut entries: Vec<Iface>,
    agent: &[GuestInterface],
    spec: &VirtualMachineInstanceSpec,
) -> Vec<Iface> {
    let mut guest_only = 0;
    for g in agent {
        let Some(mac) = g.mac.as_deref() else {
            continue;
        };
        let entry = entries.iter_mut().find(|e| {
            e.info_source.as_deref() != Some(AGENT)
                && e.mac
                    .as_deref()
                    .is_some_and(|m| m.eq_ignore_ascii_case(mac))
        });
        let Some(entry) = entry else {
            if guest_only < GUEST_ONLY_LIMIT {
                guest_only += 1;
                entries.push(Iface {
                    name: None,
                    ip_address: g.ip_addresses.first().cloned(),
                    ip_addresses: g.ip_addresses.clone(),
                    mac: Some(mac.to_owned()),
                    interface_name: Some(g.interface_name.clone()),
                    info_source: Some(AGENT.into()),
                });
            }
            continue;
        };
        let masquerade = spec
            .domain
            .devices
            .interfaces
            .iter()
            .any(|i| Some(&i.name) == entry.name.as_ref() && i.masquerade.is_some());
        let guest: Vec<String> = g
            .ip_addresses
            .iter()
            .filter(|a| !(masquerade && is_link_local_v6(a)))
            .cloned()
            .collect();
        let (ours4, ours6) = by_family(&entry.ip_addresses);
        let (guest4, guest6) = by_family(&guest);
        let v4 = if ours4.is_empty() || guest4.is_empty() {
            guest4
        } else {
            ours4
        };
        let v6 = if ours6.is_empty() || guest6.is_empty() {
            guest6
        } else {
            ours6
        };
        entry.ip_addresses = v4.into_iter().chain(v6).collect();
        entry.ip_address = entry.ip_addresses.first().cloned();
        entry.interface_name = Some(g.interface_name.clone());
        entry.info_source = Some(DOMAIN_AND_AGENT.into());
    }
    entries
}

fn by_family(ips: &[String]) -> (Vec<String>, Vec<String>) {
    ips.iter().cloned().partition(|a| !a.contains(':'))
}

fn is_link_local_v6(addr: &str) -> bool {
    addr.parse::<std::net::Ipv6Addr>()
        .is_ok_and(|a| a.segments()[0] & 0xffc0 == 0xfe80)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, mac: &str, ip: &str) -> Iface {
        Iface {
            name: Some(name.into()),
            mac: Some(mac.into()),
            ip_address: Some(ip.into()),
            ip_addresses: vec![ip.into(), "fd00::5".into()],
            info_source: Some("domain".into()),
            ..Default::default()
        }
    }

    /// One interface, its address given by the launcher's DHCP server.
    fn by_dhcp(entry: Iface) -> Planned {
        Planned {
            by_dhcp: [entry.name.clone().unwrap()].into(),
            entries: vec![entry],
        }
    }

    fn lease(interface: &str, mac: &str) -> Lease {
        Lease {
            interface: interface.into(),
            mac: mac.into(),
            ip: "10.0.2.2".into(),
        }
    }

    #[test]
    fn no_address_before_the_lease() {
        let planned = by_dhcp(entry("default", "02:00:00:00:00:01", "10.244.0.7"));
        let out = interfaces(&planned, &[]);
        assert_eq!(out[0].ip_address, None);
        assert!(out[0].ip_addresses.is_empty());
        assert_eq!(out[0].mac.as_deref(), Some("02:00:00:00:00:01"));
        assert_eq!(out[0].info_source.as_deref(), Some("domain"));
        assert!(!all_leased(&planned, &[]));
    }

    fn lease6(interface: &str, mac: &str) -> Lease {
        Lease {
            ip: "fd10:0:2::2".into(),
            ..lease(interface, mac)
        }
    }

    #[test]
    fn the_addresses_once_the_guest_holds_its_lease() {
        let planned = by_dhcp(entry("default", "02:00:00:00:00:01", "10.244.0.7"));
        let leases = [
            lease("default", "02:00:00:00:00:01"),
            lease6("default", "02:00:00:00:00:01"),
        ];
        assert_eq!(interfaces(&planned, &leases), planned.entries);
        assert!(all_leased(&planned, &leases));
    }

    #[test]
    fn each_family_shows_once_the_guest_holds_its_lease_of_that_family() {
        // The pod's IPv6 address once the DHCPv6 server gave the guest fd10:0:2::2, the
        // IPv4 one once the DHCP server gave it 10.0.2.2, whichever comes first.
        let planned = by_dhcp(entry("default", "02:00:00:00:00:01", "10.244.0.7"));
        let v4 = interfaces(&planned, &[lease("default", "02:00:00:00:00:01")]);
        assert_eq!(v4[0].ip_addresses, ["10.244.0.7"]);
        assert_eq!(v4[0].ip_address.as_deref(), Some("10.244.0.7"));
        let v6 = interfaces(&planned, &[lease6("default", "02:00:00:00:00:01")]);
        assert_eq!(v6[0].ip_addresses, ["fd00::5"]);
        assert_eq!(v6[0].ip_address.as_deref(), Some("fd00::5"));
        assert!(!all_leased(
            &planned,
            &[lease6("default", "02:00:00:00:00:01")]
        ));
    }

    #[test]
    fn a_lease_of_another_mac_or_interface_does_not_count() {
        let planned = by_dhcp(entry("default", "02:00:00:00:00:01", "10.244.0.7"));
        for l in [
            lease("default", "02:00:00:00:00:02"),
            lease("other", "02:00:00:00:00:01"),
        ] {
            assert_eq!(interfaces(&planned, &[l])[0].ip_address, None);
        }
        let mac = "02:00:00:00:00:01".to_uppercase();
        let upper = [lease("default", &mac), lease6("default", &mac)];
        assert_eq!(interfaces(&planned, &upper), planned.entries);
    }

    #[test]
    fn passt_interfaces_show_their_addresses_without_a_lease() {
        // passt's own DHCP server gives the guest the pod's address: nothing to wait for.
        let planned = Planned {
            entries: vec![entry("default", "02:00:00:00:00:01", "10.244.0.7")],
            by_dhcp: Default::default(),
        };
        assert_eq!(interfaces(&planned, &[]), planned.entries);
        assert!(all_leased(&planned, &[]));
    }

    fn guest(name: &str, mac: &str, ips: &[&str]) -> GuestInterface {
        GuestInterface {
            interface_name: name.into(),
            mac: Some(mac.into()),
            ip_addresses: ips.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn spec(binding: &str) -> VirtualMachineInstanceSpec {
        serde_json::from_value(serde_json::json!({
            "domain": {"devices": {"interfaces": [{"name": "default", binding: {}}]}},
            "networks": [{"name": "default", "pod": {}}]
        }))
        .unwrap()
    }

    #[test]
    fn the_agent_names_the_guests_interface_and_the_pod_address_stays() {
        // Masquerade after the lease: the guest's 10.0.2.2 does not replace the pod's
        // address; its link-local IPv6 is left out, its global one added.
        let ours = vec![Iface {
            ip_addresses: vec!["10.244.0.7".into()],
            ..entry("default", "02:00:00:00:00:01", "10.244.0.7")
        }];
        let agent = [guest(
            "eth0",
            "02:00:00:00:00:01",
            &["10.0.2.2", "fe80::1", "fd10:0:2::2"],
        )];
        let out = with_agent(ours, &agent, &spec("masquerade"));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].name.as_deref(), Some("default"));
        assert_eq!(out[0].interface_name.as_deref(), Some("eth0"));
        assert_eq!(out[0].info_source.as_deref(), Some(DOMAIN_AND_AGENT));
        assert_eq!(out[0].ip_address.as_deref(), Some("10.244.0.7"));
        assert_eq!(out[0].ip_addresses, ["10.244.0.7", "fd10:0:2::2"]);
    }

    #[test]
    fn before_the_lease_the_guests_addresses_show_and_other_interfaces_follow() {
        let ours = vec![Iface {
            name: Some("default".into()),
            mac: Some("02:00:00:00:00:01".into()),
            info_source: Some("domain".into()),
            ..Default::default()
        }];
        let agent = [
            guest("eth0", "02:00:00:00:00:01", &["10.244.0.7", "fe80::1"]),
            guest("dummy0", "0a:00:00:00:00:09", &["192.168.7.1"]),
        ];
        let out = with_agent(ours, &agent, &spec("bridge"));
        assert_eq!(out[0].ip_addresses, ["10.244.0.7", "fe80::1"]);
        assert_eq!(out[0].ip_address.as_deref(), Some("10.244.0.7"));
        assert_eq!(
            out[1],
            Iface {
                name: None,
                ip_address: Some("192.168.7.1".into()),
                ip_addresses: vec!["192.168.7.1".into()],
                mac: Some("0a:00:00:00:00:09".into()),
                interface_name: Some("dummy0".into()),
                info_source: Some(AGENT.into()),
            }
        );
        // The same merge again changes nothing (the worker merges every time).
        assert_eq!(with_agent(out.clone(), &[], &spec("bridge")), out);
    }

    #[test]
    fn a_guest_without_ipv4_clears_the_shown_ipv4() {
        // KubeVirt: when the agent reports no address of a family, the guest is not
        // reached by one.
        let ours = vec![entry("default", "02:00:00:00:00:01", "10.244.0.7")];
        let out = with_agent(
            ours,
            &[guest("eth0", "02:00:00:00:00:01", &[])],
            &spec("passtBinding"),
        );
        assert_eq!(out[0].ip_address, None);
        assert!(out[0].ip_addresses.is_empty());
        assert_eq!(out[0].info_source.as_deref(), Some(DOMAIN_AND_AGENT));
    }
}
