//! Wake-ups when something comes or goes in the plugin directory or the device node's
//! directory (inotify). The plugin then looks at the files again, so a lost or merged event
//! costs nothing; a periodic look covers a directory that could not be watched yet.

use std::path::{Path, PathBuf};

use inotify::{EventStream, Inotify, WatchMask};
use tokio_stream::StreamExt;

use crate::error::{Error, Result};

pub struct Watcher {
    stream: EventStream<Vec<u8>>,
    /// The device node's directory until it is watched (it may not exist yet).
    pending: Option<PathBuf>,
    /// Reading events failed: only the periodic look remains.
    failed: bool,
}

const MASK: WatchMask = WatchMask::CREATE
    .union(WatchMask::DELETE)
    .union(WatchMask::MOVED_FROM)
    .union(WatchMask::MOVED_TO)
    .union(WatchMask::ATTRIB);

impl Watcher {
    /// Watches `plugin_dir` (which must exist) and, when it can, `device_dir`.
    pub fn new(plugin_dir: &Path, device_dir: &Path) -> Result<Watcher> {
        let err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| Error::Watch { path, source }
        };
        let inotify = Inotify::init().map_err(err(plugin_dir))?;
        inotify
            .watches()
            .add(plugin_dir, MASK)
            .map_err(err(plugin_dir))?;
        let stream = inotify
            .into_event_stream(vec![0; 4096])
            .map_err(err(plugin_dir))?;
        let mut watcher = Watcher {
            stream,
            pending: Some(device_dir.to_path_buf()),
            failed: false,
        };
        watcher.retry();
        Ok(watcher)
    }

    /// Tries again to watch the device node's directory if that failed before.
    pub fn retry(&mut self) {
        if let Some(dir) = self.pending.take()
            && let Err(e) = self.stream.watches().add(&dir, MASK)
        {
            tracing::debug!(dir = %dir.display(), error = %e, "not watched yet");
            self.pending = Some(dir);
        }
    }

    /// The next change; pends forever once reading events has failed (the periodic look
    /// still runs).
    pub async fn next(&mut self) {
        if self.failed {
            return std::future::pending().await;
        }
        match self.stream.next().await {
            Some(Ok(_)) => {}
            Some(Err(e)) => {
                tracing::warn!(error = %e, "reading inotify events: only looking every few seconds now");
                self.failed = true;
            }
            None => std::future::pending().await,
        }
    }
}
