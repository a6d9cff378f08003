//! One reducer instance: a task that owns the state and applies actions one at a time.
//!
//! The task waits on three things: its mailbox (actions from outside), its in-flight
//! effects (outcomes), and its timer wheel (fired timers). Outcomes come straight back
//! to this task through a `JoinSet`, never through the bounded mailbox, so an instance
//! can never block on sending to itself.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use keel_core::{Input, Intent, IntentId, IntentKind, Outcome, OutcomeResult, Reducer};
use tokio::sync::mpsc;
use tokio::task::{Id as TaskId, JoinSet};
use tokio::time::Instant;
use tracing::Instrument;

use super::dedup::Attempted;
use super::{HandBackReason, HandedBack, Message, Shared};
use crate::handler::{Call, Failure, FailureKind, InstanceId};
use crate::timer::TimerWheel;

/// What an instance task leaves behind when it ends.
pub(super) struct Finished<S> {
    pub(super) state: S,
    pub(super) handed_back: Vec<HandedBack>,
    pub(super) fault: Option<crate::Error>,
}

pub(super) struct Instance<R: Reducer> {
    shared: Arc<Shared<R>>,
    id: InstanceId,
    state: R::State,
    buffer: Vec<Intent>,
    /// Intents emitted but not started: the in-flight bound was reached.
    queued: VecDeque<Intent>,
    in_flight: JoinSet<Attempted>,
    /// The intent of each in-flight task, so that an aborted or panicked task's intent
    /// can be handed back.
    in_flight_intents: HashMap<TaskId, Arc<Intent>>,
    timers: TimerWheel,
    /// Set once a shutdown asked this instance to finish.
    draining: Option<Instant>,
    handed_back: Vec<HandedBack>,
    fault: Option<crate::Error>,
    /// Intents whose outcome has been reduced, to mark done in the outbox (only kept
    /// when the runtime has one).
    completed: Vec<IntentId>,
    /// Intents recovered from the outbox and not finished yet, so that a second
    /// recovery does not start one twice.
    recovering: HashSet<IntentId>,
}

impl<R, M> Instance<R>
where
    R: Reducer<Action = Input<M>> + Send + Sync + 'static,
    R::State: Send + 'static,
    M: From<Outcome> + Send + 'static,
{
    pub(super) fn new(shared: Arc<Shared<R>>, id: InstanceId, state: R::State) -> Self {
        let timers = TimerWheel::with_capacity(shared.config.timers_per_instance_max);
        Self {
            shared,
            id,
            state,
            buffer: Vec::new(),
            queued: VecDeque::new(),
            in_flight: JoinSet::new(),
            in_flight_intents: HashMap::new(),
            timers,
            draining: None,
            handed_back: Vec::new(),
            fault: None,
            completed: Vec::new(),
            recovering: HashSet::new(),
        }
    }

    pub(super) async fn run(
        mut self,
        mut mailbox: mpsc::Receiver<Message<R>>,
        initial: Vec<Intent>,
    ) -> Finished<R::State> {
        self.record_and_dispatch(initial).await;
        let mut mailbox_open = true;
        loop {
            self.flush_completed().await;
            self.start_queued();
            if !mailbox_open && self.in_flight.is_empty() && self.queued.is_empty() {
                break;
            }
            let timer_at = self
                .timers
                .next_due()
                .map(|due| self.shared.clock.instant_at(due));
            let deadline = self.draining;
            // A backlog of unstarted intents stops intake: backpressure to the senders.
            let take_mail = mailbox_open && self.queued.is_empty();
            tokio::select! {
                // Outcomes first: they free capacity and carry the workflow forward.
                biased;
                Some(joined) = self.in_flight.join_next_with_id(), if !self.in_flight.is_empty() => {
                    match joined {
                        Ok((task, attempted)) => {
                            if let Some(intent) = self.in_flight_intents.remove(&task) {
                                self.outcome(&intent, attempted).await;
                            }
                        }
                        Err(error) => {
                            // The handler panicked or was aborted: its effect may or may not
                            // have happened, so the intent goes back, never silently lost.
                            if let Some(intent) = self.in_flight_intents.remove(&error.id()) {
                                tracing::error!(instance = %self.id, intent = %intent.id, %error, "effect task failed");
                                let failure = Failure::new(FailureKind::Transient, format!("the effect task failed: {error}"));
                                // How many attempts the task made before it failed is lost
                                // with it; it made one at least.
                                self.outcome(&intent, Attempted { result: Err(failure), attempts: 1 }).await;
                            }
                        }
                    }
                }
                () = tokio::time::sleep_until(timer_at.unwrap_or_else(Instant::now)), if timer_at.is_some() => {
                    let now = self.shared.clock.now();
                    while let Some(fired) = self.timers.pop_due(now) {
                        let outcome = Outcome {
                            intent: fired.intent.id,
                            attempts: 0,
                            result: OutcomeResult::TimerFired { timer: fired.timer },
                        };
                        self.step(Input::new(outcome.cause(), now, M::from(outcome))).await;
                        self.complete(fired.intent.id);
                    }
                }
                message = mailbox.recv(), if take_mail => match message {
                    Some(Message::Action(action)) => self.step(action).await,
                    Some(Message::Inspect(look)) => look(&self.state),
                    Some(Message::Redispatch(intent)) => {
                        self.shared.outcomes.forget(intent.id);
                        // Its failure was reduced and marked done: record it again.
                        self.record_and_dispatch(vec![intent]).await;
                    }
                    Some(Message::Recovered(intent)) => {
                        // Pending in the outbox already; a second recovery may send an
                        // intent that this instance is still carrying out.
                        if self.recovering.insert(intent.id) {
                            self.dispatch(intent);
                        }
                    }
                    Some(Message::Drain { deadline }) => {
                        // Take no new mail, but finish what is queued: those actions were
                        // accepted before the shutdown.
                        mailbox.close();
                        self.begin_draining(deadline);
                    }
                    None => mailbox_open = false,
                },
                () = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                    self.abort_in_flight();
                    mailbox.close();
                    while let Ok(message) = mailbox.try_recv() {
                        match message {
                            Message::Action(action) => self.step(action).await,
                            Message::Redispatch(intent) | Message::Recovered(intent) => {
                                self.hand_back(intent, HandBackReason::NotStarted);
                            }
                            Message::Inspect(look) => look(&self.state),
                            Message::Drain { .. } => {}
                        }
                    }
                    self.abort_in_flight();
                    break;
                }
            }
        }
        self.flush_completed().await;
        Finished {
            state: self.state,
            handed_back: self.handed_back,
            fault: self.fault,
        }
    }

    /// Reduces one action, records its intents in the outbox (if any) and dispatches
    /// them.
    async fn step(&mut self, action: Input<M>) {
        self.shared.metrics.actions();
        let span = tracing::info_span!(
            "keel.action",
            instance = %self.id,
            correlation = %action.cause.correlation,
            causation = %action.cause.causation,
        );
        // The span is entered only around code that does not await: a guard held while
        // the task is suspended would leak the span into other tasks.
        let mut intents = {
            let _entered = span.enter();
            self.buffer.clear();
            self.shared
                .reducer
                .reduce_into(&mut self.state, action, &mut self.buffer);
            std::mem::take(&mut self.buffer)
        };
        let limit = self.shared.config.intents_per_step_max;
        if intents.len() > limit {
            let _entered = span.enter();
            let error = crate::Error::TooManyIntents {
                instance: self.id.to_string(),
                emitted: intents.len(),
                limit,
            };
            tracing::error!(%error, "instance stopped");
            self.hand_back_all(intents.drain(..), HandBackReason::StepOverLimit);
            self.fault.get_or_insert(error);
            self.begin_draining(Instant::now());
        } else if let Err(error) = self.record(&intents).instrument(span.clone()).await {
            let _entered = span.enter();
            self.refuse_unrecorded(intents.drain(..), error);
        } else {
            let _entered = span.enter();
            for intent in intents.drain(..) {
                self.dispatch(intent);
            }
        }
        self.buffer = intents;
    }

    /// Records `intents` in the outbox (if any) and dispatches them.
    async fn record_and_dispatch(&mut self, intents: Vec<Intent>) {
        match self.record(&intents).await {
            Ok(()) => intents.into_iter().for_each(|intent| self.dispatch(intent)),
            Err(error) => self.refuse_unrecorded(intents, error),
        }
    }

    /// Commits `intents` to the runtime's outbox, if it has one, before any is performed.
    async fn record(&mut self, intents: &[Intent]) -> Result<(), crate::Error> {
        // Borrows of two fields, not of `self`: a `&Instance` held across the await
        // would need the reducer's state to be `Sync`.
        let (shared, id) = (&self.shared, &self.id);
        match &shared.outbox {
            Some(outbox) if !intents.is_empty() => outbox.record(id, intents).await,
            _ => Ok(()),
        }
    }

    /// Stops the instance over intents that could not be recorded: performing them
    /// unrecorded would lose them in a crash, which the outbox promises never happens.
    fn refuse_unrecorded(
        &mut self,
        intents: impl IntoIterator<Item = Intent>,
        error: crate::Error,
    ) {
        tracing::error!(instance = %self.id, %error, "could not record intents in the outbox: instance stopped");
        self.hand_back_all(intents, HandBackReason::NotRecorded);
        self.fault.get_or_insert(error);
        self.begin_draining(Instant::now());
    }

    /// Notes that the intent `id` is finished: its outcome is reduced, or it will have
    /// none (a cancelled or replaced timer).
    fn complete(&mut self, id: IntentId) {
        if !self.recovering.is_empty() {
            self.recovering.remove(&id);
        }
        if self.shared.outbox.is_some() {
            self.completed.push(id);
        }
    }

    /// Marks the finished intents done in the outbox, in one call. It runs after the
    /// step that reduced their outcomes has recorded the intents it caused, so a crash
    /// in between runs an intent again rather than losing what followed from it.
    async fn flush_completed(&mut self) {
        if self.completed.is_empty() {
            return;
        }
        if let Some(outbox) = &self.shared.outbox
            && let Err(error) = outbox.complete(&self.completed).await
        {
            // Left pending, they run again after a restart under the same ids:
            // at least once, never lost.
            tracing::warn!(instance = %self.id, %error, intents = self.completed.len(), "could not mark outbox intents done");
        }
        self.completed.clear();
    }

    fn dispatch(&mut self, intent: Intent) {
        match &intent.kind {
            IntentKind::CancelTimer { timer } => {
                if let Some(cancelled) = self.timers.cancel(timer) {
                    self.complete(cancelled.intent.id);
                }
            }
            _ if self.draining.is_some() || self.fault.is_some() => {
                self.hand_back(intent, HandBackReason::NotStarted);
            }
            IntentKind::ScheduleTimer { timer, due } => {
                let (timer, due, id) = (timer.clone(), *due, intent.id);
                match self.timers.schedule(timer, due, intent) {
                    Ok(Some(replaced)) if replaced.intent.id != id => {
                        self.complete(replaced.intent.id);
                    }
                    Ok(_) => {}
                    Err(full) => {
                        let timer = &full.timer.id;
                        tracing::error!(instance = %self.id, %timer, limit = full.capacity, "too many pending timers; handed back");
                        self.hand_back(full.timer.value, HandBackReason::StepOverLimit);
                    }
                }
            }
            _ => self.queued.push_back(intent),
        }
    }

    /// Starts queued intents while the in-flight bound allows.
    fn start_queued(&mut self) {
        while self.in_flight.len() < self.shared.config.in_flight_per_instance_max {
            let Some(intent) = self.queued.pop_front() else {
                return;
            };
            if self.draining.is_some() {
                self.hand_back(intent, HandBackReason::NotStarted);
                continue;
            }
            self.start(intent);
        }
    }

    fn start(&mut self, intent: Intent) {
        let shared = Arc::clone(&self.shared);
        let handler = shared.handlers.for_intent(&intent);
        let intent = Arc::new(intent);
        let call = Call::new(Arc::clone(&intent), self.id.clone(), shared.metrics.clone());
        let span = tracing::info_span!(
            "keel.intent",
            instance = %self.id,
            intent = %intent.id,
            family = intent.kind.family(),
            correlation = %intent.id.correlation,
        );
        let id = intent.id;
        let task = self.in_flight.spawn(
            async move {
                let (result, repeat) = shared
                    .outcomes
                    .run(id, || {
                        shared.metrics.started();
                        async move {
                            // The layers inside (a retry) count their attempts into the
                            // clones of this call.
                            let counted = call.clone();
                            let result = match handler {
                                Ok(handler) => handler.call(call).await,
                                Err(failure) => Err(failure),
                            };
                            Attempted {
                                result,
                                attempts: counted.attempts_made(),
                            }
                        }
                    })
                    .await;
                if repeat {
                    shared.metrics.deduplicated();
                    tracing::debug!("answered from the recorded outcome");
                }
                result
            }
            .instrument(span),
        );
        self.in_flight_intents.insert(task.id(), intent);
    }

    async fn outcome(&mut self, intent: &Intent, attempted: Attempted) {
        let Attempted { result, attempts } = attempted;
        let result = match result {
            Ok(value) => {
                self.shared.metrics.succeeded();
                OutcomeResult::Succeeded { value }
            }
            Err(failure) => {
                self.shared.metrics.failed();
                tracing::debug!(instance = %self.id, intent = %intent.id, %failure, "effect failed");
                match failure.kind {
                    FailureKind::Timeout => OutcomeResult::TimedOut,
                    _ => OutcomeResult::Failed(failure),
                }
            }
        };
        let outcome = Outcome {
            intent: intent.id,
            attempts,
            result,
        };
        let now = self.shared.clock.now();
        self.step(Input::new(outcome.cause(), now, M::from(outcome)))
            .await;
        self.complete(intent.id);
    }

    fn begin_draining(&mut self, deadline: Instant) {
        if self.draining.is_none() {
            self.draining = Some(deadline);
        }
        let pending = self.timers.drain();
        self.hand_back_all(
            pending.into_iter().map(|p| p.intent),
            HandBackReason::TimerPending,
        );
        let queued: Vec<Intent> = self.queued.drain(..).collect();
        self.hand_back_all(queued, HandBackReason::NotStarted);
    }

    fn abort_in_flight(&mut self) {
        self.in_flight.abort_all();
        let aborted: Vec<Intent> = self
            .in_flight_intents
            .drain()
            .map(|(_, intent)| Arc::unwrap_or_clone(intent))
            .collect();
        self.hand_back_all(aborted, HandBackReason::Aborted);
        self.in_flight.detach_all();
    }

    fn hand_back(&mut self, intent: Intent, reason: HandBackReason) {
        self.handed_back.push(HandedBack {
            instance: self.id.clone(),
            intent,
            reason,
        });
    }

    fn hand_back_all(&mut self, intents: impl IntoIterator<Item = Intent>, reason: HandBackReason) {
        for intent in intents {
            self.hand_back(intent, reason);
        }
    }
}
