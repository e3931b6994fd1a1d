//! Commands on the gateway, over its admin port's JSON.

use serde_json::Value;

use crate::{Failure, Global, Output, table};

/// GETs `path` from the gateway's admin port, as JSON.
async fn get(g: &Global, path: &str) -> Result<Value, Failure> {
    let url = g.gateway_admin.clone().unwrap_or_default();
    let authority = url
        .strip_prefix("http://")
        .ok_or_else(|| {
            Failure::Invalid(format!("--gateway-admin `{url}` is not an http:// address"))
        })?
        .trim_end_matches('/');
    let addr = tokio::net::lookup_host(authority)
        .await
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| Failure::Invalid(format!("--gateway-admin `{url}`: no such host")))?;
    let body = switchyard_runtime::probe::probe(addr, path, g.timeout())
        .await
        .map_err(|e| Failure::Failed(format!("the gateway's admin at {url}: {e}")))?;
    serde_json::from_str(&body).map_err(|e| {
        Failure::Failed(format!(
            "the gateway's admin at {url} answered {path} with no JSON: {e}"
        ))
    })
}

/// The gateway's view of `service`; `None` when it does not follow it.
pub(crate) async fn service(g: &Global, service: &str) -> Result<Option<Value>, Failure> {
    let all = get(g, "/api/services").await?;
    Ok(all["services"]
        .as_array()
        .and_then(|list| list.iter().find(|s| s["service"] == service))
        .cloned())
}

/// The gateway's view as a table.
pub(crate) fn print_service(service: &str, found: &Value) {
    println!(
        "gateway: {service}, policy {}, endpoints from the {}",
        text(&found["policy"]),
        text(&found["source"])
    );
    let rows: Vec<Vec<String>> = found["endpoints"]
        .as_array()
        .map(|eps| {
            eps.iter()
                .map(|e| {
                    let ejected = if e["ejected"].as_bool() == Some(true) {
                        match (
                            e["ejected_locally_seconds"].as_f64(),
                            e["ejected_by_balancer_seconds"].as_f64(),
                        ) {
                            (Some(s), _) => format!("locally, {s:.0}s left"),
                            (None, Some(s)) => format!("by the balancer, {s:.0}s left"),
                            (None, None) => "yes".into(),
                        }
                    } else {
                        "-".into()
                    };
                    vec![
                        text(&e["instance_id"]),
                        text(&e["address"]),
                        if e["tls"].as_bool() == Some(true) {
                            "tls"
                        } else {
                            "plain"
                        }
                        .into(),
                        if e["serving"].as_bool() == Some(true) {
                            "yes"
                        } else {
                            "no"
                        }
                        .into(),
                        text(&e["in_flight"]),
                        e["ewma_ms"]
                            .as_f64()
                            .map_or("-".into(), |v| format!("{v:.2}")),
                        text(&e["consecutive_failures"]),
                        text(&e["breaker"]),
                        ejected,
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    table::print(
        &[
            "INSTANCE",
            "ADDRESS",
            "TRANSPORT",
            "SERVING",
            "IN_FLIGHT",
            "EWMA_MS",
            "FAILURES",
            "BREAKER",
            "EJECTED",
        ],
        &rows,
    );
}

/// `routes`: the gateway's route table.
pub(crate) async fn routes(g: &Global) -> Result<(), Failure> {
    let all = get(g, "/api/routes").await?;
    if g.output == Output::Json {
        println!("{all}");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = all["routes"]
        .as_array()
        .map(|routes| {
            routes
                .iter()
                .map(|r| {
                    let matches = ["host", "path_exact", "path_prefix", "path_regex"]
                        .iter()
                        .filter(|k| r[**k].as_str().is_some_and(|v| !v.is_empty()))
                        .map(|k| format!("{k}={}", text(&r[*k])))
                        .collect::<Vec<_>>()
                        .join(" ");
                    vec![
                        text(&r["name"]),
                        text(&r["service"]),
                        if matches.is_empty() {
                            "-".into()
                        } else {
                            matches
                        },
                        text(&r["in_flight"]),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    table::print(&["ROUTE", "SERVICE", "MATCH", "IN_FLIGHT"], &rows);
    if all["default_rule"].as_bool() == Some(true) {
        println!(
            "default rule: {}<service>/... goes to <service>",
            text(&all["default_rule_prefix"])
        );
    }
    Ok(())
}

/// A JSON value as a cell: strings bare, null as `-`.
fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
