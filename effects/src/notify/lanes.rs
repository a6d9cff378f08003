//! The pure part of a subscriber's queue: one FIFO lane per priority, one capacity for
//! all lanes, and the overflow policies deciding which envelope to throw away.
//!
//! No locks and no wake-ups here; [`Queue`](super::queue::Queue) adds those.

use std::collections::VecDeque;
use std::sync::Arc;

use keel_core::{Envelope, Priority};

use super::subscription::Overflow;

/// What happened to one envelope offered to one queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pushed {
    /// Queued, with room to spare.
    Queued,
    /// Queued after throwing an older envelope away (`DropOldest`).
    Evicted,
    /// Thrown away because the queue is full (`DropNewest`, or `DropOldest` when every
    /// queued envelope outranks it).
    Refused,
    /// Not queued: the queue is full and its policy is to make the publisher wait.
    Full,
    /// Not queued: the subscription is gone.
    Closed,
}

/// Lane index per priority: lower index, delivered first.
fn lane(priority: Priority) -> usize {
    match priority {
        Priority::High => 0,
        Priority::Normal => 1,
        Priority::Low => 2,
    }
}

/// The queued envelopes of one subscriber.
#[derive(Debug, Default)]
pub(crate) struct Lanes {
    lanes: [VecDeque<Arc<Envelope>>; 3],
    len: usize,
    closed: bool,
}

impl Lanes {
    /// Queues `envelope` if there is room, else applies `overflow`.
    pub(crate) fn push(
        &mut self,
        envelope: &Arc<Envelope>,
        capacity: usize,
        overflow: Overflow,
    ) -> Pushed {
        if self.closed {
            return Pushed::Closed;
        }
        let incoming = lane(envelope.priority);
        if self.len < capacity {
            self.lanes[incoming].push_back(Arc::clone(envelope));
            self.len += 1;
            return Pushed::Queued;
        }
        match overflow {
            Overflow::Backpressure => Pushed::Full,
            Overflow::DropNewest => Pushed::Refused,
            Overflow::DropOldest => {
                // The victim is the oldest envelope of the lowest priority present; a new
                // envelope that ranks below all of them is itself that victim, so a flood
                // of low-priority envelopes never pushes out a high-priority one.
                let Some(victim) = (0..self.lanes.len())
                    .rev()
                    .find(|&i| !self.lanes[i].is_empty())
                else {
                    return Pushed::Refused; // capacity 0: refused by `subscribe`, kept safe
                };
                if incoming > victim {
                    return Pushed::Refused;
                }
                self.lanes[victim].pop_front();
                self.lanes[incoming].push_back(Arc::clone(envelope));
                Pushed::Evicted
            }
        }
    }

    /// The next envelope: the oldest of the highest priority present.
    pub(crate) fn pop(&mut self) -> Option<Arc<Envelope>> {
        let envelope = self.lanes.iter_mut().find_map(VecDeque::pop_front)?;
        self.len -= 1;
        Some(envelope)
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Refuses every envelope from now on; those queued can still be popped.
    pub(crate) fn close(&mut self) {
        self.closed = true;
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed
    }
}

#[cfg(test)]
mod tests {
    use keel_core::{EventId, EventType, Timestamp};

    use super::*;

    fn envelope(id: u128, priority: Priority) -> Arc<Envelope> {
        let event_type = EventType::from_static("test.event");
        let builder = Envelope::builder(
            EventId::from_u128(id),
            event_type,
            "test",
            Timestamp::UNIX_EPOCH,
        );
        Arc::new(builder.priority(priority).build().unwrap())
    }

    fn drain(lanes: &mut Lanes) -> Vec<u128> {
        std::iter::from_fn(|| lanes.pop())
            .map(|e| e.id.uuid().as_u128())
            .collect()
    }

    #[test]
    fn high_priority_overtakes_and_each_lane_stays_fifo() {
        let mut lanes = Lanes::default();
        for (id, priority) in [
            (1, Priority::Low),
            (2, Priority::Normal),
            (3, Priority::High),
            (4, Priority::Normal),
            (5, Priority::High),
        ] {
            assert_eq!(
                lanes.push(&envelope(id, priority), 8, Overflow::Backpressure),
                Pushed::Queued
            );
        }
        assert_eq!(drain(&mut lanes), [3, 5, 2, 4, 1]);
    }

    #[test]
    fn capacity_counts_every_lane_together() {
        let mut lanes = Lanes::default();
        lanes.push(&envelope(1, Priority::High), 2, Overflow::DropNewest);
        lanes.push(&envelope(2, Priority::Low), 2, Overflow::DropNewest);
        assert_eq!(
            lanes.push(&envelope(3, Priority::Normal), 2, Overflow::DropNewest),
            Pushed::Refused
        );
        assert_eq!(
            lanes.push(&envelope(3, Priority::Normal), 2, Overflow::Backpressure),
            Pushed::Full
        );
        assert_eq!(lanes.len(), 2);
    }

    #[test]
    fn drop_oldest_evicts_the_oldest_of_the_lowest_priority_present() {
        let mut lanes = Lanes::default();
        for (id, priority) in [
            (1, Priority::Normal),
            (2, Priority::High),
            (3, Priority::Normal),
        ] {
            lanes.push(&envelope(id, priority), 3, Overflow::DropOldest);
        }
        assert_eq!(
            lanes.push(&envelope(4, Priority::High), 3, Overflow::DropOldest),
            Pushed::Evicted
        );
        assert_eq!(drain(&mut lanes), [2, 4, 3]);
    }

    #[test]
    fn drop_oldest_never_evicts_a_higher_priority_for_a_lower_one() {
        let mut lanes = Lanes::default();
        lanes.push(&envelope(1, Priority::High), 1, Overflow::DropOldest);
        assert_eq!(
            lanes.push(&envelope(2, Priority::Low), 1, Overflow::DropOldest),
            Pushed::Refused
        );
        assert_eq!(drain(&mut lanes), [1]);
    }

    #[test]
    fn a_closed_queue_takes_nothing() {
        let mut lanes = Lanes::default();
        lanes.close();
        assert_eq!(
            lanes.push(&envelope(1, Priority::High), 4, Overflow::DropOldest),
            Pushed::Closed
        );
    }
}
