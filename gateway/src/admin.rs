//! The gateway's admin API: `/api/routes`, `/api/services`, `POST /api/reload`.

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Instant};

use axum::{
    Json, Router,
    extract::{ConnectInfo, State},
    http::{HeaderMap, StatusCode},
    routing::{get, post},
};
use serde_json::{Value, json};
use switchyard_runtime::auth::{Role, Tokens};

use crate::app::Gateway;

#[derive(Debug, Clone)]
struct Admin {
    gw: Arc<Gateway>,
    routes: PathBuf,
    tokens: Arc<Tokens>,
}

/// The admin routes, to merge with the runtime's.
pub fn router(gw: Arc<Gateway>, routes: PathBuf, tokens: Arc<Tokens>) -> Router {
    Router::new()
        .route("/api/routes", get(list_routes))
        .route("/api/services", get(services))
        .route("/api/reload", post(reload))
        .with_state(Admin { gw, routes, tokens })
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
    let now = Instant::now();
    let mut services: Vec<Value> = a.gw.services().iter().map(|s| s.describe(now)).collect();
    services.sort_by(|x, y| x["service"].as_str().cmp(&y["service"].as_str()));
    Json(json!({ "services": services }))
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
