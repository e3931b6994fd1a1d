//! The Switchyard gateway: the HTTP front door.
//!
//! Not built yet (issue 5). This crate holds its settings and a server that
//! answers `/healthz`, and `/readyz` with `waiting_for: ["routes"]`, so the
//! workspace, images and compose file can be wired ahead of it.

use std::net::SocketAddr;

use switchyard_runtime::{
    ConfigError, Readiness, Settings, admin,
    cli::{AdminAddr, LogSettings},
    logging::LogFormat,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

switchyard_runtime::settings! {
    /// Process settings of the gateway (flags > `SWITCHYARD_*` > TOML file).
    pub struct Config {
        /// Traffic listen address.
        pub http_listen: SocketAddr = ([0, 0, 0, 0], 8080).into(),
        /// Admin listen address (/healthz, /readyz, /metrics).
        pub admin_listen: SocketAddr = ([0, 0, 0, 0], 8081).into(),
        /// Registry addresses, comma-separated.
        pub registry: Vec<String> = vec!["http://127.0.0.1:7000".into()],
        /// Log format: text or json.
        pub log_format: LogFormat = LogFormat::Text,
    }
}

impl Settings for Config {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.registry.is_empty() {
            return Err(ConfigError::new(
                "registry",
                "give at least one registry address",
            ));
        }
        Ok(())
    }
}

impl AdminAddr for Config {
    fn admin_listen(&self) -> SocketAddr {
        self.admin_listen
    }
}

impl LogSettings for Config {
    fn log_format(&self) -> LogFormat {
        self.log_format
    }
}

/// Serves the admin listener until `shutdown`; readiness waits for routes,
/// which nothing provides yet.
pub async fn serve(
    config: Config,
    admin_listener: TcpListener,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let readiness = Readiness::waiting_for(["routes"]);
    tracing::warn!(admin = %config.admin_listen, "the gateway does not proxy yet; only its admin listener runs");
    admin::serve(
        admin_listener,
        admin::router(readiness),
        shutdown.cancelled_owned(),
    )
    .await
}
