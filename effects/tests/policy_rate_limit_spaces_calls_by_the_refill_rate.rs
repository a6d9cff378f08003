//! The rate limit lets a burst through, then spaces calls by the refill rate, and fails
//! a call at once (with `retry_after`) if its token is further away than it may wait.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use keel_core::{Cause, EventType, Intent, IntentKind};
use keel_effects::policy::RateLimitLayer;
use keel_effects::{Call, FailureKind, InstanceId, Layer, Metrics, SharedHandler};
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

/// Records the time (ms after `start`) of each call.
fn stamped(start: Instant, stamps: Arc<Mutex<Vec<u64>>>) -> SharedHandler {
    Arc::new(move |_call: Call| {
        let elapsed_ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
        stamps.lock().expect("not poisoned").push(elapsed_ms);
        async { Ok(json!("ok")) }
    })
}

#[tokio::test(start_paused = true)]
async fn a_burst_goes_through_and_the_rest_follow_at_the_refill_rate() {
    let start = Instant::now();
    let stamps = Arc::new(Mutex::new(Vec::new()));
    let handler = RateLimitLayer::per_second(10)
        .burst(2)
        .layer(stamped(start, stamps.clone()));

    for _ in 0..5 {
        assert_eq!(handler.call(call()).await, Ok(json!("ok")));
    }

    assert_eq!(*stamps.lock().expect("not poisoned"), [0, 0, 100, 200, 300]);
}

#[tokio::test(start_paused = true)]
async fn concurrent_callers_are_served_in_arrival_order_one_token_apart() {
    let start = Instant::now();
    let stamps = Arc::new(Mutex::new(Vec::new()));
    let handler = RateLimitLayer::per_second(4)
        .burst(1)
        .layer(stamped(start, stamps.clone()));

    let tasks: Vec<_> = (0..4).map(|_| tokio::spawn(handler.call(call()))).collect();
    for task in tasks {
        assert_eq!(task.await.expect("the call task ran"), Ok(json!("ok")));
    }

    assert_eq!(*stamps.lock().expect("not poisoned"), [0, 250, 500, 750]);
}

#[tokio::test(start_paused = true)]
async fn a_call_whose_token_is_too_far_away_fails_at_once_without_calling() {
    let start = Instant::now();
    let stamps = Arc::new(Mutex::new(Vec::new()));
    let handler = RateLimitLayer::per_second(1)
        .wait_ms_max(500)
        .layer(stamped(start, stamps.clone()));

    assert_eq!(handler.call(call()).await, Ok(json!("ok")));
    let failure = handler.call(call()).await.expect_err("rate limited");

    assert_eq!(failure.kind, FailureKind::Unavailable);
    assert_eq!(failure.retry_after, Some(Duration::from_millis(1_000)));
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(stamps.lock().expect("not poisoned").len(), 1);
}
