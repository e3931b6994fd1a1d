//! An instance held by a live lease belongs to that lease's holder: a
//! register token cannot move it to another lease (to send its traffic
//! elsewhere) or delete it, and lease ids, which are bearer credentials,
//! are shown to operators only.

mod support;

use std::time::Duration;

use support::*;
use switchyard_proto::registry::v1::{self as pb, registry_client::RegistryClient};
use tonic::{Code, Request, transport::Channel};

const REG: &str = "register-token-a";
const OP: &str = "operator-token-b";

/// `pay/victim` at `address`, after `pay/other` (new the first time).
fn at(address: &str, lease_id: u64) -> pb::RegisterRequest {
    let mut s = spec("pay", "victim");
    s.address = address.into();
    pb::RegisterRequest {
        lease_id,
        ttl_seconds: 10,
        instances: vec![spec("pay", "other"), s],
    }
}

/// `pay/victim` alone.
fn victim_at(address: &str) -> pb::RegisterRequest {
    let mut req = at(address, 0);
    req.instances.remove(0);
    req
}

async fn started() -> (Running, RegistryClient<Channel>) {
    let mut cfg = config();
    cfg.register_tokens = vec![REG.into()];
    cfg.operator_tokens = vec![OP.into()];
    cfg.open_reads = true;
    let r = start(cfg).await;
    let c = client_of(&r).await;
    (r, c)
}

/// (address, lease id) of `pay/victim`, as an operator sees it.
async fn victim(c: &mut RegistryClient<Channel>) -> Option<(String, u64)> {
    let got = c
        .get_service(authed(
            pb::GetServiceRequest {
                service: "pay".into(),
            },
            OP,
        ))
        .await
        .expect("get_service")
        .into_inner();
    got.instances.into_iter().find_map(|i| {
        let s = i.spec?;
        (s.instance_id == "victim").then_some((s.address, i.lease_id))
    })
}

#[tokio::test]
async fn a_live_lease_keeps_its_instances_until_it_lapses() {
    let (r, mut c) = started().await;
    let owner = c
        .register(authed(victim_at("10.0.0.1:80"), REG))
        .await
        .expect("register")
        .into_inner()
        .lease_id;

    // Another holder of a register token, with a new lease: refused whole
    // (`pay/other` was not registered either), naming the instance.
    let err = c
        .register(authed(at("10.6.6.6:80", 0), REG))
        .await
        .expect_err("taken over");
    assert_eq!(err.code(), Code::AlreadyExists);
    assert!(
        err.message()
            .starts_with("instances[1]: pay/victim is held by another live lease"),
        "{}",
        err.message()
    );
    assert_eq!(victim(&mut c).await, Some(("10.0.0.1:80".into(), owner)));
    assert_eq!(ids_of(&r, "pay").await, vec!["victim".to_string()]);
    // Its own lease may change it; an operator may move it.
    c.register(authed(victim_at("10.0.0.2:80"), REG))
        .await
        .expect_err("a new lease, even at its own address");
    let mut own = victim_at("10.0.0.2:80");
    own.lease_id = owner;
    c.register(authed(own, REG))
        .await
        .expect("the owner re-registers");
    let moved = c
        .register(authed(victim_at("10.0.0.3:80"), OP))
        .await
        .expect("an operator takes over")
        .into_inner()
        .lease_id;
    assert_eq!(victim(&mut c).await, Some(("10.0.0.3:80".into(), moved)));
    // Once the holding lease lapses, anyone may register it again.
    r.advance(Duration::from_secs(11)).await;
    eventually("the operator's lease lapses", || async {
        victim(&mut client_of(&r).await).await.is_none()
    })
    .await;
    c.register(authed(at("10.0.0.4:80", 0), REG))
        .await
        .expect("re-registration after the lease lapsed");
    stop(r).await;
}

#[tokio::test]
async fn lease_ids_are_shown_to_operators_only() {
    let (r, mut c) = started().await;
    let lease = c
        .register(authed(at("10.0.0.1:80", 0), REG))
        .await
        .expect("register")
        .into_inner()
        .lease_id;
    let get = |token: Option<&str>| {
        let msg = pb::GetServiceRequest {
            service: "pay".into(),
        };
        match token {
            Some(t) => authed(msg, t),
            None => Request::new(msg),
        }
    };
    for (token, want) in [(None, 0), (Some(REG), 0), (Some(OP), lease)] {
        let got = c.get_service(get(token)).await.expect("get").into_inner();
        assert!(
            got.instances.iter().all(|i| i.lease_id == want),
            "{token:?}: {:?}",
            got.instances.iter().map(|i| i.lease_id).collect::<Vec<_>>()
        );
        let mut watch = c
            .watch(match token {
                Some(t) => authed(pb::WatchRequest::default(), t),
                None => Request::new(pb::WatchRequest::default()),
            })
            .await
            .expect("watch")
            .into_inner();
        let snap = snapshot(&next(&mut watch).await);
        assert!(
            snap.instances.iter().all(|i| i.lease_id == want),
            "{token:?} watch"
        );
        let (code, json) = http(r.http, "GET", "/api/services/pay", token, None).await;
        assert_eq!(code, 200);
        let shown: Vec<_> = json["instances"]
            .as_array()
            .expect("instances")
            .iter()
            .map(|i| i["lease_id"].as_u64().unwrap_or(0))
            .collect();
        assert_eq!(shown, vec![want; 2], "{token:?} JSON");
    }
    // Nor does a delta carry it.
    let mut watch = c
        .watch(Request::new(pb::WatchRequest::default()))
        .await
        .expect("watch")
        .into_inner();
    let _ = next(&mut watch).await;
    c.register(authed(at("10.0.0.9:80", lease), REG))
        .await
        .expect("change");
    let delta = loop {
        if let Some(pb::watch_response::Kind::Delta(d)) = next(&mut watch).await.kind {
            break d;
        }
    };
    assert!(
        delta
            .events
            .iter()
            .all(|e| e.instance.as_ref().is_some_and(|i| i.lease_id == 0))
    );
    stop(r).await;
}

#[tokio::test]
async fn json_takeover_and_delete_need_the_lease_and_bodies_end_where_json_ends() {
    let (r, _c) = started().await;
    let body =
        r#"{"service":"pay","instance_id":"victim","address":"10.0.0.1:80","protocol":"http1"}"#;
    let (code, json) = http(r.http, "POST", "/api/register", Some(REG), Some(body)).await;
    assert_eq!(code, 200, "{json}");
    let lease = json["lease_id"].as_u64().expect("lease");
    let evil =
        r#"{"service":"pay","instance_id":"victim","address":"10.6.6.6:80","protocol":"http1"}"#;
    let (code, json) = http(r.http, "POST", "/api/register", Some(REG), Some(evil)).await;
    assert_eq!(code, 409, "{json}");
    assert!(
        json["error"]
            .as_str()
            .is_some_and(|e| e.contains("pay/victim is held by another live lease"))
    );
    // A wrong lease cannot delete it; the right one can.
    let (code, _) = http(
        r.http,
        "DELETE",
        "/api/services/pay/instances/victim",
        Some(REG),
        None,
    )
    .await;
    assert_eq!(code, 400, "a register token must name the lease");
    let wrong = format!(
        r#"{{"service":"pay","instance_id":"victim","lease_id":{}}}"#,
        lease + 1
    );
    let (code, _) = http(r.http, "POST", "/api/deregister", Some(REG), Some(&wrong)).await;
    assert_eq!(code, 403);
    // Trailing bytes after the JSON: 400, nothing registered.
    let trailing =
        r#"{"service":"pay","instance_id":"late","address":"10.0.0.5:80","protocol":"http1"}xx"#;
    let (code, json) = http(r.http, "POST", "/api/register", Some(REG), Some(trailing)).await;
    assert_eq!(code, 400);
    assert!(
        json["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("body: trailing characters")),
        "{json}"
    );
    assert_eq!(ids_of(&r, "pay").await, vec!["victim".to_string()]);
    stop(r).await;
}
