//! A circuit breaker: stop calling a handler that keeps failing, then probe it.
//!
//! [`Breaker`] is the pure state machine. Time is an input (`now_ms`, milliseconds on
//! any monotonic clock the caller picks):
//!
//! ```text
//!            failures_to_open consecutive failures
//!   Closed ─────────────────────────────────────────▶ Open { until_ms }
//!     ▲                                                  │ now_ms ≥ until_ms:
//!     │ probe succeeds                                   │ the next call is the probe
//!     └────────────── HalfOpen { probe } ◀───────────────┘
//!                         │ probe fails: Open again for open_ms
//! ```
//!
//! Only failures that say something about the other side count toward opening:
//! [`Transient`](FailureKind::Transient) and [`Timeout`](FailureKind::Timeout).
//! [`Permanent`](FailureKind::Permanent) ones (a 4xx, a refused address, bad input) are
//! about the request, and [`Unavailable`](FailureKind::Unavailable) ones mean it was
//! never attempted (a rate limit, a nested breaker); both leave the count alone, and a
//! probe that ends in one frees the probe slot without deciding anything.
//!
//! [`BreakerLayer`] carries the machine out, with tokio's clock as `now_ms`.

use std::sync::{Arc, Mutex};

use tokio::time::Instant;

use super::{lock, millis_since};
use crate::handler::{Call, Failure, FailureKind, Handler, HandlerFuture, Layer, SharedHandler};

/// When a [`Breaker`] opens and how it recovers.
///
/// Setters clamp their argument to at least 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    failures_to_open: u32,
    open_ms: u64,
    half_open_retry_after_ms: u64,
    probe_ms_max: u64,
}

impl BreakerConfig {
    /// The defaults: open after 5 consecutive failures, for 30 s; while a probe is in
    /// flight, others are told to come back in 1 s; a probe that has not reported after
    /// 60 s is presumed lost and another is let through.
    pub const fn new() -> Self {
        Self {
            failures_to_open: 5,
            open_ms: 30_000,
            half_open_retry_after_ms: 1_000,
            probe_ms_max: 60_000,
        }
    }

    /// Consecutive counted failures that open the circuit.
    #[must_use]
    pub fn failures_to_open(mut self, failures_to_open: u32) -> Self {
        self.failures_to_open = failures_to_open.max(1);
        self
    }

    /// How long the circuit stays open before it lets a probe through.
    #[must_use]
    pub fn open_ms(mut self, open_ms: u64) -> Self {
        self.open_ms = open_ms.max(1);
        self
    }

    /// The `retry_after_ms` given to calls rejected while a probe is in flight: its
    /// outcome is not known yet, so they are told to look again soon.
    #[must_use]
    pub fn half_open_retry_after_ms(mut self, half_open_retry_after_ms: u64) -> Self {
        self.half_open_retry_after_ms = half_open_retry_after_ms.max(1);
        self
    }

    /// How long a probe may stay unreported before another one is let through, so that a
    /// hung probe cannot keep the circuit half-open for ever.
    #[must_use]
    pub fn probe_ms_max(mut self, probe_ms_max: u64) -> Self {
        self.probe_ms_max = probe_ms_max.max(1);
        self
    }
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self::new()
    }
}

/// Where a [`Breaker`] stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls go through; counting consecutive failures.
    Closed {
        /// Counted failures since the last success.
        consecutive_failures: u32,
    },
    /// Calls are rejected until `until_ms`.
    Open {
        /// When the next call becomes a probe.
        until_ms: u64,
    },
    /// One probe may go through; its outcome closes or re-opens the circuit.
    HalfOpen {
        /// When the probe in flight was let through, if one is.
        probe_since_ms: Option<u64>,
    },
}

/// Whether a call may go through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// The circuit is closed: go ahead.
    Allowed,
    /// The circuit is half-open and this call is its one probe: go ahead and report.
    Probe,
    /// The circuit is open, or half-open with a probe in flight: do not call.
    Rejected {
        /// When it is worth asking again.
        retry_after_ms: u64,
    },
}

/// The circuit breaker's state machine, with time as an input.
///
/// ```
/// use keel_effects::FailureKind;
/// use keel_effects::policy::{Admission, Breaker, BreakerConfig};
/// let mut breaker = Breaker::new(BreakerConfig::default().failures_to_open(2).open_ms(1_000));
/// breaker.record_failure(0, FailureKind::Transient);
/// breaker.record_failure(10, FailureKind::Transient);
/// assert_eq!(breaker.admit(500), Admission::Rejected { retry_after_ms: 510 });
/// assert_eq!(breaker.admit(1_010), Admission::Probe);
/// breaker.record_success();
/// assert_eq!(breaker.admit(1_020), Admission::Allowed);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Breaker {
    config: BreakerConfig,
    state: BreakerState,
}

impl Breaker {
    /// A closed breaker.
    pub const fn new(config: BreakerConfig) -> Self {
        Self {
            config,
            state: BreakerState::Closed {
                consecutive_failures: 0,
            },
        }
    }

    /// The current state.
    pub const fn state(&self) -> BreakerState {
        self.state
    }

    /// Whether failures of `kind` count toward opening the circuit.
    pub const fn counts(kind: FailureKind) -> bool {
        matches!(kind, FailureKind::Transient | FailureKind::Timeout)
    }

    /// Asks to make a call at `now_ms`. A [`Probe`](Admission::Probe) must be followed
    /// by [`record_success`](Self::record_success),
    /// [`record_failure`](Self::record_failure) or
    /// [`release_probe`](Self::release_probe).
    pub fn admit(&mut self, now_ms: u64) -> Admission {
        match self.state {
            BreakerState::Closed { .. } => Admission::Allowed,
            BreakerState::Open { until_ms } if now_ms < until_ms => Admission::Rejected {
                retry_after_ms: until_ms - now_ms,
            },
            BreakerState::Open { .. }
            | BreakerState::HalfOpen {
                probe_since_ms: None,
            } => {
                self.state = BreakerState::HalfOpen {
                    probe_since_ms: Some(now_ms),
                };
                Admission::Probe
            }
            BreakerState::HalfOpen {
                probe_since_ms: Some(since_ms),
            } => {
                let presumed_lost_ms = since_ms.saturating_add(self.config.probe_ms_max);
                if now_ms >= presumed_lost_ms {
                    self.state = BreakerState::HalfOpen {
                        probe_since_ms: Some(now_ms),
                    };
                    return Admission::Probe;
                }
                Admission::Rejected {
                    retry_after_ms: self
                        .config
                        .half_open_retry_after_ms
                        .min(presumed_lost_ms - now_ms),
                }
            }
        }
    }

    /// A call succeeded: reset the count, or close the circuit after a probe. A late
    /// success while open (from a call let through before it opened) changes nothing:
    /// the circuit recovers through a probe only.
    pub fn record_success(&mut self) {
        match self.state {
            BreakerState::Closed { .. } | BreakerState::HalfOpen { .. } => {
                self.state = BreakerState::Closed {
                    consecutive_failures: 0,
                };
            }
            BreakerState::Open { .. } => {}
        }
    }

    /// A call failed at `now_ms` with a failure of `kind`. Counted kinds (see
    /// [`counts`](Self::counts)) open the circuit after `failures_to_open` in a row, or
    /// re-open it after a probe; other kinds only free the probe slot.
    pub fn record_failure(&mut self, now_ms: u64, kind: FailureKind) {
        if !Self::counts(kind) {
            self.release_probe();
            return;
        }
        match self.state {
            BreakerState::Closed {
                consecutive_failures,
            } => {
                let consecutive_failures = consecutive_failures.saturating_add(1);
                self.state = if consecutive_failures >= self.config.failures_to_open {
                    self.open_state(now_ms)
                } else {
                    BreakerState::Closed {
                        consecutive_failures,
                    }
                };
            }
            BreakerState::HalfOpen { .. } => self.state = self.open_state(now_ms),
            BreakerState::Open { .. } => {}
        }
    }

    /// The probe in flight will not report (its caller went away): let the next call
    /// probe instead.
    pub fn release_probe(&mut self) {
        if let BreakerState::HalfOpen { .. } = self.state {
            self.state = BreakerState::HalfOpen {
                probe_since_ms: None,
            };
        }
    }

    const fn open_state(&self, now_ms: u64) -> BreakerState {
        BreakerState::Open {
            until_ms: now_ms.saturating_add(self.config.open_ms),
        }
    }
}

/// Puts a circuit breaker in front of the wrapped handler.
///
/// Each handler this layer wraps gets its own [`Breaker`], created by
/// [`layer`](Layer::layer): one circuit per handler, shared by every instance and every
/// intent that goes through it. A rejected call fails with
/// [`FailureKind::Unavailable`] and `retry_after` set to when the circuit will let a
/// probe through, without calling the handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BreakerLayer {
    config: BreakerConfig,
}

impl BreakerLayer {
    /// A layer whose breakers follow `config`.
    pub const fn new(config: BreakerConfig) -> Self {
        Self { config }
    }
}

impl Layer for BreakerLayer {
    fn layer(&self, inner: SharedHandler) -> SharedHandler {
        Arc::new(CircuitBreaker {
            inner,
            breaker: Arc::new(Mutex::new(Breaker::new(self.config))),
            origin: Instant::now(),
        })
    }
}

struct CircuitBreaker {
    inner: SharedHandler,
    breaker: Arc<Mutex<Breaker>>,
    origin: Instant,
}

impl Handler for CircuitBreaker {
    fn call(&self, call: Call) -> HandlerFuture {
        let inner = Arc::clone(&self.inner);
        let breaker = Arc::clone(&self.breaker);
        let origin = self.origin;
        Box::pin(async move {
            let admission = lock(&breaker).admit(millis_since(origin));
            let mut probe = match admission {
                Admission::Allowed => ProbeGuard(None),
                Admission::Probe => ProbeGuard(Some(Arc::clone(&breaker))),
                Admission::Rejected { retry_after_ms } => {
                    return Err(Failure::unavailable(format!(
                        "circuit open after repeated failures of this effect: not attempted; \
                         it lets a probe through in {retry_after_ms} ms"
                    ))
                    .retry_after(std::time::Duration::from_millis(retry_after_ms)));
                }
            };
            let result = inner.call(call).await;
            probe.disarm();
            let mut breaker = lock(&breaker);
            match &result {
                Ok(_) => breaker.record_success(),
                Err(failure) => breaker.record_failure(millis_since(origin), failure.kind),
            }
            result
        })
    }
}

/// Frees the probe slot if the probe's future is dropped before it reports (a timeout
/// outside, a shutdown), so the circuit does not wait `probe_ms_max` for it.
struct ProbeGuard(Option<Arc<Mutex<Breaker>>>);

impl ProbeGuard {
    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for ProbeGuard {
    fn drop(&mut self) {
        if let Some(breaker) = self.0.take() {
            lock(&breaker).release_probe();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(failures_to_open: u32, open_ms: u64) -> Breaker {
        Breaker::new(
            BreakerConfig::default()
                .failures_to_open(failures_to_open)
                .open_ms(open_ms),
        )
    }

    fn open(breaker: &mut Breaker, now_ms: u64) {
        for _ in 0..breaker.config.failures_to_open {
            breaker.record_failure(now_ms, FailureKind::Transient);
        }
        assert!(matches!(breaker.state(), BreakerState::Open { .. }));
    }

    #[test]
    fn it_opens_after_the_configured_consecutive_failures() {
        let mut breaker = breaker(3, 1_000);
        breaker.record_failure(0, FailureKind::Transient);
        breaker.record_failure(1, FailureKind::Timeout);
        assert_eq!(breaker.admit(2), Admission::Allowed);
        breaker.record_failure(2, FailureKind::Transient);
        assert_eq!(breaker.state(), BreakerState::Open { until_ms: 1_002 });
    }

    #[test]
    fn a_success_resets_the_count() {
        let mut breaker = breaker(2, 1_000);
        breaker.record_failure(0, FailureKind::Transient);
        breaker.record_success();
        breaker.record_failure(1, FailureKind::Transient);
        assert_eq!(
            breaker.state(),
            BreakerState::Closed {
                consecutive_failures: 1
            }
        );
    }

    #[test]
    fn permanent_and_unavailable_failures_do_not_count() {
        let mut breaker = breaker(1, 1_000);
        breaker.record_failure(0, FailureKind::Permanent);
        breaker.record_failure(0, FailureKind::Unavailable);
        assert_eq!(breaker.admit(0), Admission::Allowed);
    }

    #[test]
    fn it_rejects_while_open_with_the_time_left() {
        let mut breaker = breaker(1, 1_000);
        open(&mut breaker, 100);
        assert_eq!(
            breaker.admit(100),
            Admission::Rejected {
                retry_after_ms: 1_000
            }
        );
        assert_eq!(
            breaker.admit(850),
            Admission::Rejected {
                retry_after_ms: 250
            }
        );
    }

    #[test]
    fn half_open_admits_exactly_one_probe() {
        let mut breaker = breaker(1, 1_000);
        open(&mut breaker, 0);
        assert_eq!(breaker.admit(1_000), Admission::Probe);
        assert_eq!(
            breaker.admit(1_001),
            Admission::Rejected {
                retry_after_ms: 1_000
            }
        );
        assert_eq!(
            breaker.state(),
            BreakerState::HalfOpen {
                probe_since_ms: Some(1_000)
            }
        );
    }

    #[test]
    fn a_successful_probe_closes_the_circuit() {
        let mut breaker = breaker(1, 1_000);
        open(&mut breaker, 0);
        assert_eq!(breaker.admit(1_000), Admission::Probe);
        breaker.record_success();
        assert_eq!(breaker.admit(1_001), Admission::Allowed);
    }

    #[test]
    fn a_failed_probe_reopens_the_circuit_for_open_ms() {
        let mut breaker = breaker(1, 1_000);
        open(&mut breaker, 0);
        assert_eq!(breaker.admit(1_500), Admission::Probe);
        breaker.record_failure(1_600, FailureKind::Timeout);
        assert_eq!(breaker.state(), BreakerState::Open { until_ms: 2_600 });
        assert_eq!(
            breaker.admit(1_600),
            Admission::Rejected {
                retry_after_ms: 1_000
            }
        );
    }

    #[test]
    fn a_probe_ending_in_an_uncounted_failure_frees_the_slot() {
        let mut breaker = breaker(1, 1_000);
        open(&mut breaker, 0);
        assert_eq!(breaker.admit(1_000), Admission::Probe);
        breaker.record_failure(1_010, FailureKind::Permanent);
        assert_eq!(breaker.admit(1_020), Admission::Probe);
    }

    #[test]
    fn a_released_or_lost_probe_lets_another_through() {
        let mut breaker = Breaker::new(
            BreakerConfig::default()
                .failures_to_open(1)
                .open_ms(1_000)
                .probe_ms_max(5_000),
        );
        open(&mut breaker, 0);
        assert_eq!(breaker.admit(1_000), Admission::Probe);
        breaker.release_probe();
        assert_eq!(breaker.admit(1_001), Admission::Probe);
        // Not released: the next probe waits until the first is presumed lost.
        assert_eq!(
            breaker.admit(5_500),
            Admission::Rejected {
                retry_after_ms: 501
            }
        );
        assert_eq!(breaker.admit(6_001), Admission::Probe);
    }

    #[test]
    fn a_late_success_does_not_close_an_open_circuit() {
        let mut breaker = breaker(1, 1_000);
        open(&mut breaker, 0);
        breaker.record_success();
        assert!(matches!(breaker.admit(1), Admission::Rejected { .. }));
    }
}
