//! Follows the domain to its end and turns SIGTERM into a graceful guest shutdown.
//!
//! Exit codes (also in README.md):
//! - 0: the guest powered off (on its own, on a `shutdown` request or on SIGTERM); or
//!   SIGTERM arrived before any domain ran; or SIGTERM's grace period expired and the
//!   launcher destroyed the domain (the stop was asked for and happened).
//! - 1: the launcher itself failed (libvirt would not open, socket, ...).
//! - 2: QEMU crashed or libvirt could not keep the domain up.
//! - 3: the domain was destroyed for any other reason (a `destroy` request, an outside
//!   kill that libvirt reports as destroyed) or stopped for an unexpected reason.

use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::events::EventLog;
use crate::hypervisor::Hypervisor;
use crate::protocol::{Event, StopReason};
use crate::{Error, Result};

/// A guest still booting may miss the power button (no handler yet): press it again
/// this often during the grace period.
const REPRESS: Duration = Duration::from_secs(5);

/// How long `destroy` after the grace period may take to be reported.
const DESTROY_WAIT: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// SIGTERM before any domain ran.
    NoGuest,
    Stopped(StopReason),
    /// SIGTERM, the guest did not power off in time, the launcher destroyed it.
    GraceExpired,
}

impl Outcome {
    pub fn exit_code(self) -> u8 {
        match self {
            Outcome::NoGuest | Outcome::GraceExpired | Outcome::Stopped(StopReason::Shutdown) => 0,
            Outcome::Stopped(StopReason::Crashed | StopReason::Failed) => 2,
            Outcome::Stopped(StopReason::Destroyed | StopReason::Other) => 3,
        }
    }
}

pub struct Supervisor {
    pub hv: Arc<Hypervisor>,
    pub log: Arc<EventLog>,
    pub raw: UnboundedReceiver<Event>,
    pub grace: Duration,
    /// A stop only ends the launcher after a start: a define that fails to start also
    /// reports "stopped (failed)", and the handler may try again.
    started: bool,
    /// Guest resets since the domain started.
    resets: u64,
}

impl Supervisor {
    pub fn new(
        hv: Arc<Hypervisor>,
        log: Arc<EventLog>,
        raw: UnboundedReceiver<Event>,
        grace: Duration,
    ) -> Self {
        Supervisor {
            hv,
            log,
            raw,
            grace,
            started: false,
            resets: 0,
        }
    }

    /// Runs until the domain has stopped, or SIGTERM/SIGINT finished their work.
    pub async fn run(mut self) -> Result<Outcome> {
        let mut term = signal(SignalKind::terminate()).map_err(Error::Socket)?;
        let mut int = signal(SignalKind::interrupt()).map_err(Error::Socket)?;
        loop {
            tokio::select! {
                Some(event) = self.raw.recv() => {
                    if let Some(reason) = self.record(event) {
                        tracing::info!(?reason, "domain stopped");
                        return Ok(Outcome::Stopped(reason));
                    }
                }
                _ = term.recv() => return self.terminate("SIGTERM").await,
                _ = int.recv() => return self.terminate("SIGINT").await,
            }
        }
    }

    async fn terminate(&mut self, signal: &str) -> Result<Outcome> {
        let hv = self.hv.clone();
        if !tokio::task::spawn_blocking(move || hv.is_active()).await? {
            tracing::info!(signal, "no domain running; exiting");
            return Ok(Outcome::NoGuest);
        }
        tracing::info!(signal, grace = ?self.grace, "asking the guest to power off (ACPI)");
        let deadline = tokio::time::Instant::now() + self.grace;
        loop {
            let hv = self.hv.clone();
            if let Err(e) = tokio::task::spawn_blocking(move || hv.shutdown()).await? {
                tracing::warn!(error = %e, "ACPI shutdown request failed");
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                break;
            }
            if let Some(reason) = self.wait_stop(left.min(REPRESS)).await {
                return Ok(Outcome::Stopped(reason));
            }
            if tokio::time::Instant::now() >= deadline {
                break;
            }
            tracing::info!("guest still running; pressing the power button again");
        }
        tracing::warn!(grace = ?self.grace, "guest still running after the grace period; destroying it");
        let hv = self.hv.clone();
        if let Err(e) = tokio::task::spawn_blocking(move || hv.destroy()).await? {
            tracing::error!(error = %e, "destroy failed");
        }
        self.wait_stop(DESTROY_WAIT).await;
        Ok(Outcome::GraceExpired)
    }

    /// Records events until a stop or the timeout.
    async fn wait_stop(&mut self, timeout: Duration) -> Option<StopReason> {
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                // The sender lives as long as the connection: None does not happen.
                Some(event) = self.raw.recv() => {
                    if let Some(reason) = self.record(event) {
                        return Some(reason);
                    }
                }
                _ = &mut deadline => return None,
            }
        }
    }

    /// Logs and publishes an event; returns the reason of a stop that ends the launcher.
    fn record(&mut self, event: Event) -> Option<StopReason> {
        let event = match event {
            Event::Rebooted { .. } => {
                self.resets += 1;
                Event::Rebooted { count: self.resets }
            }
            e => e,
        };
        tracing::info!(?event, "domain event");
        if self.hv.is_hold_event(&event) {
            // A paused start while the handler checks QEMU's files: not the user's pause.
            return None;
        }
        if event == Event::Resumed && !self.started {
            // libvirt starts QEMU paused and resumes it just before "started": noise.
            return None;
        }
        self.log.push(event.clone());
        match event {
            Event::Started => {
                self.started = true;
                None
            }
            Event::Stopped { reason } if self.started => Some(reason),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes() {
        assert_eq!(Outcome::Stopped(StopReason::Shutdown).exit_code(), 0);
        assert_eq!(Outcome::GraceExpired.exit_code(), 0);
        assert_eq!(Outcome::NoGuest.exit_code(), 0);
        assert_eq!(Outcome::Stopped(StopReason::Crashed).exit_code(), 2);
        assert_eq!(Outcome::Stopped(StopReason::Failed).exit_code(), 2);
        assert_eq!(Outcome::Stopped(StopReason::Destroyed).exit_code(), 3);
    }
}
