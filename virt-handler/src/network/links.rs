//! A plan's [`Step`]s as commands in the pod's namespace.

use super::netns::NetNs;
use super::plan::Step;
use crate::Result;

/// Removes what an earlier, interrupted attempt left (the tap and the bridge; the NAT
/// table), so that applying again starts clean. Missing ones are fine.
pub fn clean(ns: &NetNs, table: &str) {
    for dev in [super::plan::TAP, super::plan::BRIDGE] {
        let _ = ns.run("ip", &["link", "del", dev], None);
    }
    for family in ["ip", "ip6"] {
        let _ = ns.run("nft", &["delete", "table", family, table], None);
    }
}

pub fn apply(ns: &NetNs, steps: &[Step]) -> Result<()> {
    for step in steps {
        tracing::debug!(?step, pid = ns.pid, "network step");
        match step {
            Step::Sysctl { key, value } => ns.sysctl(key, value)?,
            Step::FlushAddresses { dev } => {
                ns.run("ip", &["addr", "flush", "dev", dev], None)?;
            }
            Step::LinkDown { dev } => {
                ns.run("ip", &["link", "set", dev, "down"], None)?;
            }
            Step::SetMac { dev, mac } => {
                ns.run("ip", &["link", "set", dev, "address", mac], None)?;
            }
            Step::Bridge { name, mtu } => {
                ns.run(
                    "ip",
                    &[
                        "link",
                        "add",
                        name,
                        "mtu",
                        &mtu.to_string(),
                        "type",
                        "bridge",
                    ],
                    None,
                )?;
            }
            Step::Address { dev, cidr } if cidr.contains(':') => {
                // No duplicate address detection: the bridge's is the guest's gateway.
                ns.run("ip", &["addr", "add", cidr, "dev", dev, "nodad"], None)?;
            }
            Step::Address { dev, cidr } => {
                ns.run("ip", &["addr", "add", cidr, "dev", dev], None)?;
            }
            Step::Tap {
                name,
                owner,
                mtu,
                multi_queue,
            } => {
                let owner = owner.to_string();
                let mut args = vec![
                    "tuntap", "add", "dev", name, "mode", "tap", "user", &owner, "vnet_hdr",
                ];
                if *multi_queue {
                    args.push("multi_queue");
                }
                ns.run("ip", &args, None)?;
                ns.run("ip", &["link", "set", name, "mtu", &mtu.to_string()], None)?;
            }
            Step::Enslave { dev, bridge } => {
                ns.run("ip", &["link", "set", dev, "master", bridge], None)?;
            }
            Step::LinkUp { dev } => {
                ns.run("ip", &["link", "set", dev, "up"], None)?;
            }
        }
    }
    Ok(())
}
