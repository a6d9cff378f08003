//! The transactional outbox: intents committed with their events are carried out,
//! then marked done; after a crash the pending ones are carried out again.
//!
//! Between the commit of an intent and its dispatch, a process can die. The outbox
//! closes that gap: [`EventStore::append_with_intents`] commits intents with the
//! events that caused them, and an [`OutboxDispatcher`] carries out whatever is pending,
//! marking each done only after its handler returned. An intent can therefore run more
//! than once (a crash after the effect, before the mark), always under the same intent
//! id, which the handler passes on as its idempotency key: at least once, one visible
//! effect.

use std::sync::Arc;

use keel_core::Intent;

use crate::error::Error;
use crate::handler::{Call, HandlerResult, InstanceId, SharedHandler};
use crate::metrics::Metrics;

use super::EventStore;

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

    /// Carries out every intent pending now, oldest first, marking each done once its
    /// handler has returned (success or failure: a failure is an outcome too, reported in
    /// the result for the caller to feed back). Returns what was dispatched.
    pub async fn dispatch_pending(&self) -> Result<Vec<Dispatched>, Error> {
        let mut dispatched = Vec::new();
        loop {
            let pending = self.store.pending_intents(OUTBOX_BATCH).await?;
            if pending.is_empty() {
                return Ok(dispatched);
            }
            for intent in pending {
                self.metrics.started();
                let call = Call::new(
                    intent.clone(),
                    InstanceId::from("outbox"),
                    self.metrics.clone(),
                );
                let result = self.handler.call(call).await;
                self.store.complete_intents(&[intent.id]).await?;
                dispatched.push(Dispatched { intent, result });
            }
        }
    }
}
