//! Who is at the other end of a connection, by its certificate's URI SAN.

use std::{fmt, net::SocketAddr};

use x509_parser::{certificate::X509Certificate, extensions::GeneralName, prelude::FromDer};

/// The SPIFFE trust domain of Switchyard's identities.
pub const TRUST_DOMAIN: &str = "switchyard";

/// A component's identity, from the first `spiffe://` URI SAN of its
/// certificate (`spiffe://switchyard/service/<name>`, `.../gateway`,
/// `.../balancer`, `.../operator`, `.../registry`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Identity {
    /// An application service: may register instances of this service only.
    Service(String),
    /// A gateway.
    Gateway,
    /// A balancer.
    Balancer,
    /// A registry replica.
    Registry,
    /// An operator: may do everything.
    Operator,
    /// A certificate the CA signed whose URI SAN is none of the above
    /// (another trust domain, another path): rights of a caller without
    /// credentials.
    Unknown(String),
}

/// What a server knows of a TLS client's connection: tonic puts it in each
/// request's extensions.
#[derive(Debug, Clone)]
pub struct Peer {
    /// The client's address.
    pub remote_addr: Option<SocketAddr>,
    /// The client certificate's identity; `None` when its certificate
    /// carries no URI SAN.
    pub identity: Option<Identity>,
}

// === impl Identity ===

impl Identity {
    /// From a URI SAN.
    pub fn parse(uri: &str) -> Self {
        let path = uri
            .strip_prefix("spiffe://")
            .and_then(|rest| rest.strip_prefix(TRUST_DOMAIN))
            .and_then(|rest| rest.strip_prefix('/'));
        match path {
            Some("gateway") => Self::Gateway,
            Some("balancer") => Self::Balancer,
            Some("registry") => Self::Registry,
            Some("operator") => Self::Operator,
            Some(p) => match p.strip_prefix("service/") {
                Some(name) if !name.is_empty() && !name.contains('/') => Self::Service(name.into()),
                _ => Self::Unknown(uri.into()),
            },
            None => Self::Unknown(uri.into()),
        }
    }

    /// From a certificate (DER): its first `spiffe://` URI SAN, else its
    /// first URI SAN; `None` if it has none or cannot be parsed.
    pub fn from_certificate(der: &[u8]) -> Option<Self> {
        let (_, cert) = X509Certificate::from_der(der).ok()?;
        let san = cert.subject_alternative_name().ok()??;
        let uris: Vec<&str> = san
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                GeneralName::URI(u) => Some(*u),
                _ => None,
            })
            .collect();
        let uri = uris
            .iter()
            .find(|u| u.starts_with("spiffe://"))
            .or(uris.first())?;
        Some(Self::parse(uri))
    }

    /// The identity as a URI, for messages and logs.
    pub fn uri(&self) -> String {
        let path = match self {
            Self::Service(name) => format!("service/{name}"),
            Self::Gateway => "gateway".into(),
            Self::Balancer => "balancer".into(),
            Self::Registry => "registry".into(),
            Self::Operator => "operator".into(),
            Self::Unknown(uri) => return uri.clone(),
        };
        format!("spiffe://{TRUST_DOMAIN}/{path}")
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.uri())
    }
}

// === impl Peer ===

impl Peer {
    /// The identity of the TLS client behind a request, if the request came
    /// over TLS with a certificate that names one.
    pub fn identity_of(extensions: &http::Extensions) -> Option<&Identity> {
        extensions.get::<Self>()?.identity.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_name_identities() {
        for (uri, id) in [
            (
                "spiffe://switchyard/service/hello",
                Identity::Service("hello".into()),
            ),
            ("spiffe://switchyard/gateway", Identity::Gateway),
            ("spiffe://switchyard/operator", Identity::Operator),
            ("spiffe://switchyard/balancer", Identity::Balancer),
        ] {
            assert_eq!(Identity::parse(uri), id);
            assert_eq!(id.uri(), uri);
        }
        for odd in [
            "spiffe://other/operator",
            "spiffe://switchyard/service/",
            "spiffe://switchyard/service/a/b",
            "spiffe://switchyardx/operator",
            "https://switchyard/operator",
        ] {
            assert_eq!(Identity::parse(odd), Identity::Unknown(odd.into()), "{odd}");
        }
    }
}
