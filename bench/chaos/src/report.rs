//! The soak's tally and its table.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use crate::{Options, Target};

/// Kinds of violation, each with a target of 0.
pub const KINDS: [&str; 8] = [
    "two QEMU for one VMI",
    "two launchers for one VMI",
    "VM not as expected after settling",
    "guest rebooted although its launcher and QEMU were left alone",
    "orphan QEMU, launcher, directory or pod",
    "VMI stuck short of a final phase",
    "VM status untrue after settling",
    "console did not answer",
];

pub struct Report {
    seed: u64,
    vms: usize,
    settle_timeout: Duration,
    faults: BTreeMap<Target, u32>,
    settles: Vec<Duration>,
    violations: BTreeMap<&'static str, Vec<String>>,
    elapsed: Duration,
}

impl Report {
    pub fn new(opts: &Options) -> Self {
        Report {
            seed: opts.seed,
            vms: opts.vms,
            settle_timeout: opts.settle_timeout,
            faults: BTreeMap::new(),
            settles: Vec::new(),
            violations: BTreeMap::new(),
            elapsed: Duration::ZERO,
        }
    }

    /// Counts a violation (the same detail once).
    pub fn violation(&mut self, kind: &'static str, detail: String) {
        debug_assert!(KINDS.contains(&kind), "{kind}");
        let list = self.violations.entry(kind).or_default();
        if !list.contains(&detail) {
            tracing::warn!(kind, %detail, "violation");
            list.push(detail);
        }
    }

    pub fn cycle(&mut self, target: Target, settle: Duration) {
        *self.faults.entry(target).or_default() += 1;
        self.settles.push(settle);
    }

    pub fn finish(&mut self, elapsed: Duration) {
        self.elapsed = elapsed;
    }

    pub fn cycles(&self) -> usize {
        self.settles.len()
    }

    /// How many cycles hit each target.
    pub fn faults(&self) -> &BTreeMap<Target, u32> {
        &self.faults
    }

    pub fn total_violations(&self) -> usize {
        self.violations.values().map(Vec::len).sum()
    }

    pub fn violations(&self) -> &BTreeMap<&'static str, Vec<String>> {
        &self.violations
    }

    fn percentile(&self, p: f64) -> Option<Duration> {
        let mut s = self.settles.clone();
        s.sort();
        let i = ((s.len() as f64 * p).ceil() as usize).checked_sub(1)?;
        s.get(i.min(s.len().saturating_sub(1))).copied()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs =
            |d: Option<Duration>| d.map_or("-".into(), |d| format!("{:.1} s", d.as_secs_f64()));
        writeln!(
            f,
            "chaos soak: seed {}, {} VMs, {} cycles in {:.0} s",
            self.seed,
            self.vms,
            self.cycles(),
            self.elapsed.as_secs_f64()
        )?;
        writeln!(f, "\n| fault | cycles |\n|---|---|")?;
        for target in Target::ALL {
            writeln!(
                f,
                "| {} | {} |",
                target.name(),
                self.faults.get(&target).copied().unwrap_or(0)
            )?;
        }
        writeln!(
            f,
            "\nsettle time (fault to every check passing; bound {:.0} s): p50 {}, p95 {}, max {}",
            self.settle_timeout.as_secs_f64(),
            secs(self.percentile(0.5)),
            secs(self.percentile(0.95)),
            secs(self.settles.iter().max().copied())
        )?;
        writeln!(f, "\n| violation | count (target 0) |\n|---|---|")?;
        for kind in KINDS {
            let n = self.violations.get(kind).map_or(0, Vec::len);
            writeln!(f, "| {kind} | {n} |")?;
        }
        for (kind, details) in &self.violations {
            for d in details {
                writeln!(f, "- {kind}: {d}")?;
            }
        }
        Ok(())
    }
}
