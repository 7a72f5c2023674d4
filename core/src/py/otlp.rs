//! Python binding of the span exporter (`crate::otlp`): `loom._core.SpanExporter`.
//!
//! `push` takes a finished span's fields as plain Python values and converts them into
//! an owned [`SpanRecord`] with the GIL held — that conversion is the only work done on
//! the caller's thread. The enqueue itself takes a lock held for a few pointer moves, so
//! the GIL is kept across it (releasing and re-taking it would cost more). Encoding and
//! writing run on the exporter's own thread, which never takes the GIL (except to log a
//! write error). `flush` and `shutdown` wait with the GIL released.
//!
//! Resources and scopes are registered once (`add_resource`, `add_scope`) and named by
//! their index in `push`: spans with the same index are grouped together, as the
//! Python encoder groups spans with the same resource and scope object.

use std::sync::Arc;
use std::time::Duration;

use crate::sync::Mutex;
use pyo3::exceptions::{PyIndexError, PyOSError, PyValueError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{
    PyBool, PyByteArray, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple,
};

use super::intern::StrCache;
use crate::otlp::{
    AnyValue, Config, ErrorHook, Event, Exporter, KeyValue, Link, Pushed, Resource, Scope,
    SpanRecord, Status, Text,
};

/// Nesting deeper than this (lists in lists, a list holding itself) is refused.
const MAX_DEPTH: usize = 64;

/// Strings up to this many characters are looked up in (and put into) the cache:
/// attribute keys and the short values that recur (operation names, systems, agents).
const CACHED_LEN: usize = 64;

/// Attribute keys and short string values, by object (see `intern.rs`).
type TextCache = StrCache<Text, 512>;

fn text(s: &Bound<'_, PyString>) -> PyResult<Text> {
    match s.to_str() {
        Ok(s) => Ok(Text::new(s)),
        // Lone surrogates (the encoder writes them as `\udXXX`).
        Err(_) => {
            let bytes = s.call_method1("encode", ("utf-8", "surrogatepass"))?;
            Ok(Text::from_surrogatepass(
                bytes.cast::<PyBytes>()?.as_bytes(),
            ))
        }
    }
}

/// [`text`], from the cache for short strings.
fn cached_text(cache: &TextCache, s: &Bound<'_, PyString>) -> PyResult<Text> {
    // Looked up before the length is read: only short strings are ever cached.
    if let Some(t) = cache.get(s) {
        return Ok(t);
    }
    if s.len()? <= CACHED_LEN {
        if let Ok(t) = cache.insert_with(s, Text::new) {
            return Ok(t);
        }
    }
    text(s)
}

fn any_text(obj: &Bound<'_, PyAny>) -> PyResult<Text> {
    match obj.cast_exact::<PyString>() {
        Ok(s) => text(s),
        Err(_) => text(&obj.str()?),
    }
}

fn opt_text(obj: Option<&Bound<'_, PyAny>>) -> PyResult<Option<Text>> {
    match obj {
        Some(o) if !o.is_none() => {
            let t = any_text(o)?;
            Ok((!t.is_empty()).then_some(t))
        }
        _ => Ok(None),
    }
}

fn too_deep() -> PyErr {
    PyValueError::new_err("attribute value nested too deeply")
}

/// The Python encoder's `_value_json` cases, in its order.
fn any_value(c: &TextCache, v: &Bound<'_, PyAny>, depth: usize) -> PyResult<AnyValue> {
    if let Ok(s) = v.cast_exact::<PyString>() {
        return Ok(AnyValue::Str(cached_text(c, s)?));
    }
    if let Ok(b) = v.cast_exact::<PyBool>() {
        return Ok(AnyValue::Bool(b.is_true()));
    }
    if v.is_exact_instance_of::<PyInt>() {
        return int_value(v);
    }
    if let Ok(f) = v.cast_exact::<PyFloat>() {
        return Ok(AnyValue::Double(f.value()));
    }
    if v.cast::<PyList>().is_ok() || v.cast::<PyTuple>().is_ok() {
        if depth >= MAX_DEPTH {
            return Err(too_deep());
        }
        let mut items = Vec::with_capacity(v.len()?);
        for item in v.try_iter()? {
            items.push(any_value(c, &item?, depth + 1)?);
        }
        return Ok(AnyValue::Array(items));
    }
    if let Ok(b) = v.cast::<PyBytes>() {
        return Ok(AnyValue::Bytes(b.as_bytes().into()));
    }
    if let Ok(b) = v.cast::<PyByteArray>() {
        return Ok(AnyValue::Bytes(b.to_vec().into()));
    }
    if is_mapping(v)? {
        if depth >= MAX_DEPTH {
            return Err(too_deep());
        }
        return Ok(AnyValue::KvList(attributes_at(c, v, depth + 1)?));
    }
    if v.is_none() {
        return Ok(AnyValue::Empty);
    }
    if v.cast::<PyInt>().is_ok() {
        return int_value(&v.py().get_type::<PyInt>().call1((v,))?);
    }
    if v.cast::<PyFloat>().is_ok() {
        return Ok(AnyValue::Double(v.extract::<f64>()?));
    }
    Ok(AnyValue::Str(text(&v.str()?)?))
}

fn int_value(v: &Bound<'_, PyAny>) -> PyResult<AnyValue> {
    match v.extract::<i64>() {
        Ok(i) => Ok(AnyValue::Int(i)),
        Err(_) => Ok(AnyValue::BigInt(v.str()?.to_str()?.into())),
    }
}

fn is_mapping(v: &Bound<'_, PyAny>) -> PyResult<bool> {
    if v.cast::<PyDict>().is_ok() {
        return Ok(true);
    }
    let abc = v.py().import("collections.abc")?.getattr("Mapping")?;
    v.is_instance(&abc)
}

fn attributes(c: &TextCache, obj: &Bound<'_, PyAny>) -> PyResult<Vec<KeyValue>> {
    attributes_at(c, obj, 0)
}

fn attributes_at(c: &TextCache, obj: &Bound<'_, PyAny>, depth: usize) -> PyResult<Vec<KeyValue>> {
    if obj.is_none() {
        return Ok(Vec::new());
    }
    let kv = |k: &Bound<'_, PyAny>, v: &Bound<'_, PyAny>| -> PyResult<KeyValue> {
        let key = match k.cast_exact::<PyString>() {
            Ok(k) => cached_text(c, k)?,
            Err(_) => any_text(k)?,
        };
        Ok(KeyValue {
            key,
            value: any_value(c, v, depth)?,
        })
    };
    if let Ok(d) = obj.cast::<PyDict>() {
        let mut out = Vec::with_capacity(d.len());
        for (k, v) in d.iter() {
            out.push(kv(&k, &v)?);
        }
        return Ok(out);
    }
    // Any other mapping (a MappingProxy, the SDK's BoundedAttributes).
    let mut out = Vec::new();
    for item in obj.call_method0("items")?.try_iter()? {
        let (k, v): (Bound<'_, PyAny>, Bound<'_, PyAny>) = item?.extract()?;
        out.push(kv(&k, &v)?);
    }
    Ok(out)
}

/// An int as `u64` through `PyLong_AsUnsignedLong` (64 bits on this platform: a loop
/// over the int's 30-bit digits), not PyO3's `PyLong_AsUnsignedLongLong`, which goes
/// through `_PyLong_AsByteArray` for anything over 30 bits (~250 instructions against
/// ~30 for a span id or a timestamp). Anything but an exact `int`, and any error, goes
/// through PyO3's extraction: the same values and the same errors.
fn fast_u64(v: &Bound<'_, PyAny>) -> PyResult<u64> {
    #[cfg(all(target_pointer_width = "64", not(windows)))]
    if v.is_exact_instance_of::<PyInt>() {
        const _: () = assert!(std::mem::size_of::<std::os::raw::c_ulong>() == 8);
        // SAFETY: the GIL is held (`v` is bound) and `v` is an int.
        let x = unsafe { ffi::PyLong_AsUnsignedLong(v.as_ptr()) };
        if x != std::os::raw::c_ulong::MAX {
            return Ok(x);
        }
        // u64::MAX itself, or an error (negative, too large): PyO3 decides.
        drop(PyErr::take(v.py()));
    }
    v.extract::<u64>()
}

/// [`fast_u64`] of an optional value (None stays None).
fn fast_opt_u64(v: &Bound<'_, PyAny>) -> PyResult<Option<u64>> {
    if v.is_none() {
        return Ok(None);
    }
    fast_u64(v).map(Some)
}

/// The last trace id converted, by object: a trace's spans share their trace id's `int`
/// (each span's context takes its parent's), whose conversion (`_PyLong_AsByteArray`,
/// 128 bits) is then done once per trace instead of once per span.
#[derive(Default)]
struct TraceIdCache {
    last: Mutex<Option<(Py<PyAny>, u128)>>,
}

impl TraceIdCache {
    fn get(&self, v: &Bound<'_, PyAny>) -> PyResult<u128> {
        if let Some((obj, id)) = &*self.last.lock() {
            if obj.as_ptr() == v.as_ptr() {
                return Ok(*id);
            }
        }
        let id = v.extract::<u128>()?;
        if v.is_exact_instance_of::<PyInt>() {
            // An exact int never changes: the cached value stays right while it is held.
            let old = self.last.lock().replace((v.clone().unbind(), id));
            drop(old); // outside the lock: releasing a reference
        }
        Ok(id)
    }
}

fn log_warning(message: &str) {
    // `try_attach`: nothing to log to while the interpreter shuts down.
    let _ = Python::try_attach(|py| -> PyResult<()> {
        let logger = py
            .import("logging")?
            .call_method1("getLogger", ("loom.telemetry",))?;
        logger.call_method1("warning", ("%s", message))?;
        Ok(())
    });
}

/// Registered resources and scopes, by index (one lock for both per span).
#[derive(Default)]
struct Registry {
    resources: Vec<Arc<Resource>>,
    scopes: Vec<Arc<Scope>>,
}

impl Registry {
    fn get(
        &self,
        resource: usize,
        scope: Option<usize>,
    ) -> PyResult<(Arc<Resource>, Option<Arc<Scope>>)> {
        let resource = self
            .resources
            .get(resource)
            .cloned()
            .ok_or_else(|| PyIndexError::new_err("unknown resource"))?;
        let scope = match scope {
            Some(i) => Some(
                self.scopes
                    .get(i)
                    .cloned()
                    .ok_or_else(|| PyIndexError::new_err("unknown scope"))?,
            ),
            None => None,
        };
        Ok((resource, scope))
    }
}

/// The fields `push` and `push_plain` share, converted.
struct Common {
    trace_id: u128,
    span_id: u64,
    trace_state: Option<Text>,
    parent: Option<(u64, bool)>,
    name: Text,
    kind: u8,
    start_time: Option<u64>,
    end_time: Option<u64>,
    attributes: Vec<KeyValue>,
    dropped_attributes: u32,
    resource: usize,
    scope: Option<usize>,
}

/// Writes finished spans to an OTLP/JSON lines file from a Rust thread.
#[pyclass(name = "SpanExporter", module = "loom._core", frozen)]
pub(crate) struct PySpanExporter {
    inner: Exporter,
    registry: Mutex<Registry>,
    texts: TextCache,
    trace_ids: TraceIdCache,
}

impl PySpanExporter {
    /// Builds the record (status, events and links as given) and queues it.
    fn queue(
        &self,
        common: Common,
        events: Vec<Event>,
        dropped_events: u32,
        links: Vec<Link>,
        dropped_links: u32,
        status: Status,
    ) -> PyResult<u8> {
        let (resource, scope) = self.registry.lock().get(common.resource, common.scope)?;
        let record = SpanRecord {
            trace_id: common.trace_id,
            span_id: common.span_id,
            trace_state: common.trace_state,
            parent: common.parent,
            name: common.name,
            kind: common.kind,
            start_time_unix_nano: common.start_time.unwrap_or(0),
            end_time_unix_nano: common.end_time.unwrap_or(0),
            attributes: common.attributes,
            dropped_attributes: common.dropped_attributes,
            events,
            dropped_events,
            links,
            dropped_links,
            status,
            resource,
            scope,
        };
        Ok(match self.inner.push(record) {
            Pushed::Queued => 0,
            Pushed::DroppedOldest => 1,
            Pushed::Shutdown => 2,
        })
    }
}

#[pymethods]
impl PySpanExporter {
    #[new]
    #[pyo3(signature = (path, *, max_queue_size = 2048, max_export_batch_size = 512, schedule_delay_millis = 5000.0))]
    fn new(
        path: std::path::PathBuf,
        max_queue_size: usize,
        max_export_batch_size: usize,
        schedule_delay_millis: f64,
    ) -> PyResult<Self> {
        if max_queue_size == 0 || max_export_batch_size == 0 || schedule_delay_millis <= 0.0 {
            return Err(PyValueError::new_err(
                "max_queue_size, max_export_batch_size and schedule_delay_millis must be > 0",
            ));
        }
        let config = Config {
            max_queue_size,
            max_batch_size: max_export_batch_size,
            schedule_delay: Duration::from_secs_f64(schedule_delay_millis / 1000.0),
        };
        let hook: ErrorHook = Box::new(log_warning);
        let inner = Exporter::start(path, config, Some(hook))
            .map_err(|e| PyOSError::new_err(format!("cannot start the span exporter: {e}")))?;
        Ok(PySpanExporter {
            inner,
            registry: Mutex::new(Registry::default()),
            texts: TextCache::new(),
            trace_ids: TraceIdCache::default(),
        })
    }

    /// The file written to.
    #[getter]
    fn path(&self) -> std::path::PathBuf {
        self.inner.path().to_path_buf()
    }

    /// Registers a resource; returns its index for `push`.
    #[pyo3(signature = (attributes, schema_url = None))]
    fn add_resource(
        &self,
        attributes: &Bound<'_, PyAny>,
        schema_url: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<usize> {
        let res = Resource {
            attributes: self::attributes(&self.texts, attributes)?,
            schema_url: opt_text(schema_url)?,
        };
        let mut all = self.registry.lock();
        all.resources.push(Arc::new(res));
        Ok(all.resources.len() - 1)
    }

    /// Registers an instrumentation scope; returns its index for `push`.
    #[pyo3(signature = (name, version = None, attributes = None, schema_url = None))]
    fn add_scope(
        &self,
        name: &Bound<'_, PyAny>,
        version: Option<&Bound<'_, PyAny>>,
        attributes: Option<&Bound<'_, PyAny>>,
        schema_url: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<usize> {
        let scope = Scope {
            name: any_text(name)?,
            version: opt_text(version)?,
            attributes: match attributes {
                Some(a) => self::attributes(&self.texts, a)?,
                None => Vec::new(),
            },
            schema_url: opt_text(schema_url)?,
        };
        let mut all = self.registry.lock();
        all.scopes.push(Arc::new(scope));
        Ok(all.scopes.len() - 1)
    }

    /// Queues a finished span. Returns 0 (queued), 1 (queued, the oldest queued span
    /// dropped: the queue was full) or 2 (refused: shut down).
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (trace_id, span_id, trace_state, parent_span_id, parent_is_remote, name, kind, start_time, end_time, attributes, dropped_attributes, events, dropped_events, links, dropped_links, status_code, status_message, resource, scope))]
    fn push(
        &self,
        trace_id: u128,
        span_id: u64,
        trace_state: Option<&Bound<'_, PyAny>>,
        parent_span_id: Option<u64>,
        parent_is_remote: bool,
        name: &Bound<'_, PyAny>,
        kind: u8,
        start_time: Option<u64>,
        end_time: Option<u64>,
        attributes: &Bound<'_, PyAny>,
        dropped_attributes: u32,
        events: &Bound<'_, PyAny>,
        dropped_events: u32,
        links: &Bound<'_, PyAny>,
        dropped_links: u32,
        status_code: u8,
        status_message: Option<&Bound<'_, PyAny>>,
        resource: usize,
        scope: Option<usize>,
    ) -> PyResult<u8> {
        let common = Common {
            trace_id,
            span_id,
            trace_state: opt_text(trace_state)?,
            parent: parent_span_id.map(|id| (id, parent_is_remote)),
            // Not cached: span names are mostly made per span (`chat {model}`).
            name: any_text(name)?,
            kind,
            start_time,
            end_time,
            attributes: self::attributes(&self.texts, attributes)?,
            dropped_attributes,
            resource,
            scope,
        };
        let status = Status {
            code: status_code,
            message: opt_text(status_message)?,
        };
        let mut record_events = Vec::new();
        if !events.is_none() {
            for e in events.try_iter()? {
                let e = e?;
                let (time, name, attrs, dropped): (u64, Bound<'_, PyAny>, Bound<'_, PyAny>, u32) =
                    e.extract()?;
                record_events.push(Event {
                    time_unix_nano: time,
                    name: any_text(&name)?,
                    attributes: self::attributes(&self.texts, &attrs)?,
                    dropped_attributes: dropped,
                });
            }
        }
        let mut record_links = Vec::new();
        if !links.is_none() {
            for l in links.try_iter()? {
                let l = l?;
                #[allow(clippy::type_complexity)]
                let (trace_id, span_id, state, attrs, dropped, remote): (
                    u128,
                    u64,
                    Bound<'_, PyAny>,
                    Bound<'_, PyAny>,
                    u32,
                    bool,
                ) = l.extract()?;
                record_links.push(Link {
                    trace_id,
                    span_id,
                    trace_state: opt_text(Some(&state))?,
                    attributes: self::attributes(&self.texts, &attrs)?,
                    dropped_attributes: dropped,
                    is_remote: remote,
                });
            }
        }
        self.queue(
            common,
            record_events,
            dropped_events,
            record_links,
            dropped_links,
            status,
        )
    }

    /// `push` for the common span (no events, links or status), with fewer arguments:
    /// `context` and `parent` are `SpanContext` tuples `(trace_id, span_id, is_remote,
    /// ...)` (`parent` None: a root span), read here; the rest as `push` takes them.
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (context, trace_state, parent, name, kind, start_time, end_time, attributes, dropped_attributes, resource, scope))]
    fn push_plain(
        &self,
        context: &Bound<'_, PyTuple>,
        trace_state: Option<&Bound<'_, PyAny>>,
        parent: Option<&Bound<'_, PyTuple>>,
        name: &Bound<'_, PyAny>,
        kind: u8,
        start_time: &Bound<'_, PyAny>,
        end_time: &Bound<'_, PyAny>,
        attributes: &Bound<'_, PyAny>,
        dropped_attributes: u32,
        resource: usize,
        scope: Option<usize>,
    ) -> PyResult<u8> {
        let parent = match parent {
            Some(p) => Some((
                fast_u64(&*p.get_borrowed_item(1)?)?,
                p.get_borrowed_item(2)?.extract::<bool>()?,
            )),
            None => None,
        };
        let common = Common {
            trace_id: self.trace_ids.get(&*context.get_borrowed_item(0)?)?,
            span_id: fast_u64(&*context.get_borrowed_item(1)?)?,
            trace_state: opt_text(trace_state)?,
            parent,
            name: any_text(name)?,
            kind,
            start_time: fast_opt_u64(start_time)?,
            end_time: fast_opt_u64(end_time)?,
            attributes: self::attributes(&self.texts, attributes)?,
            dropped_attributes,
            resource,
            scope,
        };
        self.queue(common, Vec::new(), 0, Vec::new(), 0, Status::default())
    }

    /// Waits (GIL released) until every span pushed so far is written; False on timeout.
    #[pyo3(signature = (timeout_millis = 30000.0))]
    fn flush(&self, py: Python<'_>, timeout_millis: f64) -> bool {
        let timeout = Duration::from_secs_f64(timeout_millis.max(0.0) / 1000.0);
        py.detach(|| self.inner.flush(timeout))
    }

    /// Writes what is queued, stops the thread and closes the file (GIL released);
    /// False if the thread did not finish in time. Idempotent.
    #[pyo3(signature = (timeout_millis = 30000.0))]
    fn shutdown(&self, py: Python<'_>, timeout_millis: f64) -> bool {
        let timeout = Duration::from_secs_f64(timeout_millis.max(0.0) / 1000.0);
        py.detach(|| self.inner.shutdown(timeout))
    }

    /// Counters: queued, accepted, dropped, exported, failed.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let st = self.inner.stats();
        let d = PyDict::new(py);
        d.set_item("queued", st.queued)?;
        d.set_item("accepted", st.accepted)?;
        d.set_item("dropped", st.dropped)?;
        d.set_item("exported", st.exported)?;
        d.set_item("failed", st.failed)?;
        Ok(d)
    }
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PySpanExporter>()
}
