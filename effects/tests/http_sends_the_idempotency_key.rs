//! Every request carries `Idempotency-Key` (the intent id unless overridden), the
//! request's headers, and its body with the right content type; every attempt of one
//! intent sends the same key.

use crate::common::http_server;

use http_server::{TestServer, call, loopback_handler};
use keel_core::{Cause, HttpBody, HttpRequest};
use keel_effects::{FailureKind, Handler};
use serde_json::json;

#[tokio::test]
async fn the_intent_id_is_sent_as_the_idempotency_key() {
    let server = TestServer::start().await;
    let request = HttpRequest::post(server.url("/echo"))
        .json(json!({ "order": "order-42", "cents": 4200 }))
        .header("x-tenant", "acme");
    let value = loopback_handler().call(call(request)).await.unwrap();

    let seen = &value["body"];
    let headers = &seen["headers"];
    assert_eq!(seen["method"], "POST");
    assert_eq!(
        headers["idempotency-key"],
        Cause::root(1).intent_id(0).to_string()
    );
    assert_eq!(headers["x-tenant"], "acme");
    assert_eq!(headers["content-type"], "application/json");
    assert!(
        headers["user-agent"].as_str().unwrap().starts_with("keel/"),
        "{headers}"
    );
    let body: serde_json::Value = serde_json::from_str(seen["body"].as_str().unwrap()).unwrap();
    assert_eq!(body, json!({ "order": "order-42", "cents": 4200 }));
}

#[tokio::test]
async fn an_overridden_key_is_sent_instead_of_the_intent_id() {
    let server = TestServer::start().await;
    let request = HttpRequest::post(server.url("/echo")).idempotency_key("charge-order-42");
    let value = loopback_handler().call(call(request)).await.unwrap();
    assert_eq!(
        value["body"]["headers"]["idempotency-key"],
        "charge-order-42"
    );
}

#[tokio::test]
async fn each_body_kind_is_sent_with_its_content_type() {
    let server = TestServer::start().await;
    let handler = loopback_handler();
    for (body, content_type, text) in [
        (
            HttpBody::Text("hé".into()),
            Some("text/plain; charset=utf-8"),
            "hé",
        ),
        (
            HttpBody::Bytes(b"raw".to_vec()),
            Some("application/octet-stream"),
            "raw",
        ),
        (HttpBody::Empty, None, ""),
    ] {
        let request = HttpRequest {
            body,
            ..HttpRequest::post(server.url("/echo"))
        };
        let value = handler.call(call(request)).await.unwrap();
        let seen = &value["body"];
        assert_eq!(seen["headers"]["content-type"].as_str(), content_type);
        assert_eq!(seen["body"], text);
    }
}

#[tokio::test]
async fn every_attempt_of_one_intent_reaches_the_server_under_one_key() {
    let server = TestServer::start().await;
    let handler = loopback_handler();
    // What the retry layer does: the same intent, attempt after attempt.
    let mut attempt = call(HttpRequest::post(server.url("/flaky/2")));
    let mut kinds = Vec::new();
    let value = loop {
        match handler.call(attempt.clone()).await {
            Ok(value) => break value,
            Err(failure) => kinds.push(failure.kind),
        }
        assert!(attempt.attempt < 5, "the server never gave in");
        attempt.attempt += 1;
    };
    assert_eq!(kinds, [FailureKind::Transient, FailureKind::Transient]);
    assert_eq!(value["body"]["attempts"], 3);
    assert_eq!(
        value["body"]["key"],
        Cause::root(1).intent_id(0).to_string()
    );
}
