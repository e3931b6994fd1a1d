//! Instances served over TLS (issue 21 item 4): registered with `tls`, the
//! gateway reaches them over TLS, HTTP/1.1 or h2 as ALPN offers for their
//! protocol, checks their certificate against its CA and the service's
//! identity, and presents its own certificate.

mod support;

use std::{convert::Infallible, path::Path, sync::Arc, time::Duration};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, body::Incoming, service::service_fn};
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::*;
use switchyard_client::{Session, Target, instance, pb::Protocol};
use switchyard_runtime::{ManualClock, testing::eventually};
use switchyard_tls::{
    Files, Identity,
    dev::{DevCa, Leaf},
};
use tokio::net::TcpListener;
use tokio_rustls::rustls::{
    self, RootCertStore, ServerConfig,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::WebPkiClientVerifier,
};

const ROUTES: &str = r#"
[[route]]
name = "hello"
service = "hello"
path_prefix = "/hello/"

[[route]]
name = "greet"
service = "greet"
path_prefix = "/greet/"

[[route]]
name = "rogue"
service = "rogue"
path_prefix = "/rogue/"

[[route]]
name = "impostor"
service = "impostor"
path_prefix = "/impostor/"
"#;

/// The components' certificates, and the instances': `hello` and `greet`
/// by their service identity (no host name: they are checked by identity),
/// `wrong-ca` signed by another CA, `echo` a service of our CA that is not
/// the one it will claim to be.
fn certificates(dir: &Path) {
    test_certificates(
        dir,
        &[
            ("registry", Identity::Registry, &["127.0.0.1"]),
            ("gateway", Identity::Gateway, &[]),
            ("balancer", Identity::Balancer, &[]),
            ("operator", Identity::Operator, &[]),
            ("hello", Identity::Service("hello".into()), &[]),
            ("greet", Identity::Service("greet".into()), &[]),
            ("echo", Identity::Service("echo".into()), &[]),
        ],
    );
    let other = DevCa::generate("Another CA").expect("CA");
    other
        .issue(&Leaf::new(
            Identity::Service("rogue".into()),
            &["127.0.0.1"],
            30,
        ))
        .expect("issue")
        .write(dir, "wrong-ca")
        .expect("write");
}

/// A TLS backend: `cert` is its certificate in `dir`; it requires a client
/// certificate our CA signed and answers with its id, the HTTP version it
/// was spoken to in, the client's identity and the body's length.
async fn tls_backend(dir: &Path, cert: &str, id: &str, alpn: &[&[u8]]) -> std::net::SocketAddr {
    let files = Files::in_dir(dir, cert);
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(dir.join("ca.pem")).expect("ca") {
        roots.add(c.expect("ca cert")).expect("root");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .expect("verifier");
    let chain = CertificateDer::pem_file_iter(&files.cert)
        .expect("cert")
        .collect::<Result<Vec<_>, _>>()
        .expect("cert");
    let key = PrivateKeyDer::from_pem_file(&files.key).expect("key");
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .expect("server config");
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let id = id.to_string();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let (acceptor, id) = (acceptor.clone(), id.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let client = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .and_then(|c| Identity::from_certificate(c))
                    .map(|i| i.uri())
                    .unwrap_or_default();
                let svc = service_fn(move |req: Request<Incoming>| {
                    let (id, client) = (id.clone(), client.clone());
                    async move {
                        let version = format!("{:?}", req.version());
                        let bytes = req
                            .into_body()
                            .collect()
                            .await
                            .map_or(0, |b| b.to_bytes().len());
                        let body = serde_json::json!({
                            "instance": id, "version": version, "client": client, "bytes": bytes,
                        });
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body.to_string()))))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    addr
}

fn field(body: &str, name: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v[name].as_str().map(str::to_string))
        .unwrap_or_default()
}

fn tls_instance(
    service: &str,
    id: &str,
    addr: std::net::SocketAddr,
    protocol: Protocol,
) -> switchyard_client::pb::InstanceSpec {
    let mut spec = instance(service, id, &addr.to_string(), protocol);
    spec.tls = true;
    spec
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_served_over_tls_are_reached_over_tls_and_checked() {
    let dir = temp_dir("upstream-tls");
    certificates(&dir);
    let mut rcfg = switchyard_registry::testing::config();
    [rcfg.mtls_ca, rcfg.mtls_cert, rcfg.mtls_key] = mtls_paths(&dir, "registry");
    let registry = switchyard_registry::testing::start(rcfg, ManualClock::new())
        .await
        .expect("registry");
    let url = format!("https://{}", registry.grpc);

    let h1 = tls_backend(&dir, "hello", "hello-tls", &[b"h2", b"http/1.1"]).await;
    let h2 = tls_backend(&dir, "greet", "greet-tls", &[b"h2", b"http/1.1"]).await;
    let wrong_ca = tls_backend(&dir, "wrong-ca", "rogue", &[b"http/1.1"]).await;
    let impostor = tls_backend(&dir, "echo", "impostor", &[b"http/1.1"]).await;
    let target = Target::new([url.as_str()], None)
        .and_then(|t| t.with_tls(Some(&Files::in_dir(&dir, "operator"))))
        .expect("target");
    let session = Session::start(target, Duration::from_secs(30));
    // `hello` has a good TLS instance and one of another CA: every request
    // goes to the good one (the other never completes a handshake).
    session.register(tls_instance("hello", "hello-tls", h1, Protocol::Http1));
    session.register(tls_instance(
        "hello",
        "hello-wrong-ca",
        wrong_ca,
        Protocol::Http1,
    ));
    session.register(tls_instance("greet", "greet-tls", h2, Protocol::H2c));
    session.register(tls_instance("rogue", "rogue", wrong_ca, Protocol::Http1));
    // Signed by our CA, but for `echo`, and naming no host.
    session.register(tls_instance(
        "impostor",
        "impostor",
        impostor,
        Protocol::Http1,
    ));
    session
        .registered(Duration::from_secs(10))
        .await
        .expect("registered");

    let routes = dir.join("routes.toml");
    std::fs::write(&routes, ROUTES).expect("routes");
    let mut gcfg = switchyard_gateway::testing::config(routes.to_str().expect("utf8"), &url);
    [gcfg.mtls_ca, gcfg.mtls_cert, gcfg.mtls_key] = mtls_paths(&dir, "gateway");
    let gateway = switchyard_gateway::testing::start(gcfg)
        .await
        .expect("gateway");
    eventually("the gateway sees the TLS instances", || async {
        let body = switchyard_runtime::probe::probe(
            gateway.admin,
            "/api/services",
            Duration::from_secs(5),
        )
        .await
        .unwrap_or_default();
        body.matches("\"tls\":true").count() >= 5
    })
    .await;

    // From the registry's view, then from a balancer's assignments.
    answers_over_tls(&gateway).await;
    let mut bcfg = switchyard_balancer::testing::config(&url);
    [bcfg.mtls_ca, bcfg.mtls_cert, bcfg.mtls_key] = mtls_paths(&dir, "balancer");
    bcfg.register_self = true;
    bcfg.report_interval = Duration::from_millis(200);
    let balancer = switchyard_balancer::testing::start(bcfg, ManualClock::new())
        .await
        .expect("balancer");
    eventually("the gateway uses the balancer's assignments", || async {
        balancer.advance(Duration::from_millis(200)).await;
        let body = switchyard_runtime::probe::probe(
            gateway.admin,
            "/api/services",
            Duration::from_secs(5),
        )
        .await
        .unwrap_or_default();
        body.matches("\"source\":\"balancer\"").count() >= 4
            && body.matches("\"tls\":true").count() >= 5
    })
    .await;
    answers_over_tls(&gateway).await;

    session.shutdown(Duration::ZERO).await;
    gateway.stop().await.expect("gateway stops");
    balancer.stop.cancel();
    registry.stop().await.expect("registry stops");
}

/// `hello` over HTTP/1.1 and TLS, `greet` over h2 and TLS, the gateway's
/// certificate presented; `rogue` and `impostor` never reached.
async fn answers_over_tls(gateway: &switchyard_gateway::testing::Running) {
    // HTTP/1.1 over TLS (ALPN http/1.1 though the server offers h2 too),
    // the gateway's certificate presented; a body goes through whole.
    for _ in 0..10 {
        let (code, body) = send(
            hyper::Method::POST,
            &format!("{}/hello/x", gateway.url()),
            &[],
            Bytes::from(vec![b'x'; 3000]),
        )
        .await;
        assert_eq!(code, 200, "{body}");
        assert_eq!(instance_of(&body), "hello-tls", "{body}");
        assert_eq!(field(&body, "version"), "HTTP/1.1", "{body}");
        assert_eq!(field(&body, "client"), Identity::Gateway.uri(), "{body}");
        assert!(body.contains("\"bytes\":3000"), "{body}");
    }
    // h2 over TLS for an H2C instance.
    let (code, body) = get(&format!("{}/greet/x", gateway.url())).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(field(&body, "version"), "HTTP/2.0", "{body}");
    assert_eq!(field(&body, "client"), Identity::Gateway.uri(), "{body}");

    // Another CA's certificate, and our CA's certificate for another
    // service: no request reaches them.
    for service in ["rogue", "impostor"] {
        let (code, body) = get(&format!("{}/{service}/x", gateway.url())).await;
        assert_eq!(code, 502, "{service}: {body}");
        assert!(!body.contains("instance"), "{service}: {body}");
    }
    let metrics =
        switchyard_runtime::probe::probe(gateway.admin, "/metrics", Duration::from_secs(5))
            .await
            .unwrap_or_default();
    for service in ["rogue", "impostor"] {
        assert!(
            metrics.contains(&format!(
                "switchyard_gateway_upstream_tls_failures_total{{service=\"{service}\"}}"
            )),
            "{metrics}"
        );
    }
}

/// A gateway without mtls_* files cannot reach an instance served over
/// TLS: it answers 502 rather than speaking plaintext to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_without_certificates_does_not_speak_plaintext_to_a_tls_instance() {
    let dir = temp_dir("upstream-tls-plain");
    certificates(&dir);
    let addr = tls_backend(&dir, "hello", "hello-tls", &[b"http/1.1"]).await;
    let mut spec = spec("hello", "hello-tls", addr, Protocol::Http1);
    spec.tls = true;
    let stack = Stack::start(ROUTES, vec![spec]).await;
    let (code, body) = get(&format!("{}/hello/x", stack.gateway.url())).await;
    assert_eq!(code, 502, "{body}");
    stack.gateway.stop().await.expect("gateway stops");
}
