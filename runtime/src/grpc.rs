//! Serving a gRPC service the way every Switchyard server does: beside
//! `grpc.health.v1` (SERVING until shutdown) and server reflection (v1 and
//! v1alpha), with HTTP/2 keep-alive pings and `TCP_NODELAY`; over mutual
//! TLS when the binary has certificate files.

use std::{
    convert::Infallible,
    io,
    net::SocketAddr,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use switchyard_tls::{Identity, Peer, ServerTls};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::mpsc,
    task::JoinHandle,
};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{
    body::Body,
    server::NamedService,
    transport::server::{Connected, TcpIncoming},
};
use tower::Service;

/// How long a client may take over its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Spawns the server; it stops accepting when `shutdown` fires (health
/// turns NOT_SERVING first) and ends once its connections have. With `tls`,
/// every connection is TLS 1.3 with a client certificate the CA signed, and
/// each request carries the client's [`Peer`] in its extensions.
pub fn spawn<S>(
    service: S,
    descriptors: &[&'static [u8]],
    listener: TcpListener,
    tls: Option<ServerTls>,
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
    if tls.is_none() {
        tracing::warn!(
            service = S::NAME,
            "gRPC is plaintext: set mtls_ca, mtls_cert and mtls_key for mutual TLS"
        );
    }
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
    Ok(tokio::spawn(async move {
        health.set_serving::<S>().await;
        let stopped = {
            let shutdown = shutdown.clone();
            async move {
                shutdown.cancelled().await;
                health.set_not_serving::<S>().await;
            }
        };
        match tls {
            Some(tls) => {
                let incoming = ReceiverStream::new(accept_tls(listener, tls, shutdown));
                router.serve_with_incoming_shutdown(incoming, stopped).await
            }
            None => {
                // Nagle plus delayed ACKs would add ~40 ms to small answers.
                let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
                router.serve_with_incoming_shutdown(incoming, stopped).await
            }
        }
    }))
}

/// A client connection over TLS, with who the client is.
struct Secured {
    stream: tokio_rustls::server::TlsStream<TcpStream>,
    peer: Peer,
}

impl Connected for Secured {
    type ConnectInfo = Peer;

    fn connect_info(&self) -> Peer {
        self.peer.clone()
    }
}

impl AsyncRead for Secured {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Secured {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Accepts until `shutdown`, each handshake in a task of its own (a slow
/// or silent client holds up no other), and hands on the connections whose
/// handshake passed. A refused client (plaintext, no certificate, a
/// certificate another CA signed, an expired one) is counted and logged.
fn accept_tls(
    listener: TcpListener,
    tls: ServerTls,
    shutdown: CancellationToken,
) -> mpsc::Receiver<io::Result<Secured>> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let (tcp, remote) = tokio::select! {
                () = shutdown.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Out of descriptors and the like: pause, do not spin.
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let (tx, acceptor) = (tx.clone(), tls.acceptor());
            tokio::spawn(async move {
                let _ = tcp.set_nodelay(true);
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let peer = peer(&stream, remote);
                        let _ = tx.send(Ok(Secured { stream, peer })).await;
                    }
                    Ok(Err(error)) => refused(remote, &error),
                    Err(_) => refused(remote, &"no handshake within 10 s"),
                }
            });
        }
    });
    rx
}

fn peer(stream: &tokio_rustls::server::TlsStream<TcpStream>, remote: SocketAddr) -> Peer {
    let identity = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(|cert| Identity::from_certificate(cert));
    Peer {
        remote_addr: Some(remote),
        identity,
    }
}

fn refused(remote: SocketAddr, error: &dyn std::fmt::Display) {
    metrics::counter!("switchyard_tls_handshake_failures_total").increment(1);
    tracing::info!(%remote, %error, "TLS handshake refused");
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
