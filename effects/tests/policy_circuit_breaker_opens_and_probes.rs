//! The circuit breaker stops calling a failing handler once it has failed
//! `failures_to_open` times in a row, lets exactly one probe through after `open_ms`,
//! closes when the probe succeeds and re-opens when it fails.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use keel_core::{Cause, EventType, Intent, IntentKind};
use keel_effects::policy::{BreakerConfig, BreakerLayer, Policies, RetryPolicy};
use keel_effects::{Call, Failure, FailureKind, InstanceId, Layer, Metrics, SharedHandler};
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

/// Fails with a transient failure until `healthy` is set, taking `latency_ms` either
/// way; counts its calls.
fn downstream(healthy: Arc<AtomicBool>, calls: Arc<AtomicU32>, latency_ms: u64) -> SharedHandler {
    Arc::new(move |_call: Call| {
        calls.fetch_add(1, Ordering::SeqCst);
        let healthy = healthy.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(latency_ms)).await;
            if healthy.load(Ordering::SeqCst) {
                Ok(json!("ok"))
            } else {
                Err(Failure::transient("503 service unavailable"))
            }
        }
    })
}

fn rejected_after(result: &Result<serde_json::Value, Failure>) -> Option<u64> {
    match result {
        Err(failure) if failure.kind == FailureKind::Unavailable => {
            failure.retry_after.map(|delay| delay.as_millis() as u64)
        }
        _ => None,
    }
}

#[tokio::test(start_paused = true)]
async fn the_breaker_opens_rejects_then_probes_once_after_open_ms() {
    let healthy = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicU32::new(0));
    let config = BreakerConfig::default().failures_to_open(3).open_ms(1_000);
    let handler = BreakerLayer::new(config).layer(downstream(healthy.clone(), calls.clone(), 0));
    let metrics = Metrics::default();

    for _ in 0..3 {
        let failure = handler.call(call(&metrics)).await.expect_err("fails");
        assert_eq!(failure.kind, FailureKind::Transient);
    }
    assert_eq!(calls.load(Ordering::SeqCst), 3);

    // Open: rejected without a call, told when to come back.
    assert_eq!(
        rejected_after(&handler.call(call(&metrics)).await),
        Some(1_000)
    );
    tokio::time::advance(Duration::from_millis(999)).await;
    assert_eq!(rejected_after(&handler.call(call(&metrics)).await), Some(1));
    assert_eq!(calls.load(Ordering::SeqCst), 3);

    // Half-open: one probe, which fails and re-opens the circuit for another open_ms.
    tokio::time::advance(Duration::from_millis(1)).await;
    let probe = handler
        .call(call(&metrics))
        .await
        .expect_err("the probe fails");
    assert_eq!(probe.kind, FailureKind::Transient);
    assert_eq!(calls.load(Ordering::SeqCst), 4);
    assert_eq!(
        rejected_after(&handler.call(call(&metrics)).await),
        Some(1_000)
    );

    // The next probe succeeds and closes the circuit: calls flow again.
    healthy.store(true, Ordering::SeqCst);
    tokio::time::advance(Duration::from_millis(1_000)).await;
    assert_eq!(handler.call(call(&metrics)).await, Ok(json!("ok")));
    assert_eq!(handler.call(call(&metrics)).await, Ok(json!("ok")));
    assert_eq!(calls.load(Ordering::SeqCst), 6);
}

#[tokio::test(start_paused = true)]
async fn while_the_probe_is_in_flight_other_calls_are_rejected() {
    let healthy = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicU32::new(0));
    let config = BreakerConfig::default()
        .failures_to_open(1)
        .open_ms(1_000)
        .half_open_retry_after_ms(200);
    let handler = BreakerLayer::new(config).layer(downstream(healthy.clone(), calls.clone(), 500));
    let metrics = Metrics::default();

    assert!(handler.call(call(&metrics)).await.is_err()); // opens at 500 ms, until 1500
    healthy.store(true, Ordering::SeqCst);
    tokio::time::advance(Duration::from_millis(1_000)).await;

    let probe = tokio::spawn(handler.call(call(&metrics)));
    tokio::task::yield_now().await; // let the probe start
    assert_eq!(
        rejected_after(&handler.call(call(&metrics)).await),
        Some(200)
    );
    assert_eq!(probe.await.expect("the probe task ran"), Ok(json!("ok")));
    assert_eq!(handler.call(call(&metrics)).await, Ok(json!("ok")));
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[tokio::test(start_paused = true)]
async fn permanent_failures_do_not_open_the_circuit() {
    let calls = Arc::new(AtomicU32::new(0));
    let counted = calls.clone();
    let config = BreakerConfig::default().failures_to_open(2);
    let handler = BreakerLayer::new(config).layer(Arc::new(move |_call: Call| {
        counted.fetch_add(1, Ordering::SeqCst);
        async { Err(Failure::permanent("404 no such order")) }
    }));

    for _ in 0..5 {
        let failure = handler
            .call(call(&Metrics::default()))
            .await
            .expect_err("fails");
        assert_eq!(failure.kind, FailureKind::Permanent);
    }
    assert_eq!(calls.load(Ordering::SeqCst), 5);
}

#[tokio::test(start_paused = true)]
async fn a_retry_outside_the_breaker_waits_for_the_probe_instead_of_burning_attempts() {
    let calls = Arc::new(AtomicU32::new(0));
    let counted = calls.clone();
    // Fails twice (which opens the circuit), then succeeds.
    let handler: SharedHandler = Arc::new(move |_call: Call| {
        let count = counted.fetch_add(1, Ordering::SeqCst) + 1;
        async move {
            if count <= 2 {
                Err(Failure::transient("503"))
            } else {
                Ok(json!("ok"))
            }
        }
    });
    let policies = Policies::new()
        .retry(
            RetryPolicy::default()
                .attempts(10)
                .first_delay(Duration::from_millis(100))
                .multiplier(1.0)
                .jitter(0.0),
        )
        .circuit_breaker(BreakerConfig::default().failures_to_open(2).open_ms(1_000));
    let handler = policies.wrap(handler);
    let metrics = Metrics::default();
    let start = Instant::now();

    assert_eq!(handler.call(call(&metrics)).await, Ok(json!("ok")));

    // t=0 fails; t=100 fails and opens until 1100; t=200 is rejected with 900 ms to go,
    // which the retry honours; t=1100 is the probe, and succeeds.
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(start.elapsed(), Duration::from_millis(1_100));
    assert_eq!(metrics.snapshot().retried, 3);
}
