//! Reusing the Rust copies of Python strings that keep coming back.
//!
//! A publish names its topic, type and source with Python `str` objects that are, as a
//! rule, the very same objects every time (literals, an agent's id). [`StrCache`] maps
//! an object's address to what was made from it the first time (its text as an
//! `Arc<str>`; for a topic, also the bus's handle of it), so the next publish with that
//! object copies, allocates and looks up nothing. It is two-way set-associative: two
//! objects whose addresses fall in the same set (a publisher's type and source, say)
//! both stay cached instead of evicting each other on every publish; a miss replaces
//! the set's older entry. Each slot holds a reference to its object, so while cached
//! the address cannot be reused by another string (and a `str`'s text never changes).

use std::sync::Arc;

use parking_lot::Mutex;
use pyo3::prelude::*;
use pyo3::types::PyString;

/// Sets of two slots each.
const SETS: usize = 64;

struct Slot<V> {
    obj: Py<PyString>,
    value: V,
}

/// Python `str` object → what was made from its text (`V`), for the objects seen last.
pub(crate) struct StrCache<V = Arc<str>> {
    /// `SETS` sets; in each, slot 0 is the most recently filled.
    slots: Mutex<Vec<[Option<Slot<V>>; 2]>>,
}

impl<V: Clone> StrCache<V> {
    pub(crate) fn new() -> Self {
        StrCache {
            slots: Mutex::new((0..SETS).map(|_| [None, None]).collect()),
        }
    }

    /// `make(text of s)`, shared with earlier calls made with the same object.
    pub(crate) fn get_with(
        &self,
        s: &Bound<'_, PyString>,
        make: impl FnOnce(&str) -> V,
    ) -> PyResult<V> {
        let addr = s.as_ptr() as usize;
        // Objects are 16-byte aligned: the low bits say nothing.
        let i = (addr >> 4) % SETS;
        {
            let slots = self.slots.lock();
            for slot in slots[i].iter().flatten() {
                if slot.obj.as_ptr() as usize == addr {
                    return Ok(slot.value.clone());
                }
            }
        }
        let value = make(s.to_str()?);
        let new = Slot {
            obj: s.clone().unbind(),
            value: value.clone(),
        };
        let old = {
            let mut slots = self.slots.lock();
            let set = &mut slots[i];
            let old = set[1].take();
            set[1] = set[0].replace(new);
            old
        };
        // Released outside the lock: dropping a reference may run Python code.
        drop(old);
        Ok(value)
    }
}

impl StrCache<Arc<str>> {
    /// The text of `s`, shared with earlier calls made with the same object.
    pub(crate) fn get(&self, s: &Bound<'_, PyString>) -> PyResult<Arc<str>> {
        self.get_with(s, |t| Arc::from(t))
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
