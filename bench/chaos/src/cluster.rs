//! The soak's cluster: the harness's control plane and Stack, a standby virt-controller,
//! the VMs; faults, restarts and snapshots.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use crds::{VirtualMachine, VirtualMachineInstance};
use ferrovirt_node_contract::paths::{RunDir, SERIAL_LOG, SERIAL_SOCKET};
use ferrovirt_node_contract::pod::CREATED_BY_LABEL;
use ferrovirt_tests::guest::READY_LINE as GUEST_LINE;
use ferrovirt_tests::{ControlPlane, Stack, Supervision, kill_tied, spawn_tied};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, ListParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::observe::{Expect, Snapshot, VmState, VmiState, evaluate};
use crate::procs::{self, Proc};
use crate::{Options, Report, Rng, Target};

/// The VMs' namespace, unique per run: libvirt domain names (`<namespace>_<vm>`) then
/// tell this run's guests from any other's on the machine.
fn namespace() -> &'static str {
    static NS: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NS.get_or_init(|| format!("chaos-{}", std::process::id()))
}
/// How long a killed component stays down before its "supervisor" starts it again.
const RESTART_DELAY: Duration = Duration::from_secs(1);
/// How long every check must keep passing before the cluster counts as settled.
const SETTLED_FOR: Duration = Duration::from_secs(3);
/// How long after a fault the soak watches at least: a killed leader's lease runs 15 s.
const WATCH: Duration = Duration::from_secs(20);

/// One guest boot: the VMI and its QEMU process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Boot {
    uid: String,
    qemu_pid: u32,
    qemu_start: u64,
}

pub struct Cluster {
    // Field order is drop order: the stack's processes before the control plane's.
    stack: Stack,
    cp: ControlPlane,
    _dir: tempfile::TempDir,
    logs: PathBuf,
    kubeconfig: String,
    vms: Vec<(String, &'static str)>,
    expect: Mutex<Vec<Expect>>,
    restarts: AtomicU32,
}

impl Cluster {
    /// A control plane, devnode, two virt-controllers, virt-handler, and `vms` VMs.
    pub async fn start(vms: usize) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("chaos-").tempdir()?;
        tracing::info!(dir = %dir.path().display(), "starting the control plane");
        let cp = ControlPlane::start(dir.path(), Supervision::Tied).await?;
        let stack = Stack::start(&cp, "chaos-node").await?;
        let logs = stack.logs_dir().to_path_buf();
        let kubeconfig = cp.kubeconfig().display().to_string();
        let cluster = Cluster {
            vms: plan(vms),
            expect: Mutex::new(plan(vms).iter().map(|(_, s)| initial(s)).collect()),
            stack,
            cp,
            _dir: dir,
            logs,
            kubeconfig,
            restarts: AtomicU32::new(0),
        };
        // The stack runs one virt-controller; a second one with the same flags is the
        // standby that takes the lease when the leader dies.
        let leader = cluster
            .controllers()
            .into_iter()
            .next()
            .context("the stack's virt-controller is not running")?;
        let mut argv = leader.argv.clone();
        if let Some(i) = argv.iter().position(|a| a == "--metrics-addr") {
            argv[i + 1] = format!("127.0.0.1:{}", free_port()?);
        }
        cluster.respawn("virt-controller-standby", &argv)?;
        cluster.create_vms().await?;
        Ok(cluster)
    }

    async fn client(&self) -> anyhow::Result<Client> {
        Ok(self.cp.client().await?)
    }

    async fn create_vms(&self) -> anyhow::Result<()> {
        let client = self.client().await?;
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": namespace()}}))?;
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await?;
        let vms: Api<VirtualMachine> = Api::namespaced(client, namespace());
        for (name, strategy) in &self.vms {
            vms.create(
                &PostParams::default(),
                &serde_json::from_value(manifest(name, strategy))?,
            )
            .await
            .with_context(|| format!("creating VM {name}"))?;
        }
        tracing::info!(vms = ?self.vms, "VMs created");
        Ok(())
    }

    fn controllers(&self) -> Vec<Proc> {
        procs::all()
            .into_iter()
            .filter(|p| p.program() == "virt-controller" && p.has_arg(&self.kubeconfig))
            .collect()
    }

    fn devnode(&self) -> Option<Proc> {
        let state = self.stack.state_dir.display().to_string();
        procs::all()
            .into_iter()
            .find(|p| p.program() == "devnode" && p.has_arg(&state) && !p.has_arg("stop-all"))
    }

    /// Starts `argv` again as a supervisor would, tied to this process.
    fn respawn(&self, name: &str, argv: &[String]) -> anyhow::Result<()> {
        let n = self.restarts.fetch_add(1, Ordering::Relaxed);
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..]);
        let log = self
            .logs
            .join(format!("{name}-{n}-{}.log", self.stack.node_name));
        spawn_tied(name, cmd, &log)?;
        Ok(())
    }

    /// SIGKILL a component of ours, then start it again with the same command line.
    async fn kill_and_restart(&self, name: &str, victim: Option<Proc>) -> anyhow::Result<()> {
        let Some(victim) = victim else {
            anyhow::bail!("no running {name} to kill");
        };
        kill_tied(Some(&[victim.pid]));
        procs::kill(victim.pid);
        tokio::time::sleep(RESTART_DELAY).await;
        self.respawn(name, &victim.argv)
    }

    async fn leader_pid(&self) -> anyhow::Result<Option<u32>> {
        let leases: Api<Lease> = Api::namespaced(self.client().await?, "kubevirt");
        let lease = leases.get_opt("virt-controller").await?;
        Ok(lease
            .and_then(|l| l.spec?.holder_identity)
            .and_then(|h| h.rsplit('_').next()?.parse().ok()))
    }

    /// Injects one fault; returns the VM it hit, if it hit one.
    pub async fn inject(&self, target: Target, rng: &mut Rng) -> anyhow::Result<Option<String>> {
        match target {
            Target::Leader | Target::Standby => {
                let leader = self.leader_pid().await?;
                let victim = self
                    .controllers()
                    .into_iter()
                    .find(|p| (Some(p.pid) == leader) == (target == Target::Leader));
                self.kill_and_restart("virt-controller", victim).await?;
                Ok(None)
            }
            Target::Handler => {
                self.stack.restart_handler()?;
                Ok(None)
            }
            Target::Devnode => {
                self.kill_and_restart("devnode", self.devnode()).await?;
                Ok(None)
            }
            Target::Apiserver => {
                self.cp
                    .restart_component("kube-apiserver", Duration::from_secs(2))
                    .await?;
                Ok(None)
            }
            Target::Etcd => {
                self.cp
                    .restart_component("etcd", Duration::from_secs(2))
                    .await?;
                Ok(None)
            }
            Target::Launcher | Target::Qemu | Target::GuestPoweroff => {
                let boots = self.boots();
                if boots.is_empty() {
                    tracing::warn!(target = target.name(), "no running guest to hit");
                    return Ok(None);
                }
                let names: Vec<&String> = boots.keys().collect();
                let vm = names[rng.below(names.len())].clone();
                let boot = &boots[&vm];
                match target {
                    Target::Qemu => procs::kill(boot.qemu_pid),
                    Target::Launcher => {
                        let launcher = procs::all()
                            .into_iter()
                            .find(|p| p.pid == procs_parent(boot.qemu_pid));
                        match launcher {
                            Some(l) => procs::kill(l.pid),
                            None => {
                                anyhow::bail!("VM {vm}: QEMU {} has no launcher", boot.qemu_pid)
                            }
                        }
                    }
                    _ => {
                        self.console(&boot.uid, "poweroff -f", None)?;
                        // A clean poweroff ends a RerunOnFailure VM; Always starts it again.
                        let i = self.vms.iter().position(|(n, _)| *n == vm).expect("our VM");
                        if self.vms[i].1 == "RerunOnFailure" {
                            self.expect.lock().unwrap()[i] = Expect::Stopped;
                        }
                    }
                }
                Ok(Some(vm))
            }
        }
    }

    /// The current boot of every VM whose guest runs (one QEMU under its launcher).
    pub fn boots(&self) -> BTreeMap<String, Boot> {
        let all = procs::all();
        let mut out = BTreeMap::new();
        for q in &all {
            let Some(domain) = q.qemu_domain() else {
                continue;
            };
            let Some(vm) = domain.strip_prefix(&format!("{}_", namespace())) else {
                continue;
            };
            let Some(uid) = all
                .iter()
                .find(|l| l.pid == q.ppid && l.program() == "virt-launcher")
                .and_then(|l| l.flag("--vmi-uid"))
            else {
                continue;
            };
            out.insert(
                vm.to_string(),
                Boot {
                    uid: uid.to_string(),
                    qemu_pid: q.pid,
                    qemu_start: q.start,
                },
            );
        }
        out
    }

    /// Guests left alone by this cycle's fault must be the same boot as before it.
    pub fn check_same_boots(
        &self,
        before: &BTreeMap<String, Boot>,
        hit: Option<&str>,
        target: Target,
        report: &mut Report,
    ) {
        let after = self.boots();
        for (vm, boot) in before {
            if hit == Some(vm.as_str()) {
                continue;
            }
            let kind = "guest rebooted although its launcher and QEMU were left alone";
            match after.get(vm) {
                Some(now) if now == boot => {
                    let log = RunDir::new(&self.stack.run_dir)
                        .vmi(&boot.uid)
                        .dir
                        .join(SERIAL_LOG);
                    let lines = std::fs::read_to_string(&log)
                        .map(|t| t.matches(GUEST_LINE).count())
                        .unwrap_or(0);
                    if lines != 1 {
                        report.violation(
                            kind,
                            format!(
                                "after {}: VM {vm}'s guest printed its ready line {lines} times",
                                target.name()
                            ),
                        );
                    }
                }
                now => report.violation(
                    kind,
                    format!("after {}: VM {vm} was {boot:?}, now {now:?}", target.name()),
                ),
            }
        }
    }

    async fn snapshot(&self) -> anyhow::Result<Snapshot> {
        let client = self.client().await?;
        let vms: Api<VirtualMachine> = Api::namespaced(client.clone(), namespace());
        let vmis: Api<VirtualMachineInstance> = Api::namespaced(client.clone(), namespace());
        let pods: Api<Pod> = Api::namespaced(client, namespace());
        let vm_list = vms.list(&ListParams::default()).await?;
        let vmi_list = vmis.list(&ListParams::default()).await?;
        let pod_list = pods.list(&ListParams::default()).await?;
        let expect = self.expect.lock().unwrap().clone();
        let now = k8s_openapi::jiff::Timestamp::now();
        let mut snap = Snapshot {
            namespace: namespace().into(),
            ..Default::default()
        };
        for ((name, _), expect) in self.vms.iter().zip(expect) {
            let vm = vm_list.items.iter().find(|v| v.name_any() == *name);
            let vmi = vmi_list.items.iter().find(|v| v.name_any() == *name);
            snap.vms.push((
                VmState {
                    name: name.clone(),
                    printable: vm.and_then(|v| v.status.as_ref()?.printable_status.clone()),
                    vmi: vmi.map(|v| VmiState {
                        uid: v.uid().unwrap_or_default(),
                        phase: v
                            .status
                            .as_ref()
                            .and_then(|s| s.phase.as_ref())
                            .map(|p| format!("{p:?}")),
                        age: v
                            .creation_timestamp()
                            .map(|t| {
                                Duration::from_secs(now.duration_since(t.0).as_secs().max(0) as u64)
                            })
                            .unwrap_or_default(),
                    }),
                },
                expect,
            ));
        }
        let all = procs::all();
        let is_launcher = |p: &Proc| {
            p.program() == "virt-launcher" && p.flag("--vmi-namespace") == Some(namespace())
        };
        for p in &all {
            // libvirt forks before it execs QEMU and its helpers: until the exec, such a
            // child still shows the launcher's command line. It is not a second launcher.
            let forked = all
                .iter()
                .any(|parent| parent.pid == p.ppid && is_launcher(parent));
            if is_launcher(p) && !forked {
                snap.launchers
                    .push((p.pid, p.flag("--vmi-uid").unwrap_or_default().to_string()));
            } else if let Some(d) = p.qemu_domain()
                && d.starts_with(&format!("{}_", namespace()))
            {
                snap.qemus.push((p.pid, p.ppid, d.to_string()));
            }
        }
        drop(all);
        let vmis_dir = RunDir::new(&self.stack.run_dir).vmis();
        snap.vmi_dirs = std::fs::read_dir(&vmis_dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        snap.pods = pod_list
            .items
            .iter()
            .map(|p| (p.name_any(), p.labels().get(CREATED_BY_LABEL).cloned()))
            .collect();
        Ok(snap)
    }

    /// Waits until every check passes or the bound runs out; counts what breaks an
    /// invariant on the way and what is still wrong at the end. Returns the time taken.
    pub async fn settle(
        &self,
        opts: &Options,
        report: &mut Report,
        cycle: Option<u32>,
    ) -> anyhow::Result<Duration> {
        let started = Instant::now();
        // A fault's effects may come late (a lease that expires, a resync): the cluster has
        // settled once every check has passed continuously for SETTLED_FOR, and at least
        // WATCH after the fault; the settle time is when that streak began.
        let mut streak: Option<Instant> = None;
        loop {
            let last = match self.snapshot().await {
                Ok(snap) => {
                    let findings = evaluate(&snap, opts.stuck_after);
                    for (kind, detail) in findings.broken.iter().chain(&findings.stuck) {
                        report.violation(kind, detail.clone());
                    }
                    if findings.settled() {
                        self.consoles_answer(&snap, cycle.unwrap_or(0))
                    } else {
                        findings.pending
                    }
                }
                Err(e) => vec![("VM not as expected after settling", format!("API: {e}"))],
            };
            if last.is_empty() {
                let since = *streak.get_or_insert_with(Instant::now);
                if since.elapsed() >= SETTLED_FOR && started.elapsed() >= WATCH {
                    return Ok(since - started);
                }
            } else {
                streak = None;
            }
            if started.elapsed() > opts.settle_timeout {
                for (kind, detail) in last {
                    report.violation(kind, format!("cycle {}: {detail}", cycle.unwrap_or(0)));
                }
                tracing::error!(
                    logs = %self.logs.display(),
                    "not settled within the bound; the components' logs:\n{}",
                    self.stack.log_tails(20)
                );
                return Ok(started.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Every guest that should run answers an arithmetic question on its console.
    fn consoles_answer(&self, snap: &Snapshot, cycle: u32) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        for (i, (vm, expect)) in snap.vms.iter().enumerate() {
            if *expect != Expect::Running {
                continue;
            }
            let Some(vmi) = &vm.vmi else { continue };
            let n = cycle as usize * 1000 + i;
            let question = format!("echo ck-$(({n} + 1))");
            let answer = format!("ck-{}", n + 1);
            if let Err(e) = self.console(&vmi.uid, &question, Some(&answer)) {
                out.push(("console did not answer", format!("VM {}: {e}", vm.name)));
            }
        }
        out
    }

    /// Types `line` on a guest's serial console until `expect` comes back (up to 15 s),
    /// typing it again every 4 s: busybox's shell asks the terminal for the cursor
    /// position at each prompt and may take typed bytes as the answer. With `None`, the
    /// line is a poweroff: done when the guest prints its last words or its console goes.
    fn console(&self, uid: &str, line: &str, expect: Option<&str>) -> anyhow::Result<()> {
        let socket = RunDir::new(&self.stack.run_dir)
            .vmi(uid)
            .dir
            .join(SERIAL_SOCKET);
        use ferrovirt_tests::guest::{ConsoleError, try_console_exchange};
        let want = expect.unwrap_or("Power down");
        match try_console_exchange(&socket, line, want, Duration::from_secs(15)) {
            Ok(_) => Ok(()),
            // The guest is gone: for a poweroff, that is the point.
            Err(ConsoleError::Closed(_) | ConsoleError::Io(..)) if expect.is_none() => Ok(()),
            Err(e) => {
                Err(anyhow::Error::new(e).context(format!("{line:?} on {}", socket.display())))
            }
        }
    }
}

fn procs_parent(pid: u32) -> u32 {
    procs::all()
        .into_iter()
        .find(|p| p.pid == pid)
        .map_or(0, |p| p.ppid)
}

/// `n` VMs: half Always, 30 % RerunOnFailure, the rest Halted (at least one of each).
fn plan(n: usize) -> Vec<(String, &'static str)> {
    let n = n.max(3);
    let always = (n / 2).max(1);
    let rerun = (n * 3 / 10).max(1);
    (0..n)
        .map(|i| {
            let strategy = if i < always {
                "Always"
            } else if i < always + rerun {
                "RerunOnFailure"
            } else {
                "Halted"
            };
            (format!("vm-{i}"), strategy)
        })
        .collect()
}

fn initial(strategy: &str) -> Expect {
    if strategy == "Halted" {
        Expect::Stopped
    } else {
        Expect::Running
    }
}

/// The test guest booted from its kernel image: the fastest boot there is.
fn manifest(name: &str, strategy: &str) -> serde_json::Value {
    json!({
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": name, "namespace": namespace()},
        "spec": {
            "runStrategy": strategy,
            "template": {"spec": {
                "terminationGracePeriodSeconds": 5,
                "domain": {
                    // The test guest's size: its initramfs (with the guest agent) does
                    // not unpack in less.
                    "memory": {"guest": format!("{}Mi", ferrovirt_tests::manifests::GUEST_MEMORY_MIB)},
                    "firmware": {"kernelBoot": {
                        "kernelArgs": "console=ttyS0 quiet cryptomgr.notests",
                        "container": {
                            "image": "ferrovirt/guest-kernel:latest",
                            "kernelPath": "/boot/vmlinux",
                            "initrdPath": "/boot/initrd.img"
                        }
                    }},
                    "devices": {}
                }
            }}
        }
    })
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plan_mixes_strategies() {
        let p = plan(10);
        let count = |s: &str| p.iter().filter(|(_, x)| *x == s).count();
        assert_eq!(
            (count("Always"), count("RerunOnFailure"), count("Halted")),
            (5, 3, 2)
        );
        let p = plan(3);
        assert_eq!(
            p.iter().map(|(_, s)| *s).collect::<Vec<_>>(),
            ["Always", "RerunOnFailure", "Halted"]
        );
    }
}
