//! The core flow without Docker: the real binaries as processes on
//! loopback (registry, balancer, gateway, three hello), one hello killed
//! with SIGKILL under load, and not one GET failing.

use std::{
    net::SocketAddr,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use switchyard_e2e::{
    binaries,
    compose::get,
    load::{self, Call},
};

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
}

fn spawn(bin: &str, args: &[&str]) -> Proc {
    let child = Command::new(binaries::path(bin))
        .args(args)
        .env("SWITCHYARD_LOG_FORMAT", "json")
        // The processes test the binaries' work, not mTLS (the compose
        // suite runs it): their gRPC links are plaintext, said out loud.
        .env("SWITCHYARD_PLAINTEXT", "true")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {bin}: {e}"));
    Proc(child)
}

fn wait_ready(bin: &str, admin: SocketAddr) {
    let start = Instant::now();
    loop {
        let ok = Command::new(binaries::path(bin))
            .args(["probe", "--addr", &admin.to_string()])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{bin} at {admin} not ready within 30 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_an_instance_under_load_costs_no_get() {
    let (reg_grpc, reg_http) = (free_port(), free_port());
    let registry = format!("http://{reg_grpc}");
    let _registry = spawn(
        "registry",
        &[
            "--grpc-listen",
            &reg_grpc.to_string(),
            "--http-listen",
            &reg_http.to_string(),
            "--warm-up",
            "1s",
        ],
    );
    wait_ready("registry", reg_http);

    let (bal_grpc, bal_http) = (free_port(), free_port());
    let _balancer = spawn(
        "balancer",
        &[
            "--grpc-listen",
            &bal_grpc.to_string(),
            "--http-listen",
            &bal_http.to_string(),
            "--registry",
            &registry,
        ],
    );
    let mut hellos = Vec::new();
    for i in 0..3 {
        let listen = free_port();
        let id = format!("hello-{i}");
        hellos.push(spawn(
            "hello",
            &[
                "--listen",
                &listen.to_string(),
                "--registry",
                &registry,
                "--instance-id",
                &id,
                "--drain-delay",
                "1s",
            ],
        ));
        wait_ready("hello", listen);
    }
    wait_ready("balancer", bal_http);

    let dir = std::env::temp_dir().join(format!("sy-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let routes = dir.join("routes.toml");
    std::fs::write(
        &routes,
        "[[route]]\nname = \"hello\"\nservice = \"hello\"\npath_prefix = \"/hello/\"\n",
    )
    .expect("routes");
    let (gw_http, gw_admin) = (free_port(), free_port());
    let _gateway = spawn(
        "gateway",
        &[
            "--http-listen",
            &gw_http.to_string(),
            "--admin-listen",
            &gw_admin.to_string(),
            "--routes",
            routes.to_str().expect("utf8"),
            "--registry",
            &registry,
            "--access-log",
            "false",
        ],
    );
    wait_ready("gateway", gw_admin);
    // Wait until the gateway knows all three instances.
    let start = Instant::now();
    while get(gw_admin.port(), "/api/services")
        .matches("\"instance_id\"")
        .count()
        < 3
    {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the gateway did not see three instances"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let url = format!("http://{gw_http}/hello/e2e");
    let load = tokio::spawn(load::run(Call::Get(url), 200, Duration::from_secs(10)));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let victim = hellos.remove(1);
    let pid = victim.0.id();
    let killed = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    drop(victim);
    let report = load.await.expect("load");
    println!("SIGKILL under load: {report}");
    assert_eq!(report.failed, 0, "failed GETs");
    assert_eq!(
        report.by_instance.len(),
        3,
        "every instance answered before the kill"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// The README's client commands answer `--help` and refuse what they cannot
/// use with the reason and the usage (exit 64), instead of a transport
/// error for `--help` taken as a URL.
#[test]
fn the_example_clients_explain_their_arguments() {
    for bin in ["echo-via-gateway", "echo-client"] {
        let run = |args: &[&str]| {
            let out = Command::new(binaries::path(bin))
                .args(args)
                .output()
                .unwrap_or_else(|e| panic!("run {bin}: {e}"));
            let text = String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr);
            (out.status.code(), text)
        };
        let (code, text) = run(&["--help"]);
        assert_eq!(code, Some(0), "{bin} --help: {text}");
        assert!(text.starts_with(&format!("Usage: {bin} ")), "{text}");
        for (args, reason) in [
            (&["localhost:8080"][..], "is not a URL like http://"),
            (
                &["http://127.0.0.1:1", "many"][..],
                "`many` is not a number",
            ),
            (&["--verbose"][..], "unknown flag --verbose"),
        ] {
            let (code, text) = run(args);
            assert_eq!(code, Some(64), "{bin} {args:?}: {text}");
            assert!(
                text.contains(reason) && text.contains("Usage:"),
                "{bin} {args:?}: {text}"
            );
        }
    }
}
