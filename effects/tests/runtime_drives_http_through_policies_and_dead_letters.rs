//! The whole effect path with no mocks: a reducer's HTTP intent goes through the
//! runtime, the retry and dead-letter policies and the real HTTP client to a real server
//! on 127.0.0.1, every attempt under the same idempotency key, and exactly one outcome
//! per dispatch comes back to the reducer; a dead letter replayed through the runtime
//! reaches the reducer too.

use crate::common::http_server;

use std::sync::Arc;
use std::time::Duration;

use http_server::{TestServer, loopback_handler};
use keel_core::{
    CausationId, Cause, CorrelationId, HttpRequest, Input, Intent, Outcome, OutcomeResult, Reducer,
    Timestamp,
};
use keel_effects::TokioClock;
use keel_effects::policy::{DeadLetterQueue, Policies, RetryPolicy};
use keel_effects::runtime::Runtime;

/// Posts a charge to the URL it is given and keeps every outcome.
struct Charger;

enum Msg {
    Charge(String),
    Outcome(Outcome),
}

impl From<Outcome> for Msg {
    fn from(outcome: Outcome) -> Self {
        Self::Outcome(outcome)
    }
}

impl Reducer for Charger {
    type State = Vec<OutcomeResult>;
    type Action = Input<Msg>;

    fn reduce_into(
        &self,
        outcomes: &mut Vec<OutcomeResult>,
        action: Input<Msg>,
        intents: &mut Vec<Intent>,
    ) {
        match action.body {
            Msg::Charge(url) => {
                action
                    .cause
                    .emitter(intents)
                    .emit(HttpRequest::post(url).timeout_ms(2_000));
            }
            Msg::Outcome(outcome) => outcomes.push(outcome.result),
        }
    }
}

fn charge(url: String) -> Input<Msg> {
    let cause = Cause::new(CorrelationId::from_u128(42), CausationId::from_u128(1));
    Input::new(cause, Timestamp::UNIX_EPOCH, Msg::Charge(url))
}

fn runtime(attempts: u32, dead_letters: &DeadLetterQueue) -> Runtime<Charger> {
    let policies = Policies::new()
        .retry(
            RetryPolicy::exponential()
                .attempts(attempts)
                .first_delay(Duration::from_millis(5))
                .max_delay(Duration::from_millis(20)),
        )
        .dead_letters(dead_letters.clone())
        .clock(Arc::new(TokioClock::new()));
    let http = policies.wrap(Arc::new(loopback_handler()));
    Runtime::builder(Charger)
        .http(http)
        .build()
        .expect("a valid runtime")
}

async fn outcomes_after(runtime: &Runtime<Charger>, count: usize) -> Vec<OutcomeResult> {
    for _ in 0..400 {
        let outcomes = runtime
            .inspect(&"charger".into(), Clone::clone)
            .await
            .expect("the instance runs");
        if outcomes.len() >= count {
            return outcomes;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("fewer than {count} outcomes arrived");
}

#[tokio::test]
async fn retries_reach_the_server_under_one_key_and_one_success_comes_back() {
    let server = TestServer::start().await;
    let dead_letters = DeadLetterQueue::new(16);
    let runtime = runtime(5, &dead_letters);
    runtime
        .spawn("charger".into(), Vec::new())
        .expect("a fresh instance");
    runtime
        .send(&"charger".into(), charge(server.url("/flaky/2")))
        .await
        .expect("sent");

    let outcomes = outcomes_after(&runtime, 1).await;
    let [OutcomeResult::Succeeded { value }] = outcomes.as_slice() else {
        panic!("expected one success, got {outcomes:?}");
    };
    // The server counts attempts per idempotency key: all three carried the same one.
    assert_eq!(value["body"]["attempts"], 3);
    assert_eq!(server.hits_on("/flaky/2"), 3);
    assert!(dead_letters.is_empty());
    let metrics = runtime.metrics();
    assert_eq!(
        (metrics.started, metrics.retried, metrics.succeeded),
        (1, 2, 1)
    );
}

#[tokio::test]
async fn a_dead_letter_replayed_through_the_runtime_reaches_the_reducer() {
    let server = TestServer::start().await;
    let dead_letters = DeadLetterQueue::new(16);
    let runtime = runtime(2, &dead_letters);
    runtime
        .spawn("charger".into(), Vec::new())
        .expect("a fresh instance");
    runtime
        .send(&"charger".into(), charge(server.url("/flaky/3")))
        .await
        .expect("sent");

    let outcomes = outcomes_after(&runtime, 1).await;
    assert!(
        matches!(&outcomes[0], OutcomeResult::Failed(failure) if failure.kind == keel_core::FailureKind::Transient && failure.reason.contains("503")),
        "{outcomes:?}"
    );
    let letters = dead_letters.list();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].attempts, 2);

    // The service recovers; the operator replays. Two more attempts: 503, then 200.
    runtime
        .replay_dead_letter(&dead_letters, letters[0].id)
        .await
        .expect("replayed");
    let outcomes = outcomes_after(&runtime, 2).await;
    let OutcomeResult::Succeeded { value } = &outcomes[1] else {
        panic!("expected the replay to succeed, got {outcomes:?}");
    };
    assert_eq!(
        value["body"]["attempts"], 4,
        "all four attempts carried the same key"
    );
    assert!(dead_letters.is_empty());
}
