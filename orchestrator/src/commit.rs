//! Committing a batch: every saga's append, tried again for as long as the store is
//! unavailable, and nothing carried out until each has landed or been refused.
//!
//! Sans-IO, like the engine: the driver makes the appends [`pending`](Commit::pending)
//! asks for, reports each answer, and asks [`retry_after`](Commit::retry_after) whether
//! to wait and try again. The tokio driver and the deterministic simulation share it, so
//! the simulation's store outages test the code that production runs.
//!
//! Why the same batch is tried again rather than each saga rebuilt from the store: the
//! engine has already applied the batch's events, and the store may come back at any
//! moment; rebuilding would need reads (which fail too while the store is down) and would
//! send again every call in flight. Holding the batch keeps every saga, its waiters and
//! its calls, at the price of the shard taking no new events until the store is back:
//! callers wait (the shard's queue is bounded), and nothing is lost or done twice.

use std::time::Duration;

use keel_core::Timestamp;
use keel_store::Appended;

use crate::engine::Batch;
use crate::id::SagaId;

/// The first wait before trying an append again.
pub const RETRY_DELAY_FIRST: Duration = Duration::from_millis(10);

/// The longest wait between two tries: the store is tried at least this often while it
/// is down, so sagas go on within this long of its return.
pub const RETRY_DELAY_MAX: Duration = Duration::from_secs(2);

/// Where one append stands.
#[derive(Debug)]
enum Landing {
    /// Not made yet, or met an unavailable store. `unsure` once a try reached the store
    /// and failed without saying whether it committed.
    Pending { unsure: bool },
    /// Stored.
    Landed,
    /// Refused for good.
    Refused(keel_store::Error),
}

/// One batch being committed.
#[derive(Debug)]
pub struct Commit {
    batch: Batch,
    appends: Vec<Landing>,
    /// Whether the dead letters still need appending.
    dead_letters_pending: bool,
    /// Rounds of appends made so far.
    rounds: u32,
    /// When the store first failed for this batch, while it is failing.
    unavailable_since: Option<Timestamp>,
    /// The last error of an unavailable store, for the report.
    last_unavailable: Option<keel_store::Error>,
}

impl Commit {
    /// Starts committing `batch`.
    pub fn new(batch: Batch) -> Self {
        let appends = batch
            .appends
            .iter()
            .map(|_| Landing::Pending { unsure: false })
            .collect();
        let dead_letters_pending = !batch.dead_letters.is_empty() && !batch.appends.is_empty();
        Self {
            batch,
            appends,
            dead_letters_pending,
            rounds: 0,
            unavailable_since: None,
            last_unavailable: None,
        }
    }

    /// The batch.
    pub fn batch(&self) -> &Batch {
        &self.batch
    }

    /// Starts a round: the indices (into the batch's appends) of the appends to make now.
    /// Make them all at once: the stores group concurrent appends into few transactions.
    pub fn pending(&mut self) -> Vec<usize> {
        self.rounds += 1;
        self.appends
            .iter()
            .enumerate()
            .filter(|(_, landing)| matches!(landing, Landing::Pending { .. }))
            .map(|(index, _)| index)
            .collect()
    }

    /// Whether the batch's dead letters are still to be appended (before its records:
    /// a crash in between repeats them under the same ids rather than losing them).
    pub fn dead_letters_pending(&self) -> bool {
        self.dead_letters_pending
    }

    /// Records how appending the dead letters went. An unavailable store keeps them
    /// pending; any other refusal drops them with a warning (the parked sagas stay
    /// visible in `list`).
    pub fn dead_letters_answered(&mut self, result: Result<Appended, keel_store::Error>) {
        match result {
            Ok(_) => self.dead_letters_pending = false,
            // A letter with this id is stored already, from a run that crashed after
            // appending it and before the saga's records: one letter per parking is
            // what is wanted, and its time is when that run parked the saga.
            Err(keel_store::Error::EventConflict { .. }) => self.dead_letters_pending = false,
            Err(e) if is_unavailable(&e) => self.unavailable(e),
            Err(e) => {
                tracing::warn!(error = %e, "dead letters could not be appended; the sagas stay parked and visible in `list`");
                self.dead_letters_pending = false;
            }
        }
    }

    /// Records the store's answer to append `index` of this round.
    pub fn answered(&mut self, index: usize, result: Result<Appended, keel_store::Error>) {
        let append = &self.batch.appends[index];
        let unsure = matches!(self.appends[index], Landing::Pending { unsure: true });
        self.appends[index] = match result {
            // The same records already stored, after a try of this append that failed
            // without saying whether it committed: that try committed.
            Ok(appended) if !appended.deduplicated || unsure => Landing::Landed,
            // Record ids derive from the saga id and the version only, so the same
            // records stored before this append was ever tried mean another run under
            // the same id wrote them (a finished saga started again): the store's
            // idempotency must not pass that off as a success.
            Ok(_) => Landing::Refused(keel_store::Error::VersionConflict {
                stream: append.stream.clone(),
                expected: append.expected.to_string(),
                actual: append.expected + append.records.len() as u64,
            }),
            Err(e) if is_unavailable(&e) => {
                self.unavailable(e);
                Landing::Pending { unsure: true }
            }
            Err(e) => {
                tracing::warn!(saga = %append.saga, error = %e, "a saga's records were refused by the store");
                Landing::Refused(e)
            }
        };
    }

    fn unavailable(&mut self, error: keel_store::Error) {
        self.last_unavailable = Some(error);
    }

    /// After a round: how long to wait before the next, if the store was unavailable
    /// for some appends; `None` once every append has landed or been refused for good.
    /// `now` dates the outage.
    pub fn retry_after(&mut self, now: Timestamp) -> Option<Duration> {
        let waiting = self.dead_letters_pending
            || self
                .appends
                .iter()
                .any(|landing| matches!(landing, Landing::Pending { .. }));
        if !waiting {
            return None;
        }
        self.unavailable_since.get_or_insert(now);
        Some(retry_delay(self.rounds))
    }

    /// Rounds made so far.
    pub fn rounds(&self) -> u32 {
        self.rounds
    }

    /// Since when the store has failed this batch's appends, and its last error, while
    /// some are still waiting.
    pub fn outage(&self) -> Option<(Timestamp, &keel_store::Error)> {
        self.unavailable_since.zip(self.last_unavailable.as_ref())
    }

    /// Ends the commit: the batch, and the sagas whose appends were refused for good.
    pub fn finish(self) -> (Batch, Vec<(SagaId, keel_store::Error)>) {
        let mut refused = Vec::new();
        for (append, landing) in self.batch.appends.iter().zip(self.appends) {
            match landing {
                Landing::Refused(e) => refused.push((append.saga.clone(), e)),
                Landing::Landed => {}
                Landing::Pending { .. } => {
                    debug_assert!(false, "a commit finished with an append pending");
                }
            }
        }
        (self.batch, refused)
    }
}

/// Whether `error` says the store is unavailable (down, unreachable, out of space)
/// rather than refusing this append: only then is the same append worth trying again.
pub fn is_unavailable(error: &keel_store::Error) -> bool {
    error.is_unavailable()
}

/// The wait after round `round` (from 1) failed: doubling from [`RETRY_DELAY_FIRST`] up
/// to [`RETRY_DELAY_MAX`].
pub fn retry_delay(round: u32) -> Duration {
    let doublings = round.saturating_sub(1).min(16);
    RETRY_DELAY_FIRST
        .saturating_mul(1 << doublings)
        .min(RETRY_DELAY_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::SagaAppend;

    fn batch(sagas: &[&str]) -> Batch {
        Batch {
            appends: sagas
                .iter()
                .map(|saga| SagaAppend {
                    saga: SagaId::new(*saga).expect("a valid id"),
                    stream: SagaId::new(*saga).expect("a valid id").stream(),
                    expected: 0,
                    records: Vec::new(),
                })
                .collect(),
            ..Batch::default()
        }
    }

    fn down() -> keel_store::Error {
        keel_store::Error::Unavailable {
            backend: "test",
            reason: "connection refused".into(),
        }
    }

    fn landed(deduplicated: bool) -> Result<Appended, keel_store::Error> {
        Ok(Appended {
            first_version: 1,
            last_version: 1,
            first_position: 1,
            deduplicated,
        })
    }

    #[test]
    fn waits_double_up_to_the_cap() {
        let waits: Vec<u64> = (1..=10)
            .map(|r| retry_delay(r).as_millis() as u64)
            .collect();
        assert_eq!(waits, [10, 20, 40, 80, 160, 320, 640, 1280, 2000, 2000]);
        assert_eq!(retry_delay(u32::MAX), RETRY_DELAY_MAX);
    }

    #[test]
    fn an_unavailable_store_keeps_the_append_pending_until_it_lands() {
        let mut commit = Commit::new(batch(&["a", "b"]));
        assert_eq!(commit.pending(), [0, 1]);
        commit.answered(0, landed(false));
        commit.answered(1, Err(down()));
        let now = Timestamp::from_unix_millis(5);
        assert_eq!(commit.retry_after(now), Some(RETRY_DELAY_FIRST));
        assert_eq!(commit.outage().map(|(since, _)| since), Some(now));
        // The second try's first append committed before; its answer was lost.
        assert_eq!(commit.pending(), [1]);
        commit.answered(1, landed(true));
        assert_eq!(commit.retry_after(now), None);
        let (batch, refused) = commit.finish();
        assert_eq!(batch.appends.len(), 2);
        assert!(refused.is_empty());
    }

    #[test]
    fn an_append_never_tried_that_finds_its_records_stored_is_a_conflict_in_any_round() {
        let mut commit = Commit::new(Batch {
            dead_letters: vec![
                keel_core::Envelope::builder(
                    keel_core::EventId::from_u128(1),
                    keel_core::EventType::from_static("test.letter"),
                    "test",
                    Timestamp::UNIX_EPOCH,
                )
                .build()
                .expect("a valid envelope"),
            ],
            ..batch(&["a"])
        });
        commit.pending();
        // The dead letters met an unavailable store: the append was not made.
        commit.dead_letters_answered(Err(down()));
        assert!(commit.retry_after(Timestamp::UNIX_EPOCH).is_some());
        commit.pending();
        commit.dead_letters_answered(landed(false));
        commit.answered(0, landed(true));
        assert_eq!(commit.retry_after(Timestamp::UNIX_EPOCH), None);
        let (_, refused) = commit.finish();
        assert!(
            matches!(
                &refused[..],
                [(_, keel_store::Error::VersionConflict { .. })]
            ),
            "{refused:?}"
        );
    }

    #[test]
    fn a_dead_letter_stored_before_a_crash_is_not_appended_again() {
        let letter = keel_core::Envelope::builder(
            keel_core::EventId::from_u128(1),
            keel_core::EventType::from_static("test.letter"),
            "test",
            Timestamp::UNIX_EPOCH,
        )
        .build()
        .expect("a valid envelope");
        let mut commit = Commit::new(Batch {
            dead_letters: vec![letter],
            ..batch(&["a"])
        });
        commit.pending();
        commit.dead_letters_answered(Err(keel_store::Error::EventConflict {
            id: "1".into(),
            stream: keel_core::StreamId::from_static("keel-dead-letters"),
        }));
        assert!(!commit.dead_letters_pending());
    }

    #[test]
    fn a_first_try_that_finds_its_records_stored_is_a_conflict_and_refusals_are_final() {
        let mut commit = Commit::new(batch(&["a", "b"]));
        commit.pending();
        commit.answered(0, landed(true));
        let conflict = keel_store::Error::DuplicateEventId { id: "x".into() };
        commit.answered(1, Err(conflict.clone()));
        assert_eq!(commit.retry_after(Timestamp::UNIX_EPOCH), None);
        let (_, refused) = commit.finish();
        let a = SagaId::new("a").expect("a valid id");
        let b = SagaId::new("b").expect("a valid id");
        assert!(matches!(&refused[0], (id, keel_store::Error::VersionConflict { .. }) if *id == a));
        assert_eq!(refused[1], (b, conflict));
    }
}
