//! The registry against etcd, each used the way a service would use it to
//! announce itself: Switchyard's `Register` (one call opens a lease and
//! attaches the instance), etcd's `LeaseGrant` + `Put` (the key carries the
//! lease). Prints one JSON line per run.
//!
//! ```text
//! bench-registry switchyard|etcd URL register N CONCURRENCY
//! bench-registry switchyard|etcd URL renew LEASES ROUNDS
//! bench-registry switchyard|etcd URL propagate WATCHERS WRITES
//! ```
//!
//! Every run spreads its calls over 10 HTTP/2 connections (over the servers
//! URL lists, comma-separated, for replicas or cluster members). `register` also
//! serves to fill a server for the memory figure (leases of 300 s).
//! `propagate` opens WATCHERS watch streams (one per watcher, as a client per
//! process would), then writes one instance at a time and times, for each
//! write, how long until the *last* watcher saw it.
//!
//! With `BENCH_MTLS_DIR` set (a directory `switchyard-certs` made), the
//! connections to Switchyard are mutual TLS as its operator, for the cost
//! of mTLS against the same registry in plaintext; `BENCH_MTLS_AS=NAME`
//! takes the certificate `NAME.pem` instead (`renew` runs as the `renew`
//! service, whose rights the registry checks on every renewal).

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use switchyard_bench::etcd;
use switchyard_proto::registry::v1 as reg;
use tokio::sync::mpsc;
use tokio_stream::{StreamExt, wrappers::ReceiverStream};
use tonic::transport::{Channel, Endpoint};

const CONNECTIONS: usize = 10;
const TTL: u32 = 300;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Target {
    Switchyard,
    Etcd,
}

type Error = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: bench-registry switchyard|etcd URL register N CONC | renew LEASES ROUNDS | propagate WATCHERS WRITES";
    if args.len() < 5 {
        return Err(usage.into());
    }
    let target = match args[0].as_str() {
        "switchyard" => Target::Switchyard,
        "etcd" => Target::Etcd,
        _ => return Err(usage.into()),
    };
    let num = |i: usize| {
        args[i]
            .parse::<u64>()
            .map_err(|_| format!("{usage}: {}", args[i]))
    };
    // URL may list several servers (replicas, or members), comma-separated:
    // connection c goes to the (c mod n)-th, so a lease is renewed where it
    // was registered, as a client does.
    let urls: Vec<String> = args[1].split(',').map(str::to_string).collect();
    let tls = match std::env::var_os("BENCH_MTLS_DIR") {
        Some(dir) if target == Target::Switchyard => {
            let name = std::env::var("BENCH_MTLS_AS").unwrap_or_else(|_| "operator".into());
            let files = switchyard_tls::Files::in_dir(std::path::Path::new(&dir), &name);
            Some(switchyard_tls::ClientTls::load(&files)?)
        }
        _ => None,
    };
    let mut channels = Vec::new();
    for c in 0..CONNECTIONS {
        // One Endpoint::connect per channel: each is its own HTTP/2 connection.
        let endpoint = Endpoint::from_shared(urls[c % urls.len()].clone())?.tcp_nodelay(true);
        let expect = Some(switchyard_tls::Identity::Registry);
        channels.push(switchyard_tls::channel(endpoint, tls.as_ref(), expect).await?);
    }
    match args[2].as_str() {
        "register" => register(target, &channels, num(3)?, num(4)?).await,
        "renew" => renew(target, &channels, num(3)?, num(4)?).await,
        "propagate" => propagate(target, &channels, num(3)?, num(4)?).await,
        _ => Err(usage.into()),
    }
}

/// One registration: a new lease with one instance on it. Returns the lease.
async fn register_one(target: Target, ch: &Channel, i: u64, service: &str) -> Result<i64, Error> {
    let id = format!("i{i}");
    let address = format!("10.{}.{}.{}:8080", (i >> 16) & 255, (i >> 8) & 255, i & 255);
    match target {
        Target::Switchyard => {
            let mut c = reg::registry_client::RegistryClient::new(ch.clone());
            let r = c
                .register(reg::RegisterRequest {
                    lease_id: 0,
                    ttl_seconds: TTL,
                    instances: vec![reg::InstanceSpec {
                        service: service.to_string(),
                        instance_id: id,
                        address,
                        protocol: reg::Protocol::Http1 as i32,
                        zone: "a".into(),
                        version: "1.0.0".into(),
                        ..Default::default()
                    }],
                })
                .await?;
            Ok(r.into_inner().lease_id as i64)
        }
        Target::Etcd => {
            let mut lease = etcd::lease_client::LeaseClient::new(ch.clone());
            let granted = lease
                .lease_grant(etcd::LeaseGrantRequest {
                    ttl: i64::from(TTL),
                    id: 0,
                })
                .await?
                .into_inner();
            // The same facts Switchyard keeps for an instance, as JSON.
            let value = format!(
                r#"{{"address":"{address}","protocol":"http1","zone":"a","version":"1.0.0","weight":1,"state":"serving"}}"#
            );
            etcd::kv_client::KvClient::new(ch.clone())
                .put(etcd::PutRequest {
                    key: format!("/services/{service}/{id}").into_bytes(),
                    value: value.into_bytes(),
                    lease: granted.id,
                    ..Default::default()
                })
                .await?;
            Ok(granted.id)
        }
    }
}

async fn register(target: Target, channels: &[Channel], n: u64, conc: u64) -> Result<(), Error> {
    let next = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..conc {
        let ch = channels[t as usize % channels.len()].clone();
        let (next, failed) = (next.clone(), failed.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let service = format!("bench-{}", i % 100);
                if register_one(target, &ch, i, &service).await.is_err() {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let secs = start.elapsed().as_secs_f64();
    let failed = failed.load(Ordering::Relaxed);
    println!(
        r#"{{"registrations":{n},"failed":{failed},"secs":{secs:.3},"per_sec":{:.1}}}"#,
        (n - failed) as f64 / secs
    );
    Ok(())
}

/// Registers `leases` leases, then renews each `rounds` times over one
/// keep-alive stream per connection, pipelined (a client renewing many
/// leases sends without waiting for each answer).
async fn renew(
    target: Target,
    channels: &[Channel],
    leases: u64,
    rounds: u64,
) -> Result<(), Error> {
    let mut ids = Vec::new();
    for i in 0..leases {
        ids.push(register_one(target, &channels[i as usize % channels.len()], i, "renew").await?);
    }
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (c, ch) in channels.iter().enumerate() {
        let mine: Vec<i64> = ids
            .iter()
            .skip(c)
            .step_by(channels.len())
            .copied()
            .collect();
        let expected = mine.len() as u64 * rounds;
        let ch = ch.clone();
        tasks.push(tokio::spawn(async move {
            let (tx, rx) = mpsc::channel(1024);
            let sender = tokio::spawn(async move {
                for _ in 0..rounds {
                    for id in &mine {
                        if tx.send(*id).await.is_err() {
                            return;
                        }
                    }
                }
            });
            let mut got = 0u64;
            match target {
                Target::Switchyard => {
                    let requests = ReceiverStream::new(rx).map(|id| reg::KeepAliveRequest {
                        lease_id: id as u64,
                    });
                    let mut c = reg::registry_client::RegistryClient::new(ch);
                    let mut answers = c.keep_alive(requests).await?.into_inner();
                    while got < expected {
                        match answers.next().await {
                            Some(Ok(a))
                                if a.result == reg::keep_alive_response::Result::Renewed as i32 =>
                            {
                                got += 1
                            }
                            Some(Ok(_)) => return Err::<u64, Error>("a lease was unknown".into()),
                            Some(Err(e)) => return Err(e.into()),
                            None => break,
                        }
                    }
                }
                Target::Etcd => {
                    let requests =
                        ReceiverStream::new(rx).map(|id| etcd::LeaseKeepAliveRequest { id });
                    let mut c = etcd::lease_client::LeaseClient::new(ch);
                    let mut answers = c.lease_keep_alive(requests).await?.into_inner();
                    while got < expected {
                        match answers.next().await {
                            Some(Ok(a)) if a.ttl > 0 => got += 1,
                            Some(Ok(_)) => return Err("a lease was unknown".into()),
                            Some(Err(e)) => return Err(e.into()),
                            None => break,
                        }
                    }
                }
            }
            sender.abort();
            Ok(got)
        }));
    }
    let mut renewed = 0;
    for t in tasks {
        renewed += t.await??;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        r#"{{"renewals":{renewed},"expected":{},"secs":{secs:.3},"per_sec":{:.1}}}"#,
        leases * rounds,
        renewed as f64 / secs
    );
    Ok(())
}

/// Opens `watchers` watch streams, then makes `writes` registrations one at
/// a time; for each, the time until the last watcher saw it.
async fn propagate(
    target: Target,
    channels: &[Channel],
    watchers: u64,
    writes: u64,
) -> Result<(), Error> {
    let service = format!("prop-{}", std::process::id());
    let (seen_tx, mut seen_rx) = mpsc::unbounded_channel::<(u64, Instant)>();
    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel::<()>();
    for w in 0..watchers {
        let ch = channels[w as usize % channels.len()].clone();
        let (seen_tx, ready_tx, service) = (seen_tx.clone(), ready_tx.clone(), service.clone());
        tokio::spawn(async move {
            let index = |id: &str| {
                id.rsplit('/')
                    .next()
                    .and_then(|s| s.strip_prefix('i'))
                    .and_then(|s| s.parse::<u64>().ok())
            };
            match target {
                Target::Switchyard => {
                    let mut c = reg::registry_client::RegistryClient::new(ch);
                    let Ok(stream) = c
                        .watch(reg::WatchRequest {
                            services: vec![service],
                            since: None,
                        })
                        .await
                    else {
                        return;
                    };
                    let mut stream = stream.into_inner();
                    let mut announced = false;
                    while let Some(Ok(msg)) = stream.next().await {
                        let now = Instant::now();
                        match msg.kind {
                            Some(reg::watch_response::Kind::Snapshot(_)) if !announced => {
                                announced = true;
                                let _ = ready_tx.send(());
                            }
                            Some(reg::watch_response::Kind::Delta(d)) => {
                                for e in d.events {
                                    if e.kind == reg::event::Kind::Put as i32 {
                                        let id = e
                                            .instance
                                            .and_then(|i| i.spec)
                                            .map(|s| s.instance_id)
                                            .unwrap_or_default();
                                        if let Some(i) = index(&id) {
                                            let _ = seen_tx.send((i, now));
                                        }
                                    }
                                }
                            }
                            _ => {}
                        }
                    }
                }
                Target::Etcd => {
                    let prefix = format!("/services/{service}/");
                    let mut end = prefix.clone().into_bytes();
                    if let Some(last) = end.last_mut() {
                        *last += 1;
                    }
                    let create = etcd::WatchRequest {
                        request_union: Some(etcd::watch_request::RequestUnion::CreateRequest(
                            etcd::WatchCreateRequest {
                                key: prefix.into_bytes(),
                                range_end: end,
                                start_revision: 0,
                                ..Default::default()
                            },
                        )),
                    };
                    // The request stream stays open for the watch's life.
                    let (tx, rx) = mpsc::channel(1);
                    let _ = tx.send(create).await;
                    let mut c = etcd::watch_client::WatchClient::new(ch);
                    let Ok(stream) = c.watch(ReceiverStream::new(rx)).await else {
                        return;
                    };
                    let mut stream = stream.into_inner();
                    while let Some(Ok(msg)) = stream.next().await {
                        let now = Instant::now();
                        if msg.created {
                            let _ = ready_tx.send(());
                        }
                        for e in msg.events {
                            if e.r#type == etcd::event::EventType::Put as i32 {
                                let key =
                                    e.kv.map(|kv| String::from_utf8_lossy(&kv.key).into_owned())
                                        .unwrap_or_default();
                                if let Some(i) = index(&key) {
                                    let _ = seen_tx.send((i, now));
                                }
                            }
                        }
                    }
                    drop(tx);
                }
            }
        });
    }
    drop(ready_tx);
    for _ in 0..watchers {
        tokio::time::timeout(Duration::from_secs(30), ready_rx.recv())
            .await
            .map_err(|_| "watchers did not all start within 30 s")?;
    }
    let mut lags = Vec::new();
    let mut missed = 0u64;
    for i in 0..writes {
        let t0 = Instant::now();
        register_one(target, &channels[i as usize % channels.len()], i, &service).await?;
        let mut count = 0;
        let mut last = t0;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while count < watchers {
            match tokio::time::timeout_at(deadline, seen_rx.recv()).await {
                Ok(Some((j, at))) if j == i => {
                    count += 1;
                    last = last.max(at);
                }
                Ok(Some(_)) => {}
                _ => break,
            }
        }
        if count < watchers {
            missed += 1;
        } else {
            lags.push(last.duration_since(t0).as_micros() as u64);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    lags.sort_unstable();
    let pct = |p: f64| {
        lags.get(((lags.len() as f64 * p) as usize).min(lags.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    println!(
        r#"{{"writes":{writes},"watchers":{watchers},"missed":{missed},"p50_us":{},"p99_us":{},"max_us":{}}}"#,
        pct(0.5),
        pct(0.99),
        lags.last().copied().unwrap_or(0)
    );
    Ok(())
}
