//! Where the runtime's `now` comes from.
//!
//! Reducers never read a clock; the runtime stamps each action with `now` from a
//! [`Clock`]. The default [`TokioClock`] follows tokio's clock, so a test that pauses
//! tokio's time gets instant, deterministic timers and timestamps.

use std::time::{SystemTime, UNIX_EPOCH};

use keel_core::Timestamp;
use tokio::time::Instant;

/// A source of the current time.
pub trait Clock: Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> Timestamp;

    /// The tokio instant at which `at` will be reached (now if it is past).
    fn instant_at(&self, at: Timestamp) -> Instant {
        let delay_ms = at.millis_since(self.now());
        Instant::now() + std::time::Duration::from_millis(delay_ms)
    }
}

/// Wall-clock time as read at start, advanced by tokio's (pausable) clock.
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    origin: Instant,
    origin_time: Timestamp,
}

impl TokioClock {
    /// A clock that reads the system time once, now, and follows tokio from there.
    pub fn new() -> Self {
        // Before 1970 only on a badly set machine; the epoch is then the honest answer.
        let since_epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let nanos = i64::try_from(since_epoch.as_nanos()).unwrap_or(i64::MAX);
        Self::starting_at(Timestamp::from_unix_nanos(nanos))
    }

    /// A clock that reads `start` now and follows tokio from there: deterministic under
    /// a paused tokio clock.
    pub fn starting_at(start: Timestamp) -> Self {
        Self {
            origin: Instant::now(),
            origin_time: start,
        }
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for TokioClock {
    fn now(&self) -> Timestamp {
        let elapsed = self.origin.elapsed();
        let elapsed_nanos = i64::try_from(elapsed.as_nanos()).unwrap_or(i64::MAX);
        Timestamp::from_unix_nanos(self.origin_time.unix_nanos().saturating_add(elapsed_nanos))
    }
}
