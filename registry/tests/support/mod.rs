//! Test support: the real registry in-process on port 0 with a manual clock,
//! and as a process.
#![allow(dead_code, unreachable_pub, unused_imports)]

use std::{net::SocketAddr, time::Duration};

use switchyard_proto::registry::v1::{self as pb, registry_client::RegistryClient};
use switchyard_registry::Config;
use switchyard_runtime::ManualClock;
use tonic::transport::Channel;

pub use switchyard_registry::testing::{Running, config};

pub async fn start(config: Config) -> Running {
    switchyard_registry::testing::start(config, ManualClock::new())
        .await
        .expect("start registry")
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
    let mut c = client_of(r).await;
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
    r.stop().await.expect("registry stops cleanly within 5 s");
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
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("handshake");
    tokio::spawn(conn);
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string())
        .header("content-type", "application/json");
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let req = req
        .body(Full::new(Bytes::from(body.unwrap_or("").to_string())))
        .expect("request");
    let res = sender.send_request(req).await.expect("response");
    let status = res.status().as_u16();
    let bytes = res.into_body().collect().await.expect("body").to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
    )
}
