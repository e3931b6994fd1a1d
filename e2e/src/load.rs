//! A small open-loop load generator: a request every 1/rate seconds for a
//! fixed time, whatever the answers take (no coordinated omission), each
//! with its own timeout, at most 512 in flight.

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use switchyard_examples::pb::{EchoRequest, echo_client::EchoClient};
use tokio::sync::{Semaphore, mpsc};

/// What to send.
#[derive(Debug, Clone)]
pub enum Call {
    /// HTTP GET of a URL.
    Get(String),
    /// HTTP POST of a small body to a URL.
    Post(String),
    /// `echo.v1.Echo/Unary` through a gRPC endpoint (URL of the gateway).
    Grpc(String),
}

/// What came back.
#[derive(Debug, Default, Clone)]
pub struct Report {
    /// Requests sent.
    pub sent: u64,
    /// Answered 200 / OK.
    pub ok: u64,
    /// Anything else.
    pub failed: u64,
    /// Answers by status (HTTP code, gRPC code name, or "transport").
    pub by_status: BTreeMap<String, u64>,
    /// OK answers by answering instance.
    pub by_instance: BTreeMap<String, u64>,
    /// When each instance first answered, from the start.
    pub first_seen: BTreeMap<String, Duration>,
}

type Outcome = (Result<String, String>, Duration);

/// Runs `call` at `rate` per second for `duration`.
pub async fn run(call: Call, rate: u32, duration: Duration) -> Report {
    let http = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(5))
        .build_http::<Full<Bytes>>();
    let grpc = match &call {
        Call::Grpc(url) => tonic::transport::Endpoint::from_shared(url.clone())
            .ok()
            .map(|e| e.connect_lazy()),
        _ => None,
    };
    let total = u64::from(rate) * duration.as_secs();
    let gap = Duration::from_secs(1) / rate.max(1);
    let (tx, mut rx) = mpsc::unbounded_channel::<Outcome>();
    let limit = Arc::new(Semaphore::new(512));
    let start = Instant::now();
    let mut ticker = tokio::time::interval(gap);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    for i in 0..total {
        ticker.tick().await;
        let Ok(permit) = limit.clone().acquire_owned().await else {
            break;
        };
        let (tx, http, grpc, call) = (tx.clone(), http.clone(), grpc.clone(), call.clone());
        tokio::spawn(async move {
            let result = tokio::time::timeout(Duration::from_secs(10), once(&call, &http, grpc, i))
                .await
                .unwrap_or_else(|_| Err("timeout".into()));
            let _ = tx.send((result, start.elapsed()));
            drop(permit);
        });
    }
    drop(tx);
    let mut report = Report {
        sent: total,
        ..Report::default()
    };
    while let Some((result, at)) = rx.recv().await {
        match result {
            Ok(instance) => {
                report.ok += 1;
                *report.by_status.entry("ok".into()).or_default() += 1;
                report.first_seen.entry(instance.clone()).or_insert(at);
                *report.by_instance.entry(instance).or_default() += 1;
            }
            Err(status) => {
                report.failed += 1;
                *report.by_status.entry(status).or_default() += 1;
            }
        }
    }
    report
}

async fn once(
    call: &Call,
    http: &Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    grpc: Option<tonic::transport::Channel>,
    i: u64,
) -> Result<String, String> {
    let request = match call {
        Call::Get(url) => hyper::Request::get(url).body(Full::new(Bytes::new())),
        Call::Post(url) => hyper::Request::post(url)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(format!("{{\"order\":{i}}}")))),
        Call::Grpc(_) => {
            let channel = grpc.ok_or("no channel")?;
            let answer = EchoClient::new(channel)
                .unary(EchoRequest {
                    message: format!("m{i}"),
                    count: 1,
                })
                .await
                .map_err(|s| format!("grpc {:?}", s.code()))?;
            return Ok(answer.into_inner().instance);
        }
    }
    .map_err(|e| e.to_string())?;
    let res = http
        .request(request)
        .await
        .map_err(|_| "transport".to_string())?;
    let status = res.status();
    let body = res
        .into_body()
        .collect()
        .await
        .map_err(|_| "body".to_string())?
        .to_bytes();
    if status != 200 {
        return Err(status.as_u16().to_string());
    }
    let v: serde_json::Value = serde_json::from_slice(&body).map_err(|_| "not json".to_string())?;
    Ok(v["instance"].as_str().unwrap_or("?").to_string())
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "sent {} ok {} failed {} {:?} instances {:?}",
            self.sent, self.ok, self.failed, self.by_status, self.by_instance
        )
    }
}
