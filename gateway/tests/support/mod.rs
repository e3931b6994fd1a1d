//! Test support: small real backends (HTTP and gRPC) on port 0, the real
//! registry, and a gateway in front of them.
#![allow(dead_code, unreachable_pub, unused_imports)]

pub mod recorder;
pub mod wire;

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::{Request, Response, body::Frame, body::Incoming, service::service_fn};
use hyper_util::rt::{TokioExecutor, TokioIo};
use switchyard_proto::registry::v1::{self as reg, registry_client::RegistryClient};
use switchyard_registry::testing as registry;
use switchyard_runtime::ManualClock;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_tungstenite::tungstenite::{handshake::derive_accept_key, protocol::Role};

pub type Body = BoxBody<Bytes, Infallible>;

/// A small HTTP backend.
#[derive(Debug)]
pub struct Backend {
    pub id: String,
    pub addr: SocketAddr,
    pub hits: AtomicU64,
    pub paused: AtomicBool,
    pub failing: AtomicBool,
    pub delay_ms: AtomicU64,
    stop: tokio_util::sync::CancellationToken,
}

fn full(s: impl Into<Bytes>) -> Body {
    Full::new(s.into()).map_err(|never| match never {}).boxed()
}

impl Backend {
    pub async fn start(id: &str) -> Arc<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind backend");
        let b = Arc::new(Self {
            id: id.to_string(),
            addr: listener.local_addr().expect("addr"),
            hits: AtomicU64::new(0),
            paused: AtomicBool::new(false),
            failing: AtomicBool::new(false),
            delay_ms: AtomicU64::new(0),
            stop: tokio_util::sync::CancellationToken::new(),
        });
        let me = b.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = tokio::select! {
                    () = me.stop.cancelled() => return,
                    a = listener.accept() => match a { Ok(a) => a, Err(_) => continue },
                };
                let me = me.clone();
                let stop = me.stop.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| me.clone().handle(req));
                    let builder =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc);
                    tokio::select! {
                        _ = conn => {}
                        () = stop.cancelled() => {}
                    }
                });
            }
        });
        b
    }

    /// Closes the listener and every connection: like a killed process.
    pub fn kill(&self) {
        self.stop.cancel();
    }

    async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
        self.hits.fetch_add(1, Ordering::Relaxed);
        while self.paused.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let delay = self.delay_ms.load(Ordering::Relaxed);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        if self.failing.load(Ordering::Relaxed) {
            let mut r = Response::new(full("failing"));
            *r.status_mut() = hyper::StatusCode::SERVICE_UNAVAILABLE;
            return Ok(r);
        }
        let path = req.uri().path().to_string();
        if path.ends_with("/ws") {
            return Ok(websocket(req));
        }
        if path.ends_with("/upload") {
            let mut body = req.into_body();
            let mut n = 0u64;
            while let Some(frame) = body.frame().await {
                if let Ok(data) = frame.map(|f| f.into_data()) {
                    n += data.map(|d| d.len() as u64).unwrap_or(0);
                } else {
                    break;
                }
            }
            return Ok(Response::new(full(
                serde_json::json!({ "instance": self.id, "bytes": n }).to_string(),
            )));
        }
        if path.ends_with("/download") {
            let total: u64 = req
                .uri()
                .query()
                .and_then(|q| q.strip_prefix("bytes="))
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
            let chunks = total.div_ceil(chunk.len() as u64);
            let stream = futures_util::stream::iter((0..chunks).map(move |i| {
                let left = total - i * chunk.len() as u64;
                Ok::<_, Infallible>(Frame::data(
                    chunk.slice(..(left.min(chunk.len() as u64) as usize)),
                ))
            }));
            return Ok(Response::new(BodyExt::boxed(StreamBody::new(stream))));
        }
        let h = |n: &str| {
            req.headers()
                .get(n)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string()
        };
        let body = serde_json::json!({
            "instance": self.id,
            "method": req.method().as_str(),
            "path": req.uri().path_and_query().map(|p| p.as_str()).unwrap_or(""),
            "host": h("host"),
            "x_forwarded_for": h("x-forwarded-for"),
            "x_forwarded_proto": h("x-forwarded-proto"),
            "x_request_id": h("x-request-id"),
            "traceparent": h("traceparent"),
            "connection": h("connection"),
            "version": format!("{:?}", req.version()),
        });
        Ok(Response::new(full(body.to_string())))
    }
}

fn websocket(mut req: Request<Incoming>) -> Response<Body> {
    let key = req.headers().get("sec-websocket-key").cloned();
    let Some(key) = key else {
        let mut r = Response::new(full("not a websocket"));
        *r.status_mut() = hyper::StatusCode::BAD_REQUEST;
        return r;
    };
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else { return };
        let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
            TokioIo::new(upgraded),
            Role::Server,
            None,
        )
        .await;
        while let Some(Ok(msg)) = ws.next().await {
            if msg.is_close() {
                break;
            }
            if ws.send(msg).await.is_err() {
                break;
            }
        }
    });
    let mut res = Response::new(full(""));
    *res.status_mut() = hyper::StatusCode::SWITCHING_PROTOCOLS;
    let h = res.headers_mut();
    h.insert("connection", "upgrade".parse().expect("value"));
    h.insert("upgrade", "websocket".parse().expect("value"));
    h.insert(
        "sec-websocket-accept",
        derive_accept_key(key.as_bytes()).parse().expect("value"),
    );
    res
}

/// A gRPC backend: health (unary and server streaming) and reflection
/// (bidirectional), served by our own accept loop so that `kill` closes every
/// connection at once, like a killed process.
pub struct GrpcBackend {
    pub addr: SocketAddr,
    pub reporter: tonic_health::server::HealthReporter,
    stop: tokio_util::sync::CancellationToken,
}

impl GrpcBackend {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (reporter, health) = tonic_health::server::health_reporter();
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()
            .expect("reflection");
        let routes = tonic::service::Routes::new(health).add_service(reflection);
        let stop = tokio_util::sync::CancellationToken::new();
        let token = stop.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = tokio::select! {
                    () = token.cancelled() => return,
                    a = listener.accept() => match a { Ok(a) => a, Err(_) => continue },
                };
                let routes = routes.clone();
                let token = token.clone();
                tokio::spawn(async move {
                    let svc = hyper_util::service::TowerToHyperService::new(routes);
                    let builder =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    let conn = builder.serve_connection(TokioIo::new(stream), svc);
                    tokio::select! {
                        _ = conn => {}
                        () = token.cancelled() => {}
                    }
                });
            }
        });
        Self {
            addr,
            reporter,
            stop,
        }
    }

    pub fn kill(&self) {
        self.stop.cancel();
    }
}

/// The registry with some instances, and a gateway with `routes`.
pub struct Stack {
    pub registry: registry::Running,
    pub gateway: switchyard_gateway::testing::Running,
    pub routes: std::path::PathBuf,
    pub lease: u64,
}

pub fn spec(
    service: &str,
    id: &str,
    addr: SocketAddr,
    protocol: reg::Protocol,
) -> reg::InstanceSpec {
    reg::InstanceSpec {
        service: service.into(),
        instance_id: id.into(),
        address: addr.to_string(),
        protocol: protocol as i32,
        ..Default::default()
    }
}

pub fn temp_dir(tag: &str) -> std::path::PathBuf {
    let n: u64 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let dir = std::env::temp_dir().join(format!("sy-gw-{tag}-{n}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

impl Stack {
    /// Registry + gateway; `specs` registered; gateway waits until every
    /// route service has a view.
    pub async fn start(routes: &str, specs: Vec<reg::InstanceSpec>) -> Self {
        Self::start_with(routes, specs, |_| {}).await
    }

    pub async fn start_with(
        routes: &str,
        specs: Vec<reg::InstanceSpec>,
        tweak: impl FnOnce(&mut switchyard_gateway::Config),
    ) -> Self {
        let registry = registry::start(registry::config(), ManualClock::new())
            .await
            .expect("registry");
        let mut lease = 0;
        if !specs.is_empty() {
            let mut c = RegistryClient::connect(registry.url())
                .await
                .expect("registry client");
            lease = c
                .register(reg::RegisterRequest {
                    lease_id: 0,
                    ttl_seconds: 300,
                    instances: specs,
                })
                .await
                .expect("register")
                .into_inner()
                .lease_id;
        }
        let dir = temp_dir("routes");
        let path = dir.join("routes.toml");
        std::fs::write(&path, routes).expect("write routes");
        let mut cfg =
            switchyard_gateway::testing::config(path.to_str().expect("utf8"), &registry.url());
        tweak(&mut cfg);
        let gateway = switchyard_gateway::testing::start(cfg)
            .await
            .expect("gateway");
        let ready = async {
            loop {
                if switchyard_runtime::probe::probe(
                    gateway.admin,
                    "/readyz",
                    Duration::from_secs(1),
                )
                .await
                .is_ok()
                {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), ready)
            .await
            .expect("gateway ready within 10 s");
        Self {
            registry,
            gateway,
            routes: path,
            lease,
        }
    }

    pub async fn registry_client(&self) -> RegistryClient<tonic::transport::Channel> {
        RegistryClient::connect(self.registry.url())
            .await
            .expect("registry client")
    }
}

/// An HTTP/1.1 client with a pool.
pub fn client() -> hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Full<Bytes>,
> {
    hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http()
}

/// GET `url`: (status, body text).
pub async fn get(url: &str) -> (u16, String) {
    send(hyper::Method::GET, url, &[], Bytes::new()).await
}

/// Any request: (status, body text). Transport errors are status 0.
pub async fn send(
    method: hyper::Method,
    url: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> (u16, String) {
    let mut req = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(body)).expect("request");
    match tokio::time::timeout(Duration::from_secs(20), client().request(req)).await {
        Ok(Ok(res)) => {
            let status = res.status().as_u16();
            let body = res
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            (status, String::from_utf8_lossy(&body).into_owned())
        }
        _ => (0, String::new()),
    }
}

/// The `instance` a backend answered with.
pub fn instance_of(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["instance"].as_str().map(str::to_string))
        .unwrap_or_default()
}

pub use recorder::Recorder;
pub use switchyard_runtime::testing::eventually;
pub use wire::{Answer, closed, read_answer};

/// A test CA in `dir/ca.pem` and a certificate signed by it for each
/// `(file name, identity, host names)`, valid 30 days; the CA, for more.
pub fn test_certificates(
    dir: &std::path::Path,
    leaves: &[(&str, switchyard_tls::Identity, &[&str])],
) -> switchyard_tls::dev::DevCa {
    let ca = switchyard_tls::dev::DevCa::generate("Switchyard test CA").expect("CA");
    std::fs::write(dir.join("ca.pem"), ca.cert_pem()).expect("ca.pem");
    for (name, identity, names) in leaves {
        ca.issue(&switchyard_tls::dev::Leaf::new(identity.clone(), names, 30))
            .expect("issue")
            .write(dir, name)
            .expect("write");
    }
    ca
}

/// `mtls_ca`, `mtls_cert` and `mtls_key` for the certificate `name` in
/// `dir`, as a binary's settings take them.
pub fn mtls_paths(dir: &std::path::Path, name: &str) -> [String; 3] {
    let f = switchyard_tls::Files::in_dir(dir, name);
    [&f.ca, &f.cert, &f.key].map(|p| p.display().to_string())
}
