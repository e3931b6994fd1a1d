//! The Switchyard client SDK.
//!
//! # Layout
//!
//! - [`session`]: a registration session (register, keep alive, re-register
//!   after a lost lease, drain and deregister on shutdown).
//! - [`discovery`]: a discovery cache fed by Watch, keeping the last known
//!   good view through outages.
//! - [`channel`]: the view as a `tower::discover` stream and as a tonic
//!   balanced `Channel`.
//! - [`connect`]: registry addresses, tokens, backoff.
//!
//! # Registering a service
//!
//! ```no_run
//! use std::time::Duration;
//! use switchyard_client::{Session, Target, instance};
//! use switchyard_client::pb::Protocol;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let session = Session::start(Target::new(["http://registry:7000"], Some("reg-token"))?, Duration::from_secs(10));
//! session.register(instance("hello", "hello-1", "10.0.0.5:8080", Protocol::Http1));
//! // ... serve until SIGTERM, then: DRAINING, wait 3 s, deregister.
//! session.shutdown(Duration::from_secs(3)).await;
//! # Ok(()) }
//! ```

pub mod balance;
pub mod channel;
pub mod connect;
pub mod discovery;
pub mod session;

pub use connect::Target;
pub use discovery::{Discovery, View};
pub use session::{Session, SessionStatus};

/// The registry's protobuf types, re-exported for SDK users.
pub mod pb {
    pub use switchyard_proto::registry::v1::*;
}

/// The instance id to register: `given`, or, when it is empty, one made
/// from `address` (ids allow `[A-Za-z0-9._:-]`, and an address such as
/// `[::1]:7010` does not fit: it becomes `--1-:7010`).
pub fn instance_id(given: &str, address: &str) -> String {
    if !given.is_empty() {
        return given.to_string();
    }
    address
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || ".-_:".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// An instance to register, SERVING, with default weight.
pub fn instance(
    service: &str,
    instance_id: &str,
    address: &str,
    protocol: pb::Protocol,
) -> pb::InstanceSpec {
    pb::InstanceSpec {
        service: service.to_string(),
        instance_id: instance_id.to_string(),
        address: address.to_string(),
        protocol: protocol as i32,
        state: pb::State::Serving as i32,
        ..Default::default()
    }
}
