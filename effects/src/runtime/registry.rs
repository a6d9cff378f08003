//! The registry: the running instances by id, and what those that ended on their own
//! left for the next shutdown report.
//!
//! An instance's entry goes as soon as its task ends, however it ends, so that its id
//! can be spawned again and the registry holds what runs rather than the history:
//!
//! - [`Runtime::stop`](super::Runtime::stop) and
//!   [`Runtime::shutdown`](super::Runtime::shutdown) take entries out themselves and
//!   await the tasks, which hand them what they leave (last state, handed-back intents,
//!   fault);
//! - a task that ends on its own (a fault makes an instance drain and end) takes its own
//!   entry out and leaves a report in `ended`, at most
//!   [`RuntimeConfig::ended_reports_max`](super::RuntimeConfig::ended_reports_max) of them;
//! - a task that panics (its reducer or an inspector did) is taken out by the
//!   [`Retirement`] it holds, as the panic unwinds.
//!
//! Entries carry a generation, so that a task can never take out the entry of a newer
//! instance spawned under the same id.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use keel_core::Reducer;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::instance::Finished;
use super::{HandedBack, Message, Shared, ShutdownReport};
use crate::handler::InstanceId;

/// The instances of a runtime; always behind the runtime's one lock.
pub(super) struct Registry<R: Reducer> {
    pub(super) running: HashMap<InstanceId, InstanceHandle<R>>,
    /// Reports of instances that ended on their own, oldest first.
    pub(super) ended: VecDeque<Ended<R::State>>,
    next_generation: u64,
}

/// A running instance, as its runtime reaches it.
pub(super) struct InstanceHandle<R: Reducer> {
    pub(super) mailbox: mpsc::Sender<Message<R>>,
    /// What the instance leaves, unless it took its own entry out and left it in
    /// [`Registry::ended`].
    pub(super) task: JoinHandle<Option<Finished<R::State>>>,
    generation: u64,
}

/// What an instance that ended on its own left behind.
pub(super) struct Ended<S> {
    id: InstanceId,
    /// Its last state; `None` when its task panicked.
    state: Option<S>,
    handed_back: Vec<HandedBack>,
    fault: Option<String>,
}

impl<R: Reducer> Registry<R> {
    pub(super) fn new() -> Self {
        Self {
            running: HashMap::new(),
            ended: VecDeque::new(),
            next_generation: 0,
        }
    }

    /// The generation of the next instance spawned.
    pub(super) fn next_generation(&mut self) -> u64 {
        let generation = self.next_generation;
        self.next_generation += 1;
        generation
    }

    /// Records the running instance `id` of `generation`.
    pub(super) fn insert(
        &mut self,
        id: InstanceId,
        mailbox: mpsc::Sender<Message<R>>,
        task: JoinHandle<Option<Finished<R::State>>>,
        generation: u64,
    ) {
        let handle = InstanceHandle {
            mailbox,
            task,
            generation,
        };
        self.running.insert(id, handle);
    }

    /// Takes out the entry of `id` if it is the one of `generation`; whether it was.
    fn take_own(&mut self, id: &InstanceId, generation: u64) -> bool {
        let own = self
            .running
            .get(id)
            .is_some_and(|handle| handle.generation == generation);
        if own {
            self.running.remove(id);
        }
        own
    }

    /// Takes out the entry of instance `id` of `generation`, which has ended, if it is
    /// still there; then keeps a report of what it left (`None`: it panicked) and returns
    /// `None`. When the entry is gone already, a stop or a shutdown took it and awaits the
    /// task: `left` is handed back for it.
    fn retire(
        &mut self,
        id: &InstanceId,
        generation: u64,
        left: Option<Finished<R::State>>,
        kept_max: usize,
    ) -> Option<Finished<R::State>> {
        if !self.take_own(id, generation) {
            return left;
        }
        // Only a fault ends an instance that still has its entry (a drain comes from a
        // stop or a shutdown, which take the entry first), so there is one to report.
        let report = match left {
            Some(finished) => Ended {
                id: id.clone(),
                state: Some(finished.state),
                handed_back: finished.handed_back,
                fault: finished.fault.map(|fault| fault.to_string()),
            },
            None => Ended {
                id: id.clone(),
                state: None,
                handed_back: Vec::new(),
                fault: Some(
                    "the instance task panicked (in the reducer or an inspector): its state \
                     and the intents it had not carried out are lost"
                        .to_owned(),
                ),
            },
        };
        if self.ended.len() >= kept_max
            && let Some(oldest) = self.ended.pop_front()
        {
            tracing::warn!(
                instance = %oldest.id,
                kept_max,
                handed_back = oldest.handed_back.len(),
                "too many reports of ended instances kept: dropped the oldest"
            );
        }
        self.ended.push_back(report);
        None
    }
}

impl<S> ShutdownReport<S> {
    /// An empty report.
    pub(super) fn new() -> Self {
        Self {
            instances: Vec::new(),
            handed_back: Vec::new(),
            faults: Vec::new(),
        }
    }

    /// Adds what the instance `id` left when it ended.
    pub(super) fn add(&mut self, id: InstanceId, finished: Finished<S>) {
        self.handed_back.extend(finished.handed_back);
        if let Some(fault) = finished.fault {
            self.faults.push((id.clone(), fault.to_string()));
        }
        self.instances.push((id, finished.state));
    }

    /// Adds the reports of instances that ended on their own.
    pub(super) fn add_ended(&mut self, ended: impl IntoIterator<Item = Ended<S>>) {
        for ended in ended {
            self.handed_back.extend(ended.handed_back);
            if let Some(fault) = ended.fault {
                self.faults.push((ended.id.clone(), fault));
            }
            if let Some(state) = ended.state {
                self.instances.push((ended.id, state));
            }
        }
    }
}

/// Takes an instance's entry out of the registry when its task ends: through
/// [`finished`](Self::finished) when the task returns, or when dropped as a panic
/// unwinds it.
pub(super) struct Retirement<R: Reducer> {
    shared: Arc<Shared<R>>,
    id: InstanceId,
    generation: u64,
    /// Cleared once [`finished`](Self::finished) has retired the instance.
    pending: bool,
}

impl<R: Reducer> Retirement<R> {
    pub(super) fn new(shared: Arc<Shared<R>>, id: InstanceId, generation: u64) -> Self {
        Self {
            shared,
            id,
            generation,
            pending: true,
        }
    }

    /// The task ended with `finished`: what its `JoinHandle` returns.
    pub(super) fn finished(mut self, finished: Finished<R::State>) -> Option<Finished<R::State>> {
        self.pending = false;
        self.retire(Some(finished))
    }

    fn retire(&self, left: Option<Finished<R::State>>) -> Option<Finished<R::State>> {
        let kept_max = self.shared.config.ended_reports_max;
        lock(&self.shared.registry).retire(&self.id, self.generation, left, kept_max)
    }
}

impl<R: Reducer> Drop for Retirement<R> {
    fn drop(&mut self) {
        if !self.pending {
            return;
        }
        if std::thread::panicking() {
            self.retire(None);
        } else {
            // Dropped unfinished without a panic: the tokio runtime is going away with
            // the task, and nobody is left to read a report.
            lock(&self.shared.registry).take_own(&self.id, self.generation);
        }
    }
}

/// Locks the registry. Only map and queue operations run under this lock, so a
/// poisoned lock still holds a consistent registry.
pub(super) fn lock<R: Reducer>(registry: &Mutex<Registry<R>>) -> MutexGuard<'_, Registry<R>> {
    registry.lock().unwrap_or_else(PoisonError::into_inner)
}
