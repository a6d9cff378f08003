//! Timers: scheduled and cancelled by stable id, one wheel per reducer instance.
//!
//! A `ScheduleTimer` intent puts an entry on its instance's [`TimerWheel`]; when the
//! entry comes due, the instance reduces an [`Outcome`](keel_core::Outcome) with
//! [`OutcomeResult::TimerFired`](keel_core::OutcomeResult::TimerFired), caused by the
//! schedule intent. Scheduling a name that is pending replaces it; cancelling a name
//! that is not pending does nothing. A timer intent has no other outcome: the reducer
//! hears from it once, when it fires, or never, if it is cancelled.
//!
//! The wheel's bookkeeping is keel-core's [`TimerQueue`]: plain data with time as an
//! input, so its rules are unit-tested without a runtime; the instance task sleeps until
//! [`TimerWheel::next_due`]. It holds at most its capacity
//! ([`RuntimeConfig::timers_per_instance_max`](crate::runtime::RuntimeConfig::timers_per_instance_max)):
//! a new name scheduled into a full wheel is refused with [`QueueFull`], which hands the
//! intent back.

use std::hash::RandomState;

use keel_core::timer::{QueueFull, Scheduled};
use keel_core::{Intent, IntentId, TimerId, TimerQueue, Timestamp};

/// How many timers a wheel made with [`TimerWheel::new`] holds, and the default of
/// [`RuntimeConfig::timers_per_instance_max`](crate::runtime::RuntimeConfig::timers_per_instance_max).
pub const CAPACITY_DEFAULT: usize = 10_000;

/// The pending timers of one instance, ordered by due time; equal due times fire in
/// schedule order.
#[derive(Debug)]
pub struct TimerWheel {
    /// Timer name -> the `ScheduleTimer` intent, kept whole so that a shutdown can hand
    /// it back. Names come from reducers, perhaps from outside input: the index keeps
    /// std's seeded hasher, resistant to chosen collisions.
    queue: TimerQueue<TimerId, Intent, RandomState>,
}

/// A pending timer: its name and the intent that scheduled it.
#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    /// The timer's name.
    pub timer: TimerId,
    /// The `ScheduleTimer` intent, kept whole so that a shutdown can hand it back.
    pub intent: Intent,
}

impl From<Scheduled<TimerId, Intent>> for Pending {
    fn from(scheduled: Scheduled<TimerId, Intent>) -> Self {
        Self {
            timer: scheduled.id,
            intent: scheduled.value,
        }
    }
}

impl Default for TimerWheel {
    fn default() -> Self {
        Self::new()
    }
}

impl TimerWheel {
    /// An empty wheel holding at most [`CAPACITY_DEFAULT`] timers.
    pub fn new() -> Self {
        Self::with_capacity(CAPACITY_DEFAULT)
    }

    /// An empty wheel holding at most `capacity` timers.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            queue: TimerQueue::with_hasher(capacity, RandomState::new()),
        }
    }

    /// Schedules `timer` at `due` for the intent `intent`, replacing a pending timer of
    /// the same name. Returns the replaced timer, if any.
    ///
    /// # Errors
    ///
    /// [`QueueFull`], holding the intent, if `timer` is not pending and the wheel holds
    /// its capacity.
    #[expect(
        clippy::result_large_err,
        reason = "the error hands the intent back, no bigger than the replaced timer `Ok` returns"
    )]
    pub fn schedule(
        &mut self,
        timer: TimerId,
        due: Timestamp,
        intent: Intent,
    ) -> Result<Option<Pending>, QueueFull<TimerId, Intent>> {
        let replaced = self.queue.schedule(timer, due, intent)?;
        Ok(replaced.map(Pending::from))
    }

    /// Cancels `timer`; returns it if it was pending.
    pub fn cancel(&mut self, timer: &TimerId) -> Option<Pending> {
        self.queue.cancel(timer).map(Pending::from)
    }

    /// When the earliest pending timer is due.
    pub fn next_due(&self) -> Option<Timestamp> {
        self.queue.next_due()
    }

    /// Removes and returns the earliest timer if it is due at `now`.
    pub fn pop_due(&mut self, now: Timestamp) -> Option<Pending> {
        self.queue.pop_due(now).map(Pending::from)
    }

    /// Removes every pending timer, earliest first (for a shutdown to hand back).
    pub fn drain(&mut self) -> Vec<Pending> {
        self.queue.drain().into_iter().map(Pending::from).collect()
    }

    /// How many timers are pending.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether no timer is pending.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// The most timers the wheel holds.
    pub fn capacity(&self) -> usize {
        self.queue.capacity()
    }

    /// Whether a timer of this name is pending.
    pub fn contains(&self, timer: &TimerId) -> bool {
        self.queue.contains(timer)
    }

    /// Whether the intent `id` is the one currently scheduling its timer.
    pub fn is_pending(&self, id: IntentId) -> bool {
        self.queue.iter().any(|(_, _, intent)| intent.id == id)
    }
}

#[cfg(test)]
mod tests {
    use keel_core::{Cause, IntentKind};

    use super::*;

    fn at(ms: i64) -> Timestamp {
        Timestamp::from_unix_millis(ms)
    }

    fn intent(position: u32, timer: &'static str, due_ms: i64) -> Intent {
        Intent {
            id: Cause::root(1).intent_id(position),
            kind: IntentKind::ScheduleTimer {
                timer: TimerId::from_static(timer),
                due: at(due_ms),
            },
        }
    }

    #[test]
    fn timers_come_due_in_due_order_and_only_when_due() {
        let mut wheel = TimerWheel::new();
        wheel
            .schedule("b".into(), at(20), intent(0, "b", 20))
            .unwrap();
        wheel
            .schedule("a".into(), at(10), intent(1, "a", 10))
            .unwrap();
        assert_eq!(wheel.next_due(), Some(at(10)));
        assert_eq!(wheel.pop_due(at(9)), None);
        assert_eq!(wheel.pop_due(at(25)).map(|p| p.timer), Some("a".into()));
        assert_eq!(wheel.pop_due(at(25)).map(|p| p.timer), Some("b".into()));
        assert!(wheel.is_empty());
    }

    #[test]
    fn scheduling_a_pending_name_replaces_it() {
        let mut wheel = TimerWheel::new();
        wheel
            .schedule("t".into(), at(10), intent(0, "t", 10))
            .unwrap();
        let replaced = wheel
            .schedule("t".into(), at(50), intent(1, "t", 50))
            .unwrap();
        assert_eq!(replaced.map(|p| p.intent.id.position), Some(0));
        assert_eq!(wheel.len(), 1);
        assert_eq!(wheel.next_due(), Some(at(50)));
        assert!(wheel.is_pending(Cause::root(1).intent_id(1)));
    }

    #[test]
    fn cancelling_is_idempotent() {
        let mut wheel = TimerWheel::new();
        wheel
            .schedule("t".into(), at(10), intent(0, "t", 10))
            .unwrap();
        assert!(wheel.cancel(&"t".into()).is_some());
        assert!(wheel.cancel(&"t".into()).is_none());
        assert_eq!(wheel.pop_due(at(100)), None);
    }

    #[test]
    fn a_full_wheel_refuses_a_new_name_and_hands_its_intent_back() {
        let mut wheel = TimerWheel::with_capacity(1);
        wheel
            .schedule("a".into(), at(10), intent(0, "a", 10))
            .unwrap();
        let full = wheel
            .schedule("b".into(), at(10), intent(1, "b", 10))
            .unwrap_err();
        assert_eq!(full.timer.value.id.position, 1);
        assert!(!wheel.contains(&"b".into()));
        // Rescheduling a pending name needs no room.
        assert!(
            wheel
                .schedule("a".into(), at(20), intent(2, "a", 20))
                .is_ok()
        );
    }

    #[test]
    fn timers_due_at_the_same_time_fire_in_schedule_order() {
        let mut wheel = TimerWheel::new();
        wheel
            .schedule("x".into(), at(10), intent(0, "x", 10))
            .unwrap();
        wheel
            .schedule("y".into(), at(10), intent(1, "y", 10))
            .unwrap();
        let fired: Vec<_> = std::iter::from_fn(|| wheel.pop_due(at(10)))
            .map(|p| p.timer)
            .collect();
        assert_eq!(fired, [TimerId::from("x"), TimerId::from("y")]);
    }
}
