//! Table tests of the network plan.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use super::plan::{Backend, Input, PodInterface, Ports, Step, plan};

fn pod() -> PodInterface {
    PodInterface {
        name: "eth0".into(),
        mac: "0A:58:0A:F4:00:05".into(),
        mtu: 1450,
        ipv4: Some((Ipv4Addr::new(10, 244, 0, 5), 24)),
        other_ips: vec!["fd00::5".into()],
        gateway4: Some(Ipv4Addr::new(10, 244, 0, 1)),
    }
}

fn spec(
    interface: serde_json::Value,
    network: serde_json::Value,
) -> crds::VirtualMachineInstanceSpec {
    serde_json::from_value(serde_json::json!({
        "domain": {"devices": {"interfaces": [interface]}},
        "networks": [network]
    }))
    .unwrap()
}

/// The binding plugins the tests' cluster configuration registers.
fn registered() -> BTreeSet<String> {
    ["passt".to_owned(), "other".to_owned()].into()
}

fn run(spec: &crds::VirtualMachineInstanceSpec) -> crate::Result<super::Plan> {
    plan(&Input {
        spec,
        uid: "uid-1",
        hostname: "vm1",
        pod: &pod(),
        owner: 107,
        group: 107,
        registered: Some(&registered()),
    })
}

#[test]
fn masquerade_makes_a_bridge_a_tap_nat_and_a_dhcp_offer() {
    let s = spec(
        serde_json::json!({"name": "default", "masquerade": {}}),
        serde_json::json!({"name": "default", "pod": {}}),
    );
    let p = run(&s).unwrap();
    assert!(p.steps.contains(&Step::Address {
        dev: "k6t-eth0".into(),
        cidr: "10.0.2.1/24".into()
    }));
    assert!(p.steps.contains(&Step::Tap {
        name: "tap0".into(),
        owner: 107,
        mtu: 1450,
        multi_queue: false,
    }));
    assert_eq!(p.nics[0].queues, None);
    assert!(p.steps.contains(&Step::Enslave {
        dev: "tap0".into(),
        bridge: "k6t-eth0".into()
    }));
    assert!(
        !p.steps
            .iter()
            .any(|s| matches!(s, Step::FlushAddresses { .. })),
        "the pod keeps its address"
    );
    let nft = p.nft.as_deref().unwrap();
    assert!(nft.contains("iifname \"eth0\" jump inbound"), "{nft}");
    assert!(
        nft.contains("    dnat to 10.0.2.2\n"),
        "everything forwarded without ports: {nft}"
    );
    assert!(nft.contains("ip saddr 10.0.2.2 masquerade"), "{nft}");
    let d = &p.dhcp[0];
    assert_eq!(
        (d.ip.as_str(), d.prefix, d.router.as_deref()),
        ("10.0.2.2", 24, Some("10.0.2.1"))
    );
    assert_eq!(
        (d.server_ip.as_str(), d.mtu, d.hostname.as_deref()),
        ("10.0.2.1", Some(1450), Some("vm1"))
    );
    assert_eq!(d.mac, crate::network::mac_address("uid-1", "default"));
    assert_eq!(p.nics[0].mac, d.mac);
    let st = &p.status.entries[0];
    assert_eq!(
        st.ip_address.as_deref(),
        Some("10.244.0.5"),
        "reached at the pod's address"
    );
    assert_eq!(st.ip_addresses, ["10.244.0.5", "fd00::5"]);
    assert_eq!(st.info_source.as_deref(), Some("domain"));
}

#[test]
fn ports_limit_what_is_forwarded() {
    let s = spec(
        serde_json::json!({"name": "default", "masquerade": {}, "macAddress": "DE-AD-00-00-BE-AF",
            "ports": [{"port": 80}, {"port": 8443, "protocol": "TCP"}, {"name": "dns", "port": 53, "protocol": "UDP"}]}),
        serde_json::json!({"name": "default", "pod": {"vmNetworkCIDR": "10.11.12.0/28"}}),
    );
    let p = run(&s).unwrap();
    let nft = p.nft.unwrap();
    assert!(
        nft.contains("tcp dport { 80, 8443 } dnat to 10.11.12.2"),
        "{nft}"
    );
    assert!(nft.contains("udp dport { 53 } dnat to 10.11.12.2"), "{nft}");
    assert!(
        !nft.contains("    dnat to"),
        "nothing unlisted is forwarded: {nft}"
    );
    assert_eq!(p.dhcp[0].ip, "10.11.12.2");
    assert_eq!(p.dhcp[0].prefix, 28);
    assert_eq!(p.nics[0].mac, "de:ad:00:00:be:af");
}

#[test]
fn bridge_moves_the_pods_address_and_mac_to_the_guest() {
    let s = spec(
        serde_json::json!({"name": "default", "bridge": {}}),
        serde_json::json!({"name": "default", "pod": {}}),
    );
    let p = run(&s).unwrap();
    assert_eq!(p.steps[0], Step::FlushAddresses { dev: "eth0".into() });
    assert!(p.steps.contains(&Step::Enslave {
        dev: "eth0".into(),
        bridge: "k6t-eth0".into()
    }));
    assert!(p.nft.is_none());
    let d = &p.dhcp[0];
    assert_eq!(
        (d.ip.as_str(), d.prefix, d.router.as_deref()),
        ("10.244.0.5", 24, Some("10.244.0.1"))
    );
    assert_eq!(d.mac, "0a:58:0a:f4:00:05", "the guest takes the pod's MAC");
    let moved = p.steps.iter().find_map(|s| match s {
        Step::SetMac { mac, .. } => Some(mac.clone()),
        _ => None,
    });
    assert_ne!(moved.as_deref(), Some("0a:58:0a:f4:00:05"));
}

#[test]
fn refusals_name_the_field() {
    let cases = [
        (
            serde_json::json!({"name": "default", "bridge": {}, "ports": [{"port": 80}]}),
            serde_json::json!({"name": "default", "pod": {}}),
            "spec.domain.devices.interfaces[0].ports",
        ),
        (
            serde_json::json!({"name": "default", "masquerade": {}}),
            serde_json::json!({"name": "default", "pod": {"vmNetworkCIDR": "10.0.2.0/31"}}),
            "spec.networks[0].pod.vmNetworkCIDR",
        ),
        (
            serde_json::json!({"name": "default", "masquerade": {}, "bridge": {}}),
            serde_json::json!({"name": "default", "pod": {}}),
            "spec.domain.devices.interfaces[0].name: logical default interface must have exactly one binding",
        ),
        (
            serde_json::json!({"name": "default", "passtBinding": {}, "binding": {"name": "passt"}}),
            serde_json::json!({"name": "default", "pod": {}}),
            "spec.domain.devices.interfaces[0].name: logical default interface must have exactly one binding",
        ),
        (
            serde_json::json!({"name": "default", "binding": {"name": "slirp"}}),
            serde_json::json!({"name": "default", "pod": {}}),
            "spec.domain.devices.interfaces[0].binding.name: couldn't find configuration for network binding: slirp",
        ),
        (
            serde_json::json!({"name": "default", "binding": {"name": "other"}}),
            serde_json::json!({"name": "default", "pod": {}}),
            "spec.domain.devices.interfaces[0].binding.name: network binding plugin \"other\" is not implemented",
        ),
        (
            serde_json::json!({"name": "default", "masquerade": {}}),
            serde_json::json!({"name": "other", "pod": {}}),
            "spec.domain.devices.interfaces[0].name",
        ),
    ];
    for (iface, net, field) in cases {
        let e = run(&spec(iface, net)).unwrap_err().to_string();
        assert!(e.starts_with(field), "{field}: {e}");
    }
    let mut no_ip = pod();
    no_ip.ipv4 = None;
    let s = spec(
        serde_json::json!({"name": "default", "masquerade": {}}),
        serde_json::json!({"name": "default", "pod": {}}),
    );
    let e = plan(&Input {
        spec: &s,
        uid: "u",
        hostname: "h",
        pod: &no_ip,
        owner: 0,
        group: 0,
        registered: None,
    })
    .unwrap_err()
    .to_string();
    assert!(e.contains("no IPv4 address"), "{e}");
}

#[test]
fn passt_makes_no_links_and_forwards_the_listed_ports() {
    for iface in [
        serde_json::json!({"name": "default", "passtBinding": {}, "ports": [{"port": 80}, {"port": 53, "protocol": "UDP"}]}),
        serde_json::json!({"name": "default", "binding": {"name": "passt"}, "ports": [{"port": 80}, {"port": 53, "protocol": "UDP"}]}),
    ] {
        let s = spec(iface, serde_json::json!({"name": "default", "pod": {}}));
        let p = run(&s).unwrap();
        // No bridge, tap or NAT: libvirt starts passt in the pod's namespace.
        assert_eq!(
            p.steps,
            [
                Step::Sysctl {
                    key: "net.ipv4.ping_group_range".into(),
                    value: "107 107".into()
                },
                Step::Sysctl {
                    key: "net.ipv4.ip_unprivileged_port_start".into(),
                    value: "0".into()
                },
            ]
        );
        assert!(p.nft.is_none() && p.dhcp.is_empty());
        assert_eq!(
            p.nics[0].mac,
            crate::network::mac_address("uid-1", "default")
        );
        assert_eq!(
            p.nics[0].backend,
            Backend::Passt {
                pod_interface: "eth0".into(),
                ports: Ports {
                    tcp: vec![80],
                    udp: vec![53]
                }
            }
        );
        // The guest takes the pod's address from passt: shown without our lease.
        assert_eq!(
            p.status.entries[0].ip_address.as_deref(),
            Some("10.244.0.5")
        );
        assert!(p.status.by_dhcp.is_empty());
    }
}

#[test]
fn masquerade_on_a_dual_stack_pod_gives_the_guest_kubevirts_ipv6_network() {
    let s = spec(
        serde_json::json!({"name": "default", "masquerade": {}, "ports": [{"port": 80}]}),
        serde_json::json!({"name": "default", "pod": {}}),
    );
    let p = run(&s).unwrap();
    let address = Step::Address {
        dev: "k6t-eth0".into(),
        cidr: "fd10:0:2::1/120".into(),
    };
    let at = |step: &Step| p.steps.iter().position(|s| s == step).unwrap();
    assert!(
        at(&address)
            < at(&Step::LinkUp {
                dev: "k6t-eth0".into()
            })
    );
    for key in [
        "net.ipv6.conf.all.forwarding",
        "net.ipv6.conf.k6t-eth0.accept_dad",
    ] {
        let value = if key.ends_with("forwarding") {
            "1"
        } else {
            "0"
        };
        let sysctl = Step::Sysctl {
            key: key.into(),
            value: value.into(),
        };
        assert!(
            at(&sysctl)
                > at(&Step::Bridge {
                    name: "k6t-eth0".into(),
                    mtu: 1450
                }),
            "{key} after the bridge exists"
        );
    }
    assert_eq!(p.dhcp[0].ipv6.as_deref(), Some("fd10:0:2::2"));
    let nft = p.nft.unwrap();
    let (v4, v6) = nft.split_at(nft.find("table ip6 ").expect(&nft));
    assert!(v4.starts_with("table ip ferrovirt_nat"), "{nft}");
    // NAT66 as KubeVirt's: the same ports, the pod's ::1 for the local side.
    for rule in [
        "iifname \"eth0\" jump inbound",
        "tcp dport { 80 } dnat to fd10:0:2::2",
        "ip6 daddr ::1 tcp dport { 80 } dnat to fd10:0:2::2",
        "tcp dport { 80 } ip6 saddr ::1 snat to fd10:0:2::1",
        "ip6 saddr fd10:0:2::2 masquerade",
    ] {
        assert!(v6.contains(rule), "{rule}: {nft}");
    }
    assert!(!v6.contains("    dnat to"), "nothing unlisted: {nft}");
    assert_eq!(p.status.entries[0].ip_addresses, ["10.244.0.5", "fd00::5"]);
}

#[test]
fn an_ipv4_only_pod_gets_no_ipv6_and_a_bridged_guest_reports_ipv4_only() {
    let s = spec(
        serde_json::json!({"name": "default", "masquerade": {}}),
        serde_json::json!({"name": "default", "pod": {}}),
    );
    let v4_pod = PodInterface {
        other_ips: vec![],
        ..pod()
    };
    let p = plan(&Input {
        spec: &s,
        uid: "uid-1",
        hostname: "vm1",
        pod: &v4_pod,
        owner: 107,
        group: 107,
        registered: None,
    })
    .unwrap();
    assert_eq!(p.dhcp[0].ipv6, None);
    assert!(!p.nft.as_deref().unwrap().contains("ip6"));
    assert!(
        !p.steps
            .iter()
            .any(|s| matches!(s, Step::Sysctl { key, .. } if key.contains("ipv6")))
    );
    // The bridge binding: KubeVirt's bridge DHCP is IPv4 only; the guest has no IPv6
    // address of the pod's, so status shows none.
    let s = spec(
        serde_json::json!({"name": "default", "bridge": {}}),
        serde_json::json!({"name": "default", "pod": {}}),
    );
    let p = run(&s).unwrap();
    assert_eq!(p.dhcp[0].ipv6, None);
    assert_eq!(p.status.entries[0].ip_addresses, ["10.244.0.5"]);
}

#[test]
fn multi_queue_gives_virtio_nics_on_a_tap_a_queue_pair_per_vcpu_and_refuses_passt() {
    let with = |interface: serde_json::Value, cpu: serde_json::Value| {
        let mut s: serde_json::Value = serde_json::json!({
            "domain": {"cpu": cpu, "devices": {"interfaces": [interface], "networkInterfaceMultiqueue": true}},
            "networks": [{"name": "default", "pod": {}}]
        });
        s["domain"]["devices"]["interfaces"][0]["name"] = "default".into();
        serde_json::from_value::<crds::VirtualMachineInstanceSpec>(s).unwrap()
    };
    let tap = |p: &super::Plan| {
        p.steps
            .iter()
            .find_map(|s| match s {
                Step::Tap { multi_queue, .. } => Some(*multi_queue),
                _ => None,
            })
            .unwrap()
    };
    for binding in [
        serde_json::json!({"masquerade": {}}),
        serde_json::json!({"bridge": {}}),
    ] {
        let p = run(&with(
            binding.clone(),
            serde_json::json!({"sockets": 2, "cores": 2}),
        ))
        .unwrap();
        assert_eq!(p.nics[0].queues, Some(4), "{binding}");
        assert!(tap(&p), "{binding}: a multi-queue tap");
        // One vCPU: one queue pair, a plain tap.
        let p = run(&with(binding.clone(), serde_json::json!({}))).unwrap();
        assert_eq!(p.nics[0].queues, Some(1), "{binding}");
        assert!(!tap(&p), "{binding}");
    }
    // Another model has one queue, as in KubeVirt.
    let e1000 = serde_json::json!({"masquerade": {}, "model": "e1000"});
    let p = run(&with(e1000, serde_json::json!({"cores": 2}))).unwrap();
    assert_eq!(p.nics[0].queues, None);
    assert!(!tap(&p));
    // passt has one queue: refused by name.
    let passt = serde_json::json!({"binding": {"name": "passt"}});
    let err = run(&with(passt, serde_json::json!({"cores": 2})))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("spec.domain.devices.networkInterfaceMultiqueue"),
        "{err}"
    );
}
