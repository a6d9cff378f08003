//! A timeout fails an attempt that takes too long; inside a retry, each attempt gets a
//! deadline of its own.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use keel_core::{Cause, EventType, Intent, IntentKind};
use keel_effects::policy::{Policies, RetryPolicy, TimeoutLayer};
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

/// Hangs for an hour on its first call, answers at once afterwards.
fn hangs_once(calls: Arc<AtomicU32>) -> SharedHandler {
    Arc::new(move |_call: Call| {
        let first = calls.fetch_add(1, Ordering::SeqCst) == 0;
        async move {
            if first {
                tokio::time::sleep(Duration::from_secs(3_600)).await;
            }
            Ok(json!("done"))
        }
    })
}

#[tokio::test(start_paused = true)]
async fn a_hung_handler_fails_as_a_timeout_at_the_deadline() {
    let calls = Arc::new(AtomicU32::new(0));
    let handler = TimeoutLayer::new(250).layer(hangs_once(calls.clone()));
    let start = Instant::now();

    let failure = handler.call(call()).await.expect_err("times out");

    assert_eq!(failure.kind, FailureKind::Timeout);
    assert_eq!(start.elapsed(), Duration::from_millis(250));
}

#[tokio::test(start_paused = true)]
async fn each_retried_attempt_has_its_own_deadline() {
    let calls = Arc::new(AtomicU32::new(0));
    let policies = Policies::new()
        .retry(
            RetryPolicy::default()
                .attempts(5)
                .first_delay(Duration::from_millis(100))
                .jitter(0.0),
        )
        .timeout_ms(1_000);
    let handler = policies.wrap(hangs_once(calls.clone()));
    let start = Instant::now();

    assert_eq!(handler.call(call()).await, Ok(json!("done")));
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    // The first attempt's deadline, the backoff, then an instant second attempt.
    assert_eq!(start.elapsed(), Duration::from_millis(1_000 + 100));
}
