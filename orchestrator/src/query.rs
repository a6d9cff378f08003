//! Reading sagas back from the store: one saga's status and timeline, and lists by
//! status and type.
//!
//! These read the saga log alone, so they work without a running orchestrator and
//! without the saga definitions (the first record names the steps): the `keel` command
//! line tool uses them on any store.

use std::collections::BTreeMap;

use keel_core::Timestamp;
use keel_store::{EventStore, InstanceQuery, READ_LIMIT_MAX, RecordedEvent};
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::id::{SagaId, SagaType};
use crate::log::{self, RECORD_TYPE, Record};
use crate::saga::{SagaEvent, SagaStatus, Transition};

/// One saga at a glance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SagaSummary {
    /// Its id.
    pub id: SagaId,
    /// Its type.
    pub saga_type: SagaType,
    /// Where it stands, as of its last record.
    pub status: SagaStatus,
    /// When it started.
    pub started_at: Timestamp,
    /// When it last changed.
    pub updated_at: Timestamp,
    /// How many records its log holds.
    pub records: u64,
}

/// One record of a saga's timeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimelineEntry {
    /// Its version in the saga's log, from 1.
    pub version: u64,
    /// When it happened.
    pub time: Timestamp,
    /// What happened.
    pub event: SagaEvent,
    /// The saga's status after it.
    pub status: SagaStatus,
    /// What it led to.
    pub transitions: Vec<Transition>,
}

/// A saga's whole history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Timeline {
    /// The saga at a glance.
    pub summary: SagaSummary,
    /// Its steps' names, by index.
    pub steps: Vec<String>,
    /// Every record, oldest first.
    pub entries: Vec<TimelineEntry>,
}

impl Timeline {
    /// The name of step `step`, or `#step` when the log does not name it.
    pub fn step_name(&self, step: u16) -> String {
        self.steps
            .get(usize::from(step))
            .cloned()
            .unwrap_or_else(|| format!("#{step}"))
    }
}

/// Which sagas [`list`] returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SagaFilter {
    /// Only sagas with this status name (`running`, `needs_intervention`, ...).
    pub status: Option<String>,
    /// Only sagas of this type.
    pub saga_type: Option<SagaType>,
}

impl SagaFilter {
    fn admits(&self, summary: &SagaSummary) -> bool {
        self.status
            .as_deref()
            .is_none_or(|status| summary.status.name() == status)
            && self
                .saga_type
                .as_ref()
                .is_none_or(|t| &summary.saga_type == t)
    }
}

/// The status names a filter may use.
pub const STATUS_NAMES: [&str; 6] = [
    "running",
    "compensating",
    "completed",
    "compensated",
    "needs_intervention",
    "resolved",
];

/// Every record of saga `id`'s log, in order.
async fn read_saga(store: &dyn EventStore, id: &SagaId) -> Result<Vec<RecordedEvent>, Error> {
    let stream = id.stream();
    let mut events = Vec::new();
    loop {
        let page = store
            .read_stream(&stream, events.len() as u64 + 1, READ_LIMIT_MAX)
            .await?;
        let full = page.len() == READ_LIMIT_MAX;
        events.extend(page);
        if !full {
            return Ok(events);
        }
    }
}

/// Saga `id`'s history, read from `store`.
pub async fn timeline(store: &dyn EventStore, id: &SagaId) -> Result<Timeline, Error> {
    let events = read_saga(store, id).await?;
    let Some(first) = events.first() else {
        return Err(Error::UnknownSaga {
            saga: id.to_string(),
        });
    };
    let saga_type = log::saga_type_of(id, &first.envelope)?;
    let mut steps = Vec::new();
    let mut entries = Vec::with_capacity(events.len());
    for event in &events {
        let Record {
            event: saga_event,
            status,
            transitions,
            steps: named,
        } = log::decode(id, event.version, &event.envelope)?;
        if let Some(named) = named {
            steps = named;
        }
        entries.push(TimelineEntry {
            version: event.version,
            time: event.envelope.time,
            event: saga_event,
            status,
            transitions,
        });
    }
    let last = entries
        .last()
        .map_or(SagaStatus::New, |entry| entry.status.clone());
    let summary = SagaSummary {
        id: id.clone(),
        saga_type,
        status: last,
        started_at: first.envelope.time,
        updated_at: events
            .last()
            .map_or(first.envelope.time, |e| e.envelope.time),
        records: events.len() as u64,
    };
    Ok(Timeline {
        summary,
        steps,
        entries,
    })
}

/// Every saga in `store` that `filter` admits, by id: meant for operators and tools, not
/// for a hot path.
///
/// The store's index of instances finds the sagas (by type and status, when the filter
/// names them), and each one found costs a read of its first and last records; a store
/// whose history predates the index is read whole instead.
pub async fn list(store: &dyn EventStore, filter: &SagaFilter) -> Result<Vec<SagaSummary>, Error> {
    if store.unindexed_head().await? > 0 {
        return list_from_all(store, filter).await;
    }
    let mut query = InstanceQuery::all();
    query.kind = filter.saga_type.as_ref().map(|t| t.as_str().to_owned());
    query.status.clone_from(&filter.status);
    let mut sagas = Vec::new();
    loop {
        let page = store.instances(&query).await?;
        let Some(last) = page.last() else { break };
        query.after = Some(last.stream.clone());
        for entry in &page {
            let Some(id) = SagaId::from_stream(&entry.stream) else {
                continue;
            };
            if let Some(summary) = summarise(store, &id, entry.version).await?
                && filter.admits(&summary)
            {
                sagas.push(summary);
            }
        }
    }
    Ok(sagas)
}

/// Saga `id` at a glance from its first record and the records from `marked` (the
/// version of its last marked record, which holds its status) to its end; `None` if the
/// stream holds no saga log (or one whose start was trimmed away).
async fn summarise(
    store: &dyn EventStore,
    id: &SagaId,
    marked: u64,
) -> Result<Option<SagaSummary>, Error> {
    let stream = id.stream();
    let first = store.read_stream(&stream, 1, 1).await?;
    let Some(first) = first.first() else {
        return Ok(None);
    };
    if first.envelope.event_type.as_str() != RECORD_TYPE {
        return Ok(None);
    }
    let Ok(saga_type) = log::saga_type_of(id, &first.envelope) else {
        return Ok(None);
    };
    let mut last = None;
    let mut from = marked.max(1);
    loop {
        let page = store.read_stream(&stream, from, READ_LIMIT_MAX).await?;
        let full = page.len() == READ_LIMIT_MAX;
        if let Some(event) = page.into_iter().last() {
            from = event.version + 1;
            last = Some(event);
        }
        if !full {
            break;
        }
    }
    let last = last.unwrap_or_else(|| first.clone());
    let record = log::decode(id, last.version, &last.envelope)?;
    Ok(Some(SagaSummary {
        id: id.clone(),
        saga_type,
        status: record.status,
        started_at: first.envelope.time,
        updated_at: last.envelope.time,
        records: last.version,
    }))
}

/// [`list`] by reading the whole store, for a store whose history predates the index.
async fn list_from_all(
    store: &dyn EventStore,
    filter: &SagaFilter,
) -> Result<Vec<SagaSummary>, Error> {
    let mut sagas: BTreeMap<SagaId, SagaSummary> = BTreeMap::new();
    let mut from = 1;
    loop {
        let page = store.read_all(from, READ_LIMIT_MAX).await?;
        let Some(last) = page.last() else {
            break;
        };
        from = last.position + 1;
        for event in &page {
            if event.envelope.event_type.as_str() != RECORD_TYPE {
                continue;
            }
            let Some(id) = SagaId::from_stream(&event.stream) else {
                continue;
            };
            let record = log::decode(&id, event.version, &event.envelope)?;
            let time = event.envelope.time;
            match (sagas.get_mut(&id), &record.event) {
                (Some(summary), _) => {
                    summary.status = record.status;
                    summary.updated_at = time;
                    summary.records = event.version;
                }
                (None, SagaEvent::Started { saga_type, .. }) => {
                    sagas.insert(
                        id.clone(),
                        SagaSummary {
                            id,
                            saga_type: saga_type.clone(),
                            status: record.status,
                            started_at: time,
                            updated_at: time,
                            records: event.version,
                        },
                    );
                }
                // A log whose start was trimmed away: not a saga this can summarise.
                (None, _) => {}
            }
        }
    }
    Ok(sagas
        .into_values()
        .filter(|summary| filter.admits(summary))
        .collect())
}
