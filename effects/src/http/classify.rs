//! From what happened on the wire to a [`Failure`] the retry policy can decide on.
//!
//! Everything here is a pure function of its inputs (the wall-clock `now` included), so
//! the table in the module docs of [`http`](super) is tested without a server.

use std::error::Error as StdError;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::StatusCode;

use super::guard::Refusal;
use crate::handler::{Failure, FailureKind};

/// The longest `Retry-After` honoured: a server asking for more is asking to give up,
/// which is the retry policy's call, not the server's.
pub(crate) const RETRY_AFTER_MS_MAX: u64 = 60 * 60 * 1000;

/// The most bytes of a text from the other side (an error body, a header, an error's
/// description) kept in a failure's reason.
pub(crate) const DETAIL_BYTES_MAX: usize = 512;

/// Classifies a response status: `Ok(())` for a success, else the failure.
///
/// `target` names the request in the reason (`POST api.example.com`); `retry_after` and
/// `location` are the raw header values, when present.
pub(crate) fn classify_status(
    target: &str,
    status: u16,
    retry_after: Option<&str>,
    location: Option<&str>,
    now: SystemTime,
) -> Result<(), Failure> {
    let shown = StatusCode::from_u16(status)
        .ok()
        .and_then(|code| code.canonical_reason())
        .map_or_else(|| status.to_string(), |text| format!("{status} {text}"));
    let answered = format!("{target} answered {shown}");
    let kind = match status {
        200..=299 => return Ok(()),
        // Only a conditional request (If-None-Match, If-Modified-Since) gets a 304, and
        // for it "not modified" is the answer, not a failure.
        304 => return Ok(()),
        300..=399 => {
            let to = location.map_or_else(String::new, |l| format!(" to {}", truncate(l)));
            return Err(Failure::permanent(format!(
                "{answered}, a redirect{to}: redirects are not followed, because the target could be an address the guard refuses; call the final URL directly"
            )));
        }
        // Request Timeout, Too Early, Too Many Requests: the server asks to come back
        // and says it did not act on the request (RFC 9110 15.5.9, RFC 8470 5.2, RFC
        // 6585 4): not attempted, so a saga knows the effect did not happen. A 5xx may
        // come after the work was done, so it stays transient.
        408 | 425 | 429 => FailureKind::Unavailable,
        400..=499 => FailureKind::Permanent,
        500..=599 => FailureKind::Transient,
        _ => {
            return Err(Failure::permanent(format!(
                "{answered}, which is not a final HTTP status"
            )));
        }
    };
    let failure = Failure::new(kind, answered);
    let delay_ms = retry_after.and_then(|value| retry_after_ms(value, now));
    Err(match delay_ms {
        Some(delay_ms) if kind.is_retryable() => {
            failure.retry_after(Duration::from_millis(delay_ms))
        }
        _ => failure,
    })
}

/// What went wrong below HTTP, as far as retrying is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Transport {
    /// The guard refused the resolved addresses.
    Refused(String),
    /// The request could not be built: it will not get better.
    Invalid,
    /// No connection: refused, unreachable, name not resolved, TLS handshake failed.
    Connect,
    /// The connection broke during the exchange (reset, closed early).
    Broken,
    /// The client's own timer ran out.
    TimedOut,
}

impl Transport {
    /// Reads the class from reqwest's error, looking through its sources for a refusal.
    pub(crate) fn of(err: &reqwest::Error) -> Self {
        let mut source: Option<&(dyn StdError + 'static)> = err.source();
        while let Some(cause) = source {
            if let Some(refusal) = cause.downcast_ref::<Refusal>() {
                return Self::Refused(refusal.to_string());
            }
            source = cause.source();
        }
        if err.is_builder() {
            Self::Invalid
        } else if err.is_timeout() {
            Self::TimedOut
        } else if err.is_connect() {
            Self::Connect
        } else {
            Self::Broken
        }
    }
}

/// The failure for a transport problem; `detail` is the error's description.
pub(crate) fn classify_transport(target: &str, transport: Transport, detail: &str) -> Failure {
    let detail = truncate(detail);
    match transport {
        Transport::Refused(reason) => Failure::permanent(reason),
        Transport::Invalid => Failure::permanent(format!("{target} could not be sent: {detail}")),
        Transport::Connect => Failure::transient(format!("{target}: no connection: {detail}")),
        Transport::Broken => {
            Failure::transient(format!("{target}: the connection broke: {detail}"))
        }
        Transport::TimedOut => Failure::timeout(format!("{target}: timed out: {detail}")),
    }
}

/// The failure for an error from reqwest.
pub(crate) fn transport_failure(target: &str, err: reqwest::Error) -> Failure {
    let transport = Transport::of(&err);
    classify_transport(target, transport, &describe(err))
}

/// An error and its sources as one line, without the URL (which may carry secrets in its
/// query and is in the intent anyway).
pub(crate) fn describe(err: reqwest::Error) -> String {
    let err = err.without_url();
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The delay a `Retry-After` value asks for, capped at [`RETRY_AFTER_MS_MAX`]: either
/// delay-seconds or an HTTP-date (then relative to `now`, zero if past). `None` when the
/// value is neither.
pub(crate) fn retry_after_ms(value: &str, now: SystemTime) -> Option<u64> {
    let value = value.trim();
    let delay_ms = if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // All digits: an overflow means "very long", which the cap handles.
        value
            .parse::<u64>()
            .unwrap_or(u64::MAX)
            .saturating_mul(1000)
    } else {
        let at = UNIX_EPOCH + Duration::from_secs(http_date_unix_secs(value)?);
        at.duration_since(now)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    };
    Some(delay_ms.min(RETRY_AFTER_MS_MAX))
}

/// Seconds since the epoch of an HTTP-date in any of the three forms a recipient must
/// accept (RFC 9110 §5.6.7): `Sun, 06 Nov 1994 08:49:37 GMT`, `Sunday, 06-Nov-94
/// 08:49:37 GMT`, `Sun Nov  6 08:49:37 1994`.
pub(crate) fn http_date_unix_secs(text: &str) -> Option<u64> {
    const MONTHS: [&str; 12] = [
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ];
    if text.len() > 64 {
        return None;
    }
    let (mut day, mut month, mut year, mut time) = (None, None, None, None);
    let tokens = text
        .split([' ', ',', '-'])
        .filter(|token| !token.is_empty());
    for (index, token) in tokens.enumerate() {
        let lower = token.to_ascii_lowercase();
        if index == 0 {
            continue; // the day name, which the date determines anyway
        }
        if let Some(m) = MONTHS.iter().position(|m| *m == lower) {
            month = Some(m as u64 + 1);
        } else if token.contains(':') {
            time = Some(token);
        } else if lower == "gmt" {
            continue;
        } else if token.bytes().all(|b| b.is_ascii_digit()) {
            let number: u64 = token.parse().ok()?;
            match (token.len(), day) {
                (1 | 2, None) => day = Some(number),
                // RFC 850's two-digit year; RFC 9110 says to read a year more than 50
                // years ahead as in the past, which for any date now means 19xx or 20xx.
                (2, Some(_)) => {
                    year = Some(if number < 70 {
                        2000 + number
                    } else {
                        1900 + number
                    })
                }
                (4, Some(_)) => year = Some(number),
                _ => return None,
            }
        } else {
            return None;
        }
    }
    let (day, month, year) = (day?, month?, year?);
    let mut hms = time?.split(':').map(|part| part.parse::<u64>().ok());
    let (Some(Some(h)), Some(Some(m)), Some(Some(s)), None) =
        (hms.next(), hms.next(), hms.next(), hms.next())
    else {
        return None;
    };
    if !(1..=31).contains(&day) || year < 1970 || h > 23 || m > 59 || s > 60 {
        return None;
    }
    let days = days_from_civil(year, month, day);
    Some(days * 86_400 + h * 3600 + m * 60 + s)
}

/// Days from 1970-01-01 to a date on or after it (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: u64, month: u64, day: u64) -> u64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year / 400;
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12; // March is 0
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// At most [`DETAIL_BYTES_MAX`] bytes of `text`, cut at a character boundary.
pub(crate) fn truncate(text: &str) -> &str {
    let mut end = text.len().min(DETAIL_BYTES_MAX);
    // Ends within 3 steps: a character is at most 4 bytes long.
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NOW_SECS: u64 = 784_111_777; // Sun, 06 Nov 1994 08:49:37 GMT

    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(NOW_SECS)
    }

    fn status(code: u16) -> Result<(), Failure> {
        classify_status("GET example.com", code, None, None, now())
    }

    fn kind(code: u16) -> Option<FailureKind> {
        status(code).err().map(|failure| failure.kind)
    }

    #[test]
    fn successes_are_2xx_and_not_modified() {
        for code in [200, 201, 202, 204, 299, 304] {
            assert_eq!(status(code), Ok(()), "{code}");
        }
    }

    #[test]
    fn server_errors_are_transient_and_come_back_later_is_not_attempted() {
        for code in [500, 502, 503, 504, 599] {
            assert_eq!(kind(code), Some(FailureKind::Transient), "{code}");
        }
        for code in [408, 425, 429] {
            assert_eq!(kind(code), Some(FailureKind::Unavailable), "{code}");
        }
    }

    #[test]
    fn other_client_errors_redirects_and_odd_codes_are_permanent() {
        for code in [
            400, 401, 403, 404, 409, 422, 499, 301, 302, 307, 308, 101, 600, 999,
        ] {
            assert_eq!(kind(code), Some(FailureKind::Permanent), "{code}");
        }
    }

    #[test]
    fn reasons_name_the_request_and_the_status() {
        let failure = status(404).unwrap_err();
        assert_eq!(failure.reason, "GET example.com answered 404 Not Found");
        let redirect = classify_status("GET a.example", 302, None, Some("http://10.0.0.1/"), now())
            .unwrap_err();
        assert!(
            redirect.reason.starts_with(
                "GET a.example answered 302 Found, a redirect to http://10.0.0.1/: redirects are not followed"
            ),
            "{}",
            redirect.reason
        );
    }

    #[test]
    fn retry_after_is_read_from_seconds_or_a_date_and_capped() {
        let throttled = |value| classify_status("GET x", 429, Some(value), None, now());
        assert_eq!(
            throttled("2").unwrap_err().retry_after,
            Some(Duration::from_millis(2_000))
        );
        assert_eq!(
            throttled("Sun, 06 Nov 1994 08:50:07 GMT")
                .unwrap_err()
                .retry_after,
            Some(Duration::from_millis(30_000))
        );
        assert_eq!(
            throttled("99999999").unwrap_err().retry_after,
            Some(Duration::from_millis(RETRY_AFTER_MS_MAX))
        );
        assert_eq!(
            throttled("184467440737095516150").unwrap_err().retry_after,
            Some(Duration::from_millis(RETRY_AFTER_MS_MAX))
        );
        assert_eq!(throttled("soon").unwrap_err().retry_after, None);
        assert_eq!(throttled("-5").unwrap_err().retry_after, None);
        // A date in the past: come back now.
        assert_eq!(
            throttled("Sat, 05 Nov 1994 08:49:37 GMT")
                .unwrap_err()
                .retry_after,
            Some(Duration::from_millis(0))
        );
        // A 503 may say when, too; a permanent failure ignores it.
        let unavailable = classify_status("GET x", 503, Some("7"), None, now());
        assert_eq!(
            unavailable.unwrap_err().retry_after,
            Some(Duration::from_millis(7_000))
        );
        let gone = classify_status("GET x", 410, Some("7"), None, now());
        assert_eq!(gone.unwrap_err().retry_after, None);
    }

    #[test]
    fn the_three_http_date_forms_agree() {
        for text in [
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
        ] {
            assert_eq!(http_date_unix_secs(text), Some(NOW_SECS), "{text}");
        }
        assert_eq!(
            http_date_unix_secs("Thu, 01 Jan 1970 00:00:00 GMT"),
            Some(0)
        );
        assert_eq!(
            http_date_unix_secs("Tue, 29 Feb 2028 12:00:00 GMT"),
            Some(1_835_438_400)
        );
        for bad in [
            "",
            "GMT",
            "Sun, 06 Nov 1994 08:49 GMT",
            "Sun, 32 Nov 1994 08:49:37 GMT",
            "Sun, 06 Foo 1994 08:49:37 GMT",
        ] {
            assert_eq!(http_date_unix_secs(bad), None, "{bad}");
        }
    }

    #[test]
    fn details_are_cut_to_the_byte_limit_at_a_character_boundary() {
        assert_eq!(truncate("short"), "short");
        let ascii = "x".repeat(DETAIL_BYTES_MAX + 10);
        assert_eq!(truncate(&ascii).len(), DETAIL_BYTES_MAX);
        // 'é' is 2 bytes: 511 bytes of 'x' and then one would end past the limit.
        let split = format!("{}é", "x".repeat(DETAIL_BYTES_MAX - 1));
        assert_eq!(truncate(&split), "x".repeat(DETAIL_BYTES_MAX - 1));
    }

    #[test]
    fn transport_problems_are_classified() {
        let refused = classify_transport("GET x", Transport::Refused("refused: no".into()), "");
        assert_eq!(
            (refused.kind, refused.reason.as_str()),
            (FailureKind::Permanent, "refused: no")
        );
        assert_eq!(
            classify_transport("GET x", Transport::Invalid, "e").kind,
            FailureKind::Permanent
        );
        assert_eq!(
            classify_transport("GET x", Transport::Connect, "e").kind,
            FailureKind::Transient
        );
        assert_eq!(
            classify_transport("GET x", Transport::Broken, "e").kind,
            FailureKind::Transient
        );
        assert_eq!(
            classify_transport("GET x", Transport::TimedOut, "e").kind,
            FailureKind::Timeout
        );
    }

    proptest! {
        #[test]
        fn every_status_has_exactly_one_verdict_and_retry_hints_only_on_retryable_ones(
            code in 100_u16..1000,
            seconds in proptest::option::of(0_u64..100_000),
        ) {
            let header = seconds.map(|s| s.to_string());
            let verdict = classify_status("GET x", code, header.as_deref(), None, now());
            match verdict {
                Ok(()) => prop_assert!((200..300).contains(&code) || code == 304),
                Err(failure) => {
                    prop_assert_eq!(failure.kind.is_retryable(), (500..600).contains(&code) || [408, 425, 429].contains(&code));
                    if let Some(delay) = failure.retry_after.map(|d| d.as_millis() as u64) {
                        prop_assert!(failure.kind.is_retryable());
                        prop_assert!(delay <= RETRY_AFTER_MS_MAX);
                    }
                }
            }
        }

        #[test]
        fn dates_round_trip_through_days_from_civil(days in 0_u64..100_000) {
            let (y, m, d) = civil_from_days(days);
            prop_assert_eq!(days_from_civil(y, m, d), days);
        }
    }

    /// The inverse of `days_from_civil`, for the property above.
    fn civil_from_days(days: u64) -> (u64, u64, u64) {
        let z = days + 719_468;
        let era = z / 146_097;
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = doy - (153 * mp + 2) / 5 + 1;
        let m = if mp < 10 { mp + 3 } else { mp - 9 };
        let y = yoe + era * 400 + u64::from(m <= 2);
        (y, m, d)
    }
}
