//! The outcome a reducer receives says how many attempts the retry layer made and, for a
//! failure, its class: a reducer can tell a permanent failure from a transient one that
//! ran out of retries, and the dead letter agrees on the count.

use crate::common::workflow;

use std::sync::Arc;
use std::time::Duration;

use keel_core::{IntentKind, Outcome, OutcomeResult};
use keel_effects::policy::{DeadLetterQueue, Policies, RetryPolicy};
use keel_effects::runtime::Runtime;
use keel_effects::{Call, Failure, HandlerFuture, SharedHandler, TokioClock};
use serde_json::json;
use workflow::{Emit, Log, Msg, Workflow, command, effect};

/// Answers by the intent's tag: tag 0 fails permanently; any other tag `n` fails
/// transiently `n - 1` times, then succeeds.
fn flaky_by_tag() -> SharedHandler {
    Arc::new(|call: Call| -> HandlerFuture {
        Box::pin(async move {
            let IntentKind::Custom { payload, .. } = &call.intent.kind else {
                return Err(Failure::permanent("not a custom intent"));
            };
            let tag = payload["tag"].as_u64().unwrap_or(0);
            match tag {
                0 => Err(Failure::permanent("refused")),
                _ if u64::from(call.attempt) < tag => Err(Failure::transient("busy")),
                _ => Ok(json!({ "attempt": call.attempt })),
            }
        })
    })
}

fn outcomes(log: &Log) -> Vec<&Outcome> {
    let mut outcomes: Vec<&Outcome> = log
        .applied
        .iter()
        .filter_map(|input| match &input.body {
            Msg::Outcome(outcome) => Some(outcome),
            Msg::Command(_) => None,
        })
        .collect();
    outcomes.sort_by_key(|outcome| outcome.intent.position);
    outcomes
}

#[tokio::test(start_paused = true)]
async fn outcomes_carry_the_attempts_made_and_the_class_of_the_failure() {
    let dead_letters = DeadLetterQueue::new(16);
    let policies = Policies::new()
        .dead_letters(dead_letters.clone())
        .clock(Arc::new(TokioClock::new()))
        .retry(
            RetryPolicy::exponential()
                .attempts(4)
                .first_delay(Duration::from_millis(10)),
        );
    let runtime = Runtime::builder(Workflow)
        .custom(effect(), policies.wrap(flaky_by_tag()))
        .build()
        .expect("a valid runtime");
    runtime.spawn("a".into(), Log::default()).expect("spawned");
    // Tags, by intent position: 1 succeeds at once, 3 on the third attempt, 9 never
    // within four attempts, 0 is refused.
    let emits = vec![
        Emit::Effect(1),
        Emit::Effect(3),
        Emit::Effect(9),
        Emit::Effect(0),
    ];
    runtime
        .send(&"a".into(), command(1, 0, emits))
        .await
        .expect("sent");
    let report = runtime.shutdown(Duration::from_secs(60)).await;
    let log = &report.instances[0].1;

    let seen: Vec<(u32, &OutcomeResult)> = outcomes(log)
        .iter()
        .map(|outcome| (outcome.attempts, &outcome.result))
        .collect();
    assert_eq!(
        seen,
        [
            (
                1,
                &OutcomeResult::Succeeded {
                    value: json!({ "attempt": 1 })
                }
            ),
            (
                3,
                &OutcomeResult::Succeeded {
                    value: json!({ "attempt": 3 })
                }
            ),
            (4, &OutcomeResult::Failed(Failure::transient("busy"))),
            (1, &OutcomeResult::Failed(Failure::permanent("refused"))),
        ]
    );

    // The dead letters saw the same counts as the reducer.
    let mut parked: Vec<(u32, u32)> = dead_letters
        .list()
        .iter()
        .map(|letter| (letter.intent.id.position, letter.attempts))
        .collect();
    parked.sort_unstable();
    assert_eq!(parked, [(2, 4), (3, 1)]);
}
