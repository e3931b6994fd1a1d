//! Real etcd processes on loopback, for tests: one member, or a cluster of
//! several, each with its own data directory and ports, killed when
//! dropped. Needs Debian's `etcd` (package `etcd-server`) on the PATH or in
//! `SWITCHYARD_ETCD`; `.ci/run` installs it.

use std::{
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::Client;

/// One etcd member process.
#[derive(Debug)]
pub struct Member {
    /// Its name in the cluster.
    pub name: String,
    /// Its client URL (`http://127.0.0.1:port`).
    pub client_url: String,
    peer_url: String,
    dir: PathBuf,
    child: Option<Child>,
    args: Vec<String>,
}

/// A cluster of members started together.
#[derive(Debug)]
pub struct Cluster {
    /// The members, in start order.
    pub members: Vec<Member>,
}

/// The etcd binary: `SWITCHYARD_ETCD`, else `etcd` on the PATH.
fn binary() -> String {
    std::env::var("SWITCHYARD_ETCD").unwrap_or_else(|_| "etcd".into())
}

/// A port free now on 127.0.0.1.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

// === impl Cluster ===

impl Cluster {
    /// Starts `n` members forming one new cluster, with extra etcd flags,
    /// and waits until it answers with a leader (30 s at most).
    pub async fn start(n: usize, extra: &[&str]) -> Self {
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let mut members: Vec<Member> = (0..n)
            .map(|i| {
                let name = format!("m{i}");
                let dir = std::env::temp_dir().join(format!(
                    "switchyard-etcd-{}-{stamp}-{name}",
                    std::process::id()
                ));
                Member {
                    client_url: format!("http://127.0.0.1:{}", free_port()),
                    peer_url: format!("http://127.0.0.1:{}", free_port()),
                    name,
                    dir,
                    child: None,
                    args: Vec::new(),
                }
            })
            .collect();
        let initial: Vec<String> = members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url))
            .collect();
        let initial = initial.join(",");
        for m in &mut members {
            m.args = [
                "--name",
                &m.name,
                "--data-dir",
                &m.dir.display().to_string(),
                "--listen-client-urls",
                &m.client_url,
                "--advertise-client-urls",
                &m.client_url,
                "--listen-peer-urls",
                &m.peer_url,
                "--initial-advertise-peer-urls",
                &m.peer_url,
                "--initial-cluster",
                &initial,
                "--initial-cluster-state",
                "new",
                "--initial-cluster-token",
                &format!("switchyard-test-{stamp}"),
                // A busy two-core machine: Raft's defaults (100 ms, 1 s)
                // flap under test load.
                "--heartbeat-interval",
                "250",
                "--election-timeout",
                "2500",
                "--log-level",
                "error",
            ]
            .iter()
            .map(ToString::to_string)
            .chain(extra.iter().map(ToString::to_string))
            .collect();
            m.spawn();
        }
        let cluster = Self { members };
        cluster.wait_ready(Duration::from_secs(30)).await;
        cluster
    }

    /// Every member's client URL.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client_url.clone()).collect()
    }

    /// A client over every member.
    pub fn client(&self) -> Client {
        Client::new(&self.endpoints()).expect("client")
    }

    /// Waits until every running member reports a leader.
    pub async fn wait_ready(&self, within: Duration) {
        let start = Instant::now();
        for m in self.members.iter().filter(|m| m.child.is_some()) {
            let client = Client::new(std::slice::from_ref(&m.client_url)).expect("client");
            loop {
                if client.status().await.is_ok_and(|s| s.leader != 0) {
                    break;
                }
                assert!(
                    start.elapsed() < within,
                    "etcd member {} at {} has no leader within {within:?}",
                    m.name,
                    m.client_url
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

// === impl Member ===

impl Member {
    /// Starts (or restarts) the process with its data directory kept.
    pub fn spawn(&mut self) {
        let child = Command::new(binary())
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start `{}`: {e} (install Debian's etcd-server, or set SWITCHYARD_ETCD)",
                    binary()
                )
            });
        self.child = Some(child);
    }

    /// SIGKILLs the process (its data stays for [`spawn`](Self::spawn)).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whether its process runs.
    pub fn running(&self) -> bool {
        self.child.is_some()
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
