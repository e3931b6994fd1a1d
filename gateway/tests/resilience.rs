//! Failures kept away from clients: killed and paused backends, retries
//! and their budget, breakers, reloads under load, control-plane outages.

mod support;

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use hyper::Method;
use support::*;
use switchyard_proto::registry::v1 as reg;

const ROUTES: &str = r#"
[[route]]
name = "hello"
service = "hello"
path_prefix = "/hello/"

[[route]]
name = "post-retryable"
service = "hello"
path_prefix = "/retryable/"
retry = { attempts = 3, retryable = true }

[[route]]
name = "echo"
service = "echo"
path_prefix = "/grpc.health.v1.Health/"
retry = { attempts = 3, retryable = true }
"#;

fn hello_specs(backends: &[Arc<Backend>]) -> Vec<reg::InstanceSpec> {
    backends
        .iter()
        .map(|b| spec("hello", &b.id, b.addr, reg::Protocol::Http1))
        .collect()
}

/// Round robin keeps sending a failing backend its share, so its failures
/// add up to an ejection quickly (peak_ewma would mostly avoid it instead).
fn round_robin(mut specs: Vec<reg::InstanceSpec>) -> Vec<reg::InstanceSpec> {
    for s in &mut specs {
        s.metadata.insert("lb.policy".into(), "round_robin".into());
    }
    specs
}

fn endpoint(v: &serde_json::Value, service: &str, id: &str) -> serde_json::Value {
    v["services"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["service"] == service)
        .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
        .find(|e| e["instance_id"] == id)
        .unwrap_or(serde_json::Value::Null)
}

async fn backends(n: usize) -> Vec<Arc<Backend>> {
    let mut v = Vec::new();
    for i in 0..n {
        v.push(Backend::start(&format!("b{i}")).await);
    }
    v
}

/// Runs `total` GETs over `workers` concurrent loops, calling `midway`
/// after half; returns the failures (anything but 200).
async fn load(
    url: String,
    total: u64,
    workers: u64,
    midway: impl FnOnce() + Send + 'static,
) -> u64 {
    let done = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(AtomicU64::new(0));
    let mut midway = Some(midway);
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let (url, done, failures) = (url.clone(), done.clone(), failures.clone());
        tasks.push(tokio::spawn(async move {
            while done.fetch_add(1, Ordering::SeqCst) < total {
                let (code, body) = get(&url).await;
                if code != 200 {
                    failures.fetch_add(1, Ordering::SeqCst);
                    eprintln!("failed: {code} {body}");
                }
            }
        }));
    }
    while done.load(Ordering::SeqCst) < total / 2 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    if let Some(f) = midway.take() {
        f();
    }
    for t in tasks {
        t.await.expect("load task");
    }
    let failed = failures.load(Ordering::SeqCst);
    eprintln!("{total} requests, {failed} failed");
    failed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_killed_under_gets_costs_nothing() {
    let b = backends(3).await;
    let s = Stack::start(ROUTES, hello_specs(&b)).await;
    let victim = b[1].clone();
    let failed = load(format!("{}/hello/x", s.gateway.url()), 600, 8, move || {
        victim.kill()
    })
    .await;
    assert_eq!(failed, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_backend_killed_under_calls_costs_nothing() {
    let grpc = [
        GrpcBackend::start().await,
        GrpcBackend::start().await,
        GrpcBackend::start().await,
    ];
    for g in &grpc {
        g.reporter
            .set_service_status("echo", tonic_health::ServingStatus::Serving)
            .await;
    }
    let specs = grpc
        .iter()
        .enumerate()
        .map(|(i, g)| spec("echo", &format!("e{i}"), g.addr, reg::Protocol::Grpc))
        .collect();
    let s = Stack::start(ROUTES, specs).await;
    let channel = tonic::transport::Endpoint::from_shared(s.gateway.url())
        .expect("url")
        .connect()
        .await
        .expect("connect");
    let failures = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for w in 0..6 {
        let (channel, failures) = (channel.clone(), failures.clone());
        tasks.push(tokio::spawn(async move {
            let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
            for _ in 0..100 {
                let r = health
                    .check(tonic_health::pb::HealthCheckRequest {
                        service: "echo".into(),
                    })
                    .await;
                if let Err(status) = r {
                    failures.fetch_add(1, Ordering::SeqCst);
                    eprintln!("worker {w}: {status:?}");
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    grpc[0].kill();
    for t in tasks {
        t.await.expect("task");
    }
    assert_eq!(failures.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_post_that_reached_a_backend_is_retried_only_when_the_route_says_so() {
    let b = backends(2).await;
    for x in &b {
        x.failing.store(true, Ordering::Relaxed);
    }
    let s = Stack::start(ROUTES, hello_specs(&b)).await;
    let hits = |b: &[Arc<Backend>]| b.iter().map(|x| x.hits.load(Ordering::SeqCst)).sum::<u64>();
    let (code, _) = send(
        Method::POST,
        &format!("{}/hello/x", s.gateway.url()),
        &[],
        Bytes::from_static(b"order=1"),
    )
    .await;
    assert_eq!(code, 503, "the backend's answer comes back");
    assert_eq!(hits(&b), 1, "a POST that reached a backend is not retried");
    let (code, _) = send(
        Method::POST,
        &format!("{}/retryable/x", s.gateway.url()),
        &[],
        Bytes::from_static(b"order=2"),
    )
    .await;
    assert_eq!(code, 503);
    assert_eq!(hits(&b), 4, "a retryable route tries three times");
    // A POST that never reached anyone (its endpoint refuses connections) is
    // retried elsewhere whatever the method.
    for x in &b {
        x.failing.store(false, Ordering::Relaxed);
    }
    b[0].kill();
    for i in 0..10 {
        let (code, body) = send(
            Method::POST,
            &format!("{}/hello/x", s.gateway.url()),
            &[],
            Bytes::from(format!("order={i}")),
        )
        .await;
        assert_eq!(code, 200, "{body}");
        assert_eq!(instance_of(&body), "b1");
    }
}

#[tokio::test]
async fn the_retry_budget_holds_when_every_endpoint_fails() {
    let b = backends(2).await;
    for x in &b {
        x.failing.store(true, Ordering::Relaxed);
    }
    let s = Stack::start_with(ROUTES, hello_specs(&b), |c| c.local_ejection_failures = 0).await;
    let requests = 200u64;
    for _ in 0..requests {
        let (code, _) = get(&format!("{}/hello/x", s.gateway.url())).await;
        assert_eq!(code, 503);
    }
    let hits: u64 = b.iter().map(|x| x.hits.load(Ordering::SeqCst)).sum();
    let retries = hits - requests;
    eprintln!("{requests} requests, {retries} retries");
    // 20% of first attempts plus 10/s over 10 s; three attempts each would be 400.
    assert!(retries <= requests / 5 + 100, "{retries} retries");
    assert!(retries > 0, "some retries are allowed");
}

#[tokio::test]
async fn the_breaker_opens_and_recovers() {
    let b = backends(3).await;
    let s = Stack::start_with(ROUTES, round_robin(hello_specs(&b)), |c| {
        c.local_ejection_time = Duration::from_secs(1)
    })
    .await;
    b[0].failing.store(true, Ordering::Relaxed);
    let services = |gw: std::net::SocketAddr| async move {
        let body = switchyard_runtime::probe::probe(gw, "/api/services", Duration::from_secs(5))
            .await
            .expect("admin");
        serde_json::from_str::<serde_json::Value>(&body).expect("json")
    };
    let ejected = |v: &serde_json::Value| endpoint(v, "hello", "b0")["ejected"] == true;
    for _ in 0..60 {
        assert_eq!(
            get(&format!("{}/hello/x", s.gateway.url())).await.0,
            200,
            "failures are retried away"
        );
        if ejected(&services(s.gateway.admin).await) {
            break;
        }
    }
    assert!(ejected(&services(s.gateway.admin).await), "b0 is ejected");
    let before = b[0].hits.load(Ordering::SeqCst);
    for _ in 0..20 {
        assert_eq!(get(&format!("{}/hello/x", s.gateway.url())).await.0, 200);
    }
    assert_eq!(
        b[0].hits.load(Ordering::SeqCst),
        before,
        "an open breaker sends nothing"
    );
    b[0].failing.store(false, Ordering::Relaxed);
    eventually("b0 recovers", || async {
        let _ = get(&format!("{}/hello/x", s.gateway.url())).await;
        !ejected(&services(s.gateway.admin).await)
    })
    .await;
    assert!(
        b[0].hits.load(Ordering::SeqCst) > before,
        "a half-open trial reached it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_backend_costs_no_get_and_shows_as_ejected() {
    let b = backends(3).await;
    let s = Stack::start(ROUTES, hello_specs(&b)).await;
    let victim = b[2].clone();
    let failed = load(format!("{}/hello/x", s.gateway.url()), 300, 8, move || {
        victim.paused.store(true, Ordering::SeqCst)
    })
    .await;
    assert_eq!(
        failed, 0,
        "the 1 s per-try timeout and retries hide the paused backend"
    );
    let body =
        switchyard_runtime::probe::probe(s.gateway.admin, "/api/services", Duration::from_secs(5))
            .await
            .expect("admin");
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    let e = endpoint(&v, "hello", "b2");
    assert_eq!(e["ejected"], true, "{e}");
    b[2].paused.store(false, Ordering::SeqCst);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_under_load_drops_nothing_and_keeps_an_open_websocket() {
    let b = backends(2).await;
    let s = Stack::start(ROUTES, hello_specs(&b)).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/hello/ws", s.gateway.http))
        .await
        .expect("websocket");
    let path = s.routes.clone();
    let failed = load(format!("{}/hello/x", s.gateway.url()), 400, 6, move || {
        // Rewrite the file (same routes plus one) while requests flow.
        let extra =
            "\n[[route]]\nname = \"extra\"\nservice = \"hello\"\npath_prefix = \"/extra/\"\n";
        std::fs::write(&path, format!("{ROUTES}{extra}")).expect("rewrite routes");
    })
    .await;
    assert_eq!(failed, 0);
    eventually("the new route is live", || async {
        get(&format!("{}/extra/x", s.gateway.url())).await.0 == 200
    })
    .await;
    ws.send(tokio_tungstenite::tungstenite::Message::text("still here"))
        .await
        .expect("send after reload");
    let back = ws.next().await.expect("message").expect("ok");
    assert_eq!(back.into_text().expect("text").as_str(), "still here");

    // A bad file is refused by the API with its error; the old table stays.
    std::fs::write(&s.routes, "[[route]]\nservice = \"Bad Name\"\n").expect("write bad");
    let (code, body) = admin_post(s.gateway.admin, "/api/reload").await;
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("service"), "{body}");
    assert_eq!(
        get(&format!("{}/extra/x", s.gateway.url())).await.0,
        200,
        "the old table still serves"
    );
    let metrics =
        switchyard_runtime::probe::probe(s.gateway.admin, "/metrics", Duration::from_secs(5))
            .await
            .expect("metrics");
    assert!(
        metrics.contains("switchyard_gateway_reload_failures_total"),
        "reload failures are counted"
    );
}

async fn admin_post(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    send(
        Method::POST,
        &format!("http://{addr}{path}"),
        &[],
        Bytes::new(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_goes_on_when_the_registry_or_the_balancer_stops() {
    let b = backends(2).await;
    let registry = switchyard_registry::testing::start(
        switchyard_registry::testing::config(),
        switchyard_runtime::ManualClock::new(),
    )
    .await
    .expect("registry");
    let mut rc =
        switchyard_proto::registry::v1::registry_client::RegistryClient::connect(registry.url())
            .await
            .expect("client");
    rc.register(reg::RegisterRequest {
        lease_id: 0,
        ttl_seconds: 300,
        instances: hello_specs(&b),
    })
    .await
    .expect("register");
    let mut bcfg = switchyard_balancer::testing::config(&registry.url());
    bcfg.register_self = true;
    bcfg.report_interval = Duration::from_millis(200);
    let balancer =
        switchyard_balancer::testing::start(bcfg, switchyard_runtime::ManualClock::new())
            .await
            .expect("balancer");
    // The balancer's clock must pass its two-interval hold.
    balancer.advance(Duration::from_secs(1)).await;
    let dir = temp_dir("outage");
    let path = dir.join("routes.toml");
    std::fs::write(&path, ROUTES).expect("routes");
    let gateway = switchyard_gateway::testing::start(switchyard_gateway::testing::config(
        path.to_str().expect("utf8"),
        &registry.url(),
    ))
    .await
    .expect("gateway");
    eventually("the gateway uses the balancer's assignment", || async {
        balancer.advance(Duration::from_millis(200)).await;
        let body = switchyard_runtime::probe::probe(
            gateway.admin,
            "/api/services",
            Duration::from_secs(5),
        )
        .await
        .unwrap_or_default();
        body.contains("\"source\":\"balancer\"")
    })
    .await;
    let url = format!("{}/hello/x", gateway.url());
    assert_eq!(load(url.clone(), 100, 4, || {}).await, 0);
    balancer.stop.cancel();
    assert_eq!(
        load(url.clone(), 200, 4, || {}).await,
        0,
        "balancer stopped"
    );
    registry.stop.cancel();
    assert_eq!(
        load(url.clone(), 200, 4, || {}).await,
        0,
        "registry stopped too"
    );
    eventually(
        "the gateway balances alone after three intervals",
        || async {
            let body = switchyard_runtime::probe::probe(
                gateway.admin,
                "/api/services",
                Duration::from_secs(5),
            )
            .await
            .unwrap_or_default();
            body.contains("\"source\":\"registry\"")
        },
    )
    .await;
    assert_eq!(
        load(url, 200, 4, || {}).await,
        0,
        "alone, from the last registry view"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_body_refused_by_one_endpoint_goes_to_the_next() {
    let live = Backend::start("live").await;
    let dead = Backend::start("dead").await;
    let s = Stack::start(
        ROUTES,
        round_robin(hello_specs(&[live.clone(), dead.clone()])),
    )
    .await;
    dead.kill();
    // Over the 64 KiB replay buffer: streamed, so it could not be sent twice
    // once written; a refused connect never wrote it.
    let body = Bytes::from(vec![b'p'; 100 * 1024]);
    for i in 0..6 {
        let (status, text) = send(
            Method::POST,
            &format!("http://{}/hello/upload", s.gateway.http),
            &[],
            body.clone(),
        )
        .await;
        assert_eq!(status, 200, "POST {i}: {text}");
        let v: serde_json::Value = serde_json::from_str(&text).expect("json");
        assert_eq!(v["bytes"], 100 * 1024, "POST {i} arrived whole");
    }
    assert_eq!(live.hits.load(Ordering::SeqCst), 6);
}
