//! The control plane over mutual TLS (issue 21): a service registers with
//! the SDK under its own identity, the balancer follows the registry, the
//! gateway follows both and reports load to the balancer, every link TLS
//! with client certificates; traffic flows as over plaintext.

mod support;

use std::{path::Path, time::Duration};

use support::*;
use switchyard_client::{Session, Target, instance, pb::Protocol};
use switchyard_runtime::{ManualClock, testing::eventually};
use switchyard_tls::{Files, Identity};

const ROUTES: &str = r#"
[[route]]
name = "hello"
service = "hello"
path_prefix = "/hello/"
"#;

fn certificates(dir: &Path) {
    // The balancer's certificate names no host: the gateway dials it at the
    // address it advertised, and checks it by identity.
    test_certificates(
        dir,
        &[
            ("registry", Identity::Registry, &["127.0.0.1"]),
            ("balancer", Identity::Balancer, &[]),
            ("gateway", Identity::Gateway, &[]),
            ("hello", Identity::Service("hello".into()), &[]),
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_control_link_runs_over_mutual_tls() {
    let dir = temp_dir("mtls");
    certificates(&dir);
    let mut rcfg = switchyard_registry::testing::config();
    [rcfg.mtls_ca, rcfg.mtls_cert, rcfg.mtls_key] = mtls_paths(&dir, "registry");
    let registry = switchyard_registry::testing::start(rcfg, ManualClock::new())
        .await
        .expect("registry");
    let url = format!("https://{}", registry.grpc);

    // The service registers itself with the SDK, as its own identity.
    let backend = Backend::start("b0").await;
    let target = Target::new([url.as_str()], None)
        .and_then(|t| t.with_tls(Some(&Files::in_dir(&dir, "hello"))))
        .expect("target");
    let session = Session::start(target, Duration::from_secs(10));
    session.register(instance(
        "hello",
        "b0",
        &backend.addr.to_string(),
        Protocol::Http1,
    ));

    let mut bcfg = switchyard_balancer::testing::config(&url);
    [bcfg.mtls_ca, bcfg.mtls_cert, bcfg.mtls_key] = mtls_paths(&dir, "balancer");
    bcfg.register_self = true;
    bcfg.report_interval = Duration::from_millis(200);
    let balancer = switchyard_balancer::testing::start(bcfg, ManualClock::new())
        .await
        .expect("balancer");
    balancer.advance(Duration::from_secs(1)).await;

    let routes = dir.join("routes.toml");
    std::fs::write(&routes, ROUTES).expect("routes");
    let mut gcfg = switchyard_gateway::testing::config(routes.to_str().expect("utf8"), &url);
    [gcfg.mtls_ca, gcfg.mtls_cert, gcfg.mtls_key] = mtls_paths(&dir, "gateway");
    let gateway = switchyard_gateway::testing::start(gcfg)
        .await
        .expect("gateway");

    // The gateway found the balancer through the registry and follows its
    // assignments: it reached it over TLS and took it for a balancer.
    eventually("the gateway uses the balancer's assignment", || async {
        balancer.advance(Duration::from_millis(200)).await;
        let body = switchyard_runtime::probe::probe(
            gateway.admin,
            "/api/services",
            Duration::from_secs(5),
        )
        .await
        .unwrap_or_default();
        body.contains("\"source\":\"balancer\"")
    })
    .await;
    // The balancer takes the gateway's load reports (its identity may).
    eventually("the balancer lists the gateway as a reporter", || async {
        let body = switchyard_runtime::probe::probe(
            balancer.http,
            "/api/services",
            Duration::from_secs(5),
        )
        .await
        .unwrap_or_default();
        body.contains("\"reporters\":[{")
    })
    .await;
    for _ in 0..20 {
        let (code, body) = get(&format!("{}/hello/x", gateway.url())).await;
        assert_eq!(code, 200, "{body}");
        assert_eq!(instance_of(&body), "b0");
    }
    // No handshake was refused along the way.
    let metrics =
        switchyard_runtime::probe::probe(registry.http, "/metrics", Duration::from_secs(5))
            .await
            .unwrap_or_default();
    assert!(
        !metrics.contains("switchyard_tls_handshake_failures_total"),
        "a component was refused: {metrics}"
    );

    session.shutdown(Duration::ZERO).await;
    gateway.stop().await.expect("gateway stops");
    balancer.stop.cancel();
    registry.stop().await.expect("registry stops");
}
