//! The HTTP/JSON API on the admin port, for clients that do not speak gRPC.
//! Same validation and auth as gRPC; errors are 4xx with `{"error": "..."}`.

use std::{collections::BTreeMap, net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    Json, Router,
    body::Bytes,
    extract::{ConnectInfo, Path, State as AxumState},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::json;

use switchyard_runtime::auth::{Role, Tokens};

use crate::{
    config::Limits,
    convert,
    error::Error,
    model::{Instance, Key, OverrideRequest, Protocol, State},
    state::{Registry, Renewal},
    validate,
};

#[derive(Debug, Clone)]
struct Api {
    registry: Arc<Registry>,
    tokens: Arc<Tokens>,
    limits: Limits,
}

/// An error as the JSON API shows it.
#[derive(Debug)]
pub(crate) struct ApiError(pub(crate) StatusCode, pub(crate) String);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RegisterBody {
    /// `service_name` as the seed's Flask sketch spelled it.
    #[serde(alias = "service_name")]
    service: String,
    instance_id: String,
    address: String,
    /// HTTP/1.1 unless said.
    #[serde(default)]
    protocol: Protocol,
    #[serde(default)]
    ttl_seconds: u32,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    weight: u32,
    #[serde(default)]
    zone: String,
    #[serde(default)]
    version: String,
    #[serde(default)]
    state: Option<State>,
    #[serde(default)]
    lease_id: Option<u64>,
    /// It serves TLS (the gateway dials it over TLS).
    #[serde(default)]
    tls: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HeartbeatBody {
    lease_id: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeregisterBody {
    /// `service_name` as the seed's Flask sketch spelled it.
    #[serde(alias = "service_name")]
    service: String,
    /// Absent: every instance of the service (operators only).
    #[serde(default)]
    instance_id: Option<String>,
    #[serde(default)]
    lease_id: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SetStateBody {
    #[serde(default)]
    state: Option<State>,
    #[serde(default)]
    weight: Option<u32>,
    #[serde(default)]
    clear: bool,
    /// Why, kept with the override.
    #[serde(default)]
    reason: String,
    /// Dropped by the registry after this many seconds (1 to 30 days).
    #[serde(default)]
    expires_in_seconds: Option<u64>,
}

/// An instance in JSON.
#[derive(Debug, Serialize)]
pub(crate) struct InstanceJson<'a> {
    service: &'a str,
    instance_id: &'a str,
    address: &'a str,
    protocol: Protocol,
    state: State,
    weight: u32,
    health: crate::model::Health,
    #[serde(skip_serializing_if = "str::is_empty")]
    health_detail: &'a str,
    /// Seconds since the Unix epoch of the check's last change.
    #[serde(skip_serializing_if = "Option::is_none")]
    health_changed_at: Option<u64>,
    expired_held: bool,
    zone: &'a str,
    version: &'a str,
    tags: &'a [String],
    metadata: &'a BTreeMap<String, String>,
    /// Operators only: a lease id is a bearer credential.
    #[serde(skip_serializing_if = "Option::is_none")]
    lease_id: Option<u64>,
    mod_revision: u64,
    overridden: bool,
    /// The operator's override, when there is one.
    #[serde(rename = "override", skip_serializing_if = "Option::is_none")]
    override_: Option<OverrideJson<'a>>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    tls: bool,
}

/// An operator's override in JSON.
#[derive(Debug, Serialize)]
struct OverrideJson<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    state: Option<State>,
    #[serde(skip_serializing_if = "Option::is_none")]
    weight: Option<u32>,
    #[serde(skip_serializing_if = "str::is_empty")]
    reason: &'a str,
    /// Seconds since the Unix epoch.
    updated_at: u64,
    /// Seconds since the Unix epoch; absent: kept until cleared.
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<u64>,
}

// === impl ApiError ===

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let code = match &e {
            Error::Invalid { .. } => StatusCode::BAD_REQUEST,
            Error::NotFound { .. } => StatusCode::NOT_FOUND,
            Error::Held { .. } => StatusCode::CONFLICT,
            Error::Unauthenticated => StatusCode::UNAUTHORIZED,
            Error::PermissionDenied(_) => StatusCode::FORBIDDEN,
            Error::Storage(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Error::ShuttingDown | Error::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        Self(code, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

/// The JSON API routes, to merge with the admin router.
pub fn router(registry: Arc<Registry>, tokens: Arc<Tokens>, limits: Limits) -> Router {
    let api = Api {
        registry,
        tokens,
        limits,
    };
    Router::new()
        .route("/api/register", post(register))
        .route("/api/heartbeat", post(heartbeat))
        // DELETE as the seed's sketch called it; POST as before.
        .route("/api/deregister", post(deregister).delete(deregister))
        .route("/api/services", get(list))
        .route("/api/services/{name}", get(service))
        .route(
            "/api/services/{name}/instances/{id}",
            axum::routing::delete(delete_instance).put(set_state),
        )
        .with_state(api)
}

fn parse<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut *de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let message = if path == "." || path == "?" {
            format!("body: {inner}")
        } else {
            format!("{path}: {inner}")
        };
        ApiError(StatusCode::BAD_REQUEST, message)
    })?;
    // `{...}xx` is not a JSON body: nothing but white space may follow.
    de.end()
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("body: {e}")))?;
    Ok(value)
}

/// One service's counts, as the list and the dashboard's stream show them.
pub(crate) fn summary_json(s: &crate::state::Summary) -> serde_json::Value {
    json!({
        "service": s.service,
        "instances": s.instances,
        "by_state": s.by_state,
        "unhealthy": s.unhealthy,
        "expired_held": s.expired_held,
        "mod_revision": s.mod_revision,
    })
}

/// The `authorization` header's value.
pub(crate) fn auth_header(headers: &HeaderMap) -> Option<&str> {
    headers.get("authorization").and_then(|v| v.to_str().ok())
}

fn auth(api: &Api, headers: &HeaderMap, role: Role) -> Result<Role, ApiError> {
    Ok(api
        .tokens
        .require(auth_header(headers), role)
        .map_err(Error::from)?)
}

/// An override's JSON body, validated.
pub(crate) fn override_body(body: &Bytes) -> Result<OverrideRequest, ApiError> {
    let b: SetStateBody = parse(body)?;
    Ok(validate::override_request(OverrideRequest {
        state: b.state,
        weight: b.weight,
        clear: b.clear,
        reason: b.reason,
        expires_in: b
            .expires_in_seconds
            .map(|s| Duration::from_secs(s.min(u64::from(u32::MAX)))),
    })?)
}

pub(crate) fn instance_json(i: &Instance, role: Role) -> InstanceJson<'_> {
    InstanceJson {
        service: &i.spec.service,
        instance_id: &i.spec.instance_id,
        address: &i.spec.address,
        protocol: i.spec.protocol,
        state: i.state(),
        weight: i.weight(),
        health: i.health,
        health_detail: &i.health_detail,
        health_changed_at: i.health_changed_at.map(|t| {
            t.duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
        }),
        expired_held: i.expired_held,
        zone: &i.spec.zone,
        version: &i.spec.version,
        tags: &i.spec.tags,
        metadata: &i.spec.metadata,
        lease_id: (role == Role::Operator).then_some(i.lease_id),
        mod_revision: i.mod_revision,
        overridden: i.overrides.is_some(),
        override_: i.overrides.as_ref().map(|o| {
            let secs = |t: std::time::SystemTime| {
                t.duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs())
            };
            OverrideJson {
                state: o.state,
                weight: o.weight,
                reason: &o.reason,
                updated_at: secs(o.updated_at),
                expires_at: o.expires_at.map(secs),
            }
        }),
        tls: i.spec.tls,
    }
}

async fn register(
    AxumState(api): AxumState<Api>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let role = auth(&api, &headers, Role::Register)?;
    let b: RegisterBody = parse(&body)?;
    let ttl = validate::ttl("ttl_seconds", b.ttl_seconds, &api.limits)?;
    let proto_protocol = match b.protocol {
        Protocol::Http1 => switchyard_proto::registry::v1::Protocol::Http1,
        Protocol::H2c => switchyard_proto::registry::v1::Protocol::H2c,
        Protocol::Grpc => switchyard_proto::registry::v1::Protocol::Grpc,
    };
    // One validation path for both edges: go through the gRPC conversion.
    let spec = convert::spec_from_pb(
        "body",
        switchyard_proto::registry::v1::InstanceSpec {
            service: b.service,
            instance_id: b.instance_id,
            address: b.address,
            protocol: proto_protocol as i32,
            metadata: b.metadata.into_iter().collect(),
            tags: b.tags,
            weight: b.weight,
            zone: b.zone,
            version: b.version,
            state: b.state.map_or(0, |s| convert::state_to_pb(s) as i32),
            health_check: None,
            tls: b.tls,
        },
    )
    .map_err(strip_body_prefix)?;
    let done = api
        .registry
        .register(
            b.lease_id.unwrap_or(0),
            ttl,
            vec![spec],
            role == Role::Operator,
        )
        .await?;
    Ok(Json(json!({
        "lease_id": done.lease_id,
        "ttl_seconds": done.ttl_secs,
        "revision": done.position.revision,
    })))
}

/// JSON fields are top-level: report `address`, not `body.address`.
fn strip_body_prefix(e: Error) -> Error {
    match e {
        Error::Invalid { field, reason } => Error::Invalid {
            field: field
                .strip_prefix("body.")
                .map(str::to_string)
                .unwrap_or(field),
            reason,
        },
        other => other,
    }
}

async fn heartbeat(
    AxumState(api): AxumState<Api>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    auth(&api, &headers, Role::Register)?;
    let b: HeartbeatBody = parse(&body)?;
    match api.registry.keep_alive(b.lease_id).await? {
        Renewal::Renewed(ttl) => Ok(Json(json!({ "lease_id": b.lease_id, "ttl_seconds": ttl }))),
        Renewal::Unknown => Err(Error::NotFound {
            field: "lease_id",
            what: format!("lease {}", b.lease_id),
        }
        .into()),
    }
}

fn owner_for(role: Role, lease_id: Option<u64>) -> Result<Option<u64>, ApiError> {
    match (role, lease_id) {
        (Role::Operator, l) => Ok(l),
        (_, Some(l)) => Ok(Some(l)),
        (_, None) => Err(Error::Invalid {
            field: "lease_id".into(),
            reason: "a register token must name the lease that owns the instance".into(),
        }
        .into()),
    }
}

async fn deregister(
    AxumState(api): AxumState<Api>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let role = auth(&api, &headers, Role::Register)?;
    let b: DeregisterBody = parse(&body)?;
    let Some(instance_id) = b.instance_id else {
        // The seed's `{"service_name"}`: the whole service, for operators.
        validate::service("service", &b.service)?;
        if role != Role::Operator {
            return Err(Error::Invalid {
                field: "instance_id".into(),
                reason: "required; only an operator token may deregister a whole service".into(),
            }
            .into());
        }
        let (removed, position) = api.registry.deregister_service(&b.service).await?;
        tracing::info!(service = %b.service, removed, "operator deregistered a whole service");
        return Ok(Json(
            json!({ "removed": removed, "revision": position.revision }),
        ));
    };
    let key = convert::key(&b.service, &instance_id)?;
    let owner = owner_for(role, b.lease_id)?;
    let position = api.registry.deregister(&key, owner).await?;
    Ok(Json(json!({ "removed": 1, "revision": position.revision })))
}

async fn delete_instance(
    AxumState(api): AxumState<Api>,
    headers: HeaderMap,
    Path((name, id)): Path<(String, String)>,
) -> Result<impl IntoResponse, ApiError> {
    let role = auth(&api, &headers, Role::Register)?;
    let key = convert::key(&name, &id)?;
    let lease = headers
        .get("x-lease-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let owner = owner_for(role, lease)?;
    let position = api.registry.deregister(&key, owner).await?;
    Ok(Json(json!({ "revision": position.revision })))
}

async fn set_state(
    AxumState(api): AxumState<Api>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path((name, id)): Path<(String, String)>,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    // An operator's change: without tokens, from loopback only.
    api.tokens
        .require_from(auth_header(&headers), Role::Operator, peer.ip())
        .map_err(Error::from)?;
    let key: Key = convert::key(&name, &id)?;
    let request = override_body(&body)?;
    let (instance, _) = api.registry.set_state(&key, &request).await?;
    tracing::info!(instance = %key, state = ?request.state, weight = ?request.weight, clear = request.clear, reason = %request.reason, expires_in = ?request.expires_in, "operator override");
    Ok(Json(
        serde_json::to_value(instance_json(&instance, Role::Operator)).unwrap_or_default(),
    ))
}

async fn list(
    AxumState(api): AxumState<Api>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    auth(&api, &headers, Role::Reader)?;
    let l = api.registry.list();
    let services: Vec<_> = l.services.iter().map(summary_json).collect();
    let brake = match &l.brake.engaged {
        Some((at, until, reason)) => json!({
            "engaged": true,
            "engaged_at": humantime_rfc3339(*at),
            "releases_at": humantime_rfc3339(*until),
            "reason": reason,
            "held_leases": l.brake.held_leases,
        }),
        None => json!({ "engaged": false, "held_leases": 0 }),
    };
    Ok(Json(json!({
        "services": services,
        "brake": brake,
        "warming_up": l.warming_up,
        "authoritative": l.authoritative,
        "leases": l.leases,
        "epoch": l.position.epoch.as_ref(),
        "revision": l.position.revision,
    })))
}

fn humantime_rfc3339(t: std::time::SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

async fn service(
    AxumState(api): AxumState<Api>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let role = auth(&api, &headers, Role::Reader)?;
    validate::service("service", &name)?;
    let view = api.registry.service(&name);
    let instances: Vec<_> = view
        .instances
        .iter()
        .map(|i| instance_json(i, role))
        .collect();
    Ok(Json(json!({
        "service": name,
        "instances": instances,
        "authoritative": view.authoritative,
        "epoch": view.position.epoch.as_ref(),
        "revision": view.position.revision,
    })))
}
