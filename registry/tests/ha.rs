//! The registry on etcd (issue 18): replicas of one registry on a real
//! etcd, each in this process on its own ports with its own clock.
//! A write on one replica is read on the other; a watch resumes on another
//! replica with exactly what it missed; a client's lease outlives its
//! replica; a lease expires on its owner's clock alone; overrides outlive
//! every replica.

mod support;

use std::time::Duration;

use support::*;
use switchyard_etcd::testing::Cluster;
use switchyard_proto::registry::v1 as pb;
use switchyard_registry::{Config, StoreKind};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

const OP: &str = "operator-token-1";
const REG: &str = "register-token-1";

fn on(etcd: &Cluster, replica: &str) -> Config {
    Config {
        store: StoreKind::Etcd,
        etcd_endpoints: etcd.endpoints(),
        etcd_session_ttl_secs: 5,
        replica_name: replica.into(),
        register_tokens: vec![REG.into()],
        operator_tokens: vec![OP.into()],
        ..config()
    }
}

async fn etcd() -> Cluster {
    Cluster::start(1, &[]).await
}

async fn register_on(r: &Running, lease_id: u64, ids: &[&str]) -> pb::RegisterResponse {
    let mut c = client_of(r).await;
    c.register(authed(
        pb::RegisterRequest {
            lease_id,
            ttl_seconds: 10,
            instances: ids.iter().map(|id| spec("hello", id)).collect(),
        },
        REG,
    ))
    .await
    .expect("register")
    .into_inner()
}

async fn watch_on(
    r: &Running,
    since: Option<pb::WatchPosition>,
) -> tonic::Streaming<pb::WatchResponse> {
    let mut c = client_of(r).await;
    c.watch(pb::WatchRequest {
        services: vec!["hello".into()],
        since,
    })
    .await
    .expect("watch")
    .into_inner()
}

fn position(m: &pb::WatchResponse) -> pb::WatchPosition {
    m.position.clone().expect("position")
}

fn ids(events: &[pb::Event]) -> Vec<(i32, String)> {
    events
        .iter()
        .map(|e| {
            let id = e
                .instance
                .as_ref()
                .and_then(|i| i.spec.as_ref())
                .map(|s| s.instance_id.clone())
                .unwrap_or_default();
            (e.kind, id)
        })
        .collect()
}

const PUT: i32 = pb::event::Kind::Put as i32;
const DELETE: i32 = pb::event::Kind::Delete as i32;

#[tokio::test]
async fn replicas_serve_one_registry_and_a_watch_resumes_on_another_replica() {
    let etcd = etcd().await;
    let a = start(on(&etcd, "a")).await;
    let b = start(on(&etcd, "b")).await;

    register_on(&a, 0, &["h1"]).await;
    eventually("b reads a's write", || async {
        ids_of(&b, "hello").await == ["h1"]
    })
    .await;

    // A watcher on a, then a is gone for it: it resumes on b from where it
    // was, and gets exactly what it missed.
    let mut on_a = watch_on(&a, None).await;
    let first = next(&mut on_a).await;
    assert_eq!(snapshot(&first).instances.len(), 1);
    let at = position(&first);
    drop(on_a);
    register_on(&b, 0, &["h2", "h3"]).await;
    let lease = register_on(&a, 0, &["h4"]).await.lease_id;
    let mut c = client_of(&b).await;
    c.deregister(authed(
        pb::DeregisterRequest {
            service: "hello".into(),
            instance_id: "h4".into(),
            lease_id: lease,
        },
        REG,
    ))
    .await
    .expect("deregister on b, of a's lease");

    eventually("b applied everything", || async {
        ids_of(&b, "hello").await == ["h1", "h2", "h3"]
    })
    .await;
    let mut on_b = watch_on(&b, Some(at.clone())).await;
    let resumed = next_change(&mut on_b).await;
    assert_eq!(
        position(&resumed).epoch,
        at.epoch,
        "one epoch for all replicas"
    );
    assert!(position(&resumed).revision > at.revision);
    let got = events(&resumed);
    assert_eq!(
        ids(&got),
        [
            (PUT, "h2".to_string()),
            (PUT, "h3".to_string()),
            (PUT, "h4".to_string()),
            (DELETE, "h4".to_string())
        ],
        "exactly the missed events, in order, once"
    );
    assert_eq!(
        got[3].delete_reason,
        pb::event::DeleteReason::Deregistered as i32
    );
    assert!(
        got.windows(2).all(|w| w[0].revision <= w[1].revision),
        "revisions never go back"
    );

    // A resume from a position no replica has seen (ahead) is a reset.
    let ahead = pb::WatchPosition {
        epoch: at.epoch.clone(),
        revision: at.revision + 1_000_000,
    };
    let mut reset = watch_on(&a, Some(ahead)).await;
    let s = snapshot(&next(&mut reset).await);
    assert!(s.reset);
    assert_eq!(s.instances.len(), 3);

    stop(a).await;
    stop(b).await;
}

#[tokio::test]
async fn a_lease_outlives_its_replica_with_no_delete() {
    let etcd = etcd().await;
    let a = start(on(&etcd, "a")).await;
    let b = start(on(&etcd, "b")).await;
    let lease = register_on(&a, 0, &["h1"]).await.lease_id;
    eventually("b sees h1", || async {
        ids_of(&b, "hello").await == ["h1"]
    })
    .await;
    let mut on_b = watch_on(&b, None).await;
    next(&mut on_b).await;

    // a dies (stops renewing its session); the client renews on b.
    stop(a).await;
    let mut c = client_of(&b).await;
    let (tx, rx) = mpsc::channel(4);
    let mut answers = c
        .keep_alive(authed(ReceiverStream::new(rx), REG))
        .await
        .expect("keepalive")
        .into_inner();
    tx.send(pb::KeepAliveRequest { lease_id: lease })
        .await
        .expect("send");
    let answer = answers.message().await.expect("answer").expect("open");
    assert_eq!(
        answer.result(),
        pb::keep_alive_response::Result::Renewed,
        "b adopts the lease a kept"
    );

    // Well past a's session TTL (5 s): the instance is still there, and
    // b's watcher saw no delete.
    let until = tokio::time::Instant::now() + Duration::from_secs(8);
    while tokio::time::Instant::now() < until {
        let m = tokio::time::timeout(Duration::from_millis(500), on_b.message()).await;
        if let Ok(m) = m {
            let m = m.expect("stream ok").expect("stream open");
            if let Some(pb::watch_response::Kind::Delta(d)) = &m.kind {
                assert!(
                    d.events.iter().all(|e| e.kind != DELETE),
                    "no delete while the lease moved: {d:?}"
                );
            }
        }
    }
    assert_eq!(ids_of(&b, "hello").await, ["h1"]);

    // b now keeps it: the client's death expires it on b's clock.
    b.advance(Duration::from_secs(11)).await;
    eventually("expired on b", || async {
        ids_of(&b, "hello").await.is_empty()
    })
    .await;
    stop(b).await;
}

#[tokio::test]
async fn a_lease_expires_on_its_owners_clock_and_others_see_why() {
    let etcd = etcd().await;
    let a = start(on(&etcd, "a")).await;
    let b = start(on(&etcd, "b")).await;
    register_on(&a, 0, &["h1"]).await;
    eventually("b sees h1", || async {
        ids_of(&b, "hello").await == ["h1"]
    })
    .await;
    let mut on_b = watch_on(&b, None).await;
    next(&mut on_b).await;

    // b does not keep the lease: its clock passing the TTL changes nothing.
    b.advance(Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(ids_of(&b, "hello").await, ["h1"]);

    a.advance(Duration::from_secs(11)).await;
    let m = next_change(&mut on_b).await;
    let got = events(&m);
    assert_eq!(ids(&got), [(DELETE, "h1".to_string())]);
    assert_eq!(
        got[0].delete_reason,
        pb::event::DeleteReason::Expired as i32
    );
    assert!(ids_of(&a, "hello").await.is_empty());
    stop(a).await;
    stop(b).await;
}

#[tokio::test]
async fn overrides_outlive_every_replica() {
    let etcd = etcd().await;
    let a = start(on(&etcd, "a")).await;
    let lease = register_on(&a, 0, &["h1"]).await.lease_id;
    let mut c = client_of(&a).await;
    c.set_state(authed(
        pb::SetStateRequest {
            service: "hello".into(),
            instance_id: "h1".into(),
            state: pb::State::OutOfService as i32,
            ..Default::default()
        },
        OP,
    ))
    .await
    .expect("set_state");
    stop(a).await;

    // Every replica gone: a's records go with its session (5 s), the
    // override stays; the client comes back and registers into it.
    let c2 = start(on(&etcd, "c")).await;
    assert_eq!(
        ids_of(&c2, "hello").await,
        ["h1"],
        "a's session still holds it"
    );
    let until = tokio::time::Instant::now() + Duration::from_secs(15);
    while !ids_of(&c2, "hello").await.is_empty() {
        assert!(
            tokio::time::Instant::now() < until,
            "a's session lapsed within 15 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut c = client_of(&c2).await;
    let again = register_on(&c2, 0, &["h1"]).await;
    assert_ne!(
        again.lease_id, lease,
        "a new lease: the old one went with a"
    );
    let got = c
        .get_service(pb::GetServiceRequest {
            service: "hello".into(),
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(got.instances.len(), 1);
    assert_eq!(
        got.instances[0].state(),
        pb::State::OutOfService,
        "the operator's override survived"
    );
    stop(c2).await;
}

#[tokio::test]
async fn bad_store_settings_name_the_key() {
    use switchyard_runtime::Settings;
    let bad = Config {
        store: StoreKind::Etcd,
        ..config()
    };
    let e = bad.validate().expect_err("no endpoints");
    assert_eq!(e.key, "etcd_endpoints");
    let bad = Config {
        store: StoreKind::Etcd,
        etcd_endpoints: vec!["127.0.0.1:2379".into()],
        ..config()
    };
    assert_eq!(bad.validate().expect_err("no scheme").key, "etcd_endpoints");
}

#[tokio::test]
async fn a_replica_that_loses_etcd_is_fenced_then_comes_back() {
    let mut etcd = etcd().await;
    let a = start(on(&etcd, "a")).await;
    let lease = register_on(&a, 0, &["h1"]).await.lease_id;
    let mut watch = watch_on(&a, None).await;
    next(&mut watch).await;

    etcd.members[0].kill();
    // Within half the session TTL (and a renewal period): renewals are
    // refused so the client moves on, and watch streams end.
    let mut c = client_of(&a).await;
    let until = tokio::time::Instant::now() + Duration::from_secs(10);
    let refused = loop {
        assert!(tokio::time::Instant::now() < until, "fenced within 10 s");
        let (tx, rx) = mpsc::channel(1);
        tx.send(pb::KeepAliveRequest { lease_id: lease })
            .await
            .expect("send");
        let mut answers = c
            .keep_alive(authed(ReceiverStream::new(rx), REG))
            .await
            .expect("keepalive")
            .into_inner();
        match answers.message().await {
            Err(status) => break status,
            Ok(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    };
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    assert!(refused.message().contains("etcd session"), "{refused:?}");
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match watch.message().await {
                Ok(Some(_)) => continue,
                other => return other.map(|_| ()),
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the watch stream ended once fenced");

    // etcd back: the session is renewed (or a new one opened) and the
    // replica takes calls again.
    etcd.members[0].spawn();
    eventually("a takes writes again", || async {
        let mut c = client_of(&a).await;
        c.register(authed(
            pb::RegisterRequest {
                lease_id: 0,
                ttl_seconds: 10,
                instances: vec![spec("hello", "h2")],
            },
            REG,
        ))
        .await
        .is_ok()
    })
    .await;
    stop(a).await;
}

/// The `registry` binary as a replica on `etcd`, on the real clock.
struct Replica {
    child: std::process::Child,
    grpc: std::net::SocketAddr,
}

impl Replica {
    async fn start(etcd: &Cluster, name: &str) -> Self {
        let free = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
        };
        let (grpc, http) = (free(), free());
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_registry"))
            .args(["--grpc-listen", &grpc.to_string()])
            .args(["--http-listen", &http.to_string()])
            .env("SWITCHYARD_PLAINTEXT", "true")
            .env("SWITCHYARD_STORE", "etcd")
            .env("SWITCHYARD_ETCD_ENDPOINTS", etcd.endpoints().join(","))
            .env("SWITCHYARD_ETCD_SESSION_TTL_SECS", "5")
            .env("SWITCHYARD_REPLICA_NAME", name)
            .env("SWITCHYARD_REGISTER_TOKENS", REG)
            .env("SWITCHYARD_OPERATOR_TOKENS", OP)
            .env("SWITCHYARD_WARM_UP", "0s")
            .env("SWITCHYARD_DATA_DIR", std::env::temp_dir())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn registry");
        eventually("the replica answers /readyz", || async {
            switchyard_runtime::probe::probe(http, "/readyz", Duration::from_secs(1))
                .await
                .is_ok()
        })
        .await;
        Self { child, grpc }
    }

    async fn client(&self) -> pb::registry_client::RegistryClient<tonic::transport::Channel> {
        pb::registry_client::RegistryClient::connect(format!("http://{}", self.grpc))
            .await
            .expect("connect")
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Item 2 on the real clock: a client registers on one replica, renews on
/// the other (which adopts its lease) and dies. The first replica's
/// watcher sees the DELETE one TTL after the last renewal, within a second.
#[tokio::test]
async fn a_dead_clients_instances_expire_within_a_second_of_its_ttl_whichever_replica_kept_it() {
    const TTL: Duration = Duration::from_secs(3);
    let etcd = etcd().await;
    let a = Replica::start(&etcd, "a").await;
    let b = Replica::start(&etcd, "b").await;
    let mut on_a = a.client().await;
    let lease = on_a
        .register(authed(
            pb::RegisterRequest {
                lease_id: 0,
                ttl_seconds: TTL.as_secs() as u32,
                instances: vec![spec("hello", "h1")],
            },
            REG,
        ))
        .await
        .expect("register on a")
        .into_inner()
        .lease_id;
    let mut watch = on_a
        .watch(pb::WatchRequest {
            services: vec!["hello".into()],
            since: None,
        })
        .await
        .expect("watch on a")
        .into_inner();
    assert_eq!(snapshot(&next(&mut watch).await).instances.len(), 1);

    // The last renewal, on b: b adopts the lease and keeps its clock.
    let (tx, rx) = mpsc::channel(1);
    tx.send(pb::KeepAliveRequest { lease_id: lease })
        .await
        .expect("send");
    let mut answers = b
        .client()
        .await
        .keep_alive(authed(ReceiverStream::new(rx), REG))
        .await
        .expect("keepalive on b")
        .into_inner();
    let answer = answers.message().await.expect("answer").expect("open");
    assert_eq!(answer.result(), pb::keep_alive_response::Result::Renewed);
    let renewed = std::time::Instant::now();
    drop(tx); // the client dies

    let deleted = loop {
        let m = tokio::time::timeout(Duration::from_secs(10), watch.message())
            .await
            .expect("the delete within 10 s")
            .expect("stream ok")
            .expect("stream open");
        if let Some(pb::watch_response::Kind::Delta(d)) = &m.kind {
            assert_eq!(ids(&d.events), [(DELETE, "h1".to_string())]);
            break renewed.elapsed();
        }
    };
    assert!(
        deleted >= TTL - Duration::from_millis(100) && deleted <= TTL + Duration::from_secs(1),
        "deleted {deleted:?} after the last renewal; the TTL is {TTL:?}"
    );
}

/// A client that moves to another replica right after registering is never
/// told its lease is unknown because that replica's follower lags: an
/// unknown lease is answered only after catching up with etcd.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_registered_on_one_replica_is_known_at_once_on_another() {
    let etcd = etcd().await;
    let a = start(on(&etcd, "a")).await;
    let b = start(on(&etcd, "b")).await;
    let mut on_b = client_of(&b).await;
    let (tx, rx) = mpsc::channel(1);
    let mut answers = on_b
        .keep_alive(authed(ReceiverStream::new(rx), REG))
        .await
        .expect("keepalive on b")
        .into_inner();
    // Without the catching up, about one in 30 failed here.
    for n in 0..100 {
        let lease = register_on(&a, 0, &[&format!("h{n}")]).await.lease_id;
        tx.send(pb::KeepAliveRequest { lease_id: lease })
            .await
            .expect("send");
        let answer = answers.message().await.expect("answer").expect("open");
        assert_eq!(
            answer.result(),
            pb::keep_alive_response::Result::Renewed,
            "lease {n}, renewed on b just after a registered it"
        );
    }
    stop(a).await;
    stop(b).await;
}
