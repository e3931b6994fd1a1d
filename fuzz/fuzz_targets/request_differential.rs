//! Where does a request end? The gateway's own HTTP/1.1 path
//! (`http1::server::read_head`, request after request) against hyper's server (as
//! the gateway runs it after a hand-off, and as most Rust backends do) on
//! the same bytes. Wherever both take a request, they must agree on its
//! method, target, fields and body, request for request: a disagreement
//! is where a request could be smuggled past one of them.
#![no_main]

use std::{convert::Infallible, sync::Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::{Request, Response, body::Incoming, service::service_fn};
use libfuzzer_sys::fuzz_target;
use switchyard_gateway::http1::server::{HeadRead, read_head};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const LIMIT: usize = 64 * 1024;

/// One request as a parser saw it.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    method: String,
    target: String,
    fields: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

/// The gateway's reading: requests until one it does not serve itself.
fn ours(mut bytes: &[u8]) -> Vec<Seen> {
    let mut seen = Vec::new();
    while let HeadRead::Request {
        head,
        body,
        keep_alive,
        parts,
    } = read_head(bytes, LIMIT, LIMIT)
    {
        if bytes.len() < head + body {
            break;
        }
        seen.push(Seen {
            method: parts.method.to_string(),
            target: parts.uri.to_string(),
            fields: fields(&parts.headers),
            body: bytes[head..head + body].to_vec(),
        });
        bytes = &bytes[head + body..];
        if !keep_alive {
            break;
        }
    }
    seen
}

/// The fields, sorted; `content-length` left out: framing is per hop (the
/// body is compared instead), and hyper folds a repeated equal length into
/// one field where the gateway keeps both (and sends its own on).
fn fields(h: &http::HeaderMap) -> Vec<(String, Vec<u8>)> {
    let mut f: Vec<_> = h
        .iter()
        .filter(|(n, _)| *n != http::header::CONTENT_LENGTH)
        .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
        .collect();
    f.sort();
    f
}

/// hyper's reading of the same bytes, sent whole and then the end.
fn hypers(rt: &tokio::runtime::Runtime, bytes: &[u8]) -> Vec<Seen> {
    let seen = std::sync::Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    rt.block_on(async move {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let svc = service_fn(move |req: Request<Incoming>| {
            let log = log.clone();
            async move {
                let (parts, body) = req.into_parts();
                if let Ok(body) = body.collect().await {
                    log.lock().expect("log").push(Seen {
                        method: parts.method.to_string(),
                        target: parts.uri.to_string(),
                        fields: fields(&parts.headers),
                        body: body.to_bytes().to_vec(),
                    });
                }
                Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new()))
            }
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .serve_connection(hyper_util::rt::TokioIo::new(server), svc);
        // The client writes everything, then reads the answers to the end
        // (so hyper is never held up writing them).
        let talk = async {
            let _ = client.write_all(bytes).await;
            let _ = client.shutdown().await;
            let mut answers = Vec::new();
            let _ = client.read_to_end(&mut answers).await;
        };
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), async {
            tokio::join!(talk, conn)
        })
        .await;
    });
    std::mem::take(&mut *seen.lock().expect("log"))
}

fuzz_target!(|bytes: &[u8]| {
    thread_local! {
        static RT: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
    }
    let ours = ours(bytes);
    if ours.is_empty() {
        return;
    }
    let theirs = RT.with(|rt| hypers(rt, bytes));
    for (a, b) in ours.iter().zip(&theirs) {
        assert_eq!(a, b, "the gateway and hyper read a request differently");
    }
});
