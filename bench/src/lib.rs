//! Switchyard's benchmarks. Not part of CI and not a default workspace
//! member: run `cargo bench -p switchyard-bench` for the micro-benchmarks.
