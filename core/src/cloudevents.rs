//! Envelopes as CloudEvents 1.0 structured JSON, both ways, without loss.
//!
//! | envelope field   | CloudEvents attribute                         |
//! |------------------|-----------------------------------------------|
//! | `id`             | `id` (a UUID)                                 |
//! | `event_type`     | `type`                                        |
//! | `source`         | `source`                                      |
//! | `time`           | `time` (RFC 3339, UTC)                        |
//! | `subject`        | `subject`                                     |
//! | `correlation_id` | extension `correlationid` (absent: = `id`)    |
//! | `causation_id`   | extension `causationid`                       |
//! | `target`         | extension `target`                            |
//! | `sequence`       | extension `sequence` (decimal string)         |
//! | `schema_version` | extension `schemaversion` (absent: 1)         |
//! | `priority`       | extension `priority` (absent: `normal`)       |
//! | `metadata`       | one extension attribute per entry; `datacontenttype` and `dataschema` travel here too |
//! | `payload`        | `data` (JSON; absent when `null`) or `data_base64` (binary) |
//!
//! Encoding then decoding gives back the same envelope. Decoding a foreign event and
//! encoding it again keeps every attribute; it only adds the keel extensions with their
//! defaults and writes `time` in UTC.
//!
//! Decoding never panics and never trusts its input: the whole text and the payload are
//! bounded by [`DecodeLimits`], and every problem is an [`Error`] naming the field.

use std::collections::BTreeMap;
use std::io;

use serde_json::{Map, Value};

use crate::base64;
use crate::envelope::{Envelope, EventType, MetaValue, Payload, Priority, check_metadata_key};
use crate::error::Error;
use crate::id::{CausationId, CorrelationId, EventId};
use crate::time::Timestamp;

/// The default bound on a payload: 1 MiB. Larger data belongs in a blob store, with a
/// reference in the envelope.
pub const PAYLOAD_BYTES_MAX_DEFAULT: usize = 1 << 20;

/// Room allowed for the attributes around the payload.
pub const ATTRIBUTES_BYTES_MAX: usize = 64 << 10;

/// Bounds applied while decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// The largest payload accepted, measured as compact JSON for `data` and as decoded
    /// bytes for `data_base64`.
    pub payload_bytes_max: usize,
    /// The largest encoded envelope accepted, checked before parsing.
    pub envelope_bytes_max: usize,
}

impl DecodeLimits {
    /// Limits for payloads of at most `payload_bytes_max` bytes, with room for the
    /// attributes and for base64's expansion.
    pub const fn with_payload_bytes_max(payload_bytes_max: usize) -> Self {
        Self {
            payload_bytes_max,
            envelope_bytes_max: payload_bytes_max
                .saturating_add(payload_bytes_max / 3)
                .saturating_add(ATTRIBUTES_BYTES_MAX),
        }
    }
}

impl Default for DecodeLimits {
    fn default() -> Self {
        Self::with_payload_bytes_max(PAYLOAD_BYTES_MAX_DEFAULT)
    }
}

impl Envelope {
    /// The envelope as a CloudEvents 1.0 JSON object.
    pub fn to_cloudevent(&self) -> Value {
        let mut event = Map::new();
        let mut put = |key: &str, value: Value| {
            event.insert(key.to_owned(), value);
        };
        put("specversion", "1.0".into());
        put("id", self.id.to_string().into());
        put("type", self.event_type.as_str().into());
        put("source", self.source.clone().into());
        put("time", self.time.to_string().into());
        if let Some(subject) = &self.subject {
            put("subject", subject.clone().into());
        }
        put("correlationid", self.correlation_id.to_string().into());
        if let Some(causation) = self.causation_id {
            put("causationid", causation.to_string().into());
        }
        if let Some(target) = &self.target {
            put("target", target.clone().into());
        }
        // The CloudEvents `sequence` extension is a string.
        put("sequence", self.sequence.to_string().into());
        put("schemaversion", self.schema_version.into());
        put("priority", self.priority.as_str().into());
        for (key, value) in &self.metadata {
            put(key, meta_to_json(value));
        }
        match &self.payload {
            Payload::Json(Value::Null) => {}
            Payload::Json(data) => put("data", data.clone()),
            Payload::Binary(bytes) => put("data_base64", base64::encode(bytes).into()),
        }
        Value::Object(event)
    }

    /// The envelope as CloudEvents 1.0 structured JSON text.
    pub fn to_cloudevent_json(&self) -> String {
        self.to_cloudevent().to_string()
    }

    /// Decodes CloudEvents 1.0 structured JSON, within `limits`.
    ///
    /// ```
    /// use keel_core::{Envelope, Error, cloudevents::DecodeLimits};
    /// let text = br#"{"specversion":"1.0","id":"67e55044-10b1-426f-9247-bb680e5fe0c8",
    ///     "type":"Order.Placed","source":"shop","time":"2026-11-23T06:34:49Z"}"#;
    /// let error = Envelope::from_cloudevent_slice(text, &DecodeLimits::default()).unwrap_err();
    /// assert!(matches!(error, Error::InvalidField { field: "type", .. }));
    /// ```
    pub fn from_cloudevent_slice(bytes: &[u8], limits: &DecodeLimits) -> Result<Self, Error> {
        if bytes.len() > limits.envelope_bytes_max {
            return Err(Error::TooLarge {
                field: "envelope",
                size_bytes: bytes.len(),
                limit_bytes: limits.envelope_bytes_max,
            });
        }
        let value: Value = serde_json::from_slice(bytes).map_err(|e| Error::Malformed {
            reason: e.to_string(),
        })?;
        Self::from_cloudevent(value, limits)
    }

    /// Decodes a CloudEvents 1.0 JSON object already parsed, within `limits`.
    pub fn from_cloudevent(value: Value, limits: &DecodeLimits) -> Result<Self, Error> {
        let Value::Object(mut event) = value else {
            return Err(Error::Malformed {
                reason: "expected a JSON object".into(),
            });
        };
        // The JSON format treats an attribute whose value is null as absent.
        event.retain(|_, value| !value.is_null());

        match take_string(&mut event, "specversion")?.as_deref() {
            Some("1.0") => {}
            Some(other) => {
                return Err(invalid(
                    "specversion",
                    format!("`{}` is not supported; use `1.0`", clip(other)),
                ));
            }
            None => {
                return Err(Error::MissingField {
                    field: "specversion",
                });
            }
        }
        let id: EventId = required_string(&mut event, "id")?
            .parse()
            .map_err(|_| invalid("id", "must be a UUID".into()))?;
        let event_type =
            EventType::new(required_string(&mut event, "type")?).map_err(|e| match e {
                Error::InvalidEventType { reason, .. } => invalid(
                    "type",
                    format!("must be lowercase dotted segments: {reason}"),
                ),
                other => other,
            })?;
        let source = required_string(&mut event, "source")?;
        let time: Timestamp = required_string(&mut event, "time")?
            .parse()
            .map_err(|e: Error| invalid("time", e.to_string()))?;
        let subject = take_string(&mut event, "subject")?;
        let correlation_id = match take_string(&mut event, "correlationid")? {
            Some(text) => text
                .parse::<CorrelationId>()
                .map_err(|_| invalid("correlationid", "must be a UUID".into()))?,
            None => CorrelationId::new(id.uuid()),
        };
        let causation_id = take_string(&mut event, "causationid")?
            .map(|text| {
                text.parse::<CausationId>()
                    .map_err(|_| invalid("causationid", "must be a UUID".into()))
            })
            .transpose()?;
        let target = take_string(&mut event, "target")?;
        let sequence = match event.remove("sequence") {
            None => 0,
            Some(Value::String(text)) if is_decimal(&text) => text
                .parse()
                .map_err(|_| invalid("sequence", "must fit in 64 bits".into()))?,
            Some(Value::Number(n)) if n.as_u64().is_some() => n.as_u64().unwrap_or_default(),
            Some(_) => {
                return Err(invalid(
                    "sequence",
                    "must be a non-negative decimal integer".into(),
                ));
            }
        };
        let schema_version = match event.remove("schemaversion") {
            None => 1,
            Some(value) => value
                .as_u64()
                .and_then(|v| u32::try_from(v).ok())
                .filter(|v| *v >= 1)
                .ok_or_else(|| invalid("schemaversion", "must be an integer from 1".into()))?,
        };
        let priority = match take_string(&mut event, "priority")? {
            None => Priority::Normal,
            Some(text) => Priority::parse(&text).ok_or_else(|| {
                invalid(
                    "priority",
                    format!("`{}` is unknown; use low, normal or high", clip(&text)),
                )
            })?,
        };
        let payload = match (event.remove("data"), event.remove("data_base64")) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "data_base64",
                    "an event carries `data` or `data_base64`, not both".into(),
                ));
            }
            (Some(data), None) => {
                let size_bytes = json_len(&data);
                check_size("data", size_bytes, limits)?;
                Payload::Json(data)
            }
            (None, Some(Value::String(text))) => {
                let bytes = base64::decode(&text).ok_or_else(|| {
                    invalid("data_base64", "must be padded standard base64".into())
                })?;
                check_size("data_base64", bytes.len(), limits)?;
                Payload::Binary(bytes)
            }
            (None, Some(_)) => return Err(invalid("data_base64", "must be a string".into())),
            (None, None) => Payload::Json(Value::Null),
        };

        let mut metadata = BTreeMap::new();
        for (key, value) in event {
            check_metadata_key(&key)?;
            let value = meta_from_json(value).ok_or_else(|| {
                invalid(
                    "metadata",
                    format!(
                        "attribute `{}` must be a string, an integer or a boolean",
                        clip(&key)
                    ),
                )
            })?;
            metadata.insert(key, value);
        }

        let envelope = Envelope {
            id,
            event_type,
            source,
            target,
            time,
            correlation_id,
            causation_id,
            subject,
            sequence,
            schema_version,
            priority,
            metadata,
            payload,
        };
        envelope.validate()?;
        Ok(envelope)
    }
}

fn invalid(field: &'static str, reason: String) -> Error {
    Error::InvalidField { field, reason }
}

/// At most 64 characters of foreign text, so an error message stays bounded.
fn clip(text: &str) -> String {
    text.chars().take(64).collect()
}

fn is_decimal(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit())
}

fn take_string(
    event: &mut Map<String, Value>,
    field: &'static str,
) -> Result<Option<String>, Error> {
    match event.remove(field) {
        None => Ok(None),
        Some(Value::String(text)) => Ok(Some(text)),
        Some(_) => Err(invalid(field, "must be a string".into())),
    }
}

fn required_string(event: &mut Map<String, Value>, field: &'static str) -> Result<String, Error> {
    take_string(event, field)?.ok_or(Error::MissingField { field })
}

fn check_size(field: &'static str, size_bytes: usize, limits: &DecodeLimits) -> Result<(), Error> {
    if size_bytes > limits.payload_bytes_max {
        return Err(Error::TooLarge {
            field,
            size_bytes,
            limit_bytes: limits.payload_bytes_max,
        });
    }
    Ok(())
}

fn meta_to_json(value: &MetaValue) -> Value {
    match value {
        MetaValue::Bool(flag) => Value::Bool(*flag),
        MetaValue::Integer(n) => Value::from(*n),
        MetaValue::Text(text) => Value::String(text.clone()),
    }
}

fn meta_from_json(value: Value) -> Option<MetaValue> {
    match value {
        Value::Bool(flag) => Some(MetaValue::Bool(flag)),
        Value::Number(n) => n.as_i64().map(MetaValue::Integer),
        Value::String(text) => Some(MetaValue::Text(text)),
        _ => None,
    }
}

/// The length of `value` as compact JSON, counted without building the text.
fn json_len(value: &Value) -> usize {
    struct Counter(usize);
    impl io::Write for Counter {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0 += bytes.len();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    // Writing a `Value` into an infallible sink cannot fail: it has only string keys.
    let _ = serde_json::to_writer(&mut counter, value);
    counter.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn decode(value: Value) -> Result<Envelope, Error> {
        Envelope::from_cloudevent(value, &DecodeLimits::default())
    }

    fn minimal() -> Value {
        json!({
            "specversion": "1.0",
            "id": "67e55044-10b1-426f-9247-bb680e5fe0c8",
            "type": "order.placed",
            "source": "shop",
            "time": "2026-11-23T06:34:49Z",
        })
    }

    #[test]
    fn a_minimal_foreign_event_decodes_with_defaults() {
        let envelope = decode(minimal()).unwrap();
        assert_eq!(envelope.correlation_id.uuid(), envelope.id.uuid());
        assert_eq!((envelope.sequence, envelope.schema_version), (0, 1));
        assert_eq!(envelope.priority, Priority::Normal);
        assert_eq!(envelope.payload, Payload::Json(Value::Null));
    }

    #[test]
    fn each_missing_required_field_is_named() {
        for field in ["specversion", "id", "type", "source", "time"] {
            let mut event = minimal();
            event.as_object_mut().unwrap().remove(field);
            assert_eq!(decode(event), Err(Error::MissingField { field }), "{field}");
        }
    }

    #[test]
    fn bad_values_are_named() {
        let cases = [
            ("specversion", json!("0.3")),
            ("id", json!("not-a-uuid")),
            ("type", json!("Order Placed")),
            ("source", json!("")),
            ("time", json!("yesterday")),
            ("priority", json!("urgent")),
            ("sequence", json!(-1)),
            ("schemaversion", json!(0)),
            ("correlationid", json!(5)),
        ];
        for (field, value) in cases {
            let mut event = minimal();
            event[field] = value;
            match decode(event) {
                Err(Error::InvalidField { field: named, .. }) => assert_eq!(named, field),
                other => panic!("{field}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_payload_over_the_limit_is_refused() {
        let limits = DecodeLimits::with_payload_bytes_max(16);
        let mut event = minimal();
        event["data"] = json!("x".repeat(32));
        let error = Envelope::from_cloudevent(event, &limits).unwrap_err();
        assert!(matches!(error, Error::TooLarge { field: "data", .. }));
    }

    #[test]
    fn binary_payloads_travel_as_base64() {
        let mut event = minimal();
        event["data_base64"] = json!("AAEC");
        event["datacontenttype"] = json!("application/octet-stream");
        let envelope = decode(event.clone()).unwrap();
        assert_eq!(envelope.payload, Payload::Binary(vec![0, 1, 2]));
        let again = envelope.to_cloudevent();
        assert_eq!(again["data_base64"], "AAEC");
        assert_eq!(again["datacontenttype"], "application/octet-stream");
    }

    #[test]
    fn unknown_extensions_survive_a_round_trip() {
        let mut event = minimal();
        event["tenant"] = json!("acme");
        event["retries"] = json!(3);
        event["urgent"] = json!(true);
        let again = decode(event).unwrap().to_cloudevent();
        assert_eq!(
            (&again["tenant"], &again["retries"], &again["urgent"]),
            (&json!("acme"), &json!(3), &json!(true))
        );
    }
}
