//! A handler answers about 1.5 MB of JSON, more than a saga record may hold. The step
//! fails for good after exactly that one call, with a reason naming the size and the
//! limit; since the service answered success, its effect happened, so the step counts
//! as maybe applied and the saga parks, naming it, rather than undo the steps before it
//! as if nothing happened. Nothing is called again because a record could not be
//! written, and `wait` answers with a status at rest. Over a real SQLite file.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use keel_effects::{Call, Failure};
use keel_orchestrator::{Orchestrator, SagaDefinition, SagaStatus, Step, StepAction};
use keel_store::MemoryStore;
use serde_json::{Value, json};

use crate::common::stores::SqliteFile;
use crate::common::{Journal, one_shard, saga_id, settled};

const ROWS_BYTES: usize = 1_500_000;

fn report() -> SagaDefinition {
    SagaDefinition::builder("report.monthly")
        .step(
            Step::new("reserve", |_| StepAction::custom("slot.reserve", json!({})))
                .compensate(|_| StepAction::custom("slot.release", json!({}))),
        )
        .step(Step::new("fetch", |_| {
            StepAction::custom("report.fetch", json!({}))
        }))
        .build()
        .expect("a valid saga")
}

#[tokio::test]
async fn an_oversized_answer_fails_the_step_after_one_call_and_parks_the_saga() {
    let file = SqliteFile::new();
    let journal = Journal::new();
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&calls);
    let fetch = move |_: Call| {
        counted.fetch_add(1, Ordering::SeqCst);
        async { Ok::<Value, Failure>(json!({ "rows": "x".repeat(ROWS_BYTES) })) }
    };
    let (orchestrator, _) = Orchestrator::builder(file.open())
        .saga(report())
        .handler("slot.reserve", journal.ok("slot.reserve", json!({})))
        .handler("slot.release", journal.ok("slot.release", json!({})))
        .handler("report.fetch", fetch)
        .start()
        .await
        .expect("the orchestrator starts");
    let id = saga_id("report-2026-11");
    orchestrator
        .start_saga("report.monthly", id.clone(), json!({}))
        .await
        .expect("the saga starts");

    let status = settled(&orchestrator, &id).await;
    let SagaStatus::NeedsIntervention { reason, .. } = &status else {
        panic!("an answer too big to keep parks the saga: {status:?}");
    };
    let size = ROWS_BYTES + r#"{"rows":""}"#.len();
    assert!(
        reason.contains("`fetch`") && reason.contains(&size.to_string()),
        "the reason names the step and the answer's size: {reason}"
    );
    let limit = keel_orchestrator::Engine::new().answer_bytes_max(report().steps().len());
    assert!(
        reason.contains(&limit.to_string()),
        "and the limit: {reason}"
    );
    // Nothing is sent again for a record that could not be written.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "the service was called once"
    );
    assert!(
        journal.calls_to("slot.release").is_empty(),
        "nothing undone on a guess"
    );

    // The operator, having checked, skips it: the reservation is released.
    orchestrator.skip(&id).await.expect("skip is taken");
    let status = settled(&orchestrator, &id).await;
    assert!(
        matches!(status, SagaStatus::Compensated { .. }),
        "{status:?}"
    );
    assert_eq!(journal.calls_to("slot.release").len(), 1);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    orchestrator.shutdown().await;
}

#[tokio::test]
async fn an_input_too_big_for_a_record_is_refused_at_start_with_its_size() {
    let file = SqliteFile::new();
    let (orchestrator, _) = Orchestrator::builder(file.open())
        .saga(report())
        .start()
        .await
        .expect("the orchestrator starts");
    let id = saga_id("report-huge");
    let input = json!({ "rows": "x".repeat(ROWS_BYTES) });
    let error = orchestrator
        .start_saga("report.monthly", id.clone(), input)
        .await
        .expect_err("an input too big for a record is refused");
    assert!(
        matches!(
            error,
            keel_orchestrator::Error::TooLarge {
                what: "saga input",
                ..
            }
        ),
        "{error}"
    );
    assert!(error.to_string().contains("bytes"), "{error}");
    assert!(
        matches!(
            orchestrator.status(&id).await,
            Err(keel_orchestrator::Error::UnknownSaga { .. })
        ),
        "nothing of it was stored"
    );
    orchestrator.shutdown().await;
}

/// A check whose refusal quotes a 300 KB answer fails the step after that one call: the
/// reason is cut to fit a record, so no record is refused and nothing is sent again.
#[tokio::test]
async fn a_check_refusing_with_a_huge_reason_fails_the_step_after_one_call() {
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    let big = "x".repeat(300_000);
    let handler = move |_: Call| {
        counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let big = big.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(2)).await;
            Ok::<Value, Failure>(json!({ "blob": big }))
        }
    };
    let definition = SagaDefinition::builder("fetch")
        .step(
            Step::new("get", |_| StepAction::custom("blob.get", json!({})))
                .check(|v| Err(format!("unexpected answer {v}"))),
        )
        .build()
        .unwrap();
    let (orchestrator, _) = Orchestrator::builder(Arc::new(MemoryStore::new()))
        .saga(definition)
        .handler("blob.get", handler)
        .config(one_shard())
        .start()
        .await
        .unwrap();
    let id = saga_id("fetch-1");
    orchestrator
        .start_saga("fetch", id.clone(), json!({}))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let n = calls.load(std::sync::atomic::Ordering::SeqCst);
    let status = orchestrator.status(&id).await.unwrap();
    assert_eq!(n, 1, "one call only");
    let SagaStatus::Compensated { reason } = &status else {
        panic!("the refused answer turns the saga back: {status:?}");
    };
    assert!(
        reason.len() < 2_048,
        "the reason is cut: {} bytes",
        reason.len()
    );
}
