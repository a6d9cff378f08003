//! The handler that carries out `Persist` intents against an [`EventStore`].

use std::sync::Arc;

use keel_core::IntentKind;
use keel_store::{Error, EventStore};
use serde_json::json;

use crate::handler::{Call, Failure, Handler, HandlerFuture};

/// Appends the events of `Persist` intents to a store.
///
/// Success answers `{"stream", "first_version", "last_version", "first_position",
/// "deduplicated"}`. A version conflict or a reused event id is a permanent failure (a
/// retry would meet the same stream), for the reducer to resolve by reloading.
#[derive(Clone)]
pub struct PersistHandler {
    store: Arc<dyn EventStore>,
}

impl std::fmt::Debug for PersistHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PersistHandler").finish_non_exhaustive()
    }
}

impl PersistHandler {
    /// A handler appending to `store`.
    pub fn new(store: Arc<dyn EventStore>) -> Self {
        Self { store }
    }
}

impl Handler for PersistHandler {
    fn call(&self, call: Call) -> HandlerFuture {
        let store = Arc::clone(&self.store);
        Box::pin(async move {
            let IntentKind::Persist {
                stream,
                expected_version,
                events,
            } = &call.intent.kind
            else {
                return Err(Failure::permanent(format!(
                    "a {} intent reached the persist handler",
                    call.intent.kind.family()
                )));
            };
            match store.append(stream, *expected_version, events).await {
                Ok(appended) => Ok(json!({
                    "stream": stream.as_str(),
                    "first_version": appended.first_version,
                    "last_version": appended.last_version,
                    "first_position": appended.first_position,
                    "deduplicated": appended.deduplicated,
                })),
                Err(error @ (Error::VersionConflict { .. } | Error::DuplicateEventId { .. })) => {
                    Err(Failure::permanent(error.to_string()))
                }
                Err(error) => Err(Failure::transient(error.to_string())),
            }
        })
    }
}
