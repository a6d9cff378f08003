//! The program every example runs: open the store, start the services and the
//! orchestrator, start (or resume) sagas, wait for all of them, report.

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use keel_effects::http::{HttpConfig, HttpHandler};
use keel_effects::notify::Bus;
use keel_orchestrator::query::{self, SagaFilter};
use keel_orchestrator::{Orchestrator, SagaId, SagaType};
use keel_store::EventStore;
use keel_store::sqlite::{SqliteConfig, SqliteStore};
use tokio::task::JoinSet;

use crate::args::Args;
use crate::behaviour::Behaviour;
use crate::ledger::Ledger;
use crate::report::{Counts, progress_line, summary_line, timeline_text};
use crate::sagas::Example;
use crate::services::Services;

/// Up to this many sagas, each one's timeline is printed; beyond, a progress line.
pub const TIMELINES_MAX: u64 = 10;

/// How many sagas are started at once.
const STARTING_AT_ONCE: usize = 512;

/// Runs `example` with the process's arguments; the exit code says whether every saga
/// ended and no effect was doubled.
pub fn main(example: Example) -> ExitCode {
    main_with(example, std::env::args().skip(1))
}

/// Runs `example` with `args` (without the program name).
pub fn main_with(example: Example, args: impl IntoIterator<Item = String>) -> ExitCode {
    let args = match Args::parse(args) {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}");
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
            result = run(example, args) => match result {
                Ok(code) => code,
                Err(message) => {
                    eprintln!("error: {message}");
                    ExitCode::from(2)
                }
            },
            _ = tokio::signal::ctrl_c() => {
                eprintln!("\ninterrupted: every saga is durable; finish them with --resume --db PATH");
                ExitCode::from(130)
            }
        }
    })
}

/// Where the services keep their ledger: beside the store (`keel.db` -> `keel.ledger.db`).
pub fn ledger_path(db: &Path) -> PathBuf {
    db.with_extension("ledger.db")
}

/// The store's path: `--db PATH`, or a fresh file in a temporary directory; its
/// directory is created. With `--resume`, the file must exist.
pub fn db_path(args: &Args, name: &str) -> Result<PathBuf, String> {
    let db = match &args.db {
        Some(path) => path.clone(),
        None => {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            std::env::temp_dir()
                .join(format!("keel-{name}-{}-{nanos}", std::process::id()))
                .join("keel.db")
        }
    };
    if args.resume && !db.exists() {
        return Err(format!(
            "{} does not exist: there is nothing to resume",
            db.display()
        ));
    }
    if let Some(dir) = db.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    Ok(db)
}

/// The program; see the [crate docs](crate).
pub async fn run(example: Example, args: Args) -> Result<ExitCode, String> {
    let db = db_path(&args, example.name())?;
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
    let bus = Bus::default();
    example.spawn_responders(&bus, behaviour)?;
    let http = HttpHandler::new(HttpConfig {
        allow_hosts: vec!["127.0.0.1".into()],
        ..HttpConfig::default()
    })
    .map_err(|e| format!("the HTTP handler: {e}"))?;
    let (orchestrator, recovered) = Orchestrator::builder(Arc::clone(&store))
        .saga(example.definition(&services.base))
        .http(http)
        .bus(bus)
        .start()
        .await
        .map_err(|e| format!("the orchestrator: {e}"))?;
    let orchestrator = Arc::new(orchestrator);
    if recovered.resumed > 0 {
        println!(
            "recovered {} unfinished sagas from {} records",
            recovered.resumed, recovered.records
        );
    }
    for (saga, error) in &recovered.failed {
        eprintln!("saga {saga} could not be recovered: {error}");
    }

    let saga_type = SagaType::new(example.saga_type()).map_err(|e| e.to_string())?;
    let filter = SagaFilter {
        saga_type: Some(saga_type.clone()),
        ..SagaFilter::default()
    };
    let before = query::list(store.as_ref(), &filter)
        .await
        .map_err(|e| e.to_string())?;
    let mut ids: Vec<(SagaId, bool)> = before
        .iter()
        .filter(|saga| !saga.status.is_at_rest())
        .map(|saga| (saga.id.clone(), false))
        .collect();
    if !args.resume {
        let first = before.len() as u64 + 1;
        for n in first..first + args.sagas {
            let id =
                SagaId::new(format!("{}-{n}", example.id_prefix())).map_err(|e| e.to_string())?;
            ids.push((id, true));
        }
    }
    let total = ids.len() as u64;
    println!(
        "{}: {} new sagas, {} to resume; services at {}, fail rate {}, seed {}",
        example.name(),
        ids.iter().filter(|(_, new)| *new).count(),
        ids.iter().filter(|(_, new)| !*new).count(),
        services.base,
        args.fail_rate,
        args.seed
    );

    let settled = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let progress = (total > TIMELINES_MAX)
        .then(|| tokio::spawn(show_progress(Arc::clone(&settled), total, started)));
    let mut running = JoinSet::new();
    let mut errors = Vec::new();
    for (index, (id, new)) in ids.iter().cloned().enumerate() {
        if running.len() >= STARTING_AT_ONCE
            && let Some(Ok(Err(e))) = running.join_next().await
        {
            errors.push(e);
        }
        let orchestrator = Arc::clone(&orchestrator);
        let settled = Arc::clone(&settled);
        let input = example.input(index as u64 + 1);
        running.spawn(async move {
            if new {
                orchestrator
                    .start_saga(example.saga_type(), id.clone(), input)
                    .await
                    .map_err(|e| format!("{id}: {e}"))?;
            }
            let status = orchestrator
                .wait(&id)
                .await
                .map_err(|e| format!("{id}: {e}"));
            settled.fetch_add(1, Ordering::Relaxed);
            status.map(drop)
        });
    }
    while let Some(result) = running.join_next().await {
        if let Ok(Err(e)) = result {
            errors.push(e);
        }
    }
    let elapsed = started.elapsed();
    if let Some(progress) = progress {
        progress.abort();
        eprintln!(
            "\r{}",
            progress_line(total, total, total as f64 / elapsed.as_secs_f64().max(1e-9))
        );
    }
    for error in &errors {
        eprintln!("error: {error}");
    }

    if total <= TIMELINES_MAX {
        for (id, _) in &ids {
            match query::timeline(store.as_ref(), id).await {
                Ok(timeline) => println!("\n{}", timeline_text(&timeline)),
                Err(e) => eprintln!("{id}: no timeline: {e}"),
            }
        }
    } else {
        println!(
            "{total} sagas at rest in {:.2} s: {:.0} sagas/s",
            elapsed.as_secs_f64(),
            total as f64 / elapsed.as_secs_f64().max(1e-9)
        );
    }
    let applied = ledger.applied()?;
    if !applied.is_empty() {
        let parts: Vec<String> = applied
            .iter()
            .map(|(operation, count)| format!("{operation}={count}"))
            .collect();
        println!("effects applied by the services: {}", parts.join(" "));
    }
    orchestrator.shutdown().await;
    let all = query::list(store.as_ref(), &filter)
        .await
        .map_err(|e| e.to_string())?;
    let counts = Counts::of(&all);
    let duplicate_effects = ledger.duplicate_effects()?;
    if counts.needs_intervention > 0 {
        println!(
            "sagas that need intervention: `keel sagas list --db {} --status needs_intervention`",
            db.display()
        );
    }
    println!("{}", summary_line(counts, duplicate_effects));
    Ok(
        if counts.unfinished > 0 || duplicate_effects > 0 || !errors.is_empty() {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        },
    )
}

/// Redraws the progress line (in place on a terminal, every few seconds otherwise).
async fn show_progress(settled: Arc<AtomicU64>, total: u64, started: Instant) {
    let terminal = std::io::stderr().is_terminal();
    let every = if terminal {
        Duration::from_millis(200)
    } else {
        Duration::from_secs(5)
    };
    loop {
        tokio::time::sleep(every).await;
        let done = settled.load(Ordering::Relaxed);
        let rate = done as f64 / started.elapsed().as_secs_f64().max(1e-9);
        if terminal {
            eprint!("\r{}", progress_line(done, total, rate));
        } else {
            eprintln!("{}", progress_line(done, total, rate));
        }
    }
}
