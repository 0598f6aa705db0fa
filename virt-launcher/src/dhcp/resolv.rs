//! The pod's `/etc/resolv.conf`: the nameservers (IPv4 by DHCP, IPv6 by DHCPv6) and the
//! search domains the guest is given.

use std::net::{Ipv4Addr, Ipv6Addr};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resolv {
    pub nameservers: Vec<Ipv4Addr>,
    pub nameservers6: Vec<Ipv6Addr>,
    pub search: Vec<String>,
}

/// A missing or unreadable file gives nothing (the guest gets no DNS), with a warning.
pub fn read(path: &str) -> Resolv {
    match std::fs::read_to_string(path) {
        Ok(text) => parse(&text),
        Err(e) => {
            tracing::warn!(path, error = %e, "no resolver configuration for the guest");
            Resolv::default()
        }
    }
}

pub fn parse(text: &str) -> Resolv {
    let mut r = Resolv::default();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => match words.next().map(str::parse) {
                Some(Ok(std::net::IpAddr::V4(a))) => r.nameservers.push(a),
                Some(Ok(std::net::IpAddr::V6(a))) => r.nameservers6.push(a),
                _ => {}
            },
            // The last search (or domain) line wins, as in the resolver.
            Some("search" | "domain") => r.search = words.map(str::to_owned).collect(),
            _ => {}
        }
    }
    r
}

#[cfg(test)]
mod tests {
    #[test]
    fn takes_the_nameservers_by_family_and_the_last_search_line() {
        let r = super::parse(
            "# kubelet\nnameserver 10.96.0.10\nnameserver fd00::a\nsearch a.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n",
        );
        assert_eq!(
            r.nameservers,
            vec!["10.96.0.10".parse::<std::net::Ipv4Addr>().unwrap()]
        );
        assert_eq!(
            r.nameservers6,
            vec!["fd00::a".parse::<std::net::Ipv6Addr>().unwrap()]
        );
        assert_eq!(
            r.search,
            ["a.svc.cluster.local", "svc.cluster.local", "cluster.local"]
        );
    }
}
