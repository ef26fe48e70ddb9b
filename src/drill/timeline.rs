//! The drill's timeline: each phase's duration, in the order they ran,
//! logged as it ends and kept for the report.

use std::time::{Duration, Instant};

use crate::api::wire::Phase;

/// The phases a drill has gone through so far.
pub(super) struct Timeline {
    last: Instant,
    phases: Vec<Phase>,
}

impl Default for Timeline {
    fn default() -> Self {
        Timeline::new()
    }
}

impl Timeline {
    pub(super) fn new() -> Self {
        let now = Instant::now();
        Timeline {
            last: now,
            phases: Vec::new(),
        }
    }

    /// Ends the phase `name`: it took the time since the previous one ended
    /// (or since the timeline began).
    pub(super) fn mark(&mut self, name: &str) {
        let now = Instant::now();
        tracing::info!(
            phase = name,
            ms = (now - self.last).as_millis() as u64,
            "drill phase"
        );
        self.phases.push(Phase {
            name: name.to_string(),
            ms: (now - self.last).as_millis() as u64,
        });
        self.last = now;
    }

    /// The phases recorded, in order.
    pub(super) fn into_phases(self) -> Vec<Phase> {
        self.phases
    }
}

/// Whole milliseconds, as the report counts them.
pub(super) fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}
