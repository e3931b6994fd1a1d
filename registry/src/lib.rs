//! The Switchyard registry: which service instances exist, their state and
//! metadata. It knows nothing of traffic.
//!
//! # Layout
//!
//! - [`model`]: domain types (`Instance`, `InstanceSpec`, `Event`, ...).
//! - [`state`]: leases, instances, revisions, history; the one lock.
//! - [`hub`]: fan-out of events to watchers with bounded buffers.
//! - [`brake`]: the mass-expiry brake.
//! - `checks`: active health checks (private).
//! - [`store`]: durable operator overrides behind a trait.
//! - [`grpc`], [`convert`]: the tonic service and prost conversions.
//! - [`http`]: the JSON API.
//! - [`dashboard`]: the dashboard at `/ui/` and what it reads: server-sent
//!   events from the Watch, a service's history, the operator's override.
//! - [`watch`]: the task behind each Watch stream.
//! - [`validate`], [`error`], [`config`].
//! - [`testing`]: the real registry in-process on port 0, for tests.
//!
//! [`serve`] runs it all on bound listeners until a shutdown token fires.

pub mod brake;
mod checks;
pub mod config;
pub mod convert;
pub mod dashboard;
pub mod error;
pub mod grpc;
pub mod http;
pub mod hub;
pub mod model;
pub mod state;
pub mod store;
pub mod testing;
pub mod validate;
pub mod watch;

use std::{path::Path, sync::Arc, time::Duration};

use switchyard_proto::registry::v1::registry_server::RegistryServer;
use switchyard_runtime::{Readiness, SharedClock, admin, auth::Tokens};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::{Config, StoreKind};

use crate::{
    brake::BrakeConfig,
    state::{CoreConfig, EtcdSettings, Registry},
    store::{FileStore, MemoryStore, Store},
};

/// The registry's bound sockets.
#[derive(Debug)]
pub struct Listeners {
    /// gRPC.
    pub grpc: TcpListener,
    /// HTTP (JSON API and admin).
    pub http: TcpListener,
}

/// Why the registry could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The durable store could not be opened.
    #[error("data_dir: {0}")]
    Store(String),
    /// A listener failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The gRPC server failed.
    #[error("grpc server: {0}")]
    Grpc(#[from] tonic::transport::Error),
    /// The TLS files could not be used.
    #[error("{0}")]
    Tls(#[from] switchyard_runtime::ConfigError),
    /// Reflection could not be built from the descriptors.
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
}

// === impl Listeners ===

impl Listeners {
    /// Binds the addresses of `config`.
    pub async fn bind(config: &Config) -> std::io::Result<Self> {
        Ok(Self {
            grpc: switchyard_runtime::cli::listen("grpc_listen", config.grpc_listen).await?,
            http: switchyard_runtime::cli::listen(
                "http_listen",
                switchyard_runtime::cli::guarded_addr(
                    "http_listen",
                    config.http_listen,
                    !config.register_tokens.is_empty() || !config.operator_tokens.is_empty(),
                ),
            )
            .await?,
        })
    }
}

fn open_store(config: &Config) -> Result<Arc<dyn Store>, ServeError> {
    if config.data_dir.is_empty() {
        tracing::warn!("data_dir is not set: operator overrides will not survive a restart");
        return Ok(Arc::new(MemoryStore::default()));
    }
    let store = FileStore::open(Path::new(&config.data_dir))
        .map_err(|e| ServeError::Store(e.to_string()))?;
    Ok(Arc::new(store))
}

/// Joins the registry's replicas on etcd, trying again (with a warning)
/// until etcd answers; `None` when shut down first.
async fn join_etcd(
    config: &Config,
    core: CoreConfig,
    clock: SharedClock,
    shutdown: CancellationToken,
) -> Option<Arc<Registry>> {
    let replica = if config.replica_name.is_empty() {
        let host = std::env::var("HOSTNAME")
            .ok()
            .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty() && !h.contains('/'))
            .unwrap_or_else(|| "registry".into());
        format!("{host}-{:08x}", rand::random::<u32>())
    } else {
        config.replica_name.clone()
    };
    let settings = EtcdSettings {
        endpoints: config.etcd_endpoints.clone(),
        prefix: config.etcd_prefix.clone(),
        replica,
        session_ttl: Duration::from_secs(u64::from(config.etcd_session_ttl_secs)),
        tls: config.etcd_tls(),
    };
    loop {
        let joined = Registry::on_etcd(
            core.clone(),
            clock.clone(),
            settings.clone(),
            shutdown.clone(),
        );
        match joined.await {
            Ok(registry) => {
                tracing::info!(replica = %settings.replica, endpoints = ?settings.endpoints, "joined the registry on etcd");
                return Some(registry);
            }
            Err(e) => {
                tracing::warn!(error = %e, endpoints = ?settings.endpoints, "etcd: cannot join yet; trying again")
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return None,
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// Runs the registry until `shutdown` is cancelled, then stops accepting,
/// ends watch streams cleanly and returns within `shutdown_timeout`.
pub async fn serve(
    config: Config,
    listeners: Listeners,
    clock: SharedClock,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    let core = CoreConfig {
        warm_up: config.warm_up,
        history_limit: config.history_limit,
        watch_buffer: config.watch_buffer,
        brake: BrakeConfig {
            min_leases: config.brake_min_leases,
            percent: config.brake_percent,
            window: config.brake_window,
            max_hold: config.brake_max_hold,
        },
    };
    let registry = match config.store {
        StoreKind::File => Registry::new(core, clock.clone(), open_store(&config)?)
            .map_err(|e| ServeError::Store(e.to_string()))?,
        StoreKind::Etcd => match join_etcd(&config, core, clock.clone(), shutdown.clone()).await {
            Some(registry) => registry,
            None => return Ok(()),
        },
    };
    let tokens = Arc::new(Tokens::new(
        &config.register_tokens,
        &config.operator_tokens,
        config.open_reads,
    ));
    if tokens.disabled() {
        tracing::warn!("no tokens configured: anyone may register, drain and deregister");
    }
    let readiness = Readiness::waiting_for(["warm_up"]);
    tokio::spawn(expiry_loop(
        registry.clone(),
        clock,
        readiness.clone(),
        shutdown.clone(),
    ));
    tokio::spawn(metrics_loop(registry.clone(), shutdown.clone()));

    // The bound addresses, not the configured ones: a port 0 is told.
    let (grpc_addr, http_addr) = (listeners.grpc.local_addr()?, listeners.http.local_addr()?);
    let grpc = grpc_server(
        &config,
        registry.clone(),
        tokens.clone(),
        listeners.grpc,
        shutdown.clone(),
    )?;
    let router = admin::router(readiness)
        .merge(http::router(
            registry.clone(),
            tokens.clone(),
            config.limits(),
        ))
        .merge(dashboard::router(
            registry.clone(),
            tokens,
            config.progress_interval,
            shutdown.clone(),
        ));
    let http = tokio::spawn(admin::serve(
        listeners.http,
        router,
        shutdown.clone().cancelled_owned(),
    ));
    tracing::info!(grpc = %grpc_addr, http = %http_addr, epoch = %registry.epoch(), "registry serving");

    shutdown.cancelled().await;
    tracing::info!("shutting down: ending watch streams");
    registry.stop_checks();
    let stopped = tokio::time::timeout(config.shutdown_timeout, async {
        let grpc = grpc.await;
        let http = http.await;
        (grpc, http)
    })
    .await;
    match stopped {
        Ok((Ok(Err(e)), _)) => return Err(e.into()),
        Ok((_, Ok(Err(e)))) => return Err(e.into()),
        Ok(_) => {}
        Err(_) => tracing::warn!("shutdown timeout passed with connections still open"),
    }
    Ok(())
}

fn grpc_server(
    config: &Config,
    registry: Arc<Registry>,
    tokens: Arc<Tokens>,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<tokio::task::JoinHandle<Result<(), tonic::transport::Error>>, ServeError> {
    let service = grpc::RegistryService::new(
        registry,
        tokens,
        config.limits(),
        config.progress_interval,
        shutdown.clone(),
    );
    let server = RegistryServer::new(service)
        .max_decoding_message_size(config.max_message_bytes)
        .max_encoding_message_size(config.max_message_bytes.max(64 * 1024 * 1024));
    let keepalive = (
        config.http2_keepalive_interval,
        config.http2_keepalive_timeout,
    );
    let tls = config.tls()?;
    Ok(switchyard_runtime::grpc::spawn(
        server,
        &[switchyard_proto::FILE_DESCRIPTOR_SET],
        listener,
        tls,
        keepalive,
        shutdown,
    )?)
}

async fn expiry_loop(
    registry: Arc<Registry>,
    clock: SharedClock,
    readiness: Readiness,
    shutdown: CancellationToken,
) {
    let mut warm = false;
    loop {
        // Not `list()`: that summarises every instance under the lock (with
        // the metrics loop's, 1.9 % of a replica's CPU at 40,000 instances
        // in bench/run.sh registry-ha under perf), to read one flag.
        if !warm && !registry.warming_up() {
            readiness.done("warm_up");
            warm = true;
        }
        let deadline = registry.next_deadline(Duration::from_secs(1));
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = clock.sleep_until(deadline) => {
                registry.tick().await;
                registry.expire_overrides().await;
            }
        }
    }
}

async fn metrics_loop(registry: Arc<Registry>, shutdown: CancellationToken) {
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let l = registry.list();
        for s in &l.services {
            for state in ["STARTING", "SERVING", "DRAINING", "OUT_OF_SERVICE"] {
                let n = s.by_state.get(state).copied().unwrap_or(0);
                metrics::gauge!("switchyard_registry_instances", "service" => s.service.clone(), "state" => state)
                    .set(f64::from(n));
            }
        }
        metrics::gauge!("switchyard_registry_leases").set(f64::from(l.leases));
        metrics::gauge!("switchyard_registry_brake_engaged").set(if l.brake.engaged.is_some() {
            1.0
        } else {
            0.0
        });
        metrics::gauge!("switchyard_registry_brake_held_leases")
            .set(f64::from(l.brake.held_leases));
        metrics::gauge!("switchyard_registry_revision").set(l.position.revision as f64);
    }
}
