//! How an envelope maps to the columns of the `events` table, and back.
//!
//! Each field of [`Envelope`] has its own column; ids are 16-byte blobs, the time is
//! nanoseconds since the epoch, the metadata map is JSON text (NULL when empty), and
//! the payload is JSON text for [`Payload::Json`] or a blob for [`Payload::Binary`]
//! (its column has BLOB affinity, so SQLite keeps each value's type as given).
//! Constructing the envelope with a struct literal is deliberate: a field added to
//! [`Envelope`] stops this file compiling until the schema stores it.

use keel_core::{
    CausationId, CorrelationId, Envelope, EventId, EventType, Payload, Priority, StreamId,
    Timestamp,
};
use rusqlite::types::ValueRef;
use rusqlite::{Row, ToSql};
use uuid::Uuid;

use super::{sqlite, storage};
use crate::RecordedEvent;
use crate::error::Error;

/// The envelope columns of `events`, in the order [`decode`] reads them after the
/// leading position, stream and version. A macro so queries can `concat!` it.
macro_rules! envelope_columns {
    () => {
        "id, event_type, source, target, time_ns, correlation_id, causation_id, subject, \
         sequence, schema_version, priority, metadata, payload"
    };
}
pub(crate) use envelope_columns;

/// Whether the stored event with id `?1` has the content of an [`EventRow`] bound by
/// [`EventRow::envelope_params`] (NULL-safe `IS`, and without conversions: the payload
/// column has BLOB affinity, so JSON text never equals a blob of the same bytes). No
/// row when the id is not in `events` (trimmed, or never stored).
pub(crate) const SAME_CONTENT: &str = "SELECT event_type IS ?2 AND source IS ?3 \
     AND target IS ?4 AND time_ns IS ?5 AND correlation_id IS ?6 AND causation_id IS ?7 \
     AND subject IS ?8 AND sequence IS ?9 AND schema_version IS ?10 AND priority IS ?11 \
     AND metadata IS ?12 AND payload IS ?13 FROM events WHERE id = ?1";

/// One event ready to insert: every column bound as is, encoded on the caller's task
/// so the writer thread only binds.
#[derive(Debug)]
pub(crate) struct EventRow {
    pub(crate) id: [u8; 16],
    pub(crate) event_type: String,
    pub(crate) source: String,
    pub(crate) target: Option<String>,
    pub(crate) time_ns: i64,
    pub(crate) correlation_id: [u8; 16],
    pub(crate) causation_id: Option<[u8; 16]>,
    pub(crate) subject: Option<String>,
    /// The envelope's `u64` sequence, bit-cast to SQLite's `i64` and back: lossless.
    pub(crate) sequence: i64,
    pub(crate) schema_version: i64,
    pub(crate) priority: &'static str,
    pub(crate) metadata: Option<String>,
    pub(crate) payload: PayloadColumn,
}

/// The payload column's value.
#[derive(Debug)]
pub(crate) enum PayloadColumn {
    /// JSON text.
    Json(String),
    /// Raw bytes.
    Binary(Vec<u8>),
}

impl EventRow {
    /// The columns of `envelope`.
    pub(crate) fn encode(envelope: &Envelope) -> Result<Self, Error> {
        let metadata = if envelope.metadata.is_empty() {
            None
        } else {
            Some(serde_json::to_string(&envelope.metadata).map_err(storage)?)
        };
        let payload = match &envelope.payload {
            Payload::Json(value) => {
                PayloadColumn::Json(serde_json::to_string(value).map_err(storage)?)
            }
            Payload::Binary(bytes) => PayloadColumn::Binary(bytes.clone()),
        };
        Ok(Self {
            id: envelope.id.0.into_bytes(),
            event_type: envelope.event_type.as_str().to_owned(),
            source: envelope.source.clone(),
            target: envelope.target.clone(),
            time_ns: envelope.time.unix_nanos(),
            correlation_id: envelope.correlation_id.0.into_bytes(),
            causation_id: envelope.causation_id.map(|id| id.0.into_bytes()),
            subject: envelope.subject.clone(),
            sequence: envelope.sequence as i64,
            schema_version: i64::from(envelope.schema_version),
            priority: envelope.priority.as_str(),
            metadata,
            payload,
        })
    }

    /// The values of the [`envelope_columns`], in their order.
    pub(crate) fn envelope_params(&self) -> [&dyn ToSql; 13] {
        let payload: &dyn ToSql = match &self.payload {
            PayloadColumn::Json(text) => text,
            PayloadColumn::Binary(bytes) => bytes,
        };
        [
            &self.id,
            &self.event_type,
            &self.source,
            &self.target,
            &self.time_ns,
            &self.correlation_id,
            &self.causation_id,
            &self.subject,
            &self.sequence,
            &self.schema_version,
            &self.priority,
            &self.metadata,
            payload,
        ]
    }

    /// The event id, for error messages.
    pub(crate) fn event_id(&self) -> EventId {
        EventId(Uuid::from_bytes(self.id))
    }
}

/// Reads an event from `row`: its position at column 0, its stream at column 1 (or
/// `stream` when the query knows it and selects NULL), its version at column 2, then
/// the [`envelope_columns`].
pub(crate) fn decode(row: &Row<'_>, stream: Option<&StreamId>) -> Result<RecordedEvent, Error> {
    let position = unsigned(row, 0)?;
    let stream = match stream {
        Some(stream) => stream.clone(),
        None => StreamId::from(text(row, 1)?.to_owned()),
    };
    let version = unsigned(row, 2)?;
    let damaged = |reason: String| {
        storage(format!(
            "the event at position {position} is damaged: {reason}"
        ))
    };
    let envelope = envelope(row, 3).map_err(|e| damaged(e.to_string()))?;
    Ok(RecordedEvent {
        stream,
        version,
        position,
        envelope,
    })
}

/// The envelope in the columns from `first` on, in [`envelope_columns`] order.
fn envelope(row: &Row<'_>, first: usize) -> Result<Envelope, Error> {
    let column = |offset: usize| first + offset;
    let metadata = match optional_text(row, column(11))? {
        None => Default::default(),
        Some(text) => serde_json::from_str(text).map_err(storage)?,
    };
    let payload = match value(row, column(12))? {
        ValueRef::Text(text) => Payload::Json(serde_json::from_slice(text).map_err(storage)?),
        ValueRef::Blob(bytes) => Payload::Binary(bytes.to_vec()),
        other => {
            return Err(storage(format!(
                "the payload is {:?}, not text or a blob",
                other.data_type()
            )));
        }
    };
    let priority = text(row, column(10))?;
    Ok(Envelope {
        id: EventId(uuid(row, column(0))?),
        event_type: EventType::new(text(row, column(1))?.to_owned())?,
        source: text(row, column(2))?.to_owned(),
        target: optional_text(row, column(3))?.map(str::to_owned),
        time: Timestamp::from_unix_nanos(integer(row, column(4))?),
        correlation_id: CorrelationId(uuid(row, column(5))?),
        causation_id: optional_uuid(row, column(6))?.map(CausationId),
        subject: optional_text(row, column(7))?.map(str::to_owned),
        sequence: integer(row, column(8))? as u64,
        schema_version: u32::try_from(integer(row, column(9))?)
            .map_err(|_| storage("the schema version is out of range"))?,
        priority: Priority::parse(priority)
            .ok_or_else(|| storage(format!("unknown priority `{priority}`")))?,
        metadata,
        payload,
    })
}

fn value<'r>(row: &'r Row<'_>, index: usize) -> Result<ValueRef<'r>, Error> {
    row.get_ref(index).map_err(sqlite)
}

fn integer(row: &Row<'_>, index: usize) -> Result<i64, Error> {
    value(row, index)?.as_i64().map_err(storage)
}

fn unsigned(row: &Row<'_>, index: usize) -> Result<u64, Error> {
    let value = integer(row, index)?;
    u64::try_from(value).map_err(|_| storage(format!("column {index} holds {value}, below 0")))
}

fn text<'r>(row: &'r Row<'_>, index: usize) -> Result<&'r str, Error> {
    value(row, index)?.as_str().map_err(storage)
}

fn optional_text<'r>(row: &'r Row<'_>, index: usize) -> Result<Option<&'r str>, Error> {
    value(row, index)?.as_str_or_null().map_err(storage)
}

fn uuid(row: &Row<'_>, index: usize) -> Result<Uuid, Error> {
    let bytes = value(row, index)?.as_blob().map_err(storage)?;
    Uuid::from_slice(bytes).map_err(storage)
}

fn optional_uuid(row: &Row<'_>, index: usize) -> Result<Option<Uuid>, Error> {
    match value(row, index)?.as_blob_or_null().map_err(storage)? {
        None => Ok(None),
        Some(bytes) => Uuid::from_slice(bytes).map(Some).map_err(storage),
    }
}
