//! Generates a tonic client for the part of etcd's API in
//! `proto/etcd.proto`, with protox: no system `protoc` (the etcd-client
//! crate's build needs one, which this project's machines do not have).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/etcd.proto");
    let fds = protox::compile(["etcd.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(false)
        .compile_fds(fds)?;
    Ok(())
}
