//! `/api/services` on the admin port: each service's policy, endpoints,
//! effective weights, ejections with reason and time left, and reporters.

use std::sync::Arc;

use axum::{Json, Router, extract::State, routing::get};
use serde_json::{Value, json};
use switchyard_proto::{balancer::v1 as pb, registry::v1 as reg};

use crate::state::Balancer;

/// The admin routes, to merge with the runtime's.
pub fn router(balancer: Arc<Balancer>) -> Router {
    Router::new()
        .route("/api/services", get(services))
        .with_state(balancer)
}

fn endpoint(e: &pb::Endpoint) -> Value {
    let state = reg::State::try_from(e.state)
        .map(|s| s.as_str_name())
        .unwrap_or("?");
    let health = reg::Health::try_from(e.health)
        .map(|h| h.as_str_name())
        .unwrap_or("?");
    let ejection = e.ejection.as_ref().map(|x| {
        let reason = pb::EjectionReason::try_from(x.reason)
            .map(|r| r.as_str_name())
            .unwrap_or("?");
        let left = x
            .remaining
            .map_or(0.0, |d| d.seconds as f64 + f64::from(d.nanos) / 1e9);
        json!({ "reason": reason, "remaining_seconds": left, "times_ejected": x.times_ejected })
    });
    json!({
        "instance_id": e.instance_id,
        "address": e.address,
        "zone": e.zone,
        "state": state,
        "health": health,
        "expired_held": e.expired_held,
        "weight": e.weight,
        "effective_weight": e.effective_weight,
        "ejection": ejection,
    })
}

async fn services(State(balancer): State<Arc<Balancer>>) -> Json<Value> {
    let (services, reporters) = balancer.stats(None);
    let services: Vec<Value> = services
        .iter()
        .map(|s| {
            let a = s.assignment.clone().unwrap_or_default();
            let policy = a
                .policy
                .as_ref()
                .and_then(|p| pb::Policy::try_from(p.policy).ok())
                .map(|p| {
                    p.as_str_name()
                        .trim_start_matches("POLICY_")
                        .to_ascii_lowercase()
                });
            json!({
                "service": a.service,
                "policy": policy,
                "authoritative": s.authoritative,
                "panic": a.panic,
                "version": a.version,
                "subscribers": s.subscribers,
                "requests": s.requests,
                "failures": s.failures,
                "endpoints": a.endpoints.iter().map(endpoint).collect::<Vec<_>>(),
            })
        })
        .collect();
    let reporters: Vec<Value> = reporters
        .iter()
        .map(|(id, zone, age)| json!({ "reporter_id": id, "zone": zone, "last_report_seconds_ago": age.as_secs_f64() }))
        .collect();
    Json(json!({ "balancer_id": balancer.id(), "services": services, "reporters": reporters }))
}
