//! Plumbing every Switchyard binary shares.
//!
//! # Layout
//!
//! - [`settings`](mod@settings): flags > `SWITCHYARD_*` environment > TOML file, one typed
//!   struct per binary declared with [`settings!`], errors that name the key.
//! - [`cli`]: `--help`, `--version`, `probe`, exit code 64 on bad settings.
//! - [`logging`]: tracing init (`RUST_LOG`, text or JSON).
//! - [`shutdown`]: SIGTERM/SIGINT as a cancellation token, and drain.
//! - [`admin`]: the admin HTTP listener (`/healthz`, `/readyz`, `/metrics`).
//! - [`auth`]: bearer token lists and roles, compared in constant time.
//! - [`advertise`]: which address a service registers.
//! - [`readiness`]: what `/readyz` waits for; latches once ready.
//! - [`probe`]: checks a running instance's `/readyz`.
//! - [`clock`], [`backoff`]: the injectable clock and reconnect backoff,
//!   from `switchyard-time` (which the SDK shares without this crate).
//! - [`grpc`]: a gRPC service served beside health and reflection.
//! - [`tls`]: the certificate settings of mutual TLS between components.
//! - [`testing`]: bounded polling and joins for tests of the real servers.
//! - [`ui`]: the dashboard's pages (`/ui/`), embedded, for the registry and
//!   the gateway's admin port.

pub mod admin;
pub mod advertise;
pub mod auth;
pub mod cli;
pub mod grpc;
pub mod logging;
pub mod probe;
pub mod readiness;
pub mod settings;
pub mod shutdown;
pub mod testing;
pub mod tls;
pub mod ui;

pub use readiness::Readiness;
pub use settings::{ConfigError, Settings};
pub use switchyard_time::{Backoff, Clock, ManualClock, SharedClock, SystemClock, backoff, clock};
