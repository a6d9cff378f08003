//! The HTTP handler: carries out [`IntentKind::Http`] intents with one shared
//! `reqwest` client, guarded against server-side request forgery.
//!
//! # One attempt
//!
//! [`HttpHandler`] performs each call once; retrying is the retry layer's job, and it
//! decides from the [`FailureKind`](crate::FailureKind) this handler reports. Every
//! request carries `Idempotency-Key: <call.idempotency_key()>` (the intent id unless the
//! request overrides it), so the attempts of one intent have one visible effect on a
//! server that honours the header. The request's headers follow, then its body:
//! `Json` as `application/json`, `Text` as `text/plain; charset=utf-8`, `Bytes` as
//! `application/octet-stream` (a `content-type` among the request's headers wins).
//!
//! The intent's `timeout_ms` (capped by [`HttpConfig::timeout_ms_max`]) bounds the whole
//! exchange: connecting, sending, and reading the body to the end. The body is read
//! chunk by chunk and the call fails as soon as it passes
//! [`HttpConfig::response_bytes_max`] (or as soon as `Content-Length` says it will), so
//! no more than the cap is ever held.
//!
//! # The success value
//!
//! A 2xx (or a 304 to a conditional request) resolves to:
//!
//! ```json
//! {
//!   "status": 201,
//!   "headers": { "content-type": "application/json", "x-request-id": "abc" },
//!   "body": { "charge": "ch_42" },
//!   "body_encoding": "json"
//! }
//! ```
//!
//! - `headers`: lowercase names; repeated headers joined with `", "`; at most 64 of
//!   them, values over 1 KiB or not visible ASCII dropped, `set-cookie` left out (the
//!   value is recorded in the event log, where credentials do not belong).
//! - `body` and `body_encoding`: the parsed document and `"json"` when the
//!   `content-type` is `application/json` or `*+json` and the body parses; else the text
//!   and `"text"` when it is UTF-8; else standard base64 and `"base64"`; `null` and
//!   `"empty"` when there is no body.
//!
//! # Failures
//!
//! | What happened | [`FailureKind`](crate::FailureKind) | `retry_after` |
//! |---|---|---|
//! | 5xx | `Transient` | from `Retry-After`, if sent |
//! | 408, 425, 429 | `Unavailable`: the server did not act on the request | from `Retry-After` (seconds or HTTP-date), capped at 1 hour |
//! | other 4xx | `Permanent` | |
//! | 3xx other than 304 | `Permanent`: redirects are not followed | |
//! | no connection, reset, broken body | `Transient` | |
//! | `timeout_ms` ran out | `Timeout` | |
//! | refused by the guard, invalid URL, header or body, body over the cap, not an http intent | `Permanent` | |
//!
//! A failure after which the request may have taken effect though its kind is
//! `Permanent` is marked [`Failure::maybe_applied`]: a 2xx whose body is over the cap,
//! and a redirect other than 304, 307 and 308, for every method but `GET` and `HEAD`.
//!
//! The reason names the method and host (never the full URL, whose query may hold
//! secrets) and, for an error status, the start of the response body (at most 512 bytes).
//! Every reason is scrubbed of the request's credentials (the values of its
//! `Authorization`, `Cookie`, `Proxy-Authorization` and `Set-Cookie` headers and of those
//! it marks sensitive; see [`keel_core::redact`]), which a server may echo in its error
//! body: the reason goes on to the log, the reducer and the dead letters. The request on
//! the wire carries the real values.
//!
//! Redirects are not followed: the target of a redirect is chosen by the server and
//! could be an address the guard refuses, and following one safely would mean checking
//! every hop again. A workflow that meets a redirect should call the final URL.
//!
//! # The guard
//!
//! By default the handler refuses to call loopback (127/8, ::1), private (10/8,
//! 172.16/12, 192.168/16, fc00::/7), link-local (169.254/16, fe80::/10), unspecified
//! (0.0.0.0, ::), shared (100.64/10), multicast, broadcast and reserved addresses, and
//! IPv6 forms that embed one of them (`::ffff:127.0.0.1`). [`HttpConfig::allow_hosts`]
//! lists exceptions by host name or IP literal, optionally with a port
//! (`"billing.internal:8443"`; a host listed with ports may be called on those ports
//! only). [`HttpConfig::only_allowed_hosts`] refuses every host not listed. Only `http`
//! and `https` are allowed.
//!
//! The check runs on the addresses actually connected to: the client resolves names
//! through the guard, which drops forbidden addresses of hosts not listed, so a name
//! that resolves to `127.0.0.1` (`localhost`, or a rebinding attacker's domain) is
//! refused like the literal. IP literals are checked before anything is sent. The client
//! ignores proxy settings from the environment, which would bypass the check.

mod address;
mod classify;
mod guard;
mod request;
mod response;

pub use self::request::{REQUEST_HEADER_BYTES_MAX, REQUEST_HEADERS_MAX};

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use keel_core::{HttpMethod, HttpRequest, IntentKind};
use reqwest::header::{LOCATION, RETRY_AFTER};
use reqwest::{RequestBuilder, Url};

use self::classify::{classify_status, transport_failure};
use self::guard::Guard;
use self::response::{error_body, read_capped, success};
use crate::Error;
use crate::handler::{Call, Failure, Handler, HandlerFuture, HandlerResult};

/// The default of [`HttpConfig::response_bytes_max`]: 1 MiB.
pub const RESPONSE_BYTES_MAX_DEFAULT: usize = 1024 * 1024;

/// The highest [`HttpConfig::response_bytes_max`] accepted: 64 MiB. A bigger document
/// does not belong in an event log; fetch it outside the workflow and pass a reference.
pub const RESPONSE_BYTES_MAX_LIMIT: usize = 64 * 1024 * 1024;

/// The default of [`HttpConfig::timeout_ms_max`]: 5 minutes.
pub const TIMEOUT_MS_MAX_DEFAULT: u64 = 5 * 60 * 1000;

/// How an [`HttpHandler`] behaves.
///
/// ```
/// use keel_effects::http::{HttpConfig, HttpHandler};
/// let config = HttpConfig {
///     allow_hosts: vec!["billing.internal:8443".into()],
///     ..HttpConfig::default()
/// };
/// let handler = HttpHandler::new(config).expect("a valid configuration");
/// # drop(handler);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpConfig {
    /// Hosts that may be called even though they are (or resolve to) addresses the guard
    /// refuses: host names or IP literals as written in URLs, optionally with a port
    /// (`"127.0.0.1"`, `"billing.internal:8443"`, `"[::1]:8080"`). At most 1024.
    pub allow_hosts: Vec<String>,
    /// Refuse every host not in `allow_hosts`, public ones included. Default `false`.
    pub only_allowed_hosts: bool,
    /// The largest response body read; a larger one fails the call as `Permanent`.
    /// Default [`RESPONSE_BYTES_MAX_DEFAULT`], at most [`RESPONSE_BYTES_MAX_LIMIT`].
    pub response_bytes_max: usize,
    /// The longest timeout an intent may ask for; longer ones are cut to this. Default
    /// [`TIMEOUT_MS_MAX_DEFAULT`].
    pub timeout_ms_max: u64,
    /// The `User-Agent` sent unless a request sets its own. Default `keel/<version>`.
    pub user_agent: String,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            allow_hosts: Vec::new(),
            only_allowed_hosts: false,
            response_bytes_max: RESPONSE_BYTES_MAX_DEFAULT,
            timeout_ms_max: TIMEOUT_MS_MAX_DEFAULT,
            user_agent: concat!("keel/", env!("CARGO_PKG_VERSION")).to_owned(),
        }
    }
}

/// Performs [`IntentKind::Http`] intents; see the [module docs](self) for what it sends,
/// what a success resolves to, and how failures are classified.
///
/// Cheap to clone: clones share one connection pool.
#[derive(Debug, Clone)]
pub struct HttpHandler {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    client: reqwest::Client,
    guard: Arc<Guard>,
    response_bytes_max: usize,
    timeout_ms_max: u64,
}

impl HttpHandler {
    /// Builds the handler and its client, or says which setting is wrong.
    pub fn new(config: HttpConfig) -> Result<Self, Error> {
        if !(1..=RESPONSE_BYTES_MAX_LIMIT).contains(&config.response_bytes_max) {
            return Err(Error::InvalidConfig {
                setting: "response_bytes_max",
                reason: format!(
                    "{} is outside 1..={RESPONSE_BYTES_MAX_LIMIT}: pick a cap in that range",
                    config.response_bytes_max
                ),
            });
        }
        if config.timeout_ms_max == 0 {
            return Err(Error::InvalidConfig {
                setting: "timeout_ms_max",
                reason: "0 would time out every request: use at least 1".into(),
            });
        }
        let guard = Arc::new(Guard::new(&config.allow_hosts, config.only_allowed_hosts)?);
        let client = guard::client(Arc::clone(&guard), &config.user_agent)?;
        Ok(Self {
            shared: Arc::new(Shared {
                client,
                guard,
                response_bytes_max: config.response_bytes_max,
                timeout_ms_max: config.timeout_ms_max,
            }),
        })
    }
}

impl Handler for HttpHandler {
    fn call(&self, call: Call) -> HandlerFuture {
        let shared = Arc::clone(&self.shared);
        Box::pin(async move { shared.perform(call).await })
    }
}

impl Shared {
    async fn perform(&self, call: Call) -> HandlerResult {
        let IntentKind::Http(request) = &call.intent.kind else {
            return Err(Failure::permanent(format!(
                "intent {} is a {} intent, not an http intent: register its own handler for it",
                call.intent.id,
                call.intent.kind.family()
            )));
        };
        let started = Instant::now();
        let mut host = String::new();
        let mut status = None;
        let mut result = self.attempt(&call, request, &mut host, &mut status).await;
        // What the other side said (an error body, a redirect's target) may quote the
        // request's credentials; the reason goes on to logs and dead letters.
        if let Err(failure) = &mut result
            && let Cow::Owned(scrubbed) = request.scrub(&failure.reason)
        {
            failure.reason = scrubbed;
        }
        tracing::debug!(
            intent = %call.intent.id,
            attempt = call.attempt,
            method = request.method.as_str(),
            host = %host,
            status,
            elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            failure = result.as_ref().err().map(|f| tracing::field::debug(f.kind)),
            reason = result.as_ref().err().map(|f| f.reason.as_str()),
            "http request",
        );
        result
    }

    /// One attempt; `host` and `status` are filled in as they become known, for the log.
    async fn attempt(
        &self,
        call: &Call,
        request: &HttpRequest,
        host: &mut String,
        status: &mut Option<u16>,
    ) -> HandlerResult {
        // The URL is not quoted back: its query may hold secrets.
        let url = Url::parse(&request.url).map_err(|err| {
            Failure::permanent(format!("the url is not a valid absolute URL: {err}"))
        })?;
        host.push_str(url.host_str().unwrap_or_default());
        let target = format!("{} {host}", request.method);
        self.guard
            .check_url(&url)
            .map_err(|refusal| Failure::permanent(refusal.to_string()))?;
        let builder = request::build(&self.client, request, url, &call.idempotency_key())?;
        let timeout_ms = request.timeout_ms.min(self.timeout_ms_max);
        tokio::time::timeout(
            Duration::from_millis(timeout_ms),
            self.exchange(&target, request, builder, status),
        )
        .await
        .unwrap_or_else(|_| {
            Err(Failure::timeout(format!(
                "{target} did not answer in full within {timeout_ms} ms"
            )))
        })
    }

    /// Sends, classifies the status, reads the body within the cap.
    async fn exchange(
        &self,
        target: &str,
        request: &HttpRequest,
        builder: RequestBuilder,
        status: &mut Option<u16>,
    ) -> HandlerResult {
        let mut response = builder
            .send()
            .await
            .map_err(|err| transport_failure(target, err))?;
        let code = response.status().as_u16();
        *status = Some(code);
        let header = |name| {
            response
                .headers()
                .get(name)
                .and_then(|value| value.to_str().ok())
        };
        let verdict = classify_status(
            target,
            code,
            header(RETRY_AFTER),
            header(LOCATION),
            SystemTime::now(),
        );
        // A request that changes something may have done so before a redirect (a 303
        // after a POST) or a success too big to read: say so, so a saga does not take
        // the failure as proof that nothing happened. 307 and 308 ask for the request
        // to be made again elsewhere: it was not carried out.
        let acted = |failure: Failure| match request.method {
            HttpMethod::Get | HttpMethod::Head => failure,
            _ => failure.maybe_applied(),
        };
        if let Err(mut failure) = verdict {
            let start = error_body(&mut response, request).await;
            if !start.is_empty() {
                failure.reason.push_str(": ");
                failure.reason.push_str(&start);
            }
            if (300..=399).contains(&code) && !matches!(code, 304 | 307 | 308) {
                failure = acted(failure);
            }
            return Err(failure);
        }
        let body = read_capped(target, &mut response, self.response_bytes_max)
            .await
            .map_err(acted)?;
        Ok(success(code, response.headers(), &body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handler::{FailureKind, InstanceId};
    use crate::metrics::Metrics;
    use keel_core::{Cause, Intent, TimerId, Timestamp};

    #[test]
    fn bad_configuration_is_refused_with_the_setting_named() {
        let cases = [
            (
                HttpConfig {
                    response_bytes_max: 0,
                    ..HttpConfig::default()
                },
                "response_bytes_max",
            ),
            (
                HttpConfig {
                    timeout_ms_max: 0,
                    ..HttpConfig::default()
                },
                "timeout_ms_max",
            ),
            (
                HttpConfig {
                    user_agent: "a\nb".into(),
                    ..HttpConfig::default()
                },
                "user_agent",
            ),
            (
                HttpConfig {
                    allow_hosts: vec!["a/b".into()],
                    ..HttpConfig::default()
                },
                "allow_hosts",
            ),
        ];
        for (config, expected) in cases {
            match HttpHandler::new(config) {
                Err(Error::InvalidConfig { setting, .. }) => assert_eq!(setting, expected),
                other => panic!("{expected}: {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn other_intent_kinds_are_refused_as_permanent() {
        let handler = HttpHandler::new(HttpConfig::default()).unwrap();
        let intent = Intent {
            id: Cause::root(1).intent_id(0),
            kind: IntentKind::ScheduleTimer {
                timer: TimerId::from("t"),
                due: Timestamp::from_unix_millis(0),
            },
        };
        let call = Call::new(intent, InstanceId::from("test"), Metrics::default());
        let failure = handler.call(call).await.unwrap_err();
        assert_eq!(failure.kind, FailureKind::Permanent);
        assert!(
            failure.reason.contains("not an http intent"),
            "{}",
            failure.reason
        );
    }

    #[tokio::test]
    async fn an_invalid_url_is_permanent() {
        let handler = HttpHandler::new(HttpConfig::default()).unwrap();
        let intent = Intent {
            id: Cause::root(1).intent_id(0),
            kind: HttpRequest::get("not a url").into(),
        };
        let call = Call::new(intent, InstanceId::from("test"), Metrics::default());
        let failure = handler.call(call).await.unwrap_err();
        assert_eq!(failure.kind, FailureKind::Permanent);
        assert!(
            failure.reason.contains("not a valid absolute URL"),
            "{}",
            failure.reason
        );
    }
}
