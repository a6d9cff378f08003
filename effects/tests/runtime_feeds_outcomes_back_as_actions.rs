//! Every intent's outcome comes back to the instance that emitted it as an action,
//! caused by the intent, in the same workflow.

use crate::common::workflow;

use std::sync::Arc;
use std::time::Duration;

use keel_core::{Outcome, OutcomeResult};
use keel_effects::runtime::Runtime;
use keel_effects::{Call, Failure, HandlerResult};
use serde_json::json;
use workflow::{Emit, Msg, Workflow, command, effect};

async fn even_succeeds(call: Call) -> HandlerResult {
    let tag = call.intent.kind.clone();
    let keel_core::IntentKind::Custom { payload, .. } = tag else {
        return Err(Failure::permanent("not custom"));
    };
    match payload["tag"].as_u64() {
        Some(tag) if tag % 2 == 0 => Ok(json!({ "tag": tag })),
        _ => Err(Failure::permanent("odd tags fail")),
    }
}

#[tokio::test(start_paused = true)]
async fn successes_and_failures_are_reduced_by_the_emitting_instance() {
    let runtime = Runtime::builder(Workflow)
        .custom(effect(), Arc::new(even_succeeds))
        .build()
        .unwrap();
    runtime.spawn("a".into(), Default::default()).unwrap();
    runtime.spawn("b".into(), Default::default()).unwrap();
    let emits = vec![Emit::Effect(0), Emit::Effect(1), Emit::Effect(2)];
    runtime
        .send(&"a".into(), command(10, 0, emits))
        .await
        .unwrap();
    runtime
        .send(&"b".into(), command(20, 0, vec![Emit::Effect(3)]))
        .await
        .unwrap();

    let report = runtime.shutdown(Duration::from_secs(5)).await;
    let (a, b) = (&report.instances[0].1, &report.instances[1].1);
    assert_eq!((a.succeeded, a.failed), (2, 1));
    assert_eq!((b.succeeded, b.failed), (0, 1));
    assert!(report.handed_back.is_empty());

    // Each outcome action is caused by its intent and stays in the workflow.
    let outcomes: Vec<&Outcome> = a
        .applied
        .iter()
        .filter_map(|input| match &input.body {
            Msg::Outcome(outcome) => {
                assert_eq!(input.cause, outcome.cause());
                Some(outcome)
            }
            Msg::Command(_) => None,
        })
        .collect();
    let mut positions: Vec<u32> = outcomes.iter().map(|o| o.intent.position).collect();
    positions.sort_unstable();
    assert_eq!(positions, [0, 1, 2]);
    assert!(
        outcomes
            .iter()
            .all(|o| o.intent.causation == keel_core::CausationId::from_u128(10))
    );
    let failed = outcomes.iter().find(|o| o.intent.position == 1).unwrap();
    assert_eq!(
        failed.result,
        OutcomeResult::Failed(keel_core::Failure::permanent("odd tags fail"))
    );
}

#[tokio::test(start_paused = true)]
async fn an_intent_without_a_handler_fails_with_a_reason() {
    let runtime = Runtime::builder(Workflow).build().unwrap();
    runtime.spawn("a".into(), Default::default()).unwrap();
    runtime
        .send(&"a".into(), command(1, 0, vec![Emit::Effect(0)]))
        .await
        .unwrap();
    let report = runtime.shutdown(Duration::from_secs(1)).await;
    let log = &report.instances[0].1;
    assert_eq!(log.failed, 1);
    let Msg::Outcome(outcome) = &log.applied[1].body else {
        panic!("expected an outcome")
    };
    assert!(
        matches!(&outcome.result, OutcomeResult::Failed(failure) if failure.reason.contains("no handler"))
    );
}
