//! Telling a repeated append from a reused event id: the one rule every backend applies
//! to an append whose first event id is stored already.
//!
//! A repeat is answered with the earlier append's result only if it is that append
//! again: every event at the same place (its stream, consecutive versions, this order)
//! *and* with the same content. The same place with other content is
//! [`Error::EventConflict`]; any other place is [`Error::DuplicateEventId`].
//!
//! "The same content" is: equal as the durable stores encode it, field by field, the
//! payload and metadata as the JSON text serde_json writes (PostgreSQL keeps the whole
//! envelope as that text, SQLite each field in a column). Comparing the encodings
//! rather than decoded values keeps the three backends in exact agreement (a JSON
//! payload's `-0.0` and `0.0` are equal as `f64` but not as stored), and costs nothing
//! on the normal path: only an append whose ids are found stored reads any content
//! back. A trimmed event's content is gone (only its id, stream, version and position
//! are kept), so its repeat is judged by place alone.

use keel_core::{Envelope, EventId, StreamId};

use super::Appended;
use crate::error::Error;

/// What a store holds under one event id of an append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Held {
    /// Whether the stored event is in the stream appended to.
    pub(crate) in_stream: bool,
    /// Its version in its stream.
    pub(crate) version: u64,
    /// Its position in the store.
    pub(crate) position: u64,
    /// Whether its stored content is the appended event's; `None` when it was trimmed.
    pub(crate) same_content: Option<bool>,
}

/// If the events of an append to `stream` repeat an earlier append, that append's
/// result (`deduplicated: true`); `None` if its first event id is not stored.
///
/// `held` yields each event of the append, in order, with what the store holds under
/// its id. It is consumed lazily: an event out of place ends the look-up there.
pub(crate) fn earlier_append(
    stream: &StreamId,
    held: impl IntoIterator<Item = Result<(EventId, Option<Held>), Error>>,
) -> Result<Option<Appended>, Error> {
    let mut held = held.into_iter();
    let Some(first) = held.next() else {
        return Ok(None);
    };
    let (first_id, first) = first?;
    let Some(first) = first else {
        return Ok(None);
    };
    let duplicate = || Error::DuplicateEventId {
        id: first_id.to_string(),
    };
    if !first.in_stream {
        return Err(duplicate());
    }
    let mut conflict = (first.same_content == Some(false)).then_some(first_id);
    let mut count = 1_u64;
    for next in held {
        let (id, found) = next?;
        let Some(found) = found.filter(|f| f.in_stream && f.version == first.version + count)
        else {
            return Err(duplicate());
        };
        if conflict.is_none() && found.same_content == Some(false) {
            conflict = Some(id);
        }
        count += 1;
    }
    if let Some(id) = conflict {
        return Err(Error::EventConflict {
            id: id.to_string(),
            stream: stream.clone(),
        });
    }
    Ok(Some(Appended {
        first_version: first.version,
        last_version: first.version + count - 1,
        first_position: first.position,
        deduplicated: true,
    }))
}

/// Whether `stored` and `appended` have the same content, as the durable stores would
/// store them (see the module docs): for the memory store, which keeps values.
pub(crate) fn same_content(stored: &Envelope, appended: &Envelope) -> bool {
    match (serde_json::to_vec(stored), serde_json::to_vec(appended)) {
        (Ok(stored), Ok(appended)) => stored == appended,
        // Unreachable for an envelope (every map key is a string); equal values then
        // are the next best answer.
        _ => stored == appended,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(version: u64, same_content: Option<bool>) -> Option<Held> {
        Some(Held {
            in_stream: true,
            version,
            position: version + 10,
            same_content,
        })
    }

    fn ask(held: &[(u128, Option<Held>)]) -> Result<Option<Appended>, Error> {
        let stream = StreamId::from("s");
        earlier_append(
            &stream,
            held.iter()
                .map(|(id, held)| Ok((EventId::from_u128(*id), *held))),
        )
    }

    #[test]
    fn a_batch_stored_in_place_with_its_content_is_a_repeat() {
        let repeat = ask(&[(1, at(3, Some(true))), (2, at(4, None))]).unwrap();
        let appended = repeat.unwrap();
        assert!(appended.deduplicated);
        assert_eq!(
            (
                appended.first_version,
                appended.last_version,
                appended.first_position
            ),
            (3, 4, 13)
        );
        assert_eq!(ask(&[(1, None), (2, at(4, None))]).unwrap(), None);
    }

    #[test]
    fn other_content_in_place_is_a_conflict_naming_the_first_that_differs() {
        let error = ask(&[
            (1, at(3, Some(true))),
            (2, at(4, Some(false))),
            (3, at(5, Some(false))),
        ])
        .unwrap_err();
        assert_eq!(
            error,
            Error::EventConflict {
                id: EventId::from_u128(2).to_string(),
                stream: StreamId::from("s")
            }
        );
    }

    #[test]
    fn a_place_mismatch_outranks_a_content_mismatch() {
        let error = ask(&[(1, at(3, Some(false))), (2, at(7, Some(true)))]).unwrap_err();
        assert_eq!(
            error,
            Error::DuplicateEventId {
                id: EventId::from_u128(1).to_string()
            }
        );
    }

    #[test]
    fn same_content_compares_the_stored_encoding() {
        let event = |payload: f64| {
            Envelope::builder(
                EventId::from_u128(1),
                keel_core::EventType::from_static("a.b"),
                "test",
                keel_core::Timestamp::UNIX_EPOCH,
            )
            .payload(keel_core::Payload::Json(serde_json::json!(payload)))
            .build()
            .unwrap()
        };
        assert!(same_content(&event(1.5), &event(1.5)));
        assert!(!same_content(&event(1.5), &event(2.5)));
        assert_eq!(event(0.0), event(-0.0), "equal as values");
        assert!(!same_content(&event(0.0), &event(-0.0)), "not as stored");
    }
}
