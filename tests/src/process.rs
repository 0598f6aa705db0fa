//! Starting the control-plane processes so that none outlives its owner.
//!
//! Tied processes (tests) are forked by one long-lived thread that never exits, with
//! `PR_SET_PDEATHSIG=SIGKILL`: the kernel sends that signal when the *thread* that forked the
//! child exits, so forking from short-lived test threads would kill the control plane as soon
//! as the first test finished; from this thread it fires only when the whole test process is
//! gone, including when it is killed. An `atexit` hook also stops them and removes their
//! directories when the test binary exits normally or after failed tests.
//!
//! Detached processes (`hack/local-up.sh`) get their own session and a pid file
//! `<dir>/pids/<name>.pid`; `hack/local-down.sh` stops everything that has a pid file there.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};

use crate::Result;
use crate::error::IoContext;

type SpawnRequest = (Command, mpsc::Sender<std::io::Result<Child>>);

static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
/// Tied children still running, and directories to remove at exit.
static TIED: Mutex<Vec<(String, Child)>> = Mutex::new(Vec::new());
static CLEANUP_DIRS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
/// Commands run when this process exits, after its tied children are stopped.
static EXIT_COMMANDS: Mutex<Vec<Command>> = Mutex::new(Vec::new());

/// A started control-plane component.
#[derive(Clone, Debug)]
pub struct Process {
    pub name: String,
    pub pid: u32,
    pub log: PathBuf,
}

/// Starts `program args` with stdout and stderr appended to `log`, tied to this process.
pub fn spawn_tied(name: &str, mut cmd: Command, log: &Path) -> Result<Process> {
    redirect(&mut cmd, log)?;
    let parent = std::process::id();
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died before prctl took effect.
            if libc::getppid() as u32 != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
    let (tx, rx) = mpsc::channel();
    spawner()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .send((cmd, tx))
        .expect("the spawner thread never exits");
    let child = rx
        .recv()
        .expect("the spawner thread always answers")
        .context(|| format!("starting {name}"))?;
    let process = Process {
        name: name.to_string(),
        pid: child.id(),
        log: log.to_path_buf(),
    };
    TIED.lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((name.to_string(), child));
    tracing::debug!(name, pid = process.pid, "started");
    Ok(process)
}

/// Starts `program args` in its own session, writing `<pid_dir>/<name>.pid`; it keeps
/// running after this process exits.
pub fn spawn_detached(name: &str, mut cmd: Command, log: &Path, pid_dir: &Path) -> Result<Process> {
    redirect(&mut cmd, log)?;
    // SAFETY: setsid is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().context(|| format!("starting {name}"))?;
    std::fs::create_dir_all(pid_dir).context(|| format!("creating {}", pid_dir.display()))?;
    let pid_file = pid_dir.join(format!("{name}.pid"));
    std::fs::write(&pid_file, format!("{}\n", child.id()))
        .context(|| format!("writing {}", pid_file.display()))?;
    tracing::debug!(name, pid = child.id(), "started detached");
    Ok(Process {
        name: name.to_string(),
        pid: child.id(),
        log: log.to_path_buf(),
    })
}

/// Whether the process `pid` has exited (reaping it if it is a tied child).
pub fn has_exited(pid: u32) -> bool {
    let mut tied = TIED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, child)) = tied.iter_mut().find(|(_, c)| c.id() == pid) {
        return !matches!(child.try_wait(), Ok(None));
    }
    drop(tied);
    !alive(pid)
}

/// Whether a process with this pid exists (and is not a zombie).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            // The state follows the parenthesised command name.
            let state = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.trim_start().chars().next());
            !matches!(state, Some('Z') | Some('X') | None)
        }
        Err(_) => false,
    }
}

/// Kills the tied children listed (all of them when `pids` is None) and reaps them.
pub fn kill_tied(pids: Option<&[u32]>) {
    let mut tied = match TIED.try_lock() {
        Ok(t) => t,
        Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
        // Someone holds it while we are exiting: the death signal still covers them.
        Err(std::sync::TryLockError::WouldBlock) => return,
    };
    tied.retain_mut(|(_, child)| {
        if pids.is_some_and(|p| !p.contains(&child.id())) {
            return true;
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    });
}

/// Runs `cmd` (waiting for it) when this process exits, after its tied children are
/// stopped and before directories are removed.
pub fn run_at_exit(cmd: Command) {
    install_exit_hook();
    EXIT_COMMANDS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(cmd);
}

/// Removes `dir` when this process exits (after its tied children are stopped).
pub fn remove_at_exit(dir: &Path) {
    install_exit_hook();
    CLEANUP_DIRS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(dir.to_path_buf());
}

fn redirect(cmd: &mut Command, log: &Path) -> Result<()> {
    let out = File::options()
        .create(true)
        .append(true)
        .open(log)
        .context(|| format!("opening {}", log.display()))?;
    let err = out
        .try_clone()
        .context(|| format!("opening {}", log.display()))?;
    cmd.stdin(Stdio::null()).stdout(out).stderr(err);
    Ok(())
}

fn spawner() -> &'static Mutex<mpsc::Sender<SpawnRequest>> {
    SPAWNER.get_or_init(|| {
        install_exit_hook();
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("ferrovirt-spawner".into())
            .spawn(move || {
                // Holds the forks' death signal: this thread lives as long as the process.
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
                // All senders gone cannot happen (SPAWNER is static); park just in case.
                loop {
                    std::thread::park();
                }
            })
            .expect("spawning the ferrovirt-spawner thread");
        Mutex::new(tx)
    })
}

fn install_exit_hook() {
    static HOOK: OnceLock<()> = OnceLock::new();
    HOOK.get_or_init(|| {
        extern "C" fn at_exit() {
            kill_tied(None);
            if let Ok(mut commands) = EXIT_COMMANDS.try_lock() {
                for cmd in commands.iter_mut() {
                    let _ = cmd
                        .stdin(Stdio::null())
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .status();
                }
            }
            let dirs = match CLEANUP_DIRS.try_lock() {
                Ok(d) => d,
                Err(_) => return,
            };
            for dir in dirs.iter() {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
        // SAFETY: registering a plain extern "C" function.
        unsafe {
            libc::atexit(at_exit);
        }
    });
}
