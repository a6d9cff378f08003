//! A saga whose compensation keeps failing stops for an operator and leaves a dead
//! letter; `keel dead-letters list` shows it, and `keel sagas retry` (another process)
//! appends a request that the running orchestrator carries out: once the service works
//! again, the saga ends compensated.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use keel_effects::{Call, Failure};
use keel_orchestrator::{
    Orchestrator, RetryPolicy, SagaDefinition, SagaId, SagaStatus, Step, StepAction,
};
use keel_store::sqlite::{SqliteConfig, SqliteStore};
use serde_json::{Value, json};

use crate::common::{TempDir, keel};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keel_retries_a_parked_saga_that_a_running_orchestrator_then_finishes() {
    let dir = TempDir::new("steer");
    let db = dir.db();
    let store = Arc::new(SqliteStore::open(&db, SqliteConfig::default()).expect("the store opens"));
    let broken = Arc::new(AtomicBool::new(true));
    let saga = SagaDefinition::builder("vault.transfer")
        .step(
            Step::new("debit", |_| StepAction::custom("vault.debit", json!({})))
                .compensate(|_| StepAction::custom("vault.credit", json!({})))
                .compensation_retry(
                    RetryPolicy::exponential()
                        .attempts(2)
                        .first_delay(Duration::from_millis(10)),
                ),
        )
        .step(Step::new("credit-other", |_| {
            StepAction::custom("vault.refuse", json!({}))
        }))
        .build()
        .expect("a valid saga");
    let undo_broken = Arc::clone(&broken);
    let (orchestrator, _) = Orchestrator::builder(store)
        .saga(saga)
        .handler("vault.debit", |_: Call| async { Ok(json!({ "ok": true })) })
        .handler("vault.refuse", |_: Call| async {
            Err(Failure::permanent("account closed"))
        })
        .handler("vault.credit", move |_: Call| {
            let broken = undo_broken.load(Ordering::SeqCst);
            async move {
                if broken {
                    Err(Failure::transient("ledger offline"))
                } else {
                    Ok(json!({ "ok": true }))
                }
            }
        })
        .start()
        .await
        .expect("the orchestrator starts");
    let id = SagaId::new("transfer-1").expect("an id");
    orchestrator
        .start_saga("vault.transfer", id.clone(), json!({}))
        .await
        .expect("started");
    let status = orchestrator.wait(&id).await.expect("at rest");
    assert!(
        matches!(status, SagaStatus::NeedsIntervention { .. }),
        "{status:?}"
    );

    let db = db.to_str().expect("a UTF-8 path").to_owned();
    let (code, letters, err) = keel(&["--db", &db, "--json", "dead-letters", "list"]);
    assert_eq!(code, 0, "{err}");
    let letters: Vec<Value> = serde_json::from_str(&letters).expect("JSON");
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0]["saga"], "transfer-1");
    assert_eq!(letters[0]["steps"], json!(["debit"]));
    assert!(
        letters[0]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("compensation of step `debit`")
    );

    broken.store(false, Ordering::SeqCst);
    let (code, said, err) = keel(&["--db", &db, "sagas", "retry", "transfer-1"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        said.contains("requested `retry` for saga transfer-1"),
        "{said}"
    );

    // The orchestrator polls the request stream; give it a few seconds at most.
    let mut status = orchestrator.status(&id).await.expect("a status");
    for _ in 0..100 {
        if status.is_finished() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        status = orchestrator.status(&id).await.expect("a status");
    }
    assert!(
        matches!(status, SagaStatus::Compensated { .. }),
        "{status:?}"
    );
    let (code, shown, _) = keel(&["--db", &db, "sagas", "show", "transfer-1"]);
    assert_eq!(code, 0);
    assert!(
        shown.contains("operator: retry") && shown.contains("debit: undone"),
        "{shown}"
    );
    orchestrator.shutdown().await;
}
