//! An in-memory [`EventStore`], for tests and examples.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use keel_core::{Envelope, EventId, ExpectedVersion, StreamId};

use super::{Appended, EventStore, READ_LIMIT_MAX, RecordedEvent, StoreFuture, check_expected};
use crate::error::Error;

/// An event store in memory: fast, shared by clones, gone when the process ends.
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    inner: Arc<Mutex<Log>>,
}

#[derive(Debug, Default)]
struct Log {
    /// Every event in commit order; position = index + 1.
    events: Vec<RecordedEvent>,
    /// Stream -> the indices of its events in `events`, in version order.
    streams: HashMap<StreamId, Vec<usize>>,
    /// Event id -> its index in `events`.
    ids: HashMap<EventId, usize>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn with_log<T>(&self, f: impl FnOnce(&mut Log) -> T) -> T {
        // A panic while holding the lock cannot leave the log half-updated: `append`
        // validates everything before it changes anything.
        let mut log = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut log)
    }
}

impl Log {
    fn version(&self, stream: &StreamId) -> u64 {
        self.streams
            .get(stream)
            .map_or(0, |indices| indices.len() as u64)
    }

    /// If `events` were appended before, in this stream and order, that append's result.
    fn earlier_append(
        &self,
        stream: &StreamId,
        events: &[Envelope],
    ) -> Result<Option<Appended>, Error> {
        let Some(first) = events.first() else {
            return Ok(None);
        };
        let Some(&start) = self.ids.get(&first.id) else {
            return Ok(None);
        };
        let stored = &self.events[start];
        let matches = stored.stream == *stream
            && events.iter().enumerate().all(|(offset, event)| {
                self.ids.get(&event.id).is_some_and(|&index| {
                    let recorded = &self.events[index];
                    recorded.stream == *stream && recorded.version == stored.version + offset as u64
                })
            });
        if !matches {
            return Err(Error::DuplicateEventId {
                id: first.id.to_string(),
            });
        }
        Ok(Some(Appended {
            first_version: stored.version,
            last_version: stored.version + events.len() as u64 - 1,
            first_position: stored.position,
            deduplicated: true,
        }))
    }
}

impl EventStore for MemoryStore {
    fn append<'a>(
        &'a self,
        stream: &'a StreamId,
        expected: ExpectedVersion,
        events: &'a [Envelope],
    ) -> StoreFuture<'a, Appended> {
        let result = self.with_log(|log| {
            if let Some(earlier) = log.earlier_append(stream, events)? {
                return Ok(earlier);
            }
            let version = log.version(stream);
            check_expected(stream, expected, version)?;
            if let Some(duplicate) = events.iter().find(|e| log.ids.contains_key(&e.id)) {
                return Err(Error::DuplicateEventId {
                    id: duplicate.id.to_string(),
                });
            }
            let first_position = log.events.len() as u64 + 1;
            for (offset, envelope) in events.iter().enumerate() {
                let index = log.events.len();
                log.ids.insert(envelope.id, index);
                log.streams.entry(stream.clone()).or_default().push(index);
                log.events.push(RecordedEvent {
                    stream: stream.clone(),
                    version: version + 1 + offset as u64,
                    position: index as u64 + 1,
                    envelope: envelope.clone(),
                });
            }
            Ok(Appended {
                first_version: version + 1,
                last_version: version + events.len() as u64,
                first_position,
                deduplicated: false,
            })
        });
        Box::pin(std::future::ready(result))
    }

    fn read_stream<'a>(
        &'a self,
        stream: &'a StreamId,
        from: u64,
        limit: usize,
    ) -> StoreFuture<'a, Vec<RecordedEvent>> {
        let events = self.with_log(|log| {
            let Some(indices) = log.streams.get(stream) else {
                return Vec::new();
            };
            let skip = usize::try_from(from.saturating_sub(1)).unwrap_or(usize::MAX);
            indices
                .iter()
                .skip(skip)
                .take(limit.min(READ_LIMIT_MAX))
                .map(|&index| log.events[index].clone())
                .collect()
        });
        Box::pin(std::future::ready(Ok(events)))
    }

    fn read_all(&self, from: u64, limit: usize) -> StoreFuture<'_, Vec<RecordedEvent>> {
        let events = self.with_log(|log| {
            let skip = usize::try_from(from.saturating_sub(1)).unwrap_or(usize::MAX);
            log.events
                .iter()
                .skip(skip)
                .take(limit.min(READ_LIMIT_MAX))
                .cloned()
                .collect()
        });
        Box::pin(std::future::ready(Ok(events)))
    }

    fn stream_version<'a>(&'a self, stream: &'a StreamId) -> StoreFuture<'a, u64> {
        let version = self.with_log(|log| log.version(stream));
        Box::pin(std::future::ready(Ok(version)))
    }
}

#[cfg(test)]
mod tests {
    use keel_core::{EventType, Timestamp};

    use super::*;

    fn event(id: u128) -> Envelope {
        Envelope::builder(
            EventId::from_u128(id),
            EventType::from_static("a.b"),
            "test",
            Timestamp::UNIX_EPOCH,
        )
        .build()
        .unwrap()
    }

    fn block_on<T>(future: StoreFuture<'_, T>) -> Result<T, Error> {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(future)
    }

    #[test]
    fn appends_number_versions_per_stream_and_positions_globally() {
        let store = MemoryStore::new();
        let (a, b) = (StreamId::from("a"), StreamId::from("b"));
        let first =
            block_on(store.append(&a, ExpectedVersion::NoStream, &[event(1), event(2)])).unwrap();
        let second = block_on(store.append(&b, ExpectedVersion::NoStream, &[event(3)])).unwrap();
        assert_eq!(
            (
                first.first_version,
                first.last_version,
                first.first_position
            ),
            (1, 2, 1)
        );
        assert_eq!((second.first_version, second.first_position), (1, 3));
        let all = block_on(store.read_all(2, 10)).unwrap();
        assert_eq!(all.iter().map(|e| e.position).collect::<Vec<_>>(), [2, 3]);
    }

    #[test]
    fn a_version_conflict_names_the_actual_version_and_stores_nothing() {
        let store = MemoryStore::new();
        let a = StreamId::from("a");
        block_on(store.append(&a, ExpectedVersion::NoStream, &[event(1)])).unwrap();
        let error = block_on(store.append(&a, ExpectedVersion::Exact(0), &[event(2)])).unwrap_err();
        assert!(
            matches!(error, Error::VersionConflict { actual: 1, .. }),
            "{error:?}"
        );
        assert_eq!(block_on(store.stream_version(&a)).unwrap(), 1);
    }

    #[test]
    fn repeating_an_append_answers_with_the_earlier_result() {
        let store = MemoryStore::new();
        let a = StreamId::from("a");
        let batch = [event(1), event(2)];
        let first = block_on(store.append(&a, ExpectedVersion::NoStream, &batch)).unwrap();
        let again = block_on(store.append(&a, ExpectedVersion::NoStream, &batch)).unwrap();
        assert!(again.deduplicated);
        assert_eq!(
            (again.first_version, again.last_version),
            (first.first_version, first.last_version)
        );
        assert_eq!(block_on(store.stream_version(&a)).unwrap(), 2);
    }

    #[test]
    fn an_event_id_reused_in_another_batch_is_refused() {
        let store = MemoryStore::new();
        let a = StreamId::from("a");
        block_on(store.append(&a, ExpectedVersion::NoStream, &[event(1)])).unwrap();
        let error =
            block_on(store.append(&a, ExpectedVersion::Any, &[event(2), event(1)])).unwrap_err();
        assert!(matches!(error, Error::DuplicateEventId { .. }), "{error:?}");
    }
}
