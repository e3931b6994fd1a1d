//! The calls a newcomer makes first: the shortest JSON registration, and
//! the seed's Flask sketch (`service_name`, `DELETE /api/deregister`).

mod support;

use support::*;
use switchyard_proto::registry::v1 as pb;

const REG: &str = "register-token-a";
const OP: &str = "operator-token-b";

async fn started() -> Running {
    let mut cfg = config();
    cfg.register_tokens = vec![REG.into()];
    cfg.operator_tokens = vec![OP.into()];
    cfg.open_reads = true;
    start(cfg).await
}

/// `(instance_id, protocol, lease ttl)` of a service's instances, as the
/// JSON API lists them.
async fn listed(r: &Running, service: &str) -> Vec<(String, String)> {
    let (code, json) = http(
        r.http,
        "GET",
        &format!("/api/services/{service}"),
        None,
        None,
    )
    .await;
    assert_eq!(code, 200);
    json["instances"]
        .as_array()
        .expect("instances")
        .iter()
        .map(|i| {
            (
                i["instance_id"].as_str().unwrap_or("").to_string(),
                i["protocol"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn the_shortest_registration_takes_the_defaults() {
    let r = started().await;
    let body = r#"{"service":"hello","instance_id":"h1","address":"10.0.0.5:8080"}"#;
    let (code, json) = http(r.http, "POST", "/api/register", Some(REG), Some(body)).await;
    assert_eq!(code, 200, "{json}");
    assert_eq!(json["ttl_seconds"], 10, "the default TTL");
    assert_eq!(
        listed(&r, "hello").await,
        vec![("h1".into(), "http1".into())]
    );
    // Over gRPC, an unset protocol is the same default.
    let mut c = client_of(&r).await;
    let mut s = spec("hello", "h2");
    s.protocol = pb::Protocol::Unspecified as i32;
    c.register(authed(
        pb::RegisterRequest {
            lease_id: 0,
            ttl_seconds: 0,
            instances: vec![s],
        },
        REG,
    ))
    .await
    .expect("register without a protocol");
    assert_eq!(
        listed(&r, "hello").await,
        vec![("h1".into(), "http1".into()), ("h2".into(), "http1".into())]
    );
    stop(r).await;
}

#[tokio::test]
async fn the_seed_sketchs_calls_work_as_written() {
    let r = started().await;
    let mut leases = Vec::new();
    for id in ["s1", "s2"] {
        let body =
            format!(r#"{{"service_name":"seed","instance_id":"{id}","address":"10.0.0.7:80"}}"#);
        let (code, json) = http(r.http, "POST", "/api/register", Some(REG), Some(&body)).await;
        assert_eq!(code, 200, "{json}");
        leases.push(json["lease_id"].as_u64().expect("lease"));
    }
    // A register token names the instance and its lease; DELETE as POST.
    let one = format!(
        r#"{{"service_name":"seed","instance_id":"s1","lease_id":{}}}"#,
        leases[0]
    );
    let (code, json) = http(r.http, "DELETE", "/api/deregister", Some(REG), Some(&one)).await;
    assert_eq!(
        (code, &json["removed"]),
        (200, &serde_json::json!(1)),
        "{json}"
    );
    // Only an operator may name just the service; nothing changes otherwise.
    let whole = r#"{"service_name":"seed"}"#;
    let (code, json) = http(r.http, "DELETE", "/api/deregister", Some(REG), Some(whole)).await;
    assert_eq!(code, 400);
    assert!(
        json["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("instance_id:")),
        "{json}"
    );
    assert_eq!(
        listed(&r, "seed").await,
        vec![("s2".into(), "http1".into())]
    );
    let (code, json) = http(r.http, "DELETE", "/api/deregister", Some(OP), Some(whole)).await;
    assert_eq!(
        (code, &json["removed"]),
        (200, &serde_json::json!(1)),
        "{json}"
    );
    assert!(listed(&r, "seed").await.is_empty());
    stop(r).await;
}

/// `"tls": true` (issue 21 item 4): the instance serves TLS; the flag is
/// kept, listed in JSON and given to gRPC readers (the gateway dials such
/// instances over TLS).
#[tokio::test]
async fn an_instance_served_over_tls_says_so_to_every_reader() {
    let r = started().await;
    let body = r#"{"service":"hello","instance_id":"t1","address":"10.0.0.5:8443","tls":true}"#;
    let (code, json) = http(r.http, "POST", "/api/register", Some(REG), Some(body)).await;
    assert_eq!(code, 200, "{json}");
    let body = r#"{"service":"hello","instance_id":"p1","address":"10.0.0.5:8080"}"#;
    let (code, json) = http(r.http, "POST", "/api/register", Some(REG), Some(body)).await;
    assert_eq!(code, 200, "{json}");
    let (_, json) = http(r.http, "GET", "/api/services/hello", None, None).await;
    let tls: Vec<(String, bool)> = json["instances"]
        .as_array()
        .expect("instances")
        .iter()
        .map(|i| {
            let id = i["instance_id"].as_str().unwrap_or("").to_string();
            (id, i["tls"].as_bool().unwrap_or(false))
        })
        .collect();
    assert_eq!(tls, vec![("p1".into(), false), ("t1".into(), true)]);
    let mut c = client_of(&r).await;
    let got = c
        .get_service(pb::GetServiceRequest {
            service: "hello".into(),
        })
        .await
        .expect("get service")
        .into_inner();
    let tls: Vec<(String, bool)> = got
        .instances
        .iter()
        .filter_map(|i| i.spec.as_ref())
        .map(|s| (s.instance_id.clone(), s.tls))
        .collect();
    assert_eq!(tls, vec![("p1".into(), false), ("t1".into(), true)]);
    stop(r).await;
}

/// A drain over JSON with a reason and an expiry: both come back, and
/// every JSON reader of the instance sees them.
#[tokio::test]
async fn a_json_drain_carries_its_reason_and_expiry() {
    let r = started().await;
    let body = r#"{"service":"hello","instance_id":"h1","address":"10.0.0.5:8080"}"#;
    let (code, _) = http(r.http, "POST", "/api/register", Some(REG), Some(body)).await;
    assert_eq!(code, 200);
    let drain = r#"{"state":"DRAINING","reason":"disk swap","expires_in_seconds":600}"#;
    let (code, json) = http(
        r.http,
        "PUT",
        "/api/services/hello/instances/h1",
        Some(OP),
        Some(drain),
    )
    .await;
    assert_eq!(code, 200, "{json}");
    let o = &json["override"];
    assert_eq!(o["reason"], "disk swap", "{json}");
    assert_eq!(
        o["expires_at"].as_u64().unwrap_or(0) - o["updated_at"].as_u64().unwrap_or(0),
        600,
        "{json}"
    );
    let (_, listed) = http(r.http, "GET", "/api/services/hello", None, None).await;
    assert_eq!(listed["instances"][0]["state"], "DRAINING", "{listed}");
    assert_eq!(
        listed["instances"][0]["override"]["reason"], "disk swap",
        "{listed}"
    );
    stop(r).await;
}
