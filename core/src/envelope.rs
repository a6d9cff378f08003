//! Envelopes: the one shape in which events and commands travel.
//!
//! An [`Envelope`] carries the routing and tracing attributes of a message (id, type,
//! source, correlation and causation ids, subject, sequence, schema version, priority,
//! metadata) around a payload that is either typed (`Envelope<OrderPlaced>`) or generic
//! JSON (`Envelope<Payload>`, the default). It maps to and from CloudEvents 1.0; see
//! [`cloudevents`](crate::cloudevents).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};

use crate::error::Error;
use crate::id::{CausationId, CorrelationId, EventId};
use crate::time::Timestamp;

/// The longest event type or topic accepted, in bytes.
pub const EVENT_TYPE_BYTES_MAX: usize = 255;

/// An event or command type: lowercase dotted segments such as `order.payment.completed`.
///
/// Each segment is non-empty, starts with `a-z` or `0-9` and holds only `a-z`, `0-9`, `_`
/// and `-`. Parsing checks this once, so a value of this type is always valid.
///
/// ```
/// use keel_core::EventType;
/// assert!(EventType::new("order.payment.completed").is_ok());
/// assert!(EventType::new("Order.Placed").is_err());
/// assert!(EventType::new("order..placed").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct EventType(Cow<'static, str>);

impl EventType {
    /// Parses an event type, or says which rule it breaks.
    pub fn new(value: impl Into<Cow<'static, str>>) -> Result<Self, Error> {
        let value = value.into();
        match check_dotted(&value) {
            Ok(()) => Ok(Self(value)),
            Err(reason) => Err(Error::InvalidEventType {
                value: value.chars().take(EVENT_TYPE_BYTES_MAX).collect(),
                reason,
            }),
        }
    }

    /// An event type written as a literal in code; no allocation.
    ///
    /// # Panics
    /// If the literal breaks the rules of [`EventType`]: a programming error that the
    /// first test run catches. Use [`EventType::new`] for text from outside.
    pub fn from_static(value: &'static str) -> Self {
        match check_dotted(value) {
            Ok(()) => Self(Cow::Borrowed(value)),
            Err(reason) => panic!("invalid event type literal `{value}`: {reason}"),
        }
    }

    /// The type as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The dot-separated segments.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split('.')
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for EventType {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Self::new(String::deserialize(deserializer)?).map_err(serde::de::Error::custom)
    }
}

/// Checks the lowercase-dotted-segments rule shared by event types and topics.
pub(crate) fn check_dotted(value: &str) -> Result<(), &'static str> {
    if value.is_empty() {
        return Err("it is empty");
    }
    if value.len() > EVENT_TYPE_BYTES_MAX {
        return Err("it is longer than 255 bytes");
    }
    for segment in value.split('.') {
        let bytes = segment.as_bytes();
        let Some(first) = bytes.first() else {
            return Err("a segment is empty");
        };
        if !(first.is_ascii_lowercase() || first.is_ascii_digit()) {
            return Err("a segment must start with a-z or 0-9");
        }
        let allowed =
            |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-');
        if !bytes.iter().all(allowed) {
            return Err("only a-z, 0-9, `_` and `-` may appear in a segment");
        }
    }
    Ok(())
}

/// How urgently an envelope should be delivered when a consumer is behind.
///
/// Delivery order within one priority is arrival order; a `High` envelope overtakes
/// queued `Normal` and `Low` ones.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    /// Background work: reports, projections that may lag.
    Low,
    /// The default.
    #[default]
    Normal,
    /// Work a person is waiting on: approvals, cancellations, alarms.
    High,
}

impl Priority {
    /// The lowercase name used on the wire.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::Normal => "normal",
            Self::High => "high",
        }
    }

    /// Parses the wire name; `None` for anything else.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "low" => Some(Self::Low),
            "normal" => Some(Self::Normal),
            "high" => Some(Self::High),
            _ => None,
        }
    }
}

/// A metadata value: the scalar kinds that CloudEvents extension attributes can hold.
///
/// As JSON it is the bare value (`true`, `42`, `"text"`). It is read with one visitor
/// rather than serde's `untagged`, which tries each variant in turn and formats an
/// error message for each miss: that cost a recovery reading marked records a quarter
/// of its time.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(untagged)]
pub enum MetaValue {
    /// A boolean flag.
    Bool(bool),
    /// An integer.
    Integer(i64),
    /// Text.
    Text(String),
}

impl<'de> Deserialize<'de> for MetaValue {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Scalar;

        impl serde::de::Visitor<'_> for Scalar {
            type Value = MetaValue;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a boolean, an integer or a string")
            }

            fn visit_bool<E: serde::de::Error>(self, value: bool) -> Result<MetaValue, E> {
                Ok(MetaValue::Bool(value))
            }

            fn visit_i64<E: serde::de::Error>(self, value: i64) -> Result<MetaValue, E> {
                Ok(MetaValue::Integer(value))
            }

            fn visit_u64<E: serde::de::Error>(self, value: u64) -> Result<MetaValue, E> {
                i64::try_from(value)
                    .map(MetaValue::Integer)
                    .map_err(|_| E::invalid_value(serde::de::Unexpected::Unsigned(value), &self))
            }

            fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<MetaValue, E> {
                Ok(MetaValue::Text(value.to_owned()))
            }

            fn visit_string<E: serde::de::Error>(self, value: String) -> Result<MetaValue, E> {
                Ok(MetaValue::Text(value))
            }
        }

        deserializer.deserialize_any(Scalar)
    }
}

impl From<&str> for MetaValue {
    fn from(value: &str) -> Self {
        Self::Text(value.to_owned())
    }
}

impl From<String> for MetaValue {
    fn from(value: String) -> Self {
        Self::Text(value)
    }
}

impl From<i64> for MetaValue {
    fn from(value: i64) -> Self {
        Self::Integer(value)
    }
}

impl From<bool> for MetaValue {
    fn from(value: bool) -> Self {
        Self::Bool(value)
    }
}

/// The longest metadata key accepted: CloudEvents advises at most 20 characters for
/// extension attribute names, and metadata travels as extension attributes.
pub const METADATA_KEY_CHARS_MAX: usize = 20;

/// Attribute names that metadata keys may not take, because the envelope or CloudEvents
/// already gives them a meaning. `datacontenttype` and `dataschema` are deliberately
/// absent: they travel through metadata unchanged.
pub const RESERVED_ATTRIBUTES: [&str; 13] = [
    "specversion",
    "id",
    "type",
    "source",
    "subject",
    "time",
    "data",
    "correlationid",
    "causationid",
    "target",
    "sequence",
    "schemaversion",
    "priority",
];

/// Checks a metadata key: `a-z` and `0-9` only, 1 to 20 characters, not reserved.
pub(crate) fn check_metadata_key(key: &str) -> Result<(), Error> {
    let reason = if key.is_empty() || key.len() > METADATA_KEY_CHARS_MAX {
        "metadata keys are 1 to 20 characters"
    } else if !key
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    {
        "metadata keys hold only a-z and 0-9, as CloudEvents extension names must"
    } else if RESERVED_ATTRIBUTES.contains(&key) || key == "data_base64" {
        "that name is reserved for an envelope attribute"
    } else {
        return Ok(());
    };
    Err(Error::InvalidField {
        field: "metadata",
        reason: format!(
            "key `{}`: {reason}",
            key.chars().take(40).collect::<String>()
        ),
    })
}

/// A payload whose type is known only at run time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Payload {
    /// JSON data; `Null` when the envelope carries no data.
    Json(serde_json::Value),
    /// Opaque bytes, carried as `data_base64` in CloudEvents.
    Binary(#[serde(with = "crate::base64::serde_bytes")] Vec<u8>),
}

impl Default for Payload {
    fn default() -> Self {
        Self::Json(serde_json::Value::Null)
    }
}

impl From<serde_json::Value> for Payload {
    fn from(value: serde_json::Value) -> Self {
        Self::Json(value)
    }
}

/// An event or a command with its routing and tracing attributes.
///
/// `P` is the payload: a domain type for typed code, or [`Payload`] (the default) for
/// code that routes without looking inside. Build one with [`Envelope::builder`]; derive
/// a follow-up with [`EnvelopeBuilder::caused_by`], which carries the correlation id over
/// and sets the causation id to the parent's id.
///
/// ```
/// use keel_core::{Envelope, EventId, EventType, Payload, Timestamp};
/// use serde_json::json;
///
/// let placed = Envelope::builder(
///     EventId::from_u128(1),
///     EventType::new("order.placed")?,
///     "shop",
///     Timestamp::from_unix_millis(1_700_000_000_000),
/// )
/// .subject("order-42")
/// .payload(Payload::Json(json!({ "total_cents": 4200 })))
/// .build()?;
///
/// let charged = Envelope::builder(
///     EventId::from_u128(2),
///     EventType::new("order.payment.completed")?,
///     "payments",
///     Timestamp::from_unix_millis(1_700_000_000_500),
/// )
/// .caused_by(&placed)
/// .build()?;
///
/// assert_eq!(charged.correlation_id, placed.correlation_id);
/// assert_eq!(charged.causation_id, Some(placed.id.into()));
/// # Ok::<(), keel_core::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope<P = Payload> {
    /// Unique id of this envelope.
    pub id: EventId,
    /// What happened or what is asked: `order.payment.completed`.
    #[serde(rename = "type")]
    pub event_type: EventType,
    /// Who produced it: a service name or URI reference.
    pub source: String,
    /// Who it is addressed to, for commands and requests.
    pub target: Option<String>,
    /// When it was produced, as stated by the producer.
    pub time: Timestamp,
    /// The business transaction it belongs to.
    pub correlation_id: CorrelationId,
    /// The envelope that directly caused it; `None` for the first of a transaction.
    pub causation_id: Option<CausationId>,
    /// The aggregate or saga it is about: `order-42`.
    pub subject: Option<String>,
    /// Its position in the subject's stream; `0` when it has none.
    pub sequence: u64,
    /// The payload's schema version, from 1; upcasters lift old versions.
    pub schema_version: u32,
    /// Delivery urgency.
    pub priority: Priority,
    /// Further attributes, carried as CloudEvents extension attributes.
    pub metadata: BTreeMap<String, MetaValue>,
    /// The data.
    pub payload: P,
}

impl Envelope {
    /// Starts an envelope; the four arguments are the ones no envelope can lack.
    ///
    /// The correlation id defaults to the envelope's own id (the start of a new
    /// transaction), the schema version to 1, the priority to normal, the payload to JSON
    /// `null`; [`EnvelopeBuilder::payload`] sets a payload of any type.
    pub fn builder(
        id: EventId,
        event_type: EventType,
        source: impl Into<String>,
        time: Timestamp,
    ) -> EnvelopeBuilder {
        EnvelopeBuilder {
            envelope: Envelope {
                id,
                event_type,
                source: source.into(),
                target: None,
                time,
                correlation_id: CorrelationId(id.0),
                causation_id: None,
                subject: None,
                sequence: 0,
                schema_version: 1,
                priority: Priority::Normal,
                metadata: BTreeMap::new(),
                payload: Payload::default(),
            },
        }
    }
}

impl<P> Envelope<P> {
    /// The same envelope with its payload replaced by `f(payload)`.
    pub fn map_payload<Q>(self, f: impl FnOnce(P) -> Q) -> Envelope<Q> {
        Envelope {
            id: self.id,
            event_type: self.event_type,
            source: self.source,
            target: self.target,
            time: self.time,
            correlation_id: self.correlation_id,
            causation_id: self.causation_id,
            subject: self.subject,
            sequence: self.sequence,
            schema_version: self.schema_version,
            priority: self.priority,
            metadata: self.metadata,
            payload: f(self.payload),
        }
    }

    /// Checks the attributes a builder or decoder could not check by type alone.
    pub fn validate(&self) -> Result<(), Error> {
        if self.source.is_empty() {
            return Err(Error::InvalidField {
                field: "source",
                reason: "it is empty; name the producing service".into(),
            });
        }
        if self.schema_version == 0 {
            return Err(Error::InvalidField {
                field: "schemaversion",
                reason: "schema versions start at 1".into(),
            });
        }
        self.metadata
            .keys()
            .try_for_each(|key| check_metadata_key(key))
    }
}

impl<P: Serialize> Envelope<P> {
    /// The same envelope with its payload as JSON, ready for routing and storage.
    pub fn to_json_payload(&self) -> Result<Envelope<Payload>, Error>
    where
        P: Clone,
    {
        let value = serde_json::to_value(&self.payload).map_err(|e| Error::InvalidField {
            field: "data",
            reason: e.to_string(),
        })?;
        Ok(self.clone().map_payload(|_| Payload::Json(value)))
    }
}

impl Envelope<Payload> {
    /// The same envelope with its JSON payload decoded into `T`.
    pub fn decode_payload<T: DeserializeOwned>(self) -> Result<Envelope<T>, Error> {
        let value = match &self.payload {
            Payload::Json(value) => T::deserialize(value),
            Payload::Binary(_) => {
                return Err(Error::InvalidField {
                    field: "data",
                    reason: "the payload is binary, not JSON".into(),
                });
            }
        };
        let decoded = value.map_err(|e| Error::InvalidField {
            field: "data",
            reason: e.to_string(),
        })?;
        Ok(self.map_payload(|_| decoded))
    }
}

/// Builds an [`Envelope`]; see [`Envelope::builder`].
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct EnvelopeBuilder<P = Payload> {
    envelope: Envelope<P>,
}

impl<P> EnvelopeBuilder<P> {
    /// Continues the transaction of `parent`: same correlation id, causation id = the
    /// parent's id.
    pub fn caused_by<Q>(mut self, parent: &Envelope<Q>) -> Self {
        self.envelope.correlation_id = parent.correlation_id;
        self.envelope.causation_id = Some(parent.id.into());
        self
    }

    /// Sets the correlation id explicitly (for the first envelope of a transaction whose
    /// id was chosen elsewhere).
    pub fn correlation_id(mut self, id: CorrelationId) -> Self {
        self.envelope.correlation_id = id;
        self
    }

    /// Sets the causation id explicitly.
    pub fn causation_id(mut self, id: CausationId) -> Self {
        self.envelope.causation_id = Some(id);
        self
    }

    /// Addresses the envelope to a service.
    pub fn target(mut self, target: impl Into<String>) -> Self {
        self.envelope.target = Some(target.into());
        self
    }

    /// Names the aggregate or saga the envelope is about.
    pub fn subject(mut self, subject: impl Into<String>) -> Self {
        self.envelope.subject = Some(subject.into());
        self
    }

    /// Sets the position in the subject's stream.
    pub fn sequence(mut self, sequence: u64) -> Self {
        self.envelope.sequence = sequence;
        self
    }

    /// Sets the payload's schema version (from 1).
    pub fn schema_version(mut self, version: u32) -> Self {
        self.envelope.schema_version = version;
        self
    }

    /// Sets the delivery priority.
    pub fn priority(mut self, priority: Priority) -> Self {
        self.envelope.priority = priority;
        self
    }

    /// Adds a metadata attribute; the key is checked by [`build`](Self::build).
    pub fn meta(mut self, key: impl Into<String>, value: impl Into<MetaValue>) -> Self {
        self.envelope.metadata.insert(key.into(), value.into());
        self
    }

    /// Sets the payload, which may change the payload's type.
    pub fn payload<Q>(self, payload: Q) -> EnvelopeBuilder<Q> {
        EnvelopeBuilder {
            envelope: self.envelope.map_payload(|_| payload),
        }
    }

    /// Finishes the envelope, checking the source, schema version and metadata keys.
    pub fn build(self) -> Result<Envelope<P>, Error> {
        self.envelope.validate()?;
        Ok(self.envelope)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> EnvelopeBuilder {
        Envelope::builder(
            EventId::from_u128(1),
            EventType::from_static("order.placed"),
            "shop",
            Timestamp::UNIX_EPOCH,
        )
    }

    #[test]
    fn a_root_envelope_correlates_to_itself() {
        let envelope = root().build().unwrap();
        assert_eq!(envelope.correlation_id.uuid(), envelope.id.uuid());
        assert_eq!(envelope.causation_id, None);
    }

    #[test]
    fn event_types_must_be_lowercase_dotted_segments() {
        for good in ["order", "order.placed", "a.b-c.d_e.9"] {
            assert!(EventType::new(good).is_ok(), "{good}");
        }
        for bad in [
            "", ".", "order.", ".order", "Order", "order..x", "or der", "_x", "x.-y",
        ] {
            assert!(EventType::new(bad).is_err(), "{bad:?}");
        }
        assert!(EventType::new("a".repeat(256)).is_err());
    }

    #[test]
    fn a_metadata_value_reads_back_as_the_bare_json_it_writes() {
        for value in [
            MetaValue::Bool(true),
            MetaValue::Integer(-7),
            MetaValue::Integer(i64::MAX),
            MetaValue::Text("saga".into()),
            MetaValue::Text("true".into()),
        ] {
            let json = serde_json::to_string(&value).unwrap();
            assert_eq!(
                serde_json::from_str::<MetaValue>(&json).unwrap(),
                value,
                "{json}"
            );
        }
        for bad in ["1.5", "[]", "{}", "null", "18446744073709551615"] {
            assert!(serde_json::from_str::<MetaValue>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn metadata_keys_follow_cloudevents_extension_rules() {
        assert!(root().meta("tenant", "acme").build().is_ok());
        assert!(root().meta("datacontenttype", "text/plain").build().is_ok());
        for bad in [
            "",
            "Tenant",
            "ten-ant",
            "priority",
            "averyveryverylongkey123",
        ] {
            let err = root().meta(bad, "x").build().unwrap_err();
            assert!(
                matches!(
                    err,
                    Error::InvalidField {
                        field: "metadata",
                        ..
                    }
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn an_empty_source_is_refused() {
        let err = Envelope::builder(
            EventId::from_u128(1),
            EventType::from_static("a"),
            "",
            Timestamp::UNIX_EPOCH,
        )
        .build()
        .unwrap_err();
        assert!(matches!(
            err,
            Error::InvalidField {
                field: "source",
                ..
            }
        ));
    }
}
