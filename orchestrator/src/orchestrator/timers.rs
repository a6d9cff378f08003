//! The orchestrator's pending timers: a min-heap by due time, with cancellation.
//!
//! Cancelling removes the timer from the index only; its heap entry is skipped when it
//! surfaces. Rescheduling a timer replaces it the same way. Timers of a saga that has
//! finished are left to fire: the engine no longer holds the saga and ignores them.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use foldhash::HashMap;

use keel_core::Timestamp;

use crate::id::SagaId;
use crate::saga::SagaTimer;

/// Timers by due time.
#[derive(Debug, Default)]
pub(crate) struct Timers {
    /// Every setting, live or not: (due, sequence number, saga, timer).
    heap: BinaryHeap<Reverse<(Timestamp, u64, SagaId, SagaTimer)>>,
    /// The live sequence number of each timer; a heap entry with another is stale.
    index: HashMap<(SagaId, SagaTimer), u64>,
    seq: u64,
}

impl Timers {
    /// Sets `timer` of `saga` to fire at `due`, replacing an earlier setting.
    pub(crate) fn set(&mut self, saga: SagaId, timer: SagaTimer, due: Timestamp) {
        self.seq += 1;
        self.index.insert((saga.clone(), timer), self.seq);
        self.heap.push(Reverse((due, self.seq, saga, timer)));
    }

    /// Drops `timer` of `saga`, if set.
    pub(crate) fn cancel(&mut self, saga: &SagaId, timer: SagaTimer) {
        self.index.remove(&(saga.clone(), timer));
    }

    fn is_live(&self, saga: &SagaId, timer: SagaTimer, seq: u64) -> bool {
        self.index.get(&(saga.clone(), timer)) == Some(&seq)
    }

    /// When the next live timer is due.
    pub(crate) fn next_due(&mut self) -> Option<Timestamp> {
        while let Some(Reverse((due, seq, saga, timer))) = self.heap.peek() {
            if self.is_live(saga, *timer, *seq) {
                return Some(*due);
            }
            self.heap.pop();
        }
        None
    }

    /// Takes the next timer due at or before `now`.
    pub(crate) fn pop_due(&mut self, now: Timestamp) -> Option<(SagaId, SagaTimer)> {
        let due = self.next_due()?;
        if due > now {
            return None;
        }
        let Reverse((_, _, saga, timer)) = self.heap.pop()?;
        self.index.remove(&(saga.clone(), timer));
        Some((saga, timer))
    }

    /// How many timers are live.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
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
