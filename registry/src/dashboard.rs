//! What the dashboard (`/ui/`) reads and does beside the JSON API: a live
//! stream of changes as server-sent events, fed by the same Watch as gRPC
//! watchers (no polling), a service's recent history, and the operator's
//! override as a POST that always needs the operator token.
//!
//! The stream is read by the page with `fetch` (so the token travels in the
//! `Authorization` header, never in a URL) and works with a plain
//! `EventSource` or `curl -N` too: every message's `id` is its position,
//! and a reconnect with `Last-Event-ID` (or `?since=`) resumes from it.

use std::{collections::BTreeSet, convert::Infallible, net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    Json, Router,
    body::Bytes,
    extract::{ConnectInfo, Path, Query, State as AxumState, rejection::QueryRejection},
    http::{HeaderMap, StatusCode, header},
    response::{
        IntoResponse,
        sse::{Event as SseEvent, KeepAlive, Sse},
    },
    routing::{get, post},
};
use futures_util::Stream;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use switchyard_runtime::auth::{Role, Tokens};

use crate::{
    convert,
    error::Error,
    http::{ApiError, auth_header, instance_json, override_body, summary_json},
    model::{Change, DeleteReason, Event, Position},
    state::{Registry, WatchBody, WatchMessage},
    validate, watch,
};

/// Most events `/history` returns.
const HISTORY_LIMIT: usize = 500;

#[derive(Debug, Clone)]
struct Dashboard {
    registry: Arc<Registry>,
    tokens: Arc<Tokens>,
    progress_interval: Duration,
    shutdown: CancellationToken,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventsQuery {
    /// One service's instances; absent: every service's counts.
    #[serde(default)]
    service: Option<String>,
    /// `epoch:revision` to resume from.
    #[serde(default)]
    since: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryQuery {
    #[serde(default)]
    limit: Option<usize>,
}

/// The dashboard's routes (its pages and what they read), to merge with
/// the JSON API.
pub fn router(
    registry: Arc<Registry>,
    tokens: Arc<Tokens>,
    progress_interval: Duration,
    shutdown: CancellationToken,
) -> Router {
    let dashboard = Dashboard {
        registry,
        tokens,
        progress_interval,
        shutdown,
    };
    Router::new()
        .route("/api/events", get(events))
        .route("/api/services/{name}/history", get(history))
        .route(
            "/api/services/{name}/instances/{id}/override",
            post(set_override),
        )
        .with_state(dashboard)
        .merge(switchyard_runtime::ui::router("registry"))
}

/// `GET /api/events[?service=NAME][&since=EPOCH:REV]`: server-sent events.
/// Without `service`: `services` messages with the counts of the services
/// that changed (the first one lists every service, `reset: true`). With
/// it: a `snapshot` of its instances, then `delta` messages. Both send
/// `banner` messages when nothing changed (warm-up, brake, authority).
async fn events(
    AxumState(d): AxumState<Dashboard>,
    headers: HeaderMap,
    query: Result<Query<EventsQuery>, QueryRejection>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let Query(q) = query.map_err(bad_query)?;
    let role = d
        .tokens
        .require(auth_header(&headers), Role::Reader)
        .map_err(Error::from)?;
    if let Some(name) = &q.service {
        validate::service("service", name)?;
    }
    let last_event_id = headers.get("last-event-id").and_then(|v| v.to_str().ok());
    let since = match q.since.as_deref().or(last_event_id) {
        Some(s) => Some(parse_position(s)?),
        None => None,
    };
    let summaries = q.service.is_none();
    // The counts view starts from a listing of its own, not from a
    // snapshot of every instance.
    let (since, listing_first) = match (summaries, since) {
        (true, None) => (Some(d.registry.position()), true),
        (_, since) => (since, false),
    };
    let services = q.service.map(|s| BTreeSet::from([s]));
    let rx = watch::spawn(
        d.registry.clone(),
        services,
        since,
        d.progress_interval,
        d.shutdown.clone(),
    );
    let registry = d.registry.clone();
    let first = listing_first.then(|| listing_event(&registry));
    let rest = futures_util::stream::unfold(rx, move |mut rx| {
        let registry = registry.clone();
        async move {
            let message = rx.recv().await?;
            let event = if summaries {
                summary_event(&registry, message)
            } else {
                instances_event(&registry, message, role)
            };
            Some((Ok(event), rx))
        }
    });
    let stream = futures_util::StreamExt::chain(futures_util::stream::iter(first.map(Ok)), rest);
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// A query string that does not parse, as a JSON 400 naming the field.
fn bad_query(e: QueryRejection) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, format!("query: {}", e.body_text()))
}

fn parse_position(s: &str) -> Result<Position, Error> {
    let bad = || Error::Invalid {
        field: "since".into(),
        reason: format!("{s:?} is not EPOCH:REVISION"),
    };
    let (epoch, revision) = s.rsplit_once(':').ok_or_else(bad)?;
    let revision = revision.parse().map_err(|_| bad())?;
    if epoch.is_empty() {
        return Err(bad());
    }
    Ok(Position {
        epoch: epoch.into(),
        revision,
    })
}

fn banner(registry: &Registry) -> Value {
    let b = registry.banner();
    json!({
        "warming_up": b.warming_up,
        "brake": b.brake,
        "authoritative": b.authoritative,
    })
}

/// An SSE message: `kind`, the position as its id, `body` with the banner
/// and the position added.
fn sse(kind: &str, position: &Position, mut body: Value, registry: &Registry) -> SseEvent {
    if let Some(o) = body.as_object_mut() {
        o.insert("banner".into(), banner(registry));
        o.insert("epoch".into(), json!(&*position.epoch));
        o.insert("revision".into(), json!(position.revision));
    }
    SseEvent::default()
        .event(kind)
        .id(format!("{}:{}", position.epoch, position.revision))
        .data(body.to_string())
}

fn listing_event(registry: &Registry) -> SseEvent {
    let l = registry.list();
    let services: Vec<Value> = l.services.iter().map(summary_json).collect();
    let body = json!({ "reset": true, "services": services, "removed": [] });
    sse("services", &l.position, body, registry)
}

fn summary_event(registry: &Registry, message: WatchMessage) -> SseEvent {
    match message.body {
        WatchBody::Snapshot { .. } => listing_event(registry),
        WatchBody::Progress => sse("banner", &message.position, json!({}), registry),
        WatchBody::Delta(events) => {
            let names: BTreeSet<&str> = events
                .iter()
                .map(|e| e.instance.spec.service.as_str())
                .collect();
            let (mut services, mut removed) = (Vec::new(), Vec::new());
            for (name, summary) in registry.summaries(names) {
                match summary {
                    Some(s) => services.push(summary_json(&s)),
                    None => removed.push(name),
                }
            }
            let body = json!({ "reset": false, "services": services, "removed": removed });
            sse("services", &message.position, body, registry)
        }
    }
}

fn instances_event(registry: &Registry, message: WatchMessage, role: Role) -> SseEvent {
    match message.body {
        WatchBody::Snapshot {
            instances, reset, ..
        } => {
            let instances: Vec<_> = instances.iter().map(|i| instance_json(i, role)).collect();
            let body = json!({ "reset": reset, "instances": instances });
            sse("snapshot", &message.position, body, registry)
        }
        WatchBody::Delta(events) => {
            let events: Vec<Value> = events.iter().map(|e| event_json(e, role)).collect();
            sse(
                "delta",
                &message.position,
                json!({ "events": events }),
                registry,
            )
        }
        WatchBody::Progress => sse("banner", &message.position, json!({}), registry),
    }
}

fn event_json(e: &Event, role: Role) -> Value {
    let change = match e.change {
        Change::Put => "put",
        Change::Delete(DeleteReason::Deregistered) => "deregistered",
        Change::Delete(DeleteReason::Expired) => "expired",
        Change::Delete(DeleteReason::Revoked) => "revoked",
    };
    json!({
        "revision": e.revision,
        "at": e.at.duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64()),
        "change": change,
        "instance": instance_json(&e.instance, role),
    })
}

/// `GET /api/services/{name}/history[?limit=N]`: the changes to one
/// service that this replica still holds, oldest first.
async fn history(
    AxumState(d): AxumState<Dashboard>,
    headers: HeaderMap,
    Path(name): Path<String>,
    query: Result<Query<HistoryQuery>, QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Query(q) = query.map_err(bad_query)?;
    let role = d
        .tokens
        .require(auth_header(&headers), Role::Reader)
        .map_err(Error::from)?;
    validate::service("service", &name)?;
    let limit = q.limit.unwrap_or(HISTORY_LIMIT).clamp(1, HISTORY_LIMIT);
    let position = d.registry.position();
    let events: Vec<Value> = d
        .registry
        .history(&name, limit)
        .iter()
        .map(|e| event_json(e, role))
        .collect();
    Ok(Json(json!({
        "service": name,
        "events": events,
        "epoch": &*position.epoch,
        "revision": position.revision,
    })))
}

/// `POST /api/services/{name}/instances/{id}/override`: the dashboard's
/// drain and weight. Unlike `PUT` on the instance it needs the operator
/// token even from loopback and even when the registry runs without tokens
/// (a page another site opens in the operator's browser can reach loopback,
/// by DNS rebinding too; only the token it cannot know stops it), and a
/// JSON body (a cross-site form cannot send one).
async fn set_override(
    AxumState(d): AxumState<Dashboard>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path((name, id)): Path<(String, String)>,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let header = auth_header(&headers);
    if d.tokens.disabled() {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            "the dashboard's actions need an operator token: start the registry with \
             operator_tokens (SWITCHYARD_OPERATOR_TOKENS)"
                .into(),
        ));
    }
    if header.is_none() {
        return Err(Error::Unauthenticated.into());
    }
    d.tokens
        .require_from(header, Role::Operator, peer.ip())
        .map_err(Error::from)?;
    let json_body = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !json_body {
        return Err(ApiError(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "content-type: must be application/json".into(),
        ));
    }
    let key = convert::key(&name, &id)?;
    let request = override_body(&body)?;
    let (instance, _) = d.registry.set_state(&key, &request).await?;
    tracing::info!(instance = %key, state = ?request.state, weight = ?request.weight, clear = request.clear, reason = %request.reason, expires_in = ?request.expires_in, "operator override from the dashboard");
    Ok(Json(json!(instance_json(&instance, Role::Operator))))
}
