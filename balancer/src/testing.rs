//! Running a real balancer in-process on port 0, for this crate's tests and
//! the gateway's.

use std::{net::SocketAddr, time::Duration};

use switchyard_runtime::ManualClock;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{Config, Listeners, ServeError};

/// A balancer running in this process.
#[derive(Debug)]
pub struct Running {
    /// Its gRPC address.
    pub grpc: SocketAddr,
    /// Its HTTP address.
    pub http: SocketAddr,
    /// The clock its timers read.
    pub clock: ManualClock,
    /// Cancels it.
    pub stop: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), ServeError>>,
}

/// Settings for tests against the registry at `registry` (not registering itself).
pub fn config(registry: &str) -> Config {
    Config {
        registry: vec![registry.to_string()],
        register_self: false,
        ..Config::default()
    }
}

/// Starts a balancer on fresh loopback ports.
pub async fn start(config: Config, clock: ManualClock) -> std::io::Result<Running> {
    let grpc = TcpListener::bind("127.0.0.1:0").await?;
    let http = TcpListener::bind("127.0.0.1:0").await?;
    let (grpc_addr, http_addr) = (grpc.local_addr()?, http.local_addr()?);
    let stop = CancellationToken::new();
    let task = tokio::spawn(crate::serve(
        config,
        Listeners { grpc, http },
        clock.shared(),
        stop.clone(),
    ));
    Ok(Running {
        grpc: grpc_addr,
        http: http_addr,
        clock,
        stop,
        task,
    })
}

// === impl Running ===

impl Running {
    /// `http://` URL of the gRPC listener.
    pub fn url(&self) -> String {
        format!("http://{}", self.grpc)
    }

    /// Moves its clock in steps of at most one second (so its ticker runs
    /// each step) and lets its tasks run.
    pub async fn advance(&self, d: Duration) {
        let mut left = d;
        while !left.is_zero() {
            let step = left.min(Duration::from_secs(1));
            self.clock.advance(step);
            left -= step;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops it and waits (at most 5 s).
    pub async fn stop(self) -> Result<(), ServeError> {
        self.stop.cancel();
        switchyard_runtime::testing::join_within(self.task, Duration::from_secs(5), "balancer")
            .await
            .map_err(ServeError::Io)?
    }
}
