//! Time for Switchyard's binaries and its client SDK: the injectable clock
//! that expiry, ejection and backoff read, and exponential backoff with
//! jitter for reconnect loops. A crate of its own so that the SDK does not
//! pull in the binaries' runtime (admin listener, metrics exporter, axum).
//!
//! # Layout
//!
//! - [`clock`]: the clock trait, the system clock and a manual one for tests.
//! - [`backoff`]: exponential backoff with jitter.

pub mod backoff;
pub mod clock;

pub use backoff::Backoff;
pub use clock::{Clock, ManualClock, SharedClock, SystemClock};
