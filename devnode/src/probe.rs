//! Probes, evaluated as kubelet would for host-network pods.
//!
//! Exec probes `["test","-e",<path>]` and `["cat",<path>]` (the launcher's readiness
//! probe) are answered by looking at the path through the container's mounts, every
//! second; other exec probes run inside the container's namespaces (`devnode nsexec`).
//! tcpSocket connects to 127.0.0.1; httpGet sends a plain HTTP GET to 127.0.0.1 (an HTTPS
//! httpGet is only checked for a TCP connection); grpc probes reject the pod.

use crate::state::Mount;
use crate::{Error, Result};
use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

#[derive(Clone, Debug, PartialEq)]
pub enum Check {
    /// The host path the probed container path maps to must exist.
    Path(PathBuf),
    Exec(Vec<String>),
    Tcp(u16),
    Http {
        port: u16,
        path: String,
    },
}

/// The host path a path inside the container refers to (through its deepest mount).
pub fn host_path(path: &Path, mounts: &[Mount]) -> PathBuf {
    mounts
        .iter()
        .filter_map(|m| path.strip_prefix(&m.target).ok().map(|rest| (m, rest)))
        .max_by_key(|(m, _)| m.target.components().count())
        .map(|(m, rest)| {
            if rest.as_os_str().is_empty() {
                m.source.clone()
            } else {
                m.source.join(rest)
            }
        })
        .unwrap_or_else(|| path.to_path_buf())
}

fn port(c: &Container, p: &IntOrString) -> Result<u16> {
    match p {
        IntOrString::Int(n) => {
            u16::try_from(*n).map_err(|_| Error::Invalid(format!("probe port {n}")))
        }
        IntOrString::String(name) => c
            .ports
            .iter()
            .flatten()
            .find(|cp| cp.name.as_deref() == Some(name))
            .and_then(|cp| u16::try_from(cp.container_port).ok())
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "probe port {name:?}: no container port of that name"
                ))
            }),
    }
}

/// What a probe checks, decided once per container start.
pub fn plan(p: &Probe, c: &Container, mounts: &[Mount]) -> Result<Check> {
    if let Some(cmd) = p.exec.as_ref().and_then(|e| e.command.clone()) {
        return Ok(match cmd.as_slice() {
            [t, e, path] if t == "test" && e == "-e" => {
                Check::Path(host_path(Path::new(path), mounts))
            }
            [cat, path] if cat == "cat" => Check::Path(host_path(Path::new(path), mounts)),
            _ => Check::Exec(cmd),
        });
    }
    if let Some(t) = &p.tcp_socket {
        return Ok(Check::Tcp(port(c, &t.port)?));
    }
    if let Some(h) = &p.http_get {
        let port = port(c, &h.port)?;
        return Ok(match h.scheme.as_deref() {
            Some("HTTPS") => Check::Tcp(port),
            _ => Check::Http {
                port,
                path: h.path.clone().unwrap_or_else(|| "/".into()),
            },
        });
    }
    Err(Error::Unsupported(format!(
        "container {:?}: only exec, tcpSocket and httpGet probes are supported by devnode",
        c.name
    )))
}

/// Rejects pods with probes devnode cannot evaluate.
pub fn check(c: &Container) -> Result<()> {
    for p in [&c.readiness_probe, &c.liveness_probe, &c.startup_probe]
        .into_iter()
        .flatten()
    {
        plan(p, c, &[])?;
    }
    Ok(())
}

async fn http(port: u16, path: &str) -> bool {
    let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return false;
    };
    let req = format!(
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: devnode-probe\r\n\r\n"
    );
    if s.write_all(req.as_bytes()).await.is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    if s.read_exact(&mut head).await.is_err() {
        return false;
    }
    let code: u16 = std::str::from_utf8(&head[9..12])
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (200..400).contains(&code)
}

/// Runs one check; `pid` is the container's main process (for exec probes).
pub async fn run(check: &Check, self_exe: &Path, pid: i32, timeout: Duration) -> bool {
    let fut = async {
        match check {
            Check::Path(p) => p.exists(),
            Check::Tcp(port) => tokio::net::TcpStream::connect(("127.0.0.1", *port))
                .await
                .is_ok(),
            Check::Http { port, path } => http(*port, path).await,
            Check::Exec(cmd) => tokio::process::Command::new(self_exe)
                .arg("nsexec")
                .arg(pid.to_string())
                .args(cmd)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .status()
                .await
                .map(|s| s.success())
                .unwrap_or(false),
        }
    };
    tokio::time::timeout(timeout, fut).await.unwrap_or(false)
}

/// One probe of one running container, with kubelet's thresholds and timing.
#[derive(Debug)]
pub struct Tracker {
    pub check: Check,
    period: Duration,
    timeout: Duration,
    success_threshold: i32,
    failure_threshold: i32,
    next: Instant,
    successes: i32,
    failures: i32,
    /// The probe's verdict so far.
    pub ok: bool,
}

impl Tracker {
    pub fn new(p: &Probe, check: Check, now: Instant) -> Self {
        let secs = |v: Option<i32>, d: i32| Duration::from_secs(v.unwrap_or(d).max(0) as u64);
        // Path checks cost nothing: look every second, whatever the period says.
        let period = if matches!(check, Check::Path(_)) {
            Duration::from_secs(1)
        } else {
            secs(p.period_seconds, 10)
        };
        Tracker {
            check,
            period,
            timeout: secs(p.timeout_seconds, 1),
            success_threshold: p.success_threshold.unwrap_or(1).max(1),
            failure_threshold: p.failure_threshold.unwrap_or(3).max(1),
            next: now + secs(p.initial_delay_seconds, 0),
            successes: 0,
            failures: 0,
            ok: false,
        }
    }

    pub fn due(&self, now: Instant) -> Option<Instant> {
        (self.next > now).then_some(self.next)
    }

    /// Records one result; returns true when the probe has failed failureThreshold times in a row.
    pub fn record(&mut self, success: bool, now: Instant) -> bool {
        self.next = now + self.period;
        if success {
            self.failures = 0;
            self.successes += 1;
            if self.successes >= self.success_threshold {
                self.ok = true;
            }
            false
        } else {
            self.successes = 0;
            self.failures += 1;
            if self.failures >= self.failure_threshold {
                self.ok = false;
                return true;
            }
            false
        }
    }

    pub async fn probe(&mut self, self_exe: &Path, pid: i32) -> bool {
        let now = Instant::now();
        if self.next > now {
            return false;
        }
        let success = run(&self.check, self_exe, pid, self.timeout).await;
        self.record(success, Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn probe(v: serde_json::Value) -> Probe {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn launcher_ready_probe_maps_through_the_vmi_dir_mount() {
        let mounts = [
            Mount {
                source: "/run/ferrovirt/vmis/u1".into(),
                target: "/var/run/ferrovirt/vmi".into(),
                read_only: false,
            },
            Mount {
                source: "/x".into(),
                target: "/var".into(),
                read_only: false,
            },
        ];
        let c = Container {
            name: "compute".into(),
            ..Default::default()
        };
        let p = probe(json!({"exec": {"command": ["test", "-e", "/var/run/ferrovirt/vmi/ready"]}}));
        assert_eq!(
            plan(&p, &c, &mounts).unwrap(),
            Check::Path("/run/ferrovirt/vmis/u1/ready".into())
        );
        let p = probe(json!({"exec": {"command": ["cat", "/etc/hostname"]}}));
        assert_eq!(
            plan(&p, &c, &mounts).unwrap(),
            Check::Path("/etc/hostname".into())
        );
        let p = probe(json!({"exec": {"command": ["sh", "-c", "true"]}}));
        assert!(matches!(plan(&p, &c, &mounts).unwrap(), Check::Exec(_)));
    }

    #[test]
    fn named_ports_and_unsupported_probes() {
        let c: Container = serde_json::from_value(
            json!({"name": "c", "ports": [{"name": "http", "containerPort": 8080}]}),
        )
        .unwrap();
        let p = probe(json!({"httpGet": {"port": "http", "path": "/healthz"}}));
        assert_eq!(
            plan(&p, &c, &[]).unwrap(),
            Check::Http {
                port: 8080,
                path: "/healthz".into()
            }
        );
        let p = probe(json!({"grpc": {"port": 9000}}));
        assert!(matches!(plan(&p, &c, &[]), Err(Error::Unsupported(_))));
    }

    #[test]
    fn thresholds() {
        let p = probe(
            json!({"exec": {"command": ["x"]}, "failureThreshold": 2, "successThreshold": 1}),
        );
        let now = Instant::now();
        let mut t = Tracker::new(&p, Check::Exec(vec![]), now);
        assert!(!t.record(true, now));
        assert!(t.ok);
        assert!(!t.record(false, now));
        assert!(t.ok);
        assert!(t.record(false, now));
        assert!(!t.ok);
    }
}
