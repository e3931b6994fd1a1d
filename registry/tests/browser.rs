//! The dashboard in a real browser (headless Chromium) against the real
//! registry: the services page loads and shows a registration within 2 s
//! without a reload, trouble sorts first, search filters; a drain from a
//! service page changes the instance in the registry (and the page follows
//! it); without the operator token the registry refuses it and nothing
//! changes.
//!
//! `SWITCHYARD_SCREENSHOTS=docs` saves the screenshots the README shows.

#[path = "support/browser.rs"]
mod browser;
mod support;

use std::time::{Duration, Instant};

use browser::Browser;
use serde_json::json;
use support::{authed, client_of, http, spec, start, stop};
use switchyard_proto::registry::v1 as pb;

const OPERATOR: &str = "browser-operator-token";
const REGISTER: &str = "browser-register-token";

fn with_tokens() -> switchyard_registry::Config {
    switchyard_registry::Config {
        register_tokens: vec![REGISTER.into()],
        operator_tokens: vec![OPERATOR.into()],
        ..support::config()
    }
}

async fn register(r: &support::Running, specs: Vec<pb::InstanceSpec>) {
    client_of(r)
        .await
        .register(authed(
            pb::RegisterRequest {
                lease_id: 0,
                ttl_seconds: 30,
                instances: specs,
            },
            REGISTER,
        ))
        .await
        .expect("register");
}

fn instance(service: &str, id: &str, zone: &str, version: &str) -> pb::InstanceSpec {
    pb::InstanceSpec {
        zone: zone.into(),
        version: version.into(),
        tags: vec!["http".into()],
        metadata: [("team".to_string(), "payments".to_string())].into(),
        ..spec(service, id)
    }
}

/// `spec` at `address` with a TCP check each second: to a port that
/// listens (healthy) or one that does not (unhealthy).
fn checked(spec: pb::InstanceSpec, address: std::net::SocketAddr) -> pb::InstanceSpec {
    pb::InstanceSpec {
        address: address.to_string(),
        health_check: support::tcp_check(),
        ..spec
    }
}

/// A loopback port nothing listens on.
async fn closed_port() -> std::net::SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    l.local_addr().expect("addr")
}

async fn drain(r: &support::Running, service: &str, id: &str, reason: &str) {
    let (status, body) = http(
        r.http,
        "PUT",
        &format!("/api/services/{service}/instances/{id}"),
        Some(OPERATOR),
        Some(&json!({ "state": "DRAINING", "reason": reason }).to_string()),
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

async fn instance_json(r: &support::Running, service: &str, id: &str) -> serde_json::Value {
    support::listed_instance(r.http, service, id, None).await
}

/// Saves a screenshot when `SWITCHYARD_SCREENSHOTS` names a directory.
async fn screenshot(b: &mut Browser, name: &str) {
    if let Ok(dir) = std::env::var("SWITCHYARD_SCREENSHOTS") {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(dir);
        b.screenshot(&dir.join(name)).await;
    }
}

#[tokio::test]
async fn the_services_page_shows_a_registration_within_two_seconds_without_reload() {
    let r = start(with_tokens()).await;
    let down = closed_port().await;
    register(
        &r,
        vec![
            instance("orders", "orders-1", "eu-west-1a", "1.4.2"),
            instance("orders", "orders-2", "eu-west-1b", "1.4.2"),
            instance("users", "users-1", "eu-west-1a", "2.0.0"),
            instance("users", "users-2", "eu-west-1b", "2.0.0"),
            checked(
                instance("catalog", "catalog-1", "eu-west-1a", "0.9.1"),
                down,
            ),
            instance("catalog", "catalog-2", "eu-west-1b", "0.9.1"),
        ],
    )
    .await;
    drain(&r, "users", "users-2", "kernel upgrade").await;

    let mut b = Browser::launch().await;
    b.goto(&format!("http://{}/ui/", r.http)).await;
    b.wait_for(
        r#"document.querySelectorAll('tr[data-service]').length === 3"#,
        Duration::from_secs(5),
    )
    .await;
    // Trouble first: the service with an unhealthy instance (its check
    // fails), then the one with a draining instance.
    b.wait_for(
        r#"document.querySelector('tr[data-service="catalog"]').classList.contains('unhealthy')"#,
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(
        b.eval("[...document.querySelectorAll('tr[data-service]')].map(r => r.dataset.service)")
            .await,
        json!(["catalog", "users", "orders"])
    );
    assert_eq!(
        b.eval("document.getElementById('live').textContent").await,
        json!("live")
    );

    // A registration appears without a reload, within 2 s.
    let page = b.eval("window.performance.timeOrigin").await;
    register(
        &r,
        vec![instance("payments", "payments-1", "eu-west-1a", "3.1.0")],
    )
    .await;
    let registered = Instant::now();
    b.wait_for(
        r#"document.querySelector('tr[data-service="payments"]') !== null"#,
        Duration::from_secs(2),
    )
    .await;
    let took = registered.elapsed();
    assert!(took < Duration::from_secs(2), "took {took:?}");
    assert_eq!(
        b.eval("window.performance.timeOrigin").await,
        page,
        "the same page, not a reload"
    );
    screenshot(&mut b, "dashboard-services.png").await;

    // Search narrows the list.
    b.fill("#search", "pay").await;
    b.wait_for(
        "document.querySelectorAll('tr[data-service]').length === 1",
        Duration::from_secs(2),
    )
    .await;
    assert_eq!(
        b.eval("document.querySelector('tr[data-service]').dataset.service")
            .await,
        json!("payments")
    );
    drop(b);
    stop(r).await;
}

#[tokio::test]
async fn a_drain_from_the_service_page_changes_the_instance_in_the_registry() {
    let r = start(with_tokens()).await;
    let up = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let up_addr = up.local_addr().expect("addr");
    let accept = tokio::spawn(async move {
        loop {
            let _ = up.accept().await;
        }
    });
    let down = closed_port().await;
    register(
        &r,
        vec![
            checked(
                instance("orders", "orders-1", "eu-west-1a", "1.4.2"),
                up_addr,
            ),
            checked(
                instance("orders", "orders-2", "eu-west-1b", "1.4.2"),
                up_addr,
            ),
            checked(instance("orders", "orders-3", "eu-west-1c", "1.5.0"), down),
        ],
    )
    .await;
    let mut b = Browser::launch().await;
    b.goto(&format!("http://{}/ui/#/services/orders", r.http))
        .await;
    b.wait_for(
        "document.querySelectorAll('tr[data-instance]').length === 3",
        Duration::from_secs(5),
    )
    .await;

    // The operator gives the token once, in the page.
    b.click("#token-button").await;
    b.fill("#token-input", OPERATOR).await;
    b.click("#token-save").await;
    b.wait_for(
        r#"document.querySelectorAll('tr[data-instance]').length === 3"#,
        Duration::from_secs(5),
    )
    .await;

    b.click(r#"button[data-action="drain"][data-id="orders-2"]"#)
        .await;
    b.wait_for(
        "document.getElementById('action-dialog').open",
        Duration::from_secs(2),
    )
    .await;
    b.fill("#action-reason", "kernel upgrade").await;
    b.fill("#action-minutes", "30").await;
    b.click("#action-confirm").await;
    b.wait_for(
        "!document.getElementById('action-dialog').open",
        Duration::from_secs(5),
    )
    .await;

    // The registry has it, with the reason and the expiry.
    let i = instance_json(&r, "orders", "orders-2").await;
    assert_eq!(i["state"], "DRAINING", "{i}");
    assert_eq!(i["override"]["reason"], "kernel upgrade");
    let expires = i["override"]["expires_at"].as_u64().expect("expiry") as i64;
    let updated = i["override"]["updated_at"].as_u64().expect("updated") as i64;
    assert!((expires - updated - 1800).abs() <= 2, "{i}");
    assert_eq!(
        instance_json(&r, "orders", "orders-1").await["state"],
        "SERVING"
    );

    // The page follows: the row and the history say so, no reload.
    b.wait_for(
        r#"document.querySelector('tr[data-instance="orders-2"]').innerText.includes('DRAINING')"#,
        Duration::from_secs(2),
    )
    .await;
    b.wait_for(
        r#"document.getElementById('history').innerText.includes('state SERVING → DRAINING')"#,
        Duration::from_secs(2),
    )
    .await;
    b.wait_for(
        r#"document.querySelector('tr[data-instance="orders-3"]').innerText.includes('UNHEALTHY')"#,
        Duration::from_secs(5),
    )
    .await;
    screenshot(&mut b, "dashboard-service.png").await;
    drop(b);
    accept.abort();
    stop(r).await;
}

#[tokio::test]
async fn without_the_token_a_drain_from_the_page_is_refused_and_changes_nothing() {
    let r = start(with_tokens()).await;
    register(
        &r,
        vec![instance("orders", "orders-1", "eu-west-1a", "1.4.2")],
    )
    .await;
    let mut b = Browser::launch().await;
    b.goto(&format!("http://{}/ui/#/services/orders", r.http))
        .await;
    b.wait_for(
        "document.querySelectorAll('tr[data-instance]').length === 1",
        Duration::from_secs(5),
    )
    .await;
    b.click(r#"button[data-action="drain"][data-id="orders-1"]"#)
        .await;
    b.click("#action-confirm").await;
    b.wait_for(
        "document.getElementById('action-error').textContent.startsWith('Refused')",
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(
        b.eval("document.getElementById('action-dialog').open")
            .await,
        json!(true),
        "the dialog stays, saying why"
    );
    assert_eq!(
        instance_json(&r, "orders", "orders-1").await["state"],
        "SERVING"
    );
    drop(b);
    stop(r).await;
}

/// The dashboard with 1,000 services and 10,000 instances (issue 22): how
/// long the services page takes to show them all, to follow one
/// registration and a burst of 1,000, to filter, and a service page to
/// load. It checks that the pages work at that size (every service listed,
/// the first 200 shown, a burst counted, search and "show all"); the times
/// it prints are not asserted: `bench/dashboard.sh` runs it and reads them
/// (the registry runs in this debug test binary, so its share is an upper
/// bound).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_at_scale() {
    const SERVICES: usize = 1_000;
    const PER_SERVICE: usize = 10;
    let r = start(with_tokens()).await;
    let service = |s: usize| format!("svc-{s:04}");
    for chunk in (0..SERVICES).collect::<Vec<_>>().chunks(100) {
        let specs = chunk
            .iter()
            .flat_map(|&s| {
                (0..PER_SERVICE).map(move |i| {
                    instance(
                        &service(s),
                        &format!("{}-{i}", service(s)),
                        "eu-west-1a",
                        "1.0.0",
                    )
                })
            })
            .collect();
        register(&r, specs).await;
    }
    let mut b = Browser::launch().await;
    let figure = |name: &str, v: f64, unit: &str| println!("dashboard {name}: {v:.0} {unit}");

    b.goto(&format!("http://{}/ui/", r.http)).await;
    b.wait_for(
        &format!(
            "document.getElementById('counts').textContent.startsWith('{SERVICES} of {SERVICES} services') \
             && document.querySelectorAll('tr[data-service]').length === 200"
        ),
        Duration::from_secs(30),
    )
    .await;
    let shown = b
        .eval("performance.now()")
        .await
        .as_f64()
        .unwrap_or_default();
    figure(
        "services page, 1,000 services listed (the first 200 shown) after",
        shown,
        "ms from navigation",
    );
    let render = b
        .eval(
            "(async () => { const t = performance.now(); const i = document.getElementById('search'); \
             i.dispatchEvent(new Event('input')); \
             await new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r))); \
             return performance.now() - t; })()",
        )
        .await
        .as_f64()
        .unwrap_or(-1.0);
    figure("services page, a render (200 rows)", render, "ms");
    let idle = b
        .eval(
            "(async () => { const t = performance.now(); \
             await new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r))); \
             return performance.now() - t; })()",
        )
        .await
        .as_f64()
        .unwrap_or(-1.0);
    figure(
        "two frames with nothing to render (the floor of the figures above)",
        idle,
        "ms",
    );
    let split = b
        .eval(
            "(() => { const t = document.getElementById('table'); const html = t.innerHTML; \
             const a = performance.now(); t.innerHTML = html; const b = performance.now(); \
             void document.body.offsetHeight; const c = performance.now(); \
             return `parse ${(b - a).toFixed(1)} ms, layout ${(c - b).toFixed(1)} ms`; })()",
        )
        .await;
    println!("dashboard 200 rows: {split}");
    register(
        &r,
        vec![instance("svc-new", "svc-new-0", "eu-west-1a", "1.0.0")],
    )
    .await;
    let registered = Instant::now();
    b.wait_for(
        "document.getElementById('counts').textContent.startsWith('1001 of 1001 services')",
        Duration::from_secs(10),
    )
    .await;
    figure(
        "a new service's registration shown after",
        registered.elapsed().as_secs_f64() * 1e3,
        "ms",
    );

    register(
        &r,
        vec![instance(
            "svc-0001",
            "svc-0001-extra",
            "eu-west-1a",
            "1.0.0",
        )],
    )
    .await;
    let registered = Instant::now();
    b.wait_for(
        r#"document.querySelector('tr[data-service="svc-0001"]').children[1].textContent === '11'"#,
        Duration::from_secs(10),
    )
    .await;
    figure(
        "an instance added to a listed service shown after",
        registered.elapsed().as_secs_f64() * 1e3,
        "ms",
    );

    let burst = (0..1_000)
        .map(|i| {
            instance(
                &service(i),
                &format!("{}-burst", service(i)),
                "eu-west-1b",
                "1.0.1",
            )
        })
        .collect();
    let started = Instant::now();
    register(&r, burst).await;
    b.wait_for(
        "document.getElementById('counts').textContent.includes('11002 instances')",
        Duration::from_secs(30),
    )
    .await;
    figure(
        "a burst of 1,000 registrations in 1,000 services shown after",
        started.elapsed().as_secs_f64() * 1e3,
        "ms",
    );

    let search = b
        .eval(
            "(async () => { const t = performance.now(); const i = document.getElementById('search'); \
             i.value = 'svc-0999'; i.dispatchEvent(new Event('input')); \
             await new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r))); \
             return document.querySelectorAll('tr[data-service]').length === 1 ? performance.now() - t : -1; })()",
        )
        .await
        .as_f64()
        .unwrap_or(-1.0);
    assert!(search >= 0.0, "the search did not narrow the list");
    figure("search narrowed 1,001 services to one in", search, "ms");
    b.fill("#search", "").await;
    b.wait_for(
        "document.getElementById('show-all') !== null",
        Duration::from_secs(5),
    )
    .await;
    let all = b
        .eval(
            "(async () => { const t = performance.now(); document.getElementById('show-all').click(); \
             await new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r))); \
             return document.querySelectorAll('tr[data-service]').length === 1001 ? performance.now() - t : -1; })()",
        )
        .await
        .as_f64()
        .unwrap_or(-1.0);
    assert!(all >= 0.0, "show all did not show them all");
    figure("services page, show all 1,001 rows", all, "ms");

    register(
        &r,
        vec![instance("svc-new-2", "svc-new-2-0", "eu-west-1a", "1.0.0")],
    )
    .await;
    let registered = Instant::now();
    b.wait_for(
        r#"document.querySelector('tr[data-service="svc-new-2"]') !== null"#,
        Duration::from_secs(10),
    )
    .await;
    figure(
        "with all shown, a new service's registration shown after",
        registered.elapsed().as_secs_f64() * 1e3,
        "ms",
    );
    let heap = b
        .eval("performance.memory ? performance.memory.usedJSHeapSize : 0")
        .await
        .as_f64()
        .unwrap_or_default();
    figure("page's JavaScript heap", heap / 1e6, "MB");

    let opened = Instant::now();
    b.goto(&format!("http://{}/ui/#/services/svc-0500", r.http))
        .await;
    b.wait_for(
        "document.querySelectorAll('tr[data-instance]').length === 11 && document.getElementById('history').querySelector('tbody') !== null",
        Duration::from_secs(10),
    )
    .await;
    figure(
        "a service page (11 instances, its history) shown after",
        opened.elapsed().as_secs_f64() * 1e3,
        "ms",
    );
    drop(b);
    stop(r).await;
}

/// A registry in its warm-up window says so on every page, and stops
/// saying so when the window ends, without a reload.
#[tokio::test]
async fn the_warm_up_shows_as_a_banner_until_it_ends() {
    let r = start(switchyard_registry::Config {
        warm_up: Duration::from_secs(30),
        ..with_tokens()
    })
    .await;
    register(
        &r,
        vec![instance("orders", "orders-1", "eu-west-1a", "1.4.2")],
    )
    .await;
    let mut b = Browser::launch().await;
    b.goto(&format!("http://{}/ui/", r.http)).await;
    b.wait_for(
        "document.getElementById('banners').innerText.includes('Warming up')",
        Duration::from_secs(5),
    )
    .await;
    screenshot(&mut b, "dashboard-warm-up.png").await;
    // The window ends on the registry's clock; the next message says so.
    r.advance(Duration::from_secs(31)).await;
    b.wait_for(
        "document.getElementById('banners').innerText === ''",
        Duration::from_secs(5),
    )
    .await;
    drop(b);
    stop(r).await;
}
