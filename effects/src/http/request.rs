//! From an [`HttpRequest`] to a request on the wire: method, bounded and validated
//! headers, `Idempotency-Key`, and the body with its content type.

use keel_core::{HttpBody, HttpMethod, HttpRequest};
use reqwest::header::{
    CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, HOST, HeaderMap, HeaderName, HeaderValue,
    TRANSFER_ENCODING,
};
use reqwest::{Method, RequestBuilder, Url};

use super::classify::truncate;
use crate::handler::Failure;

/// The most headers one request may carry (besides those the handler adds).
pub const REQUEST_HEADERS_MAX: usize = 64;

/// The most bytes of header names and values one request may carry.
pub const REQUEST_HEADER_BYTES_MAX: usize = 16 * 1024;

const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// The request, ready to send, or why it cannot be sent.
pub(crate) fn build(
    client: &reqwest::Client,
    request: &HttpRequest,
    url: Url,
    idempotency_key: &str,
) -> Result<RequestBuilder, Failure> {
    let headers = request_headers(request, idempotency_key)?;
    let builder = client.request(method(request.method), url).headers(headers);
    let builder = match &request.body {
        HttpBody::Empty => builder,
        HttpBody::Json(document) => builder.body(serde_json::to_vec(document).map_err(|err| {
            Failure::permanent(format!("the JSON body could not be written: {err}"))
        })?),
        HttpBody::Text(text) => builder.body(text.clone()),
        HttpBody::Bytes(bytes) => builder.body(bytes.clone()),
    };
    Ok(builder)
}

fn method(method: HttpMethod) -> Method {
    match method {
        HttpMethod::Get => Method::GET,
        HttpMethod::Post => Method::POST,
        HttpMethod::Put => Method::PUT,
        HttpMethod::Patch => Method::PATCH,
        HttpMethod::Delete => Method::DELETE,
        HttpMethod::Head => Method::HEAD,
    }
}

/// The request's headers, validated and bounded, plus `Idempotency-Key` and the body's
/// `content-type` (unless the request sets one).
fn request_headers(request: &HttpRequest, idempotency_key: &str) -> Result<HeaderMap, Failure> {
    if request.headers.len() > REQUEST_HEADERS_MAX {
        return Err(Failure::permanent(format!(
            "the request has {} headers, over the limit of {REQUEST_HEADERS_MAX}",
            request.headers.len()
        )));
    }
    if request.sensitive_headers.len() > REQUEST_HEADERS_MAX {
        return Err(Failure::permanent(format!(
            "the request marks {} headers sensitive, over the limit of {REQUEST_HEADERS_MAX}",
            request.sensitive_headers.len()
        )));
    }
    let bytes: usize = request
        .headers
        .iter()
        .map(|(name, value)| name.len() + value.len())
        .sum();
    if bytes > REQUEST_HEADER_BYTES_MAX {
        return Err(Failure::permanent(format!(
            "the request's headers hold {bytes} bytes, over the limit of {REQUEST_HEADER_BYTES_MAX}"
        )));
    }
    let mut headers = HeaderMap::with_capacity(request.headers.len() + 2);
    for (name, value) in &request.headers {
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
            Failure::permanent(format!(
                "`{}` is not a valid header name",
                truncate(name).escape_debug()
            ))
        })?;
        if name == IDEMPOTENCY_KEY {
            return Err(Failure::permanent(
                "the idempotency-key header is set by the handler: use HttpRequest::idempotency_key to override it",
            ));
        }
        if [HOST, CONTENT_LENGTH, TRANSFER_ENCODING, CONNECTION].contains(&name) {
            return Err(Failure::permanent(format!(
                "the {name} header is set by the client: leave it out of the request"
            )));
        }
        // The value is not echoed: it may be a credential.
        let mut value = HeaderValue::from_str(value).map_err(|_| {
            Failure::permanent(format!(
                "the value of header {name} is not valid: use visible ASCII, spaces and tabs"
            ))
        })?;
        // Sent as it is; hidden from the client's own Debug output, and never put in
        // HTTP/2's header compression table.
        value.set_sensitive(request.is_sensitive_header(name.as_str()));
        headers.append(name, value);
    }
    let key = HeaderValue::from_str(idempotency_key).map_err(|_| {
        Failure::permanent("the idempotency key is not a valid header value: use visible ASCII")
    })?;
    headers.insert(HeaderName::from_static(IDEMPOTENCY_KEY), key);
    let content_type = match request.body {
        HttpBody::Empty => None,
        HttpBody::Json(_) => Some("application/json"),
        HttpBody::Text(_) => Some("text/plain; charset=utf-8"),
        HttpBody::Bytes(_) => Some("application/octet-stream"),
    };
    if let Some(content_type) = content_type {
        headers
            .entry(CONTENT_TYPE)
            .or_insert(HeaderValue::from_static(content_type));
    }
    Ok(headers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handler::FailureKind;

    #[test]
    fn credentials_are_sent_as_they_are_and_marked_sensitive() {
        let request = HttpRequest::get("http://example.com/")
            .header("Authorization", "Bearer t-1")
            .sensitive_header("x-api-key", "k-1")
            .header("x-tenant", "acme");
        let headers = headers_of(&request).unwrap();
        for (name, value, sensitive) in [
            ("authorization", "Bearer t-1", true),
            ("x-api-key", "k-1", true),
            ("x-tenant", "acme", false),
        ] {
            assert_eq!(headers[name], value);
            assert_eq!(headers[name].is_sensitive(), sensitive, "{name}");
        }
        assert!(!format!("{headers:?}").contains("t-1"));
    }

    fn headers_of(request: &HttpRequest) -> Result<HeaderMap, Failure> {
        request_headers(request, "key-1")
    }

    #[test]
    fn the_body_sets_the_content_type_unless_the_request_does() {
        let base = HttpRequest::post("http://example.com/");
        for (body, expected) in [
            (
                HttpBody::Json(serde_json::json!({})),
                Some("application/json"),
            ),
            (
                HttpBody::Text("hi".into()),
                Some("text/plain; charset=utf-8"),
            ),
            (HttpBody::Bytes(vec![1]), Some("application/octet-stream")),
            (HttpBody::Empty, None),
        ] {
            let request = HttpRequest {
                body,
                ..base.clone()
            };
            let headers = headers_of(&request).unwrap();
            assert_eq!(
                headers.get(CONTENT_TYPE).map(|v| v.to_str().unwrap()),
                expected
            );
            assert_eq!(headers[IDEMPOTENCY_KEY], "key-1");
        }
        let patch = base
            .json(serde_json::json!([]))
            .header("Content-Type", "application/merge-patch+json");
        let headers = headers_of(&patch).unwrap();
        assert_eq!(headers.get_all(CONTENT_TYPE).iter().count(), 1);
        assert_eq!(headers[CONTENT_TYPE], "application/merge-patch+json");
    }

    #[test]
    fn headers_are_bounded_and_validated() {
        let base = HttpRequest::get("http://example.com/");
        let mut many = base.clone();
        for i in 0..=REQUEST_HEADERS_MAX {
            many = many.header(format!("x-{i}"), "1");
        }
        let big = base
            .clone()
            .header("x-big", "v".repeat(REQUEST_HEADER_BYTES_MAX));
        for (request, needle) in [
            (many, "over the limit of 64"),
            (big, "bytes, over the limit"),
            (
                base.clone().header("bad name", "1"),
                "not a valid header name",
            ),
            (
                base.clone().header("x-a", "line\nbreak"),
                "value of header x-a",
            ),
            (
                base.clone().header("Idempotency-Key", "k"),
                "HttpRequest::idempotency_key",
            ),
            (base.clone().header("host", "internal"), "set by the client"),
        ] {
            let failure = headers_of(&request).unwrap_err();
            assert_eq!(failure.kind, FailureKind::Permanent);
            assert!(failure.reason.contains(needle), "{}", failure.reason);
        }
        let mut marked = base.clone();
        marked.sensitive_headers = vec!["x-key".to_owned(); REQUEST_HEADERS_MAX + 1];
        let failure = headers_of(&marked).unwrap_err();
        assert!(
            failure.reason.contains("marks 65 headers sensitive"),
            "{}",
            failure.reason
        );
        let repeated = base.header("accept", "a").header("accept", "b");
        assert_eq!(
            headers_of(&repeated)
                .unwrap()
                .get_all("accept")
                .iter()
                .count(),
            2
        );
    }
}
