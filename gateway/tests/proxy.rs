//! Round trips through the real gateway: HTTP/1.1, HTTP/2, TLS, gRPC,
//! WebSocket, routing, headers, and the gateway's own 4xx/5xx answers.

mod support;

use std::{collections::BTreeSet, time::Duration};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper::Method;
use support::*;
use switchyard_proto::registry::v1 as reg;
use tokio_stream::wrappers::ReceiverStream;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

const ROUTES: &str = r#"
[[route]]
name = "hello"
service = "hello"
path_prefix = "/hello/"
strip_prefix = true

[[route]]
name = "echo"
service = "echo"
path_prefix = "/grpc.health.v1.Health/"
retry = { attempts = 3, retryable = true }

[[route]]
name = "reflection"
service = "echo"
path_prefix = "/grpc.reflection.v1.ServerReflection/"

[[route]]
name = "limited"
service = "hello"
path_prefix = "/limited/"
rate_limit = { per_second = 1, burst = 2 }

[[route]]
name = "narrow"
service = "hello"
path_prefix = "/narrow/"
concurrency_limit = 1

[[route]]
name = "private"
service = "hello"
path_prefix = "/private/"
api_keys = ["key-123"]

[[route]]
name = "hosted"
service = "hello"
path_prefix = "/hosted/"
host_header = "upstream"

[[route]]
name = "cors"
service = "hello"
path_prefix = "/cors/"
cors = { allow_origins = ["https://app.example"], allow_methods = ["GET"], max_age = "10m" }
"#;

async fn hello_stack() -> (Stack, Vec<std::sync::Arc<Backend>>) {
    let a = Backend::start("h1").await;
    let b = Backend::start("h2").await;
    let mut specs = vec![
        spec("hello", "h1", a.addr, reg::Protocol::Http1),
        spec("hello", "h2", b.addr, reg::Protocol::Http1),
    ];
    // Round robin, so that sequential test requests visit both backends
    // (peak_ewma would rightly keep them on the faster one).
    for s in &mut specs {
        s.metadata.insert("lb.policy".into(), "round_robin".into());
    }
    let s = Stack::start_with(ROUTES, specs, |c| c.max_body_bytes = 1024 * 1024).await;
    (s, vec![a, b])
}

#[tokio::test]
async fn http1_round_trip_with_rewrites_and_forwarded_headers() {
    let (s, backends) = hello_stack().await;
    let mut seen = BTreeSet::new();
    for _ in 0..20 {
        let (code, body) = get(&format!("{}/hello/x/y?z=1", s.gateway.url())).await;
        assert_eq!(code, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).expect("json");
        assert_eq!(v["path"], "/x/y?z=1", "strip_prefix");
        assert_eq!(v["x_forwarded_for"], "127.0.0.1");
        assert_eq!(v["x_forwarded_proto"], "http");
        assert_eq!(v["x_request_id"].as_str().map(str::len), Some(32));
        assert!(
            v["traceparent"]
                .as_str()
                .is_some_and(|t| t.starts_with("00-"))
        );
        assert_eq!(v["connection"], "", "hop-by-hop headers are not forwarded");
        seen.insert(instance_of(&body));
    }
    assert_eq!(
        seen,
        BTreeSet::from(["h1".to_string(), "h2".to_string()]),
        "both backends get traffic"
    );
    // Host: the client's by default, the endpoint's address when the route
    // says "upstream" (HTTP/1.1 always carries one).
    let (_, body) = get(&format!("{}/hello/h", s.gateway.url())).await;
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["host"], s.gateway.http.to_string());
    let (_, body) = get(&format!("{}/hosted/h", s.gateway.url())).await;
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    let endpoints = [backends[0].addr.to_string(), backends[1].addr.to_string()];
    assert!(
        v["host"]
            .as_str()
            .is_some_and(|h| endpoints.iter().any(|e| e == h)),
        "{body}"
    );
    // A client's request id is kept and echoed.
    let req = hyper::Request::get(format!("{}/hello/a", s.gateway.url()))
        .header("x-request-id", "client-id-7")
        .body(Full::new(Bytes::new()))
        .expect("req");
    let res = client().request(req).await.expect("response");
    assert_eq!(res.headers()["x-request-id"], "client-id-7");
    let (code, body) = get(&format!("{}/nowhere", s.gateway.url())).await;
    assert_eq!(code, 404);
    let v: serde_json::Value = serde_json::from_str(&body).expect("json error");
    assert!(
        v["error"].is_string() && v["request_id"].is_string(),
        "{body}"
    );
}

#[tokio::test]
async fn http2_prior_knowledge_is_balanced_per_request() {
    let (s, _backends) = hello_stack().await;
    let h2 = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<Bytes>>();
    let mut seen = BTreeSet::new();
    let mut ids = BTreeSet::new();
    for _ in 0..20 {
        let req = hyper::Request::get(format!("{}/hello/h2", s.gateway.url()))
            .body(Full::new(Bytes::new()))
            .expect("req");
        let res = h2.request(req).await.expect("h2 response");
        assert_eq!(res.version(), hyper::Version::HTTP_2);
        // Each answer names its request (the id goes out never indexed by
        // HPACK, and still arrives whole on every answer).
        let id = res.headers()["x-request-id"].to_str().expect("ascii id");
        assert_eq!(id.len(), 32, "{id}");
        ids.insert(id.to_owned());
        let body = res.into_body().collect().await.expect("body").to_bytes();
        seen.insert(instance_of(&String::from_utf8_lossy(&body)));
    }
    assert_eq!(
        seen.len(),
        2,
        "one HTTP/2 connection, requests spread over both backends"
    );
    assert_eq!(ids.len(), 20, "a new id for each request");
}

#[tokio::test]
async fn grpc_unary_streaming_and_deadlines() {
    let echo = GrpcBackend::start().await;
    echo.reporter
        .set_service_status("echo", tonic_health::ServingStatus::Serving)
        .await;
    // A black hole: accepts connections and never answers.
    let hole = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let hole_addr = hole.local_addr().expect("addr");
    let _hole = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = hole.accept().await {
            held.push(s);
        }
    });
    let specs = vec![spec("echo", "e1", echo.addr, reg::Protocol::Grpc)];
    let routes = format!(
        "{ROUTES}\n[[route]]\nname = \"slow\"\nservice = \"slow\"\npath_prefix = \"/grpc.health.v1.Health/Watch\"\nheaders = {{ \"x-slow\" = \"1\" }}\n"
    );
    let routes = routes.replacen("[[route]]", "[[route]]\nname = \"slow-first\"\nservice = \"slow\"\npath_prefix = \"/grpc.health.v1.Health/\"\nheaders = { \"x-slow\" = \"1\" }\ntimeout = \"300ms\"\n\n[[route]]\nname = \"slow-capped\"\nservice = \"slow\"\npath_prefix = \"/grpc.health.v1.Health/\"\nheaders = { \"x-slow\" = \"2\" }\ntimeout = \"60s\"\nper_try_timeout = \"60s\"\n\n[[route]]", 1);
    let mut specs = specs;
    specs.push(spec("slow", "s1", hole_addr, reg::Protocol::Grpc));
    let s = Stack::start(&routes, specs).await;
    let channel = tonic::transport::Endpoint::from_shared(s.gateway.url())
        .expect("url")
        .connect()
        .await
        .expect("connect");
    let mut health = HealthClient::new(channel.clone());
    let answer = health
        .check(HealthCheckRequest {
            service: "echo".into(),
        })
        .await
        .expect("unary through the gateway");
    assert_eq!(answer.into_inner().status(), ServingStatus::Serving);
    let err = health
        .check(HealthCheckRequest {
            service: "unknown".into(),
        })
        .await
        .expect_err("backend status");
    assert_eq!(
        err.code(),
        tonic::Code::NotFound,
        "the backend's own status and trailers come through"
    );

    // Server streaming: watch sees the status flip.
    let mut watch = health
        .watch(HealthCheckRequest {
            service: "echo".into(),
        })
        .await
        .expect("watch")
        .into_inner();
    assert_eq!(
        watch.message().await.expect("ok").expect("first").status(),
        ServingStatus::Serving
    );
    echo.reporter
        .set_service_status("echo", tonic_health::ServingStatus::NotServing)
        .await;
    assert_eq!(
        watch.message().await.expect("ok").expect("second").status(),
        ServingStatus::NotServing
    );

    // Bidirectional streaming: reflection answers each request on one stream.
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest,
    };
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut answers = ServerReflectionClient::new(channel.clone())
        .server_reflection_info(ReceiverStream::new(rx))
        .await
        .expect("bidi")
        .into_inner();
    for _ in 0..3 {
        tx.send(ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        })
        .await
        .expect("send");
        let a = answers.message().await.expect("ok").expect("answer");
        assert!(a.message_response.is_some());
    }
    drop(tx);

    // A deadline: the route's timeout answers DEADLINE_EXCEEDED.
    let mut req = tonic::Request::new(HealthCheckRequest {
        service: "echo".into(),
    });
    req.metadata_mut()
        .insert("x-slow", "1".parse().expect("value"));
    let err = tokio::time::timeout(Duration::from_secs(10), health.check(req))
        .await
        .expect("answered")
        .expect_err("times out");
    assert_eq!(err.code(), tonic::Code::DeadlineExceeded, "{err:?}");
    assert!(err.message().contains("request id"), "{}", err.message());

    // grpc-timeout caps the route timeout (a raw HTTP/2 client, so that no
    // client-side timer races the gateway's answer).
    let h2 = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<Bytes>>();
    let req = hyper::Request::post(format!("{}/grpc.health.v1.Health/Check", s.gateway.url()))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("grpc-timeout", "100m")
        .header("x-slow", "2")
        .body(Full::new(Bytes::from_static(&[0, 0, 0, 0, 0])))
        .expect("req");
    // The route and per-try timeouts are 60 s: only the 100ms grpc-timeout
    // can produce an answer within the 10 s this test waits.
    let res = tokio::time::timeout(Duration::from_secs(10), h2.request(req))
        .await
        .expect("capped by grpc-timeout")
        .expect("trailers-only answer");
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["grpc-status"], "4", "DEADLINE_EXCEEDED");

    // A grpc-timeout longer than gRPC's eight digits allow is ignored, not
    // added to the request's start (this one overflowed the deadline and
    // panicked the request's task: the client saw its stream reset).
    let req = hyper::Request::post(format!("{}/grpc.health.v1.Health/Check", s.gateway.url()))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("grpc-timeout", "9223372036854775807S")
        .body(Full::new(Bytes::from_static(&[0, 0, 0, 0, 0])))
        .expect("req");
    let res = tokio::time::timeout(Duration::from_secs(10), h2.request(req))
        .await
        .expect("answered")
        .expect("an answer, not a reset stream");
    assert_eq!(res.status(), 200);
    let body = res.into_body().collect().await.expect("whole body");
    let trailers = body.trailers().expect("trailers").clone();
    assert_eq!(
        trailers["grpc-status"], "0",
        "served under the route's timeout"
    );
}

#[tokio::test]
async fn websocket_echo() {
    let (s, _backends) = hello_stack().await;
    let url = format!("ws://{}/hello/ws", s.gateway.http);
    let (mut ws, res) = tokio_tungstenite::connect_async(url)
        .await
        .expect("websocket through the gateway");
    assert_eq!(res.status(), 101);
    for i in 0..5 {
        let text = format!("ping {i}");
        ws.send(tokio_tungstenite::tungstenite::Message::text(text.clone()))
            .await
            .expect("send");
        let back = ws.next().await.expect("a message").expect("ok");
        assert_eq!(back.into_text().expect("text").as_str(), text);
    }
}

#[tokio::test]
async fn rate_concurrency_body_and_header_limits() {
    let (s, backends) = hello_stack().await;
    let base = s.gateway.url();
    // 429 with Retry-After after the burst.
    let mut codes = Vec::new();
    for _ in 0..4 {
        codes.push(get(&format!("{base}/limited/x")).await.0);
    }
    assert_eq!(&codes[..2], [200, 200]);
    assert_eq!(codes[3], 429);
    let res = client()
        .request(
            hyper::Request::get(format!("{base}/limited/x"))
                .body(Full::new(Bytes::new()))
                .expect("req"),
        )
        .await
        .expect("res");
    assert_eq!(res.status(), 429);
    assert!(res.headers().contains_key("retry-after"));
    // 503 + Retry-After when the route's concurrency is taken.
    for b in &backends {
        b.delay_ms.store(500, std::sync::atomic::Ordering::Relaxed);
    }
    let slow_url = format!("{base}/narrow/slow");
    let slow = tokio::spawn(async move { get(&slow_url).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let res = client()
        .request(
            hyper::Request::get(format!("{base}/narrow/x"))
                .body(Full::new(Bytes::new()))
                .expect("req"),
        )
        .await
        .expect("res");
    assert_eq!(res.status(), 503);
    assert!(res.headers().contains_key("retry-after"));
    assert_eq!(slow.await.expect("join").0, 200);
    for b in &backends {
        b.delay_ms.store(0, std::sync::atomic::Ordering::Relaxed);
    }
    // 413 for a body over the limit.
    let (code, _) = send(
        Method::POST,
        &format!("{base}/hello/upload"),
        &[],
        Bytes::from(vec![0u8; 2 * 1024 * 1024]),
    )
    .await;
    assert_eq!(code, 413);
    // 431 for headers over the limit.
    let big = "x".repeat(100 * 1024);
    let (code, _) = send(
        Method::GET,
        &format!("{base}/hello/x"),
        &[("x-big", &big)],
        Bytes::new(),
    )
    .await;
    assert_eq!(code, 431);
    // 401 without the API key, 200 with it.
    assert_eq!(get(&format!("{base}/private/x")).await.0, 401);
    assert_eq!(
        send(
            Method::GET,
            &format!("{base}/private/x"),
            &[("x-api-key", "key-123")],
            Bytes::new()
        )
        .await
        .0,
        200
    );
    // CORS preflight and response headers.
    let req = hyper::Request::builder()
        .method(Method::OPTIONS)
        .uri(format!("{base}/cors/x"))
        .header("origin", "https://app.example")
        .header("access-control-request-method", "GET")
        .body(Full::new(Bytes::new()))
        .expect("req");
    let res = client().request(req).await.expect("preflight");
    assert_eq!(res.status(), 204);
    assert_eq!(
        res.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    assert_eq!(res.headers()["access-control-max-age"], "600");
}

#[tokio::test]
async fn a_slow_or_idle_client_is_cut_off_at_the_header_deadline() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let a = Backend::start("h1").await;
    let s = Stack::start_with(
        ROUTES,
        vec![spec("hello", "h1", a.addr, reg::Protocol::Http1)],
        |c| c.header_timeout = Duration::from_millis(300),
    )
    .await;
    // Reads until the gateway closes; how long that took.
    async fn closed_after(mut conn: tokio::net::TcpStream) -> Duration {
        let start = std::time::Instant::now();
        let mut buf = [0u8; 4096];
        loop {
            match tokio::time::timeout(Duration::from_secs(5), conn.read(&mut buf)).await {
                Ok(Ok(0) | Err(_)) => return start.elapsed(),
                Ok(Ok(_)) => continue,
                Err(_) => panic!("the connection stayed open past the header deadline"),
            }
        }
    }
    // A head that never ends (one byte at a time would not help either).
    let mut slow = tokio::net::TcpStream::connect(s.gateway.http)
        .await
        .expect("connect");
    slow.write_all(b"GET /hello/x HTTP/1.1\r\nhost: a\r\nx-slow: ")
        .await
        .expect("write");
    let took = closed_after(slow).await;
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(2),
        "{took:?}"
    );
    // A kept-alive connection that sends nothing more after its answer.
    let mut idle = tokio::net::TcpStream::connect(s.gateway.http)
        .await
        .expect("connect");
    idle.write_all(b"GET /hello/x HTTP/1.1\r\nhost: a\r\n\r\n")
        .await
        .expect("write");
    let mut first = [0u8; 12];
    idle.read_exact(&mut first).await.expect("answer");
    assert_eq!(&first, b"HTTP/1.1 200");
    let took = closed_after(idle).await;
    assert!(took < Duration::from_secs(2), "{took:?}");
    // A body that stops short of its declared length: 408, then closed.
    let mut short = tokio::net::TcpStream::connect(s.gateway.http)
        .await
        .expect("connect");
    short
        .write_all(b"POST /hello/x HTTP/1.1\r\nhost: a\r\ncontent-length: 10\r\n\r\nabc")
        .await
        .expect("write");
    let start = std::time::Instant::now();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), short.read_to_end(&mut answer))
        .await
        .expect("the connection stayed open past the body's pause deadline")
        .expect("read");
    let took = start.elapsed();
    assert!(
        answer.starts_with(b"HTTP/1.1 408"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(2),
        "{took:?}"
    );
    // Requests in time are unaffected.
    let (code, _) = get(&format!("{}/hello/x", s.gateway.url())).await;
    assert_eq!(code, 200);
}

#[tokio::test]
async fn http1_by_the_book_on_the_gateways_own_path_and_after_a_handover() {
    use tokio::io::AsyncWriteExt;
    let (s, _backends) = hello_stack().await;
    let connect = || tokio::net::TcpStream::connect(s.gateway.http);
    let path_of = |a: &Answer| -> String {
        let v: serde_json::Value = serde_json::from_slice(&a.body).expect("json");
        v["path"].as_str().expect("path").to_string()
    };

    // Pipelined: three requests in one write, answered in order; a HEAD's
    // answer has the length but no body; each answer carries one request
    // id and one date (the upstream's lines pass through beside ours).
    let mut c = connect().await.expect("connect");
    c.write_all(
        b"GET /hello/one HTTP/1.1\r\nhost: a\r\n\r\n\
          HEAD /hello/two HTTP/1.1\r\nhost: a\r\n\r\n\
          GET /hello/three?x=1 HTTP/1.1\r\nhost: a\r\nx-request-id: mine-3\r\n\r\n",
    )
    .await
    .expect("write");
    let mut buf = Vec::new();
    let one = read_answer(&mut c, &mut buf, false).await;
    assert_eq!((one.status, path_of(&one).as_str()), (200, "/one"));
    assert!(one.one("x-request-id").is_some_and(|id| id.len() == 32));
    assert!(one.one("date").is_some());
    assert_eq!(
        one.one("content-length"),
        Some(&*one.body.len().to_string())
    );
    let two = read_answer(&mut c, &mut buf, true).await;
    assert_eq!(two.status, 200);
    assert!(two.one("content-length").is_some_and(|n| n != "0"));
    let three = read_answer(&mut c, &mut buf, false).await;
    assert_eq!(
        (three.status, path_of(&three).as_str()),
        (200, "/three?x=1")
    );
    assert_eq!(three.one("x-request-id"), Some("mine-3"));
    // The connection keeps one request's parts for all its heads: nothing
    // of the last request's fields carries over to the next.
    c.write_all(b"GET /hello/four HTTP/1.1\r\nhost: a\r\n\r\n")
        .await
        .expect("write");
    let four = read_answer(&mut c, &mut buf, false).await;
    assert_eq!((four.status, path_of(&four).as_str()), (200, "/four"));
    assert!(
        four.one("x-request-id").is_some_and(|id| id.len() == 32),
        "{:?}",
        four.one("x-request-id")
    );

    // A body of declared length is read whole and sent on; then a chunked
    // one, which the gateway hands to hyper's server with the bytes it had
    // read; the connection goes on serving after the handover.
    c.write_all(b"POST /hello/upload HTTP/1.1\r\nhost: a\r\ncontent-length: 10\r\n\r\n0123456789")
        .await
        .expect("write");
    let up = read_answer(&mut c, &mut buf, false).await;
    assert_eq!(up.status, 200);
    assert!(
        String::from_utf8_lossy(&up.body).contains(r#""bytes":10"#),
        "{:?}",
        up.body
    );
    c.write_all(
        b"POST /hello/upload HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n\
          5\r\nabcde\r\n3\r\nfgh\r\n0\r\n\r\n\
          GET /hello/after HTTP/1.1\r\nhost: a\r\n\r\n",
    )
    .await
    .expect("write");
    let chunked = read_answer(&mut c, &mut buf, false).await;
    assert!(String::from_utf8_lossy(&chunked.body).contains(r#""bytes":8"#));
    let after = read_answer(&mut c, &mut buf, false).await;
    assert_eq!((after.status, path_of(&after).as_str()), (200, "/after"));

    // An answer streamed without a length goes out chunked to HTTP/1.1.
    let mut d = connect().await.expect("connect");
    d.write_all(b"GET /hello/download?bytes=200000 HTTP/1.1\r\nhost: a\r\n\r\n")
        .await
        .expect("write");
    let mut dbuf = Vec::new();
    let down = read_answer(&mut d, &mut dbuf, false).await;
    assert_eq!(down.one("transfer-encoding"), Some("chunked"));
    assert_eq!(down.body.len(), 200_000);

    // `Connection: close` is honoured and said back.
    d.write_all(b"GET /hello/bye HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n")
        .await
        .expect("write");
    let bye = read_answer(&mut d, &mut dbuf, false).await;
    assert_eq!((bye.status, bye.one("connection")), (200, Some("close")));
    assert!(closed(&mut d).await, "open after connection: close");

    // HTTP/1.0: closed after its answer unless it asks to keep alive.
    let mut old = connect().await.expect("connect");
    old.write_all(b"GET /hello/old HTTP/1.0\r\nhost: a\r\nconnection: keep-alive\r\n\r\n")
        .await
        .expect("write");
    let mut obuf = Vec::new();
    let kept = read_answer(&mut old, &mut obuf, false).await;
    assert_eq!(kept.one("connection"), Some("keep-alive"));
    old.write_all(b"GET /hello/older HTTP/1.0\r\nhost: a\r\n\r\n")
        .await
        .expect("write");
    let last = read_answer(&mut old, &mut obuf, false).await;
    assert_eq!((last.status, path_of(&last).as_str()), (200, "/older"));
    assert!(closed(&mut old).await, "an HTTP/1.0 connection stayed open");

    // Heads it cannot take: an answer that says why, then the close.
    for (head, status) in [
        (b"GARBAGE\r\n\r\n".to_vec(), 400),
        (
            [
                b"GET /hello/x HTTP/1.1\r\nhost: a\r\nx-big: ".to_vec(),
                vec![b'a'; 70 * 1024],
                b"\r\n\r\n".to_vec(),
            ]
            .concat(),
            431,
        ),
        (
            b"GET /hello/x HTTP/1.1\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n".to_vec(),
            400,
        ),
        (
            b"POST /hello/x HTTP/1.1\r\ncontent-length: +3\r\n\r\nabc".to_vec(),
            400,
        ),
    ] {
        let mut bad = connect().await.expect("connect");
        // The gateway may close before all of a large head is written.
        let _ = bad.write_all(&head).await;
        let mut bbuf = Vec::new();
        let refused = read_answer(&mut bad, &mut bbuf, false).await;
        assert_eq!(refused.status, status);
        assert_eq!(refused.one("connection"), Some("close"));
        assert!(closed(&mut bad).await);
    }
    // The gateway still serves.
    let (code, _) = get(&format!("{}/hello/x", s.gateway.url())).await;
    assert_eq!(code, 200);
}

#[tokio::test]
async fn the_default_rule_calls_registry_services_by_name() {
    let a = Backend::start("d1").await;
    let routes = "default_rule = true\ndefault_rule_prefix = \"/api/service/\"\n";
    let s = Stack::start(
        routes,
        vec![
            spec("hello", "d1", a.addr, reg::Protocol::Http1),
            spec("switchyard-balancer", "b1", a.addr, reg::Protocol::Http1),
        ],
    )
    .await;
    let url = |path: &str| format!("{}{path}", s.gateway.url());
    // The seed sketch's `GET /api/service/<name>`: the prefix and the name
    // are taken off.
    let path_of = |body: &str| -> String {
        let v: serde_json::Value = serde_json::from_str(body).expect("json");
        v["path"].as_str().expect("path").to_string()
    };
    let (code, body) = get(&url("/api/service/hello/x?y=1")).await;
    assert_eq!((code, path_of(&body).as_str()), (200, "/x?y=1"), "{body}");
    let (code, body) = get(&url("/api/service/hello")).await;
    assert_eq!((code, path_of(&body).as_str()), (200, "/"), "{body}");
    for (path, why) in [
        ("/api/service/nosuch/x", "not in the registry"),
        (
            "/api/service/switchyard-balancer/x",
            "the control plane's own",
        ),
        ("/hello/x", "outside the prefix"),
    ] {
        assert_eq!(get(&url(path)).await.0, 404, "{why}");
    }
}

#[tokio::test]
async fn equal_instances_share_sequential_requests_under_peak_ewma() {
    for (n, requests, low, high) in [(2usize, 100usize, 35, 65), (3, 300, 20, 100)] {
        let mut backends = Vec::new();
        let mut specs = Vec::new();
        for i in 0..n {
            let b = Backend::start(&format!("e{i}")).await;
            specs.push(spec("even", &format!("e{i}"), b.addr, reg::Protocol::Http1));
            backends.push(b);
        }
        // The default policy (peak_ewma), as `deploy/up.sh` runs it.
        let routes = "[[route]]\nname = \"even\"\nservice = \"even\"\npath_prefix = \"/\"\n";
        let s = Stack::start(routes, specs).await;
        let url = format!("{}/x", s.gateway.url());
        let mut counts = std::collections::BTreeMap::<String, usize>::new();
        for _ in 0..requests {
            let (code, body) = get(&url).await;
            assert_eq!(code, 200);
            *counts.entry(instance_of(&body)).or_default() += 1;
        }
        println!("{n} instances, {requests} sequential requests: {counts:?}");
        assert_eq!(counts.len(), n, "every instance got requests: {counts:?}");
        for (id, c) in &counts {
            let share = c * 100 / requests;
            assert!(
                (low..=high).contains(&share),
                "{id}: {share} % of {requests} ({counts:?})"
            );
        }
    }
}
