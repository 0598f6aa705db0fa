//! Taking over the containers an earlier devnode started (devnode restarts never kill pods).

use super::Worker;
use crate::runtime::{self, read_exit};
use crate::state::{ShimSpec, Started, is_alive, read_json};
use crate::status::{State, Terminated, exit_reason};
use nix::sys::signal::Signal;

impl Worker {
    /// Rebuilds the pod's container states from its state dir. A container the API says
    /// was started but that left no live process and no exit record fails the pod.
    pub(super) fn adopt(&mut self) {
        let api = self.pod.status.clone().unwrap_or_default();
        let api_statuses: Vec<_> = api
            .init_container_statuses
            .iter()
            .flatten()
            .chain(api.container_statuses.iter().flatten())
            .cloned()
            .collect();
        let names: Vec<String> = self
            .st
            .init
            .iter()
            .chain(self.st.main.iter())
            .map(|r| r.name.clone())
            .collect();
        if let Some(s) = read_json::<Started>(&self.dir.started(crate::sandbox::NAME))
            && is_alive(s.shim_pid, s.shim_start)
        {
            let exit_file = self.dir.exited(crate::sandbox::NAME);
            runtime::follow(crate::sandbox::NAME, &s, &exit_file, self.exits_tx.clone());
            self.sandbox = Some(s);
        }
        let mut lost = Vec::new();
        for name in names {
            let api_status = api_statuses.iter().find(|s| s.name == name);
            let restarts = api_status.map(|s| s.restart_count).unwrap_or(0);
            let was_started = api_status.is_some_and(|s| s.container_id.is_some());
            let started: Option<Started> = read_json(&self.dir.started(&name));
            let exit_file = self.dir.exited(&name);
            let Some(s) = started else {
                if was_started {
                    lost.push(name);
                }
                continue;
            };
            self.st.sandbox_ready = true;
            if exit_file.exists() {
                let e = read_exit(&exit_file);
                let t = Terminated {
                    exit_code: e.exit_code,
                    signal: e.signal,
                    reason: e.reason.unwrap_or_else(|| exit_reason(e.exit_code).into()),
                    message: e.message,
                    started_at: Some(s.started_at),
                    finished_at: e.finished_at,
                    pid: Some(s.pid),
                };
                if let Some(r) = self.record(&name) {
                    r.state = State::Terminated(t);
                    r.restarts = restarts;
                }
            } else if is_alive(s.shim_pid, s.shim_start) {
                tracing::info!(pod = %self.name(), container = %name, pid = s.pid, "adopting running container");
                let mounts = read_json::<ShimSpec>(&self.dir.spec(&name))
                    .map(|sp| sp.mounts)
                    .unwrap_or_default();
                runtime::follow(&name, &s, &exit_file, self.exits_tx.clone());
                if let Some(c) = self.container(&name) {
                    self.set_running(&c, s, &mounts);
                }
                if let Some(r) = self.record(&name) {
                    r.restarts = restarts;
                }
            } else {
                lost.push(name);
            }
        }
        if !lost.is_empty() {
            for s in self.running.values() {
                runtime::signal(s, Signal::SIGKILL);
            }
            let msg = format!(
                "devnode restarted and found neither a live process nor an exit record for container(s) {lost:?} in {}",
                self.dir.path().display()
            );
            tracing::warn!(pod = %self.name(), "{msg}");
            self.st.failed = Some(("DevnodeLostContainers".into(), msg));
        }
    }
}
