//! Waiting in tests: poll a condition until it holds, or fail saying what was awaited.

use std::future::Future;
use std::path::Path;
use std::time::{Duration, Instant};

/// Polls `check` every 200 ms until it yields a value; after `timeout` panics naming
/// `what`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    eventually_or(what, timeout, check, String::new).await
}

/// [`eventually`], with `context()` (logs, the object's status) appended to the panic.
pub async fn eventually_or<T, F, Fut, C>(
    what: &str,
    timeout: Duration,
    mut check: F,
    context: C,
) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
    C: FnOnce() -> String,
{
    let started = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if started.elapsed() > timeout {
            panic!(
                "timed out after {timeout:?} waiting for {what}\n{}",
                context()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Blocks until `done()` holds, checking every 100 ms; after `timeout` panics naming
/// `what`.
pub fn wait_until(timeout: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(
            started.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Blocks until the file `log` contains `line`; returns how long that took.
pub fn wait_for_line(log: &Path, line: &str, timeout: Duration) -> Duration {
    let started = Instant::now();
    wait_until(timeout, &format!("{line:?} in {}", log.display()), || {
        std::fs::read_to_string(log).is_ok_and(|s| s.contains(line))
    });
    started.elapsed()
}
