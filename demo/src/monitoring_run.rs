//! The equipment monitoring program: a SQLite store, the HTTP services with their
//! ledger, the [`Monitor`] reducer on keel's durable shell, and a summary counted from
//! the store and the ledger:
//!
//! ```text
//! summary: instances=5 finished=3 parked=2 unfinished=0 duplicate_effects=0
//! ```
//!
//! Killed with SIGKILL at any point and run again with `--resume --db PATH`, it goes on
//! with every unfinished instance, and the services apply no call twice.

use std::collections::BTreeMap;
use std::io::IsTerminal as _;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use keel_core::InstanceId;
use keel_core::driver::{RECORD_TYPE, Record, Status};
use keel_effects::durable::DurableRuntime;
use keel_effects::http::{HttpConfig, HttpHandler};
use keel_store::sqlite::{SqliteConfig, SqliteStore};
use keel_store::{EventStore, READ_LIMIT_MAX};
use tokio::task::JoinSet;

use crate::args::Args;
use crate::behaviour::Behaviour;
use crate::ledger::Ledger;
use crate::monitoring::{Equipment, Event, KIND, Monitor};
use crate::run::{db_path, ledger_path};
use crate::services::Services;

/// The example's name.
pub const NAME: &str = "equipment_monitoring";

/// How many instances are started at once.
const STARTING_AT_ONCE: usize = 512;

/// Runs the program with `args` (without the program's name); `--instances N` is the
/// example's word for the common `--sagas N`.
pub fn main_with(args: impl IntoIterator<Item = String>) -> ExitCode {
    let args = args.into_iter().map(|arg| match arg.as_str() {
        "--instances" => "--sagas".to_owned(),
        _ => arg,
    });
    let args = match Args::parse(args) {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}\n(`--instances N` sets how many instances to start)");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: no tokio runtime: {e}");
            return ExitCode::from(2);
        }
    };
    runtime.block_on(async {
        tokio::select! {
            result = run(args) => result.unwrap_or_else(|message| {
                eprintln!("error: {message}");
                ExitCode::from(2)
            }),
            _ = tokio::signal::ctrl_c() => {
                eprintln!("\ninterrupted: every instance is durable; go on with --resume --db PATH");
                ExitCode::from(130)
            }
        }
    })
}

/// The program; see the [module docs](self).
pub async fn run(args: Args) -> Result<ExitCode, String> {
    let db = db_path(&args, NAME)?;
    println!("store: {}", db.display());
    let store: Arc<dyn EventStore> = Arc::new(
        SqliteStore::open(&db, SqliteConfig::default())
            .map_err(|e| format!("the store at {}: {e}", db.display()))?,
    );
    let ledger = Ledger::open(&ledger_path(&db))?;
    let behaviour = Behaviour {
        fail_rate: args.fail_rate,
        seed: args.seed,
    };
    let services = Services::start(ledger.clone(), behaviour).await?;
    let http = HttpHandler::new(HttpConfig {
        allow_hosts: vec!["127.0.0.1".into()],
        ..HttpConfig::default()
    })
    .map_err(|e| format!("the HTTP handler: {e}"))?;
    let monitor = Monitor::example(services.base.clone());
    let (runtime, recovered) = DurableRuntime::builder(monitor, Arc::clone(&store))
        .http(Arc::new(http))
        .start()
        .await
        .map_err(|e| format!("the durable runtime: {e}"))?;
    if recovered.resumed > 0 {
        println!(
            "recovered {} unfinished instances ({} parked); {} calls in flight sent again, {} timers re-armed",
            recovered.resumed, recovered.parked, recovered.intents_resent, recovered.timers_rearmed
        );
    }
    for (id, error) in &recovered.failed {
        eprintln!("instance {id} could not be recovered: {error}");
    }

    let before = statuses(store.as_ref()).await?;
    let mut ids: Vec<(InstanceId, bool)> = before
        .iter()
        .filter(|(_, status)| **status == Status::Running)
        .map(|(id, _)| (id.clone(), false))
        .collect();
    if !args.resume {
        let first = before.len() as u64 + 1;
        for n in first..first + args.sagas {
            ids.push((InstanceId::from(format!("eq-{n}")), true));
        }
    }
    let total = ids.len() as u64;
    println!(
        "{NAME}: {} new instances, {} to resume; services at {}, fail rate {}, seed {}",
        ids.iter().filter(|(_, new)| *new).count(),
        ids.iter().filter(|(_, new)| !*new).count(),
        services.base,
        args.fail_rate,
        args.seed
    );

    let settled = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let progress = tokio::spawn(show_progress(Arc::clone(&settled), total, started));
    let mut running = JoinSet::new();
    let mut errors = Vec::new();
    for (id, new) in ids {
        if running.len() >= STARTING_AT_ONCE
            && let Some(Ok(Err(e))) = running.join_next().await
        {
            errors.push(e);
        }
        let runtime = runtime.clone();
        let settled = Arc::clone(&settled);
        running.spawn(async move {
            if new {
                let started = runtime
                    .start(&id, Equipment::default(), Event::Commission)
                    .await;
                started.map_err(|e| format!("{id}: {e}"))?;
            }
            let status = runtime.wait(&id).await.map_err(|e| format!("{id}: {e}"));
            settled.fetch_add(1, Ordering::Relaxed);
            status.map(drop)
        });
    }
    while let Some(result) = running.join_next().await {
        if let Ok(Err(e)) = result {
            errors.push(e);
        }
    }
    progress.abort();
    let elapsed = started.elapsed().as_secs_f64().max(1e-9);
    let stats = runtime.stats();
    runtime.shutdown().await;
    for error in &errors {
        eprintln!("error: {error}");
    }
    println!(
        "{total} instances at rest in {elapsed:.2} s; {} records in {} commits, {} calls made",
        stats.records, stats.commits, stats.performed
    );

    let after = statuses(store.as_ref()).await?;
    let count = |wanted: &str| after.values().filter(|s| s.name() == wanted).count();
    let (finished, parked) = (count("finished"), count("parked"));
    let unfinished = after.len() - finished - parked;
    let duplicate_effects = ledger.duplicate_effects()?;
    println!(
        "summary: instances={} finished={finished} parked={parked} unfinished={unfinished} duplicate_effects={duplicate_effects}",
        after.len()
    );
    let clean = unfinished == 0 && duplicate_effects == 0 && errors.is_empty();
    Ok(if clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The status each equipment instance's last record gives, read from the store.
async fn statuses(store: &dyn EventStore) -> Result<BTreeMap<InstanceId, Status>, String> {
    let mut statuses = BTreeMap::new();
    let prefix = format!("{KIND}-");
    let mut from = 1;
    loop {
        let page = store
            .read_all(from, READ_LIMIT_MAX)
            .await
            .map_err(|e| format!("reading the store: {e}"))?;
        let Some(last) = page.last() else { break };
        from = last.position + 1;
        for event in &page {
            if event.envelope.event_type.as_str() != RECORD_TYPE {
                continue;
            }
            let Some(id) = event.stream.as_str().strip_prefix(&prefix) else {
                continue;
            };
            let id = InstanceId::from(id);
            let record = Record::<Equipment, Event>::decode(&id, event.version, &event.envelope)
                .map_err(|e| e.to_string())?;
            statuses.insert(id, record.status);
        }
    }
    Ok(statuses)
}

async fn show_progress(settled: Arc<AtomicU64>, total: u64, started: Instant) {
    let terminal = std::io::stderr().is_terminal();
    let every = Duration::from_millis(if terminal { 200 } else { 5_000 });
    loop {
        tokio::time::sleep(every).await;
        let done = settled.load(Ordering::Relaxed);
        let rate = done as f64 / started.elapsed().as_secs_f64().max(1e-9);
        let line = format!("{done:>7}/{total} instances at rest, {rate:>8.0} instances/s");
        if terminal {
            eprint!("\r{line}");
        } else {
            eprintln!("{line}");
        }
    }
}
