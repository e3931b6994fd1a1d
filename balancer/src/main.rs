//! The `balancer` binary.

use std::process::ExitCode;

use switchyard_balancer::Config;
use switchyard_runtime::cli::{self, About};

const ABOUT: About = About {
    name: "balancer",
    version: env!("CARGO_PKG_VERSION"),
    summary: "Switchyard balancer (gRPC 7010, HTTP 7011)",
};

fn main() -> ExitCode {
    cli::main::<Config, _, _, _>(ABOUT, |config, shutdown| async move {
        let admin = tokio::net::TcpListener::bind(config.admin_listen).await?;
        switchyard_balancer::serve(config, admin, shutdown).await
    })
}
