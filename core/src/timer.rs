//! One timer queue: pending timers by id, ordered by due time, cancellable and bounded.
//!
//! Every timer user in keel (the orchestrator's saga timers, an effects instance's
//! `ScheduleTimer` intents) keeps its pending timers in a [`TimerQueue`]. It is plain
//! data: it never reads a clock, `now` is always an argument, so a driver sleeps until
//! [`TimerQueue::next_due`] and then pops what is due.
//!
//! - Scheduling an id that is pending replaces it (and hands the old timer back), so a
//!   rescheduled timer fires once, at its new time.
//! - Cancelling removes a timer at once, not when its deadline would have come: its slot
//!   is reused by the next timer (slots are not given back, so memory follows the most
//!   timers ever pending at once, within the capacity).
//! - Timers due at the same moment come out in the order they were scheduled (a
//!   replaced timer counts as scheduled when it was replaced), so the results depend on
//!   the calls alone, never on hash order.
//! - The queue holds at most its capacity: scheduling a new id into a full queue is
//!   refused with [`QueueFull`], which hands the timer back.
//!
//! ```
//! use keel_core::Timestamp;
//! use keel_core::timer::TimerQueue;
//!
//! let at = Timestamp::from_unix_millis;
//! let mut timers: TimerQueue<&str> = TimerQueue::new(2);
//! timers.schedule("deadline", at(30), ())?;
//! timers.schedule("retry", at(10), ())?;
//! assert!(timers.schedule("third", at(20), ()).is_err()); // full
//! timers.schedule("retry", at(20), ())?; // replaces: no room needed
//!
//! assert_eq!(timers.next_due(), Some(at(20)));
//! let fired: Vec<_> = timers.drain_due(at(30)).map(|timer| timer.id).collect();
//! assert_eq!(fired, ["retry", "deadline"]);
//! assert!(timers.is_empty());
//! # Ok::<(), keel_core::timer::QueueFull<&str>>(())
//! ```

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher, Hash};

use crate::error::Error;
use crate::time::Timestamp;

/// The hasher of a queue's id index unless the caller picks one: SipHash with fixed
/// keys, so that the crate draws no random seed. The index is only looked up, never
/// iterated, so the hasher affects speed, not results.
pub type FixedState = BuildHasherDefault<DefaultHasher>;

/// The largest capacity a queue takes: slots are numbered in 32 bits to keep the tree
/// small, and four billion timers would be no bound anyway.
pub const CAPACITY_MAX: usize = u32::MAX as usize - 1;

/// Pending timers keyed by id `K`, each carrying a value `V`, ordered by due time.
///
/// `S` hashes the ids in the index that finds a timer by id; a caller that wants a
/// faster or seeded hasher passes its own with [`TimerQueue::with_hasher`].
#[derive(Clone)]
pub struct TimerQueue<K, V = (), S = FixedState> {
    /// Every pending timer by (due, sequence) -> its slot; the sequence orders timers
    /// due at the same moment by when they were scheduled. The tree holds slot numbers
    /// rather than the timers so that its nodes stay small: the saga benchmark spent
    /// its timer time moving entries inside the tree.
    by_due: BTreeMap<(Timestamp, u64), u32>,
    /// Each pending timer's slot, by id.
    by_id: HashMap<K, u32, S>,
    /// The timers; `None` marks a free slot, listed in `free`. At most `capacity` + 1
    /// long.
    slots: Vec<Option<Slot<K, V>>>,
    free: Vec<u32>,
    /// The sequence number of the last timer scheduled. At one per call a `u64` does not
    /// run out.
    sequence: u64,
    capacity: usize,
}

/// A pending timer in its slot.
#[derive(Debug, Clone)]
struct Slot<K, V> {
    id: K,
    due: Timestamp,
    sequence: u64,
    value: V,
}

/// A timer taken out of a [`TimerQueue`]: fired, cancelled or replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scheduled<K, V = ()> {
    /// The timer's id.
    pub id: K,
    /// When it was due.
    pub due: Timestamp,
    /// What it carried.
    pub value: V,
}

/// A timer refused because its queue held as many timers as its capacity.
///
/// It hands the timer back, as a full channel hands back the message, so that the
/// caller can report it (hand the intent back, answer a request with an error).
/// `Error::from` turns it into [`Error::TooManyTimers`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{capacity} timers are pending, the most this queue holds: cancel timers no longer needed or raise the limit"
)]
pub struct QueueFull<K, V = ()> {
    /// The timer that was not scheduled.
    pub timer: Scheduled<K, V>,
    /// The capacity of the queue.
    pub capacity: usize,
}

impl<K, V> TimerQueue<K, V>
where
    K: Hash + Eq + Clone,
{
    /// An empty queue that holds at most `capacity` timers.
    pub fn new(capacity: usize) -> Self {
        Self::with_hasher(capacity, FixedState::default())
    }
}

impl<K, V, S> TimerQueue<K, V, S>
where
    K: Hash + Eq + Clone,
    S: BuildHasher,
{
    /// An empty queue that holds at most `capacity` timers, hashing ids with `hasher`.
    /// A capacity over [`CAPACITY_MAX`] is taken as that.
    pub fn with_hasher(capacity: usize, hasher: S) -> Self {
        Self {
            by_due: BTreeMap::new(),
            by_id: HashMap::with_hasher(hasher),
            slots: Vec::new(),
            free: Vec::new(),
            sequence: 0,
            capacity: capacity.min(CAPACITY_MAX),
        }
    }

    /// Schedules timer `id` at `due` carrying `value`, replacing a pending timer of the
    /// same id; returns the replaced timer.
    ///
    /// # Errors
    ///
    /// [`QueueFull`], holding the timer, if `id` is not pending and the queue is full.
    /// Replacing a pending timer always succeeds: it takes no more room.
    pub fn schedule(
        &mut self,
        id: K,
        due: Timestamp,
        value: V,
    ) -> Result<Option<Scheduled<K, V>>, QueueFull<K, V>> {
        // A full queue is rare: only then does the id cost a second lookup.
        if self.by_id.len() >= self.capacity && !self.by_id.contains_key(&id) {
            return Err(QueueFull {
                timer: Scheduled { id, due, value },
                capacity: self.capacity,
            });
        }
        self.sequence += 1;
        let sequence = self.sequence;
        let slot = Slot {
            id: id.clone(),
            due,
            sequence,
            value,
        };
        let index = match self.free.pop() {
            Some(index) => {
                self.slots[index as usize] = Some(slot);
                index
            }
            None => {
                // At most `capacity` + 1 (a replacing timer takes its slot before the old
                // one is freed), which fits in a u32: see `CAPACITY_MAX`.
                let index = self.slots.len() as u32;
                self.slots.push(Some(slot));
                index
            }
        };
        // One lookup in the index, whether the id is new or pending: this is the hot
        // path of a saga's steps (each sets its timer, then cancels the last).
        let replaced = match self.by_id.insert(id, index) {
            Some(old) => self.release(old).map(|old| {
                self.by_due.remove(&(old.due, old.sequence));
                Scheduled::from(old)
            }),
            None => None,
        };
        self.by_due.insert((due, sequence), index);
        debug_assert_eq!(self.by_due.len(), self.by_id.len());
        Ok(replaced)
    }

    /// Cancels timer `id`; returns it if it was pending. Cancelling a timer that is not
    /// pending does nothing.
    pub fn cancel(&mut self, id: &K) -> Option<Scheduled<K, V>> {
        let index = self.by_id.remove(id)?;
        let slot = self.release(index)?;
        self.by_due.remove(&(slot.due, slot.sequence));
        Some(slot.into())
    }

    /// Removes and returns the earliest timer if it is due at or before `now`.
    pub fn pop_due(&mut self, now: Timestamp) -> Option<Scheduled<K, V>> {
        let entry = self.by_due.first_entry()?;
        if entry.key().0 > now {
            return None;
        }
        let index = entry.remove();
        let slot = self.release(index)?;
        self.by_id.remove(&slot.id);
        Some(slot.into())
    }

    /// Removes and yields, earliest first, every timer due at or before `now`. Timers
    /// the iterator has not reached when it is dropped stay pending.
    pub fn drain_due(&mut self, now: Timestamp) -> DrainDue<'_, K, V, S> {
        DrainDue { queue: self, now }
    }

    /// Removes and returns every pending timer, earliest first (for a shutdown to hand
    /// them back).
    pub fn drain(&mut self) -> Vec<Scheduled<K, V>> {
        self.by_id.clear();
        self.free.clear();
        let mut slots = std::mem::take(&mut self.slots);
        std::mem::take(&mut self.by_due)
            .into_values()
            .filter_map(|index| slots[index as usize].take().map(Scheduled::from))
            .collect()
    }

    /// When timer `id` is due, if it is pending.
    pub fn due(&self, id: &K) -> Option<Timestamp> {
        let index = *self.by_id.get(id)?;
        self.slots[index as usize].as_ref().map(|slot| slot.due)
    }

    /// Whether timer `id` is pending.
    pub fn contains(&self, id: &K) -> bool {
        self.by_id.contains_key(id)
    }

    /// Empties slot `index` onto the free list and returns what it held (its entries in
    /// the tree and the index are the caller's to remove).
    fn release(&mut self, index: u32) -> Option<Slot<K, V>> {
        let slot = self.slots[index as usize].take();
        debug_assert!(
            slot.is_some(),
            "the tree and the index point at taken slots"
        );
        self.free.push(index);
        slot
    }
}

impl<K, V, S> TimerQueue<K, V, S> {
    /// When the earliest pending timer is due.
    pub fn next_due(&self) -> Option<Timestamp> {
        self.by_due.first_key_value().map(|(&(due, _), _)| due)
    }

    /// Every pending timer as (id, due, value), earliest first and, among timers due at
    /// the same moment, in schedule order: the order they would fire in.
    pub fn iter(&self) -> impl Iterator<Item = (&K, Timestamp, &V)> + '_ {
        self.by_due
            .values()
            .filter_map(|&index| self.slots[index as usize].as_ref())
            .map(|slot| (&slot.id, slot.due, &slot.value))
    }

    /// How many timers are pending.
    pub fn len(&self) -> usize {
        self.by_due.len()
    }

    /// Whether no timer is pending.
    pub fn is_empty(&self) -> bool {
        self.by_due.is_empty()
    }

    /// The most timers the queue holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

impl<K, V> From<Slot<K, V>> for Scheduled<K, V> {
    fn from(slot: Slot<K, V>) -> Self {
        Self {
            id: slot.id,
            due: slot.due,
            value: slot.value,
        }
    }
}

impl<K: fmt::Debug, V: fmt::Debug, S> fmt::Debug for TimerQueue<K, V, S> {
    /// The pending timers in firing order, and the capacity (not the hasher or index).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TimerQueue")
            .field("capacity", &self.capacity)
            .field("timers", &self.iter().collect::<Vec<_>>())
            .finish()
    }
}

/// The timers due at or before a moment, taken out earliest first: see
/// [`TimerQueue::drain_due`].
pub struct DrainDue<'a, K, V, S = FixedState> {
    queue: &'a mut TimerQueue<K, V, S>,
    now: Timestamp,
}

impl<K, V, S> Iterator for DrainDue<'_, K, V, S>
where
    K: Hash + Eq + Clone,
    S: BuildHasher,
{
    type Item = Scheduled<K, V>;

    fn next(&mut self) -> Option<Self::Item> {
        self.queue.pop_due(self.now)
    }
}

impl<K: fmt::Debug, V: fmt::Debug, S> fmt::Debug for DrainDue<'_, K, V, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DrainDue")
            .field("now", &self.now)
            .field("queue", &self.queue)
            .finish()
    }
}

impl<K, V> From<QueueFull<K, V>> for Error {
    fn from(full: QueueFull<K, V>) -> Self {
        Self::TooManyTimers {
            limit: full.capacity,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: i64) -> Timestamp {
        Timestamp::from_unix_millis(ms)
    }

    fn ids<K, V>(timers: impl IntoIterator<Item = Scheduled<K, V>>) -> Vec<K> {
        timers.into_iter().map(|timer| timer.id).collect()
    }

    #[test]
    fn timers_fire_in_due_order_and_only_when_due() {
        let mut timers = TimerQueue::new(8);
        timers.schedule("b", at(20), ()).unwrap();
        timers.schedule("a", at(10), ()).unwrap();
        assert_eq!(timers.next_due(), Some(at(10)));
        assert_eq!(timers.pop_due(at(9)), None);
        assert_eq!(ids(timers.drain_due(at(25))), ["a", "b"]);
        assert!(timers.is_empty());
        assert_eq!(timers.next_due(), None);
    }

    #[test]
    fn timers_due_together_fire_in_schedule_order() {
        let mut timers = TimerQueue::new(8);
        for id in ["x", "y", "z"] {
            timers.schedule(id, at(10), ()).unwrap();
        }
        // Rescheduling to the same moment counts as scheduling it now.
        timers.schedule("x", at(10), ()).unwrap();
        assert_eq!(ids(timers.drain_due(at(10))), ["y", "z", "x"]);
    }

    #[test]
    fn scheduling_a_pending_id_replaces_it_and_hands_it_back() {
        let mut timers = TimerQueue::new(1);
        timers.schedule("t", at(10), 1).unwrap();
        let replaced = timers.schedule("t", at(50), 2).unwrap();
        assert_eq!(
            replaced,
            Some(Scheduled {
                id: "t",
                due: at(10),
                value: 1
            })
        );
        assert_eq!(timers.len(), 1);
        assert_eq!(timers.due(&"t"), Some(at(50)));
        assert_eq!(timers.pop_due(at(20)), None);
        assert_eq!(timers.pop_due(at(50)).map(|t| t.value), Some(2));
    }

    #[test]
    fn cancelling_removes_a_timer_and_is_idempotent() {
        let mut timers = TimerQueue::new(8);
        timers.schedule("t", at(10), ()).unwrap();
        assert_eq!(timers.cancel(&"t").map(|t| t.due), Some(at(10)));
        assert_eq!(timers.cancel(&"t"), None);
        assert!(!timers.contains(&"t"));
        assert_eq!(timers.pop_due(at(100)), None);
    }

    #[test]
    fn a_full_queue_refuses_new_ids_and_hands_the_timer_back() {
        let mut timers = TimerQueue::new(1);
        timers.schedule("a", at(10), 'a').unwrap();
        let full = timers.schedule("b", at(5), 'b').unwrap_err();
        assert_eq!(full.capacity, 1);
        assert_eq!(full.timer.value, 'b');
        assert_eq!(
            Error::from(full),
            Error::TooManyTimers { limit: 1 },
            "it becomes the crate's error"
        );
        let pending: Vec<_> = timers.iter().map(|(&id, _, _)| id).collect();
        assert_eq!(pending, ["a"]);
        // A cancelled timer frees its room.
        timers.cancel(&"a");
        assert!(timers.schedule("b", at(5), 'b').is_ok());
    }

    #[test]
    fn a_queue_of_capacity_zero_holds_nothing() {
        let mut timers = TimerQueue::<u8>::new(0);
        assert!(timers.schedule(1, at(0), ()).is_err());
        assert!(timers.is_empty());
    }

    #[test]
    fn draining_hands_back_everything_earliest_first() {
        let mut timers = TimerQueue::new(8);
        timers.schedule(2, at(20), ()).unwrap();
        timers.schedule(1, at(10), ()).unwrap();
        assert_eq!(ids(timers.drain()), [1, 2]);
        assert!(timers.is_empty());
        assert!(!timers.contains(&1));
    }

    #[test]
    fn a_drain_due_dropped_early_leaves_the_rest_pending() {
        let mut timers = TimerQueue::new(8);
        timers.schedule(1, at(10), ()).unwrap();
        timers.schedule(2, at(20), ()).unwrap();
        assert_eq!(timers.drain_due(at(30)).next().map(|t| t.id), Some(1));
        assert_eq!(timers.len(), 1);
        assert!(timers.contains(&2));
    }
}
