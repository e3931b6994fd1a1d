//! An open-loop HTTP/1.1 load generator for benchmarks: `rate` requests per
//! second for `secs` seconds over `conns` keep-alive connections, each
//! request timed from its *scheduled* start (so a stall is not hidden:
//! no coordinated omission). Prints one JSON line.
//!
//! Run with: bench-load http://127.0.0.1:8080/hello/x 5000 10 64
//! A rate of 0 runs closed-loop (as fast as the connections allow).

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use tokio::sync::mpsc;

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:8080/".into());
    let rate: u64 = args.next().and_then(|n| n.parse().ok()).unwrap_or(1000);
    let secs: u64 = args.next().and_then(|n| n.parse().ok()).unwrap_or(10);
    let conns: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(64);
    let client = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(conns)
        .build_http::<Empty<Bytes>>();
    let (tx, mut rx) = mpsc::unbounded_channel::<(u128, bool, String)>();
    let start = Instant::now();
    let end = start + Duration::from_secs(secs);
    if rate == 0 {
        for _ in 0..conns {
            let (client, url, tx) = (client.clone(), url.clone(), tx.clone());
            tokio::spawn(async move {
                while Instant::now() < end {
                    let t = Instant::now();
                    let (ok, who) = once(&client, &url).await;
                    let _ = tx.send((t.elapsed().as_micros(), ok, who));
                }
            });
        }
    } else {
        let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(conns * 4));
        let total = rate * secs;
        let gap = Duration::from_nanos(1_000_000_000 / rate);
        let (client, url, tx) = (client.clone(), url.clone(), tx.clone());
        tokio::spawn(async move {
            for i in 0..total {
                let scheduled = start + gap * u32::try_from(i).unwrap_or(u32::MAX);
                tokio::time::sleep_until(scheduled.into()).await;
                let Ok(permit) = sem.clone().acquire_owned().await else {
                    break;
                };
                let (client, url, tx) = (client.clone(), url.clone(), tx.clone());
                tokio::spawn(async move {
                    let (ok, who) = once(&client, &url).await;
                    let _ = tx.send((scheduled.elapsed().as_micros(), ok, who));
                    drop(permit);
                });
            }
        });
    }
    drop(tx);
    let mut latencies = Vec::new();
    let mut failed = 0u64;
    let mut by: BTreeMap<String, u64> = BTreeMap::new();
    while let Some((us, ok, who)) = rx.recv().await {
        if ok {
            latencies.push(us);
            *by.entry(who).or_default() += 1;
        } else {
            failed += 1;
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    let by: Vec<String> = by.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
    println!(
        "{{\"ok\":{},\"failed\":{},\"rps\":{:.1},\"p50_us\":{},\"p99_us\":{},\"p999_us\":{},\"by_instance\":{{{}}}}}",
        latencies.len(),
        failed,
        latencies.len() as f64 / elapsed,
        pct(0.50),
        pct(0.99),
        pct(0.999),
        by.join(",")
    );
}

async fn once(
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>,
    url: &str,
) -> (bool, String) {
    let Ok(req) = hyper::Request::get(url).body(Empty::new()) else {
        return (false, String::new());
    };
    match client.request(req).await {
        Ok(res) if res.status() == 200 => {
            let body = res
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let text = String::from_utf8_lossy(&body[..body.len().min(64)]).into_owned();
            let who = text.split('"').nth(3).unwrap_or("?").to_string();
            (true, who)
        }
        _ => (false, String::new()),
    }
}
