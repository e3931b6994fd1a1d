//! `echo-via-gateway`: calls `echo` through the gateway, which balances per
//! call. The client knows only the gateway's address.
//!
//! Run with: cargo run -p switchyard-examples --bin echo-via-gateway -- http://127.0.0.1:8080 100

use std::collections::BTreeMap;

use switchyard_examples::pb::{EchoRequest, echo_client::EchoClient};
use tokio_stream::StreamExt;

const USAGE: &str = "Usage: echo-via-gateway [GATEWAY_URL] [CALLS]\n  Calls echo.v1.Echo through the gateway CALLS times (default 100), then one server stream,\n  and prints which instance answered. GATEWAY_URL defaults to http://127.0.0.1:8080.";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (gateway, calls) = switchyard_examples::client_args(USAGE, "http://127.0.0.1:8080");
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
