//! One record in the store that cannot be read (its bytes were damaged, by hand or by a
//! disk) stops neither the orchestrator's start nor the other sagas: the saga it belongs
//! to is reported in `Recovered::failed` and left as it is, and the others resume. Once
//! with a saga record whose payload is not a record, once with a row the store itself
//! cannot decode. Over a real SQLite file, damaged with SQL.

use keel_orchestrator::{Error, Orchestrator, SagaDefinition, SagaStatus, Step, StepAction};
use serde_json::json;

use crate::common::stores::SqliteFile;
use crate::common::{Gate, Journal, saga_id, settled};

fn errand() -> SagaDefinition {
    SagaDefinition::builder("errand")
        .step(Step::new("go", |_| {
            StepAction::custom("errand.go", json!({}))
        }))
        .step(Step::new("back", |_| {
            StepAction::custom("errand.back", json!({}))
        }))
        .build()
        .expect("a valid saga")
}

/// Runs three sagas until each waits on its second step, then stops.
async fn three_waiting_sagas(file: &SqliteFile) {
    let journal = Journal::new();
    let (orchestrator, _) = Orchestrator::builder(file.open())
        .saga(errand())
        .handler("errand.go", journal.ok("errand.go", json!({})))
        .handler("errand.back", journal.silent("errand.back"))
        .start()
        .await
        .expect("the orchestrator starts");
    for name in ["a", "b", "c"] {
        orchestrator
            .start_saga("errand", saga_id(name), json!({}))
            .await
            .expect("the saga starts");
    }
    for name in ["a", "b", "c"] {
        crate::common::within("each saga reaching its second step", async {
            while journal.services_of(&saga_id(name)) != ["errand.go", "errand.back"] {
                tokio::task::yield_now().await;
            }
        })
        .await;
    }
    orchestrator.shutdown().await;
}

/// Damages saga `b`'s second record with `set` (an SQL assignment).
fn damage(file: &SqliteFile, set: &str) {
    let db = rusqlite::Connection::open(file.path()).expect("the database opens");
    let changed = db
        .execute(
            &format!("UPDATE events SET {set} WHERE stream = 'saga-b' AND version = 2"),
            [],
        )
        .expect("the damage is done");
    assert_eq!(changed, 1);
}

async fn the_others_resume(file: &SqliteFile) {
    let (gate, journal) = (Gate::new(), Journal::new());
    let (orchestrator, recovered) = Orchestrator::builder(file.open())
        .saga(errand())
        .handler("errand.go", journal.ok("errand.go", json!({})))
        .handler(
            "errand.back",
            gate.service(&journal, "errand.back", Ok(json!({}))),
        )
        .start()
        .await
        .expect("one bad record does not stop the start");
    let failed: Vec<String> = recovered
        .failed
        .iter()
        .map(|(id, _)| id.to_string())
        .collect();
    assert_eq!(failed, ["b"], "{recovered:?}");
    assert_eq!(recovered.resumed, 2, "{recovered:?}");
    gate.open();
    for name in ["a", "c"] {
        assert_eq!(
            settled(&orchestrator, &saga_id(name)).await,
            SagaStatus::Completed
        );
    }
    assert!(
        journal.services_of(&saga_id("b")).is_empty(),
        "b is left untouched"
    );
    assert!(
        matches!(
            orchestrator.wait(&saga_id("b")).await,
            Err(Error::NotRunning { .. } | Error::Store(_) | Error::CorruptLog { .. })
        ),
        "waiting for b says it is not running rather than hang or report `running`"
    );
    orchestrator.shutdown().await;
}

#[tokio::test]
async fn a_saga_record_that_does_not_decode_fails_only_its_saga() {
    let file = SqliteFile::new();
    three_waiting_sagas(&file).await;
    damage(&file, "payload = X'7B6E6F7420612072656367726420'");
    the_others_resume(&file).await;
}

#[tokio::test]
async fn a_row_the_store_cannot_decode_fails_only_its_saga() {
    let file = SqliteFile::new();
    three_waiting_sagas(&file).await;
    damage(&file, "event_type = 'Not A Type!'");
    the_others_resume(&file).await;
}
