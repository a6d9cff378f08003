//! A response body over `response_bytes_max` fails the call as `Permanent`, whether the
//! server says so up front (Content-Length) or just keeps sending; the handler stops
//! reading at the cap.

use crate::common::http_server;

use std::time::{Duration, Instant};

use http_server::{Raw, RawServer, TestServer, call, handler, loopback_handler};
use keel_core::HttpRequest;
use keel_effects::http::HttpConfig;
use keel_effects::{FailureKind, Handler};

const TWO_MIB: usize = 2 * 1024 * 1024;

#[tokio::test]
async fn a_body_exactly_at_the_cap_is_read_whole() {
    let server = TestServer::start().await;
    let handler = handler(HttpConfig {
        allow_hosts: vec!["127.0.0.1".into()],
        response_bytes_max: 1000,
        ..HttpConfig::default()
    });
    let value = handler
        .call(call(HttpRequest::get(server.url("/sized/1000"))))
        .await
        .unwrap();
    assert_eq!(value["body"].as_str().unwrap().len(), 1000);

    let failure = handler
        .call(call(HttpRequest::get(server.url("/sized/1001"))))
        .await
        .unwrap_err();
    assert_eq!(failure.kind, FailureKind::Permanent);
}

#[tokio::test]
async fn a_declared_oversized_body_is_refused_from_its_content_length() {
    let server = TestServer::start().await;
    let failure = loopback_handler()
        .call(call(HttpRequest::get(
            server.url(&format!("/sized/{TWO_MIB}")),
        )))
        .await
        .unwrap_err();
    assert_eq!(failure.kind, FailureKind::Permanent);
    assert!(
        failure
            .reason
            .contains("over response_bytes_max (1048576 bytes), content-length is 2097152"),
        "{}",
        failure.reason
    );
}

#[tokio::test]
async fn a_streamed_oversized_body_is_cut_off_at_the_cap() {
    let server = RawServer::start(Raw::Chunked {
        total_bytes: Some(TWO_MIB),
    })
    .await;
    let failure = loopback_handler()
        .call(call(HttpRequest::get(server.url())))
        .await
        .unwrap_err();
    assert_eq!(failure.kind, FailureKind::Permanent);
    assert!(
        failure.reason.contains("over response_bytes_max"),
        "{}",
        failure.reason
    );
    assert_eq!(server.connections(), 1);
}

#[tokio::test]
async fn an_endless_body_is_cut_off_at_the_cap_long_before_the_timeout() {
    let server = RawServer::start(Raw::Chunked { total_bytes: None }).await;
    let started = Instant::now();
    let failure = loopback_handler()
        .call(call(HttpRequest::get(server.url()).timeout_ms(10_000)))
        .await
        .unwrap_err();
    assert_eq!(failure.kind, FailureKind::Permanent);
    assert!(
        failure.reason.contains("over response_bytes_max"),
        "{}",
        failure.reason
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}
