//! A store that goes away: a wrapper around a real store that fails every append and
//! read while it is down, as a PostgreSQL restart, a cut network or a full disk would,
//! and passes everything through otherwise.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use keel_core::{Envelope, ExpectedVersion, Intent, IntentId, StreamId};
use keel_store::Error;
use keel_store::{
    Appended, EventStore, LockHolder, ProjectionState, RecordedEvent, StoreFuture, StoredSnapshot,
    Trim, WriterLock,
};
use tokio::sync::watch;

/// A store that fails while [`Outage::down`] is set.
#[derive(Clone)]
pub(crate) struct Outage {
    inner: Arc<dyn EventStore>,
    down: Arc<AtomicBool>,
    refused: Arc<AtomicU64>,
}

impl Outage {
    /// Wraps `inner`, up.
    pub(crate) fn new(inner: Arc<dyn EventStore>) -> Self {
        Self {
            inner,
            down: Arc::new(AtomicBool::new(false)),
            refused: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Takes the store away, or brings it back.
    pub(crate) fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    /// How many operations it failed.
    pub(crate) fn refused(&self) -> u64 {
        self.refused.load(Ordering::SeqCst)
    }

    fn check(&self) -> Result<(), Error> {
        if self.down.load(Ordering::SeqCst) {
            self.refused.fetch_add(1, Ordering::SeqCst);
            return Err(Error::Unavailable {
                backend: "sqlite",
                reason: "disk I/O error (the test took the store away)".into(),
            });
        }
        Ok(())
    }
}

/// Fails with the outage's error while the store is down, or makes `$call`.
macro_rules! guarded {
    ($self:ident, $call:expr) => {
        match $self.check() {
            Err(e) => Box::pin(std::future::ready(Err(e))),
            Ok(()) => $call,
        }
    };
}

impl EventStore for Outage {
    fn lock_writer<'a>(&'a self, holder: &'a LockHolder) -> StoreFuture<'a, WriterLock> {
        guarded!(self, self.inner.lock_writer(holder))
    }

    fn append_with_intents<'a>(
        &'a self,
        stream: &'a StreamId,
        expected: ExpectedVersion,
        events: &'a [Envelope],
        intents: &'a [Intent],
    ) -> StoreFuture<'a, Appended> {
        guarded!(
            self,
            self.inner
                .append_with_intents(stream, expected, events, intents)
        )
    }

    fn read_stream<'a>(
        &'a self,
        stream: &'a StreamId,
        from: u64,
        limit: usize,
    ) -> StoreFuture<'a, Vec<RecordedEvent>> {
        guarded!(self, self.inner.read_stream(stream, from, limit))
    }

    fn read_all(&self, from: u64, limit: usize) -> StoreFuture<'_, Vec<RecordedEvent>> {
        guarded!(self, self.inner.read_all(from, limit))
    }

    fn stream_version<'a>(&'a self, stream: &'a StreamId) -> StoreFuture<'a, u64> {
        guarded!(self, self.inner.stream_version(stream))
    }

    fn head(&self) -> StoreFuture<'_, u64> {
        guarded!(self, self.inner.head())
    }

    fn watch_head(&self) -> watch::Receiver<u64> {
        self.inner.watch_head()
    }

    fn pending_intents(&self, limit: usize) -> StoreFuture<'_, Vec<Intent>> {
        guarded!(self, self.inner.pending_intents(limit))
    }

    fn complete_intents<'a>(&'a self, ids: &'a [IntentId]) -> StoreFuture<'a, ()> {
        guarded!(self, self.inner.complete_intents(ids))
    }

    fn save_snapshot<'a>(&'a self, snapshot: &'a StoredSnapshot) -> StoreFuture<'a, ()> {
        guarded!(self, self.inner.save_snapshot(snapshot))
    }

    fn load_snapshot<'a>(
        &'a self,
        stream: &'a StreamId,
    ) -> StoreFuture<'a, Option<StoredSnapshot>> {
        guarded!(self, self.inner.load_snapshot(stream))
    }

    fn set_metadata<'a>(
        &'a self,
        stream: &'a StreamId,
        metadata: &'a serde_json::Value,
    ) -> StoreFuture<'a, ()> {
        guarded!(self, self.inner.set_metadata(stream, metadata))
    }

    fn metadata<'a>(&'a self, stream: &'a StreamId) -> StoreFuture<'a, Option<serde_json::Value>> {
        guarded!(self, self.inner.metadata(stream))
    }

    fn trim<'a>(&'a self, stream: &'a StreamId, trim: Trim) -> StoreFuture<'a, u64> {
        guarded!(self, self.inner.trim(stream, trim))
    }

    fn load_projection<'a>(&'a self, name: &'a str) -> StoreFuture<'a, Option<ProjectionState>> {
        guarded!(self, self.inner.load_projection(name))
    }

    fn instances<'a>(
        &'a self,
        query: &'a keel_store::InstanceQuery,
    ) -> StoreFuture<'a, Vec<keel_store::InstanceEntry>> {
        guarded!(self, self.inner.instances(query))
    }

    fn read_unfinished<'a>(
        &'a self,
        kind: Option<&'a str>,
        after: Option<(&'a keel_core::StreamId, u64)>,
        limit: usize,
    ) -> StoreFuture<'a, Vec<RecordedEvent>> {
        guarded!(self, self.inner.read_unfinished(kind, after, limit))
    }

    fn unindexed_head(&self) -> StoreFuture<'_, u64> {
        guarded!(self, self.inner.unindexed_head())
    }

    fn purge_finished<'a>(
        &'a self,
        kind: Option<&'a str>,
        updated_before: keel_core::Timestamp,
        limit: usize,
    ) -> StoreFuture<'a, u64> {
        guarded!(self, self.inner.purge_finished(kind, updated_before, limit))
    }

    fn save_projection<'a>(
        &'a self,
        name: &'a str,
        expected: u64,
        state: &'a ProjectionState,
    ) -> StoreFuture<'a, ()> {
        guarded!(self, self.inner.save_projection(name, expected, state))
    }
}
