//! Time for Switchyard's binaries and its client SDK: the injectable clock
//! that expiry, ejection and backoff read, and exponential backoff with
//! jitter for reconnect loops; and the one rule for a poisoned lock, which
//! every crate shares. A crate of its own so that the SDK does not
//! pull in the binaries' runtime (admin listener, metrics exporter, axum).
//!
//! # Layout
//!
//! - [`clock`]: the clock trait, the system clock and a manual one for tests.
//! - [`backoff`]: exponential backoff with jitter.
//! - [`sync`]: locks taken whether or not a panic poisoned them.

pub mod backoff;
pub mod clock;
pub mod sync;

pub use backoff::Backoff;
pub use clock::{Clock, ManualClock, SharedClock, SystemClock};
