//! The task that owns the engine: batch, commit, then act.
//!
//! Calls run as futures polled by this same task (not spawned): a handler that answers
//! at once costs no task, no channel and no cross-thread wake-up, and its answer joins
//! the next batch. Handlers must therefore not block: an HTTP call or a bus request
//! waits asynchronously, and CPU-heavy work belongs on `spawn_blocking`.

use std::collections::VecDeque;

use foldhash::{HashMap, HashMapExt as _};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use futures_util::FutureExt as _;
use futures_util::StreamExt as _;
use futures_util::stream::FuturesUnordered;

use keel_core::{Envelope, ExpectedVersion, IntentKind, StreamId, Timestamp, Topic};
use keel_effects::notify::Bus;
use keel_effects::{Call, Clock, InstanceId, Metrics};
use keel_store::{EventStore, READ_LIMIT_MAX};
use tokio::sync::{mpsc, oneshot, watch};

use super::timers::Timers;
use super::{Command, Handlers, OrchestratorConfig, Stats};
use crate::commit::Commit;
use crate::engine::{Batch, Engine};
use crate::error::Error;
use crate::id::{Phase, SagaId};
use crate::saga::{Answer, SagaEvent, SagaStatus, StepCall};
use keel_core::Failure;

/// How many envelopes may wait to be published before new ones are dropped (the bus
/// carries transitions for monitoring; the saga log is the record).
const NOTIFY_QUEUE: usize = 65_536;

/// How many finished sagas each shard remembers the status of.
const RECENT_MAX: usize = 65_536;

/// A call in flight: resolves to its answer.
type CallFuture = Pin<Box<dyn Future<Output = Answered> + Send>>;

/// A call's answer, addressed to its saga.
struct Answered {
    id: SagaId,
    step: u16,
    phase: Phase,
    attempt: u16,
    answer: Answer,
}

/// A status or wait request answered once the batch it came in is committed, so that
/// no caller hears of a status that is not yet durable.
struct Deferred {
    id: SagaId,
    reply: oneshot::Sender<Option<SagaStatus>>,
    /// A wait (answered only with a status at rest) rather than a status request.
    wait: bool,
}

/// A caller waiting for its request's records to be committed.
enum Pending {
    Start(SagaId, oneshot::Sender<Result<(), Error>>),
    Other(SagaId, oneshot::Sender<Result<(), Error>>),
}

pub(super) struct Driver {
    engine: Engine,
    store: Arc<dyn EventStore>,
    handlers: Arc<Handlers>,
    notify: Option<mpsc::Sender<Vec<Envelope>>>,
    clock: Arc<dyn Clock>,
    config: OrchestratorConfig,
    receiver: mpsc::Receiver<Command>,
    timers: Timers,
    /// Timers of running sagas that found `timers` full (see `Stats::timers_refused`).
    timers_refused: u64,
    /// Those of them still waiting for room, set as soon as a timer fires or is
    /// cancelled. Bounded: starts stop short of the queue's bound, so only running
    /// sagas' next timers land here.
    timers_waiting: Vec<keel_core::timer::Scheduled<super::timers::TimerKey>>,
    waiters: HashMap<SagaId, Vec<oneshot::Sender<Option<SagaStatus>>>>,
    /// Status and wait requests to answer once the current batch is committed.
    deferred: Vec<Deferred>,
    /// The final status of recently finished sagas, so that a `wait` or `status` just
    /// after a saga ends needs no read of the store. Bounded: oldest out first.
    recent: HashMap<SagaId, SagaStatus>,
    recent_order: VecDeque<SagaId>,
    /// Calls in flight, polled by this task.
    calls: FuturesUnordered<CallFuture>,
    /// Calls waiting for a free slot (over `calls_in_flight_max`).
    queued: VecDeque<(SagaId, StepCall)>,
    calls_max: usize,
    metrics: Metrics,
    /// Commands taken while a commit waited for the store, to handle next (at most
    /// `queue_capacity`: past that, callers wait on the shard's queue again).
    held: VecDeque<Command>,
    /// Answers that came while a commit waited for the store, to handle next.
    held_answers: Vec<Answered>,
    /// A shutdown asked for (taken into a batch, or while a commit waited).
    stop: Option<oneshot::Sender<()>>,
    /// Set by `Orchestrator::shutdown` before it asks the shards to stop, so that a
    /// commit waiting for the store gives up even if the shutdown request cannot reach
    /// the shard's queue.
    shutdown: watch::Receiver<bool>,
    /// Store outages met, and how long they lasted in all.
    outages: u64,
    outage_ms: u64,
}

impl Driver {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        engine: Engine,
        store: Arc<dyn EventStore>,
        handlers: Arc<Handlers>,
        bus: Option<Bus>,
        clock: Arc<dyn Clock>,
        config: OrchestratorConfig,
        receiver: mpsc::Receiver<Command>,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        let notify = bus.filter(|_| config.publish_transitions).map(|bus| {
            let (sender, mut envelopes) = mpsc::channel::<Vec<Envelope>>(NOTIFY_QUEUE / 64);
            // One publisher, so transitions reach subscribers in the order they happened.
            tokio::spawn(async move {
                while let Some(batch) = envelopes.recv().await {
                    for envelope in batch {
                        let topic = Topic::from(envelope.event_type.clone());
                        if let Err(e) = bus.publish(&topic, envelope).await {
                            tracing::warn!(error = %e, "a saga transition could not be published");
                        }
                    }
                }
            });
            sender
        });
        Self {
            engine,
            store,
            handlers,
            notify,
            clock,
            config,
            receiver,
            timers: Timers::new((config.timers_max / config.shards.max(1)).max(1)),
            timers_refused: 0,
            timers_waiting: Vec::new(),
            waiters: HashMap::new(),
            deferred: Vec::new(),
            recent: HashMap::new(),
            recent_order: VecDeque::new(),
            calls: FuturesUnordered::new(),
            queued: VecDeque::new(),
            calls_max: (config.calls_in_flight_max / config.shards.max(1)).max(1),
            metrics: Metrics::default(),
            held: VecDeque::new(),
            held_answers: Vec::new(),
            stop: None,
            shutdown,
            outages: 0,
            outage_ms: 0,
        }
    }

    /// Applies one record of saga `id` while recovering (see
    /// [`Engine::restore_record`]); a saga that fails is dropped and reported.
    pub(super) fn restore_record(
        &mut self,
        id: &SagaId,
        version: u64,
        envelope: &Envelope,
    ) -> Result<(), Error> {
        self.engine
            .restore_record(id, version, envelope)
            .map(drop)
            .inspect_err(|_| self.engine.forget(id))
    }

    /// Every saga held, with the version of its log.
    pub(super) fn held_versions(&self) -> Vec<(SagaId, u64)> {
        self.engine
            .sagas()
            .filter_map(|state| Some((state.id.clone(), self.engine.version(&state.id)?)))
            .collect()
    }

    /// Drops saga `id` (recovery found its log unreadable).
    pub(super) fn forget(&mut self, id: &SagaId) {
        self.engine.forget(id);
    }

    /// After recovery: sends out what the rebuilt sagas had in flight. Returns how many
    /// sagas were resumed.
    pub(super) async fn resume(&mut self) -> usize {
        let resumed = self.engine.len();
        let now = self.clock.now();
        self.engine.resume(now);
        self.commit_and_act(Vec::new()).await;
        resumed
    }

    pub(super) async fn run(mut self) {
        loop {
            let due = self.timers.next_due().map(|due| self.clock.instant_at(due));
            let first = if let Some(command) = self.held.pop_front() {
                Wake::Command(command)
            } else if !self.held_answers.is_empty() {
                Wake::Timer // handled below, with the answers already in
            } else {
                tokio::select! {
                    biased;
                    command = self.receiver.recv() => match command {
                        Some(command) => Wake::Command(command),
                        // Every `Orchestrator` handle is gone.
                        None => return,
                    },
                    Some(answered) = self.calls.next(), if !self.calls.is_empty() => Wake::Answered(answered),
                    () = sleep_until(due), if due.is_some() => Wake::Timer,
                }
            };
            let now = self.clock.now();
            let mut pending = Vec::new();
            for answered in std::mem::take(&mut self.held_answers) {
                self.answered(answered, now);
            }
            let mut taken = 0;
            let mut next = Some(first);
            while let Some(wake) = next.take() {
                taken += 1;
                match wake {
                    Wake::Command(Command::Shutdown { reply }) => {
                        self.stop = Some(reply);
                        break;
                    }
                    Wake::Command(command) => self.take(command, now, &mut pending),
                    Wake::Answered(answered) => self.answered(answered, now),
                    Wake::Timer => {}
                }
                if taken >= self.config.batch_max {
                    break;
                }
                let command = match self.held.pop_front() {
                    Some(command) => Ok(command),
                    None => self.receiver.try_recv(),
                };
                next = match command {
                    Ok(command) => Some(Wake::Command(command)),
                    // Answers already in: polled without waiting.
                    Err(_) => self
                        .calls
                        .next()
                        .now_or_never()
                        .flatten()
                        .map(Wake::Answered),
                };
            }
            // Every answer already in goes before the timers: under load a step's
            // answer and its timeout can both be due, and the answer is the truth.
            while let Some(answered) = self.calls.next().now_or_never().flatten() {
                self.answered(answered, now);
            }
            while let Some((id, timer)) = self.timers.pop_due(now) {
                // A saga no longer held finished meanwhile: its timer is stale.
                let _ = self
                    .engine
                    .handle(&id, SagaEvent::TimerFired { timer }, now);
            }
            self.commit_and_act(pending).await;
            if let Some(reply) = self.stop.take() {
                let _ = reply.send(());
                return;
            }
        }
    }

    fn answered(&mut self, answered: Answered, now: keel_core::Timestamp) {
        let Answered {
            id,
            step,
            phase,
            attempt,
            answer,
        } = answered;
        if let Some((id, call)) = self.queued.pop_front() {
            self.start_call(id, call);
        }
        // An answer for a saga no longer held is late: the saga finished.
        let _ = self.engine.handle(
            &id,
            SagaEvent::Answered {
                step,
                phase,
                attempt,
                answer,
            },
            now,
        );
    }

    /// Feeds one command to the engine.
    fn take(&mut self, command: Command, now: keel_core::Timestamp, pending: &mut Vec<Pending>) {
        match command {
            // Refused here, where the caller hears of it: once started, a saga that
            // needs a timer could only be told in the log. Starts stop a sixteenth short
            // of the bound, which running sagas keep for their next timers (a step's
            // timeout or retry, set before the last is cancelled).
            Command::Start { reply, .. }
                if self.timers.len() + self.engine.timers_to_set()
                    >= self.timers.capacity() - self.timers.capacity() / 16 =>
            {
                drop(reply.send(Err(Error::Full {
                    what: "shard's timer queue",
                    capacity: self.timers.capacity(),
                })));
            }
            Command::Start {
                saga_type,
                id,
                input,
                reply,
            } => match self.engine.start(&saga_type, id.clone(), input, now) {
                Ok(()) => pending.push(Pending::Start(id, reply)),
                Err(e) => drop(reply.send(Err(e))),
            },
            Command::Cancel { id, reason, reply } => match self.engine.cancel(&id, reason, now) {
                Ok(()) => pending.push(Pending::Other(id, reply)),
                Err(e) => drop(reply.send(Err(self.explain(&id, "cancel", e)))),
            },
            Command::Operate { id, command, reply } => {
                let request = command.name();
                match self.engine.operate(&id, command, now) {
                    Ok(()) => pending.push(Pending::Other(id, reply)),
                    Err(e) => drop(reply.send(Err(self.explain(&id, request, e)))),
                }
            }
            // Answered after this batch commits, so that a caller never hears of a
            // status that is not yet durable.
            Command::Status { id, reply } => self.deferred.push(Deferred {
                id,
                reply,
                wait: false,
            }),
            Command::Wait { id, reply } => match self.engine.state(&id) {
                Some(state) if !state.status.is_at_rest() => {
                    self.waiters.entry(id).or_default().push(reply);
                }
                _ => self.deferred.push(Deferred {
                    id,
                    reply,
                    wait: true,
                }),
            },
            Command::Count { reply } => drop(reply.send(self.engine.len())),
            Command::Stats { reply } => drop(reply.send(self.stats(None))),
            Command::Shutdown { reply } => drop(reply.send(())),
        }
    }

    /// What this shard holds; `outage_since` while a commit waits for the store.
    fn stats(&self, outage_since: Option<Timestamp>) -> Stats {
        Stats {
            sagas: self.engine.len(),
            timers: self.timers.len(),
            timers_refused: self.timers_refused,
            calls_in_flight: self.calls.len(),
            calls_queued: self.queued.len(),
            store_outages: self.outages,
            store_outage_ms: self.outage_ms,
            store_unavailable_since: outage_since,
        }
    }

    /// Commits the engine's batch, then answers the callers and carries out the rest.
    /// While the store is unavailable the commit is tried again (see [`Commit`]). Sagas
    /// whose append the store refused for good are rebuilt from it; what that rebuild
    /// puts in flight is committed and carried out in the next round.
    async fn commit_and_act(&mut self, mut pending: Vec<Pending>) {
        // Rounds: a saga reloaded after a refused append adds to the next batch. Bounded,
        // so a store that keeps refusing cannot spin the driver here.
        for _ in 0..4 {
            let batch = self.engine.take_batch();
            if batch.is_empty() && pending.is_empty() && self.deferred.is_empty() {
                return;
            }
            let Some((batch, failed)) = self.commit(batch).await else {
                // Shut down while the store was away: nothing of the batch is carried
                // out (some of its appends may have landed); its callers hear that the
                // orchestrator shut down, and its sagas resume from their logs at the
                // next start.
                return;
            };
            for entry in pending.drain(..) {
                let (id, reply, start) = match entry {
                    Pending::Start(id, reply) => (id, reply, true),
                    Pending::Other(id, reply) => (id, reply, false),
                };
                let result = match failed.get(&id) {
                    None => Ok(()),
                    // A start expects a new stream; finding the saga's first records
                    // stored (by another run under this id, with other input or at
                    // another time, hence other content) means the same thing.
                    Some(
                        keel_store::Error::VersionConflict { .. }
                        | keel_store::Error::DuplicateEventId { .. }
                        | keel_store::Error::EventConflict { .. },
                    ) if start => Err(Error::SagaExists {
                        saga: id.to_string(),
                    }),
                    Some(e) => Err(Error::Store(e.clone())),
                };
                let _ = reply.send(result);
            }
            let committed: HashMap<SagaId, u64> = batch
                .appends
                .iter()
                .filter(|append| failed.contains_key(&append.saga))
                .map(|append| (append.saga.clone(), append.expected))
                .collect();
            self.act(batch, &failed);
            for (id, error) in failed {
                let ran_to = committed.get(&id).copied().unwrap_or(0);
                self.engine.forget(&id);
                tracing::error!(saga = %id, error = %error, "the store refused a saga's records for good; it is rebuilt from its log");
                if let Err(e) = self.reload(&id, ran_to).await {
                    tracing::error!(saga = %id, error = %e, "a saga could not be rebuilt after a refused append; it resumes when the orchestrator restarts");
                }
                // A saga not held any more (it had finished, or never started) leaves
                // its waiters to read the store; one held keeps them until it settles.
                if self.engine.state(&id).is_none() {
                    for waiter in self.waiters.remove(&id).unwrap_or_default() {
                        let _ = waiter.send(None);
                    }
                }
            }
        }
    }

    /// Commits `batch`, trying again while the store is unavailable; returns it with the
    /// sagas whose append was refused for good, or `None` if a shutdown came first.
    ///
    /// While it waits, it takes requests but handles none (they are held for after the
    /// commit, up to the queue's capacity), except statistics, which say that the store
    /// is away; it polls the calls out and holds their answers. A shutdown ends the
    /// wait: whatever of the batch had not landed is not carried out (its callers hear
    /// that the orchestrator shut down, and its sagas resume from their logs at the
    /// next start).
    async fn commit(
        &mut self,
        batch: Batch,
    ) -> Option<(Batch, HashMap<SagaId, keel_store::Error>)> {
        let mut commit = Commit::new(batch);
        loop {
            Self::append_round(self.store.as_ref(), &mut commit).await;
            let now = self.clock.now();
            let Some(delay) = commit.retry_after(now) else {
                break;
            };
            if let Some((since, error)) = commit.outage() {
                if commit.rounds() == 1 {
                    self.outages += 1;
                    tracing::warn!(%error, sagas = commit.batch().appends.len(), "the store is unavailable: the batch is held and its commit tried again until the store is back");
                } else if commit.rounds().is_multiple_of(10) {
                    let ms = now.unix_millis().saturating_sub(since.unix_millis());
                    tracing::error!(%error, unavailable_ms = ms, rounds = commit.rounds(), "the store is still unavailable");
                }
            }
            if self.stop.is_some() || *self.shutdown.borrow() {
                return None;
            }
            let since = commit.outage().map(|(since, _)| since);
            let sleep = tokio::time::sleep(delay);
            tokio::pin!(sleep);
            loop {
                let room = self.held.len() < self.config.queue_capacity;
                tokio::select! {
                    () = &mut sleep => break,
                    _ = self.shutdown.changed() => return None,
                    Some(answered) = self.calls.next(), if !self.calls.is_empty() => {
                        self.held_answers.push(answered);
                    }
                    command = self.receiver.recv(), if room => match command {
                        Some(Command::Shutdown { reply }) => {
                            self.stop = Some(reply);
                            return None;
                        }
                        Some(Command::Stats { reply }) => drop(reply.send(self.stats(since))),
                        Some(Command::Count { reply }) => drop(reply.send(self.engine.len())),
                        Some(command) => self.held.push_back(command),
                        // Every handle is gone: no one is left to hear of the outcome.
                        None => return None,
                    },
                }
            }
        }
        if let Some((since, _)) = commit.outage() {
            let ms = self
                .clock
                .now()
                .unix_millis()
                .saturating_sub(since.unix_millis());
            self.outage_ms += u64::try_from(ms).unwrap_or(0);
            tracing::info!(
                unavailable_ms = ms,
                rounds = commit.rounds(),
                "the store is back; the held batch is committed"
            );
        }
        let (batch, refused) = commit.finish();
        Some((batch, refused.into_iter().collect()))
    }

    /// Makes one round of `commit`'s appends, all at once: the store puts concurrent
    /// appends into shared transactions.
    ///
    /// Takes the store rather than `&self`: the driver holds call futures that are
    /// `Send` but not `Sync`, so no `&Driver` may live across an await.
    async fn append_round(store: &dyn EventStore, commit: &mut Commit) {
        let indices = commit.pending();
        if commit.dead_letters_pending() {
            // First: a crash before the sagas' records repeats these under the same ids
            // (deduplicated by the store) rather than losing them.
            let stream = StreamId::from_static(crate::requests::DEAD_LETTER_STREAM);
            let letters = &commit.batch().dead_letters;
            let result = store.append(&stream, ExpectedVersion::Any, letters).await;
            commit.dead_letters_answered(result);
            if commit.dead_letters_pending() {
                return; // the store is away: the records wait with them
            }
        }
        let batch = commit.batch();
        let appends = indices.iter().map(|&index| {
            let append = &batch.appends[index];
            let stream = &append.stream;
            let expected = match append.expected {
                0 => ExpectedVersion::NoStream,
                version => ExpectedVersion::Exact(version),
            };
            store.append(stream, expected, &append.records)
        });
        let results = futures_util::future::join_all(appends).await;
        for (index, result) in indices.into_iter().zip(results) {
            commit.answered(index, result);
        }
        tracing::trace!(
            sagas = commit.batch().appends.len(),
            records = commit.batch().record_count(),
            "committed"
        );
    }

    /// Carries out a committed batch, skipping the sagas whose append failed.
    fn act(&mut self, batch: Batch, failed: &HashMap<SagaId, keel_store::Error>) {
        let ok = |id: &SagaId| !failed.contains_key(id);
        // Set, then cancel: a timer set and cancelled within one batch (an attempt whose
        // closure panicked, a deadline a recovered saga gives up) is not kept. Timer
        // names carry the attempt, so none is cancelled and then set again in a batch.
        let mut refused = Vec::new();
        for (id, timer, due) in batch.timers {
            if ok(&id)
                && let Err(full) = self.timers.set(id, timer, due)
            {
                refused.push(full.timer);
            }
        }
        for (id, timer) in &batch.cancelled {
            if ok(id) {
                self.timers.cancel(id, *timer);
            }
        }
        if !refused.is_empty() || !self.timers_waiting.is_empty() {
            self.set_refused(refused, &batch.cancelled);
        }
        for (id, call) in batch.calls {
            if ok(&id) {
                self.dispatch(id, call);
            }
        }
        if let Some(notify) = &self.notify {
            let envelopes: Vec<Envelope> = batch
                .notifications
                .into_iter()
                .filter(|envelope| {
                    envelope
                        .subject
                        .as_deref()
                        .is_none_or(|subject| !failed.keys().any(|id| id.as_str() == subject))
                })
                .collect();
            if !envelopes.is_empty() && notify.try_send(envelopes).is_err() {
                tracing::warn!(
                    "the transition publisher is behind; transitions were dropped from the bus (the saga log has them)"
                );
            }
        }
        let mut settled = HashMap::with_capacity(batch.settled.len());
        for (id, status) in batch.settled {
            if !ok(&id) {
                continue;
            }
            if let Some(waiters) = self.waiters.remove(&id) {
                for waiter in waiters {
                    let _ = waiter.send(Some(status.clone()));
                }
            }
            if status.is_finished() {
                self.remember(id.clone(), status.clone());
            }
            settled.insert(id, status);
        }
        for Deferred { id, reply, wait } in std::mem::take(&mut self.deferred) {
            // Held: its status now (a wait for a saga that moved on in this batch waits
            // on); finished lately: that; otherwise the caller reads the store, which
            // now holds everything committed.
            let status = match self.engine.state(&id) {
                Some(state) if wait && !state.status.is_at_rest() => {
                    self.waiters.entry(id).or_default().push(reply);
                    continue;
                }
                Some(state) => Some(state.status.clone()),
                None => settled.get(&id).or_else(|| self.recent.get(&id)).cloned(),
            };
            let _ = reply.send(status);
        }
    }

    /// Sets the timers a full queue refused, in `act` now or before, as far as there is
    /// room now that the batch's cancellations (and the timers fired before it) made
    /// some; drops those the batch cancelled. A timer that still finds no room waits in
    /// `timers_waiting`: never dropped, so its saga is not left without it.
    fn set_refused(
        &mut self,
        refused: Vec<keel_core::timer::Scheduled<super::timers::TimerKey>>,
        cancelled: &[(SagaId, crate::saga::SagaTimer)],
    ) {
        for timer in &refused {
            self.timers_refused += 1;
            tracing::warn!(saga = %timer.id.0, timer = %timer.id.1, limit = self.timers.capacity(), "the shard's timer queue is full: a running saga's timer waits for room (raise OrchestratorConfig::timers_max)");
        }
        let mut waiting = std::mem::take(&mut self.timers_waiting);
        waiting.extend(refused);
        if !cancelled.is_empty() {
            let cancelled: std::collections::HashSet<(&SagaId, crate::saga::SagaTimer)> =
                cancelled.iter().map(|(id, timer)| (id, *timer)).collect();
            waiting.retain(|timer| !cancelled.contains(&(&timer.id.0, timer.id.1)));
        }
        for timer in waiting {
            let (id, saga_timer) = timer.id;
            if let Err(full) = self.timers.set(id, saga_timer, timer.due) {
                self.timers_waiting.push(full.timer);
            }
        }
    }

    /// A saga that is not held may simply have finished: say so rather than "unknown".
    fn explain(&self, id: &SagaId, request: &'static str, error: Error) -> Error {
        match (&error, self.recent.get(id)) {
            (Error::UnknownSaga { .. }, Some(status)) => Error::NotAllowed {
                saga: id.to_string(),
                request,
                reason: format!("it has finished ({})", status.name()),
            },
            _ => error,
        }
    }

    /// Keeps the final status of a saga that just finished, forgetting the oldest.
    fn remember(&mut self, id: SagaId, status: SagaStatus) {
        if self.recent_order.len() >= RECENT_MAX
            && let Some(oldest) = self.recent_order.pop_front()
        {
            self.recent.remove(&oldest);
        }
        self.recent_order.push_back(id.clone());
        self.recent.insert(id, status);
    }

    /// Starts a call, or queues it while `calls_in_flight_max` calls are out.
    fn dispatch(&mut self, id: SagaId, call: StepCall) {
        if self.calls.len() >= self.calls_max {
            self.queued.push_back((id, call));
            return;
        }
        self.start_call(id, call);
    }

    fn start_call(&mut self, id: SagaId, call: StepCall) {
        let handler = match &call.intent.kind {
            IntentKind::Http(_) => self.handlers.http.clone(),
            IntentKind::Request { .. } => self.handlers.request.clone(),
            IntentKind::Custom { name, .. } => self.handlers.custom.get(name).cloned(),
            _ => None,
        };
        let StepCall {
            step,
            phase,
            attempt,
            intent,
        } = call;
        let future: CallFuture = match handler {
            Some(handler) => {
                let call = Call::new(intent, InstanceId::new(id.shared()), self.metrics.clone());
                // A panicking handler fails its attempt, not the shard.
                let answer = crate::guard::answer_of(handler.as_ref(), call);
                Box::pin(async move {
                    let answer = answer.await;
                    Answered {
                        id,
                        step,
                        phase,
                        attempt,
                        answer,
                    }
                })
            }
            None => {
                let reason = format!(
                    "no handler is registered for {} steps: add one to the orchestrator",
                    describe(&intent.kind)
                );
                let answer = Answer::Failed(Failure::permanent(reason));
                Box::pin(std::future::ready(Answered {
                    id,
                    step,
                    phase,
                    attempt,
                    answer,
                }))
            }
        };
        self.calls.push(future);
    }

    /// Rebuilds saga `id` from the store after its append was refused, the log having
    /// held `committed` records as far as this shard knew. Reads are tried again while
    /// the store is unavailable (until a shutdown).
    ///
    /// If the log is as this shard left it, what it has in flight is still in flight
    /// (the refused records sent nothing): the saga goes on from its log and nothing is
    /// sent again, so a record the store keeps refusing cannot make a call go out again
    /// and again. If another writer moved the log on, the saga resumes as after a
    /// restart: what that writer left in flight is sent again, under the same ids.
    async fn reload(&mut self, id: &SagaId, committed: u64) -> Result<(), Error> {
        let stream = id.stream();
        let mut events = Vec::new();
        let mut round = 0;
        loop {
            match self
                .store
                .read_stream(&stream, events.len() as u64 + 1, READ_LIMIT_MAX)
                .await
            {
                Ok(page) => {
                    let full = page.len() == READ_LIMIT_MAX;
                    events.extend(page);
                    if !full {
                        break;
                    }
                }
                Err(e) if crate::commit::is_unavailable(&e) && !*self.shutdown.borrow() => {
                    round += 1;
                    tokio::time::sleep(crate::commit::retry_delay(round)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
        if events.is_empty() {
            // Its start never committed: there is nothing to reload.
            return Ok(());
        }
        let moved_on = events.len() as u64 != committed;
        self.engine
            .restore(id, events.iter().map(|e| (e.version, &e.envelope)))?;
        if moved_on {
            self.engine.resume_one(id, self.clock.now());
        }
        Ok(())
    }
}

/// What woke the driver.
enum Wake {
    Command(Command),
    Answered(Answered),
    Timer,
}

/// Sleeps until `at`; never returns when there is no timer (the branch is disabled).
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn describe(kind: &IntentKind) -> String {
    match kind {
        IntentKind::Custom { name, .. } => format!("custom `{name}`"),
        other => other.family().to_owned(),
    }
}
