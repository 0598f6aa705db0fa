//! The guest's DHCP server (RFC 2131, the subset one guest needs): on each bridge
//! virt-handler created in the pod's network namespace, one address offered to one MAC,
//! with the router, MTU, hostname and the pod's DNS servers and search domains
//! (`/etc/resolv.conf`). Leases are recorded for `{"command":"leases"}`. With an IPv6
//! address to give, DHCPv6 on the same bridge too ([`v6`]). See docs/networking.md.

mod packet;
mod resolv;
mod v6;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};
use std::sync::{Arc, Mutex, OnceLock};

use ferrovirt_node_contract::protocol::{DhcpInterface, Lease};
use tokio::net::UdpSocket;

use crate::{Error, Result};

/// The pod's resolver configuration, handed to the guest.
const RESOLV_CONF: &str = "/etc/resolv.conf";

#[derive(Default)]
struct State {
    /// Bridge -> the interface served there.
    serving: BTreeMap<String, DhcpInterface>,
    /// (interface, IPv6?) -> its lease.
    leases: BTreeMap<(String, bool), Lease>,
}

fn state() -> &'static Mutex<State> {
    static STATE: OnceLock<Mutex<State>> = OnceLock::new();
    STATE.get_or_init(Default::default)
}

/// The leases acknowledged so far, by interface name.
pub fn leases() -> Vec<Lease> {
    let s = state().lock().unwrap_or_else(|e| e.into_inner());
    s.leases.values().cloned().collect()
}

/// Starts serving each interface's bridge (once per bridge; a repeated request with the
/// same configuration is a no-op). Must run inside the tokio runtime.
pub async fn serve(interfaces: &[DhcpInterface]) -> Result<()> {
    for iface in interfaces {
        {
            let s = state().lock().unwrap_or_else(|e| e.into_inner());
            match s.serving.get(&iface.bridge) {
                Some(same) if same == iface => continue,
                Some(_) => {
                    return Err(Error::DhcpConfig(format!(
                        "{} is already served with another configuration",
                        iface.bridge
                    )));
                }
                None => {}
            }
        }
        let resolv = resolv::read(RESOLV_CONF);
        let offer = offer(iface, &resolv)?;
        let mac = parse_mac(&iface.mac)
            .ok_or_else(|| Error::DhcpConfig(format!("{:?} is not a MAC address", iface.mac)))?;
        let socket = Arc::new(bind(&iface.bridge)?);
        let v6 = match &iface.ipv6 {
            Some(ip) => {
                let ip: Ipv6Addr = ip.parse().map_err(|_| {
                    Error::DhcpConfig(format!("ipv6 {ip:?} is not an IPv6 address"))
                })?;
                let (socket, server_mac) = bind6(&iface.bridge)?;
                let offer = v6::Offer {
                    ip,
                    dns: resolv.nameservers6.clone(),
                    server_mac,
                };
                Some((socket, offer))
            }
            None => None,
        };
        state()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .serving
            .insert(iface.bridge.clone(), iface.clone());
        tracing::info!(bridge = %iface.bridge, ip = %offer.ip, mac = %iface.mac,
            dns = ?offer.dns, search = ?offer.search, "DHCP server started");
        tokio::spawn(run(socket, iface.clone(), mac, offer));
        if let Some((socket, offer)) = v6 {
            tracing::info!(bridge = %iface.bridge, ip = %offer.ip, dns = ?offer.dns,
                "DHCPv6 server started");
            tokio::spawn(run6(socket, iface.clone(), offer));
        }
    }
    Ok(())
}

fn offer(iface: &DhcpInterface, resolv: &resolv::Resolv) -> Result<packet::Offer> {
    let ip = |what: &str, s: &str| {
        s.parse::<Ipv4Addr>()
            .map_err(|_| Error::DhcpConfig(format!("{what} {s:?} is not an IPv4 address")))
    };
    if iface.prefix == 0 || iface.prefix > 32 {
        return Err(Error::DhcpConfig(format!(
            "prefix {} out of range",
            iface.prefix
        )));
    }
    Ok(packet::Offer {
        server_id: ip("server_ip", &iface.server_ip)?,
        ip: ip("ip", &iface.ip)?,
        prefix: iface.prefix,
        router: iface
            .router
            .as_deref()
            .map(|r| ip("router", r))
            .transpose()?,
        dns: resolv.nameservers.clone(),
        search: resolv.search.clone(),
        mtu: iface.mtu,
        hostname: iface.hostname.clone(),
        lease_seconds: u32::MAX,
    })
}

fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let v: Vec<u8> = s
        .split([':', '-'])
        .map(|p| u8::from_str_radix(p, 16).ok())
        .collect::<Option<_>>()?;
    v.try_into().ok()
}

/// UDP port 67 on one device only, able to broadcast.
fn bind(bridge: &str) -> Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let err = |source| Error::Dhcp {
        bridge: bridge.to_owned(),
        source,
    };
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).map_err(err)?;
    s.set_reuse_address(true).map_err(err)?;
    s.set_broadcast(true).map_err(err)?;
    s.bind_device(Some(bridge.as_bytes())).map_err(err)?;
    s.set_nonblocking(true).map_err(err)?;
    s.bind(&SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 67).into())
        .map_err(err)?;
    UdpSocket::from_std(s.into()).map_err(err)
}

/// UDP port 547 on the bridge only, in All_DHCP_Relay_Agents_and_Servers; the bridge's
/// MAC (for the server's DUID).
fn bind6(bridge: &str) -> Result<(UdpSocket, [u8; 6])> {
    use socket2::{Domain, Protocol, Socket, Type};
    let err = |source| Error::Dhcp {
        bridge: bridge.to_owned(),
        source,
    };
    let name = std::ffi::CString::new(bridge)
        .map_err(|_| Error::DhcpConfig(format!("bridge name {bridge:?}")))?;
    // SAFETY: a NUL-terminated name; if_nametoindex reads it only.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if index == 0 {
        return Err(err(std::io::Error::last_os_error()));
    }
    let s = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP)).map_err(err)?;
    s.set_only_v6(true).map_err(err)?;
    s.set_reuse_address(true).map_err(err)?;
    s.bind_device(Some(bridge.as_bytes())).map_err(err)?;
    s.set_nonblocking(true).map_err(err)?;
    s.bind(&SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, v6::SERVER_PORT, 0, 0).into())
        .map_err(err)?;
    s.join_multicast_v6(&v6::ALL_SERVERS, index).map_err(err)?;
    let mac = hardware_address(&s, &name).map_err(err)?;
    Ok((UdpSocket::from_std(s.into()).map_err(err)?, mac))
}

/// The MAC of a device of this network namespace (SIOCGIFHWADDR on a socket of it).
fn hardware_address(s: &socket2::Socket, name: &std::ffi::CStr) -> std::io::Result<[u8; 6]> {
    use std::os::fd::AsRawFd;
    // SAFETY: ifreq is plain data; zeroed is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, c) in req.ifr_name.iter_mut().zip(name.to_bytes()) {
        *d = *c as libc::c_char;
    }
    // SAFETY: SIOCGIFHWADDR fills the ifreq we own.
    if unsafe { libc::ioctl(s.as_raw_fd(), libc::SIOCGIFHWADDR, &mut req) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: after SIOCGIFHWADDR the union holds the hardware address.
    let data = unsafe { req.ifr_ifru.ifru_hwaddr.sa_data };
    Ok(std::array::from_fn(|i| data[i] as u8))
}

/// Serves DHCPv6 on the bridge: only the guest is on it (masquerade), so every client is
/// answered, as KubeVirt's server does.
async fn run6(socket: UdpSocket, iface: DhcpInterface, offer: v6::Offer) {
    let mut buf = vec![0u8; 1500];
    loop {
        let (n, peer) = match socket.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(bridge = %iface.bridge, error = %e, "DHCPv6 receive failed");
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                continue;
            }
        };
        let Some(req) = v6::parse(&buf[..n]) else {
            continue;
        };
        let Some(kind) = v6::answer(&req, &offer) else {
            tracing::debug!(bridge = %iface.bridge, kind = req.kind, "DHCPv6 message ignored");
            continue;
        };
        if let Err(e) = socket.send_to(&v6::reply(&req, kind, &offer), peer).await {
            tracing::warn!(bridge = %iface.bridge, %peer, error = %e, "DHCPv6 send failed");
            continue;
        }
        if v6::leases(&req, kind) {
            tracing::info!(bridge = %iface.bridge, ip = %offer.ip, %peer, "DHCPv6 lease given");
            record(Lease {
                interface: iface.interface.clone(),
                mac: iface.mac.clone(),
                ip: offer.ip.to_string(),
            });
        }
    }
}

fn record(lease: Lease) {
    let key = (lease.interface.clone(), lease.ip.contains(':'));
    state()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .leases
        .insert(key, lease);
}

async fn run(socket: Arc<UdpSocket>, iface: DhcpInterface, mac: [u8; 6], offer: packet::Offer) {
    let mut buf = vec![0u8; 1500];
    loop {
        let n = match socket.recv_from(&mut buf).await {
            Ok((n, _)) => n,
            Err(e) => {
                tracing::warn!(bridge = %iface.bridge, error = %e, "DHCP receive failed");
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                continue;
            }
        };
        let Some(req) = packet::parse(&buf[..n]) else {
            continue;
        };
        if req.chaddr != mac {
            tracing::debug!(bridge = %iface.bridge, "DHCP request from another MAC ignored");
            continue;
        }
        let kind = match answer(&req, &offer) {
            Some(k) => k,
            None => continue,
        };
        let reply = packet::reply(&req, kind, &offer);
        // The client has no address yet: broadcast on the bridge (bound to it).
        let to = SocketAddrV4::new(Ipv4Addr::BROADCAST, 68);
        if let Err(e) = socket.send_to(&reply, to).await {
            tracing::warn!(bridge = %iface.bridge, error = %e, "DHCP send failed");
            continue;
        }
        if kind == packet::ACK {
            tracing::info!(bridge = %iface.bridge, ip = %offer.ip, mac = %iface.mac, "DHCP lease acknowledged");
            record(Lease {
                interface: iface.interface.clone(),
                mac: iface.mac.clone(),
                ip: offer.ip.to_string(),
            });
        }
    }
}

/// The message to answer `req` with, if any: DISCOVER gets an OFFER; a REQUEST for our
/// address (selecting us, or renewing) an ACK, for another one a NAK; a REQUEST selecting
/// another server, and every other message, nothing.
fn answer(req: &packet::Request, offer: &packet::Offer) -> Option<u8> {
    match req.kind {
        packet::DISCOVER => Some(packet::OFFER),
        packet::REQUEST => {
            if req.server_id.is_some_and(|s| s != offer.server_id) {
                return None;
            }
            let wanted = req
                .requested_ip
                .or((!req.ciaddr.is_unspecified()).then_some(req.ciaddr));
            if wanted.is_none_or(|w| w == offer.ip) {
                Some(packet::ACK)
            } else {
                Some(packet::NAK)
            }
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(kind: u8, requested: Option<[u8; 4]>, server: Option<[u8; 4]>) -> packet::Request {
        packet::Request {
            kind,
            xid: [0; 4],
            flags: [0; 2],
            ciaddr: Ipv4Addr::UNSPECIFIED,
            chaddr: [2, 0, 0, 0, 0, 1],
            requested_ip: requested.map(Ipv4Addr::from),
            server_id: server.map(Ipv4Addr::from),
        }
    }

    #[test]
    fn the_exchange_follows_rfc_2131() {
        let offer = packet::Offer {
            server_id: Ipv4Addr::new(10, 0, 2, 1),
            ip: Ipv4Addr::new(10, 0, 2, 2),
            prefix: 24,
            router: None,
            dns: vec![],
            search: vec![],
            mtu: None,
            hostname: None,
            lease_seconds: u32::MAX,
        };
        let ours = Some([10, 0, 2, 2]);
        let us = Some([10, 0, 2, 1]);
        assert_eq!(
            answer(&req(packet::DISCOVER, None, None), &offer),
            Some(packet::OFFER)
        );
        assert_eq!(
            answer(&req(packet::REQUEST, ours, us), &offer),
            Some(packet::ACK)
        );
        assert_eq!(
            answer(&req(packet::REQUEST, ours, None), &offer),
            Some(packet::ACK)
        );
        assert_eq!(
            answer(&req(packet::REQUEST, Some([10, 0, 2, 9]), None), &offer),
            Some(packet::NAK)
        );
        assert_eq!(
            answer(&req(packet::REQUEST, ours, Some([10, 0, 2, 7])), &offer),
            None
        );
        assert_eq!(answer(&req(7, None, None), &offer), None, "RELEASE");
    }

    #[test]
    fn configuration_errors_name_the_field() {
        let iface = DhcpInterface {
            interface: "default".into(),
            bridge: "k6t-eth0".into(),
            server_ip: "10.0.2.1".into(),
            mac: "02:00:00:00:00:01".into(),
            ip: "10.0.2.300".into(),
            prefix: 24,
            router: None,
            mtu: None,
            hostname: None,
            ipv6: None,
        };
        let e = offer(&iface, &Default::default()).unwrap_err().to_string();
        assert!(e.contains("ip \"10.0.2.300\""), "{e}");
        assert_eq!(parse_mac("02-00-00-00-00-0a"), Some([2, 0, 0, 0, 0, 10]));
        assert_eq!(parse_mac("02:00:00:00:00"), None);
    }
}
