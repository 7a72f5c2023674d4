//! Reusing the Rust copies of Python strings that keep coming back.
//!
//! A publish names its topic, type and source with Python `str` objects that are, as a
//! rule, the very same objects every time (literals, an agent's id). [`PublishCache`]
//! maps an object's address to what was made from it the first time (its text as an
//! `Arc<str>`; for a topic, also the bus's handle of it), so the next publish with that
//! object copies, allocates and looks up nothing. It is two-way set-associative: two
//! objects whose addresses fall in the same set (a publisher's type and source, say)
//! both stay cached instead of evicting each other on every publish; a miss replaces
//! the set's older entry. [`StrCache`] is the direct-mapped, one-string-at-a-time form
//! (for the span exporter's attribute texts). Each slot holds a reference to its object,
//! so while cached the address cannot be reused by another string (and a `str`'s text
//! never changes).

use std::sync::Arc;

use crate::sync::Mutex;
use pyo3::prelude::*;
use pyo3::types::PyString;

/// Sets of two slots each (the publish cache).
const SETS: usize = 64;

/// Slots of a [`StrCache`] by default.
const SLOTS: usize = 64;

struct Slot<V> {
    obj: Py<PyString>,
    value: V,
}

/// Python `str` object → what was made from its text (`V`), for the objects seen last:
/// direct-mapped, one lock per lookup (for callers with one string to look up).
pub(crate) struct StrCache<V = Arc<str>, const N: usize = SLOTS> {
    slots: Mutex<Vec<Option<Slot<V>>>>,
}

impl<V: Clone, const N: usize> StrCache<V, N> {
    pub(crate) fn new() -> Self {
        StrCache {
            slots: Mutex::new((0..N).map(|_| None).collect()),
        }
    }

    /// What was made for this very object, if it is cached (one lock, no text read).
    pub(crate) fn get(&self, s: &Bound<'_, PyString>) -> Option<V> {
        let addr = s.as_ptr() as usize;
        // Objects are 16-byte aligned: the low bits say nothing.
        let i = (addr >> 4) % N;
        match &self.slots.lock()[i] {
            Some(slot) if slot.obj.as_ptr() as usize == addr => Some(slot.value.clone()),
            _ => None,
        }
    }

    /// `make(text of s)`, cached for later [`get`](Self::get)s of the same object
    /// (replacing the slot's entry).
    pub(crate) fn insert_with(
        &self,
        s: &Bound<'_, PyString>,
        make: impl FnOnce(&str) -> V,
    ) -> PyResult<V> {
        let i = (s.as_ptr() as usize >> 4) % N;
        let value = make(s.to_str()?);
        let new = Slot {
            obj: s.clone().unbind(),
            value: value.clone(),
        };
        let old = self.slots.lock()[i].replace(new);
        // Released outside the lock: dropping a reference may run Python code.
        drop(old);
        Ok(value)
    }
}

/// Python `str` object → what was made from its text (`V`), for the objects seen last.
struct Table<V> {
    /// `SETS` sets; in each, slot 0 is the most recently filled.
    sets: Vec<[Option<Slot<V>>; 2]>,
}

fn set_of(s: &Bound<'_, PyString>) -> usize {
    // Objects are 16-byte aligned: the low bits say nothing.
    (s.as_ptr() as usize >> 4) % SETS
}

impl<V: Clone> Table<V> {
    fn new() -> Self {
        Table {
            sets: (0..SETS).map(|_| [None, None]).collect(),
        }
    }

    fn find(&self, s: &Bound<'_, PyString>) -> Option<V> {
        self.sets[set_of(s)]
            .iter()
            .flatten()
            .find(|slot| slot.obj.as_ptr() == s.as_ptr())
            .map(|slot| slot.value.clone())
    }

    /// Caches `value` for `s`; returns the entry it evicted (to drop outside the lock).
    fn insert(&mut self, s: &Bound<'_, PyString>, value: V) -> Option<Slot<V>> {
        let set = &mut self.sets[set_of(s)];
        let old = set[1].take();
        set[1] = set[0].replace(Slot {
            obj: s.clone().unbind(),
            value,
        });
        old
    }
}

/// What a publish names, as cached: `(type, source, topic)`.
pub(crate) type Names<T> = (Arc<str>, Option<Arc<str>>, T);

/// The strings of recent publishes (types and sources) and their topics (`T`: the text
/// and the bus's handle), under one lock: a publish that hits takes it once.
pub(crate) struct PublishCache<T> {
    tables: Mutex<(Table<Arc<str>>, Table<T>)>,
}

impl<T: Clone> PublishCache<T> {
    pub(crate) fn new() -> Self {
        PublishCache {
            tables: Mutex::new((Table::new(), Table::new())),
        }
    }

    /// The cached `(type, source, topic)` of a publish, made from their text the first
    /// time each object is seen (`make_topic` for the topic).
    pub(crate) fn names(
        &self,
        kind: &Bound<'_, PyString>,
        source: Option<&Bound<'_, PyString>>,
        topic: &Bound<'_, PyString>,
        make_topic: impl FnOnce(&str) -> T,
    ) -> PyResult<Names<T>> {
        let (k, s, t) = {
            let tables = self.tables.lock();
            (
                tables.0.find(kind),
                source.map(|s| tables.0.find(s)),
                tables.1.find(topic),
            )
        };
        if let (Some(k), None | Some(Some(_)), Some(t)) = (&k, &s, &t) {
            return Ok((k.clone(), s.flatten(), t.clone()));
        }
        // A miss: make what is missing without the lock, then cache it.
        let k = match k {
            Some(k) => (k, None),
            None => (Arc::<str>::from(kind.to_str()?), Some(kind)),
        };
        let s = match (source, s.flatten()) {
            (Some(obj), None) => Some((Arc::<str>::from(obj.to_str()?), Some(obj))),
            (_, found) => found.map(|v| (v, None)),
        };
        let t = match t {
            Some(t) => (t, None),
            None => (make_topic(topic.to_str()?), Some(topic)),
        };
        let evicted = {
            let mut tables = self.tables.lock();
            let mut evicted = Vec::new();
            if let Some(obj) = k.1 {
                evicted.extend(tables.0.insert(obj, k.0.clone()).map(|s| s.obj));
            }
            if let Some((v, Some(obj))) = &s {
                evicted.extend(tables.0.insert(obj, v.clone()).map(|s| s.obj));
            }
            if let Some(obj) = t.1 {
                if let Some(old) = tables.1.insert(obj, t.0.clone()) {
                    evicted.push(old.obj);
                }
            }
            evicted
        };
        // Released outside the lock: dropping a reference may run Python code.
        drop(evicted);
        Ok((k.0, s.map(|s| s.0), t.0))
    }
}

/// The Python `str` of a topic, made once for a run of events on the same topic.
#[derive(Default)]
pub(crate) struct TopicObject {
    last: Mutex<Option<(Arc<str>, Py<PyString>)>>,
}

impl TopicObject {
    /// Takes the cached pair out (so no lock is held while Python allocates).
    pub(crate) fn take(&self) -> Option<(Arc<str>, Py<PyString>)> {
        self.last.lock().take()
    }

    /// Puts a pair back for the next batch.
    pub(crate) fn put(&self, pair: Option<(Arc<str>, Py<PyString>)>) {
        let old = std::mem::replace(&mut *self.last.lock(), pair);
        drop(old);
    }
}

/// The Python `str` for `topic`: the cached one if it is the same `Arc`, else a new one
/// that becomes the cached one.
pub(crate) fn topic_object(
    py: Python<'_>,
    cached: &mut Option<(Arc<str>, Py<PyString>)>,
    topic: &Arc<str>,
) -> Py<PyString> {
    if let Some((t, obj)) = cached.as_ref() {
        if Arc::ptr_eq(t, topic) || **t == **topic {
            return obj.clone_ref(py);
        }
    }
    let obj = PyString::new(py, topic).unbind();
    *cached = Some((Arc::clone(topic), obj.clone_ref(py)));
    obj
}
