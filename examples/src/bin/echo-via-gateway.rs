//! `echo-via-gateway`: calls `echo` through the gateway, which balances per
//! call. The client knows only the gateway's address.
//!
//! Run with: cargo run -p switchyard-examples --bin echo-via-gateway -- http://127.0.0.1:8080 100

use std::collections::BTreeMap;

use switchyard_examples::pb::{EchoRequest, echo_client::EchoClient};
use tokio_stream::StreamExt;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let gateway = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:8080".into());
    let calls: usize = args.next().map(|n| n.parse()).transpose()?.unwrap_or(100);
    let mut client = EchoClient::connect(gateway).await?;
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
    let streamed: Vec<_> = client
        .server_stream(EchoRequest {
            message: "stream".into(),
            count: 3,
        })
        .await?
        .into_inner()
        .collect::<Result<_, _>>()
        .await?;
    println!(
        "{calls} unary calls answered by: {answered_by:?}; a server stream gave {} answers",
        streamed.len()
    );
    Ok(())
}
