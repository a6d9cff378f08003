//! Saga ids and saga types, and the ids derived from them.
//!
//! A saga id is chosen by the user (`order-42`), so that a retried `start` names the same
//! saga and is refused as a duplicate rather than starting a second one. Everything else
//! (the correlation id, the stream, every intent id) is derived from it, never drawn.

use std::fmt;
use std::sync::Arc;

use keel_core::{CorrelationId, EventId, EventType, IntentId, StreamId};
use serde::{Deserialize, Serialize};

use crate::error::Error;

/// The longest saga id accepted, in bytes.
pub const SAGA_ID_BYTES_MAX: usize = 200;

/// The prefix of every saga's stream in the event store: `saga-order-42`.
pub const STREAM_PREFIX: &str = "saga-";

/// The id of one saga instance, chosen by the caller: `order-42`.
///
/// One to 200 bytes of ASCII letters, digits and `-_.:`; so it can appear in a stream
/// name, a URL path and a log line without escaping.
#[derive(Clone, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SagaId {
    text: Arc<str>,
    /// The correlation id, a hash of the text: computed once, needed for every record,
    /// intent and envelope of the saga.
    correlation: CorrelationId,
}

impl PartialEq for SagaId {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Eq for SagaId {}

impl PartialOrd for SagaId {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for SagaId {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.text.cmp(&other.text)
    }
}

impl std::hash::Hash for SagaId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // Already a good hash of the text: hashing two words beats hashing the text.
        self.correlation.uuid().as_u128().hash(state);
    }
}

impl fmt::Debug for SagaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SagaId").field(&self.text).finish()
    }
}

impl SagaId {
    /// Checks and wraps `id`.
    pub fn new(id: impl Into<String>) -> Result<Self, Error> {
        let id = id.into();
        let invalid = |reason| Error::InvalidName {
            what: "saga id",
            value: id.chars().take(80).collect(),
            reason,
        };
        if id.is_empty() || id.len() > SAGA_ID_BYTES_MAX {
            return Err(invalid("it must be 1 to 200 bytes long"));
        }
        let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':');
        if !id.chars().all(allowed) {
            return Err(invalid(
                "only ASCII letters, digits and `-_.:` may appear in it",
            ));
        }
        let correlation = CorrelationId::of_name(&id);
        Ok(Self {
            text: id.into(),
            correlation,
        })
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The saga named `text`, known to be a valid id, whose correlation is
    /// `correlation` (as computed from it): no check and no hashing again.
    pub(crate) fn from_parts(text: Arc<str>, correlation: CorrelationId) -> Self {
        debug_assert!(Self::new(&*text).is_ok_and(|id| id.correlation == correlation));
        Self { text, correlation }
    }

    /// The id as shared text, without copying it.
    pub fn shared(&self) -> Arc<str> {
        Arc::clone(&self.text)
    }

    /// The saga's stream in the event store.
    pub fn stream(&self) -> StreamId {
        StreamId::from(format!("{STREAM_PREFIX}{}", self.text))
    }

    /// The saga whose stream is `stream`, if it is a saga stream.
    pub fn from_stream(stream: &StreamId) -> Option<Self> {
        stream
            .as_str()
            .strip_prefix(STREAM_PREFIX)
            .and_then(|id| Self::new(id).ok())
    }

    /// The correlation id of every envelope and intent of this saga: a fixed hash of the
    /// id, so that it is the same in every process and after every restart.
    pub fn correlation(&self) -> CorrelationId {
        self.correlation
    }
}

impl fmt::Display for SagaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl TryFrom<String> for SagaId {
    type Error = Error;

    fn try_from(id: String) -> Result<Self, Error> {
        Self::new(id)
    }
}

impl From<SagaId> for String {
    fn from(id: SagaId) -> Self {
        id.text.to_string()
    }
}

impl std::str::FromStr for SagaId {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        Self::new(s)
    }
}

/// The kind of a saga, naming its definition: `order.fulfilment`.
///
/// Lowercase dotted segments, like an event type.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SagaType(Arc<str>);

impl SagaType {
    /// Checks and wraps `name`.
    pub fn new(name: impl Into<String>) -> Result<Self, Error> {
        let name = name.into();
        match EventType::new(name.clone()) {
            Ok(_) => Ok(Self(name.into())),
            Err(_) => Err(Error::InvalidName {
                what: "saga type",
                value: name.chars().take(80).collect(),
                reason: "use lowercase dotted segments of a-z, 0-9, `_` and `-`, like `order.fulfilment`",
            }),
        }
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SagaType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for SagaType {
    type Error = Error;

    fn try_from(name: String) -> Result<Self, Error> {
        Self::new(name)
    }
}

impl From<SagaType> for String {
    fn from(name: SagaType) -> Self {
        name.0.to_string()
    }
}

/// Whether an intent does a step's work or undoes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// The step's action.
    Action,
    /// The step's compensation.
    Compensation,
}

impl Phase {
    /// `action` or `compensation`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Action => "action",
            Self::Compensation => "compensation",
        }
    }
}

/// The id of the intent that carries out `phase` of step `step` of the saga correlated
/// by `correlation`: keel-core's [`IntentId::stable`] of the step and phase.
///
/// It is the same for every attempt, so the service called sees one idempotency key
/// however often the saga retries, redelivers or recovers: a late answer to the first
/// attempt and the answer to the third describe the same single effect.
pub fn step_intent_id(correlation: CorrelationId, step: u16, phase: Phase) -> IntentId {
    IntentId::stable(
        correlation,
        u32::from(step) << 1 | u32::from(phase == Phase::Compensation),
    )
}

/// The id of the saga log record at `version` (from 1) of the saga correlated by
/// `correlation`: keel-core's [`EventId::record`], the same on every replay.
pub fn record_id(correlation: CorrelationId, version: u64) -> EventId {
    EventId::record(correlation, version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saga_ids_refuse_what_would_need_escaping() {
        for bad in ["", "has space", "slash/", "ünï", &"x".repeat(201)] {
            assert!(SagaId::new(bad).is_err(), "{bad}");
        }
        assert!(SagaId::new("order-42:retry_1.a").is_ok());
    }

    #[test]
    fn a_saga_stream_names_its_saga() {
        let id = SagaId::new("order-42").unwrap();
        assert_eq!(id.stream().as_str(), "saga-order-42");
        assert_eq!(SagaId::from_stream(&id.stream()), Some(id));
        assert_eq!(SagaId::from_stream(&StreamId::from("order-42")), None);
    }

    #[test]
    fn derived_ids_are_stable_and_distinct() {
        let a = SagaId::new("a").unwrap().correlation();
        let b = SagaId::new("b").unwrap().correlation();
        assert_ne!(a, b);
        assert_eq!(a, SagaId::new("a").unwrap().correlation());
        let keys = [
            step_intent_id(a, 0, Phase::Action),
            step_intent_id(a, 0, Phase::Compensation),
            step_intent_id(a, 1, Phase::Action),
            step_intent_id(b, 0, Phase::Action),
        ];
        for (i, x) in keys.iter().enumerate() {
            for y in &keys[i + 1..] {
                assert_ne!(x, y);
            }
        }
        assert_ne!(record_id(a, 1), record_id(a, 2));
        // Pinned: stored ids depend on the derivations never changing.
        let order = SagaId::new("order-42").unwrap().correlation();
        assert_eq!(order.to_string(), "dd33964c-7ff1-1644-965c-20f35f036397");
        assert_eq!(
            step_intent_id(order, 1, Phase::Compensation).to_string(),
            "dd33964c-7ff1-1644-965c-20f35f036397/2811b62f-acc4-896f-9e4f-dfe900502279/0"
        );
        assert_eq!(
            step_intent_id(order, 0, Phase::Action).to_string(),
            "dd33964c-7ff1-1644-965c-20f35f036397/f77e3785-8157-8ecb-88dc-831d8e844d63/0"
        );
        assert_eq!(
            record_id(order, 3).to_string(),
            "31fc20ce-66d8-8bca-8325-829deee88ab7"
        );
    }
}
