//! `switchyard-certs DIR [--renew] [--service NAME]...`: the development CA
//! and one certificate per component and example service (and per service
//! named with `--service`: `spiffe://switchyard/service/NAME`), made
//! offline, for `deploy/up.sh`.
//!
//! The CA (`ca.pem`, `ca-key.pem`) is made once and reused. A component's
//! certificate (`<name>.pem`, `<name>-key.pem`) is kept on later runs
//! unless it expires within a week, was signed by another CA, or
//! `--renew` asks for new ones (a rotation: the processes read the new
//! files at their next connection). With a `ca.pem` and no `ca-key.pem`
//! (your own CA), nothing is made: every certificate must be there.
//! Exit 0 done, 1 failed, 64 usage.

use std::{
    path::Path,
    process::ExitCode,
    time::{Duration, SystemTime},
};

use switchyard_tls::{
    Identity,
    dev::{DevCa, Leaf, write_private},
};
use x509_parser::{certificate::X509Certificate, prelude::FromDer};

/// Leaves live 90 days; one closer than a week to its end is made again.
const LEAF_DAYS: u64 = 90;
const RENEW_BEFORE: Duration = Duration::from_secs(7 * 86_400);

/// Who gets a certificate, and the names it is valid for as a server: the
/// compose stacks' host names, and loopback for tools on the host that
/// reach the registry's published port.
fn leaves() -> Vec<(&'static str, Identity, &'static [&'static str])> {
    vec![
        (
            "registry",
            Identity::Registry,
            &[
                "registry",
                "registry1",
                "registry2",
                "registry3",
                "localhost",
                "127.0.0.1",
                "::1",
            ],
        ),
        (
            "balancer",
            Identity::Balancer,
            &["balancer", "localhost", "127.0.0.1"],
        ),
        ("gateway", Identity::Gateway, &["gateway"]),
        ("operator", Identity::Operator, &[]),
        // The HA stack's etcd members, for clients (the registry replicas)
        // and for each other.
        (
            "etcd",
            Identity::Unknown(format!("spiffe://{}/etcd", switchyard_tls::TRUST_DOMAIN)),
            &["etcd1", "etcd2", "etcd3", "localhost", "127.0.0.1"],
        ),
        // A service's certificate names its host name too (the compose
        // service's), for clients that check names only.
        ("hello", Identity::Service("hello".into()), &["hello"]),
        ("echo", Identity::Service("echo".into()), &["echo"]),
    ]
}

fn main() -> ExitCode {
    let usage = "usage: switchyard-certs DIR [--renew] [--service NAME]...";
    let mut args = std::env::args().skip(1);
    let (mut dirs, mut renew, mut services) = (Vec::new(), false, Vec::new());
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-h" | "--help" => {
                say(format_args!("{usage}"));
                return ExitCode::SUCCESS;
            }
            "--renew" => renew = true,
            "--service" => match args.next() {
                Some(name) if leaves().iter().any(|(n, ..)| *n == name) => {
                    eprintln!("switchyard-certs: {name} has a certificate already\n{usage}");
                    return ExitCode::from(64);
                }
                Some(name) if valid_service(&name) => services.push(name),
                other => {
                    eprintln!(
                        "switchyard-certs: --service needs a service name (letters, digits, '-', '_', '.'), got {other:?}\n{usage}"
                    );
                    return ExitCode::from(64);
                }
            },
            flag if flag.starts_with('-') => {
                eprintln!("switchyard-certs: unknown flag {flag}\n{usage}");
                return ExitCode::from(64);
            }
            _ => dirs.push(arg),
        }
    }
    let [dir] = dirs.as_slice() else {
        eprintln!("switchyard-certs: give one directory\n{usage}");
        return ExitCode::from(64);
    };
    match run(Path::new(dir), renew, &services) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("switchyard-certs: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A service name the registry takes, which also makes a safe file name.
fn valid_service(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn run(dir: &Path, renew: bool, services: &[String]) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let (ca_pem, ca_key) = (dir.join("ca.pem"), dir.join("ca-key.pem"));
    let (ca, new_ca) = match (read(&ca_pem), read(&ca_key)) {
        // Your own CA: its key is elsewhere, so nothing is made here.
        (Some(_), None) => return own_ca(dir, services),
        (Some(cert), Some(key)) => (
            DevCa::from_pem(&cert, &key).map_err(|e| format!("{}: {e}", ca_pem.display()))?,
            false,
        ),
        _ => {
            let ca = DevCa::generate("Switchyard development CA").map_err(|e| e.to_string())?;
            write_private(&ca_key, ca.key_pem())
                .map_err(|e| format!("{}: {e}", ca_key.display()))?;
            std::fs::write(&ca_pem, ca.cert_pem())
                .map_err(|e| format!("{}: {e}", ca_pem.display()))?;
            say(format_args!("{}: a new development CA", ca_pem.display()));
            (ca, true)
        }
    };
    let yours = services.iter().map(|s| {
        let name: &str = s;
        (name, Identity::Service(s.clone()), vec![name])
    });
    let ours = leaves()
        .into_iter()
        .map(|(name, identity, names)| (name, identity, names.to_vec()));
    for (name, identity, names) in ours.chain(yours) {
        let cert = dir.join(format!("{name}.pem"));
        if !renew
            && !new_ca
            && still_good(&cert, ca.cert_pem())
            && dir.join(format!("{name}-key.pem")).exists()
        {
            continue;
        }
        ca.issue(&Leaf::new(identity.clone(), &names, LEAF_DAYS))
            .map_err(|e| format!("{name}: {e}"))?
            .write(dir, name)
            .map_err(|e| format!("{}: {e}", cert.display()))?;
        say(format_args!(
            "{}: {identity}, {LEAF_DAYS} days",
            cert.display()
        ));
    }
    Ok(())
}

/// With a CA whose key is not here: every certificate must be given.
fn own_ca(dir: &Path, services: &[String]) -> Result<(), String> {
    let names = leaves().into_iter().map(|(name, ..)| name.to_string());
    let missing: Vec<String> = names
        .chain(services.iter().cloned())
        .flat_map(|name| [format!("{name}.pem"), format!("{name}-key.pem")])
        .filter(|f| !dir.join(f).exists())
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "{}: ca.pem is there without ca-key.pem (your own CA), so nothing is made here; missing: {}",
            dir.display(),
            missing.join(", ")
        ));
    }
    say(format_args!(
        "{}: your own CA's certificates, kept as they are",
        dir.display()
    ));
    Ok(())
}

/// A line on stdout; a closed stdout (`| head`) is not a failure.
fn say(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout(), "{line}");
}

fn read(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// Whether the certificate at `path` was issued by this CA (by subject
/// key: the CAs made here share a name) and has more than a week left.
fn still_good(path: &Path, ca_pem: &str) -> bool {
    let (Some(leaf), Some(ca)) = (read(path).and_then(|p| first_der(&p)), first_der(ca_pem)) else {
        return false;
    };
    let (Ok((_, leaf)), Ok((_, ca))) = (
        X509Certificate::from_der(&leaf),
        X509Certificate::from_der(&ca),
    ) else {
        return false;
    };
    let signed_here = leaf.verify_signature(Some(ca.public_key())).is_ok();
    let end = leaf.validity().not_after.timestamp();
    let left = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|now| end - now.as_secs() as i64)
        .unwrap_or(0);
    signed_here && left > RENEW_BEFORE.as_secs() as i64
}

/// The first certificate of a PEM text, as DER.
fn first_der(pem: &str) -> Option<Vec<u8>> {
    use tokio_rustls::rustls::pki_types::{CertificateDer, pem::PemObject};
    CertificateDer::from_pem_slice(pem.as_bytes())
        .ok()
        .map(|c| c.to_vec())
}
