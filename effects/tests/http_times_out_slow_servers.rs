//! The intent's `timeout_ms` bounds the whole exchange, reading the body included, and
//! running out of it is a `Timeout` failure.

use crate::common::http_server;

use std::time::{Duration, Instant};

use http_server::{Raw, RawServer, TestServer, call, handler, loopback_handler};
use keel_core::HttpRequest;
use keel_effects::http::HttpConfig;
use keel_effects::{FailureKind, Handler};

/// Generous against a busy machine, far below the servers' 5 s.
const PROMPTLY: Duration = Duration::from_secs(2);

#[tokio::test]
async fn a_server_slower_than_the_timeout_is_a_timeout() {
    let server = TestServer::start().await;
    let started = Instant::now();
    let failure = loopback_handler()
        .call(call(HttpRequest::get(server.url("/slow")).timeout_ms(200)))
        .await
        .unwrap_err();
    assert_eq!(failure.kind, FailureKind::Timeout);
    assert_eq!(
        failure.reason,
        "GET 127.0.0.1 did not answer in full within 200 ms"
    );
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(200) && elapsed < PROMPTLY,
        "{elapsed:?}"
    );
}

#[tokio::test]
async fn a_body_that_stalls_after_the_headers_is_a_timeout() {
    let server = RawServer::start(Raw::Stall).await;
    let started = Instant::now();
    let failure = loopback_handler()
        .call(call(HttpRequest::get(server.url()).timeout_ms(200)))
        .await
        .unwrap_err();
    assert_eq!(failure.kind, FailureKind::Timeout);
    assert!(started.elapsed() < PROMPTLY, "{:?}", started.elapsed());
}

#[tokio::test]
async fn timeout_ms_max_cuts_a_longer_intent_timeout() {
    let server = TestServer::start().await;
    let handler = handler(HttpConfig {
        allow_hosts: vec!["127.0.0.1".into()],
        timeout_ms_max: 200,
        ..HttpConfig::default()
    });
    let started = Instant::now();
    let failure = handler
        .call(call(
            HttpRequest::get(server.url("/slow")).timeout_ms(60_000),
        ))
        .await
        .unwrap_err();
    assert_eq!(failure.kind, FailureKind::Timeout);
    assert!(started.elapsed() < PROMPTLY, "{:?}", started.elapsed());
}
