//! Durable requests and dead letters: how tools outside the orchestrator's process steer
//! sagas and see what is stuck.
//!
//! - **Requests.** An operator command (retry, skip, resolve) or a cancellation is
//!   appended to the stream [`REQUEST_STREAM`]; a running orchestrator follows that
//!   stream and carries each request out once (its checkpoint commits as a projection),
//!   and one that starts later picks up what arrived meanwhile. This is how the `keel`
//!   command line tool acts on sagas without the definitions or a connection to the
//!   orchestrator.
//! - **Dead letters.** Whenever a saga stops for an operator, a dead letter naming the
//!   saga, the step and the reason is appended to [`DEAD_LETTER_STREAM`], before the
//!   saga's own record (so a crash between the two repeats the dead letter under the
//!   same id, which the store deduplicates, rather than losing it).

use keel_core::{Cause, EventId, EventType, Payload, Priority, StreamId, Timestamp};
use keel_store::{EventStore, ProjectionState, READ_LIMIT_MAX};
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::id::SagaId;
use crate::saga::{OperatorCommand, SOURCE, SagaState, Transition};

/// The stream that requests to sagas are appended to.
pub const REQUEST_STREAM: &str = "keel-saga-requests";

/// The stream of dead letters: sagas that stopped for an operator.
pub const DEAD_LETTER_STREAM: &str = "keel-dead-letters";

/// The envelope type of a request.
pub const REQUEST_TYPE: &str = "keel.saga.requested";

/// The envelope type of a dead letter.
pub const DEAD_LETTER_TYPE: &str = "keel.saga.dead_lettered";

/// The projection that holds how far requests have been carried out.
pub(crate) const REQUEST_CHECKPOINT: &str = "keel.saga-requests";

/// What a request asks of a saga.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "snake_case")]
pub enum Request {
    /// An operator command for a saga that needs intervention.
    Operate {
        /// The command.
        command: OperatorCommand,
    },
    /// Cancel the saga.
    Cancel {
        /// Why.
        reason: String,
    },
}

/// A request as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredRequest {
    /// The saga it is for.
    pub saga: SagaId,
    /// What it asks.
    pub request: Request,
}

/// A saga that stopped for an operator, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Its number in the dead-letter stream, from 1 (filled in when read).
    #[serde(default)]
    pub id: u64,
    /// The saga.
    pub saga: SagaId,
    /// Its type.
    pub saga_type: String,
    /// Why it stopped.
    pub reason: String,
    /// The steps stuck, by name.
    pub steps: Vec<String>,
    /// The saga log version of the record that stopped it.
    pub version: u64,
    /// When.
    pub at: Timestamp,
}

/// Asks for `request` on saga `saga` by appending it to [`REQUEST_STREAM`]; returns the
/// request's position. The id is fresh (from `nonce`), so two identical requests are two.
pub async fn submit(
    store: &dyn EventStore,
    saga: &SagaId,
    request: Request,
    now: Timestamp,
    nonce: u128,
) -> Result<u64, Error> {
    let body = StoredRequest {
        saga: saga.clone(),
        request,
    };
    let data = serde_json::to_vec(&body).map_err(|e| Error::CorruptLog {
        saga: saga.to_string(),
        version: 0,
        reason: format!("the request cannot be encoded: {e}"),
    })?;
    let envelope = keel_core::Envelope {
        id: EventId::from_u128(nonce),
        event_type: EventType::from_static(REQUEST_TYPE),
        source: "keel-cli".to_owned(),
        target: Some(SOURCE.to_owned()),
        time: now,
        correlation_id: saga.correlation(),
        causation_id: None,
        subject: Some(saga.to_string()),
        sequence: 0,
        schema_version: 1,
        priority: Priority::High,
        metadata: std::collections::BTreeMap::new(),
        payload: Payload::Binary(data),
    };
    let appended = store
        .append(
            &StreamId::from_static(REQUEST_STREAM),
            keel_core::ExpectedVersion::Any,
            std::slice::from_ref(&envelope),
        )
        .await?;
    Ok(appended.first_position)
}

/// The dead letter for `state`, which just stopped for an operator in the reduction
/// `cause` (the saga log record at `version`).
pub(crate) fn dead_letter(
    state: &SagaState,
    step_names: &[&str],
    cause: Cause,
    version: u64,
    now: Timestamp,
    transitions: &[Transition],
) -> Option<keel_core::Envelope> {
    let reason = transitions.iter().find_map(|t| match t {
        Transition::NeedsIntervention { reason } => Some(reason.clone()),
        _ => None,
    })?;
    let forward = matches!(
        state.status,
        crate::saga::SagaStatus::NeedsIntervention {
            resume: crate::saga::Resume::Forward,
            ..
        }
    );
    let stuck: Vec<String> = state
        .steps
        .iter()
        .enumerate()
        .filter(|(_, st)| {
            // What an operator's retry or skip would act on: see the reducer's `operator`.
            st.phase == crate::saga::StepPhase::Parked
                || st.is_unknown()
                || (forward && st.phase == crate::saga::StepPhase::Failed)
        })
        .filter_map(|(index, _)| step_names.get(index).map(|name| (*name).to_owned()))
        .collect();
    let letter = DeadLetter {
        id: 0,
        saga: state.id.clone(),
        saga_type: state.saga_type.to_string(),
        reason,
        steps: stuck,
        version,
        at: now,
    };
    let data = serde_json::to_vec(&letter).ok()?;
    Some(keel_core::Envelope {
        // Derived from the record that parked the saga: a repeat is the same letter.
        id: EventId::derived(cause.intent_id(u32::MAX - 2), 0),
        event_type: EventType::from_static(DEAD_LETTER_TYPE),
        source: SOURCE.to_owned(),
        target: None,
        time: now,
        correlation_id: cause.correlation,
        causation_id: Some(cause.causation),
        subject: Some(state.id.to_string()),
        sequence: 0,
        schema_version: 1,
        priority: Priority::Normal,
        metadata: std::collections::BTreeMap::new(),
        payload: Payload::Binary(data),
    })
}

/// Every dead letter in `store`, oldest first.
pub async fn dead_letters(store: &dyn EventStore) -> Result<Vec<DeadLetter>, Error> {
    let stream = StreamId::from_static(DEAD_LETTER_STREAM);
    let mut letters = Vec::new();
    let mut from = 1;
    loop {
        let page = store.read_stream(&stream, from, READ_LIMIT_MAX).await?;
        let full = page.len() == READ_LIMIT_MAX;
        for event in &page {
            from = event.version + 1;
            let Payload::Binary(bytes) = &event.envelope.payload else {
                continue;
            };
            let Ok(mut letter) = serde_json::from_slice::<DeadLetter>(bytes) else {
                continue;
            };
            letter.id = event.version;
            letters.push(letter);
        }
        if !full {
            return Ok(letters);
        }
    }
}

/// Requests not yet carried out, with the checkpoint to save after them.
pub(crate) async fn pending(
    store: &dyn EventStore,
) -> Result<(u64, Vec<(u64, StoredRequest)>), Error> {
    let done = store
        .load_projection(REQUEST_CHECKPOINT)
        .await?
        .map_or(0, |state| state.checkpoint);
    let page = store
        .read_stream(
            &StreamId::from_static(REQUEST_STREAM),
            done + 1,
            READ_LIMIT_MAX,
        )
        .await?;
    let requests = page
        .into_iter()
        .filter_map(|event| match &event.envelope.payload {
            Payload::Binary(bytes) => serde_json::from_slice(bytes)
                .ok()
                .map(|request| (event.version, request)),
            Payload::Json(_) => None,
        })
        .collect();
    Ok((done, requests))
}

/// Records that requests up to stream version `version` were carried out (the
/// projection's checkpoint holds the request stream's version here, not a position).
pub(crate) async fn done(store: &dyn EventStore, expected: u64, version: u64) -> Result<(), Error> {
    let state = ProjectionState {
        checkpoint: version,
        model: serde_json::Value::Null,
    };
    store
        .save_projection(REQUEST_CHECKPOINT, expected, &state)
        .await?;
    Ok(())
}
