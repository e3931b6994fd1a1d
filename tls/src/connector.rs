//! Dialling a component over TLS from tonic.

use std::{
    future::Future,
    io,
    pin::Pin,
    task::{Context, Poll},
};

use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::{TlsConnector, client::TlsStream, rustls::pki_types::ServerName};
use tonic::transport::{Channel, Endpoint};

use crate::{ClientTls, Identity};

/// A `tower::Service<Uri>` for tonic's `Endpoint::connect_with_connector`:
/// TCP with `TCP_NODELAY`, then TLS 1.3 to the URI's host, which the
/// server's certificate must name (DNS name or IP address).
#[derive(Debug, Clone)]
pub struct Connector {
    tls: ClientTls,
    expect: Option<Identity>,
}

type Connecting = Pin<Box<dyn Future<Output = io::Result<TokioIo<TlsStream<TcpStream>>>> + Send>>;

// === impl Connector ===

impl Connector {
    pub(crate) fn new(tls: ClientTls, expect: Option<Identity>) -> Self {
        Self { tls, expect }
    }
}

impl tower::Service<http::Uri> for Connector {
    type Response = TokioIo<TlsStream<TcpStream>>;
    type Error = io::Error;
    type Future = Connecting;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let config = self.tls.current(self.expect.as_ref());
        Box::pin(async move {
            let invalid = |m: String| io::Error::new(io::ErrorKind::InvalidInput, m);
            let host = uri
                .host()
                .ok_or_else(|| invalid(format!("`{uri}` has no host")))?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            let port = uri.port_u16().unwrap_or(443);
            let name = ServerName::try_from(host.clone()).map_err(|e| {
                invalid(format!(
                    "`{host}` cannot be checked against a certificate: {e}"
                ))
            })?;
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            let tls = TlsConnector::from(config).connect(name, tcp).await?;
            Ok(TokioIo::new(tls))
        })
    }
}

/// Connects `endpoint`: over TLS when `tls` is set, else in plaintext.
/// The endpoint's scheme is not looked at: settings decide (each binary
/// refuses an `https://` address without TLS files at start-up).
pub async fn channel(
    endpoint: Endpoint,
    tls: Option<&ClientTls>,
    expect: Option<Identity>,
) -> Result<Channel, tonic::transport::Error> {
    match tls {
        Some(tls) => endpoint.connect_with_connector(tls.connector(expect)).await,
        None => endpoint.connect().await,
    }
}

/// [`channel`], connecting on first use.
pub fn channel_lazy(
    endpoint: Endpoint,
    tls: Option<&ClientTls>,
    expect: Option<Identity>,
) -> Channel {
    match tls {
        Some(tls) => endpoint.connect_with_connector_lazy(tls.connector(expect)),
        None => endpoint.connect_lazy(),
    }
}
