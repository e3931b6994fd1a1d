//! Switchyard's benchmarks: `bench/run.sh` runs the side-by-side comparisons;
//! `cargo bench -p switchyard-bench` runs the micro-benchmarks.

/// A client for the part of etcd's v3 API that `bench-registry` calls.
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod etcd {
    tonic::include_proto!("etcdserverpb");
}
