//! Topic and pattern syntax: NATS subjects.
//!
//! Topics are dot-separated tokens (`market.price.aapl`). Patterns may use `*` for
//! exactly one token and `>` (last token only) for one or more remaining tokens, exactly
//! as NATS does, so a NATS transport maps subscriptions 1:1.

use crate::error::BusError;

/// Longest accepted topic, in bytes (NATS' own limit is far larger; this one keeps
/// topic-keyed maps bounded against garbage input).
pub const MAX_TOPIC_LEN: usize = 1024;

fn invalid(what: &'static str, topic: &str, reason: impl Into<String>) -> BusError {
    BusError::InvalidTopic {
        what,
        topic: topic.to_owned(),
        reason: reason.into(),
    }
}

fn check_common(what: &'static str, s: &str) -> Result<(), BusError> {
    if s.is_empty() {
        return Err(invalid(what, s, "it is empty"));
    }
    if s.len() > MAX_TOPIC_LEN {
        return Err(invalid(
            what,
            s,
            format!("it is {} bytes long; the limit is {MAX_TOPIC_LEN}", s.len()),
        ));
    }
    for (i, token) in s.split('.').enumerate() {
        if token.is_empty() {
            return Err(invalid(
                what,
                s,
                format!(
                    "token {} is empty (leading, trailing or doubled '.')",
                    i + 1
                ),
            ));
        }
        if let Some(c) = token.chars().find(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid(
                what,
                s,
                format!(
                    "token {:?} contains whitespace or a control character ({c:?})",
                    token
                ),
            ));
        }
    }
    Ok(())
}

/// Whether `topic` is a valid topic made of printable ASCII only: one pass over the
/// bytes, the check every publish makes. Anything else (non-ASCII, or invalid) takes
/// the full check, which also explains what is wrong.
fn is_plain_ascii_topic(topic: &[u8]) -> bool {
    if topic.is_empty() || topic.len() > MAX_TOPIC_LEN {
        return false;
    }
    let mut token_empty = true;
    for &b in topic {
        match b {
            b'.' if token_empty => return false,
            b'.' => token_empty = true,
            b'*' | b'>' => return false,
            b'!'..=b'~' => token_empty = false,
            _ => return false,
        }
    }
    !token_empty
}

/// Validates a concrete topic to publish on: no wildcards.
pub fn validate_topic(topic: &str) -> Result<(), BusError> {
    if is_plain_ascii_topic(topic.as_bytes()) {
        return Ok(());
    }
    check_common("topic", topic)?;
    if let Some(token) = topic
        .split('.')
        .find(|t| t.contains('*') || t.contains('>'))
    {
        return Err(invalid(
            "topic",
            topic,
            format!(
                "token {token:?} contains a wildcard; wildcards are only allowed in subscriptions"
            ),
        ));
    }
    Ok(())
}

/// Validates a subscription pattern.
pub fn validate_pattern(pattern: &str) -> Result<(), BusError> {
    check_common("pattern", pattern)?;
    let tokens: Vec<&str> = pattern.split('.').collect();
    for (i, token) in tokens.iter().enumerate() {
        let is_wild = *token == "*" || *token == ">";
        if !is_wild && (token.contains('*') || token.contains('>')) {
            return Err(invalid(
                "pattern",
                pattern,
                format!("token {token:?} mixes a wildcard with other characters; '*' and '>' must be whole tokens"),
            ));
        }
        if *token == ">" && i + 1 != tokens.len() {
            return Err(invalid(
                "pattern",
                pattern,
                "'>' is only allowed as the last token",
            ));
        }
    }
    Ok(())
}

/// Reference matcher: does `pattern` match `topic`? Linear in the number of tokens.
/// Used by tests as the oracle for the trie and by transports that filter locally.
pub fn matches(pattern: &str, topic: &str) -> bool {
    let mut p = pattern.split('.');
    let mut t = topic.split('.');
    loop {
        match (p.next(), t.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The full check alone, as `validate_topic` was before its ASCII fast path.
    fn full_check(topic: &str) -> bool {
        check_common("topic", topic).is_ok()
            && !topic.split('.').any(|t| t.contains('*') || t.contains('>'))
    }

    proptest! {
        #[test]
        fn the_ascii_fast_path_agrees_with_the_full_check(t in "[a-c.*> \t\x00\x7fü]{0,12}") {
            prop_assert_eq!(validate_topic(&t).is_ok(), full_check(&t));
            if is_plain_ascii_topic(t.as_bytes()) {
                prop_assert!(full_check(&t));
            }
        }
    }

    #[test]
    fn valid_topics() {
        for t in ["a", "a.b.c", "market.price.AAPL", "_INBOX.x-1.y_2", "ü.ñ"] {
            validate_topic(t).unwrap();
        }
    }

    #[test]
    fn invalid_topics_say_why() {
        let cases = [
            ("", "empty"),
            (".a", "token 1 is empty"),
            ("a.", "token 2 is empty"),
            ("a..b", "token 2 is empty"),
            ("a b", "whitespace"),
            ("a.\tb", "whitespace"),
            ("a.*", "wildcard"),
            ("a.>", "wildcard"),
            ("a.b*", "wildcard"),
        ];
        for (t, why) in cases {
            let err = validate_topic(t).unwrap_err().to_string();
            assert!(err.contains(why), "{t:?}: {err}");
        }
        assert!(validate_topic(&"a".repeat(MAX_TOPIC_LEN + 1))
            .unwrap_err()
            .to_string()
            .contains("limit"));
    }

    #[test]
    fn patterns() {
        for p in ["a", "*", ">", "a.*", "a.>", "*.b.>", "*.*"] {
            validate_pattern(p).unwrap();
        }
        for (p, why) in [
            ("a.>.b", "last token"),
            ("a*", "whole tokens"),
            ("a.b>", "whole tokens"),
            ("a..*", "empty"),
        ] {
            let err = validate_pattern(p).unwrap_err().to_string();
            assert!(err.contains(why), "{p:?}: {err}");
        }
    }

    #[test]
    fn reference_matching() {
        assert!(matches("a.b", "a.b"));
        assert!(!matches("a.b", "a.b.c"));
        assert!(matches("a.*", "a.b"));
        assert!(!matches("a.*", "a"));
        assert!(!matches("a.*", "a.b.c"));
        assert!(matches("a.>", "a.b.c"));
        assert!(!matches("a.>", "a"));
        assert!(matches(">", "x"));
        assert!(matches("*.b.>", "a.b.c.d"));
        assert!(!matches("*.b.>", "a.c.c.d"));
    }
}
