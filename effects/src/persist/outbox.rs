//! The transactional outbox: intents committed with their events are carried out,
//! then marked done; after a crash the pending ones are carried out again.
//!
//! Between the commit of an intent and its dispatch, a process can die. The outbox
//! closes that gap: [`EventStore::append_with_intents`] commits intents with the
//! events that caused them, and an [`OutboxDispatcher`] carries out whatever is pending,
//! marking each done only after its handler returned an outcome that trying again would
//! not change (a success or a permanent failure). An intent can therefore run more
//! than once (a crash after the effect, before the mark), always under the same intent
//! id, which the handler passes on as its idempotency key: at least once, one visible
//! effect.
//!
//! The effect runtime keeps an outbox of its own in a store (see
//! [`RuntimeBuilder::outbox`](crate::runtime::RuntimeBuilder::outbox)); this dispatcher
//! is for intents committed with [`EventStore::append_with_intents`] directly. It lives
//! here, not in keel-store, because it performs intents: it calls a [`SharedHandler`].

use std::collections::HashSet;
use std::sync::Arc;

use keel_core::{Intent, IntentId};
use keel_store::{EventStore, READ_LIMIT_MAX};

use crate::error::Error;
use crate::handler::{Call, HandlerResult, InstanceId, SharedHandler};
use crate::metrics::Metrics;

/// How many pending intents one pass takes.
pub const OUTBOX_BATCH: usize = 256;

/// Carries out the pending intents of a store through one handler (typically a router
/// over the effect families, wrapped in policies).
pub struct OutboxDispatcher {
    store: Arc<dyn EventStore>,
    handler: SharedHandler,
    metrics: Metrics,
}

impl std::fmt::Debug for OutboxDispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboxDispatcher").finish_non_exhaustive()
    }
}

/// What one intent's dispatch came to.
#[derive(Debug, Clone, PartialEq)]
pub struct Dispatched {
    /// The intent.
    pub intent: Intent,
    /// Its handler's result.
    pub result: HandlerResult,
}

impl OutboxDispatcher {
    /// A dispatcher for `store`'s pending intents.
    pub fn new(store: Arc<dyn EventStore>, handler: SharedHandler, metrics: Metrics) -> Self {
        Self {
            store,
            handler,
            metrics,
        }
    }

    /// Carries out every intent pending now, oldest first, and returns what was
    /// dispatched. An intent is marked done once its handler has returned a success or a
    /// permanent failure (an outcome too, reported in the result for the caller to feed
    /// back). A retryable failure (transient, timeout, unavailable) leaves it pending
    /// for a later pass: its effect has not happened yet, and marking it done would lose
    /// it. Each pending intent is tried at most once per pass.
    pub async fn dispatch_pending(&self) -> Result<Vec<Dispatched>, Error> {
        let mut dispatched = Vec::new();
        let mut tried: HashSet<IntentId> = HashSet::new();
        // The intents left pending this pass come first in every read (oldest first), so
        // each read asks for that many more; at READ_LIMIT_MAX left pending, the rest
        // waits for the next pass.
        let mut left_pending = 0;
        loop {
            let limit = (left_pending + OUTBOX_BATCH).min(READ_LIMIT_MAX);
            let pending = self.store.pending_intents(limit).await?;
            let fresh: Vec<Intent> = pending
                .into_iter()
                .filter(|intent| !tried.contains(&intent.id))
                .collect();
            if fresh.is_empty() {
                return Ok(dispatched);
            }
            for intent in fresh {
                tried.insert(intent.id);
                self.metrics.started();
                let call = Call::new(
                    intent.clone(),
                    InstanceId::from("outbox"),
                    self.metrics.clone(),
                );
                let result = self.handler.call(call).await;
                match &result {
                    Err(failure) if failure.kind.is_retryable() => left_pending += 1,
                    _ => self.store.complete_intents(&[intent.id]).await?,
                }
                dispatched.push(Dispatched { intent, result });
            }
        }
    }
}
