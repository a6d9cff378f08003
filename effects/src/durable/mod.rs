//! The durable shell: runs keel-core's [`Driver`] on tokio, against an event store.
//!
//! One task owns the driver. It takes what arrived (commands, outcomes, due timers),
//! feeds it to the driver, commits the batch of records that produced (every instance's
//! append at once, which the stores group into few transactions), and only then sets
//! the batch's timers and performs its intents through the one [`Handlers`] registry.
//! Outcomes come back to the same task and are fed to the driver in turn. It follows
//! the driver contract in keel-core's crate docs step by step.
//!
//! The shell does not retry: a failure goes back to the reducer as an outcome, and the
//! reducer decides (with [`RetryPolicy::decide`](keel_core::RetryPolicy::decide) and a
//! timer, say). A handler wrapped in a retry layer retries underneath, deliberately.
//! Nor does it bound how long a call takes: wrap a handler in a
//! [`TimeoutLayer`](crate::policy::TimeoutLayer) so that a call that never answers comes
//! back as a failure.
//!
//! On [`start`](DurableBuilder::start), every unfinished instance of the reducer is
//! rebuilt from its log, and what was in flight is performed again, under the same
//! intent ids: handlers see one idempotency key per effect across restarts. The store's
//! index of instances says which logs those are, so a restart reads no finished
//! instance's log and takes a time that follows the unfinished ones, however long the
//! history (a store migrated from before the index is read whole, as it always was).
//!
//! ```
//! # use std::sync::Arc;
//! use keel_core::driver::{Durable, Status};
//! use keel_core::{Input, Intent, Outcome, Reducer};
//! use keel_effects::durable::DurableRuntime;
//! use keel_store::MemoryStore;
//! use serde::{Deserialize, Serialize};
//!
//! /// Adds what it is sent; finishes past 10.
//! struct Total;
//!
//! #[derive(Clone, Serialize, Deserialize)]
//! enum Event { Add(u32), Done(Outcome) }
//! impl From<Outcome> for Event {
//!     fn from(outcome: Outcome) -> Self { Event::Done(outcome) }
//! }
//!
//! impl Reducer for Total {
//!     type State = u32;
//!     type Action = Input<Event>;
//!     fn reduce_into(&self, total: &mut u32, action: Input<Event>, _: &mut Vec<Intent>) {
//!         if let Event::Add(n) = action.body {
//!             *total += n;
//!         }
//!     }
//! }
//!
//! impl Durable for Total {
//!     type Event = Event;
//!     fn kind(&self) -> &str { "total" }
//!     fn status(&self, total: &u32) -> Status {
//!         if *total > 10 { Status::Finished } else { Status::Running }
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), keel_effects::Error> {
//! let store = Arc::new(MemoryStore::new());
//! let (runtime, _recovered) = DurableRuntime::builder(Total, store).start().await?;
//! let id = "t-1".into();
//! runtime.start(&id, 0, Event::Add(4)).await?; // committed when this returns
//! runtime.send(&id, Event::Add(7)).await?;
//! assert_eq!(runtime.wait(&id).await?, Status::Finished);
//! runtime.shutdown().await;
//! # Ok(()) }
//! ```

mod shell;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use keel_core::driver::{Driver, Durable, Record, Status};
use keel_core::{EventType, InstanceId, StreamId};
use keel_store::EventStore;
use tokio::sync::{mpsc, oneshot};

use crate::clock::{Clock, TokioClock};
use crate::error::Error;
use crate::handler::SharedHandler;
use crate::handlers::Handlers;
use crate::metrics::Metrics;

pub use shell::Recovered;

/// The shell's bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurableConfig {
    /// Commands waiting for the shell; a full queue makes callers wait.
    pub commands_capacity: usize,
    /// Inputs (commands, outcomes, timers) taken into one batch at most.
    pub batch_inputs_max: usize,
    /// Pending timers of all instances. A timer past it waits, logged, until one fires
    /// or is cancelled: none is dropped.
    pub timers_max: usize,
    /// Intents one step may emit ([`Driver::set_intents_per_step_max`]).
    pub intents_per_step_max: usize,
    /// Whether to take the store's writer lock at start (default: yes), so that a second
    /// process on the same store is refused instead of running the same instances.
    pub lock_writer: bool,
}

impl Default for DurableConfig {
    fn default() -> Self {
        Self {
            commands_capacity: 1024,
            batch_inputs_max: 4096,
            timers_max: 1 << 20,
            intents_per_step_max: keel_core::driver::INTENTS_PER_STEP_MAX_DEFAULT,
            lock_writer: true,
        }
    }
}

impl DurableConfig {
    fn validate(&self) -> Result<(), Error> {
        let settings = [
            ("commands_capacity", self.commands_capacity),
            ("batch_inputs_max", self.batch_inputs_max),
            ("timers_max", self.timers_max),
            ("intents_per_step_max", self.intents_per_step_max),
        ];
        match settings.into_iter().find(|(_, value)| *value == 0) {
            Some((setting, _)) => Err(Error::InvalidConfig {
                setting,
                reason: "must be at least 1".into(),
            }),
            None => Ok(()),
        }
    }
}

/// Counts of what the shell did, read with [`DurableRuntime::stats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) records: AtomicU64,
    pub(crate) commits: AtomicU64,
    pub(crate) performed: AtomicU64,
    pub(crate) stale: AtomicU64,
    pub(crate) store_retries: AtomicU64,
    pub(crate) held: AtomicU64,
    pub(crate) timers_waiting: AtomicU64,
    pub(crate) faulted: AtomicU64,
}

/// What the shell did so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DurableStats {
    /// Records committed.
    pub records: u64,
    /// Batches committed.
    pub commits: u64,
    /// Intents handed to handlers (again after a restart).
    pub performed: u64,
    /// Outcomes and timer firings ignored: already reduced, or for an instance that
    /// finished.
    pub stale: u64,
    /// Appends tried again because the store was unavailable.
    pub store_retries: u64,
    /// Instances held in memory now.
    pub held: u64,
    /// Timers waiting for room in the timer queue now.
    pub timers_waiting: u64,
    /// Instances dropped from memory after a step over a bound (see the log): they go on
    /// from their log at the next start.
    pub faulted: u64,
}

/// What a caller asks the shell.
pub(crate) enum Command<R: Durable> {
    Start {
        id: InstanceId,
        state: R::State,
        event: R::Event,
        reply: oneshot::Sender<Result<(), Error>>,
    },
    Send {
        id: InstanceId,
        event: R::Event,
        reply: oneshot::Sender<Result<(), Error>>,
    },
    Inspect {
        id: InstanceId,
        reply: oneshot::Sender<Option<(R::State, Status, u64)>>,
    },
    Wait {
        id: InstanceId,
        reply: oneshot::Sender<Option<oneshot::Receiver<Status>>>,
    },
    Stop {
        reply: oneshot::Sender<()>,
    },
}

/// Builds a [`DurableRuntime`].
#[must_use = "a builder does nothing until `start` is called"]
pub struct DurableBuilder<R> {
    reducer: R,
    store: Arc<dyn EventStore>,
    handlers: Handlers,
    config: DurableConfig,
    clock: Option<Arc<dyn Clock>>,
    metrics: Metrics,
}

impl<R> fmt::Debug for DurableBuilder<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DurableBuilder")
            .field("handlers", &self.handlers)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<R: Durable + Send + 'static> DurableBuilder<R>
where
    R::State: Send,
    R::Event: Send,
{
    /// Performs intents through `handlers`.
    pub fn handlers(mut self, handlers: Handlers) -> Self {
        self.handlers = handlers;
        self
    }

    /// Carries out `Custom` intents named `name` with `handler`.
    pub fn custom(mut self, name: EventType, handler: SharedHandler) -> Self {
        self.handlers = self.handlers.custom(name, handler);
        self
    }

    /// Carries out `Http` intents with `handler`.
    pub fn http(mut self, handler: SharedHandler) -> Self {
        self.handlers = self.handlers.http(handler);
        self
    }

    /// Carries out `Notify` and `Request` intents with `handler`.
    pub fn notify(mut self, handler: SharedHandler) -> Self {
        self.handlers = self.handlers.notify(handler);
        self
    }

    /// Carries out `Persist` intents with `handler`.
    pub fn persist(mut self, handler: SharedHandler) -> Self {
        self.handlers = self.handlers.persist(handler);
        self
    }

    /// Sets the bounds.
    pub fn config(mut self, config: DurableConfig) -> Self {
        self.config = config;
        self
    }

    /// Sets the time source (default: [`TokioClock::new`]).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Shares these counters with the handlers' layers.
    pub fn metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// Takes the store's writer lock (unless configured not to), rebuilds every
    /// unfinished instance of the reducer from its log, performs again what was in
    /// flight and re-arms the pending timers, then runs. Must be called inside a tokio
    /// runtime.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`], [`Error::Core`] for a reducer kind that is not a valid
    /// name, [`Error::Store`] if the lock is held or the store cannot be read. An
    /// instance whose log does not replay does not fail the start: it is reported in
    /// [`Recovered::failed`] and not run.
    pub async fn start(self) -> Result<(DurableRuntime<R>, Recovered), Error> {
        self.config.validate()?;
        let mut driver = Driver::with_hasher(self.reducer)?;
        driver.set_intents_per_step_max(self.config.intents_per_step_max);
        let kind: Arc<str> = Arc::from(driver.reducer().kind());
        let clock = self.clock.unwrap_or_else(|| Arc::new(TokioClock::new()));
        let lock = match self.config.lock_writer {
            true => {
                let holder = keel_store::LockHolder::this_process(clock.now());
                Some(self.store.lock_writer(&holder).await?)
            }
            false => None,
        };
        let counters = Arc::new(Counters::default());
        let (commands, inbox) = mpsc::channel(self.config.commands_capacity);
        let mut shell = shell::Shell::new(shell::Parts {
            driver,
            store: Arc::clone(&self.store),
            handlers: self.handlers,
            clock,
            metrics: self.metrics,
            config: self.config,
            counters: Arc::clone(&counters),
            lock,
        });
        let recovered = shell.recover().await?;
        tokio::spawn(shell.run(inbox));
        let runtime = DurableRuntime {
            commands,
            store: self.store,
            kind,
            counters,
        };
        Ok((runtime, recovered))
    }
}

/// A handle on the durable shell: start instances, send them events, wait for them.
/// Cheap to clone.
pub struct DurableRuntime<R: Durable> {
    commands: mpsc::Sender<Command<R>>,
    store: Arc<dyn EventStore>,
    kind: Arc<str>,
    counters: Arc<Counters>,
}

impl<R: Durable> Clone for DurableRuntime<R> {
    fn clone(&self) -> Self {
        Self {
            commands: self.commands.clone(),
            store: Arc::clone(&self.store),
            kind: Arc::clone(&self.kind),
            counters: Arc::clone(&self.counters),
        }
    }
}

impl<R: Durable> fmt::Debug for DurableRuntime<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DurableRuntime")
            .field("kind", &self.kind)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl<R: Durable> DurableRuntime<R> {
    /// Counts of what the shell did so far.
    pub fn stats(&self) -> DurableStats {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let c = &self.counters;
        DurableStats {
            records: read(&c.records),
            commits: read(&c.commits),
            performed: read(&c.performed),
            stale: read(&c.stale),
            store_retries: read(&c.store_retries),
            held: read(&c.held),
            timers_waiting: read(&c.timers_waiting),
            faulted: read(&c.faulted),
        }
    }
}

impl<R: Durable + Send + 'static> DurableRuntime<R>
where
    R::State: Send,
    R::Event: Send,
{
    /// A builder for a shell running `reducer`'s instances on `store`.
    pub fn builder(reducer: R, store: Arc<dyn EventStore>) -> DurableBuilder<R> {
        DurableBuilder {
            reducer,
            store,
            handlers: Handlers::new(),
            config: DurableConfig::default(),
            clock: None,
            metrics: Metrics::default(),
        }
    }

    async fn ask<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<T>) -> Command<R>,
    ) -> Result<T, Error> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(command(reply))
            .await
            .map_err(|_| Error::ShutDown)?;
        answer.await.map_err(|_| Error::ShutDown)
    }

    /// Starts instance `id` in `state` with `event`; returns once its first record is
    /// committed.
    ///
    /// # Errors
    ///
    /// [`Error::Core`] with [`InstanceExists`](keel_core::Error::InstanceExists) if an
    /// instance of that id runs or ran (its log exists), or with
    /// [`InvalidId`](keel_core::Error::InvalidId); [`Error::Store`] if the store refused
    /// the record; [`Error::ShutDown`].
    pub async fn start(
        &self,
        id: &InstanceId,
        state: R::State,
        event: R::Event,
    ) -> Result<(), Error> {
        let id = id.clone();
        self.ask(|reply| Command::Start {
            id,
            state,
            event,
            reply,
        })
        .await?
    }

    /// Sends `event` to instance `id`; returns once its record is committed.
    ///
    /// # Errors
    ///
    /// [`Error::Core`] with [`UnknownInstance`](keel_core::Error::UnknownInstance) if it
    /// is not running (never started, or finished); as [`start`](Self::start) otherwise.
    pub async fn send(&self, id: &InstanceId, event: R::Event) -> Result<(), Error> {
        let id = id.clone();
        self.ask(|reply| Command::Send { id, event, reply }).await?
    }

    /// The state, status and log version of instance `id`, if it is held (running,
    /// parked, or finished with calls still in flight).
    pub async fn state(&self, id: &InstanceId) -> Result<Option<(R::State, Status, u64)>, Error> {
        let id = id.clone();
        self.ask(|reply| Command::Inspect { id, reply }).await
    }

    /// Waits until instance `id` is at rest (finished or parked) and returns its status:
    /// at once if it is; from its log if it is not held.
    ///
    /// # Errors
    ///
    /// [`Error::Core`] with [`UnknownInstance`](keel_core::Error::UnknownInstance) if it
    /// has no log; [`Error::Store`], [`Error::ShutDown`].
    pub async fn wait(&self, id: &InstanceId) -> Result<Status, Error> {
        let held = id.clone();
        match self.ask(|reply| Command::Wait { id: held, reply }).await? {
            Some(settled) => settled.await.map_err(|_| Error::ShutDown),
            None => self.logged_status(id).await,
        }
    }

    /// The status the last record of `id`'s log recorded.
    async fn logged_status(&self, id: &InstanceId) -> Result<Status, Error> {
        let stream = StreamId::from(format!("{}-{id}", self.kind));
        let version = self.store.stream_version(&stream).await?;
        let last = self.store.read_stream(&stream, version, 1).await?;
        let Some(last) = last.first() else {
            return Err(keel_core::Error::UnknownInstance {
                instance: id.to_string(),
            }
            .into());
        };
        let record = Record::<R::State, R::Event>::decode(id, last.version, &last.envelope)?;
        Ok(record.status)
    }

    /// Stops the shell once the batch it is building is committed; returns when it has
    /// stopped. What is in flight stays in the log and is performed again at the next
    /// start. Calls on this handle then fail with [`Error::ShutDown`].
    pub async fn shutdown(&self) {
        // An error means it stopped already.
        let _ = self.ask(|reply| Command::Stop { reply }).await;
    }
}

/// Rebuilds instance `id` of `reducer`'s kind from its log in `store`, as of a record or
/// a time, without running it: point-in-time reconstruction (what the instance held
/// then: state, intents in flight, pending timers, status). Every record up to there is
/// replayed from record 1, snapshots not trusted, so it also checks the log against the
/// reducer. Reads the store only; a running shell may hold the instance meanwhile.
///
/// # Errors
///
/// [`Error::Store`] if the store cannot be read; [`Error::Core`] with
/// [`UnknownInstance`](keel_core::Error::UnknownInstance) if there is no record that
/// old, [`Diverged`](keel_core::Error::Diverged) or
/// [`RecordDecode`](keel_core::Error::RecordDecode) if the log does not replay.
pub async fn rebuild<R: Durable>(
    store: &dyn EventStore,
    reducer: R,
    id: &InstanceId,
    as_of: keel_core::driver::AsOf,
) -> Result<keel_core::driver::Rebuilt<R::State>, Error> {
    let mut driver = Driver::new(reducer)?;
    let stream = driver.stream(id);
    let mut records: Vec<(u64, keel_core::Envelope)> = Vec::new();
    loop {
        // From the version after the last one read: a trimmed log starts past 1 (and
        // is then refused, since a rebuild replays from record 1).
        let from = records.last().map_or(1, |(version, _)| version + 1);
        let page = store
            .read_stream(&stream, from, keel_store::READ_LIMIT_MAX)
            .await?;
        let full = page.len() == keel_store::READ_LIMIT_MAX;
        // Far enough once the last record read is the one asked for, or past it.
        let done = page.last().is_some_and(|event| match as_of {
            keel_core::driver::AsOf::Latest => false,
            keel_core::driver::AsOf::Version(last) => event.version >= last,
            keel_core::driver::AsOf::Time(last) => event.envelope.time > last,
        });
        records.extend(
            page.into_iter()
                .map(|event| (event.version, event.envelope)),
        );
        if !full || done {
            break;
        }
    }
    let log = records
        .iter()
        .map(|(version, envelope)| (*version, envelope));
    Ok(driver.rebuild(id, log, as_of)?)
}
