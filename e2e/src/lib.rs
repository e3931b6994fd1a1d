//! End-to-end test support: a bounded load generator, and helpers that run
//! the real binaries and the compose stack.
//!
//! # Layout
//!
//! - [`load`]: open-loop load at a fixed rate for a fixed time (bounded in
//!   count and time), counting answers by status and by instance.
//! - [`compose`]: `docker-compose` and `docker` for the stack.
//! - [`binaries`]: where the release binaries are (built by `deploy/build.sh`).

pub mod binaries;
pub mod compose;
pub mod load;
