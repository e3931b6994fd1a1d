//! The gateway's HTTP edge, case by case: what a client sends on a raw
//! socket, what it hears back, and what the backend received, byte for
//! byte (issue 16's regression suite: request smuggling, authority and
//! path confusion, broken bodies).

mod support;

use std::{net::SocketAddr, time::Duration};

use support::*;
use switchyard_proto::registry::v1 as reg;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ROUTES: &str = r#"
[[route]]
name = "admin"
service = "app"
path_prefix = "/app/admin/"
api_keys = ["k"]

[[route]]
name = "internal"
service = "app"
host = "internal.example"
api_keys = ["k"]

[[route]]
name = "traced"
service = "app"
path_prefix = "/trace-ok/"
allow_trace = true

[[route]]
name = "open"
service = "app"
path_prefix = "/"
"#;

/// The largest body the gateway takes here.
const MAX_BODY: u64 = 100_000;

/// What every probe sends beside its own fields, so that what the gateway
/// adds is the same each time.
const IDS: &str =
    "x-request-id: t1\r\ntraceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n";
/// The trace context in [`IDS`].
const TRACEPARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

/// The fields the gateway adds to every request it forwards here, for a
/// request whose authority is `host`.
fn added(host: &str) -> String {
    format!(
        "x-forwarded-for: 127.0.0.1\r\nx-forwarded-proto: http\r\nx-request-id: t1\r\n\
         traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\nx-forwarded-host: {host}\r\n"
    )
}

async fn edge() -> (Stack, Recorder) {
    let recorder = Recorder::start().await;
    let s = Stack::start_with(
        ROUTES,
        vec![spec("app", "r1", recorder.addr, reg::Protocol::Http1)],
        |c| c.max_body_bytes = MAX_BODY,
    )
    .await;
    (s, recorder)
}

/// Sends `raw` on a new connection and reads to the close (the gateway
/// closes after a refusal; probes say `connection: close` otherwise): the
/// first answer's status, 0 if there was none.
async fn status_of(gw: SocketAddr, raw: &[u8]) -> u16 {
    let mut c = tokio::net::TcpStream::connect(gw).await.expect("connect");
    let _ = c.write_all(raw).await;
    read_status(&mut c).await
}

async fn read_status(c: &mut tokio::net::TcpStream) -> u16 {
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut got)).await;
    let mut fields = [httparse::EMPTY_HEADER; 64];
    let mut res = httparse::Response::new(&mut fields);
    match res.parse(&got) {
        Ok(_) => res.code.unwrap_or(0),
        Err(_) => 0,
    }
}

/// Sends a request that needs no answer to settle on: once it is
/// answered, everything sent before it on other connections has been
/// handled (each probe read its own connection to the end first).
async fn settle(gw: SocketAddr) {
    let raw = format!("GET /settle HTTP/1.1\r\nHost: a\r\n{IDS}connection: close\r\n\r\n");
    assert_eq!(status_of(gw, raw.as_bytes()).await, 200);
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// The exact request the backend gets for `GET /settle`.
fn settled() -> String {
    format!("GET /settle HTTP/1.1\r\nhost: a\r\n{}\r\n", added("a"))
}

/// A chunked POST's head.
fn chunked_head(path: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: a\r\n{IDS}transfer-encoding: chunked\r\nconnection: close\r\n\r\n"
    )
}

#[tokio::test]
async fn a_broken_chunked_body_never_reaches_the_backend_whole() {
    let (s, r) = edge().await;
    let gw = s.gateway.http;
    // Malformed chunk sizes, data past its size, a quoted CRLF in an
    // extension: 400, and nothing sent on.
    for body in [
        "-5\r\nhello\r\n0\r\n\r\n",
        "0x5\r\nhello\r\n0\r\n\r\n",
        " 5\r\nhello\r\n0\r\n\r\n",
        "\r\nhello\r\n0\r\n\r\n",
        "ffffffffffffffffff\r\nhello\r\n0\r\n\r\n",
        "18446744073709551621\r\nhello\r\n0\r\n\r\n",
        "5\r\nhelloXX\r\n0\r\n\r\n",
        "5;a=\"\r\n\"\r\nhello\r\n0\r\n\r\n",
    ] {
        let raw = format!("{}{body}", chunked_head("/x"));
        assert_eq!(status_of(gw, raw.as_bytes()).await, 400, "{body:?}");
    }
    // Bodies of 5 B to 30 KB that had arrived before the framing broke.
    for size in [5, 1000, 30_000] {
        let raw = format!(
            "{}{size:x}\r\n{}\r\nzz\r\n",
            chunked_head("/x"),
            "a".repeat(size)
        );
        assert_eq!(status_of(gw, raw.as_bytes()).await, 400, "{size}");
    }
    // Cut off: closed, half-closed, reset, with a partial JSON body.
    let cut = format!("{}2b\r\n{{\"op\":\"transfer\",", chunked_head("/x"));
    for how in ["close", "half-close", "reset"] {
        let mut c = tokio::net::TcpStream::connect(gw).await.expect("connect");
        c.write_all(cut.as_bytes()).await.expect("write");
        tokio::time::sleep(Duration::from_millis(50)).await;
        match how {
            "close" => drop(c),
            "half-close" => {
                c.shutdown().await.expect("shutdown");
                let status = read_status(&mut c).await;
                assert!(status == 400 || status == 0, "{how}: {status}");
            }
            _ => {
                // SO_LINGER 0: the close is a reset.
                socket2::SockRef::from(&c)
                    .set_linger(Some(Duration::ZERO))
                    .expect("linger");
                drop(c);
            }
        }
    }
    settle(gw).await;
    assert_eq!(r.requests(), vec![settled()], "only the settling request");
}

#[tokio::test]
async fn a_body_that_breaks_while_streaming_is_cut_off_upstream() {
    let (s, r) = edge().await;
    let gw = s.gateway.http;
    // Past the replay buffer (64 KiB) the body streams: the first chunk is
    // on its way upstream when the framing breaks.
    let mut c = tokio::net::TcpStream::connect(gw).await.expect("connect");
    let first = 80_000;
    let head = format!(
        "{}{first:x}\r\n{}\r\n",
        chunked_head("/stream"),
        "b".repeat(first)
    );
    c.write_all(head.as_bytes()).await.expect("write");
    eventually("the gateway connects upstream", || async {
        r.connections() > 0
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    c.write_all(b"zz\r\n").await.expect("write");
    assert_eq!(read_status(&mut c).await, 400);
    settle(gw).await;
    assert_eq!(
        r.requests(),
        vec![settled()],
        "the broken request never whole"
    );
    let left = r.leftovers();
    assert!(
        left.iter()
            .any(|l| l.starts_with(b"POST /stream HTTP/1.1\r\n")),
        "the upstream connection was closed mid-body"
    );
}

#[tokio::test]
async fn a_chunked_body_over_the_limit_is_413_and_not_sent_past_it() {
    let (s, r) = edge().await;
    let gw = s.gateway.http;
    let mut c = tokio::net::TcpStream::connect(gw).await.expect("connect");
    let (mut rd, mut wr) = c.split();
    let chunk = format!("{:x}\r\n{}\r\n", 10_000, "c".repeat(10_000));
    let send = async {
        let _ = wr.write_all(chunked_head("/big").as_bytes()).await;
        for _ in 0..30 {
            if wr.write_all(chunk.as_bytes()).await.is_err() {
                break;
            }
        }
        let _ = wr.write_all(b"0\r\n\r\n").await;
    };
    let read = async {
        let mut got = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), rd.read_to_end(&mut got)).await;
        got
    };
    let ((), got) = tokio::join!(send, read);
    assert!(
        got.starts_with(b"HTTP/1.1 413 "),
        "{:?}",
        String::from_utf8_lossy(&got[..got.len().min(200)])
    );
    settle(gw).await;
    assert_eq!(r.requests(), vec![settled()]);
    for l in r.leftovers() {
        let head = l
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map_or(0, |p| p + 4);
        assert!(
            (l.len() - head) as u64 <= MAX_BODY + 1000,
            "{} body bytes reached the backend (limit {MAX_BODY}, with chunk framing)",
            l.len() - head
        );
    }
}

#[tokio::test]
async fn one_authority_per_request() {
    let (s, r) = edge().await;
    let gw = s.gateway.http;
    // The absolute form's authority routes and replaces Host.
    let raw = format!(
        "GET http://public.example/abs HTTP/1.1\r\nHost: internal.example\r\n{IDS}connection: close\r\n\r\n"
    );
    assert_eq!(status_of(gw, raw.as_bytes()).await, 200);
    assert_eq!(
        r.requests(),
        vec![format!(
            "GET /abs HTTP/1.1\r\nhost: public.example\r\n{}\r\n",
            added("public.example")
        )]
    );
    // And it is the one routed by: this one needs the key.
    let raw = format!(
        "GET http://internal.example/abs HTTP/1.1\r\nHost: public.example\r\n{IDS}connection: close\r\n\r\n"
    );
    assert_eq!(status_of(gw, raw.as_bytes()).await, 401);
    for (raw, why) in [
        (
            "GET /x HTTP/1.1\r\nHost: public.example\r\nHost: internal.example\r\n\r\n",
            "two Host lines",
        ),
        ("GET /x HTTP/1.1\r\n\r\n", "no Host"),
        (
            "GET http://public.example/x HTTP/1.1\r\n\r\n",
            "absolute form without Host",
        ),
        (
            "POST /x HTTP/1.1\r\nHost: a\r\nHost: b\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
            "two Host lines, hyper's path",
        ),
    ] {
        assert_eq!(status_of(gw, raw.as_bytes()).await, 400, "{why}");
    }
    // HTTP/1.0 may go without; the backend gets the endpoint's address.
    r.clear();
    let raw = format!("GET /old HTTP/1.0\r\n{IDS}\r\n");
    assert_eq!(status_of(gw, raw.as_bytes()).await, 200);
    assert_eq!(
        r.requests(),
        vec![format!(
            "GET /old HTTP/1.1\r\nx-forwarded-for: 127.0.0.1\r\nx-forwarded-proto: http\r\nx-request-id: t1\r\n\
             traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\nhost: {}\r\n\r\n",
            r.addr
        )]
    );

    // HTTP/2: `:authority` and a `host` naming another are refused; the
    // same host (any case) passes, and the upstream gets the authority as
    // its Host.
    r.clear();
    let mut status = Vec::new();
    for host in ["internal.example", "PUBLIC.example"] {
        let req = hyper::Request::get(format!("http://public.example:{}/h2", gw.port()))
            .header("host", format!("{host}:{}", gw.port()))
            .header("x-request-id", "t1")
            .header("traceparent", TRACEPARENT)
            .body(http_body_util::Empty::new())
            .expect("request");
        status.push(h2_status(gw, req).await);
    }
    assert_eq!(status, vec![400, 200]);
    let authority = format!("public.example:{}", gw.port());
    assert_eq!(
        r.requests(),
        vec![format!(
            "GET /h2 HTTP/1.1\r\nhost: {authority}\r\n{}\r\n",
            added(&authority)
        )]
    );
}

/// Sends `req` over HTTP/2 with prior knowledge to `gw`, whatever its URI
/// names: the status.
async fn h2_status(
    gw: SocketAddr,
    req: hyper::Request<http_body_util::Empty<bytes::Bytes>>,
) -> u16 {
    let io =
        hyper_util::rt::TokioIo::new(tokio::net::TcpStream::connect(gw).await.expect("connect"));
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    send.send_request(req)
        .await
        .map_or(0, |res| res.status().as_u16())
}

#[tokio::test]
async fn routes_match_the_normalised_path_and_it_is_what_is_forwarded() {
    let (s, r) = edge().await;
    let gw = s.gateway.http;
    let get = |path: &str, extra: &str| {
        format!("GET {path} HTTP/1.1\r\nHost: a\r\n{IDS}{extra}connection: close\r\n\r\n")
    };
    for path in [
        "/app/x/../admin/secret",
        "/app/./admin/secret",
        "/app//admin/secret",
        "//app/admin/secret",
        "/app/%61dmin/secret",
        "/app/%2e/admin/secret",
        "/app/x/%2e%2e/admin/secret",
    ] {
        assert_eq!(status_of(gw, get(path, "").as_bytes()).await, 401, "{path}");
        // hyper's path (a chunked body) normalises the same way.
        let raw = format!("{}0\r\n\r\n", chunked_head(path));
        assert_eq!(status_of(gw, raw.as_bytes()).await, 401, "{path}, chunked");
    }
    for path in [
        "/app/x/..%2fadmin/secret",
        "/app/admin%2fsecret",
        "/app/admin%5Csecret",
        "/../../etc/passwd",
        "/app/%zz",
    ] {
        assert_eq!(status_of(gw, get(path, "").as_bytes()).await, 400, "{path}");
    }
    settle(gw).await;
    assert_eq!(
        r.requests(),
        vec![settled()],
        "no spelling reached the backend"
    );
    // With the key, the backend gets the path the route matched; the query
    // is left as it came.
    r.clear();
    let raw = get(
        "/app/x/../%61dmin//secret?next=/../x%2f",
        "x-api-key: k\r\n",
    );
    assert_eq!(status_of(gw, raw.as_bytes()).await, 200);
    assert_eq!(
        r.requests(),
        vec![format!(
            "GET /app/admin/secret?next=/../x%2f HTTP/1.1\r\nhost: a\r\nx-api-key: k\r\n{}\r\n",
            added("a")
        )]
    );
}

#[tokio::test]
async fn hosts_are_checked_and_compared_without_case_port_or_trailing_dot() {
    let (s, r) = edge().await;
    let gw = s.gateway.http;
    let get =
        |host: &str| format!("GET /x HTTP/1.1\r\nHost: {host}\r\n{IDS}connection: close\r\n\r\n");
    for host in [
        "internal.example",
        "internal.example.",
        "INTERNAL.Example",
        "internal.example:8080",
        "internal.example.:80",
    ] {
        assert_eq!(status_of(gw, get(host).as_bytes()).await, 401, "{host}");
    }
    for host in [
        "u@internal.example",
        "internal.example:abc",
        "internal.example x",
        "internal.example/x",
        "internal.example%2e",
        "internal..example",
        "[::1",
    ] {
        assert_eq!(status_of(gw, get(host).as_bytes()).await, 400, "{host}");
    }
    // The connection of a malformed request is closed after the 400 (what
    // follows on it is not to be trusted either).
    let mut c = tokio::net::TcpStream::connect(gw).await.expect("connect");
    let raw =
        format!("GET /x HTTP/1.1\r\nHost: a/b\r\n{IDS}\r\nGET /x HTTP/1.1\r\nHost: a\r\n\r\n");
    c.write_all(raw.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    let refused = read_answer(&mut c, &mut buf, false).await;
    assert_eq!(
        (refused.status, refused.one("connection")),
        (400, Some("close"))
    );
    assert!(closed(&mut c).await, "open after a malformed request");
    settle(gw).await;
    assert_eq!(r.requests(), vec![settled()]);
}

#[tokio::test]
async fn upstreams_get_origin_form_and_trace_is_a_route_option() {
    let (s, r) = edge().await;
    let gw = s.gateway.http;
    // A body past the replay buffer, a chunked one still arriving, and an
    // upgrade go through hyper's client: in origin form all the same.
    let big = "d".repeat(70_000);
    let raw = format!(
        "POST /big HTTP/1.1\r\nHost: a\r\n{IDS}content-length: {}\r\nconnection: close\r\n\r\n{big}",
        big.len()
    );
    assert_eq!(status_of(gw, raw.as_bytes()).await, 200);
    let raw = format!(
        "{}{:x}\r\n{big}\r\n0\r\n\r\n",
        chunked_head("/chunked"),
        big.len()
    );
    assert_eq!(status_of(gw, raw.as_bytes()).await, 200);
    let raw = format!(
        "GET /up HTTP/1.1\r\nHost: a\r\n{IDS}upgrade: websocket\r\nconnection: upgrade\r\n\r\n"
    );
    let mut c = tokio::net::TcpStream::connect(gw).await.expect("connect");
    c.write_all(raw.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    assert_eq!(read_answer(&mut c, &mut buf, false).await.status, 200);
    let lines: Vec<String> = r
        .requests()
        .iter()
        .map(|q| q.lines().next().unwrap_or("").to_string())
        .collect();
    assert_eq!(
        lines,
        [
            "POST /big HTTP/1.1",
            "POST /chunked HTTP/1.1",
            "GET /up HTTP/1.1"
        ]
    );

    // TRACE echoes credentials back: 405 unless the route allows it.
    let trace =
        |path: &str| format!("TRACE {path} HTTP/1.1\r\nHost: a\r\n{IDS}connection: close\r\n\r\n");
    assert_eq!(status_of(gw, trace("/x").as_bytes()).await, 405);
    assert_eq!(status_of(gw, trace("/trace-ok/x").as_bytes()).await, 200);
}

#[tokio::test]
async fn answers_past_the_head_limit_and_stray_bytes_never_reach_a_client() {
    let (s, r) = edge().await;
    let gw = s.gateway.http;
    let get = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: a\r\n{IDS}\r\n");
    // A 70 KB answer head: 502, on both kinds of upstream connection.
    let huge = format!(
        "HTTP/1.1 200 OK\r\nx-big: {}\r\ncontent-length: 2\r\n\r\nok",
        "h".repeat(70_000)
    );
    r.answer_with(huge.as_bytes());
    let mut c = tokio::net::TcpStream::connect(gw).await.expect("connect");
    let mut buf = Vec::new();
    c.write_all(get("/huge").as_bytes()).await.expect("write");
    assert_eq!(read_answer(&mut c, &mut buf, false).await.status, 502);
    let raw = format!("{}0\r\n\r\n", chunked_head("/huge"));
    assert_eq!(status_of(gw, raw.as_bytes()).await, 502);

    // Bytes after a complete answer (here a whole second answer): the
    // connection is not used again, so the next request gets its own.
    r.answer_with(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokHTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nstray");
    c.write_all(get("/one").as_bytes()).await.expect("write");
    let one = read_answer(&mut c, &mut buf, false).await;
    assert_eq!((one.status, one.body.as_slice()), (200, b"ok".as_slice()));
    r.answer_with(support::recorder::OK);
    for n in 0..3 {
        c.write_all(get("/next").as_bytes()).await.expect("write");
        let next = read_answer(&mut c, &mut buf, false).await;
        assert_eq!(
            (next.status, next.body.as_slice()),
            (200, b"ok".as_slice()),
            "request {n} after the stray bytes"
        );
    }
    // The same through hyper's client (a body past the replay buffer
    // streams).
    let big = "s".repeat(70_000);
    let chunked = |path: &str| {
        format!("POST {path} HTTP/1.1\r\nHost: a\r\n{IDS}content-length: 70000\r\n\r\n{big}")
    };
    let mut h = tokio::net::TcpStream::connect(gw).await.expect("connect");
    let mut hbuf = Vec::new();
    r.answer_with(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokHTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nstray");
    h.write_all(chunked("/one").as_bytes())
        .await
        .expect("write");
    let one = read_answer(&mut h, &mut hbuf, false).await;
    assert_eq!((one.status, one.body.as_slice()), (200, b"ok".as_slice()));
    r.answer_with(support::recorder::OK);
    for n in 0..3 {
        h.write_all(chunked("/next").as_bytes())
            .await
            .expect("write");
        let next = read_answer(&mut h, &mut hbuf, false).await;
        assert_eq!(
            (next.status, next.body.as_slice()),
            (200, b"ok".as_slice()),
            "streamed request {n} after the stray bytes"
        );
    }
}

#[tokio::test]
async fn the_smuggling_classes_that_held_still_hold() {
    let (s, r) = edge().await;
    let gw = s.gateway.http;
    let post = |path: &str, fields: &str, body: &str| {
        format!("POST {path} HTTP/1.1\r\nHost: a\r\n{IDS}{fields}\r\n{body}")
    };
    let forwarded = |path: &str, body: &str| {
        format!(
            "POST {path} HTTP/1.1\r\nhost: a\r\n{}content-length: {}\r\n\r\n{body}",
            added("a"),
            body.len()
        )
    };
    // Length and chunked together: the chunked framing wins (RFC 9112
    // §6.1), the request after it is not read as part of the body nor
    // served (the connection closes after the answer).
    let mut c = tokio::net::TcpStream::connect(gw).await.expect("connect");
    let smuggle = post(
        "/cl-te",
        "content-length: 6\r\ntransfer-encoding: chunked\r\n",
        "0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
    );
    c.write_all(smuggle.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    assert_eq!(read_answer(&mut c, &mut buf, false).await.status, 200);
    assert!(
        closed(&mut c).await,
        "open after a request with both framings"
    );
    assert_eq!(r.requests(), vec![forwarded("/cl-te", "")]);

    // Transfer codings other than a final chunked, and a list of lengths
    // that disagree: 400, nothing forwarded.
    r.clear();
    for fields in [
        "transfer-encoding: xchunked\r\n",
        "transfer-encoding: chunked, identity\r\n",
        "transfer-encoding: chunked\r\ntransfer-encoding: x\r\n",
        "transfer-encoding: gzip\r\n",
        "content-length: 3\r\ncontent-length: 4\r\n",
        "content-length: 3, 4\r\n",
        "x-a: a\r\n b\r\n",
        "x-a: a\rx-b: b\r\n",
    ] {
        let raw = post(
            "/obfuscated",
            &format!("{fields}connection: close\r\n"),
            "0\r\n\r\nabcd",
        );
        assert_eq!(status_of(gw, raw.as_bytes()).await, 400, "{fields:?}");
    }
    settle(gw).await;
    assert_eq!(r.requests(), vec![settled()]);

    // A final chunked after another coding is chunked; the same length
    // twice is one length.
    r.clear();
    let raw = post(
        "/identity-chunked",
        "transfer-encoding: identity, chunked\r\nconnection: close\r\n",
        "5\r\nhello\r\n0\r\n\r\n",
    );
    assert_eq!(status_of(gw, raw.as_bytes()).await, 200);
    let raw = post(
        "/same-length",
        "content-length: 5\r\ncontent-length: 5\r\nconnection: close\r\n",
        "hello",
    );
    assert_eq!(status_of(gw, raw.as_bytes()).await, 200);
    assert_eq!(
        r.requests(),
        vec![
            forwarded("/identity-chunked", "hello"),
            forwarded("/same-length", "hello")
        ]
    );

    // Pipelined behind bodies, and across the hand-off to hyper's server:
    // each request once, in order, byte for byte.
    r.clear();
    let mut c = tokio::net::TcpStream::connect(gw).await.expect("connect");
    let pipelined = [
        post("/one", "content-length: 6\r\n", "GET /x"),
        format!("GET /two HTTP/1.1\r\nHost: a\r\n{IDS}\r\n"),
        post(
            "/three",
            "transfer-encoding: chunked\r\n",
            "3\r\nGET\r\n0\r\n\r\n",
        ),
        post("/four", "content-length: 4\r\n", "four"),
    ]
    .concat();
    c.write_all(pipelined.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    for _ in 0..4 {
        assert_eq!(read_answer(&mut c, &mut buf, false).await.status, 200);
    }
    assert_eq!(
        r.requests(),
        vec![
            forwarded("/one", "GET /x"),
            format!("GET /two HTTP/1.1\r\nhost: a\r\n{}\r\n", added("a")),
            forwarded("/three", "GET"),
            forwarded("/four", "four"),
        ]
    );
}
