//! A subscriber's bounded queue, shared by the bus (which pushes) and the subscription
//! (which pops).
//!
//! It puts [`Lanes`] behind the subscriber's own mutex and adds the two wake-ups:
//! `readable` for the one consumer, `writable` for publishers waiting on a full queue
//! whose policy is backpressure.

use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use keel_core::Envelope;
use tokio::sync::Notify;

use super::lanes::{Lanes, Pushed};
use super::subscription::Overflow;

/// What a subscriber finds when it looks at its queue.
#[derive(Debug)]
pub(crate) enum Popped {
    /// The next envelope.
    Envelope(Arc<Envelope>),
    /// Nothing queued now; more may come.
    Empty,
    /// Nothing queued, and nothing more will come.
    Closed,
}

/// A subscriber's queue.
#[derive(Debug)]
pub(crate) struct Queue {
    lanes: Mutex<Lanes>,
    capacity: usize,
    overflow: Overflow,
    readable: Notify,
    writable: Notify,
    dropped: AtomicU64,
}

impl Queue {
    pub(crate) fn new(capacity: usize, overflow: Overflow) -> Self {
        Self {
            lanes: Mutex::new(Lanes::default()),
            capacity,
            overflow,
            readable: Notify::new(),
            writable: Notify::new(),
            dropped: AtomicU64::new(0),
        }
    }

    /// The lanes, even after a panic elsewhere while they were locked: every operation
    /// on them completes before the lock is released, so they are never half-changed.
    fn lock(&self) -> MutexGuard<'_, Lanes> {
        self.lanes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Offers `envelope` without waiting.
    pub(crate) fn try_push(&self, envelope: &Arc<Envelope>) -> Pushed {
        let pushed = self.lock().push(envelope, self.capacity, self.overflow);
        match pushed {
            Pushed::Queued => self.readable.notify_one(),
            Pushed::Evicted => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                self.readable.notify_one();
            }
            Pushed::Refused => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
            Pushed::Full | Pushed::Closed => {}
        }
        pushed
    }

    /// Offers `envelope`, waiting while the queue is full under backpressure.
    pub(crate) async fn push(&self, envelope: &Arc<Envelope>) -> Pushed {
        loop {
            // Created before the check, so a pop or a close between the check and the
            // await still wakes this publisher.
            let mut writable = pin!(self.writable.notified());
            writable.as_mut().enable();
            match self.try_push(envelope) {
                Pushed::Full => writable.await,
                pushed => return pushed,
            }
        }
    }

    /// The next envelope if one is queued, without waiting.
    pub(crate) fn try_pop(&self) -> Popped {
        let mut lanes = self.lock();
        match lanes.pop() {
            Some(envelope) => {
                drop(lanes);
                if self.overflow == Overflow::Backpressure {
                    self.writable.notify_one();
                }
                Popped::Envelope(envelope)
            }
            None if lanes.is_closed() => Popped::Closed,
            None => Popped::Empty,
        }
    }

    /// The next envelope, waiting for one; `None` once closed and drained.
    pub(crate) async fn pop(&self) -> Option<Arc<Envelope>> {
        loop {
            match self.try_pop() {
                Popped::Envelope(envelope) => return Some(envelope),
                Popped::Closed => return None,
                // `notify_one` leaves a permit when nobody waits, so a push between the
                // check and this await is not lost.
                Popped::Empty => self.readable.notified().await,
            }
        }
    }

    /// Refuses further envelopes and wakes everyone waiting on this queue.
    pub(crate) fn close(&self) {
        self.lock().close();
        self.readable.notify_one();
        self.writable.notify_waiters();
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    pub(crate) fn overflow(&self) -> Overflow {
        self.overflow
    }

    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}
