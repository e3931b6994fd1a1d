//! Switchyard's benchmarks: `bench/run.sh` runs the side-by-side comparisons;
//! `cargo bench -p switchyard-bench` runs the micro-benchmarks.
