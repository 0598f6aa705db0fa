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
    fn pod_dir_layout() {
        let d = PodDir::new(Path::new("/s"), "ns", "p", "u1");
        assert_eq!(d.log("c"), Path::new("/s/pods/ns_p_u1/c.log"));
        assert_eq!(d.volume("v"), Path::new("/s/pods/ns_p_u1/volumes/v"));
    }
}
