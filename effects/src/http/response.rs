//! Reading a response: the body within its cap, the start of an error body, and the
//! value a successful request resolves to (status, headers and body as JSON).
//!
//! The value is recorded as the intent's outcome and fed back to the reducer, so it must
//! be plain JSON, bounded, and free of credentials: headers are capped in number and
//! size, and `set-cookie` is left out. The start of an error body goes into a failure's
//! reason, and from there into logs and dead letters: it is capped, and scrubbed of the
//! request's credentials, which a server may echo (`invalid token <the token>`).

use keel_core::HttpRequest;
use reqwest::Response;
use reqwest::header::{CONTENT_TYPE, HeaderMap, SET_COOKIE};
use serde_json::{Map, Value, json};

use super::classify::{DETAIL_BYTES_MAX, transport_failure, truncate};
use crate::handler::Failure;

/// The most response headers kept in the value; the rest are dropped.
pub(crate) const RESPONSE_HEADERS_MAX: usize = 64;

/// The longest header value kept (after joining repeats); longer ones are dropped.
pub(crate) const RESPONSE_HEADER_BYTES_MAX: usize = 1024;

/// The body, read chunk by chunk, failing as soon as it would pass `cap`.
pub(crate) async fn read_capped(
    target: &str,
    response: &mut Response,
    cap: usize,
) -> Result<Vec<u8>, Failure> {
    let too_large = |detail: String| {
        Failure::permanent(format!(
            "{target}: the response body is over response_bytes_max ({cap} bytes){detail}; ask for less or raise response_bytes_max"
        ))
    };
    let declared = response.content_length();
    if let Some(declared) = declared.filter(|&n| n > cap as u64) {
        return Err(too_large(format!(", content-length is {declared}")));
    }
    // At most `cap`, checked just above.
    let mut body = Vec::with_capacity(declared.map_or(0, |n| n as usize));
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|err| transport_failure(target, err))?
    {
        if chunk.len() > cap - body.len() {
            return Err(too_large(String::new()));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The start of an error response's body, for the failure's reason: at most
/// [`DETAIL_BYTES_MAX`] bytes, with `request`'s credentials replaced by `<redacted>`.
///
/// It reads past the cut by the longest credential, and scrubs before it cuts, so that a
/// credential the cut would split is still recognised rather than shown in part. The rest
/// is not read, and a body that breaks off just ends the text.
pub(crate) async fn error_body(response: &mut Response, request: &HttpRequest) -> String {
    // At most REQUEST_HEADER_BYTES_MAX more: the request's headers were checked.
    let read_max = DETAIL_BYTES_MAX + request.secret_bytes_max();
    let mut start = Vec::new();
    while start.len() < read_max {
        let Ok(Some(chunk)) = response.chunk().await else {
            break;
        };
        let take = chunk.len().min(read_max - start.len());
        start.extend_from_slice(&chunk[..take]);
    }
    let text = String::from_utf8_lossy(&start);
    truncate(request.scrub(&text).trim()).to_owned()
}

/// `{ "status", "headers", "body", "body_encoding" }`; see the [`http`](super) docs.
pub(crate) fn success(status: u16, headers: &HeaderMap, body: &[u8]) -> Value {
    let content_type = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok());
    let (body, encoding) = decode_body(content_type, body);
    json!({
        "status": status,
        "headers": headers_value(headers),
        "body": body,
        "body_encoding": encoding,
    })
}

/// Headers by lowercase name; repeated headers joined with `, `, as HTTP allows.
fn headers_value(headers: &HeaderMap) -> Map<String, Value> {
    let mut kept = Map::new();
    // `keys` yields each name once, in the order first received.
    for name in headers.keys() {
        if kept.len() == RESPONSE_HEADERS_MAX {
            break;
        }
        // Session cookies are credentials: they must not end up in an event log.
        if name == SET_COOKIE {
            continue;
        }
        let mut joined = String::new();
        let mut readable = true;
        for value in headers.get_all(name) {
            let Ok(text) = value.to_str() else {
                readable = false;
                break;
            };
            if !joined.is_empty() {
                joined.push_str(", ");
            }
            joined.push_str(text);
            if joined.len() > RESPONSE_HEADER_BYTES_MAX {
                readable = false;
                break;
            }
        }
        if readable {
            kept.insert(name.as_str().to_owned(), Value::String(joined));
        }
    }
    kept
}

/// The body as JSON when the server says it is JSON and it parses, else as text when it
/// is UTF-8, else as base64; with the name of the encoding used.
fn decode_body(content_type: Option<&str>, body: &[u8]) -> (Value, &'static str) {
    if body.is_empty() {
        return (Value::Null, "empty");
    }
    if content_type.is_some_and(is_json)
        && let Ok(value) = serde_json::from_slice(body)
    {
        return (value, "json");
    }
    match std::str::from_utf8(body) {
        Ok(text) => (Value::String(text.to_owned()), "text"),
        Err(_) => (Value::String(keel_core::base64::encode(body)), "base64"),
    }
}

/// `application/json`, or any `+json` type (`application/problem+json`).
fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderName, HeaderValue};

    #[test]
    fn json_bodies_are_parsed_when_the_server_says_json() {
        let (value, encoding) =
            decode_body(Some("application/json; charset=utf-8"), br#"{"id":7}"#);
        assert_eq!((value, encoding), (json!({"id": 7}), "json"));
        let (value, _) = decode_body(Some("application/problem+json"), br#"{"title":"x"}"#);
        assert_eq!(value, json!({"title": "x"}));
        // Said JSON, is not: kept as text rather than lost.
        assert_eq!(
            decode_body(Some("application/json"), b"{oops"),
            (json!("{oops"), "text")
        );
        // Looks like JSON, not said to be: text.
        assert_eq!(
            decode_body(Some("text/plain"), b"[1]"),
            (json!("[1]"), "text")
        );
    }

    #[test]
    fn other_bodies_are_text_base64_or_null() {
        assert_eq!(decode_body(None, b""), (Value::Null, "empty"));
        assert_eq!(decode_body(None, "hé".as_bytes()), (json!("hé"), "text"));
        assert_eq!(
            decode_body(None, &[0xff, 0x00, 0x7f]),
            (json!("/wB/"), "base64")
        );
    }

    #[test]
    fn headers_are_lowercase_joined_bounded_and_cookie_free() {
        let mut headers = HeaderMap::new();
        headers.append("X-Request-Id", HeaderValue::from_static("abc"));
        headers.append("vary", HeaderValue::from_static("accept"));
        headers.append("vary", HeaderValue::from_static("origin"));
        headers.append(SET_COOKIE, HeaderValue::from_static("session=secret"));
        let long = "x".repeat(RESPONSE_HEADER_BYTES_MAX + 1);
        headers.append("x-long", HeaderValue::from_str(&long).unwrap());
        for i in 0..100 {
            headers.append(
                HeaderName::from_bytes(format!("x-h{i}").as_bytes()).unwrap(),
                HeaderValue::from_static("1"),
            );
        }
        let value = headers_value(&headers);
        assert_eq!(value["x-request-id"], "abc");
        assert_eq!(value["vary"], "accept, origin");
        assert!(!value.contains_key("set-cookie"));
        assert!(!value.contains_key("x-long"));
        assert_eq!(value.len(), RESPONSE_HEADERS_MAX);
    }

    #[test]
    fn the_value_has_the_documented_shape() {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let value = success(201, &headers, br#"{"ok":true}"#);
        assert_eq!(
            value,
            json!({
                "status": 201,
                "headers": { "content-type": "application/json" },
                "body": { "ok": true },
                "body_encoding": "json",
            })
        );
    }
}
