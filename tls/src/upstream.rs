//! Reaching application services served over TLS (the gateway's upstream
//! TLS): the CA checks them, the gateway's certificate goes with it.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use tokio_rustls::rustls::{
    self, ClientConfig,
    client::WebPkiServerVerifier,
    pki_types::{CertificateDer, PrivateKeyDer},
};

use crate::{
    Error, Files, Identity, Part,
    files::{Material, Reloading},
    provider,
    verify::NameOrIdentity,
};

/// What the gateway presents to instances served over TLS, and whom it
/// accepts: a certificate the CA signed that names the host dialled or
/// carries the service's identity (`spiffe://switchyard/service/<name>`),
/// as Envoy checks an upstream's SAN per cluster. TLS 1.2 and 1.3: an
/// application's server is not ours to upgrade.
#[derive(Clone)]
pub struct UpstreamTls(Arc<Reloading<Configs>>);

/// The files' parts, and the configs made from them so far, one per
/// service and application protocol.
pub(crate) struct Configs {
    names: Arc<WebPkiServerVerifier>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    made: Mutex<HashMap<(String, bool), Arc<ClientConfig>>>,
}

// === impl UpstreamTls ===

impl std::fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("UpstreamTls").field(self.0.files()).finish()
    }
}

impl UpstreamTls {
    /// Reads and checks the files; later changes are picked up by later
    /// connections.
    pub fn load(files: &Files) -> Result<Self, Error> {
        Reloading::load(files.clone(), configs).map(|r| Self(Arc::new(r)))
    }

    /// The config for a connection to an instance of `service`, offering
    /// `h2` or `http/1.1` by ALPN, with the files as they are now.
    pub fn config(&self, service: &str, h2: bool) -> Result<Arc<ClientConfig>, rustls::Error> {
        let configs = self.0.current();
        let mut made = configs.made.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = made.get(&(service.to_string(), h2)) {
            return Ok(c.clone());
        }
        let verifier = NameOrIdentity::new(
            configs.names.clone(),
            Identity::Service(service.to_string()),
        );
        let mut config = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_client_auth_cert(configs.chain.clone(), configs.key.clone_key())?;
        config.alpn_protocols = vec![if h2 {
            b"h2".to_vec()
        } else {
            b"http/1.1".to_vec()
        }];
        let config = Arc::new(config);
        made.insert((service.to_string(), h2), config.clone());
        Ok(config)
    }
}

fn configs(m: &Material) -> Result<Configs, Error> {
    let names = WebPkiServerVerifier::builder_with_provider(m.roots()?, provider())
        .build()
        .map_err(|e| m.error(Part::Ca, e))?;
    let configs = Configs {
        names,
        chain: m.chain()?,
        key: m.key()?,
        made: Mutex::default(),
    };
    // A key that does not match the certificate is refused here, at load,
    // not at the first connection.
    ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| m.error(Part::Cert, e))?
        .with_webpki_verifier(configs.names.clone())
        .with_client_auth_cert(configs.chain.clone(), configs.key.clone_key())
        .map_err(|e| m.error(Part::Key, e))?;
    Ok(configs)
}
