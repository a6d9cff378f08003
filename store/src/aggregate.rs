//! Aggregates from a store: the latest snapshot plus the events after it, lifted through
//! the upcaster chain on read.

use keel_core::aggregate::{Aggregate, DomainEvent, Snapshot, Versioned};
use keel_core::{StreamId, UpcasterChain};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{EventStore, READ_LIMIT_MAX, RecordedEvent, StoredSnapshot};
use crate::error::Error;

/// Reads `stream` from version `from`, every event's payload lifted to its current
/// schema by `chain`, and each envelope's `sequence` set to its stream version (the
/// store's numbering is the authority).
pub async fn read_upcast(
    store: &dyn EventStore,
    chain: &UpcasterChain,
    stream: &StreamId,
    from: u64,
    limit: usize,
) -> Result<Vec<RecordedEvent>, Error> {
    let events = store.read_stream(stream, from, limit).await?;
    events
        .into_iter()
        .map(|mut event| {
            event.envelope.sequence = event.version;
            event.envelope = chain.upcast_envelope(event.envelope)?;
            Ok(event)
        })
        .collect()
}

/// Loads the aggregate of `stream`: its latest snapshot (if any), then every event after
/// it, lifted by `chain` and applied in order. A stream without events or snapshot gives
/// the default aggregate at version 0.
pub async fn load_aggregate<A>(
    store: &dyn EventStore,
    chain: &UpcasterChain,
    stream: &StreamId,
) -> Result<Versioned<A>, Error>
where
    A: Aggregate + Default + DeserializeOwned,
    A::Event: DomainEvent,
{
    let mut versioned = match store.load_snapshot(stream).await? {
        Some(stored) => {
            let state: A = serde_json::from_value(stored.state).map_err(|e| Error::InvalidConfig {
                setting: "snapshot",
                reason: format!("the snapshot of `{stream}` no longer decodes: {e}; delete it to rebuild from events"),
            })?;
            Versioned::from_snapshot(Snapshot {
                version: stored.version,
                state,
            })
        }
        None => Versioned::default(),
    };
    loop {
        let page = read_upcast(
            store,
            chain,
            stream,
            versioned.version() + 1,
            READ_LIMIT_MAX,
        )
        .await?;
        if page.is_empty() {
            return Ok(versioned);
        }
        let envelopes: Vec<_> = page.into_iter().map(|event| event.envelope).collect();
        versioned.catch_up(chain, &envelopes)?;
    }
}

/// Saves the aggregate's state as the snapshot of `stream` at its version.
pub async fn save_snapshot<A: Serialize>(
    store: &dyn EventStore,
    stream: &StreamId,
    versioned: &Versioned<A>,
) -> Result<(), Error> {
    let state = serde_json::to_value(versioned.state()).map_err(|e| Error::InvalidConfig {
        setting: "snapshot",
        reason: format!("the aggregate does not serialise: {e}"),
    })?;
    let snapshot = StoredSnapshot {
        stream: stream.clone(),
        version: versioned.version(),
        state,
    };
    store.save_snapshot(&snapshot).await
}
