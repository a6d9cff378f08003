//! The saga log: one stream per saga (`saga-<id>`), one record per event that changed it.
//!
//! A record is JSON (carried as a binary payload, so it is encoded once and handled as
//! one buffer) holding the event (the reducer's input) together with the status it led to
//! and the transitions it caused. The event alone is enough to rebuild the saga (the
//! reducer is pure); the rest makes the log readable without the definition (for
//! `keel sagas show`) and lets a replay check itself against what was recorded.
//!
//! The log is also the outbox: a record commits the event, and the reducer derives the
//! calls and timers from it deterministically, under the same ids, so recovery rebuilds
//! exactly what was in flight (see [`SagaReducer::in_flight`](crate::saga::SagaReducer::in_flight)).
//! Records are written and read by [`Sagas`](crate::Sagas), the saga reducer of the one
//! durable driver, through its record-format hooks.

use keel_core::{Envelope, EventType, Payload, Priority, Timestamp};
use serde::{Deserialize, Serialize};

use crate::definition::{SagaDefinition, Step};
use crate::error::Error;
use crate::id::{SagaId, record_id};
use crate::saga::{SagaEvent, SagaState, SagaStatus, Transition};

/// The type of every saga log record.
pub const RECORD_TYPE: &str = "keel.saga.recorded";

/// [`RECORD_TYPE`], checked once rather than for every record.
fn record_type() -> EventType {
    static TYPE: std::sync::LazyLock<EventType> =
        std::sync::LazyLock::new(|| EventType::from_static(RECORD_TYPE));
    TYPE.clone()
}

/// The schema version of records written by this version of keel. Version 2 names a
/// failure's kind `kind` (version 1 said `class`); this keel reads both, and a keel that
/// reads only version 1 refuses version 2 with "upgrade keel" rather than a decode error.
pub const RECORD_SCHEMA: u32 = 2;

/// The oldest record schema this keel reads.
const RECORD_SCHEMA_MIN: u32 = 1;

/// One record, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// What happened.
    pub event: SagaEvent,
    /// The saga's status after it.
    pub status: SagaStatus,
    /// What it led to.
    pub transitions: Vec<Transition>,
    /// The names of the saga's steps, by index: in the first record only, so that the
    /// log reads without the definition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<Vec<String>>,
}

/// The envelope storing the `version`-th record (from 1) of `state`'s saga, a saga of
/// `definition` (which names its steps in the first record), after `event`, with the
/// transitions it led to already as JSON (`transitions`; empty for none).
pub fn encode(
    definition: Option<&std::sync::Arc<SagaDefinition>>,
    state: &SagaState,
    version: u64,
    now: Timestamp,
    event: &SagaEvent,
    transitions: &[u8],
) -> Result<Envelope, Error> {
    let corrupt = |e: serde_json::Error| Error::CorruptLog {
        saga: state.id.to_string(),
        version,
        reason: format!("the record cannot be encoded: {e}"),
    };
    // JSON bytes in a binary payload: encoded once, then copied, stored and dropped as
    // one buffer rather than a tree of values (`data_base64` in CloudEvents form). The
    // fields are written in `Record`'s order, the transitions as they came.
    let mut data = Vec::with_capacity(256 + transitions.len());
    data.extend_from_slice(b"{\"event\":");
    serde_json::to_writer(&mut data, event).map_err(corrupt)?;
    data.extend_from_slice(b",\"status\":");
    serde_json::to_writer(&mut data, &state.status).map_err(corrupt)?;
    data.extend_from_slice(b",\"transitions\":");
    if transitions.is_empty() {
        data.extend_from_slice(b"[]");
    } else {
        data.extend_from_slice(transitions);
    }
    if let (1, Some(definition)) = (version, definition) {
        let steps: Vec<&str> = definition.steps().iter().map(Step::name).collect();
        data.extend_from_slice(b",\"steps\":");
        serde_json::to_writer(&mut data, &steps).map_err(corrupt)?;
    }
    data.push(b'}');
    Ok(Envelope {
        id: record_id(state.id.correlation(), version),
        event_type: record_type(),
        source: crate::saga::SOURCE.to_owned(),
        target: None,
        time: now,
        correlation_id: state.id.correlation(),
        causation_id: None,
        subject: Some(state.id.to_string()),
        sequence: version,
        schema_version: RECORD_SCHEMA,
        priority: Priority::Normal,
        // The saga type is in the first record; repeating it in every record would cost
        // a map and two strings per record on the hot path.
        metadata: std::collections::BTreeMap::new(),
        payload: Payload::Binary(data),
    })
}

/// The record stored in `envelope`, the `version`-th of `saga`'s log.
pub fn decode(saga: &SagaId, version: u64, envelope: &Envelope) -> Result<Record, Error> {
    decode_named(saga.as_str(), version, envelope)
}

/// [`decode`], for a saga named by its id's text (recovery has not built the id yet).
pub(crate) fn decode_named(saga: &str, version: u64, envelope: &Envelope) -> Result<Record, Error> {
    let corrupt = |reason: String| Error::CorruptLog {
        saga: saga.to_owned(),
        version,
        reason,
    };
    if envelope.event_type.as_str() != RECORD_TYPE {
        return Err(corrupt(format!(
            "a `{}` event is not a saga record",
            envelope.event_type
        )));
    }
    if !(RECORD_SCHEMA_MIN..=RECORD_SCHEMA).contains(&envelope.schema_version) {
        return Err(corrupt(format!(
            "record schema {} is not one of the {RECORD_SCHEMA_MIN} to {RECORD_SCHEMA} this keel reads: upgrade keel",
            envelope.schema_version
        )));
    }
    let decoded = match &envelope.payload {
        Payload::Binary(bytes) => serde_json::from_slice(bytes),
        // Accepted too, for records rewritten by other tools as plain JSON data.
        Payload::Json(data) => Record::deserialize(data),
    };
    decoded.map_err(|e| corrupt(format!("the record does not decode: {e}")))
}

/// The saga type named by a saga's first record.
pub fn saga_type_of(saga: &SagaId, first: &Envelope) -> Result<crate::id::SagaType, Error> {
    match decode(saga, 1, first)?.event {
        SagaEvent::Started { saga_type, .. } => Ok(saga_type),
        _ => Err(Error::CorruptLog {
            saga: saga.to_string(),
            version: 1,
            reason: "the first record is not the saga's start".into(),
        }),
    }
}
