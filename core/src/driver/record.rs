//! An instance's log record: what the driver appends for each step, and reads back to
//! replay it.
//!
//! A record holds the step (the event, or the outcome of one of the instance's intents),
//! how many intents the step emitted and the status after it, so that a replay that
//! diverges from the live run is caught at the record where it does. The first record
//! also holds the instance's initial state, and every
//! [`snapshot_every`](super::Durable::snapshot_every)-th record the whole instance after
//! its step (state, intents in flight, pending timers), so that a restore can start from
//! there instead of from the first record.
//!
//! The record does not hold the step's intents: the step determines them (the reducer is
//! deterministic), so a replay emits them again, under the same ids. That is what makes
//! the log the outbox.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::envelope::{Envelope, EventType, Payload, Priority};
use crate::error::Error;
use crate::id::{CorrelationId, EventId, InstanceId, IntentId, TimerId};
use crate::intent::Intent;
use crate::outcome::Outcome;
use crate::time::Timestamp;

use super::Status;

/// The event type of every driver record.
pub const RECORD_TYPE: &str = "keel.instance.record";

/// The source of every driver record.
pub const RECORD_SOURCE: &str = "keel/driver";

/// The schema version of records this version of keel writes.
///
/// Version 2 holds a finished instance until its intents in flight are answered (their
/// outcomes follow the finishing record). Version 1, the first, dropped an instance at
/// the record that finished it, with whatever was in flight: a log of version 1 ends
/// there, and replaying it ends the instance there too, so an upgrade does not perform
/// the last calls of instances that finished long ago.
pub const RECORD_SCHEMA: u32 = 2;

/// The oldest schema version of records this version of keel reads.
pub const RECORD_SCHEMA_MIN: u32 = 1;

/// What was reduced at one step of an instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordStep<E> {
    /// An event fed to the instance: a command, a message, an operator's decision.
    Event(E),
    /// What became of one of the instance's intents, or a timer of it that fired.
    Outcome(Outcome),
}

/// A whole instance as of a record: enough to go on from there without the records
/// before it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot<S> {
    /// The reducer's state.
    pub state: S,
    /// Intents performed (or to perform) whose outcome is not recorded yet, in id order.
    pub in_flight: Vec<Intent>,
    /// Pending timers: name, due time and the id of the intent that set it.
    pub timers: Vec<(TimerId, Timestamp, IntentId)>,
}

/// One record of an instance's log, as encoded in its envelope's payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(bound(deserialize = "S: DeserializeOwned, E: DeserializeOwned"))]
pub struct Record<S, E> {
    /// The reducer's kind; in the first record only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The state before the first step; in the first record only. Written as
    /// `{"state": ..}`, so that a state that is itself `null` (a `None`) reads back.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "wrapped")]
    pub initial: Option<S>,
    /// What was reduced.
    pub step: RecordStep<E>,
    /// How many intents the step emitted, which a replay checks; `None` in a log format
    /// that does not count them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intents: Option<u32>,
    /// The instance's status after the step.
    pub status: Status,
    /// The finer status the log recorded, as [`Durable::status_name`] names it, for a
    /// log format that keeps one (a saga's `compensating`): a replay checks it too. Not
    /// part of the driver's own format.
    ///
    /// [`Durable::status_name`]: super::Durable::status_name
    #[serde(skip)]
    pub status_name: Option<&'static str>,
    /// What else of the status such a log format recorded, as
    /// [`Durable::status_detail`] says it (a saga's reason for compensating): a replay
    /// must reproduce it. Not part of the driver's own format.
    ///
    /// [`Durable::status_detail`]: super::Durable::status_detail
    #[serde(skip)]
    pub status_detail: Option<String>,
    /// The whole instance after the step, every few records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<Snapshot<S>>,
}

impl<S: Serialize + DeserializeOwned, E: Serialize + DeserializeOwned> Record<S, E> {
    /// The envelope that carries record `version` of `instance`'s log.
    pub fn encode(
        &self,
        instance: &InstanceId,
        correlation: CorrelationId,
        version: u64,
        now: Timestamp,
    ) -> Result<Envelope, Error> {
        // JSON bytes in a binary payload: encoded once and stored as one buffer rather
        // than as a tree of values.
        let data = serde_json::to_vec(self).map_err(|e| Error::RecordDecode {
            instance: instance.to_string(),
            version,
            reason: format!("the record cannot be encoded: {e}"),
        })?;
        Ok(Envelope {
            id: EventId::record(correlation, version),
            event_type: EventType::from_static(RECORD_TYPE),
            source: RECORD_SOURCE.to_owned(),
            target: None,
            time: now,
            correlation_id: correlation,
            causation_id: None,
            subject: Some(instance.to_string()),
            sequence: version,
            schema_version: RECORD_SCHEMA,
            priority: Priority::Normal,
            metadata: std::collections::BTreeMap::new(),
            payload: Payload::Binary(data),
        })
    }

    /// Reads record `version` of `instance`'s log from its envelope.
    pub fn decode(instance: &InstanceId, version: u64, envelope: &Envelope) -> Result<Self, Error> {
        let refuse = |reason: String| Error::RecordDecode {
            instance: instance.to_string(),
            version,
            reason,
        };
        if envelope.event_type.as_str() != RECORD_TYPE {
            return Err(refuse(format!(
                "it is a `{}`, not a `{RECORD_TYPE}`",
                envelope.event_type
            )));
        }
        if !(RECORD_SCHEMA_MIN..=RECORD_SCHEMA).contains(&envelope.schema_version) {
            return Err(refuse(format!(
                "its schema version is {}, and this keel reads versions {RECORD_SCHEMA_MIN} \
                 to {RECORD_SCHEMA}",
                envelope.schema_version
            )));
        }
        let decoded = match &envelope.payload {
            Payload::Binary(bytes) => serde_json::from_slice(bytes),
            Payload::Json(value) => Self::deserialize(value),
        };
        decoded.map_err(|e| refuse(format!("its payload does not decode: {e}")))
    }
}

/// `Some(state)` as `{"state": state}`: serde reads a bare `null` in an `Option` field as
/// `None`, which would lose a state that serialises as `null`.
mod wrapped {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize)]
    struct Ref<'a, S> {
        state: &'a S,
    }

    #[derive(Deserialize)]
    struct Own<S> {
        state: S,
    }

    pub(super) fn serialize<S: Serialize, T: Serializer>(
        value: &Option<S>,
        serializer: T,
    ) -> Result<T::Ok, T::Error> {
        match value {
            Some(state) => Ref { state }.serialize(serializer),
            None => serializer.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, S: Deserialize<'de>, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<S>, D::Error> {
        Ok(Option::<Own<S>>::deserialize(deserializer)?.map(|own| own.state))
    }
}
