//! Retry calls the handler again after delays that grow exponentially, and stops after
//! the policy's attempts with the last failure.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use keel_core::{Cause, EventType, FailureKind, Intent, IntentKind};
use keel_effects::policy::{RetryDecision, RetryLayer, RetryPolicy, jitter_seed};
use keel_effects::{Call, Failure, InstanceId, Layer, Metrics, SharedHandler};
use serde_json::json;
use tokio::time::Instant;

fn call(metrics: &Metrics) -> Call {
    let intent = Intent {
        id: Cause::root(1).intent_id(0),
        kind: IntentKind::Custom {
            name: EventType::from_static("test.effect"),
            payload: json!({}),
        },
    };
    Call::new(intent, InstanceId::from("i"), metrics.clone())
}

/// Fails the first `failures` calls with a transient failure naming the attempt, then
/// succeeds with the attempt number; counts its calls in `calls`.
fn flaky(failures: u32, calls: Arc<AtomicU32>) -> SharedHandler {
    Arc::new(move |call: Call| {
        let count = calls.fetch_add(1, Ordering::SeqCst) + 1;
        async move {
            if count <= failures {
                Err(Failure::transient(format!(
                    "attempt {} failed",
                    call.attempt
                )))
            } else {
                Ok(json!({ "attempt": call.attempt }))
            }
        }
    })
}

fn no_jitter() -> RetryPolicy {
    RetryPolicy::default()
        .attempts(5)
        .first_delay(Duration::from_millis(100))
        .multiplier(2.0)
        .jitter(0.0)
}

#[tokio::test(start_paused = true)]
async fn retry_succeeds_after_transient_failures_having_waited_the_sum_of_the_backoffs() {
    let calls = Arc::new(AtomicU32::new(0));
    let handler = RetryLayer::new(no_jitter().attempts(5)).layer(flaky(3, calls.clone()));
    let metrics = Metrics::default();
    let start = Instant::now();

    let result = handler.call(call(&metrics)).await;

    assert_eq!(result, Ok(json!({ "attempt": 4 })));
    assert_eq!(calls.load(Ordering::SeqCst), 4);
    assert_eq!(start.elapsed(), Duration::from_millis(100 + 200 + 400));
    assert_eq!(metrics.snapshot().retried, 3);
}

#[tokio::test(start_paused = true)]
async fn retry_gives_up_after_attempts_max_with_the_last_failure() {
    let calls = Arc::new(AtomicU32::new(0));
    let handler = RetryLayer::new(no_jitter().attempts(3)).layer(flaky(u32::MAX, calls.clone()));
    let metrics = Metrics::default();
    let start = Instant::now();

    let result = handler.call(call(&metrics)).await;

    assert_eq!(result, Err(Failure::transient("attempt 3 failed")));
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(start.elapsed(), Duration::from_millis(100 + 200));
    assert_eq!(metrics.snapshot().retried, 2);
}

#[tokio::test(start_paused = true)]
async fn backoff_stops_growing_at_its_cap() {
    let calls = Arc::new(AtomicU32::new(0));
    let policy = no_jitter()
        .attempts(6)
        .max_delay(Duration::from_millis(300));
    let handler = RetryLayer::new(policy).layer(flaky(u32::MAX, calls.clone()));
    let start = Instant::now();

    let result = handler.call(call(&Metrics::default())).await;

    assert!(result.is_err());
    assert_eq!(calls.load(Ordering::SeqCst), 6);
    assert_eq!(
        start.elapsed(),
        Duration::from_millis(100 + 200 + 300 + 300 + 300)
    );
}

#[tokio::test(start_paused = true)]
async fn jittered_delays_are_the_ones_the_policy_decides_for_the_intent() {
    let calls = Arc::new(AtomicU32::new(0));
    let policy = RetryPolicy::default().attempts(4).jitter(1.0);
    let handler = RetryLayer::new(policy).layer(flaky(u32::MAX, calls.clone()));
    let call = call(&Metrics::default());
    let expected_ms: u64 = (1..4)
        .map(|attempt| {
            let seed = jitter_seed(&call.intent.id, attempt);
            match policy.decide(attempt, FailureKind::Transient, None, seed) {
                RetryDecision::RetryAfter(delay) => delay.as_millis() as u64,
                RetryDecision::GiveUp => panic!("attempt {attempt} should be retried"),
            }
        })
        .sum();
    let start = Instant::now();

    let result = handler.call(call).await;

    assert!(result.is_err());
    assert_eq!(calls.load(Ordering::SeqCst), 4);
    assert_eq!(start.elapsed(), Duration::from_millis(expected_ms));
    // Full jitter took something off the 100 + 200 + 400 ms of plain backoff.
    assert!(expected_ms < 700, "{expected_ms}");
}
