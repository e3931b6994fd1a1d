//! The `balancer` binary: wires settings, listeners and shutdown to
//! [`switchyard_balancer::serve`].

use std::process::ExitCode;

use switchyard_balancer::{Config, Listeners, ServeError};
use switchyard_runtime::cli::{self, About};

const ABOUT: About = About {
    name: "balancer",
    version: env!("CARGO_PKG_VERSION"),
    summary: "Switchyard balancer (gRPC 7010, HTTP 7011)",
};

fn main() -> ExitCode {
    cli::main::<Config, _, _, _>(ABOUT, |config, shutdown| async move {
        let listeners = Listeners::bind(&config).await.map_err(ServeError::Io)?;
        switchyard_balancer::serve(
            config,
            listeners,
            switchyard_runtime::clock::system(),
            shutdown,
        )
        .await
    })
}
