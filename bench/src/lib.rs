//! Switchyard's benchmarks: `bench/run.sh` runs the side-by-side comparisons;
//! `cargo bench -p switchyard-bench` runs the micro-benchmarks.

/// The generated etcd v3 client that `bench-registry` calls raw (the same
/// messages the registry's etcd store uses, from `switchyard-etcd`).
pub use switchyard_etcd::pb as etcd;
