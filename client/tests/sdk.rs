//! The SDK against the real registry, in-process on port 0.

use std::{sync::Arc, time::Duration};

use switchyard_client::{Discovery, Session, Target, channel, instance, pb};
use switchyard_registry::{
    Listeners,
    testing::{self, Running},
};
use switchyard_runtime::ManualClock;
use tokio_stream::wrappers::TcpListenerStream;

const TTL: Duration = Duration::from_secs(3);

async fn registry() -> Running {
    testing::start(testing::config(), ManualClock::new())
        .await
        .expect("registry")
}

fn target(r: &Running) -> Target {
    Target::new([r.url()], None).expect("target")
}

async fn client(r: &Running) -> pb::registry_client::RegistryClient<tonic::transport::Channel> {
    pb::registry_client::RegistryClient::connect(r.url())
        .await
        .expect("connect")
}

async fn ids(r: &Running, service: &str) -> Vec<String> {
    let got = client(r)
        .await
        .get_service(pb::GetServiceRequest {
            service: service.into(),
        })
        .await
        .expect("get")
        .into_inner();
    got.instances
        .into_iter()
        .map(|i| i.spec.expect("spec").instance_id)
        .collect()
}

use switchyard_runtime::testing::eventually;

#[tokio::test]
async fn a_session_registers_and_registers_again_after_losing_its_lease() {
    let r = registry().await;
    let session = Session::start(target(&r), TTL);
    session.register(instance("hello", "h1", "127.0.0.1:9", pb::Protocol::Http1));
    let lease = session
        .registered(Duration::from_secs(5))
        .await
        .expect("registered");
    assert_eq!(ids(&r, "hello").await, ["h1"]);

    // An operator revokes the lease: the next KeepAlive says so, and the
    // session registers everything again under a new lease.
    client(&r)
        .await
        .revoke_lease(pb::RevokeLeaseRequest { lease_id: lease })
        .await
        .expect("revoke");
    let mut status = session.status();
    tokio::time::timeout(
        Duration::from_secs(10),
        status.wait_for(|s| s.registrations >= 2),
    )
    .await
    .expect("re-registered within 10 s")
    .expect("session alive");
    let new_lease = status.borrow().lease_id.expect("lease");
    assert_ne!(new_lease, lease);
    assert_eq!(ids(&r, "hello").await, ["h1"]);
    testing_stop(r).await;
}

#[tokio::test]
async fn shutdown_drains_then_deregisters() {
    let r = registry().await;
    let session = Session::start(target(&r), TTL);
    session.register(instance("hello", "h1", "127.0.0.1:9", pb::Protocol::Http1));
    session
        .registered(Duration::from_secs(5))
        .await
        .expect("registered");
    let mut watch = client(&r)
        .await
        .watch(pb::WatchRequest {
            services: vec!["hello".into()],
            since: None,
        })
        .await
        .expect("watch")
        .into_inner();
    let _snapshot = watch.message().await.expect("ok").expect("snapshot");
    let shutdown = tokio::spawn(session.shutdown(Duration::from_millis(300)));
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let m = tokio::time::timeout(Duration::from_secs(5), watch.message())
            .await
            .expect("in time")
            .expect("ok")
            .expect("open");
        if let Some(pb::watch_response::Kind::Delta(d)) = m.kind {
            for e in d.events {
                seen.push((e.kind(), e.instance.expect("instance").state()));
            }
        }
    }
    assert_eq!(
        seen,
        [
            (pb::event::Kind::Put, pb::State::Draining),
            (pb::event::Kind::Delete, pb::State::Draining)
        ],
        "DRAINING first, removed after the drain delay"
    );
    shutdown.await.expect("shutdown");
    assert!(ids(&r, "hello").await.is_empty());
    testing_stop(r).await;
}

#[tokio::test]
async fn after_a_registry_restart_the_watch_resets_and_the_session_registers_again() {
    let clock = ManualClock::new();
    let r = testing::start(testing::config(), clock.clone())
        .await
        .expect("registry");
    let (grpc, http) = (r.grpc, r.http);
    let session = Session::start(target(&r), TTL);
    session.register(instance("hello", "h1", "127.0.0.1:9", pb::Protocol::Http1));
    session
        .registered(Duration::from_secs(5))
        .await
        .expect("registered");
    let discovery_clock = ManualClock::new();
    let discovery = Discovery::start(
        target(&r),
        vec!["hello".into()],
        TTL,
        discovery_clock.shared(),
    );
    assert!(discovery.synced(Duration::from_secs(5)).await);
    eventually("discovery sees h1", || async {
        discovery.instances("hello").len() == 1
    })
    .await;
    let epoch = discovery.view().position.clone().expect("position").epoch;

    testing_stop(r).await;
    // During the outage the last known good view stays.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(discovery.instances("hello").len(), 1);

    let listeners = Listeners {
        grpc: tokio::net::TcpListener::bind(grpc)
            .await
            .expect("rebind grpc"),
        http: tokio::net::TcpListener::bind(http)
            .await
            .expect("rebind http"),
    };
    let r = testing::start_on(testing::config(), ManualClock::new(), listeners)
        .await
        .expect("restart");
    eventually("the session registers again", || async {
        ids(&r, "hello").await == ["h1"]
    })
    .await;
    eventually("discovery resumed in the new epoch", || async {
        discovery
            .view()
            .position
            .as_ref()
            .is_some_and(|p| p.epoch != epoch)
    })
    .await;
    assert!(
        discovery.view().snapshots >= 2,
        "a reset snapshot after the restart"
    );
    assert_eq!(
        discovery.instances("hello").len(),
        1,
        "the view never emptied"
    );
    drop(session);
    testing_stop(r).await;
}

#[tokio::test]
async fn a_view_empties_only_after_authoritative_emptiness_for_one_ttl() {
    let r = registry().await;
    let session = Session::start(target(&r), TTL);
    session.register(instance("hello", "h1", "127.0.0.1:9", pb::Protocol::Http1));
    session
        .registered(Duration::from_secs(5))
        .await
        .expect("registered");
    let clock = ManualClock::new();
    let discovery = Discovery::start(target(&r), vec!["hello".into()], TTL, clock.shared());
    eventually("discovery sees h1", || async {
        discovery.instances("hello").len() == 1
    })
    .await;

    session.deregister("hello", "h1");
    eventually("the registry forgot h1", || async {
        ids(&r, "hello").await.is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        discovery.instances("hello").len(),
        1,
        "kept until empty for one TTL"
    );
    clock.advance(TTL / 2);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        discovery.instances("hello").len(),
        1,
        "half a TTL is not enough"
    );
    clock.advance(TTL);
    eventually("the view empties", || async {
        discovery.instances("hello").is_empty()
    })
    .await;
    testing_stop(r).await;
}

/// A gRPC server of `grpc.health.v1` on port 0: its address, its task, and
/// how many calls it has served.
async fn health_backend() -> (
    std::net::SocketAddr,
    tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
    Arc<std::sync::atomic::AtomicUsize>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (_reporter, health) = tonic_health::server::health_reporter();
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = calls.clone();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .layer(tower::util::MapRequestLayer::new(move |req| {
                counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                req
            }))
            .add_service(health)
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    (addr, server, calls)
}

#[tokio::test]
async fn a_balanced_channel_follows_the_view() {
    let r = registry().await;
    let mut backends = Vec::new();
    let session = Session::start(target(&r), TTL);
    for id in ["g1", "g2"] {
        let (addr, server, _calls) = health_backend().await;
        backends.push(server);
        session.register(instance(
            "grpc-svc",
            id,
            &addr.to_string(),
            pb::Protocol::Grpc,
        ));
    }
    session
        .registered(Duration::from_secs(5))
        .await
        .expect("registered");
    let discovery = Arc::new(Discovery::start(
        target(&r),
        vec!["grpc-svc".into()],
        TTL,
        ManualClock::new().shared(),
    ));
    eventually("both backends seen", || async {
        discovery.routable("grpc-svc").len() == 2
    })
    .await;
    let ch = channel::balanced_channel(&discovery, "grpc-svc");
    let mut health = tonic_health::pb::health_client::HealthClient::new(ch);
    for _ in 0..10 {
        let req = tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        };
        tokio::time::timeout(Duration::from_secs(5), health.check(req))
            .await
            .expect("in time")
            .expect("check");
    }
    // Take g1 away: it leaves the view, then its server stops; calls go on.
    session.deregister("grpc-svc", "g1");
    eventually("g1 leaves the view", || async {
        discovery.routable("grpc-svc").len() == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    backends[0].abort();
    for _ in 0..10 {
        let req = tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        };
        tokio::time::timeout(Duration::from_secs(5), health.check(req))
            .await
            .expect("in time")
            .expect("check after removal");
    }
    testing_stop(r).await;
}

async fn testing_stop(r: Running) {
    r.stop().await.expect("registry stops cleanly");
}

#[tokio::test]
async fn a_session_tries_every_registry_address() {
    let r = registry().await;
    // The first address refuses connections; the second is the registry.
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let dead_addr = dead.local_addr().expect("addr");
    drop(dead);
    let target = Target::new([format!("http://{dead_addr},{}", r.url())], None).expect("target");
    let session = Session::start(target, TTL);
    session.register(instance("hello", "h1", "127.0.0.1:9", pb::Protocol::Http1));
    session
        .registered(Duration::from_secs(10))
        .await
        .expect("registered through the second address");
    assert_eq!(ids(&r, "hello").await, ["h1"]);
    testing_stop(r).await;
}

#[tokio::test]
async fn a_balanced_channel_shares_sequential_calls_among_equal_instances() {
    use std::sync::atomic::Ordering;
    for (n, calls, low, high) in [(2usize, 100usize, 35, 65), (3, 300, 20, 100)] {
        let r = registry().await;
        let session = Session::start(target(&r), TTL);
        let service = format!("even-{n}");
        let mut served = Vec::new();
        for i in 0..n {
            let (addr, _server, calls) = health_backend().await;
            served.push(calls);
            session.register(instance(
                &service,
                &format!("e{i}"),
                &addr.to_string(),
                pb::Protocol::Grpc,
            ));
        }
        session
            .registered(Duration::from_secs(5))
            .await
            .expect("registered");
        let discovery = Discovery::start(
            target(&r),
            vec![service.clone()],
            TTL,
            ManualClock::new().shared(),
        );
        eventually("every instance seen", || async {
            discovery.routable(&service).len() == n
        })
        .await;
        let mut health = tonic_health::pb::health_client::HealthClient::new(
            channel::balanced_channel(&discovery, &service),
        );
        for _ in 0..calls {
            let req = tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            };
            tokio::time::timeout(Duration::from_secs(5), health.check(req))
                .await
                .expect("in time")
                .expect("check");
        }
        let counts: Vec<usize> = served.iter().map(|c| c.load(Ordering::Relaxed)).collect();
        println!("{n} instances, {calls} sequential calls: {counts:?}");
        for c in &counts {
            let share = c * 100 / calls;
            assert!(
                (low..=high).contains(&share),
                "{share} % of {calls}: {counts:?}"
            );
        }
    }
}

/// Issue 18: with the registry on etcd, a session whose replica dies moves
/// to another replica and keeps its lease: no new registration, no delete,
/// well past the dead replica's etcd session.
#[tokio::test]
async fn a_session_moves_to_another_replica_and_keeps_its_lease() {
    let etcd = switchyard_etcd::testing::Cluster::start(1, &[]).await;
    let replica = |name: &str| switchyard_registry::Config {
        store: switchyard_registry::StoreKind::Etcd,
        etcd_endpoints: etcd.endpoints(),
        etcd_session_ttl_secs: 5,
        replica_name: name.into(),
        ..testing::config()
    };
    let a = testing::start(replica("a"), ManualClock::new())
        .await
        .expect("a");
    let b = testing::start(replica("b"), ManualClock::new())
        .await
        .expect("b");
    let target = Target::new([a.url(), b.url()], None).expect("target");
    let session = Session::start(target, TTL);
    session.register(instance("hello", "h1", "127.0.0.1:9", pb::Protocol::Http1));
    session
        .registered(Duration::from_secs(10))
        .await
        .expect("registered on a");
    let lease = session.status().borrow().lease_id.expect("lease");
    let mut watch = client(&b)
        .await
        .watch(pb::WatchRequest::default())
        .await
        .expect("watch on b")
        .into_inner();
    watch.message().await.expect("snapshot").expect("open");

    testing_stop(a).await;
    // Past a's session TTL (5 s) and two of the client's TTLs.
    let until = tokio::time::Instant::now() + Duration::from_secs(9);
    while let Ok(m) = tokio::time::timeout_at(until, watch.message()).await {
        let m = m.expect("watch ok").expect("watch open");
        if let Some(pb::watch_response::Kind::Delta(d)) = &m.kind {
            assert!(
                d.events
                    .iter()
                    .all(|e| e.kind != pb::event::Kind::Delete as i32),
                "no delete while the session moved: {d:?}"
            );
        }
    }
    assert_eq!(ids(&b, "hello").await, ["h1"]);
    let status = session.status().borrow().clone();
    assert_eq!(status.lease_id, Some(lease), "the same lease, adopted by b");
    assert_eq!(status.registrations, 1, "never registered afresh");
    testing_stop(b).await;
}
