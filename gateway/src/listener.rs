//! Accepting connections: HTTP/1.1 and HTTP/2 (prior knowledge) on the
//! plain listener, TLS with ALPN on the other, upgrades allowed, a deadline
//! for request headers, and graceful shutdown (GOAWAY on HTTP/2, close of
//! idle HTTP/1.1 connections, in-flight requests allowed to finish).
//!
//! Plain connections start on the gateway's own HTTP/1.1 path
//! ([`crate::http1::server`]), which hands what it does not serve to hyper's server;
//! TLS connections go to hyper's server directly.

use std::{
    convert::Infallible, future::Future, net::SocketAddr, pin::Pin, sync::Arc, time::Duration,
};

use hyper::{
    Request, Response,
    body::Incoming,
    service::{Service, service_fn},
};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
};
use socket2::{Domain, SockRef, Socket, Type};
use switchyard_runtime::ConfigError;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    app::{Gateway, Peer},
    http1::server::{self, ConnSettings, Ended},
    proxy::ProxyBody,
};

/// A listening socket for the setting `key`, with `SO_REUSEPORT` so that
/// each worker can have one of its own on the same address ([`twin`]). A
/// failure names the setting and the address.
pub fn bind(key: &str, addr: SocketAddr) -> std::io::Result<TcpListener> {
    reuse_port(addr)
        .and_then(TcpListener::from_std)
        .map_err(|e| {
            std::io::Error::new(e.kind(), format!("cannot listen on {addr} (`{key}`): {e}"))
        })
}

/// Another listening socket on `listener`'s address, for a worker: a
/// socket of its own if `listener` has `SO_REUSEPORT` (the kernel then
/// spreads new connections over them), else the same socket shared (each
/// worker's accept takes its turn). It is registered with a runtime by
/// the worker that serves it.
pub fn twin(listener: &TcpListener) -> std::io::Result<std::net::TcpListener> {
    let first = SockRef::from(listener);
    if first.reuse_port()? {
        reuse_port(listener.local_addr()?)
    } else {
        Ok(first.try_clone()?.into())
    }
}

/// A non-blocking listening socket on `addr` with `SO_REUSEADDR` (as
/// tokio's own `bind`) and `SO_REUSEPORT`.
fn reuse_port(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// Serves `listener` until `stop`, then drains within `deadline`.
pub async fn serve(
    gw: Arc<Gateway>,
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    settings: ConnSettings,
    stop: CancellationToken,
    deadline: Duration,
) {
    let graceful = GracefulShutdown::new();
    let builder = Arc::new(hyper_server(&gw, settings));
    // Connections on the gateway's own path: told to close when idle by
    // `draining`, and waited for by `tracker` (hyper's are watched by
    // `graceful`, including those handed over from our path).
    let draining = CancellationToken::new();
    let tracker = TaskTracker::new();
    // Connections accepted by each worker (Envoy counts per worker too): how
    // evenly the kernel spreads them over the workers' sockets.
    let accepted = metrics::counter!(
        "switchyard_gateway_worker_connections_total",
        "worker" => crate::worker::index().to_string(),
    );
    loop {
        let (stream, addr) = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        accepted.increment(1);
        let _ = stream.set_nodelay(true);
        let gw = gw.clone();
        let builder = builder.clone();
        let peer = Peer::new(addr, tls.is_some());
        match &tls {
            None => {
                let watcher = graceful.watcher();
                let draining = draining.clone();
                tokio::spawn(tracker.track_future(async move {
                    let io = match server::serve(&gw, stream, &peer, settings, &draining).await {
                        Ended::Closed => return,
                        Ended::Handoff(io) => io,
                    };
                    let service = hyper_service(gw, peer);
                    // Boxed: hyper's connection is large, and inline every
                    // connection of the gateway's own path (most of them,
                    // idle ones included) would carry its size.
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
                    if let Err(error) = Box::pin(watcher.watch(conn.into_owned())).await {
                        tracing::debug!(%error, "connection ended with an error");
                    }
                }));
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                let watcher = graceful.watcher();
                let service = hyper_service(gw, peer);
                tokio::spawn(async move {
                    let tls = match tokio::time::timeout(
                        Duration::from_secs(10),
                        acceptor.accept(stream),
                    )
                    .await
                    {
                        Ok(Ok(tls)) => tls,
                        _ => return,
                    };
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
                    if let Err(error) = watcher.watch(conn.into_owned()).await {
                        tracing::debug!(%error, "tls connection ended with an error");
                    }
                });
            }
        }
    }
    drop(listener);
    draining.cancel();
    tracker.close();
    let all_closed = async {
        tokio::join!(graceful.shutdown(), tracker.wait());
    };
    tokio::select! {
        () = all_closed => tracing::info!("all connections closed"),
        () = tokio::time::sleep(deadline) => tracing::warn!("drain deadline passed with connections open"),
    }
}

/// What hyper calls per request. The request's future is boxed: HTTP/2
/// spawns it as a task per stream, and inline it (several KB) was copied
/// into hyper's stream future and again into the task, more time than the
/// allocation takes (bench/PROFILE.md, eighth round).
fn hyper_service(
    gw: Arc<Gateway>,
    peer: Peer,
) -> impl Service<Request<Incoming>, Response = Response<ProxyBody>, Error = Infallible, Future = Handled>
{
    service_fn(move |req: Request<Incoming>| -> Handled {
        Box::pin(gw.clone().handle(req, peer.clone()))
    })
}

type Handled = Pin<Box<dyn Future<Output = Result<Response<ProxyBody>, Infallible>> + Send>>;

/// hyper's server for what the gateway's own HTTP/1.1 path hands over and
/// for TLS: HTTP/1.1 with upgrades on this worker's timer, and HTTP/2.
fn hyper_server(gw: &Gateway, settings: ConnSettings) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(gw.timer().clone())
        .header_read_timeout(settings.header_timeout)
        .max_buf_size(settings.max_header_bytes.max(8192))
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(settings.max_header_bytes).unwrap_or(u32::MAX))
        .keep_alive_interval(Some(Duration::from_secs(20)));
    builder
}

/// A TLS acceptor from PEM files, offering h2 and http/1.1 by ALPN; an
/// unusable file is a configuration error naming its key and path.
pub fn tls_acceptor(cert: &str, key: &str) -> Result<TlsAcceptor, ConfigError> {
    use tokio_rustls::rustls::{
        ServerConfig,
        pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(Iterator::collect)
        .map_err(|e| {
            ConfigError::new(
                "tls_cert",
                format!("{cert}: {}", pem_problem(&e, "CERTIFICATE")),
            )
        })?;
    if certs.is_empty() {
        return Err(ConfigError::new(
            "tls_cert",
            format!("{cert}: no PEM CERTIFICATE in it"),
        ));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        ConfigError::new(
            "tls_key",
            format!("{key}: {}", pem_problem(&e, "PRIVATE KEY")),
        )
    })?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ConfigError::new("tls_cert", e))?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .map_err(|e| ConfigError::new("tls_key", format!("{key} does not fit {cert}: {e}")))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// What is wrong with a PEM file that should hold a `kind`.
fn pem_problem(e: &tokio_rustls::rustls::pki_types::pem::Error, kind: &str) -> String {
    use tokio_rustls::rustls::pki_types::pem::Error;
    match e {
        Error::NoItemsFound => format!("no PEM {kind} in it"),
        Error::Io(io) => format!("cannot read it: {io}"),
        other => format!("not valid PEM: {other:?}"),
    }
}
