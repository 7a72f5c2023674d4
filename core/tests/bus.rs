//! Behaviour of the bus as a whole: QoS and overflow, statistics, ordering, fan-out.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use _core::bus::{Bus, Envelope, Payload, Qos};
use _core::error::BusError;

fn ev(topic: &str, n: i64) -> Envelope {
    Envelope::new(topic, "test", Payload::Json(serde_json::json!(n)))
}

fn num(e: &Envelope) -> i64 {
    match &e.payload {
        Payload::Json(v) => v.as_i64().unwrap(),
        other => panic!("unexpected payload {other:?}"),
    }
}

#[test]
fn wildcards_route_to_matching_subscribers_only() {
    let bus = Bus::new();
    let exact = bus
        .subscribe("market.price.aapl", Qos::Realtime, None)
        .unwrap();
    let star = bus
        .subscribe("market.price.*", Qos::Realtime, None)
        .unwrap();
    let rest = bus.subscribe("market.>", Qos::Realtime, None).unwrap();
    let other = bus.subscribe("news.>", Qos::Realtime, None).unwrap();

    let p = bus.publish(ev("market.price.aapl", 1)).unwrap();
    assert_eq!(p.delivered, 3);
    bus.publish(ev("market.volume.aapl", 2)).unwrap();
    bus.publish(ev("market.price.msft.extra", 3)).unwrap();

    let nums = |s: &Arc<_Sub>| s.take(100).iter().map(|e| num(e)).collect::<Vec<_>>();
    type _Sub = _core::bus::Subscription;
    assert_eq!(nums(&exact), vec![1]);
    assert_eq!(nums(&star), vec![1]);
    assert_eq!(nums(&rest), vec![1, 2, 3]);
    assert!(nums(&other).is_empty());
}

#[test]
fn invalid_topics_are_rejected() {
    let bus = Bus::new();
    for t in ["", "a..b", "a.*", "a b", "a.>"] {
        assert!(
            matches!(bus.publish(ev(t, 0)), Err(BusError::InvalidTopic { .. })),
            "{t:?}"
        );
    }
    assert!(matches!(
        bus.subscribe("a.>.b", Qos::Realtime, None),
        Err(BusError::InvalidTopic { .. })
    ));
}

#[test]
fn realtime_drops_oldest_and_counts() {
    let bus = Bus::new();
    let sub = bus.subscribe("t", Qos::Realtime, Some(3)).unwrap();
    for i in 0..10 {
        bus.publish(ev("t", i)).unwrap();
    }
    let got: Vec<_> = sub.take(100).iter().map(|e| num(e)).collect();
    assert_eq!(got, vec![7, 8, 9]);
    let s = sub.stats();
    assert_eq!(
        (s.enqueued, s.delivered, s.dropped_oldest, s.depth),
        (10, 3, 7, 0)
    );
    let t = &bus.stats().topics[0];
    assert_eq!(
        (t.published, t.delivered, t.dropped, t.subscribers),
        (10, 10, 7, 1)
    );
}

#[test]
fn background_drops_newest_and_counts() {
    let bus = Bus::new();
    let sub = bus.subscribe("t", Qos::Background, Some(3)).unwrap();
    for i in 0..10 {
        bus.publish(ev("t", i)).unwrap();
    }
    let got: Vec<_> = sub.take(100).iter().map(|e| num(e)).collect();
    assert_eq!(got, vec![0, 1, 2]);
    assert_eq!(sub.stats().dropped_newest, 7);
    assert_eq!(Qos::Background.default_capacity(), 16 * 1024);
}

#[test]
fn reliable_blocks_then_times_out_with_full() {
    let bus = Bus::new();
    let sub = bus.subscribe("t", Qos::Reliable, Some(2)).unwrap();
    bus.publish_blocking(ev("t", 0), Duration::from_millis(10))
        .unwrap();
    bus.publish_blocking(ev("t", 1), Duration::from_millis(10))
        .unwrap();
    let start = Instant::now();
    let err = bus
        .publish_blocking(ev("t", 2), Duration::from_millis(50))
        .unwrap_err();
    assert!(start.elapsed() >= Duration::from_millis(45));
    assert!(matches!(err, BusError::Full { .. }), "{err}");
    assert!(err.to_string().contains("stayed full"));
    assert_eq!(sub.stats().dropped_timeout, 1);
    assert_eq!(sub.depth(), 2, "depth is the true queue length");
}

#[test]
fn reliable_publisher_resumes_when_consumer_takes() {
    let bus = Bus::new();
    let sub = bus.subscribe("t", Qos::Reliable, Some(1)).unwrap();
    let consumer = {
        let sub = Arc::clone(&sub);
        thread::spawn(move || {
            let mut got = Vec::new();
            while got.len() < 50 {
                if let Some(e) = sub.recv_timeout(Duration::from_secs(5)) {
                    got.push(num(&e));
                    thread::sleep(Duration::from_micros(200));
                }
            }
            got
        })
    };
    for i in 0..50 {
        bus.publish_blocking(ev("t", i), Duration::from_secs(5))
            .unwrap();
    }
    assert_eq!(consumer.join().unwrap(), (0..50).collect::<Vec<_>>());
    assert_eq!(sub.stats().dropped_timeout, 0);
}

#[test]
fn a_slow_reliable_subscriber_does_not_delay_others() {
    let bus = Bus::new();
    let slow = bus.subscribe("t", Qos::Reliable, Some(1)).unwrap();
    let fast = bus.subscribe("t", Qos::Realtime, Some(1000)).unwrap();
    // Non-blocking publish: the fast subscriber gets every event even though the
    // reliable one is full after the first; the blocked copy is reported to the
    // publisher.
    let mut blocked = 0;
    for i in 0..100 {
        let p = bus.publish(ev("t", i)).unwrap();
        blocked += p.blocked.len();
    }
    assert_eq!(fast.depth(), 100);
    assert_eq!(slow.depth(), 1);
    assert_eq!(blocked, 99);
}

#[test]
fn per_publisher_order_is_kept_with_concurrent_publishers() {
    let bus = Bus::new();
    let sub = bus
        .subscribe("p.>", Qos::Background, Some(100_000))
        .unwrap();
    let handles: Vec<_> = (0..4)
        .map(|p| {
            let bus = bus.clone();
            thread::spawn(move || {
                for i in 0..5_000 {
                    bus.publish(ev(&format!("p.{p}"), i)).unwrap();
                }
            })
        })
        .collect();
    handles.into_iter().for_each(|h| h.join().unwrap());
    let all = sub.take(usize::MAX);
    assert_eq!(all.len(), 20_000);
    let mut last = [-1i64; 4];
    for e in all {
        let p: usize = e.topic.rsplit('.').next().unwrap().parse().unwrap();
        let n = num(&e);
        assert!(n > last[p], "publisher {p}: {n} after {}", last[p]);
        last[p] = n;
    }
}

#[test]
fn many_subscribers_all_receive() {
    let bus = Bus::new();
    let subs: Vec<_> = (0..500)
        .map(|i| {
            let pattern = if i % 2 == 0 { "fan.out" } else { "fan.*" };
            bus.subscribe(pattern, Qos::Realtime, None).unwrap()
        })
        .collect();
    let p = bus.publish(ev("fan.out", 7)).unwrap();
    assert_eq!(p.delivered, 500);
    assert!(subs.iter().all(|s| s.take(10).len() == 1));
    assert_eq!(bus.stats().topics[0].subscribers, 500);
}

#[test]
fn unsubscribe_stops_delivery_and_wakes_waiters() {
    let bus = Bus::new();
    let sub = bus.subscribe("t", Qos::Realtime, None).unwrap();
    let woke = Arc::new(AtomicUsize::new(0));
    let w = Arc::clone(&woke);
    assert!(sub.set_waker(Box::new(move || {
        w.fetch_add(1, Ordering::SeqCst);
    })));
    assert!(bus.unsubscribe(sub.id));
    assert!(!bus.unsubscribe(sub.id));
    assert_eq!(woke.load(Ordering::SeqCst), 1);
    assert_eq!(bus.publish(ev("t", 1)).unwrap().delivered, 0);
    assert!(sub.is_closed());
}

#[test]
fn waker_fires_once_on_first_event_and_not_when_ready() {
    let bus = Bus::new();
    let sub = bus.subscribe("t", Qos::Realtime, None).unwrap();
    let woke = Arc::new(AtomicUsize::new(0));
    let w = Arc::clone(&woke);
    assert!(sub.set_waker(Box::new(move || {
        w.fetch_add(1, Ordering::SeqCst);
    })));
    bus.publish(ev("t", 1)).unwrap();
    bus.publish(ev("t", 2)).unwrap();
    assert_eq!(woke.load(Ordering::SeqCst), 1);
    // Already readable: the waker is not stored, the caller should take instead.
    assert!(!sub.set_waker(Box::new(|| panic!("must not run"))));
}

#[test]
fn route_cache_sees_new_subscriptions() {
    let bus = Bus::new();
    let a = bus.subscribe("x.y", Qos::Realtime, None).unwrap();
    assert_eq!(bus.publish(ev("x.y", 1)).unwrap().delivered, 1);
    let b = bus.subscribe("x.*", Qos::Realtime, None).unwrap();
    assert_eq!(bus.publish(ev("x.y", 2)).unwrap().delivered, 2);
    bus.unsubscribe(a.id);
    assert_eq!(bus.publish(ev("x.y", 3)).unwrap().delivered, 1);
    assert_eq!(b.take(10).len(), 2);
}

#[test]
fn hop_limit_and_closed_bus() {
    let bus = Bus::new();
    let mut e = ev("t", 1);
    e.ttl = 0;
    assert!(matches!(bus.publish(e), Err(BusError::HopLimit { .. })));
    bus.close();
    assert!(matches!(bus.publish(ev("t", 1)), Err(BusError::Closed(_))));
    assert!(bus.subscribe("t", Qos::Realtime, None).is_err());
}

#[test]
fn topic_stats_are_bounded() {
    let bus = Bus::new();
    for i in 0.._core::bus::MAX_TRACKED_TOPICS + 5 {
        bus.publish(ev(&format!("t.{i}"), 0)).unwrap();
    }
    let s = bus.stats();
    assert_eq!(s.topics.len(), _core::bus::MAX_TRACKED_TOPICS);
    assert_eq!(s.untracked_published, 5);
    assert_eq!(s.published as usize, _core::bus::MAX_TRACKED_TOPICS + 5);
}

#[test]
fn queue_group_delivers_each_event_to_one_member() {
    let bus = Bus::new();
    let a = bus
        .subscribe_group("jobs.*", Qos::Realtime, None, Some("workers"))
        .unwrap();
    let b = bus
        .subscribe_group("jobs.*", Qos::Realtime, None, Some("workers"))
        .unwrap();
    let watcher = bus.subscribe("jobs.>", Qos::Realtime, None).unwrap();
    for i in 0..100 {
        let p = bus.publish(ev("jobs.x", i)).unwrap();
        assert_eq!(p.delivered, 2, "one group member + the watcher");
    }
    let (na, nb) = (a.take(1000).len(), b.take(1000).len());
    assert_eq!(na + nb, 100);
    assert!(na >= 40 && nb >= 40, "shared out evenly: {na} / {nb}");
    assert_eq!(watcher.take(1000).len(), 100);
    assert_eq!(a.stats().group.as_deref(), Some("workers"));
}

#[test]
fn queue_group_prefers_the_shortest_queue_and_skips_full_members() {
    let bus = Bus::new();
    let busy = bus
        .subscribe_group("t", Qos::Reliable, Some(2), Some("g"))
        .unwrap();
    let idle = bus
        .subscribe_group("t", Qos::Reliable, Some(2), Some("g"))
        .unwrap();
    bus.publish(ev("t", 0)).unwrap();
    bus.publish(ev("t", 1)).unwrap();
    assert_eq!((busy.depth(), idle.depth()), (1, 1), "least depth first");
    bus.publish(ev("t", 2)).unwrap();
    bus.publish(ev("t", 3)).unwrap();
    assert_eq!(busy.depth() + idle.depth(), 4);
    // Both full: the publisher is told to wait on one member, not both.
    let p = bus.publish(ev("t", 4)).unwrap();
    assert_eq!((p.delivered, p.blocked.len()), (0, 1));
    busy.take(1);
    assert!(bus
        .publish_blocking(ev("t", 5), Duration::from_millis(50))
        .is_ok());
}

#[test]
fn different_groups_each_get_a_copy() {
    let bus = Bus::new();
    let g1 = bus
        .subscribe_group("t", Qos::Realtime, None, Some("one"))
        .unwrap();
    let g2 = bus
        .subscribe_group("t", Qos::Realtime, None, Some("two"))
        .unwrap();
    assert_eq!(bus.publish(ev("t", 1)).unwrap().delivered, 2);
    assert_eq!((g1.depth(), g2.depth()), (1, 1));
    assert!(bus
        .subscribe_group("t", Qos::Realtime, None, Some("bad name"))
        .is_err());
}

#[test]
fn remote_groups_leave_queue_groups_to_the_transport() {
    use _core::bus::Delivery;
    let bus = Bus::new();
    let member = bus
        .subscribe_group("t", Qos::Realtime, None, Some("g"))
        .unwrap();
    let single = bus.subscribe("t", Qos::Realtime, None).unwrap();
    bus.set_remote_groups(true);
    assert_eq!(bus.publish(ev("t", 1)).unwrap().delivered, 1);
    assert_eq!((member.depth(), single.depth()), (0, 1));
    // The transport hands the event back for the group only.
    let p = bus.deliver_to(ev("t", 2), Delivery::Group("g")).unwrap();
    assert_eq!(p.delivered, 1);
    assert_eq!((member.depth(), single.depth()), (1, 1));
    assert_eq!(
        bus.deliver_to(ev("t", 3), Delivery::Group("other"))
            .unwrap()
            .delivered,
        0
    );
    bus.set_remote_groups(false);
    assert_eq!(bus.publish(ev("t", 4)).unwrap().delivered, 2);
}

#[test]
fn publishing_on_a_topic_handle_is_publishing() {
    let bus = Bus::new();
    let sub = bus.subscribe("a.*", Qos::Reliable, Some(2)).unwrap();
    let handle = bus.topic_handle("a.b").unwrap().unwrap();
    let on = |n: i64| Envelope::new(Arc::clone(handle.topic()), "test", Payload::Json(n.into()));
    assert_eq!(bus.publish_on(&handle, on(1)).unwrap().delivered, 1);
    // The route cache follows new subscriptions.
    let late = bus.subscribe("a.b", Qos::Realtime, None).unwrap();
    assert_eq!(bus.publish_on(&handle, on(2)).unwrap().delivered, 2);
    // Full reliable subscribers block as with publish().
    assert_eq!(bus.publish_on(&handle, on(3)).unwrap().blocked.len(), 1);
    assert_eq!(
        sub.take(10).iter().map(|e| num(e)).collect::<Vec<_>>(),
        [1, 2]
    );
    assert_eq!(late.take(10).len(), 2);
    let stats = bus.stats();
    let t = stats.topics.iter().find(|t| t.topic == "a.b").unwrap();
    assert_eq!((t.published, t.delivered), (3, 4));

    // Another topic, or another bus's handle: the ordinary path (validated, counted).
    let other = Bus::new();
    let foreign = other.topic_handle("a.b").unwrap().unwrap();
    assert_eq!(bus.publish_on(&foreign, on(4)).unwrap().delivered, 2);
    assert!(matches!(
        bus.publish_on(&handle, ev("a.*", 5)),
        Err(BusError::InvalidTopic { .. })
    ));
    assert!(matches!(
        bus.topic_handle("a..b"),
        Err(BusError::InvalidTopic { .. })
    ));
    let mut spent = on(6);
    spent.ttl = 0;
    assert!(matches!(
        bus.publish_on(&handle, spent),
        Err(BusError::HopLimit { .. })
    ));
    bus.close();
    assert!(matches!(
        bus.publish_on(&handle, on(7)),
        Err(BusError::Closed(_))
    ));
}

#[test]
fn an_observer_sees_events_without_changing_the_topics_totals() {
    let bus = Bus::new();
    let sub = bus.subscribe("obs.>", Qos::Reliable, Some(100)).unwrap();
    let watch = bus.observe(">", 3).unwrap();
    for n in 0..5 {
        let published = bus.publish(ev("obs.a", n)).unwrap();
        assert!(
            published.blocked.is_empty(),
            "an observer never holds a publisher"
        );
    }
    // The observer keeps what fits and counts what it dropped, in its own counters.
    let seen: Vec<_> = watch.take(100).iter().map(|e| num(e)).collect();
    assert_eq!(seen, vec![0, 1, 2]);
    let w = watch.stats();
    assert_eq!((w.enqueued, w.dropped_newest), (3, 2));
    assert_eq!(sub.take(100).len(), 5);
    // The topic's totals are the real subscriber's alone.
    let t = &bus.stats().topics[0];
    assert_eq!(t.topic, "obs.a");
    assert_eq!(
        (t.published, t.delivered, t.dropped, t.subscribers),
        (5, 5, 0, 1)
    );
    // Gone, it is gone from routing too.
    assert!(bus.unsubscribe(watch.id));
    bus.publish(ev("obs.a", 9)).unwrap();
    assert_eq!(watch.take(100).len(), 0);
    assert_eq!(bus.stats().topics[0].delivered, 6);
}

#[test]
fn an_envelope_in_an_arc_is_queued_as_is() {
    let bus = Bus::new();
    let sub = bus.subscribe("a.b", Qos::Reliable, Some(8)).unwrap();
    let handle = bus.topic_handle("a.b").unwrap().unwrap();
    let shared = Arc::new(Envelope::new(
        Arc::clone(handle.topic()),
        "t",
        Payload::None,
    ));
    let p = bus.publish_on(&handle, Arc::clone(&shared)).unwrap();
    assert!(Arc::ptr_eq(&p.envelope, &shared));
    let q = bus.publish(Arc::clone(&shared)).unwrap();
    let by_value = bus
        .publish(Envelope::new("a.b", "t", Payload::None))
        .unwrap();
    assert_eq!((p.delivered, q.delivered, by_value.delivered), (1, 1, 1));
    let got = sub.take(8);
    assert_eq!(got.len(), 3);
    assert!(Arc::ptr_eq(&got[0], &shared) && Arc::ptr_eq(&got[1], &shared));
    assert_eq!(bus.stats().topics[0].published, 3);
    // A handle whose topic differs from the envelope's takes the validating path.
    let bad = Arc::new(Envelope::new("a.*", "t", Payload::None));
    assert!(bus.publish_on(&handle, bad).is_err());
}
