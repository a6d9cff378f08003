//! The runtime's durable outbox: each step's intents are committed to a store before
//! any of them is performed, and completed once their outcome has been reduced.
//!
//! A store's outbox keeps intents, not who emitted them, yet after a crash an intent's
//! outcome must go back to the instance that emitted it. So each intent is recorded as
//! an *entry*: a `Custom` intent named [`OUTBOX_ENTRY_NAME`] with the same [`IntentId`], whose
//! payload holds the instance's id and the intent itself. The entries share the store's
//! one outbox, so a store used as a runtime's outbox must not also be drained by an
//! [`OutboxDispatcher`](crate::persist::outbox::OutboxDispatcher), which would not know
//! what to do with them.

use std::sync::Arc;

use keel_core::{EventType, ExpectedVersion, Intent, IntentId, IntentKind, StreamId};
use keel_store::EventStore;
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::handler::InstanceId;

/// The name of the `Custom` intent that records one intent of the runtime's outbox.
pub const OUTBOX_ENTRY_NAME: &str = "keel.runtime.outbox";

/// The stream the outbox appends go to. They carry no events, only intents, so the
/// stream stays empty; the store's API names a stream for every append.
pub const OUTBOX_STREAM: &str = "keel.runtime.outbox";

/// An intent and the instance it belongs to, as the outbox keeps them.
#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    instance: String,
    intent: Intent,
}

/// A store-backed outbox for one runtime.
pub(super) struct Outbox {
    store: Arc<dyn EventStore>,
    stream: StreamId,
}

/// What one read of the outbox found.
#[derive(Debug, Default)]
pub(super) struct PendingEntries {
    /// Entries written by a runtime, oldest first.
    pub(super) entries: Vec<(InstanceId, Intent)>,
    /// Pending intents that are not runtime entries (or do not decode).
    pub(super) foreign: Vec<IntentId>,
    /// Whether the read returned as many intents as it asked for: more may be pending.
    pub(super) full: bool,
}

impl Outbox {
    pub(super) fn new(store: Arc<dyn EventStore>) -> Self {
        Self {
            store,
            stream: StreamId::from_static(OUTBOX_STREAM),
        }
    }

    /// Commits `intents` of `instance` as pending, in one transaction, all but the
    /// `CancelTimer`s: a cancel acts at once and has no outcome to wait for. Intents that
    /// are already pending (same id) stay as they are.
    pub(super) async fn record(
        &self,
        instance: &InstanceId,
        intents: &[Intent],
    ) -> Result<(), Error> {
        let entries = intents
            .iter()
            .filter(|intent| !matches!(intent.kind, IntentKind::CancelTimer { .. }))
            .map(|intent| entry(instance, intent))
            .collect::<Result<Vec<Intent>, Error>>()?;
        if entries.is_empty() {
            return Ok(());
        }
        self.store
            .append_with_intents(&self.stream, ExpectedVersion::Any, &[], &entries)
            .await?;
        Ok(())
    }

    /// Marks `ids` done.
    pub(super) async fn complete(&self, ids: &[IntentId]) -> Result<(), Error> {
        Ok(self.store.complete_intents(ids).await?)
    }

    /// Up to `limit` pending entries, oldest first.
    pub(super) async fn pending(&self, limit: usize) -> Result<PendingEntries, Error> {
        let pending = self.store.pending_intents(limit).await?;
        let mut found = PendingEntries {
            full: pending.len() >= limit,
            ..PendingEntries::default()
        };
        for intent in pending {
            match unwrap_entry(&intent) {
                Some(entry) => found.entries.push(entry),
                None => found.foreign.push(intent.id),
            }
        }
        Ok(found)
    }
}

/// `intent` of `instance` as an outbox entry, under the same id.
fn entry(instance: &InstanceId, intent: &Intent) -> Result<Intent, Error> {
    let payload = serde_json::to_value(Entry {
        instance: instance.as_str().to_owned(),
        intent: intent.clone(),
    })
    .map_err(|error| keel_store::Error::Storage {
        backend: "outbox",
        reason: format!("intent {} does not serialise: {error}", intent.id),
    })?;
    Ok(Intent {
        id: intent.id,
        kind: IntentKind::Custom {
            name: EventType::from_static(OUTBOX_ENTRY_NAME),
            payload,
        },
    })
}

/// The instance and intent an outbox entry holds, if `entry` is one.
fn unwrap_entry(entry: &Intent) -> Option<(InstanceId, Intent)> {
    let IntentKind::Custom { name, payload } = &entry.kind else {
        return None;
    };
    if name.as_str() != OUTBOX_ENTRY_NAME {
        return None;
    }
    let Entry { instance, intent } = Entry::deserialize(payload).ok()?;
    // An entry is keyed by its intent's id; one that is not was not written here.
    (intent.id == entry.id).then(|| (InstanceId::from(instance), intent))
}

#[cfg(test)]
mod tests {
    use keel_core::{Cause, HttpRequest};

    use super::*;

    #[test]
    fn an_entry_unwraps_to_its_instance_and_intent_under_the_same_id() {
        let intent = Intent {
            id: Cause::root(5).intent_id(2),
            kind: IntentKind::Http(Box::new(HttpRequest::get("https://example.invalid/"))),
        };
        let wrapped = entry(&InstanceId::from("order-7"), &intent).expect("an entry");
        assert_eq!(wrapped.id, intent.id);
        assert_eq!(
            unwrap_entry(&wrapped),
            Some((InstanceId::from("order-7"), intent))
        );
    }

    #[test]
    fn an_intent_that_is_not_an_entry_is_foreign() {
        let intent = Intent {
            id: Cause::root(5).intent_id(2),
            kind: IntentKind::Custom {
                name: EventType::from_static(OUTBOX_ENTRY_NAME),
                payload: serde_json::json!({ "instance": "a" }),
            },
        };
        assert_eq!(unwrap_entry(&intent), None);
    }
}
