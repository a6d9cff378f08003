//! Timers: scheduled and cancelled by stable id, one wheel per reducer instance.
//!
//! A `ScheduleTimer` intent puts an entry on its instance's [`TimerWheel`]; when the
//! entry comes due, the instance reduces an [`Outcome`](keel_core::Outcome) with
//! [`OutcomeResult::TimerFired`](keel_core::OutcomeResult::TimerFired), caused by the
//! schedule intent. Scheduling a name that is pending replaces it; cancelling a name
//! that is not pending does nothing. A timer intent has no other outcome: the reducer
//! hears from it once, when it fires, or never, if it is cancelled.
//!
//! The wheel itself is plain data with time as an input, so its rules are unit-tested
//! without a runtime; the instance task sleeps until [`TimerWheel::next_due`].

use std::collections::{BTreeMap, HashMap};

use keel_core::{Intent, IntentId, TimerId, Timestamp};

/// The pending timers of one instance, ordered by due time.
#[derive(Debug, Default)]
pub struct TimerWheel {
    /// (due, sequence) -> the timer. The sequence keeps equal due times in schedule order.
    by_due: BTreeMap<(Timestamp, u64), Pending>,
    /// Name -> its key in `by_due`.
    by_name: HashMap<TimerId, (Timestamp, u64)>,
    sequence: u64,
}

/// A pending timer: its name and the intent that scheduled it.
#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    /// The timer's name.
    pub timer: TimerId,
    /// The `ScheduleTimer` intent, kept whole so that a shutdown can hand it back.
    pub intent: Intent,
}

impl TimerWheel {
    /// An empty wheel.
    pub fn new() -> Self {
        Self::default()
    }

    /// Schedules `timer` at `due` for the intent `intent`, replacing a pending timer of
    /// the same name. Returns the replaced timer, if any.
    pub fn schedule(&mut self, timer: TimerId, due: Timestamp, intent: Intent) -> Option<Pending> {
        let replaced = self.cancel(&timer);
        self.sequence += 1;
        let key = (due, self.sequence);
        self.by_name.insert(timer.clone(), key);
        self.by_due.insert(key, Pending { timer, intent });
        replaced
    }

    /// Cancels `timer`; returns it if it was pending.
    pub fn cancel(&mut self, timer: &TimerId) -> Option<Pending> {
        let key = self.by_name.remove(timer)?;
        self.by_due.remove(&key)
    }

    /// When the earliest pending timer is due.
    pub fn next_due(&self) -> Option<Timestamp> {
        self.by_due.keys().next().map(|(due, _)| *due)
    }

    /// Removes and returns the earliest timer if it is due at `now`.
    pub fn pop_due(&mut self, now: Timestamp) -> Option<Pending> {
        let (&key, _) = self
            .by_due
            .iter()
            .next()
            .filter(|((due, _), _)| *due <= now)?;
        let pending = self.by_due.remove(&key)?;
        self.by_name.remove(&pending.timer);
        Some(pending)
    }

    /// Removes every pending timer, earliest first (for a shutdown to hand back).
    pub fn drain(&mut self) -> Vec<Pending> {
        self.by_name.clear();
        std::mem::take(&mut self.by_due).into_values().collect()
    }

    /// How many timers are pending.
    pub fn len(&self) -> usize {
        self.by_due.len()
    }

    /// Whether no timer is pending.
    pub fn is_empty(&self) -> bool {
        self.by_due.is_empty()
    }

    /// Whether a timer of this name is pending.
    pub fn contains(&self, timer: &TimerId) -> bool {
        self.by_name.contains_key(timer)
    }

    /// Whether the intent `id` is the one currently scheduling its timer.
    pub fn is_pending(&self, id: IntentId) -> bool {
        self.by_due.values().any(|pending| pending.intent.id == id)
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
        wheel.schedule("b".into(), at(20), intent(0, "b", 20));
        wheel.schedule("a".into(), at(10), intent(1, "a", 10));
        assert_eq!(wheel.next_due(), Some(at(10)));
        assert_eq!(wheel.pop_due(at(9)), None);
        assert_eq!(wheel.pop_due(at(25)).map(|p| p.timer), Some("a".into()));
        assert_eq!(wheel.pop_due(at(25)).map(|p| p.timer), Some("b".into()));
        assert!(wheel.is_empty());
    }

    #[test]
    fn scheduling_a_pending_name_replaces_it() {
        let mut wheel = TimerWheel::new();
        wheel.schedule("t".into(), at(10), intent(0, "t", 10));
        let replaced = wheel.schedule("t".into(), at(50), intent(1, "t", 50));
        assert_eq!(replaced.map(|p| p.intent.id.position), Some(0));
        assert_eq!(wheel.len(), 1);
        assert_eq!(wheel.next_due(), Some(at(50)));
        assert!(wheel.is_pending(Cause::root(1).intent_id(1)));
    }

    #[test]
    fn cancelling_is_idempotent() {
        let mut wheel = TimerWheel::new();
        wheel.schedule("t".into(), at(10), intent(0, "t", 10));
        assert!(wheel.cancel(&"t".into()).is_some());
        assert!(wheel.cancel(&"t".into()).is_none());
        assert_eq!(wheel.pop_due(at(100)), None);
    }

    #[test]
    fn timers_due_at_the_same_time_fire_in_schedule_order() {
        let mut wheel = TimerWheel::new();
        wheel.schedule("x".into(), at(10), intent(0, "x", 10));
        wheel.schedule("y".into(), at(10), intent(1, "y", 10));
        let fired: Vec<_> = std::iter::from_fn(|| wheel.pop_due(at(10)))
            .map(|p| p.timer)
            .collect();
        assert_eq!(fired, [TimerId::from("x"), TimerId::from("y")]);
    }
}
