//! What every gRPC server of ours serves beside its own service (health and
//! reflection), the metrics the registry exports, and the HTTP and gRPC
//! kinds of active health check.

mod support;

use std::time::Duration;

use support::*;
use switchyard_proto::registry::v1 as pb;
use tokio_stream::{StreamExt, wrappers::TcpListenerStream};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use tonic_reflection::pb::v1::{
    ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
    server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
};

#[tokio::test]
async fn serves_grpc_health_and_reflection() {
    let r = start(config()).await;
    let channel = tonic::transport::Endpoint::from_shared(r.url())
        .expect("url")
        .connect()
        .await
        .expect("connect");
    let mut health = HealthClient::new(channel.clone());
    for service in ["", "switchyard.registry.v1.Registry"] {
        let answer = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("health")
            .into_inner();
        assert_eq!(answer.status(), ServingStatus::Serving, "{service:?}");
    }
    let mut reflection = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = reflection
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("reflection")
        .into_inner();
    let answer = answers.next().await.expect("an answer").expect("ok");
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("expected a service list");
    };
    let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    for expected in ["switchyard.registry.v1.Registry", "grpc.health.v1.Health"] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }
    stop(r).await;
}

#[tokio::test]
async fn metrics_show_instances_leases_watchers_and_latency() {
    let r = start(config()).await;
    let mut c = client_of(&r).await;
    register(
        &mut c,
        0,
        vec![spec("metered", "m1"), spec("metered", "m2")],
    )
    .await;
    let _watch = c.watch(pb::WatchRequest::default()).await.expect("watch");
    let mut body = String::new();
    for _ in 0..60 {
        body = switchyard_runtime::probe::probe(r.http, "/metrics", Duration::from_secs(5))
            .await
            .expect("metrics");
        if body.contains(r#"switchyard_registry_instances{service="metered",state="SERVING"} 2"#) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for expected in [
        r#"switchyard_registry_instances{service="metered",state="SERVING"} 2"#,
        "switchyard_registry_leases",
        "switchyard_registry_watchers",
        "switchyard_registry_brake_engaged 0",
        r#"switchyard_registry_rpc_seconds_count{method="Register"}"#,
    ] {
        assert!(body.contains(expected), "`{expected}` not in:\n{body}");
    }
    stop(r).await;
}

fn check(kind: pb::health_check::Kind) -> Option<pb::HealthCheck> {
    support::check_each_second(kind)
}

async fn health_of(r: &Running, id: &str) -> pb::Health {
    let got = client_of(r)
        .await
        .get_service(pb::GetServiceRequest {
            service: "checked".into(),
        })
        .await
        .expect("get")
        .into_inner();
    got.instances
        .iter()
        .find(|i| i.spec.as_ref().is_some_and(|s| s.instance_id == id))
        .expect("instance")
        .health()
}

#[tokio::test]
async fn http_and_grpc_checks_follow_the_instance() {
    let r = start(config()).await;
    // An HTTP instance: our own admin router answers /readyz.
    let http_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let http_addr = http_listener.local_addr().expect("addr");
    let readiness = switchyard_runtime::Readiness::waiting_for(Vec::<String>::new());
    let http_server = tokio::spawn(switchyard_runtime::admin::serve(
        http_listener,
        switchyard_runtime::admin::router(readiness),
        std::future::pending(),
    ));
    // A gRPC instance with a health service we can flip.
    let grpc_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let grpc_addr = grpc_listener.local_addr().expect("addr");
    let (reporter, health_service) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("echo", tonic_health::ServingStatus::Serving)
        .await;
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(health_service)
            .serve_with_incoming(TcpListenerStream::new(grpc_listener)),
    );
    let mut c = client_of(&r).await;
    let specs = vec![
        pb::InstanceSpec {
            address: http_addr.to_string(),
            health_check: check(pb::health_check::Kind::Http(pb::HttpHealthCheck {
                path: "/readyz".into(),
            })),
            ..spec("checked", "http")
        },
        pb::InstanceSpec {
            address: grpc_addr.to_string(),
            protocol: pb::Protocol::Grpc as i32,
            health_check: check(pb::health_check::Kind::Grpc(pb::GrpcHealthCheck {
                service: "echo".into(),
            })),
            ..spec("checked", "grpc")
        },
    ];
    register(&mut c, 0, specs).await;
    eventually("both healthy", || async {
        health_of(&r, "http").await == pb::Health::Healthy
            && health_of(&r, "grpc").await == pb::Health::Healthy
    })
    .await;
    reporter
        .set_service_status("echo", tonic_health::ServingStatus::NotServing)
        .await;
    http_server.abort();
    eventually("both unhealthy", || async {
        health_of(&r, "http").await == pb::Health::Unhealthy
            && health_of(&r, "grpc").await == pb::Health::Unhealthy
    })
    .await;
    reporter
        .set_service_status("echo", tonic_health::ServingStatus::Serving)
        .await;
    eventually("grpc healthy again", || async {
        health_of(&r, "grpc").await == pb::Health::Healthy
    })
    .await;
    stop(r).await;
}
