//! Instances served over TLS (`InstanceSpec.tls`): hyper-util's pooled
//! client over a rustls connector, one client per service and protocol.
//!
//! hyper-rustls's connector takes one fixed `ClientConfig`; ours asks
//! [`UpstreamTls`] for the config at each connection, so certificate files
//! that change are used by the next connection, and the server is checked
//! against the service it is an instance of.

use std::{
    future::Future,
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use http::Uri;
use hyper_util::{
    client::legacy::{
        Client,
        connect::{Connected, Connection, HttpConnector},
    },
    rt::{TokioExecutor, TokioIo, TokioTimer},
};
use switchyard_tls::UpstreamTls;
use tokio::net::TcpStream;
use tokio_rustls::{client::TlsStream, rustls::pki_types::ServerName};

use crate::body::UpstreamBody;

/// A pooled client for one service's TLS instances, over one protocol.
pub type TlsClient = Client<TlsConnector, UpstreamBody>;

/// How a service's TLS instances are reached: one client per protocol.
#[derive(Debug, Clone)]
pub struct TlsClients {
    /// HTTP/1.1 (ALPN `http/1.1`).
    pub h1: TlsClient,
    /// HTTP/2 (ALPN `h2`), for H2C and gRPC instances.
    pub h2: TlsClient,
}

/// What every service's TLS clients are made with.
#[derive(Debug, Clone)]
pub struct TlsSettings {
    /// The CA, and the gateway's certificate and key.
    pub files: UpstreamTls,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// Idle pooled connections are closed after this.
    pub idle_timeout: Duration,
}

/// A `tower::Service<Uri>` for hyper-util's client: TCP through
/// [`HttpConnector`] (its timeout, `TCP_NODELAY`, keep-alive), then TLS to
/// the URI's host for an instance of `service`.
#[derive(Debug, Clone)]
pub struct TlsConnector {
    tcp: HttpConnector,
    files: UpstreamTls,
    service: Arc<str>,
    h2: bool,
}

/// A TLS connection to an instance, telling hyper the protocol ALPN chose.
#[derive(Debug)]
pub struct TlsConn(TokioIo<TlsStream<TcpStream>>);

type Connecting = Pin<Box<dyn Future<Output = io::Result<TlsConn>> + Send>>;

// === impl TlsSettings ===

impl TlsSettings {
    /// The clients for `service`'s instances.
    pub fn clients(&self, service: &Arc<str>) -> TlsClients {
        TlsClients {
            h1: self.client(service, false),
            h2: self.client(service, true),
        }
    }

    fn client(&self, service: &Arc<str>, h2: bool) -> TlsClient {
        let mut tcp = HttpConnector::new();
        tcp.enforce_http(false);
        tcp.set_connect_timeout(Some(self.connect_timeout));
        tcp.set_nodelay(true);
        tcp.set_keepalive(Some(Duration::from_secs(30)));
        let connector = TlsConnector {
            tcp,
            files: self.files.clone(),
            service: service.clone(),
            h2,
        };
        let mut builder = Client::builder(TokioExecutor::new());
        builder
            .pool_idle_timeout(self.idle_timeout)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new());
        if h2 {
            builder
                .http2_only(true)
                .http2_keep_alive_interval(Duration::from_secs(10))
                .http2_keep_alive_timeout(Duration::from_secs(5));
        }
        builder.build(connector)
    }
}

// === impl TlsConnector ===

impl tower::Service<Uri> for TlsConnector {
    type Response = TlsConn;
    type Error = io::Error;
    type Future = Connecting;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.tcp.poll_ready(cx).map_err(io::Error::other)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let config = self.files.config(&self.service, self.h2);
        let (service, tcp) = (self.service.clone(), self.tcp.call(uri.clone()));
        Box::pin(async move {
            let config = config.map_err(io::Error::other)?;
            let host = uri.host().unwrap_or_default();
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let name = ServerName::try_from(host.to_string()).map_err(|e| {
                io::Error::new(io::ErrorKind::InvalidInput, format!("`{host}`: {e}"))
            })?;
            let tcp = tcp.await.map_err(io::Error::other)?.into_inner();
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await
                .inspect_err(|error| {
                    // A certificate refused is a setup fault the operator must
                    // see, not only a failed attempt among others.
                    tracing::warn!(%service, %uri, %error, "TLS handshake with an instance failed");
                    metrics::counter!("switchyard_gateway_upstream_tls_failures_total", "service" => service.to_string()).increment(1);
                })?;
            Ok(TlsConn(TokioIo::new(tls)))
        })
    }
}

// === impl TlsConn ===

impl Connection for TlsConn {
    fn connected(&self) -> Connected {
        let (tcp, session) = self.0.inner().get_ref();
        let connected = tcp.connected();
        if session.alpn_protocol() == Some(b"h2") {
            connected.negotiated_h2()
        } else {
            connected
        }
    }
}

impl hyper::rt::Read for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }
}
