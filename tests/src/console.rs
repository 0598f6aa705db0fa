//! A console client (KubeVirt's virtctl, ferroctl) run as a process with a pipe on stdin,
//! its output gathered by threads of its own (so a client outlives the Tokio runtime of
//! the test that started it), and a TCP proxy that drops idle connections.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::error::IoContext;
use crate::{Error, Result};

/// A running client with its stdin open.
pub struct Client {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    /// When it was spawned and when its first stdout byte came.
    pub started: Instant,
    first_byte: Arc<Mutex<Option<Instant>>>,
    what: String,
}

fn gather(
    mut from: impl Read + Send + 'static,
    into: Arc<Mutex<Vec<u8>>>,
    first: Option<Arc<Mutex<Option<Instant>>>>,
) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 {
                break;
            }
            if let Some(f) = &first {
                f.lock().unwrap().get_or_insert_with(Instant::now);
            }
            into.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
}

impl Client {
    /// Starts `program --kubeconfig <kubeconfig> args...`.
    pub fn spawn(program: &Path, kubeconfig: &Path, args: &[&str]) -> Result<Client> {
        let mut cmd = Command::new(program);
        cmd.arg("--kubeconfig").arg(kubeconfig).args(args);
        Self::start(cmd)
    }

    /// Starts `cmd` with pipes on stdin, stdout and stderr.
    pub fn start(mut cmd: Command) -> Result<Client> {
        let what = format!(
            "{} {}",
            cmd.get_program().to_string_lossy(),
            cmd.get_args()
                .map(|a| a.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" ")
        );
        let started = Instant::now();
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context(|| format!("running {what}"))?;
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let first_byte = Arc::new(Mutex::new(None));
        gather(
            child.stdout.take().expect("piped"),
            stdout.clone(),
            Some(first_byte.clone()),
        );
        gather(child.stderr.take().expect("piped"), stderr.clone(), None);
        Ok(Client {
            stdin: child.stdin.take(),
            child,
            stdout,
            stderr,
            started,
            first_byte,
            what,
        })
    }

    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout.lock().unwrap()).into_owned()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }

    /// Spawn to first stdout byte.
    pub fn first_byte_after(&self) -> Option<Duration> {
        self.first_byte.lock().unwrap().map(|t| t - self.started)
    }

    /// Writes to its stdin.
    pub fn send(&mut self, text: &[u8]) -> Result<()> {
        let stdin = self.stdin.as_mut().ok_or_else(|| Error::Timeout {
            what: format!("stdin of {} (closed)", self.what),
            seconds: 0,
        })?;
        stdin
            .write_all(text)
            .and_then(|_| stdin.flush())
            .context(|| format!("writing to {}", self.what))
    }

    /// Closes its stdin (the end of a piped input).
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Waits until its stdout (`err`: stderr) holds `text`; panics after `timeout` with
    /// what it printed.
    pub async fn expect(&self, text: &str, err: bool, timeout: Duration) {
        let started = Instant::now();
        loop {
            let seen = if err { self.stderr() } else { self.stdout() };
            if seen.contains(text) {
                return;
            }
            if started.elapsed() > timeout {
                panic!(
                    "{}: no {text:?} after {} s\nstdout:\n{}\nstderr:\n{}",
                    self.what,
                    timeout.as_secs(),
                    self.stdout(),
                    self.stderr()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Its exit status once it exited, waiting at most `timeout`.
    pub async fn exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if started.elapsed() > timeout {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Whether it still runs.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP proxy on 127.0.0.1 in front of `upstream` that drops any connection on which no
/// byte moved, either way, for `idle`: what some load balancers do to a quiet console.
/// Runs in the current Tokio runtime.
pub async fn idle_dropping_proxy(upstream: String, idle: Duration) -> Result<u16> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context(|| "binding the idle proxy".into())?;
    let port = listener
        .local_addr()
        .context(|| "binding the idle proxy".into())?
        .port();
    tokio::spawn(async move {
        while let Ok((down, _)) = listener.accept().await {
            let upstream = upstream.clone();
            tokio::spawn(async move {
                let Ok(up) = tokio::net::TcpStream::connect(&upstream).await else {
                    return;
                };
                let last = Arc::new(Mutex::new(Instant::now()));
                let (dr, dw) = down.into_split();
                let (ur, uw) = up.into_split();
                let a = tokio::spawn(copy(dr, uw, last.clone()));
                let b = tokio::spawn(copy(ur, dw, last.clone()));
                loop {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    if a.is_finished() || b.is_finished() || last.lock().unwrap().elapsed() > idle {
                        break;
                    }
                }
                a.abort();
                b.abort();
            });
        }
    });
    Ok(port)
}

async fn copy(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    last: Arc<Mutex<Instant>>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    while let Ok(n) = from.read(&mut buf).await {
        if n == 0 || to.write_all(&buf[..n]).await.is_err() {
            break;
        }
        *last.lock().unwrap() = Instant::now();
    }
}
