//! `echo-client`: calls `echo` directly, balancing itself with the SDK's
//! discovery cache and a tonic balanced channel (no gateway in the path).
//!
//! Run with: cargo run -p switchyard-examples --bin echo-client -- http://127.0.0.1:7000 100

use std::{collections::BTreeMap, time::Duration};

use switchyard_client::{Discovery, Target, channel};
use switchyard_examples::pb::{EchoRequest, echo_client::EchoClient};

const USAGE: &str = "Usage: echo-client [REGISTRY_URL] [CALLS]\n  Finds echo instances in the registry and calls them CALLS times (default 100), balancing\n  with the SDK alone, and prints which instance answered. REGISTRY_URL defaults to http://127.0.0.1:7000.";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (registry, calls) = switchyard_examples::client_args(USAGE, "http://127.0.0.1:7000");
    let discovery = Discovery::start(
        Target::new([registry], None)?,
        vec!["echo".into()],
        Duration::from_secs(10),
        switchyard_runtime::clock::system(),
    );
    if !discovery.synced(Duration::from_secs(10)).await || discovery.routable("echo").is_empty() {
        anyhow::bail!("no echo instance found in the registry");
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
