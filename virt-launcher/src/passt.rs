//! passt for the guest's interfaces with the passt binding (docs/networking.md): started
//! by the launcher, so in the pod's network namespace and as the launcher's user, before
//! the domain, which joins each by its unix socket (QEMU's `-netdev stream`). Debian 12's
//! libvirt has its passt backend disabled, so libvirt cannot start it. `--one-off`: passt
//! ends when QEMU's connection closes.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ferrovirt_node_contract::protocol::PasstInterface;

use crate::helpers::{Running, runs_as};
use crate::{Error, Result};

/// How long passt may take to make its socket.
const SOCKET_WAIT: Duration = Duration::from_secs(10);

/// The running passt processes by socket.
static RUNNING: Running<PasstInterface> = Running::new();

/// passt's port specification: the listed ports, `none`, or `all` when neither
/// protocol lists any (KubeVirt's passt forwards every port then).
fn spec(ports: &[u16], other: &[u16]) -> String {
    match (ports.is_empty(), other.is_empty()) {
        (true, true) => "all".into(),
        (true, false) => "none".into(),
        _ => ports
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(","),
    }
}

/// passt's arguments for `p`.
pub fn args(p: &PasstInterface) -> Vec<String> {
    [
        "--foreground",
        "--one-off",
        "--socket",
        &p.socket,
        "--interface",
        &p.pod_interface,
        "--tcp-ports",
        &spec(&p.tcp, &p.udp),
        "--udp-ports",
        &spec(&p.udp, &p.tcp),
    ]
    .map(str::to_owned)
    .to_vec()
}

/// Starts passt for each interface (blocking) and waits for its socket; one already
/// running with the same configuration is kept (a repeated define).
pub fn start(list: &[PasstInterface]) -> Result<()> {
    for p in list {
        let mut all = RUNNING.lock();
        if runs_as(&mut all, &p.socket, p) {
            continue;
        }
        let socket = Path::new(&p.socket);
        let _ = std::fs::remove_file(socket);
        // passt logs to syslog, which a pod has not, and to stderr only some of it: its
        // own log file has every message.
        let log = socket.with_extension("log");
        let err = socket.with_extension("stderr");
        let stderr = std::fs::File::create(&err).map_err(Error::io("creating", &err))?;
        let mut cmd = Command::new("passt");
        cmd.args(args(p))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        // passt started as root changes to nobody, who could not make the socket in the
        // VMI's directory (it still says it bound it): run it as the directory's owner.
        // The pod's launcher is not root (uid 107); the launcher's own tests are.
        // SAFETY: geteuid has no preconditions.
        // (As root, passt could not open its log file there either: stderr then.)
        if unsafe { libc::geteuid() } == 0 {
            let dir = socket.parent().unwrap_or(Path::new("/"));
            let meta = std::fs::metadata(dir).map_err(Error::io("reading", dir))?;
            cmd.arg("--runas")
                .arg(format!("{}:{}", meta.uid(), meta.gid()));
        } else {
            cmd.arg("--log-file").arg(&log);
        }
        // Without ports passt binds every port of both protocols (about 65,000 sockets):
        // it gets the open-file limit's hard value as its soft one.
        // SAFETY: getrlimit/setrlimit on a local struct, in the child before exec.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(|| {
                let mut l = libc::rlimit {
                    rlim_cur: 0,
                    rlim_max: 0,
                };
                if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) == 0 && l.rlim_cur < l.rlim_max {
                    l.rlim_cur = l.rlim_max;
                    libc::setrlimit(libc::RLIMIT_NOFILE, &l);
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(|e| {
            Error::Passt(format!(
                "starting passt: {e} (the launcher image installs Debian's passt)"
            ))
        })?;
        let started = Instant::now();
        while !socket.exists() {
            let said = || {
                let read = |f: &Path| std::fs::read_to_string(f).unwrap_or_default();
                format!("{}{}", read(&log), read(&err)).trim().to_owned()
            };
            if let Ok(Some(status)) = child.try_wait() {
                return Err(Error::Passt(format!(
                    "passt for {} exited ({status}): {}",
                    p.interface,
                    said()
                )));
            }
            if started.elapsed() > SOCKET_WAIT {
                let _ = child.kill();
                let _ = child.wait();
                return Err(Error::Passt(format!(
                    "passt for {} made no socket at {} within {} s: {}",
                    p.interface,
                    socket.display(),
                    SOCKET_WAIT.as_secs(),
                    said()
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        tracing::info!(interface = %p.interface, socket = %p.socket, pid = child.id(),
            args = ?args(p), took_ms = started.elapsed().as_millis() as u64, "passt started");
        all.insert(p.socket.clone(), (p.clone(), child));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(tcp: &[u16], udp: &[u16]) -> PasstInterface {
        PasstInterface {
            interface: "default".into(),
            socket: "/run/x/passt-default.sock".into(),
            pod_interface: "eth0".into(),
            tcp: tcp.to_vec(),
            udp: udp.to_vec(),
        }
    }

    #[test]
    fn every_port_without_ports_else_only_the_listed() {
        let all = args(&p(&[], &[]));
        assert!(all.windows(2).any(|w| w == ["--tcp-ports", "all"]));
        assert!(all.windows(2).any(|w| w == ["--udp-ports", "all"]));
        let some = args(&p(&[80, 443], &[]));
        assert!(some.windows(2).any(|w| w == ["--tcp-ports", "80,443"]));
        assert!(some.windows(2).any(|w| w == ["--udp-ports", "none"]));
        assert!(some.windows(2).any(|w| w == ["--interface", "eth0"]));
    }
}
