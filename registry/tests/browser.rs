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

/// `spec` with a TCP check each second: to a port that listens (healthy)
/// or one that does not (unhealthy).
fn checked(spec: pb::InstanceSpec, address: std::net::SocketAddr) -> pb::InstanceSpec {
    pb::InstanceSpec {
        address: address.to_string(),
        health_check: Some(pb::HealthCheck {
            kind: Some(pb::health_check::Kind::Tcp(pb::TcpHealthCheck {})),
            interval: Some(prost_types::Duration {
                seconds: 1,
                nanos: 0,
            }),
            timeout: Some(prost_types::Duration {
                seconds: 0,
                nanos: 500_000_000,
            }),
            unhealthy_threshold: 1,
            healthy_threshold: 1,
        }),
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
    let (_, body) = http(
        r.http,
        "GET",
        &format!("/api/services/{service}"),
        None,
        None,
    )
    .await;
    body["instances"]
        .as_array()
        .and_then(|a| a.iter().find(|i| i["instance_id"] == id))
        .cloned()
        .unwrap_or_default()
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
