//! Tokens: missing ones are refused, register tokens cannot drain others.

mod support;

use support::*;
use switchyard_proto::registry::v1::{self as pb, registry_client::RegistryClient};
use tonic::{Code, transport::Channel};

const REG: &str = "register-token-a";
const OP: &str = "operator-token-b";

fn register_req(id: &str, lease_id: u64) -> pb::RegisterRequest {
    pb::RegisterRequest {
        lease_id,
        ttl_seconds: 10,
        instances: vec![spec("hello", id)],
    }
}

async fn started() -> (Running, RegistryClient<Channel>) {
    let mut cfg = config();
    cfg.register_tokens = vec![REG.into(), "register-token-old".into()];
    cfg.operator_tokens = vec![OP.into()];
    let r = start(cfg).await;
    let c = client_of(&r).await;
    (r, c)
}

#[tokio::test]
async fn missing_and_unknown_tokens_are_refused() {
    let (r, mut c) = started().await;
    let err = c
        .register(register_req("a", 0))
        .await
        .expect_err("no token");
    assert_eq!(err.code(), Code::Unauthenticated);
    let err = c
        .register(authed(register_req("a", 0), "wrong-token-x"))
        .await
        .expect_err("bad token");
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(
        !err.message().contains("wrong-token"),
        "tokens are never echoed"
    );
    // Both tokens of a rotating list work.
    c.register(authed(register_req("a", 0), REG))
        .await
        .expect("current token");
    c.register(authed(register_req("b", 0), "register-token-old"))
        .await
        .expect("old token");
    // Reads are open by default.
    assert_eq!(ids_of(&r, "hello").await.len(), 2);
    let (code, _) = http(
        r.http,
        "POST",
        "/api/register",
        None,
        Some(r#"{"service":"hello","instance_id":"j","address":"h:1","protocol":"http1"}"#),
    )
    .await;
    assert_eq!(code, 401);
    stop(r).await;
}

#[tokio::test]
async fn register_tokens_cannot_drain_or_remove_others() {
    let (r, mut c) = started().await;
    let mine = c
        .register(authed(register_req("mine", 0), REG))
        .await
        .expect("reg")
        .into_inner()
        .lease_id;
    let theirs = c
        .register(authed(register_req("theirs", 0), REG))
        .await
        .expect("reg")
        .into_inner()
        .lease_id;

    let drain = pb::SetStateRequest {
        service: "hello".into(),
        instance_id: "theirs".into(),
        state: pb::State::Draining as i32,
        weight: None,
        ..Default::default()
    };
    let err = c
        .set_state(authed(drain.clone(), REG))
        .await
        .expect_err("register token drains");
    assert_eq!(err.code(), Code::PermissionDenied);
    let (code, _) = http(
        r.http,
        "PUT",
        "/api/services/hello/instances/theirs",
        Some(REG),
        Some(r#"{"state":"DRAINING"}"#),
    )
    .await;
    assert_eq!(code, 403);

    let remove_theirs = pb::DeregisterRequest {
        service: "hello".into(),
        instance_id: "theirs".into(),
        lease_id: mine,
    };
    let err = c
        .deregister(authed(remove_theirs, REG))
        .await
        .expect_err("another lease's instance");
    assert_eq!(err.code(), Code::PermissionDenied);
    let no_lease = pb::DeregisterRequest {
        service: "hello".into(),
        instance_id: "theirs".into(),
        lease_id: 0,
    };
    let err = c
        .deregister(authed(no_lease.clone(), REG))
        .await
        .expect_err("no lease named");
    assert_eq!(err.code(), Code::InvalidArgument);
    let mut ids = ids_of(&r, "hello").await;
    ids.sort();
    assert_eq!(ids, ["mine", "theirs"], "nothing changed");

    // Its own instance, yes; an operator, anything.
    let own = pb::DeregisterRequest {
        service: "hello".into(),
        instance_id: "mine".into(),
        lease_id: mine,
    };
    c.deregister(authed(own, REG)).await.expect("own instance");
    c.set_state(authed(drain, OP))
        .await
        .expect("operator drains");
    c.deregister(authed(no_lease, OP))
        .await
        .expect("operator removes");
    assert!(ids_of(&r, "hello").await.is_empty());
    let _ = theirs;
    stop(r).await;
}
