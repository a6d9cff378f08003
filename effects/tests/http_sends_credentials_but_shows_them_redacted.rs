//! The values of credential headers (`Authorization`, `Cookie`, `Proxy-Authorization`,
//! `Set-Cookie`, and those a request marks sensitive) reach the server as they are, but
//! `Debug` of the intent and of its dead letter shows them as `<redacted>`.

use crate::common::http_server;

use std::sync::Arc;

use http_server::{TestServer, call, loopback_handler};
use keel_core::HttpRequest;
use keel_effects::policy::{DeadLetterQueue, Policies};
use keel_effects::{FailureKind, Handler};

const TOKEN: &str = "tok-5ecret";
const API_KEY: &str = "key-5ecret";
const SESSION: &str = "sess-5ecret";

fn with_credentials(url: String) -> HttpRequest {
    HttpRequest::post(url)
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("Cookie", format!("session={SESSION}"))
        .sensitive_header("X-Api-Key", API_KEY)
        .header("x-tenant", "acme")
}

fn assert_redacted(shown: &str) {
    for secret in [TOKEN, API_KEY, SESSION] {
        assert!(!shown.contains(secret), "{secret} is shown: {shown}");
    }
    assert!(
        shown.contains("<redacted>") && shown.contains("x-tenant") && shown.contains("acme"),
        "the other headers are shown: {shown}"
    );
}

#[tokio::test]
async fn credentials_reach_the_server_as_they_are() {
    let server = TestServer::start().await;
    let request = with_credentials(server.url("/echo"));
    assert_redacted(&format!("{request:?}"));
    let value = loopback_handler().call(call(request)).await.unwrap();
    let headers = &value["body"]["headers"];
    assert_eq!(headers["authorization"], format!("Bearer {TOKEN}"));
    assert_eq!(headers["cookie"], format!("session={SESSION}"));
    assert_eq!(headers["x-api-key"], API_KEY);
}

#[tokio::test]
async fn a_dead_letter_shows_the_credentials_of_its_intent_as_redacted() {
    let server = TestServer::start().await;
    let queue = DeadLetterQueue::new(10);
    let handler = Policies::new()
        .dead_letters(queue.clone())
        .wrap(Arc::new(loopback_handler()));
    let request = with_credentials(server.url("/status/401"));
    let failure = handler.call(call(request)).await.unwrap_err();
    assert_eq!(failure.kind, FailureKind::Permanent);

    let letters = queue.list();
    assert_eq!(letters.len(), 1);
    assert_redacted(&format!("{letters:?}"));
    assert_redacted(&format!("{:#?}", letters[0]));
    assert_redacted(&format!("{:?}", letters[0].intent));
}
