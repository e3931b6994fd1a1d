//! `echo-client`: calls `echo` directly, balancing itself with the SDK's
//! discovery cache and a tonic balanced channel (no gateway in the path).
//!
//! Run with: cargo run -p switchyard-examples --bin echo-client -- http://127.0.0.1:7000 100

use std::{collections::BTreeMap, time::Duration};

use switchyard_client::{Discovery, Target, channel, connect::TlsFiles};
use switchyard_examples::pb::{EchoRequest, echo_client::EchoClient};

const USAGE: &str = "Usage: echo-client [REGISTRY_URL] [CALLS]\n  Finds echo instances in the registry and calls them CALLS times (default 100), balancing\n  with the SDK alone, and prints which instance answered. REGISTRY_URL defaults to http://127.0.0.1:7000.\n  An https:// registry is dialled with mutual TLS as the operator: the files of SWITCHYARD_MTLS_CA,\n  SWITCHYARD_MTLS_CERT and SWITCHYARD_MTLS_KEY, by default deploy/certs/ca.pem, operator.pem and\n  operator-key.pem (what deploy/up.sh made; run it from the repository).";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (registry, calls) = switchyard_examples::client_args(USAGE, "http://127.0.0.1:7000");
    let tls = registry.starts_with("https://").then(|| {
        let file = |var: &str, default: &str| {
            std::env::var_os(var).map_or_else(|| default.into(), std::path::PathBuf::from)
        };
        TlsFiles {
            ca: file("SWITCHYARD_MTLS_CA", "deploy/certs/ca.pem"),
            cert: file("SWITCHYARD_MTLS_CERT", "deploy/certs/operator.pem"),
            key: file("SWITCHYARD_MTLS_KEY", "deploy/certs/operator-key.pem"),
        }
    });
    let discovery = Discovery::start(
        Target::new([registry.as_str()], None)?.with_tls(tls.as_ref())?,
        vec!["echo".into()],
        Duration::from_secs(10),
        switchyard_runtime::clock::system(),
    );
    if !discovery.synced(Duration::from_secs(10)).await {
        let hint = if tls.is_none() {
            " (the stack deploy/up.sh starts serves mutual TLS: use https://127.0.0.1:7000)"
        } else {
            ""
        };
        anyhow::bail!("the registry at {registry} did not answer within 10 s{hint}");
    }
    // Straight after the stack starts, its echo instances may not have
    // registered yet.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while discovery.routable("echo").is_empty() {
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!("no echo instance registered in the registry at {registry} within 10 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut client = EchoClient::new(channel::balanced_channel(&discovery, "echo"));
    let mut answered_by: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..calls {
        let answer = client
            .unary(EchoRequest {
                message: format!("hello {i}"),
                count: 1,
            })
            .await?
            .into_inner();
        *answered_by.entry(answer.instance).or_default() += 1;
    }
    println!("{calls} calls answered by: {answered_by:?}");
    Ok(())
}
