//! The status codes and event fields the proto and ARCHITECTURE promise,
//! each one called for: what a client written from `proto/` alone meets.

mod support;

use support::*;
use switchyard_proto::registry::v1 as pb;
use tonic::Code;

const REG: &str = "register-token-a";

async fn started() -> Running {
    let mut cfg = config();
    cfg.register_tokens = vec![REG.into()];
    cfg.operator_tokens = vec!["operator-token-b".into()];
    cfg.open_reads = true;
    start(cfg).await
}

/// The status a call ended with.
fn code<T>(res: Result<T, tonic::Status>) -> Code {
    res.map_or_else(|s| s.code(), |_| Code::Ok)
}

#[tokio::test]
async fn each_rpc_answers_the_codes_its_contract_lists() {
    let r = started().await;
    let mut c = client_of(&r).await;

    // Reads are open, but a token that is sent must be known.
    let get = pb::GetServiceRequest {
        service: "pay".into(),
    };
    assert_eq!(code(c.get_service(get.clone()).await), Code::Ok);
    assert_eq!(
        code(c.get_service(authed(get.clone(), "nobody")).await),
        Code::Unauthenticated
    );
    assert_eq!(
        code(
            c.get_service(authed(
                pb::GetServiceRequest {
                    service: "Bad_Name".into()
                },
                REG
            ))
            .await
        ),
        Code::InvalidArgument
    );
    // Register: an unknown lease is NOT_FOUND; DRAINING may be registered.
    let req = |lease_id, state: pb::State| {
        let mut s = spec("pay", "p1");
        s.state = state as i32;
        pb::RegisterRequest {
            lease_id,
            ttl_seconds: 10,
            instances: vec![s],
        }
    };
    assert_eq!(
        code(
            c.register(authed(req(12345, pb::State::Serving), REG))
                .await
        ),
        Code::NotFound
    );
    assert_eq!(
        code(
            c.register(authed(req(0, pb::State::OutOfService), REG))
                .await
        ),
        Code::InvalidArgument
    );
    let lease = c
        .register(authed(req(0, pb::State::Draining), REG))
        .await
        .expect("DRAINING is a state a client may register")
        .into_inner()
        .lease_id;
    // KeepAlive: lease 0 and unknown leases answer UNKNOWN_LEASE, no error.
    let asks = [0, 777, lease].map(|lease_id| pb::KeepAliveRequest { lease_id });
    let mut answers = c
        .keep_alive(authed(tokio_stream::iter(asks), REG))
        .await
        .expect("keep-alive")
        .into_inner();
    let mut results = Vec::new();
    while let Some(a) = answers.message().await.expect("answer") {
        results.push(a.result());
        if results.len() == 3 {
            break;
        }
    }
    use pb::keep_alive_response::Result as R;
    assert_eq!(results, vec![R::UnknownLease, R::UnknownLease, R::Renewed]);

    // A DELETE event's mod_revision is the deletion's.
    let mut watch = c
        .watch(pb::WatchRequest {
            services: vec!["pay".into()],
            since: None,
        })
        .await
        .expect("watch")
        .into_inner();
    let _snapshot = next(&mut watch).await;
    let remove = pb::DeregisterRequest {
        service: "pay".into(),
        instance_id: "p1".into(),
        lease_id: lease,
    };
    c.deregister(authed(remove.clone(), REG))
        .await
        .expect("deregister");
    let event = loop {
        if let Some(pb::watch_response::Kind::Delta(d)) = next(&mut watch).await.kind {
            break d.events.into_iter().next().expect("an event");
        }
    };
    assert_eq!(event.kind(), pb::event::Kind::Delete);
    assert_eq!(
        event.instance.expect("instance").mod_revision,
        event.revision
    );
    // Deregister twice: NOT_FOUND the second time.
    assert_eq!(
        code(c.deregister(authed(remove, REG)).await),
        Code::NotFound
    );
    // RevokeLease: 0 is invalid, an unknown lease NOT_FOUND.
    for (lease_id, want) in [(0, Code::InvalidArgument), (999, Code::NotFound)] {
        let req = pb::RevokeLeaseRequest { lease_id };
        assert_eq!(
            code(c.revoke_lease(authed(req, REG)).await),
            want,
            "revoke {lease_id}"
        );
    }
    // SetState needs an operator.
    let drain = pb::SetStateRequest {
        service: "pay".into(),
        instance_id: "p1".into(),
        state: pb::State::Draining as i32,
        ..Default::default()
    };
    assert_eq!(
        code(c.set_state(authed(drain, REG)).await),
        Code::PermissionDenied
    );
    stop(r).await;
}

/// An override with a reason and an expiry (Consul's maintenance with a
/// TTL, hashicorp/consul#9242): both are told to readers, and when the
/// time is up the registry drops the override by itself, which a watcher
/// sees as the instance's change back.
#[tokio::test]
async fn an_override_with_an_expiry_is_dropped_when_it_is_up() {
    let r = started().await;
    let mut c = client_of(&r).await;
    let spec = pb::InstanceSpec {
        service: "pay".into(),
        instance_id: "p1".into(),
        address: "10.0.0.1:80".into(),
        ..Default::default()
    };
    c.register(authed(
        pb::RegisterRequest {
            lease_id: 0,
            ttl_seconds: 300,
            instances: vec![spec],
        },
        REG,
    ))
    .await
    .expect("register");
    let drain = pb::SetStateRequest {
        service: "pay".into(),
        instance_id: "p1".into(),
        state: pb::State::Draining as i32,
        reason: "disk swap".into(),
        expires_in: Some(prost_types::Duration {
            seconds: 60,
            nanos: 0,
        }),
        ..Default::default()
    };
    let set = c
        .set_state(authed(drain, "operator-token-b"))
        .await
        .expect("set")
        .into_inner()
        .instance
        .expect("instance");
    let o = set.r#override.clone().expect("override");
    assert_eq!(set.state(), pb::State::Draining);
    assert_eq!(o.reason, "disk swap");
    let (updated, expires) = (
        o.updated_at.expect("updated"),
        o.expires_at.expect("expires"),
    );
    assert_eq!(expires.seconds - updated.seconds, 60);

    let mut watch = c
        .watch(pb::WatchRequest {
            services: vec!["pay".into()],
            since: None,
        })
        .await
        .expect("watch")
        .into_inner();
    let _snapshot = next(&mut watch).await;
    // Not before its time.
    r.advance(std::time::Duration::from_secs(59)).await;
    r.advance(std::time::Duration::from_millis(500)).await;
    let now = c
        .get_service(pb::GetServiceRequest {
            service: "pay".into(),
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(now.instances[0].state(), pb::State::Draining);
    // Then by itself: the watcher sees p1 SERVING again, with no override
    // (progress messages aside, within 5 s).
    r.advance(std::time::Duration::from_secs(2)).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let event = loop {
        assert!(
            std::time::Instant::now() < deadline,
            "no change within 5 s: the override did not expire"
        );
        if let Some(pb::watch_response::Kind::Delta(d)) = next(&mut watch).await.kind {
            break d.events.into_iter().next().expect("an event");
        }
    };
    assert_eq!(event.kind(), pb::event::Kind::Put);
    let i = event.instance.expect("instance");
    assert_eq!(i.state(), pb::State::Serving);
    assert!(i.r#override.is_none(), "{i:?}");
    stop(r).await;
}
