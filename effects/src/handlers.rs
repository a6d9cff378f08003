//! The one handler registry: which [`Handler`](crate::handler::Handler) carries out which
//! intents. The in-memory [`Runtime`](crate::runtime::Runtime) and the durable shell
//! ([`durable`](crate::durable)) both perform through it.

use std::collections::HashMap;
use std::fmt;

use keel_core::{EventType, Intent, IntentKind};

use crate::handler::{Failure, SharedHandler};

/// Which handler carries out which intents: one per family, and one per name for custom
/// intents. Cheap to clone (the handlers are shared).
#[derive(Default, Clone)]
pub struct Handlers {
    notify: Option<SharedHandler>,
    persist: Option<SharedHandler>,
    http: Option<SharedHandler>,
    custom: HashMap<EventType, SharedHandler>,
}

impl fmt::Debug for Handlers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut custom: Vec<&str> = self.custom.keys().map(EventType::as_str).collect();
        custom.sort_unstable();
        f.debug_struct("Handlers")
            .field("notify", &self.notify.is_some())
            .field("persist", &self.persist.is_some())
            .field("http", &self.http.is_some())
            .field("custom", &custom)
            .finish()
    }
}

impl Handlers {
    /// No handlers: every intent fails as permanent, naming what is missing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Carries out `Notify` and `Request` intents with `handler` (usually a
    /// [`NotifyHandler`](crate::notify::NotifyHandler) wrapped in policies).
    pub fn notify(mut self, handler: SharedHandler) -> Self {
        self.notify = Some(handler);
        self
    }

    /// Carries out `Persist` intents with `handler` (usually a
    /// [`PersistHandler`](crate::persist::PersistHandler)).
    pub fn persist(mut self, handler: SharedHandler) -> Self {
        self.persist = Some(handler);
        self
    }

    /// Carries out `Http` intents with `handler` (usually this crate's `HttpHandler`,
    /// feature `http`, wrapped in policies).
    pub fn http(mut self, handler: SharedHandler) -> Self {
        self.http = Some(handler);
        self
    }

    /// Carries out `Custom` intents named `name` with `handler`.
    pub fn custom(mut self, name: EventType, handler: SharedHandler) -> Self {
        self.custom.insert(name, handler);
        self
    }

    /// The handler for `intent`, or the permanent failure to report when there is none.
    pub fn for_intent(&self, intent: &Intent) -> Result<SharedHandler, Failure> {
        let (handler, what) = match &intent.kind {
            IntentKind::Notify { .. } => (self.notify.as_ref(), "notify".to_owned()),
            // A request is a publish on the same bus, plus a wait for the reply.
            IntentKind::Request { .. } => (self.notify.as_ref(), "request".to_owned()),
            IntentKind::Persist { .. } => (self.persist.as_ref(), "persist".to_owned()),
            IntentKind::Http(_) => (self.http.as_ref(), "http".to_owned()),
            IntentKind::Custom { name, .. } => (self.custom.get(name), format!("custom `{name}`")),
            other => (None, other.family().to_owned()),
        };
        handler.cloned().ok_or_else(|| {
            Failure::permanent(format!("no handler is registered for {what} intents"))
        })
    }
}
