//! A subscription: a bounded queue with an explicit overflow policy, and wakers that
//! let a consumer (an asyncio task, a thread) sleep until there is something to take.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::sync::{Condvar, Mutex};

use super::envelope::Envelope;

/// Quality of service: what happens when a subscriber's queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Qos {
    /// Bounded; a new event evicts the oldest queued one. For live data where only
    /// the latest matters. Drops are counted.
    Realtime,
    /// Bounded; the publisher waits (up to its timeout) for room, then gets
    /// `BusError::Full`. Only this subscriber's publishers are slowed.
    Reliable,
    /// A larger bound; a new event is dropped when full. For logs, metrics, audit.
    Background,
}

impl Qos {
    /// Parses `realtime`, `reliable` or `background`.
    pub fn parse(s: &str) -> Option<Qos> {
        match s {
            "realtime" => Some(Qos::Realtime),
            "reliable" => Some(Qos::Reliable),
            "background" => Some(Qos::Background),
            _ => None,
        }
    }

    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Qos::Realtime => "realtime",
            Qos::Reliable => "reliable",
            Qos::Background => "background",
        }
    }

    /// The queue bound used when none is given.
    pub fn default_capacity(self) -> usize {
        match self {
            Qos::Realtime | Qos::Reliable => 1024,
            Qos::Background => 16 * 1024,
        }
    }
}

/// Called once when the awaited condition holds. Runs outside the queue lock.
pub type Waker = Box<dyn FnOnce() + Send>;

/// Result of offering an event to a subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// Queued (possibly evicting the oldest event, for `realtime`).
    Queued { evicted: bool },
    /// Dropped by policy (`background` when full, or the subscription is closed).
    Dropped,
    /// `reliable` and full: the publisher has to wait.
    Full,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Arc<Envelope>>,
    waker: Option<Waker>,
    space_wakers: Vec<Waker>,
    closed: bool,
    /// Events accepted into the queue, and taken from it: counted under the lock the
    /// queue needs anyway (no atomic operation per event).
    enqueued: u64,
    delivered: u64,
}

/// Per-subscription drop counters (what was queued and taken is counted in the
/// queue's own state: [`Subscription::stats`]).
#[derive(Debug, Default)]
pub struct SubCounters {
    pub dropped_oldest: AtomicU64,
    pub dropped_newest: AtomicU64,
    pub dropped_timeout: AtomicU64,
    pub dropped_closed: AtomicU64,
}

/// A snapshot of one subscription's statistics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionStats {
    pub id: u64,
    pub pattern: String,
    pub group: Option<String>,
    pub qos: Qos,
    pub capacity: usize,
    /// Events waiting in the queue right now.
    pub depth: usize,
    /// Events accepted into the queue.
    pub enqueued: u64,
    /// Events taken by the consumer.
    pub delivered: u64,
    /// `realtime`: queued events evicted by newer ones.
    pub dropped_oldest: u64,
    /// `background`: new events refused because the queue was full.
    pub dropped_newest: u64,
    /// `reliable`: events not delivered because the publisher's wait timed out.
    pub dropped_timeout: u64,
    /// Events that arrived after the subscription closed.
    pub dropped_closed: u64,
}

/// One subscriber's queue.
pub struct Subscription {
    pub id: u64,
    pub pattern: Arc<str>,
    /// Queue group (NATS semantics): each event goes to one member of the group.
    pub group: Option<Arc<str>>,
    pub qos: Qos,
    pub capacity: usize,
    /// An observer (see [`crate::bus::Bus::observe`]): what it is offered is not
    /// counted in the topics' totals.
    pub observer: bool,
    state: Mutex<State>,
    /// Signalled when events arrive or the subscription closes (blocking consumers).
    readable: Condvar,
    /// Signalled when a `reliable` queue gets room (blocking publishers).
    writable: Condvar,
    pub counters: SubCounters,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("id", &self.id)
            .field("pattern", &self.pattern)
            .field("group", &self.group)
            .field("qos", &self.qos)
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

impl Subscription {
    pub(crate) fn new(
        id: u64,
        pattern: &str,
        qos: Qos,
        capacity: usize,
        group: Option<&str>,
    ) -> Self {
        Subscription {
            id,
            pattern: pattern.into(),
            group: group.map(Into::into),
            qos,
            capacity: capacity.max(1),
            observer: false,
            state: Mutex::new(State::default()),
            readable: Condvar::new(),
            writable: Condvar::new(),
            counters: SubCounters::default(),
        }
    }

    /// Offers `env` under this subscription's QoS policy.
    pub fn offer(&self, env: &Arc<Envelope>) -> Offer {
        let mut st = self.state.lock();
        if st.closed {
            drop(st);
            self.counters.dropped_closed.fetch_add(1, Relaxed);
            return Offer::Dropped;
        }
        let mut evicted = false;
        if st.queue.len() >= self.capacity {
            match self.qos {
                Qos::Realtime => {
                    st.queue.pop_front();
                    evicted = true;
                }
                Qos::Background => {
                    drop(st);
                    self.counters.dropped_newest.fetch_add(1, Relaxed);
                    return Offer::Dropped;
                }
                Qos::Reliable => return Offer::Full,
            }
        }
        st.queue.push_back(Arc::clone(env));
        st.enqueued += 1;
        let waker = st.waker.take();
        drop(st);
        if evicted {
            self.counters.dropped_oldest.fetch_add(1, Relaxed);
        }
        self.readable.notify_one();
        if let Some(w) = waker {
            w();
        }
        Offer::Queued { evicted }
    }

    /// Blocks the calling thread until a `reliable` queue accepts `env` or `timeout`
    /// passes. Returns whether it was queued. For Rust producers; async callers use
    /// [`Subscription::set_space_waker`] instead.
    pub fn offer_wait(&self, env: &Arc<Envelope>, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            match self.offer(env) {
                Offer::Queued { .. } => return true,
                Offer::Dropped => return false,
                Offer::Full => {}
            }
            let mut st = self.state.lock();
            if st.queue.len() < self.capacity || st.closed {
                continue;
            }
            if self.writable.wait_until(&mut st, deadline).timed_out() {
                drop(st);
                self.counters.dropped_timeout.fetch_add(1, Relaxed);
                return false;
            }
        }
    }

    /// Records that a publisher gave up waiting for room.
    pub fn record_timeout(&self) {
        self.counters.dropped_timeout.fetch_add(1, Relaxed);
    }

    /// Takes up to `max` queued events without blocking.
    pub fn take(&self, max: usize) -> Vec<Arc<Envelope>> {
        let mut st = self.state.lock();
        let n = max.min(st.queue.len());
        if n == 0 {
            return Vec::new();
        }
        let out: Vec<_> = st.queue.drain(..n).collect();
        st.delivered += n as u64;
        let wakers = std::mem::take(&mut st.space_wakers);
        drop(st);
        if self.qos == Qos::Reliable {
            self.writable.notify_all();
        }
        wakers.into_iter().for_each(|w| w());
        out
    }

    /// Blocks until an event arrives, the subscription closes, or `timeout` passes.
    pub fn recv_timeout(&self, timeout: Duration) -> Option<Arc<Envelope>> {
        let deadline = Instant::now() + timeout;
        let mut st = self.state.lock();
        loop {
            if let Some(env) = st.queue.pop_front() {
                st.delivered += 1;
                let wakers = std::mem::take(&mut st.space_wakers);
                drop(st);
                self.writable.notify_all();
                wakers.into_iter().for_each(|w| w());
                return Some(env);
            }
            if st.closed || self.readable.wait_until(&mut st, deadline).timed_out() {
                return None;
            }
        }
    }

    /// Arms `waker` to run when the next event arrives (or on close). If events are
    /// already queued, or the subscription is closed, returns `false` without storing
    /// it: the caller should take instead of waiting. Replaces an earlier waker.
    pub fn set_waker(&self, waker: Waker) -> bool {
        let mut st = self.state.lock();
        if !st.queue.is_empty() || st.closed {
            return false;
        }
        st.waker = Some(waker);
        true
    }

    /// Arms `waker` to run when the queue has room (or on close). Returns `false`
    /// without storing it if there is room already.
    pub fn set_space_waker(&self, waker: Waker) -> bool {
        let mut st = self.state.lock();
        if st.queue.len() < self.capacity || st.closed {
            return false;
        }
        st.space_wakers.push(waker);
        true
    }

    /// Closes the subscription: wakes everyone; later offers are dropped. Queued
    /// events can still be taken.
    pub fn close(&self) {
        let mut st = self.state.lock();
        st.closed = true;
        let waker = st.waker.take();
        let wakers = std::mem::take(&mut st.space_wakers);
        drop(st);
        self.readable.notify_all();
        self.writable.notify_all();
        waker.into_iter().chain(wakers).for_each(|w| w());
    }

    /// Whether [`Subscription::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.state.lock().closed
    }

    /// Events queued right now.
    pub fn depth(&self) -> usize {
        self.state.lock().queue.len()
    }

    /// A statistics snapshot.
    pub fn stats(&self) -> SubscriptionStats {
        let c = &self.counters;
        let (depth, enqueued, delivered) = {
            let st = self.state.lock();
            (st.queue.len(), st.enqueued, st.delivered)
        };
        SubscriptionStats {
            id: self.id,
            pattern: self.pattern.to_string(),
            group: self.group.as_deref().map(str::to_owned),
            qos: self.qos,
            capacity: self.capacity,
            depth,
            enqueued,
            delivered,
            dropped_oldest: c.dropped_oldest.load(Relaxed),
            dropped_newest: c.dropped_newest.load(Relaxed),
            dropped_timeout: c.dropped_timeout.load(Relaxed),
            dropped_closed: c.dropped_closed.load(Relaxed),
        }
    }
}
