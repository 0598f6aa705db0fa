//! The launcher's own libvirt: the embedded QEMU driver, opened in this process, holding
//! at most one domain for the launcher's lifetime. Every method blocks; call them from
//! `spawn_blocking`.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use tokio::sync::mpsc::UnboundedSender;
use virt::connect::Connect;
use virt::domain::{Domain, DomainState as VirState, DomainStateReason};
use virt::sys;

use crate::protocol::{DomainInfo, DomainState, Event, OpenFile};
use crate::{Error, Result};

/// Written when absent. QEMU runs as the launcher's own user: in the launcher pod that
/// is the non-root `qemu` user (uid 107, as KubeVirt's non-root mode), so libvirt runs
/// unprivileged and changes no owner; as root (the launcher's own tests) the `user` and
/// `group` lines keep QEMU root too. libvirt neither chowns nor labels files: virt-handler
/// hands the per-VMI files to the launcher's user. QEMU's stdout and the serial `<log>` go
/// straight to files, since there is no virtlogd in the pod. No cgroups of libvirt's own:
/// the pod's cgroup, which kubelet made, holds QEMU (a container's cgroup file system is
/// read-only), and no mount namespace of libvirt's own for QEMU (it needs CAP_SYS_ADMIN;
/// the pod is one).
const QEMU_CONF: &str = "\
dynamic_ownership = 0
remember_owner = 0
security_driver = \"none\"
stdio_handler = \"file\"
cgroup_controllers = [ ]
namespaces = [ ]
";

/// Added to [`QEMU_CONF`] when the launcher runs as root: libvirt's privileged driver
/// would otherwise run QEMU as its built-in user, and a TPM's swtpm as `tss`.
const QEMU_CONF_ROOT: &str = "\
user = \"root\"
group = \"root\"
swtpm_user = \"root\"
swtpm_group = \"root\"
";

/// qemu.conf for a launcher running as `euid`.
fn qemu_conf(euid: u32) -> String {
    if euid == 0 {
        format!("{QEMU_CONF_ROOT}{QEMU_CONF}")
    } else {
        QEMU_CONF.to_owned()
    }
}

pub struct Hypervisor {
    conn: Connect,
    root: PathBuf,
    vm: Mutex<Vm>,
}

#[derive(Default)]
struct Vm {
    name: Option<String>,
    started: bool,
    /// Started paused: the pause and the first resume are not the user's.
    held: bool,
}

/// libvirt's timeout of one guest agent command, seconds.
const AGENT_COMMAND_TIMEOUT: i32 = 5;

impl Hypervisor {
    /// Opens `qemu:///embed?root=<root>` and sends the domain's lifecycle events to `events`.
    pub fn open(root: &Path, events: UnboundedSender<Event>) -> Result<Self> {
        let etc = root.join("etc");
        std::fs::create_dir_all(&etc).map_err(Error::io("creating", &etc))?;
        let conf = etc.join("qemu.conf");
        if !conf.exists() {
            std::fs::write(&conf, qemu_conf(crate::nonroot::euid()))
                .map_err(Error::io("writing", &conf))?;
        }
        crate::eventloop::start()?;
        let uri = format!("qemu:///embed?root={}", root.display());
        let conn = Connect::open(Some(&uri))?;
        crate::lifecycle::register(&conn, events)?;
        tracing::info!(%uri, "opened embedded libvirt");
        Ok(Hypervisor {
            conn,
            root: root.to_owned(),
            vm: Mutex::default(),
        })
    }

    /// Defines the domain and starts it, unless it already runs. With `hold` its vCPUs
    /// stay stopped until `unpause`, and that pause and resume are not reported; with
    /// `user_paused` (the VMI's `startStrategy: Paused`) they stay stopped too, but the
    /// pause is reported like any other (it wins over `hold`).
    pub fn define_and_start(&self, xml: &str, hold: bool, user_paused: bool) -> Result<DomainInfo> {
        let mut vm = self.vm.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(running) = vm.name.clone() {
            let dom = self.conn.lookup_domain_by_name(&running)?;
            // Redefining a running domain would fail on an XML without <uuid>.
            if dom.is_active()? {
                let requested = domain_name(xml).unwrap_or_default();
                if requested != running {
                    return Err(Error::OtherDomain { running, requested });
                }
                tracing::info!(domain = %running, "domain already running");
                return self.info_of(&dom);
            }
        }
        let existed = self.conn.list_defined_domains()?;
        let dom = self.conn.define_domain_xml(xml)?;
        let name = dom.name()?;
        if let Some(running) = vm.name.as_ref().filter(|n| **n != name) {
            if !existed.contains(&name) && !dom.is_active()? {
                let _ = dom.undefine();
            }
            return Err(Error::OtherDomain {
                running: running.clone(),
                requested: name,
            });
        }
        vm.name = Some(name.clone());
        if dom.is_active()? {
            tracing::info!(domain = %name, "domain already running");
        } else if vm.started {
            return Err(Error::AlreadyStopped(name));
        } else {
            tracing::info!(domain = %name, hold, user_paused, "starting domain");
            // Before create: its pause event may arrive before create returns.
            vm.held = hold && !user_paused;
            let flags = if hold || user_paused {
                sys::VIR_DOMAIN_START_PAUSED
            } else {
                0
            };
            if let Err(e) = dom.create_with_flags(flags) {
                vm.held = false;
                return Err(e.into());
            }
            vm.started = true;
        }
        self.info_of(&dom)
    }

    /// The domain's state, or `None` before any define.
    pub fn info(&self) -> Result<Option<DomainInfo>> {
        match self.domain() {
            Ok(dom) => self.info_of(&dom).map(Some),
            Err(Error::NoDomain) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Presses the ACPI power button.
    pub fn shutdown(&self) -> Result<()> {
        let flags = sys::VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN;
        Ok(self.domain()?.shutdown_flags(flags)?)
    }

    pub fn destroy(&self) -> Result<()> {
        Ok(self.domain()?.destroy()?)
    }

    pub fn pause(&self) -> Result<()> {
        Ok(self.domain()?.suspend()?)
    }

    pub fn unpause(&self) -> Result<()> {
        Ok(self.domain()?.resume()?)
    }

    /// Runs one guest agent command (`execute` without arguments) and returns the agent's
    /// reply, `{"return": ...}`.
    pub fn agent_command(&self, execute: &str) -> Result<String> {
        let cmd = format!("{{\"execute\":\"{execute}\"}}");
        Ok(self
            .domain()?
            .qemu_agent_command(&cmd, AGENT_COMMAND_TIMEOUT, 0)?)
    }

    /// One guest agent command with its arguments, and libvirt's timeout for it.
    pub fn agent_execute(
        &self,
        command: &serde_json::Value,
        timeout_seconds: i32,
    ) -> Result<String> {
        Ok(self
            .domain()?
            .qemu_agent_command(&command.to_string(), timeout_seconds, 0)?)
    }

    /// The connection, for event registrations.
    pub fn connection(&self) -> &Connect {
        &self.conn
    }

    /// Whether an event is the pause or first resume of a paused start (and ends the
    /// hold on that resume).
    pub fn is_hold_event(&self, event: &Event) -> bool {
        let mut vm = self.vm.lock().unwrap_or_else(|e| e.into_inner());
        match event {
            Event::Paused => vm.held,
            Event::Resumed if vm.held => {
                vm.held = false;
                true
            }
            _ => false,
        }
    }

    /// Device and inode of every file QEMU holds open (read through `/proc/<pid>/fd`,
    /// which leads to the opened file itself whatever its path is now).
    pub fn open_files(&self) -> Result<Vec<OpenFile>> {
        use std::os::unix::fs::MetadataExt;
        let name = self.domain()?.name()?;
        let pid = self.qemu_pid(&name).ok_or(Error::NoDomain)?;
        let dir = PathBuf::from(format!("/proc/{pid}/fd"));
        let entries = std::fs::read_dir(&dir).map_err(Error::io("reading", &dir))?;
        Ok(entries
            .filter_map(|e| e.ok())
            .filter_map(|e| std::fs::metadata(e.path()).ok())
            .filter(|m| m.is_file())
            .map(|m| OpenFile {
                dev: m.dev(),
                ino: m.ino(),
            })
            .collect())
    }

    /// The guest's CPU time, online vCPUs and memory, and QEMU's version: what KubeVirt's
    /// downward metrics report of the VM.
    pub fn guest_stats(&self) -> Result<GuestStats> {
        let dom = self.domain()?;
        let info = dom.info()?;
        let n = info.nr_virt_cpu as usize;
        let empty = sys::virVcpuInfo {
            number: 0,
            state: 0,
            cpuTime: 0,
            cpu: 0,
        };
        let mut vcpus = vec![empty; n];
        // SAFETY: `vcpus` holds `n` entries for libvirt to fill; no CPU maps are asked for.
        let got = unsafe {
            sys::virDomainGetVcpus(
                dom.as_ptr(),
                vcpus.as_mut_ptr(),
                n as std::os::raw::c_int,
                std::ptr::null_mut(),
                0,
            )
        };
        let got = usize::try_from(got).map_err(|_| virt::error::Error::last_error())?;
        let vcpus = &vcpus[..got.min(n)];
        let balloon = dom
            .memory_stats(0)?
            .iter()
            .find(|s| s.tag == sys::VIR_DOMAIN_MEMORY_STAT_ACTUAL_BALLOON)
            .map_or(info.memory, |s| s.val);
        let v = self.conn.hyp_version()?;
        Ok(GuestStats {
            vcpu_time_ns: vcpus.iter().map(|v| v.cpuTime).sum(),
            online_vcpus: vcpus
                .iter()
                .filter(|v| v.state != sys::VIR_VCPU_OFFLINE as i32)
                .count() as i64,
            balloon_kib: balloon,
            qemu_version: format!("QEMU {}.{}.{}", v / 1_000_000, v / 1000 % 1000, v % 1000),
        })
    }

    pub fn is_active(&self) -> bool {
        self.domain()
            .and_then(|d| Ok(d.is_active()?))
            .unwrap_or(false)
    }

    /// Has libvirt probe QEMU's capabilities now rather than in the first define.
    pub fn probe_capabilities(&self) -> Result<()> {
        self.conn
            .domain_capabilities(None, Some("x86_64"), None, Some("qemu"), 0)?;
        Ok(())
    }

    /// Destroys every running domain of this libvirt; for exit paths, never fails.
    pub fn destroy_all(&self) {
        let flags = sys::VIR_CONNECT_LIST_DOMAINS_ACTIVE;
        for dom in self.conn.list_all_domains(flags).unwrap_or_default() {
            let name = dom.name().unwrap_or_default();
            match dom.destroy() {
                Ok(()) => tracing::warn!(domain = %name, "destroyed domain on exit"),
                Err(e) => tracing::error!(domain = %name, error = %e, "destroy on exit failed"),
            }
        }
    }

    fn domain(&self) -> Result<Domain> {
        let vm = self.vm.lock().unwrap_or_else(|e| e.into_inner());
        let name = vm.name.as_deref().ok_or(Error::NoDomain)?;
        Ok(self.conn.lookup_domain_by_name(name)?)
    }

    fn info_of(&self, dom: &Domain) -> Result<DomainInfo> {
        let name = dom.name()?;
        let (state, reason) = dom.state()?;
        let state = map_state(&state);
        let qemu_pid = match state {
            DomainState::Shutoff | DomainState::Crashed => None,
            _ => self.qemu_pid(&name),
        };
        Ok(DomainInfo {
            uuid: dom.uuid_string()?,
            name,
            state,
            reason: reason_name(&reason),
            qemu_pid,
        })
    }

    /// libvirt keeps QEMU's pid in `<root>/run/qemu/<name>.pid` while the domain runs.
    fn qemu_pid(&self, name: &str) -> Option<u32> {
        let path = self.root.join("run/qemu").join(format!("{name}.pid"));
        std::fs::read_to_string(path).ok()?.trim().parse().ok()
    }
}

/// The VM's part of the downward metrics ([`Hypervisor::guest_stats`]).
#[derive(Clone, Debug, PartialEq)]
pub struct GuestStats {
    /// The vCPUs' time, summed (libvirt's per-vCPU `cpuTime`).
    pub vcpu_time_ns: u64,
    pub online_vcpus: i64,
    /// The memory the balloon gives the guest (libvirt's `actual`), KiB.
    pub balloon_kib: u64,
    /// `QEMU <major>.<minor>.<micro>`, as KubeVirt's launcher reports it.
    pub qemu_version: String,
}

/// The text of the domain's `<name>` element: the first one, since libvirt's schema puts
/// no other plain `<name>` element in a domain.
fn domain_name(xml: &str) -> Option<String> {
    let start = xml.find("<name>")? + "<name>".len();
    let end = start + xml[start..].find("</name>")?;
    Some(xml[start..end].trim().to_owned())
}

fn map_state(state: &virt::enumutil::Enum<VirState, sys::virDomainState>) -> DomainState {
    use virt::enumutil::Enum;
    match state {
        Enum::Known(VirState::NoState) => DomainState::NoState,
        Enum::Known(VirState::Running) => DomainState::Running,
        Enum::Known(VirState::Blocked) => DomainState::Blocked,
        Enum::Known(VirState::Paused) => DomainState::Paused,
        Enum::Known(VirState::Shutdown) => DomainState::ShuttingDown,
        Enum::Known(VirState::Shutoff) => DomainState::Shutoff,
        Enum::Known(VirState::Crashed) => DomainState::Crashed,
        Enum::Known(VirState::PMSuspended) => DomainState::PmSuspended,
        _ => DomainState::Unknown,
    }
}

/// `Running(Known(Booted))` -> `booted`.
fn reason_name(reason: &virt::domain::DomainStateReasonEnum) -> String {
    use virt::enumutil::Enum;
    let debug = match reason {
        Enum::Known(r) => match r {
            DomainStateReason::NoState(x) => format!("{x:?}"),
            DomainStateReason::Running(x) => format!("{x:?}"),
            DomainStateReason::Blocked(x) => format!("{x:?}"),
            DomainStateReason::Paused(x) => format!("{x:?}"),
            DomainStateReason::Shutdown(x) => format!("{x:?}"),
            DomainStateReason::Shutoff(x) => format!("{x:?}"),
            DomainStateReason::Crashed(x) => format!("{x:?}"),
            DomainStateReason::PMSuspended(x) => format!("{x:?}"),
        },
        Enum::Unknown(n) => return format!("unknown({n})"),
    };
    let inner = debug
        .strip_prefix("Known(")
        .and_then(|s| s.strip_suffix(')'))
        .unwrap_or(&debug);
    inner.to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    #[test]
    fn finds_the_domain_name() {
        let xml = "<domain type='qemu'>\n  <name> vm1 </name><uuid>x</uuid></domain>";
        assert_eq!(super::domain_name(xml).as_deref(), Some("vm1"));
        assert_eq!(super::domain_name("<domain/>"), None);
    }
}
