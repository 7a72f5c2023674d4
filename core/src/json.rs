//! The one nesting bound for JSON values that cross into (or out of) the core.
//!
//! Converting, validating and even dropping a `serde_json::Value` recurse once per
//! nesting level, and the core's worker threads have small stacks: a tool payload
//! nested 200 000 lists deep from Python killed the process with SIGSEGV. So every
//! value is held to [`MAX_DEPTH`] levels where it enters: the Python binding refuses a
//! deeper object while converting it (before anything deeper exists in Rust),
//! `NativeTools::call` checks Rust callers' values without recursing ([`check_depth`]),
//! and JSON text is parsed by `serde_json` — whose recursion limit (127 levels) keeps
//! the parser itself safe; its `unbounded_depth` feature must stay off, a test says so —
//! and then checked like any other value.

use serde_json::Value;

/// Most levels of nested arrays/objects a value may have (a scalar is level 0, `[]`
/// and `{}` are level 1). Tool arguments and events are a few levels deep; 100 leaves
/// room for any honest payload and is below `serde_json`'s parser limit, so JSON text
/// and Python objects are held to the same bound.
pub const MAX_DEPTH: usize = 100;

/// A value nested deeper than [`MAX_DEPTH`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("nested deeper than {max} levels of arrays/objects (the limit for values passed to Loom's core)", max = MAX_DEPTH)]
pub struct TooDeep;

/// `Err` if `value` nests deeper than [`MAX_DEPTH`]. Iterative: it cannot itself
/// overflow the stack however deep the value is.
pub fn check_depth(value: &Value) -> Result<(), TooDeep> {
    let mut stack: Vec<(&Value, usize)> = vec![(value, 0)];
    while let Some((v, depth)) = stack.pop() {
        let inside = depth + 1;
        match v {
            Value::Array(_) | Value::Object(_) if inside > MAX_DEPTH => return Err(TooDeep),
            Value::Array(items) => stack.extend(items.iter().map(|c| (c, inside))),
            Value::Object(map) => stack.extend(map.values().map(|c| (c, inside))),
            _ => {}
        }
    }
    Ok(())
}

/// Drops `value` without recursing (a recursive drop of a value nested 100 000 deep
/// overflows a thread's stack): each container is emptied onto a heap stack first.
pub fn drop_iteratively(value: Value) {
    let mut stack = vec![value];
    while let Some(mut v) = stack.pop() {
        match &mut v {
            Value::Array(items) => stack.append(items),
            Value::Object(map) => {
                let map = std::mem::take(map);
                stack.extend(map.into_iter().map(|(_, c)| c));
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(levels: usize, open: &str, close: &str) -> String {
        format!("{}{}", open.repeat(levels), close.repeat(levels))
    }

    #[test]
    fn depth_is_counted_in_containers() {
        assert_eq!(check_depth(&Value::from(1)), Ok(()));
        let ok: Value = serde_json::from_str(&nested(MAX_DEPTH, "[", "]")).unwrap();
        assert_eq!(check_depth(&ok), Ok(()));
        let mut deeper = ok;
        deeper = Value::Array(vec![deeper]);
        assert_eq!(check_depth(&deeper), Err(TooDeep));
        let wide = serde_json::json!({"a": [1, {"b": [[], {}]}], "c": "x"});
        assert_eq!(check_depth(&wide), Ok(()));
    }

    #[test]
    fn serde_json_keeps_its_recursion_limit_above_ours() {
        // If someone turns on serde_json's `unbounded_depth`, this fails.
        for (open, close) in [("[", "]"), ("{\"a\":", "}")] {
            let text = format!("{}1{}", open.repeat(MAX_DEPTH), close.repeat(MAX_DEPTH));
            assert!(serde_json::from_str::<Value>(&text).is_ok(), "{open}");
            let text = format!("{}1{}", open.repeat(128), close.repeat(128));
            let err = serde_json::from_str::<Value>(&text).unwrap_err();
            assert!(err.to_string().contains("recursion limit"), "{err}");
        }
        // Far deeper text is refused, not a stack overflow.
        assert!(serde_json::from_str::<Value>(&nested(1_000_000, "[", "]")).is_err());
    }

    #[test]
    fn checking_a_very_deep_value_does_not_recurse() {
        // Built and taken apart iteratively: a recursive drop would overflow here.
        let mut v = Value::Null;
        for _ in 0..200_000 {
            v = Value::Array(vec![v]);
        }
        assert_eq!(check_depth(&v), Err(TooDeep));
        drop_iteratively(v);
        let mut o = Value::Null;
        for _ in 0..200_000 {
            let mut m = serde_json::Map::new();
            m.insert("a".into(), o);
            o = Value::Object(m);
        }
        assert_eq!(check_depth(&o), Err(TooDeep));
        drop_iteratively(o);
    }
}
