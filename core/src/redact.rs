//! Keeping an HTTP request's credentials out of what people read.
//!
//! The values of the headers in [`SENSITIVE_HEADERS`], and of those a request names in
//! [`HttpRequest::sensitive_headers`], are credentials. They go on the wire as they are,
//! and into the serialised intent (a durable runtime must be able to send them again
//! after a crash), but nowhere people read:
//!
//! - `Debug` of an [`HttpRequest`] (and so of an [`Intent`](crate::Intent) and of
//!   everything that holds one: a dead letter, a handed-back intent, a saga step) shows
//!   each of their values as [`REDACTED`], and everything else as `derive(Debug)` would;
//! - [`HttpRequest::scrub`] takes them out of text that may quote them back, like the
//!   body of a server's `401` that echoes the `Authorization` it was sent.

use std::borrow::Cow;
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

/// The shortest word of a credential scrubbed on its own. Shorter words (`a=1`, a
/// `nc=01` of Digest) guard nothing worth hiding, and replacing each of their
/// occurrences would garble the text; the whole value is scrubbed whatever its length.
const WORD_BYTES_MIN: usize = 4;

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

    /// `text` with this request's credentials replaced by [`REDACTED`]: the value of each
    /// sensitive header, and each word of it (split at spaces, commas and semicolons, and
    /// the value of a `name=value` word) but the scheme of `Bearer <token>`, since a server
    /// may quote back only the token or one cookie. Words under 4 bytes are left.
    ///
    /// ```
    /// use keel_core::HttpRequest;
    /// let request = HttpRequest::get("https://api.example.com/me")
    ///     .header("Authorization", "Bearer tok-9f8e7d");
    /// let body = r#"{"error":"token tok-9f8e7d expired"}"#;
    /// assert_eq!(request.scrub(body), r#"{"error":"token <redacted> expired"}"#);
    /// ```
    pub fn scrub<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut hidden: Vec<(usize, usize)> = self
            .secrets()
            .into_iter()
            .flat_map(|secret| text.match_indices(secret))
            .map(|(start, found)| (start, start + found.len()))
            .collect();
        if hidden.is_empty() {
            return Cow::Borrowed(text);
        }
        hidden.sort_unstable();
        let mut scrubbed = String::with_capacity(text.len());
        // Ranges start at and end on character boundaries: each is a match of a `&str`.
        let mut shown_from = 0;
        for (start, end) in hidden {
            if start >= shown_from {
                scrubbed.push_str(&text[shown_from..start]);
                scrubbed.push_str(REDACTED);
            }
            // Overlapping matches (a word inside the whole value) make one redaction.
            shown_from = shown_from.max(end);
        }
        scrubbed.push_str(&text[shown_from..]);
        Cow::Owned(scrubbed)
    }

    /// The length of the longest text [`scrub`](Self::scrub) replaces, in bytes: a reader
    /// that cuts text at a limit reads this much more first, so that a credential
    /// straddling the cut is still recognised and replaced rather than shown in part.
    pub fn secret_bytes_max(&self) -> usize {
        self.secrets().into_iter().map(str::len).max().unwrap_or(0)
    }

    /// Everything [`scrub`](Self::scrub) replaces.
    fn secrets(&self) -> Vec<&str> {
        let mut secrets = Vec::new();
        let values = self
            .headers
            .iter()
            .filter(|(name, _)| self.is_sensitive_header(name))
            .map(|(_, value)| value.trim())
            .filter(|value| !value.is_empty());
        for value in values {
            secrets.push(value);
            let words: Vec<&str> = value
                .split(|c: char| c.is_ascii_whitespace() || c == ',' || c == ';')
                .filter(|word| !word.is_empty())
                .collect();
            for (index, word) in words.iter().enumerate() {
                // `Bearer <token>`, `Basic <credentials>`: the scheme is not a secret.
                let scheme = index == 0 && words.len() > 1;
                if scheme && word.bytes().all(|b| b.is_ascii_alphabetic()) {
                    continue;
                }
                // `session=<value>`, `response="<value>"`: the value may be quoted alone.
                let part = word.split_once('=').map(|(_, part)| part.trim_matches('"'));
                let parts = std::iter::once(*word).chain(part);
                secrets.extend(parts.filter(|part| part.len() >= WORD_BYTES_MIN));
            }
        }
        secrets
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
    use proptest::prelude::*;

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

    #[test]
    fn scrubbing_replaces_the_values_their_tokens_and_cookie_values() {
        let request = with_credentials();
        let echoed = "401: got Authorization: Bearer tok-abc123; token tok-abc123 unknown; \
                      session s-456789; key-7777; proxy dXNlcjpwYXNz; tenant acme";
        assert_eq!(
            request.scrub(echoed),
            "401: got Authorization: <redacted>; token <redacted> unknown; \
             session <redacted>; <redacted>; proxy <redacted>; tenant acme"
        );
        // The scheme word and short words stay: `dark` is 4 bytes and goes, `a=1` would not.
        assert_eq!(request.scrub("Bearer is dark"), "Bearer is <redacted>");
        assert!(matches!(request.scrub("nothing here"), Cow::Borrowed(_)));
        assert_eq!(
            request.secret_bytes_max(),
            "session=s-456789; theme=dark".len()
        );
        let none = HttpRequest::get("http://h/").header("x-tenant", "acme");
        assert_eq!(
            (none.scrub("acme"), none.secret_bytes_max()),
            ("acme".into(), 0)
        );
    }

    #[test]
    fn a_short_credential_is_scrubbed_whole() {
        let request = HttpRequest::get("http://h/").header("authorization", "abc");
        assert_eq!(request.scrub("[abc]"), "[<redacted>]");
    }

    proptest! {
        #[test]
        fn no_credential_survives_scrubbing(
            token in "[A-Za-z0-9._~+/-]{1,40}",
            before in "\\PC{0,40}",
            after in "\\PC{0,40}",
            bearer in any::<bool>(),
        ) {
            let value = if bearer { format!("Bearer {token}") } else { token.clone() };
            let request = HttpRequest::get("http://h/").header("Authorization", value.clone());
            let text = format!("{before}{value}{after}");
            let scrubbed = request.scrub(&text);
            // The marker itself may spell the credential (`c`, `act`): look past it.
            let left = scrubbed.replace(REDACTED, "\u{0}");
            prop_assert!(!left.contains(&value), "{}", scrubbed);
            if token.len() >= WORD_BYTES_MIN {
                prop_assert!(!left.contains(&token), "{}", scrubbed);
            }
        }
    }
}
