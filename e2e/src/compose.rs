//! `docker-compose` and `docker` for the stack under test. The project name
//! and host ports are the test's own, so a developer's stack is left alone.

use std::{
    io::Read,
    path::PathBuf,
    process::{Command, Output, Stdio},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

/// How long one `docker` command may take before it is killed and counted
/// as failed: a daemon that stops answering fails the run with a message
/// instead of hanging it.
const DOCKER_LIMIT: Duration = Duration::from_secs(90);

/// How long one `docker-compose` command may take (`up` of the whole stack
/// takes about 20 s here).
const COMPOSE_LIMIT: Duration = Duration::from_secs(300);

/// Set when a command had to be killed: the daemon is not answering, and
/// every later command fails at once rather than waiting out its limit.
static STUCK: AtomicBool = AtomicBool::new(false);

/// The stack under test.
#[derive(Debug, Clone)]
pub struct Compose {
    /// Compose project name.
    pub project: String,
    /// Host port of the gateway.
    pub gateway_port: u16,
    /// Host port of the gateway's admin.
    pub admin_port: u16,
    /// Host port of the registry's HTTP API (the first replica's).
    pub registry_http_port: u16,
    /// The compose file, relative to the repository.
    pub file: &'static str,
    /// Settings for the file's `${...}`: ports and subnets of its own, so a
    /// developer's stack can run beside it.
    pub env: Vec<(&'static str, String)>,
    /// The stack's development CA and certificates (`deploy/certs.sh` with
    /// a directory of the tests' own, not the developer's `deploy/certs`).
    pub certs: PathBuf,
}

/// Output of a command: success, stdout. A command still running after
/// `DOCKER_LIMIT` (90 s) is killed and reported as failed.
pub fn run(program: &str, args: &[&str]) -> (bool, String) {
    let out = bounded(Command::new(program).args(args), DOCKER_LIMIT).unwrap_or_else(|e| {
        panic!("cannot run {program}: {e} (Docker and docker-compose are required for these tests)")
    });
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        eprintln!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    (out.status.success(), text)
}

/// Panics, saying what to do, unless the Docker engine answers and every
/// `switchyard/<image>:dev` exists.
pub fn require_images(images: &[&str]) {
    let (docker_ok, _) = run("docker", &["info", "--format", "{{.ServerVersion}}"]);
    assert!(
        docker_ok,
        "the Docker engine is not reachable: these end-to-end tests need it"
    );
    for image in images {
        let (ok, _) = run(
            "docker",
            &["image", "inspect", &format!("switchyard/{image}:dev")],
        );
        assert!(
            ok,
            "image switchyard/{image}:dev is missing: run deploy/build.sh first (the README's test command does)"
        );
    }
}

/// Runs `cmd` to the end, or kills it after `limit`; its stdout and stderr
/// are read on threads so a chatty command cannot block on a full pipe.
/// (`Command::output` has no deadline, and a Docker daemon that stops
/// answering would hang the run until CI's own limit.)
fn bounded(cmd: &mut Command, limit: Duration) -> std::io::Result<Output> {
    if STUCK.load(Ordering::Relaxed) {
        return Err(std::io::Error::other(
            "not run: an earlier docker command had to be killed",
        ));
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut buf);
            }
            buf
        })
    };
    let stdout = drain(child.stdout.take().map(|p| Box::new(p) as _));
    let stderr = drain(child.stderr.take().map(|p| Box::new(p) as _));
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            STUCK.store(true, Ordering::Relaxed);
            return Err(std::io::Error::other(format!(
                "still running after {limit:?}, killed (is the Docker daemon answering?)"
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Ok(Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    })
}

// === impl Compose ===

impl Compose {
    /// The test's stack.
    pub fn new() -> Self {
        let env = [
            ("SWITCHYARD_REGISTRY_GRPC_PORT", "17000"),
            ("SWITCHYARD_REGISTRY_HTTP_PORT", "17001"),
        ];
        Self::with(
            "switchyarde2e",
            "docker-compose.yml",
            (18080, 18081, 17001),
            ("172.31.10.0/24", "172.31.11.0/24"),
            &env,
        )
    }

    /// The highly available stack (`docker-compose.ha.yml`): registry
    /// replicas on host ports 17100/17101, 17200/17201 and 17300/17301, etcd
    /// members on 127.0.0.1:17379-17381, sessions of `session_ttl` seconds,
    /// `history` events kept for resumes.
    pub fn ha(session_ttl: u32, history: usize) -> Self {
        let ttl = session_ttl.to_string();
        let history = history.to_string();
        let env = [
            ("SWITCHYARD_REGISTRY1_GRPC_PORT", "17100"),
            ("SWITCHYARD_REGISTRY1_HTTP_PORT", "17101"),
            ("SWITCHYARD_REGISTRY2_GRPC_PORT", "17200"),
            ("SWITCHYARD_REGISTRY2_HTTP_PORT", "17201"),
            ("SWITCHYARD_REGISTRY3_GRPC_PORT", "17300"),
            ("SWITCHYARD_REGISTRY3_HTTP_PORT", "17301"),
            ("SWITCHYARD_ETCD1_PORT", "17379"),
            ("SWITCHYARD_ETCD2_PORT", "17380"),
            ("SWITCHYARD_ETCD3_PORT", "17381"),
            ("SWITCHYARD_ETCD_SESSION_TTL_SECS", ttl.as_str()),
            ("SWITCHYARD_HISTORY_LIMIT", history.as_str()),
        ];
        Self::with(
            "switchyarde2eha",
            "docker-compose.ha.yml",
            (18180, 18181, 17101),
            ("172.31.12.0/24", "172.31.13.0/24"),
            &env,
        )
    }

    fn with(
        project: &str,
        file: &'static str,
        (gateway_port, admin_port, registry_http_port): (u16, u16, u16),
        (control, data): (&str, &str),
        env: &[(&'static str, &str)],
    ) -> Self {
        let mut all: Vec<(&'static str, String)> = vec![
            ("SWITCHYARD_GATEWAY_PORT", gateway_port.to_string()),
            ("SWITCHYARD_GATEWAY_ADMIN_PORT", admin_port.to_string()),
            ("SWITCHYARD_CONTROL_SUBNET", control.to_string()),
            ("SWITCHYARD_DATA_SUBNET", data.to_string()),
        ];
        all.extend(env.iter().map(|(k, v)| (*k, v.to_string())));
        let certs = crate::binaries::root().join("target/e2e-certs");
        all.push(("SWITCHYARD_CERTS", certs.display().to_string()));
        let compose = Self {
            project: project.into(),
            gateway_port,
            admin_port,
            registry_http_port,
            file,
            env: all,
            certs,
        };
        compose.make_certs(&[]);
        compose
    }

    /// Runs `deploy/certs.sh` for this stack's directory (`--renew` makes
    /// new component certificates from the same CA); panics on failure.
    pub fn make_certs(&self, args: &[&str]) {
        let root = crate::binaries::root();
        let mut cmd = Command::new(root.join("deploy/certs.sh"));
        cmd.args(args)
            .env("SWITCHYARD_CERTS", &self.certs)
            .current_dir(&root);
        let out =
            bounded(&mut cmd, DOCKER_LIMIT).unwrap_or_else(|e| panic!("deploy/certs.sh: {e}"));
        assert!(
            out.status.success(),
            "deploy/certs.sh: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The files of one certificate of this stack (`operator`, `hello`...).
    pub fn cert_files(&self, name: &str) -> switchyard_tls::Files {
        switchyard_tls::Files::in_dir(&self.certs, name)
    }

    /// Runs docker-compose for this project; panics on failure.
    pub fn dc(&self, args: &[&str]) -> String {
        let root = crate::binaries::root();
        let file = root.join(self.file);
        let mut cmd = Command::new("docker-compose");
        cmd.current_dir(&root)
            .args([
                "-p",
                &self.project,
                "-f",
                file.to_str().unwrap_or(self.file),
            ])
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (*k, v.as_str())));
        let out = bounded(&mut cmd, COMPOSE_LIMIT).unwrap_or_else(|e| {
            panic!(
                "docker-compose {}: {e} (docker-compose is required for these tests)",
                args.join(" ")
            )
        });
        assert!(
            out.status.success(),
            "docker-compose {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Container ids of a service, in container-number order.
    pub fn containers(&self, service: &str) -> Vec<String> {
        let (_, out) = run(
            "docker",
            &[
                "ps",
                "-a",
                "--filter",
                &format!("label=com.docker.compose.project={}", self.project),
                "--filter",
                &format!("label=com.docker.compose.service={service}"),
                "--format",
                "{{.Label \"com.docker.compose.container-number\"}} {{.ID}}",
            ],
        );
        let mut rows: Vec<(u32, String)> = out
            .lines()
            .filter_map(|l| {
                l.split_once(' ')
                    .and_then(|(n, id)| Some((n.parse().ok()?, id.to_string())))
            })
            .collect();
        rows.sort();
        rows.into_iter().map(|(_, id)| id).collect()
    }

    /// Waits until every container is healthy.
    pub fn wait_healthy(&self, timeout: Duration) {
        let start = Instant::now();
        loop {
            let (_, out) = run(
                "docker",
                &[
                    "ps",
                    "-a",
                    "--filter",
                    &format!("label=com.docker.compose.project={}", self.project),
                    "--format",
                    "{{.ID}}",
                ],
            );
            let ids: Vec<&str> = out.lines().collect();
            let healthy = !ids.is_empty()
                && ids.iter().all(|id| {
                    let (_, s) = run("docker", &["inspect", "-f", "{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}", id]);
                    s.trim() == "healthy"
                });
            if healthy {
                return;
            }
            assert!(
                start.elapsed() < timeout,
                "stack not healthy within {timeout:?}"
            );
            std::thread::sleep(Duration::from_secs(1));
        }
    }

    /// `docker <verb> <id>`.
    pub fn docker(&self, verb: &str, id: &str) {
        let (ok, _) = run("docker", &[verb, id]);
        assert!(ok, "docker {verb} {id} failed");
    }

    /// The name of a compose network of this project (compose 1.29 and v2
    /// agree for a project name of plain letters and digits).
    pub fn network(&self, name: &str) -> String {
        format!("{}_{name}", self.project)
    }

    /// What is left of the project: containers and networks.
    pub fn leftovers(&self) -> (String, String) {
        let label = format!("label=com.docker.compose.project={}", self.project);
        let (_, containers) = run(
            "docker",
            &["ps", "-a", "--filter", &label, "--format", "{{.Names}}"],
        );
        let (_, networks) = run(
            "docker",
            &["network", "ls", "--filter", &label, "--format", "{{.Name}}"],
        );
        (containers.trim().to_string(), networks.trim().to_string())
    }

    /// The gateway's URL from the host.
    pub fn gateway(&self) -> String {
        format!("http://127.0.0.1:{}", self.gateway_port)
    }
}

impl Default for Compose {
    fn default() -> Self {
        Self::new()
    }
}

/// A plain blocking HTTP GET of `http://127.0.0.1:{port}{path}`; the body,
/// or empty on any error. (No curl: the CI machine may not have it.)
pub fn get(port: u16, path: &str) -> String {
    request(port, "GET", path, None, "").1
}

/// A plain blocking HTTP/1.0 request to `127.0.0.1:{port}` with an optional
/// bearer token and a JSON body: (status, body), or (0, "") on any error.
pub fn request(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, String) {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return (0, String::new());
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let head = format!(
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    if s.write_all(head.as_bytes()).is_err() || s.write_all(body.as_bytes()).is_err() {
        return (0, String::new());
    }
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}
