//! A 429 or 503 with `Retry-After` is retried no earlier than the other side asked, and
//! not at all if it asked for longer than the policy is willing to wait.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use keel_core::{Cause, EventType, Intent, IntentKind};
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
                Err(Failure::transient("429 too many requests").retry_after_ms(retry_after_ms))
            } else {
                Ok(json!("ok"))
            }
        }
    })
}

fn policy() -> RetryPolicy {
    RetryPolicy::default()
        .backoff_ms_initial(100)
        .jitter(0.0)
        .retry_after_ms_max(10_000)
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
    assert_eq!(failure.retry_after_ms, Some(60_000));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(start.elapsed(), Duration::ZERO);
}
