//! With every policy stacked, each attempt passes the breaker, the rate and concurrency
//! limits and its own timeout; retries happen inside, and the dead letter is written
//! once, after the last attempt.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use keel_core::{Cause, EventType, Intent, IntentKind};
use keel_effects::policy::{BreakerConfig, DeadLetterQueue, Policies, RateLimitLayer, RetryPolicy};
use keel_effects::{Call, Failure, FailureKind, InstanceId, Metrics, SharedHandler};
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

fn stack(queue: &DeadLetterQueue) -> Policies {
    Policies::new()
        .dead_letters(queue.clone())
        .retry(
            RetryPolicy::default()
                .attempts(4)
                .first_delay(Duration::from_millis(100))
                .jitter(0.0),
        )
        .circuit_breaker(BreakerConfig::default().failures_to_open(10))
        .rate_limit(RateLimitLayer::per_second(100))
        .concurrency_limit(4)
        .timeout_ms(1_000)
}

#[tokio::test(start_paused = true)]
async fn a_hang_then_a_failure_then_a_success_is_no_dead_letter() {
    let calls = Arc::new(AtomicU32::new(0));
    let counted = calls.clone();
    let handler: SharedHandler = Arc::new(move |_call: Call| {
        let count = counted.fetch_add(1, Ordering::SeqCst) + 1;
        async move {
            match count {
                1 => {
                    tokio::time::sleep(Duration::from_secs(3_600)).await;
                    Ok(json!("too late"))
                }
                2 => Err(Failure::transient("503")),
                _ => Ok(json!("ok")),
            }
        }
    });
    let queue = DeadLetterQueue::new(10);
    let handler = stack(&queue).wrap(handler);
    let metrics = Metrics::default();
    let start = Instant::now();

    assert_eq!(handler.call(call(&metrics)).await, Ok(json!("ok")));

    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(start.elapsed(), Duration::from_millis(1_000 + 100 + 200));
    assert!(queue.is_empty());
    let counted = metrics.snapshot();
    assert_eq!((counted.retried, counted.dead_lettered), (2, 0));
}

#[tokio::test(start_paused = true)]
async fn an_effect_that_always_times_out_is_dead_lettered_once_with_every_attempt() {
    let calls = Arc::new(AtomicU32::new(0));
    let counted = calls.clone();
    let handler: SharedHandler = Arc::new(move |_call: Call| {
        counted.fetch_add(1, Ordering::SeqCst);
        async {
            tokio::time::sleep(Duration::from_secs(3_600)).await;
            Ok(json!("never"))
        }
    });
    let queue = DeadLetterQueue::new(10);
    let handler = stack(&queue).wrap(handler);
    let metrics = Metrics::default();

    let failure = handler.call(call(&metrics)).await.expect_err("times out");

    assert_eq!(failure.kind, FailureKind::Timeout);
    assert_eq!(calls.load(Ordering::SeqCst), 4);
    let letters = queue.list();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].attempts, 4);
    assert_eq!(letters[0].error, failure);
    let counted = metrics.snapshot();
    assert_eq!((counted.retried, counted.dead_lettered), (3, 1));
}
