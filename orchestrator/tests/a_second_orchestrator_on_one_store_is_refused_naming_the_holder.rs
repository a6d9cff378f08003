//! Until several workers can share a store (PostgreSQL scale-out, not built yet), one
//! orchestrator runs on a store at a time: a second one is refused with an error that
//! names the holder (process id, host, since when), on SQLite (an OS file lock beside
//! the database), on PostgreSQL (a session advisory lock) and in memory. Reading the
//! store is not locked out, and once the first shuts down, the next one starts.

use std::sync::Arc;

use keel_orchestrator::{Error, Orchestrator, SagaDefinition, SagaFilter, Step, StepAction};
use keel_store::{EventStore, MemoryStore};
use serde_json::json;

use crate::common::stores::{PgSchema, SqliteFile, postgres_url};
use crate::common::{Journal, saga_id};

fn errand() -> SagaDefinition {
    SagaDefinition::builder("errand")
        .step(Step::new("go", |_| {
            StepAction::custom("errand.go", json!({}))
        }))
        .build()
        .expect("a valid saga")
}

async fn start(store: Arc<dyn EventStore>, journal: &Journal) -> Result<Orchestrator, Error> {
    Orchestrator::builder(store)
        .saga(errand())
        .handler("errand.go", journal.silent("errand.go"))
        .start()
        .await
        .map(|(orchestrator, _)| orchestrator)
}

/// Runs the behaviour over `open`, which opens the same store anew each time.
async fn one_at_a_time<F, Fut>(open: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Arc<dyn EventStore>>,
{
    let journal = Journal::new();
    let first = start(open().await, &journal)
        .await
        .expect("the first orchestrator starts");
    first
        .start_saga("errand", saga_id("held-1"), json!({}))
        .await
        .expect("the saga starts");

    let refused = start(open().await, &journal)
        .await
        .expect_err("a second orchestrator on the store is refused");
    let Error::Store(keel_store::Error::StoreLocked { holder, .. }) = &refused else {
        panic!("refused with the lock's error, not {refused:?}");
    };
    let holder = holder.as_ref().expect("the holder is named");
    assert_eq!(holder.pid, std::process::id());
    let text = refused.to_string();
    assert!(
        text.contains(&std::process::id().to_string()) && text.contains(&holder.host),
        "the message names the holder's pid and host: {text}"
    );

    // Reading (as the `keel` tool does) is not locked out.
    let listed = keel_orchestrator::query::list(open().await.as_ref(), &SagaFilter::default())
        .await
        .expect("the store reads while it is held");
    assert_eq!(listed.len(), 1);

    first.shutdown().await;
    let next = start(open().await, &journal)
        .await
        .expect("once the first has shut down, the next starts");
    next.shutdown().await;
}

#[tokio::test]
async fn a_second_orchestrator_on_a_sqlite_file_is_refused() {
    let file = SqliteFile::new();
    one_at_a_time(|| async { file.open() }).await;
}

#[tokio::test]
async fn a_second_orchestrator_on_a_memory_store_is_refused() {
    let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
    one_at_a_time(|| async { Arc::clone(&store) }).await;
}

#[tokio::test]
async fn a_second_orchestrator_on_a_postgresql_schema_is_refused() {
    let Some(url) = postgres_url() else {
        return;
    };
    let schema = PgSchema::new(url);
    one_at_a_time(|| schema.open()).await;
    schema.drop_schema().await;
}
