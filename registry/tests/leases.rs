//! Leases: expiry, renewal by KeepAlive messages only, moves, idempotency.

mod support;

use std::time::Duration;

use support::*;
use switchyard_proto::registry::v1::{self as pb, keep_alive_response::Result as Renewal};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

#[tokio::test]
async fn lease_expiry_removes_instances_and_notifies_watchers() {
    let r = start(config()).await;
    let mut c = client_of(&r).await;
    let reg = register(&mut c, 0, vec![spec("hello", "h1"), spec("hello", "h2")]).await;
    let mut watch = c
        .watch(pb::WatchRequest {
            services: vec!["hello".into()],
            since: None,
        })
        .await
        .expect("watch")
        .into_inner();
    assert_eq!(snapshot(&next(&mut watch).await).instances.len(), 2);

    r.advance(Duration::from_secs(9)).await;
    assert_eq!(
        ids_of(&r, "hello").await.len(),
        2,
        "not yet lapsed at 9 s of a 10 s TTL"
    );
    r.advance(Duration::from_secs(2)).await;

    let deleted = events(&next_change(&mut watch).await);
    assert_eq!(deleted.len(), 2, "{deleted:?}");
    for e in &deleted {
        assert_eq!(e.kind(), pb::event::Kind::Delete);
        assert_eq!(e.delete_reason(), pb::event::DeleteReason::Expired);
    }
    assert!(ids_of(&r, "hello").await.is_empty());
    let answer = c
        .keep_alive(tokio_stream::iter([pb::KeepAliveRequest {
            lease_id: reg.lease_id,
        }]))
        .await
        .expect("keepalive")
        .into_inner()
        .message()
        .await
        .expect("answer")
        .expect("one answer");
    assert_eq!(answer.result(), Renewal::UnknownLease);
    stop(r).await;
}

#[tokio::test]
async fn keepalive_messages_renew_and_a_silent_stream_does_not() {
    let r = start(config()).await;
    let mut c = client_of(&r).await;
    let kept = register(&mut c, 0, vec![spec("hello", "kept")])
        .await
        .lease_id;
    let silent = register(&mut c, 0, vec![spec("hello", "silent")])
        .await
        .lease_id;

    let (tx, rx) = mpsc::channel(4);
    let mut answers = c
        .keep_alive(ReceiverStream::new(rx))
        .await
        .expect("stream")
        .into_inner();
    // A second stream that is open but never says anything for `silent`.
    let (_silent_tx, silent_rx) = mpsc::channel::<pb::KeepAliveRequest>(1);
    let _silent_stream = c
        .keep_alive(ReceiverStream::new(silent_rx))
        .await
        .expect("stream");

    for _ in 0..6 {
        r.advance(Duration::from_secs(3)).await;
        tx.send(pb::KeepAliveRequest { lease_id: kept })
            .await
            .expect("send");
        let a = answers.message().await.expect("answer").expect("open");
        assert_eq!((a.lease_id, a.result()), (kept, Renewal::Renewed));
        assert_eq!(a.ttl_seconds, 10);
    }
    // 18 s have passed: the renewed lease lives, the silent one lapsed.
    eventually("silent lease lapses", || async {
        ids_of(&r, "hello").await == ["kept"]
    })
    .await;
    let _ = silent;
    stop(r).await;
}

#[tokio::test]
async fn registration_is_idempotent_and_moves_between_leases() {
    let r = start(config()).await;
    let mut c = client_of(&r).await;
    let first = register(&mut c, 0, vec![spec("hello", "h1")]).await;
    let again = register(&mut c, first.lease_id, vec![spec("hello", "h1")]).await;
    assert_eq!(
        first.position.as_ref().map(|p| p.revision),
        again.position.as_ref().map(|p| p.revision),
        "an identical registration changes nothing"
    );
    let second = register(&mut c, 0, vec![spec("hello", "h1")]).await;
    assert_ne!(second.lease_id, first.lease_id);
    // Revoking the old lease no longer removes the moved instance.
    let revoked = c
        .revoke_lease(pb::RevokeLeaseRequest {
            lease_id: first.lease_id,
        })
        .await
        .expect("revoke")
        .into_inner();
    assert_eq!(revoked.instances_removed, 0);
    let got = c
        .get_service(pb::GetServiceRequest {
            service: "hello".into(),
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(got.instances.len(), 1);
    assert_eq!(got.instances[0].lease_id, second.lease_id);
    // Registering into a lease that does not exist is refused by name.
    let err = c
        .register(pb::RegisterRequest {
            lease_id: 12345,
            ttl_seconds: 10,
            instances: vec![spec("hello", "h2")],
        })
        .await
        .expect_err("unknown lease");
    assert_eq!(err.code(), tonic::Code::NotFound);
    assert!(err.message().contains("lease_id"), "{}", err.message());
    stop(r).await;
}

#[tokio::test]
async fn warm_up_makes_snapshots_non_authoritative_until_it_ends() {
    let mut cfg = config();
    cfg.warm_up = Duration::from_secs(20);
    let r = start(cfg).await;
    let mut c = client_of(&r).await;
    let mut watch = c
        .watch(pb::WatchRequest::default())
        .await
        .expect("watch")
        .into_inner();
    let first = next(&mut watch).await;
    assert!(
        !first.authoritative,
        "warm-up snapshot must not be authoritative"
    );
    let ready = reqwest_like_get(r.http, "/readyz").await;
    assert!(ready.0 == 503 && ready.1.contains("warm_up"), "{ready:?}");
    r.advance(Duration::from_secs(21)).await;
    loop {
        let m = next(&mut watch).await;
        if m.authoritative {
            break;
        }
    }
    eventually("readyz turns 200", || async {
        reqwest_like_get(r.http, "/readyz").await.0 == 200
    })
    .await;
    stop(r).await;
}

/// A tiny HTTP GET (status, body).
async fn reqwest_like_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    match switchyard_runtime::probe::probe(addr, path, Duration::from_secs(5)).await {
        Ok(body) => (200, body),
        Err(switchyard_runtime::probe::ProbeError::NotReady { status, body }) => (status, body),
        Err(e) => panic!("{e}"),
    }
}

/// GetService tells the time left on each instance's lease (the replica
/// that answers keeps it): what an operator looks at before a lapse.
#[tokio::test]
async fn get_service_tells_the_time_left_on_each_lease() {
    let r = start(config()).await;
    let mut c = client_of(&r).await;
    register(&mut c, 0, vec![spec("hello", "h1")]).await;
    r.advance(Duration::from_secs(3)).await;
    let got = c
        .get_service(pb::GetServiceRequest {
            service: "hello".into(),
        })
        .await
        .expect("get")
        .into_inner();
    let left = got.instances[0].lease_remaining.expect("time left");
    assert_eq!(left.seconds, 7, "{left:?} of a 10 s TTL after 3 s");
    stop(r).await;
}
