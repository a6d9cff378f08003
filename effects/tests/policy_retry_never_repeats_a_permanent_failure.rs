//! A permanent failure (a 4xx, bad input) is returned after one call: retrying it
//! could not help.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use keel_core::{Cause, EventType, Intent, IntentKind};
use keel_effects::policy::{RetryLayer, RetryPolicy};
use keel_effects::{Call, Failure, FailureKind, InstanceId, Layer, Metrics};
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

#[tokio::test(start_paused = true)]
async fn a_permanent_failure_is_called_once_and_returned_as_it_is() {
    let calls = Arc::new(AtomicU32::new(0));
    let counted = calls.clone();
    let handler =
        RetryLayer::new(RetryPolicy::default().attempts(10)).layer(Arc::new(move |_call: Call| {
            counted.fetch_add(1, Ordering::SeqCst);
            async { Err(Failure::permanent("422: the order has no lines")) }
        }));
    let metrics = Metrics::default();
    let start = Instant::now();

    let result = handler.call(call(&metrics)).await;

    let failure = result.expect_err("a permanent failure stays a failure");
    assert_eq!(failure.kind, FailureKind::Permanent);
    assert_eq!(failure.reason, "422: the order has no lines");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(metrics.snapshot().retried, 0);
}
