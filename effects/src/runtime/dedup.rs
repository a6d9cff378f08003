//! The outcome record: each intent id runs once per runtime; repeats get the answer.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};

use keel_core::IntentId;
use tokio::sync::OnceCell;

use crate::handler::HandlerResult;

type Slot = Arc<OnceCell<Attempted>>;

/// A handler's result and the attempts it took, as the runtime reports them in the
/// [`Outcome`](keel_core::Outcome).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Attempted {
    pub(crate) result: HandlerResult,
    pub(crate) attempts: u32,
}

/// Maps intent ids to their (eventual) results.
///
/// The first call for an id runs the effect; a call for the same id while it runs waits
/// for that result, and one after it gets the recorded result. The record is bounded:
/// past `capacity` ids, the oldest finished ones are forgotten (an effect still running
/// is never forgotten). Beyond that horizon, duplicates are stopped by the idempotency
/// key the handler passes on, and by the durable outbox of the stores.
#[derive(Debug)]
pub(crate) struct OutcomeRecord {
    capacity: usize,
    inner: Mutex<Record>,
}

#[derive(Debug, Default)]
struct Record {
    slots: HashMap<IntentId, Slot>,
    order: VecDeque<IntentId>,
}

impl OutcomeRecord {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity,
            inner: Mutex::new(Record::default()),
        }
    }

    /// The result for `id`, running `effect` only if no call for `id` ran before.
    /// The flag says whether this call was answered from the record.
    pub(crate) async fn run<F, Fut>(&self, id: IntentId, effect: F) -> (Attempted, bool)
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Attempted>,
    {
        let slot = self.slot(id);
        let mut ran = false;
        let result = slot
            .get_or_init(|| {
                ran = true;
                effect()
            })
            .await
            .clone();
        (result, !ran)
    }

    /// Forgets the finished result of `id`, so that the next call runs the effect again
    /// (a deliberate replay). A result still being computed is kept.
    pub(crate) fn forget(&self, id: IntentId) {
        let mut record = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if record.slots.get(&id).is_some_and(|slot| slot.initialized()) {
            record.slots.remove(&id);
            record.order.retain(|kept| *kept != id);
        }
    }

    fn slot(&self, id: IntentId) -> Slot {
        // No code that can panic runs under this lock, so a poisoned lock still holds a
        // consistent record.
        let mut record = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(slot) = record.slots.get(&id) {
            return Arc::clone(slot);
        }
        let slot = Slot::default();
        record.slots.insert(id, Arc::clone(&slot));
        record.order.push_back(id);
        record.evict(self.capacity);
        slot
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .slots
            .len()
    }
}

impl Record {
    /// Forgets the oldest finished results until at most `capacity` remain, or only
    /// running effects are left to forget.
    fn evict(&mut self, capacity: usize) {
        let mut skipped = 0;
        while self.slots.len() > capacity && skipped < self.order.len() {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            let finished = self
                .slots
                .get(&oldest)
                .is_none_or(|slot| slot.initialized());
            if finished {
                self.slots.remove(&oldest);
            } else {
                self.order.push_back(oldest);
                skipped += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use keel_core::Cause;
    use serde_json::json;

    use super::*;

    fn attempted(result: HandlerResult) -> Attempted {
        Attempted {
            result,
            attempts: 1,
        }
    }

    #[tokio::test]
    async fn an_intent_runs_once_and_repeats_get_the_recorded_result() {
        let record = OutcomeRecord::new(10);
        let runs = AtomicU32::new(0);
        let id = Cause::root(1).intent_id(0);
        for expected_repeat in [false, true, true] {
            let (result, repeat) = record
                .run(id, || async {
                    runs.fetch_add(1, Ordering::SeqCst);
                    attempted(Ok(json!(7)))
                })
                .await;
            assert_eq!((result, repeat), (attempted(Ok(json!(7))), expected_repeat));
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn the_record_forgets_the_oldest_finished_results_past_its_capacity() {
        let record = OutcomeRecord::new(2);
        for position in 0..5 {
            let _ = record
                .run(Cause::root(1).intent_id(position), || async {
                    attempted(Ok(json!(null)))
                })
                .await;
        }
        assert_eq!(record.len(), 2);
    }
}
