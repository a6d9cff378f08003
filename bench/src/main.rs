//! `cargo run --release -p keel-bench`: keel's benchmark suite, with its peers measured
//! side by side on the same machine in the same run, written up as
//! `bench/results/BENCHMARKS.md` with SVG charts beside it.
//!
//! `-- --quick` is a smoke test of about a minute; `-- --only transitions,durable` runs
//! a subset. Both write to `bench/results/partial/` (ignored by git), so only a full run
//! replaces the published report. `-- --help` lists the flags.
//!
//! # Layout
//!
//! - `options`: flags, and the sizes of a full and a quick run.
//! - `transitions`: part 1, keel-core `reduce`/`reduce_into` beside XState 5.
//! - `durable`: part 2, raw fsync, keel on SQLite, Python eventsourcing.
//! - `sagas`: part 3, sagas end to end as concurrency grows; memory per idle saga.
//! - `recovery`: part 4, time to resume N unfinished sagas after a restart.
//! - `postgres`: part 5, the durable figures on PostgreSQL when `KEEL_PG_URL` is set.
//! - `peers`: installing and running the Node and Python peers under `peers/`.
//! - `child`: measurements that need a fresh process (memory growth, restarts).
//! - `stats`: medians, min, max, percentiles. `svg`: the charts. `report`: the Markdown.
//! - `system`: the machine's description, load average, scratch space, child processes.
//!
//! Timing in tests is noise, so the tests cover only the pure parts (statistics, charts,
//! formatting, flags); CI builds the suite but does not run it.

mod child;
mod durable;
mod options;
mod peers;
mod postgres;
mod recovery;
mod report;
mod sagas;
mod stats;
mod svg;
mod system;
mod transitions;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use options::{Options, Part, USAGE};
use report::Report;
use system::Scratch;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().is_some_and(|arg| arg == "--child") {
        return match child::main(&args[1..]) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("keel-bench child: {error}");
                ExitCode::FAILURE
            }
        };
    }
    if args.iter().any(|arg| arg == "--help" || arg == "-h") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let options = match Options::parse(args) {
        Ok(options) => options,
        Err(error) => {
            eprintln!("keel-bench: {error}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&options) {
        Ok(out) => {
            println!("wrote {}", out.join("BENCHMARKS.md").display());
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("keel-bench: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the selected parts and writes the report; returns the directory written.
fn run(options: &Options) -> Result<PathBuf, String> {
    // The crate's own directory: the peers and the results live under it, wherever the
    // suite is started from.
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let out = options.out.clone().unwrap_or_else(|| {
        if options.is_full() {
            root.join("results")
        } else {
            root.join("results/partial")
        }
    });
    let scratch = Scratch::create().map_err(|error| format!("no scratch directory: {error}"))?;
    let runtime = child::runtime()?;
    let sizes = options.sizes();
    let started = Instant::now();
    let mut report = Report::default();
    let load_at_start = system::load_text();
    eprintln!(
        "keel-bench: {} run of {}; load average {load_at_start}; scratch in {}",
        if options.quick { "quick" } else { "full" },
        options
            .parts
            .iter()
            .map(|p| p.name())
            .collect::<Vec<_>>()
            .join(", "),
        scratch.path().display()
    );
    if cfg!(debug_assertions) {
        eprintln!("keel-bench: a debug build: figures are meaningless; use --release");
    }
    let mut loads = Vec::new();
    for part in Part::ALL {
        if !options.runs(part) {
            continue;
        }
        loads.push(format!("{} {}", part.name(), system::load_text()));
        let part_started = Instant::now();
        match part {
            Part::Transitions => transitions::run(&mut report, &sizes, &root),
            Part::Durable => durable::run(&mut report, &sizes, &root, &scratch, &runtime),
            Part::Sagas => sagas::run(&mut report, &sizes, &scratch, &runtime),
            Part::Recovery => recovery::run(&mut report, &sizes, &scratch),
            Part::Postgres => postgres::run(&mut report, &sizes, &runtime),
        }
        eprintln!(
            "keel-bench: {} done in {:.0} s",
            part.name(),
            part_started.elapsed().as_secs_f64()
        );
    }

    report.fact("date", system::utc_now());
    report.fact("commit", system::git_commit(&root));
    for (name, value) in system::describe_machine(scratch.path()) {
        report.fact(name, value);
    }
    report.fact(
        "load average (1 / 5 / 15 min)",
        format!(
            "{load_at_start} at the start, {} at the end",
            system::load_text()
        ),
    );
    report.fact(
        "load average (1 / 5 / 15 min) as each part began",
        loads.join("; "),
    );
    report.fact(
        "suite",
        format!(
            "{} run, {} in {:.1} min{}",
            if options.quick {
                "quick (smoke test)"
            } else {
                "full"
            },
            options
                .parts
                .iter()
                .map(|p| p.name())
                .collect::<Vec<_>>()
                .join(", "),
            started.elapsed().as_secs_f64() / 60.0,
            if cfg!(debug_assertions) {
                ", DEBUG BUILD"
            } else {
                ""
            },
        ),
    );
    report.note(
        "The machine is shared: other work ran beside the suite (see the load averages \
         above; 2.0 means both cores busy). CPU-bound figures (transitions, sagas in memory) \
         drop when the other work takes a core; disk-bound figures (fsync, SQLite, \
         eventsourcing) drop when it uses the disk. Rounds are interleaved so that a ratio \
         compares figures taken under the same conditions, and the min–max ranges show the \
         noise.",
    );
    let title = "keel benchmarks";
    let preamble = format!(
        "Written by `cargo run --release -p keel-bench`{}. Every figure is the median of \
         several runs, with the min and max in brackets; every ratio compares figures from \
         this same run. Charts are in this directory.",
        if options.is_full() {
            ""
        } else {
            " (a partial or quick run: not for publishing)"
        }
    );
    report
        .write(&out, title, &preamble)
        .map_err(|error| format!("cannot write the report into {}: {error}", out.display()))?;
    Ok(out)
}
