//! The `registry` binary: wires settings, listeners and shutdown to
//! [`switchyard_registry::serve`].

use std::process::ExitCode;

use switchyard_registry::{Config, Listeners, ServeError};
use switchyard_runtime::cli::{self, About};

const ABOUT: About = About {
    name: "registry",
    version: env!("CARGO_PKG_VERSION"),
    summary: "Switchyard service registry (gRPC 7000, HTTP 7001)",
};

fn main() -> ExitCode {
    cli::main::<Config, _, _, _>(ABOUT, |config, shutdown| async move {
        let listeners = Listeners::bind(&config).await.map_err(ServeError::Io)?;
        switchyard_registry::serve(
            config,
            listeners,
            switchyard_runtime::clock::system(),
            shutdown,
        )
        .await
    })
}
