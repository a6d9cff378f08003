//! Laws of topic patterns: the compiled matcher agrees with a plain reference model,
//! and the wildcards mean what the docs say.

use crate::common;

use keel::{Topic, TopicPattern};
use proptest::prelude::*;

/// The specification, written as directly as possible over segment lists.
fn reference_matches(pattern: &[String], topic: &[String]) -> bool {
    match (pattern.split_first(), topic.split_first()) {
        (Some((p, [])), Some(_)) if p == "**" => true,
        (Some((p, rest_p)), Some((t, rest_t))) => {
            (p == "*" || p == t) && reference_matches(rest_p, rest_t)
        }
        (None, None) => true,
        _ => false,
    }
}

/// Segments from a tiny alphabet, so that random patterns and topics often match.
fn segment() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["a", "b", "order", "x1"]).prop_map(str::to_owned)
}

fn topic() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(segment(), 1..5)
}

fn pattern() -> impl Strategy<Value = Vec<String>> {
    (
        prop::collection::vec(prop_oneof![3 => segment(), 1 => Just("*".to_owned())], 0..4),
        any::<bool>(),
    )
        .prop_filter_map("a pattern has a segment", |(mut segments, rest)| {
            if rest {
                segments.push("**".to_owned());
            }
            (!segments.is_empty()).then_some(segments)
        })
}

fn compile(segments: &[String]) -> TopicPattern {
    segments
        .join(".")
        .parse()
        .expect("strategies make valid patterns")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn the_compiled_matcher_agrees_with_the_reference(p in pattern(), t in topic()) {
        prop_assert_eq!(compile(&p).matches(&t.join(".")), reference_matches(&p, &t));
    }

    #[test]
    fn a_literal_pattern_matches_exactly_its_topic(t in topic(), other in topic()) {
        let literal = compile(&t);
        prop_assert!(literal.is_literal());
        prop_assert!(literal.matches(&t.join(".")));
        prop_assert_eq!(literal.matches(&other.join(".")), other == t);
    }

    #[test]
    fn a_star_matches_any_one_segment_in_its_place(t in topic(), at in any::<prop::sample::Index>(), replacement in common::dotted_name()) {
        let at = at.index(t.len());
        let mut p = t.clone();
        p[at] = "*".to_owned();
        let pattern = compile(&p);
        prop_assert!(pattern.matches(&t.join(".")));
        let mut changed = t.clone();
        changed[at] = replacement.clone();
        // Replacing the segment with a single segment still matches; with several, not.
        prop_assert_eq!(pattern.matches(&changed.join(".")), !replacement.contains('.'));
    }

    #[test]
    fn a_double_star_matches_every_longer_topic_with_the_prefix(prefix in topic(), tail in topic(), other in topic()) {
        let mut p = prefix.clone();
        p.push("**".to_owned());
        let pattern = compile(&p);
        prop_assert!(!pattern.matches(&prefix.join(".")), "`**` needs at least one segment");
        prop_assert!(pattern.matches(&[prefix.clone(), tail].concat().join(".")));
        let expected = other.len() > prefix.len() && other.starts_with(&prefix);
        prop_assert_eq!(pattern.matches(&other.join(".")), expected);
    }

    #[test]
    fn double_star_alone_matches_every_valid_topic(name in common::dotted_name()) {
        let topic = Topic::new(name).unwrap();
        prop_assert!(TopicPattern::new("**").unwrap().matches(topic.as_str()));
    }

    #[test]
    fn patterns_print_as_they_were_written(p in pattern()) {
        let text = p.join(".");
        let compiled = compile(&p);
        prop_assert_eq!(compiled.to_string(), text.clone());
        let json = serde_json::to_string(&compiled).unwrap();
        prop_assert_eq!(serde_json::from_str::<TopicPattern>(&json).unwrap(), compiled);
    }

    #[test]
    fn compiling_arbitrary_text_never_panics(text in "\\PC{0,32}") {
        if let Ok(pattern) = TopicPattern::new(&text) {
            prop_assert_eq!(pattern.to_string(), text);
        }
    }
}
