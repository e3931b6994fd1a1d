//! Server reflection lists what a port serves, and every service it lists
//! answers there: a grpcurl-style client lists, describes, then calls. (The
//! balancer's contract imports the registry's, and both ports once listed
//! both services.)

use std::time::Duration;

use switchyard_balancer::testing as bal;
use switchyard_proto::{
    balancer::v1::{self as pb, balancer_client::BalancerClient},
    registry::v1::{self as reg, registry_client::RegistryClient},
};
use switchyard_registry::testing as registry;
use switchyard_runtime::ManualClock;
use tokio_stream::StreamExt;
use tonic::{Code, transport::Channel};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
use tonic_reflection::pb::{v1, v1alpha};

/// The services reflection v1 and v1alpha list on `channel`'s port.
async fn listed(channel: &Channel) -> (Vec<String>, Vec<String>) {
    let request = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let mut answers = v1::server_reflection_client::ServerReflectionClient::new(channel.clone())
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("reflection v1")
        .into_inner();
    let Some(Ok(v1::ServerReflectionResponse {
        message_response:
            Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(list)),
        ..
    })) = answers.next().await
    else {
        panic!("a v1 service list");
    };
    let mut one: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::ListServices(String::new()),
        ),
    };
    let mut answers =
        v1alpha::server_reflection_client::ServerReflectionClient::new(channel.clone())
            .server_reflection_info(tokio_stream::iter([request]))
            .await
            .expect("reflection v1alpha")
            .into_inner();
    let Some(Ok(v1alpha::ServerReflectionResponse {
        message_response:
            Some(v1alpha::server_reflection_response::MessageResponse::ListServicesResponse(list)),
        ..
    })) = answers.next().await
    else {
        panic!("a v1alpha service list");
    };
    let mut alpha: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    one.sort();
    alpha.sort();
    (one, alpha)
}

/// Calls one method of `service` on `channel`: anything but UNIMPLEMENTED.
async fn call(channel: &Channel, service: &str) {
    let code = match service {
        "grpc.health.v1.Health" => HealthClient::new(channel.clone())
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .map_or_else(|s| s.code(), |_| Code::Ok),
        // Listing was the call.
        "grpc.reflection.v1.ServerReflection" | "grpc.reflection.v1alpha.ServerReflection" => {
            Code::Ok
        }
        "switchyard.registry.v1.Registry" => RegistryClient::new(channel.clone())
            .list_services(reg::ListServicesRequest::default())
            .await
            .map_or_else(|s| s.code(), |_| Code::Ok),
        "switchyard.balancer.v1.Balancer" => BalancerClient::new(channel.clone())
            .pick(pb::PickRequest {
                service: "nothing-here".into(),
                ..Default::default()
            })
            .await
            .map_or_else(|s| s.code(), |_| Code::Ok),
        other => panic!("{other} is listed, and this test does not know how to call it"),
    };
    assert_ne!(code, Code::Unimplemented, "{service} listed but not served");
}

#[tokio::test]
async fn each_port_lists_what_it_serves_and_serves_what_it_lists() {
    let registry = registry::start(registry::config(), ManualClock::new())
        .await
        .expect("registry");
    let balancer = bal::start(bal::config(&registry.url()), ManualClock::new())
        .await
        .expect("balancer");
    for (url, own) in [
        (registry.url(), "switchyard.registry.v1.Registry"),
        (balancer.url(), "switchyard.balancer.v1.Balancer"),
    ] {
        let channel = tonic::transport::Endpoint::from_shared(url)
            .expect("url")
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .expect("connect");
        let (one, alpha) = listed(&channel).await;
        let mut want = vec![
            "grpc.health.v1.Health".to_string(),
            "grpc.reflection.v1.ServerReflection".into(),
            "grpc.reflection.v1alpha.ServerReflection".into(),
            own.into(),
        ];
        want.sort();
        assert_eq!(one, want, "reflection v1 on {own}'s port");
        assert_eq!(alpha, want, "reflection v1alpha on {own}'s port");
        for service in &one {
            call(&channel, service).await;
        }
    }
}
