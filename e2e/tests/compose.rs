//! End-to-end on the compose stack, broken on purpose, under bounded steady
//! load through the gateway. Scenarios run one after another on one stack
//! (so this runs with its own harness); each reports its counts, and the run
//! ends with the line `N passed, M failed`.
//!
//! Needs Docker, docker-compose and the images of `deploy/build.sh` (the
//! README's test command builds them first). It fails loudly without them.

use std::{
    panic::AssertUnwindSafe,
    time::{Duration, Instant},
};

use std::time::SystemTime;

use switchyard_e2e::{
    compose::{Compose, run},
    load::{self, Call, Report},
};
use switchyard_proto::registry::v1::{self as pb, registry_client::RegistryClient};
use switchyard_tls::{
    ClientTls, Identity,
    dev::{DevCa, Leaf},
};
use tonic::transport::Endpoint;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

type Scenario = fn(&Compose, &tokio::runtime::Runtime);

const RATE: u32 = 200;

fn main() {
    let compose = Compose::new();
    switchyard_e2e::compose::require_images(&["registry", "balancer", "gateway", "hello", "echo"]);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    println!("bringing the stack up (project {})", compose.project);
    compose.dc(&["down", "--remove-orphans", "-v"]);
    compose.dc(&["up", "-d"]);
    compose.wait_healthy(Duration::from_secs(180));
    let scenarios: [(&str, Scenario); 14] = [
        // First, on the stack as `deploy/up.sh` leaves it, as a newcomer
        // tries it (the next scenario checks the same after a load phase).
        (
            "sequential requests are shared, a new replica's within 5 s",
            sequential_share,
        ),
        ("every replica gets traffic, gRPC works", every_replica),
        ("the seed's Flask sketch calls work as written", seed_api),
        (
            "every gRPC port takes mutual TLS with the stack's CA only",
            mtls_ports,
        ),
        (
            "a service's identity registers its own service only",
            identity_rights,
        ),
        (
            "every certificate renewed under load fails no request",
            certificates_renewed,
        ),
        ("a scaled-up replica gets requests", scale_up),
        ("docker kill of one hello and one echo", kill),
        ("docker stop of a replica drains gracefully", stop),
        ("registry killed and started again", registry_restart),
        ("balancers killed", balancers_killed),
        ("docker pause of a replica", pause),
        ("a replica cut off the data network", disconnect),
        ("down leaves nothing behind", down),
    ];
    let (mut passed, mut failed) = (0, 0);
    for (name, scenario) in scenarios {
        println!("--- {name}");
        let started = Instant::now();
        match std::panic::catch_unwind(AssertUnwindSafe(|| scenario(&compose, &rt))) {
            Ok(()) => {
                passed += 1;
                println!(
                    "test {name} ... ok ({:.1}s)",
                    started.elapsed().as_secs_f64()
                );
            }
            Err(_) => {
                failed += 1;
                println!("test {name} ... FAILED");
            }
        }
    }
    let _ = std::panic::catch_unwind(|| compose.dc(&["down", "--remove-orphans", "-v"]));
    println!("{passed} passed, {failed} failed");
    if failed > 0 {
        std::process::exit(1);
    }
}

fn hello_url(c: &Compose) -> String {
    format!("{}/hello/e2e", c.gateway())
}

/// GETs and gRPC calls at the same time while `during` runs `after` into the load.
fn load_with(
    c: &Compose,
    rt: &tokio::runtime::Runtime,
    calls: &[Call],
    secs: u64,
    after: Duration,
    during: impl FnOnce(),
) -> Vec<Report> {
    let handles: Vec<_> = calls
        .iter()
        .map(|call| rt.spawn(load::run(call.clone(), RATE, Duration::from_secs(secs))))
        .collect();
    std::thread::sleep(after);
    during();
    let reports: Vec<Report> = handles
        .into_iter()
        .map(|h| rt.block_on(h).expect("load task"))
        .collect();
    for (call, r) in calls.iter().zip(&reports) {
        println!("    {call:?}: {r}");
    }
    let _ = c;
    reports
}

/// The instance that answered, from the hello example's JSON.
fn instance_of(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body).unwrap_or_default()["instance"]
        .as_str()
        .unwrap_or("?")
        .to_string()
}

/// `n` sequential GETs of `/hello/sequential`: answers per instance.
fn sequential(c: &Compose, n: u32) -> std::collections::BTreeMap<String, u32> {
    let mut counts = std::collections::BTreeMap::<String, u32>::new();
    for _ in 0..n {
        let (code, body) =
            switchyard_e2e::compose::request(c.gateway_port, "GET", "/hello/sequential", None, "");
        assert_eq!(code, 200, "{body}");
        *counts.entry(instance_of(&body)).or_default() += 1;
    }
    counts
}

/// Issue 17's fair spread: each of the two hello replicas has 35-65 %.
fn assert_shared(counts: &std::collections::BTreeMap<String, u32>, n: u32) {
    assert_eq!(counts.len(), 2, "both replicas: {counts:?}");
    for (id, count) in counts {
        assert!(
            (35..=65).contains(&(count * 100 / n)),
            "{id} had {count} of {n}: {counts:?}"
        );
    }
}

fn every_replica(c: &Compose, rt: &tokio::runtime::Runtime) {
    let reports = load_with(
        c,
        rt,
        &[Call::Get(hello_url(c)), Call::Grpc(c.gateway())],
        10,
        Duration::ZERO,
        || {},
    );
    assert_eq!(reports[0].failed + reports[1].failed, 0);
    assert_eq!(reports[0].by_instance.len(), 2, "both hello replicas");
    assert_eq!(reports[1].by_instance.len(), 3, "all three echo replicas");
    // After the load each replica's estimate is its peak under load, which
    // peak EWMA alone would hold for about 30 s; a member that falls behind
    // is probed within 25 ms and its peak replaced (`balance::PROBE_FIRST`),
    // so sequential traffic is shared again at once (5 s allowed).
    let ended = Instant::now();
    let counts = loop {
        let counts = sequential(c, 100);
        let fair = counts.len() == 2 && counts.values().all(|n| (35..=65).contains(n));
        if fair || ended.elapsed() > Duration::from_secs(5) {
            break counts;
        }
    };
    println!(
        "    100 sequential GETs {:.1}s after the load: {counts:?}",
        ended.elapsed().as_secs_f64()
    );
    assert_shared(&counts, 100);
}

/// The three calls of the sketch this project grew from, as its readers
/// would type them: register with `service_name`, call a service through
/// the gateway at `/api/service/<name>`, deregister with DELETE.
fn seed_api(c: &Compose, _rt: &tokio::runtime::Runtime) {
    use switchyard_e2e::compose::request;
    let registry = c.registry_http_port;
    let (code, body) = request(
        registry,
        "POST",
        "/api/register",
        Some("dev-register-token"),
        r#"{"service_name":"seed","instance_id":"s1","address":"127.0.0.1:9000"}"#,
    );
    println!("    POST /api/register: {code} {body}");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"lease_id\""), "{body}");
    let (code, body) = request(c.gateway_port, "GET", "/api/service/hello", None, "");
    println!("    GET /api/service/hello: {code} {body}");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"service\":\"hello\""), "{body}");
    let (code, body) = request(
        registry,
        "DELETE",
        "/api/deregister",
        Some("dev-operator-token"),
        r#"{"service_name":"seed"}"#,
    );
    println!("    DELETE /api/deregister: {code} {body}");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"removed\":1"), "{body}");
    let listed = switchyard_e2e::compose::get(registry, "/api/services/seed");
    assert!(listed.contains("\"instances\":[]"), "{listed}");
    // The example answers its own name with and without the slash (an empty
    // 404 from it read as the gateway failing).
    for path in ["/hello", "/hello/"] {
        let (code, body) = request(c.gateway_port, "GET", path, None, "");
        assert_eq!(code, 200, "{path}: {body}");
        assert!(
            body.contains(&format!("\"path\":\"{path}\"")),
            "{path}: {body}"
        );
    }
}

/// `hello` scaled to `n` replicas, the rest as the stack runs them (never
/// recreating a running container: compose 1.29 breaks on that).
fn scale_hello(c: &Compose, n: u32) {
    let hello = format!("hello={n}");
    c.dc(&[
        "up",
        "-d",
        "--no-recreate",
        "--scale",
        &hello,
        "--scale",
        "echo=3",
        "--scale",
        "balancer=2",
    ]);
}

/// The instance ids the registry lists for `hello`.
fn hello_ids(c: &Compose) -> std::collections::BTreeSet<String> {
    let body = switchyard_e2e::compose::get(c.registry_http_port, "/api/services/hello");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    v["instances"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|i| i["instance_id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Light traffic, as a newcomer tries it: one request after another is
/// shared between the two hello replicas (peak EWMA's strict comparison
/// once sent 39 of 40 to one), and a replica added with `--scale` gets
/// such requests within 5 s of registering.
fn sequential_share(c: &Compose, _rt: &tokio::runtime::Runtime) {
    use switchyard_e2e::compose::request;
    let path = "/hello/sequential";
    let counts = sequential(c, 100);
    println!("    100 sequential GETs: {counts:?}");
    assert_shared(&counts, 100);

    let before = hello_ids(c);
    scale_hello(c, 3);
    let deadline = Instant::now() + Duration::from_secs(60);
    let new = loop {
        let now = hello_ids(c);
        if let Some(id) = now.difference(&before).next() {
            break id.clone();
        }
        assert!(
            Instant::now() < deadline,
            "the new replica registers within 60 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let registered = Instant::now();
    let served = loop {
        let (_, body) = request(c.gateway_port, "GET", path, None, "");
        // The instance id is the replica's advertised address.
        if instance_of(&body) == new {
            break registered.elapsed();
        }
        assert!(
            registered.elapsed() < Duration::from_secs(30),
            "{new} never served"
        );
    };
    println!(
        "    the new replica {new} served a sequential GET {:.2}s after registering",
        served.as_secs_f64()
    );
    scale_hello(c, 2);
    c.wait_healthy(Duration::from_secs(60));
    assert!(served < Duration::from_secs(5), "within 5 s");
}

fn scale_up(c: &Compose, rt: &tokio::runtime::Runtime) {
    let before = c.containers("hello").len();
    let scaled = std::sync::Mutex::new(None);
    let reports = load_with(
        c,
        rt,
        &[Call::Get(hello_url(c))],
        40,
        Duration::from_secs(2),
        || {
            scale_hello(c, 3);
            *scaled.lock().expect("lock") = Some(Instant::now());
        },
    );
    assert_eq!(c.containers("hello").len(), before + 1);
    let r = &reports[0];
    assert_eq!(r.failed, 0);
    assert_eq!(r.by_instance.len(), 3, "the new replica answered");
    // The load started 2 s before scaling; the newest instance is the one first seen last.
    let newest = r.first_seen.values().max().copied().unwrap_or_default();
    let delay = newest.saturating_sub(Duration::from_secs(2));
    println!(
        "    the new replica answered {:.1}s after scaling",
        delay.as_secs_f64()
    );
    assert!(delay < Duration::from_secs(30), "within 30 s");
    // Back to two (compose stops the newest one, gracefully).
    scale_hello(c, 2);
}

fn kill(c: &Compose, rt: &tokio::runtime::Runtime) {
    let hello = c.containers("hello")[0].clone();
    let echo = c.containers("echo")[0].clone();
    let reports = load_with(
        c,
        rt,
        &[Call::Get(hello_url(c)), Call::Grpc(c.gateway())],
        15,
        Duration::from_secs(3),
        || {
            c.docker("kill", &hello);
            c.docker("kill", &echo);
        },
    );
    // Restore first, so that a failure here does not cascade into the next scenarios.
    c.docker("start", &hello);
    c.docker("start", &echo);
    c.wait_healthy(Duration::from_secs(60));
    assert_eq!(reports[0].failed, 0, "failed GETs");
    assert_eq!(reports[1].failed, 0, "failed unary gRPC calls");
}

fn stop(c: &Compose, rt: &tokio::runtime::Runtime) {
    let hello = c.containers("hello")[1].clone();
    let echo = c.containers("echo")[1].clone();
    let post = format!("{}/hello/orders", c.gateway());
    let reports = load_with(
        c,
        rt,
        &[
            Call::Get(hello_url(c)),
            Call::Post(post),
            Call::Grpc(c.gateway()),
        ],
        15,
        Duration::from_secs(3),
        || {
            let (a, b) = (hello.clone(), echo.clone());
            let t = std::thread::spawn(move || run("docker", &["stop", &b]));
            run("docker", &["stop", &a]);
            let _ = t.join();
        },
    );
    c.docker("start", &hello);
    c.docker("start", &echo);
    c.wait_healthy(Duration::from_secs(60));
    for r in &reports {
        assert_eq!(r.failed, 0, "graceful drain costs nothing, POSTs included");
    }
}

fn registry_restart(c: &Compose, rt: &tokio::runtime::Runtime) {
    let registry = c.containers("registry")[0].clone();
    let reports = load_with(
        c,
        rt,
        &[Call::Get(hello_url(c)), Call::Grpc(c.gateway())],
        20,
        Duration::from_secs(3),
        || {
            c.docker("kill", &registry);
            std::thread::sleep(Duration::from_secs(5));
            c.docker("start", &registry);
        },
    );
    assert_eq!(reports[0].failed + reports[1].failed, 0);
    // The view is whole again: every instance re-registered.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let body = switchyard_e2e::compose::get(c.registry_http_port, "/api/services");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        let count = |name: &str| {
            v["services"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|s| s["service"] == name)
                .and_then(|s| s["instances"].as_u64())
                .unwrap_or(0)
        };
        if count("hello") == 2
            && count("echo") == 3
            && count("switchyard-balancer") == 2
            && count("switchyard-gateway") == 1
        {
            println!("    the registry lists every instance again");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the registry's view is not whole again: {body}"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn balancers_killed(c: &Compose, rt: &tokio::runtime::Runtime) {
    let balancers = c.containers("balancer");
    let calls = [Call::Get(hello_url(c)), Call::Grpc(c.gateway())];
    let one = load_with(c, rt, &calls, 12, Duration::from_secs(3), || {
        c.docker("kill", &balancers[0])
    });
    let both = load_with(c, rt, &calls, 12, Duration::from_secs(3), || {
        c.docker("kill", &balancers[1])
    });
    // Restore first, so that a failure here does not cascade into the next scenarios.
    for b in &balancers {
        c.docker("start", b);
    }
    c.wait_healthy(Duration::from_secs(60));
    assert_eq!(one[0].failed + one[1].failed, 0, "one balancer killed");
    assert_eq!(both[0].failed + both[1].failed, 0, "both balancers killed");
}

fn data_ip(c: &Compose, container: &str) -> String {
    let format = format!(
        "{{{{(index .NetworkSettings.Networks \"{}\").IPAddress}}}}",
        c.network("data")
    );
    let (_, ip) = run("docker", &["inspect", "-f", &format, container]);
    ip.trim().to_string()
}

fn ejected_in_gateway(c: &Compose, ip: &str) -> bool {
    let body = switchyard_e2e::compose::get(c.admin_port, "/api/services");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    v["services"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
        .any(|e| {
            e["address"]
                .as_str()
                .is_some_and(|a| a.starts_with(&format!("{ip}:")))
                && e["ejected"] == true
        })
}

/// Waits until the gateway sees both hello replicas, none ejected, so a
/// scenario starts from a healthy stack (an earlier one may have left an
/// ejection running).
fn settle(c: &Compose) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let body = switchyard_e2e::compose::get(c.admin_port, "/api/services");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        let hello: Vec<serde_json::Value> = v["services"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|s| s["service"] == "hello")
            .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
            .collect();
        if hello.len() == 2 && hello.iter().all(|e| e["ejected"] == false) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the gateway did not settle: {body}"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Breaks hello replica `which` with `break_it` under GET load (none may
/// fail), checks it shows as ejected while it is still registered (a paused
/// replica's lease lapses after its TTL), counts POST failures meanwhile,
/// then mends it.
fn broken_replica(
    c: &Compose,
    rt: &tokio::runtime::Runtime,
    which: usize,
    break_it: &dyn Fn(&str),
    mend: &dyn Fn(&str),
) {
    settle(c);
    let victim = c.containers("hello")[which].clone();
    let ip = data_ip(c, &victim);
    let seen = std::sync::atomic::AtomicBool::new(false);
    let reports = load_with(
        c,
        rt,
        &[Call::Get(hello_url(c))],
        15,
        Duration::from_secs(3),
        || {
            break_it(&victim);
            let deadline = Instant::now() + Duration::from_secs(8);
            while Instant::now() < deadline {
                if ejected_in_gateway(c, &ip) {
                    seen.store(true, std::sync::atomic::Ordering::SeqCst);
                    println!(
                        "    ejected in the gateway after {:.1}s",
                        8.0 - (deadline - Instant::now()).as_secs_f64()
                    );
                    break;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        },
    );
    assert_eq!(reports[0].failed, 0, "failed GETs");
    assert!(
        seen.load(std::sync::atomic::Ordering::SeqCst),
        "the replica shows as ejected in the gateway's /api/services"
    );
    let posts = load_with(
        c,
        rt,
        &[Call::Post(format!("{}/hello/orders", c.gateway()))],
        5,
        Duration::ZERO,
        || {},
    );
    println!(
        "    POSTs meanwhile: {} of {} failed (reported, not asserted: a POST that reached a stalled replica is not retried)",
        posts[0].failed, posts[0].sent
    );
    mend(&victim);
    c.wait_healthy(Duration::from_secs(60));
}

fn pause(c: &Compose, rt: &tokio::runtime::Runtime) {
    broken_replica(c, rt, 0, &|id| c.docker("pause", id), &|id| {
        c.docker("unpause", id)
    });
}

fn disconnect(c: &Compose, rt: &tokio::runtime::Runtime) {
    let net = c.network("data");
    let ip = std::sync::Mutex::new(String::new());
    // The other replica: the one just paused may still be avoided for its
    // latency estimate, and would then see no traffic to break.
    broken_replica(
        c,
        rt,
        1,
        &|id| {
            *ip.lock().expect("lock") = data_ip(c, id);
            let (ok, _) = run("docker", &["network", "disconnect", &net, id]);
            assert!(ok, "disconnect");
        },
        &|id| {
            let addr = ip.lock().expect("lock").clone();
            let (ok, _) = run("docker", &["network", "connect", "--ip", &addr, &net, id]);
            assert!(ok, "reconnect");
        },
    );
}

fn down(c: &Compose, _rt: &tokio::runtime::Runtime) {
    c.dc(&["down", "--remove-orphans", "-v"]);
    let (containers, networks) = c.leftovers();
    assert!(containers.is_empty(), "containers left: {containers}");
    assert!(networks.is_empty(), "networks left: {networks}");
}

// --- mutual TLS (issue 21) ---

/// The gRPC ports of the stack: the registry's published one, and every
/// registry and balancer container's on the control network.
fn grpc_ports(c: &Compose) -> Vec<(String, Identity)> {
    let published = c
        .env
        .iter()
        .find(|(k, _)| *k == "SWITCHYARD_REGISTRY_GRPC_PORT")
        .map_or("17000".to_string(), |(_, v)| v.clone());
    let mut ports = vec![(format!("127.0.0.1:{published}"), Identity::Registry)];
    for (service, port, identity) in [
        ("registry", 7000, Identity::Registry),
        ("balancer", 7010, Identity::Balancer),
    ] {
        for id in c.containers(service) {
            let (_, ip) = run(
                "docker",
                &[
                    "inspect",
                    "-f",
                    "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}",
                    &id,
                ],
            );
            let ip = ip.split_whitespace().next().unwrap_or_default().to_string();
            assert!(!ip.is_empty(), "{service} {id} has an address");
            ports.push((format!("{ip}:{port}"), identity.clone()));
        }
    }
    ports
}

/// A health check at `addr`, over TLS with `tls` or in plaintext.
async fn health(addr: &str, tls: Option<&ClientTls>, expect: &Identity) -> Result<(), String> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(3));
    let channel = switchyard_tls::channel(endpoint, tls, Some(expect.clone()))
        .await
        .map_err(|e| format!("connect: {e:?}"))?;
    HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Another CA's operator, and the stack's CA's operator expired a day ago.
fn strangers(c: &Compose) -> (ClientTls, ClientTls) {
    let dir = c.certs.with_file_name("e2e-certs-strangers");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let other = DevCa::generate("another CA").expect("CA");
    std::fs::write(dir.join("ca.pem"), c.certs.join("ca.pem").pipe_read()).expect("ca");
    let mut wrong_ca = other
        .issue(&Leaf::new(Identity::Operator, &[], 30))
        .expect("issue")
        .write(&dir, "wrong-ca")
        .expect("write");
    wrong_ca.ca = c.certs.join("ca.pem");
    let ours = DevCa::from_pem(
        &c.certs.join("ca.pem").pipe_read(),
        &c.certs.join("ca-key.pem").pipe_read(),
    )
    .expect("the stack's CA");
    let day = Duration::from_secs(86_400);
    let expired = ours
        .issue(&Leaf {
            identity: Identity::Operator,
            names: vec![],
            not_before: SystemTime::now() - 30 * day,
            not_after: SystemTime::now() - day,
        })
        .expect("issue")
        .write(&dir, "expired")
        .expect("write");
    (
        ClientTls::load(&wrong_ca).expect("wrong-ca"),
        ClientTls::load(&expired).expect("expired"),
    )
}

trait PipeRead {
    fn pipe_read(&self) -> String;
}

impl PipeRead for std::path::PathBuf {
    fn pipe_read(&self) -> String {
        std::fs::read_to_string(self).unwrap_or_else(|e| panic!("{}: {e}", self.display()))
    }
}

fn mtls_ports(c: &Compose, rt: &tokio::runtime::Runtime) {
    let operator = ClientTls::load(&c.cert_files("operator")).expect("operator");
    let (wrong_ca, expired) = strangers(c);
    let ports = grpc_ports(c);
    assert!(
        ports.len() >= 4,
        "the registry and both balancers: {ports:?}"
    );
    rt.block_on(async {
        for (addr, identity) in &ports {
            health(addr, Some(&operator), identity)
                .await
                .unwrap_or_else(|e| panic!("{addr}: the operator is refused: {e}"));
            for (who, tls) in [("plaintext", None), ("another CA", Some(&wrong_ca)), ("an expired certificate", Some(&expired))] {
                let outcome = health(addr, tls, identity).await;
                assert!(outcome.is_err(), "{addr}: {who} was let in");
            }
            println!("    {addr} ({identity}): the operator in; plaintext, another CA and an expired certificate refused");
        }
    });
}

fn identity_rights(c: &Compose, rt: &tokio::runtime::Runtime) {
    let hello = ClientTls::load(&c.cert_files("hello")).expect("hello");
    let (addr, _) = grpc_ports(c).remove(0);
    rt.block_on(async {
        let endpoint = Endpoint::from_shared(format!("http://{addr}")).expect("endpoint");
        let channel = switchyard_tls::channel(endpoint, Some(&hello), Some(Identity::Registry))
            .await
            .expect("hello connects");
        let mut registry = RegistryClient::new(channel);
        let spec = |service: &str| pb::InstanceSpec {
            service: service.into(),
            instance_id: "e2e-identity".into(),
            address: "10.9.9.9:80".into(),
            protocol: pb::Protocol::Http1 as i32,
            ..Default::default()
        };
        let register = |service| pb::RegisterRequest {
            lease_id: 0,
            ttl_seconds: 10,
            instances: vec![spec(service)],
        };
        let err = registry
            .register(register("echo"))
            .await
            .expect_err("hello registers echo");
        assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err}");
        assert!(
            err.message().contains("spiffe://switchyard/service/hello"),
            "{err}"
        );
        let own = registry
            .register(register("hello"))
            .await
            .expect("hello registers hello")
            .into_inner();
        registry
            .revoke_lease(pb::RevokeLeaseRequest {
                lease_id: own.lease_id,
            })
            .await
            .expect("hello ends its own lease");
    });
    let (code, body) = switchyard_e2e::compose::request(
        c.registry_http_port,
        "GET",
        "/api/services/echo",
        None,
        "",
    );
    assert_eq!(code, 200, "{body}");
    assert!(
        !body.contains("e2e-identity"),
        "nothing of the refused call happened: {body}"
    );
}

/// The served certificate's SHA-256, as `openssl` reads it off the port.
fn served_fingerprint(c: &Compose, addr: &str) -> String {
    let operator = c.cert_files("operator");
    let script = format!(
        "openssl s_client -connect {addr} -CAfile {} -cert {} -key {} -alpn h2 </dev/null 2>/dev/null | openssl x509 -noout -fingerprint -sha256",
        operator.ca.display(),
        operator.cert.display(),
        operator.key.display()
    );
    run("sh", &["-c", &script]).1.trim().to_string()
}

fn file_fingerprint(path: &std::path::Path) -> String {
    let (_, out) = run(
        "openssl",
        &[
            "x509",
            "-noout",
            "-fingerprint",
            "-sha256",
            "-in",
            &path.display().to_string(),
        ],
    );
    out.trim().to_string()
}

fn certificates_renewed(c: &Compose, rt: &tokio::runtime::Runtime) {
    let registry = grpc_ports(c).remove(0).0;
    let before = served_fingerprint(c, &registry);
    assert_eq!(
        before,
        file_fingerprint(&c.cert_files("registry").cert),
        "the registry serves its file"
    );
    let calls = [Call::Get(hello_url(c)), Call::Grpc(c.gateway())];
    let reports = load_with(c, rt, &calls, 12, Duration::from_secs(3), || {
        c.make_certs(&["--renew"]);
    });
    for r in &reports {
        assert_eq!(
            r.failed, 0,
            "no request failed while every certificate was renewed: {r}"
        );
    }
    let after = file_fingerprint(&c.cert_files("registry").cert);
    assert_ne!(before, after, "--renew made a new registry certificate");
    assert_eq!(
        served_fingerprint(c, &registry),
        after,
        "new handshakes get the new certificate"
    );
    // Components connect again with their new certificates: a balancer
    // restarted now registers and is followed by the gateway.
    let balancer = c.containers("balancer").remove(0);
    c.docker("restart", &balancer);
    c.wait_healthy(Duration::from_secs(60));
    let calls = [Call::Get(hello_url(c))];
    let reports = load_with(c, rt, &calls, 5, Duration::from_secs(1), || {});
    assert_eq!(reports[0].failed, 0, "{}", reports[0]);
}
