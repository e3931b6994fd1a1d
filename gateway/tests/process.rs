//! The real `gateway` binary as a process (memory under large bodies), and
//! TLS with ALPN.

mod support;

use std::{
    convert::Infallible,
    process::{Command, Stdio},
    sync::Arc,
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::*;
use switchyard_proto::registry::v1 as reg;
use tokio_rustls::rustls;

const ROUTES: &str =
    "[[route]]\nname = \"hello\"\nservice = \"hello\"\npath_prefix = \"/hello/\"\n";
const HUNDRED_MB: u64 = 100 * 1024 * 1024;

fn free_port() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
}

/// Peak resident memory of a process, in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

struct Child(std::process::Child);

/// Waits until the gateway's admin listener says ready.
async fn ready(child: Child, admin: std::net::SocketAddr) -> Child {
    eventually("gateway ready", || async {
        switchyard_runtime::probe::probe(admin, "/readyz", Duration::from_secs(1))
            .await
            .is_ok()
    })
    .await;
    child
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An in-process registry with `backend` registered as instance `id` of
/// service `hello`.
async fn registry_with(backend: &Backend, id: &str) -> switchyard_registry::testing::Running {
    let registry = switchyard_registry::testing::start(
        switchyard_registry::testing::config(),
        switchyard_runtime::ManualClock::new(),
    )
    .await
    .expect("registry");
    let mut rc = reg::registry_client::RegistryClient::connect(registry.url())
        .await
        .expect("client");
    rc.register(reg::RegisterRequest {
        lease_id: 0,
        ttl_seconds: 300,
        instances: vec![spec("hello", id, backend.addr, reg::Protocol::Http1)],
    })
    .await
    .expect("register");
    registry
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_megabytes_up_and_down_stream_through_a_gateway_process() {
    let backend = Backend::start("big").await;
    let registry = registry_with(&backend, "big").await;
    let dir = temp_dir("process");
    let routes = dir.join("routes.toml");
    std::fs::write(&routes, ROUTES).expect("routes");
    let (http, admin) = (free_port(), free_port());
    let child = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .env("SWITCHYARD_PLAINTEXT", "true")
        .args([
            "--http-listen",
            &http.to_string(),
            "--admin-listen",
            &admin.to_string(),
        ])
        .args([
            "--routes",
            routes.to_str().expect("utf8"),
            "--registry",
            &registry.url(),
            "--register-self",
            "false",
        ])
        .args(["--access-log", "false"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn gateway");
    let child = ready(Child(child), admin).await;
    // Warm up once so pools and buffers exist before we measure.
    assert_eq!(get(&format!("http://{http}/hello/x")).await.0, 200);
    let before = peak_rss_kib(child.0.id());

    // Up: a chunked 100 MB body (no length, so it streams).
    let chunk = Bytes::from(vec![b'u'; 64 * 1024]);
    let chunks = HUNDRED_MB / chunk.len() as u64;
    let stream = futures_util::stream::iter(
        (0..chunks).map(move |_| Ok::<_, Infallible>(Frame::data(chunk.clone()))),
    );
    let up = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .build_http::<StreamBody<_>>();
    let req = hyper::Request::post(format!("http://{http}/hello/upload"))
        .body(StreamBody::new(stream))
        .expect("req");
    let res = up.request(req).await.expect("upload response");
    assert_eq!(res.status(), 200);
    let body = res.into_body().collect().await.expect("body").to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(v["bytes"], HUNDRED_MB, "every byte arrived");

    // Down: 100 MB streamed back.
    let down = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .build_http::<Empty<Bytes>>();
    let req = hyper::Request::get(format!("http://{http}/hello/download?bytes={HUNDRED_MB}"))
        .body(Empty::new())
        .expect("req");
    let res = down.request(req).await.expect("download response");
    let mut body = res.into_body();
    let mut got = 0u64;
    while let Some(frame) = body.frame().await {
        got += frame
            .expect("frame")
            .into_data()
            .map(|d| d.len() as u64)
            .unwrap_or(0);
    }
    assert_eq!(got, HUNDRED_MB);

    let after = peak_rss_kib(child.0.id());
    let growth_mib = (after.saturating_sub(before)) as f64 / 1024.0;
    eprintln!(
        "gateway peak RSS: {before} KiB before, {after} KiB after ({growth_mib:.1} MiB growth)"
    );
    assert!(growth_mib < 32.0, "peak RSS grew by {growth_mib:.1} MiB");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn tls_with_alpn_h2_and_http1() {
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("cert");
    let dir = temp_dir("tls");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, certified.cert.pem()).expect("write cert");
    std::fs::write(&key, certified.signing_key.serialize_pem()).expect("write key");
    let backend = Backend::start("tls-backend").await;
    let s = Stack::start_with(
        ROUTES,
        vec![spec("hello", "t1", backend.addr, reg::Protocol::Http1)],
        |c| {
            c.tls_cert = cert.display().to_string();
            c.tls_key = key.display().to_string();
        },
    )
    .await;
    let https = s.gateway.https.expect("tls listener");
    let mut roots = rustls::RootCertStore::empty();
    roots.add(certified.cert.der().clone()).expect("root");
    for (alpn, version) in [
        (&b"h2"[..], hyper::Version::HTTP_2),
        (&b"http/1.1"[..], hyper::Version::HTTP_11),
    ] {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots.clone())
            .with_no_client_auth();
        config.alpn_protocols = vec![alpn.to_vec()];
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tcp = tokio::net::TcpStream::connect(https)
            .await
            .expect("connect");
        let tls = connector
            .connect("localhost".try_into().expect("name"), tcp)
            .await
            .expect("handshake");
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(alpn), "ALPN agreed");
        let req = hyper::Request::get("https://localhost/hello/secure")
            .body(Empty::<Bytes>::new())
            .expect("req");
        let res = if version == hyper::Version::HTTP_2 {
            let (mut send, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                    .await
                    .expect("h2");
            tokio::spawn(conn);
            send.send_request(req).await.expect("h2 response")
        } else {
            let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
                .await
                .expect("h1");
            tokio::spawn(conn);
            let mut req = req;
            req.headers_mut()
                .insert("host", "localhost".parse().expect("host"));
            send.send_request(req).await.expect("h1 response")
        };
        assert_eq!(res.status(), 200);
        assert_eq!(res.version(), version);
        let body = res.into_body().collect().await.expect("body").to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(v["x_forwarded_proto"], "https");
        assert_eq!(v["path"], "/hello/secure");
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// A counter's value in a Prometheus text page (0 when it is not there).
fn counter(metrics: &str, series: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// `switchyard_gateway_reloads_total` from the admin listener (0 before the first).
async fn reloads(admin: std::net::SocketAddr) -> u64 {
    let (_, body) = get(&format!("http://{admin}/metrics")).await;
    counter(&body, "switchyard_gateway_reloads_total")
}

/// The gateway binary on fresh loopback ports with the routes file `routes`
/// and `registry`, not registering itself; its traffic and admin addresses.
fn gateway_command(
    routes: &std::path::Path,
    registry: &str,
) -> (Command, std::net::SocketAddr, std::net::SocketAddr) {
    let (http, admin) = (free_port(), free_port());
    let mut command = Command::new(env!("CARGO_BIN_EXE_gateway"));
    command
        .env("SWITCHYARD_PLAINTEXT", "true")
        .args(["--http-listen", &http.to_string()])
        .args(["--admin-listen", &admin.to_string()])
        .args(["--routes", routes.to_str().expect("utf8")])
        .args(["--registry", registry, "--register-self", "false"]);
    (command, http, admin)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_process_reloads_on_replace_and_sighup_ignores_neighbours_and_logs_json() {
    let backend = Backend::start("reloaded").await;
    let registry = registry_with(&backend, "r1").await;
    let dir = temp_dir("reload-process");
    let routes = dir.join("routes.toml");
    std::fs::write(&routes, ROUTES).expect("routes");
    let log_path = dir.join("gateway.log");
    let log = std::fs::File::create(&log_path).expect("log file");
    let (mut command, http, admin) = gateway_command(&routes, &registry.url());
    // One worker: the single runtime the benchmarks use.
    let child = command
        .args(["--worker-threads", "1", "--log-format", "json"])
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .expect("spawn gateway");
    let child = ready(Child(child), admin).await;
    let res = client()
        .request(
            hyper::Request::get(format!("http://{http}/hello/logged"))
                .header("x-request-id", "reload-test-1")
                .body(http_body_util::Full::new(Bytes::new()))
                .expect("req"),
        )
        .await
        .expect("response");
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-request-id"], "reload-test-1");
    // Prometheus series by route and service, never by endpoint (those come
    // and go with every deploy; their figures are on the admin API).
    let has = |metrics: &str, name: &str, label: &str| {
        metrics
            .lines()
            .any(|l| l.starts_with(&format!("{name}{{")) && l.contains(label))
    };
    eventually("the request is counted by route and service", || async {
        let (_, m) = get(&format!("http://{admin}/metrics")).await;
        has(&m, "switchyard_gateway_requests_total", "route=\"hello\"")
            && has(
                &m,
                "switchyard_gateway_upstream_attempts_total",
                "service=\"hello\",outcome=\"success\"} 1",
            )
    })
    .await;
    let (_, metrics) = get(&format!("http://{admin}/metrics")).await;
    assert!(!metrics.contains("endpoint=\""), "{metrics}");
    let start = reloads(admin).await;

    // Files beside the routes file (the log itself grows here) are not routes.
    for i in 0..4 {
        std::fs::write(dir.join("notes.txt"), format!("edit {i}")).expect("neighbour");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(
        reloads(admin).await,
        start,
        "a neighbour file reloaded the routes"
    );
    assert_eq!(get(&format!("http://{http}/greet/x")).await.0, 404);

    // Replaced by a rename, as editors and config mounts do.
    let staged = dir.join(".routes.toml.new");
    std::fs::write(
        &staged,
        format!(
            "{ROUTES}[[route]]\nname = \"greet\"\nservice = \"hello\"\npath_prefix = \"/greet/\"\n"
        ),
    )
    .expect("staged");
    std::fs::rename(&staged, &routes).expect("rename");
    eventually("the new route serves", || async {
        get(&format!("http://{http}/greet/x")).await.0 == 200
    })
    .await;
    assert_eq!(reloads(admin).await, start + 1, "one change, one reload");

    // SIGHUP reloads without a change.
    let hup = Command::new("kill")
        .args(["-HUP", &child.0.id().to_string()])
        .status()
        .expect("kill -HUP");
    assert!(hup.success());
    eventually("SIGHUP reloaded", || async {
        reloads(admin).await == start + 2
    })
    .await;
    assert_eq!(get(&format!("http://{http}/greet/x")).await.0, 200);

    // The access log line of the first request, as JSON.
    let text = std::fs::read_to_string(&log_path).expect("read log");
    let line = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["target"] == "access" && v["request_id"] == "reload-test-1")
        .unwrap_or_else(|| panic!("no JSON access log line for the request in:\n{text}"));
    assert_eq!(line["method"], "GET");
    assert_eq!(line["path"], "/hello/logged");
    assert_eq!(line["status"], 200);
    assert_eq!(line["route"], "hello");
    assert_eq!(line["service"], "hello");
    assert_eq!(line["endpoint"], "r1");
    assert_eq!(line["attempts"], 1);
    assert!(line["duration_ms"].as_f64().is_some_and(|d| d >= 0.0));
    drop(child);
    let _ = std::fs::remove_dir_all(dir);
}

/// A routes or TLS file found unusable at start is a bad setting like a bad
/// flag: one line naming the key and the file, exit 64, nothing served.
#[test]
fn unusable_start_up_files_name_key_and_path_and_exit_64() {
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("cert");
    let dir = temp_dir("bad-files");
    let (cert, key, routes) = (
        dir.join("cert.pem"),
        dir.join("key.pem"),
        dir.join("routes.toml"),
    );
    std::fs::write(&cert, certified.cert.pem()).expect("write cert");
    std::fs::write(&key, certified.signing_key.serialize_pem()).expect("write key");
    std::fs::write(&routes, ROUTES).expect("write routes");
    let other = rcgen::generate_simple_self_signed(vec!["other".to_string()]).expect("cert");
    let other_key = dir.join("other-key.pem");
    std::fs::write(&other_key, other.signing_key.serialize_pem()).expect("write key");
    let (cert, key, routes, other_key) = (
        cert.display().to_string(),
        key.display().to_string(),
        routes.display().to_string(),
        other_key.display().to_string(),
    );
    let missing = dir.join("missing.pem").display().to_string();
    let cases: [(&[&str], &str, &str); 5] = [
        (&["--routes", &missing], "`routes`", &missing),
        (
            &["--tls-cert", &missing, "--tls-key", &key],
            "`tls_cert`",
            &missing,
        ),
        (&["--tls-cert", &key, "--tls-key", &key], "`tls_cert`", &key),
        (
            &["--tls-cert", &cert, "--tls-key", &cert],
            "`tls_key`",
            &cert,
        ),
        (
            &["--tls-cert", &cert, "--tls-key", &other_key],
            "`tls_key`",
            &other_key,
        ),
    ];
    for (args, named_key, path) in cases {
        let out = Command::new(env!("CARGO_BIN_EXE_gateway"))
            .env("SWITCHYARD_PLAINTEXT", "true")
            .args(["--routes", &routes])
            .args(args)
            .args([
                "--register-self",
                "false",
                "--registry",
                "http://127.0.0.1:1",
            ])
            .args([
                "--http-listen",
                "127.0.0.1:0",
                "--https-listen",
                "127.0.0.1:0",
            ])
            .args(["--admin-listen", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .output()
            .expect("run gateway");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let line = stderr
            .lines()
            .find(|l| l.starts_with("gateway: error:"))
            .unwrap_or_else(|| panic!("{args:?}: no error line in {stderr}"));
        assert_eq!(out.status.code(), Some(64), "{args:?}: {line}");
        assert!(
            line.contains(named_key) && line.contains(path),
            "{args:?}: the line names {named_key} and {path}: {line}"
        );
    }
}

/// A worker's accepted connections, from the admin listener's metrics.
fn accepted_by(metrics: &str, worker: usize) -> u64 {
    counter(
        metrics,
        &format!("switchyard_gateway_worker_connections_total{{worker=\"{worker}\"}}"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_each_accept_on_their_own_socket_and_drain_on_sigterm() {
    let backend = Backend::start("spread").await;
    let registry = registry_with(&backend, "w1").await;
    let dir = temp_dir("workers-process");
    let routes = dir.join("routes.toml");
    std::fs::write(&routes, ROUTES).expect("routes");
    let (mut command, http, admin) = gateway_command(&routes, &registry.url());
    let child = command
        .args(["--worker-threads", "2", "--access-log", "false"])
        .args(["--drain-delay", "0s"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn gateway");
    let mut child = ready(Child(child), admin).await;
    let pid = child.0.id();
    let threads: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("tasks")
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|name| name.trim().to_string())
        .collect();
    assert!(
        threads.iter().any(|t| t == "gw-worker-1"),
        "no thread of worker 1 in {threads:?}"
    );

    // 64 connections, one request each: the kernel spreads them over both
    // workers' sockets (all on one would be a chance of 2 in 2^64).
    let mut answered = 0;
    for i in 0..64 {
        let stream = tokio::net::TcpStream::connect(http).await.expect("connect");
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        let req = hyper::Request::get(format!("/hello/{i}"))
            .header("host", "gw.test")
            .body(http_body_util::Empty::<Bytes>::new())
            .expect("req");
        let res = send.send_request(req).await.expect("response");
        answered += u32::from(res.status() == 200);
    }
    assert_eq!(answered, 64);
    let (_, metrics) = get(&format!("http://{admin}/metrics")).await;
    let (first, second) = (accepted_by(&metrics, 0), accepted_by(&metrics, 1));
    assert_eq!(first + second, 64, "{metrics}");
    assert!(
        first > 0 && second > 0,
        "worker 0: {first}, worker 1: {second}"
    );

    // SIGTERM: both workers drain and the process ends cleanly.
    let term = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill -TERM");
    assert!(term.success());
    let status = tokio::task::spawn_blocking(move || {
        for _ in 0..100 {
            if let Some(status) = child.0.try_wait().expect("wait") {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    })
    .await
    .expect("join");
    assert!(
        status.is_some_and(|s| s.success()),
        "the gateway did not exit 0 within 10 s of SIGTERM: {status:?}"
    );
    let _ = std::fs::remove_dir_all(dir);
}
