//! The shell's task: the loop that feeds the driver, commits its batches and performs
//! what they caused.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use keel_core::driver::{Append, Batch, Driver, Durable, RECORD_TYPE, Status, TimerChange};
use keel_core::{
    ExpectedVersion, Failure, InstanceId, Intent, IntentId, Outcome, OutcomeResult, TimerId,
    TimerQueue, Timestamp,
};
use keel_store::index::recover_through_index;
use keel_store::{EventStore, READ_LIMIT_MAX, WriterLock};
use tokio::sync::{mpsc, oneshot};

use super::{Command, Counters, DurableConfig};
use crate::clock::Clock;
use crate::error::Error;
use crate::handler::Call;
use crate::handlers::Handlers;
use crate::metrics::Metrics;

/// The first wait before trying an append again while the store is unavailable.
const RETRY_DELAY_FIRST: Duration = Duration::from_millis(10);

/// The longest wait between two tries: the shell goes on within this long of the
/// store's return.
const RETRY_DELAY_MAX: Duration = Duration::from_secs(2);

/// What the start found in the store.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct Recovered {
    /// Instances rebuilt and held again: running, parked, or finished with calls still
    /// in flight (performed again, then dropped).
    pub resumed: usize,
    /// Of those, how many are parked for an operator.
    pub parked: usize,
    /// Records read to rebuild them: the logs of unfinished instances only, unless the
    /// store's history predates its index.
    pub records: usize,
    /// Intents performed again: they were in flight when the last run stopped.
    pub intents_resent: usize,
    /// Timers re-armed, for the times they were set for.
    pub timers_rearmed: usize,
    /// Instances whose log does not replay, with why: they are not run.
    pub failed: Vec<(InstanceId, keel_core::Error)>,
}

/// What [`Shell::new`] takes.
pub(crate) struct Parts<R: Durable> {
    pub(crate) driver: Driver<R, foldhash::fast::RandomState>,
    pub(crate) store: Arc<dyn EventStore>,
    pub(crate) handlers: Handlers,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) metrics: Metrics,
    pub(crate) config: DurableConfig,
    pub(crate) counters: Arc<Counters>,
    pub(crate) lock: Option<WriterLock>,
}

/// One input taken by the loop.
enum Input<R: Durable> {
    Command(Command<R>),
    Outcome(InstanceId, Outcome),
    TimerDue,
    Closed,
}

type Reply = oneshot::Sender<Result<(), Error>>;

/// The shell's state, owned by its task.
pub(crate) struct Shell<R: Durable> {
    driver: Driver<R, foldhash::fast::RandomState>,
    store: Arc<dyn EventStore>,
    handlers: Handlers,
    clock: Arc<dyn Clock>,
    metrics: Metrics,
    config: DurableConfig,
    counters: Arc<Counters>,
    /// Held for as long as the shell runs; dropping it releases the store.
    _lock: Option<WriterLock>,
    timers: TimerQueue<(InstanceId, TimerId), IntentId>,
    /// Timers that found the queue full, set as soon as there is room.
    timers_waiting: VecDeque<(InstanceId, TimerId, Timestamp, IntentId)>,
    /// Callers to answer once the current batch is committed, by instance.
    replies: Vec<(InstanceId, Reply)>,
    /// Instances to rebuild from their logs once the current batch is committed.
    reloads: Vec<InstanceId>,
    /// Callers waiting for an instance to come to rest.
    waiters: HashMap<InstanceId, Vec<oneshot::Sender<Status>>>,
    /// Outcomes of performed intents. Unbounded, because the shell itself sends into
    /// it (a bounded one could block the task on its own queue); what it holds is
    /// bounded by the intents in flight, which the driver bounds per step.
    outcomes: mpsc::UnboundedSender<(InstanceId, Outcome)>,
    outcomes_in: mpsc::UnboundedReceiver<(InstanceId, Outcome)>,
    stop: Option<oneshot::Sender<()>>,
}

impl<R: Durable + Send + 'static> Shell<R>
where
    R::State: Send,
    R::Event: Send,
{
    pub(crate) fn new(parts: Parts<R>) -> Self {
        let (outcomes, outcomes_in) = mpsc::unbounded_channel();
        Self {
            driver: parts.driver,
            store: parts.store,
            handlers: parts.handlers,
            clock: parts.clock,
            metrics: parts.metrics,
            timers: TimerQueue::new(parts.config.timers_max),
            config: parts.config,
            counters: parts.counters,
            _lock: parts.lock,
            timers_waiting: VecDeque::new(),
            replies: Vec::new(),
            reloads: Vec::new(),
            waiters: HashMap::new(),
            outcomes,
            outcomes_in,
            stop: None,
        }
    }

    /// Rebuilds every unfinished instance from the store, in one pass over the logs of
    /// the unfinished instances of this reducer's kind (found through the store's index),
    /// and performs what they had in flight. A store whose history predates the index,
    /// or whose unfinished instances are a large part of it, is read whole instead (see
    /// `keel_store::index::recover_through_index`).
    pub(crate) async fn recover(&mut self) -> Result<Recovered, Error> {
        let mut recovered = Recovered::default();
        let mut failed: BTreeMap<InstanceId, keel_core::Error> = BTreeMap::new();
        let kind = self.driver.reducer().kind().to_owned();
        let indexed = recover_through_index(self.store.as_ref(), Some(&kind)).await?;
        let (mut from, mut after) = (1, None);
        loop {
            let page = if indexed {
                let (kind, after) = (Some(kind.as_str()), after.as_ref().map(|(s, v)| (s, *v)));
                self.store
                    .read_unfinished(kind, after, READ_LIMIT_MAX)
                    .await?
            } else {
                self.store.read_all(from, READ_LIMIT_MAX).await?
            };
            let Some(last) = page.last() else { break };
            from = last.position + 1;
            after = Some((last.stream.clone(), last.version));
            recovered.records += page.len();
            for event in &page {
                if event.envelope.event_type.as_str() != RECORD_TYPE {
                    continue;
                }
                let Some(id) = self.driver.instance_of(&event.stream) else {
                    continue;
                };
                if failed.contains_key(&id) {
                    continue;
                }
                match self
                    .driver
                    .restore_record(&id, event.version, &event.envelope)
                {
                    Ok(_) => {}
                    Err(e) => {
                        tracing::error!(instance = %id, error = %e, "an instance's log does not replay; it is not run");
                        self.driver.forget(&id);
                        failed.insert(id, e);
                    }
                }
            }
        }
        recovered.failed = failed.into_iter().collect();
        recovered.resumed = self.driver.len();
        recovered.parked = self
            .driver
            .instances()
            .filter(|(id, _)| self.driver.status(id).is_some_and(Status::is_parked))
            .count();
        self.driver.resume(self.clock.now());
        let batch = self.driver.take_batch();
        recovered.intents_resent = batch.perform.len();
        recovered.timers_rearmed = batch.timers.len();
        self.carry_out(batch, &BTreeMap::new());
        self.counters
            .held
            .store(self.driver.len() as u64, Ordering::Relaxed);
        Ok(recovered)
    }

    /// The loop: take what arrived, commit, carry out; until stopped.
    pub(crate) async fn run(mut self, mut inbox: mpsc::Receiver<Command<R>>) {
        loop {
            let first = self.next(&mut inbox).await;
            let mut closed = self.take(first);
            let mut taken = 1;
            while taken < self.config.batch_inputs_max && !closed && self.stop.is_none() {
                let input = match inbox.try_recv() {
                    Ok(command) => Input::Command(command),
                    Err(_) => match self.outcomes_in.try_recv() {
                        Ok((id, outcome)) => Input::Outcome(id, outcome),
                        Err(_) => break,
                    },
                };
                closed = self.take(input);
                taken += 1;
            }
            self.fire_due();
            let batch = self.driver.take_batch();
            self.commit(batch).await;
            self.counters
                .held
                .store(self.driver.len() as u64, Ordering::Relaxed);
            if closed || self.stop.is_some() {
                break;
            }
        }
        // The shell (and the writer lock it holds) goes before the caller hears that it
        // stopped, so that a new shell on the same store can start at once.
        let stop = self.stop.take();
        drop(self);
        if let Some(stop) = stop {
            let _ = stop.send(());
        }
    }

    /// Waits for the next input: a command, an outcome or the next due timer.
    async fn next(&mut self, inbox: &mut mpsc::Receiver<Command<R>>) -> Input<R> {
        let due = self.timers.next_due().map(|due| self.clock.instant_at(due));
        let sleep = async {
            match due {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            command = inbox.recv() => match command {
                Some(command) => Input::Command(command),
                None => Input::Closed,
            },
            Some((id, outcome)) = self.outcomes_in.recv() => Input::Outcome(id, outcome),
            () = sleep => Input::TimerDue,
        }
    }

    /// Feeds one input to the driver; returns whether every handle is gone.
    fn take(&mut self, input: Input<R>) -> bool {
        let now = self.clock.now();
        match input {
            Input::Closed => return true,
            Input::TimerDue => {}
            Input::Outcome(id, outcome) => match self.driver.outcome(&id, outcome, now) {
                Ok(true) => {}
                Ok(false) | Err(keel_core::Error::UnknownInstance { .. }) => {
                    self.counters.stale.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => self.fault(&id, e),
            },
            Input::Command(command) => self.command(command, now),
        }
        false
    }

    fn command(&mut self, command: Command<R>, now: Timestamp) {
        match command {
            Command::Start {
                id,
                state,
                event,
                reply,
            } => match self.driver.start(&id, state, event, now) {
                Ok(()) => self.replies.push((id, reply)),
                Err(e) => {
                    let _ = reply.send(Err(e.into()));
                }
            },
            Command::Send { id, event, reply } => match self.driver.handle(&id, event, now) {
                Ok(_) => self.replies.push((id, reply)),
                Err(e @ keel_core::Error::UnknownInstance { .. }) => {
                    let _ = reply.send(Err(e.into()));
                }
                Err(e) => {
                    // The event was not recorded: the instance is rebuilt from its log
                    // once this batch is committed, and the caller learns why.
                    self.reloads.push(id.clone());
                    let _ = reply.send(Err(e.into()));
                }
            },
            Command::Inspect { id, reply } => {
                let held = self.driver.state(&id).cloned().and_then(|state| {
                    let status = self.driver.status(&id)?.clone();
                    Some((state, status, self.driver.version(&id)?))
                });
                let _ = reply.send(held);
            }
            Command::Wait { id, reply } => {
                let answer = match self.driver.status(&id) {
                    None => None,
                    Some(status) => {
                        let (settled, waiting) = oneshot::channel();
                        if *status == Status::Running {
                            self.waiters.entry(id).or_default().push(settled);
                        } else {
                            let _ = settled.send(status.clone());
                        }
                        Some(waiting)
                    }
                };
                let _ = reply.send(answer);
            }
            Command::Stop { reply } => self.stop = Some(reply),
        }
    }

    /// An instance whose step broke a bound: the driver dropped it (its log is as it
    /// was before the step). It is not run again until the next start, which rebuilds
    /// it from its log; repeating the step at once would break the bound again.
    fn fault(&mut self, id: &InstanceId, error: keel_core::Error) {
        tracing::error!(instance = %id, error = %error, "an instance broke a bound and is stopped until the next start");
        self.counters.faulted.fetch_add(1, Ordering::Relaxed);
        // Its waiters would wait for ever: dropping them ends their wait with an error.
        self.waiters.remove(id);
    }

    /// Fires every timer that is due.
    fn fire_due(&mut self) {
        let now = self.clock.now();
        let mut fired = false;
        while let Some(due) = self.timers.pop_due(now) {
            fired = true;
            let (id, timer) = due.id;
            match self.driver.fire(&id, &timer, due.value, now) {
                Ok(true) => {}
                Ok(false) | Err(keel_core::Error::UnknownInstance { .. }) => {
                    self.counters.stale.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => self.fault(&id, e),
            }
        }
        if fired {
            self.set_waiting_timers();
        }
    }

    fn set_waiting_timers(&mut self) {
        // Oldest first: a timer set again later waits behind its first setting, and
        // replaces it once both are set.
        while let Some((id, timer, due, intent)) = self.timers_waiting.pop_front() {
            if let Err(full) = self.timers.schedule((id, timer), due, intent) {
                let (id, timer) = full.timer.id;
                self.timers_waiting.push_front((id, timer, due, intent));
                break;
            }
        }
        self.counters
            .timers_waiting
            .store(self.timers_waiting.len() as u64, Ordering::Relaxed);
    }

    /// Commits `batch`'s appends, trying again while the store is unavailable, then
    /// answers the callers and carries out what the committed records caused.
    async fn commit(&mut self, batch: Batch) {
        let refused = append(&self.store, &self.counters, &batch.appends).await;
        let records = batch.record_count() as u64;
        for (id, error) in &refused {
            tracing::warn!(instance = %id, error = %error, "the store refused an instance's records; it goes on from its log");
            self.driver.forget(id);
        }
        for (id, reply) in std::mem::take(&mut self.replies) {
            let answer = match refused.get(&id) {
                None => Ok(()),
                Some(error) => Err(error.clone()),
            };
            let _ = reply.send(answer);
        }
        if !batch.appends.is_empty() {
            self.counters.commits.fetch_add(1, Ordering::Relaxed);
            self.counters.records.fetch_add(records, Ordering::Relaxed);
        }
        self.carry_out(batch, &refused);
        let mut reloads: Vec<InstanceId> = refused.keys().cloned().collect();
        reloads.append(&mut self.reloads);
        if reloads.is_empty() {
            return;
        }
        for id in &reloads {
            self.reload(id).await;
        }
        // Reloading records nothing; what the reloaded instances have in flight goes
        // out now rather than with the next input.
        let resumed = self.driver.take_batch();
        self.carry_out(resumed, &BTreeMap::new());
    }

    /// Sets the timers and performs the intents of the committed part of `batch`, and
    /// answers the callers waiting for instances that came to rest.
    fn carry_out(&mut self, batch: Batch, refused: &BTreeMap<InstanceId, Error>) {
        let mut freed = false;
        for (id, change) in batch.timers {
            if refused.contains_key(&id) {
                continue;
            }
            match change {
                TimerChange::Set { timer, due, intent } => {
                    if let Err(full) = self.timers.schedule((id, timer), due, intent) {
                        tracing::warn!(
                            capacity = full.capacity,
                            "the timer queue is full; the timer waits for room"
                        );
                        let (id, timer) = full.timer.id;
                        self.timers_waiting.push_back((id, timer, due, intent));
                    }
                }
                TimerChange::Cancel { timer } => {
                    self.timers_waiting
                        .retain(|(waiting, name, ..)| !(*waiting == id && *name == timer));
                    freed |= self.timers.cancel(&(id, timer)).is_some();
                }
            }
        }
        if freed {
            self.set_waiting_timers();
        }
        for (id, intent) in batch.perform {
            if !refused.contains_key(&id) {
                self.perform(id, intent);
            }
        }
        for (id, status) in batch.settled {
            if refused.contains_key(&id) {
                continue;
            }
            for waiter in self.waiters.remove(&id).unwrap_or_default() {
                let _ = waiter.send(status.clone());
            }
        }
    }

    /// Performs `intent` of instance `id` on a task of its own; its outcome comes back
    /// to the loop. A handler that panics fails its call for good, as maybe applied.
    fn perform(&self, id: InstanceId, intent: Intent) {
        self.counters.performed.fetch_add(1, Ordering::Relaxed);
        let outcomes = self.outcomes.clone();
        let intent_id = intent.id;
        let handler = match self.handlers.for_intent(&intent) {
            Ok(handler) => handler,
            Err(failure) => {
                let outcome = Outcome {
                    intent: intent_id,
                    attempts: 0,
                    result: OutcomeResult::Failed(failure),
                };
                let _ = outcomes.send((id, outcome));
                return;
            }
        };
        let call = Call::new(intent, id.clone(), self.metrics.clone());
        tokio::spawn(async move {
            let attempts = call.clone();
            // The call is made inside the inner task, so that a handler that panics before
            // it returns its future is caught as well.
            let performed = tokio::spawn(async move { handler.call(call).await }).await;
            let result = match performed {
                Ok(Ok(value)) => OutcomeResult::Succeeded { value },
                Ok(Err(failure)) => OutcomeResult::Failed(failure),
                Err(e) if e.is_panic() => OutcomeResult::Failed(
                    Failure::permanent("the handler panicked").maybe_applied(),
                ),
                // The tokio runtime is shutting down: the intent stays in flight in the
                // log and is performed again at the next start.
                Err(_) => return,
            };
            let outcome = Outcome {
                intent: intent_id,
                attempts: attempts.attempts_made(),
                result,
            };
            // The loop has stopped if this fails: the intent stays in flight in the log.
            let _ = outcomes.send((id, outcome));
        });
    }

    /// Rebuilds instance `id` from its log after its append was refused, and picks up
    /// what it has in flight.
    async fn reload(&mut self, id: &InstanceId) {
        let stream = self.driver.stream(id);
        let mut records = Vec::new();
        let mut from = 1;
        loop {
            match self.store.read_stream(&stream, from, READ_LIMIT_MAX).await {
                Ok(page) if page.is_empty() => break,
                Ok(page) => {
                    from = page.last().map_or(from, |last| last.version + 1);
                    records.extend(page);
                }
                Err(e) => {
                    tracing::error!(instance = %id, error = %e, "an instance could not be read back; it goes on at the next start");
                    return;
                }
            }
        }
        if records.is_empty() {
            return;
        }
        let log = records.iter().map(|r| (r.version, &r.envelope));
        match self.driver.restore(id, log) {
            Ok(_) => {
                let now = self.clock.now();
                if let Err(e) = self.driver.resume_one(id, now) {
                    tracing::error!(instance = %id, error = %e, "an instance could not be resumed; it goes on at the next start");
                }
            }
            Err(e) => {
                tracing::error!(instance = %id, error = %e, "an instance's log does not replay; it is not run");
            }
        }
    }
}

/// Appends every instance's records at once (a free function: the loop's state need not
/// be `Sync` to be held across its wait); returns the refused ones, with the
/// error to give their callers.
async fn append(
    store: &Arc<dyn EventStore>,
    counters: &Counters,
    appends: &[Append],
) -> BTreeMap<InstanceId, Error> {
    let mut refused = BTreeMap::new();
    let mut pending: Vec<&Append> = appends.iter().collect();
    let mut delay = RETRY_DELAY_FIRST;
    let mut first = true;
    while !pending.is_empty() {
        let tries = pending.iter().map(|append| {
            let expected = match append.expected {
                0 => ExpectedVersion::NoStream,
                version => ExpectedVersion::Exact(version),
            };
            store.append(&append.stream, expected, &append.records)
        });
        let answers = futures_util::future::join_all(tries).await;
        let mut again = Vec::new();
        for (append, answer) in pending.into_iter().zip(answers) {
            let exists = || {
                let exists = keel_core::Error::InstanceExists {
                    instance: append.instance.to_string(),
                };
                (append.instance.clone(), Error::from(exists))
            };
            match answer {
                // A first record found stored already, on the first try, is another
                // run's (its id derives from the instance's name): the id is taken.
                // After an unavailable store it is this run's, landed unseen.
                Ok(landed) if landed.deduplicated && append.expected == 0 && first => {
                    refused.extend([exists()]);
                }
                Ok(_) => {}
                Err(e) if e.is_unavailable() => again.push(append),
                Err(
                    keel_store::Error::VersionConflict { .. }
                    | keel_store::Error::EventConflict { .. }
                    | keel_store::Error::DuplicateEventId { .. },
                ) if append.expected == 0 => {
                    refused.extend([exists()]);
                }
                Err(e) => {
                    refused.insert(append.instance.clone(), e.into());
                }
            }
        }
        if !again.is_empty() {
            tracing::warn!(appends = again.len(), retry_in = ?delay, "the store is unavailable; the batch waits for it");
            counters
                .store_retries
                .fetch_add(again.len() as u64, Ordering::Relaxed);
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(RETRY_DELAY_MAX);
        }
        pending = again;
        first = false;
    }
    refused
}
