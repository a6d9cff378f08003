//! Intents: side effects described as data.
//!
//! A reducer never performs an effect; it returns [`Intent`]s and the effects runtime
//! carries them out. Each intent is plain, serialisable data with a stable
//! [`IntentId`], so tests assert on intents as values and a replay produces the very same
//! intents, ids included.

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::envelope::{Envelope, EventType};
use crate::id::{IntentId, StreamId, TimerId};
use crate::time::Timestamp;
use crate::topic::Topic;

/// One side effect to perform, with the id that makes performing it idempotent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Intent {
    /// Stable id, derived from the step that emitted the intent; the idempotency key.
    pub id: IntentId,
    /// What to do.
    pub kind: IntentKind,
}

/// The families of side effects the runtime knows how to perform.
///
/// Large variants are boxed so that an `Intent` stays small in a reducer's reusable
/// output buffer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum IntentKind {
    /// Publish an envelope on the event bus.
    Notify {
        /// Where to publish; subscribers match it against their patterns.
        topic: Topic,
        /// What to publish.
        envelope: Box<Envelope>,
    },
    /// Publish a request envelope on the bus and wait for its reply: the first envelope
    /// published afterwards with the request's correlation id whose causation id is the
    /// request's id. The reply (or a timeout) comes back as the outcome.
    Request {
        /// Where to publish the request.
        topic: Topic,
        /// The request.
        envelope: Box<Envelope>,
        /// How long to wait for the reply, publishing included.
        timeout_ms: u64,
    },
    /// Append events to a stream of the event store, atomically.
    Persist {
        /// The stream to append to.
        stream: StreamId,
        /// The optimistic-concurrency check the append must pass.
        expected_version: ExpectedVersion,
        /// The events, in order; all are appended or none.
        events: Vec<Envelope>,
    },
    /// Make an HTTP request.
    Http(Box<HttpRequest>),
    /// Start (or restart) a timer; when it fires, the runtime feeds an action back.
    ScheduleTimer {
        /// The timer's name within this reducer instance.
        timer: TimerId,
        /// When it should fire.
        due: Timestamp,
    },
    /// Cancel a pending timer; cancelling one that is not pending does nothing.
    CancelTimer {
        /// The timer's name within this reducer instance.
        timer: TimerId,
    },
    /// An effect of the user's own kind, run by a handler the user registers.
    Custom {
        /// Selects the handler: `inventory.reserve`.
        name: EventType,
        /// The handler's input.
        payload: serde_json::Value,
    },
}

impl IntentKind {
    /// A short lowercase name of the family, for logs and metrics.
    pub fn family(&self) -> &'static str {
        match self {
            Self::Notify { .. } => "notify",
            Self::Request { .. } => "request",
            Self::Persist { .. } => "persist",
            Self::Http(_) => "http",
            Self::ScheduleTimer { .. } => "schedule_timer",
            Self::CancelTimer { .. } => "cancel_timer",
            Self::Custom { .. } => "custom",
        }
    }
}

/// The version a stream must be at for an append to succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExpectedVersion {
    /// No check: append whatever the stream holds.
    Any,
    /// The stream must not exist yet.
    NoStream,
    /// The stream's last event must have exactly this version (versions start at 1).
    Exact(u64),
}

/// An HTTP method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
#[allow(missing_docs)] // The names are the documentation.
pub enum HttpMethod {
    Get,
    Post,
    Put,
    Patch,
    Delete,
    Head,
}

impl HttpMethod {
    /// The method as it appears on the request line.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Get => "GET",
            Self::Post => "POST",
            Self::Put => "PUT",
            Self::Patch => "PATCH",
            Self::Delete => "DELETE",
            Self::Head => "HEAD",
        }
    }
}

impl fmt::Display for HttpMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The body of an HTTP request.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(tag = "type", content = "value", rename_all = "snake_case")]
pub enum HttpBody {
    /// No body.
    #[default]
    Empty,
    /// A JSON document, sent with `Content-Type: application/json`.
    Json(serde_json::Value),
    /// UTF-8 text, sent with `Content-Type: text/plain; charset=utf-8`.
    Text(String),
    /// Raw bytes (base64 in the serialised intent), sent as `application/octet-stream`.
    Bytes(#[serde(with = "crate::base64::serde_bytes")] Vec<u8>),
}

/// The default per-request timeout: long enough for a slow payment provider, short
/// enough that a hung connection does not stall a saga step for minutes.
pub const HTTP_TIMEOUT_MS_DEFAULT: u64 = 10_000;

/// An HTTP request as data.
///
/// ```
/// use keel_core::HttpRequest;
/// use serde_json::json;
/// let charge = HttpRequest::post("http://127.0.0.1:8080/charges")
///     .json(json!({ "order": "order-42", "cents": 4200 }))
///     .header("x-tenant", "acme")
///     .sensitive_header("x-api-key", "k-123")
///     .timeout_ms(2_000);
/// assert_eq!(charge.idempotency_key, None); // the runtime uses the intent id
/// assert!(!format!("{charge:?}").contains("k-123")); // shown as <redacted>
/// ```
///
/// The values of credential headers ([`SENSITIVE_HEADERS`](crate::redact::SENSITIVE_HEADERS)
/// and those in [`sensitive_headers`](Self::sensitive_headers)) are sent as they are, but
/// `Debug` shows them as `<redacted>`, and the effects runtime scrubs them out of failure
/// reasons (see [`redact`](crate::redact)). The serialised intent, which a durable runtime
/// stores to carry it out again after a crash, holds them as they are.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct HttpRequest {
    /// The method.
    pub method: HttpMethod,
    /// The absolute URL.
    pub url: String,
    /// Extra headers, in order; names are case-insensitive on the wire.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: HttpBody,
    /// How long the whole exchange may take.
    pub timeout_ms: u64,
    /// Sent as the `Idempotency-Key` header. `None` means the intent's id, which is what
    /// almost every caller wants: it is stable across retries, redeliveries and replays.
    pub idempotency_key: Option<Cow<'static, str>>,
    /// Names of further headers whose values are credentials (`x-api-key`), redacted like
    /// those of [`SENSITIVE_HEADERS`](crate::redact::SENSITIVE_HEADERS); case-insensitive.
    /// Left out of the serialised intent when empty, so that a request without any
    /// serialises as it did before the field existed, and intents stored then decode.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sensitive_headers: Vec<String>,
}

impl HttpRequest {
    /// A request with no headers, no body and the default timeout.
    pub fn new(method: HttpMethod, url: impl Into<String>) -> Self {
        Self {
            method,
            url: url.into(),
            headers: Vec::new(),
            body: HttpBody::Empty,
            timeout_ms: HTTP_TIMEOUT_MS_DEFAULT,
            idempotency_key: None,
            sensitive_headers: Vec::new(),
        }
    }

    /// A `GET` request.
    pub fn get(url: impl Into<String>) -> Self {
        Self::new(HttpMethod::Get, url)
    }

    /// A `POST` request.
    pub fn post(url: impl Into<String>) -> Self {
        Self::new(HttpMethod::Post, url)
    }

    /// Adds a header.
    #[must_use]
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Adds a header whose value is a credential (an API key, a token): sent as it is,
    /// redacted wherever people read the request (see
    /// [`sensitive_headers`](Self::sensitive_headers)). The headers of
    /// [`SENSITIVE_HEADERS`](crate::redact::SENSITIVE_HEADERS) are redacted without it.
    #[must_use]
    pub fn sensitive_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        let name = name.into();
        if !self.is_sensitive_header(&name) {
            self.sensitive_headers.push(name.clone());
        }
        self.headers.push((name, value.into()));
        self
    }

    /// Sets a JSON body.
    #[must_use]
    pub fn json(mut self, value: serde_json::Value) -> Self {
        self.body = HttpBody::Json(value);
        self
    }

    /// Sets the timeout.
    #[must_use]
    pub fn timeout_ms(mut self, timeout_ms: u64) -> Self {
        self.timeout_ms = timeout_ms;
        self
    }

    /// Overrides the idempotency key (normally the intent id).
    #[must_use]
    pub fn idempotency_key(mut self, key: impl Into<Cow<'static, str>>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }
}

impl From<HttpRequest> for IntentKind {
    fn from(request: HttpRequest) -> Self {
        Self::Http(Box::new(request))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::{CausationId, CorrelationId};

    #[test]
    fn intents_serialise_with_a_kind_tag_and_round_trip() {
        let intent = Intent {
            id: IntentId::new(CorrelationId::from_u128(1), CausationId::from_u128(2), 0),
            kind: IntentKind::ScheduleTimer {
                timer: TimerId::from("payment-timeout"),
                due: Timestamp::from_unix_millis(60_000),
            },
        };
        let json = serde_json::to_value(&intent).unwrap();
        assert_eq!(json["kind"]["kind"], "schedule_timer");
        assert_eq!(json["kind"]["due"], "1970-01-01T00:01:00Z");
        assert_eq!(serde_json::from_value::<Intent>(json).unwrap(), intent);
    }

    #[test]
    fn http_bodies_round_trip_including_bytes() {
        let request = HttpRequest::post("http://127.0.0.1/x").header("a", "b");
        for body in [
            HttpBody::Empty,
            HttpBody::Json(serde_json::json!({"k": [1, 2]})),
            HttpBody::Text("hé".into()),
            HttpBody::Bytes(vec![0, 255, 7]),
        ] {
            let kind = IntentKind::from(HttpRequest {
                body,
                ..request.clone()
            });
            let text = serde_json::to_string(&kind).unwrap();
            assert_eq!(serde_json::from_str::<IntentKind>(&text).unwrap(), kind);
        }
    }

    #[test]
    fn an_intent_stays_small_in_the_output_buffer() {
        // Boxed large variants keep pushes into a reused buffer cheap.
        assert!(
            std::mem::size_of::<Intent>() <= 128,
            "{}",
            std::mem::size_of::<Intent>()
        );
    }
}
