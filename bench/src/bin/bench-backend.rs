//! A minimal HTTP/1.1 backend for benchmarks: answers every request with a
//! fixed body, after an optional delay.
//!
//! Run with: `bench-backend 127.0.0.1:9001 1024 0 b1` (address, body bytes, delay in ms, name).

use std::{convert::Infallible, time::Duration};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Response, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:9001".into());
    let size: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(1024);
    let delay = Duration::from_millis(args.next().and_then(|n| n.parse().ok()).unwrap_or(0));
    let name = args.next().unwrap_or_else(|| addr.clone());
    let mut body = format!("{{\"instance\":\"{name}\",\"pad\":\"");
    body.push_str(&"x".repeat(size.saturating_sub(body.len() + 2)));
    body.push_str("\"}");
    let body = Bytes::from(body);
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let body = body.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |_req| {
                let body = body.clone();
                async move {
                    if !delay.is_zero() {
                        tokio::time::sleep(delay).await;
                    }
                    Ok::<_, Infallible>(Response::new(Full::new(body)))
                }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}
