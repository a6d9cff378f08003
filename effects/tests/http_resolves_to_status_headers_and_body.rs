//! A successful request resolves to `{ status, headers, body, body_encoding }`: JSON
//! parsed, text as text, other bytes as base64, no body as null, and no cookies.

use crate::common::http_server;

use http_server::{TestServer, call, loopback_handler};
use keel_core::{HttpMethod, HttpRequest};
use keel_effects::Handler;
use serde_json::json;

#[tokio::test]
async fn a_json_body_is_parsed_and_cookies_are_left_out() {
    let server = TestServer::start().await;
    let value = loopback_handler()
        .call(call(HttpRequest::get(server.url("/json"))))
        .await
        .unwrap();
    assert_eq!(value["status"], 200);
    assert_eq!(value["body"], json!({ "charge": "ch_42", "cents": 4200 }));
    assert_eq!(value["body_encoding"], "json");
    assert_eq!(value["headers"]["content-type"], "application/json");
    assert_eq!(value["headers"]["x-request-id"], "req-7");
    assert!(value["headers"].get("set-cookie").is_none(), "{value}");
}

#[tokio::test]
async fn text_is_text_and_other_bytes_are_base64() {
    let server = TestServer::start().await;
    let handler = loopback_handler();
    let text = handler
        .call(call(HttpRequest::get(server.url("/text"))))
        .await
        .unwrap();
    assert_eq!(
        (&text["body"], &text["body_encoding"]),
        (&json!("hello"), &json!("text"))
    );
    let binary = handler
        .call(call(HttpRequest::get(server.url("/binary"))))
        .await
        .unwrap();
    assert_eq!(
        (&binary["body"], &binary["body_encoding"]),
        (&json!("/wB/"), &json!("base64"))
    );
}

#[tokio::test]
async fn a_head_request_has_no_body() {
    let server = TestServer::start().await;
    let value = loopback_handler()
        .call(call(HttpRequest::new(
            HttpMethod::Head,
            server.url("/sized/10"),
        )))
        .await
        .unwrap();
    assert_eq!(value["status"], 200);
    assert_eq!(value["body"], serde_json::Value::Null);
    assert_eq!(value["body_encoding"], "empty");
    assert_eq!(value["headers"]["content-length"], "10");
}
