//! Switchyard's protobuf contracts and the tonic code generated from them.
//!
//! # Layout
//!
//! - [`registry::v1`]: membership (`switchyard.registry.v1.Registry`).
//! - [`balancer::v1`]: traffic policy (`switchyard.balancer.v1.Balancer`).
//! - [`FILE_DESCRIPTOR_SET`]: every descriptor, for server reflection.
//! - [`duration`]: a duration on the wire.
//!
//! The `.proto` files under `proto/switchyard/` are the source of truth; the
//! code is generated at build time by protox, so no system `protoc` is needed.
//! Prost types stay at the edges: each service converts them to and from its
//! own domain types in the module that implements the tonic service.

/// The registry's contract.
pub mod registry {
    /// Version 1.
    #[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
    pub mod v1 {
        tonic::include_proto!("switchyard.registry.v1");
    }
}

/// The balancer's contract.
pub mod balancer {
    /// Version 1.
    #[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
    pub mod v1 {
        tonic::include_proto!("switchyard.balancer.v1");
    }
}

/// Encoded `FileDescriptorSet` of every Switchyard proto (and its imports),
/// for `tonic-reflection`.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/switchyard_descriptor.bin"));

pub use prost_types;

/// A duration as a `google.protobuf.Duration` message: prost's own
/// conversion, saturating at the largest message for a duration past it
/// (about 292 billion years; no setting reaches it).
pub fn duration(d: std::time::Duration) -> prost_types::Duration {
    prost_types::Duration::try_from(d).unwrap_or(prost_types::Duration {
        seconds: i64::MAX,
        nanos: 999_999_999,
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[test]
    fn durations_convert_both_ways_and_saturate() {
        let d = Duration::new(3, 250_000_000);
        let pb = super::duration(d);
        assert_eq!((pb.seconds, pb.nanos), (3, 250_000_000));
        assert_eq!(Duration::try_from(pb).ok(), Some(d));
        assert_eq!(super::duration(Duration::MAX).seconds, i64::MAX);
    }
}
