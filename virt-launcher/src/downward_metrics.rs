//! KubeVirt's downward metrics, kept fed beside the domain's libvirt: the metrics disk
//! rewritten every [`REFRESH_PERIOD`], and the virtio-serial channel answered, with the
//! metrics KubeVirt's virt-handler reports (pkg/downwardmetrics/scraper): the VM's from
//! libvirt, the host's from this node's `/proc` and `/sys` (not namespaced, so a pod reads
//! the node's). Started by the handler's `downward_metrics` request once the domain runs.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ferrovirt_node_contract::downward_metrics::{
    Context, INVALID_REQUEST, Metric, REFRESH_PERIOD, REQUEST, to_xml, write_disk,
};
use ferrovirt_node_contract::frame::LineReader;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use crate::hypervisor::Hypervisor;
use crate::{Error, Result};

/// What the channel answers when the metrics cannot be read (KubeVirt's words).
const NOT_AVAILABLE: &str =
    "<metrics><!-- host metrics not available --><!-- VM metrics not available --></metrics>";
/// KubeVirt's bound on the channel's requests: one a second.
const MIN_REQUEST_INTERVAL: Duration = Duration::from_secs(1);
/// Connection attempts to QEMU's channel socket, waiting 1, 2, 4, ... s between them.
const CONNECT_ATTEMPTS: u32 = 6;
/// The longest request line read from the guest.
const MAX_REQUEST: usize = 4096;

static STARTED: AtomicBool = AtomicBool::new(false);

/// Starts feeding the disk and answering the channel (either may be absent); once per
/// launcher, later calls change nothing.
pub fn start(
    hv: Arc<Hypervisor>,
    node_name: String,
    disk: Option<PathBuf>,
    channel: Option<PathBuf>,
) {
    if STARTED.swap(true, Ordering::SeqCst) {
        return;
    }
    let reporter = Arc::new(Reporter { hv, node_name });
    if let Some(disk) = disk {
        tracing::info!(disk = %disk.display(), "refreshing the downward metrics disk");
        tokio::spawn(refresh(reporter.clone(), disk));
    }
    if let Some(channel) = channel {
        tracing::info!(socket = %channel.display(), "serving the downward metrics channel");
        tokio::spawn(serve_channel(reporter, channel));
    }
}

struct Reporter {
    hv: Arc<Hypervisor>,
    node_name: String,
}

impl Reporter {
    /// KubeVirt's metrics, in its order: the static host facts, the VM's, the host's.
    fn collect(&self) -> Result<Vec<Metric>> {
        let vm = self.hv.guest_stats()?;
        let mut metrics = vec![
            Metric::string(Context::Host, "HostName", &self.node_name),
            Metric::string(Context::Host, "HostSystemInfo", "linux"),
            Metric::string(Context::Host, "VirtualizationVendor", "kubevirt.io"),
            Metric::string(Context::Host, "VirtProductInfo", &vm.qemu_version),
            Metric::real64(
                Context::Vm,
                "TotalCPUTime",
                vm.vcpu_time_ns as f64 / 1e9,
                "s",
            ),
            Metric::int64(Context::Vm, "ResourceProcessorLimit", vm.online_vcpus, None),
            Metric::uint64(
                Context::Vm,
                "PhysicalMemoryAllocatedToVirtualSystem",
                vm.balloon_kib,
                "KiB",
            ),
            Metric::uint64(Context::Vm, "ResourceMemoryLimit", vm.balloon_kib, "KiB"),
        ];
        metrics.extend(host_metrics(Path::new("/proc"), Path::new("/sys")));
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        metrics.push(Metric::int64(Context::Host, "Time", now, Some("s")));
        Ok(metrics)
    }
}

async fn report(reporter: &Arc<Reporter>) -> Result<Vec<Metric>> {
    let r = reporter.clone();
    tokio::task::spawn_blocking(move || r.collect()).await?
}

/// Rewrites the disk every period while the launcher lives; a failed round is logged and
/// the next one tried (the domain may be starting or stopping): a warning for the first
/// failure in a row and every twelfth after it (a minute), so a guest that reads no
/// metrics has its reason in the launcher's log.
async fn refresh(reporter: Arc<Reporter>, disk: PathBuf) {
    let mut tick = tokio::time::interval(REFRESH_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failed_in_a_row = 0u32;
    loop {
        tick.tick().await;
        let written = match report(&reporter).await {
            Ok(metrics) => {
                let path = disk.clone();
                tokio::task::spawn_blocking(move || write_file(&path, &to_xml(&metrics)))
                    .await
                    .map_err(Error::from)
                    .and_then(|r| r)
            }
            Err(e) => Err(e),
        };
        match written {
            Err(e) => {
                if failed_in_a_row.is_multiple_of(12) {
                    tracing::warn!(error = %crate::chain(&e), failed_in_a_row,
                        "downward metrics not refreshed");
                } else {
                    tracing::debug!(error = %crate::chain(&e), "downward metrics not refreshed");
                }
                failed_in_a_row += 1;
            }
            Ok(()) => {
                if failed_in_a_row > 0 {
                    tracing::info!(failed_in_a_row, "downward metrics refreshed again");
                }
                failed_in_a_row = 0;
            }
        }
    }
}

fn write_file(path: &Path, xml: &str) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(Error::io("opening", path))?;
    write_disk(&mut f, xml).map_err(Error::io("writing", path))
}

/// Connects to QEMU's end of the channel and answers the guest until QEMU closes it.
async fn serve_channel(reporter: Arc<Reporter>, socket: PathBuf) {
    let mut wait = Duration::from_secs(1);
    let mut stream = None;
    for attempt in 1..=CONNECT_ATTEMPTS {
        match UnixStream::connect(&socket).await {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) if attempt < CONNECT_ATTEMPTS => {
                tracing::debug!(error = %e, attempt, "downward metrics channel not there yet");
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
            Err(e) => {
                tracing::warn!(error = %e, socket = %socket.display(), "connecting to the downward metrics channel failed")
            }
        }
    }
    let Some(stream) = stream else { return };
    if let Err(e) = answer(&reporter, stream).await {
        tracing::warn!(error = %crate::chain(&e), "downward metrics channel ended");
    }
}

/// The channel's protocol (KubeVirt's virtio-serial server): a request line, a blank
/// line; answered with the XML and a blank line, or `INVALID REQUEST`.
async fn answer(reporter: &Arc<Reporter>, stream: UnixStream) -> Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = LineReader::with_max(BufReader::new(read), MAX_REQUEST);
    let mut last: Option<Instant> = None;
    loop {
        if let Some(at) = last {
            tokio::time::sleep_until((at + MIN_REQUEST_INTERVAL).into()).await;
        }
        let Some(request) = lines.next_line().await? else {
            return Ok(());
        };
        let blank = lines.next_line().await?;
        last = Some(Instant::now());
        let valid = is_metrics_request(request.trim_end_matches('\r'))
            && blank.as_deref().map(|b| b.trim_end_matches('\r')) == Some("");
        let response = if !valid {
            tracing::debug!(%request, "invalid downward metrics request");
            INVALID_REQUEST.to_owned()
        } else {
            match report(reporter).await {
                Ok(metrics) => format!("{}\n\n", to_xml(&metrics)),
                Err(e) => {
                    tracing::warn!(error = %crate::chain(&e), "downward metrics not available");
                    format!("{NOT_AVAILABLE}\n\n")
                }
            }
        };
        write
            .write_all(response.as_bytes())
            .await
            .map_err(Error::Socket)?;
        if blank.is_none() {
            return Ok(());
        }
    }
}

/// `GET /metrics/XML`, a query allowed, as KubeVirt parses it.
fn is_metrics_request(line: &str) -> bool {
    let Some((method, uri)) = line.split_once(' ') else {
        return false;
    };
    let path = uri.split(['?', '#']).next().unwrap_or_default();
    method == "GET" && path == REQUEST.trim_start_matches("GET ")
}

/// The host's metrics, each group left out (and logged) when its source cannot be read,
/// as KubeVirt does.
fn host_metrics(proc: &Path, sys: &Path) -> Vec<Metric> {
    let mut out = Vec::new();
    match physical_cpus(sys) {
        Ok(n) => out.push(Metric::int64(
            Context::Host,
            "NumberOfPhysicalCPUs",
            n as i64,
            None,
        )),
        Err(e) => tracing::debug!(error = %e, "physical CPUs not read"),
    }
    match read(proc, "stat").map(|s| cpu_seconds(&s, clock_ticks())) {
        Ok(Some(seconds)) => out.push(Metric::real64(Context::Host, "TotalCPUTime", seconds, "s")),
        Ok(None) => tracing::debug!("no cpu line in /proc/stat"),
        Err(e) => tracing::debug!(error = %e, "/proc/stat not read"),
    }
    match read(proc, "meminfo") {
        Ok(meminfo) => {
            let kib = |key: &str| field(&meminfo, key, ':').unwrap_or(0);
            let (free, swap_free) = (kib("MemFree"), kib("SwapFree"));
            let (total, swap_total) = (kib("MemTotal"), kib("SwapTotal"));
            let (buffers, cached, swap_cached) = (kib("Buffers"), kib("Cached"), kib("SwapCached"));
            let m = |name, v| Metric::uint64(Context::Host, name, v, "KiB");
            out.extend([
                m("FreePhysicalMemory", free),
                m("FreeVirtualMemory", free + swap_free),
                m(
                    "MemoryAllocatedToVirtualServers",
                    total.saturating_sub(free + buffers + cached),
                ),
                m(
                    "UsedVirtualMemory",
                    (total + swap_total).saturating_sub(free + cached + buffers + swap_cached),
                ),
            ]);
        }
        Err(e) => tracing::debug!(error = %e, "/proc/meminfo not read"),
    }
    match read(proc, "vmstat") {
        Ok(vmstat) => {
            let page_kib = page_size() / 1024;
            let pages = |key: &str| field(&vmstat, key, ' ').unwrap_or(0);
            out.extend([
                Metric::uint64(
                    Context::Host,
                    "PagedInMemory",
                    pages("pswpin") * page_kib,
                    "KiB",
                ),
                Metric::uint64(
                    Context::Host,
                    "PagedOutMemory",
                    pages("pswpout") * page_kib,
                    "KiB",
                ),
            ]);
        }
        Err(e) => tracing::debug!(error = %e, "/proc/vmstat not read"),
    }
    out
}

fn read(proc: &Path, file: &str) -> std::io::Result<String> {
    std::fs::read_to_string(proc.join(file))
}

/// The first number after `key<sep>` at the start of a line (`MemFree:  123 kB`,
/// `pswpin 5`).
fn field(text: &str, key: &str, sep: char) -> Option<u64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(key)?.strip_prefix(sep)?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// user + nice + system of `/proc/stat`'s `cpu` line, in seconds (KubeVirt's host
/// `TotalCPUTime`).
fn cpu_seconds(stat: &str, ticks_per_second: u64) -> Option<f64> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(3)
        .map(|t| t.parse().ok())
        .collect::<Option<_>>()?;
    (ticks.len() == 3).then(|| ticks.iter().sum::<u64>() as f64 / ticks_per_second as f64)
}

/// The distinct physical packages of the node's CPUs.
fn physical_cpus(sys: &Path) -> std::io::Result<usize> {
    let dir = sys.join("devices/system/cpu");
    let mut packages = BTreeSet::new();
    for entry in std::fs::read_dir(&dir)? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        let is_cpu = name
            .strip_prefix("cpu")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        if is_cpu {
            let id = dir.join(&*name).join("topology/physical_package_id");
            packages.insert(std::fs::read_to_string(id)?.trim().to_owned());
        }
    }
    Ok(packages.len())
}

fn clock_ticks() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(t).ok().filter(|t| *t > 0).unwrap_or(100)
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(p).ok().filter(|p| *p > 0).unwrap_or(4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_as_kubevirt_reads_it() {
        let stat = "cpu  100 20 30 4000 5 0 0 0 0 0\ncpu0 50 10 15 2000 0 0 0 0 0 0\n";
        assert_eq!(cpu_seconds(stat, 100), Some(1.5));
        let meminfo = "MemTotal:        2048 kB\nMemFree:          512 kB\nSwapCached:  0 kB\n";
        assert_eq!(field(meminfo, "MemFree", ':'), Some(512));
        assert_eq!(field(meminfo, "Mem", ':'), None);
        assert_eq!(field("pswpin 7\npswpout 9\n", "pswpout", ' '), Some(9));
    }

    #[test]
    fn reads_this_nodes_host_metrics() {
        let names: Vec<&str> = host_metrics(Path::new("/proc"), Path::new("/sys"))
            .iter()
            .map(|m| m.name)
            .collect();
        assert_eq!(
            names,
            [
                "NumberOfPhysicalCPUs",
                "TotalCPUTime",
                "FreePhysicalMemory",
                "FreeVirtualMemory",
                "MemoryAllocatedToVirtualServers",
                "UsedVirtualMemory",
                "PagedInMemory",
                "PagedOutMemory"
            ]
        );
    }

    #[test]
    fn only_the_metrics_request_is_valid() {
        assert!(is_metrics_request("GET /metrics/XML"));
        assert!(is_metrics_request("GET /metrics/XML?x=1"));
        assert!(!is_metrics_request("POST /metrics/XML"));
        assert!(!is_metrics_request("GET /metrics"));
        assert!(!is_metrics_request("GET"));
    }
}
