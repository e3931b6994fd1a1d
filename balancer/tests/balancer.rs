//! The real registry and balancer in-process: membership reaches
//! subscribers, reports eject, ejections expire and survive a restart.

use std::{collections::BTreeSet, time::Duration};

use switchyard_balancer::testing as bal;
use switchyard_proto::{
    balancer::v1::{self as pb, balancer_client::BalancerClient},
    registry::v1::{self as reg, registry_client::RegistryClient},
};
use switchyard_registry::testing as registry;
use switchyard_runtime::ManualClock;
use tonic::{Code, Streaming, transport::Channel};

struct Stack {
    registry: registry::Running,
    balancer: bal::Running,
}

async fn stack() -> Stack {
    let registry = registry::start(registry::config(), ManualClock::new())
        .await
        .expect("registry");
    let balancer = bal::start(bal::config(&registry.url()), ManualClock::new())
        .await
        .expect("balancer");
    Stack { registry, balancer }
}

async fn reg_client(s: &registry::Running) -> RegistryClient<Channel> {
    RegistryClient::connect(s.url())
        .await
        .expect("registry client")
}

async fn bal_client(b: &bal::Running) -> BalancerClient<Channel> {
    BalancerClient::connect(b.url())
        .await
        .expect("balancer client")
}

fn spec(id: &str) -> reg::InstanceSpec {
    reg::InstanceSpec {
        service: "hello".into(),
        instance_id: id.into(),
        address: format!("127.0.0.1:{}", 9000 + id.len()),
        protocol: reg::Protocol::Http1 as i32,
        ..Default::default()
    }
}

async fn register(c: &mut RegistryClient<Channel>, specs: Vec<reg::InstanceSpec>) -> u64 {
    c.register(reg::RegisterRequest {
        lease_id: 0,
        ttl_seconds: 10,
        instances: specs,
    })
    .await
    .expect("register")
    .into_inner()
    .lease_id
}

async fn subscribe(b: &bal::Running) -> Streaming<pb::Assignment> {
    bal_client(b)
        .await
        .subscribe(pb::SubscribeRequest {
            services: vec!["hello".into()],
            subscriber_id: "test".into(),
            zone: String::new(),
        })
        .await
        .expect("subscribe")
        .into_inner()
}

/// Next assignment, advancing the balancer's clock until one comes.
async fn next(b: &bal::Running, stream: &mut Streaming<pb::Assignment>) -> pb::Assignment {
    for _ in 0..50 {
        if let Ok(m) = tokio::time::timeout(Duration::from_millis(100), stream.message()).await {
            let a = m.expect("stream ok").expect("stream open");
            assert!(!a.endpoints.is_empty(), "an empty assignment was sent");
            return a;
        }
        b.advance(Duration::from_secs(1)).await;
    }
    panic!("no assignment arrived");
}

/// Reads assignments until one satisfies `f`.
async fn until(
    b: &bal::Running,
    stream: &mut Streaming<pb::Assignment>,
    what: &str,
    f: impl Fn(&pb::Assignment) -> bool,
) -> pb::Assignment {
    for _ in 0..20 {
        let a = next(b, stream).await;
        if f(&a) {
            return a;
        }
    }
    panic!("no assignment where {what}");
}

fn ids(a: &pb::Assignment) -> Vec<&str> {
    a.endpoints.iter().map(|e| e.instance_id.as_str()).collect()
}

fn ejected(a: &pb::Assignment) -> BTreeSet<String> {
    a.endpoints
        .iter()
        .filter(|e| e.ejection.is_some())
        .map(|e| e.instance_id.clone())
        .collect()
}

fn report(reporter: &str, failing: &[(&str, u32)], others: &[&str]) -> pb::LoadReport {
    let mut endpoints: Vec<pb::EndpointLoad> = failing
        .iter()
        .map(|(id, n)| pb::EndpointLoad {
            service: "hello".into(),
            instance_id: (*id).into(),
            requests: u64::from(*n),
            failures: Some(pb::Failures {
                connect: u64::from(*n),
                ..Default::default()
            }),
            consecutive_failures: *n,
            ..Default::default()
        })
        .collect();
    endpoints.extend(others.iter().map(|id| pb::EndpointLoad {
        service: "hello".into(),
        instance_id: (*id).into(),
        requests: 10,
        ..Default::default()
    }));
    pb::LoadReport {
        reporter_id: reporter.into(),
        interval: Some(prost_types::Duration {
            seconds: 1,
            nanos: 0,
        }),
        endpoints,
        zone: String::new(),
    }
}

async fn send_reports(b: &bal::Running, reports: Vec<pb::LoadReport>) {
    bal_client(b)
        .await
        .report_load(tokio_stream::iter(reports))
        .await
        .expect("report_load");
}

#[tokio::test]
async fn joining_draining_and_dying_endpoints_reach_subscribers() {
    let s = stack().await;
    let mut r = reg_client(&s.registry).await;
    let lease_a = register(&mut r, vec![spec("a")]).await;
    register(&mut r, vec![spec("bb")]).await;
    let mut sub = subscribe(&s.balancer).await;
    let first = until(&s.balancer, &mut sub, "a and bb", |a| ids(a) == ["a", "bb"]).await;
    assert_eq!(
        first.policy.as_ref().expect("policy").policy(),
        pb::Policy::PeakEwma
    );

    register(&mut r, vec![spec("ccc")]).await;
    until(&s.balancer, &mut sub, "ccc joined", |a| {
        ids(a) == ["a", "bb", "ccc"]
    })
    .await;

    r.set_state(reg::SetStateRequest {
        service: "hello".into(),
        instance_id: "bb".into(),
        state: reg::State::Draining as i32,
        weight: None,
        ..Default::default()
    })
    .await
    .expect("drain");
    until(&s.balancer, &mut sub, "bb draining", |a| {
        a.endpoints
            .iter()
            .any(|e| e.instance_id == "bb" && e.state == reg::State::Draining as i32)
    })
    .await;

    r.revoke_lease(reg::RevokeLeaseRequest { lease_id: lease_a })
        .await
        .expect("revoke");
    let last = until(&s.balancer, &mut sub, "a gone", |a| ids(a) == ["bb", "ccc"]).await;
    assert!(last.version > first.version);
    // Pick never returns a draining endpoint.
    let mut b = bal_client(&s.balancer).await;
    for _ in 0..20 {
        let p = b
            .pick(pb::PickRequest {
                service: "hello".into(),
                ..Default::default()
            })
            .await
            .expect("pick")
            .into_inner();
        assert_eq!(p.endpoint.expect("endpoint").instance_id, "ccc");
        assert!(!p.panic);
    }
}

#[tokio::test]
async fn failure_reports_eject_and_the_ejection_expires() {
    let s = stack().await;
    let mut r = reg_client(&s.registry).await;
    register(
        &mut r,
        vec![spec("a"), spec("bb"), spec("ccc"), spec("dddd")],
    )
    .await;
    let mut sub = subscribe(&s.balancer).await;
    until(&s.balancer, &mut sub, "four endpoints", |a| {
        a.endpoints.len() == 4
    })
    .await;

    // Ejections need two intervals of data.
    send_reports(&s.balancer, vec![report("gw", &[("a", 5)], &["bb"])]).await;
    s.balancer.advance(Duration::from_secs(1)).await;
    send_reports(&s.balancer, vec![report("gw", &[("a", 5)], &["bb"])]).await;
    s.balancer.advance(Duration::from_secs(1)).await;
    send_reports(&s.balancer, vec![report("gw", &[("a", 6)], &["bb"])]).await;
    let a = until(&s.balancer, &mut sub, "a ejected", |a| {
        ejected(a).contains("a")
    })
    .await;
    let e = a
        .endpoints
        .iter()
        .find(|e| e.instance_id == "a")
        .and_then(|e| e.ejection)
        .expect("ejection");
    assert_eq!(e.reason(), pb::EjectionReason::ConsecutiveFailures);
    assert!(e.remaining.expect("remaining").seconds <= 30);
    let mut b = bal_client(&s.balancer).await;
    for _ in 0..20 {
        let p = b
            .pick(pb::PickRequest {
                service: "hello".into(),
                ..Default::default()
            })
            .await
            .expect("pick")
            .into_inner();
        assert_ne!(
            p.endpoint.expect("endpoint").instance_id,
            "a",
            "an ejected endpoint was picked"
        );
    }
    s.balancer.advance(Duration::from_secs(31)).await;
    until(&s.balancer, &mut sub, "ejection expired", |a| {
        ejected(a).is_empty()
    })
    .await;
}

#[tokio::test]
async fn two_balancers_fed_the_same_reports_eject_the_same_endpoints() {
    let s = stack().await;
    let other = bal::start(bal::config(&s.registry.url()), ManualClock::new())
        .await
        .expect("second balancer");
    let mut r = reg_client(&s.registry).await;
    register(
        &mut r,
        vec![
            spec("a"),
            spec("bb"),
            spec("ccc"),
            spec("dddd"),
            spec("eeeee"),
            spec("ffffff"),
        ],
    )
    .await;
    let mut subs = [subscribe(&s.balancer).await, subscribe(&other).await];
    for (b, sub) in [&s.balancer, &other].into_iter().zip(subs.iter_mut()) {
        until(b, sub, "six endpoints", |a| a.endpoints.len() == 6).await;
    }
    let rounds = [
        report("gw", &[("a", 2), ("ccc", 5)], &["bb"]),
        report("gw", &[("a", 4), ("ccc", 9)], &["bb"]),
        report("gw", &[("a", 4), ("ccc", 12), ("eeeee", 7)], &["bb"]),
    ];
    for round in rounds {
        for b in [&s.balancer, &other] {
            send_reports(b, vec![round.clone()]).await;
            b.advance(Duration::from_secs(1)).await;
        }
    }
    let mut sets = Vec::new();
    for (b, sub) in [&s.balancer, &other].into_iter().zip(subs.iter_mut()) {
        let a = until(b, sub, "ejections", |a| {
            !ejected(a).is_empty() && ejected(a).len() >= 2
        })
        .await;
        sets.push(ejected(&a));
    }
    assert_eq!(sets[0], sets[1]);
    assert_eq!(
        sets[0],
        BTreeSet::from(["ccc".to_string(), "eeeee".to_string()])
    );
    other.stop().await.expect("stop");
}

#[tokio::test]
async fn a_restarted_balancer_neither_un_ejects_nor_sends_an_empty_assignment() {
    let s = stack().await;
    let mut r = reg_client(&s.registry).await;
    register(&mut r, vec![spec("a"), spec("bb"), spec("ccc")]).await;
    let mut sub = subscribe(&s.balancer).await;
    until(&s.balancer, &mut sub, "three", |a| a.endpoints.len() == 3).await;
    for n in [5, 6, 7] {
        send_reports(&s.balancer, vec![report("gw", &[("a", n)], &["bb"])]).await;
        s.balancer.advance(Duration::from_secs(1)).await;
    }
    let held = until(&s.balancer, &mut sub, "a ejected", |a| {
        ejected(a).contains("a")
    })
    .await;
    let remaining = held.endpoints[0]
        .ejection
        .and_then(|e| e.remaining)
        .expect("remaining");
    s.balancer.stop.cancel();

    // A new balancer; the gateway hands back the ejection it holds.
    let fresh = bal::start(bal::config(&s.registry.url()), ManualClock::new())
        .await
        .expect("restart");
    let mut sub = subscribe(&fresh).await;
    assert!(
        tokio::time::timeout(Duration::from_millis(300), sub.message())
            .await
            .is_err(),
        "nothing is sent before reporters had two intervals to report"
    );
    let mut hand_back = report("gw", &[], &["a", "bb"]);
    hand_back.endpoints[0].ejection_remaining = Some(remaining);
    hand_back.endpoints[0].times_ejected = 1;
    send_reports(&fresh, vec![hand_back]).await;
    let first = next(&fresh, &mut sub).await;
    assert_eq!(first.endpoints.len(), 3, "never empty");
    assert_eq!(
        ejected(&first),
        BTreeSet::from(["a".to_string()]),
        "the ejection survived the restart"
    );
    fresh.stop().await.expect("stop");
}

#[tokio::test]
async fn pick_with_the_same_key_returns_the_same_endpoint() {
    let s = stack().await;
    let mut r = reg_client(&s.registry).await;
    let mut specs: Vec<_> = ["a", "bb", "ccc", "dddd"]
        .iter()
        .map(|id| spec(id))
        .collect();
    for sp in &mut specs {
        sp.metadata.insert("lb.policy".into(), "maglev".into());
    }
    register(&mut r, specs).await;
    let mut sub = subscribe(&s.balancer).await;
    let a = until(&s.balancer, &mut sub, "four", |a| a.endpoints.len() == 4).await;
    assert_eq!(
        a.policy.expect("policy").policy(),
        pb::Policy::Maglev,
        "lb.policy metadata is honoured"
    );
    let mut b = bal_client(&s.balancer).await;
    let mut owners = BTreeSet::new();
    for user in 0..40 {
        let key = format!("user-{user}");
        let mut seen = BTreeSet::new();
        for _ in 0..5 {
            let p = b
                .pick(pb::PickRequest {
                    service: "hello".into(),
                    hash_key: key.clone(),
                    exclude_instance_ids: vec![],
                })
                .await
                .expect("pick")
                .into_inner();
            assert_eq!(p.policy(), pb::Policy::Maglev);
            seen.insert(p.endpoint.expect("endpoint").instance_id);
        }
        assert_eq!(seen.len(), 1, "{key} moved between picks");
        owners.extend(seen);
    }
    assert!(
        owners.len() >= 3,
        "keys spread over the endpoints: {owners:?}"
    );
    // Exclusions are honoured.
    let p = b
        .pick(pb::PickRequest {
            service: "hello".into(),
            hash_key: "user-1".into(),
            exclude_instance_ids: vec!["a".into(), "bb".into(), "ccc".into()],
        })
        .await
        .expect("pick")
        .into_inner();
    assert_eq!(p.endpoint.expect("endpoint").instance_id, "dddd");
}

#[tokio::test]
async fn no_assignment_before_an_authoritative_snapshot() {
    let mut cfg = registry::config();
    cfg.warm_up = Duration::from_secs(20);
    let registry = registry::start(cfg, ManualClock::new())
        .await
        .expect("registry");
    let balancer = bal::start(bal::config(&registry.url()), ManualClock::new())
        .await
        .expect("balancer");
    let mut r = reg_client(&registry).await;
    register(&mut r, vec![spec("a")]).await;
    let mut sub = subscribe(&balancer).await;
    balancer.advance(Duration::from_secs(5)).await;
    assert!(
        tokio::time::timeout(Duration::from_millis(300), sub.message())
            .await
            .is_err(),
        "an assignment was sent from a warming-up registry"
    );
    registry.advance(Duration::from_secs(21)).await;
    let a = next(&balancer, &mut sub).await;
    assert_eq!(ids(&a), ["a"]);
}

#[tokio::test]
async fn report_load_and_set_policy_need_an_operator_token() {
    let registry = registry::start(registry::config(), ManualClock::new())
        .await
        .expect("registry");
    let mut cfg = bal::config(&registry.url());
    cfg.operator_tokens = vec!["operator-token-1".into()];
    let balancer = bal::start(cfg, ManualClock::new()).await.expect("balancer");
    let mut b = bal_client(&balancer).await;
    let err = b
        .report_load(tokio_stream::iter([report("gw", &[], &["a"])]))
        .await
        .expect_err("no token");
    assert_eq!(err.code(), Code::Unauthenticated);
    let err = b
        .set_policy(pb::SetPolicyRequest {
            policy: Some(pb::ServicePolicy {
                service: "hello".into(),
                policy: pb::Policy::RoundRobin as i32,
                ..Default::default()
            }),
        })
        .await
        .expect_err("no token");
    assert_eq!(err.code(), Code::Unauthenticated);
    let mut req = tonic::Request::new(pb::SetPolicyRequest {
        policy: Some(pb::ServicePolicy {
            service: "hello".into(),
            policy: pb::Policy::RoundRobin as i32,
            ..Default::default()
        }),
    });
    req.metadata_mut().insert(
        "authorization",
        "Bearer operator-token-1".parse().expect("header"),
    );
    let set = b.set_policy(req).await.expect("with token").into_inner();
    assert_eq!(set.policy.expect("policy").policy(), pb::Policy::RoundRobin);
    let err = b
        .pick(pb::PickRequest {
            service: "Bad!".into(),
            ..Default::default()
        })
        .await
        .expect_err("bad name");
    assert_eq!(err.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn zones_slow_start_reporters_and_the_admin_page() {
    let registry = registry::start(registry::config(), ManualClock::new())
        .await
        .expect("registry");
    let dir = std::env::temp_dir().join(format!("sy-bal-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("services.toml");
    std::fs::write(&file, "[services.hello]\npolicy = \"weighted_round_robin\"\nslow_start = { window = \"1h\", min_weight_percent = 10 }\n").expect("write");
    let mut cfg = bal::config(&registry.url());
    cfg.services_file = file.display().to_string();
    cfg.register_self = true;
    cfg.instance_id = "balancer-1".into();
    let balancer = bal::start(cfg, ManualClock::new()).await.expect("balancer");
    let mut r = reg_client(&registry).await;
    let mut specs = vec![spec("a"), spec("bb"), spec("ccc")];
    specs[0].zone = "z1".into();
    specs[1].zone = "z1".into();
    specs[2].zone = "z2".into();
    register(&mut r, specs).await;

    let mut sub = bal_client(&balancer)
        .await
        .subscribe(pb::SubscribeRequest {
            services: vec!["hello".into()],
            subscriber_id: "gw-z2".into(),
            zone: "z2".into(),
        })
        .await
        .expect("subscribe")
        .into_inner();
    let a = until(&balancer, &mut sub, "three", |a| a.endpoints.len() == 3).await;
    assert_eq!(
        a.policy.as_ref().expect("policy").policy(),
        pb::Policy::WeightedRoundRobin,
        "the services file wins"
    );
    let w: Vec<f64> = a.endpoints.iter().map(|e| e.effective_weight).collect();
    // Just registered: slow start holds weights at 10%; zone z2 keeps ccc whole.
    assert!((w[2] - 10.0).abs() < 0.5, "{w:?}");
    assert!(
        w[0] < w[2] / 10.0,
        "cross-zone endpoints keep a small share: {w:?}"
    );

    // The balancer registered itself.
    let got = r
        .get_service(reg::GetServiceRequest {
            service: "switchyard-balancer".into(),
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(got.instances.len(), 1);

    // Reporters: listed while they report, dropped after 3 silent intervals.
    send_reports(&balancer, vec![report("gw-1", &[], &["a"])]).await;
    let stats = bal_client(&balancer)
        .await
        .get_stats(pb::GetStatsRequest::default())
        .await
        .expect("stats")
        .into_inner();
    assert_eq!(stats.reporters.len(), 1);
    let (code, body) = admin_get(balancer.http, "/api/services").await;
    assert_eq!(code, 200);
    assert!(
        body.contains("\"reporter_id\":\"gw-1\"") && body.contains("\"effective_weight\""),
        "{body}"
    );
    balancer.advance(Duration::from_secs(4)).await;
    let stats = bal_client(&balancer)
        .await
        .get_stats(pb::GetStatsRequest::default())
        .await
        .expect("stats")
        .into_inner();
    assert!(
        stats.reporters.is_empty(),
        "a reporter silent for 3 intervals is dropped"
    );
    balancer.stop().await.expect("stop");
    let got = r
        .get_service(reg::GetServiceRequest {
            service: "switchyard-balancer".into(),
        })
        .await
        .expect("get")
        .into_inner();
    assert!(got.instances.is_empty(), "it deregisters on shutdown");
    let _ = std::fs::remove_dir_all(dir);
}

async fn admin_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    match switchyard_runtime::probe::probe(addr, path, Duration::from_secs(5)).await {
        Ok(body) => (200, body),
        Err(switchyard_runtime::probe::ProbeError::NotReady { status, body }) => (status, body),
        Err(e) => panic!("{e}"),
    }
}
