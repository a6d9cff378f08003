//! A 429 or 503 with `Retry-After` is retried no earlier than the other side asked, and
//! not at all if it asked for longer than the policy is willing to wait; end to end, the
//! HTTP handler inside the retry layer comes back to a real server that throttles it no
//! sooner than its `Retry-After`, under the same `Idempotency-Key` every time.

use crate::common::http_server;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use http_server::{THROTTLED_RETRY_AFTER_S, TestServer, loopback_handler};
use keel_core::{Cause, EventType, HttpRequest, Intent, IntentKind};
use keel_effects::policy::{RetryLayer, RetryPolicy};
use keel_effects::{Call, Failure, InstanceId, Layer, Metrics, SharedHandler};
use serde_json::json;
use tokio::time::Instant;

fn call() -> Call {
    let intent = Intent {
        id: Cause::root(1).intent_id(0),
        kind: IntentKind::Custom {
            name: EventType::from_static("test.effect"),
            payload: json!({}),
        },
    };
    Call::new(intent, InstanceId::from("i"), Metrics::default())
}

/// Answers the first call with a 429 asking to come back in `retry_after_ms`, then
/// succeeds.
fn throttled_once(retry_after_ms: u64, calls: Arc<AtomicU32>) -> SharedHandler {
    Arc::new(move |_call: Call| {
        let first = calls.fetch_add(1, Ordering::SeqCst) == 0;
        async move {
            if first {
                Err(Failure::transient("429 too many requests")
                    .retry_after(Duration::from_millis(retry_after_ms)))
            } else {
                Ok(json!("ok"))
            }
        }
    })
}

fn policy() -> RetryPolicy {
    RetryPolicy::default()
        .attempts(5)
        .first_delay(Duration::from_millis(100))
        .jitter(0.0)
        .retry_after_max(Duration::from_millis(10_000))
}

#[tokio::test(start_paused = true)]
async fn the_retry_waits_for_retry_after_rather_than_the_shorter_backoff() {
    let calls = Arc::new(AtomicU32::new(0));
    let handler = RetryLayer::new(policy()).layer(throttled_once(5_000, calls.clone()));
    let start = Instant::now();

    assert_eq!(handler.call(call()).await, Ok(json!("ok")));
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(start.elapsed(), Duration::from_millis(5_000));
}

#[tokio::test(start_paused = true)]
async fn a_retry_after_beyond_the_cap_gives_up_at_once() {
    let calls = Arc::new(AtomicU32::new(0));
    let handler = RetryLayer::new(policy()).layer(throttled_once(60_000, calls.clone()));
    let start = Instant::now();

    let failure = handler.call(call()).await.expect_err("gives up");
    assert_eq!(failure.retry_after, Some(Duration::from_millis(60_000)));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(start.elapsed(), Duration::ZERO);
}

// The real clock, not a paused one. The handler bounds each exchange with a tokio timer,
// and a paused runtime whose tasks wait on sockets may auto-advance to that timer before
// the answer is read (tokio-rs/tokio#4522, #8232): it passes today, but by the luck of
// wake-up order. Hence one real wait of `Retry-After`, checked as a lower bound only; how
// much longer a busy machine takes is no failure.
#[tokio::test]
async fn a_throttled_request_is_sent_again_no_sooner_than_retry_after_under_one_key() {
    let server = TestServer::start().await;
    // A 100 ms backoff, far below the Retry-After: only the server's header can explain a
    // longer wait.
    let handler = RetryLayer::new(policy().attempts(2)).layer(Arc::new(loopback_handler()));

    let request = HttpRequest::post(server.url("/throttled"));
    let failure = handler
        .call(http_server::call(request))
        .await
        .expect_err("/throttled always answers 429");
    assert_eq!(
        failure.retry_after,
        Some(Duration::from_millis(THROTTLED_RETRY_AFTER_S * 1_000))
    );

    let arrivals = server.arrivals_on("/throttled");
    assert_eq!(arrivals.len(), 2, "{arrivals:?}");
    let waited = arrivals[1].at - arrivals[0].at;
    assert!(
        waited >= Duration::from_secs(THROTTLED_RETRY_AFTER_S),
        "the retry came back after {waited:?}"
    );
    let key = Cause::root(1).intent_id(0).to_string();
    for arrival in &arrivals {
        assert_eq!(arrival.idempotency_key.as_deref(), Some(key.as_str()));
    }
}
