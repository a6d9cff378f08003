//! A server's error body may echo the request's credentials (a 401 that quotes the
//! `Authorization` it refused). The failure's reason keeps the start of the body, at most
//! 512 bytes of it, with every credential of the request replaced by `<redacted>`, even
//! one the cut would split; so do the log lines and the dead letter built from it.

use crate::common::{http_server, spans};
use std::time::Duration;

use std::sync::Arc;

use http_server::{TestServer, call, loopback_handler};
use keel_core::HttpRequest;
use keel_effects::policy::{DeadLetterQueue, Policies, RetryPolicy};
use keel_effects::{FailureKind, Handler};
use spans::Spans;

const TOKEN: &str = "tok-5ecret-0123456789";
const API_KEY: &str = "key-5ecret-0123456789";

/// In both credentials: a reason holding any part of one longer than 6 bytes has it.
const MARK: &str = "5ecret";

/// The most bytes of a body kept in a reason.
const BODY_BYTES_MAX: usize = 512;

/// Where the server's body starts in the reason: `GET 127.0.0.1 answered 401 ...: `.
const BODY_AFTER: &str = "Unauthorized: ";

fn request(server: &TestServer, code: u16, pad: usize) -> HttpRequest {
    HttpRequest::get(server.url(&format!("/echoing/{code}/{pad}")))
        .header("Authorization", format!("Bearer {TOKEN}"))
        .sensitive_header("X-Api-Key", API_KEY)
}

#[tokio::test]
async fn a_401_that_echoes_the_authorization_header_does_not_put_the_token_in_the_reason() {
    let server = TestServer::start().await;
    let failure = loopback_handler()
        .call(call(request(&server, 401, 0)))
        .await
        .unwrap_err();
    assert_eq!(failure.kind, FailureKind::Permanent);
    let reason = &failure.reason;
    assert!(!reason.contains(MARK), "{reason}");
    assert!(
        reason.starts_with("GET 127.0.0.1 answered 401 Unauthorized: authorization: <redacted>;")
            && reason.contains("x-api-key: <redacted>;")
            && reason.contains("idempotency-key: "),
        "the rest of the body is still there: {reason}"
    );
}

#[tokio::test]
async fn a_credential_cut_by_the_body_cap_is_not_shown_in_part() {
    let server = TestServer::start().await;
    let handler = loopback_handler();
    // The token's value starts at byte `pad + 16` of the body: these put the cut at
    // 512 before it, inside `Bearer `, inside the token, and after it.
    for pad in [470, 475, 480, 485, 490, 495, 500, 505] {
        let failure = handler
            .call(call(request(&server, 401, pad)))
            .await
            .unwrap_err();
        let reason = &failure.reason;
        let (_, body) = reason.split_once(BODY_AFTER).expect("the body is quoted");
        assert!(
            body.len() <= BODY_BYTES_MAX,
            "pad {pad}: {} bytes",
            body.len()
        );
        assert!(
            !reason.contains(MARK) && !reason.contains("tok-"),
            "pad {pad}: {reason}"
        );
    }
}

#[tokio::test]
async fn log_lines_and_dead_letters_of_such_a_failure_hold_no_credential() {
    let (spans, _guard) = Spans::install();
    let server = TestServer::start().await;
    let queue = DeadLetterQueue::new(10);
    let handler = Policies::new()
        .dead_letters(queue.clone())
        .retry(
            RetryPolicy::default()
                .attempts(2)
                .first_delay(Duration::from_millis(1))
                .jitter(0.0),
        )
        .wrap(Arc::new(loopback_handler()));
    // A 503 is retried: the retry's log line quotes the failure too.
    let failure = handler
        .call(call(request(&server, 503, 0)))
        .await
        .unwrap_err();
    assert_eq!(failure.kind, FailureKind::Transient);
    assert!(!failure.reason.contains(MARK), "{}", failure.reason);

    let letters = queue.list();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].attempts, 2);
    let letter = format!("{letters:?}");
    assert!(!letter.contains(MARK), "{letter}");

    let lines = spans.event_lines();
    for expected in ["http request", "retrying effect", "parked as a dead letter"] {
        assert!(
            lines.iter().any(|line| line.contains(expected)),
            "no `{expected}` line in {lines:#?}"
        );
    }
    for line in &lines {
        assert!(!line.contains(MARK), "{line}");
    }
    assert!(
        lines.iter().any(|line| line.contains("<redacted>")),
        "{lines:#?}"
    );
}
