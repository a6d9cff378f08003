//! Dead letters: intents whose effect failed for good, kept for people to look at and
//! replay.
//!
//! [`DeadLetterLayer`] sits outermost, so the failure it sees is the final one, after
//! every retry. It parks the intent (which carries its envelope, for notify and persist
//! intents), the instance, the last failure and the number of attempts in a
//! [`DeadLetterQueue`], and then returns the failure unchanged: the reducer still learns
//! that the effect failed, and compensates or not as it sees fit.
//!
//! The attempt count travels from the retry layer up to this one in the [`Call`]: its
//! clones share one count of the attempts made ([`Call::attempts_made`]).

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex};

use keel_core::{Intent, Timestamp};

use super::lock;
use crate::clock::Clock;
use crate::error::Error;
use crate::handler::{
    Call, Failure, Handler, HandlerFuture, HandlerResult, InstanceId, Layer, SharedHandler,
};
use crate::metrics::Metrics;

/// The capacity of [`DeadLetterQueue::default`].
pub const DEAD_LETTER_CAPACITY_DEFAULT: usize = 1_000;

/// One intent that failed for good.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    /// The entry's id in its queue: increasing, never reused.
    pub id: u64,
    /// The intent, envelope included (shared, as in the [`Call`]).
    pub intent: Arc<Intent>,
    /// The instance that emitted it, to whom a replay's outcome belongs.
    pub instance: InstanceId,
    /// The last failure.
    pub error: Failure,
    /// How many attempts were made.
    pub attempts: u32,
    /// When it was parked.
    pub at: Timestamp,
}

/// A bounded, shared queue of [`DeadLetter`]s; clones are handles to the same queue.
///
/// When the queue is full, the oldest entry is evicted to make room and
/// [`evicted`](Self::evicted) counts it, with a warning in the log. Refusing the new
/// entry instead would lose the most recent failure, the one most likely still relevant,
/// and failing the effect over it would make a full queue change the reducer's outcome.
#[derive(Debug, Clone)]
pub struct DeadLetterQueue {
    letters: Arc<Mutex<Letters>>,
}

#[derive(Debug)]
struct Letters {
    /// Ordered by id, oldest first.
    entries: VecDeque<DeadLetter>,
    capacity: usize,
    next_id: u64,
    evicted: u64,
}

impl DeadLetterQueue {
    /// An empty queue holding at most `capacity` entries (at least 1).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            letters: Arc::new(Mutex::new(Letters {
                // Grows as needed: a large capacity costs nothing until it is used.
                entries: VecDeque::new(),
                capacity,
                next_id: 1,
                evicted: 0,
            })),
        }
    }

    /// Parks a failed intent and returns the new entry's id.
    pub fn push(
        &self,
        intent: Arc<Intent>,
        instance: InstanceId,
        error: Failure,
        attempts: u32,
        at: Timestamp,
    ) -> u64 {
        let mut letters = lock(&self.letters);
        let id = letters.next_id;
        letters.next_id += 1;
        if letters.entries.len() >= letters.capacity
            && let Some(oldest) = letters.entries.pop_front()
        {
            letters.evicted += 1;
            tracing::warn!(
                evicted = oldest.id,
                intent = %oldest.intent.id,
                capacity = letters.capacity,
                "dead-letter queue full: evicted the oldest entry"
            );
        }
        letters.entries.push_back(DeadLetter {
            id,
            intent,
            instance,
            error,
            attempts,
            at,
        });
        id
    }

    /// Every entry, oldest first.
    pub fn list(&self) -> Vec<DeadLetter> {
        lock(&self.letters).entries.iter().cloned().collect()
    }

    /// The entry `id`, if it is still there.
    pub fn get(&self, id: u64) -> Option<DeadLetter> {
        let letters = lock(&self.letters);
        let index = letters.index_of(id)?;
        letters.entries.get(index).cloned()
    }

    /// Removes the entry `id` and returns it, to replay or discard.
    pub fn take(&self, id: u64) -> Result<DeadLetter, Error> {
        let mut letters = lock(&self.letters);
        letters
            .index_of(id)
            .and_then(|index| letters.entries.remove(index))
            .ok_or(Error::UnknownDeadLetter { id })
    }

    /// Takes the entry `id` and runs its intent again through `handler`, under the same
    /// intent id (so the other side can recognise a duplicate) and as attempt 1, for the
    /// instance that emitted it.
    ///
    /// Pass the policy-wrapped handler: its dead-letter layer parks the intent again
    /// (under a new id) if the replay fails too. The outer `Result` is about the queue
    /// (an unknown id); the inner one is the effect's outcome.
    pub async fn replay(
        &self,
        id: u64,
        handler: &SharedHandler,
        metrics: Metrics,
    ) -> Result<HandlerResult, Error> {
        let letter = self.take(id)?;
        tracing::info!(dead_letter = id, intent = %letter.intent.id, "replaying dead letter");
        let call = Call::new(letter.intent, letter.instance, metrics);
        Ok(handler.call(call).await)
    }

    /// How many entries the queue holds.
    pub fn len(&self) -> usize {
        lock(&self.letters).entries.len()
    }

    /// Whether the queue holds no entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The most entries the queue holds.
    pub fn capacity(&self) -> usize {
        lock(&self.letters).capacity
    }

    /// How many entries were evicted to make room, since the queue was created.
    pub fn evicted(&self) -> u64 {
        lock(&self.letters).evicted
    }
}

impl Default for DeadLetterQueue {
    fn default() -> Self {
        Self::new(DEAD_LETTER_CAPACITY_DEFAULT)
    }
}

impl Letters {
    fn index_of(&self, id: u64) -> Option<usize> {
        // Entries are pushed with increasing ids and only ever removed.
        self.entries
            .binary_search_by_key(&id, |letter| letter.id)
            .ok()
    }
}

/// Parks every intent whose wrapped handler fails in a [`DeadLetterQueue`], counts
/// [`dead_lettered`](Metrics::dead_lettered), and passes the failure on unchanged.
///
/// Every failure is parked, permanent or not: by the time it gets here, the retry layer
/// inside has given up on it.
#[derive(Clone)]
pub struct DeadLetterLayer {
    queue: DeadLetterQueue,
    clock: Arc<dyn Clock>,
}

impl DeadLetterLayer {
    /// A layer parking failures in `queue`, stamped with `clock`'s time.
    pub fn new(queue: DeadLetterQueue, clock: Arc<dyn Clock>) -> Self {
        Self { queue, clock }
    }
}

impl fmt::Debug for DeadLetterLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeadLetterLayer")
            .field("queue", &self.queue)
            .finish_non_exhaustive()
    }
}

impl Layer for DeadLetterLayer {
    fn layer(&self, inner: SharedHandler) -> SharedHandler {
        Arc::new(DeadLetters {
            inner,
            layer: self.clone(),
        })
    }
}

struct DeadLetters {
    inner: SharedHandler,
    layer: DeadLetterLayer,
}

impl Handler for DeadLetters {
    fn call(&self, call: Call) -> HandlerFuture {
        let inner = Arc::clone(&self.inner);
        let layer = self.layer.clone();
        Box::pin(async move {
            // A clone shares the count of attempts that the layers inside record.
            let counted = call.clone();
            let result = inner.call(call).await;
            if let Err(failure) = &result {
                let attempts = counted.attempts_made();
                let intent_id = counted.intent.id;
                let id = layer.queue.push(
                    counted.intent,
                    counted.instance,
                    failure.clone(),
                    attempts,
                    layer.clock.now(),
                );
                counted.metrics.dead_lettered();
                tracing::warn!(
                    dead_letter = id,
                    intent = %intent_id,
                    attempts,
                    %failure,
                    "effect failed for good: parked as a dead letter"
                );
            }
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use keel_core::{Cause, EventType, IntentKind};

    use super::*;

    fn intent(position: u32) -> Arc<Intent> {
        Arc::new(Intent {
            id: Cause::root(1).intent_id(position),
            kind: IntentKind::Custom {
                name: EventType::from_static("test.effect"),
                payload: serde_json::json!({}),
            },
        })
    }

    fn push(queue: &DeadLetterQueue, position: u32) -> u64 {
        queue.push(
            intent(position),
            InstanceId::from("i"),
            Failure::transient(format!("failure {position}")),
            3,
            Timestamp::from_unix_millis(i64::from(position)),
        )
    }

    #[test]
    fn ids_increase_and_entries_list_oldest_first() {
        let queue = DeadLetterQueue::new(10);
        let ids: Vec<u64> = (0..3).map(|position| push(&queue, position)).collect();
        assert_eq!(ids, [1, 2, 3]);
        let listed: Vec<u64> = queue.list().iter().map(|letter| letter.id).collect();
        assert_eq!(listed, ids);
        assert_eq!(queue.get(2).map(|letter| letter.attempts), Some(3));
    }

    #[test]
    fn a_full_queue_evicts_the_oldest_and_counts_it() {
        let queue = DeadLetterQueue::new(2);
        for position in 0..5 {
            push(&queue, position);
        }
        assert_eq!(queue.len(), 2);
        assert_eq!(queue.evicted(), 3);
        let listed: Vec<u64> = queue.list().iter().map(|letter| letter.id).collect();
        assert_eq!(listed, [4, 5]);
    }

    #[test]
    fn take_removes_the_entry_and_ids_are_not_reused() {
        let queue = DeadLetterQueue::new(10);
        push(&queue, 0);
        push(&queue, 1);
        assert_eq!(queue.take(1).map(|letter| letter.id), Ok(1));
        assert_eq!(queue.take(1), Err(Error::UnknownDeadLetter { id: 1 }));
        assert_eq!(queue.get(1), None);
        assert_eq!(push(&queue, 2), 3);
        assert_eq!(queue.len(), 2);
    }
}
