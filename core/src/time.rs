//! Points in time as plain values.
//!
//! `keel-core` never reads a clock: a [`Timestamp`] arrives with each action (its `now`)
//! or inside an envelope. This module only represents, compares, offsets, formats and
//! parses them, in RFC 3339 as CloudEvents requires.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::Error;

const NANOS_PER_SECOND: i64 = 1_000_000_000;
const SECONDS_PER_DAY: i64 = 86_400;

/// A UTC instant with nanosecond precision: nanoseconds since 1970-01-01T00:00:00Z.
///
/// The representable range is 1677-09-21 to 2262-04-11; parsing a time outside it is an
/// error, not a wrap-around. The text form is RFC 3339 in UTC with as many fractional
/// digits (none, 3, 6 or 9) as the value needs, so formatting then parsing is exact.
///
/// ```
/// use keel_core::Timestamp;
/// let t: Timestamp = "2026-11-23T06:34:49.250+01:00".parse().unwrap();
/// assert_eq!(t.to_string(), "2026-11-23T05:34:49.250Z");
/// assert_eq!(t.plus_millis(750).to_string(), "2026-11-23T05:34:50Z");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp {
    unix_nanos: i64,
}

impl Timestamp {
    /// 1970-01-01T00:00:00Z.
    pub const UNIX_EPOCH: Self = Self { unix_nanos: 0 };

    /// The instant `unix_nanos` nanoseconds after the Unix epoch.
    pub const fn from_unix_nanos(unix_nanos: i64) -> Self {
        Self { unix_nanos }
    }

    /// The instant `unix_millis` milliseconds after the Unix epoch, saturating at the
    /// ends of the representable range.
    pub const fn from_unix_millis(unix_millis: i64) -> Self {
        Self {
            unix_nanos: unix_millis.saturating_mul(1_000_000),
        }
    }

    /// Nanoseconds since the Unix epoch.
    pub const fn unix_nanos(self) -> i64 {
        self.unix_nanos
    }

    /// Whole milliseconds since the Unix epoch, rounded towards negative infinity.
    pub const fn unix_millis(self) -> i64 {
        self.unix_nanos.div_euclid(1_000_000)
    }

    /// This instant moved `millis` milliseconds later, saturating at the end of the range.
    pub const fn plus_millis(self, millis: u64) -> Self {
        let delta = if millis > (i64::MAX / 1_000_000) as u64 {
            i64::MAX
        } else {
            millis as i64 * 1_000_000
        };
        Self {
            unix_nanos: self.unix_nanos.saturating_add(delta),
        }
    }

    /// Milliseconds from `earlier` to `self`, zero if `earlier` is later.
    pub const fn millis_since(self, earlier: Self) -> u64 {
        let delta = self.unix_nanos.saturating_sub(earlier.unix_nanos);
        if delta <= 0 {
            0
        } else {
            (delta / 1_000_000) as u64
        }
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let seconds = self.unix_nanos.div_euclid(NANOS_PER_SECOND);
        let nanos = self.unix_nanos.rem_euclid(NANOS_PER_SECOND);
        let days = seconds.div_euclid(SECONDS_PER_DAY);
        let second_of_day = seconds.rem_euclid(SECONDS_PER_DAY);
        let (year, month, day) = civil_from_days(days);
        write!(
            f,
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
            second_of_day / 3600,
            second_of_day / 60 % 60,
            second_of_day % 60
        )?;
        // Just enough digits to be exact, so that parse(format(t)) == t.
        if nanos == 0 {
        } else if nanos % 1_000_000 == 0 {
            write!(f, ".{:03}", nanos / 1_000_000)?;
        } else if nanos % 1_000 == 0 {
            write!(f, ".{:06}", nanos / 1_000)?;
        } else {
            write!(f, ".{nanos:09}")?;
        }
        f.write_str("Z")
    }
}

impl FromStr for Timestamp {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self, Error> {
        let invalid = |reason| Error::InvalidTimestamp {
            value: text.chars().take(64).collect(),
            reason,
        };
        let b = text.as_bytes();
        if b.len() < 20 || b.len() > 64 {
            return Err(invalid("wrong length"));
        }
        let separators_ok = b[4] == b'-'
            && b[7] == b'-'
            && matches!(b[10], b'T' | b't' | b' ')
            && b[13] == b':'
            && b[16] == b':';
        if !separators_ok {
            return Err(invalid("expected YYYY-MM-DDTHH:MM:SS"));
        }
        let number = |range: std::ops::Range<usize>| -> Result<i64, Error> {
            let digits = &b[range];
            if !digits.iter().all(u8::is_ascii_digit) {
                return Err(invalid("expected digits"));
            }
            Ok(digits.iter().fold(0, |n, d| n * 10 + i64::from(d - b'0')))
        };
        let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
        let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
        if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
            return Err(invalid("no such date"));
        }
        if hour > 23 || minute > 59 {
            return Err(invalid("no such time of day"));
        }
        if second > 59 {
            return Err(invalid("leap seconds are not supported"));
        }

        let mut rest = &b[19..];
        let mut nanos = 0_i64;
        if let Some(fraction) = rest.strip_prefix(b".") {
            let digits = fraction.iter().take_while(|d| d.is_ascii_digit()).count();
            if digits == 0 {
                return Err(invalid("expected digits after the decimal point"));
            }
            if digits > 9 {
                return Err(invalid("more than nanosecond precision"));
            }
            for d in &fraction[..digits] {
                nanos = nanos * 10 + i64::from(d - b'0');
            }
            nanos *= 10_i64.pow(9 - digits as u32);
            rest = &fraction[digits..];
        }

        let offset_seconds = match rest {
            [b'Z' | b'z'] => 0,
            [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
                let digits = [*h1, *h2, *m1, *m2];
                if !digits.iter().all(u8::is_ascii_digit) {
                    return Err(invalid("expected an offset such as +01:00"));
                }
                let hours = i64::from((h1 - b'0') * 10 + (h2 - b'0'));
                let minutes = i64::from((m1 - b'0') * 10 + (m2 - b'0'));
                if hours > 23 || minutes > 59 {
                    return Err(invalid("offset out of range"));
                }
                let magnitude = hours * 3600 + minutes * 60;
                if *sign == b'+' { magnitude } else { -magnitude }
            }
            _ => return Err(invalid("expected `Z` or an offset such as +01:00")),
        };

        let seconds = days_from_civil(year, month, day) * SECONDS_PER_DAY
            + hour * 3600
            + minute * 60
            + second
            - offset_seconds;
        // In i128 so that the extremes of the range (whose whole seconds alone overflow
        // an i64 of nanoseconds) still parse.
        let unix_nanos = i128::from(seconds) * i128::from(NANOS_PER_SECOND) + i128::from(nanos);
        i64::try_from(unix_nanos)
            .map(Self::from_unix_nanos)
            .map_err(|_| invalid("outside 1677-09-21..2262-04-11"))
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

fn is_leap(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

// Howard Hinnant's algorithms for the proleptic Gregorian calendar: exact for every day in
// the range a `Timestamp` can hold.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn epoch_formats_as_rfc3339() {
        assert_eq!(Timestamp::UNIX_EPOCH.to_string(), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn offsets_are_normalised_to_utc() {
        let t: Timestamp = "2024-02-29T23:30:00-01:00".parse().unwrap();
        assert_eq!(t.to_string(), "2024-03-01T00:30:00Z");
    }

    #[test]
    fn impossible_dates_are_rejected() {
        for bad in [
            "2023-02-29T00:00:00Z",
            "2023-13-01T00:00:00Z",
            "2023-01-01T24:00:00Z",
            "2023-01-01T00:00:60Z",
            "2023-01-01T00:00:00",
            "2023-01-01T00:00:00.Z",
            "2023-01-01T00:00:00.1234567890Z",
            "9999-01-01T00:00:00Z",
            "2023-01-01T00:00:00+1:00",
        ] {
            assert!(bad.parse::<Timestamp>().is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn format_then_parse_is_exact(nanos in any::<i64>()) {
            let t = Timestamp::from_unix_nanos(nanos);
            prop_assert_eq!(t.to_string().parse::<Timestamp>(), Ok(t));
        }

        #[test]
        fn parsing_arbitrary_text_never_panics(text in "\\PC{0,40}") {
            let _ = text.parse::<Timestamp>();
        }
    }
}
