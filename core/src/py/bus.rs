//! Python bindings of the bus: `Bus`, `Subscription`, `Envelope`, `PendingPublish`.
//!
//! Delivery into asyncio: a consumer takes a batch without blocking; when the queue is
//! empty it arms a waker with an asyncio future and awaits that. The waker resolves
//! the future directly when it fires on the loop's own thread (a publish from Python)
//! and through `loop.call_soon_threadsafe` from any other thread, so neither the loop
//! nor the GIL is ever held while waiting.

use std::sync::Arc;
use std::thread::{self, ThreadId};
use std::time::Duration;

use crate::sync::Mutex;
use pyo3::exceptions::PyValueError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString};

use super::aio;
use super::convert::json_to_py;
use super::done::PyDone;
use super::errors::bus_error;
use super::intern::{topic_object, PublishCache, TopicObject};
use crate::bus::envelope::now_unix_nanos;
use crate::bus::{
    topic, Bus, Delivery, Envelope, EventId, Payload, Published, Qos, Subscription,
    SubscriptionStats, TopicHandle, Waker, DEFAULT_TTL,
};

// The Python signatures below spell the default hop limit as a literal.
const _: () = assert!(DEFAULT_TTL == 32);

fn future_waker(loop_: &Bound<'_, PyAny>, fut: &Bound<'_, PyAny>) -> PyResult<Waker> {
    let py = loop_.py();
    let wake_fn = aio::resolver(py)?.clone().unbind();
    let loop_ = loop_.clone().unbind();
    let fut = fut.clone().unbind();
    let loop_thread: ThreadId = thread::current().id();
    Ok(Box::new(move || {
        // `try_attach`: a waker fired from a Rust thread while the interpreter shuts
        // down must not touch Python (nobody is waiting any more).
        let _ = Python::try_attach(|py| {
            let fut = fut.bind(py);
            let result = if thread::current().id() == loop_thread {
                // What `_resolve_future` does, without a call through Python.
                aio::resolve(fut, &py.None().into_bound(py))
            } else {
                loop_
                    .bind(py)
                    .call_method1("call_soon_threadsafe", (wake_fn.bind(py), fut, py.None()))
                    .map(drop)
            };
            // The loop may be closed (runtime shut down); nobody is waiting then.
            if let Err(e) = result {
                aio::log_debug(py, "loom.bus", "waker could not resolve its future", &e);
            }
        });
    }))
}

fn parse_qos(qos: &str) -> PyResult<Qos> {
    Qos::parse(qos).ok_or_else(|| {
        pyo3::exceptions::PyValueError::new_err(format!(
            "unknown qos {qos:?}; expected 'realtime', 'reliable' or 'background'"
        ))
    })
}

/// An event on the bus (read-only).
#[pyclass(name = "Envelope", module = "loom._core", frozen)]
pub(crate) struct PyEnvelope {
    pub(crate) inner: Arc<Envelope>,
    /// `inner.topic` as a Python `str`, shared by the events of a batch on one topic
    /// (every handler reads it).
    topic: Py<PyString>,
}

fn opt_str<'py>(py: Python<'py>, s: &Option<Arc<str>>) -> Option<Bound<'py, PyString>> {
    s.as_deref().map(|s| PyString::new(py, s))
}

#[pymethods]
impl PyEnvelope {
    #[new]
    #[pyo3(signature = (topic, r#type = "event", payload = None, *, source = None, correlation_id = None, reply_to = None, thread_id = None, ttl = 32, headers = None, id = None, timestamp_ns = None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        topic: &str,
        r#type: &str,
        payload: Option<Py<PyAny>>,
        source: Option<&str>,
        correlation_id: Option<&str>,
        reply_to: Option<&str>,
        thread_id: Option<&str>,
        ttl: u32,
        headers: Option<&Bound<'_, PyDict>>,
        id: Option<&str>,
        timestamp_ns: Option<u64>,
    ) -> PyResult<Self> {
        topic::validate_topic(topic).map_err(|e| bus_error(py, e))?;
        let mut env = build(
            topic.into(),
            r#type.into(),
            payload,
            source.map(Into::into),
            correlation_id,
            reply_to,
            thread_id,
            ttl,
            headers,
        )?;
        // Unique (just built): `make_mut` never copies here.
        let e = Arc::make_mut(&mut env);
        if let Some(id) = id {
            e.id = EventId::parse(id).ok_or_else(|| {
                PyValueError::new_err(format!(
                    "id {id:?} is not an event id (as Envelope.id renders one)"
                ))
            })?;
        }
        if let Some(ns) = timestamp_ns {
            e.timestamp_unix_nanos = ns;
        }
        Ok(PyEnvelope {
            inner: env,
            topic: PyString::new(py, topic).unbind(),
        })
    }

    /// How many times this event has been delivered (1 the first time; more when a
    /// reliable subscription over JetStream redelivers it).
    #[getter]
    fn delivery_count(&self) -> u64 {
        self.inner.delivery_count()
    }

    #[getter]
    fn id(&self) -> String {
        self.inner.id.to_string()
    }
    #[getter]
    fn topic<'py>(&self, py: Python<'py>) -> Bound<'py, PyString> {
        self.topic.bind(py).clone()
    }
    #[getter]
    fn r#type<'py>(&self, py: Python<'py>) -> Bound<'py, PyString> {
        PyString::new(py, &self.inner.kind)
    }
    #[getter]
    fn payload<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        Ok(match &self.inner.payload {
            Payload::None => py.None().into_bound(py),
            Payload::Json(v) => json_to_py(py, v)?,
            Payload::Bytes(b) => PyBytes::new(py, b).into_any(),
            Payload::Native(any) => match any.downcast_ref::<Py<PyAny>>() {
                Some(obj) => obj.bind(py).clone(),
                None => py.None().into_bound(py),
            },
        })
    }
    /// Seconds since the Unix epoch (like `time.time()`).
    #[getter]
    fn timestamp(&self) -> f64 {
        self.inner.timestamp_unix_nanos as f64 / 1e9
    }
    #[getter]
    fn timestamp_ns(&self) -> u64 {
        self.inner.timestamp_unix_nanos
    }
    #[getter]
    fn source<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyString>> {
        opt_str(py, &self.inner.source)
    }
    #[getter]
    fn correlation_id<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyString>> {
        opt_str(py, &self.inner.correlation_id)
    }
    #[getter]
    fn reply_to<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyString>> {
        opt_str(py, &self.inner.reply_to)
    }
    #[getter]
    fn thread_id<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyString>> {
        opt_str(py, &self.inner.thread_id)
    }
    #[getter]
    fn ttl(&self) -> u32 {
        self.inner.ttl
    }
    #[getter]
    fn headers<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        for (k, v) in &self.inner.headers {
            d.set_item(&**k, &**v)?;
        }
        Ok(d)
    }

    /// The envelope as a plain dict (the wire schema).
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("id", self.id())?;
        d.set_item("topic", self.topic(py))?;
        d.set_item("type", self.r#type(py))?;
        d.set_item("payload", self.payload(py)?)?;
        d.set_item("timestamp", self.timestamp())?;
        d.set_item("source", self.source(py))?;
        d.set_item("correlation_id", self.correlation_id(py))?;
        d.set_item("reply_to", self.reply_to(py))?;
        d.set_item("thread_id", self.thread_id(py))?;
        d.set_item("ttl", self.ttl())?;
        d.set_item("headers", self.headers(py)?)?;
        Ok(d)
    }

    fn __repr__(&self) -> String {
        format!(
            "Envelope(id='{}', topic={:?}, type={:?}, source={})",
            self.inner.id,
            &*self.inner.topic,
            &*self.inner.kind,
            self.inner
                .source
                .as_deref()
                .map_or("None".to_owned(), |s| format!("{s:?}"))
        )
    }
}

/// The envelope of a publish, built in its `Arc` (the bus takes it as is: no copy of
/// the ~200-byte struct on the way to the queues).
#[allow(clippy::too_many_arguments)]
fn build(
    topic: Arc<str>,
    kind: Arc<str>,
    payload: Option<Py<PyAny>>,
    source: Option<Arc<str>>,
    correlation_id: Option<&str>,
    reply_to: Option<&str>,
    thread_id: Option<&str>,
    ttl: u32,
    headers: Option<&Bound<'_, PyDict>>,
) -> PyResult<Arc<Envelope>> {
    let payload = match payload {
        None => Payload::None,
        Some(obj) => Payload::Native(Arc::new(obj)),
    };
    let headers = match headers {
        None => Vec::new(),
        Some(h) => {
            let mut v = Vec::with_capacity(h.len());
            for (k, val) in h.iter() {
                v.push((
                    k.extract::<String>()?.into(),
                    val.extract::<String>()?.into(),
                ));
            }
            v
        }
    };
    let now = now_unix_nanos();
    Ok(Arc::new(Envelope {
        id: EventId::at(now),
        topic,
        kind,
        payload,
        timestamp_unix_nanos: now,
        source,
        correlation_id: correlation_id.map(Into::into),
        reply_to: reply_to.map(Into::into),
        thread_id: thread_id.map(Into::into),
        ttl,
        headers,
    }))
}

/// A publish that found `reliable` subscribers full; the caller waits for room.
#[pyclass(name = "PendingPublish", module = "loom._core", frozen)]
pub(crate) struct PyPendingPublish {
    bus: Bus,
    inner: Mutex<Published>,
}

#[pymethods]
impl PyPendingPublish {
    /// Offers the event again to the subscribers that were full; `True` when done.
    fn retry(&self) -> bool {
        let mut p = self.inner.lock();
        self.bus.retry(&mut p);
        p.blocked.is_empty()
    }

    /// Arms `fut` to be resolved when the first still-full subscriber has room.
    /// Returns `False` (not armed) if there is room already: call `retry`.
    fn arm(&self, event_loop: &Bound<'_, PyAny>, fut: &Bound<'_, PyAny>) -> PyResult<bool> {
        let sub = match self.inner.lock().blocked.first() {
            Some(s) => Arc::clone(s),
            None => return Ok(false),
        };
        Ok(sub.set_space_waker(future_waker(event_loop, fut)?))
    }

    /// Gives up waiting: counts the drops and returns the `BusFullError` to raise.
    fn give_up(&self, py: Python<'_>, timeout: f64) -> PyErr {
        let p = self.inner.lock();
        bus_error(
            py,
            self.bus
                .give_up(&p, Duration::from_secs_f64(timeout.max(0.0))),
        )
    }

    #[getter]
    fn event_id(&self) -> String {
        self.inner.lock().envelope.id.to_string()
    }
}

/// One subscriber's queue.
#[pyclass(name = "Subscription", module = "loom._core", frozen)]
pub(crate) struct PySubscription {
    sub: Arc<Subscription>,
    bus: Bus,
    topic: TopicObject,
}

#[pymethods]
impl PySubscription {
    /// Takes up to `max` queued events without blocking.
    #[pyo3(signature = (max = 256))]
    fn take<'py>(&self, py: Python<'py>, max: usize) -> PyResult<Bound<'py, PyList>> {
        let batch = self.sub.take(max);
        let mut cached = self.topic.take();
        let list = PyList::new(
            py,
            batch.into_iter().map(|inner| PyEnvelope {
                topic: topic_object(py, &mut cached, &inner.topic),
                inner,
            }),
        );
        self.topic.put(cached);
        list
    }

    /// Arms `fut` to be resolved on the next event (or on close). Returns `False`
    /// without arming when events are already queued or the subscription is closed.
    fn arm(&self, event_loop: &Bound<'_, PyAny>, fut: &Bound<'_, PyAny>) -> PyResult<bool> {
        Ok(self.sub.set_waker(future_waker(event_loop, fut)?))
    }

    /// Removes the subscription from the bus and closes it.
    fn unsubscribe(&self) -> bool {
        self.bus.unsubscribe(self.sub.id)
    }

    #[getter]
    fn id(&self) -> u64 {
        self.sub.id
    }
    #[getter]
    fn pattern(&self) -> &str {
        &self.sub.pattern
    }
    #[getter]
    fn qos(&self) -> &'static str {
        self.sub.qos.as_str()
    }
    #[getter]
    fn group(&self) -> Option<&str> {
        self.sub.group.as_deref()
    }
    #[getter]
    fn capacity(&self) -> usize {
        self.sub.capacity
    }
    #[getter]
    fn depth(&self) -> usize {
        self.sub.depth()
    }
    #[getter]
    fn closed(&self) -> bool {
        self.sub.is_closed()
    }

    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        sub_stats(py, &self.sub.stats())
    }

    fn __repr__(&self) -> String {
        format!(
            "Subscription(id={}, pattern={:?}, qos={:?})",
            self.sub.id,
            &*self.sub.pattern,
            self.sub.qos.as_str()
        )
    }
}

fn sub_stats<'py>(py: Python<'py>, s: &SubscriptionStats) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("id", s.id)?;
    d.set_item("pattern", &s.pattern)?;
    d.set_item("group", s.group.as_deref())?;
    d.set_item("qos", s.qos.as_str())?;
    d.set_item("capacity", s.capacity)?;
    d.set_item("depth", s.depth)?;
    d.set_item("enqueued", s.enqueued)?;
    d.set_item("delivered", s.delivered)?;
    let dropped = PyDict::new(py);
    dropped.set_item("overflow_oldest", s.dropped_oldest)?;
    dropped.set_item("overflow_newest", s.dropped_newest)?;
    dropped.set_item("timeout", s.dropped_timeout)?;
    dropped.set_item("closed", s.dropped_closed)?;
    d.set_item("dropped", dropped)?;
    Ok(d)
}

/// The in-process event bus.
#[pyclass(name = "Bus", module = "loom._core", frozen)]
pub(crate) struct PyBus {
    bus: Bus,
    /// Types, sources and topics of recent publishes (see `intern`); a topic with its
    /// handle (`None`: the bus tracks no more topics, or the topic is invalid and
    /// publishing it will say why).
    names: PublishCache<Arc<(Arc<str>, Option<TopicHandle>)>>,
}

#[pymethods]
impl PyBus {
    #[new]
    fn new() -> Self {
        PyBus {
            bus: Bus::new(),
            names: PublishCache::new(),
        }
    }

    #[pyo3(signature = (pattern, qos = "realtime", capacity = None, group = None))]
    fn subscribe(
        &self,
        py: Python<'_>,
        pattern: &str,
        qos: &str,
        capacity: Option<usize>,
        group: Option<&str>,
    ) -> PyResult<PySubscription> {
        let qos = parse_qos(qos)?;
        if capacity == Some(0) {
            return Err(pyo3::exceptions::PyValueError::new_err(
                "capacity must be at least 1",
            ));
        }
        let sub = self
            .bus
            .subscribe_group(pattern, qos, capacity, group)
            .map_err(|e| bus_error(py, e))?;
        Ok(PySubscription {
            sub,
            bus: self.bus.clone(),
            topic: TopicObject::default(),
        })
    }

    /// An observer of `pattern` (a `background` queue of `capacity` left out of the
    /// topics' totals; see `Bus::observe`).
    #[pyo3(signature = (pattern, capacity = 512))]
    fn observe(&self, py: Python<'_>, pattern: &str, capacity: usize) -> PyResult<PySubscription> {
        if capacity == 0 {
            return Err(pyo3::exceptions::PyValueError::new_err(
                "capacity must be at least 1",
            ));
        }
        let sub = self
            .bus
            .observe(pattern, capacity)
            .map_err(|e| bus_error(py, e))?;
        Ok(PySubscription {
            sub,
            bus: self.bus.clone(),
            topic: TopicObject::default(),
        })
    }

    /// Publishes an event. Returns `None` when every subscriber took it, or a
    /// `PendingPublish` when `reliable` subscribers were full. The envelope's fields
    /// may be given by position (the agents' hot path does: no keyword matching).
    #[pyo3(
        signature = (topic, r#type = None, payload = None, source = None, correlation_id = None, reply_to = None, thread_id = None, ttl = 32, headers = None, *, to_group = None),
        text_signature = "(self, /, topic, type='event', payload=None, source=None, correlation_id=None, reply_to=None, thread_id=None, ttl=32, headers=None, *, to_group=None)"
    )]
    #[allow(clippy::too_many_arguments)]
    fn publish(
        &self,
        py: Python<'_>,
        topic: &Bound<'_, PyString>,
        r#type: Option<&Bound<'_, PyString>>,
        payload: Option<Py<PyAny>>,
        source: Option<&Bound<'_, PyString>>,
        correlation_id: Option<&str>,
        reply_to: Option<&str>,
        thread_id: Option<&str>,
        ttl: u32,
        headers: Option<&Bound<'_, PyDict>>,
        to_group: Option<&str>,
    ) -> PyResult<Option<PyPendingPublish>> {
        let kind = r#type.unwrap_or_else(|| intern!(py, "event"));
        let (kind, source, cached) = self.names.names(kind, source, topic, |t| {
            Arc::new(match self.bus.topic_handle(t) {
                Ok(Some(h)) => (Arc::clone(h.topic()), Some(h)),
                _ => (Arc::from(t), None),
            })
        })?;
        let (topic, handle) = &*cached;
        let env = build(
            Arc::clone(topic),
            kind,
            payload,
            source,
            correlation_id,
            reply_to,
            thread_id,
            ttl,
            headers,
        )?;
        match to_group {
            // A transport handing an event to the queue group this process serves.
            Some(g) => self.finish(py, self.bus.deliver_to(env, Delivery::Group(g))),
            None => match handle {
                Some(h) => self.finish(py, self.bus.publish_on(h, env)),
                None => self.finish(py, self.bus.publish(env)),
            },
        }
    }

    fn unsubscribe(&self, id: u64) -> bool {
        self.bus.unsubscribe(id)
    }

    /// Leaves queue groups to a transport spanning processes (see `loom.nats`).
    fn set_remote_groups(&self, on: bool) {
        self.bus.set_remote_groups(on)
    }

    fn close(&self) {
        self.bus.close()
    }

    #[getter]
    fn closed(&self) -> bool {
        self.bus.is_closed()
    }

    #[getter]
    fn subscription_count(&self) -> usize {
        self.bus.subscription_count()
    }

    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.bus.stats();
        let d = PyDict::new(py);
        d.set_item("published", s.published)?;
        d.set_item("untracked_published", s.untracked_published)?;
        let topics = PyList::empty(py);
        for t in &s.topics {
            let td = PyDict::new(py);
            td.set_item("topic", &t.topic)?;
            td.set_item("published", t.published)?;
            td.set_item("delivered", t.delivered)?;
            td.set_item("dropped", t.dropped)?;
            td.set_item("subscribers", t.subscribers)?;
            topics.append(td)?;
        }
        d.set_item("topics", topics)?;
        let subs = PyList::empty(py);
        for sub in &s.subscriptions {
            subs.append(sub_stats(py, sub)?)?;
        }
        d.set_item("subscriptions", subs)?;
        Ok(d)
    }
}

impl PyBus {
    fn finish(
        &self,
        py: Python<'_>,
        result: Result<Published, crate::error::BusError>,
    ) -> PyResult<Option<PyPendingPublish>> {
        let published = result.map_err(|e| bus_error(py, e))?;
        if published.blocked.is_empty() {
            return Ok(None);
        }
        Ok(Some(PyPendingPublish {
            bus: self.bus.clone(),
            inner: Mutex::new(published),
        }))
    }
}

/// Raises `InvalidTopicError` unless `topic` is a valid topic to publish on.
#[pyfunction]
fn validate_topic(py: Python<'_>, topic: &str) -> PyResult<()> {
    topic::validate_topic(topic).map_err(|e| bus_error(py, e))
}

/// Raises `InvalidTopicError` unless `pattern` is a valid subscription pattern.
#[pyfunction]
fn validate_pattern(py: Python<'_>, pattern: &str) -> PyResult<()> {
    topic::validate_pattern(pattern).map_err(|e| bus_error(py, e))
}

/// Whether `pattern` matches `topic` (NATS semantics).
#[pyfunction]
fn topic_matches(pattern: &str, topic: &str) -> bool {
    topic::matches(pattern, topic)
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyBus>()?;
    m.add_class::<PySubscription>()?;
    m.add_class::<PyEnvelope>()?;
    m.add_class::<PyPendingPublish>()?;
    m.add_class::<PyDone>()?;
    m.add_function(wrap_pyfunction!(validate_topic, m)?)?;
    m.add_function(wrap_pyfunction!(validate_pattern, m)?)?;
    m.add_function(wrap_pyfunction!(topic_matches, m)?)?;
    Ok(())
}
