//! The state dir's layout, shared by devnode and its shim, and what lets a restarted
//! devnode find the containers it started.
//!
//! `<state-dir>/pods/<ns>_<name>_<uid>/` holds per container `<c>.log` (stdout and
//! stderr), `<c>.spec.json` (what the shim runs), `<c>.started.json` (pids and their
//! start times) and `<c>.exit.json` (written by the shim when the container ends), and
//! `volumes/<volume>/` for emptyDir and rendered configMap/secret/downwardAPI/projected
//! volumes.

use crate::{Error, Result};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug)]
pub struct PodDir(PathBuf);

impl PodDir {
    pub fn new(state_dir: &Path, namespace: &str, name: &str, uid: &str) -> Self {
        PodDir(
            state_dir
                .join("pods")
                .join(format!("{namespace}_{name}_{uid}")),
        )
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
    pub fn log(&self, container: &str) -> PathBuf {
        self.0.join(format!("{container}.log"))
    }
    pub fn spec(&self, container: &str) -> PathBuf {
        self.0.join(format!("{container}.spec.json"))
    }
    pub fn started(&self, container: &str) -> PathBuf {
        self.0.join(format!("{container}.started.json"))
    }
    pub fn exited(&self, container: &str) -> PathBuf {
        self.0.join(format!("{container}.exit.json"))
    }
    pub fn volume(&self, volume: &str) -> PathBuf {
        self.0.join("volumes").join(volume)
    }
}

/// A bind mount the shim makes inside the container's mount namespace.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Mount {
    pub source: PathBuf,
    pub target: PathBuf,
    pub read_only: bool,
}

/// Everything the shim needs to start one container.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ShimSpec {
    pub path: PathBuf,
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: Option<PathBuf>,
    pub hostname: String,
    pub mounts: Vec<Mount>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub log: PathBuf,
    pub started_file: PathBuf,
    pub exit_file: PathBuf,
    /// `terminationMessagePolicy: FallbackToLogsOnError`: a failed container's message is
    /// the end of its log, as kubelet makes it.
    #[serde(default)]
    pub logs_on_error: bool,
    /// The pod's PID namespace to join (`shareProcessNamespace`: the sandbox's,
    /// `/proc/<sandbox pid>/ns/pid`); `None`: a new one, the container's process its PID 1.
    #[serde(default)]
    pub pid_namespace: Option<PathBuf>,
}

/// Written by the shim once the container's process has exec'd.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Started {
    /// Host PID of the container's main process (PID 1 of its namespace).
    pub pid: i32,
    pub pid_start: u64,
    pub shim_pid: i32,
    pub shim_start: u64,
    pub started_at: DateTime<Utc>,
}

/// Written by the shim when the container's main process has ended.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Exited {
    pub exit_code: i32,
    pub signal: Option<i32>,
    /// Set when the process never ran (`StartError`) or was lost.
    pub reason: Option<String>,
    pub message: Option<String>,
    pub finished_at: DateTime<Utc>,
}

/// Start time of a process (field 22 of /proc/<pid>/stat, clock ticks since boot), so a
/// recycled PID is never mistaken for the container.
pub fn process_start(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Whether the process is still the one recorded (and not a zombie).
pub fn is_alive(pid: i32, start: u64) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let Some(i) = stat.rfind(')') else {
        return false;
    };
    let fields: Vec<&str> = stat[i + 1..].split_whitespace().collect();
    fields.first() != Some(&"Z") && fields.get(19).and_then(|f| f.parse().ok()) == Some(start)
}

/// Whether a container recorded in a pod dir may still run: its shim or its main process
/// is alive (a `<c>.started.json` names them).
pub fn has_live_container(pod_dir: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(pod_dir) else {
        return false;
    };
    entries.flatten().any(|e| {
        e.file_name().to_string_lossy().ends_with(".started.json")
            && read_json::<Started>(&e.path())
                .is_some_and(|s| is_alive(s.shim_pid, s.shim_start) || is_alive(s.pid, s.pid_start))
    })
}

/// Removes the pod dirs under `<state-dir>/pods/` of pods whose UID is not in `existing`
/// (deleted while devnode was down, or left by an earlier cluster), except those in which a
/// container still lives. Returns the dirs removed.
pub fn remove_stale_pod_dirs(state_dir: &Path, existing: &HashSet<String>) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    let Ok(entries) = std::fs::read_dir(state_dir.join("pods")) else {
        return removed;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        // `<ns>_<name>_<uid>`: none of the three contains `_`.
        let Some((_, uid)) = name.rsplit_once('_') else {
            continue;
        };
        if existing.contains(uid) || !path.is_dir() {
            continue;
        }
        if has_live_container(&path) {
            tracing::warn!(dir = %path.display(), "a pod that no longer exists left a live container: keeping its state dir (devnode stop-all kills it)");
            continue;
        }
        match std::fs::remove_dir_all(&path) {
            Ok(()) => removed.push(path),
            Err(e) => {
                tracing::warn!(dir = %path.display(), error = %e, "cannot remove the state dir of a pod that no longer exists")
            }
        }
    }
    removed
}

pub fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Option<T> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// Writes a JSON file atomically (write then rename), so readers never see half a file.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let tmp = path.with_extension("tmp");
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(Error::io(format!("create {}", dir.display())))?;
    }
    std::fs::write(&tmp, serde_json::to_vec(value)?)
        .map_err(Error::io(format!("write {}", tmp.display())))?;
    std::fs::rename(&tmp, path).map_err(Error::io(format!("rename to {}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_alive_with_its_start_time() {
        let pid = std::process::id() as i32;
        let start = process_start(pid).expect("start time of this process");
        assert!(is_alive(pid, start));
        assert!(!is_alive(pid, start + 1));
    }

    #[test]
    fn stale_pod_dirs_go_but_existing_and_live_ones_stay() {
        let state = tempfile::tempdir().unwrap();
        let dir = |uid: &str| PodDir::new(state.path(), "ns", "p", uid);
        for uid in ["gone", "exists", "live"] {
            std::fs::create_dir_all(dir(uid).volume("v")).unwrap();
            std::fs::write(dir(uid).log("c"), "log").unwrap();
        }
        // "live": its pod is gone but a container (this test process) still runs.
        let pid = std::process::id() as i32;
        let start = process_start(pid).unwrap();
        let started = Started {
            pid,
            pid_start: start,
            shim_pid: pid,
            shim_start: start,
            started_at: chrono::Utc::now(),
        };
        write_json(&dir("live").started("c"), &started).unwrap();
        let removed = remove_stale_pod_dirs(state.path(), &HashSet::from(["exists".to_string()]));
        assert_eq!(removed, vec![dir("gone").path().to_path_buf()]);
        assert!(!dir("gone").path().exists());
        assert!(dir("exists").log("c").exists() && dir("live").log("c").exists());
    }

    #[test]
    fn pod_dir_layout() {
        let d = PodDir::new(Path::new("/s"), "ns", "p", "u1");
        assert_eq!(d.log("c"), Path::new("/s/pods/ns_p_u1/c.log"));
        assert_eq!(d.volume("v"), Path::new("/s/pods/ns_p_u1/volumes/v"));
    }
}
