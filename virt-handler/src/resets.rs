//! Guest resets within a sliding window: when a guest resets itself again and again (a
//! kernel panic with `panic=N`, a broken init), the VMI is in a reset loop.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use crate::status::{Observation, RESET_LOOP, RESET_WINDOW_SECONDS};

pub const WINDOW: Duration = Duration::from_secs(RESET_WINDOW_SECONDS);

#[derive(Debug, Default)]
pub struct ResetWindow {
    total: u64,
    recent: VecDeque<Instant>,
    looping: bool,
}

/// What changed with a reset or the passing of time.
#[derive(Debug, PartialEq, Eq)]
pub enum Change {
    /// A reset that did not start a loop, or one more in a loop.
    Reset,
    /// The guest has just entered a reset loop.
    LoopStarted,
    /// No reset for a whole window: the loop is over.
    LoopEnded,
}

impl ResetWindow {
    /// A reset seen at `now`; `total` is the launcher's count since the domain started
    /// (a replay after a handler restart delivers only the last count).
    pub fn reset(&mut self, total: u64, now: Instant) -> Change {
        self.total = total.max(self.total + 1);
        self.forget_before(now);
        self.recent.push_back(now);
        if !self.looping && self.recent.len() as u32 >= RESET_LOOP {
            self.looping = true;
            return Change::LoopStarted;
        }
        Change::Reset
    }

    /// When a loop ends if no reset comes: a window after the last reset.
    pub fn quiet_at(&self) -> Option<Instant> {
        self.looping
            .then(|| self.recent.back().map(|t| *t + WINDOW))
            .flatten()
    }

    /// The loop is over at `now` (call at [`Self::quiet_at`]).
    pub fn tick(&mut self, now: Instant) -> Option<Change> {
        self.forget_before(now);
        if self.looping && self.recent.is_empty() {
            self.looping = false;
            return Some(Change::LoopEnded);
        }
        None
    }

    pub fn observation(&self) -> Observation {
        Observation::GuestResets {
            total: self.total,
            recent: self.recent.len() as u32,
            looping: self.looping,
        }
    }

    pub fn total(&self) -> u64 {
        self.total
    }

    fn forget_before(&mut self, now: Instant) {
        while self.recent.front().is_some_and(|t| *t + WINDOW <= now) {
            self.recent.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_resets_within_a_window_are_a_loop_until_a_quiet_window() {
        let t0 = Instant::now();
        let s = |n| t0 + Duration::from_secs(n);
        let mut w = ResetWindow::default();
        assert_eq!(w.reset(1, s(0)), Change::Reset);
        assert_eq!(w.reset(2, s(50)), Change::Reset);
        // The first has left the window: still two.
        assert_eq!(w.reset(3, s(70)), Change::Reset);
        assert_eq!(w.reset(4, s(73)), Change::LoopStarted);
        assert_eq!(w.reset(5, s(76)), Change::Reset);
        assert_eq!(
            w.observation(),
            Observation::GuestResets {
                total: 5,
                recent: 4,
                looping: true
            }
        );
        assert_eq!(w.quiet_at(), Some(s(136)));
        assert_eq!(w.tick(s(120)), None);
        assert_eq!(w.tick(s(136)), Some(Change::LoopEnded));
        assert_eq!(w.quiet_at(), None);
        // A replayed count after a handler restart is taken as is.
        let mut r = ResetWindow::default();
        r.reset(40, s(0));
        assert_eq!(r.total(), 40);
    }
}
