//! Part 4, recovery: the time to resume N unfinished sagas after a restart, on SQLite.
//!
//! For each N a child process parks N idle sagas (each waiting an hour on a retry timer)
//! in a fresh database and exits. Then, several times, a new child opens the database
//! and starts an orchestrator, which reads the saga logs and rebuilds every unfinished
//! saga before `start` returns: that span, store opening included, is the figure. The
//! operating system's page cache is warm (the file was just written); dropping it would
//! touch the whole shared machine.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use keel_store::EventStore;
use keel_store::sqlite::{SqliteConfig, SqliteStore};
use serde_json::{Value, json};

use crate::child;
use crate::options::Sizes;
use crate::report::{Report, count, grouped, spread};
use crate::stats::Summary;
use crate::svg::{LineChart, Scale, Series};
use crate::system::Scratch;

/// One N's figures.
#[derive(Debug, Default)]
struct Level {
    sagas: u64,
    setup_seconds: f64,
    seconds: Vec<f64>,
    records: u64,
    resumed: u64,
}

/// Runs part 4 and adds it to `report`.
pub(crate) fn run(report: &mut Report, sizes: &Sizes, scratch: &Scratch) {
    let mut levels = Vec::new();
    let mut failures = Vec::new();
    for &sagas in sizes.recovery_levels {
        let path = scratch.file(&format!("recover-{sagas}.db"));
        let path_text = path.to_string_lossy().into_owned();
        eprintln!("[recovery] parking {sagas} idle sagas on SQLite");
        let setup = match child::spawn(&["idle", "sqlite", &sagas.to_string(), &path_text]) {
            Ok(answer) => answer,
            Err(error) => {
                failures.push(format!("{sagas} sagas: {error}"));
                continue;
            }
        };
        let mut level = Level {
            sagas,
            setup_seconds: setup["start_seconds"].as_f64().unwrap_or(0.0),
            ..Level::default()
        };
        restarts(
            &mut level,
            &path_text,
            sizes.runs,
            &format!("{sagas} sagas"),
            &mut failures,
        );
        scratch.remove(&format!("recover-{sagas}.db"));
        levels.push(level);
    }
    let history = history(sizes, scratch, &mut failures);
    write_section(report, &levels, history.as_ref(), &failures, sizes);
}

/// Restarts `runs` times on the database at `path`, adding each restart's time (and
/// what it resumed from how many records) to `level`; `label` names it in progress
/// lines and failures.
fn restarts(level: &mut Level, path: &str, runs: usize, label: &str, failures: &mut Vec<String>) {
    for run in 1..=runs {
        match child::spawn(&["recover", path]) {
            Ok(answer) => {
                let seconds = answer["seconds"].as_f64().unwrap_or(f64::NAN);
                level.records = answer["records"].as_u64().unwrap_or(0);
                level.resumed = answer["resumed"].as_u64().unwrap_or(0);
                let (resumed, records) = (level.resumed, level.records);
                eprintln!(
                    "[recovery] {label}, restart {run}/{runs}: {resumed} resumed from \
                     {records} records in {seconds:.3} s"
                );
                level.seconds.push(seconds);
            }
            Err(error) => failures.push(format!("{label}: {error}")),
        }
    }
}

/// Recovery from a store whose history is long: many finished sagas, a few unfinished.
#[derive(Debug)]
struct History {
    finished: u64,
    level: Level,
}

/// Fills a database with `sizes.history` finished and unfinished sagas, then restarts
/// on it: recovery should follow the unfinished ones, not the history.
fn history(sizes: &Sizes, scratch: &Scratch, failures: &mut Vec<String>) -> Option<History> {
    let (finished, unfinished) = sizes.history;
    let path = scratch.file("recover-history.db");
    let path_text = path.to_string_lossy().into_owned();
    eprintln!("[recovery] {finished} finished and {unfinished} idle sagas on SQLite");
    let args = [
        "history",
        &finished.to_string(),
        &unfinished.to_string(),
        &path_text,
    ];
    // A million sagas take about a minute on an idle machine; give a busy one time.
    let setup = match child::spawn_within(&args, std::time::Duration::from_secs(1_800)) {
        Ok(answer) => answer,
        Err(error) => {
            failures.push(format!("the long history: {error}"));
            return None;
        }
    };
    let mut level = Level {
        sagas: unfinished,
        setup_seconds: setup["seconds"].as_f64().unwrap_or(0.0),
        ..Level::default()
    };
    restarts(&mut level, &path_text, sizes.runs, "long history", failures);
    scratch.remove("recover-history.db");
    Some(History { finished, level })
}

/// The child side: `history <finished> <unfinished> <path>`; runs `finished` 3-step
/// sagas to their end (256 at a time), then parks `unfinished` idle ones.
pub(crate) fn history_child(args: &[String]) -> Result<Value, String> {
    let [finished, unfinished, path] = args else {
        return Err("usage: history <finished> <unfinished> <path>".into());
    };
    let parse = |n: &String| n.parse::<u64>().map_err(|_| format!("bad count {n}"));
    let (finished, unfinished) = (parse(finished)?, parse(unfinished)?);
    let runtime = child::runtime()?;
    runtime.block_on(async {
        let started = Instant::now();
        let store: Arc<dyn EventStore> = Arc::new(
            SqliteStore::open(Path::new(path), SqliteConfig::default())
                .map_err(|error| error.to_string())?,
        );
        let (orchestrator, _) = crate::sagas::idle_orchestrator(store).await;
        let orchestrator = Arc::new(orchestrator);
        let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let clients: Vec<_> = (0..256)
            .map(|_| {
                let (orchestrator, next) = (Arc::clone(&orchestrator), Arc::clone(&next));
                tokio::spawn(async move {
                    loop {
                        let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if n >= finished {
                            return Ok::<(), String>(());
                        }
                        if n > 0 && n % 100_000 == 0 {
                            eprintln!("[recovery] {n} of {finished} finished sagas run");
                        }
                        let id = keel_orchestrator::SagaId::new(format!("done-{n}"))
                            .map_err(|e| e.to_string())?;
                        let input = json!({ "order": n });
                        orchestrator
                            .start_saga("bench.order", id.clone(), input)
                            .await
                            .map_err(|e| e.to_string())?;
                        orchestrator.wait(&id).await.map_err(|e| e.to_string())?;
                    }
                })
            })
            .collect();
        for client in clients {
            client.await.map_err(|e| e.to_string())??;
        }
        crate::sagas::start_idle(&orchestrator, unfinished).await;
        orchestrator.shutdown().await;
        Ok(json!({ "seconds": started.elapsed().as_secs_f64() }))
    })
}

fn write_section(
    report: &mut Report,
    levels: &[Level],
    history: Option<&History>,
    failures: &[String],
    sizes: &Sizes,
) {
    let section = report.section("4. Recovery after a restart");
    section.para(&format!(
        "N unfinished sagas (each parked on an hour-long retry timer) in a SQLite database; \
         a fresh process opens it and starts an orchestrator, which rebuilds every \
         unfinished saga from its log before `start` returns. The time covers opening the \
         store and that recovery; the OS page cache is warm. Median (min–max) of {} \
         restarts on the same database.",
        sizes.runs
    ));
    let seconds = |v: f64| format!("{v:.3} s");
    let rows: Vec<Vec<String>> = levels
        .iter()
        .map(|level| {
            let summary = Summary::of(&level.seconds);
            vec![
                count(level.sagas),
                count(level.resumed),
                count(level.records),
                spread(summary, seconds),
                summary.map_or("n/a".into(), |s| grouped(level.sagas as f64 / s.median)),
                format!("{:.1} s", level.setup_seconds),
            ]
        })
        .collect();
    section.table(
        &[
            "unfinished sagas",
            "resumed",
            "records read",
            "time to resume",
            "sagas resumed per second",
            "time to park them first",
        ],
        &rows,
    );
    if let Some(History { finished, level }) = history {
        let summary = Summary::of(&level.seconds);
        section.para(&format!(
            "With a long history: {} unfinished sagas beside {} finished 3-step sagas in \
             the same database ({:.0} s to run them first). {} resumed from {} records \
             read in {}: recovery reads the logs of unfinished sagas only, found through \
             the store's index of instances.",
            count(level.sagas),
            count(*finished),
            level.setup_seconds,
            count(level.resumed),
            count(level.records),
            spread(summary, seconds),
        ));
    }
    for failure in failures {
        section.para(&format!("A run failed: {failure}."));
    }
    section.image("recovery.svg", "time to resume N sagas");
    let series = Series {
        name: "SQLite, time to resume".into(),
        points: levels
            .iter()
            .filter_map(|level| Summary::of(&level.seconds).map(|s| (level.sagas as f64, s)))
            .collect(),
    };
    report.chart(
        "recovery.svg",
        LineChart {
            title: "Recovery: time to resume N unfinished sagas".into(),
            x_label: "unfinished sagas (log scale)".into(),
            y_label: "seconds (log scale)".into(),
            x_scale: Scale::Log,
            y_scale: Scale::Log,
            series: vec![series],
            reference: None,
        }
        .to_svg(),
    );
}

/// The child side: `recover <path>`; opens the store, starts an orchestrator (which
/// recovers), and reports how long that took.
pub(crate) fn recover_child(args: &[String]) -> Result<Value, String> {
    let [path] = args else {
        return Err("usage: recover <path>".into());
    };
    let runtime = child::runtime()?;
    runtime.block_on(async {
        let started = Instant::now();
        let store: Arc<dyn EventStore> = Arc::new(
            SqliteStore::open(Path::new(path), SqliteConfig::default())
                .map_err(|error| error.to_string())?,
        );
        let (orchestrator, recovered) = crate::sagas::idle_orchestrator(store).await;
        let seconds = started.elapsed().as_secs_f64();
        let live = orchestrator.live_count().await.map_err(|e| e.to_string())?;
        orchestrator.shutdown().await;
        Ok(json!({
            "seconds": seconds,
            "resumed": recovered.resumed,
            "records": recovered.records,
            "failed": recovered.failed.len(),
            "live": live,
            "rss": crate::system::resident_bytes(),
        }))
    })
}
