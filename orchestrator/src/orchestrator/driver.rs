//! The task that owns the engine: batch, commit, then act.

use std::collections::HashMap;
use std::sync::Arc;

use keel_core::{Envelope, ExpectedVersion, IntentKind, StreamId, Topic};
use keel_effects::notify::Bus;
use keel_effects::persist::{EventStore, READ_LIMIT_MAX};
use keel_effects::{Call, Clock, InstanceId, Metrics};
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::timers::Timers;
use super::{Command, Handlers, OrchestratorConfig};
use crate::definition::FailureClass;
use crate::engine::{Batch, Engine};
use crate::error::Error;
use crate::id::SagaId;
use crate::saga::{Answer, SagaEvent, SagaStatus, StepCall};

/// How many envelopes may wait to be published before new ones are dropped (the bus
/// carries transitions for monitoring; the saga log is the record).
const NOTIFY_QUEUE: usize = 65_536;

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
    /// Calls send their answers here; weak, so that dropping every `Orchestrator`
    /// stops the driver.
    answers: mpsc::WeakSender<Command>,
    receiver: mpsc::Receiver<Command>,
    timers: Timers,
    waiters: HashMap<SagaId, Vec<oneshot::Sender<Option<SagaStatus>>>>,
    /// Status requests to answer once the current batch is committed.
    deferred: Vec<(SagaId, oneshot::Sender<Option<SagaStatus>>)>,
    calls: Arc<Semaphore>,
    metrics: Metrics,
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
        calls: Arc<Semaphore>,
        sender: &mpsc::Sender<Command>,
        receiver: mpsc::Receiver<Command>,
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
            answers: sender.downgrade(),
            receiver,
            timers: Timers::default(),
            waiters: HashMap::new(),
            deferred: Vec::new(),
            calls,
            metrics: Metrics::default(),
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
            let first = match self.timers.next_due() {
                Some(due) => {
                    let at = self.clock.instant_at(due);
                    tokio::select! {
                        biased;
                        command = self.receiver.recv() => match command {
                            Some(command) => Some(command),
                            None => return,
                        },
                        () = tokio::time::sleep_until(at) => None,
                    }
                }
                None => match self.receiver.recv().await {
                    Some(command) => Some(command),
                    None => return,
                },
            };
            let now = self.clock.now();
            let mut pending = Vec::new();
            let mut stop = None;
            let mut taken = 0;
            let mut next = first;
            while let Some(command) = next {
                taken += 1;
                if let Command::Shutdown { reply } = command {
                    stop = Some(reply);
                    break;
                }
                self.take(command, now, &mut pending);
                if taken >= self.config.batch_max {
                    break;
                }
                next = self.receiver.try_recv().ok();
            }
            while let Some((id, timer)) = self.timers.pop_due(now) {
                // A saga no longer held finished meanwhile: its timer is stale.
                let _ = self
                    .engine
                    .handle(&id, &SagaEvent::TimerFired { timer }, now);
            }
            self.commit_and_act(pending).await;
            if let Some(reply) = stop {
                let _ = reply.send(());
                return;
            }
        }
    }

    /// Feeds one command to the engine.
    fn take(&mut self, command: Command, now: keel_core::Timestamp, pending: &mut Vec<Pending>) {
        match command {
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
                Err(e) => drop(reply.send(Err(e))),
            },
            Command::Operate { id, command, reply } => match self.engine.operate(&id, command, now)
            {
                Ok(()) => pending.push(Pending::Other(id, reply)),
                Err(e) => drop(reply.send(Err(e))),
            },
            Command::Answer {
                id,
                step,
                phase,
                attempt,
                answer,
            } => {
                // An answer for a saga no longer held is late: the saga finished.
                let _ = self.engine.handle(
                    &id,
                    &SagaEvent::Answered {
                        step,
                        phase,
                        attempt,
                        answer,
                    },
                    now,
                );
            }
            // Answered after this batch commits, so that a caller never hears of a
            // status that is not yet durable.
            Command::Status { id, reply } => self.deferred.push((id, reply)),
            Command::Wait { id, reply } => match self.engine.state(&id) {
                Some(state) if !state.status.is_at_rest() => {
                    self.waiters.entry(id).or_default().push(reply);
                }
                _ => self.deferred.push((id, reply)),
            },
            Command::Count { reply } => drop(reply.send(self.engine.len())),
            Command::Shutdown { reply } => drop(reply.send(())),
        }
    }

    /// Commits the engine's batch, then answers the callers and carries out the rest.
    /// Sagas whose append failed are rebuilt from the store; what that rebuild puts in
    /// flight is committed and carried out in the next round.
    async fn commit_and_act(&mut self, mut pending: Vec<Pending>) {
        // Rounds: a saga reloaded after a failed append adds to the next batch. Bounded,
        // so a store that keeps failing cannot spin the driver here.
        for _ in 0..4 {
            let batch = self.engine.take_batch();
            if batch.is_empty() && pending.is_empty() {
                return;
            }
            let failed = self.commit(&batch).await;
            for entry in pending.drain(..) {
                let (id, reply, start) = match entry {
                    Pending::Start(id, reply) => (id, reply, true),
                    Pending::Other(id, reply) => (id, reply, false),
                };
                let result = match failed.get(&id) {
                    None => Ok(()),
                    Some(keel_effects::Error::VersionConflict { .. }) if start => {
                        Err(Error::SagaExists {
                            saga: id.to_string(),
                        })
                    }
                    Some(e) => Err(Error::Store(e.clone())),
                };
                let _ = reply.send(result);
            }
            self.act(batch, &failed);
            for (id, error) in failed {
                self.engine.forget(&id);
                if let Err(e) = self.reload(&id).await {
                    tracing::error!(saga = %id, append_error = %error, error = %e, "a saga could not be reloaded after a failed append; it resumes when the orchestrator restarts");
                }
            }
        }
    }

    /// Appends every saga's records at once; returns the sagas whose append failed.
    async fn commit(&self, batch: &Batch) -> HashMap<SagaId, keel_effects::Error> {
        if batch.appends.is_empty() {
            return HashMap::new();
        }
        let streams: Vec<StreamId> = batch
            .appends
            .iter()
            .map(|append| append.saga.stream())
            .collect();
        let appends = batch.appends.iter().zip(&streams).map(|(append, stream)| {
            let expected = match append.expected {
                0 => ExpectedVersion::NoStream,
                version => ExpectedVersion::Exact(version),
            };
            self.store.append(stream, expected, &append.records)
        });
        // All at once: the store puts concurrent appends into shared transactions.
        let results = futures_util::future::join_all(appends).await;
        let mut failed = HashMap::new();
        for (append, result) in batch.appends.iter().zip(results) {
            if let Err(e) = result {
                tracing::warn!(saga = %append.saga, error = %e, "a saga's records could not be appended");
                failed.insert(append.saga.clone(), e);
            }
        }
        tracing::trace!(
            sagas = batch.appends.len(),
            records = batch.record_count(),
            failed = failed.len(),
            "committed"
        );
        failed
    }

    /// Carries out a committed batch, skipping the sagas whose append failed.
    fn act(&mut self, batch: Batch, failed: &HashMap<SagaId, keel_effects::Error>) {
        let ok = |id: &SagaId| !failed.contains_key(id);
        for (id, timer) in batch.cancelled {
            self.timers.cancel(&id, timer);
        }
        for (id, timer, due) in batch.timers {
            if ok(&id) {
                self.timers.set(id, timer, due);
            }
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
            settled.insert(id, status);
        }
        for (id, reply) in self.deferred.drain(..) {
            // Held: its status now; finished in this batch: that; otherwise the caller
            // reads the store, which now holds everything committed.
            let status = match self.engine.state(&id) {
                Some(state) => Some(state.status.clone()),
                None => settled.get(&id).cloned(),
            };
            let _ = reply.send(status);
        }
    }

    /// Sends one call out on its own task; its answer comes back as a command.
    fn dispatch(&self, id: SagaId, call: StepCall) {
        let handler = match &call.intent.kind {
            IntentKind::Http(_) => self.handlers.http.clone(),
            IntentKind::Request { .. } => self.handlers.request.clone(),
            IntentKind::Custom { name, .. } => self.handlers.custom.get(name).cloned(),
            _ => None,
        };
        let answers = self.answers.clone();
        let calls = Arc::clone(&self.calls);
        let metrics = self.metrics.clone();
        tokio::spawn(async move {
            let StepCall {
                step,
                phase,
                attempt,
                intent,
            } = call;
            let answer = match handler {
                Some(handler) => {
                    // The semaphore is never closed; a failed acquire only happens if it is.
                    let _permit = calls.acquire_owned().await;
                    let call = Call::new(intent, InstanceId::new(id.as_str()), metrics);
                    Answer::from_result(handler.call(call).await)
                }
                None => Answer::Failed {
                    class: FailureClass::Permanent,
                    reason: format!(
                        "no handler is registered for {} steps: add one to the orchestrator",
                        describe(&intent.kind)
                    ),
                    retry_after_ms: None,
                },
            };
            if let Some(answers) = answers.upgrade() {
                let _ = answers
                    .send(Command::Answer {
                        id,
                        step,
                        phase,
                        attempt,
                        answer,
                    })
                    .await;
            }
        });
    }

    /// Rebuilds saga `id` from the store and puts what it has in flight in the batch.
    async fn reload(&mut self, id: &SagaId) -> Result<(), Error> {
        let stream = id.stream();
        let mut events = Vec::new();
        loop {
            let page = self
                .store
                .read_stream(&stream, events.len() as u64 + 1, READ_LIMIT_MAX)
                .await?;
            let full = page.len() == READ_LIMIT_MAX;
            events.extend(page);
            if !full {
                break;
            }
        }
        if events.is_empty() {
            // Its start never committed: there is nothing to reload.
            return Ok(());
        }
        self.engine
            .restore(id, events.iter().map(|e| (e.version, &e.envelope)))?;
        self.engine.resume_one(id, self.clock.now());
        Ok(())
    }
}

fn describe(kind: &IntentKind) -> String {
    match kind {
        IntentKind::Custom { name, .. } => format!("custom `{name}`"),
        other => other.family().to_owned(),
    }
}
