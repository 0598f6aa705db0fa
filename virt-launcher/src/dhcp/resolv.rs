//! The pod's `/etc/resolv.conf`: the IPv4 nameservers and the search domains the guest
//! is given.

use std::net::Ipv4Addr;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resolv {
    pub nameservers: Vec<Ipv4Addr>,
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
            Some("nameserver") => {
                if let Some(a) = words.next().and_then(|a| a.parse().ok()) {
                    r.nameservers.push(a);
                }
            }
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
    fn takes_ipv4_nameservers_and_the_last_search_line() {
        let r = super::parse(
            "# kubelet\nnameserver 10.96.0.10\nnameserver fd00::a\nsearch a.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n",
        );
        assert_eq!(
            r.nameservers,
            vec!["10.96.0.10".parse::<std::net::Ipv4Addr>().unwrap()]
        );
        assert_eq!(
            r.search,
            ["a.svc.cluster.local", "svc.cluster.local", "cluster.local"]
        );
    }
}
