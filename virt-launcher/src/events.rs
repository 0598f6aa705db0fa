//! Every lifecycle event of this launcher's lifetime, replayed to each new watcher and
//! then followed live.

use std::sync::Mutex;

use tokio::sync::broadcast;

use crate::protocol::Event;

pub struct EventLog {
    history: Mutex<Vec<Event>>,
    live: broadcast::Sender<Event>,
}

impl Default for EventLog {
    fn default() -> Self {
        EventLog {
            history: Mutex::default(),
            live: broadcast::channel(64).0,
        }
    }
}

impl EventLog {
    pub fn push(&self, event: Event) {
        let mut history = self.history.lock().unwrap_or_else(|e| e.into_inner());
        history.push(event.clone());
        // No watcher is fine.
        let _ = self.live.send(event);
    }

    /// The events so far and a receiver for the next ones, without gap or repeat.
    pub fn subscribe(&self) -> (Vec<Event>, broadcast::Receiver<Event>) {
        let history = self.history.lock().unwrap_or_else(|e| e.into_inner());
        (history.clone(), self.live.subscribe())
    }
}
