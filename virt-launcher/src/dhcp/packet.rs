//! DHCP messages (RFC 2131/2132): parsing a client's request and building the server's
//! answer. Only what a one-address server needs: DISCOVER, REQUEST (and RELEASE/DECLINE
//! ignored), OFFER, ACK, NAK.

use std::net::Ipv4Addr;

const MAGIC: [u8; 4] = [99, 130, 83, 99];
/// op, htype, hlen, hops, xid, secs, flags, ciaddr, yiaddr, siaddr, giaddr, chaddr, sname, file.
const HEADER: usize = 236;

pub const DISCOVER: u8 = 1;
pub const OFFER: u8 = 2;
pub const REQUEST: u8 = 3;
pub const ACK: u8 = 5;
pub const NAK: u8 = 6;

/// What the server needs of a client's message.
#[derive(Debug, PartialEq, Eq)]
pub struct Request {
    pub kind: u8,
    pub xid: [u8; 4],
    pub flags: [u8; 2],
    pub ciaddr: Ipv4Addr,
    pub chaddr: [u8; 6],
    /// Option 50.
    pub requested_ip: Option<Ipv4Addr>,
    /// Option 54.
    pub server_id: Option<Ipv4Addr>,
}

/// Parses a BOOTREQUEST from an Ethernet client; `None` for anything else.
pub fn parse(buf: &[u8]) -> Option<Request> {
    if buf.len() < HEADER + 4 || buf[0] != 1 || buf[1] != 1 || buf[2] != 6 {
        return None;
    }
    if buf[HEADER..HEADER + 4] != MAGIC {
        return None;
    }
    let ip = |at: usize| Ipv4Addr::new(buf[at], buf[at + 1], buf[at + 2], buf[at + 3]);
    let mut req = Request {
        kind: 0,
        xid: buf[4..8].try_into().ok()?,
        flags: buf[10..12].try_into().ok()?,
        ciaddr: ip(12),
        chaddr: buf[28..34].try_into().ok()?,
        requested_ip: None,
        server_id: None,
    };
    let mut i = HEADER + 4;
    while i < buf.len() {
        let code = buf[i];
        if code == 0 {
            i += 1;
            continue;
        }
        if code == 255 {
            break;
        }
        let len = *buf.get(i + 1)? as usize;
        let value = buf.get(i + 2..i + 2 + len)?;
        match (code, len) {
            (53, 1) => req.kind = value[0],
            (50, 4) => {
                req.requested_ip = Some(Ipv4Addr::new(value[0], value[1], value[2], value[3]))
            }
            (54, 4) => req.server_id = Some(Ipv4Addr::new(value[0], value[1], value[2], value[3])),
            _ => {}
        }
        i += 2 + len;
    }
    (req.kind != 0).then_some(req)
}

/// The options of an OFFER or ACK.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Offer {
    pub server_id: Ipv4Addr,
    pub ip: Ipv4Addr,
    pub prefix: u8,
    pub router: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub search: Vec<String>,
    pub mtu: Option<u16>,
    pub hostname: Option<String>,
    /// Seconds; `u32::MAX` is infinite (RFC 2131 3.3).
    pub lease_seconds: u32,
}

/// The server's answer of type `kind` to `req`; a NAK carries no address or options but
/// the server identifier.
pub fn reply(req: &Request, kind: u8, offer: &Offer) -> Vec<u8> {
    let mut b = vec![0u8; HEADER];
    b[0] = 2; // BOOTREPLY
    b[1] = 1;
    b[2] = 6;
    b[4..8].copy_from_slice(&req.xid);
    b[10..12].copy_from_slice(&req.flags);
    if kind != NAK {
        b[16..20].copy_from_slice(&offer.ip.octets());
        b[20..24].copy_from_slice(&offer.server_id.octets());
    }
    b[28..34].copy_from_slice(&req.chaddr);
    b.extend_from_slice(&MAGIC);
    let mut opt = |code: u8, value: &[u8]| {
        // Longer values are split over repeated options (RFC 3396).
        for chunk in value.chunks(255) {
            b.push(code);
            b.push(chunk.len() as u8);
            b.extend_from_slice(chunk);
        }
    };
    opt(53, &[kind]);
    opt(54, &offer.server_id.octets());
    if kind != NAK {
        opt(51, &offer.lease_seconds.to_be_bytes());
        opt(1, &mask(offer.prefix).octets());
        if let Some(r) = offer.router {
            opt(3, &r.octets());
        }
        if !offer.dns.is_empty() {
            let v: Vec<u8> = offer.dns.iter().flat_map(|a| a.octets()).collect();
            opt(6, &v);
        }
        if let Some(first) = offer.search.first() {
            opt(15, first.as_bytes());
            opt(119, &search_list(&offer.search));
        }
        if let Some(mtu) = offer.mtu {
            opt(26, &mtu.to_be_bytes());
        }
        if let Some(h) = &offer.hostname {
            opt(12, h.as_bytes());
        }
    }
    b.push(255);
    // Some clients want at least a BOOTP-sized (300 byte) message.
    if b.len() < 300 {
        b.resize(300, 0);
    }
    b
}

pub fn mask(prefix: u8) -> Ipv4Addr {
    let p = u32::from(prefix.min(32));
    Ipv4Addr::from(if p == 0 { 0 } else { u32::MAX << (32 - p) })
}

/// Option 119 (RFC 3397): the domains as DNS names, uncompressed.
fn search_list(domains: &[String]) -> Vec<u8> {
    let mut v = Vec::new();
    for d in domains {
        for label in d.trim_end_matches('.').split('.').filter(|l| !l.is_empty()) {
            let label = &label.as_bytes()[..label.len().min(63)];
            v.push(label.len() as u8);
            v.extend_from_slice(label);
        }
        v.push(0);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn discover(kind: u8, extra: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; HEADER];
        b[0] = 1;
        b[1] = 1;
        b[2] = 6;
        b[4..8].copy_from_slice(&[1, 2, 3, 4]);
        b[10] = 0x80;
        b[28..34].copy_from_slice(&[2, 0, 0, 0, 0, 9]);
        b.extend_from_slice(&MAGIC);
        b.extend_from_slice(&[53, 1, kind]);
        b.extend_from_slice(extra);
        b.push(255);
        b
    }

    #[test]
    fn parses_a_request_with_its_address_and_server() {
        let r = parse(&discover(
            REQUEST,
            &[0, 50, 4, 10, 0, 2, 2, 54, 4, 10, 0, 2, 1],
        ))
        .unwrap();
        assert_eq!(r.kind, REQUEST);
        assert_eq!(r.xid, [1, 2, 3, 4]);
        assert_eq!(r.flags, [0x80, 0]);
        assert_eq!(r.chaddr, [2, 0, 0, 0, 0, 9]);
        assert_eq!(r.requested_ip, Some(Ipv4Addr::new(10, 0, 2, 2)));
        assert_eq!(r.server_id, Some(Ipv4Addr::new(10, 0, 2, 1)));
    }

    #[test]
    fn refuses_replies_truncation_and_missing_type() {
        let mut reply_op = discover(DISCOVER, &[]);
        reply_op[0] = 2;
        assert_eq!(parse(&reply_op), None);
        assert_eq!(parse(&discover(DISCOVER, &[])[..100]), None);
        let mut no_type = discover(DISCOVER, &[]);
        no_type[HEADER + 4] = 0; // the type option becomes padding and junk
        no_type[HEADER + 5] = 0;
        no_type[HEADER + 6] = 0;
        assert_eq!(parse(&no_type), None);
        // An option running past the end.
        let mut cut = discover(DISCOVER, &[]);
        cut.pop();
        cut.extend_from_slice(&[50, 4, 10]);
        assert_eq!(parse(&cut), None);
    }

    #[test]
    fn an_ack_carries_the_address_and_every_option() {
        let req = parse(&discover(REQUEST, &[])).unwrap();
        let offer = Offer {
            server_id: Ipv4Addr::new(10, 0, 2, 1),
            ip: Ipv4Addr::new(10, 0, 2, 2),
            prefix: 24,
            router: Some(Ipv4Addr::new(10, 0, 2, 1)),
            dns: vec![Ipv4Addr::new(10, 96, 0, 10)],
            search: vec!["default.svc.cluster.local".into(), "cluster.local".into()],
            mtu: Some(1450),
            hostname: Some("vm1".into()),
            lease_seconds: u32::MAX,
        };
        let b = reply(&req, ACK, &offer);
        assert_eq!(b[0], 2);
        assert_eq!(&b[4..8], &[1, 2, 3, 4]);
        assert_eq!(&b[16..20], &[10, 0, 2, 2]);
        assert_eq!(&b[28..34], &[2, 0, 0, 0, 0, 9]);
        let opts = &b[HEADER + 4..];
        let find = |code: u8| {
            let mut i = 0;
            while i < opts.len() && opts[i] != 255 {
                if opts[i] == code {
                    return Some(&opts[i + 2..i + 2 + opts[i + 1] as usize]);
                }
                i += 2 + opts[i + 1] as usize;
            }
            None
        };
        assert_eq!(find(53), Some(&[ACK][..]));
        assert_eq!(find(1), Some(&[255, 255, 255, 0][..]));
        assert_eq!(find(3), Some(&[10, 0, 2, 1][..]));
        assert_eq!(find(6), Some(&[10, 96, 0, 10][..]));
        assert_eq!(find(15), Some(&b"default.svc.cluster.local"[..]));
        assert_eq!(
            find(119).unwrap(),
            &b"\x07default\x03svc\x07cluster\x05local\x00\x07cluster\x05local\x00"[..]
        );
        assert_eq!(find(26), Some(&1450u16.to_be_bytes()[..]));
        assert_eq!(find(12), Some(&b"vm1"[..]));
        assert_eq!(find(51), Some(&[255, 255, 255, 255][..]));
        let nak = reply(&req, NAK, &offer);
        assert_eq!(&nak[16..20], &[0, 0, 0, 0]);
    }

    #[test]
    fn masks() {
        assert_eq!(mask(24), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(mask(0), Ipv4Addr::new(0, 0, 0, 0));
        assert_eq!(mask(32), Ipv4Addr::new(255, 255, 255, 255));
        assert_eq!(mask(20), Ipv4Addr::new(255, 255, 240, 0));
    }
}
