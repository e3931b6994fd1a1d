//! `switchyard-certs`, as `deploy/certs.sh` runs it: made once, reused,
//! renewed on request, your own CA's files kept, bad input refused.

use std::{path::PathBuf, process::Command};

use switchyard_tls::{ClientTls, Files, Identity, ServerTls};

const BIN: &str = env!("CARGO_BIN_EXE_switchyard-certs");

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("switchyard-certs-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn run(args: &[&str]) -> (i32, String) {
    let out = Command::new(BIN).args(args).output().expect("run");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

fn files(dir: &std::path::Path, name: &str) -> Files {
    Files::in_dir(dir, name)
}

fn read(dir: &std::path::Path, file: &str) -> String {
    std::fs::read_to_string(dir.join(file)).unwrap_or_default()
}

#[test]
fn made_once_reused_and_renewed() {
    let dir = scratch("made");
    let d = dir.to_str().expect("utf8");
    let (code, out) = run(&[d]);
    assert_eq!(code, 0, "{out}");
    for name in [
        "registry", "balancer", "gateway", "operator", "hello", "echo", "etcd",
    ] {
        // Each pair loads as rustls takes it, on both sides.
        ServerTls::load(&files(&dir, name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        ClientTls::load(&files(&dir, name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    let der = |file: &str| {
        use tokio_rustls::rustls::pki_types::{CertificateDer, pem::PemObject};
        CertificateDer::from_pem_file(dir.join(file)).expect("pem")
    };
    assert_eq!(
        Identity::from_certificate(&der("hello.pem")),
        Some(Identity::Service("hello".into()))
    );
    assert_eq!(
        Identity::from_certificate(&der("registry.pem")),
        Some(Identity::Registry)
    );
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(dir.join("ca-key.pem"))
            .expect("key")
            .permissions(),
    );
    assert_eq!(mode & 0o077, 0, "the CA's key is its owner's only");

    // Later runs keep everything; --renew makes new leaves from the same CA.
    let (ca, hello) = (read(&dir, "ca.pem"), read(&dir, "hello.pem"));
    let (code, out) = run(&[d]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        (read(&dir, "ca.pem"), read(&dir, "hello.pem")),
        (ca.clone(), hello.clone())
    );
    let (code, out) = run(&[d, "--renew", "--service", "my-api"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(read(&dir, "ca.pem"), ca, "the CA stays");
    assert_ne!(read(&dir, "hello.pem"), hello, "the leaves are new");
    assert_eq!(
        Identity::from_certificate(&der("my-api.pem")),
        Some(Identity::Service("my-api".into()))
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn your_own_ca_is_kept_and_bad_input_refused() {
    let dir = scratch("own");
    let d = dir.to_str().expect("utf8");
    assert_eq!(run(&[d]).0, 0);
    // Without the CA's key: nothing is made or changed, and what is
    // missing is named.
    std::fs::remove_file(dir.join("ca-key.pem")).expect("rm");
    let before = read(&dir, "gateway.pem");
    assert_eq!(run(&[d]).0, 0);
    assert_eq!(read(&dir, "gateway.pem"), before);
    std::fs::remove_file(dir.join("echo.pem")).expect("rm");
    let (code, out) = run(&[d]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("echo.pem") && out.contains("without ca-key.pem"),
        "{out}"
    );
    assert!(!dir.join("echo.pem").exists());

    for (args, says) in [
        (vec![], "give one directory"),
        (vec![d, "--nope"], "unknown flag --nope"),
        (vec![d, "--service"], "--service needs"),
        (vec![d, "--service", "../x"], "--service needs"),
        (
            vec![d, "--service", "registry"],
            "has a certificate already",
        ),
    ] {
        let (code, out) = run(&args);
        assert_eq!(code, 64, "{args:?}: {out}");
        assert!(out.contains(says), "{args:?}: {out}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
