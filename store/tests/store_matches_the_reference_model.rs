//! Every event store backend answers random sequences of operations exactly as a small
//! reference model of the `EventStore` contract does: appends (right and wrong expected
//! versions, repeats as they were or with one event changed, reused ids, intents,
//! envelopes of every shape), racing appends, reads, versions, the head and the live
//! head, the outbox, snapshots, metadata, trimming (to the last N, before a version,
//! before a position), projection checkpoints, subscriptions, and the index of
//! instances (marks on random events; listing, reading the unfinished, purging).
//!
//! A subscription is opened at a random step, from a random position, and follows the
//! store in a task of its own while the later operations run, so it catches up and then
//! goes live at whatever point the sequence puts it. At random steps, and at the end
//! (after one last append it must reach), every open subscription must have delivered
//! the model's events from its position on, in position order, each once, exactly as
//! stored. Only a trim leaves a choice: an event trimmed after the subscription opened
//! may or may not have been delivered before it went.
//!
//! The model is plain maps and vectors written from the contract in `persist/mod.rs`,
//! not `MemoryStore`, which is one of the systems under test. Where the contract leaves
//! a choice open (a batch that both reuses an event id and expects the wrong version may
//! fail for either reason), the model accepts both answers. Racing appends must be
//! explained by some order of the same appends made one after the other.

use crate::common::stores;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use keel_store::subscription::Subscription;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use keel_core::{
    CausationId, CorrelationId, Envelope, EventId, EventType, ExpectedVersion, Intent, IntentId,
    IntentKind, Payload, Priority, StreamId, Timestamp,
};
use keel_store::Error;
use keel_store::{
    Appended, EventStore, InstanceEntry, InstanceMark, InstanceQuery, ProjectionState,
    RecordedEvent, StoredSnapshot, Trim,
};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{Value, json};
use stores::{Backend, TestStore};

/// Streams an append may go to; reads also look at one more, never written.
const STREAMS: usize = 3;
/// Projection names the operations use.
const PROJECTIONS: usize = 2;
/// The longest operation sequence.
const OPS_MAX: usize = 40;
/// How long the live head may take to reach the committed head (PostgreSQL's
/// notification, or its fallback poll every second).
const WATCH_WAIT: Duration = Duration::from_secs(5);
/// The most subscriptions one case keeps open; later `Subscribe` steps open none.
const SUBSCRIPTIONS_MAX: usize = 3;
/// The kinds and statuses marks name; `completed` is the finished one.
const KINDS: [&str; 2] = ["saga", "equipment"];
const STATUSES: [&str; 3] = ["running", "compensating", "completed"];
/// Events a subscription's task may hand over before the test takes them; when full,
/// the task waits (and the subscription with it), which the test tolerates.
const SUBSCRIPTION_BUFFER: usize = 256;

// ---- Operations -----------------------------------------------------------------------

/// One operation, with indices resolved against the case's history when it runs.
#[derive(Debug, Clone)]
enum Op {
    Append {
        stream: usize,
        expected: Expect,
        batch: BatchSpec,
        intents: IntentSpec,
    },
    /// Two to four appends at once (on PostgreSQL through two connections, as from two
    /// processes): some order of them, one after the other, must explain every answer.
    Race(Vec<RaceAppend>),
    Complete {
        picks: Vec<Index>,
        unknown: bool,
    },
    Pending {
        limit: usize,
    },
    ReadStream {
        stream: usize,
        from: u64,
        limit: usize,
    },
    ReadAll {
        from: u64,
        limit: usize,
    },
    StreamVersion {
        stream: usize,
    },
    Head,
    /// The live head (`watch_head`) catches up with the head.
    WatchHead,
    SaveSnapshot {
        stream: usize,
        state: u8,
    },
    LoadSnapshot {
        stream: usize,
    },
    SetMetadata {
        stream: usize,
        doc: u8,
    },
    Metadata {
        stream: usize,
    },
    Trim {
        stream: usize,
        trim: Trim,
    },
    SaveProjection {
        name: usize,
        stale_by: u64,
        model: u8,
    },
    LoadProjection {
        name: usize,
    },
    /// Opens a subscription from this position (counted from the case's first), which
    /// follows the store in a task of its own for the rest of the case.
    Subscribe {
        from: u64,
    },
    /// Every open subscription delivers the model's events so far.
    CheckSubscriptions,
    /// A page of the index; `after` names one of the case's streams.
    Instances {
        kind: Option<usize>,
        status: Option<usize>,
        finished: Option<bool>,
        after: Option<usize>,
        limit: usize,
    },
    ReadUnfinished {
        kind: Option<usize>,
        from: u64,
        limit: usize,
    },
    /// Purges finished instances updated before the time of the case's `before`th
    /// fresh event.
    Purge {
        kind: Option<usize>,
        before: u64,
        limit: usize,
    },
}

/// One of the appends of a race; events are never empty, so that the positions of the
/// answers tell which order the store chose.
#[derive(Debug, Clone)]
struct RaceAppend {
    stream: usize,
    expected: Expect,
    batch: BatchSpec,
    intents: IntentSpec,
}

/// The expected version an append states.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// The stream's actual version.
    Right,
    /// The actual version plus this much (never right).
    TooHigh(u64),
    /// Exactly this version, right or not.
    Exact(u64),
    Any,
    NoStream,
}

/// What events an append carries.
#[derive(Debug, Clone)]
enum BatchSpec {
    /// New events, with ids never used (rarely none at all).
    Fresh(usize),
    /// An earlier successful batch again (or its tail), to its own stream or another.
    Repeat {
        which: Index,
        tail: bool,
        other_stream: bool,
    },
    /// An earlier batch's events in reverse order.
    Reversed { which: Index },
    /// An earlier batch again, to its own stream, with one event's content changed
    /// (same id, same place, other payload or type).
    Altered { which: Index, event: Index },
    /// New events with one id of an earlier batch among them.
    WithOldId {
        which: Index,
        event: Index,
        fresh: usize,
        at: Index,
    },
    /// New events, one of them twice.
    SelfDuplicate(usize),
}

/// What intents an append records.
#[derive(Debug, Clone)]
enum IntentSpec {
    None,
    Fresh(usize),
    /// A fresh intent and one already pending (which must stay as it is).
    WithPending(Index),
}

fn expect() -> impl Strategy<Value = Expect> {
    prop_oneof![
        4 => Just(Expect::Right),
        1 => (1..3_u64).prop_map(Expect::TooHigh),
        1 => (0..6_u64).prop_map(Expect::Exact),
        2 => Just(Expect::Any),
        1 => Just(Expect::NoStream),
    ]
}

fn batch() -> impl Strategy<Value = BatchSpec> {
    prop_oneof![
        8 => (1..=4_usize).prop_map(BatchSpec::Fresh),
        1 => Just(BatchSpec::Fresh(0)),
        3 => (any::<Index>(), any::<bool>(), prop::bool::weighted(0.3)).prop_map(
            |(which, tail, other_stream)| BatchSpec::Repeat { which, tail, other_stream }
        ),
        1 => any::<Index>().prop_map(|which| BatchSpec::Reversed { which }),
        1 => (any::<Index>(), any::<Index>())
            .prop_map(|(which, event)| BatchSpec::Altered { which, event }),
        2 => (any::<Index>(), any::<Index>(), 0..3_usize, any::<Index>()).prop_map(
            |(which, event, fresh, at)| BatchSpec::WithOldId { which, event, fresh, at }
        ),
        1 => (1..3_usize).prop_map(BatchSpec::SelfDuplicate),
    ]
}

fn intents() -> impl Strategy<Value = IntentSpec> {
    prop_oneof![
        3 => Just(IntentSpec::None),
        3 => (1..=2_usize).prop_map(IntentSpec::Fresh),
        1 => any::<Index>().prop_map(IntentSpec::WithPending),
    ]
}

fn trim() -> impl Strategy<Value = Trim> {
    prop_oneof![
        (0..4_u64).prop_map(Trim::KeepLast),
        (0..8_u64).prop_map(Trim::BeforeVersion),
        // Relative to the case's first position (see `Case::run`); past the head too.
        (0..30_u64).prop_map(Trim::BeforePosition),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let stream = 0..STREAMS;
    let any_stream = 0..=STREAMS;
    prop_oneof![
        12 => (stream.clone(), expect(), batch(), intents()).prop_map(
            |(stream, expected, batch, intents)| Op::Append { stream, expected, batch, intents }
        ),
        3 => prop::collection::vec(race_append(), 2..=4).prop_map(Op::Race),
        2 => (prop::collection::vec(any::<Index>(), 0..3), prop::bool::weighted(0.2))
            .prop_map(|(picks, unknown)| Op::Complete { picks, unknown }),
        2 => (1..8_usize).prop_map(|limit| Op::Pending { limit }),
        3 => (any_stream.clone(), 0..8_u64, 1..6_usize)
            .prop_map(|(stream, from, limit)| Op::ReadStream { stream, from, limit }),
        3 => (0..30_u64, 1..12_usize).prop_map(|(from, limit)| Op::ReadAll { from, limit }),
        1 => any_stream.clone().prop_map(|stream| Op::StreamVersion { stream }),
        1 => Just(Op::Head),
        1 => Just(Op::WatchHead),
        1 => (stream.clone(), any::<u8>()).prop_map(|(stream, state)| Op::SaveSnapshot { stream, state }),
        1 => any_stream.clone().prop_map(|stream| Op::LoadSnapshot { stream }),
        1 => (any_stream.clone(), any::<u8>()).prop_map(|(stream, doc)| Op::SetMetadata { stream, doc }),
        1 => any_stream.clone().prop_map(|stream| Op::Metadata { stream }),
        2 => (any_stream, trim()).prop_map(|(stream, trim)| Op::Trim { stream, trim }),
        2 => (0..PROJECTIONS, prop_oneof![3 => Just(0_u64), 1 => 1..3_u64], any::<u8>())
            .prop_map(|(name, stale_by, model)| Op::SaveProjection { name, stale_by, model }),
        1 => (0..PROJECTIONS).prop_map(|name| Op::LoadProjection { name }),
        2 => (0..30_u64).prop_map(|from| Op::Subscribe { from }),
        2 => Just(Op::CheckSubscriptions),
        2 => instances(),
        2 => (prop::option::of(0..KINDS.len()), 0..30_u64, 1..12_usize)
            .prop_map(|(kind, from, limit)| Op::ReadUnfinished { kind, from, limit }),
        1 => (prop::option::of(0..KINDS.len()), 0..40_u64, 0..4_usize)
            .prop_map(|(kind, before, limit)| Op::Purge { kind, before, limit }),
    ]
}

fn instances() -> impl Strategy<Value = Op> {
    (
        prop::option::of(0..KINDS.len()),
        prop::option::weighted(0.3, 0..STATUSES.len()),
        prop::option::of(any::<bool>()),
        prop::option::weighted(0.3, 0..=STREAMS),
        0..6_usize,
    )
        .prop_map(|(kind, status, finished, after, limit)| Op::Instances {
            kind,
            status,
            finished,
            after,
            limit,
        })
}

fn race_append() -> impl Strategy<Value = RaceAppend> {
    // Races mostly on one stream with the same expected version: one must win.
    (
        prop_oneof![3 => Just(0), 1 => 0..STREAMS],
        expect(),
        batch(),
        intents(),
    )
        .prop_map(|(stream, expected, batch, intents)| RaceAppend {
            stream,
            expected,
            batch,
            intents,
        })
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(op(), 1..=OPS_MAX)
}

// ---- The reference model --------------------------------------------------------------

/// An error the contract calls for, by variant.
#[derive(Debug, Clone, PartialEq)]
enum Want {
    VersionConflict {
        actual: u64,
    },
    DuplicateEventId,
    /// The same id at the same place with other content; names the first such id.
    EventConflict {
        id: EventId,
        stream: StreamId,
    },
    /// Both apply; the contract does not say which is reported.
    VersionConflictOrDuplicate {
        actual: u64,
    },
    ProjectionConflict {
        expected: u64,
        actual: u64,
    },
}

impl Want {
    fn matches(&self, error: &Error) -> bool {
        match (self, error) {
            (Self::VersionConflict { actual }, Error::VersionConflict { actual: got, .. }) => {
                actual == got
            }
            (Self::DuplicateEventId, Error::DuplicateEventId { .. }) => true,
            (Self::EventConflict { id, stream }, Error::EventConflict { id: got, stream: s }) => {
                id.to_string() == *got && stream == s
            }
            (Self::VersionConflictOrDuplicate { actual }, error) => {
                Self::VersionConflict { actual: *actual }.matches(error)
                    || Self::DuplicateEventId.matches(error)
            }
            (
                Self::ProjectionConflict { expected, actual },
                Error::ProjectionConflict {
                    expected: got_expected,
                    actual: got_actual,
                    ..
                },
            ) => expected == got_expected && actual == got_actual,
            _ => false,
        }
    }
}

/// A successful append, kept so later operations can repeat or reuse it.
#[derive(Debug, Clone)]
struct Batch {
    stream: usize,
    events: Vec<Envelope>,
    intents: Vec<Intent>,
}

#[derive(Debug, Clone, Default)]
struct StreamState {
    version: u64,
    /// (version, position) of the events not trimmed, oldest first.
    kept: Vec<(u64, u64)>,
}

/// The stream number a purged event's id is kept under: none.
const PURGED: usize = usize::MAX;

/// The contract, as plain data.
#[derive(Debug, Clone, Default)]
struct Model {
    /// The store's head when the case began (a shared PostgreSQL schema is not empty).
    base: u64,
    head: u64,
    events: BTreeMap<u64, RecordedEvent>,
    /// Every event ever appended, trimmed or not: what a subscription may have
    /// delivered before a trim.
    ever: BTreeMap<u64, RecordedEvent>,
    streams: HashMap<usize, StreamState>,
    /// Event id -> (stream, version, position); kept after trimming.
    ids: HashMap<EventId, (usize, u64, u64)>,
    pending: Vec<Intent>,
    snapshots: HashMap<usize, StoredSnapshot>,
    metadata: HashMap<usize, Value>,
    projections: HashMap<usize, ProjectionState>,
    batches: Vec<Batch>,
    intents_made: Vec<Intent>,
    /// The index: each marked stream's number and row, from its last marked event.
    instances: BTreeMap<StreamId, (usize, InstanceEntry)>,
}

impl Model {
    fn version(&self, stream: usize) -> u64 {
        self.streams.get(&stream).map_or(0, |s| s.version)
    }

    /// What the store must answer to this append; applies it when it succeeds.
    fn append(
        &mut self,
        stream: usize,
        stream_id: &StreamId,
        expected: ExpectedVersion,
        events: &[Envelope],
        intents: &[Intent],
    ) -> Result<Appended, Want> {
        // A repeat of stored events, in the same stream and order, answers with the
        // earlier result whatever version it expects, if each event still stored has
        // the content it was stored with (a trimmed one is judged by place alone).
        if let Some(first) = events.first()
            && let Some(&(first_stream, first_version, first_position)) = self.ids.get(&first.id)
        {
            let repeat = first_stream == stream
                && events.iter().enumerate().all(|(offset, event)| {
                    self.ids.get(&event.id).is_some_and(|&(s, version, _)| {
                        s == stream && version == first_version + offset as u64
                    })
                });
            if repeat {
                let changed = events.iter().find(|event| {
                    self.ids.get(&event.id).is_some_and(|(_, _, position)| {
                        self.events
                            .get(position)
                            .is_some_and(|stored| stored.envelope != **event)
                    })
                });
                if let Some(changed) = changed {
                    return Err(Want::EventConflict {
                        id: changed.id,
                        stream: stream_id.clone(),
                    });
                }
                return Ok(Appended {
                    first_version,
                    last_version: first_version + events.len() as u64 - 1,
                    first_position,
                    deduplicated: true,
                });
            }
        }
        let version = self.version(stream);
        let version_ok = match expected {
            ExpectedVersion::Any => true,
            ExpectedVersion::NoStream => version == 0,
            ExpectedVersion::Exact(v) => v == version,
        };
        let mut seen = HashSet::new();
        let duplicate = events
            .iter()
            .any(|e| self.ids.contains_key(&e.id) || !seen.insert(e.id));
        match (version_ok, duplicate) {
            (true, false) => {}
            (false, false) => return Err(Want::VersionConflict { actual: version }),
            (true, true) => return Err(Want::DuplicateEventId),
            (false, true) => return Err(Want::VersionConflictOrDuplicate { actual: version }),
        }
        let first_position = self.head + 1;
        let state = self.streams.entry(stream).or_default();
        for (offset, envelope) in events.iter().enumerate() {
            let position = first_position + offset as u64;
            let event_version = version + 1 + offset as u64;
            state.kept.push((event_version, position));
            self.ids
                .insert(envelope.id, (stream, event_version, position));
            let recorded = RecordedEvent {
                stream: stream_id.clone(),
                version: event_version,
                position,
                envelope: envelope.clone(),
            };
            self.ever.insert(position, recorded.clone());
            self.events.insert(position, recorded);
        }
        state.version += events.len() as u64;
        self.head += events.len() as u64;
        let last_marked = events
            .iter()
            .enumerate()
            .rev()
            .find_map(|(offset, event)| InstanceMark::of(event).map(|mark| (offset, mark)));
        if let Some((offset, mark)) = last_marked {
            let row = InstanceEntry {
                stream: stream_id.clone(),
                kind: mark.kind,
                status: mark.status,
                finished: mark.finished,
                version: version + 1 + offset as u64,
                updated: events[offset].time,
                position: first_position + offset as u64,
            };
            self.instances.insert(stream_id.clone(), (stream, row));
        }
        for intent in intents {
            if !self.pending.iter().any(|p| p.id == intent.id) {
                self.pending.push(intent.clone());
            }
        }
        if !events.is_empty() {
            self.batches.push(Batch {
                stream,
                events: events.to_vec(),
                intents: intents.to_vec(),
            });
        }
        Ok(Appended {
            first_version: version + 1,
            last_version: version + events.len() as u64,
            first_position,
            deduplicated: false,
        })
    }

    fn read_stream(&self, stream: usize, from: u64, limit: usize) -> Vec<RecordedEvent> {
        let Some(state) = self.streams.get(&stream) else {
            return Vec::new();
        };
        state
            .kept
            .iter()
            .filter(|(version, _)| *version >= from)
            .take(limit)
            .filter_map(|(_, position)| self.events.get(position).cloned())
            .collect()
    }

    fn read_all(&self, from: u64, limit: usize) -> Vec<RecordedEvent> {
        self.events
            .range(from..)
            .take(limit)
            .map(|(_, e)| e.clone())
            .collect()
    }

    fn trim(&mut self, stream: usize, trim: Trim) -> u64 {
        let Some(state) = self.streams.get_mut(&stream) else {
            return 0;
        };
        let remove = match trim {
            Trim::KeepLast(n) => state
                .kept
                .len()
                .saturating_sub(usize::try_from(n).unwrap_or(usize::MAX)),
            Trim::BeforeVersion(version) => state.kept.iter().filter(|(v, _)| *v < version).count(),
            Trim::BeforePosition(position) => {
                state.kept.iter().filter(|(_, p)| *p < position).count()
            }
        };
        for (_, position) in state.kept.drain(..remove) {
            self.events.remove(&position);
        }
        remove as u64
    }

    fn instances(&self, query: &InstanceQuery) -> Vec<InstanceEntry> {
        self.instances
            .values()
            .map(|(_, row)| row)
            .filter(|row| query.kind.as_ref().is_none_or(|kind| *kind == row.kind))
            .filter(|row| query.status.as_ref().is_none_or(|s| *s == row.status))
            .filter(|row| query.finished.is_none_or(|f| f == row.finished))
            .filter(|row| query.after.as_ref().is_none_or(|after| row.stream > *after))
            .take(query.limit)
            .cloned()
            .collect()
    }

    /// The events of unfinished streams (of `kind`) ordered by stream then version,
    /// after the cursor `after`, at most `limit`.
    fn read_unfinished(
        &self,
        kind: Option<&str>,
        after: (&StreamId, u64),
        limit: usize,
    ) -> Vec<RecordedEvent> {
        let unfinished = |stream: &StreamId| {
            self.instances
                .get(stream)
                .is_some_and(|(_, row)| !row.finished && kind.is_none_or(|kind| kind == row.kind))
        };
        let mut events: Vec<&RecordedEvent> = self
            .events
            .values()
            .filter(|event| unfinished(&event.stream))
            .filter(|event| (&event.stream, event.version) > (after.0, after.1))
            .collect();
        events.sort_by(|a, b| (&a.stream, a.version).cmp(&(&b.stream, b.version)));
        events.into_iter().take(limit).cloned().collect()
    }

    /// This case's stored events by stream then version: the cursors a page may use.
    fn cursors(&self) -> Vec<(StreamId, u64)> {
        let mut cursors: Vec<(StreamId, u64)> = self
            .events
            .values()
            .map(|event| (event.stream.clone(), event.version))
            .collect();
        cursors.sort();
        cursors
    }

    /// Removes the first `limit` finished instances (by stream) updated before
    /// `before`: events (their ids kept under no stream, [`PURGED`]), snapshot,
    /// metadata, index row.
    fn purge(&mut self, kind: Option<&str>, before: Timestamp, limit: usize) -> u64 {
        let chosen: Vec<(StreamId, usize)> = self
            .instances
            .iter()
            .filter(|(_, (_, row))| row.finished && row.updated < before)
            .filter(|(_, (_, row))| kind.is_none_or(|kind| kind == row.kind))
            .take(limit)
            .map(|(stream_id, (stream, _))| (stream_id.clone(), *stream))
            .collect();
        for (stream_id, stream) in &chosen {
            let state = self.streams.entry(*stream).or_default();
            for (_, position) in state.kept.drain(..) {
                // Its id stays taken, under no stream: a repeat of it is refused.
                if let Some(event) = self.events.remove(&position) {
                    let kept = (PURGED, event.version, position);
                    self.ids.insert(event.envelope.id, kept);
                }
            }
            self.snapshots.remove(stream);
            self.metadata.remove(stream);
            self.instances.remove(stream_id);
        }
        chosen.len() as u64
    }

    fn complete(&mut self, ids: &[IntentId]) {
        self.pending.retain(|intent| !ids.contains(&intent.id));
    }

    fn save_projection(
        &mut self,
        name: usize,
        expected: u64,
        state: &ProjectionState,
    ) -> Result<(), Want> {
        let actual = self.projections.get(&name).map_or(0, |p| p.checkpoint);
        if actual != expected {
            return Err(Want::ProjectionConflict { expected, actual });
        }
        self.projections.insert(name, state.clone());
        Ok(())
    }
}

/// An append with its arguments decided.
#[derive(Debug, Clone)]
struct ResolvedAppend {
    stream: usize,
    stream_id: StreamId,
    expected: ExpectedVersion,
    events: Vec<Envelope>,
    intents: Vec<Intent>,
}

impl ResolvedAppend {
    fn apply(&self, model: &mut Model) -> Result<Appended, Want> {
        model.append(
            self.stream,
            &self.stream_id,
            self.expected,
            &self.events,
            &self.intents,
        )
    }
}

/// Every order of `0..n`.
fn orders(n: usize) -> Vec<Vec<usize>> {
    if n == 0 {
        return vec![Vec::new()];
    }
    let mut all = Vec::new();
    for shorter in orders(n - 1) {
        for at in 0..=shorter.len() {
            let mut order = shorter.clone();
            order.insert(at, n - 1);
            all.push(order);
        }
    }
    all
}

// ---- Subscriptions --------------------------------------------------------------------

/// A subscription opened at some step of a case, with what the model held then.
struct OpenSubscription {
    /// The absolute position it started from.
    from: u64,
    /// The model's head when it opened: every later event may be delivered.
    head_at_open: u64,
    /// The positions from `from` on that the model held when it opened: of the events
    /// up to `head_at_open`, only these may be delivered (the rest were trimmed).
    alive_at_open: HashSet<u64>,
    /// What it has delivered so far, in the order it did.
    delivered: Vec<RecordedEvent>,
    events: mpsc::Receiver<Result<RecordedEvent, Error>>,
    task: JoinHandle<()>,
}

impl OpenSubscription {
    /// Opens a subscription on `store` from `from` and starts its task, which hands
    /// every event over (or the error that ended it).
    fn open(store: Arc<dyn EventStore>, from: u64, model: &Model) -> Self {
        // Opened here, not in the task, so that it watches the head from this step on.
        let mut subscription = Subscription::new(store, from);
        let (sender, events) = mpsc::channel(SUBSCRIPTION_BUFFER);
        let task = tokio::spawn(async move {
            loop {
                let next = subscription.next().await;
                let failed = next.is_err();
                if sender.send(next).await.is_err() || failed {
                    return;
                }
            }
        });
        Self {
            from,
            head_at_open: model.head,
            alive_at_open: model.events.range(from..).map(|(p, _)| *p).collect(),
            delivered: Vec::new(),
            events,
            task,
        }
    }

    /// Takes what the subscription delivers until it has reached the model's last event
    /// from its position on, then checks everything it delivered against the model.
    async fn check(&mut self, model: &Model) -> Result<(), String> {
        let from = self.from;
        let wanted: Vec<&RecordedEvent> = model.events.range(from..).map(|(_, e)| e).collect();
        let last_wanted = wanted.last().map_or(0, |e| e.position);
        let reached = |delivered: &[RecordedEvent]| delivered.last().map_or(0, |e| e.position);
        while reached(&self.delivered) < last_wanted {
            match tokio::time::timeout(WATCH_WAIT, self.events.recv()).await {
                Ok(Some(Ok(event))) => self.delivered.push(event),
                Ok(Some(Err(error))) => {
                    return Err(format!("the subscription from {from} failed: {error}"));
                }
                Ok(None) => return Err(format!("the subscription from {from} stopped")),
                Err(_) => {
                    return Err(format!(
                        "the subscription from {from} stalled at position {} for {WATCH_WAIT:?}; \
                         the model's last event from {from} on is at {last_wanted}",
                        reached(&self.delivered)
                    ));
                }
            }
        }
        // Anything it already handed over beyond that must fit too.
        while let Ok(next) = self.events.try_recv() {
            let event = next.map_err(|e| format!("the subscription from {from} failed: {e}"))?;
            self.delivered.push(event);
        }
        self.verify(model, &wanted)
    }

    /// In position order, each once, each as stored, none it could not have seen, and
    /// none of the model's events from `from` on left out.
    fn verify(&self, model: &Model, wanted: &[&RecordedEvent]) -> Result<(), String> {
        let from = self.from;
        let mut previous = None;
        for event in &self.delivered {
            let position = event.position;
            if previous.is_some_and(|previous| position <= previous) {
                return Err(format!(
                    "the subscription from {from} delivered position {position} after {}",
                    previous.unwrap_or_default()
                ));
            }
            previous = Some(position);
            let could_see = position >= from
                && (position > self.head_at_open || self.alive_at_open.contains(&position));
            if !could_see {
                return Err(format!(
                    "the subscription from {from}, opened at head {}, delivered position \
                     {position}, which it cannot have seen",
                    self.head_at_open
                ));
            }
            if model.ever.get(&position) != Some(event) {
                return Err(format!(
                    "the subscription from {from} delivered\n  {event:?}\nthe model stored\n  {:?}",
                    model.ever.get(&position)
                ));
            }
        }
        let delivered: HashSet<u64> = self.delivered.iter().map(|e| e.position).collect();
        if let Some(missed) = wanted.iter().find(|e| !delivered.contains(&e.position)) {
            return Err(format!(
                "the subscription from {from} skipped position {} (delivered {:?})",
                missed.position,
                self.delivered
                    .iter()
                    .map(|e| e.position)
                    .collect::<Vec<_>>()
            ));
        }
        Ok(())
    }
}

impl Drop for OpenSubscription {
    fn drop(&mut self) {
        // A subscription never ends by itself; it must not outlive its case.
        self.task.abort();
    }
}

// ---- Running a case -------------------------------------------------------------------

/// One case against one store: names unique to the case, fresh ids, and the model.
struct Case {
    store: Arc<dyn EventStore>,
    /// A second handle on the same store, for races: another connection on PostgreSQL,
    /// the same handle elsewhere.
    second: Arc<dyn EventStore>,
    backend: &'static str,
    prefix: String,
    id_salt: u128,
    ids_made: u128,
    model: Model,
    subscriptions: Vec<OpenSubscription>,
}

impl Case {
    /// Starts a case; a store shared between cases is first emptied of pending intents
    /// and its head taken as the model's base.
    async fn start(
        store: Arc<dyn EventStore>,
        second: Arc<dyn EventStore>,
        backend: &'static str,
    ) -> Result<Self, String> {
        loop {
            let pending = store
                .pending_intents(1_000)
                .await
                .map_err(|e| e.to_string())?;
            if pending.is_empty() {
                break;
            }
            let ids: Vec<IntentId> = pending.iter().map(|i| i.id).collect();
            store
                .complete_intents(&ids)
                .await
                .map_err(|e| e.to_string())?;
        }
        // Earlier cases' finished instances go, so that a purge here counts only this
        // case's; their unfinished ones sort before this case's streams (below).
        let forever = Timestamp::from_unix_nanos(i64::MAX);
        while store
            .purge_finished(None, forever, 10_000)
            .await
            .map_err(|e| e.to_string())?
            > 0
        {}
        let base = store.head().await.map_err(|e| e.to_string())?;
        let salt = uuid::Uuid::new_v4();
        Ok(Self {
            store,
            second,
            backend,
            // The head first, zero-padded: a case that appended anything leaves a
            // larger head, so every earlier case's streams sort before this one's, and
            // a page of the index after the prefix holds this case's rows only.
            prefix: format!("m{base:020}{}", salt.simple()),
            id_salt: salt.as_u128(),
            ids_made: 0,
            model: Model {
                base,
                head: base,
                ..Model::default()
            },
            subscriptions: Vec::new(),
        })
    }

    fn stream_id(&self, stream: usize) -> StreamId {
        StreamId::from(format!("{}-s{stream}", self.prefix))
    }

    fn projection_name(&self, name: usize) -> String {
        format!("{}-p{name}", self.prefix)
    }

    fn fresh_uuid(&mut self) -> uuid::Uuid {
        self.ids_made += 1;
        uuid::Uuid::from_u128(self.id_salt.wrapping_add(self.ids_made))
    }

    /// A new event; its shape cycles through what an envelope can carry, so that every
    /// field and payload kind must come back exactly as stored.
    fn fresh_event(&mut self, stream: usize) -> Envelope {
        let id = EventId::new(self.fresh_uuid());
        let n = self.ids_made;
        let builder = Envelope::builder(
            id,
            EventType::from_static("test.happened"),
            "keel-tests",
            // Nanoseconds and all.
            fresh_time(n as u64),
        );
        let builder = match n % 6 {
            0 => builder
                .subject(format!("s{stream}"))
                .sequence(n as u64)
                .meta("seqno", n as i64)
                .payload(Payload::Json(
                    json!({ "n": n as u64, "text": "ünïcode ✓", "list": [1, 2, n as u64] }),
                )),
            1 => builder.payload(Payload::Binary(vec![0, 255, n as u8, 0x7f])),
            2 => builder
                .target("billing")
                .priority(Priority::High)
                .schema_version(3)
                .correlation_id(CorrelationId::from_u128(n))
                .causation_id(CausationId::from_u128(n + 1))
                .payload(Payload::Json(Value::Null)),
            3 => builder
                .meta("flag", true)
                .meta("note", "two words")
                .meta("low", i64::MIN)
                .payload(Payload::Json(json!({
                    "max": u64::MAX, "min": i64::MIN, "tenth": 0.1, "huge": 1e300,
                    "digits": 1.234_567_890_123_456_7, "nested": { "b": [], "a": {} },
                }))),
            4 => builder
                .priority(Priority::Low)
                .subject("nul\u{0}and ünï")
                .payload(Payload::Json(json!(["text", null, 5, { "z": "a\u{0}b" }]))),
            _ => Envelope::builder(
                id,
                EventType::from_static("test.edge-case"),
                "keel-tests",
                Timestamp::from_unix_nanos(-1_234_567_891 - n as i64),
            )
            .sequence(u64::MAX - n as u64)
            .payload(Payload::Json(json!("just text"))),
        };
        let mut envelope = builder.build().expect("a valid test envelope");
        if let Some(mark) = mark_for(n) {
            mark.apply(&mut envelope);
        }
        envelope
    }

    fn fresh_intent(&mut self) -> Intent {
        let uuid = self.fresh_uuid();
        let intent = Intent {
            id: IntentId::new(
                CorrelationId::new(uuid),
                CausationId::from_u128(self.id_salt),
                (self.ids_made % 7) as u32,
            ),
            kind: IntentKind::Custom {
                name: EventType::from_static("test.effect"),
                payload: json!({ "n": self.ids_made as u64 }),
            },
        };
        self.model.intents_made.push(intent.clone());
        intent
    }

    /// The events an append carries, and the stream it goes to.
    fn events(
        &mut self,
        stream: usize,
        spec: &BatchSpec,
    ) -> (usize, Vec<Envelope>, Option<Vec<Intent>>) {
        let batches = &self.model.batches;
        let earlier = |which: &Index| {
            (!batches.is_empty()).then(|| batches[which.index(batches.len())].clone())
        };
        match spec {
            BatchSpec::Fresh(n) => (
                stream,
                (0..*n).map(|_| self.fresh_event(stream)).collect(),
                None,
            ),
            BatchSpec::Repeat {
                which,
                tail,
                other_stream,
            } => match earlier(which) {
                None => (stream, vec![self.fresh_event(stream)], None),
                Some(batch) => {
                    let skip = usize::from(*tail && batch.events.len() > 1);
                    let target = if *other_stream {
                        (batch.stream + 1) % STREAMS
                    } else {
                        batch.stream
                    };
                    (target, batch.events[skip..].to_vec(), Some(batch.intents))
                }
            },
            BatchSpec::Reversed { which } => match earlier(which) {
                None => (stream, vec![self.fresh_event(stream)], None),
                Some(batch) => (
                    batch.stream,
                    batch.events.iter().rev().cloned().collect(),
                    None,
                ),
            },
            BatchSpec::Altered { which, event } => match earlier(which) {
                None => (stream, vec![self.fresh_event(stream)], None),
                Some(batch) => {
                    let mut events = batch.events.clone();
                    let at = event.index(events.len());
                    let altered = &mut events[at];
                    if at % 2 == 0 {
                        altered.payload = Payload::Json(json!({ "altered": at }));
                    } else {
                        altered.event_type = EventType::from_static("test.altered");
                    }
                    (batch.stream, events, Some(batch.intents))
                }
            },
            BatchSpec::WithOldId {
                which,
                event,
                fresh,
                at,
            } => {
                let old = earlier(which).map(|b| b.events[event.index(b.events.len())].clone());
                let mut events: Vec<Envelope> =
                    (0..*fresh).map(|_| self.fresh_event(stream)).collect();
                if let Some(old) = old {
                    let at = at.index(events.len() + 1);
                    events.insert(at, old);
                }
                (stream, events, None)
            }
            BatchSpec::SelfDuplicate(n) => {
                let mut events: Vec<Envelope> = (0..*n).map(|_| self.fresh_event(stream)).collect();
                events.push(events[0].clone());
                (stream, events, None)
            }
        }
    }

    fn intents(&mut self, spec: &IntentSpec) -> Vec<Intent> {
        match spec {
            IntentSpec::None => Vec::new(),
            IntentSpec::Fresh(n) => (0..*n).map(|_| self.fresh_intent()).collect(),
            IntentSpec::WithPending(which) => {
                let mut intents = vec![self.fresh_intent()];
                if !self.model.pending.is_empty() {
                    let pending = self.model.pending[which.index(self.model.pending.len())].clone();
                    intents.insert(0, pending);
                }
                intents
            }
        }
    }

    /// Turns an append's description into its arguments, against the history so far.
    fn resolve(
        &mut self,
        stream: usize,
        expected: Expect,
        batch: &BatchSpec,
        intents: &IntentSpec,
    ) -> ResolvedAppend {
        let (stream, events, repeated_intents) = self.events(stream, batch);
        let intents = match repeated_intents {
            // A retried append carries the intents it carried the first time.
            Some(intents) => intents,
            None => self.intents(intents),
        };
        let version = self.model.version(stream);
        let expected = match expected {
            Expect::Right => ExpectedVersion::Exact(version),
            Expect::TooHigh(by) => ExpectedVersion::Exact(version + by),
            Expect::Exact(v) => ExpectedVersion::Exact(v),
            Expect::Any => ExpectedVersion::Any,
            Expect::NoStream => ExpectedVersion::NoStream,
        };
        ResolvedAppend {
            stream,
            stream_id: self.stream_id(stream),
            expected,
            events,
            intents,
        }
    }

    /// Runs one operation on the store and the model; describes any disagreement.
    async fn run(&mut self, op: &Op) -> Result<(), String> {
        let store = Arc::clone(&self.store);
        match op {
            Op::Append {
                stream,
                expected,
                batch,
                intents,
            } => {
                let append = self.resolve(*stream, *expected, batch, intents);
                let want = append.apply(&mut self.model);
                let got = store
                    .append_with_intents(
                        &append.stream_id,
                        append.expected,
                        &append.events,
                        &append.intents,
                    )
                    .await;
                same("append", got, want)
            }
            Op::Race(appends) => {
                let mut resolved = Vec::with_capacity(appends.len());
                for race in appends {
                    let mut append =
                        self.resolve(race.stream, race.expected, &race.batch, &race.intents);
                    if append.events.is_empty() {
                        append.events.push(self.fresh_event(append.stream));
                    }
                    resolved.push(append);
                }
                let tasks: Vec<_> = resolved
                    .iter()
                    .enumerate()
                    .map(|(i, append)| {
                        let store = Arc::clone(if i % 2 == 0 {
                            &self.store
                        } else {
                            &self.second
                        });
                        let append = append.clone();
                        tokio::spawn(async move {
                            store
                                .append_with_intents(
                                    &append.stream_id,
                                    append.expected,
                                    &append.events,
                                    &append.intents,
                                )
                                .await
                        })
                    })
                    .collect();
                let mut answers = Vec::with_capacity(tasks.len());
                for task in tasks {
                    answers.push(task.await.map_err(|e| format!("a racing append: {e}"))?);
                }
                // Some order, one after the other, explains every answer; the positions
                // of the successful ones leave at most one such order that matters.
                for order in orders(resolved.len()) {
                    let mut model = self.model.clone();
                    let mut wants = vec![None; resolved.len()];
                    for &i in &order {
                        wants[i] = Some(resolved[i].apply(&mut model));
                    }
                    let explained = answers
                        .iter()
                        .zip(&wants)
                        .all(|(got, want)| want.as_ref().is_some_and(|want| agrees(got, want)));
                    if explained {
                        self.model = model;
                        return Ok(());
                    }
                }
                Err(format!(
                    "race: no order of the appends, one after the other, explains the answers\n  {answers:?}"
                ))
            }
            Op::Complete { picks, unknown } => {
                let made = &self.model.intents_made;
                let mut ids: Vec<IntentId> = if made.is_empty() {
                    Vec::new()
                } else {
                    picks
                        .iter()
                        .map(|pick| made[pick.index(made.len())].id)
                        .collect()
                };
                if *unknown {
                    ids.push(IntentId::new(
                        CorrelationId::from_u128(7),
                        CausationId::from_u128(7),
                        7,
                    ));
                }
                self.model.complete(&ids);
                same(
                    "complete_intents",
                    store.complete_intents(&ids).await,
                    Ok(()),
                )
            }
            Op::Pending { limit } => {
                let want = self.model.pending.iter().take(*limit).cloned().collect();
                same(
                    "pending_intents",
                    store.pending_intents(*limit).await,
                    Ok(want),
                )
            }
            Op::ReadStream {
                stream,
                from,
                limit,
            } => {
                let want = self.model.read_stream(*stream, *from, *limit);
                let got = store
                    .read_stream(&self.stream_id(*stream), *from, *limit)
                    .await;
                same("read_stream", got, Ok(want))
            }
            Op::ReadAll { from, limit } => {
                // Positions before this case's own belong to earlier cases.
                let from = if self.model.base == 0 {
                    *from
                } else {
                    self.model.base + (*from).max(1)
                };
                let want = self.model.read_all(from, *limit);
                same("read_all", store.read_all(from, *limit).await, Ok(want))
            }
            Op::StreamVersion { stream } => {
                let want = self.model.version(*stream);
                same(
                    "stream_version",
                    store.stream_version(&self.stream_id(*stream)).await,
                    Ok(want),
                )
            }
            Op::Head => same("head", store.head().await, Ok(self.model.head)),
            Op::WatchHead => {
                let want = self.model.head;
                let mut head = store.watch_head();
                let reached = tokio::time::timeout(WATCH_WAIT, head.wait_for(|h| *h == want))
                    .await
                    .is_ok_and(|changed| changed.is_ok());
                if reached {
                    return Ok(());
                }
                let now = *head.borrow();
                Err(format!(
                    "watch_head: {now} after {WATCH_WAIT:?}, the head is {want}"
                ))
            }
            Op::SaveSnapshot { stream, state } => {
                let snapshot = StoredSnapshot {
                    stream: self.stream_id(*stream),
                    version: self.model.version(*stream),
                    state: json!({ "state": state, "nested": { "at": self.model.version(*stream) } }),
                };
                self.model.snapshots.insert(*stream, snapshot.clone());
                same(
                    "save_snapshot",
                    store.save_snapshot(&snapshot).await,
                    Ok(()),
                )
            }
            Op::LoadSnapshot { stream } => {
                let want = self.model.snapshots.get(stream).cloned();
                same(
                    "load_snapshot",
                    store.load_snapshot(&self.stream_id(*stream)).await,
                    Ok(want),
                )
            }
            Op::SetMetadata { stream, doc } => {
                let metadata =
                    json!({ "owner": format!("team-{doc}"), "max_age_s": u32::from(*doc) * 60 });
                self.model.metadata.insert(*stream, metadata.clone());
                same(
                    "set_metadata",
                    store
                        .set_metadata(&self.stream_id(*stream), &metadata)
                        .await,
                    Ok(()),
                )
            }
            Op::Metadata { stream } => {
                let want = self.model.metadata.get(stream).cloned();
                same(
                    "metadata",
                    store.metadata(&self.stream_id(*stream)).await,
                    Ok(want),
                )
            }
            Op::Trim { stream, trim } => {
                // Positions before this case's own belong to earlier cases.
                let trim = match *trim {
                    Trim::BeforePosition(position) => {
                        Trim::BeforePosition(self.model.base + position)
                    }
                    by_version => by_version,
                };
                let want = self.model.trim(*stream, trim);
                same(
                    "trim",
                    store.trim(&self.stream_id(*stream), trim).await,
                    Ok(want),
                )
            }
            Op::SaveProjection {
                name,
                stale_by,
                model,
            } => {
                let stored = self.model.projections.get(name).map_or(0, |p| p.checkpoint);
                let expected = stored + stale_by;
                let state = ProjectionState {
                    checkpoint: self.model.head,
                    model: json!({ "model": model, "at": self.model.head }),
                };
                let want = self.model.save_projection(*name, expected, &state);
                let got = store
                    .save_projection(&self.projection_name(*name), expected, &state)
                    .await;
                same("save_projection", got, want)
            }
            Op::LoadProjection { name } => {
                let want = self.model.projections.get(name).cloned();
                same(
                    "load_projection",
                    store.load_projection(&self.projection_name(*name)).await,
                    Ok(want),
                )
            }
            Op::Subscribe { from } => {
                if self.subscriptions.len() < SUBSCRIPTIONS_MAX {
                    // Positions before this case's own belong to earlier cases.
                    let from = if self.model.base == 0 {
                        *from
                    } else {
                        self.model.base + (*from).max(1)
                    };
                    let subscription = OpenSubscription::open(store, from, &self.model);
                    self.subscriptions.push(subscription);
                }
                Ok(())
            }
            Op::CheckSubscriptions => self.check_subscriptions().await,
            Op::Instances {
                kind,
                status,
                finished,
                after,
                limit,
            } => {
                let query = InstanceQuery {
                    kind: kind.map(|k| KINDS[k].to_owned()),
                    status: status.map(|s| STATUSES[s].to_owned()),
                    finished: *finished,
                    after: Some(match after {
                        Some(stream) => self.stream_id(*stream),
                        None => StreamId::from(self.prefix.clone()),
                    }),
                    limit: *limit,
                };
                let want = self.model.instances(&query);
                same("instances", store.instances(&query).await, Ok(want))
            }
            Op::ReadUnfinished { kind, from, limit } => {
                let kind = kind.map(|k| KINDS[k]);
                // A cursor: before every stream of this case (earlier cases' streams
                // sort before its prefix), or one of its events picked by `from`.
                let cursors = self.model.cursors();
                let pick = usize::try_from(*from).unwrap_or(0) % (cursors.len() + 1);
                let prefix = (StreamId::from(self.prefix.clone()), 0);
                let (stream, version) = if pick == 0 {
                    prefix
                } else {
                    cursors[pick - 1].clone()
                };
                let want = self.model.read_unfinished(kind, (&stream, version), *limit);
                let got = store
                    .read_unfinished(kind, Some((&stream, version)), *limit)
                    .await;
                same("read_unfinished", got, Ok(want))
            }
            Op::Purge {
                kind,
                before,
                limit,
            } => {
                let (kind, before) = (kind.map(|k| KINDS[k]), fresh_time(*before));
                let want = self.model.purge(kind, before, *limit);
                let got = store.purge_finished(kind, before, *limit).await;
                same("purge_finished", got, Ok(want))
            }
        }
    }

    async fn check_subscriptions(&mut self) -> Result<(), String> {
        for subscription in &mut self.subscriptions {
            subscription.check(&self.model).await?;
        }
        Ok(())
    }

    /// The end of a case: one more event, which every open subscription must reach
    /// after all the others, so that a repeat of an earlier event it hands over late is
    /// caught too.
    async fn finish_subscriptions(&mut self) -> Result<(), String> {
        if self.subscriptions.is_empty() {
            return Ok(());
        }
        let last = vec![self.fresh_event(0)];
        let stream_id = self.stream_id(0);
        let want = self
            .model
            .append(0, &stream_id, ExpectedVersion::Any, &last, &[]);
        let got = self
            .store
            .append(&stream_id, ExpectedVersion::Any, &last)
            .await;
        same("the last append", got, want)?;
        self.check_subscriptions().await
    }
}

/// The mark the `n`th fresh event carries, if any: most carry one, of either kind and
/// any status, so streams finish and start again at random.
fn mark_for(n: u128) -> Option<InstanceMark> {
    let k = (n % 7) as usize;
    if k == 0 || k == 3 {
        return None;
    }
    let status = STATUSES[k % STATUSES.len()];
    let kind = KINDS[(n % 2) as usize];
    Some(InstanceMark::new(kind, status, status == "completed"))
}

/// The time of the `n`th fresh event (most of them; see `Case::fresh_event`).
fn fresh_time(n: u64) -> Timestamp {
    Timestamp::from_unix_nanos(1_700_000_000_123_456_789 + n as i64 * 1_001)
}

/// Compares a store's answer with the model's.
fn same<T: PartialEq + Debug>(
    what: &str,
    got: Result<T, Error>,
    want: Result<T, Want>,
) -> Result<(), String> {
    if agrees(&got, &want) {
        return Ok(());
    }
    Err(format!(
        "{what}: the store answered\n  {got:?}\nthe model\n  {want:?}"
    ))
}

/// Whether a store's answer is the model's.
fn agrees<T: PartialEq>(got: &Result<T, Error>, want: &Result<T, Want>) -> bool {
    match (got, want) {
        (Ok(got), Ok(want)) => got == want,
        (Err(got), Err(want)) => want.matches(got),
        _ => false,
    }
}

/// Runs `cases` random sequences against stores of `backend`: a fresh store per case,
/// or, for PostgreSQL, one schema shared by every case (each with names of its own).
fn check_backend(backend: &Backend, cases: u32) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let shared = matches!(backend, Backend::Postgres(_)).then(|| runtime.block_on(backend.open()));
    // Races on PostgreSQL go through a second store on the same schema too, as from
    // another process.
    let shared_second = shared
        .as_ref()
        .map(|shared| runtime.block_on(shared.reopen()));
    let config = Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 2_000,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let result = runner.run(&ops(), |ops| {
        runtime.block_on(async {
            let own: Option<TestStore> = match &shared {
                Some(_) => None,
                None => Some(backend.open().await),
            };
            let store = shared
                .as_ref()
                .or(own.as_ref())
                .map(|test_store| Arc::clone(&test_store.store))
                .expect("a shared or an own store");
            let second = shared_second
                .as_ref()
                .map_or_else(|| Arc::clone(&store), Arc::clone);
            let outcome = run_case(store, second, backend.name(), &ops).await;
            if let Some(own) = own {
                own.cleanup().await;
            }
            outcome.map_err(TestCaseError::fail)
        })
    });
    drop(shared_second);
    if let Some(shared) = shared {
        runtime.block_on(shared.cleanup());
    }
    if let Err(failure) = result {
        panic!(
            "the {} store disagrees with the model: {failure}",
            backend.name()
        );
    }
}

async fn run_case(
    store: Arc<dyn EventStore>,
    second: Arc<dyn EventStore>,
    backend: &'static str,
    ops: &[Op],
) -> Result<(), String> {
    let mut case = Case::start(store, second, backend).await?;
    for (step, op) in ops.iter().enumerate() {
        case.run(op)
            .await
            .map_err(|e| format!("[{}] step {step} ({op:?}): {e}", case.backend))?;
    }
    case.finish_subscriptions()
        .await
        .map_err(|e| format!("[{backend}] after the last step: {e}"))?;
    // Finally the whole store must agree, not only what the operations looked at.
    let everything = case.model.read_all(case.model.base + 1, usize::MAX);
    let got = case.store.read_all(case.model.base + 1, 10_000).await;
    same("final read_all", got, Ok(everything)).map_err(|e| format!("[{backend}] {e}"))?;
    let every_row = InstanceQuery::all().after(case.prefix.clone());
    let got = case.store.instances(&every_row).await;
    let want = case.model.instances(&every_row);
    same("final instances", got, Ok(want)).map_err(|e| format!("[{backend}] {e}"))?;
    let prefix = StreamId::from(case.prefix.clone());
    let unfinished = case.model.read_unfinished(None, (&prefix, 0), usize::MAX);
    let got = case
        .store
        .read_unfinished(None, Some((&prefix, 0)), 10_000)
        .await;
    same("final read_unfinished", got, Ok(unfinished)).map_err(|e| format!("[{backend}] {e}"))
}

#[test]
fn the_memory_store_matches_the_model() {
    check_backend(&Backend::Memory, 512);
}

#[test]
fn the_sqlite_store_matches_the_model() {
    if let Some(sqlite) = Backend::sqlite() {
        check_backend(&sqlite, 64);
    }
}

#[test]
fn the_postgres_store_matches_the_model() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    if let Some(postgres) = runtime.block_on(Backend::postgres()) {
        check_backend(&postgres, 64);
    }
}
