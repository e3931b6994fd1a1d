//! The gateway's endpoint views of the dashboard (`/ui/` on its admin
//! port) in a real browser (headless Chromium): the services it follows,
//! and a service's endpoints with their balancing figures, which follow
//! the traffic without a reload.

#[path = "../../registry/tests/support/browser.rs"]
mod browser;
mod support;

use std::{sync::atomic::Ordering, time::Duration};

use browser::Browser;
use serde_json::json;
use support::{Backend, Stack, get, spec};
use switchyard_proto::registry::v1 as reg;

const ROUTES: &str = r#"
[[route]]
name = "hello"
service = "hello"
path_prefix = "/hello/"
strip_prefix = true
timeout = "10s"
per_try_timeout = "10s"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_endpoint_view_shows_figures_that_follow_the_traffic() {
    let fast = Backend::start("hello-1").await;
    let slow = Backend::start("hello-2").await;
    let s = Stack::start(
        ROUTES,
        vec![
            spec("hello", "hello-1", fast.addr, reg::Protocol::Http1),
            spec("hello", "hello-2", slow.addr, reg::Protocol::Http1),
        ],
    )
    .await;
    let url = s.gateway.url();
    let (code, body) = get(&format!("http://{}/api/events?nope=1", s.gateway.admin)).await;
    assert_eq!(code, 400, "{body}");
    assert!(
        body.contains("\"error\"") && body.contains("nope"),
        "{body}"
    );
    for _ in 0..20 {
        assert_eq!(get(&format!("{url}/hello/x")).await.0, 200);
    }

    let mut b = Browser::launch().await;
    b.goto(&format!("http://{}/ui/", s.gateway.admin)).await;
    assert_eq!(
        b.eval("document.body.dataset.server").await,
        json!("gateway")
    );
    b.wait_for(
        "document.querySelector('a[href=\"#/services/hello\"]') !== null",
        Duration::from_secs(5),
    )
    .await;
    b.click("a[href=\"#/services/hello\"]").await;
    b.wait_for(
        "document.querySelectorAll('#table tbody tr').length === 2",
        Duration::from_secs(5),
    )
    .await;

    // Requests held by a slow backend show as in flight, live.
    slow.delay_ms.store(4_000, Ordering::Relaxed);
    fast.delay_ms.store(4_000, Ordering::Relaxed);
    let held: Vec<_> = (0..4)
        .map(|_| {
            let url = format!("{url}/hello/slow");
            tokio::spawn(async move { get(&url).await })
        })
        .collect();
    b.wait_for(
        "[...document.querySelectorAll('#table tbody tr')].map(r => Number(r.children[3].textContent)).reduce((a, n) => a + n, 0) === 4",
        Duration::from_secs(3),
    )
    .await;
    if let Ok(dir) = std::env::var("SWITCHYARD_SCREENSHOTS") {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(dir);
        b.screenshot(&dir.join("dashboard-gateway.png")).await;
    }
    for h in held {
        assert_eq!(h.await.expect("request").0, 200);
    }
    // And back to none once they are answered.
    b.wait_for(
        "[...document.querySelectorAll('#table tbody tr')].every(r => r.children[3].textContent === '0')",
        Duration::from_secs(3),
    )
    .await;
}
