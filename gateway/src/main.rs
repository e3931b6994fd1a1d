//! The `gateway` binary: wires settings, listeners and shutdown to
//! [`switchyard_gateway::serve`].

use std::process::ExitCode;

use switchyard_gateway::{Config, Listeners, ServeError};
use switchyard_runtime::cli::{self, About};

const ABOUT: About = About {
    name: "gateway",
    version: env!("CARGO_PKG_VERSION"),
    summary: "Switchyard HTTP gateway (traffic 8080, TLS 8443, admin 8081)",
};

// The request path allocates small, short-lived objects (headers, futures,
// buffers); glibc's malloc took a quarter of the user CPU per request in the
// profile recorded in bench/RESULTS.md.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    cli::main::<Config, _, _, _>(ABOUT, |config, shutdown| async move {
        let listeners = Listeners::bind(&config).await.map_err(ServeError::Io)?;
        switchyard_gateway::serve(config, listeners, shutdown).await
    })
}
