//! Fixtures shared by keel-orchestrator's behaviour tests: services that record what
//! they were asked (a [`Journal`]), services that hold their answer until a test lets
//! them go (a [`Gate`]), temporary SQLite files and the PostgreSQL server, and a real
//! HTTP server on 127.0.0.1.
//!
//! No mocks: every test runs the real orchestrator over a real store, and the services
//! are plain handlers registered with it.
#![allow(dead_code)] // each test file uses some of the fixtures

pub(crate) mod http_server;
pub(crate) mod outage;
pub(crate) mod stores;

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keel_effects::{Call, Failure, Handler};
use keel_orchestrator::{Error, Orchestrator, SagaId, SagaStatus, Timeline, Transition};
use serde_json::Value;
use tokio::sync::watch;

/// The longest any single wait in a test may take before the test fails instead of
/// hanging. Under a paused clock it is reached at once when nothing else can happen.
pub(crate) const WAIT_MAX: Duration = Duration::from_secs(10);

/// Awaits `future`, failing the test with `what` if it takes over [`WAIT_MAX`].
pub(crate) async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(WAIT_MAX, future).await {
        Ok(value) => value,
        Err(_) => panic!("{what}: nothing happened within {WAIT_MAX:?}"),
    }
}

/// One shard (so every saga of a test shares it) and no request follower (whose
/// polling would make a paused clock jump).
pub(crate) fn one_shard() -> keel_orchestrator::OrchestratorConfig {
    keel_orchestrator::OrchestratorConfig {
        shards: 1,
        request_poll_ms: 0,
        ..keel_orchestrator::OrchestratorConfig::default()
    }
}

/// A saga id; panics on an invalid one (ids in tests are literals).
pub(crate) fn saga_id(id: impl Into<String>) -> SagaId {
    SagaId::new(id).expect("a valid saga id")
}

/// Text unique to this run of the tests (process id and time), for names that outlive
/// the process: PostgreSQL schemas, saga ids in a shared database, temporary files.
pub(crate) fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos());
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}{}_{nanos}_{n}", std::process::id())
}

/// Waits (within [`WAIT_MAX`]) for saga `id` to come to rest (finished, or waiting for
/// an operator) and returns its status, checking that the log in the store says the
/// same: a status the orchestrator reports is durable.
pub(crate) async fn settled(orchestrator: &Orchestrator, id: &SagaId) -> SagaStatus {
    let status = within(&format!("saga {id} coming to rest"), orchestrator.wait(id))
        .await
        .unwrap_or_else(|e| panic!("waiting for saga {id}: {e}"));
    assert_eq!(
        logged_status(orchestrator, id).await,
        status,
        "saga {id}'s log agrees with what `wait` reported"
    );
    status
}

/// Saga `id`'s status as of the last record of its log (`New` before its first).
pub(crate) async fn logged_status(orchestrator: &Orchestrator, id: &SagaId) -> SagaStatus {
    match orchestrator.timeline(id).await {
        Ok(timeline) => timeline.summary.status,
        Err(Error::UnknownSaga { .. }) => SagaStatus::New,
        Err(e) => panic!("reading the log of saga {id}: {e}"),
    }
}

/// Every transition of `timeline`, in order.
pub(crate) fn transitions(timeline: &Timeline) -> Vec<Transition> {
    timeline
        .entries
        .iter()
        .flat_map(|entry| entry.transitions.iter().cloned())
        .collect()
}

/// The names of the steps in the order they completed, read from `timeline`.
pub(crate) fn completion_order(timeline: &Timeline) -> Vec<String> {
    transitions(timeline)
        .into_iter()
        .filter_map(|t| match t {
            Transition::StepCompleted { step } => Some(timeline.step_name(step)),
            _ => None,
        })
        .collect()
}

/// Whether `error` is [`Error::NotAllowed`] for `request`.
pub(crate) fn is_not_allowed(error: &Error, request: &str) -> bool {
    matches!(error, Error::NotAllowed { request: r, .. } if *r == request)
}

/// One call a service received.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Received {
    /// The handler's name: `stock.reserve`.
    pub(crate) service: &'static str,
    /// The saga that called (the call's instance).
    pub(crate) saga: String,
    /// The intent's id as text: the idempotency key.
    pub(crate) intent: String,
    /// The custom intent's payload (`null` for other kinds).
    pub(crate) payload: Value,
}

/// What the services of one test were asked, in the order they were asked.
#[derive(Debug, Clone, Default)]
pub(crate) struct Journal(Arc<Mutex<Vec<Received>>>);

impl Journal {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Notes `call` as received by `service`.
    pub(crate) fn note(&self, service: &'static str, call: &Call) {
        let payload = match &call.intent.kind {
            keel_orchestrator::core::IntentKind::Custom { payload, .. } => payload.clone(),
            _ => Value::Null,
        };
        self.lock().push(Received {
            service,
            saga: call.instance.as_str().to_owned(),
            intent: call.intent.id.to_string(),
            payload,
        });
    }

    /// Every call, in order.
    pub(crate) fn all(&self) -> Vec<Received> {
        self.lock().clone()
    }

    /// The services called, in order.
    pub(crate) fn services(&self) -> Vec<&'static str> {
        self.lock().iter().map(|r| r.service).collect()
    }

    /// The services called by saga `saga`, in order.
    pub(crate) fn services_of(&self, saga: &SagaId) -> Vec<&'static str> {
        self.lock()
            .iter()
            .filter(|r| r.saga == saga.as_str())
            .map(|r| r.service)
            .collect()
    }

    /// The calls `service` received.
    pub(crate) fn calls_to(&self, service: &str) -> Vec<Received> {
        self.lock()
            .iter()
            .filter(|r| r.service == service)
            .cloned()
            .collect()
    }

    /// A service that notes each call and answers `answer`.
    pub(crate) fn ok(&self, service: &'static str, answer: Value) -> impl Handler + use<> {
        let journal = self.clone();
        move |call: Call| {
            journal.note(service, &call);
            let answer = answer.clone();
            async move { Ok::<Value, Failure>(answer) }
        }
    }

    /// A service that notes each call and fails with `failure`.
    pub(crate) fn failing(&self, service: &'static str, failure: Failure) -> impl Handler + use<> {
        let journal = self.clone();
        move |call: Call| {
            journal.note(service, &call);
            let failure = failure.clone();
            async move { Err::<Value, Failure>(failure) }
        }
    }

    /// A service that notes each call and never answers.
    pub(crate) fn silent(&self, service: &'static str) -> impl Handler + use<> {
        let journal = self.clone();
        move |call: Call| {
            journal.note(service, &call);
            std::future::pending::<keel_effects::HandlerResult>()
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Received>> {
        self.0
            .lock()
            .expect("no service panicked holding the journal")
    }
}

/// A service that holds every call until the test opens the gate, then answers; the
/// test can wait for calls to arrive first.
#[derive(Debug, Clone)]
pub(crate) struct Gate {
    open: Arc<watch::Sender<bool>>,
    arrived: Arc<watch::Sender<usize>>,
}

impl Gate {
    pub(crate) fn new() -> Self {
        Self {
            open: Arc::new(watch::Sender::new(false)),
            arrived: Arc::new(watch::Sender::new(0)),
        }
    }

    /// A service that notes each call in `journal`, waits for the gate to open, then
    /// answers `answer`.
    pub(crate) fn service(
        &self,
        journal: &Journal,
        service: &'static str,
        answer: Result<Value, Failure>,
    ) -> impl Handler + use<> {
        let (journal, gate) = (journal.clone(), self.clone());
        move |call: Call| {
            journal.note(service, &call);
            gate.arrived.send_modify(|n| *n += 1);
            let mut open = gate.open.subscribe();
            let answer = answer.clone();
            async move {
                // The sender lives in the gate, which this future holds.
                let _ = open.wait_for(|open| *open).await;
                answer
            }
        }
    }

    /// Waits until `calls` calls have arrived in all.
    pub(crate) async fn arrivals(&self, calls: usize) {
        let mut arrived = self.arrived.subscribe();
        within(
            &format!("{calls} calls arriving at the gate"),
            arrived.wait_for(|n| *n >= calls),
        )
        .await
        .expect("the gate lives as long as this borrow");
    }

    /// Lets every held call (and every later one) answer.
    pub(crate) fn open(&self) {
        self.open.send_replace(true);
    }
}
