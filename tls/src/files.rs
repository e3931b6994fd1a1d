//! The three PEM files, read again when they change.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tokio_rustls::rustls::{
    RootCertStore,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
};

/// How often, at most, a handshake looks at the files again. The files are
/// only read when a connection is made, so an idle process reads nothing;
/// a busy one reads three small files once a second.
const RECHECK: Duration = Duration::from_secs(1);

/// Where a component's CA, certificate and key are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Files {
    /// The CA certificate(s) that sign every component's certificate (PEM).
    pub ca: PathBuf,
    /// This component's certificate, followed by any intermediates (PEM).
    pub cert: PathBuf,
    /// This component's private key (PEM: PKCS#8, SEC1 or PKCS#1).
    pub key: PathBuf,
}

/// Which of the three files a problem is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// [`Files::ca`].
    Ca,
    /// [`Files::cert`].
    Cert,
    /// [`Files::key`].
    Key,
}

/// A file that cannot be read or used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", path.display())]
pub struct Error {
    /// Which file.
    pub part: Part,
    /// Its path.
    pub path: PathBuf,
    /// What is wrong with it.
    pub message: String,
}

// === impl Files ===

impl Files {
    /// From three settings that are set together or not at all: `None`
    /// when all are empty, `Err(part)` naming the first one missing.
    pub fn from_paths(ca: &str, cert: &str, key: &str) -> Result<Option<Self>, Part> {
        match (ca.is_empty(), cert.is_empty(), key.is_empty()) {
            (true, true, true) => Ok(None),
            (true, _, _) => Err(Part::Ca),
            (_, true, _) => Err(Part::Cert),
            (_, _, true) => Err(Part::Key),
            _ => Ok(Some(Self {
                ca: ca.into(),
                cert: cert.into(),
                key: key.into(),
            })),
        }
    }

    /// The files `switchyard-certs` and `deploy/certs.sh` write for
    /// `name` in `dir`: `ca.pem`, `<name>.pem`, `<name>-key.pem`.
    pub fn in_dir(dir: &Path, name: &str) -> Self {
        Self {
            ca: dir.join("ca.pem"),
            cert: dir.join(format!("{name}.pem")),
            key: dir.join(format!("{name}-key.pem")),
        }
    }

    fn path(&self, part: Part) -> &Path {
        match part {
            Part::Ca => &self.ca,
            Part::Cert => &self.cert,
            Part::Key => &self.key,
        }
    }
}

/// The files' bytes, compared to tell a change.
#[derive(PartialEq, Eq)]
pub(crate) struct Material {
    files: Files,
    ca: Vec<u8>,
    cert: Vec<u8>,
    key: Vec<u8>,
}

// === impl Material ===

impl Material {
    fn read(files: &Files) -> Result<Self, Error> {
        let read = |part| {
            let path = files.path(part);
            std::fs::read(path).map_err(|e| Error {
                part,
                path: path.into(),
                message: e.to_string(),
            })
        };
        Ok(Self {
            files: files.clone(),
            ca: read(Part::Ca)?,
            cert: read(Part::Cert)?,
            key: read(Part::Key)?,
        })
    }

    /// An error about one of the files.
    pub(crate) fn error(&self, part: Part, message: impl std::fmt::Display) -> Error {
        Error {
            part,
            path: self.files.path(part).into(),
            message: message.to_string(),
        }
    }

    fn certificates(&self, part: Part, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, Error> {
        let certs = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.error(part, e))?;
        if certs.is_empty() {
            return Err(self.error(part, "no PEM certificate in the file"));
        }
        Ok(certs)
    }

    pub(crate) fn roots(&self) -> Result<Arc<RootCertStore>, Error> {
        let mut roots = RootCertStore::empty();
        for cert in self.certificates(Part::Ca, &self.ca)? {
            roots.add(cert).map_err(|e| self.error(Part::Ca, e))?;
        }
        Ok(Arc::new(roots))
    }

    pub(crate) fn chain(&self) -> Result<Vec<CertificateDer<'static>>, Error> {
        self.certificates(Part::Cert, &self.cert)
    }

    pub(crate) fn key(&self) -> Result<PrivateKeyDer<'static>, Error> {
        PrivateKeyDer::from_pem_slice(&self.key).map_err(|e| self.error(Part::Key, e))
    }
}

/// A rustls config built from the files, built again when they change.
pub(crate) struct Reloading<C> {
    files: Files,
    build: fn(&Material) -> Result<C, Error>,
    state: Mutex<Loaded<C>>,
}

struct Loaded<C> {
    checked: Instant,
    material: Material,
    config: Arc<C>,
    /// The last reload's failure, logged once rather than at every look.
    failed: Option<Error>,
}

// === impl Reloading ===

impl<C> Reloading<C> {
    pub(crate) fn load(
        files: Files,
        build: fn(&Material) -> Result<C, Error>,
    ) -> Result<Self, Error> {
        let material = Material::read(&files)?;
        let config = Arc::new(build(&material)?);
        Ok(Self {
            files,
            build,
            state: Mutex::new(Loaded {
                checked: Instant::now(),
                material,
                config,
                failed: None,
            }),
        })
    }

    pub(crate) fn files(&self) -> &Files {
        &self.files
    }

    /// The config for a handshake starting now. A change that cannot be
    /// used (a key that does not match, a file half written) keeps the
    /// previous config and is logged; the next look tries again.
    pub(crate) fn current(&self) -> Arc<C> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.checked.elapsed() < RECHECK {
            return state.config.clone();
        }
        state.checked = Instant::now();
        let reloaded = Material::read(&self.files).and_then(|m| {
            if m == state.material {
                return Ok(None);
            }
            (self.build)(&m).map(|c| Some((m, c)))
        });
        match reloaded {
            Ok(None) => {}
            Ok(Some((material, config))) => {
                tracing::info!(cert = %self.files.cert.display(), "certificate files changed: new connections use them");
                state.material = material;
                state.config = Arc::new(config);
                state.failed = None;
            }
            Err(error) => {
                if state.failed.as_ref() != Some(&error) {
                    tracing::warn!(%error, "certificate files changed but cannot be used: keeping the previous ones");
                    state.failed = Some(error);
                }
            }
        }
        state.config.clone()
    }
}
