//! One console and one VNC session per VMI: registering a new one ends the old one, as
//! KubeVirt's handler does.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

/// Which stream of a VMI.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Console,
    Vnc,
}

/// The open session of a VMI's stream: its id and how to end it.
type Open = HashMap<(String, Kind), (u64, oneshot::Sender<()>)>;

#[derive(Default)]
pub struct Sessions {
    next: AtomicU64,
    open: Mutex<Open>,
}

/// A registered session; dropping it unregisters it (unless a newer one took its place).
pub struct Session {
    sessions: Arc<Sessions>,
    key: (String, Kind),
    id: u64,
    /// Fires when a newer session replaces this one.
    pub replaced: oneshot::Receiver<()>,
}

impl Sessions {
    /// Registers a session for `uid`, ending the one before it.
    pub fn open(self: &Arc<Self>, uid: &str, kind: Kind) -> Session {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        let key = (uid.to_owned(), kind);
        let old = self
            .open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.clone(), (id, tx));
        if let Some((_, stop)) = old {
            let _ = stop.send(());
        }
        Session {
            sessions: self.clone(),
            key,
            id,
            replaced: rx,
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let mut open = self.sessions.open.lock().unwrap_or_else(|e| e.into_inner());
        if open.get(&self.key).is_some_and(|(id, _)| *id == self.id) {
            open.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_session_ends_the_old_one_of_the_same_vmi_and_kind() {
        let s = Arc::new(Sessions::default());
        let mut first = s.open("u1", Kind::Console);
        let vnc = s.open("u1", Kind::Vnc);
        let other = s.open("u2", Kind::Console);
        assert!(
            first.replaced.try_recv().is_err(),
            "nothing replaced it yet"
        );
        let mut second = s.open("u1", Kind::Console);
        assert!(first.replaced.try_recv().is_ok());
        drop(first);
        // The old one's drop does not unregister the new one.
        let _third = s.open("u1", Kind::Console);
        assert!(second.replaced.try_recv().is_ok());
        drop((vnc, other));
    }
}
