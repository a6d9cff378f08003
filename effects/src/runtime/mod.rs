//! The runtime: hosts reducer instances and carries out their intents.
//!
//! Each instance has an id, a state and a bounded mailbox, and is one tokio task:
//! actions for an instance are reduced one at a time in arrival order, while different
//! instances run concurrently. After each step every intent goes to the handler for its
//! family; the outcome comes back to the same instance as an action (see
//! [`Outcome`]), so the reducer decides what happens next.
//!
//! An instance runs until it is [stopped](Runtime::stop), the runtime [shuts
//! down](Runtime::shutdown), or it ends on its own: a fault (a step over a bound, an
//! outbox commit that failed) or a panic of its reducer. Its entry goes with it, so its
//! id can be spawned again and the runtime's memory does not grow with the instances
//! that came and went; the next shutdown reports what one that ended on its own left.
//!
//! With an outbox ([`RuntimeBuilder::outbox`]), each step first commits its intents to a
//! store and performs them only after the commit; each is marked done once its outcome
//! has been reduced. After a crash, [`Runtime::recover_outbox`] performs the pending ones
//! again under the same intent ids. Without one, nothing is written anywhere: a crash
//! loses the intents in flight (a graceful [`shutdown`](Runtime::shutdown) still hands
//! them back).
//!
//! ```
//! use keel_core::{Cause, HttpRequest, Input, Intent, Outcome, Reducer};
//! use keel_effects::runtime::Runtime;
//! use keel_effects::Failure;
//!
//! /// Counts pings and the outcomes of the calls each ping makes.
//! struct Pinger;
//!
//! enum Msg { Ping, Done(Outcome) }
//!
//! impl From<Outcome> for Msg {
//!     fn from(outcome: Outcome) -> Self { Msg::Done(outcome) }
//! }
//!
//! impl Reducer for Pinger {
//!     type State = (u32, u32);
//!     type Action = Input<Msg>;
//!     fn reduce_into(&self, state: &mut (u32, u32), action: Input<Msg>, intents: &mut Vec<Intent>) {
//!         match action.body {
//!             Msg::Ping => {
//!                 state.0 += 1;
//!                 action.cause.emitter(intents).emit(HttpRequest::get("https://example.invalid/"));
//!             }
//!             Msg::Done(_) => state.1 += 1,
//!         }
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), keel_effects::Error> {
//! // No HTTP handler registered: the call fails, and the failure comes back as an outcome.
//! let runtime = Runtime::builder(Pinger).build()?;
//! runtime.spawn("pinger".into(), (0, 0))?;
//! runtime.command(&"pinger".into(), keel_core::CorrelationId::from_u128(1), Msg::Ping).await?;
//! let report = runtime.shutdown(std::time::Duration::from_secs(1)).await;
//! assert_eq!(report.instances[0].1, (1, 1));
//! # Ok(()) }
//! ```

mod dedup;
mod instance;
mod outbox;
mod registry;

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keel_core::{CausationId, CorrelationId, EventType, Input, Intent, Outcome, Reducer};
use keel_store::{EventStore, READ_LIMIT_MAX};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::clock::{Clock, TokioClock};
use crate::error::Error;
use crate::handler::{InstanceId, SharedHandler};
use crate::handlers::Handlers;
use crate::metrics::{Metrics, MetricsSnapshot};
use crate::policy::DeadLetterQueue;
use dedup::OutcomeRecord;
use instance::Instance;
use outbox::Outbox;
pub use outbox::{OUTBOX_ENTRY_NAME, OUTBOX_STREAM};
use registry::{InstanceHandle, Registry, Retirement};

/// The runtime's bounds. Every queue and table it keeps is limited by one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuntimeConfig {
    /// Actions waiting in one instance's mailbox; a full mailbox makes `send` wait.
    pub mailbox_capacity: usize,
    /// Intents one step may emit; a step over it stops its instance with
    /// [`Error::TooManyIntents`] and hands its intents back.
    pub intents_per_step_max: usize,
    /// Effects of one instance running at once; more wait their turn, and the instance
    /// takes no new mail meanwhile.
    pub in_flight_per_instance_max: usize,
    /// Pending timers of one instance; a timer of a new name past it is handed back
    /// ([`HandBackReason::StepOverLimit`]) and logged as an error.
    pub timers_per_instance_max: usize,
    /// Outcomes remembered for deduplication by intent id.
    pub outcome_record_capacity: usize,
    /// Instances hosted at once.
    pub instances_max: usize,
    /// Reports kept of instances that ended on their own (a fault, a panic) for the next
    /// [`Runtime::shutdown`]: each instance's last state, the intents it handed back and
    /// its fault. Past it, the oldest report is dropped, with a warning in the log.
    pub ended_reports_max: usize,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            mailbox_capacity: 1024,
            intents_per_step_max: 1024,
            in_flight_per_instance_max: 1024,
            timers_per_instance_max: crate::timer::CAPACITY_DEFAULT,
            outcome_record_capacity: 100_000,
            instances_max: 1_000_000,
            ended_reports_max: 1024,
        }
    }
}

impl RuntimeConfig {
    fn validate(&self) -> Result<(), Error> {
        let settings = [
            ("mailbox_capacity", self.mailbox_capacity),
            ("intents_per_step_max", self.intents_per_step_max),
            (
                "in_flight_per_instance_max",
                self.in_flight_per_instance_max,
            ),
            ("timers_per_instance_max", self.timers_per_instance_max),
            ("outcome_record_capacity", self.outcome_record_capacity),
            ("instances_max", self.instances_max),
            ("ended_reports_max", self.ended_reports_max),
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

/// State shared by the runtime handle and its instance tasks.
struct Shared<R: Reducer> {
    reducer: R,
    handlers: Handlers,
    config: RuntimeConfig,
    clock: Arc<dyn Clock>,
    metrics: Metrics,
    outcomes: OutcomeRecord,
    /// Where each step's intents are committed before they are performed, if anywhere.
    outbox: Option<Outbox>,
    registry: Mutex<Registry<R>>,
    accepting: AtomicBool,
}

type Inspector<S> = Box<dyn FnOnce(&S) + Send>;

/// What an instance's mailbox carries.
enum Message<R: Reducer> {
    Action(R::Action),
    Inspect(Inspector<R::State>),
    /// Run this intent again (a dead-letter replay), forgetting its recorded outcome.
    Redispatch(Intent),
    /// Run this intent, left pending in the outbox by an earlier run; it is recorded
    /// already.
    Recovered(Intent),
    Drain {
        deadline: Instant,
    },
}

/// Builds a [`Runtime`].
#[must_use = "a builder does nothing until `build` is called"]
pub struct RuntimeBuilder<R> {
    reducer: R,
    handlers: Handlers,
    config: RuntimeConfig,
    clock: Option<Arc<dyn Clock>>,
    metrics: Metrics,
    outbox: Option<Arc<dyn EventStore>>,
}

impl<R> fmt::Debug for RuntimeBuilder<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RuntimeBuilder")
            .field("config", &self.config)
            .field("outbox", &self.outbox.is_some())
            .finish_non_exhaustive()
    }
}

impl<R> RuntimeBuilder<R> {
    /// Carries out `Notify` intents with `handler` (usually a
    /// [`NotifyHandler`](crate::notify::NotifyHandler) wrapped in policies).
    pub fn notify(mut self, handler: SharedHandler) -> Self {
        self.handlers = self.handlers.notify(handler);
        self
    }

    /// Carries out `Persist` intents with `handler` (usually a
    /// [`PersistHandler`](crate::persist::PersistHandler)).
    pub fn persist(mut self, handler: SharedHandler) -> Self {
        self.handlers = self.handlers.persist(handler);
        self
    }

    /// Carries out `Http` intents with `handler` (usually this crate's `HttpHandler`,
    /// feature `http`, wrapped in policies).
    pub fn http(mut self, handler: SharedHandler) -> Self {
        self.handlers = self.handlers.http(handler);
        self
    }

    /// Carries out `Custom` intents named `name` with `handler`.
    pub fn custom(mut self, name: EventType, handler: SharedHandler) -> Self {
        self.handlers = self.handlers.custom(name, handler);
        self
    }

    /// Sets the bounds.
    pub fn config(mut self, config: RuntimeConfig) -> Self {
        self.config = config;
        self
    }

    /// Sets the time source (default: [`TokioClock::new`]).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Shares these counters (for handlers built before the runtime that count into
    /// the same place).
    pub fn metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// Makes the runtime's intents durable in `store`'s outbox: each step's intents
    /// (all but `CancelTimer`, which acts at once) are committed, in one
    /// [`append_with_intents`](EventStore::append_with_intents) to [`OUTBOX_STREAM`],
    /// before any of them is performed, and each is marked done once its outcome has been
    /// reduced and the intents that outcome caused are committed in turn. After a crash,
    /// [`Runtime::recover_outbox`] carries out what was left pending, under the same
    /// intent ids.
    ///
    /// Each step then waits for its commit, which the durable stores group with the
    /// commits of other instances. A step whose commit fails stops its instance (see
    /// [`HandBackReason::NotRecorded`]): an intent is never performed unrecorded. Give
    /// the runtime a store (or database) of its own for this, not one whose outbox an
    /// [`OutboxDispatcher`](crate::persist::outbox::OutboxDispatcher) drains.
    pub fn outbox(mut self, store: Arc<dyn EventStore>) -> Self {
        self.outbox = Some(store);
        self
    }

    /// Builds the runtime. Must be called inside a tokio runtime when the default clock
    /// is used.
    pub fn build(self) -> Result<Runtime<R>, Error>
    where
        R: Reducer,
    {
        self.config.validate()?;
        Ok(Runtime {
            shared: Arc::new(Shared {
                reducer: self.reducer,
                handlers: self.handlers,
                config: self.config,
                clock: self.clock.unwrap_or_else(|| Arc::new(TokioClock::new())),
                metrics: self.metrics,
                outcomes: OutcomeRecord::new(self.config.outcome_record_capacity),
                outbox: self.outbox.map(Outbox::new),
                registry: Mutex::new(Registry::new()),
                accepting: AtomicBool::new(true),
            }),
        })
    }
}

/// Hosts reducer instances and carries out their intents; cheap to clone.
///
/// `R` reduces [`Input<M>`] where `M: From<Outcome>`, so the runtime can hand each
/// outcome back to the reducer as an action.
pub struct Runtime<R: Reducer> {
    shared: Arc<Shared<R>>,
}

impl<R: Reducer> Clone for Runtime<R> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<R: Reducer> fmt::Debug for Runtime<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runtime")
            .field("config", &self.shared.config)
            .field("metrics", &self.shared.metrics.snapshot())
            .finish_non_exhaustive()
    }
}

impl<R: Reducer> Runtime<R> {
    /// Starts building a runtime for `reducer`.
    pub fn builder(reducer: R) -> RuntimeBuilder<R> {
        RuntimeBuilder {
            reducer,
            handlers: Handlers::default(),
            config: RuntimeConfig::default(),
            clock: None,
            metrics: Metrics::default(),
            outbox: None,
        }
    }
}

impl<R, M> Runtime<R>
where
    R: Reducer<Action = Input<M>> + Send + Sync + 'static,
    R::State: Send + 'static,
    M: From<Outcome> + Send + 'static,
{
    /// Starts an instance with `state`.
    ///
    /// The id is taken until the instance ends: when it is [stopped](Self::stop), at
    /// [shutdown](Self::shutdown), or on its own after a fault (a step over a bound, an
    /// outbox commit that failed) or a panic of its reducer. Then it may be spawned again.
    pub fn spawn(&self, id: InstanceId, state: R::State) -> Result<(), Error> {
        self.spawn_with(id, state, Vec::new())
    }

    /// Starts an instance with `state` and carries out `intents` first (for example the
    /// entry intents of a state machine's [`start`](keel_core::Machine::start)).
    pub fn spawn_with(
        &self,
        id: InstanceId,
        state: R::State,
        intents: Vec<Intent>,
    ) -> Result<(), Error> {
        if !self.shared.accepting.load(Ordering::Acquire) {
            return Err(Error::ShutDown);
        }
        // Held until the entry is in: a task that ends at once waits for it to take it
        // out, rather than missing it and leaving it behind.
        let mut registry = self.lock_registry();
        if registry.running.contains_key(&id) {
            return Err(Error::DuplicateInstance {
                instance: id.to_string(),
            });
        }
        if registry.running.len() >= self.shared.config.instances_max {
            return Err(Error::QueueFull {
                queue: "instance table",
                capacity: self.shared.config.instances_max,
            });
        }
        let (mailbox, receiver) = mpsc::channel(self.shared.config.mailbox_capacity);
        let generation = registry.next_generation();
        let instance = Instance::new(Arc::clone(&self.shared), id.clone(), state);
        let retirement = Retirement::new(Arc::clone(&self.shared), id.clone(), generation);
        let task = tokio::spawn(async move {
            let finished = instance.run(receiver, intents).await;
            retirement.finished(finished)
        });
        registry.insert(id, mailbox, task, generation);
        Ok(())
    }

    /// How many instances are running: spawned and not ended yet. An instance ends when
    /// it is [stopped](Self::stop), at [shutdown](Self::shutdown), or on its own after a
    /// fault or a panic; its entry goes with it, so the count does not grow with the
    /// instances that came and went.
    pub fn instance_count(&self) -> usize {
        self.lock_registry().running.len()
    }

    /// Stops instance `id` as [`shutdown`](Self::shutdown) stops them all, and returns
    /// the same report for it: it takes no new actions, reduces those already sent and
    /// the outcomes of its effects that finish within `grace`, and hands back the rest
    /// and its pending timers. Its id is free for a new instance from the call on.
    pub async fn stop(
        &self,
        id: &InstanceId,
        grace: Duration,
    ) -> Result<ShutdownReport<R::State>, Error> {
        if !self.shared.accepting.load(Ordering::Acquire) {
            return Err(Error::ShutDown);
        }
        let taken = self.lock_registry().running.remove(id);
        let handle = taken.ok_or_else(|| Error::UnknownInstance {
            instance: id.to_string(),
        })?;
        let deadline = Instant::now() + grace;
        let mut report = ShutdownReport::new();
        drain(vec![(id.clone(), handle)], deadline, &mut report).await;
        Ok(report)
    }

    /// Sends `action` to instance `id`, waiting while its mailbox is full.
    pub async fn send(&self, id: &InstanceId, action: R::Action) -> Result<(), Error> {
        let mailbox = self.mailbox(id)?;
        mailbox
            .send(Message::Action(action))
            .await
            .map_err(|_| Error::ShutDown)
    }

    /// Sends `action` to instance `id` if its mailbox has room, without waiting.
    pub fn try_send(&self, id: &InstanceId, action: R::Action) -> Result<(), Error> {
        let mailbox = self.mailbox(id)?;
        mailbox
            .try_send(Message::Action(action))
            .map_err(|error| match error {
                mpsc::error::TrySendError::Full(_) => Error::QueueFull {
                    queue: "mailbox",
                    capacity: self.shared.config.mailbox_capacity,
                },
                mpsc::error::TrySendError::Closed(_) => Error::ShutDown,
            })
    }

    /// Sends `body` to instance `id` as a new action of workflow `correlation`, with a
    /// fresh causation id and `now` from the runtime's clock. Returns the causation id,
    /// from which the ids of the intents it causes derive.
    pub async fn command(
        &self,
        id: &InstanceId,
        correlation: CorrelationId,
        body: M,
    ) -> Result<CausationId, Error> {
        // A fresh id is drawn here, at the edge; reducers never draw one.
        let causation = CausationId::new(uuid::Uuid::new_v4());
        let cause = keel_core::Cause::new(correlation, causation);
        self.send(id, Input::new(cause, self.shared.clock.now(), body))
            .await?;
        Ok(causation)
    }

    /// Runs `look` on the state of instance `id` after the actions sent before it.
    pub async fn inspect<T: Send + 'static>(
        &self,
        id: &InstanceId,
        look: impl FnOnce(&R::State) -> T + Send + 'static,
    ) -> Result<T, Error> {
        let mailbox = self.mailbox(id)?;
        let (answer, answered) = tokio::sync::oneshot::channel();
        let inspector: Inspector<R::State> = Box::new(move |state| {
            let _ = answer.send(look(state));
        });
        mailbox
            .send(Message::Inspect(inspector))
            .await
            .map_err(|_| Error::ShutDown)?;
        answered.await.map_err(|_| Error::ShutDown)
    }

    /// Takes the dead letter `id` from `queue` and carries its intent out again, under
    /// the same intent id, for the instance that emitted it: the new outcome is reduced
    /// by that instance like any other. If the replay fails too, the dead-letter layer
    /// parks it again under a new id.
    pub async fn replay_dead_letter(&self, queue: &DeadLetterQueue, id: u64) -> Result<(), Error> {
        let letter = queue.get(id).ok_or(Error::UnknownDeadLetter { id })?;
        let mailbox = self.mailbox(&letter.instance)?;
        let letter = queue.take(id)?;
        let intent = Intent::clone(&letter.intent);
        if mailbox.send(Message::Redispatch(intent)).await.is_err() {
            // The instance stopped in between: park the letter again rather than lose it.
            queue.push(
                letter.intent,
                letter.instance,
                letter.error,
                letter.attempts,
                letter.at,
            );
            return Err(Error::ShutDown);
        }
        Ok(())
    }

    /// Carries out the intents that an earlier run committed to the outbox (see
    /// [`RuntimeBuilder::outbox`]) and left pending: crashed before their outcome, or
    /// handed back by a shutdown. Each goes, under its own intent id, to the instance
    /// that emitted it, which reduces its outcome like any other and then marks it done.
    ///
    /// Call it after spawning the instances with their restored states. Intents of an
    /// instance that is not running stay pending, counted in the report; call again once
    /// it runs. Calling again is safe: an instance skips an intent it is already
    /// carrying out. One call reads at most [`READ_LIMIT_MAX`] pending intents per page
    /// and stops at the first page with nothing new; `more_pending` then says whether
    /// another call may find more. Without an outbox, there is nothing to recover.
    pub async fn recover_outbox(&self) -> Result<RecoveryReport, Error> {
        let mut report = RecoveryReport::default();
        let Some(outbox) = &self.shared.outbox else {
            return Ok(report);
        };
        // Bounded by the pending intents: each turn sends at least one not sent before.
        let mut sent = std::collections::HashSet::new();
        loop {
            let page = outbox.pending(READ_LIMIT_MAX).await?;
            report.more_pending = page.full;
            let mut fresh = false;
            for id in page.foreign {
                if sent.insert(id) {
                    fresh = true;
                    report.foreign += 1;
                }
            }
            for (instance, intent) in page.entries {
                if !sent.insert(intent.id) {
                    continue;
                }
                fresh = true;
                let delivered = match self.mailbox(&instance) {
                    Ok(mailbox) => mailbox.send(Message::Recovered(intent)).await.is_ok(),
                    Err(_) => false,
                };
                if delivered {
                    report.dispatched += 1;
                } else {
                    report.orphaned += 1;
                }
            }
            if !fresh {
                return Ok(report);
            }
        }
    }

    /// The counters now.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.shared.metrics.snapshot()
    }

    /// The runtime's clock.
    pub fn clock(&self) -> Arc<dyn Clock> {
        Arc::clone(&self.shared.clock)
    }

    /// Stops gracefully: takes no new actions or instances, reduces the actions already
    /// accepted and the outcomes of effects already running, and hands back (rather than
    /// starts) every intent emitted meanwhile, every pending timer, and, after `grace`,
    /// every effect still running. Nothing is dropped silently: each intent either ran
    /// and was reduced, or is in the report.
    pub async fn shutdown(&self, grace: Duration) -> ShutdownReport<R::State> {
        self.shared.accepting.store(false, Ordering::Release);
        let deadline = Instant::now() + grace;
        let mut report = ShutdownReport::new();
        let handles: Vec<(InstanceId, InstanceHandle<R>)> = {
            let mut registry = self.lock_registry();
            report.add_ended(registry.ended.drain(..));
            registry.running.drain().collect()
        };
        drain(handles, deadline, &mut report).await;
        report.instances.sort_by(|a, b| a.0.cmp(&b.0));
        report
    }

    fn mailbox(&self, id: &InstanceId) -> Result<mpsc::Sender<Message<R>>, Error> {
        if !self.shared.accepting.load(Ordering::Acquire) {
            return Err(Error::ShutDown);
        }
        self.lock_registry()
            .running
            .get(id)
            .map(|handle| handle.mailbox.clone())
            .ok_or_else(|| Error::UnknownInstance {
                instance: id.to_string(),
            })
    }

    fn lock_registry(&self) -> std::sync::MutexGuard<'_, Registry<R>> {
        registry::lock(&self.shared.registry)
    }
}

/// Asks each instance of `handles` (taken out of the registry) to finish by `deadline`,
/// and adds what each leaves to `report`.
async fn drain<R: Reducer>(
    handles: Vec<(InstanceId, InstanceHandle<R>)>,
    deadline: Instant,
    report: &mut ShutdownReport<R::State>,
) {
    for (_, handle) in &handles {
        // Fails only if the task has already ended, which the join below reports.
        let _ = handle.mailbox.send(Message::Drain { deadline }).await;
    }
    for (id, handle) in handles {
        drop(handle.mailbox);
        match handle.task.await {
            Ok(finished) => {
                // Its entry was taken out before it ended: it leaves everything here.
                debug_assert!(finished.is_some(), "instance {id} reported elsewhere");
                if let Some(finished) = finished {
                    report.add(id, finished);
                }
            }
            Err(error) => report
                .faults
                .push((id, format!("the instance task failed: {error}"))),
        }
    }
}

/// What a [`Runtime::shutdown`] (or a [`Runtime::stop`]) leaves: each instance's last
/// state, and every intent that was not carried out. A shutdown's report includes the
/// instances that ended on their own since the runtime started (at most
/// [`RuntimeConfig::ended_reports_max`] of them).
#[derive(Debug)]
pub struct ShutdownReport<S> {
    /// Each instance's state when it stopped, sorted by id. An id can appear twice: an
    /// instance that ended on its own, then one spawned again under its id.
    pub instances: Vec<(InstanceId, S)>,
    /// Intents not carried out, to be dispatched again after a restart. With an outbox
    /// they are still pending in the store (except those handed back as
    /// [`HandBackReason::NotRecorded`] or [`HandBackReason::StepOverLimit`]), and
    /// [`Runtime::recover_outbox`] dispatches them; without one, this list is all
    /// that is left of them.
    pub handed_back: Vec<HandedBack>,
    /// Instances that stopped on an error, with the error.
    pub faults: Vec<(InstanceId, String)>,
}

/// What [`Runtime::recover_outbox`] did with the pending intents it read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecoveryReport {
    /// Intents sent to the instance that emitted them, to be carried out again.
    pub dispatched: usize,
    /// Intents of instances that are not running: left pending.
    pub orphaned: usize,
    /// Pending intents that a runtime did not record (another producer shares the
    /// store's outbox): left pending.
    pub foreign: usize,
    /// Whether the last page read was full, so that more intents may be pending than
    /// this call saw.
    pub more_pending: bool,
}

/// An intent the runtime did not carry out, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct HandedBack {
    /// The instance that emitted it.
    pub instance: InstanceId,
    /// The intent.
    pub intent: Intent,
    /// Why it was not carried out.
    pub reason: HandBackReason,
}

/// Why an intent was handed back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum HandBackReason {
    /// Emitted during the shutdown, or still queued behind the in-flight bound.
    NotStarted,
    /// A timer that had not fired.
    TimerPending,
    /// Still running when the grace period ended; its effect may or may not have
    /// happened, so it must be retried under the same id.
    Aborted,
    /// Emitted by a step over a bound (intents per step, pending timers).
    StepOverLimit,
    /// Emitted by a step whose intents could not be committed to the outbox (the fault
    /// says why); never started, and not pending in the store either.
    NotRecorded,
}
