//! The in-process event bus: NATS-style topics, per-subscription QoS, statistics.
//!
//! Publishing validates the topic, looks its route up in a per-topic cache (filled from
//! the [`trie::Trie`] and invalidated whenever the subscription set changes) and offers
//! the envelope to each matching [`Subscription`] under that subscription's QoS.
//! Nothing here blocks except the explicitly blocking helpers for Rust producers
//! ([`Bus::publish_blocking`]); async callers wait on wakers instead.
//!
//! The seam for transports that span processes (`loom.nats` over NATS): they subscribe
//! locally to what they export, inject what arrives with [`Bus::deliver_to`], and with
//! [`Bus::set_remote_groups`] leave queue groups for the transport to balance.

pub mod envelope;
pub mod subscription;
pub mod topic;
pub mod trie;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use crate::sync::RwLock;

pub use envelope::{Envelope, EventId, Payload, DEFAULT_TTL, DELIVERY_COUNT_HEADER};
pub use subscription::{Offer, Qos, Subscription, SubscriptionStats, Waker};

use crate::error::BusError;
use trie::Trie;

/// Topic statistics are kept for at most this many distinct topics; publishes on
/// further topics are counted in [`BusStats::untracked_published`] so that an
/// unbounded stream of distinct topics cannot grow memory without bound.
pub const MAX_TRACKED_TOPICS: usize = 10_000;

/// Which local subscribers an event goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery<'a> {
    /// Every subscriber, one member per queue group.
    All,
    /// Only subscribers outside queue groups.
    Singles,
    /// Only one member of this queue group.
    Group(&'a str),
}

#[derive(Debug, Default)]
struct TopicCounters {
    published: AtomicU64,
    delivered: AtomicU64,
    dropped: AtomicU64,
}

/// Where a topic's events go: every subscriber without a group, and one member of
/// each queue group.
#[derive(Default)]
struct RouteInner {
    singles: Vec<Arc<Subscription>>,
    groups: Vec<Vec<Arc<Subscription>>>,
}

type Route = Arc<RouteInner>;

#[derive(Default)]
struct TopicEntry {
    counters: TopicCounters,
    /// (bus generation it was computed at, matching subscriptions).
    route: RwLock<Option<(u64, Route)>>,
}

/// A topic looked up once in a bus's table (validated, its counters and route cache
/// found): [`Bus::publish_on`] then skips the validation and the lookup. For bindings
/// that see the same topic again and again (`loom._core` keeps the last ones).
#[derive(Clone)]
pub struct TopicHandle {
    topic: Arc<str>,
    entry: Arc<TopicEntry>,
    /// The bus it belongs to (the address of its shared state).
    owner: usize,
}

impl TopicHandle {
    /// The topic, to put in the envelopes published through this handle.
    pub fn topic(&self) -> &Arc<str> {
        &self.topic
    }
}

impl std::fmt::Debug for TopicHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("TopicHandle").field(&self.topic).finish()
    }
}

/// A snapshot of one topic's statistics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicStats {
    pub topic: String,
    /// Events published on this topic.
    pub published: u64,
    /// Copies accepted into subscriber queues.
    pub delivered: u64,
    /// Copies dropped (overflow, timeout, closed) while publishing on this topic.
    pub dropped: u64,
    /// Subscriptions whose pattern matches this topic now.
    pub subscribers: usize,
}

/// A snapshot of the whole bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusStats {
    pub published: u64,
    pub untracked_published: u64,
    pub topics: Vec<TopicStats>,
    pub subscriptions: Vec<SubscriptionStats>,
}

/// The outcome of a publish.
#[derive(Debug)]
pub struct Published {
    pub envelope: Arc<Envelope>,
    /// Subscriptions that queued the event.
    pub delivered: usize,
    /// Copies dropped by policy.
    pub dropped: usize,
    /// `reliable` subscriptions that were full: the publisher must wait for room
    /// ([`Subscription::set_space_waker`]) and offer again, or give up with
    /// [`Bus::give_up`].
    pub blocked: Vec<Arc<Subscription>>,
}

/// What a publish did so far (a [`Published`] without the envelope).
#[derive(Default)]
struct Tally {
    delivered: usize,
    dropped: usize,
    blocked: Vec<Arc<Subscription>>,
}

#[derive(Default)]
struct Inner {
    trie: RwLock<Trie<u64>>,
    subs: RwLock<HashMap<u64, Arc<Subscription>>>,
    topics: RwLock<HashMap<Arc<str>, Arc<TopicEntry>>>,
    generation: AtomicU64,
    next_id: AtomicU64,
    rotation: AtomicU64,
    /// Publishes on topics beyond [`MAX_TRACKED_TOPICS`]. The bus's total is this plus
    /// the tracked topics' counts (entries are never removed), so a publish updates
    /// one counter, not two.
    untracked: AtomicU64,
    closed: AtomicBool,
    remote_groups: AtomicBool,
}

/// Refuses an event that has run out of hops.
fn check_ttl(env: &Envelope) -> Result<(), BusError> {
    if env.ttl == 0 {
        return Err(BusError::HopLimit {
            event_id: env.id.to_string(),
            topic: env.topic.to_string(),
        });
    }
    Ok(())
}

/// The event bus. Cheap to clone; clones share the same bus.
#[derive(Clone, Default)]
pub struct Bus {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bus")
            .field("subscriptions", &self.inner.subs.read().len())
            .finish_non_exhaustive()
    }
}

impl Bus {
    /// A new, empty bus.
    pub fn new() -> Self {
        Self::default()
    }

    /// Subscribes to `pattern` with `qos`; `capacity` defaults per QoS.
    pub fn subscribe(
        &self,
        pattern: &str,
        qos: Qos,
        capacity: Option<usize>,
    ) -> Result<Arc<Subscription>, BusError> {
        self.subscribe_group(pattern, qos, capacity, None)
    }

    /// Like [`Bus::subscribe`], as a member of queue group `group` (NATS semantics):
    /// each matching event goes to one member of the group — the one with the shortest
    /// queue, round-robin among equals — instead of to all of them.
    pub fn subscribe_group(
        &self,
        pattern: &str,
        qos: Qos,
        capacity: Option<usize>,
        group: Option<&str>,
    ) -> Result<Arc<Subscription>, BusError> {
        self.add(pattern, qos, capacity, group, false)
    }

    /// An observer of `pattern`: a `background` queue of `capacity` that sees every
    /// matching event without being counted as a subscriber — what it takes, and what
    /// it drops when full, are left out of the topics' delivered/dropped/subscriber
    /// totals (its own counters have them). For tools that watch the bus (the
    /// dashboard), so that watching does not change what is measured.
    pub fn observe(&self, pattern: &str, capacity: usize) -> Result<Arc<Subscription>, BusError> {
        self.add(pattern, Qos::Background, Some(capacity), None, true)
    }

    fn add(
        &self,
        pattern: &str,
        qos: Qos,
        capacity: Option<usize>,
        group: Option<&str>,
        observer: bool,
    ) -> Result<Arc<Subscription>, BusError> {
        if self.inner.closed.load(Relaxed) {
            return Err(BusError::Closed("bus"));
        }
        topic::validate_pattern(pattern)?;
        if let Some(g) = group {
            if g.is_empty() || g.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(BusError::InvalidTopic {
                    what: "queue group",
                    topic: g.to_owned(),
                    reason: "it must be non-empty, without whitespace".into(),
                });
            }
        }
        let id = self.inner.next_id.fetch_add(1, Relaxed) + 1;
        let mut sub = Subscription::new(
            id,
            pattern,
            qos,
            capacity.unwrap_or_else(|| qos.default_capacity()),
            group,
        );
        sub.observer = observer;
        let sub = Arc::new(sub);
        // Hold the trie lock while bumping the generation so a concurrent publish can't
        // cache a route computed from the old trie under the new generation.
        let mut trie = self.inner.trie.write();
        self.inner.subs.write().insert(id, Arc::clone(&sub));
        trie.insert(pattern, id);
        self.inner.generation.fetch_add(1, Relaxed);
        Ok(sub)
    }

    /// Removes a subscription and closes it. Returns whether it existed.
    pub fn unsubscribe(&self, id: u64) -> bool {
        let mut trie = self.inner.trie.write();
        let Some(sub) = self.inner.subs.write().remove(&id) else {
            return false;
        };
        trie.remove(&sub.pattern, &id);
        self.inner.generation.fetch_add(1, Relaxed);
        drop(trie);
        sub.close();
        true
    }

    fn entry(&self, topic: &Arc<str>) -> Option<Arc<TopicEntry>> {
        if let Some(e) = self.inner.topics.read().get(topic) {
            return Some(Arc::clone(e));
        }
        let mut topics = self.inner.topics.write();
        if let Some(e) = topics.get(topic) {
            return Some(Arc::clone(e));
        }
        if topics.len() >= MAX_TRACKED_TOPICS {
            return None;
        }
        let e = Arc::new(TopicEntry::default());
        topics.insert(Arc::clone(topic), Arc::clone(&e));
        Some(e)
    }

    fn compute_route(&self, topic: &str) -> (u64, Route) {
        let trie = self.inner.trie.read();
        let generation = self.inner.generation.load(Relaxed);
        let subs = self.inner.subs.read();
        let mut route: Vec<Arc<Subscription>> = Vec::new();
        trie.for_each_match(topic, |id| {
            if let Some(s) = subs.get(id) {
                route.push(Arc::clone(s));
            }
        });
        // Deliver in subscription order: deterministic and fair across publishes.
        route.sort_unstable_by_key(|s| s.id);
        let mut out = RouteInner::default();
        let mut names: Vec<Arc<str>> = Vec::new();
        for sub in route {
            match &sub.group {
                None => out.singles.push(sub),
                Some(g) => match names.iter().position(|n| n == g) {
                    Some(i) => out.groups[i].push(sub),
                    None => {
                        names.push(Arc::clone(g));
                        out.groups.push(vec![sub]);
                    }
                },
            }
        }
        (generation, Arc::new(out))
    }

    /// Offers `env` to one member of a queue group: shortest queue first, rotating
    /// among equals; the next ones if it refuses. Returns the member to wait on if
    /// every member is a full `reliable` queue.
    fn offer_group(&self, members: &[Arc<Subscription>], env: &Arc<Envelope>, out: &mut Tally) {
        let n = members.len();
        let start = self.inner.rotation.fetch_add(1, Relaxed) as usize % n;
        let mut order: Vec<(usize, usize)> = (0..n)
            .map(|k| {
                let i = (start + k) % n;
                (members[i].depth(), i)
            })
            .collect();
        order.sort_by_key(|&(depth, _)| depth); // stable: rotation breaks ties
        let mut first_full = None;
        for (_, i) in order {
            match members[i].offer(env) {
                Offer::Queued { evicted } => {
                    out.delivered += 1;
                    out.dropped += usize::from(evicted);
                    return;
                }
                Offer::Full => {
                    first_full.get_or_insert(i);
                }
                Offer::Dropped => {}
            }
        }
        match first_full {
            Some(i) => out.blocked.push(Arc::clone(&members[i])),
            None => out.dropped += 1,
        }
    }

    fn route(&self, topic: &str, entry: Option<&TopicEntry>) -> Route {
        let Some(entry) = entry else {
            return self.compute_route(topic).1;
        };
        let current = self.inner.generation.load(Relaxed);
        if let Some((generation, route)) = entry.route.read().as_ref() {
            if *generation == current {
                return Arc::clone(route);
            }
        }
        let (generation, route) = self.compute_route(topic);
        *entry.route.write() = Some((generation, Arc::clone(&route)));
        route
    }

    /// Publishes. Never blocks: full `reliable` subscriptions are returned in
    /// [`Published::blocked`]. With [`Bus::set_remote_groups`] on, queue groups are
    /// left to the transport.
    /// Takes an `Envelope` or an `Arc<Envelope>` (built in place: no further copy).
    pub fn publish(&self, env: impl Into<Arc<Envelope>>) -> Result<Published, BusError> {
        let delivery = if self.inner.remote_groups.load(Relaxed) {
            Delivery::Singles
        } else {
            Delivery::All
        };
        self.deliver_to(env, delivery)
    }

    /// When a transport spanning processes (NATS) is attached, queue groups must be
    /// balanced across all processes by that transport: local publishes then skip
    /// the groups, and the transport hands each event back with
    /// [`Delivery::Group`] to the one process that should serve it.
    pub fn set_remote_groups(&self, on: bool) {
        self.inner.remote_groups.store(on, Relaxed);
    }

    /// Routes `env` to every local subscriber.
    pub fn deliver(&self, env: Envelope) -> Result<Published, BusError> {
        self.deliver_to(env, Delivery::All)
    }

    fn owner(&self) -> usize {
        Arc::as_ptr(&self.inner) as usize
    }

    /// The handle of `topic` (validated), or `None` when the bus tracks no more topics
    /// ([`MAX_TRACKED_TOPICS`]).
    pub fn topic_handle(&self, topic: &str) -> Result<Option<TopicHandle>, BusError> {
        topic::validate_topic(topic)?;
        let topic: Arc<str> = topic.into();
        Ok(self.entry(&topic).map(|entry| TopicHandle {
            topic,
            entry,
            owner: self.owner(),
        }))
    }

    /// [`Bus::publish`] for an envelope on `handle`'s topic, without validating and
    /// looking the topic up again. A handle of another bus, or another topic, takes
    /// the ordinary path.
    pub fn publish_on(
        &self,
        handle: &TopicHandle,
        env: impl Into<Arc<Envelope>>,
    ) -> Result<Published, BusError> {
        let env = env.into();
        if handle.owner != self.owner() || handle.topic != env.topic {
            return self.publish(env);
        }
        let delivery = if self.inner.remote_groups.load(Relaxed) {
            Delivery::Singles
        } else {
            Delivery::All
        };
        if self.inner.closed.load(Relaxed) {
            return Err(BusError::Closed("bus"));
        }
        check_ttl(&env)?;
        Ok(self.offer_all(env, Some(&handle.entry), delivery))
    }

    /// Routes `env` to the local subscribers `delivery` selects.
    pub fn deliver_to(
        &self,
        env: impl Into<Arc<Envelope>>,
        delivery: Delivery<'_>,
    ) -> Result<Published, BusError> {
        let env = env.into();
        if self.inner.closed.load(Relaxed) {
            return Err(BusError::Closed("bus"));
        }
        topic::validate_topic(&env.topic)?;
        check_ttl(&env)?;
        let entry = self.entry(&env.topic);
        Ok(self.offer_all(env, entry.as_ref(), delivery))
    }

    /// Offers a checked envelope to the subscribers of its route and counts the result.
    fn offer_all(
        &self,
        env: Arc<Envelope>,
        entry: Option<&Arc<TopicEntry>>,
        delivery: Delivery<'_>,
    ) -> Published {
        let route = self.route(&env.topic, entry.map(|e| &**e));
        let mut out = Tally::default();
        for members in &route.groups {
            let wanted = match delivery {
                Delivery::All => true,
                Delivery::Singles => false,
                Delivery::Group(g) => members[0].group.as_deref() == Some(g),
            };
            if wanted {
                self.offer_group(members, &env, &mut out);
            }
        }
        let singles: &[Arc<Subscription>] = match delivery {
            Delivery::Group(_) => &[],
            _ => &route.singles,
        };
        for sub in singles {
            if sub.observer {
                // A `background` queue: never full to the publisher; its own counters
                // record what it took and dropped.
                let _ = sub.offer(&env);
                continue;
            }
            match sub.offer(&env) {
                Offer::Queued { evicted } => {
                    out.delivered += 1;
                    out.dropped += usize::from(evicted);
                }
                Offer::Dropped => out.dropped += 1,
                Offer::Full => out.blocked.push(Arc::clone(sub)),
            }
        }
        match entry {
            Some(e) => {
                e.counters.published.fetch_add(1, Relaxed);
                // Atomic read-modify-writes are dear: none for a zero.
                if out.delivered > 0 {
                    e.counters
                        .delivered
                        .fetch_add(out.delivered as u64, Relaxed);
                }
                if out.dropped > 0 {
                    e.counters.dropped.fetch_add(out.dropped as u64, Relaxed);
                }
            }
            None => {
                self.inner.untracked.fetch_add(1, Relaxed);
            }
        }
        Published {
            envelope: env,
            delivered: out.delivered,
            dropped: out.dropped,
            blocked: out.blocked,
        }
    }

    /// Offers a blocked publish again; returns the subscriptions still full.
    pub fn retry(&self, published: &mut Published) {
        let env = Arc::clone(&published.envelope);
        let mut delivered = 0u64;
        published.blocked.retain(|sub| match sub.offer(&env) {
            Offer::Queued { .. } => {
                delivered += 1;
                false
            }
            Offer::Dropped => false,
            Offer::Full => true,
        });
        published.delivered += delivered as usize;
        if let Some(e) = self.inner.topics.read().get(&env.topic) {
            e.counters.delivered.fetch_add(delivered, Relaxed);
        }
    }

    /// Records that the publisher stopped waiting for the still-blocked subscriptions
    /// and returns the error to raise.
    pub fn give_up(&self, published: &Published, timeout: Duration) -> BusError {
        for sub in &published.blocked {
            sub.record_timeout();
        }
        if let Some(e) = self.inner.topics.read().get(&published.envelope.topic) {
            e.counters
                .dropped
                .fetch_add(published.blocked.len() as u64, Relaxed);
        }
        let first = &published.blocked[0];
        BusError::Full {
            subscription: first.id,
            pattern: first.pattern.to_string(),
            timeout,
            event_id: published.envelope.id.to_string(),
        }
    }

    /// Publishes, blocking the calling thread up to `timeout` for full `reliable`
    /// subscribers. For Rust producers running on their own threads.
    pub fn publish_blocking(
        &self,
        env: Envelope,
        timeout: Duration,
    ) -> Result<Published, BusError> {
        let mut published = self.publish(env)?;
        let deadline = std::time::Instant::now() + timeout;
        let env = Arc::clone(&published.envelope);
        let mut still = Vec::new();
        for sub in std::mem::take(&mut published.blocked) {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if sub.offer_wait(&env, left) {
                published.delivered += 1;
            } else if !sub.is_closed() {
                still.push(sub);
            }
        }
        if still.is_empty() {
            return Ok(published);
        }
        // offer_wait already counted the per-subscription timeouts.
        let first = &still[0];
        Err(BusError::Full {
            subscription: first.id,
            pattern: first.pattern.to_string(),
            timeout,
            event_id: env.id.to_string(),
        })
    }

    /// Closes the bus and every subscription.
    pub fn close(&self) {
        self.inner.closed.store(true, Relaxed);
        let subs: Vec<_> = self.inner.subs.write().drain().map(|(_, s)| s).collect();
        *self.inner.trie.write() = Trie::default();
        self.inner.generation.fetch_add(1, Relaxed);
        subs.iter().for_each(|s| s.close());
    }

    /// Whether [`Bus::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(Relaxed)
    }

    /// Number of live subscriptions.
    pub fn subscription_count(&self) -> usize {
        self.inner.subs.read().len()
    }

    /// A statistics snapshot.
    pub fn stats(&self) -> BusStats {
        let (mut subscriptions, observers): (Vec<_>, HashSet<u64>) = {
            let subs = self.inner.subs.read();
            (
                subs.values().map(|s| s.stats()).collect(),
                subs.values().filter(|s| s.observer).map(|s| s.id).collect(),
            )
        };
        subscriptions.sort_unstable_by_key(|s| s.id);
        let entries: Vec<(Arc<str>, Arc<TopicEntry>)> = self
            .inner
            .topics
            .read()
            .iter()
            .map(|(k, v)| (Arc::clone(k), Arc::clone(v)))
            .collect();
        let trie = self.inner.trie.read();
        let mut topics: Vec<TopicStats> = entries
            .into_iter()
            .map(|(topic, e)| {
                let mut subscribers = 0;
                trie.for_each_match(&topic, |id| {
                    if !observers.contains(id) {
                        subscribers += 1;
                    }
                });
                TopicStats {
                    topic: topic.to_string(),
                    published: e.counters.published.load(Relaxed),
                    delivered: e.counters.delivered.load(Relaxed),
                    dropped: e.counters.dropped.load(Relaxed),
                    subscribers,
                }
            })
            .collect();
        topics.sort_unstable_by(|a, b| a.topic.cmp(&b.topic));
        let untracked = self.inner.untracked.load(Relaxed);
        BusStats {
            published: untracked + topics.iter().map(|t| t.published).sum::<u64>(),
            untracked_published: untracked,
            topics,
            subscriptions,
        }
    }
}
