//! The settings every binary has for mutual TLS between components:
//! `mtls_ca`, `mtls_cert` and `mtls_key`, set together or not at all.

pub use switchyard_tls::{ClientTls, Files, Identity, Part, Peer, ServerTls};

use crate::ConfigError;

/// The settings key of each file.
pub fn key(part: Part) -> &'static str {
    match part {
        Part::Ca => "mtls_ca",
        Part::Cert => "mtls_cert",
        Part::Key => "mtls_key",
    }
}

/// The three paths as [`Files`]; `None` when none is set, an error naming
/// the first one missing when only some are.
pub fn files(ca: &str, cert: &str, key: &str) -> Result<Option<Files>, ConfigError> {
    Files::from_paths(ca, cert, key).map_err(|part| {
        ConfigError::new(
            self::key(part),
            "set mtls_ca, mtls_cert and mtls_key together, or none of them",
        )
    })
}

/// The server side, loaded and checked; errors name the key of the file.
pub fn server(files: Option<&Files>) -> Result<Option<ServerTls>, ConfigError> {
    files
        .map(ServerTls::load)
        .transpose()
        .map_err(|e| ConfigError::new(key(e.part), &e))
}

/// The client side, loaded and checked; errors name the key of the file.
pub fn client(files: Option<&Files>) -> Result<Option<ClientTls>, ConfigError> {
    files
        .map(ClientTls::load)
        .transpose()
        .map_err(|e| ConfigError::new(key(e.part), &e))
}
