//! A graceful shutdown takes no new actions, finishes what is running within the grace
//! period, and hands back every intent it did not carry out: nothing is lost.

use crate::common::workflow;

use std::sync::Arc;
use std::time::Duration;

use keel_core::IntentKind;
use keel_effects::runtime::{HandBackReason, Runtime};
use keel_effects::{Call, Error, HandlerResult};
use serde_json::json;
use workflow::{Emit, Workflow, command, effect};

/// Tag 0 finishes after 10 ms; any other tag never finishes.
async fn slow(call: Call) -> HandlerResult {
    let IntentKind::Custom { payload, .. } = &call.intent.kind else {
        unreachable!()
    };
    if payload["tag"] == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
        return Ok(json!("quick"));
    }
    std::future::pending().await
}

#[tokio::test(start_paused = true)]
async fn running_effects_finish_and_the_rest_is_handed_back() {
    let runtime = Runtime::builder(Workflow)
        .custom(effect(), Arc::new(slow))
        .build()
        .unwrap();
    runtime.spawn("a".into(), Default::default()).unwrap();
    let emits = vec![
        Emit::Effect(0),
        Emit::Effect(1),
        Emit::Timer("later", i64::MAX / 2),
    ];
    runtime
        .send(&"a".into(), command(1, 0, emits))
        .await
        .unwrap();
    tokio::task::yield_now().await;

    let report = runtime.shutdown(Duration::from_millis(100)).await;
    let log = &report.instances[0].1;
    assert_eq!(
        log.succeeded, 1,
        "the quick effect finished and was reduced"
    );
    let mut reasons: Vec<_> = report.handed_back.iter().map(|h| h.reason).collect();
    reasons.sort_by_key(|reason| format!("{reason:?}"));
    assert_eq!(
        reasons,
        [HandBackReason::Aborted, HandBackReason::TimerPending]
    );
    let aborted = report
        .handed_back
        .iter()
        .find(|h| h.reason == HandBackReason::Aborted)
        .unwrap();
    assert_eq!(aborted.intent.id.position, 1);

    assert_eq!(
        runtime.send(&"a".into(), command(2, 0, vec![])).await,
        Err(Error::ShutDown)
    );
    assert!(matches!(
        runtime.spawn("b".into(), Default::default()),
        Err(Error::ShutDown)
    ));
}

#[tokio::test(start_paused = true)]
async fn actions_accepted_before_the_shutdown_are_still_reduced() {
    let runtime = Runtime::builder(Workflow).build().unwrap();
    runtime.spawn("a".into(), Default::default()).unwrap();
    for causation in 0..50 {
        runtime
            .send(&"a".into(), command(causation, 0, vec![]))
            .await
            .unwrap();
    }
    let report = runtime.shutdown(Duration::from_secs(1)).await;
    assert_eq!(report.instances[0].1.applied.len(), 50);
}
