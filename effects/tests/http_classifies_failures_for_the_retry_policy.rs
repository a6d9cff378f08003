//! Statuses and network errors become the `FailureKind` the retry policy decides on:
//! 5xx transient, 408 and 429 not attempted (429 with its `Retry-After`), other 4xx and redirects
//! permanent, a refused connection transient.

use crate::common::http_server;
use std::time::Duration;

use http_server::{TestServer, call, loopback_handler};
use keel_core::HttpRequest;
use keel_effects::{Failure, FailureKind, Handler};

async fn failure_of(server: &TestServer, path: &str) -> Failure {
    loopback_handler()
        .call(call(HttpRequest::get(server.url(path))))
        .await
        .expect_err("the test routes used here all fail")
}

#[tokio::test]
async fn server_errors_are_transient_and_quote_the_body() {
    let server = TestServer::start().await;
    for code in [500, 502, 503] {
        let failure = failure_of(&server, &format!("/status/{code}")).await;
        assert_eq!(failure.kind, FailureKind::Transient, "{code}");
        assert!(
            failure
                .reason
                .starts_with(&format!("GET 127.0.0.1 answered {code} ")),
            "{}",
            failure.reason
        );
        assert!(
            failure.reason.ends_with(&format!(": status {code}")),
            "{}",
            failure.reason
        );
        assert_eq!(failure.retry_after, None);
    }
}

#[tokio::test]
async fn too_many_requests_was_not_attempted_and_says_when_to_come_back() {
    let server = TestServer::start().await;
    let failure = failure_of(&server, "/throttled").await;
    assert_eq!(failure.kind, FailureKind::Unavailable);
    assert_eq!(failure.retry_after, Some(Duration::from_millis(2_000)));
    assert_eq!(
        failure.reason,
        "GET 127.0.0.1 answered 429 Too Many Requests: slow down"
    );
}

#[tokio::test]
async fn request_timeout_was_not_attempted() {
    let server = TestServer::start().await;
    assert_eq!(
        failure_of(&server, "/status/408").await.kind,
        FailureKind::Unavailable
    );
}

#[tokio::test]
async fn other_client_errors_are_permanent() {
    let server = TestServer::start().await;
    for code in [400, 401, 403, 404, 409, 422] {
        let failure = failure_of(&server, &format!("/status/{code}")).await;
        assert_eq!(failure.kind, FailureKind::Permanent, "{code}");
    }
}

#[tokio::test]
async fn redirects_are_permanent_and_not_followed() {
    let server = TestServer::start().await;
    let failure = failure_of(&server, "/redirect").await;
    assert_eq!(failure.kind, FailureKind::Permanent);
    assert!(
        failure.reason.starts_with(
            "GET 127.0.0.1 answered 302 Found, a redirect to /echo: redirects are not followed"
        ),
        "{}",
        failure.reason
    );
    assert_eq!(server.hits_on("/redirect"), 1);
    assert_eq!(server.hits_on("/echo"), 0);
}

#[tokio::test]
async fn a_refused_connection_is_transient() {
    // A port that was free a moment ago and has no listener now.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let failure = loopback_handler()
        .call(call(
            HttpRequest::get(format!("http://{addr}/")).timeout_ms(2_000),
        ))
        .await
        .unwrap_err();
    assert_eq!(failure.kind, FailureKind::Transient, "{failure}");
    assert!(
        failure.reason.starts_with("GET 127.0.0.1: no connection"),
        "{}",
        failure.reason
    );
}
