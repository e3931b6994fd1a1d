//! HTTP/1.1, as the gateway speaks it on both sides.
//!
//! - [`codec`]: the rules both sides read heads by, and header lines.
//! - [`server`]: client connections, served by the connection's own task
//!   (what it does not serve goes to hyper's server).
//! - [`response`]: an answer written to a client.
//! - [`client`]: upstream connections driven by the request's own task.
//! - [`framing`]: a response body's framing and its decoder, on bytes alone.

pub mod client;
pub mod codec;
pub mod framing;
pub mod response;
pub mod server;
