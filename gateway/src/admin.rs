//! The gateway's admin API: `/api/routes`, `/api/services`, `POST /api/reload`,
//! and the dashboard's endpoint views (`/ui/`, fed by `/api/events`).

use std::{
    convert::Infallible,
    net::SocketAddr,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{
    Json, Router,
    extract::{ConnectInfo, Query, State, rejection::QueryRejection},
    http::{HeaderMap, StatusCode},
    response::sse::{Event as SseEvent, KeepAlive, Sse},
    routing::{get, post},
};
use futures_util::Stream;
use serde::Deserialize;
use serde_json::{Value, json};
use switchyard_runtime::auth::{Role, Tokens};
use tokio_util::sync::CancellationToken;

use crate::app::Gateway;

/// How often the dashboard's endpoint figures are sampled: in flight and
/// EWMA change with every request, so they are read, not pushed per change.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
struct Admin {
    gw: Arc<Gateway>,
    routes: PathBuf,
    tokens: Arc<Tokens>,
    stop: CancellationToken,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventsQuery {
    #[serde(default)]
    service: Option<String>,
}

/// The admin routes, to merge with the runtime's; streams end when `stop`
/// is cancelled.
pub fn router(
    gw: Arc<Gateway>,
    routes: PathBuf,
    tokens: Arc<Tokens>,
    stop: CancellationToken,
) -> Router {
    Router::new()
        .route("/api/routes", get(list_routes))
        .route("/api/services", get(services))
        .route("/api/events", get(events))
        .route("/api/reload", post(reload))
        .with_state(Admin {
            gw,
            routes,
            tokens,
            stop,
        })
        .merge(switchyard_runtime::ui::router("gateway"))
}

async fn list_routes(State(a): State<Admin>) -> Json<Value> {
    let table = a.gw.routes.load();
    let routes: Vec<Value> = table
        .routes
        .iter()
        .map(|r| {
            let mut spec = serde_json::to_value(&r.spec).unwrap_or(Value::Null);
            // Never show credentials.
            if let Some(o) = spec.as_object_mut() {
                for k in ["api_keys", "bearer_tokens"] {
                    if let Some(v) = o.get_mut(k) {
                        let n = v.as_array().map_or(0, Vec::len);
                        *v = json!(format!("{n} configured"));
                    }
                }
                o.insert(
                    "in_flight".into(),
                    json!(r.state.shedder.as_ref().map(|s| s.in_flight())),
                );
            }
            spec
        })
        .collect();
    Json(json!({
        "routes": routes,
        "default_rule": table.default_rule,
        "default_rule_prefix": table.default_rule_prefix,
    }))
}

async fn services(State(a): State<Admin>) -> Json<Value> {
    Json(describe(&a.gw, None))
}

/// Every service the gateway follows (or the one named), with its
/// endpoints and their figures.
fn describe(gw: &Gateway, only: Option<&str>) -> Value {
    let now = Instant::now();
    let mut services: Vec<Value> = gw
        .services()
        .iter()
        .filter(|s| only.is_none_or(|name| *s.name == *name))
        .map(|s| s.describe(now))
        .collect();
    services.sort_by(|x, y| x["service"].as_str().cmp(&y["service"].as_str()));
    json!({ "services": services })
}

/// `GET /api/events[?service=NAME]`: server-sent events, a `services`
/// message like `/api/services` each second.
async fn events(
    State(a): State<Admin>,
    query: Result<Query<EventsQuery>, QueryRejection>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, (StatusCode, Json<Value>)> {
    let Query(q) = query.map_err(|e| {
        let error = format!("query: {}", e.body_text());
        (StatusCode::BAD_REQUEST, Json(json!({ "error": error })))
    })?;
    let ticks = tokio::time::interval(SAMPLE_EVERY);
    let stream = futures_util::stream::unfold((a, ticks), move |(a, mut ticks)| {
        let only = q.service.clone();
        async move {
            tokio::select! {
                () = a.stop.cancelled() => return None,
                _ = ticks.tick() => {}
            }
            let body = describe(&a.gw, only.as_deref());
            let event = SseEvent::default().event("services").data(body.to_string());
            Some((Ok(event), (a, ticks)))
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

async fn reload(
    State(a): State<Admin>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> (StatusCode, Json<Value>) {
    let token = headers.get("authorization").and_then(|v| v.to_str().ok());
    if let Err(e) = a.tokens.require_from(token, Role::Operator, peer.ip()) {
        let code = match e {
            switchyard_runtime::auth::AuthError::Unauthenticated => StatusCode::UNAUTHORIZED,
            switchyard_runtime::auth::AuthError::PermissionDenied(_) => StatusCode::FORBIDDEN,
        };
        return (code, Json(json!({ "error": e.to_string() })));
    }
    match crate::reload::reload(&a.gw, &a.routes) {
        Ok(n) => (StatusCode::OK, Json(json!({ "routes": n }))),
        Err(e) => (
            StatusCode::BAD_REQUEST,
            Json(json!({ "error": e.to_string() })),
        ),
    }
}
