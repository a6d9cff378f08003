//! Part 5, PostgreSQL: the durable figures of parts 2 and 3 against the server at
//! `KEEL_PG_URL`, each run in a schema of its own, dropped afterwards. Skipped, with a
//! line in the report, when the variable is not set or the server cannot be reached.

use std::sync::Arc;

use keel_store::EventStore;
use keel_store::postgres::{PostgresConfig, PostgresStore};
use tokio::runtime::Runtime;

use crate::durable::{self, WRITERS};
use crate::options::Sizes;
use crate::report::{Report, count, grouped, nanos, spread};
use crate::sagas::{self, Cleanup};
use crate::stats::{Summary, percentile};

/// Runs part 5 and adds it to `report`.
pub(crate) fn run(report: &mut Report, sizes: &Sizes, runtime: &Runtime) {
    let Ok(url) = std::env::var("KEEL_PG_URL") else {
        eprintln!("[postgres] skipped: KEEL_PG_URL is not set");
        report
            .section("5. PostgreSQL")
            .para("Skipped: `KEEL_PG_URL` was not set for this run.");
        return;
    };
    let settings = match runtime.block_on(server_settings(&url)) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("[postgres] skipped: {error}");
            report.section("5. PostgreSQL").para(&format!(
                "Skipped: the server at `KEEL_PG_URL` could not be used: {error}."
            ));
            return;
        }
    };
    let seconds = sizes.durable_seconds;
    let batch = sizes.durable_batch;
    let (mut single, mut p50, mut p99, mut group, mut batched) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 0..sizes.runs {
        let tag = format!("round {}/{}", round + 1, sizes.runs);
        let outcome = runtime.block_on(async {
            let store = connect(&url).await?;
            let (rate, latencies) = durable::single(&store, seconds).await;
            single.push(rate);
            p50.push(percentile(&latencies, 0.5).as_nanos() as f64);
            p99.push(percentile(&latencies, 0.99).as_nanos() as f64);
            eprintln!(
                "[postgres] {tag}: 1 event per commit: {} events/s",
                grouped(rate)
            );
            let shared: Arc<dyn EventStore> = Arc::new(store.clone());
            let rate = durable::group(shared, seconds).await;
            group.push(rate);
            eprintln!(
                "[postgres] {tag}: {WRITERS} writers x 1 event: {} events/s",
                grouped(rate)
            );
            let rate = durable::batched(&store, seconds, batch).await;
            batched.push(rate);
            eprintln!(
                "[postgres] {tag}: {batch} events per commit: {} events/s",
                grouped(rate)
            );
            store.drop_schema().await.map_err(|e| e.to_string())
        });
        if let Err(error) = outcome {
            eprintln!("[postgres] {tag} failed: {error}");
        }
    }
    let sweep = sagas::sweep(
        runtime,
        "PostgreSQL",
        sizes.postgres_saga_levels,
        sizes.runs,
        sizes.saga_seconds,
        |_, _| {
            let url = url.clone();
            async move {
                let store = connect(&url)
                    .await
                    .expect("the server answered a moment ago");
                let dropper = store.clone();
                let cleanup = async move {
                    let _ = dropper.drop_schema().await;
                };
                (
                    Arc::new(store) as Arc<dyn EventStore>,
                    Box::pin(cleanup) as Cleanup,
                )
            }
        },
    );

    let section = report.section("5. PostgreSQL");
    section.para(&format!(
        "The same workloads against `PostgresStore` (4 pooled connections) at `KEEL_PG_URL`, \
         on loopback; the server: {settings}. Median (min–max) of {} runs; a fresh schema \
         per run.",
        sizes.runs
    ));
    let s = |v: &[f64]| Summary::of(v);
    section.table(
        &["durable appends", "events per second"],
        &[
            vec![
                format!(
                    "1 event per commit, 1 writer (latency p50 {}, p99 {})",
                    spread(s(&p50), nanos),
                    spread(s(&p99), nanos)
                ),
                spread(s(&single), grouped),
            ],
            vec![
                format!("{WRITERS} writers, 1 event per append"),
                spread(s(&group), grouped),
            ],
            vec![
                format!("{} events per commit", grouped(batch as f64)),
                spread(s(&batched), grouped),
            ],
        ],
    );
    let rows: Vec<Vec<String>> = sweep
        .levels
        .iter()
        .map(|(level, _)| {
            vec![
                count(*level),
                spread(sweep.at(*level, sagas::rate), grouped),
                spread(sweep.at(*level, sagas::p50), nanos),
                spread(sweep.at(*level, sagas::p99), nanos),
            ]
        })
        .collect();
    section.table(
        &["3-step sagas, concurrent", "sagas/s", "p50", "p99"],
        &rows,
    );
}

async fn connect(url: &str) -> Result<PostgresStore, String> {
    let schema = format!(
        "keel_bench_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    );
    PostgresStore::connect(
        url,
        PostgresConfig {
            schema,
            ..PostgresConfig::default()
        },
    )
    .await
    .map_err(|error| error.to_string())
}

/// The server's version and the settings that decide whether a commit is durable.
async fn server_settings(url: &str) -> Result<String, String> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .map_err(|error| format!("cannot connect: {error}"))?;
    let driver = tokio::spawn(connection);
    let mut settings = Vec::new();
    for setting in [
        "server_version",
        "synchronous_commit",
        "fsync",
        "wal_sync_method",
    ] {
        let row = client
            .query_one(&format!("SHOW {setting}"), &[])
            .await
            .map_err(|error| error.to_string())?;
        let value: String = row.get(0);
        settings.push(format!("{setting}={value}"));
    }
    drop(client);
    let _ = driver.await;
    Ok(settings.join(", "))
}
