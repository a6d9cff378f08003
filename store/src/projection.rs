//! Projections: read models built from every event, exactly once, rebuildable.
//!
//! A [`Projection`] folds events into a read model (any serde type). The
//! [`ProjectionRunner`] reads events after the projection's checkpoint, applies them,
//! and saves the read model together with the new checkpoint in one transaction
//! ([`EventStore::save_projection`]). A crash before the save loses the work of that
//! batch, not its events: the next run starts from the old checkpoint and applies them
//! again to the old read model. So each event counts exactly once in the saved model.
//! [`ProjectionRunner::catch_up`] runs once; [`ProjectionRunner::follow`] keeps the
//! read model current, catching up again after every commit.

use std::convert::Infallible;
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::subscription::PAGE_EVENTS;
use super::{EventStore, ProjectionState, RecordedEvent};
use crate::error::Error;

/// A read model folded from events.
pub trait Projection: Send + Sync + 'static {
    /// The read model.
    type Model: Serialize + DeserializeOwned + Default + Send;

    /// The projection's unique name in the store: `orders_by_status`.
    fn name(&self) -> &str;

    /// Folds one event into the model. Must be deterministic: a rebuild replays it.
    fn apply(&self, model: &mut Self::Model, event: &RecordedEvent);
}

/// Runs a projection against a store.
pub struct ProjectionRunner<P: Projection> {
    store: Arc<dyn EventStore>,
    projection: P,
    batch: usize,
}

impl<P: Projection> std::fmt::Debug for ProjectionRunner<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProjectionRunner")
            .field("name", &self.projection.name())
            .finish_non_exhaustive()
    }
}

impl<P: Projection> ProjectionRunner<P> {
    /// A runner saving after every `PAGE_EVENTS` events.
    pub fn new(store: Arc<dyn EventStore>, projection: P) -> Self {
        Self {
            store,
            projection,
            batch: PAGE_EVENTS,
        }
    }

    /// Saves after every `batch` events (at least 1): smaller batches lose less work to
    /// a crash, larger ones commit less often.
    #[must_use]
    pub fn batch(mut self, batch: usize) -> Self {
        self.batch = batch.max(1);
        self
    }

    /// The saved checkpoint and model (the default model at checkpoint 0 if none).
    pub async fn load(&self) -> Result<(u64, P::Model), Error> {
        match self.store.load_projection(self.projection.name()).await? {
            None => Ok((0, P::Model::default())),
            Some(state) => {
                let model =
                    serde_json::from_value(state.model).map_err(|e| Error::InvalidConfig {
                        setting: "projection model",
                        reason: format!(
                            "the saved read model of `{}` no longer decodes: {e}; rebuild it",
                            self.projection.name()
                        ),
                    })?;
                Ok((state.checkpoint, model))
            }
        }
    }

    /// Applies every committed event after the checkpoint, saving after each batch.
    /// Returns the new checkpoint.
    pub async fn catch_up(&self) -> Result<u64, Error> {
        let (mut checkpoint, mut model) = self.load().await?;
        loop {
            let events = self.store.read_all(checkpoint + 1, self.batch).await?;
            let Some(last) = events.last().map(|event| event.position) else {
                return Ok(checkpoint);
            };
            for event in &events {
                self.projection.apply(&mut model, event);
            }
            self.save(checkpoint, last, &model).await?;
            checkpoint = last;
        }
    }

    /// Catches up, then follows the store: after each commit it applies the new events
    /// and saves, like [`Self::catch_up`]. It runs until the store shuts down
    /// ([`Error::ShutDown`]), a read or save fails (if [`Error::is_unavailable`], call
    /// it again later: it goes on from the last saved checkpoint), or another runner of
    /// the same projection saved first ([`Error::ProjectionConflict`]); stop it by dropping the
    /// future (or aborting its task), which loses at most an unsaved batch's work, never
    /// its events.
    pub async fn follow(&self) -> Result<Infallible, Error> {
        let mut head = self.store.watch_head();
        loop {
            // Marked as seen before catching up, so that a commit landing meanwhile
            // still wakes the wait below.
            head.borrow_and_update();
            self.catch_up().await?;
            if head.changed().await.is_err() {
                return Err(Error::ShutDown);
            }
        }
    }

    /// Throws the read model away and builds it again from position zero.
    pub async fn rebuild(&self) -> Result<u64, Error> {
        let (checkpoint, _) = self.load().await?;
        self.save(checkpoint, 0, &P::Model::default()).await?;
        self.catch_up().await
    }

    async fn save(&self, expected: u64, checkpoint: u64, model: &P::Model) -> Result<(), Error> {
        let model = serde_json::to_value(model).map_err(|e| Error::InvalidConfig {
            setting: "projection model",
            reason: format!("the read model does not serialise: {e}"),
        })?;
        let state = ProjectionState { checkpoint, model };
        self.store
            .save_projection(self.projection.name(), expected, &state)
            .await
    }
}
