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
        for run in 0..sizes.runs {
            match child::spawn(&["recover", &path_text]) {
                Ok(answer) => {
                    let seconds = answer["seconds"].as_f64().unwrap_or(f64::NAN);
                    level.records = answer["records"].as_u64().unwrap_or(0);
                    level.resumed = answer["resumed"].as_u64().unwrap_or(0);
                    eprintln!(
                        "[recovery] {sagas} sagas, restart {}/{}: {} resumed from {} records in {:.3} s",
                        run + 1,
                        sizes.runs,
                        level.resumed,
                        level.records,
                        seconds
                    );
                    level.seconds.push(seconds);
                }
                Err(error) => failures.push(format!("{sagas} sagas: {error}")),
            }
        }
        scratch.remove(&format!("recover-{sagas}.db"));
        levels.push(level);
    }
    write_section(report, &levels, &failures, sizes);
}

fn write_section(report: &mut Report, levels: &[Level], failures: &[String], sizes: &Sizes) {
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
