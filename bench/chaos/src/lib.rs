//! The chaos soak (issue 12): a real control plane, devnode, two virt-controller replicas
//! (leader and standby) and virt-handler run a handful of VMs of mixed runStrategy; each
//! cycle SIGKILLs one seeded-random target (or powers a guest off from inside), restarts it
//! as a supervisor would, waits until the cluster settles and counts what went wrong:
//! two QEMU or two launchers for one VMI, a VM that should run without a Running VMI whose
//! guest answers on its console, a guest that rebooted although its own launcher and QEMU
//! were left alone, orphan processes, directories or pods, a VMI stuck short of a final
//! phase, VM status that does not match.
//!
//! `cargo run -p ferrovirt-chaos -- --cycles 50` (bench/chaos.sh) prints the report;
//! `tests/short.rs` runs a few seeded cycles in CI.

mod cluster;
mod observe;
pub mod procs;
mod report;
mod rng;

use std::time::{Duration, Instant};

pub use cluster::Cluster;
pub use observe::Expect;
pub use report::Report;
pub use rng::Rng;

/// What one soak does.
#[derive(Clone, Debug)]
pub struct Options {
    /// Seeds the choice of targets; printed in the report so a run can be repeated.
    pub seed: u64,
    /// Faults to inject.
    pub cycles: u32,
    /// VMs: 50 % Always, 30 % RerunOnFailure, the rest Halted (at least one of each).
    pub vms: usize,
    /// How long the cluster gets to settle after a fault before what is still wrong counts.
    pub settle_timeout: Duration,
    /// A VMI short of a final phase for longer than this is stuck.
    pub stuck_after: Duration,
    /// Stop after this much time even if cycles remain.
    pub time_limit: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            seed: 1,
            cycles: 50,
            vms: 10,
            settle_timeout: Duration::from_secs(240),
            stuck_after: Duration::from_secs(180),
            time_limit: Duration::from_secs(3 * 3600),
        }
    }
}

/// What a cycle kills (or does to a guest).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Target {
    Leader,
    Standby,
    Handler,
    Devnode,
    Launcher,
    Qemu,
    Apiserver,
    Etcd,
    GuestPoweroff,
}

impl Target {
    pub const ALL: [Target; 9] = [
        Target::Leader,
        Target::Standby,
        Target::Handler,
        Target::Devnode,
        Target::Launcher,
        Target::Qemu,
        Target::Apiserver,
        Target::Etcd,
        Target::GuestPoweroff,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Target::Leader => "virt-controller leader",
            Target::Standby => "virt-controller standby",
            Target::Handler => "virt-handler",
            Target::Devnode => "devnode (the node agent)",
            Target::Launcher => "one virt-launcher",
            Target::Qemu => "one QEMU",
            Target::Apiserver => "kube-apiserver",
            Target::Etcd => "etcd",
            Target::GuestPoweroff => "guest poweroff",
        }
    }
}

/// Runs the soak; progress on stderr (tracing), the report at the end.
pub async fn run(opts: &Options) -> anyhow::Result<Report> {
    let started = Instant::now();
    let mut rng = Rng::new(opts.seed);
    // Which guest a fault hits comes from a second generator, so that the sequence of
    // targets depends on the seed alone.
    let mut picks = Rng::new(opts.seed ^ 0x5eed_5eed_5eed_5eed);
    let mut report = Report::new(opts);
    let cluster = Cluster::start(opts.vms).await?;
    tracing::info!(vms = opts.vms, "waiting for the first boots");
    let first = cluster.settle(opts, &mut report, None).await?;
    tracing::info!(
        seconds = first.as_secs_f64(),
        "cluster settled: every VM as expected"
    );
    for cycle in 1..=opts.cycles {
        if started.elapsed() > opts.time_limit {
            tracing::warn!(cycle, "time limit reached");
            break;
        }
        let target = Target::ALL[rng.below(Target::ALL.len())];
        let before = cluster.boots();
        let hit = cluster.inject(target, &mut picks).await?;
        tracing::info!(cycle, target = target.name(), vm = ?hit, "fault injected");
        let settle = cluster.settle(opts, &mut report, Some(cycle)).await?;
        cluster.check_same_boots(&before, hit.as_deref(), target, &mut report);
        report.cycle(target, settle);
        tracing::info!(
            cycle,
            seconds = settle.as_secs_f64(),
            violations = report.total_violations(),
            "settled"
        );
    }
    report.finish(started.elapsed());
    Ok(report)
}
