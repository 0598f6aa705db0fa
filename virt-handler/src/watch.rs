//! Watches that come back quickly after an API server outage.
//!
//! kube's `default_backoff` grows to 30 s while the API server is down and is not reset
//! by a watch that merely connects, so after a restart the handler slept through the
//! `410 Expired` that tells it to list again, and stayed blind for half a minute. Here an
//! expired resource version lists again at once, and other errors back off from 200 ms
//! to at most [`MAX_BACKOFF`] (with jitter), reset by the first event that arrives.

use std::fmt::Debug;
use std::time::Duration;

use futures::stream::{BoxStream, StreamExt};
use kube::runtime::watcher::{self, Event};
use kube::{Api, Resource};
use serde::de::DeserializeOwned;

const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// The longest pause between two attempts while the API server is unreachable.
pub const MAX_BACKOFF: Duration = Duration::from_secs(4);

/// The watcher's events; errors are logged here and never end the stream.
pub fn events<K>(
    api: Api<K>,
    config: watcher::Config,
    what: &'static str,
) -> BoxStream<'static, Event<K>>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    let inner = watcher::watcher(api, config).boxed();
    futures::stream::unfold((inner, Backoff::default()), move |(mut inner, mut backoff)| async move {
        loop {
            match inner.next().await? {
                Ok(event) => {
                    backoff.reset();
                    return Some((event, (inner, backoff)));
                }
                Err(e) if expired(&e) => {
                    // The watcher has dropped its resource version: its next step lists.
                    tracing::info!(watch = what, "resource version expired; listing again now");
                }
                Err(e) => {
                    let pause = backoff.next_pause();
                    tracing::warn!(watch = what, error = %e, retry_in_ms = pause.as_millis() as u64, "watch failed");
                    tokio::time::sleep(pause).await;
                }
            }
        }
    })
    .boxed()
}

/// `410 Gone`/`Expired` from the API server: the resource version is too old.
pub fn expired(e: &watcher::Error) -> bool {
    match e {
        watcher::Error::WatchError(status) => status.code == 410,
        _ => false,
    }
}

/// Exponential, capped at [`MAX_BACKOFF`], with up to 25 % jitter so that the nodes of a
/// cluster do not all come back in the same instant.
#[derive(Debug, Default)]
pub struct Backoff {
    failures: u32,
}

impl Backoff {
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    pub fn next_pause(&mut self) -> Duration {
        let base = FIRST_BACKOFF
            .saturating_mul(1 << self.failures.min(16))
            .min(MAX_BACKOFF);
        self.failures = self.failures.saturating_add(1);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let jitter = base.mul_f64(f64::from(nanos % 250) / 1000.0);
        (base - base / 8 + jitter).min(MAX_BACKOFF)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backs_off_to_a_ceiling_and_resets() {
        let mut b = Backoff::default();
        let first = b.next_pause();
        assert!(first <= Duration::from_millis(250), "{first:?}");
        let pauses: Vec<Duration> = (0..20).map(|_| b.next_pause()).collect();
        assert!(pauses.iter().all(|p| *p <= MAX_BACKOFF), "{pauses:?}");
        assert!(pauses[19] >= MAX_BACKOFF * 3 / 4, "{pauses:?}");
        b.reset();
        assert!(b.next_pause() <= Duration::from_millis(250));
    }

    #[test]
    fn only_an_expired_resource_version_lists_at_once() {
        let gone = kube::core::Status {
            code: 410,
            reason: "Expired".into(),
            ..Default::default()
        };
        assert!(expired(&watcher::Error::WatchError(Box::new(gone))));
        let other = kube::core::Status {
            code: 500,
            ..Default::default()
        };
        assert!(!expired(&watcher::Error::WatchError(Box::new(other))));
        assert!(!expired(&watcher::Error::NoResourceVersion));
    }
}
