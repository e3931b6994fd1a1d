//! Mutual TLS between Switchyard's components.
//!
//! Every gRPC link between components (SDK → registry, balancer → registry,
//! gateway → registry and balancers) can run over TLS 1.3 with a certificate
//! on both sides, each signed by one CA. A certificate's URI SAN names its
//! holder ([`Identity`], `spiffe://switchyard/service/hello` and the like),
//! and the servers decide rights by it.
//!
//! Certificate files are read again when they change ([`ServerTls`],
//! [`ClientTls`]): a handshake after the change uses the new files, while
//! connections made before keep the session they have, so a rotation drops
//! no stream and no request. rustls with ring, no OpenSSL.

mod connector;
#[cfg(feature = "dev-ca")]
pub mod dev;
mod files;
mod identity;
mod upstream;
mod verify;

pub use connector::{Connector, channel, channel_lazy};
pub use files::{Error, Files, Part};
pub use identity::{Identity, Peer, TRUST_DOMAIN};
pub use upstream::UpstreamTls;

use std::sync::Arc;

use tokio_rustls::rustls::{
    self, ClientConfig, ServerConfig, client::WebPkiServerVerifier, crypto::CryptoProvider,
    server::WebPkiClientVerifier,
};

use files::{Material, Reloading};

/// What a gRPC server of ours presents and whom it lets in: its
/// certificate, and clients whose certificate the CA signed.
#[derive(Clone)]
pub struct ServerTls(Arc<Reloading<ServerConfig>>);

/// What a client of ours presents and whom it trusts: its certificate, and
/// servers whose certificate the CA signed for the name it dialled, or
/// that names the component it meant to reach (a balancer dialled at the
/// address it advertised, which no certificate made beforehand can list).
#[derive(Clone)]
pub struct ClientTls(Arc<Reloading<ClientConfigs>>);

/// One client config per server identity a connector may expect.
pub(crate) struct ClientConfigs(Vec<(Option<Identity>, Arc<ClientConfig>)>);

/// The components other components dial.
const SERVERS: [Option<Identity>; 3] = [None, Some(Identity::Registry), Some(Identity::Balancer)];

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

// === impl ServerTls ===

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("ServerTls").field(self.0.files()).finish()
    }
}

impl ServerTls {
    /// Reads and checks the files; later changes are picked up by later
    /// handshakes.
    pub fn load(files: &Files) -> Result<Self, Error> {
        Reloading::load(files.clone(), server_config).map(|r| Self(Arc::new(r)))
    }

    /// An acceptor with the files as they are now.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.0.current())
    }
}

fn server_config(m: &Material) -> Result<ServerConfig, Error> {
    let provider = provider();
    let verifier = WebPkiClientVerifier::builder_with_provider(m.roots()?, provider.clone())
        .build()
        .map_err(|e| m.error(Part::Ca, e))?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| m.error(Part::Cert, e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(m.chain()?, m.key()?)
        .map_err(|e| m.error(Part::Key, e))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

// === impl ClientTls ===

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("ClientTls").field(self.0.files()).finish()
    }
}

impl ClientTls {
    /// Reads and checks the files; later changes are picked up by later
    /// connections.
    pub fn load(files: &Files) -> Result<Self, Error> {
        Reloading::load(files.clone(), client_configs).map(|r| Self(Arc::new(r)))
    }

    /// A tonic connector that dials TLS with the files as they are at each
    /// connection. With `expect` (the registry or a balancer), a server
    /// certificate that names that identity passes even if it does not name
    /// the host dialled.
    pub fn connector(&self, expect: Option<Identity>) -> Connector {
        Connector::new(self.clone(), expect)
    }

    fn current(&self, expect: Option<&Identity>) -> Arc<ClientConfig> {
        let configs = self.0.current();
        configs
            .0
            .iter()
            .find(|(id, _)| id.as_ref() == expect)
            .unwrap_or(&configs.0[0])
            .1
            .clone()
    }
}

fn client_configs(m: &Material) -> Result<ClientConfigs, Error> {
    let provider = provider();
    let names = WebPkiServerVerifier::builder_with_provider(m.roots()?, provider.clone())
        .build()
        .map_err(|e| m.error(Part::Ca, e))?;
    SERVERS
        .into_iter()
        .map(|expect| {
            let builder = ClientConfig::builder_with_provider(provider.clone())
                .with_protocol_versions(&[&rustls::version::TLS13])
                .map_err(|e| m.error(Part::Cert, e))?;
            let builder = match &expect {
                None => builder.with_webpki_verifier(names.clone()),
                Some(identity) => builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(verify::NameOrIdentity::new(
                        names.clone(),
                        identity.clone(),
                    ))),
            };
            let mut config = builder
                .with_client_auth_cert(m.chain()?, m.key()?)
                .map_err(|e| m.error(Part::Key, e))?;
            config.alpn_protocols = vec![b"h2".to_vec()];
            Ok((expect, Arc::new(config)))
        })
        .collect::<Result<_, _>>()
        .map(ClientConfigs)
}
