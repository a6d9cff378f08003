//! `keel`: look inside a keel store, steer its sagas, draw definitions.
//!
//! ```text
//! keel --store /tmp/keel-order_fulfillment-.../keel.db sagas list --status needs_intervention
//! keel --store postgres://postgres@127.0.0.1:5432/test sagas show order-17
//! keel --store keel.db sagas retry order-17
//! keel --store keel.db events tail --types 'keel.saga.**' --follow
//! keel --store keel.db instances list --unfinished
//! keel --store keel.db instances show equipment-eq-3 --as-of 4
//! keel --store keel.db instances purge --older-than 30d
//! keel diagram order_fulfillment --format dot
//! ```
//!
//! Opening a store written by an older keel migrates it to this keel's schema (an older
//! keel then refuses it), even for a command that only reads.
//!
//! Tables on a terminal, `--json` for scripts. Commands that steer a saga (retry, skip,
//! resolve, cancel, replaying a dead letter) append a durable request that a running
//! orchestrator carries out within a second, or the next one to start does.
//!
//! # Layout
//!
//! - `main.rs`: the command line and what each command does.
//! - `table.rs`: aligned text tables.

mod table;

/// `println!`, except that a closed stdout (`keel ... | head`) ends the program quietly
/// instead of panicking.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if writeln!(std::io::stdout().lock(), $($arg)*).is_err() {
            std::process::exit(0);
        }
    }};
}

/// `print!`, with the same care as [`say!`].
macro_rules! say_raw {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if write!(std::io::stdout().lock(), $($arg)*).is_err() {
            std::process::exit(0);
        }
    }};
}

use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};
use keel_core::driver::{self, AsOf, Record, RecordStep};
use keel_core::{InstanceId, OutcomeResult, Payload, StreamId, Timestamp, TopicPattern};
use keel_orchestrator::query::{self, STATUS_NAMES, SagaFilter};
use keel_orchestrator::requests::{self, Request};
use keel_orchestrator::{OperatorCommand, SagaId, SagaStatus, SagaType};
use keel_store::postgres::{PostgresConfig, PostgresStore, describe_url};
use keel_store::sqlite::{SqliteConfig, SqliteStore};
use keel_store::{EventStore, InstanceQuery, READ_LIMIT_MAX, RecordedEvent};
use serde_json::{Value, json};

use table::Table;

#[derive(Debug, Parser)]
#[command(
    name = "keel",
    version,
    about = "Look inside a keel store, steer its sagas, draw definitions."
)]
struct Cli {
    /// The store: a SQLite file, or a postgres:// URL.
    // `--help` would show KEEL_STORE's value, and a URL's password with it.
    #[arg(
        long,
        visible_alias = "db",
        global = true,
        env = "KEEL_STORE",
        hide_env_values = true,
        value_name = "PATH_OR_URL"
    )]
    store: Option<String>,
    /// Print JSON (one document, or one per line for `events tail`) instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Sagas: list them, show one's timeline, steer those that need intervention.
    #[command(subcommand)]
    Sagas(Sagas),
    /// Events of the whole store.
    #[command(subcommand)]
    Events(Events),
    /// One stream's events.
    #[command(subcommand)]
    Streams(Streams),
    /// Sagas that stopped for an operator.
    #[command(subcommand, name = "dead-letters")]
    DeadLetters(DeadLetters),
    /// Instances of every kind (sagas and durable reducers), from the store's index.
    #[command(subcommand)]
    Instances(Instances),
    /// Draws a saga definition (with its compensation edges) or a state machine.
    Diagram {
        /// `order_fulfillment`, `equipment_commissioning`, `deployment_governance` or `traffic_light`.
        name: String,
        /// The diagram language.
        #[arg(long, value_enum, default_value_t = Format::Mermaid)]
        format: Format,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Format {
    Mermaid,
    Dot,
}

#[derive(Debug, Subcommand)]
enum Sagas {
    /// Every saga, optionally only those with a status or of a type.
    List {
        /// running, compensating, completed, compensated, needs_intervention or resolved.
        #[arg(long)]
        status: Option<String>,
        /// A saga type, like `order.fulfillment`.
        #[arg(long = "type")]
        saga_type: Option<String>,
    },
    /// One saga's timeline.
    Show {
        /// The saga's id.
        id: String,
    },
    /// Retries what a saga that needs intervention is stuck on.
    Retry {
        /// The saga's id.
        id: String,
    },
    /// Treats what a saga that needs intervention is stuck on as settled.
    Skip {
        /// The saga's id.
        id: String,
    },
    /// Closes a saga that needs intervention as it is.
    Resolve {
        /// The saga's id.
        id: String,
        /// Why, for the timeline.
        #[arg(long, default_value = "resolved by hand")]
        note: String,
    },
    /// Cancels a running saga: what it did is compensated.
    Cancel {
        /// The saga's id.
        id: String,
        /// Why, for the timeline.
        #[arg(long, default_value = "cancelled by hand")]
        reason: String,
    },
}

#[derive(Debug, Subcommand)]
enum Events {
    /// The last events of the store, then (with --follow) new ones as they come.
    Tail {
        /// Only events whose type matches this pattern (`order.*`, `keel.saga.**`).
        #[arg(long)]
        types: Option<String>,
        /// Start at this position (default: the last 20 events).
        #[arg(long)]
        from: Option<u64>,
        /// Keep following new events until interrupted.
        #[arg(long)]
        follow: bool,
        /// Stop after printing this many events.
        #[arg(long)]
        limit: Option<u64>,
    },
}

#[derive(Debug, Subcommand)]
enum Streams {
    /// Every event of a stream, from a version.
    Show {
        /// The stream, like `saga-order-17`.
        stream: String,
        /// The first version shown.
        #[arg(long, default_value_t = 1)]
        from: u64,
    },
}

#[derive(Debug, Subcommand)]
enum Instances {
    /// Instances from the store's index: kind, status, whether ended, last change.
    List {
        /// Only instances of this kind (a saga type, or a durable reducer's kind).
        #[arg(long)]
        kind: Option<String>,
        /// Only instances in this status (a saga's: `running`, `needs_intervention`, ...;
        /// a durable reducer's: `running`, `parked`, `finishing`, `finished`).
        #[arg(long)]
        status: Option<String>,
        /// Only instances that have not ended.
        #[arg(long, conflicts_with = "finished")]
        unfinished: bool,
        /// Only instances that have ended.
        #[arg(long)]
        finished: bool,
        /// List at most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// One durable reducer instance's log, as of a record or a time: its steps, and
    /// what it held then (rebuilt for the example's `equipment`; otherwise the latest
    /// snapshot up to there, since a rebuild needs the reducer's code).
    Show {
        /// The instance's stream, like `equipment-eq-3`.
        stream: String,
        /// Up to and including this record.
        #[arg(long, conflicts_with = "at")]
        as_of: Option<u64>,
        /// Up to the last record written at or before this time (RFC 3339).
        #[arg(long)]
        at: Option<Timestamp>,
    },
    /// Deletes the logs of instances that ended longer ago than `--older-than`
    /// (retention). Their ids stay taken: starting one again is refused.
    Purge {
        /// How long an ended instance is kept: `30d`, `12h`, `90m`.
        #[arg(long, value_parser = humantime::parse_duration)]
        older_than: std::time::Duration,
        /// Only instances of this kind (a saga type or a durable reducer's kind: they
        /// share one namespace).
        #[arg(long)]
        kind: Option<String>,
        /// Purge at most this many instances.
        #[arg(long, default_value_t = 100_000)]
        limit: u64,
    },
}

#[derive(Debug, Subcommand)]
enum DeadLetters {
    /// Every dead letter.
    List,
    /// Retries the saga of dead letter `id`, if it still needs intervention.
    Replay {
        /// The dead letter's number, as listed.
        id: u64,
    },
}

/// A failure the user can act on.
#[derive(Debug)]
struct Failure(String);

impl<E: std::fmt::Display> From<E> for Failure {
    fn from(error: E) -> Self {
        Self(error.to_string())
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(message)) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<(), Failure> {
    if let Command::Diagram { name, format } = &cli.command {
        return diagram(name, *format);
    }
    let store = open(cli.store.as_deref()).await?;
    let json = cli.json;
    match cli.command {
        Command::Sagas(command) => sagas(store.as_ref(), command, json).await,
        Command::Events(Events::Tail {
            types,
            from,
            follow,
            limit,
        }) => tail(store, types, from, follow, limit, json).await,
        Command::Streams(Streams::Show { stream, from }) => {
            stream_show(store.as_ref(), &stream, from, json).await
        }
        Command::DeadLetters(DeadLetters::List) => dead_letters(store.as_ref(), json).await,
        Command::DeadLetters(DeadLetters::Replay { id }) => replay(store.as_ref(), id).await,
        Command::Instances(command) => instances(store.as_ref(), command, json).await,
        Command::Diagram { .. } => Ok(()),
    }
}

/// Opens the store named by `--store`.
async fn open(store: Option<&str>) -> Result<Arc<dyn EventStore>, Failure> {
    let Some(store) = store else {
        return Err(Failure("no store: pass --store PATH (a SQLite file) or --store postgres://... (or set KEEL_STORE)".into()));
    };
    let name = store_name(store);
    if is_postgres_url(store) {
        let opened = PostgresStore::connect(store, PostgresConfig::default())
            .await
            .map_err(|e| Failure(format!("cannot open the PostgreSQL store at {name}: {e}")))?;
        return Ok(Arc::new(opened));
    }
    let path = std::path::Path::new(store);
    if !path.is_file() {
        return Err(Failure(format!(
            "no store at {name}: the file does not exist (each example prints its store's \
             path on its first line; a PostgreSQL URL starts with postgres://)"
        )));
    }
    let opened = SqliteStore::open(path, SqliteConfig::default())
        .map_err(|e| Failure(format!("cannot open the store at {name}: {e}")))?;
    Ok(Arc::new(opened))
}

fn is_postgres_url(store: &str) -> bool {
    store.starts_with("postgres://") || store.starts_with("postgresql://")
}

/// How messages name the store, never with a password in it: a PostgreSQL URL by its
/// address (`postgres://user@host:port/database`), a file by its path. Other text with an
/// `@` (a mistyped URL: `postgres:/user:password@host/db`) is not repeated.
fn store_name(store: &str) -> String {
    if is_postgres_url(store) {
        return describe_url(store).unwrap_or_else(|| "the URL given".to_owned());
    }
    if store.contains('@') {
        return "the path given".to_owned();
    }
    store.to_owned()
}

fn print_json(value: &impl serde::Serialize) -> Result<(), Failure> {
    say!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

fn time(timestamp: Timestamp) -> String {
    timestamp.to_string()
}

async fn sagas(store: &dyn EventStore, command: Sagas, json: bool) -> Result<(), Failure> {
    match command {
        Sagas::List { status, saga_type } => {
            if let Some(status) = &status
                && !STATUS_NAMES.contains(&status.as_str())
            {
                return Err(Failure(format!(
                    "unknown status `{status}`: use one of {}",
                    STATUS_NAMES.join(", ")
                )));
            }
            let saga_type = saga_type.map(SagaType::new).transpose()?;
            let sagas = query::list(store, &SagaFilter { status, saga_type }).await?;
            if json {
                return print_json(&sagas);
            }
            let mut table = Table::new([
                "SAGA", "TYPE", "STATUS", "RECORDS", "STARTED", "UPDATED", "REASON",
            ]);
            for saga in &sagas {
                table.row([
                    saga.id.to_string(),
                    saga.saga_type.to_string(),
                    saga.status.name().to_owned(),
                    saga.records.to_string(),
                    time(saga.started_at),
                    time(saga.updated_at),
                    saga.status.reason().unwrap_or_default().to_owned(),
                ]);
            }
            say_raw!("{table}");
            say!("{} sagas", sagas.len());
            Ok(())
        }
        Sagas::Show { id } => {
            let id = SagaId::new(id)?;
            let timeline = query::timeline(store, &id).await?;
            if json {
                return print_json(&timeline);
            }
            say_raw!("{}", keel_demo::report::timeline_text(&timeline));
            if let Some(reason) = timeline.summary.status.reason() {
                say!("\nreason: {reason}");
            }
            Ok(())
        }
        Sagas::Retry { id } => {
            steer(
                store,
                &id,
                Request::Operate {
                    command: OperatorCommand::Retry,
                },
            )
            .await
        }
        Sagas::Skip { id } => {
            steer(
                store,
                &id,
                Request::Operate {
                    command: OperatorCommand::Skip,
                },
            )
            .await
        }
        Sagas::Resolve { id, note } => {
            steer(
                store,
                &id,
                Request::Operate {
                    command: OperatorCommand::Resolve { note },
                },
            )
            .await
        }
        Sagas::Cancel { id, reason } => steer(store, &id, Request::Cancel { reason }).await,
    }
}

async fn instances(store: &dyn EventStore, command: Instances, json: bool) -> Result<(), Failure> {
    let unindexed = store.unindexed_head().await?;
    if unindexed > 0 {
        eprintln!(
            "note: this store's events up to position {unindexed} were written before it kept an \
             index of instances; the instances they alone hold are not listed or purged"
        );
    }
    match command {
        Instances::List {
            kind,
            status,
            unfinished,
            finished,
            limit,
        } => {
            let mut query = InstanceQuery::all();
            query.kind = kind;
            query.status = status;
            query.finished = (unfinished || finished).then_some(finished);
            let mut entries = Vec::new();
            while entries.len() < limit {
                query.limit = (limit - entries.len()).min(READ_LIMIT_MAX);
                let page = store.instances(&query).await?;
                let Some(last) = page.last() else { break };
                query.after = Some(last.stream.clone());
                entries.extend(page);
            }
            if json {
                return print_json(&entries);
            }
            let mut table = Table::new(["STREAM", "KIND", "STATUS", "ENDED", "VERSION", "UPDATED"]);
            for entry in &entries {
                table.row([
                    entry.stream.to_string(),
                    entry.kind.clone(),
                    entry.status.clone(),
                    if entry.finished { "yes" } else { "no" }.to_owned(),
                    entry.version.to_string(),
                    time(entry.updated),
                ]);
            }
            say_raw!("{table}");
            say!("{} instances", entries.len());
            Ok(())
        }
        Instances::Purge {
            older_than,
            kind,
            limit,
        } => {
            let older = i64::try_from(older_than.as_nanos()).unwrap_or(i64::MAX);
            let before = Timestamp::from_unix_nanos(now().unix_nanos().saturating_sub(older));
            let mut purged = 0;
            while purged < limit {
                let batch = usize::try_from(limit - purged)
                    .unwrap_or(usize::MAX)
                    .min(READ_LIMIT_MAX);
                let removed = store.purge_finished(kind.as_deref(), before, batch).await?;
                if removed == 0 {
                    break;
                }
                purged += removed;
                if !json {
                    eprintln!("purged {purged} instances so far");
                }
            }
            if json {
                return print_json(&json!({ "purged": purged, "before": before.to_string() }));
            }
            say!(
                "purged {purged} instances that ended before {}",
                time(before)
            );
            Ok(())
        }
        Instances::Show { stream, as_of, at } => {
            let as_of = match (as_of, at) {
                (Some(version), _) => AsOf::Version(version),
                (None, Some(time)) => AsOf::Time(time),
                (None, None) => AsOf::Latest,
            };
            instance_show(store, &StreamId::from(stream), as_of, json).await
        }
    }
}

/// `keel instances show`: the records of a durable reducer instance up to `as_of`, and
/// what it held then.
async fn instance_show(
    store: &dyn EventStore,
    stream: &StreamId,
    as_of: AsOf,
    json: bool,
) -> Result<(), Failure> {
    let mut records: Vec<RecordedEvent> = Vec::new();
    loop {
        // From the version after the last one read: a trimmed log starts past 1.
        let from = records.last().map_or(1, |event| event.version + 1);
        let page = store.read_stream(stream, from, READ_LIMIT_MAX).await?;
        let full = page.len() == READ_LIMIT_MAX;
        records.extend(page);
        if !full {
            break;
        }
    }
    let Some(first) = records.first() else {
        return Err(Failure(format!("no stream {stream} in this store")));
    };
    if first.envelope.event_type.as_str() != driver::RECORD_TYPE {
        return Err(Failure(format!(
            "{stream} is not a durable reducer's log (its first event is a `{}`); for a saga \
             use `keel sagas show`",
            first.envelope.event_type
        )));
    }
    // Up to the first record past the point, as a rebuild reads them.
    let keep = records
        .iter()
        .take_while(|event| match as_of {
            AsOf::Latest => true,
            AsOf::Version(last) => event.version <= last,
            AsOf::Time(last) => event.envelope.time <= last,
        })
        .count();
    records.truncate(keep);
    let Some(last) = records.last() else {
        return Err(Failure(format!("{stream} has no record that old")));
    };
    let id = InstanceId::from(last.envelope.subject.clone().unwrap_or_default());
    let version = last.version;
    let mut decoded = Vec::with_capacity(records.len());
    for event in &records {
        decoded.push(Record::<Value, Value>::decode(
            &id,
            event.version,
            &event.envelope,
        )?);
    }
    let kind = decoded[0].kind.clone().unwrap_or_default();
    // The example's reducer is known here, so its instances are rebuilt (with the
    // example's settings; the service address in their calls is a stand-in); any other
    // reducer's state is shown from its latest snapshot up to there. A log that the
    // example's reducer does not replay (another reducer of the same kind) falls back.
    let rebuilt = if kind == keel_demo::monitoring::KIND {
        let monitor = keel_demo::monitoring::Monitor::example("http://127.0.0.1".into());
        let rebuilt = keel_effects::durable::rebuild(store, monitor, &id, AsOf::Version(version));
        match rebuilt.await {
            Ok(rebuilt) => Some(serde_json::to_value(rebuilt.instance)?),
            Err(e) => {
                eprintln!("note: not the example's reducer, so not rebuilt ({e})");
                None
            }
        }
    } else {
        None
    };
    let snapshot = decoded
        .iter()
        .zip(&records)
        .rev()
        .find_map(|(record, event)| Some((event.version, record.snapshot.as_ref()?)));
    let status = decoded[decoded.len() - 1].status.clone();
    if json {
        let steps: Vec<Value> = decoded
            .iter()
            .zip(&records)
            .map(|(record, event)| {
                json!({
                    "version": event.version,
                    "time": event.envelope.time.to_string(),
                    "step": record.step,
                    "intents": record.intents,
                    "status": record.status,
                })
            })
            .collect();
        return print_json(&json!({
            "stream": stream.as_str(),
            "kind": kind,
            "version": version,
            "status": status,
            "steps": steps,
            "rebuilt": rebuilt,
            "snapshot": snapshot.map(|(v, s)| json!({ "version": v, "instance": s })),
        }));
    }
    let mut table = Table::new(["RECORD", "TIME", "STEP", "INTENTS", "STATUS"]);
    for (record, event) in decoded.iter().zip(&records) {
        let step = match &record.step {
            RecordStep::Event(event) => format!("event {event}"),
            RecordStep::Outcome(outcome) => match &outcome.result {
                OutcomeResult::Succeeded { value } => format!("succeeded: {value}"),
                OutcomeResult::Failed(failure) => format!("failed: {failure}"),
                OutcomeResult::TimedOut => "timed out".to_owned(),
                OutcomeResult::TimerFired { timer } => format!("timer `{timer}` fired"),
                other => format!("{other:?}"),
            },
        };
        table.row([
            event.version.to_string(),
            time(event.envelope.time),
            step.chars().take(80).collect(),
            record
                .intents
                .map_or_else(|| "-".to_owned(), |n| n.to_string()),
            record.status.name().to_owned(),
        ]);
    }
    say_raw!("{table}");
    say!(
        "{stream} ({kind}) as of record {version}: {}",
        status.name()
    );
    match (rebuilt, snapshot) {
        (Some(instance), _) => say!("rebuilt: {instance}"),
        (None, Some((at, instance))) if at == version => {
            say!(
                "snapshot at this record: {}",
                serde_json::to_value(instance)?
            );
        }
        (None, Some((at, instance))) => say!(
            "latest snapshot, at record {at} ({} steps before this one; replaying them needs \
             the reducer: keel_effects::durable::rebuild): {}",
            version - at,
            serde_json::to_value(instance)?
        ),
        (None, None) => say!(
            "no snapshot up to here: rebuilding the state needs the reducer \
             (keel_effects::durable::rebuild)"
        ),
    }
    Ok(())
}

/// Appends a request for saga `id`, after checking that its status allows it.
async fn steer(store: &dyn EventStore, id: &str, request: Request) -> Result<(), Failure> {
    let id = SagaId::new(id)?;
    let status = query::timeline(store, &id).await?.summary.status;
    let (what, allowed) = match &request {
        Request::Operate { command } => (
            command.name(),
            matches!(status, SagaStatus::NeedsIntervention { .. }),
        ),
        Request::Cancel { .. } => ("cancel", status == SagaStatus::Running),
    };
    if !allowed {
        let needs = if what == "cancel" {
            "running"
        } else {
            "needs_intervention"
        };
        return Err(Failure(format!(
            "saga {id} is {}, not {needs}: `{what}` does not apply",
            status.name()
        )));
    }
    let nonce = uuid::Uuid::new_v4().as_u128();
    let position = requests::submit(store, &id, request, now(), nonce).await?;
    say!(
        "requested `{what}` for saga {id} (request at position {position}): a running orchestrator carries it out within a second, or the next one to start does"
    );
    Ok(())
}

fn now() -> Timestamp {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp::from_unix_nanos(i64::try_from(since.as_nanos()).unwrap_or(i64::MAX))
}

/// An event's payload for people: JSON as it is, binary JSON decoded, other bytes counted.
fn payload_value(payload: &Payload) -> Value {
    match payload {
        Payload::Json(value) => value.clone(),
        Payload::Binary(bytes) => serde_json::from_slice(bytes)
            .unwrap_or_else(|_| json!(format!("<{} bytes>", bytes.len()))),
    }
}

fn event_json(event: &RecordedEvent) -> Value {
    json!({
        "position": event.position,
        "stream": event.stream.as_str(),
        "version": event.version,
        "id": event.envelope.id.to_string(),
        "type": event.envelope.event_type.as_str(),
        "time": event.envelope.time.to_string(),
        "subject": event.envelope.subject,
        "data": payload_value(&event.envelope.payload),
    })
}

fn event_line(event: &RecordedEvent) -> String {
    let data = payload_value(&event.envelope.payload).to_string();
    let data: String = if data.chars().count() > 100 {
        format!("{}…", data.chars().take(100).collect::<String>())
    } else {
        data
    };
    format!(
        "{:>8}  {}  {}@{}  {}  {}",
        event.position,
        time(event.envelope.time),
        event.stream,
        event.version,
        event.envelope.event_type,
        data
    )
}

async fn tail(
    store: Arc<dyn EventStore>,
    types: Option<String>,
    from: Option<u64>,
    follow: bool,
    limit: Option<u64>,
    json: bool,
) -> Result<(), Failure> {
    let pattern = types
        .as_deref()
        .map(TopicPattern::new)
        .transpose()
        .map_err(|e| Failure(format!("--types: {e}")))?;
    let mut next = match from {
        Some(from) => from.max(1),
        None => store.head().await?.saturating_sub(19).max(1),
    };
    let mut printed = 0;
    let mut head = store.watch_head();
    loop {
        let page = store.read_all(next, READ_LIMIT_MAX).await?;
        for event in &page {
            next = event.position + 1;
            if pattern
                .as_ref()
                .is_some_and(|p| !p.matches(event.envelope.event_type.as_str()))
            {
                continue;
            }
            if json {
                say!("{}", event_json(event));
            } else {
                say!("{}", event_line(event));
            }
            printed += 1;
            if limit.is_some_and(|limit| printed >= limit) {
                return Ok(());
            }
        }
        if page.len() == READ_LIMIT_MAX {
            continue;
        }
        if !follow {
            return Ok(());
        }
        // Another process's commits are not announced to this one: poll as well.
        tokio::select! {
            _ = head.changed() => {}
            () = tokio::time::sleep(std::time::Duration::from_millis(500)) => {}
        }
    }
}

async fn stream_show(
    store: &dyn EventStore,
    stream: &str,
    from: u64,
    json: bool,
) -> Result<(), Failure> {
    let stream_id = StreamId::from(stream.to_owned());
    let mut events = Vec::new();
    let mut next = from.max(1);
    loop {
        let page = store.read_stream(&stream_id, next, READ_LIMIT_MAX).await?;
        let full = page.len() == READ_LIMIT_MAX;
        if let Some(last) = page.last() {
            next = last.version + 1;
        }
        events.extend(page);
        if !full {
            break;
        }
    }
    if events.is_empty() && store.stream_version(&stream_id).await? == 0 {
        return Err(Failure(format!(
            "no stream `{stream}` in this store (saga streams are `saga-<id>`)"
        )));
    }
    if json {
        let values: Vec<Value> = events.iter().map(event_json).collect();
        return print_json(&values);
    }
    for event in &events {
        say!("{}", event_line(event));
    }
    say!("{} events", events.len());
    Ok(())
}

async fn dead_letters(store: &dyn EventStore, json: bool) -> Result<(), Failure> {
    let letters = requests::dead_letters(store).await?;
    if json {
        return print_json(&letters);
    }
    let mut table = Table::new(["ID", "SAGA", "TYPE", "STEPS", "AT", "REASON"]);
    for letter in &letters {
        table.row([
            letter.id.to_string(),
            letter.saga.to_string(),
            letter.saga_type.clone(),
            letter.steps.join(","),
            time(letter.at),
            letter.reason.clone(),
        ]);
    }
    say_raw!("{table}");
    say!("{} dead letters", letters.len());
    Ok(())
}

async fn replay(store: &dyn EventStore, id: u64) -> Result<(), Failure> {
    let letters = requests::dead_letters(store).await?;
    let Some(letter) = letters.iter().find(|letter| letter.id == id) else {
        return Err(Failure(format!(
            "no dead letter {id}: `keel dead-letters list` shows them"
        )));
    };
    steer(
        store,
        letter.saga.as_str(),
        Request::Operate {
            command: OperatorCommand::Retry,
        },
    )
    .await
}

fn diagram(name: &str, format: Format) -> Result<(), Failure> {
    if name == "traffic_light" {
        let machine = keel_demo::machines::traffic_light()?;
        say_raw!(
            "{}",
            match format {
                Format::Mermaid => machine.to_mermaid(),
                Format::Dot => machine.to_dot(),
            }
        );
        return Ok(());
    }
    let Some(example) = keel_demo::Example::from_name(name) else {
        let mut names: Vec<&str> = keel_demo::Example::ALL
            .iter()
            .map(|example| example.name())
            .collect();
        names.push("traffic_light");
        return Err(Failure(format!(
            "no saga or machine `{name}`: use one of {}",
            names.join(", ")
        )));
    };
    let definition = example.definition("http://services");
    say_raw!(
        "{}",
        match format {
            Format::Mermaid => definition.to_mermaid(),
            Format::Dot => definition.to_dot(),
        }
    );
    Ok(())
}
