//! The `gateway` binary.

use std::process::ExitCode;

use switchyard_gateway::Config;
use switchyard_runtime::cli::{self, About};

const ABOUT: About = About {
    name: "gateway",
    version: env!("CARGO_PKG_VERSION"),
    summary: "Switchyard HTTP gateway (traffic 8080, admin 8081)",
};

fn main() -> ExitCode {
    cli::main::<Config, _, _, _>(ABOUT, |config, shutdown| async move {
        let admin = tokio::net::TcpListener::bind(config.admin_listen).await?;
        switchyard_gateway::serve(config, admin, shutdown).await
    })
}
