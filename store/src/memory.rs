//! An in-memory [`EventStore`], for tests and examples; also the reference the durable
//! backends are compared with.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use keel_core::{Envelope, EventId, ExpectedVersion, Intent, IntentId, StreamId, Timestamp};
use tokio::sync::watch;

use super::index::{InstanceEntry, InstanceQuery, PURGED_STREAM, last_mark};
use super::repeat::{Held, earlier_append, same_content};
use super::{
    Appended, EventStore, LockHolder, ProjectionState, READ_LIMIT_MAX, RecordedEvent, StoreFuture,
    StoredSnapshot, Trim, WriterLock, check_append, check_expected,
};
use crate::error::Error;

/// An event store in memory: fast, shared by clones, gone when the process ends.
#[derive(Debug, Clone)]
pub struct MemoryStore {
    inner: Arc<Mutex<Log>>,
    head: Arc<watch::Sender<u64>>,
    /// The holder of the writer lock, shared by clones (they are one store).
    writer: Arc<Mutex<Option<LockHolder>>>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self {
            inner: Arc::default(),
            head: Arc::new(watch::Sender::new(0)),
            writer: Arc::default(),
        }
    }
}

/// Where the memory store names its lock.
const LOCATION: &str = "memory";

/// Holds a [`MemoryStore`]'s writer lock; dropping it clears the holder.
#[derive(Debug)]
struct HeldFlag(Arc<Mutex<Option<LockHolder>>>);

impl Drop for HeldFlag {
    fn drop(&mut self) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }
}

#[derive(Debug, Default)]
struct Log {
    /// Every event by position; trimmed ones are removed.
    events: BTreeMap<u64, RecordedEvent>,
    head: u64,
    /// Stream -> (version, positions of its remaining events in version order).
    streams: HashMap<StreamId, Stream>,
    /// Event id -> its position (kept after trimming, so an id is never reused).
    ids: HashMap<EventId, (StreamId, u64, u64)>,
    /// Pending intents by insertion sequence, and their ids.
    pending: BTreeMap<u64, Intent>,
    pending_ids: HashMap<IntentId, u64>,
    outbox_sequence: u64,
    snapshots: HashMap<StreamId, StoredSnapshot>,
    metadata: HashMap<StreamId, serde_json::Value>,
    projections: HashMap<String, ProjectionState>,
    /// The index of instances, ordered by stream as `instances` pages it.
    instances: BTreeMap<StreamId, InstanceEntry>,
}

#[derive(Debug, Default)]
struct Stream {
    version: u64,
    positions: Vec<u64>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn with_log<T>(&self, f: impl FnOnce(&mut Log) -> T) -> T {
        // Every method validates before it changes anything, so a panic while holding
        // the lock cannot leave the log half-updated.
        let mut log = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut log)
    }

    fn ready<T: Send + 'static>(result: Result<T, Error>) -> StoreFuture<'static, T> {
        Box::pin(std::future::ready(result))
    }
}

impl Log {
    fn version(&self, stream: &StreamId) -> u64 {
        self.streams.get(stream).map_or(0, |s| s.version)
    }

    /// If `events` were appended before, in this stream and order, that append's result
    /// (see [`repeat`](super::repeat)).
    fn earlier_append(
        &self,
        stream: &StreamId,
        events: &[Envelope],
    ) -> Result<Option<Appended>, Error> {
        let held = events.iter().map(|event| {
            let held = self.ids.get(&event.id).map(|(s, version, position)| Held {
                in_stream: s == stream,
                version: *version,
                position: *position,
                same_content: self
                    .events
                    .get(position)
                    .map(|stored| same_content(&stored.envelope, event)),
            });
            Ok((event.id, held))
        });
        earlier_append(stream, held)
    }

    fn record_intents(&mut self, intents: &[Intent]) {
        for intent in intents {
            if self.pending_ids.contains_key(&intent.id) {
                continue;
            }
            self.outbox_sequence += 1;
            self.pending_ids.insert(intent.id, self.outbox_sequence);
            self.pending.insert(self.outbox_sequence, intent.clone());
        }
    }

    fn append(
        &mut self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: &[Envelope],
        intents: &[Intent],
    ) -> Result<Appended, Error> {
        check_append(events, intents)?;
        if let Some(earlier) = self.earlier_append(stream, events)? {
            return Ok(earlier);
        }
        let version = self.version(stream);
        check_expected(stream, expected, version)?;
        if let Some(duplicate) = events.iter().find(|e| self.ids.contains_key(&e.id)) {
            return Err(Error::DuplicateEventId {
                id: duplicate.id.to_string(),
            });
        }
        // A single event cannot repeat itself: skip the set (the common case).
        if events.len() > 1 {
            let mut batch_ids = std::collections::HashSet::new();
            if let Some(duplicate) = events.iter().find(|e| !batch_ids.insert(e.id)) {
                return Err(Error::DuplicateEventId {
                    id: duplicate.id.to_string(),
                });
            }
        }
        let first_position = self.head + 1;
        // The stream id is cloned only for a stream not seen before.
        let entry = match self.streams.get_mut(stream) {
            Some(entry) => entry,
            None => self.streams.entry(stream.clone()).or_default(),
        };
        for (offset, envelope) in events.iter().enumerate() {
            let position = first_position + offset as u64;
            let event_version = version + 1 + offset as u64;
            entry.positions.push(position);
            self.ids
                .insert(envelope.id, (stream.clone(), event_version, position));
            self.events.insert(
                position,
                RecordedEvent {
                    stream: stream.clone(),
                    version: event_version,
                    position,
                    envelope: envelope.clone(),
                },
            );
        }
        entry.version += events.len() as u64;
        self.head += events.len() as u64;
        self.record_intents(intents);
        if let Some((offset, mark)) = last_mark(events) {
            let entry = InstanceEntry {
                stream: stream.clone(),
                kind: mark.kind,
                status: mark.status,
                finished: mark.finished,
                version: version + 1 + offset as u64,
                updated: events[offset].time,
                position: first_position + offset as u64,
            };
            self.instances.insert(stream.clone(), entry);
        }
        Ok(Appended {
            first_version: version + 1,
            last_version: version + events.len() as u64,
            first_position,
            deduplicated: false,
        })
    }

    fn trim(&mut self, stream: &StreamId, trim: Trim) -> u64 {
        let Some(entry) = self.streams.get_mut(stream) else {
            return 0;
        };
        let remove = match trim {
            Trim::KeepLast(n) => entry
                .positions
                .len()
                .saturating_sub(usize::try_from(n).unwrap_or(usize::MAX)),
            Trim::BeforeVersion(version) => {
                let first_kept = entry.version + 1 - entry.positions.len() as u64;
                usize::try_from(version.saturating_sub(first_kept))
                    .unwrap_or(usize::MAX)
                    .min(entry.positions.len())
            }
            // Positions are kept in ascending order (versions and positions grow
            // together within a stream).
            Trim::BeforePosition(position) => entry.positions.partition_point(|p| *p < position),
        };
        for position in entry.positions.drain(..remove) {
            self.events.remove(&position);
        }
        remove as u64
    }

    fn instances(&self, query: &InstanceQuery) -> Vec<InstanceEntry> {
        let rows = match &query.after {
            Some(after) => self.instances.range::<StreamId, _>((
                std::ops::Bound::Excluded(after),
                std::ops::Bound::Unbounded,
            )),
            None => self.instances.range::<StreamId, _>(..),
        };
        rows.map(|(_, entry)| entry)
            .filter(|entry| query.matches(entry))
            .take(query.capped_limit())
            .cloned()
            .collect()
    }

    fn read_unfinished(
        &self,
        kind: Option<&str>,
        after: Option<(&StreamId, u64)>,
        limit: usize,
    ) -> Vec<RecordedEvent> {
        use std::ops::Bound;
        let start = after.map_or(Bound::Unbounded, |(stream, _)| Bound::Included(stream));
        let rows = self
            .instances
            .range::<StreamId, _>((start, Bound::Unbounded));
        let mut page = Vec::new();
        let limit = limit.min(READ_LIMIT_MAX);
        for (stream, row) in rows {
            if page.len() == limit {
                break;
            }
            if row.finished || kind.is_some_and(|kind| row.kind != kind) {
                continue;
            }
            let past = after
                .filter(|(last, _)| *last == stream)
                .map_or(0, |(_, v)| v);
            let Some(entry) = self.streams.get(stream) else {
                continue;
            };
            let events = entry.positions.iter().filter_map(|p| self.events.get(p));
            let events = events.filter(|event| event.version > past);
            page.extend(events.take(limit - page.len()).cloned());
        }
        page
    }

    fn purge_finished(&mut self, kind: Option<&str>, before: Timestamp, limit: usize) -> u64 {
        let chosen: Vec<StreamId> = self
            .instances
            .values()
            .filter(|row| row.finished && row.updated < before)
            .filter(|row| kind.is_none_or(|kind| row.kind == kind))
            .take(limit.min(READ_LIMIT_MAX))
            .map(|row| row.stream.clone())
            .collect();
        for stream in &chosen {
            // Like a trim of every event: the version and the ids stay, under no stream
            // (see `PURGED_STREAM`).
            if let Some(entry) = self.streams.get_mut(stream) {
                for position in entry.positions.drain(..) {
                    if let Some(event) = self.events.remove(&position) {
                        let kept = (StreamId::from(PURGED_STREAM), event.version, position);
                        self.ids.insert(event.envelope.id, kept);
                    }
                }
            }
            self.snapshots.remove(stream);
            self.metadata.remove(stream);
            self.instances.remove(stream);
        }
        chosen.len() as u64
    }
}

impl EventStore for MemoryStore {
    fn append_with_intents<'a>(
        &'a self,
        stream: &'a StreamId,
        expected: ExpectedVersion,
        events: &'a [Envelope],
        intents: &'a [Intent],
    ) -> StoreFuture<'a, Appended> {
        let result = self.with_log(|log| {
            let appended = log.append(stream, expected, events, intents)?;
            // Published under the lock, and only ever forward: two appends finishing in
            // either order, or an append future that is never awaited, can neither move
            // the live head back nor leave it behind the committed head.
            let head = log.head;
            self.head.send_if_modified(|current| {
                let forward = head > *current;
                if forward {
                    *current = head;
                }
                forward
            });
            Ok(appended)
        });
        Self::ready(result)
    }

    fn read_stream<'a>(
        &'a self,
        stream: &'a StreamId,
        from: u64,
        limit: usize,
    ) -> StoreFuture<'a, Vec<RecordedEvent>> {
        Self::ready(Ok(self.with_log(|log| {
            let Some(entry) = log.streams.get(stream) else {
                return Vec::new();
            };
            entry
                .positions
                .iter()
                .filter_map(|position| log.events.get(position))
                .filter(|event| event.version >= from)
                .take(limit.min(READ_LIMIT_MAX))
                .cloned()
                .collect()
        })))
    }

    fn read_all(&self, from: u64, limit: usize) -> StoreFuture<'_, Vec<RecordedEvent>> {
        Self::ready(Ok(self.with_log(|log| {
            log.events
                .range(from..)
                .take(limit.min(READ_LIMIT_MAX))
                .map(|(_, e)| e.clone())
                .collect()
        })))
    }

    fn stream_version<'a>(&'a self, stream: &'a StreamId) -> StoreFuture<'a, u64> {
        Self::ready(Ok(self.with_log(|log| log.version(stream))))
    }

    fn head(&self) -> StoreFuture<'_, u64> {
        Self::ready(Ok(self.with_log(|log| log.head)))
    }

    fn watch_head(&self) -> watch::Receiver<u64> {
        self.head.subscribe()
    }

    fn pending_intents(&self, limit: usize) -> StoreFuture<'_, Vec<Intent>> {
        Self::ready(Ok(self.with_log(|log| {
            log.pending
                .values()
                .take(limit.min(READ_LIMIT_MAX))
                .cloned()
                .collect()
        })))
    }

    fn complete_intents<'a>(&'a self, ids: &'a [IntentId]) -> StoreFuture<'a, ()> {
        self.with_log(|log| {
            for id in ids {
                if let Some(sequence) = log.pending_ids.remove(id) {
                    log.pending.remove(&sequence);
                }
            }
        });
        Self::ready(Ok(()))
    }

    fn save_snapshot<'a>(&'a self, snapshot: &'a StoredSnapshot) -> StoreFuture<'a, ()> {
        self.with_log(|log| {
            log.snapshots
                .insert(snapshot.stream.clone(), snapshot.clone())
        });
        Self::ready(Ok(()))
    }

    fn load_snapshot<'a>(
        &'a self,
        stream: &'a StreamId,
    ) -> StoreFuture<'a, Option<StoredSnapshot>> {
        Self::ready(Ok(self.with_log(|log| log.snapshots.get(stream).cloned())))
    }

    fn set_metadata<'a>(
        &'a self,
        stream: &'a StreamId,
        metadata: &'a serde_json::Value,
    ) -> StoreFuture<'a, ()> {
        self.with_log(|log| log.metadata.insert(stream.clone(), metadata.clone()));
        Self::ready(Ok(()))
    }

    fn metadata<'a>(&'a self, stream: &'a StreamId) -> StoreFuture<'a, Option<serde_json::Value>> {
        Self::ready(Ok(self.with_log(|log| log.metadata.get(stream).cloned())))
    }

    fn trim<'a>(&'a self, stream: &'a StreamId, trim: Trim) -> StoreFuture<'a, u64> {
        Self::ready(Ok(self.with_log(|log| log.trim(stream, trim))))
    }

    fn instances<'a>(&'a self, query: &'a InstanceQuery) -> StoreFuture<'a, Vec<InstanceEntry>> {
        Self::ready(Ok(self.with_log(|log| log.instances(query))))
    }

    fn read_unfinished<'a>(
        &'a self,
        kind: Option<&'a str>,
        after: Option<(&'a StreamId, u64)>,
        limit: usize,
    ) -> StoreFuture<'a, Vec<RecordedEvent>> {
        Self::ready(Ok(
            self.with_log(|log| log.read_unfinished(kind, after, limit))
        ))
    }

    fn unindexed_head(&self) -> StoreFuture<'_, u64> {
        // A memory store starts empty with this keel: it has kept the index always.
        Self::ready(Ok(0))
    }

    fn purge_finished<'a>(
        &'a self,
        kind: Option<&'a str>,
        updated_before: Timestamp,
        limit: usize,
    ) -> StoreFuture<'a, u64> {
        Self::ready(Ok(
            self.with_log(|log| log.purge_finished(kind, updated_before, limit))
        ))
    }

    fn load_projection<'a>(&'a self, name: &'a str) -> StoreFuture<'a, Option<ProjectionState>> {
        Self::ready(Ok(self.with_log(|log| log.projections.get(name).cloned())))
    }

    fn save_projection<'a>(
        &'a self,
        name: &'a str,
        expected: u64,
        state: &'a ProjectionState,
    ) -> StoreFuture<'a, ()> {
        Self::ready(self.with_log(|log| {
            let actual = log.projections.get(name).map_or(0, |p| p.checkpoint);
            if actual != expected {
                return Err(Error::ProjectionConflict {
                    name: name.to_owned(),
                    expected,
                    actual,
                });
            }
            log.projections.insert(name.to_owned(), state.clone());
            Ok(())
        }))
    }

    fn lock_writer<'a>(&'a self, holder: &'a LockHolder) -> StoreFuture<'a, WriterLock> {
        // Nothing panics while the flag's mutex is held, so a poisoned one is whole.
        let mut current = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(current) = current.as_ref() {
            return Self::ready(Err(Error::StoreLocked {
                holder: Some(current.clone()),
                location: LOCATION.to_owned(),
            }));
        }
        *current = Some(holder.clone());
        let held = HeldFlag(Arc::clone(&self.writer));
        Self::ready(Ok(WriterLock::new(holder.clone(), LOCATION, held)))
    }
}

#[cfg(test)]
mod tests {
    use keel_core::{Cause, EventType, IntentKind, TimerId, Timestamp};

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

    fn intent(position: u32) -> Intent {
        Intent {
            id: Cause::root(9).intent_id(position),
            kind: IntentKind::CancelTimer {
                timer: TimerId::from_static("t"),
            },
        }
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
        assert_eq!(*store.watch_head().borrow(), 3);
    }

    #[test]
    fn a_version_conflict_names_the_actual_version_and_stores_nothing() {
        let store = MemoryStore::new();
        let a = StreamId::from("a");
        block_on(store.append(&a, ExpectedVersion::NoStream, &[event(1)])).unwrap();
        let error = block_on(store.append_with_intents(
            &a,
            ExpectedVersion::Exact(0),
            &[event(2)],
            &[intent(0)],
        ))
        .unwrap_err();
        assert!(
            matches!(error, Error::VersionConflict { actual: 1, .. }),
            "{error:?}"
        );
        assert_eq!(block_on(store.stream_version(&a)).unwrap(), 1);
        assert!(
            block_on(store.pending_intents(10)).unwrap().is_empty(),
            "the outbox commits with the events"
        );
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
    fn repeating_an_event_id_with_other_content_is_a_conflict() {
        let store = MemoryStore::new();
        let a = StreamId::from("a");
        block_on(store.append(&a, ExpectedVersion::NoStream, &[event(1), event(2)])).unwrap();
        let mut changed = event(2);
        changed.source = "elsewhere".to_owned();
        let error = block_on(store.append(&a, ExpectedVersion::NoStream, &[event(1), changed]))
            .unwrap_err();
        assert_eq!(
            error,
            Error::EventConflict {
                id: EventId::from_u128(2).to_string(),
                stream: a.clone()
            }
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

    #[test]
    fn a_second_writer_lock_is_refused_until_the_first_is_dropped() {
        let store = MemoryStore::new();
        let first = LockHolder {
            pid: 1,
            host: "a".to_owned(),
            since: Timestamp::UNIX_EPOCH,
        };
        let second = LockHolder::this_process(Timestamp::UNIX_EPOCH);
        let guard = block_on(store.lock_writer(&first)).unwrap();
        assert_eq!(guard.holder(), &first);
        let error = block_on(store.clone().lock_writer(&second)).unwrap_err();
        assert_eq!(
            error,
            Error::StoreLocked {
                holder: Some(first.clone()),
                location: LOCATION.to_owned()
            }
        );
        let a = StreamId::from("a");
        block_on(store.append(&a, ExpectedVersion::Any, &[event(1)])).unwrap();
        drop(guard);
        let again = block_on(store.lock_writer(&second)).unwrap();
        assert_eq!(again.holder(), &second);
    }

    #[test]
    fn pending_intents_stay_until_completed() {
        let store = MemoryStore::new();
        let a = StreamId::from("a");
        block_on(store.append_with_intents(
            &a,
            ExpectedVersion::Any,
            &[event(1)],
            &[intent(0), intent(1)],
        ))
        .unwrap();
        let pending = block_on(store.pending_intents(10)).unwrap();
        assert_eq!(
            pending.iter().map(|i| i.id.position).collect::<Vec<_>>(),
            [0, 1]
        );
        block_on(store.complete_intents(&[pending[0].id])).unwrap();
        assert_eq!(block_on(store.pending_intents(10)).unwrap().len(), 1);
    }

    #[test]
    fn trimming_keeps_the_version_and_skips_positions() {
        let store = MemoryStore::new();
        let a = StreamId::from("a");
        block_on(store.append(&a, ExpectedVersion::Any, &[event(1), event(2), event(3)])).unwrap();
        assert_eq!(block_on(store.trim(&a, Trim::KeepLast(1))).unwrap(), 2);
        assert_eq!(block_on(store.stream_version(&a)).unwrap(), 3);
        let left = block_on(store.read_stream(&a, 1, 10)).unwrap();
        assert_eq!(left.iter().map(|e| e.version).collect::<Vec<_>>(), [3]);
        assert_eq!(block_on(store.trim(&a, Trim::BeforeVersion(3))).unwrap(), 0);
    }
}
