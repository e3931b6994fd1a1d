//! An open-loop HTTP/1.1 load generator for benchmarks: `rate` requests per
//! second for `secs` seconds over exactly `conns` keep-alive connections
//! (as `oha -q R --latency-correction` and wrk2 do), each request timed from
//! its *scheduled* start, so a stall is not hidden (no coordinated
//! omission). Prints one JSON line.
//!
//! Run with: bench-load http://127.0.0.1:8080/hello/x 5000 10 64
//! A rate of 0 runs closed-loop (as fast as the connections allow).
//!
//! hyper-util's pooled client was used first; it opens a new connection
//! whenever all are busy and closes the surplus later, so a proxy with a
//! longer tail was also charged for the accepts and closes the generator
//! caused. Fixed connections keep the work offered to each proxy equal.

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::{Uri, client::conn::http1};
use hyper_util::rt::TokioIo;
use tokio::sync::{Mutex, mpsc};

type Sender = http1::SendRequest<Empty<Bytes>>;

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let url: Uri = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:8080/".into())
        .parse()
        .expect("a URL such as http://127.0.0.1:8080/");
    let rate: u64 = args.next().and_then(|n| n.parse().ok()).unwrap_or(1000);
    let secs: u64 = args.next().and_then(|n| n.parse().ok()).unwrap_or(10);
    let conns: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(64);
    let (tx, mut rx) = mpsc::unbounded_channel::<(u128, bool, String)>();
    let start = Instant::now();
    let end = start + Duration::from_secs(secs);
    // Open loop: one ticket per scheduled request; whichever connection is
    // free takes the next one, and its latency counts from the schedule.
    let tickets = (rate > 0).then(|| {
        let (ticket_tx, ticket_rx) = mpsc::unbounded_channel::<Instant>();
        let gap = Duration::from_nanos(1_000_000_000 / rate);
        tokio::spawn(async move {
            for i in 0..rate * secs {
                let scheduled = start + gap * u32::try_from(i).unwrap_or(u32::MAX);
                tokio::time::sleep_until(scheduled.into()).await;
                if ticket_tx.send(scheduled).is_err() {
                    break;
                }
            }
        });
        Arc::new(Mutex::new(ticket_rx))
    });
    for _ in 0..conns {
        let (url, tx, tickets) = (url.clone(), tx.clone(), tickets.clone());
        tokio::spawn(async move {
            let mut conn: Option<Sender> = None;
            loop {
                let scheduled = match &tickets {
                    Some(t) => match t.lock().await.recv().await {
                        Some(s) => s,
                        None => break,
                    },
                    None if Instant::now() < end => Instant::now(),
                    None => break,
                };
                let (ok, who) = once(&mut conn, &url).await;
                let _ = tx.send((scheduled.elapsed().as_micros(), ok, who));
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
        "{{\"ok\":{},\"failed\":{},\"rps\":{:.1},\"p50_us\":{},\"p90_us\":{},\"p99_us\":{},\"p999_us\":{},\"p9999_us\":{},\"max_us\":{},\"by_instance\":{{{}}}}}",
        latencies.len(),
        failed,
        latencies.len() as f64 / elapsed,
        pct(0.50),
        pct(0.90),
        pct(0.99),
        pct(0.999),
        pct(0.9999),
        latencies.last().copied().unwrap_or(0),
        by.join(",")
    );
}

/// One GET on this task's connection, (re)connecting first if it has none.
/// Returns whether it got a 200 and which instance answered.
async fn once(conn: &mut Option<Sender>, url: &Uri) -> (bool, String) {
    // A connection the server closed (nginx's keepalive_requests, say) is
    // replaced before sending: nothing was lost on it.
    let ready = match conn.as_mut() {
        Some(c) if !c.is_closed() => c.ready().await.is_ok(),
        _ => false,
    };
    if !ready {
        *conn = connect(url).await;
    }
    let Some(sender) = conn.as_mut() else {
        return (false, String::new());
    };
    let authority = url.authority().map_or("localhost", |a| a.as_str());
    let Ok(req) = hyper::Request::get(url.path_and_query().map_or("/", |p| p.as_str()))
        .header(hyper::header::HOST, authority)
        .body(Empty::new())
    else {
        return (false, String::new());
    };
    match sender.send_request(req).await {
        Ok(res) => {
            let ok = res.status() == 200;
            let Ok(body) = res.into_body().collect().await.map(|b| b.to_bytes()) else {
                *conn = None;
                return (false, String::new());
            };
            if !ok {
                return (false, String::new());
            }
            let text = String::from_utf8_lossy(&body[..body.len().min(64)]).into_owned();
            let who = text.split('"').nth(3).unwrap_or("?").to_string();
            (true, who)
        }
        Err(_) => {
            *conn = None;
            (false, String::new())
        }
    }
}

async fn connect(url: &Uri) -> Option<Sender> {
    let addr = format!(
        "{}:{}",
        url.host().unwrap_or("127.0.0.1"),
        url.port_u16().unwrap_or(80)
    );
    let stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let _ = stream.set_nodelay(true);
    let (mut sender, connection) = http1::handshake(TokioIo::new(stream)).await.ok()?;
    tokio::spawn(connection);
    sender.ready().await.ok()?;
    Some(sender)
}
