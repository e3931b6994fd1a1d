//! A development CA, made offline: what `deploy/up.sh` and the tests use
//! to give every component a certificate that names its identity.

use std::{
    io,
    net::IpAddr,
    path::Path,
    time::{Duration, SystemTime},
};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

use crate::{Files, Identity};

/// How long a development CA is valid.
pub const CA_DAYS: u64 = 3650;

/// A CA that signs component certificates.
pub struct DevCa {
    cert_pem: String,
    key_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// What a component's certificate says.
#[derive(Debug, Clone)]
pub struct Leaf {
    /// Its URI SAN.
    pub identity: Identity,
    /// Host names and IP addresses it is valid for as a server.
    pub names: Vec<String>,
    /// Not valid before.
    pub not_before: SystemTime,
    /// Not valid after.
    pub not_after: SystemTime,
}

/// A certificate and its key, PEM.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The certificate.
    pub cert_pem: String,
    /// Its private key (PKCS#8).
    pub key_pem: String,
}

// === impl DevCa ===

impl std::fmt::Debug for DevCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevCa").finish_non_exhaustive()
    }
}

impl DevCa {
    /// A new CA (ECDSA P-256) named `common_name`, valid [`CA_DAYS`].
    pub fn generate(common_name: &str) -> Result<Self, rcgen::Error> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let now = SystemTime::now();
        params.not_before = (now - Duration::from_secs(3600)).into();
        params.not_after = (now + Duration::from_secs(CA_DAYS * 86_400)).into();
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        Ok(Self {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// A CA made before, from its certificate and key.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, rcgen::Error> {
        let key = KeyPair::from_pem(key_pem)?;
        Ok(Self {
            cert_pem: cert_pem.into(),
            key_pem: key_pem.into(),
            issuer: Issuer::from_ca_cert_pem(cert_pem, key)?,
        })
    }

    /// The CA's certificate, for every component's `mtls_ca`.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA's private key: keep it out of every container.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// A certificate for a component, good as a server and as a client.
    pub fn issue(&self, leaf: &Leaf) -> Result<Issued, rcgen::Error> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, leaf.identity.uri());
        params.distinguished_name = dn;
        params
            .subject_alt_names
            .push(SanType::URI(leaf.identity.uri().try_into()?));
        for name in &leaf.names {
            params.subject_alt_names.push(match name.parse::<IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(name.as_str().try_into()?),
            });
        }
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.not_before = leaf.not_before.into();
        params.not_after = leaf.not_after.into();
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

// === impl Issued ===

impl Issued {
    /// Writes `<dir>/<name>.pem` and `<dir>/<name>-key.pem` (the key
    /// readable by its owner only), beside the CA's `<dir>/ca.pem`, which
    /// must be there: the files a component's `mtls_*` settings name.
    pub fn write(&self, dir: &Path, name: &str) -> io::Result<Files> {
        let files = Files::in_dir(dir, name);
        write_private(&files.key, &self.key_pem)?;
        std::fs::write(&files.cert, &self.cert_pem)?;
        Ok(files)
    }
}

/// Writes a file only its owner may read, replacing it whole: written
/// beside it and renamed, so a process reading it sees the old or the new
/// content, never half.
pub fn write_private(path: &Path, content: &str) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let part = path.with_extension("part");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&part)?;
    io::Write::write_all(&mut f, content.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&part, path)
}

// === impl Leaf ===

impl Leaf {
    /// Valid from an hour ago (clocks differ) for `days` days.
    pub fn new(identity: Identity, names: &[&str], days: u64) -> Self {
        let now = SystemTime::now();
        Self {
            identity,
            names: names.iter().map(|n| n.to_string()).collect(),
            not_before: now - Duration::from_secs(3600),
            not_after: now + Duration::from_secs(days * 86_400),
        }
    }
}
