//! Topics and topic patterns for routing envelopes on the bus.
//!
//! A [`Topic`] is lowercase dotted segments, like an event type. A [`TopicPattern`]
//! selects topics: a literal segment matches itself, `*` matches exactly one segment,
//! and `**`, allowed only as the last segment, matches one or more remaining segments.
//!
//! | pattern          | matches                                  | does not match        |
//! |------------------|------------------------------------------|-----------------------|
//! | `order.placed`   | `order.placed`                           | `order.placed.eu`     |
//! | `order.*`        | `order.placed`, `order.shipped`          | `order`, `order.a.b`  |
//! | `order.**`       | `order.placed`, `order.payment.failed`   | `order`, `orders.x`   |
//! | `*.failed`       | `payment.failed`                         | `order.payment.failed`|
//! | `**`             | every topic                              |                       |
//!
//! Compiling a pattern checks it once; matching walks the topic's segments without
//! allocating.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::envelope::{EventType, check_dotted};
use crate::error::Error;

/// A bus topic: lowercase dotted segments such as `order.payment.completed`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Topic(Cow<'static, str>);

impl Topic {
    /// Parses a topic, or says which rule it breaks.
    pub fn new(value: impl Into<Cow<'static, str>>) -> Result<Self, Error> {
        // Topics follow exactly the event type rules; reuse that check and its error.
        let event_type = EventType::new(value)?;
        Ok(Self(Cow::Owned(event_type.as_str().to_owned())))
    }

    /// A topic written as a literal in code; no allocation.
    ///
    /// # Panics
    /// If the literal is not lowercase dotted segments (a programming error).
    pub fn from_static(value: &'static str) -> Self {
        match check_dotted(value) {
            Ok(()) => Self(Cow::Borrowed(value)),
            Err(reason) => panic!("invalid topic literal `{value}`: {reason}"),
        }
    }

    /// The topic as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<EventType> for Topic {
    /// Publishing an event on the topic named by its type is the common case.
    fn from(event_type: EventType) -> Self {
        Self(Cow::Owned(event_type.as_str().to_owned()))
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Topic {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Self::new(String::deserialize(deserializer)?).map_err(serde::de::Error::custom)
    }
}

/// One segment of a compiled pattern.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Segment {
    Literal(Box<str>),
    One,
    Rest,
}

/// A compiled topic pattern; see the [module docs](self) for the rules.
///
/// ```
/// use keel_core::TopicPattern;
/// let pattern: TopicPattern = "order.**".parse()?;
/// assert!(pattern.matches("order.payment.failed"));
/// assert!(!pattern.matches("order"));
/// # Ok::<(), keel_core::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TopicPattern {
    segments: Box<[Segment]>,
}

impl TopicPattern {
    /// Compiles a pattern, or says which rule it breaks.
    pub fn new(pattern: &str) -> Result<Self, Error> {
        let invalid = |reason| Error::InvalidPattern {
            pattern: pattern.chars().take(255).collect(),
            reason,
        };
        if pattern.is_empty() {
            return Err(invalid("it is empty"));
        }
        if pattern.len() > crate::envelope::EVENT_TYPE_BYTES_MAX {
            return Err(invalid("it is longer than 255 bytes"));
        }
        let parts: Vec<&str> = pattern.split('.').collect();
        let last = parts.len() - 1;
        let mut segments = Vec::with_capacity(parts.len());
        for (index, part) in parts.into_iter().enumerate() {
            segments.push(match part {
                "*" => Segment::One,
                "**" if index == last => Segment::Rest,
                "**" => return Err(invalid("`**` may only be the last segment")),
                literal => {
                    check_dotted(literal).map_err(|_| {
                        invalid("a segment must be `*`, `**` or lowercase a-z, 0-9, `_`, `-`")
                    })?;
                    Segment::Literal(literal.into())
                }
            });
        }
        Ok(Self {
            segments: segments.into_boxed_slice(),
        })
    }

    /// Whether `topic` is selected by this pattern.
    ///
    /// Matching is segment by segment; text with an empty segment is never selected.
    /// Pass a [`Topic`]'s text to get the full guarantee of lowercase dotted segments.
    pub fn matches(&self, topic: &str) -> bool {
        if topic.is_empty() {
            return false;
        }
        let mut parts = topic.split('.');
        for segment in self.segments.iter() {
            match segment {
                Segment::Rest => {
                    let mut rest = parts.peekable();
                    return rest.peek().is_some() && rest.all(|p| !p.is_empty());
                }
                Segment::One => match parts.next() {
                    Some(part) if !part.is_empty() => {}
                    _ => return false,
                },
                Segment::Literal(literal) => match parts.next() {
                    Some(part) if part == &**literal => {}
                    _ => return false,
                },
            }
        }
        parts.next().is_none()
    }

    /// Whether the pattern is a plain topic with no wildcard; such patterns can be routed
    /// with a hash lookup instead of a scan.
    pub fn is_literal(&self) -> bool {
        self.segments
            .iter()
            .all(|s| matches!(s, Segment::Literal(_)))
    }
}

impl fmt::Display for TopicPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, segment) in self.segments.iter().enumerate() {
            if index > 0 {
                f.write_str(".")?;
            }
            f.write_str(match segment {
                Segment::Literal(literal) => literal,
                Segment::One => "*",
                Segment::Rest => "**",
            })?;
        }
        Ok(())
    }
}

impl FromStr for TopicPattern {
    type Err = Error;

    fn from_str(pattern: &str) -> Result<Self, Error> {
        Self::new(pattern)
    }
}

impl Serialize for TopicPattern {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for TopicPattern {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <Cow<'de, str>>::deserialize(deserializer)?;
        Self::new(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(text: &str) -> TopicPattern {
        text.parse().unwrap()
    }

    #[test]
    fn the_table_in_the_module_docs_holds() {
        let cases = [
            ("order.placed", "order.placed", true),
            ("order.placed", "order.placed.eu", false),
            ("order.*", "order.shipped", true),
            ("order.*", "order", false),
            ("order.*", "order.a.b", false),
            ("order.**", "order.payment.failed", true),
            ("order.**", "order", false),
            ("order.**", "orders.x", false),
            ("*.failed", "payment.failed", true),
            ("*.failed", "order.payment.failed", false),
            ("**", "anything.at.all", true),
        ];
        for (p, topic, expected) in cases {
            assert_eq!(pattern(p).matches(topic), expected, "{p} vs {topic}");
        }
    }

    #[test]
    fn malformed_patterns_are_refused() {
        for bad in ["", "order.**.x", "Order.*", "order..*", "order.*x", "**.x"] {
            assert!(TopicPattern::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn malformed_topics_never_match() {
        assert!(!pattern("**").matches(""));
        assert!(!pattern("a.*").matches("a."));
        assert!(!pattern("a.**").matches("a."));
        assert!(!pattern("**").matches("a..b"));
    }
}
