//! The orchestrator's pending timers, ordered by due time, with cancellation.
//!
//! Cancelling a timer removes it at once, so memory follows the timers that are live,
//! not the deadlines they were set for: a saga with a one-day deadline that finishes in
//! a second frees its timer then. Rescheduling a timer replaces it. A timer that fires
//! for a saga that has meanwhile finished is ignored by the engine.

use std::collections::BTreeMap;

use foldhash::HashMap;

use keel_core::Timestamp;

use crate::id::SagaId;
use crate::saga::SagaTimer;

/// Timers by due time.
#[derive(Debug, Default)]
pub(crate) struct Timers {
    /// Every live timer by (due, sequence number); the number orders timers due at the
    /// same moment by when they were set.
    queue: BTreeMap<(Timestamp, u64), (SagaId, SagaTimer)>,
    /// Where each live timer sits in `queue`.
    index: HashMap<(SagaId, SagaTimer), (Timestamp, u64)>,
    seq: u64,
}

impl Timers {
    /// Sets `timer` of `saga` to fire at `due`, replacing an earlier setting.
    pub(crate) fn set(&mut self, saga: SagaId, timer: SagaTimer, due: Timestamp) {
        self.seq += 1;
        let slot = (due, self.seq);
        if let Some(old) = self.index.insert((saga.clone(), timer), slot) {
            self.queue.remove(&old);
        }
        self.queue.insert(slot, (saga, timer));
    }

    /// Drops `timer` of `saga`, if set.
    pub(crate) fn cancel(&mut self, saga: &SagaId, timer: SagaTimer) {
        if let Some(slot) = self.index.remove(&(saga.clone(), timer)) {
            self.queue.remove(&slot);
        }
    }

    /// When the next timer is due.
    pub(crate) fn next_due(&self) -> Option<Timestamp> {
        self.queue.first_key_value().map(|(&(due, _), _)| due)
    }

    /// Takes the next timer due at or before `now`.
    pub(crate) fn pop_due(&mut self, now: Timestamp) -> Option<(SagaId, SagaTimer)> {
        let entry = self.queue.first_entry()?;
        if entry.key().0 > now {
            return None;
        }
        let (saga, timer) = entry.remove();
        self.index.remove(&(saga.clone(), timer));
        Some((saga, timer))
    }

    /// How many timers are set.
    pub(crate) fn len(&self) -> usize {
        debug_assert_eq!(self.queue.len(), self.index.len());
        self.index.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::Phase;

    fn at(ms: i64) -> Timestamp {
        Timestamp::from_unix_millis(ms)
    }

    #[test]
    fn timers_fire_in_due_order_and_cancelled_ones_never() {
        let a = SagaId::new("a").unwrap();
        let b = SagaId::new("b").unwrap();
        let retry = SagaTimer::Retry {
            step: 0,
            phase: Phase::Action,
            attempt: 2,
        };
        let mut timers = Timers::default();
        timers.set(a.clone(), SagaTimer::Deadline, at(30));
        timers.set(b.clone(), retry, at(10));
        timers.set(a.clone(), retry, at(20));
        timers.cancel(&a, retry);
        assert_eq!(timers.next_due(), Some(at(10)));
        assert_eq!(timers.pop_due(at(5)), None);
        assert_eq!(timers.pop_due(at(100)), Some((b, retry)));
        assert_eq!(
            timers.pop_due(at(100)),
            Some((a.clone(), SagaTimer::Deadline))
        );
        assert_eq!(timers.pop_due(at(100)), None);
        assert_eq!(timers.len(), 0);
    }

    #[test]
    fn setting_a_timer_again_replaces_it() {
        let a = SagaId::new("a").unwrap();
        let mut timers = Timers::default();
        timers.set(a.clone(), SagaTimer::Deadline, at(10));
        timers.set(a.clone(), SagaTimer::Deadline, at(50));
        assert_eq!(timers.pop_due(at(20)), None);
        assert_eq!(
            timers.pop_due(at(50)),
            Some((a.clone(), SagaTimer::Deadline))
        );
        timers.set(a.clone(), SagaTimer::Deadline, at(60));
        timers.cancel(&a, SagaTimer::Deadline);
        assert_eq!(timers.next_due(), None);
    }
}
