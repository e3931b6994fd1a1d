//! The `probe` subcommand: GET a running instance's `/readyz`.
//!
//! Compose health checks run `["CMD", "/registry", "probe"]`: the images are
//! `FROM scratch` with no shell and no curl, so the binary checks itself.

use std::{net::SocketAddr, time::Duration};

use http_body_util::{BodyExt, Empty};
use hyper::{Request, body::Bytes};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Why a probe failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// Could not connect or speak HTTP.
    #[error("cannot reach {addr}: {source}")]
    Unreachable {
        /// Where we tried.
        addr: SocketAddr,
        /// What went wrong.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The instance answered, but not 200.
    #[error("not ready ({status}): {body}")]
    NotReady {
        /// The HTTP status.
        status: u16,
        /// The `/readyz` body, which lists `waiting_for`.
        body: String,
    },
    /// No answer in time.
    #[error("no answer from {0} within the timeout")]
    Timeout(SocketAddr),
}

/// The address a probe should use for an admin listener bound to `listen`:
/// an unspecified IP (0.0.0.0 or ::) becomes loopback.
pub fn local_target(listen: SocketAddr) -> SocketAddr {
    let mut target = listen;
    if target.ip().is_unspecified() {
        target.set_ip(match listen {
            SocketAddr::V4(_) => [127, 0, 0, 1].into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    target
}

/// GETs `http://{addr}{path}`; Ok with the body on 200.
pub async fn probe(addr: SocketAddr, path: &str, timeout: Duration) -> Result<String, ProbeError> {
    tokio::time::timeout(timeout, get(addr, path))
        .await
        .map_err(|_| ProbeError::Timeout(addr))?
}

async fn get(addr: SocketAddr, path: &str) -> Result<String, ProbeError> {
    let unreachable =
        |source: Box<dyn std::error::Error + Send + Sync>| ProbeError::Unreachable { addr, source };
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| unreachable(e.into()))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| unreachable(e.into()))?;
    tokio::spawn(conn);
    let req = Request::get(path)
        .header("host", addr.to_string())
        .body(Empty::<Bytes>::new())
        .map_err(|e| unreachable(e.into()))?;
    let res = sender
        .send_request(req)
        .await
        .map_err(|e| unreachable(e.into()))?;
    let status = res.status();
    let body = res
        .into_body()
        .collect()
        .await
        .map_err(|e| unreachable(e.into()))?
        .to_bytes();
    let body = String::from_utf8_lossy(&body).into_owned();
    if status.is_success() {
        Ok(body)
    } else {
        Err(ProbeError::NotReady {
            status: status.as_u16(),
            body,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{admin, readiness::Readiness};

    #[tokio::test]
    async fn probe_sees_not_ready_then_ready_then_unreachable() {
        let readiness = Readiness::waiting_for(["warm_up"]);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let stop = tokio_util::sync::CancellationToken::new();
        let server = tokio::spawn(admin::serve(
            listener,
            admin::router(readiness.clone()),
            stop.clone().cancelled_owned(),
        ));
        let t = Duration::from_secs(5);
        match probe(addr, "/readyz", t).await {
            Err(ProbeError::NotReady { status: 503, body }) => assert!(body.contains("warm_up")),
            other => panic!("expected 503, got {other:?}"),
        }
        readiness.done("warm_up");
        probe(addr, "/readyz", t).await.expect("ready");
        stop.cancel();
        server.await.expect("join").expect("serve");
        assert!(matches!(
            probe(addr, "/readyz", t).await,
            Err(ProbeError::Unreachable { .. })
        ));
    }

    #[test]
    fn unspecified_listen_probes_loopback() {
        let t = local_target("0.0.0.0:7001".parse().expect("addr"));
        assert_eq!(t, "127.0.0.1:7001".parse().expect("addr"));
    }
}
