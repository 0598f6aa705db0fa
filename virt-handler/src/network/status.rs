//! `status.interfaces` of a VMI on the pod network, from what the node knows about each
//! interface. KubeVirt merges, in order: the domain's interfaces (name, MAC; infoSource
//! `domain`) with the pod interface's addresses, then what the guest agent reports
//! (`guest-agent`), then Multus (`multus-status`). Ferrovirt has the first, gated on the
//! DHCP lease the guest took from the launcher: an address is shown only once the guest
//! holds it. Guest-agent data (issue 11) merges into the result of [`interfaces`].

use crds::VirtualMachineInstanceNetworkInterface as Iface;
use ferrovirt_node_contract::protocol::Lease;

/// The planned entries (name, MAC, the pod's addresses: where the guest is reached, as
/// KubeVirt reports them) with the addresses kept only for the interfaces whose MAC the
/// launcher's DHCP server acknowledged; the others are listed with name and MAC only.
pub fn interfaces(planned: &[Iface], leases: &[Lease]) -> Vec<Iface> {
    planned
        .iter()
        .map(|entry| {
            let leased = leases.iter().any(|l| {
                Some(&l.interface) == entry.name.as_ref()
                    && entry
                        .mac
                        .as_ref()
                        .is_some_and(|m| m.eq_ignore_ascii_case(&l.mac))
            });
            if leased {
                entry.clone()
            } else {
                Iface {
                    ip_address: None,
                    ip_addresses: Vec::new(),
                    ..entry.clone()
                }
            }
        })
        .collect()
}

/// Every planned interface has its lease: nothing more to wait for.
pub fn all_leased(planned: &[Iface], leases: &[Lease]) -> bool {
    interfaces(planned, leases) == planned
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

    fn lease(interface: &str, mac: &str) -> Lease {
        Lease {
            interface: interface.into(),
            mac: mac.into(),
            ip: "10.0.2.2".into(),
        }
    }

    #[test]
    fn no_address_before_the_lease() {
        let planned = [entry("default", "02:00:00:00:00:01", "10.244.0.7")];
        let out = interfaces(&planned, &[]);
        assert_eq!(out[0].ip_address, None);
        assert!(out[0].ip_addresses.is_empty());
        assert_eq!(out[0].mac.as_deref(), Some("02:00:00:00:00:01"));
        assert_eq!(out[0].info_source.as_deref(), Some("domain"));
        assert!(!all_leased(&planned, &[]));
    }

    #[test]
    fn the_addresses_once_the_guest_holds_its_lease() {
        let planned = [entry("default", "02:00:00:00:00:01", "10.244.0.7")];
        let leases = [lease("default", "02:00:00:00:00:01")];
        assert_eq!(interfaces(&planned, &leases), planned);
        assert!(all_leased(&planned, &leases));
    }

    #[test]
    fn a_lease_of_another_mac_or_interface_does_not_count() {
        let planned = [entry("default", "02:00:00:00:00:01", "10.244.0.7")];
        for l in [
            lease("default", "02:00:00:00:00:02"),
            lease("other", "02:00:00:00:00:01"),
        ] {
            assert_eq!(interfaces(&planned, &[l])[0].ip_address, None);
        }
        let upper = [lease(
            "default",
            "02:00:00:00:00:01".to_uppercase().as_str(),
        )];
        assert_eq!(interfaces(&planned, &upper), planned);
    }
}
