//! A SQLite file written by a keel from before the index of instances (schema version 1,
//! records without marks) is migrated when opened, and then, since the index cannot
//! know its sagas, recovery and listing read its whole history, as they always did:
//! every unfinished saga resumes and every saga is listed. Over a real file, turned
//! into an old one with SQL.

use keel_orchestrator::{Orchestrator, SagaDefinition, SagaFilter, SagaStatus, Step, StepAction};
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

#[tokio::test]
async fn a_store_from_before_the_index_is_recovered_and_listed_from_its_whole_history() {
    let file = SqliteFile::new();
    // `done` completes; `a` and `b` wait on their second step when the process stops.
    let (journal, gate) = (Journal::new(), Gate::new());
    let (orchestrator, _) = Orchestrator::builder(file.open())
        .saga(errand())
        .handler("errand.go", journal.ok("errand.go", json!({})))
        .handler(
            "errand.back",
            gate.service(&journal, "errand.back", Ok(json!({}))),
        )
        .start()
        .await
        .expect("the orchestrator starts");
    let done = saga_id("done");
    orchestrator
        .start_saga("errand", done.clone(), json!({}))
        .await
        .expect("a start");
    gate.open();
    assert_eq!(settled(&orchestrator, &done).await, SagaStatus::Completed);
    orchestrator.shutdown().await;
    let journal = Journal::new();
    let (orchestrator, _) = Orchestrator::builder(file.open())
        .saga(errand())
        .handler("errand.go", journal.ok("errand.go", json!({})))
        .handler("errand.back", journal.silent("errand.back"))
        .start()
        .await
        .expect("the orchestrator starts again");
    for name in ["a", "b"] {
        orchestrator
            .start_saga("errand", saga_id(name), json!({}))
            .await
            .expect("a start");
    }
    for name in ["a", "b"] {
        crate::common::within("each saga reaching its second step", async {
            while journal.services_of(&saga_id(name)) != ["errand.go", "errand.back"] {
                tokio::task::yield_now().await;
            }
        })
        .await;
    }
    orchestrator.shutdown().await;

    // What an older keel left: no marks, no index, schema version 1.
    let db = rusqlite::Connection::open(file.path()).expect("the database opens");
    db.execute_batch(
        "UPDATE events SET metadata = NULL; DROP TABLE instances; \
         DELETE FROM keel_meta WHERE key = 'unindexed_head'; PRAGMA user_version = 1;",
    )
    .expect("the file is made old");
    let records: u64 = db
        .query_row("SELECT count(*) FROM events", [], |row| row.get(0))
        .expect("a count");
    drop(db);

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
        .expect("the old file opens and recovers");
    assert_eq!(recovered.resumed, 2, "{recovered:?}");
    assert_eq!(recovered.records, records, "the whole history is read");
    let listed = |status: &str| {
        let filter = SagaFilter {
            status: Some(status.to_owned()),
            saga_type: None,
        };
        let orchestrator = &orchestrator;
        async move {
            let sagas = orchestrator.list(&filter).await.expect("a list");
            sagas.iter().map(|s| s.id.to_string()).collect::<Vec<_>>()
        }
    };
    assert_eq!(listed("running").await, ["a", "b"]);
    assert_eq!(listed("completed").await, ["done"]);
    gate.open();
    for name in ["a", "b"] {
        assert_eq!(
            settled(&orchestrator, &saga_id(name)).await,
            SagaStatus::Completed
        );
    }
    assert_eq!(listed("completed").await, ["a", "b", "done"]);
    orchestrator.shutdown().await;
}
