//! A token trie of subscription patterns: matching walks the topic's tokens, visiting
//! only the literal, `*` and `>` branches that can match, never every subscription.

use std::collections::HashMap;

#[derive(Debug, Default)]
struct Node<T> {
    literal: HashMap<Box<str>, Node<T>>,
    star: Option<Box<Node<T>>>,
    /// Subscriptions whose pattern ends with `>` at this node.
    rest: Vec<T>,
    /// Subscriptions whose pattern ends exactly at this node.
    here: Vec<T>,
}

impl<T> Node<T> {
    fn new() -> Self {
        Node {
            literal: HashMap::new(),
            star: None,
            rest: Vec::new(),
            here: Vec::new(),
        }
    }

    fn is_empty(&self) -> bool {
        self.literal.is_empty()
            && self.star.is_none()
            && self.rest.is_empty()
            && self.here.is_empty()
    }
}

/// Maps validated NATS-style patterns to values (subscription ids).
#[derive(Debug)]
pub struct Trie<T> {
    root: Node<T>,
    len: usize,
}

impl<T> Default for Trie<T> {
    fn default() -> Self {
        Trie {
            root: Node::new(),
            len: 0,
        }
    }
}

impl<T: Clone + PartialEq> Trie<T> {
    /// Number of stored (pattern, value) pairs.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the trie holds no subscription.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds `value` under `pattern` (which must already be validated).
    pub fn insert(&mut self, pattern: &str, value: T) {
        let mut node = &mut self.root;
        for token in pattern.split('.') {
            match token {
                ">" => {
                    node.rest.push(value);
                    self.len += 1;
                    return;
                }
                "*" => node = node.star.get_or_insert_with(|| Box::new(Node::new())),
                lit => node = node.literal.entry(lit.into()).or_insert_with(Node::new),
            }
        }
        node.here.push(value);
        self.len += 1;
    }

    /// Removes one `value` stored under `pattern`; prunes empty branches. Returns
    /// whether it was present.
    pub fn remove(&mut self, pattern: &str, value: &T) -> bool {
        let tokens: Vec<&str> = pattern.split('.').collect();
        let removed = Self::remove_at(&mut self.root, &tokens, value);
        if removed {
            self.len -= 1;
        }
        removed
    }

    fn remove_at(node: &mut Node<T>, tokens: &[&str], value: &T) -> bool {
        let take = |v: &mut Vec<T>| match v.iter().position(|x| x == value) {
            Some(i) => {
                v.swap_remove(i);
                true
            }
            None => false,
        };
        match tokens.split_first() {
            None => take(&mut node.here),
            Some((&">", _)) => take(&mut node.rest),
            Some((&"*", rest)) => {
                let Some(child) = node.star.as_mut() else {
                    return false;
                };
                let removed = Self::remove_at(child, rest, value);
                if child.is_empty() {
                    node.star = None;
                }
                removed
            }
            Some((lit, rest)) => {
                let Some(child) = node.literal.get_mut(*lit) else {
                    return false;
                };
                let removed = Self::remove_at(child, rest, value);
                if child.is_empty() {
                    node.literal.remove(*lit);
                }
                removed
            }
        }
    }

    /// Calls `f` for every value whose pattern matches `topic` (a valid topic).
    pub fn for_each_match(&self, topic: &str, mut f: impl FnMut(&T)) {
        let tokens: Vec<&str> = topic.split('.').collect();
        Self::walk(&self.root, &tokens, &mut f);
    }

    fn walk(node: &Node<T>, tokens: &[&str], f: &mut impl FnMut(&T)) {
        let Some((first, rest)) = tokens.split_first() else {
            node.here.iter().for_each(&mut *f);
            return;
        };
        // `>` needs at least one more token, which `first` is.
        node.rest.iter().for_each(&mut *f);
        if let Some(child) = node.literal.get(*first) {
            Self::walk(child, rest, f);
        }
        if let Some(child) = node.star.as_deref() {
            Self::walk(child, rest, f);
        }
    }

    /// Values matching `topic`, in no particular order.
    pub fn matches(&self, topic: &str) -> Vec<T> {
        let mut out = Vec::new();
        self.for_each_match(topic, |v| out.push(v.clone()));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::topic::matches as reference;
    use proptest::prelude::*;

    fn sorted(mut v: Vec<usize>) -> Vec<usize> {
        v.sort_unstable();
        v
    }

    #[test]
    fn basic() {
        let mut t = Trie::default();
        t.insert("a.b", 1);
        t.insert("a.*", 2);
        t.insert("a.>", 3);
        t.insert(">", 4);
        t.insert("*.b", 5);
        assert_eq!(sorted(t.matches("a.b")), vec![1, 2, 3, 4, 5]);
        assert_eq!(sorted(t.matches("a.c.d")), vec![3, 4]);
        assert_eq!(sorted(t.matches("a")), vec![4]);
        assert!(t.remove("a.>", &3));
        assert!(!t.remove("a.>", &3));
        assert_eq!(sorted(t.matches("a.c.d")), vec![4]);
        assert_eq!(t.len(), 4);
    }

    #[test]
    fn remove_prunes() {
        let mut t = Trie::default();
        t.insert("x.y.z", 1);
        t.insert("x.*.z", 2);
        assert!(t.remove("x.y.z", &1));
        assert!(t.remove("x.*.z", &2));
        assert!(t.root.is_empty());
        assert!(t.is_empty());
    }

    fn token() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("a".to_owned()),
            Just("b".to_owned()),
            Just("c".to_owned())
        ]
    }

    fn topic() -> impl Strategy<Value = String> {
        prop::collection::vec(token(), 1..5).prop_map(|v| v.join("."))
    }

    fn pattern() -> impl Strategy<Value = String> {
        (
            prop::collection::vec(prop_oneof![3 => token(), 1 => Just("*".to_owned())], 1..5),
            any::<bool>(),
        )
            .prop_map(|(mut v, tail)| {
                if tail {
                    v.push(">".to_owned());
                }
                v.join(".")
            })
    }

    proptest! {
        #[test]
        fn trie_agrees_with_reference(
            patterns in prop::collection::vec(pattern(), 0..30),
            removed in prop::collection::vec(any::<prop::sample::Index>(), 0..10),
            topics in prop::collection::vec(topic(), 1..20),
        ) {
            let mut trie = Trie::default();
            let mut live: Vec<(usize, String)> = Vec::new();
            for (i, p) in patterns.iter().enumerate() {
                trie.insert(p, i);
                live.push((i, p.clone()));
            }
            for idx in removed {
                if live.is_empty() { break; }
                let (i, p) = live.remove(idx.index(live.len()));
                prop_assert!(trie.remove(&p, &i));
            }
            prop_assert_eq!(trie.len(), live.len());
            for t in &topics {
                let expected: Vec<usize> = sorted(
                    live.iter().filter(|(_, p)| reference(p, t)).map(|(i, _)| *i).collect(),
                );
                prop_assert_eq!(sorted(trie.matches(t)), expected, "topic {}", t);
            }
        }
    }
}
