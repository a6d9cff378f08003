//! Keeping an HTTP request's credentials out of what people read.
//!
//! The values of the headers in [`SENSITIVE_HEADERS`], and of those a request names in
//! [`HttpRequest::sensitive_headers`], are credentials. They go on the wire as they are,
//! and into the serialised intent (a durable runtime must be able to send them again
//! after a crash), but nowhere people read: `Debug` of an [`HttpRequest`] (and so of an
//! [`Intent`](crate::Intent) and of everything that holds one: a dead letter, a
//! handed-back intent, a saga step) shows each of their values as [`REDACTED`], and
//! everything else as `derive(Debug)` would.

use std::fmt;

use crate::intent::HttpRequest;

/// Headers whose values are credentials in every request (names compare without regard
/// to case).
pub const SENSITIVE_HEADERS: [&str; 4] = [
    "authorization",
    "cookie",
    "proxy-authorization",
    "set-cookie",
];

/// What stands in for a credential.
pub const REDACTED: &str = "<redacted>";

impl HttpRequest {
    /// Whether the value of header `name` is a credential: `name` is one of
    /// [`SENSITIVE_HEADERS`] or of [`sensitive_headers`](Self::sensitive_headers), in any
    /// case.
    pub fn is_sensitive_header(&self, name: &str) -> bool {
        let name = name.trim();
        let marked = self.sensitive_headers.iter().map(String::as_str);
        SENSITIVE_HEADERS
            .into_iter()
            .chain(marked)
            .any(|sensitive| sensitive.trim().eq_ignore_ascii_case(name))
    }
}

impl fmt::Debug for HttpRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Destructured so that a new field cannot be left out of the output unnoticed.
        let Self {
            method,
            url,
            headers: _,
            body,
            timeout_ms,
            idempotency_key,
            sensitive_headers,
        } = self;
        f.debug_struct("HttpRequest")
            .field("method", method)
            .field("url", url)
            .field("headers", &Headers(self))
            .field("body", body)
            .field("timeout_ms", timeout_ms)
            .field("idempotency_key", idempotency_key)
            .field("sensitive_headers", sensitive_headers)
            .finish()
    }
}

/// A request's headers as `derive(Debug)` shows a `Vec<(String, String)>`, each
/// credential's value replaced by [`REDACTED`].
struct Headers<'a>(&'a HttpRequest);

impl fmt::Debug for Headers<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let request = self.0;
        let shown = request.headers.iter().map(|(name, value)| {
            let value = if request.is_sensitive_header(name) {
                Shown::Redacted
            } else {
                Shown::Value(value)
            };
            (name, value)
        });
        f.debug_list().entries(shown).finish()
    }
}

/// A header value, or what stands in for it.
enum Shown<'a> {
    Value(&'a str),
    Redacted,
}

impl fmt::Debug for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Value(value) => fmt::Debug::fmt(value, f),
            Self::Redacted => f.write_str(REDACTED),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::intent::{HttpMethod, IntentKind};

    fn with_credentials() -> HttpRequest {
        HttpRequest::post("https://api.example.com/charges")
            .header("AUTHORIZATION", "Bearer tok-abc123")
            .header("Cookie", "session=s-456789; theme=dark")
            .header("proxy-authorization", "Basic dXNlcjpwYXNz")
            .header("Set-Cookie", "id=set-cookie-value")
            .sensitive_header("X-Api-Key", "key-7777")
            .header("x-tenant", "acme")
    }

    #[test]
    fn debug_shows_credential_headers_as_redacted_whatever_their_case() {
        let shown = format!("{:?}", with_credentials());
        for secret in [
            "tok-abc123",
            "s-456789",
            "dark",
            "dXNlcjpwYXNz",
            "set-cookie-value",
            "key-7777",
        ] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(
            shown.contains(r#"("AUTHORIZATION", <redacted>)"#)
                && shown.contains(r#"("X-Api-Key", <redacted>)"#)
                && shown.contains(r#"("x-tenant", "acme")"#),
            "{shown}"
        );
        // An intent shows its request the same way, pretty-printed or not.
        let kind = IntentKind::from(with_credentials());
        assert!(!format!("{kind:#?}").contains("tok-abc123"));
    }

    #[test]
    fn debug_shows_everything_else_as_derive_did() {
        let request = HttpRequest::new(HttpMethod::Put, "http://h/x")
            .header("a", "b")
            .header("authorization", "t")
            .timeout_ms(5)
            .idempotency_key("k");
        let expected = concat!(
            r#"HttpRequest { method: Put, url: "http://h/x", "#,
            r#"headers: [("a", "b"), ("authorization", <redacted>)], body: Empty, "#,
            r#"timeout_ms: 5, idempotency_key: Some("k"), sensitive_headers: [] }"#,
        );
        assert_eq!(format!("{request:?}"), expected);
    }

    #[test]
    fn marking_a_header_sensitive_records_its_name_once_and_sends_it_as_it_is() {
        let request = HttpRequest::get("http://h/")
            .sensitive_header("X-Api-Key", "k1")
            .sensitive_header("x-api-key", "k2")
            .sensitive_header("Authorization", "Bearer t");
        assert_eq!(request.sensitive_headers, ["X-Api-Key"]);
        assert_eq!(
            request.headers[0],
            ("X-Api-Key".to_owned(), "k1".to_owned())
        );
        assert!(request.is_sensitive_header(" X-API-KEY "));
        assert!(!request.is_sensitive_header("x-tenant"));
    }

    #[test]
    fn requests_without_marked_headers_serialise_as_before_and_old_intents_decode() {
        let plain = HttpRequest::get("http://h/").header("authorization", "t");
        let json = serde_json::to_value(&plain).unwrap();
        assert!(json.get("sensitive_headers").is_none(), "{json}");
        // As an intent stored before the field existed.
        let stored = r#"{"method":"GET","url":"http://h/","headers":[["authorization","t"]],
            "body":{"type":"empty"},"timeout_ms":10000,"idempotency_key":null}"#;
        assert_eq!(serde_json::from_str::<HttpRequest>(stored).unwrap(), plain);
        let marked = plain.sensitive_header("x-api-key", "k");
        let text = serde_json::to_string(&marked).unwrap();
        assert_eq!(serde_json::from_str::<HttpRequest>(&text).unwrap(), marked);
    }
}
