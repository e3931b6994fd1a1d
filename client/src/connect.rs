//! Connecting to one of several registry addresses, with backoff, over
//! mutual TLS when given certificates, and attaching the bearer token to
//! every call.

use std::{sync::Arc, time::Duration};

use switchyard_proto::registry::v1::registry_client::RegistryClient;
use switchyard_time::Backoff;
pub use switchyard_tls::{ClientTls, Files as TlsFiles};
use tokio_util::sync::CancellationToken;
use tonic::{
    Request, Status,
    metadata::AsciiMetadataValue,
    service::{Interceptor, interceptor::InterceptedService},
    transport::{Channel, Endpoint},
};

/// A registry client with the token interceptor.
pub type Client = RegistryClient<InterceptedService<Channel, Auth>>;

/// Adds `authorization: Bearer <token>` when a token is set.
#[derive(Debug, Clone, Default)]
pub struct Auth(Option<AsciiMetadataValue>);

/// Where and how to reach the registry.
#[derive(Debug, Clone)]
pub struct Target {
    /// Registry addresses (`http://host:7000`), tried in turn.
    pub addresses: Arc<[String]>,
    /// The bearer token, if the registry wants one.
    pub auth: Auth,
    /// Connect timeout per address.
    pub connect_timeout: Duration,
    /// Longest wait between rounds of attempts.
    pub backoff_cap: Duration,
    /// This client's certificate and the CA, for mutual TLS; `None` dials
    /// in plaintext.
    pub tls: Option<ClientTls>,
}

/// Why a target could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// An address is not a URI.
    #[error("registry address `{0}` is not a URI like http://registry:7000")]
    Address(String),
    /// The token has characters a header cannot carry.
    #[error("the token is not a valid header value")]
    Token,
    /// No address at all.
    #[error("no registry address given")]
    Empty,
    /// The TLS files cannot be used.
    #[error("{0}")]
    Tls(#[from] switchyard_tls::Error),
    /// An `https://` address without TLS files.
    #[error(
        "registry address `{0}` is https:// but no TLS files are given (mtls_ca, mtls_cert, mtls_key)"
    )]
    HttpsWithoutTls(String),
}

// === impl Auth ===

impl Auth {
    /// From an optional token.
    pub fn new(token: Option<&str>) -> Result<Self, TargetError> {
        token
            .map(|t| {
                format!("Bearer {t}")
                    .parse()
                    .map_err(|_| TargetError::Token)
            })
            .transpose()
            .map(Self)
    }
}

impl Interceptor for Auth {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            req.metadata_mut().insert("authorization", value.clone());
        }
        Ok(req)
    }
}

// === impl Target ===

impl Target {
    /// Addresses may be given comma-separated, as `SWITCHYARD_REGISTRY` is.
    pub fn new<I, S>(addresses: I, token: Option<&str>) -> Result<Self, TargetError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let addresses: Vec<String> = addresses
            .into_iter()
            .flat_map(|a| {
                a.as_ref()
                    .split(',')
                    .map(|s| s.trim().to_string())
                    .collect::<Vec<_>>()
            })
            .filter(|a| !a.is_empty())
            .map(|a| {
                if a.contains("://") {
                    a
                } else {
                    format!("http://{a}")
                }
            })
            .collect();
        if addresses.is_empty() {
            return Err(TargetError::Empty);
        }
        for a in &addresses {
            Endpoint::from_shared(a.clone()).map_err(|_| TargetError::Address(a.clone()))?;
        }
        Ok(Self {
            addresses: addresses.into(),
            auth: Auth::new(token)?,
            connect_timeout: Duration::from_secs(1),
            backoff_cap: Duration::from_secs(3),
            tls: None,
        })
    }

    /// Dials every address over mutual TLS with `files` (`None` keeps
    /// plaintext, and then refuses `https://` addresses). The files are
    /// read again when they change, for connections made after.
    pub fn with_tls(mut self, files: Option<&TlsFiles>) -> Result<Self, TargetError> {
        self.tls = files.map(ClientTls::load).transpose()?;
        if self.tls.is_none()
            && let Some(a) = self.addresses.iter().find(|a| a.starts_with("https://"))
        {
            return Err(TargetError::HttpsWithoutTls(a.clone()));
        }
        Ok(self)
    }

    /// Connects to the first address that answers, trying them in turn with
    /// backoff between rounds. `None` once `stop` is cancelled.
    pub async fn connect(&self, stop: &CancellationToken) -> Option<Client> {
        let mut backoff = Backoff::new(Duration::from_millis(100), self.backoff_cap);
        loop {
            for address in self.addresses.iter() {
                let Ok(endpoint) = Endpoint::from_shared(address.clone()) else {
                    continue;
                };
                let endpoint = endpoint
                    .connect_timeout(self.connect_timeout)
                    .http2_keep_alive_interval(Duration::from_secs(10))
                    .keep_alive_timeout(Duration::from_secs(5))
                    .keep_alive_while_idle(true);
                tokio::select! {
                    () = stop.cancelled() => return None,
                    connected = switchyard_tls::channel(
                        endpoint,
                        self.tls.as_ref(),
                        Some(switchyard_tls::Identity::Registry),
                    ) => match connected {
                        Ok(channel) => {
                            return Some(RegistryClient::with_interceptor(channel, self.auth.clone()));
                        }
                        Err(error) => tracing::debug!(%address, %error, "registry not reachable"),
                    },
                }
            }
            let delay = backoff.next_delay();
            tracing::debug!(?delay, "no registry reachable; retrying");
            tokio::select! {
                () = stop.cancelled() => return None,
                () = tokio::time::sleep(delay) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_split_and_get_a_scheme() {
        let t = Target::new(["registry:7000, http://other:7000"], Some("tok")).expect("target");
        assert_eq!(&*t.addresses, ["http://registry:7000", "http://other:7000"]);
        assert!(matches!(Target::new([""], None), Err(TargetError::Empty)));
        assert!(matches!(
            Target::new(["x"], Some("bad\ntoken")),
            Err(TargetError::Token)
        ));
    }
}
