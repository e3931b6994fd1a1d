//! Active health checks: gRPC health, HTTP GET, TCP connect.
//!
//! One task per checked instance, started when it registers with a check and
//! stopped when it leaves or its check changes. Results are thresholded
//! (`unhealthy_threshold` failures, `healthy_threshold` passes) and written
//! beside the lifecycle state, never instead of it (alibaba/nacos#2031).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::task::AbortHandle;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::model::{CheckKind, Health, HealthCheck, InstanceSpec, Key};

/// Where check results go. The checks know nothing of the registry: it
/// gives them a sink (and tests can give another).
pub(crate) trait Sink: Send + Sync + std::fmt::Debug {
    /// Records that the instance at `key`, checked as `spec`, is now
    /// `health`; false when it no longer has that spec, which ends the check.
    fn health(&self, key: &Key, spec: &Arc<InstanceSpec>, health: Health, detail: String) -> bool;
    /// Whether the instance at `key` still has `spec` (asked every round,
    /// so a check whose instance left ends even if no result changes).
    fn wanted(&self, key: &Key, spec: &Arc<InstanceSpec>) -> bool;
}

/// The running checks.
#[derive(Debug)]
pub(crate) struct Checks {
    sink: Arc<dyn Sink>,
    running: Mutex<HashMap<Key, (Arc<InstanceSpec>, AbortHandle)>>,
}

// === impl Checks ===

impl Checks {
    pub(crate) fn new(sink: Arc<dyn Sink>) -> Self {
        Self {
            sink,
            running: Mutex::new(HashMap::new()),
        }
    }

    /// Starts, restarts or stops the check of `key` to match `spec`.
    pub(crate) fn sync(&self, key: &Key, spec: Option<Arc<InstanceSpec>>) {
        let mut running = switchyard_time::sync::lock(&self.running);
        if let (Some((current, _)), Some(next)) = (running.get(key), &spec) {
            if current.address == next.address && current.health_check == next.health_check {
                return;
            }
        }
        if let Some((_, handle)) = running.remove(key) {
            handle.abort();
        }
        let Some(spec) = spec else {
            return;
        };
        let Some(check) = spec.health_check.clone() else {
            return;
        };
        // Outside a tokio runtime (unit tests of the state) checks cannot run.
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let task = rt.spawn(run(self.sink.clone(), key.clone(), spec.clone(), check));
        running.insert(key.clone(), (spec, task.abort_handle()));
    }

    /// Stops every check.
    pub(crate) fn stop_all(&self) {
        let mut running = switchyard_time::sync::lock(&self.running);
        for (_, (_, handle)) in running.drain() {
            handle.abort();
        }
    }
}

async fn run(sink: Arc<dyn Sink>, key: Key, spec: Arc<InstanceSpec>, check: HealthCheck) {
    let mut passes = 0u32;
    let mut failures = 0u32;
    let mut current = Health::Unknown;
    let mut interval = tokio::time::interval(check.interval);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        if !sink.wanted(&key, &spec) {
            return;
        }
        let outcome =
            match tokio::time::timeout(check.timeout, once(&spec.address, &check.kind)).await {
                Ok(result) => result,
                Err(_) => Err(format!("no answer within {:?}", check.timeout)),
            };
        let (next, detail) = match outcome {
            Ok(()) => {
                passes += 1;
                failures = 0;
                let flip = passes >= check.healthy_threshold;
                (if flip { Health::Healthy } else { current }, String::new())
            }
            Err(detail) => {
                failures += 1;
                passes = 0;
                let flip = failures >= check.unhealthy_threshold;
                (if flip { Health::Unhealthy } else { current }, detail)
            }
        };
        if next != current {
            tracing::info!(instance = %key, health = ?next, %detail, "health changed");
            current = next;
            if !sink.health(&key, &spec, next, detail) {
                return;
            }
        }
    }
}

async fn once(address: &str, kind: &CheckKind) -> Result<(), String> {
    match kind {
        CheckKind::Tcp => tokio::net::TcpStream::connect(address)
            .await
            .map(drop)
            .map_err(|e| format!("connect: {e}")),
        CheckKind::Http { path } => {
            let addr = tokio::net::lookup_host(address)
                .await
                .map_err(|e| format!("resolve: {e}"))?
                .next()
                .ok_or_else(|| "resolve: no address".to_string())?;
            switchyard_runtime::probe::probe(addr, path, Duration::from_secs(3600))
                .await
                .map(drop)
                .map_err(|e| e.to_string())
        }
        CheckKind::Grpc { service } => {
            let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
                .map_err(|e| e.to_string())?;
            let channel = endpoint
                .connect()
                .await
                .map_err(|e| format!("connect: {e}"))?;
            let answer = HealthClient::new(channel)
                .check(HealthCheckRequest {
                    service: service.clone(),
                })
                .await
                .map_err(|s| format!("grpc: {}", s.code()))?;
            match answer.into_inner().status() {
                ServingStatus::Serving => Ok(()),
                other => Err(format!("grpc health: {other:?}")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{
        collections::BTreeMap,
        sync::atomic::{AtomicBool, Ordering},
    };

    use super::*;
    use crate::model::{Protocol, State};

    /// Records results; `wanted` says what a test sets.
    #[derive(Debug, Default)]
    struct Recorder {
        results: Mutex<Vec<Health>>,
        unwanted: AtomicBool,
    }

    impl Sink for Recorder {
        fn health(&self, _: &Key, _: &Arc<InstanceSpec>, health: Health, _: String) -> bool {
            self.results.lock().expect("lock").push(health);
            true
        }

        fn wanted(&self, _: &Key, _: &Arc<InstanceSpec>) -> bool {
            !self.unwanted.load(Ordering::Relaxed)
        }
    }

    fn spec(address: String) -> InstanceSpec {
        InstanceSpec {
            service: "s".into(),
            instance_id: "i".into(),
            address,
            protocol: Protocol::Http1,
            metadata: BTreeMap::new(),
            tags: Vec::new(),
            weight: 100,
            zone: String::new(),
            version: String::new(),
            state: State::Serving,
            health_check: Some(HealthCheck {
                kind: CheckKind::Tcp,
                interval: Duration::from_millis(20),
                timeout: Duration::from_millis(200),
                unhealthy_threshold: 1,
                healthy_threshold: 1,
            }),
            tls: false,
        }
    }

    #[tokio::test]
    async fn results_go_to_the_sink_and_a_check_no_longer_wanted_ends() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let spec = spec(listener.local_addr().expect("addr").to_string());
        let key = Key::of(&spec);
        let recorder = Arc::new(Recorder::default());
        let checks = Checks::new(recorder.clone());
        checks.sync(&key, Some(Arc::new(spec)));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while recorder.results.lock().expect("lock").is_empty() {
            assert!(tokio::time::Instant::now() < deadline, "no result");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(
            *recorder.results.lock().expect("lock"),
            vec![Health::Healthy]
        );

        // The instance leaves without its check being stopped (a sync that
        // raced it): the check asks, hears no, and ends.
        recorder.unwanted.store(true, Ordering::Relaxed);
        let handle = checks
            .running
            .lock()
            .expect("lock")
            .get(&key)
            .map(|(_, h)| h.clone())
            .expect("running");
        while !handle.is_finished() {
            assert!(tokio::time::Instant::now() < deadline, "the check goes on");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        drop(listener);
    }
}
