//! A timer cancelled is a timer freed: memory follows the timers that are live, not the
//! deadlines they were set for. 100,000 sagas with a one-day deadline that finish at once
//! leave no timer behind; while sagas wait, each holds exactly its own.

use std::sync::Arc;

use keel_orchestrator::{Orchestrator, SagaDefinition, Step, StepAction};
use keel_store::MemoryStore;
use serde_json::json;

use crate::common::{Journal, saga_id, within};

const SAGAS: usize = 100_000;
const DAY_MS: u64 = 24 * 60 * 60 * 1000;

fn definition(saga_type: &'static str, effect: &'static str) -> SagaDefinition {
    SagaDefinition::builder(saga_type)
        .step(Step::new("note", move |_| {
            StepAction::custom(effect, json!({}))
        }))
        .deadline_ms(DAY_MS)
        .build()
        .expect("a valid saga")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sagas_with_a_one_day_deadline_that_finish_quickly_leave_no_timer() {
    let journal = Journal::new();
    let (orchestrator, _) = Orchestrator::builder(Arc::new(MemoryStore::new()))
        .saga(definition("quick.note", "note.write"))
        .saga(definition("slow.note", "note.hold"))
        .handler("note.write", journal.ok("note.write", json!({})))
        .handler("note.hold", journal.silent("note.hold"))
        .start()
        .await
        .expect("the orchestrator starts");
    let orchestrator = Arc::new(orchestrator);

    // Waiting sagas hold their deadline timer each.
    for n in 0..10 {
        let id = saga_id(format!("slow-{n}"));
        orchestrator
            .start_saga("slow.note", id, json!({}))
            .await
            .expect("the saga starts");
    }
    let stats = orchestrator.stats().await.expect("stats");
    assert_eq!((stats.sagas, stats.timers), (10, 10), "{stats:?}");

    // 100,000 quick ones, a thousand at a time, each started and waited for.
    let mut clients = Vec::new();
    for client in 0..1_000 {
        let orchestrator = Arc::clone(&orchestrator);
        clients.push(tokio::spawn(async move {
            for n in (client..SAGAS).step_by(1_000) {
                let id = saga_id(format!("quick-{n}"));
                orchestrator
                    .start_saga("quick.note", id.clone(), json!({}))
                    .await
                    .expect("the saga starts");
                orchestrator.wait(&id).await.expect("the saga finishes");
            }
        }));
    }
    for client in clients {
        within("100,000 sagas finishing", client)
            .await
            .expect("a client ran");
    }
    let stats = orchestrator.stats().await.expect("stats");
    assert_eq!(
        (stats.sagas, stats.timers),
        (10, 10),
        "only the waiting sagas' deadlines are left: {stats:?}"
    );
    orchestrator.shutdown().await;
}
