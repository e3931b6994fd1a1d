//! Shared pieces of the example services: the echo contract, fault
//! injection (latency, failures, crash after N requests) and registration.
//!
//! The services themselves are in `src/bin/`: `hello` (HTTP JSON), `echo`
//! (gRPC), and two clients of `echo`, one balancing itself with the SDK and
//! one going through the gateway.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use rand::Rng;
use switchyard_client::{Session, Target, connect::TlsFiles, instance, pb::Protocol};

/// The `echo.v1` contract.
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("echo.v1");
}

/// Faults to inject, for trying failures out.
#[derive(Debug)]
pub struct Faults {
    latency: Duration,
    jitter: Duration,
    fail_rate: f64,
    exit_after: u64,
    served: AtomicU64,
}

// === impl Faults ===

impl Faults {
    /// `latency` plus up to `jitter` (uniform) per request; `fail_rate`
    /// (0 to 1) of requests fail; the process exits after `exit_after`
    /// requests (0: never), like a crash.
    pub fn new(latency: Duration, jitter: Duration, fail_rate: f64, exit_after: u64) -> Self {
        Self {
            latency,
            jitter,
            fail_rate,
            exit_after,
            served: AtomicU64::new(0),
        }
    }

    /// Applies the faults to one request; `false` means "answer with a failure".
    pub async fn apply(&self) -> bool {
        let n = self.served.fetch_add(1, Ordering::Relaxed) + 1;
        if self.exit_after > 0 && n > self.exit_after {
            tracing::warn!(served = n - 1, "exit_after reached: exiting like a crash");
            std::process::exit(1);
        }
        let extra = if self.jitter.is_zero() {
            Duration::ZERO
        } else {
            rand::rng().random_range(Duration::ZERO..=self.jitter)
        };
        let delay = self.latency + extra;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        !(self.fail_rate > 0.0 && rand::rng().random_bool(self.fail_rate.min(1.0)))
    }
}

/// An example service's registry link, checked at start: nothing without
/// a registry; else the `mtls_*` files (which must load) or plaintext said
/// out loud, as the components want.
pub fn check_registry_tls(
    registry: &[String],
    (ca, cert, key): (&str, &str, &str),
    plaintext: bool,
) -> Result<(), switchyard_runtime::ConfigError> {
    if registry.is_empty() {
        return Ok(());
    }
    let files = switchyard_runtime::tls::required(ca, cert, key, plaintext)?;
    switchyard_runtime::tls::client(files.as_ref()).map(drop)
}

/// Registers `service`/`instance_id` at `address` with the registry at
/// `registry` (nothing when `registry` is empty), over mutual TLS with
/// `tls` when given.
pub fn register(
    registry: &[String],
    token: &str,
    tls: Option<&TlsFiles>,
    service: &str,
    instance_id: &str,
    address: &str,
    protocol: Protocol,
) -> anyhow::Result<Option<Session>> {
    if registry.is_empty() {
        return Ok(None);
    }
    let token = (!token.is_empty()).then_some(token);
    let target = Target::new(registry, token)?.with_tls(tls)?;
    let session = Session::start(target, Duration::from_secs(10));
    session.register(instance(service, instance_id, address, protocol));
    tracing::info!(%service, %instance_id, %address, "registering");
    Ok(Some(session))
}

/// The arguments of the small client binaries (`echo-client`,
/// `echo-via-gateway`): `[URL] [CALLS]`, each with a default. `--help`
/// prints `usage` and exits 0; another flag, a third argument, a URL
/// without `http://` or `https://`, or a count that is not a number prints
/// what is wrong and the usage, and exits 64.
pub fn client_args(usage: &str, default_url: &str) -> (String, usize) {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("{usage}");
        std::process::exit(0);
    }
    let refuse = |what: String| -> ! {
        eprintln!("{what}\n{usage}");
        std::process::exit(64);
    };
    if let Some(flag) = args.iter().find(|a| a.starts_with('-')) {
        refuse(format!("unknown flag {flag}"));
    }
    if args.len() > 2 {
        refuse(format!("unexpected argument {}", args[2]));
    }
    let url = args.first().map_or(default_url, String::as_str).to_string();
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        refuse(format!("`{url}` is not a URL like {default_url}"));
    }
    let calls = match args.get(1).map(|n| n.parse::<usize>()) {
        None => 100,
        Some(Ok(n)) => n,
        Some(Err(_)) => refuse(format!("`{}` is not a number of calls", args[1])),
    };
    (url, calls)
}
