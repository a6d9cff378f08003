//! The orchestrator's pending timers: keel-core's [`TimerQueue`] keyed by saga and timer.
//!
//! Cancelling a timer removes it at once, so the queue holds the timers that are live,
//! not the deadlines they were set for: a saga with a one-day deadline that finishes in
//! a second frees its timer's slot then (the slots are reused, not given back: memory
//! follows the most timers ever pending at once). Rescheduling a timer replaces it. A timer that fires
//! for a saga that has meanwhile finished is ignored by the engine. The queue is
//! bounded (`OrchestratorConfig::timers_max`, split between the shards): setting a new
//! timer into a full queue is refused with [`QueueFull`], for the driver to report.

use foldhash::fast::RandomState;

use keel_core::timer::QueueFull;
use keel_core::{TimerQueue, Timestamp};

use crate::id::SagaId;
use crate::saga::SagaTimer;

/// A timer's id: its saga and which of the saga's timers it is.
pub(crate) type TimerKey = (SagaId, SagaTimer);

/// Timers by due time.
#[derive(Debug)]
pub(crate) struct Timers {
    /// foldhash rather than the queue's default SipHash: hashing saga ids is on the
    /// saga benchmark's hot path (a step's timer is set and the last one cancelled on
    /// every step), and foldhash's seed still resists chosen collisions.
    queue: TimerQueue<TimerKey, (), RandomState>,
}

impl Timers {
    /// No timers; room for `capacity`.
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            queue: TimerQueue::with_hasher(capacity, RandomState::default()),
        }
    }

    /// Sets `timer` of `saga` to fire at `due`, replacing an earlier setting.
    pub(crate) fn set(
        &mut self,
        saga: SagaId,
        timer: SagaTimer,
        due: Timestamp,
    ) -> Result<(), QueueFull<TimerKey>> {
        self.queue.schedule((saga, timer), due, ()).map(drop)
    }

    /// Drops `timer` of `saga`, if set.
    pub(crate) fn cancel(&mut self, saga: &SagaId, timer: SagaTimer) {
        // The key is built to look it up: a saga id clone is a reference count.
        self.queue.cancel(&(saga.clone(), timer));
    }

    /// When the next timer is due.
    pub(crate) fn next_due(&self) -> Option<Timestamp> {
        self.queue.next_due()
    }

    /// Takes the next timer due at or before `now`.
    pub(crate) fn pop_due(&mut self, now: Timestamp) -> Option<TimerKey> {
        self.queue.pop_due(now).map(|timer| timer.id)
    }

    /// How many timers are set.
    pub(crate) fn len(&self) -> usize {
        self.queue.len()
    }

    /// The most timers this shard holds.
    pub(crate) fn capacity(&self) -> usize {
        self.queue.capacity()
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
        let mut timers = Timers::new(8);
        timers.set(a.clone(), SagaTimer::Deadline, at(30)).unwrap();
        timers.set(b.clone(), retry, at(10)).unwrap();
        timers.set(a.clone(), retry, at(20)).unwrap();
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
        let mut timers = Timers::new(8);
        timers.set(a.clone(), SagaTimer::Deadline, at(10)).unwrap();
        timers.set(a.clone(), SagaTimer::Deadline, at(50)).unwrap();
        assert_eq!(timers.pop_due(at(20)), None);
        assert_eq!(
            timers.pop_due(at(50)),
            Some((a.clone(), SagaTimer::Deadline))
        );
        timers.set(a.clone(), SagaTimer::Deadline, at(60)).unwrap();
        timers.cancel(&a, SagaTimer::Deadline);
        assert_eq!(timers.next_due(), None);
    }

    #[test]
    fn a_full_queue_refuses_a_new_timer_but_not_a_reset_one() {
        let a = SagaId::new("a").unwrap();
        let b = SagaId::new("b").unwrap();
        let mut timers = Timers::new(1);
        timers.set(a.clone(), SagaTimer::Deadline, at(10)).unwrap();
        let full = timers.set(b, SagaTimer::Deadline, at(10)).unwrap_err();
        assert_eq!(full.capacity, 1);
        timers.set(a, SagaTimer::Deadline, at(20)).unwrap();
        assert_eq!((timers.len(), timers.next_due()), (1, Some(at(20))));
    }
}
