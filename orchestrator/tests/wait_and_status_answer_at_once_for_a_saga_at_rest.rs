//! `wait` and `status` answer at once for a saga that is already at rest or idle, even
//! when nothing else is happening in the orchestrator: `wait` on a saga that finished
//! (or is parked) before the call, `status` of one that finished or waits on a step.
//! Each saga is first seen to be where it is through its log, so the call comes while
//! the orchestrator has nothing else to do.

use std::sync::Arc;
use std::time::Duration;

use keel_effects::Failure;
use keel_effects::TokioClock;
use keel_orchestrator::{
    Orchestrator, RetryPolicy, SagaDefinition, SagaId, SagaStatus, Step, StepAction,
};
use keel_store::MemoryStore;
use serde_json::json;

use crate::common::{Gate, Journal, logged_status, one_shard, saga_id, settled};

/// Far longer than an answer takes; under the paused clock a call that is never
/// answered fails the test at once instead of hanging it.
const ANSWER_MAX: Duration = Duration::from_secs(1);

fn order() -> SagaDefinition {
    SagaDefinition::builder("shop.order")
        .step(
            Step::new("reserve", |_| {
                StepAction::custom("stock.reserve", json!({}))
            })
            .compensate(|_| StepAction::custom("stock.release", json!({}))),
        )
        .step(
            Step::new("charge", |_| {
                StepAction::custom("payment.charge", json!({}))
            })
            .retry(RetryPolicy::none()),
        )
        .build()
        .expect("a valid saga")
}

/// Reads the log until saga `id` reaches `name` (bounded by the paused clock).
async fn logged(orchestrator: &Orchestrator, id: &SagaId, name: &str) {
    for _ in 0..1_000 {
        if logged_status(orchestrator, id).await.name() == name {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("saga {id} never became {name}");
}

#[tokio::test(start_paused = true)]
async fn wait_and_status_answer_for_a_saga_that_already_completed() {
    let journal = Journal::new();
    let (orchestrator, _) = Orchestrator::builder(Arc::new(MemoryStore::new()))
        .saga(order())
        .handler("stock.reserve", journal.ok("stock.reserve", json!({})))
        .handler("payment.charge", journal.ok("payment.charge", json!({})))
        .start()
        .await
        .unwrap();
    let id = saga_id("order-1");
    orchestrator
        .start_saga("shop.order", id.clone(), json!({}))
        .await
        .unwrap();
    logged(&orchestrator, &id, "completed").await;

    let waited = tokio::time::timeout(ANSWER_MAX, orchestrator.wait(&id)).await;
    assert_eq!(waited, Ok(Ok(SagaStatus::Completed)), "wait");
    let status = tokio::time::timeout(ANSWER_MAX, orchestrator.status(&id)).await;
    assert_eq!(status, Ok(Ok(SagaStatus::Completed)), "status");
    orchestrator.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn status_answers_for_a_saga_waiting_on_a_step() {
    let (journal, gate) = (Journal::new(), Gate::new());
    let (orchestrator, _) = Orchestrator::builder(Arc::new(MemoryStore::new()))
        .saga(order())
        .handler(
            "stock.reserve",
            gate.service(&journal, "stock.reserve", Ok(json!({}))),
        )
        .handler("payment.charge", journal.ok("payment.charge", json!({})))
        .start()
        .await
        .unwrap();
    let id = saga_id("order-2");
    orchestrator
        .start_saga("shop.order", id.clone(), json!({}))
        .await
        .unwrap();
    gate.arrivals(1).await;

    let status = tokio::time::timeout(ANSWER_MAX, orchestrator.status(&id)).await;
    assert_eq!(status, Ok(Ok(SagaStatus::Running)));
    gate.open();
    let waited = tokio::time::timeout(ANSWER_MAX, orchestrator.wait(&id)).await;
    assert_eq!(waited, Ok(Ok(SagaStatus::Completed)));
    orchestrator.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn wait_answers_for_a_saga_already_parked() {
    let journal = Journal::new();
    let (orchestrator, _) = Orchestrator::builder(Arc::new(MemoryStore::new()))
        .saga(order())
        .handler("stock.reserve", journal.ok("stock.reserve", json!({})))
        .handler(
            "payment.charge",
            journal.failing("payment.charge", Failure::permanent("card declined")),
        )
        .handler(
            "stock.release",
            journal.failing("stock.release", Failure::permanent("no such reservation")),
        )
        .start()
        .await
        .unwrap();
    let id = saga_id("order-3");
    orchestrator
        .start_saga("shop.order", id.clone(), json!({}))
        .await
        .unwrap();
    logged(&orchestrator, &id, "needs_intervention").await;

    let waited = tokio::time::timeout(ANSWER_MAX, orchestrator.wait(&id))
        .await
        .expect("wait answers for a parked saga")
        .unwrap();
    assert!(
        matches!(&waited, SagaStatus::NeedsIntervention { reason, .. } if reason.contains("`reserve`")),
        "{waited:?}"
    );
    orchestrator.shutdown().await;
}

/// A `wait` that comes in the same batch as an operator's retry of a parked saga waits for
/// the saga's next rest rather than report it as not running.
#[tokio::test(start_paused = true)]
async fn a_wait_with_an_operator_retry_in_one_batch_waits_for_the_next_rest() {
    let journal = Journal::new();
    let definition = SagaDefinition::builder("slow")
        .step(
            Step::new("go", |_| StepAction::custom("slow.go", json!({})))
                .retry(RetryPolicy::none())
                .timeout_ms(50),
        )
        .build()
        .unwrap();
    let (orchestrator, _) = Orchestrator::builder(Arc::new(MemoryStore::new()))
        .saga(definition)
        .handler("slow.go", journal.silent("slow.go"))
        .clock(TokioClock::new())
        .config(one_shard())
        .start()
        .await
        .unwrap();
    let id = saga_id("slow-1");
    orchestrator
        .start_saga("slow", id.clone(), json!({}))
        .await
        .unwrap();
    let status = settled(&orchestrator, &id).await;
    assert!(
        matches!(status, SagaStatus::NeedsIntervention { .. }),
        "{status:?}"
    );
    let (waited, retried) = tokio::join!(orchestrator.wait(&id), orchestrator.retry(&id));
    retried.unwrap();
    let waited = waited.expect("the wait answers with a status at rest");
    assert!(
        matches!(waited, SagaStatus::NeedsIntervention { .. }),
        "{waited:?}"
    );
}
