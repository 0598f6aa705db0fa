//! virt-controller at scale (issue 13, part 3): N VMs spread over M simulated nodes, with
//! kwok (sigs.k8s.io/kwok) playing every node's kubelet against the real kube-apiserver,
//! beside the API server's own ceiling measured the same way. A report, not a test: see
//! bench/scale/README.md; `bench/scale.sh` runs it end to end.
//!
//! ```text
//! bench-scale run --mode operator|ceiling --vms N --nodes M --json OUT
//! bench-scale report --svg OUT.svg A.json B.json ...
//! ```
//!
//! - `operator`: the release virt-controller turns each VM into a VMI and a launcher pod;
//!   kwok schedules nothing itself (kube-scheduler does) but marks each bound pod Running and
//!   Ready, and the VMI controller then moves the VMI to `Scheduled`. That is where the
//!   controller's part ends: no virt-handler runs, so no VMI reaches `Running`.
//! - `ceiling`: no controller; the client itself creates each VM, then the same VMI and the
//!   same launcher pod (rendered by virt-controller's own `pod::render`), with the same
//!   concurrency, and waits for kwok to mark the pods Running.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use crds::{VirtualMachine, VirtualMachineInstance, VmiPhase};
use ferrovirt_tests::{ControlPlane, spawn_tied};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde::{Deserialize, Serialize};
use serde_json::json;

const NS: &str = "bench";
/// Create requests in flight (as the earlier one-node benchmark; a big `kubectl apply` is
/// not faster).
const IN_FLIGHT: usize = 50;
const KWOK_VERSION: &str = "0.8.0";

#[derive(Debug, Serialize, Deserialize)]
struct Run {
    mode: String,
    vms: usize,
    nodes: usize,
    /// The client's creates (VMs; in the ceiling also VMIs and pods).
    create_s: f64,
    /// Until every launcher pod exists.
    all_pods_s: f64,
    /// Until every launcher pod is Running (ceiling) / every VMI is Scheduled (operator).
    all_done_s: f64,
    p50_pod_s: f64,
    p95_pod_s: f64,
    p50_done_s: f64,
    p95_done_s: f64,
    /// virt-controller's peak RSS (MiB), CPU seconds and API requests per VM (operator).
    rss_mib: Option<f64>,
    cpu_s: Option<f64>,
    requests_per_vm: Option<f64>,
    load1: f64,
    /// CPU seconds of each process on the machine's cores between the first create and
    /// done: the control plane's, kwok's, virt-controller's and this client's own (the
    /// server side of the ratio: on 2 cores under load, what bounds both runs).
    #[serde(default)]
    cpu_by_process: Vec<(String, f64)>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("run") => {
            let flag = |name: &str| -> anyhow::Result<String> {
                let i = args
                    .iter()
                    .position(|a| a == name)
                    .with_context(|| format!("{name} is required"))?;
                args.get(i + 1)
                    .cloned()
                    .with_context(|| format!("{name} needs a value"))
            };
            let mode = flag("--mode")?;
            ensure!(
                mode == "operator" || mode == "ceiling",
                "--mode is operator or ceiling"
            );
            let vms: usize = flag("--vms")?.parse().context("--vms")?;
            let nodes: usize = flag("--nodes")?.parse().context("--nodes")?;
            let out = PathBuf::from(flag("--json")?);
            let run = run(&mode, vms, nodes).await?;
            std::fs::write(&out, serde_json::to_string_pretty(&run)?)?;
            println!("{}", serde_json::to_string(&run)?);
            Ok(())
        }
        Some("report") => {
            let i = args
                .iter()
                .position(|a| a == "--svg")
                .context("--svg is required")?;
            let svg = PathBuf::from(args.get(i + 1).context("--svg needs a value")?);
            let runs: Vec<Run> = args[1..]
                .iter()
                .enumerate()
                .filter(|(j, _)| *j + 1 != i && *j + 1 != i + 1)
                .map(|(_, f)| Ok(serde_json::from_str(&std::fs::read_to_string(f)?)?))
                .collect::<anyhow::Result<_>>()?;
            report(&runs, &svg)
        }
        _ => bail!(
            "usage: bench-scale run --mode operator|ceiling --vms N --nodes M --json OUT | report --svg OUT A.json..."
        ),
    }
}

async fn run(mode: &str, n: usize, nodes: usize) -> anyhow::Result<Run> {
    let cp = ferrovirt_tests::shared().await;
    let client = cp.client().await?;
    let kwok = start_kwok(cp)?;
    make_nodes(&client, nodes, &kwok.log).await?;
    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": NS}}))?,
        )
        .await?;

    let operator = if mode == "operator" {
        Some(start_operator(cp).await?)
    } else {
        None
    };
    let (rss_before, cpu_before, requests_before) = match &operator {
        Some(op) => (
            vm_hwm(op.pid),
            cpu_seconds(op.pid),
            api_requests(&metrics(op.port).unwrap_or_default()),
        ),
        None => (0, 0.0, 0.0),
    };

    // Watch launcher pods appear and run, and VMIs reach Scheduled.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Seen, String, Instant)>();
    watch_pods(&client, tx.clone());
    watch_vmis(&client, tx);
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Everything that works for the run, to split its CPU seconds by process.
    let mut workers: Vec<(String, u32)> = cp
        .processes()
        .into_iter()
        .map(|p| (p.name, p.pid))
        .collect();
    workers.push(("kwok".into(), kwok.pid));
    if let Some(op) = &operator {
        workers.push(("virt-controller".into(), op.pid));
    }
    workers.push(("bench client".into(), std::process::id()));
    let cpu_start: Vec<f64> = workers.iter().map(|(_, pid)| cpu_seconds(*pid)).collect();

    let t0 = Instant::now();
    let created: HashMap<String, Instant> = if mode == "operator" {
        create_vms(&client, n).await?
    } else {
        create_all_three(&client, n).await?
    };
    let create_s = t0.elapsed().as_secs_f64();

    let mut pod_seen: HashMap<String, Instant> = HashMap::new();
    let mut done_seen: HashMap<String, Instant> = HashMap::new();
    // The steps between, for the profile printed on stderr (first time seen, per VM).
    let mut steps: HashMap<Step, HashMap<String, Instant>> = HashMap::new();
    let mut peak = rss_before;
    let mut last_progress = Instant::now();
    while done_seen.len() < n {
        match tokio::time::timeout(Duration::from_secs(1), rx.recv()).await {
            Ok(Some((what, name, at))) => {
                steps
                    .entry(Step::of(what))
                    .or_default()
                    .entry(name.clone())
                    .or_insert(at);
                let seen = match (what, mode) {
                    (Seen::Pod, _) => &mut pod_seen,
                    (Seen::PodRunning, "ceiling") | (Seen::VmiScheduled, "operator") => {
                        &mut done_seen
                    }
                    _ => continue,
                };
                seen.entry(name).or_insert(at);
            }
            Ok(None) => bail!("the watches ended"),
            Err(_) => {}
        }
        if let Some(op) = &operator {
            peak = peak.max(vm_hwm(op.pid));
        }
        if last_progress.elapsed() > Duration::from_secs(10) {
            eprintln!(
                "[{:>5.0} s] {} pods exist, {} of {n} done",
                t0.elapsed().as_secs_f64(),
                pod_seen.len(),
                done_seen.len()
            );
            last_progress = Instant::now();
        }
        ensure!(
            t0.elapsed() < Duration::from_secs(3600),
            "not done after an hour: {} of {n}",
            done_seen.len()
        );
    }
    let last = |m: &HashMap<String, Instant>| {
        m.values()
            .max()
            .map_or(0.0, |t| t.duration_since(t0).as_secs_f64())
    };
    let lat = |m: &HashMap<String, Instant>| -> Vec<f64> {
        let mut v: Vec<f64> = created
            .iter()
            .filter_map(|(name, c)| Some(m.get(name)?.saturating_duration_since(*c).as_secs_f64()))
            .collect();
        v.sort_by(f64::total_cmp);
        v
    };
    let (pods_lat, done_lat) = (lat(&pod_seen), lat(&done_seen));
    let cpu_by_process: Vec<(String, f64)> = workers
        .iter()
        .zip(&cpu_start)
        .map(|((name, pid), start)| (name.clone(), cpu_seconds(*pid) - start))
        .collect();
    let total: f64 = cpu_by_process.iter().map(|(_, s)| s).sum();
    eprintln!(
        "CPU seconds until done ({:.1} s of wall time, {} cores): {total:.1} in all",
        last(&done_seen),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    for (name, s) in &cpu_by_process {
        eprintln!("  {s:>7.1} {name}");
    }
    steps.insert(Step::VmCreated, created.clone());
    profile(&steps, t0);

    let (rss_mib, cpu_s, requests_per_vm) = match &operator {
        Some(op) => {
            // Let the writes that follow settle (status writes; the Events, which one
            // writer publishes in order behind them), then count: until the count has not
            // moved for 3 s, a minute at the most.
            let mut text = metrics(op.port).unwrap_or_default();
            let (mut still, settle) = (0, Instant::now());
            while still < 3 && settle.elapsed() < Duration::from_secs(60) {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let now = metrics(op.port).unwrap_or_default();
                still = if api_requests(&now) == api_requests(&text) {
                    still + 1
                } else {
                    0
                };
                text = now;
            }
            let requests = api_requests(&text) - requests_before;
            // Where the requests went (per VM), for whoever tunes the controller.
            for line in text.lines().filter(|l| {
                l.starts_with("ferrovirt_operator_api_requests_total{")
                    || l.starts_with("ferrovirt_operator_reconcile_errors_total{")
                    || l.starts_with("ferrovirt_operator_reconcile_total{")
                    || l.starts_with("ferrovirt_operator_reconcile_duration_seconds_sum{")
            }) {
                if let Some((labels, count)) = line.rsplit_once(' ')
                    && let Ok(c) = count.parse::<f64>()
                {
                    eprintln!("per VM {:>6.2} {labels}", c / n as f64);
                }
            }
            peak = peak.max(vm_hwm(op.pid));
            (
                Some(peak as f64 / 1024.0),
                Some(cpu_seconds(op.pid) - cpu_before),
                Some(requests / n as f64),
            )
        }
        None => (None, None, None),
    };
    Ok(Run {
        mode: mode.into(),
        vms: n,
        nodes,
        create_s,
        all_pods_s: last(&pod_seen),
        all_done_s: last(&done_seen),
        p50_pod_s: pct(&pods_lat, 0.50),
        p95_pod_s: pct(&pods_lat, 0.95),
        p50_done_s: pct(&done_lat, 0.50),
        p95_done_s: pct(&done_lat, 0.95),
        rss_mib,
        cpu_s,
        requests_per_vm,
        load1: load1(),
        cpu_by_process,
    })
}

#[derive(Clone, Copy, Debug)]
enum Seen {
    Pod,
    PodBound,
    PodRunning,
    Vmi,
    VmiScheduling,
    VmiScheduled,
}

/// The steps of one VM's way, in order, for [`profile`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Step {
    VmCreated,
    VmiExists,
    PodExists,
    VmiScheduling,
    PodBound,
    PodRunning,
    VmiScheduled,
}

impl Step {
    const ALL: [Step; 7] = [
        Step::VmCreated,
        Step::VmiExists,
        Step::PodExists,
        Step::VmiScheduling,
        Step::PodBound,
        Step::PodRunning,
        Step::VmiScheduled,
    ];

    fn of(seen: Seen) -> Step {
        match seen {
            Seen::Vmi => Step::VmiExists,
            Seen::Pod => Step::PodExists,
            Seen::VmiScheduling => Step::VmiScheduling,
            Seen::PodBound => Step::PodBound,
            Seen::PodRunning => Step::PodRunning,
            Seen::VmiScheduled => Step::VmiScheduled,
        }
    }
}

/// Where the VMs' time goes, on stderr: per step, when the last VM reached it and the
/// p50/p95 of the time from the step before (as the watches saw them; a step a VM skipped
/// in the watch, say Scheduling and Scheduled in one event, counts from the one before).
fn profile(steps: &HashMap<Step, HashMap<String, Instant>>, t0: Instant) {
    let empty = HashMap::new();
    let at = |s: Step| steps.get(&s).unwrap_or(&empty);
    let created = at(Step::VmCreated);
    for pair in Step::ALL.windows(2) {
        let (from, to) = (at(pair[0]), at(pair[1]));
        if to.is_empty() {
            continue;
        }
        let mut gaps: Vec<f64> = to
            .iter()
            .filter_map(|(name, t)| {
                let before = from.get(name).or_else(|| created.get(name))?;
                Some(t.saturating_duration_since(*before).as_secs_f64())
            })
            .collect();
        gaps.sort_by(f64::total_cmp);
        let last = to
            .values()
            .max()
            .map_or(0.0, |t| t.duration_since(t0).as_secs_f64());
        eprintln!(
            "step {:?} -> {:?}: p50 {:.2} s, p95 {:.2} s; last VM at {last:.1} s ({} VMs)",
            pair[0],
            pair[1],
            pct(&gaps, 0.50),
            pct(&gaps, 0.95),
            to.len()
        );
    }
}

fn watch_pods(
    client: &kube::Client,
    tx: tokio::sync::mpsc::UnboundedSender<(Seen, String, Instant)>,
) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    tokio::spawn(
        watcher(pods, watcher::Config::default())
            .applied_objects()
            .try_for_each(move |p| {
                let name = p
                    .labels()
                    .get("vm.kubevirt.io/name")
                    .cloned()
                    .unwrap_or_default();
                let now = Instant::now();
                let _ = tx.send((Seen::Pod, name.clone(), now));
                if p.spec.as_ref().is_some_and(|s| s.node_name.is_some()) {
                    let _ = tx.send((Seen::PodBound, name.clone(), now));
                }
                if p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running") {
                    let _ = tx.send((Seen::PodRunning, name, now));
                }
                futures::future::ready(Ok(()))
            }),
    );
}

fn watch_vmis(
    client: &kube::Client,
    tx: tokio::sync::mpsc::UnboundedSender<(Seen, String, Instant)>,
) {
    let vmis: Api<VirtualMachineInstance> = Api::namespaced(client.clone(), NS);
    tokio::spawn(
        watcher(vmis, watcher::Config::default())
            .applied_objects()
            .try_for_each(move |v| {
                let now = Instant::now();
                let _ = tx.send((Seen::Vmi, v.name_any(), now));
                match v.status.as_ref().and_then(|s| s.phase) {
                    Some(VmiPhase::Scheduling) => {
                        let _ = tx.send((Seen::VmiScheduling, v.name_any(), now));
                    }
                    Some(VmiPhase::Scheduled) => {
                        let _ = tx.send((Seen::VmiScheduled, v.name_any(), now));
                    }
                    _ => {}
                }
                futures::future::ready(Ok(()))
            }),
    );
}

fn vm(name: &str) -> anyhow::Result<VirtualMachine> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "metadata": {"name": name},
        "spec": {"runStrategy": "Always", "template": {"spec": {"domain": {"memory": {"guest": "128Mi"}, "devices": {}}}}},
    }))?)
}

/// Creates `obj` in `api`, again after a failure to send or to read the answer (an idle
/// connection the API server closed as the request went out: seen once under `--load 2`,
/// and the run was lost); an object of its name found by a repeat is the one the first try
/// created.
async fn create<K>(api: &Api<K>, obj: &K) -> anyhow::Result<K>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + Serialize + std::fmt::Debug,
{
    let mut attempt = 0;
    loop {
        attempt += 1;
        match api.create(&PostParams::default(), obj).await {
            Ok(created) => return Ok(created),
            Err(kube::Error::Api(status)) if attempt > 1 && status.code == 409 => {
                return Ok(api.get(&obj.name_any()).await?);
            }
            Err(e @ (kube::Error::Service(_) | kube::Error::HyperError(_))) if attempt < 5 => {
                eprintln!("creating {} again after: {e}", obj.name_any());
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e).with_context(|| format!("creating {}", obj.name_any())),
        }
    }
}

/// The operator's input: N VMs, IN_FLIGHT creates at a time.
async fn create_vms(client: &kube::Client, n: usize) -> anyhow::Result<HashMap<String, Instant>> {
    let vms: Api<VirtualMachine> = Api::namespaced(client.clone(), NS);
    futures::stream::iter(0..n)
        .map(|i| {
            let vms = vms.clone();
            async move {
                let name = format!("vm-{i:05}");
                create(&vms, &vm(&name)?).await?;
                anyhow::Ok((name, Instant::now()))
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .try_collect()
        .await
}

/// The ceiling: per VM, the VM, its VMI and its launcher pod, created by the client itself.
/// The time recorded is the VM's create (latency is measured from there, as for the
/// operator).
async fn create_all_three(
    client: &kube::Client,
    n: usize,
) -> anyhow::Result<HashMap<String, Instant>> {
    let vms: Api<VirtualMachine> = Api::namespaced(client.clone(), NS);
    let vmis: Api<VirtualMachineInstance> = Api::namespaced(client.clone(), NS);
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let cfg = virt_controller::pod::LauncherConfig {
        image: "ferrovirt/virt-launcher:dev".into(),
        node_run_dir: PathBuf::from("/var/run/ferrovirt"),
    };
    futures::stream::iter(0..n)
        .map(|i| {
            let (vms, vmis, pods, cfg) = (vms.clone(), vmis.clone(), pods.clone(), cfg.clone());
            async move {
                let name = format!("vm-{i:05}");
                let vm = create(&vms, &vm(&name)?).await?;
                let created = Instant::now();
                let mut vmi: VirtualMachineInstance = serde_json::from_value(json!({
                    "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
                    "metadata": {"name": name, "labels": {"kubevirt.io/vm": name},
                        "ownerReferences": [{"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
                            "name": name, "uid": vm.uid(), "controller": true, "blockOwnerDeletion": true}]},
                    "spec": vm.spec.template.spec,
                }))?;
                vmi = create(&vmis, &vmi).await?;
                let pod = virt_controller::pod::render(&vmi, &cfg, &Default::default())?;
                create(&pods, &pod).await?;
                anyhow::Ok((name, created))
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .try_collect()
        .await
}

/// kwok, built by bench/scale.sh into `$FERROVIRT_CACHE/kwok-v0.8.0/`: it manages the
/// Nodes annotated `kwok.x-k8s.io/node: fake` with its "fast" stages (Nodes Ready with
/// heartbeats; bound pods Running and Ready, then gone when deleted). Pod IPs are strings
/// in status only: nothing here sends traffic to them.
fn start_kwok(cp: &ControlPlane) -> anyhow::Result<ferrovirt_tests::Process> {
    let bin = ferrovirt_tests::guest::cache_dir()
        .join(format!("kwok-v{KWOK_VERSION}"))
        .join("kwok");
    ensure!(
        bin.is_file(),
        "{} is missing: bench/scale.sh builds it (go install sigs.k8s.io/kwok/cmd/kwok@v{KWOK_VERSION})",
        bin.display()
    );
    // kwok's "fast" stages (bench/scale.sh copies them from its module source) and its
    // options (bench/scale.sh writes every one: the Nodes annotated as make_nodes does,
    // the workers), the same for the ceiling and virt-controller; not ~/.kwok/kwok.yaml.
    let mut cmd = Command::new(&bin);
    cmd.arg("--kubeconfig").arg(cp.kubeconfig());
    for file in ["stages.yaml", "kwok.yaml"] {
        let config = bin.with_file_name(file);
        ensure!(
            config.is_file(),
            "{} is missing: bench/scale.sh writes it",
            config.display()
        );
        cmd.arg("--config").arg(config);
    }
    Ok(spawn_tied("kwok", cmd, &cp.log("kwok"))?)
}

/// M Nodes for kwok, each big enough for its share of launcher pods.
async fn make_nodes(client: &kube::Client, m: usize, kwok_log: &Path) -> anyhow::Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    let cap = json!({"cpu": "1000", "memory": "4Ti", "pods": "1000", "devices.kubevirt.io/kvm": "1000", "devices.kubevirt.io/tun": "1000"});
    futures::stream::iter(0..m)
        .map(|i| {
            let (nodes, cap) = (nodes.clone(), cap.clone());
            async move {
                let name = format!("kwok-node-{i:03}");
                let node: Node = serde_json::from_value(json!({
                    "apiVersion": "v1", "kind": "Node",
                    "metadata": {"name": name,
                        "annotations": {"kwok.x-k8s.io/node": "fake"},
                        "labels": {"type": "kwok", "kubernetes.io/hostname": name,
                            "kubevirt.io/schedulable": "true"}},
                }))?;
                nodes.create(&PostParams::default(), &node).await?;
                nodes
                    .patch_status(
                        &name,
                        &PatchParams::default(),
                        &Patch::Merge(&json!({"status": {"capacity": cap, "allocatable": cap}})),
                    )
                    .await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .try_collect::<Vec<()>>()
        .await?;
    // Ready, by kwok.
    let started = Instant::now();
    loop {
        let ready = nodes
            .list(&Default::default())
            .await?
            .items
            .iter()
            .filter(|n| {
                n.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            })
            .count();
        if ready >= m {
            return Ok(());
        }
        ensure!(
            started.elapsed() < Duration::from_secs(120),
            "kwok made {ready} of {m} nodes Ready in 2 min; its log:\n{}",
            ferrovirt_tests::tail(kwok_log, 30)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

struct Operator {
    pid: u32,
    port: u16,
}

/// The release virt-controller (`OPERATOR_BIN` to pick another build).
async fn start_operator(cp: &ControlPlane) -> anyhow::Result<Operator> {
    let bin = std::env::var_os("OPERATOR_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| ferrovirt_tests::repo_root().join("target/release/virt-controller"));
    ensure!(
        bin.is_file(),
        "{} is missing: cargo build --release -p virt-controller --bin virt-controller",
        bin.display()
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut cmd = Command::new(&bin);
    cmd.arg("--kubeconfig")
        .arg(cp.kubeconfig())
        .args([
            "--metrics-addr",
            &format!("127.0.0.1:{port}"),
            "--leader-election-namespace",
            "default",
        ])
        .env("RUST_LOG", "warn");
    let p = spawn_tied("virt-controller", cmd, &cp.log("virt-controller"))?;
    let started = Instant::now();
    while !metrics(port).is_some_and(|m| m.contains("ferrovirt_operator_leader 1")) {
        ensure!(
            started.elapsed() < Duration::from_secs(30),
            "virt-controller did not become leader; see {}",
            p.log.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    Ok(Operator { pid: p.pid, port })
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 * p).ceil() as usize)
        .saturating_sub(1)
        .min(sorted.len() - 1)]
}

/// Peak resident set of `pid` in KiB.
fn vm_hwm(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// User + system CPU seconds of `pid`.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(vec![], |(_, rest)| rest.split_whitespace().collect());
    // After the command: state is field 3, utime 14, stime 15 (1-based).
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(11) + ticks(12)) / hz
}

fn load1() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

fn metrics(port: u16) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

fn api_requests(metrics: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("ferrovirt_operator_api_requests_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The table (markdown) and the plot (SVG: time until done and operator RSS against VMs).
fn report(runs: &[Run], svg: &Path) -> anyhow::Result<()> {
    let mut sizes: Vec<(usize, usize)> = runs.iter().map(|r| (r.vms, r.nodes)).collect();
    sizes.sort();
    sizes.dedup();
    let find = |mode: &str, size: (usize, usize)| {
        runs.iter()
            .find(|r| r.mode == mode && (r.vms, r.nodes) == size)
    };
    println!(
        "| VMs / nodes | every launcher pod exists: ceiling / operator (ratio) | every pod Running (ceiling) / VMI Scheduled (operator) (ratio) | VM created -> pod exists, p50 / p95: ceiling; operator | VM created -> done, p50 / p95: ceiling; operator | operator peak RSS | operator CPU | requests per VM | load |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for &size in &sizes {
        let (Some(c), Some(o)) = (find("ceiling", size), find("operator", size)) else {
            continue;
        };
        println!(
            "| {} / {} | {:.1} s / {:.1} s ({:.2}) | {:.1} s / {:.1} s ({:.2}) | {:.2} / {:.2} s; {:.2} / {:.2} s | {:.2} / {:.2} s; {:.2} / {:.2} s | {:.1} MiB | {:.1} s | {:.2} | {:.1} |",
            o.vms,
            o.nodes,
            c.all_pods_s,
            o.all_pods_s,
            c.all_pods_s / o.all_pods_s,
            c.all_done_s,
            o.all_done_s,
            c.all_done_s / o.all_done_s,
            c.p50_pod_s,
            c.p95_pod_s,
            o.p50_pod_s,
            o.p95_pod_s,
            c.p50_done_s,
            c.p95_done_s,
            o.p50_done_s,
            o.p95_done_s,
            o.rss_mib.unwrap_or(0.0),
            o.cpu_s.unwrap_or(0.0),
            o.requests_per_vm.unwrap_or(0.0),
            o.load1,
        );
    }
    std::fs::write(svg, plot(runs, &sizes))?;
    eprintln!("plot written to {}", svg.display());
    Ok(())
}

/// One plotted line: its name, its colour and its points (VMs, value).
type Line<'a> = (&'a str, &'a str, Vec<(f64, f64)>);

/// Two panels: seconds until done (operator and ceiling) and operator peak RSS, both
/// against the number of VMs, on linear axes.
fn plot(runs: &[Run], sizes: &[(usize, usize)]) -> String {
    let (w, h, pad) = (360.0, 240.0, 50.0);
    let max_vms = sizes.iter().map(|s| s.0).max().unwrap_or(1) as f64;
    let series = |mode: &str, value: &dyn Fn(&Run) -> Option<f64>| -> Vec<(f64, f64)> {
        let mut pts: Vec<(f64, f64)> = runs
            .iter()
            .filter(|r| r.mode == mode)
            .filter_map(|r| Some((r.vms as f64, value(r)?)))
            .collect();
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        pts
    };
    let panel = |x0: f64, title: &str, unit: &str, lines: &[Line]| {
        let max_y = lines
            .iter()
            .flat_map(|l| l.2.iter().map(|p| p.1))
            .fold(1.0_f64, f64::max)
            * 1.1;
        let px = |x: f64| x0 + pad + x / max_vms * (w - 2.0 * pad);
        let py = |y: f64| h - pad + 0.0 - y / max_y * (h - 2.0 * pad);
        let mut s = format!(
            "<text x='{}' y='20' font-size='13' text-anchor='middle'>{title}</text>\n\
             <line x1='{}' y1='{}' x2='{}' y2='{}' stroke='black'/>\n\
             <line x1='{}' y1='{}' x2='{}' y2='{}' stroke='black'/>\n\
             <text x='{}' y='{}' font-size='11' text-anchor='middle'>VMs</text>\n\
             <text x='{}' y='{}' font-size='11'>{max_y:.0} {unit}</text>\n",
            x0 + w / 2.0,
            px(0.0),
            py(0.0),
            px(max_vms),
            py(0.0),
            px(0.0),
            py(0.0),
            px(0.0),
            py(max_y),
            x0 + w / 2.0,
            h - 10.0,
            x0 + 4.0,
            py(max_y) - 4.0,
        );
        for &(vms, _) in sizes {
            s += &format!(
                "<text x='{}' y='{}' font-size='10' text-anchor='middle'>{vms}</text>\n",
                px(vms as f64),
                py(0.0) + 14.0
            );
        }
        for (k, (name, colour, pts)) in lines.iter().enumerate() {
            let path: Vec<String> = pts
                .iter()
                .map(|(x, y)| format!("{:.1},{:.1}", px(*x), py(*y)))
                .collect();
            s += &format!(
                "<polyline fill='none' stroke='{colour}' stroke-width='2' points='{}'/>\n",
                path.join(" ")
            );
            for (x, y) in pts {
                s += &format!(
                    "<circle cx='{:.1}' cy='{:.1}' r='3' fill='{colour}'/><text x='{:.1}' y='{:.1}' font-size='10'>{y:.1}</text>\n",
                    px(*x),
                    py(*y),
                    px(*x) + 5.0,
                    py(*y) - 5.0
                );
            }
            s += &format!(
                "<text x='{}' y='{}' font-size='11' fill='{colour}'>{name}</text>\n",
                x0 + pad + 10.0,
                pad + 14.0 * k as f64
            );
        }
        s
    };
    let mut body = panel(
        0.0,
        "seconds from the first VM created",
        "s",
        &[
            (
                "virt-controller (VMI Scheduled)",
                "#c0392b",
                series("operator", &|r| Some(r.all_done_s)),
            ),
            (
                "ceiling: client creates VM, VMI, pod",
                "#2471a3",
                series("ceiling", &|r| Some(r.all_done_s)),
            ),
        ],
    );
    body += &panel(
        w,
        "virt-controller peak RSS",
        "MiB",
        &[("VmHWM", "#c0392b", series("operator", &|r| r.rss_mib))],
    );
    format!(
        "<svg xmlns='http://www.w3.org/2000/svg' width='{}' height='{h}' font-family='sans-serif'>\n<rect width='100%' height='100%' fill='white'/>\n{body}</svg>\n",
        2.0 * w
    )
}
