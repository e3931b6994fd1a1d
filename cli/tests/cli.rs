//! The `switchyard` binary against a real registry and gateway (in-process,
//! on loopback ports): what an operator types, what it prints, its exit
//! codes, and that refused commands change nothing.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use switchyard_client::pb::{self, registry_client::RegistryClient};
use switchyard_runtime::ManualClock;

const OP: &str = "op-token";
const REG: &str = "reg-token";

struct Stack {
    registry: switchyard_registry::testing::Running,
    url: String,
    dir: std::path::PathBuf,
}

async fn stack() -> Stack {
    let mut cfg = switchyard_registry::testing::config();
    cfg.operator_tokens = vec![OP.into()];
    cfg.register_tokens = vec![REG.into()];
    cfg.open_reads = true;
    let registry = switchyard_registry::testing::start(cfg, ManualClock::new())
        .await
        .expect("registry");
    let url = registry.url();
    let mut c = RegistryClient::connect(url.clone()).await.expect("client");
    let spec = |service: &str, id: &str, zone: &str, tags: &[&str]| pb::InstanceSpec {
        service: service.into(),
        instance_id: id.into(),
        address: format!("10.0.0.{}:8080", id.len()),
        protocol: pb::Protocol::Http1 as i32,
        zone: zone.into(),
        tags: tags.iter().map(|t| t.to_string()).collect(),
        ..Default::default()
    };
    let mut req = tonic::Request::new(pb::RegisterRequest {
        lease_id: 0,
        ttl_seconds: 300,
        instances: vec![
            spec("hello", "h1", "a", &["v1"]),
            spec("hello", "h22", "b", &["v2"]),
            spec("echo", "e1", "a", &["v1"]),
        ],
    });
    req.metadata_mut().insert(
        "authorization",
        format!("Bearer {REG}").parse().expect("header"),
    );
    c.register(req).await.expect("register");
    let n: u64 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let dir = std::env::temp_dir().join(format!("sy-cli-{n}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    Stack { registry, url, dir }
}

/// Runs the binary with `args` (the stack file is none: only what is given
/// counts); (exit code, stdout, stderr).
fn run(s: &Stack, args: &[&str], token: Option<&str>) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_switchyard"));
    cmd.args(["--registry", &s.url, "--timeout", "5"])
        .args(args);
    cmd.env_clear()
        .env("SWITCHYARD_STACK", s.dir.join("none.env"))
        .current_dir(&s.dir);
    if let Some(t) = token {
        cmd.args(["--token", t]);
    }
    let out = cmd.output().expect("run switchyard");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn state_of(s: &Stack, service: &str, id: &str) -> Option<(i32, u32)> {
    let mut c = RegistryClient::connect(s.url.clone())
        .await
        .expect("client");
    let got = c
        .get_service(pb::GetServiceRequest {
            service: service.into(),
        })
        .await
        .expect("get")
        .into_inner();
    got.instances
        .iter()
        .find(|i| i.spec.as_ref().is_some_and(|x| x.instance_id == id))
        .map(|i| (i.state, i.weight))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_filter_and_print_tables_or_json() {
    let s = stack().await;
    let (code, out, err) = run(&s, &["services"], None);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("SERVICE"), "{out}");
    assert!(
        lines[1].starts_with("echo ") && lines[2].starts_with("hello "),
        "{out}"
    );
    assert_eq!(lines[2].split_whitespace().nth(1), Some("2"), "{out}");

    // Instance filters count matching instances only.
    let (code, out, _) = run(
        &s,
        &["services", "--zone", "a", "--tag", "v1", "-o", "json"],
        None,
    );
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    let counts: Vec<(String, u64)> = v["services"]
        .as_array()
        .expect("services")
        .iter()
        .map(|s| {
            (
                s["service"].as_str().unwrap_or("").to_string(),
                s["instances"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(counts, vec![("echo".into(), 1), ("hello".into(), 1)]);
    let (_, out, _) = run(&s, &["services", "--name", "ell", "-o", "json"], None);
    assert!(
        out.contains("\"hello\"") && !out.contains("\"echo\""),
        "{out}"
    );

    let (code, out, _) = run(&s, &["instances", "hello"], None);
    assert_eq!(code, 0);
    assert!(out.starts_with("INSTANCE"), "{out}");
    assert!(
        out.contains("h1") && out.contains("h22") && out.contains("serving"),
        "{out}"
    );
    let (_, out, _) = run(
        &s,
        &["instances", "hello", "--tag", "v2", "-o", "json"],
        None,
    );
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["instances"].as_array().map(Vec::len), Some(1), "{out}");
    assert_eq!(v["instances"][0]["instance_id"], "h22");
    assert_eq!(v["instances"][0]["zone"], "b");
    let left = v["instances"][0]["lease_remaining_seconds"]
        .as_i64()
        .unwrap_or(0);
    assert!((290..=300).contains(&left), "{out}");

    let (code, out, _) = run(&s, &["status", "-o", "json"], None);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["services"], 2);
    assert_eq!(v["instances"], 3);
    assert_eq!(v["authoritative"], true);
    assert_eq!(v["brake"]["engaged"], false);
    assert_eq!(v["replicas"][0]["store"], "file");
    assert_eq!(v["etcd"], serde_json::Value::Null);

    // Not found: exit 3, one line.
    let (code, _, err) = run(&s, &["instances", "nope"], None);
    assert_eq!(code, 3, "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("`nope`"), "{err}");
    s.registry.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overrides_need_the_operator_and_bad_input_changes_nothing() {
    let s = stack().await;
    let before = state_of(&s, "hello", "h1").await;
    // No token, a register token: refused (exit 1), nothing changed.
    for token in [None, Some(REG)] {
        let (code, _, err) = run(&s, &["drain", "hello", "h1"], token);
        assert_eq!(code, 1, "{token:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
    // Bad input: usage (2) from the CLI or the registry, one line naming it.
    for (args, names) in [
        (&["set-weight", "hello", "h1", "0"][..], "weight"),
        (&["set-weight", "hello", "h1", "many"][..], "many"),
        (&["set-state", "hello", "h1", "starting"][..], "starting"),
        (&["watch", "--since", "17"][..], "EPOCH:REVISION"),
        (&["drain", "hello", "h1", "--for", "soon"][..], "soon"),
        (&["drain", "hello", "h1", "--for", "40d"][..], "expires_in"),
        (&["drain", "hello", "h1", "--reason", "a\nb"][..], "reason"),
    ] {
        let (code, _, err) = run(&s, args, Some(OP));
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(names), "{args:?}: {err}");
    }
    let (code, _, err) = run(&s, &["drain", "hello", "nope"], Some(OP));
    assert_eq!(code, 3, "{err}");
    assert_eq!(state_of(&s, "hello", "h1").await, before);

    // The operator drains, weighs, clears, deregisters.
    let (code, out, err) = run(&s, &["drain", "hello", "h1"], Some(OP));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("hello/h1: draining"), "{out}");
    assert_eq!(
        state_of(&s, "hello", "h1").await.map(|x| x.0),
        Some(pb::State::Draining as i32)
    );
    let (code, _, _) = run(&s, &["set-weight", "hello", "h1", "7"], Some(OP));
    assert_eq!(code, 0);
    assert_eq!(state_of(&s, "hello", "h1").await.map(|x| x.1), Some(7));
    // A reason and an expiry, shown to whoever looks.
    let args = [
        "drain",
        "hello",
        "h22",
        "--reason",
        "disk swap",
        "--for",
        "30m",
    ];
    let (code, _, err) = run(&s, &args, Some(OP));
    assert_eq!(code, 0, "{err}");
    let (_, out, _) = run(&s, &["instances", "hello"], None);
    let line = out
        .lines()
        .find(|l| l.starts_with("h22"))
        .unwrap_or_default();
    assert!(
        line.contains("draining, 30m left: \"disk swap\"")
            || line.contains("draining, 29m left: \"disk swap\""),
        "{out}"
    );
    let (_, out, _) = run(
        &s,
        &["instances", "hello", "-o", "json", "--zone", "b"],
        None,
    );
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(
        v["instances"][0]["override"]["reason"], "disk swap",
        "{out}"
    );
    assert!(
        v["instances"][0]["override"]["expires_at"].is_string(),
        "{out}"
    );
    let (code, _, _) = run(&s, &["clear", "hello", "h1"], Some(OP));
    assert_eq!(code, 0);
    assert_eq!(state_of(&s, "hello", "h1").await, before);
    let (code, _, _) = run(&s, &["deregister", "hello", "h1"], Some(OP));
    assert_eq!(code, 0);
    assert_eq!(state_of(&s, "hello", "h1").await, None);
    s.registry.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_streams_changes_and_the_stack_file_stands_in_for_flags() {
    let s = stack().await;
    // Flags come from the stack file deploy/up.sh writes.
    let file = s.dir.join("stack.env");
    std::fs::write(
        &file,
        format!(
            "# written by deploy/up.sh\nSWITCHYARD_REGISTRY={}\nSWITCHYARD_TOKEN={OP}\n",
            s.url
        ),
    )
    .expect("stack file");
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["watch", "hello"])
        .env_clear()
        .env("SWITCHYARD_STACK", &file)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("watch");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let first = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("snapshot line");
    assert!(first.starts_with("snapshot (initial) at "), "{first}");
    // A drain made with no flag at all: the file's token.
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["drain", "hello", "h22"])
        .env_clear()
        .env("SWITCHYARD_STACK", &file)
        .output()
        .expect("drain");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let started = Instant::now();
    let seen = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(2))
            .expect("an event within 2 s");
        if line.contains("hello/h22") && line.contains("draining") {
            break line;
        }
    };
    assert!(started.elapsed() < Duration::from_secs(2), "{seen}");
    assert!(seen.split_whitespace().nth(1) == Some("put"), "{seen}");
    let _ = child.kill();
    let _ = child.wait();
    s.registry.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_show_the_gateways_view_and_each_balancers() {
    let s = stack().await;
    let mut bcfg = switchyard_balancer::testing::config(&s.url);
    bcfg.register_self = true;
    bcfg.registry_token = REG.into();
    let balancer = switchyard_balancer::testing::start(bcfg, ManualClock::new())
        .await
        .expect("balancer");
    let routes = s.dir.join("routes.toml");
    let file = "[[route]]\nname = \"hello\"\nservice = \"hello\"\npath_prefix = \"/hello/\"\n";
    std::fs::write(&routes, file).expect("routes");
    let gcfg = switchyard_gateway::testing::config(routes.to_str().expect("utf8"), &s.url);
    let gateway = switchyard_gateway::testing::start(gcfg)
        .await
        .expect("gateway");
    let admin = format!("http://{}", gateway.admin);
    let endpoints = |args: &[&str]| {
        let mut all = vec!["--gateway-admin", admin.as_str(), "endpoints"];
        all.extend_from_slice(args);
        run(&s, &all, None)
    };
    // The gateway follows the balancer's assignment once it found it.
    let started = Instant::now();
    let v = loop {
        balancer.advance(Duration::from_millis(200)).await;
        let (code, out, err) = endpoints(&["hello", "-o", "json"]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
        if code == 0 && v["gateway"]["source"] == "balancer" {
            break v;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "{code} {out} {err}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        v["gateway"]["endpoints"].as_array().map(Vec::len),
        Some(2),
        "{v}"
    );
    let b = &v["balancers"][0];
    assert!(b["error"].is_null(), "{v}");
    let ids: Vec<&str> = b["stats"]["endpoints"]
        .as_array()
        .expect("endpoints")
        .iter()
        .filter_map(|e| e["instance_id"].as_str())
        .collect();
    assert_eq!(ids, ["h1", "h22"], "{v}");
    assert!(b["stats"]["subscribers"].as_u64() >= Some(1), "{v}");

    let (code, out, _) = endpoints(&["hello"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("gateway: hello, policy "), "{out}");
    assert!(out.contains("\nbalancer "), "{out}");
    assert!(out.contains("EFFECTIVE"), "{out}");
    // A service nobody follows: not found.
    let (code, _, err) = endpoints(&["nobody"]);
    assert_eq!(code, 3, "{err}");
    gateway.stop().await.expect("gateway stops");
    balancer.stop.cancel();
    s.registry.stop().await.expect("stop");
}

/// `status` asks every replica given (HA: the stack file names three) and,
/// on the etcd store, shows etcd's members, leader, revision and size; a
/// replica that does not answer is a row saying so, not a failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_each_replica_and_etcd() {
    let etcd = switchyard_etcd::testing::Cluster::start(1, &[]).await;
    let mut replicas = Vec::new();
    for name in ["r1", "r2"] {
        let mut cfg = switchyard_registry::testing::config();
        cfg.store = switchyard_registry::StoreKind::Etcd;
        cfg.etcd_endpoints = etcd.endpoints();
        cfg.replica_name = name.into();
        replicas.push(
            switchyard_registry::testing::start(cfg, ManualClock::new())
                .await
                .expect("registry"),
        );
    }
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind")
        .local_addr()
        .expect("addr");
    let addresses = format!("{},{},http://{dead}", replicas[0].url(), replicas[1].url());
    let s = Stack {
        url: addresses,
        dir: std::env::temp_dir(),
        registry: replicas.remove(0),
    };
    let (code, out, err) = run(&s, &["status", "--timeout", "2", "-o", "json"], None);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    let names: Vec<&serde_json::Value> = v["replicas"]
        .as_array()
        .expect("replicas")
        .iter()
        .map(|r| &r["replica"])
        .collect();
    assert_eq!(
        names[..2],
        [&serde_json::json!("r1"), &serde_json::json!("r2")]
    );
    assert_eq!(v["replicas"][0]["store"], "etcd");
    assert!(v["replicas"][2]["error"].is_string(), "{out}");
    let members = v["etcd"]["members"].as_array().expect("members");
    assert_eq!(members.len(), 1, "{out}");
    assert_eq!(members[0]["leader"], true);
    assert_eq!(v["etcd"]["leader"], members[0]["id"]);
    assert!(v["etcd"]["revision"].as_i64().unwrap_or(0) > 0, "{out}");
    assert!(v["etcd"]["db_size"].as_i64().unwrap_or(0) > 0, "{out}");

    let (code, out, err) = run(&s, &["status", "--timeout", "2"], None);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.lines()
            .next()
            .unwrap_or_default()
            .starts_with("ADDRESS"),
        "{out}"
    );
    assert!(out.contains("unreachable"), "{out}");
    assert!(out.contains("etcd       revision"), "{out}");
    assert!(out.lines().any(|l| l.starts_with("MEMBER")), "{out}");
    for r in replicas {
        r.stop().await.expect("stop");
    }
    s.registry.stop().await.expect("stop");
}
