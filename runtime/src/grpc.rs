//! Serving a gRPC service the way every Switchyard server does: beside
//! `grpc.health.v1` (SERVING until shutdown) and server reflection (v1 and
//! v1alpha), with HTTP/2 keep-alive pings and `TCP_NODELAY`.

use std::{convert::Infallible, time::Duration};

use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;
use tonic::{body::Body, server::NamedService, transport::server::TcpIncoming};
use tower::Service;

/// Spawns the server; it stops accepting when `shutdown` fires (health
/// turns NOT_SERVING first) and ends once its connections have.
pub fn spawn<S>(
    service: S,
    descriptors: &[&'static [u8]],
    listener: TcpListener,
    keepalive: (Duration, Duration),
    shutdown: CancellationToken,
) -> Result<JoinHandle<Result<(), tonic::transport::Error>>, tonic_reflection::server::Error>
where
    S: Service<http::Request<Body>, Error = Infallible>
        + NamedService
        + Clone
        + Send
        + Sync
        + 'static,
    S::Response: axum::response::IntoResponse,
    S::Future: Send + 'static,
{
    let (health, health_service) = tonic_health::server::health_reporter();
    // Reflection lists what this port serves, not every service of the
    // descriptor sets (the balancer's contract imports the registry's):
    // clients that list, describe, then call must not meet UNIMPLEMENTED.
    let reflection = || {
        let served = [
            S::NAME,
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection",
        ];
        let builder = served.into_iter().fold(
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET),
            |b, name| b.with_service_name(name),
        );
        descriptors.iter().fold(builder, |b, fds| {
            b.register_encoded_file_descriptor_set(fds)
        })
    };
    let router = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(keepalive.0))
        .http2_keepalive_timeout(Some(keepalive.1))
        .layer(tower::util::MapResponseLayer::new(resource_exhausted))
        .add_service(health_service)
        .add_service(reflection().build_v1()?)
        .add_service(reflection().build_v1alpha()?)
        .add_service(service);
    // Nagle plus delayed ACKs would add ~40 ms to small answers.
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    Ok(tokio::spawn(async move {
        health.set_serving::<S>().await;
        router
            .serve_with_incoming_shutdown(incoming, async move {
                shutdown.cancelled().await;
                health.set_not_serving::<S>().await;
            })
            .await
    }))
}

/// gRPC's status table gives RESOURCE_EXHAUSTED for a message over the
/// size limit (grpc-go and grpc-java send it); tonic sends OUT_OF_RANGE.
/// Our services never send OUT_OF_RANGE themselves, so every one is that
/// limit's: rewritten in a trailers-only answer (a unary call's request
/// too large) and in trailers (a stream's message too large).
fn resource_exhausted(res: http::Response<Body>) -> http::Response<Body> {
    fn rewrite(h: &mut http::HeaderMap) {
        if h.get("grpc-status").is_some_and(|v| v == "11") {
            h.insert("grpc-status", http::HeaderValue::from_static("8"));
        }
    }
    let (mut parts, body) = res.into_parts();
    rewrite(&mut parts.headers);
    let body = http_body_util::BodyExt::map_frame(body, |mut frame| {
        if let Some(trailers) = frame.trailers_mut() {
            rewrite(trailers);
        }
        frame
    });
    http::Response::from_parts(parts, Body::new(body))
}
