//! The guest's DHCPv6 server (RFC 8415, the subset one guest needs), as KubeVirt's
//! masquerade binding has it: on the bridge, one address (`fd10:0:2::2` by default) with
//! infinite lifetimes in an IA_NA, the pod's IPv6 DNS servers, a server DUID made of the
//! bridge's MAC. SOLICIT gets an ADVERTISE, or a REPLY when it asks for rapid commit;
//! REQUEST, RENEW, REBIND, CONFIRM and INFORMATION-REQUEST a REPLY. No router
//! advertisements (KubeVirt sends none either): the guest's default route is the server's
//! link-local address, the router on its link (docs/networking.md).

use std::net::Ipv6Addr;

pub const SERVER_PORT: u16 = 547;
pub const SOLICIT: u8 = 1;
pub const ADVERTISE: u8 = 2;
pub const REQUEST: u8 = 3;
pub const CONFIRM: u8 = 4;
pub const RENEW: u8 = 5;
pub const REBIND: u8 = 6;
pub const REPLY: u8 = 7;
pub const INFORMATION_REQUEST: u8 = 11;

const OPT_CLIENTID: u16 = 1;
const OPT_SERVERID: u16 = 2;
const OPT_IA_NA: u16 = 3;
const OPT_IAADDR: u16 = 5;
const OPT_RAPID_COMMIT: u16 = 14;
const OPT_DNS_SERVERS: u16 = 23;

/// All_DHCP_Relay_Agents_and_Servers, where clients send.
pub const ALL_SERVERS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 1, 2);

/// What the server gives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Offer {
    pub ip: Ipv6Addr,
    pub dns: Vec<Ipv6Addr>,
    /// The server's DUID-LL: the bridge's MAC.
    pub server_mac: [u8; 6],
}

/// The parts of a client message the answer needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub kind: u8,
    pub xid: [u8; 3],
    pub client_id: Option<Vec<u8>>,
    pub server_id: Option<Vec<u8>>,
    /// The IAID of the client's (first) IA_NA.
    pub iaid: Option<[u8; 4]>,
    pub rapid_commit: bool,
}

pub fn parse(b: &[u8]) -> Option<Request> {
    if b.len() < 4 {
        return None;
    }
    let mut r = Request {
        kind: b[0],
        xid: [b[1], b[2], b[3]],
        client_id: None,
        server_id: None,
        iaid: None,
        rapid_commit: false,
    };
    let mut rest = &b[4..];
    while rest.len() >= 4 {
        let code = u16::from_be_bytes([rest[0], rest[1]]);
        let len = usize::from(u16::from_be_bytes([rest[2], rest[3]]));
        let data = rest.get(4..4 + len)?;
        match code {
            OPT_CLIENTID => r.client_id = Some(data.to_vec()),
            OPT_SERVERID => r.server_id = Some(data.to_vec()),
            OPT_IA_NA if r.iaid.is_none() && data.len() >= 12 => {
                r.iaid = Some([data[0], data[1], data[2], data[3]]);
            }
            OPT_RAPID_COMMIT => r.rapid_commit = true,
            _ => {}
        }
        rest = &rest[4 + len..];
    }
    Some(r)
}

/// DUID-LL (type 3, hardware type 1 ethernet) of a MAC.
pub fn duid(mac: [u8; 6]) -> Vec<u8> {
    let mut d = vec![0, 3, 0, 1];
    d.extend_from_slice(&mac);
    d
}

/// The message type to answer with, if any: a message without a client DUID, or one for
/// another server, gets nothing.
pub fn answer(req: &Request, offer: &Offer) -> Option<u8> {
    req.client_id.as_ref()?;
    if req
        .server_id
        .as_ref()
        .is_some_and(|s| *s != duid(offer.server_mac))
    {
        return None;
    }
    match req.kind {
        SOLICIT if req.rapid_commit => Some(REPLY),
        SOLICIT => Some(ADVERTISE),
        REQUEST | CONFIRM | RENEW | REBIND | INFORMATION_REQUEST => Some(REPLY),
        _ => None,
    }
}

/// Whether an answer of `kind` to `req` hands the address out (it carries the IA_NA).
pub fn leases(req: &Request, kind: u8) -> bool {
    kind == REPLY && req.iaid.is_some() && matches!(req.kind, SOLICIT | REQUEST | RENEW | REBIND)
}

fn option(out: &mut Vec<u8>, code: u16, data: &[u8]) {
    out.extend_from_slice(&code.to_be_bytes());
    out.extend_from_slice(&(data.len() as u16).to_be_bytes());
    out.extend_from_slice(data);
}

/// The answer: client and server DUIDs, the IA_NA with the address (lifetimes and T1/T2
/// infinite) where the client sent one, the DNS servers, rapid commit where it was used.
pub fn reply(req: &Request, kind: u8, offer: &Offer) -> Vec<u8> {
    let mut out = vec![kind, req.xid[0], req.xid[1], req.xid[2]];
    if let Some(c) = &req.client_id {
        option(&mut out, OPT_CLIENTID, c);
    }
    option(&mut out, OPT_SERVERID, &duid(offer.server_mac));
    if let Some(iaid) = req.iaid.filter(|_| req.kind != INFORMATION_REQUEST) {
        let mut addr = offer.ip.octets().to_vec();
        addr.extend_from_slice(&u32::MAX.to_be_bytes()); // preferred lifetime
        addr.extend_from_slice(&u32::MAX.to_be_bytes()); // valid lifetime
        let mut ia = iaid.to_vec();
        ia.extend_from_slice(&u32::MAX.to_be_bytes()); // T1
        ia.extend_from_slice(&u32::MAX.to_be_bytes()); // T2
        option(&mut ia, OPT_IAADDR, &addr);
        option(&mut out, OPT_IA_NA, &ia);
    }
    if !offer.dns.is_empty() {
        let d: Vec<u8> = offer.dns.iter().flat_map(|a| a.octets()).collect();
        option(&mut out, OPT_DNS_SERVERS, &d);
    }
    if kind == REPLY && req.kind == SOLICIT {
        option(&mut out, OPT_RAPID_COMMIT, &[]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A SOLICIT as busybox-less clients send it (the test guest's `dhcp6c`): client ID,
    /// IA_NA with IAID 1, elapsed time, rapid commit.
    fn solicit(rapid: bool) -> Vec<u8> {
        let mut m = vec![SOLICIT, 0xab, 0xcd, 0xef];
        option(&mut m, OPT_CLIENTID, &duid([2, 0, 0, 0, 0, 1]));
        option(&mut m, OPT_IA_NA, &[0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]);
        option(&mut m, 8, &[0, 0]);
        if rapid {
            option(&mut m, OPT_RAPID_COMMIT, &[]);
        }
        m
    }

    fn offer() -> Offer {
        Offer {
            ip: "fd10:0:2::2".parse().unwrap(),
            dns: vec!["fd00::a".parse().unwrap()],
            server_mac: [2, 0, 0, 0, 0, 0],
        }
    }

    /// The options of a message, in order.
    fn options(b: &[u8]) -> Vec<(u16, Vec<u8>)> {
        let mut v = vec![];
        let mut rest = &b[4..];
        while rest.len() >= 4 {
            let len = usize::from(u16::from_be_bytes([rest[2], rest[3]]));
            v.push((
                u16::from_be_bytes([rest[0], rest[1]]),
                rest[4..4 + len].to_vec(),
            ));
            rest = &rest[4 + len..];
        }
        v
    }

    #[test]
    fn a_rapid_solicit_gets_the_address_in_a_reply() {
        let req = parse(&solicit(true)).unwrap();
        assert_eq!(req.iaid, Some([0, 0, 0, 1]));
        let kind = answer(&req, &offer()).unwrap();
        assert_eq!(kind, REPLY);
        assert!(leases(&req, kind));
        let r = reply(&req, kind, &offer());
        assert_eq!(&r[..4], &[REPLY, 0xab, 0xcd, 0xef]);
        let o = options(&r);
        let codes: Vec<u16> = o.iter().map(|(c, _)| *c).collect();
        assert_eq!(
            codes,
            [
                OPT_CLIENTID,
                OPT_SERVERID,
                OPT_IA_NA,
                OPT_DNS_SERVERS,
                OPT_RAPID_COMMIT
            ]
        );
        assert_eq!(o[0].1, duid([2, 0, 0, 0, 0, 1]));
        assert_eq!(o[1].1, [0, 3, 0, 1, 2, 0, 0, 0, 0, 0]);
        let ia = &o[2].1;
        assert_eq!(&ia[..4], &[0, 0, 0, 1], "the client's IAID");
        assert_eq!(&ia[12..16], &[0, 5, 0, 24], "one IAADDR");
        let addr: [u8; 16] = ia[16..32].try_into().unwrap();
        assert_eq!(
            Ipv6Addr::from(addr),
            "fd10:0:2::2".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(&ia[32..40], &[0xff; 8], "infinite lifetimes");
        let dns: [u8; 16] = o[3].1.clone().try_into().unwrap();
        assert_eq!(Ipv6Addr::from(dns), "fd00::a".parse::<Ipv6Addr>().unwrap());
    }

    #[test]
    fn the_exchange_follows_rfc_8415() {
        let o = offer();
        let plain = parse(&solicit(false)).unwrap();
        assert_eq!(answer(&plain, &o), Some(ADVERTISE));
        assert!(!leases(&plain, ADVERTISE));
        let r = reply(&plain, ADVERTISE, &o);
        assert!(options(&r).iter().all(|(c, _)| *c != OPT_RAPID_COMMIT));
        let mut request = plain.clone();
        request.kind = REQUEST;
        request.server_id = Some(duid(o.server_mac));
        assert_eq!(answer(&request, &o), Some(REPLY));
        assert!(leases(&request, REPLY));
        request.server_id = Some(duid([2, 0, 0, 0, 0, 9]));
        assert_eq!(answer(&request, &o), None, "another server's");
        let mut release = plain.clone();
        release.kind = 8;
        assert_eq!(answer(&release, &o), None, "RELEASE");
        let mut anonymous = plain;
        anonymous.client_id = None;
        assert_eq!(answer(&anonymous, &o), None, "no client ID");
        assert_eq!(parse(&[1, 2]), None);
        assert_eq!(
            parse(&[1, 2, 3, 4, 0, 1, 0, 9, 1]),
            None,
            "option past the end"
        );
    }
}
