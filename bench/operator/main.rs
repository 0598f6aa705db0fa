//! 1000 VMs with runStrategy Always applied at once against one kube-apiserver: how fast
//! the operator gives each its VMI and launcher pod, its peak memory, and the API requests
//! it makes per VM. A report, not a test: see bench/operator/README.md.
//!
//! Usage: cargo build --release -p virt-controller --bin virt-controller --example bench-operator &&
//!        target/release/examples/bench-operator [N]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crds::VirtualMachine;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(1000);
    let cp = ferrovirt_tests::shared().await;
    let client = cp.client().await?;

    // One fake node big enough for every pod (no kubelet: pods are only scheduled).
    let nodes: Api<Node> = Api::all(client.clone());
    let node: Node = serde_json::from_value(
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "bench-node"}}),
    )?;
    nodes.create(&PostParams::default(), &node).await?;
    nodes
        .patch(
            "bench-node",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"taints": null}})),
        )
        .await?;
    let cap =
        json!({"cpu": "4000", "memory": "4Ti", "pods": "5000", "devices.kubevirt.io/kvm": "5000"});
    let status = json!({"status": {"capacity": cap, "allocatable": cap, "conditions": [{"type": "Ready", "status": "True",
        "lastHeartbeatTime": "2026-01-01T00:00:00Z", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}});
    nodes
        .patch_status(
            "bench-node",
            &PatchParams::default(),
            &Patch::Merge(&status),
        )
        .await?;
    let ns: Namespace = serde_json::from_value(
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bench"}}),
    )?;
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await?;

    // The operator, as released.
    let bin =
        std::env::var("OPERATOR_BIN").unwrap_or_else(|_| "target/release/virt-controller".into());
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let log = std::fs::File::create(std::env::temp_dir().join("bench-operator.log"))?;
    let mut op = std::process::Command::new(&bin)
        .arg("--kubeconfig")
        .arg(cp.kubeconfig())
        .args([
            "--metrics-addr",
            &format!("127.0.0.1:{port}"),
            "--leader-election-namespace",
            "default",
        ])
        .env("RUST_LOG", "warn")
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()?;
    let pid = op.id();
    let started = Instant::now();
    while !metrics(port).is_some_and(|m| m.contains("ferrovirt_operator_leader 1")) {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(30),
            "the operator did not become leader"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let requests_before = api_requests(&metrics(port).unwrap_or_default());
    let rss_idle = vm_hwm(pid);

    // Watch pods and VMIs appear.
    let pods: Api<Pod> = Api::namespaced(client.clone(), "bench");
    let vmis: Api<crds::VirtualMachineInstance> = Api::namespaced(client.clone(), "bench");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(bool, String, Instant)>();
    let txp = tx.clone();
    tokio::spawn(
        watcher(pods, watcher::Config::default())
            .applied_objects()
            .try_for_each(move |p| {
                let name = p
                    .labels()
                    .get("vm.kubevirt.io/name")
                    .cloned()
                    .unwrap_or_default();
                let _ = txp.send((true, name, Instant::now()));
                futures::future::ready(Ok(()))
            }),
    );
    tokio::spawn(
        watcher(vmis, watcher::Config::default())
            .applied_objects()
            .try_for_each(move |v| {
                let _ = tx.send((false, v.name_any(), Instant::now()));
                futures::future::ready(Ok(()))
            }),
    );
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Apply N VMs at once (50 requests in flight, as kubectl apply of a big file would not
    // be faster).
    let vms: Api<VirtualMachine> = Api::namespaced(client.clone(), "bench");
    let t0 = Instant::now();
    let created: HashMap<String, Instant> = futures::stream::iter(0..n)
        .map(|i| {
            let vms = vms.clone();
            async move {
                let name = format!("vm-{i:04}");
                let vm: VirtualMachine = serde_json::from_value(json!({
                    "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "metadata": {"name": name},
                    "spec": {"runStrategy": "Always", "template": {"spec": {"domain": {"memory": {"guest": "128Mi"}, "devices": {}}}}},
                }))
                .unwrap();
                vms.create(&PostParams::default(), &vm).await.map(|_| (name, Instant::now()))
            }
        })
        .buffer_unordered(50)
        .try_collect()
        .await?;
    let applied = t0.elapsed();

    let mut pod_seen: HashMap<String, Instant> = HashMap::new();
    let mut vmi_seen: HashMap<String, Instant> = HashMap::new();
    let mut peak = 0u64;
    while pod_seen.len() < n || vmi_seen.len() < n {
        match tokio::time::timeout(Duration::from_secs(1), rx.recv()).await {
            Ok(Some((true, name, at))) => {
                pod_seen.entry(name).or_insert(at);
            }
            Ok(Some((false, name, at))) => {
                vmi_seen.entry(name).or_insert(at);
            }
            Ok(None) => anyhow::bail!("watch ended"),
            Err(_) => {}
        }
        peak = peak.max(vm_hwm(pid));
        anyhow::ensure!(
            t0.elapsed() < Duration::from_secs(900),
            "not done after 15 min: {} pods",
            pod_seen.len()
        );
    }
    let total = pod_seen
        .values()
        .chain(vmi_seen.values())
        .max()
        .unwrap()
        .duration_since(t0);
    let mut lat: Vec<Duration> = created
        .iter()
        .map(|(name, c)| pod_seen[name].saturating_duration_since(*c))
        .collect();
    lat.sort();
    let pct = |p: f64| {
        lat[((lat.len() as f64 * p).ceil() as usize)
            .saturating_sub(1)
            .min(lat.len() - 1)]
    };
    // Let the status writes that follow settle, then count requests.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let m = metrics(port).unwrap_or_default();
    let requests = api_requests(&m) - requests_before;
    peak = peak.max(vm_hwm(pid));

    println!("| metric | value |\n|---|---|");
    println!(
        "| VMs applied (at once, 50 in flight) | {n} in {:.1} s |",
        applied.as_secs_f64()
    );
    println!(
        "| until every VMI and launcher pod exists | {:.1} s |",
        total.as_secs_f64()
    );
    println!(
        "| VMIs with launcher pods per second | {:.1} |",
        n as f64 / total.as_secs_f64()
    );
    println!(
        "| per-VM latency, VM created -> pod exists, p50 | {:.2} s |",
        pct(0.50).as_secs_f64()
    );
    println!("| per-VM latency, p95 | {:.2} s |", pct(0.95).as_secs_f64());
    println!(
        "| per-VM latency, max | {:.2} s |",
        lat.last().unwrap().as_secs_f64()
    );
    println!(
        "| operator peak RSS (VmHWM), idle -> after | {:.1} MiB -> {:.1} MiB |",
        rss_idle as f64 / 1024.0,
        peak as f64 / 1024.0
    );
    println!(
        "| operator API requests per VM (writes, reads, events) | {:.2} |",
        requests / n as f64
    );
    for line in m.lines().filter(|l| {
        l.starts_with("ferrovirt_operator_api_requests_total")
            || l.starts_with("ferrovirt_operator_reconcile_errors_total")
    }) {
        println!("  {line}");
    }
    let _ = op.kill();
    let _ = op.wait();
    Ok(())
}

/// Peak resident set of `pid` in KiB.
fn vm_hwm(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(|l| l.to_string())
        })
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
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
