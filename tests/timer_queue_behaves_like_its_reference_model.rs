//! Laws of the timer queue: for any sequence of schedules, cancellations and pops, the
//! queue gives the same answers as a plain reference model (a list of timers searched
//! by hand), so timers fire in due order, ties in schedule order, a rescheduled timer
//! replaces its old setting, a cancelled one never fires, and a full queue refuses new
//! ids without changing.

use keel::Timestamp;
use keel::timer::{QueueFull, Scheduled, TimerQueue};
use proptest::prelude::*;

/// The specification: pending timers as (id, due, sequence, value), in no order.
#[derive(Debug, Default)]
struct Model {
    timers: Vec<(u8, i64, u64, u32)>,
    sequence: u64,
    capacity: usize,
}

impl Model {
    fn schedule(&mut self, id: u8, due: i64, value: u32) -> Result<Option<Scheduled<u8, u32>>, ()> {
        let old = self.timers.iter().position(|t| t.0 == id);
        if old.is_none() && self.timers.len() >= self.capacity {
            return Err(());
        }
        let replaced = old.map(|index| scheduled(self.timers.remove(index)));
        self.sequence += 1;
        self.timers.push((id, due, self.sequence, value));
        Ok(replaced)
    }

    fn cancel(&mut self, id: u8) -> Option<Scheduled<u8, u32>> {
        let index = self.timers.iter().position(|t| t.0 == id)?;
        Some(scheduled(self.timers.remove(index)))
    }

    /// Every timer due at or before `now`, earliest first, ties by sequence.
    fn pop_due(&mut self, now: i64) -> Vec<Scheduled<u8, u32>> {
        let mut due: Vec<_> = self.timers.iter().copied().filter(|t| t.1 <= now).collect();
        due.sort_by_key(|t| (t.1, t.2));
        self.timers.retain(|t| t.1 > now);
        due.into_iter().map(scheduled).collect()
    }

    fn in_order(&self) -> Vec<(u8, i64, u32)> {
        let mut timers = self.timers.clone();
        timers.sort_by_key(|t| (t.1, t.2));
        timers.into_iter().map(|t| (t.0, t.1, t.3)).collect()
    }
}

fn scheduled((id, due, _, value): (u8, i64, u64, u32)) -> Scheduled<u8, u32> {
    Scheduled {
        id,
        due: Timestamp::from_unix_millis(due),
        value,
    }
}

#[derive(Debug, Clone)]
enum Op {
    Schedule { id: u8, due: i64, value: u32 },
    Cancel { id: u8 },
    PopDue { now: i64 },
}

/// Few ids and few due times, so that replacements, ties and a full queue are common.
fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (0..12u8, 0..20i64, any::<u32>()).prop_map(|(id, due, value)| Op::Schedule { id, due, value }),
        2 => (0..12u8).prop_map(|id| Op::Cancel { id }),
        2 => (0..24i64).prop_map(|now| Op::PopDue { now }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn the_queue_agrees_with_the_reference_model(
        capacity in 0..10usize,
        ops in prop::collection::vec(op(), 0..80),
    ) {
        let mut queue = TimerQueue::new(capacity);
        let mut model = Model { capacity, ..Model::default() };
        for op in ops {
            match op {
                Op::Schedule { id, due, value } => {
                    let at = Timestamp::from_unix_millis(due);
                    let got = queue.schedule(id, at, value);
                    let want = model.schedule(id, due, value);
                    match (got, want) {
                        (Ok(got), Ok(want)) => prop_assert_eq!(got, want),
                        (Err(QueueFull { timer, capacity: limit }), Err(())) => {
                            prop_assert_eq!(timer, scheduled((id, due, 0, value)));
                            prop_assert_eq!(limit, capacity);
                        }
                        (got, want) => prop_assert!(false, "queue {got:?}, model {want:?}"),
                    }
                }
                Op::Cancel { id } => prop_assert_eq!(queue.cancel(&id), model.cancel(id)),
                Op::PopDue { now } => {
                    let got: Vec<_> = queue.drain_due(Timestamp::from_unix_millis(now)).collect();
                    prop_assert_eq!(got, model.pop_due(now));
                }
            }
            let pending: Vec<_> = queue
                .iter()
                .map(|(&id, due, &value)| (id, due.unix_millis(), value))
                .collect();
            prop_assert_eq!(&pending, &model.in_order());
            prop_assert!(queue.len() <= capacity);
            prop_assert_eq!(queue.len(), model.timers.len());
            prop_assert_eq!(queue.is_empty(), model.timers.is_empty());
            let next = model.in_order().first().map(|t| Timestamp::from_unix_millis(t.1));
            prop_assert_eq!(queue.next_due(), next);
            for id in 0..12u8 {
                let due = model.timers.iter().find(|t| t.0 == id).map(|t| Timestamp::from_unix_millis(t.1));
                prop_assert_eq!(queue.due(&id), due);
                prop_assert_eq!(queue.contains(&id), due.is_some());
            }
        }
    }

    #[test]
    fn the_same_calls_give_the_same_queue(ops in prop::collection::vec(op(), 0..60)) {
        // Two queues with differently seeded hashers: the order of what comes out must
        // not depend on hashing.
        let run = |hasher: std::hash::RandomState| {
            let mut queue = TimerQueue::with_hasher(8, hasher);
            let mut out = Vec::new();
            for op in &ops {
                match *op {
                    Op::Schedule { id, due, value } => {
                        let _ = queue.schedule(id, Timestamp::from_unix_millis(due), value);
                    }
                    Op::Cancel { id } => drop(queue.cancel(&id)),
                    Op::PopDue { now } => out.extend(queue.drain_due(Timestamp::from_unix_millis(now))),
                }
            }
            out.extend(queue.drain());
            out
        };
        prop_assert_eq!(run(std::hash::RandomState::new()), run(std::hash::RandomState::new()));
    }
}
