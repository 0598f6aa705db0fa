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
    /// Records `event`. A reset right after a reset replaces it in the history (it carries
    /// the count), so a guest in a reset loop does not grow the history without end.
    pub fn push(&self, event: Event) {
        let mut history = self.history.lock().unwrap_or_else(|e| e.into_inner());
        if matches!(event, Event::Rebooted { .. })
            && matches!(history.last(), Some(Event::Rebooted { .. }))
        {
            history.pop();
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consecutive_resets_are_kept_as_the_last() {
        let log = EventLog::default();
        log.push(Event::Started);
        for count in 1..=100 {
            log.push(Event::Rebooted { count });
        }
        log.push(Event::Paused);
        log.push(Event::Rebooted { count: 101 });
        let (history, _) = log.subscribe();
        assert_eq!(
            history,
            [
                Event::Started,
                Event::Rebooted { count: 100 },
                Event::Paused,
                Event::Rebooted { count: 101 }
            ]
        );
    }
}
