//! Counters of what the runtime did with intents.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Shared counters, cheap to clone. Read them with [`Metrics::snapshot`].
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    inner: Arc<Counters>,
}

#[derive(Debug, Default)]
struct Counters {
    actions: AtomicU64,
    started: AtomicU64,
    succeeded: AtomicU64,
    failed: AtomicU64,
    retried: AtomicU64,
    dead_lettered: AtomicU64,
    deduplicated: AtomicU64,
}

/// The counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MetricsSnapshot {
    /// Actions reduced.
    pub actions: u64,
    /// Intents handed to a handler (duplicates answered from the record not included).
    pub started: u64,
    /// Intents whose effect succeeded.
    pub succeeded: u64,
    /// Intents whose effect failed for good or timed out.
    pub failed: u64,
    /// Attempts repeated by a retry policy.
    pub retried: u64,
    /// Intents parked in a dead-letter queue.
    pub dead_lettered: u64,
    /// Intents answered from the recorded outcome instead of running again.
    pub deduplicated: u64,
}

macro_rules! counter {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        impl Metrics {
            $(
                $(#[$doc])*
                pub fn $name(&self) {
                    self.inner.$name.fetch_add(1, Ordering::Relaxed);
                }
            )*

            /// The counters now.
            pub fn snapshot(&self) -> MetricsSnapshot {
                MetricsSnapshot {
                    $($name: self.inner.$name.load(Ordering::Relaxed),)*
                }
            }
        }
    };
}

counter! {
    /// Counts one reduced action.
    actions,
    /// Counts one intent handed to its handler.
    started,
    /// Counts one intent that succeeded.
    succeeded,
    /// Counts one intent that failed or timed out.
    failed,
    /// Counts one retried attempt.
    retried,
    /// Counts one dead-lettered intent.
    dead_lettered,
    /// Counts one intent answered from its recorded outcome.
    deduplicated,
}
