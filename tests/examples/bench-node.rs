//! Node benchmark (bench/README.md, "Node"): run by `bench/node.sh`.
//!
//! Starts the test control plane and the whole Ferrovirt stack (devnode, virt-controller,
//! virt-handler; launchers with embedded libvirt and QEMU under TCG), then measures:
//!
//! 1. Boot latency: `kubectl apply` of a kernel-boot VM to the first appearance of
//!    `FERROVIRT GUEST READY` in the VMI's `serial0.log`, against a raw
//!    `qemu-system-x86_64 -accel tcg` boot of the same kernel, initrd, memory, machine and
//!    command line to the same line, interleaved, `--reps` times each (after one unmeasured
//!    warm-up of each). Also where the Ferrovirt time goes, from the moments this program's
//!    VMI watch saw each phase (the VMI's own phaseTransitionTimestamps have one-second
//!    resolution).
//! 2. Per-VM node overhead with 1 and then `--vms` VMs running: RSS, PSS and USS of each
//!    launcher and its non-QEMU descendants, QEMU's for information.
//!
//! Prints a markdown report to stdout (progress goes to stderr); `--append FILE` also
//! appends it to FILE. The components come from `$FERROVIRT_BIN_DIR` (default
//! `target/debug`, see `workspace_bin`).

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use crds::{VirtualMachine, VirtualMachineInstance, VmiPhase};
use ferrovirt_node_contract::pod::COMPUTE_CONTAINER;
use ferrovirt_tests::guest::READY_LINE;
use ferrovirt_tests::{ControlPlane, Stack, TestNamespace, image_store, manifests, shared};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use kube::runtime::watcher;
use tokio::io::{AsyncBufReadExt, BufReader};

/// The kernel-boot test guest (docs/guests.md) and the arguments e2e.rs boots it with.
const GUEST_IMAGE: &str = manifests::GUEST_KERNEL_IMAGE;
const KERNEL_ARGS: &str = manifests::GUEST_KERNEL_ARGS;
const MEMORY_MIB: u32 = manifests::GUEST_MEMORY_MIB;
const MACHINE: &str = "q35";
const BOOT_TIMEOUT: Duration = Duration::from_secs(240);
const POLL: Duration = Duration::from_millis(25);
/// KubeVirt's own estimate of its fixed per-VM overhead (DESIGN.md).
const KUBEVIRT_FIXED_MIB: f64 = 240.0;
const TARGET_MIB: f64 = 48.0;
const TARGET_RATIO: f64 = 1.25;

#[derive(Parser)]
#[command(about = "Ferrovirt node benchmark: boot latency against raw QEMU, and per-VM overhead")]
struct Args {
    /// Measured boots of each kind (Ferrovirt and raw QEMU), interleaved.
    #[arg(long, default_value_t = 5)]
    reps: usize,
    /// VMs running at once for the second overhead measurement.
    #[arg(long, default_value_t = 10)]
    vms: usize,
    /// Seconds to let memory settle after the ready lines before reading it.
    #[arg(long, default_value_t = 5)]
    settle: u64,
    /// Also append the report to this file (bench/README.md).
    #[arg(long)]
    append: Option<PathBuf>,
    /// Skip the boot latency part.
    #[arg(long)]
    no_boot: bool,
    /// Skip the overhead part.
    #[arg(long)]
    no_overhead: bool,
    /// Skip the extra raw boot with the display devices libvirt gives Ferrovirt's guest.
    #[arg(long)]
    no_raw_display: bool,
}

macro_rules! progress {
    ($($t:tt)*) => { eprintln!("[bench-node] {}", format!($($t)*)) };
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    // Logs to stderr (the harness's own default writes to stdout); shared() keeps this one.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new("warn,kube_client::client::builder=off")
            }),
        )
        .with_writer(std::io::stderr)
        .try_init();

    let load_start = loadavg();
    let started = Instant::now();
    progress!("starting the control plane and the stack");
    let cp = shared().await;
    let stack = Stack::start(cp, "bench-node")
        .await
        .map_err(|e| anyhow::anyhow!("starting Ferrovirt: {e}"))?;
    let ns = TestNamespace::create(cp, "bench-node").await?;
    let client = cp.client().await?;
    let vmis: Api<VirtualMachineInstance> = Api::namespaced(client.clone(), ns.name());
    let tracker = Tracker::start(vmis.clone());
    let bench = Bench {
        cp,
        stack: &stack,
        ns: &ns,
        client,
        vmis,
        tracker,
        kernel: kernel_files()?,
    };
    let mut report = Report {
        load: vec![load_start],
        ..Default::default()
    };

    if !args.no_boot {
        boot_latency(&bench, &args, &mut report).await?;
    }
    if !args.no_overhead {
        overhead(&bench, &args, &mut report).await?;
    }
    report.load.push(loadavg());
    report.wall = started.elapsed();

    let text = report.markdown(&args);
    print!("{text}");
    std::io::stdout().flush()?;
    if let Some(file) = &args.append {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(file)
            .with_context(|| format!("opening {}", file.display()))?;
        write!(f, "\n{text}")?;
        progress!("appended the report to {}", file.display());
    }
    Ok(())
}

struct Bench<'a> {
    cp: &'a ControlPlane,
    stack: &'a Stack,
    ns: &'a TestNamespace,
    client: kube::Client,
    vmis: Api<VirtualMachineInstance>,
    tracker: Tracker,
    kernel: (PathBuf, PathBuf),
}

/// The VM of the benchmark: the kernel-boot test guest, nothing else.
fn vm_manifest(name: &str) -> String {
    manifests::kernel_boot_vm(name, "Always", None)
}

/// The vmlinux and initrd the image store maps the guest image to.
fn kernel_files() -> Result<(PathBuf, PathBuf)> {
    let store = image_store();
    let index = std::fs::read_to_string(store.join("index.tsv"))?;
    let dir = index
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{GUEST_IMAGE}\t")))
        .with_context(|| format!("{GUEST_IMAGE} is not in the image store's index"))?;
    let dir = PathBuf::from(dir);
    Ok((dir.join("boot/vmlinux"), dir.join("boot/initrd.img")))
}

// ---------------------------------------------------------------------------------------
// The VMI watch: when this program first saw each VMI's uid and phases.

#[derive(Default, Clone)]
struct Seen {
    uid: Option<String>,
    phases: Vec<(VmiPhase, Instant)>,
}

#[derive(Clone)]
struct Tracker(Arc<Mutex<HashMap<String, Seen>>>);

impl Tracker {
    fn start(api: Api<VirtualMachineInstance>) -> Self {
        let map = Arc::new(Mutex::new(HashMap::<String, Seen>::new()));
        let inner = map.clone();
        tokio::spawn(async move {
            let mut events = watcher(api, watcher::Config::default()).boxed();
            while let Some(event) = events.next().await {
                let now = Instant::now();
                let vmi = match event {
                    Ok(watcher::Event::Apply(v) | watcher::Event::InitApply(v)) => v,
                    _ => continue,
                };
                let (Some(name), Some(uid)) = (vmi.metadata.name.clone(), vmi.metadata.uid.clone())
                else {
                    continue;
                };
                let mut map = inner.lock().unwrap();
                let seen = map.entry(name).or_default();
                if seen.uid.as_deref() != Some(&uid) {
                    *seen = Seen {
                        uid: Some(uid),
                        phases: Vec::new(),
                    };
                }
                if let Some(phase) = vmi.status.and_then(|s| s.phase)
                    && !seen.phases.iter().any(|(p, _)| *p == phase)
                {
                    seen.phases.push((phase, now));
                }
            }
        });
        Tracker(map)
    }

    fn get(&self, name: &str) -> Seen {
        self.0
            .lock()
            .unwrap()
            .get(name)
            .cloned()
            .unwrap_or_default()
    }

    fn forget(&self, name: &str) {
        self.0.lock().unwrap().remove(name);
    }
}

// ---------------------------------------------------------------------------------------
// Boot latency.

struct FvBoot {
    total: f64,
    apply: f64,
    scheduled: Option<f64>,
    running: Option<f64>,
    qemu_cpu: Option<f64>,
}

struct RawBoot {
    total: f64,
    qemu_cpu: Option<f64>,
    /// QEMU's RSS at the ready line, KiB.
    qemu_rss: Option<u64>,
}

async fn boot_latency(b: &Bench<'_>, args: &Args, report: &mut Report) -> Result<()> {
    progress!("warm-up: one Ferrovirt boot and one raw boot, not counted");
    let fv = ferrovirt_boot(b, "warmup").await?;
    let raw = raw_boot(b, false).await?;
    progress!(
        "warm-up: ferrovirt {:.2}s (running -> line {:.2}s, QEMU CPU {:.2}s), raw {:.2}s (QEMU CPU {:.2}s), load {:.2}",
        fv.total,
        fv.running.map_or(f64::NAN, |r| fv.total - r),
        fv.qemu_cpu.unwrap_or(f64::NAN),
        raw.total,
        raw.qemu_cpu.unwrap_or(f64::NAN),
        loadavg()
    );
    report.warmup = Some((fv, raw.total));
    let kinds = if args.no_raw_display { 2 } else { 3 };
    for i in 0..args.reps {
        // Rotate which goes first, so a trend in the machine's load hits all alike.
        for k in 0..kinds {
            match (i + k) % kinds {
                0 => report
                    .fv
                    .push(ferrovirt_boot(b, &format!("boot-{i}")).await?),
                1 => report.raw.push(raw_boot(b, false).await?),
                _ => report.raw_display.push(raw_boot(b, true).await?),
            }
        }
        let (f, r) = (report.fv.last().unwrap(), report.raw.last().unwrap());
        let d = report.raw_display.last().map_or(String::new(), |d| {
            format!(", raw with display {:.2}s", d.total)
        });
        progress!(
            "rep {}: ferrovirt {:.2}s, raw {:.2}s{d}, load {:.2}",
            i + 1,
            f.total,
            r.total,
            loadavg()
        );
        report.load.push(loadavg());
    }
    Ok(())
}

async fn ferrovirt_boot(b: &Bench<'_>, name: &str) -> Result<FvBoot> {
    b.tracker.forget(name);
    let manifest = vm_manifest(name);
    let t0 = Instant::now();
    kubectl(b, &["apply", "-f", "-"], Some(&manifest)).await?;
    let apply = t0.elapsed().as_secs_f64();
    let (uid, total) = loop {
        if let Some(uid) = b.tracker.get(name).uid {
            let log = b.stack.vmi_dir(&uid).join("serial0.log");
            if std::fs::read(&log).is_ok_and(|t| contains(&t, READY_LINE.as_bytes())) {
                break (uid, t0.elapsed().as_secs_f64());
            }
        }
        if t0.elapsed() > BOOT_TIMEOUT {
            bail!(
                "VM {name}: no ready line within {}s\n{}",
                BOOT_TIMEOUT.as_secs(),
                b.stack.log_tails(25)
            );
        }
        tokio::time::sleep(POLL).await;
    };
    let qemu_cpu = qemu_pid(b.ns.name(), name).and_then(cpu_seconds);
    let seen = b.tracker.get(name);
    let at = |phase| {
        seen.phases
            .iter()
            .find(|(p, _)| *p == phase)
            .map(|(_, t)| t.duration_since(t0).as_secs_f64())
    };
    let boot = FvBoot {
        total,
        apply,
        scheduled: at(VmiPhase::Scheduled),
        running: at(VmiPhase::Running),
        qemu_cpu,
    };
    delete_and_wait(b, &[name.to_string()], &[uid]).await?;
    Ok(boot)
}

/// Deletes VMs and waits until the VMs, their VMIs, launcher pods and QEMUs are gone.
async fn delete_and_wait(b: &Bench<'_>, names: &[String], uids: &[String]) -> Result<()> {
    let mut cmd = vec!["delete", "vm", "--wait=false"];
    cmd.extend(names.iter().map(String::as_str));
    kubectl(b, &cmd, None).await?;
    let vms: Api<VirtualMachine> = Api::namespaced(b.client.clone(), b.ns.name());
    let pods: Api<Pod> = Api::namespaced(b.client.clone(), b.ns.name());
    let started = Instant::now();
    loop {
        let mut left = 0;
        for name in names {
            left += usize::from(vms.get_opt(name).await?.is_some());
            left += usize::from(b.vmis.get_opt(name).await?.is_some());
            left += usize::from(qemu_pid(b.ns.name(), name).is_some());
        }
        for uid in uids {
            let lp = ListParams::default().labels(&format!("kubevirt.io/created-by={uid}"));
            left += pods.list(&lp).await?.items.len();
        }
        if left == 0 {
            return Ok(());
        }
        if started.elapsed() > BOOT_TIMEOUT {
            bail!(
                "{names:?} not gone after {}s\n{}",
                BOOT_TIMEOUT.as_secs(),
                b.stack.log_tails(25)
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The same guest with plain QEMU: what bench/raw-boot.sh does for its `kernel` mode. With
/// `display`, also the VGA device and VNC server libvirt gives Ferrovirt's guests (as
/// KubeVirt's autoattachGraphicsDevice does), to tell how much of the gap they make.
async fn raw_boot(b: &Bench<'_>, display: bool) -> Result<RawBoot> {
    let (kernel, initrd) = &b.kernel;
    let vnc = std::env::temp_dir().join(format!("bench-node-{}.vnc", std::process::id()));
    let mut cmd = tokio::process::Command::new("qemu-system-x86_64");
    cmd.args([
        "-accel",
        "tcg",
        "-M",
        MACHINE,
        "-m",
        &MEMORY_MIB.to_string(),
        "-smp",
        "1",
    ])
    .args([
        "-display",
        "none",
        "-serial",
        "stdio",
        "-monitor",
        "none",
        "-no-reboot",
        "-nodefaults",
    ]);
    if display {
        cmd.args([
            "-cpu",
            "qemu64",
            "-device",
            "VGA,id=video0,vgamem_mb=16,bus=pcie.0,addr=0x1",
        ])
        .arg("-vnc")
        .arg(format!("unix:{}", vnc.display()));
    }
    cmd.arg("-kernel")
        .arg(kernel)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", KERNEL_ARGS])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    let t0 = Instant::now();
    let mut child = cmd.spawn().context("starting qemu-system-x86_64")?;
    let pid = child.id();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let found = tokio::time::timeout(BOOT_TIMEOUT, async {
        while let Some(line) = lines.next_line().await? {
            if line.contains(READY_LINE) {
                return Ok::<_, std::io::Error>(true);
            }
        }
        Ok(false)
    })
    .await;
    let total = t0.elapsed().as_secs_f64();
    let qemu_cpu = pid.and_then(cpu_seconds);
    let qemu_rss = pid.and_then(mem).map(|m| m.rss);
    let _ = child.kill().await;
    let _ = std::fs::remove_file(&vnc);
    match found {
        Ok(Ok(true)) => Ok(RawBoot {
            total,
            qemu_cpu,
            qemu_rss,
        }),
        Ok(Ok(false)) => bail!("raw QEMU exited without the ready line"),
        Ok(Err(e)) => Err(e).context("reading raw QEMU's serial output"),
        Err(_) => bail!("raw QEMU: no ready line within {}s", BOOT_TIMEOUT.as_secs()),
    }
}

// ---------------------------------------------------------------------------------------
// Per-VM overhead.

#[derive(Clone, Copy, Default)]
struct Mem {
    rss: u64,
    pss: u64,
    uss: u64,
}

impl std::ops::AddAssign for Mem {
    fn add_assign(&mut self, o: Mem) {
        self.rss += o.rss;
        self.pss += o.pss;
        self.uss += o.uss;
    }
}

/// One launcher pod's processes.
/// A report row: its label, the figure it reads from a pod's memory, and the target.
type Row<'a> = (&'a str, &'a dyn Fn(&PodMem) -> u64, String);

#[derive(Default)]
struct PodMem {
    /// The launcher and every descendant that is not QEMU.
    launcher: Mem,
    /// Names of the processes counted in `launcher`.
    names: Vec<String>,
    qemu: Mem,
    /// devnode's per-container shim (like conmon), not part of the launcher.
    shim: Mem,
}

struct Sample {
    vms: usize,
    pods: Vec<PodMem>,
    /// virt-handler and devnode, once per node.
    daemons: Mem,
}

async fn overhead(b: &Bench<'_>, args: &Args, report: &mut Report) -> Result<()> {
    let names: Vec<String> = (0..args.vms.max(1)).map(|i| format!("rss-{i}")).collect();
    progress!("overhead: 1 VM");
    apply_and_wait_ready(b, &names[..1]).await?;
    tokio::time::sleep(Duration::from_secs(args.settle)).await;
    report.samples.push(sample(b, 1)?);
    report.load.push(loadavg());
    if names.len() > 1 {
        progress!("overhead: {} VMs", names.len());
        apply_and_wait_ready(b, &names[1..]).await?;
        tokio::time::sleep(Duration::from_secs(args.settle)).await;
        report.samples.push(sample(b, names.len())?);
        report.load.push(loadavg());
    }
    let uids: Vec<String> = names.iter().filter_map(|n| b.tracker.get(n).uid).collect();
    progress!("deleting the overhead VMs");
    delete_and_wait(b, &names, &uids).await
}

async fn apply_and_wait_ready(b: &Bench<'_>, names: &[String]) -> Result<()> {
    let manifests: Vec<String> = names.iter().map(|n| vm_manifest(n)).collect();
    let t0 = Instant::now();
    kubectl(b, &["apply", "-f", "-"], Some(&manifests.join("---\n"))).await?;
    let mut waiting: Vec<&String> = names.iter().collect();
    while !waiting.is_empty() {
        waiting.retain(|name| {
            let Some(uid) = b.tracker.get(name).uid else {
                return true;
            };
            let log = b.stack.vmi_dir(&uid).join("serial0.log");
            !std::fs::read(&log).is_ok_and(|t| contains(&t, READY_LINE.as_bytes()))
        });
        if t0.elapsed() > BOOT_TIMEOUT * 2 {
            bail!(
                "{waiting:?}: no ready line within {}s\n{}",
                (BOOT_TIMEOUT * 2).as_secs(),
                b.stack.log_tails(25)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    progress!(
        "{} VM(s) ready after {:.1}s",
        names.len(),
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Reads the memory of every launcher pod of the benchmark's `rss-*` VMs.
fn sample(b: &Bench<'_>, vms: usize) -> Result<Sample> {
    let procs = processes();
    let prefix = format!("{}_virt-launcher-rss-", b.ns.name());
    let mut pods = Vec::new();
    for dir in std::fs::read_dir(b.stack.state_dir.join("pods"))?.flatten() {
        if !dir.file_name().to_string_lossy().starts_with(&prefix) {
            continue;
        }
        let mut pod = PodMem::default();
        let mut found = false;
        for file in std::fs::read_dir(dir.path())?.flatten() {
            // The launcher's container only: the pod's sandbox and its disk containers
            // are the node's (devnode's stand-ins for pause and the disk server).
            if file.file_name().to_string_lossy() != format!("{COMPUTE_CONTAINER}.started.json") {
                continue;
            }
            let started: serde_json::Value = serde_json::from_slice(&std::fs::read(file.path())?)?;
            let pid = started["pid"]
                .as_u64()
                .context("started.json without pid")? as u32;
            if let Some(shim) = started["shim_pid"].as_u64().and_then(|p| mem(p as u32)) {
                pod.shim += shim;
            }
            for p in descendants(&procs, pid) {
                let Some(m) = mem(p) else { continue };
                let comm = procs.get(&p).map(|(_, c)| c.clone()).unwrap_or_default();
                if comm.starts_with("qemu-system") {
                    pod.qemu += m;
                } else {
                    pod.launcher += m;
                    pod.names.push(comm);
                    found = true;
                }
            }
        }
        if found {
            pods.push(pod);
        }
    }
    if pods.len() != vms {
        bail!(
            "found {} running launcher pods of the benchmark, expected {vms}",
            pods.len()
        );
    }
    let mut daemons = mem(b.stack.handler_pid()).unwrap_or_default();
    let state_dir = b.stack.state_dir.to_string_lossy().into_owned();
    for (&pid, (_, comm)) in &procs {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let args: Vec<String> = cmdline
            .split(|&c| c == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        // devnode itself, not its shims (those are counted per pod).
        if comm == "devnode" && args.iter().any(|a| a == "--node-name") && args.contains(&state_dir)
        {
            daemons += mem(pid).unwrap_or_default();
        }
    }
    Ok(Sample { vms, pods, daemons })
}

/// pid -> (ppid, comm) of every process.
fn processes() -> BTreeMap<u32, (u32, String)> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = stat[open + 1..close].to_string();
        let ppid = stat[close + 1..]
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        out.insert(pid, (ppid, comm));
    }
    out
}

/// `root` and all its descendants.
fn descendants(procs: &BTreeMap<u32, (u32, String)>, root: u32) -> Vec<u32> {
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        let parent = out[i];
        out.extend(
            procs
                .iter()
                .filter(|(_, (ppid, _))| *ppid == parent)
                .map(|(&p, _)| p),
        );
        i += 1;
    }
    out.retain(|p| procs.contains_key(p));
    out
}

/// RSS (VmRSS), PSS and USS (private clean + dirty) of a process, in KiB.
fn mem(pid: u32) -> Option<Mem> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let field = |text: &str, key: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|r| r.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Some(Mem {
        rss: field(&status, "VmRSS:"),
        pss: field(&rollup, "Pss:"),
        uss: field(&rollup, "Private_Clean:") + field(&rollup, "Private_Dirty:"),
    })
}

// ---------------------------------------------------------------------------------------
// Helpers.

async fn kubectl(b: &Bench<'_>, args: &[&str], stdin: Option<&str>) -> Result<()> {
    let mut all = vec!["-n", b.ns.name()];
    all.extend_from_slice(args);
    let out = b.cp.kubectl_with_stdin(all, stdin).await?;
    if !out.success() {
        bail!("{out}");
    }
    Ok(())
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The QEMU of a VMI (libvirt names the domain `<namespace>_<name>`).
fn qemu_pid(namespace: &str, name: &str) -> Option<u32> {
    let needle = format!("guest={namespace}_{name},");
    processes().into_iter().find_map(|(pid, (_, comm))| {
        if !comm.starts_with("qemu-system") {
            return None;
        }
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        contains(&cmdline, needle.as_bytes()).then_some(pid)
    })
}

/// User + system CPU seconds of a process so far.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of stat; `rest` starts at field 3.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some(ticks as f64 / hz)
}

fn loadavg() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(f64::NAN)
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Nearest-rank percentile (with 5 values, p90 is the largest).
fn percentile(v: &[f64], p: f64) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * v.len() as f64).ceil().max(1.0) as usize;
    v[rank - 1]
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

// ---------------------------------------------------------------------------------------
// The report.

#[derive(Default)]
struct Report {
    /// The first boot after the stack started, and raw's first.
    warmup: Option<(FvBoot, f64)>,
    fv: Vec<FvBoot>,
    raw: Vec<RawBoot>,
    raw_display: Vec<RawBoot>,
    samples: Vec<Sample>,
    load: Vec<f64>,
    wall: Duration,
}

impl Report {
    fn markdown(&self, args: &Args) -> String {
        let mut s = String::new();
        let date = std::process::Command::new("date")
            .arg("-u")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        let bin_dir = std::env::var("FERROVIRT_BIN_DIR").unwrap_or_else(|_| "target/debug".into());
        let build = if bin_dir.contains("release") {
            "release"
        } else {
            "debug"
        };
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0);
        let mem_gib = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines()
                    .next()
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|v| v.parse::<f64>().ok())
            })
            .map_or(f64::NAN, |kib| kib / 1024.0 / 1024.0);
        let load_max = self.load.iter().copied().fold(f64::NAN, f64::max);
        s += &format!("### {date}\n\n");
        s += &format!(
            "{cores} cores, {mem_gib:.0} GiB, software emulation (TCG: KVM hangs on this machine); {build} build \
             of the components; load average {:.2} at the start (the machine is shared with other \
             sessions' builds and tests), at most {load_max:.2} at the checkpoints of the run (its own \
             guests included); whole run {:.0} s.\n\n",
            self.load.first().copied().unwrap_or(f64::NAN),
            self.wall.as_secs_f64()
        );

        if !self.fv.is_empty() {
            let fv: Vec<f64> = self.fv.iter().map(|b| b.total).collect();
            let raw: Vec<f64> = self.raw.iter().map(|b| b.total).collect();
            let fv_cpu: Vec<f64> = self.fv.iter().filter_map(|b| b.qemu_cpu).collect();
            let raw_cpu: Vec<f64> = self.raw.iter().filter_map(|b| b.qemu_cpu).collect();
            let ratio = median(&fv) / median(&raw);
            s += &format!(
                "Boot to the guest's `{READY_LINE}` line, {} interleaved runs each (after one warm-up of each), \
                 {MEMORY_MIB} MiB, 1 vCPU, {MACHINE}, kernel boot of `{GUEST_IMAGE}` with `{KERNEL_ARGS}`:\n\n",
                fv.len()
            );
            s += "| path | median s | p90 s (nearest rank) | min s | max s | QEMU CPU s at the line (median) |\n|---|---|---|---|---|---|\n";
            let row = |name: &str, v: &[f64], cpu: &[f64]| {
                format!(
                    "| {name} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |\n",
                    median(v),
                    percentile(v, 90.0),
                    v.iter().copied().fold(f64::INFINITY, f64::min),
                    v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                    median(cpu)
                )
            };
            s += &row(
                "Ferrovirt: `kubectl apply` -> line in the VMI's serial0.log",
                &fv,
                &fv_cpu,
            );
            s += &row(
                "raw `qemu-system-x86_64 -accel tcg` -> line on its serial stdout",
                &raw,
                &raw_cpu,
            );
            s += &format!(
                "| **ratio of medians** (target at most {TARGET_RATIO}) | **{ratio:.2}** {} | | | | |\n",
                if ratio <= TARGET_RATIO {
                    "(met)"
                } else {
                    "(not met)"
                }
            );
            if !self.raw_display.is_empty() {
                let d: Vec<f64> = self.raw_display.iter().map(|b| b.total).collect();
                let d_cpu: Vec<f64> = self.raw_display.iter().filter_map(|b| b.qemu_cpu).collect();
                s += &row(
                    "(information) raw plus the VGA device and VNC server libvirt adds",
                    &d,
                    &d_cpu,
                );
                s += &format!(
                    "| (information) Ferrovirt / raw with VGA + VNC | {:.2} | | | | |\n",
                    median(&fv) / median(&d)
                );
            }
            s += "\n";
            let seg = |f: &dyn Fn(&FvBoot) -> Option<f64>| {
                median(&self.fv.iter().filter_map(f).collect::<Vec<_>>())
            };
            s += "Where the Ferrovirt time goes (medians; phases as this program's VMI watch first saw them):\n\n";
            s += "| `kubectl apply` returns | apply -> VMI Scheduled | Scheduled -> Running | Running -> ready line |\n|---|---|---|---|\n";
            s += &format!(
                "| {:.2} s | {:.2} s | {:.2} s | {:.2} s |\n\n",
                seg(&|b| Some(b.apply)),
                seg(&|b| b.scheduled),
                seg(&|b| Some(b.running? - b.scheduled?)),
                seg(&|b| Some(b.total - b.running?)),
            );
            if let Some((first, r)) = &self.warmup {
                let part = |v: Option<f64>| v.map_or("?".to_string(), |v| format!("{v:.2} s"));
                s += &format!(
                    "First boot after the stack started (warm-up, not counted): Ferrovirt {:.2} s \
                     ({:.1}x the median; apply {:.2} s, to Scheduled {}, Scheduled -> Running {}, \
                     Running -> line {}; QEMU CPU at the line {}), raw {r:.2} s. \
                     All runs, Ferrovirt: {}; raw: {}.\n\n",
                    first.total,
                    first.total / median(&fv),
                    first.apply,
                    part(first.scheduled),
                    part(first.running.zip(first.scheduled).map(|(r, s)| r - s)),
                    part(first.running.map(|r| first.total - r)),
                    part(first.qemu_cpu),
                    fv.iter()
                        .map(|v| format!("{v:.2}"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    raw.iter()
                        .map(|v| format!("{v:.2}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
        }

        if !self.samples.is_empty() {
            s += &format!(
                "Per-VM node overhead: the launcher and every process under it except QEMU (libvirt is \
                 embedded in the launcher), read {} s after the ready lines. RSS counts shared library \
                 pages in every process; PSS splits them among their users; USS is the memory only that \
                 process maps (with several launchers, what one more VM costs; a lone launcher's USS also \
                 holds its binary's pages, which other launchers share).\n\n",
                args.settle
            );
            s += "| per VM, MiB | ";
            s += &self
                .samples
                .iter()
                .map(|x| {
                    format!(
                        "{} VM{} mean | max",
                        x.vms,
                        if x.vms == 1 { "" } else { "s" }
                    )
                })
                .collect::<Vec<_>>()
                .join(" | ");
            s += " | target |\n|---|";
            s += &"---|---|".repeat(self.samples.len());
            s += "---|\n";
            let rows: [Row; 6] = [
                (
                    "**launcher without QEMU, RSS**",
                    &|p| p.launcher.rss,
                    format!("at most {TARGET_MIB:.0}; KubeVirt about {KUBEVIRT_FIXED_MIB:.0}"),
                ),
                (
                    "launcher without QEMU, PSS",
                    &|p| p.launcher.pss,
                    String::new(),
                ),
                (
                    "launcher without QEMU, USS",
                    &|p| p.launcher.uss,
                    String::new(),
                ),
                (
                    "QEMU RSS (information)",
                    &|p| p.qemu.rss,
                    format!("guest has {MEMORY_MIB} MiB"),
                ),
                ("QEMU PSS (information)", &|p| p.qemu.pss, String::new()),
                (
                    "devnode's container shim RSS / PSS (like conmon; information)",
                    &|p| p.shim.rss,
                    String::new(),
                ),
            ];
            for (name, f, target) in rows {
                s += &format!("| {name} |");
                for x in &self.samples {
                    let v: Vec<f64> = x.pods.iter().map(|p| mib(f(p))).collect();
                    let mean = v.iter().sum::<f64>() / v.len() as f64;
                    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    if name.starts_with("devnode") {
                        let pss: Vec<f64> = x.pods.iter().map(|p| mib(p.shim.pss)).collect();
                        let pmean = pss.iter().sum::<f64>() / pss.len() as f64;
                        s += &format!(" {mean:.1} / {pmean:.1} | {max:.1} |");
                    } else {
                        s += &format!(" {mean:.1} | {max:.1} |");
                    }
                }
                s += &format!(" {target} |\n");
            }
            s += "\n";
            let first = &self.samples[0];
            let mut names: Vec<String> = first.pods.iter().flat_map(|p| p.names.clone()).collect();
            names.sort();
            names.dedup();
            let last = self.samples.last().unwrap();
            let ratio = |x: &Sample| {
                let mean =
                    x.pods.iter().map(|p| mib(p.launcher.rss)).sum::<f64>() / x.pods.len() as f64;
                KUBEVIRT_FIXED_MIB / mean
            };
            let raw_rss: Vec<f64> = self
                .raw
                .iter()
                .filter_map(|b| b.qemu_rss.map(mib))
                .collect();
            if !raw_rss.is_empty() {
                s += &format!(
                    "For comparison with the QEMU rows, a raw QEMU of the same guest has {:.0} MiB RSS at its \
                     ready line (median). ",
                    median(&raw_rss)
                );
            }
            s += &format!(
                "Processes counted per launcher: {}. KubeVirt's estimate is {:.1}x the launcher RSS measured \
                 here with {} VM{}. Node daemons (virt-handler and devnode, once per node, not per VM): \
                 {:.1} MiB RSS / {:.1} MiB PSS with {} VM{}.\n",
                names.join(", "),
                ratio(last),
                last.vms,
                if last.vms == 1 { "" } else { "s" },
                mib(last.daemons.rss),
                mib(last.daemons.pss),
                last.vms,
                if last.vms == 1 { "" } else { "s" },
            );
        }
        s
    }
}
