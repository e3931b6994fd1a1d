//! Running a real registry in-process on port 0, for tests of this crate
//! and of the crates that talk to it (SDK, balancer, gateway).

use std::{net::SocketAddr, time::Duration};

use switchyard_runtime::ManualClock;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{Config, Listeners, ServeError};

/// A registry running in this process.
#[derive(Debug)]
pub struct Running {
    /// Its gRPC address.
    pub grpc: SocketAddr,
    /// Its HTTP address.
    pub http: SocketAddr,
    /// The clock its timers read; tests move it.
    pub clock: ManualClock,
    /// Cancels it.
    pub stop: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), ServeError>>,
}

/// Settings for tests: no warm-up, a short progress interval.
pub fn config() -> Config {
    Config {
        warm_up: Duration::ZERO,
        progress_interval: Duration::from_millis(200),
        ..Config::default()
    }
}

/// Starts a registry on fresh loopback ports.
pub async fn start(config: Config, clock: ManualClock) -> std::io::Result<Running> {
    let grpc = TcpListener::bind("127.0.0.1:0").await?;
    let http = TcpListener::bind("127.0.0.1:0").await?;
    start_on(config, clock, Listeners { grpc, http }).await
}

/// Starts a registry on the given listeners (for restarts on the same port).
pub async fn start_on(
    config: Config,
    clock: ManualClock,
    listeners: Listeners,
) -> std::io::Result<Running> {
    let (grpc, http) = (listeners.grpc.local_addr()?, listeners.http.local_addr()?);
    let stop = CancellationToken::new();
    let task = tokio::spawn(crate::serve(
        config,
        listeners,
        clock.shared(),
        stop.clone(),
    ));
    Ok(Running {
        grpc,
        http,
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

    /// Moves the registry's clock and gives its expiry loop time to run.
    pub async fn advance(&self, d: Duration) {
        self.clock.advance(d);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    /// Stops it and waits (at most 5 s) for it to finish.
    pub async fn stop(self) -> Result<(), ServeError> {
        self.stop.cancel();
        switchyard_runtime::testing::join_within(self.task, Duration::from_secs(5), "registry")
            .await
            .map_err(ServeError::Io)?
    }
}
