//! User code that panics fails one attempt, not the orchestrator. A handler that panics
//! for one saga, a step closure that panics building its action, a compensation closure
//! that panics: each fails that attempt as permanent, with the panic's message, and the
//! shard (one shard here, so every saga shares it) goes on running every other saga. A
//! handler may have acted before it panicked, so its step counts as maybe applied and
//! the saga parks; a closure's panic means no call went out.
//! A closure that panics while recovery rebuilds a call parks that saga with the reason
//! instead of failing `Orchestrator::start` on every restart.

use std::sync::Arc;
use std::time::Duration;

use keel_effects::{Call, Failure};
use keel_orchestrator::core::IntentKind;
use keel_orchestrator::{Orchestrator, RetryPolicy, SagaDefinition, SagaStatus, Step, StepAction};
use keel_store::MemoryStore;
use serde_json::{Value, json};

use crate::common::stores::SqliteFile;
use crate::common::{Journal, one_shard, saga_id, settled};

fn greeting(step: Step) -> SagaDefinition {
    SagaDefinition::builder("greeting")
        .step(step)
        .build()
        .expect("a valid saga")
}

/// Starts sagas `ok-0`..`ok-4` and checks that each completes.
async fn others_complete(orchestrator: &Orchestrator) {
    for n in 0..5 {
        let id = saga_id(format!("ok-{n}"));
        orchestrator
            .start_saga("greeting", id.clone(), json!({ "name": "Ada" }))
            .await
            .expect("the shard still takes sagas");
        assert_eq!(settled(orchestrator, &id).await, SagaStatus::Completed);
    }
}

fn compensated_because(status: &SagaStatus, needle: &str) {
    let SagaStatus::Compensated { reason } = status else {
        panic!("expected Compensated, not {status:?}");
    };
    assert!(
        reason.contains(needle),
        "the reason names the panic: {reason}"
    );
}

#[tokio::test]
async fn a_handler_that_panics_fails_its_attempt_and_the_other_sagas_go_on() {
    let hello = |call: Call| async move {
        let IntentKind::Custom { payload, .. } = &call.intent.kind else {
            return Err(Failure::permanent("not a custom call"));
        };
        if payload["to"] == "boom" {
            panic!("cannot greet {}", payload["to"]);
        }
        Ok::<Value, Failure>(json!("hi"))
    };
    let step = Step::new("hello", |ctx| {
        StepAction::custom("say.hello", json!({ "to": ctx.input()["name"] }))
    })
    .retry(
        RetryPolicy::exponential()
            .attempts(3)
            .first_delay(Duration::from_millis(10)),
    );
    let (orchestrator, _) = Orchestrator::builder(Arc::new(MemoryStore::new()))
        .saga(greeting(step))
        .handler("say.hello", hello)
        .config(one_shard())
        .start()
        .await
        .expect("the orchestrator starts");
    let bad = saga_id("bad-1");
    orchestrator
        .start_saga("greeting", bad.clone(), json!({ "name": "boom" }))
        .await
        .expect("the saga starts");
    // The handler may have acted before it panicked: the saga parks, naming the step
    // and the panic, rather than take the panic as proof that nothing happened.
    let status = settled(&orchestrator, &bad).await;
    let SagaStatus::NeedsIntervention { reason, .. } = &status else {
        panic!("a handler that panicked leaves its step maybe applied: {status:?}");
    };
    assert!(
        reason.contains("`hello`") && reason.contains("panicked: cannot greet \"boom\""),
        "{reason}"
    );
    others_complete(&orchestrator).await;
    orchestrator.shutdown().await;
}

#[tokio::test]
async fn a_step_closure_that_panics_fails_its_attempt_and_the_other_sagas_go_on() {
    let journal = Journal::new();
    let step = Step::new("hello", |ctx| {
        let name = ctx.input()["name"].as_str().unwrap_or_default().to_owned();
        assert_ne!(name, "boom", "names must not explode");
        StepAction::custom("say.hello", json!({ "to": name }))
    })
    .timeout_ms(60_000);
    let (orchestrator, _) = Orchestrator::builder(Arc::new(MemoryStore::new()))
        .saga(greeting(step))
        .handler("say.hello", journal.ok("say.hello", json!("hi")))
        .config(one_shard())
        .start()
        .await
        .expect("the orchestrator starts");
    let bad = saga_id("bad-2");
    orchestrator
        .start_saga("greeting", bad.clone(), json!({ "name": "boom" }))
        .await
        .expect("the saga starts: the panic fails its step, not the start");
    let status = settled(&orchestrator, &bad).await;
    compensated_because(&status, "names must not explode");
    assert!(
        journal.services_of(&bad).is_empty(),
        "no call went out for it"
    );
    let stats = orchestrator.stats().await.expect("stats");
    assert_eq!(
        stats.timers, 0,
        "the failed attempt's timeout is not kept: {stats:?}"
    );
    others_complete(&orchestrator).await;
    orchestrator.shutdown().await;
}

#[tokio::test]
async fn a_compensation_closure_that_panics_parks_its_saga_for_an_operator() {
    let journal = Journal::new();
    let definition = SagaDefinition::builder("greeting")
        .step(
            Step::new("book", |_| StepAction::custom("room.book", json!({})))
                .compensate(|_| panic!("the undo was never written")),
        )
        .step(Step::new("pay", |_| {
            StepAction::custom("card.charge", json!({}))
        }))
        .build()
        .expect("a valid saga");
    let (orchestrator, _) = Orchestrator::builder(Arc::new(MemoryStore::new()))
        .saga(definition)
        .handler("room.book", journal.ok("room.book", json!({})))
        .handler(
            "card.charge",
            journal.failing("card.charge", Failure::permanent("declined")),
        )
        .config(one_shard())
        .start()
        .await
        .expect("the orchestrator starts");
    let id = saga_id("undo-1");
    orchestrator
        .start_saga("greeting", id.clone(), json!({}))
        .await
        .expect("the saga starts");
    let status = settled(&orchestrator, &id).await;
    let SagaStatus::NeedsIntervention { reason, .. } = &status else {
        panic!("a compensation that cannot run parks the saga: {status:?}");
    };
    assert!(
        reason.contains("`book`") && reason.contains("the undo was never written"),
        "{reason}"
    );
    orchestrator.shutdown().await;
}

#[tokio::test]
async fn a_closure_that_panics_during_recovery_parks_its_saga_and_start_goes_on() {
    let file = SqliteFile::new();
    let journal = Journal::new();
    // First run: the step's service never answers, so the saga is running when the
    // orchestrator stops.
    let step = Step::new("hello", |_| StepAction::custom("say.hello", json!({})));
    let (orchestrator, _) = Orchestrator::builder(file.open())
        .saga(greeting(step))
        .handler("say.hello", journal.silent("say.hello"))
        .config(one_shard())
        .start()
        .await
        .expect("the orchestrator starts");
    let id = saga_id("recover-1");
    orchestrator
        .start_saga("greeting", id.clone(), json!({}))
        .await
        .expect("the saga starts");
    orchestrator.shutdown().await;

    // Next run: the new build's closure panics when recovery rebuilds the call.
    let step = Step::new("hello", |_| -> StepAction {
        panic!("a bug shipped in the new build")
    });
    let (orchestrator, recovered) = Orchestrator::builder(file.open())
        .saga(greeting(step))
        .handler("say.hello", journal.ok("say.hello", json!("hi")))
        .config(one_shard())
        .start()
        .await
        .expect("recovery parks the saga instead of failing the start");
    assert_eq!(recovered.resumed, 1);
    let status = settled(&orchestrator, &id).await;
    let SagaStatus::NeedsIntervention { reason, .. } = &status else {
        panic!("the saga whose call cannot be rebuilt parks: {status:?}");
    };
    assert!(
        reason.contains("`hello`") && reason.contains("a bug shipped in the new build"),
        "{reason}"
    );
    orchestrator.shutdown().await;
}

/// A check that panicked parks its saga; once the next build fixes the check, recovery
/// rebuilds the saga from its log (the panic is recorded, not run again) and a retry
/// ends it.
#[tokio::test]
async fn a_check_that_panicked_and_is_fixed_leaves_its_saga_recoverable() {
    let file = SqliteFile::new();
    let journal = Journal::new();
    let def = |panics: bool| {
        SagaDefinition::builder("checked")
            .step(
                Step::new("get", |_| StepAction::custom("thing.get", json!({}))).check(move |_| {
                    if panics {
                        panic!("check bug");
                    }
                    Ok(())
                }),
            )
            .build()
            .unwrap()
    };
    let (orchestrator, _) = Orchestrator::builder(file.open())
        .saga(def(true))
        .handler("thing.get", journal.ok("thing.get", json!({})))
        .config(one_shard())
        .start()
        .await
        .unwrap();
    let id = saga_id("chk-1");
    orchestrator
        .start_saga("checked", id.clone(), json!({}))
        .await
        .unwrap();
    let status = settled(&orchestrator, &id).await;
    let SagaStatus::NeedsIntervention { reason, .. } = &status else {
        panic!("a success its check cannot judge parks the saga: {status:?}");
    };
    assert!(reason.contains("check bug"), "{reason}");
    orchestrator.shutdown().await;
    let (orchestrator, recovered) = Orchestrator::builder(file.open())
        .saga(def(false))
        .handler("thing.get", journal.ok("thing.get", json!({})))
        .config(one_shard())
        .start()
        .await
        .unwrap();
    assert!(recovered.failed.is_empty(), "{recovered:?}");
    assert_eq!(orchestrator.wait(&id).await.unwrap(), status);
    // The saga had turned back; asked again, the step answers, its check passes now,
    // and the saga ends turning back as it had decided.
    orchestrator.retry(&id).await.unwrap();
    let status = settled(&orchestrator, &id).await;
    assert!(
        matches!(status, SagaStatus::Compensated { .. }),
        "{status:?}"
    );
    orchestrator.shutdown().await;
}
