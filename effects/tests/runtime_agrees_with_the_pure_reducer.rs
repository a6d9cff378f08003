//! Law: for random commands to several instances, with handlers that succeed, fail or
//! time out after random delays, each instance's final state equals what the pure
//! reducer gives when applied by hand to the same actions and outcomes in the same
//! order; and every effect emitted got exactly one outcome (none lost, none doubled).

use crate::common::workflow;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use keel_core::{Input, Intent, IntentKind, OutcomeResult, Reducer};
use keel_effects::runtime::Runtime;
use keel_effects::{Call, Failure, HandlerResult};
use proptest::prelude::*;
use serde_json::json;
use workflow::{Emit, Log, Msg, Workflow, command, effect};

/// The handler's behaviour is a pure function of the tag, so the test can predict it.
fn planned(tag: u32) -> HandlerResult {
    match tag % 3 {
        0 => Ok(json!({ "tag": tag })),
        1 => Err(Failure::permanent(format!("tag {tag} refused"))),
        _ => Err(Failure::timeout(format!("tag {tag} took too long"))),
    }
}

async fn handler(call: Call) -> HandlerResult {
    let IntentKind::Custom { payload, .. } = &call.intent.kind else {
        return Err(Failure::permanent("not custom"));
    };
    let tag = payload["tag"].as_u64().unwrap_or_default() as u32;
    tokio::time::sleep(Duration::from_millis(u64::from(tag % 40))).await;
    planned(tag)
}

fn emits() -> impl Strategy<Value = Vec<Emit>> {
    prop::collection::vec(any::<u32>().prop_map(Emit::Effect), 0..4)
}

/// (instance index, emits) in the order they are sent.
fn script() -> impl Strategy<Value = (usize, Vec<(usize, Vec<Emit>)>)> {
    (1..4_usize).prop_flat_map(|instances| {
        (
            Just(instances),
            prop::collection::vec((0..instances, emits()), 0..16),
        )
    })
}

fn run(instances: usize, sends: &[(usize, Vec<Emit>)]) -> Vec<Log> {
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("the test setup works");
    tokio.block_on(async {
        let runtime = Runtime::builder(Workflow)
            .custom(effect(), Arc::new(handler))
            .build()
            .expect("the test setup works");
        for index in 0..instances {
            runtime
                .spawn(index.to_string().into(), Log::default())
                .expect("the test setup works");
        }
        for (step, (index, emits)) in sends.iter().enumerate() {
            let action = command(step as u128 + 1, step as i64, emits.clone());
            runtime
                .send(&index.to_string().into(), action)
                .await
                .expect("the test setup works");
            if step % 3 == 0 {
                // Let some effects finish between sends, so outcomes interleave.
                tokio::time::sleep(Duration::from_millis(7)).await;
            }
        }
        let report = runtime.shutdown(Duration::from_secs(60)).await;
        assert!(
            report.handed_back.is_empty(),
            "nothing should be handed back: {:?}",
            report.handed_back
        );
        assert!(report.faults.is_empty());
        report.instances.into_iter().map(|(_, log)| log).collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn the_runtime_state_equals_the_pure_reducer_applied_by_hand((instances, sends) in script()) {
        for live in run(instances, &sends) {
            // Apply the very actions the runtime applied, in its order, by hand.
            let mut by_hand = Log::default();
            let mut emitted: Vec<Intent> = Vec::new();
            for action in &live.applied {
                let (next, intents) = Workflow.reduce(by_hand, action.clone());
                by_hand = next;
                emitted.extend(intents);
            }
            prop_assert_eq!(&by_hand, &live);

            // Exactly one outcome per emitted effect, carrying the planned result.
            let mut outcomes: HashMap<_, Vec<&OutcomeResult>> = HashMap::new();
            for action in &live.applied {
                if let Msg::Outcome(outcome) = &action.body {
                    outcomes.entry(outcome.intent).or_default().push(&outcome.result);
                }
            }
            prop_assert_eq!(outcomes.len(), emitted.len());
            for intent in &emitted {
                let IntentKind::Custom { payload, .. } = &intent.kind else { unreachable!() };
                let tag = payload["tag"].as_u64().unwrap() as u32;
                let expected = match planned(tag) {
                    Ok(value) => OutcomeResult::Succeeded { value },
                    Err(failure) if failure.kind == keel_effects::FailureKind::Timeout => OutcomeResult::TimedOut,
                    Err(failure) => OutcomeResult::Failed(failure),
                };
                prop_assert_eq!(outcomes.get(&intent.id).map(Vec::as_slice), Some(&[&expected][..]));
            }
        }
    }
}

#[test]
fn commands_are_applied_in_the_order_they_were_sent() {
    let sends: Vec<(usize, Vec<Emit>)> = (0..200).map(|_| (0, vec![])).collect();
    let log = run(1, &sends).remove(0);
    let order: Vec<u128> = log
        .applied
        .iter()
        .map(|input: &Input<Msg>| input.cause.causation.uuid().as_u128())
        .collect();
    assert_eq!(order, (1..=200).collect::<Vec<u128>>());
}
