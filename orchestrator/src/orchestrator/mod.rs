//! The orchestrator: the [`Engine`](crate::Engine) on tokio, over an event store, with
//! the handlers that carry out steps.
//!
//! One task owns the engine. It takes requests and answers from a bounded channel in
//! batches, feeds them to the engine, commits the batch's records to the store (every
//! saga's append at once, so SQLite and PostgreSQL group them into few transactions),
//! and only then sends the calls out, sets timers, publishes transitions and answers
//! the callers. Calls run on their own tasks and come back through the same channel.
//!
//! On start it reads the store, rebuilds every unfinished saga and sends out again
//! whatever was in flight.
//!
//! ```
//! use std::sync::Arc;
//! use keel_store::MemoryStore;
//! use keel_orchestrator::{Orchestrator, SagaDefinition, SagaId, SagaStatus, Step, StepAction};
//! use serde_json::json;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), keel_orchestrator::Error> {
//! let saga = SagaDefinition::builder("greeting")
//!     .step(Step::new("hello", |ctx| StepAction::custom("say.hello", json!({ "to": ctx.input()["name"] }))))
//!     .build()?;
//! let (orchestrator, _recovered) = Orchestrator::builder(Arc::new(MemoryStore::new()))
//!     .saga(saga)
//!     .handler("say.hello", |call: keel_effects::Call| async move { Ok(json!("hi")) })
//!     .start()
//!     .await?;
//! let id = SagaId::new("greet-1")?;
//! orchestrator.start_saga("greeting", id.clone(), json!({ "name": "Ada" })).await?;
//! assert_eq!(orchestrator.wait(&id).await?, SagaStatus::Completed);
//! orchestrator.shutdown().await;
//! # Ok(()) }
//! ```

mod driver;
mod timers;

use std::collections::HashMap;
use std::sync::Arc;

use keel_core::EventType;
use keel_effects::notify::{Bus, NotifyHandler};
use keel_effects::{Clock, Handler, SharedHandler, TokioClock};
use keel_store::{EventStore, LockHolder, WriterLock};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::definition::SagaDefinition;
use crate::error::Error;
use crate::id::{SagaId, SagaType};
use crate::query::{self, SagaFilter, SagaSummary, Timeline};
use crate::saga::{OperatorCommand, SagaStatus};
use driver::Driver;

/// The orchestrator's bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OrchestratorConfig {
    /// Requests and answers waiting for the engine; a full queue makes callers wait.
    pub queue_capacity: usize,
    /// Requests and answers taken into one batch (one commit).
    pub batch_max: usize,
    /// Calls carried out at once (split evenly between shards); more wait their turn.
    pub calls_in_flight_max: usize,
    /// Timers pending at once (step timeouts, retries, deadlines; split evenly between
    /// shards). A start that would find its shard's timers within a sixteenth of full is
    /// refused with [`Error::Full`], so that running sagas keep room for their next
    /// timers; a running saga's timer that finds the queue full all the same waits for
    /// room (logged, counted in [`Stats::timers_refused`]) and is never dropped.
    pub timers_max: usize,
    /// Whether every transition is published on the bus as `saga.*` (needs a bus).
    pub publish_transitions: bool,
    /// Engines, each owning the sagas whose id hashes to it and running on its own
    /// task; one per core uses every core (default: the available parallelism).
    pub shards: usize,
    /// How often the request stream is read for commands from other processes (the
    /// `keel` tool), in milliseconds; 0 turns following it off. The store's own commits
    /// wake the follower at once; this bounds the delay for another process's.
    pub request_poll_ms: u64,
}

impl Default for OrchestratorConfig {
    fn default() -> Self {
        Self {
            queue_capacity: 65_536,
            batch_max: 4_096,
            calls_in_flight_max: 100_000,
            // A running saga holds one to three timers (a deadline, a step's timeout or
            // retry, briefly the next one before the last is cancelled): room for
            // several hundred thousand sagas at about 100 bytes a timer.
            timers_max: 1 << 20,
            publish_transitions: true,
            shards: std::thread::available_parallelism()
                .map_or(1, std::num::NonZero::get)
                .min(SHARDS_MAX),
            request_poll_ms: 500,
        }
    }
}

/// The most shards an orchestrator runs.
pub const SHARDS_MAX: usize = 64;

/// What an orchestrator holds at one moment, summed over its shards.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Sagas held in memory (not finished).
    pub sagas: usize,
    /// Timers set (timeouts, retries, deadlines): cancelled ones are not counted, nor
    /// kept.
    pub timers: usize,
    /// Timers of running sagas that found the shard's queue full (`timers_max`) since
    /// start. None is dropped: each waits and is set as soon as a timer fires or is
    /// cancelled, so its saga only runs late.
    pub timers_refused: u64,
    /// Calls out, awaiting their answers.
    pub calls_in_flight: usize,
    /// Calls waiting for a free slot (over `calls_in_flight_max`).
    pub calls_queued: usize,
    /// Times the store became unavailable for a commit (summed over shards: one outage
    /// counts once per shard that committed during it).
    pub store_outages: u64,
    /// How long commits waited for the store in all, in milliseconds (per shard, summed).
    pub store_outage_ms: u64,
    /// Since when a commit has been waiting for the store, if one is (the earliest).
    pub store_unavailable_since: Option<keel_core::Timestamp>,
}

impl Stats {
    fn add(&mut self, other: Self) {
        self.sagas += other.sagas;
        self.timers += other.timers;
        self.timers_refused += other.timers_refused;
        self.calls_in_flight += other.calls_in_flight;
        self.calls_queued += other.calls_queued;
        self.store_outages += other.store_outages;
        self.store_outage_ms += other.store_outage_ms;
        self.store_unavailable_since =
            match (self.store_unavailable_since, other.store_unavailable_since) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
    }
}

/// What recovery found on start.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Recovered {
    /// Sagas rebuilt and resumed (they had not finished).
    pub resumed: usize,
    /// Saga records read from the store: those of the unfinished sagas only, found
    /// through the store's index of instances (the whole history for a store that
    /// predates the index).
    pub records: u64,
    /// Sagas that could not be rebuilt, with why (an unregistered type, a corrupt
    /// record). They are left in the store untouched.
    pub failed: Vec<(SagaId, Error)>,
}

/// Which handler carries out which calls.
#[derive(Clone, Default)]
pub(crate) struct Handlers {
    http: Option<SharedHandler>,
    request: Option<SharedHandler>,
    custom: HashMap<EventType, SharedHandler>,
}

/// Builds an [`Orchestrator`].
pub struct OrchestratorBuilder {
    store: Arc<dyn EventStore>,
    definitions: Vec<SagaDefinition>,
    handlers: Handlers,
    bus: Option<Bus>,
    clock: Arc<dyn Clock>,
    config: OrchestratorConfig,
}

impl std::fmt::Debug for OrchestratorBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrchestratorBuilder")
            .field(
                "sagas",
                &self
                    .definitions
                    .iter()
                    .map(|d| d.saga_type().to_string())
                    .collect::<Vec<_>>(),
            )
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl OrchestratorBuilder {
    /// Registers a saga definition.
    #[must_use]
    pub fn saga(mut self, definition: SagaDefinition) -> Self {
        self.definitions.push(definition);
        self
    }

    /// Carries out HTTP steps with `handler` (typically keel-effects' `HttpHandler`,
    /// perhaps wrapped in policies).
    #[must_use]
    pub fn http(mut self, handler: impl Handler) -> Self {
        self.handlers.http = Some(Arc::new(handler));
        self
    }

    /// Carries out custom steps named `name` with `handler`.
    ///
    /// # Panics
    ///
    /// If `name` is not lowercase dotted segments: names are literals in code.
    #[must_use]
    pub fn handler(mut self, name: &'static str, handler: impl Handler) -> Self {
        self.handlers
            .custom
            .insert(EventType::from_static(name), Arc::new(handler));
        self
    }

    /// Uses `bus` for request-reply steps and for publishing transitions.
    #[must_use]
    pub fn bus(mut self, bus: Bus) -> Self {
        self.handlers.request = Some(Arc::new(NotifyHandler::new(bus.clone())));
        self.bus = Some(bus);
        self
    }

    /// Reads time from `clock` (tests pause tokio's clock instead).
    #[must_use]
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Sets the bounds.
    #[must_use]
    pub fn config(mut self, config: OrchestratorConfig) -> Self {
        self.config = config;
        self
    }

    /// Takes the store's writer lock, recovers every unfinished saga from the store and
    /// starts the orchestrator.
    ///
    /// One orchestrator runs on a store at a time: a second one, in this process or
    /// another, is refused with [`keel_store::Error::StoreLocked`] (as [`Error::Store`])
    /// naming the holder's process id, host and since when, until the first shuts down
    /// or dies. Reading the store (the `keel` tool) and appending requests to it are not
    /// locked out. Several workers on one store need PostgreSQL scale-out, not built yet.
    pub async fn start(self) -> Result<(Orchestrator, Recovered), Error> {
        for (setting, value, max) in [
            ("queue_capacity", self.config.queue_capacity, usize::MAX),
            ("batch_max", self.config.batch_max, usize::MAX),
            (
                "calls_in_flight_max",
                self.config.calls_in_flight_max,
                usize::MAX,
            ),
            ("timers_max", self.config.timers_max, usize::MAX),
            ("shards", self.config.shards, SHARDS_MAX),
        ] {
            if value == 0 || value > max {
                return Err(Error::InvalidDefinition {
                    saga_type: "(orchestrator config)".into(),
                    reason: format!("{setting} must be 1 to {max}, not {value}"),
                });
            }
        }
        let holder = LockHolder::this_process(self.clock.now());
        let lock = self.store.lock_writer(&holder).await?;
        let definitions: Vec<Arc<SagaDefinition>> =
            self.definitions.into_iter().map(Arc::new).collect();
        let types: Vec<SagaType> = definitions.iter().map(|d| d.saga_type().clone()).collect();
        let handlers = Arc::new(self.handlers);
        let mut senders = Vec::with_capacity(self.config.shards);
        let mut drivers = Vec::with_capacity(self.config.shards);
        let (stopping, shutdown) = tokio::sync::watch::channel(false);
        for _ in 0..self.config.shards {
            let mut engine = crate::engine::Engine::new();
            for definition in &definitions {
                engine.register(Arc::clone(definition));
            }
            engine.set_publish(self.config.publish_transitions && self.bus.is_some());
            let (sender, receiver) = mpsc::channel(self.config.queue_capacity);
            drivers.push(Driver::new(
                engine,
                Arc::clone(&self.store),
                Arc::clone(&handlers),
                self.bus.clone(),
                Arc::clone(&self.clock),
                self.config,
                receiver,
                shutdown.clone(),
            ));
            senders.push(sender);
        }
        let recovered = recover(self.store.as_ref(), &mut drivers).await?;
        let mut tasks: Vec<JoinHandle<()>> = drivers
            .into_iter()
            .map(|driver| tokio::spawn(driver.run()))
            .collect();
        if self.config.request_poll_ms > 0 {
            let weak = senders.iter().map(mpsc::Sender::downgrade).collect();
            let follower =
                follow_requests(Arc::clone(&self.store), weak, self.config.request_poll_ms);
            tasks.push(tokio::spawn(follower));
        }
        Ok((
            Orchestrator {
                shards: senders,
                store: self.store,
                tasks: std::sync::Mutex::new(tasks),
                types,
                lock: std::sync::Mutex::new(Some(lock)),
                stopping,
            },
            recovered,
        ))
    }
}

/// Carries out the requests appended to the request stream, once each, until every
/// `Orchestrator` handle is gone (or it is aborted on shutdown).
async fn follow_requests(
    store: Arc<dyn EventStore>,
    shards: Vec<mpsc::WeakSender<Command>>,
    poll_ms: u64,
) {
    let mut head = store.watch_head();
    loop {
        // Every handle gone (dropped without `shutdown`): nothing left to serve.
        if shards.iter().all(|shard| shard.strong_count() == 0) {
            return;
        }
        match crate::requests::pending(store.as_ref()).await {
            Ok((done, requests)) => {
                let mut last = done;
                for (version, stored) in requests {
                    let shard = &shards[shard_of(&stored.saga, shards.len())];
                    let Some(shard) = shard.upgrade() else {
                        return;
                    };
                    let id = stored.saga.clone();
                    let result = match stored.request {
                        crate::requests::Request::Operate { command } => {
                            Orchestrator::ask_shard(&shard, |reply| Command::Operate {
                                id,
                                command,
                                reply,
                            })
                            .await
                        }
                        crate::requests::Request::Cancel { reason } => {
                            Orchestrator::ask_shard(&shard, |reply| Command::Cancel {
                                id,
                                reason,
                                reply,
                            })
                            .await
                        }
                    };
                    match result {
                        Ok(Ok(())) => tracing::info!(saga = %stored.saga, "request carried out"),
                        Ok(Err(e)) => {
                            tracing::warn!(saga = %stored.saga, error = %e, "request refused")
                        }
                        Err(_) => return, // shut down
                    }
                    last = version;
                }
                if last != done
                    && let Err(e) = crate::requests::done(store.as_ref(), done, last).await
                {
                    tracing::warn!(error = %e, "the request checkpoint could not be saved; requests since it may be repeated");
                }
            }
            Err(e) => tracing::warn!(error = %e, "the request stream could not be read"),
        }
        tokio::select! {
            changed = head.changed() => if changed.is_err() { return },
            () = tokio::time::sleep(std::time::Duration::from_millis(poll_ms)) => {}
        }
    }
}

/// The shard that owns saga `id`, of `count`.
fn shard_of(id: &SagaId, count: usize) -> usize {
    // The correlation id is a hash of the saga id: spread evenly.
    (id.correlation().uuid().as_u128() % count as u128) as usize
}

/// Reads the logs of every unfinished saga once (one saga's log after the other),
/// rebuilding each saga in the shard that owns it, then resumes every shard.
///
/// The store's index of instances says which logs those are, so finished sagas are not
/// read at all. A store whose history predates the index, or one where unfinished
/// sagas are a large part of the history (a plain pass is then as fast; see
/// `keel_store::index::recover_through_index`), or one that cannot read a record of an
/// unfinished saga, is read whole instead: that path passes over records it cannot read
/// and reports their sagas.
async fn recover(store: &dyn EventStore, drivers: &mut [Driver]) -> Result<Recovered, Error> {
    if keel_store::index::recover_through_index(store, None).await? {
        match fold_unfinished(store, drivers).await {
            Ok(recovered) => return Ok(recovered),
            // The store is away: recovery fails, and the start with it.
            Err(e) if crate::commit::is_unavailable(&e) => return Err(e.into()),
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    "a record of an unfinished saga cannot be read; recovery reads the whole \
                     store instead"
                );
                for driver in drivers.iter_mut() {
                    for (id, _) in driver.held_versions() {
                        driver.forget(&id);
                    }
                }
            }
        }
    }
    recover_from_all(store, drivers).await
}

/// Recovery through the store's index: folds the unfinished sagas' records, then
/// resumes. Any read error is returned as it is, for the caller to fall back on.
async fn fold_unfinished(
    store: &dyn EventStore,
    drivers: &mut [Driver],
) -> Result<Recovered, keel_store::Error> {
    let mut recovered = Recovered::default();
    let mut failed: foldhash::HashMap<SagaId, (Error, Option<SagaStatus>)> =
        foldhash::HashMap::default();
    let mut order = Vec::new();
    let mut after: Option<(keel_core::StreamId, u64)> = None;
    loop {
        let cursor = after.as_ref().map(|(stream, version)| (stream, *version));
        let page = store
            .read_unfinished(None, cursor, keel_store::READ_LIMIT_MAX)
            .await?;
        let Some(last) = page.last() else { break };
        after = Some((last.stream.clone(), last.version));
        for event in &page {
            fold_record(event, drivers, &mut recovered, &mut failed, &mut order);
        }
    }
    Ok(finish_recovery(drivers, recovered, failed, order).await)
}

/// Folds one record of the store into the shard that owns its saga, if it is a saga
/// record; a saga whose log does not replay is set aside in `failed` (with the status
/// its last record gave), in the order found.
fn fold_record(
    event: &keel_store::RecordedEvent,
    drivers: &mut [Driver],
    recovered: &mut Recovered,
    failed: &mut foldhash::HashMap<SagaId, (Error, Option<SagaStatus>)>,
    order: &mut Vec<SagaId>,
) {
    if event.envelope.event_type.as_str() != crate::log::RECORD_TYPE {
        return;
    }
    let Some(id) = SagaId::from_stream(&event.stream) else {
        return;
    };
    recovered.records += 1;
    if let Some((_, status)) = failed.get_mut(&id) {
        *status = crate::log::decode(&id, event.version, &event.envelope)
            .ok()
            .map(|r| r.status);
        return;
    }
    let shard = shard_of(&id, drivers.len());
    if let Err(e) = drivers[shard].restore_record(&id, event.version, &event.envelope) {
        let status = crate::log::decode(&id, event.version, &event.envelope)
            .ok()
            .map(|r| r.status);
        order.push(id.clone());
        failed.insert(id, (e, status));
    }
}

/// Reports the sagas that could not be rebuilt (unless their log says they finished
/// anyway) and resumes every shard.
async fn finish_recovery(
    drivers: &mut [Driver],
    mut recovered: Recovered,
    mut failed: foldhash::HashMap<SagaId, (Error, Option<SagaStatus>)>,
    order: Vec<SagaId>,
) -> Recovered {
    for id in order {
        if let Some((error, status)) = failed.remove(&id) {
            if status.as_ref().is_some_and(SagaStatus::is_finished) {
                continue;
            }
            tracing::error!(
                saga = %id,
                error = %error,
                "a saga cannot be recovered; it is left as it is in the store"
            );
            recovered.failed.push((id, error));
        }
    }
    for driver in drivers.iter_mut() {
        recovered.resumed += driver.resume().await;
    }
    tracing::info!(
        resumed = recovered.resumed,
        records = recovered.records,
        failed = recovered.failed.len(),
        "sagas recovered"
    );
    recovered
}

/// Recovery from the whole store, once, in commit order: for a store whose history
/// predates the index, and when a record of an unfinished saga cannot be read.
async fn recover_from_all(
    store: &dyn EventStore,
    drivers: &mut [Driver],
) -> Result<Recovered, Error> {
    let mut recovered = Recovered::default();
    // Sagas that could not be rebuilt, with the error and the status their log last
    // recorded: one that finished anyway is no loss (a saga type retired after its
    // sagas ended, say) and is not reported.
    let mut failed: foldhash::HashMap<SagaId, (Error, Option<SagaStatus>)> =
        foldhash::HashMap::default();
    let mut order = Vec::new();
    let mut unreadable = Vec::new();
    let mut from = 1;
    loop {
        let page = match store.read_all(from, keel_store::READ_LIMIT_MAX).await {
            Ok(page) => page,
            // The store is away: recovery fails, and the start with it.
            Err(e) if crate::commit::is_unavailable(&e) => return Err(e.into()),
            Err(e) => {
                let (page, bad) = read_around(store, from, e).await?;
                unreadable.extend(bad);
                page
            }
        };
        let Some(last) = page.last() else {
            if unreadable
                .last()
                .is_some_and(|&(position, _)| position >= from)
            {
                from = unreadable
                    .last()
                    .map_or(from, |&(position, _)| position + 1);
                continue;
            }
            break;
        };
        from = last.position + 1;
        for event in &page {
            fold_record(event, drivers, &mut recovered, &mut failed, &mut order);
        }
    }
    if !unreadable.is_empty() {
        // A record the store could not read belongs to a saga whose log now looks
        // shorter than it is: find those by their stream's version, and leave them.
        for driver in drivers.iter_mut() {
            for (id, version) in driver.held_versions() {
                let stored = store.stream_version(&id.stream()).await?;
                if stored != version {
                    driver.forget(&id);
                    let (position, error) = &unreadable[0];
                    let error = Error::CorruptLog {
                        saga: id.to_string(),
                        version: version + 1,
                        reason: format!(
                            "the store could not read a record of its log ({} record(s) in all, the first at position {position}: {error})",
                            unreadable.len()
                        ),
                    };
                    order.push(id.clone());
                    failed.insert(id, (error, None));
                }
            }
        }
    }
    Ok(finish_recovery(drivers, recovered, failed, order).await)
}

/// Reads past records the store cannot read: after `read_all` from `from` failed with
/// `error`, reads one event at a time, skipping each position whose read fails, up to
/// the head. Returns the events read and the positions skipped with why (a position
/// before the bad record that was trimmed counts too: the store does not say which
/// position failed). If the store cannot say its head or becomes unavailable, recovery
/// fails: that is an outage, not a bad record.
async fn read_around(
    store: &dyn EventStore,
    from: u64,
    error: keel_store::Error,
) -> Result<
    (
        Vec<keel_store::RecordedEvent>,
        Vec<(u64, keel_store::Error)>,
    ),
    Error,
> {
    let head = store.head().await.map_err(|_| error)?;
    let (mut events, mut bad) = (Vec::new(), Vec::new());
    let mut position = from;
    // A page's worth at most, so recovery goes on folding what it has read.
    while position <= head && events.len() < keel_store::READ_LIMIT_MAX {
        match store.read_all(position, 1).await {
            Ok(one) => match one.into_iter().next() {
                Some(event) => {
                    position = event.position + 1;
                    events.push(event);
                }
                None => break,
            },
            Err(e) if crate::commit::is_unavailable(&e) => return Err(e.into()),
            Err(e) => {
                if bad.is_empty() {
                    tracing::error!(position, error = %e, "a record the store cannot read is skipped by recovery");
                }
                bad.push((position, e));
                position += 1;
            }
        }
    }
    Ok((events, bad))
}

/// A request to the engine's task.
pub(crate) enum Command {
    Start {
        saga_type: SagaType,
        id: SagaId,
        input: Value,
        reply: oneshot::Sender<Result<(), Error>>,
    },
    Cancel {
        id: SagaId,
        reason: String,
        reply: oneshot::Sender<Result<(), Error>>,
    },
    Operate {
        id: SagaId,
        command: OperatorCommand,
        reply: oneshot::Sender<Result<(), Error>>,
    },
    Status {
        id: SagaId,
        reply: oneshot::Sender<Option<SagaStatus>>,
    },
    Wait {
        id: SagaId,
        reply: oneshot::Sender<Option<SagaStatus>>,
    },
    Count {
        reply: oneshot::Sender<usize>,
    },
    Stats {
        reply: oneshot::Sender<Stats>,
    },
    Shutdown {
        reply: oneshot::Sender<()>,
    },
}

/// Runs sagas: start them, steer them, ask about them.
pub struct Orchestrator {
    shards: Vec<mpsc::Sender<Command>>,
    store: Arc<dyn EventStore>,
    tasks: std::sync::Mutex<Vec<JoinHandle<()>>>,
    types: Vec<SagaType>,
    /// The store's writer lock, released once the engines have stopped.
    lock: std::sync::Mutex<Option<WriterLock>>,
    /// Told when shutting down, so that a shard waiting for the store stops waiting.
    stopping: tokio::sync::watch::Sender<bool>,
}

impl std::fmt::Debug for Orchestrator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Orchestrator")
            .field("sagas", &self.types)
            .finish_non_exhaustive()
    }
}

impl Orchestrator {
    /// Starts building an orchestrator over `store`.
    pub fn builder(store: Arc<dyn EventStore>) -> OrchestratorBuilder {
        OrchestratorBuilder {
            store,
            definitions: Vec::new(),
            handlers: Handlers::default(),
            bus: None,
            clock: Arc::new(TokioClock::new()),
            config: OrchestratorConfig::default(),
        }
    }

    /// Asks the shard that owns `id`.
    async fn ask<T>(
        &self,
        id: &SagaId,
        command: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, Error> {
        Self::ask_shard(&self.shards[shard_of(id, self.shards.len())], command).await
    }

    async fn ask_shard<T>(
        shard: &mpsc::Sender<Command>,
        command: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, Error> {
        let (reply, answer) = oneshot::channel();
        shard
            .send(command(reply))
            .await
            .map_err(|_| Error::ShutDown)?;
        answer.await.map_err(|_| Error::ShutDown)
    }

    /// Starts saga `id` of type `saga_type` with `input`; returns once its start is
    /// durable. An id that was used before is refused with [`Error::SagaExists`].
    pub async fn start_saga(&self, saga_type: &str, id: SagaId, input: Value) -> Result<(), Error> {
        let saga_type = SagaType::new(saga_type)?;
        if !self.types.contains(&saga_type) {
            return Err(Error::UnknownSagaType {
                saga_type: saga_type.to_string(),
            });
        }
        let held = id.clone();
        self.ask(&held, |reply| Command::Start {
            saga_type,
            id,
            input,
            reply,
        })
        .await?
    }

    /// Cancels saga `id`: what it did is compensated. Refused past the pivot.
    pub async fn cancel(&self, id: &SagaId, reason: &str) -> Result<(), Error> {
        let (held, reason) = (id.clone(), reason.to_owned());
        self.ask(id, |reply| Command::Cancel {
            id: held,
            reason,
            reply,
        })
        .await?
    }

    /// Retries what a parked saga was stuck on, with a fresh retry budget.
    pub async fn retry(&self, id: &SagaId) -> Result<(), Error> {
        self.operate(id, OperatorCommand::Retry).await
    }

    /// Treats what a parked saga was stuck on as settled, and carries on.
    pub async fn skip(&self, id: &SagaId) -> Result<(), Error> {
        self.operate(id, OperatorCommand::Skip).await
    }

    /// Closes a parked saga as it is.
    pub async fn resolve(&self, id: &SagaId, note: &str) -> Result<(), Error> {
        self.operate(
            id,
            OperatorCommand::Resolve {
                note: note.to_owned(),
            },
        )
        .await
    }

    async fn operate(&self, id: &SagaId, command: OperatorCommand) -> Result<(), Error> {
        let held = id.clone();
        self.ask(id, |reply| Command::Operate {
            id: held,
            command,
            reply,
        })
        .await?
    }

    /// Where saga `id` stands now.
    pub async fn status(&self, id: &SagaId) -> Result<SagaStatus, Error> {
        let held = id.clone();
        match self
            .ask(id, |reply| Command::Status { id: held, reply })
            .await?
        {
            Some(status) => Ok(status),
            None => Ok(query::timeline(self.store.as_ref(), id)
                .await?
                .summary
                .status),
        }
    }

    /// Waits until saga `id` comes to rest (finished, or waiting for an operator) and
    /// returns its status: only ever a status at rest. A saga that is not at rest in the
    /// store but that this orchestrator does not run (it could not be recovered) is
    /// [`Error::NotRunning`]; one that never started is [`Error::UnknownSaga`].
    pub async fn wait(&self, id: &SagaId) -> Result<SagaStatus, Error> {
        let held = id.clone();
        let status = match self
            .ask(id, |reply| Command::Wait { id: held, reply })
            .await?
        {
            Some(status) => status,
            None => {
                query::timeline(self.store.as_ref(), id)
                    .await?
                    .summary
                    .status
            }
        };
        if !status.is_at_rest() {
            return Err(Error::NotRunning {
                saga: id.to_string(),
                status: status.name(),
            });
        }
        Ok(status)
    }

    /// Saga `id`'s history, from the store.
    pub async fn timeline(&self, id: &SagaId) -> Result<Timeline, Error> {
        query::timeline(self.store.as_ref(), id).await
    }

    /// The sagas in the store that `filter` admits, found through the store's index of
    /// instances (see [`query::list`]).
    pub async fn list(&self, filter: &SagaFilter) -> Result<Vec<SagaSummary>, Error> {
        query::list(self.store.as_ref(), filter).await
    }

    /// What the orchestrator holds now: sagas, timers, calls, and how the store has
    /// been. Answered even while a shard waits for an unavailable store.
    pub async fn stats(&self) -> Result<Stats, Error> {
        let mut stats = Stats::default();
        for shard in &self.shards {
            stats.add(Self::ask_shard(shard, |reply| Command::Stats { reply }).await?);
        }
        Ok(stats)
    }

    /// How many sagas are held in memory (not finished).
    pub async fn live_count(&self) -> Result<usize, Error> {
        let mut count = 0;
        for shard in &self.shards {
            count += Self::ask_shard(shard, |reply| Command::Count { reply }).await?;
        }
        Ok(count)
    }

    /// Stops taking requests and stops the engines. Calls still out are abandoned;
    /// their sagas pick them up again, under the same ids, when an orchestrator next
    /// starts on the store. Nothing committed is lost.
    pub async fn shutdown(&self) {
        let tasks = std::mem::take(
            &mut *self
                .tasks
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        self.stopping.send_replace(true);
        // The request follower, if running, is the last task: it never ends by itself.
        if tasks.len() > self.shards.len()
            && let Some(follower) = tasks.last()
        {
            follower.abort();
        }
        for shard in &self.shards {
            let _ = Self::ask_shard(shard, |reply| Command::Shutdown { reply }).await;
        }
        for task in tasks {
            let _ = task.await;
        }
        drop(
            self.lock
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take(),
        );
    }

    /// The store the orchestrator runs on.
    pub fn store(&self) -> &Arc<dyn EventStore> {
        &self.store
    }
}
