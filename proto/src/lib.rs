//! Switchyard's protobuf contracts and the tonic code generated from them.
//!
//! # Layout
//!
//! - [`registry::v1`]: membership (`switchyard.registry.v1.Registry`).
//! - [`balancer::v1`]: traffic policy (`switchyard.balancer.v1.Balancer`).
//! - [`FILE_DESCRIPTOR_SET`]: every descriptor, for server reflection.
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
