//! The registry's JSON API bodies, through its real router (`http::router`
//! over an in-memory registry): register, heartbeat, deregister and an
//! operator's state change. Checks: no panic, and every answer is a 2xx or
//! a 4xx with a JSON `error` (bad input is the caller's, never a 5xx).
#![no_main]

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::extract::ConnectInfo;
use http::{Method, Request};
use http_body_util::BodyExt;
use libfuzzer_sys::fuzz_target;
use switchyard_registry::{
    brake::BrakeConfig,
    config::Limits,
    http::router,
    state::{CoreConfig, Registry},
    store::MemoryStore,
};
use switchyard_runtime::auth::Tokens;
use tower::ServiceExt;

struct Harness {
    rt: tokio::runtime::Runtime,
    app: axum::Router,
}

fn harness() -> &'static Harness {
    static H: std::sync::OnceLock<Harness> = std::sync::OnceLock::new();
    H.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let core = CoreConfig {
            warm_up: Duration::ZERO,
            history_limit: 1000,
            watch_buffer: 64,
            brake: BrakeConfig {
                min_leases: 10,
                percent: 50,
                window: Duration::from_secs(10),
                max_hold: Duration::from_secs(120),
            },
        };
        let registry = rt
            .block_on(async {
                Registry::new(
                    core,
                    switchyard_runtime::clock::system(),
                    Arc::new(MemoryStore::default()),
                )
            })
            .expect("registry");
        let limits = Limits {
            default_ttl_secs: 10,
            min_ttl_secs: 2,
            max_ttl_secs: 300,
        };
        let tokens = Arc::new(Tokens::new(&["reg".into()], &["op".into()], true));
        Harness {
            rt,
            app: router(registry, tokens, limits),
        }
    })
}

fuzz_target!(|input: &[u8]| {
    let Some((which, body)) = input.split_first() else {
        return;
    };
    let (method, path, token) = match which % 5 {
        0 => (Method::POST, "/api/register", "reg"),
        1 => (Method::POST, "/api/heartbeat", "reg"),
        2 => (Method::POST, "/api/deregister", "reg"),
        3 => (Method::PUT, "/api/services/pay/instances/a-1", "op"),
        _ => (Method::POST, "/api/register", "op"),
    };
    let h = harness();
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {token}"))
        .body(axum::body::Body::from(body.to_vec()))
        .expect("request");
    req.extensions_mut()
        .insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 4000))));
    h.rt.block_on(async {
        let res = h.app.clone().oneshot(req).await.expect("infallible");
        let status = res.status();
        let bytes = res.into_body().collect().await.expect("body").to_bytes();
        assert!(
            status.is_success() || status.is_client_error(),
            "{status}: {bytes:?}"
        );
        if status.is_client_error() && status != 405 && status != 415 {
            let v: serde_json::Value = serde_json::from_slice(&bytes).expect("a JSON error");
            assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()));
        }
    });
});
