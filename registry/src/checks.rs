//! Active health checks: gRPC health, HTTP GET, TCP connect.
//!
//! One task per checked instance, started when it registers with a check and
//! stopped when it leaves or its check changes. Results are thresholded
//! (`unhealthy_threshold` failures, `healthy_threshold` passes) and written
//! beside the lifecycle state, never instead of it (alibaba/nacos#2031).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError, Weak},
    time::Duration,
};

use tokio::task::AbortHandle;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::{
    model::{CheckKind, Health, HealthCheck, InstanceSpec, Key},
    state::Registry,
};

/// The running checks.
#[derive(Debug)]
pub(crate) struct Checks {
    registry: Weak<Registry>,
    running: Mutex<HashMap<Key, (Arc<InstanceSpec>, AbortHandle)>>,
}

// === impl Checks ===

impl Checks {
    pub(crate) fn new(registry: Weak<Registry>) -> Self {
        Self {
            registry,
            running: Mutex::new(HashMap::new()),
        }
    }

    /// Starts, restarts or stops the check of `key` to match `spec`.
    pub(crate) fn sync(&self, key: &Key, spec: Option<Arc<InstanceSpec>>) {
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
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
        let task = rt.spawn(run(self.registry.clone(), key.clone(), spec.clone(), check));
        running.insert(key.clone(), (spec, task.abort_handle()));
    }

    /// Stops every check.
    pub(crate) fn stop_all(&self) {
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        for (_, (_, handle)) in running.drain() {
            handle.abort();
        }
    }
}

async fn run(registry: Weak<Registry>, key: Key, spec: Arc<InstanceSpec>, check: HealthCheck) {
    let mut passes = 0u32;
    let mut failures = 0u32;
    let mut current = Health::Unknown;
    let mut interval = tokio::time::interval(check.interval);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
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
            let Some(registry) = registry.upgrade() else {
                return;
            };
            registry.set_health(&key, &spec, next, detail);
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
