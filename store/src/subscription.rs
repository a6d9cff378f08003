//! Subscriptions: read everything from a position, then follow new commits live.
//!
//! A subscription reads by position, in pages, until it reaches the head; then it waits
//! for the store's head to move and reads again. The switch from catching up to live
//! therefore has no gap and no duplicate: both phases are the same read, and every
//! backend makes positions visible in order.

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::sync::watch;

use super::{EventStore, RecordedEvent};
use crate::error::Error;

/// How many events a subscription reads per page.
pub const PAGE_EVENTS: usize = 512;

/// A cursor over every event of a store from a position on, catching up then live.
pub struct Subscription {
    store: Arc<dyn EventStore>,
    next: u64,
    page: VecDeque<RecordedEvent>,
    head: watch::Receiver<u64>,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("next", &self.next)
            .finish_non_exhaustive()
    }
}

impl Subscription {
    /// Follows `store` from position `from` (1 for everything).
    pub fn new(store: Arc<dyn EventStore>, from: u64) -> Self {
        let head = store.watch_head();
        Self {
            store,
            next: from.max(1),
            page: VecDeque::new(),
            head,
        }
    }

    /// The next event, waiting for one to be committed if the subscription is at the
    /// head. Fails only if the store does; a failed read moves nothing, so after an
    /// error that may pass ([`Error::is_unavailable`]) calling it again later goes on
    /// where it stopped.
    pub async fn next(&mut self) -> Result<RecordedEvent, Error> {
        loop {
            if let Some(event) = self.page.pop_front() {
                self.next = event.position + 1;
                return Ok(event);
            }
            // Mark the head as seen before reading, so a commit landing during the read
            // still wakes the wait below.
            let seen = *self.head.borrow_and_update();
            let page = self.store.read_all(self.next, PAGE_EVENTS).await?;
            if !page.is_empty() {
                self.page.extend(page);
                continue;
            }
            if seen >= self.next {
                // Everything up to the head was trimmed away: move past it.
                self.next = seen + 1;
            }
            if self.head.changed().await.is_err() {
                return Err(Error::ShutDown);
            }
        }
    }

    /// The next event if one is already committed, without waiting.
    pub async fn try_next(&mut self) -> Result<Option<RecordedEvent>, Error> {
        if self.page.is_empty() {
            let page = self.store.read_all(self.next, PAGE_EVENTS).await?;
            self.page.extend(page);
        }
        Ok(self
            .page
            .pop_front()
            .inspect(|event| self.next = event.position + 1))
    }

    /// The position the next event will have at least.
    pub fn position(&self) -> u64 {
        self.next
    }
}
