//! The timers a shard holds are bounded (`OrchestratorConfig::timers_max`): a start that
//! would find them full is refused with `Error::Full`, to its caller, rather than
//! growing the queue or leaving a running saga without its timer. A saga that finishes
//! frees its timer, and starts are taken again.

use std::sync::Arc;

use keel_orchestrator::{Error, Orchestrator, SagaDefinition, SagaStatus, Step, StepAction};
use keel_store::MemoryStore;
use serde_json::json;

use crate::common::{Gate, Journal, one_shard, saga_id, settled};

const DAY_MS: u64 = 24 * 60 * 60 * 1000;

#[tokio::test]
async fn a_start_that_would_find_the_timers_full_is_refused_until_one_is_freed() {
    let (gate, journal) = (Gate::new(), Journal::new());
    let saga = SagaDefinition::builder("held.note")
        .step(Step::new("note", |_| {
            StepAction::custom("note.hold", json!({}))
        }))
        .deadline_ms(DAY_MS)
        .build()
        .expect("a valid saga");
    let config = keel_orchestrator::OrchestratorConfig {
        timers_max: 2,
        ..one_shard()
    };
    let (orchestrator, _) = Orchestrator::builder(Arc::new(MemoryStore::new()))
        .saga(saga)
        .handler(
            "note.hold",
            gate.service(&journal, "note.hold", Ok(json!({}))),
        )
        .config(config)
        .start()
        .await
        .expect("the orchestrator starts");

    // Each waiting saga holds its deadline: two fill the queue.
    for n in 0..2 {
        let id = saga_id(format!("held-{n}"));
        orchestrator
            .start_saga("held.note", id, json!({}))
            .await
            .expect("a saga starts while there is room");
    }
    let refused = orchestrator
        .start_saga("held.note", saga_id("held-2"), json!({}))
        .await
        .expect_err("the third start finds the timers full");
    assert!(
        matches!(refused, Error::Full { capacity: 2, .. }),
        "{refused:?}"
    );
    let stats = orchestrator.stats().await.expect("stats");
    assert_eq!((stats.sagas, stats.timers, stats.timers_refused), (2, 2, 0));

    gate.open();
    assert_eq!(
        settled(&orchestrator, &saga_id("held-0")).await,
        SagaStatus::Completed
    );
    assert_eq!(
        settled(&orchestrator, &saga_id("held-1")).await,
        SagaStatus::Completed
    );
    orchestrator
        .start_saga("held.note", saga_id("held-2"), json!({}))
        .await
        .expect("a finished saga freed its timer");
    orchestrator.shutdown().await;
}
