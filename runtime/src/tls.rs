//! The settings every binary has for mutual TLS between components:
//! `mtls_ca`, `mtls_cert` and `mtls_key`, set together or not at all.

pub use switchyard_tls::{ClientTls, Files, Identity, Part, Peer, ServerTls, UpstreamTls};

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

/// What a binary's settings ask for its gRPC links: the files, or
/// plaintext said out loud (`plaintext = true`). A binary given neither
/// does not start: mutual TLS is the default, and the compose stacks run
/// with it. Both at once is refused too.
pub fn required(
    ca: &str,
    cert: &str,
    key: &str,
    plaintext: bool,
) -> Result<Option<Files>, ConfigError> {
    match (files(ca, cert, key)?, plaintext) {
        (Some(_), true) => Err(ConfigError::new(
            "plaintext",
            "set the mtls_* files or plaintext = true, not both",
        )),
        (None, false) => Err(ConfigError::new(
            "mtls_cert",
            "gRPC between components is mutual TLS: set mtls_ca, mtls_cert and mtls_key \
             (deploy/certs.sh makes a development set), or plaintext = true",
        )),
        (files, _) => Ok(files),
    }
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

/// The side that reaches application services served over TLS (the
/// gateway's upstreams), loaded and checked; errors name the key of the
/// file.
pub fn upstream(files: Option<&Files>) -> Result<Option<UpstreamTls>, ConfigError> {
    files
        .map(UpstreamTls::load)
        .transpose()
        .map_err(|e| ConfigError::new(key(e.part), &e))
}
