//! Checking a server by the component it is, not only by the name dialled.

use std::sync::Arc;

use tokio_rustls::rustls::{
    CertificateError, DigitallySignedStruct, Error, SignatureScheme,
    client::{
        WebPkiServerVerifier,
        danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    },
    pki_types::{CertificateDer, ServerName, UnixTime},
};

use crate::Identity;

/// webpki's checks (chain to the CA, validity dates, key usage, the
/// handshake's signature), with one allowance: a certificate that does not
/// name the host dialled still passes if its URI SAN is the identity
/// expected. Components dial each other at advertised addresses (a
/// balancer's IP in the subnet it was started in), which a certificate
/// made beforehand cannot list; SPIFFE's X.509-SVIDs are checked by ID for
/// the same reason.
#[derive(Debug)]
pub(crate) struct NameOrIdentity {
    webpki: Arc<WebPkiServerVerifier>,
    expect: Identity,
}

impl NameOrIdentity {
    pub(crate) fn new(webpki: Arc<WebPkiServerVerifier>, expect: Identity) -> Self {
        Self { webpki, expect }
    }
}

impl ServerCertVerifier for NameOrIdentity {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        // webpki checks the name last, after the chain, dates and usage: a
        // name error means everything else passed.
        match self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Err(Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if Identity::from_certificate(end_entity).as_ref() == Some(&self.expect) => {
                Ok(ServerCertVerified::assertion())
            }
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}
