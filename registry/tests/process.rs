//! The real `registry` binary as a process: config errors exit 64, SIGTERM
//! exits 0 within 5 s with watch streams ended cleanly, probe, and durable
//! operator state across a restart.

mod support;

use std::{
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use support::*;
use switchyard_proto::registry::v1::{self as pb, registry_client::RegistryClient};

const BIN: &str = env!("CARGO_BIN_EXE_registry");

fn free_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

struct Proc {
    child: Child,
    grpc: SocketAddr,
    http: SocketAddr,
}

impl Proc {
    async fn start(data_dir: &PathBuf) -> Self {
        let (grpc, http) = (free_port(), free_port());
        let child = Command::new(BIN)
            .args([
                "--grpc-listen",
                &grpc.to_string(),
                "--http-listen",
                &http.to_string(),
            ])
            .env("SWITCHYARD_PLAINTEXT", "true")
            .env("SWITCHYARD_DATA_DIR", data_dir)
            .env("SWITCHYARD_WARM_UP", "0s")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn registry");
        let p = Self { child, grpc, http };
        eventually("registry answers /readyz", || async {
            switchyard_runtime::probe::probe(http, "/readyz", Duration::from_secs(1))
                .await
                .is_ok()
        })
        .await;
        p
    }

    async fn client(&self) -> RegistryClient<tonic::transport::Channel> {
        RegistryClient::connect(format!("http://{}", self.grpc))
            .await
            .expect("connect")
    }

    /// SIGTERM, then the exit status and how long it took.
    fn terminate(mut self) -> (std::process::ExitStatus, Duration) {
        let start = Instant::now();
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(ok.success());
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return (status, start.elapsed());
            }
            if start.elapsed() > Duration::from_secs(10) {
                let _ = self.child.kill();
                panic!("registry did not exit within 10 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn temp_dir() -> PathBuf {
    std::env::temp_dir().join(format!("switchyard-registry-{}", rand_suffix()))
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
        ^ u64::from(std::process::id())
}

#[test]
fn config_errors_name_the_key_and_exit_64() {
    for (args, key) in [
        (
            vec!["--grpc-listen", "nowhere"],
            "`grpc_listen`: `nowhere`:",
        ),
        (vec!["--default-ttl-secs", "1000"], "default_ttl_secs"),
        (vec!["--no-such-flag", "1"], "--no-such-flag"),
        (vec!["--warm-up", "soon"], "warm_up"),
        // Neither certificates nor plaintext said out loud: mTLS is the default.
        (vec![], "mtls_cert"),
        (vec!["--mtls-ca", "/nonexistent/ca.pem"], "mtls_cert"),
        (
            vec![
                "--plaintext",
                "--mtls-ca",
                "/x",
                "--mtls-cert",
                "/y",
                "--mtls-key",
                "/z",
            ],
            "plaintext",
        ),
        (
            vec![
                "--mtls-ca",
                "/nonexistent/ca.pem",
                "--mtls-cert",
                "/y",
                "--mtls-key",
                "/z",
            ],
            "`mtls_ca`: /nonexistent/ca.pem",
        ),
    ] {
        let out = Command::new(BIN).args(&args).output().expect("run");
        assert_eq!(out.status.code(), Some(64), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(key), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "one clear line: {stderr}");
    }
    // A port in use is not a bad setting (exit 1), but the line says
    // which setting and address, where the OS error named neither.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let out = Command::new(BIN)
        .args(["--grpc-listen", &addr, "--http-listen", "127.0.0.1:0"])
        .env("SWITCHYARD_PLAINTEXT", "true")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stderr
        .lines()
        .find(|l| l.starts_with("registry: error:"))
        .unwrap_or_else(|| panic!("no error line: {stderr}"));
    assert!(
        line.contains(&format!("cannot listen on {addr} (`grpc_listen`)")),
        "{line}"
    );
    let help = Command::new(BIN).arg("--help").output().expect("help");
    assert!(help.status.success());
    assert!(String::from_utf8_lossy(&help.stdout).contains("SWITCHYARD_DEFAULT_TTL_SECS"));
    let version = Command::new(BIN)
        .arg("--version")
        .output()
        .expect("version");
    assert!(String::from_utf8_lossy(&version.stdout).starts_with("registry "));
}

#[tokio::test]
async fn sigterm_ends_watches_cleanly_and_exits_zero_within_five_seconds() {
    let dir = temp_dir();
    let p = Proc::start(&dir).await;
    let probe = Command::new(BIN)
        .args(["probe", "--addr", &p.http.to_string()])
        .status()
        .expect("probe");
    assert!(probe.success(), "probe of a ready registry");
    let mut c = p.client().await;
    let mut watch = c
        .watch(pb::WatchRequest::default())
        .await
        .expect("watch")
        .into_inner();
    next(&mut watch).await;
    let http = p.http;
    let (status, took) = tokio::task::spawn_blocking(move || p.terminate())
        .await
        .expect("join");
    assert!(status.success(), "exit status {status:?}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    let end = loop {
        match watch.message().await {
            Ok(Some(_)) => continue,
            other => break other,
        }
    };
    assert!(matches!(end, Ok(None)), "stream ended cleanly: {end:?}");
    let probe = Command::new(BIN)
        .args(["probe", "--addr", &http.to_string()])
        .status()
        .expect("probe");
    assert_eq!(probe.code(), Some(1), "probe of a stopped registry fails");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn operator_state_survives_a_restart_of_the_binary() {
    let dir = temp_dir();
    let p = Proc::start(&dir).await;
    let mut c = p.client().await;
    register(&mut c, 0, vec![spec("hello", "h1")]).await;
    c.set_state(pb::SetStateRequest {
        service: "hello".into(),
        instance_id: "h1".into(),
        state: pb::State::OutOfService as i32,
        weight: Some(7),
        reason: "disk swap".into(),
        ..Default::default()
    })
    .await
    .expect("set_state");
    let epoch_before = c
        .list_services(pb::ListServicesRequest {})
        .await
        .expect("list")
        .into_inner()
        .position
        .expect("p")
        .epoch;
    let (status, _) = tokio::task::spawn_blocking(move || p.terminate())
        .await
        .expect("join");
    assert!(status.success());

    let p = Proc::start(&dir).await;
    let mut c = p.client().await;
    let listed = c
        .list_services(pb::ListServicesRequest {})
        .await
        .expect("list")
        .into_inner();
    assert_ne!(
        listed.position.expect("p").epoch,
        epoch_before,
        "a restart draws a new epoch"
    );
    assert!(listed.services.is_empty(), "instances are ephemeral");
    // The client re-registers, as the SDK does, and meets its override again.
    register(&mut c, 0, vec![spec("hello", "h1")]).await;
    let got = c
        .get_service(pb::GetServiceRequest {
            service: "hello".into(),
        })
        .await
        .expect("get")
        .into_inner();
    let i = &got.instances[0];
    assert_eq!(i.state(), pb::State::OutOfService);
    assert_eq!(i.weight, 7);
    let o = i.r#override.as_ref().expect("override");
    assert_eq!(o.reason, "disk swap", "the reason is durable too");
    let (status, _) = tokio::task::spawn_blocking(move || p.terminate())
        .await
        .expect("join");
    assert!(status.success());
    let _ = std::fs::remove_dir_all(dir);
}

/// This machine's address on its default route (no packet is sent).
fn outward_ip() -> std::net::IpAddr {
    let probe = std::net::UdpSocket::bind("0.0.0.0:0").expect("udp");
    probe
        .connect("192.0.2.1:9")
        .expect("a route off this machine (the test needs a non-loopback address)");
    probe.local_addr().expect("addr").ip()
}

/// Whether something answers HTTP at `addr` within 2 s.
fn answers(addr: SocketAddr) -> bool {
    std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok()
}

#[tokio::test]
async fn without_tokens_the_json_api_listens_on_loopback_only() {
    let outward = outward_ip();
    assert!(!outward.is_loopback(), "{outward}");
    for tokens in [false, true] {
        let (grpc, port) = (free_port(), free_port().port());
        let mut cmd = Command::new(BIN);
        cmd.args(["--grpc-listen", &grpc.to_string()])
            .args(["--http-listen", &format!("0.0.0.0:{port}")])
            .env("SWITCHYARD_PLAINTEXT", "true")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if tokens {
            cmd.env("SWITCHYARD_REGISTER_TOKENS", "register-token-a")
                .env("SWITCHYARD_OPERATOR_TOKENS", "operator-token-b");
        }
        let mut child = cmd.spawn().expect("spawn");
        let local = SocketAddr::from(([127, 0, 0, 1], port));
        let start = Instant::now();
        while !answers(local) && start.elapsed() < Duration::from_secs(10) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(answers(local), "tokens {tokens}: loopback answers");
        assert_eq!(
            answers(SocketAddr::new(outward, port)),
            tokens,
            "tokens {tokens}: {outward}:{port} answers only with tokens"
        );
        let _ = child.kill();
        let _ = child.wait();
    }
}
