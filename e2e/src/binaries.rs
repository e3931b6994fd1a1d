//! The release binaries the end-to-end tests start (built by `deploy/build.sh`).

use std::path::PathBuf;

/// The workspace root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Path of a release binary; panics with what to do when it is missing.
pub fn path(name: &str) -> PathBuf {
    let p = root()
        .join("target/x86_64-unknown-linux-gnu/release")
        .join(name);
    assert!(
        p.exists(),
        "{} is missing: run deploy/build.sh first (the README's test command does)",
        p.display()
    );
    p
}
