//! The admin HTTP listener: `/healthz`, `/readyz` and Prometheus `/metrics`.
//!
//! Each binary merges its own routes (JSON API, admin pages) into
//! [`router`]'s and serves the result with [`serve`].

use std::{future::Future, sync::OnceLock};

use axum::{Json, Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde_json::json;
use tokio::net::TcpListener;

use crate::readiness::Readiness;

/// What the admin routes read.
#[derive(Debug, Clone)]
struct AdminState {
    readiness: Readiness,
    metrics: PrometheusHandle,
}

/// Installs the process-wide Prometheus recorder once and returns its handle.
///
/// The `metrics` facade has one global recorder; in-process tests that run
/// several servers share it.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder was installed first; then our
            // handle renders nothing, which tests would show at once.
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed");
            }
            handle
        })
        .clone()
}

/// `/healthz`, `/readyz` and `/metrics`.
pub fn router(readiness: Readiness) -> Router {
    let state = AdminState {
        readiness,
        metrics: metrics_handle(),
    };
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(prometheus))
        .with_state(state)
}

/// Serves `router` on `listener` until `shutdown` completes. Handlers can
/// read the caller's address (`ConnectInfo<SocketAddr>`): without tokens,
/// only loopback callers may change anything ([`crate::auth::Tokens::require_from`]).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

async fn healthz() -> impl IntoResponse {
    Json(json!({ "status": "ok" }))
}

async fn readyz(State(state): State<AdminState>) -> impl IntoResponse {
    let ready = state.readiness.is_ready();
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({ "ready": ready, "waiting_for": state.readiness.pending() });
    (code, Json(body))
}

async fn prometheus(State(state): State<AdminState>) -> impl IntoResponse {
    (
        [("content-type", "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use http_body_util::BodyExt;
    use hyper::Request;
    use tower::ServiceExt;

    async fn get_path(router: Router, path: &str) -> (StatusCode, String) {
        let req = Request::get(path).body(Body::empty()).expect("request");
        let res = router.oneshot(req).await.expect("infallible");
        let status = res.status();
        let body = res.into_body().collect().await.expect("body").to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn readyz_reports_waiting_for_until_ready() {
        let readiness = Readiness::waiting_for(["registry"]);
        let app = router(readiness.clone());
        let (code, body) = get_path(app.clone(), "/readyz").await;
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("\"waiting_for\":[\"registry\"]"), "{body}");
        readiness.done("registry");
        let (code, body) = get_path(app.clone(), "/readyz").await;
        assert_eq!(code, StatusCode::OK);
        assert!(body.contains("\"waiting_for\":[]"), "{body}");
        let (code, _) = get_path(app, "/healthz").await;
        assert_eq!(code, StatusCode::OK);
    }

    #[tokio::test]
    async fn metrics_renders_recorded_counters() {
        let app = router(Readiness::default());
        metrics::counter!("switchyard_admin_test_total").increment(3);
        let (code, body) = get_path(app, "/metrics").await;
        assert_eq!(code, StatusCode::OK);
        assert!(body.contains("switchyard_admin_test_total 3"), "{body}");
    }
}
