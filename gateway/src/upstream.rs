//! The shared upstream connection pools: the gateway's own for HTTP/1.1
//! endpoints ([`crate::pool`]), hyper-util's pooled client for HTTP/2 (h2c
//! and gRPC); connections are reused across requests, routes and reloads.
//! Instances served over TLS have a client of their service's ([`tls`]).

pub mod tls;

use std::{error::Error as StdError, time::Duration};

use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::{TokioExecutor, TokioTimer},
};

use crate::{body::UpstreamBody, pool::Reach};

/// The two pools.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// HTTP/1.1 endpoints (and WebSocket upgrades).
    pub h1: crate::pool::H1Pool,
    /// HTTP/2 by prior knowledge (h2c, gRPC).
    pub h2: Client<HttpConnector, UpstreamBody>,
}

// === impl Upstream ===

impl Upstream {
    /// Pools with a connect timeout and an idle timeout (keep it below the
    /// services' keep-alive so we never reuse a connection they are closing).
    pub fn new(connect_timeout: Duration, idle_timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(connect_timeout));
        connector.set_nodelay(true);
        connector.set_keepalive(Some(Duration::from_secs(30)));
        let h1 = crate::pool::H1Pool::new(connect_timeout, idle_timeout);
        let h2 = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(idle_timeout)
            .pool_timer(TokioTimer::new())
            .http2_only(true)
            .timer(TokioTimer::new())
            .http2_keep_alive_interval(Duration::from_secs(10))
            .http2_keep_alive_timeout(Duration::from_secs(5))
            .build(connector);
        Self { h1, h2 }
    }
}

/// Classifies a client error.
pub fn reach(e: &hyper_util::client::legacy::Error) -> Reach {
    if e.is_connect() {
        return Reach::Never;
    }
    let mut source: Option<&(dyn StdError + 'static)> = e.source();
    while let Some(s) = source {
        if let Some(h2) = s.downcast_ref::<h2::Error>() {
            // REFUSED_STREAM, and streams above a GOAWAY's last id, were
            // never processed by the server (RFC 9113 §8.7).
            if h2.reason() == Some(h2::Reason::REFUSED_STREAM)
                || (h2.is_go_away() && h2.is_remote())
            {
                return Reach::Never;
            }
        }
        if let Some(h) = s.downcast_ref::<hyper::Error>() {
            if h.is_canceled() {
                return Reach::Never;
            }
        }
        source = s.source();
    }
    Reach::Maybe
}
