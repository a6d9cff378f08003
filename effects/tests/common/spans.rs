//! A `tracing` subscriber that keeps every span opened and every event logged while it
//! is the default, for tests that assert on the spans the runtime creates and on what
//! its log lines say.
//!
//! Written by hand against `tracing`'s `Subscriber` trait rather than taken from
//! `tracing-subscriber`: all it has to do is number spans and keep their names, fields
//! and parents, and keep each event's fields, which is less code than a dev-dependency
//! is worth.
//!
//! Install it with [`Spans::install`], which makes it the default of the calling thread
//! only: run the test on a current-thread runtime (the `#[tokio::test]` default) so that
//! every task reports here, and other tests running in parallel report elsewhere.
//!
//! It does not answer `Span::current()` (`tracing` does not re-export the type that
//! needs, and nothing asserted here calls it); parents are still recorded, from the
//! spans entered when a span is opened.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tracing::dispatcher::DefaultGuard;
use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::Interest;
use tracing::{Event, Metadata, Subscriber};

/// One span as it was opened, with the fields recorded on it since.
#[derive(Debug, Clone)]
pub(crate) struct CapturedSpan {
    /// The span's name (`keel.action`).
    pub(crate) name: &'static str,
    /// Each field by name, formatted as the `fmt` layer would (`%` fields as Display).
    pub(crate) fields: BTreeMap<&'static str, String>,
    /// The span it was opened inside, if any.
    pub(crate) parent: Option<u64>,
}

impl CapturedSpan {
    /// The value of field `name`, if it was recorded.
    pub(crate) fn field(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(String::as_str)
    }
}

/// The spans captured so far; clones share them.
#[derive(Debug, Clone, Default)]
pub(crate) struct Spans {
    shared: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    spans: Mutex<Vec<CapturedSpan>>,
    /// Each event's fields (its message as `message`), in the order logged.
    events: Mutex<Vec<BTreeMap<&'static str, String>>>,
    /// The spans entered and not yet exited, innermost last.
    entered: Mutex<Vec<u64>>,
}

impl Spans {
    /// Makes a fresh capture the calling thread's subscriber until the guard is dropped.
    pub(crate) fn install() -> (Self, DefaultGuard) {
        static GLOBAL: std::sync::Once = std::sync::Once::new();
        GLOBAL.call_once(|| {
            // Fails only if another global subscriber is set, which serves as well.
            let _ = tracing::subscriber::set_global_default(Nothing);
        });
        let spans = Self::default();
        let guard = tracing::subscriber::set_default(spans.clone());
        (spans, guard)
    }

    /// Every span opened so far named `name`, in the order they were opened.
    pub(crate) fn named(&self, name: &str) -> Vec<CapturedSpan> {
        lock(&self.shared.spans)
            .iter()
            .filter(|span| span.name == name)
            .cloned()
            .collect()
    }

    /// Every event logged so far, one line each: its fields as `name=value`.
    pub(crate) fn event_lines(&self) -> Vec<String> {
        lock(&self.shared.events)
            .iter()
            .map(|fields| {
                let fields: Vec<String> = fields
                    .iter()
                    .map(|(name, value)| format!("{name}={value}"))
                    .collect();
                fields.join(" ")
            })
            .collect()
    }

    /// The spans that `span` was opened inside, innermost first.
    pub(crate) fn ancestors(&self, span: &CapturedSpan) -> Vec<CapturedSpan> {
        let spans = lock(&self.shared.spans);
        // Bounded: a parent is always opened before its child, so ids only go down.
        std::iter::successors(span.parent, |&id| spans[index_of(id)].parent)
            .map(|id| spans[index_of(id)].clone())
            .collect()
    }
}

/// Locks `mutex` even after a panic elsewhere: a failed assertion in one test must not
/// turn into a poisoned-lock panic that hides it.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Spans are numbered from 1 (an `Id` may not be 0) by their index in `spans`, and never
/// closed, so an id is never reused within one capture.
fn index_of(id: u64) -> usize {
    usize::try_from(id - 1).expect("span ids index a vector")
}

impl Subscriber for Spans {
    fn enabled(&self, _metadata: &Metadata<'_>) -> bool {
        true
    }

    fn new_span(&self, attributes: &Attributes<'_>) -> Id {
        let parent = match attributes.parent() {
            Some(parent) => Some(parent.into_u64()),
            None if attributes.is_contextual() => lock(&self.shared.entered).last().copied(),
            None => None,
        };
        let mut fields = Fields::default();
        attributes.record(&mut fields);
        let mut spans = lock(&self.shared.spans);
        let id = spans.len() as u64 + 1;
        spans.push(CapturedSpan {
            name: attributes.metadata().name(),
            fields: fields.0,
            parent,
        });
        Id::from_u64(id)
    }

    fn record(&self, span: &Id, values: &Record<'_>) {
        let mut fields = Fields::default();
        values.record(&mut fields);
        if let Some(span) = lock(&self.shared.spans).get_mut(index_of(span.into_u64())) {
            span.fields.extend(fields.0);
        }
    }

    fn record_follows_from(&self, _span: &Id, _follows: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        lock(&self.shared.events).push(fields.0);
    }

    fn enter(&self, span: &Id) {
        lock(&self.shared.entered).push(span.into_u64());
    }

    fn exit(&self, span: &Id) {
        let mut entered = lock(&self.shared.entered);
        if let Some(at) = entered.iter().rposition(|id| *id == span.into_u64()) {
            entered.remove(at);
        }
    }
}

/// The global subscriber of the test binary: it takes nothing. With it, a capture is
/// never the only subscriber registered, and `tracing` asks each of them whether a
/// callsite is of interest. When just one is registered, it asks the calling thread's
/// default instead, so a log line first reached on another test's thread (one without a
/// capture) would be cached as of no interest, and lost to every capture after.
struct Nothing;

impl Subscriber for Nothing {
    fn register_callsite(&self, _metadata: &'static Metadata<'static>) -> Interest {
        Interest::never()
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(LevelFilter::OFF)
    }

    fn enabled(&self, _metadata: &Metadata<'_>) -> bool {
        false
    }

    fn new_span(&self, _attributes: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }

    fn record(&self, _span: &Id, _values: &Record<'_>) {}

    fn record_follows_from(&self, _span: &Id, _follows: &Id) {}

    fn event(&self, _event: &Event<'_>) {}

    fn enter(&self, _span: &Id) {}

    fn exit(&self, _span: &Id) {}
}

/// Collects a span's fields as text.
#[derive(Default)]
struct Fields(BTreeMap<&'static str, String>);

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name(), value.to_owned());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(field.name(), format!("{value:?}"));
    }
}
