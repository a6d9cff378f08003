//! A request with too many headers, an invalid header, or a header the handler owns
//! fails as `Permanent` without reaching the server.

use crate::common::http_server;

use http_server::{TestServer, call, loopback_handler};
use keel_core::HttpRequest;
use keel_effects::http::REQUEST_HEADERS_MAX;
use keel_effects::{FailureKind, Handler};

#[tokio::test]
async fn malformed_requests_fail_permanently_and_send_nothing() {
    let server = TestServer::start().await;
    let base = HttpRequest::post(server.url("/echo"));
    let mut crowded = base.clone();
    for i in 0..=REQUEST_HEADERS_MAX {
        crowded = crowded.header(format!("x-{i}"), "1");
    }
    let handler = loopback_handler();
    for (request, needle) in [
        (crowded, "headers, over the limit of 64"),
        (
            base.clone().header("no spaces", "1"),
            "not a valid header name",
        ),
        (
            base.clone().header("x-a", "new\r\nline"),
            "value of header x-a is not valid",
        ),
        (
            base.clone().header("content-length", "0"),
            "set by the client",
        ),
        (
            base.clone().header("idempotency-key", "mine"),
            "HttpRequest::idempotency_key",
        ),
        (
            base.clone().idempotency_key("bad\nkey"),
            "idempotency key is not a valid",
        ),
    ] {
        let failure = handler.call(call(request)).await.unwrap_err();
        assert_eq!(failure.kind, FailureKind::Permanent);
        assert!(
            failure.reason.contains(needle),
            "{needle}: {}",
            failure.reason
        );
    }
    assert_eq!(server.hits(), 0);
}
