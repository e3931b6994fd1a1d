//! Test support: the real registry in-process on port 0 with a manual clock,
//! and as a process.
//!
//! In the `on_etcd` test binary (or with `SWITCHYARD_TEST_STORE=etcd`)
//! every registry these suites start runs on its own real etcd (`--store
//! etcd`, one member) instead of the file store: the same tests on the
//! second backend, in every `cargo test`.
#![allow(dead_code, unreachable_pub, unused_imports)]

use std::{net::SocketAddr, ops::Deref, time::Duration};

use switchyard_etcd::testing::Cluster;
use switchyard_proto::registry::v1::{self as pb, registry_client::RegistryClient};
use switchyard_registry::{Config, StoreKind};
use switchyard_runtime::ManualClock;
use tonic::transport::Channel;

pub use switchyard_registry::testing::config;

/// A registry started by these suites, with the etcd it stores in when
/// `SWITCHYARD_TEST_STORE=etcd`.
pub struct Running {
    inner: switchyard_registry::testing::Running,
    _etcd: Option<Cluster>,
}

impl Deref for Running {
    type Target = switchyard_registry::testing::Running;

    fn deref(&self) -> &Self::Target {
        &self.inner
    }
}

/// Whether these suites run on etcd: in the `on_etcd` test binary (which
/// holds every suite again), or with `SWITCHYARD_TEST_STORE=etcd`; any
/// other value than `file` or `etcd` is a mistake worth stopping for.
pub fn on_etcd() -> bool {
    let binary = std::env::current_exe().ok();
    let name = binary
        .as_ref()
        .and_then(|p| p.file_name())
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    match std::env::var("SWITCHYARD_TEST_STORE").as_deref() {
        Err(_) | Ok("") => name.starts_with("on_etcd"),
        Ok("file") => false,
        Ok("etcd") => true,
        Ok(other) => panic!("SWITCHYARD_TEST_STORE={other}: expected file or etcd"),
    }
}

pub async fn start(mut config: Config) -> Running {
    let etcd = if on_etcd() && config.store == StoreKind::File {
        let etcd = Cluster::start(1, &[]).await;
        config.store = StoreKind::Etcd;
        config.etcd_endpoints = etcd.endpoints();
        config.replica_name = "r0".into();
        Some(etcd)
    } else {
        None
    };
    let inner = switchyard_registry::testing::start(config, ManualClock::new())
        .await
        .expect("start registry");
    Running { inner, _etcd: etcd }
}

/// `msg` with `Bearer token` as its `authorization`.
pub fn authed<T>(msg: T, token: &str) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    let value: tonic::metadata::MetadataValue<_> =
        format!("Bearer {token}").parse().expect("header");
    req.metadata_mut().insert("authorization", value);
    req
}

/// A client of a running registry.
pub async fn client_of(r: &Running) -> RegistryClient<Channel> {
    RegistryClient::connect(r.url()).await.expect("connect")
}

/// Instances of a service, by id.
pub async fn ids_of(r: &Running, service: &str) -> Vec<String> {
    ids_seen_by(&mut client_of(r).await, service).await
}

/// Instances of a service, by id, as `c` reads them.
pub async fn ids_seen_by(c: &mut RegistryClient<Channel>, service: &str) -> Vec<String> {
    let got = c
        .get_service(pb::GetServiceRequest {
            service: service.into(),
        })
        .await
        .expect("get_service")
        .into_inner();
    got.instances
        .into_iter()
        .map(|i| i.spec.expect("spec").instance_id)
        .collect()
}

/// Stops a registry; it must stop cleanly within 5 s.
pub async fn stop(r: Running) {
    r.inner
        .stop()
        .await
        .expect("registry stops cleanly within 5 s");
}

pub fn spec(service: &str, id: &str) -> pb::InstanceSpec {
    pb::InstanceSpec {
        service: service.into(),
        instance_id: id.into(),
        address: "127.0.0.1:9".into(),
        protocol: pb::Protocol::Http1 as i32,
        ..Default::default()
    }
}

pub async fn register(
    c: &mut RegistryClient<Channel>,
    lease_id: u64,
    specs: Vec<pb::InstanceSpec>,
) -> pb::RegisterResponse {
    c.register(pb::RegisterRequest {
        lease_id,
        ttl_seconds: 10,
        instances: specs,
    })
    .await
    .expect("register")
    .into_inner()
}

/// Waits (bounded) for the next message of a watch stream.
pub async fn next(stream: &mut tonic::Streaming<pb::WatchResponse>) -> pb::WatchResponse {
    tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("a watch message within 5 s")
        .expect("stream ok")
        .expect("stream open")
}

/// Next message that is not a progress message.
pub async fn next_change(stream: &mut tonic::Streaming<pb::WatchResponse>) -> pb::WatchResponse {
    loop {
        let m = next(stream).await;
        if !matches!(m.kind, Some(pb::watch_response::Kind::Progress(_))) {
            return m;
        }
    }
}

pub fn events(m: &pb::WatchResponse) -> Vec<pb::Event> {
    match &m.kind {
        Some(pb::watch_response::Kind::Delta(d)) => d.events.clone(),
        other => panic!("expected a delta, got {other:?}"),
    }
}

pub fn snapshot(m: &pb::WatchResponse) -> pb::Snapshot {
    match &m.kind {
        Some(pb::watch_response::Kind::Snapshot(s)) => s.clone(),
        other => panic!("expected a snapshot, got {other:?}"),
    }
}

pub use switchyard_runtime::testing::eventually;

/// Sends `req` (its `host` set here) on a fresh HTTP/1.1 connection to
/// `addr`; the answer's body is left to read.
pub async fn send_http(
    addr: SocketAddr,
    mut req: hyper::Request<http_body_util::Full<hyper::body::Bytes>>,
) -> hyper::Response<hyper::body::Incoming> {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("handshake");
    tokio::spawn(conn);
    req.headers_mut()
        .insert("host", addr.to_string().parse().expect("host header"));
    sender.send_request(req).await.expect("response")
}

/// A small JSON HTTP call: (status, body as JSON, or Null).
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, serde_json::Value) {
    use http_body_util::{BodyExt, Full};
    use hyper::body::Bytes;
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json");
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let req = req
        .body(Full::new(Bytes::from(body.unwrap_or("").to_string())))
        .expect("request");
    let res = send_http(addr, req).await;
    let status = res.status().as_u16();
    let bytes = res.into_body().collect().await.expect("body").to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
    )
}

/// One instance as the JSON API lists it (Null when it is not listed).
pub async fn listed_instance(
    addr: SocketAddr,
    service: &str,
    id: &str,
    token: Option<&str>,
) -> serde_json::Value {
    let (_, body) = http(
        addr,
        "GET",
        &format!("/api/services/{service}"),
        token,
        None,
    )
    .await;
    body["instances"]
        .as_array()
        .and_then(|a| a.iter().find(|i| i["instance_id"] == id))
        .cloned()
        .unwrap_or_default()
}

/// An active check of `kind` each second (half a second to answer, one
/// result turns it).
pub fn check_each_second(kind: pb::health_check::Kind) -> Option<pb::HealthCheck> {
    Some(pb::HealthCheck {
        kind: Some(kind),
        interval: Some(prost_types::Duration {
            seconds: 1,
            nanos: 0,
        }),
        timeout: Some(prost_types::Duration {
            seconds: 0,
            nanos: 500_000_000,
        }),
        unhealthy_threshold: 1,
        healthy_threshold: 1,
    })
}

/// A TCP check each second.
pub fn tcp_check() -> Option<pb::HealthCheck> {
    check_each_second(pb::health_check::Kind::Tcp(pb::TcpHealthCheck {}))
}
