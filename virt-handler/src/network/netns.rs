//! Running `ip`, `nft` and `sysctl` inside the launcher's network namespace
//! (`nsenter --net=/proc/<pid>/ns/net`), and finding out what is there.

use std::io::Write;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use super::plan::PodInterface;
use crate::{Error, Result};

/// The (real) gid of process `pid`, from `/proc/<pid>/status`.
pub fn gid_of(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Gid:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The network namespace of a process, by its pid in our PID namespace.
#[derive(Clone, Debug)]
pub struct NetNs {
    pub pid: u32,
}

impl NetNs {
    pub fn of(pid: u32) -> Self {
        NetNs { pid }
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/ns/net", self.pid))
    }

    /// Whether it is our own namespace (devnode runs launchers in the node's): then
    /// nothing may be changed in it.
    pub fn is_ours(&self) -> Result<bool> {
        let theirs = std::fs::metadata(self.path()).map_err(Error::io("reading", self.path()))?;
        let ours = std::fs::metadata("/proc/self/ns/net")
            .map_err(Error::io("reading", "/proc/self/ns/net"))?;
        use std::os::unix::fs::MetadataExt;
        Ok(theirs.ino() == ours.ino() && theirs.dev() == ours.dev())
    }

    /// Runs `program args` in the namespace with `stdin`; its stdout, or an error with its
    /// stderr.
    pub fn run(&self, program: &str, args: &[&str], stdin: Option<&str>) -> Result<String> {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", self.path().display()))
            .arg("--")
            .arg(program)
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let fail = |message: String| Error::Network {
            message: format!("{program} {}: {message}", args.join(" ")),
        };
        let mut child = cmd
            .spawn()
            .map_err(|e| fail(format!("starting nsenter: {e}")))?;
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(text.as_bytes())
                .map_err(|e| fail(format!("writing its input: {e}")))?;
        }
        let out = child
            .wait_with_output()
            .map_err(|e| fail(format!("waiting: {e}")))?;
        if !out.status.success() {
            return Err(fail(String::from_utf8_lossy(&out.stderr).trim().to_owned()));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Writes a sysctl of the namespace (`net.ipv4.ip_forward`): `/proc/sys/net` shows
    /// the namespace of the task that opens it, so a thread of ours enters it (setns) and
    /// writes there; no procps needed in the image.
    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        use std::os::fd::AsRawFd;
        let path = PathBuf::from("/proc/sys").join(key.replace('.', "/"));
        let ns = std::fs::File::open(self.path()).map_err(Error::io("opening", self.path()))?;
        let value = value.to_owned();
        let target = path.clone();
        let written = std::thread::spawn(move || {
            // SAFETY: setns(2) with a namespace fd we own, on this short-lived thread only.
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
            std::fs::write(&target, value)
        })
        .join()
        .map_err(|_| Error::Network {
            message: format!("writing {} panicked", path.display()),
        })?;
        written.map_err(Error::io("writing", path))
    }

    /// The pod's interface `name` as it is now: MAC, MTU, addresses, default gateway.
    pub fn pod_interface(&self, name: &str) -> Result<PodInterface> {
        let links: serde_json::Value =
            serde_json::from_str(&self.run("ip", &["-j", "addr", "show", "dev", name], None)?)?;
        let link = links.get(0).ok_or_else(|| Error::Network {
            message: format!("the pod has no interface {name}"),
        })?;
        let mut pod = PodInterface {
            name: name.to_owned(),
            mac: link["address"].as_str().unwrap_or_default().to_owned(),
            mtu: link["mtu"]
                .as_u64()
                .and_then(|m| u16::try_from(m).ok())
                .unwrap_or(1500),
            ipv4: None,
            other_ips: vec![],
            gateway4: None,
        };
        for a in link["addr_info"].as_array().into_iter().flatten() {
            let (Some(local), Some(prefix)) = (a["local"].as_str(), a["prefixlen"].as_u64()) else {
                continue;
            };
            match (a["family"].as_str(), a["scope"].as_str()) {
                (Some("inet"), _) if pod.ipv4.is_none() => {
                    if let Ok(ip) = local.parse::<Ipv4Addr>() {
                        pod.ipv4 = Some((ip, prefix as u8));
                    }
                }
                (Some("inet6"), Some("global")) => pod.other_ips.push(local.to_owned()),
                _ => {}
            }
        }
        let routes: serde_json::Value = serde_json::from_str(&self.run(
            "ip",
            &["-j", "-4", "route", "show", "default"],
            None,
        )?)?;
        pod.gateway4 = routes
            .as_array()
            .into_iter()
            .flatten()
            .find_map(|r| r["gateway"].as_str()?.parse().ok());
        Ok(pod)
    }
}
