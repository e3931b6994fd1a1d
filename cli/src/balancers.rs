//! The balancers' view of a service, over their gRPC API: each balancer
//! the registry lists (service `switchyard-balancer`) is asked for its
//! stats of the service (assignment, subscribers, reported load).

use serde_json::{Value, json};
use switchyard_client::{connect::Client, pb};
use switchyard_proto::balancer::v1 as bpb;
use tonic::transport::Endpoint;

use crate::{Failure, Global, render::state_name, table};

/// What one balancer said, or why it could not be asked.
pub(crate) struct View {
    /// Its instance id in the registry.
    pub id: String,
    /// Where it was dialled.
    pub address: String,
    /// Its stats of the service (`None`: it does not know the service).
    pub stats: Result<Option<bpb::ServiceStats>, String>,
}

/// Asks every balancer the registry lists about `service`.
pub(crate) async fn views(c: &mut Client, g: &Global, service: &str) -> Result<Vec<View>, Failure> {
    let listed = c
        .get_service(pb::GetServiceRequest {
            service: "switchyard-balancer".into(),
        })
        .await?
        .into_inner();
    let tls = g.client_tls()?;
    let mut views = Vec::new();
    for i in listed.instances {
        let Some(spec) = i.spec else { continue };
        let scheme = if tls.is_some() { "https" } else { "http" };
        let stats = ask(
            &format!("{scheme}://{}", spec.address),
            tls.as_ref(),
            g,
            service,
        )
        .await;
        views.push(View {
            id: spec.instance_id,
            address: spec.address,
            stats,
        });
    }
    Ok(views)
}

async fn ask(
    url: &str,
    tls: Option<&switchyard_tls::ClientTls>,
    g: &Global,
    service: &str,
) -> Result<Option<bpb::ServiceStats>, String> {
    let endpoint = Endpoint::from_shared(url.to_string())
        .map_err(|e| e.to_string())?
        .connect_timeout(g.timeout())
        .timeout(g.timeout());
    let expect = Some(switchyard_tls::Identity::Balancer);
    let channel = switchyard_tls::channel(endpoint, tls, expect)
        .await
        .map_err(|e| format!("cannot reach it: {e}"))?;
    let got = bpb::balancer_client::BalancerClient::new(channel)
        .get_stats(bpb::GetStatsRequest {
            service: service.to_string(),
        })
        .await
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?
        .into_inner();
    Ok(got
        .services
        .into_iter()
        .find(|s| s.assignment.as_ref().is_some_and(|a| a.service == service)))
}

/// The views as JSON.
pub(crate) fn json(views: &[View]) -> Value {
    let list: Vec<Value> = views
        .iter()
        .map(|v| {
            let mut o = json!({ "balancer": v.id, "address": v.address });
            match &v.stats {
                Ok(Some(s)) => o["stats"] = stats_json(s),
                Ok(None) => o["stats"] = Value::Null,
                Err(e) => o["error"] = json!(e),
            }
            o
        })
        .collect();
    Value::Array(list)
}

fn stats_json(s: &bpb::ServiceStats) -> Value {
    let a = s.assignment.clone().unwrap_or_default();
    let endpoints: Vec<Value> = a
        .endpoints
        .iter()
        .map(|e| {
            json!({
                "instance_id": e.instance_id, "address": e.address, "tls": e.tls,
                "state": state_name(e.state), "weight": e.weight, "effective_weight": e.effective_weight,
                "ejected_seconds": e.ejection.as_ref().and_then(|x| x.remaining).map(|d| d.seconds as f64 + f64::from(d.nanos) / 1e9),
                "times_ejected": e.ejection.as_ref().map_or(0, |x| x.times_ejected),
                "expired_held": e.expired_held,
            })
        })
        .collect();
    json!({
        "authoritative": s.authoritative, "subscribers": s.subscribers,
        "requests": s.requests, "failures": s.failures, "panic": a.panic,
        "version": a.version, "endpoints": endpoints,
    })
}

/// The views as tables, one per balancer.
pub(crate) fn print(views: &[View]) {
    for v in views {
        match &v.stats {
            Err(e) => println!("\nbalancer {} ({}): {e}", v.id, v.address),
            Ok(None) => println!(
                "\nbalancer {} ({}): does not follow this service",
                v.id, v.address
            ),
            Ok(Some(s)) => {
                let a = s.assignment.clone().unwrap_or_default();
                println!(
                    "\nbalancer {} ({}): {} subscribers, {} requests and {} failures reported last interval{}",
                    v.id,
                    v.address,
                    s.subscribers,
                    s.requests,
                    s.failures,
                    if a.panic {
                        ", PANIC (too few healthy: all used)"
                    } else {
                        ""
                    }
                );
                let rows: Vec<Vec<String>> = a
                    .endpoints
                    .iter()
                    .map(|e| {
                        let ejected = e.ejection.as_ref().map_or("-".into(), |x| {
                            let left = x.remaining.map_or(0, |d| d.seconds);
                            format!("{left}s left ({} times)", x.times_ejected)
                        });
                        vec![
                            e.instance_id.clone(),
                            e.address.clone(),
                            state_name(e.state),
                            e.weight.to_string(),
                            e.effective_weight.to_string(),
                            ejected,
                        ]
                    })
                    .collect();
                table::print(
                    &[
                        "INSTANCE",
                        "ADDRESS",
                        "STATE",
                        "WEIGHT",
                        "EFFECTIVE",
                        "EJECTED",
                    ],
                    &rows,
                );
            }
        }
    }
}
