//! Running a real gateway in-process on port 0, for tests.

use std::{net::SocketAddr, time::Duration};

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{Config, Listeners, ServeError};

/// A gateway running in this process.
#[derive(Debug)]
pub struct Running {
    /// Traffic address.
    pub http: SocketAddr,
    /// TLS address, if configured.
    pub https: Option<SocketAddr>,
    /// Admin address.
    pub admin: SocketAddr,
    /// Cancels it (it then drains).
    pub stop: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), ServeError>>,
}

/// Settings for tests: the routes file, the registry, no self-registration,
/// short report interval and drain.
pub fn config(routes: &str, registry: &str) -> Config {
    Config {
        routes: routes.to_string(),
        registry: vec![registry.to_string()],
        register_self: false,
        drain_delay: Duration::ZERO,
        drain_timeout: Duration::from_secs(2),
        report_interval: Duration::from_millis(200),
        access_log: false,
        ..Config::default()
    }
}

/// Starts a gateway on fresh loopback ports.
pub async fn start(config: Config) -> std::io::Result<Running> {
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    let http = crate::listener::bind("http_listen", any)?;
    let https = if config.tls() {
        Some(crate::listener::bind("https_listen", any)?)
    } else {
        None
    };
    let admin = TcpListener::bind("127.0.0.1:0").await?;
    let (h, s, a) = (
        http.local_addr()?,
        https.as_ref().map(|l| l.local_addr()).transpose()?,
        admin.local_addr()?,
    );
    let stop = CancellationToken::new();
    let task = tokio::spawn(crate::serve(
        config,
        Listeners { http, https, admin },
        stop.clone(),
    ));
    Ok(Running {
        http: h,
        https: s,
        admin: a,
        stop,
        task,
    })
}

// === impl Running ===

impl Running {
    /// `http://` base URL of the traffic listener.
    pub fn url(&self) -> String {
        format!("http://{}", self.http)
    }

    /// Stops it and waits for the drain (at most 10 s).
    pub async fn stop(self) -> Result<(), ServeError> {
        self.stop.cancel();
        switchyard_runtime::testing::join_within(self.task, Duration::from_secs(10), "gateway")
            .await
            .map_err(ServeError::Io)?
    }
}
