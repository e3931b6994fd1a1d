//! The Switchyard balancer: traffic policy for every service, streamed to
//! whoever sends traffic, so nobody asks it anything on the request path.
//!
//! # Layout
//!
//! - [`config`]: process settings and the per-service policy file.
//! - [`state`]: the services someone asked about, reporters, the registry view.
//! - [`service`]: one service: endpoints, policy, outlier state, assignment.
//! - [`outlier`]: outlier detection (consecutive failures, success rate).
//! - [`grpc`]: the tonic service; [`admin`]: `/api/services`.
//! - [`testing`]: a real balancer in-process on port 0, for tests.
//!
//! The pick algorithms live in `switchyard_client::balance`, shared with the
//! gateway and SDK clients.

pub mod admin;
pub mod config;
pub mod grpc;
pub mod outlier;
pub mod service;
pub mod state;
pub mod testing;

use std::{sync::Arc, time::Duration};

use switchyard_client::{Discovery, Session, Target, instance, pb::Protocol};
use switchyard_proto::balancer::v1::balancer_server::BalancerServer;
use switchyard_runtime::{Readiness, SharedClock, admin as runtime_admin, auth::Tokens};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::Config;

use crate::{config::ServicesFile, state::Balancer};

/// The balancer's bound sockets.
#[derive(Debug)]
pub struct Listeners {
    /// gRPC.
    pub grpc: TcpListener,
    /// HTTP admin.
    pub http: TcpListener,
}

/// Why the balancer could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A setting turned out unusable at start.
    #[error("{0}")]
    Config(#[from] switchyard_runtime::ConfigError),
    /// A listener failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The gRPC server failed.
    #[error("grpc server: {0}")]
    Grpc(#[from] tonic::transport::Error),
    /// Reflection could not be built.
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
                    !config.operator_tokens.is_empty(),
                ),
            )
            .await?,
        })
    }
}

fn target(config: &Config) -> Result<Target, switchyard_runtime::ConfigError> {
    let token = (!config.registry_token.is_empty()).then_some(config.registry_token.as_str());
    let files = config.mtls_files()?;
    Target::new(&config.registry, token)
        .and_then(|t| t.with_tls(files.as_ref()))
        .map_err(|e| switchyard_runtime::ConfigError::new("registry", e))
}

/// Runs the balancer until `shutdown`; then it announces DRAINING,
/// deregisters, ends its streams and returns.
pub async fn serve(
    config: Config,
    listeners: Listeners,
    clock: SharedClock,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    let file = ServicesFile::load(&config.services_file)?;
    let grpc_addr = listeners.grpc.local_addr()?;
    let advertised = switchyard_runtime::advertise::choose(
        &config.advertise_addr,
        &config.advertise_cidr,
        grpc_addr.port(),
        grpc_addr,
    )
    .map_err(|e| switchyard_runtime::ConfigError::new("advertise_addr", e))?;
    let id = switchyard_client::instance_id(&config.instance_id, &advertised);
    let balancer = Balancer::new(id.clone(), file, config.report_interval, clock.clone());
    let tokens = Arc::new(Tokens::new(&[], &config.operator_tokens, true));
    if tokens.disabled() {
        tracing::warn!("no operator tokens: anyone may report load and set policies");
    }

    let readiness = Readiness::waiting_for(["registry"]);
    let discovery = Discovery::start(
        target(&config)?,
        Vec::new(),
        config.lease_ttl,
        clock.clone(),
    );
    tokio::spawn(follow_registry(
        discovery,
        balancer.clone(),
        readiness.clone(),
        shutdown.clone(),
    ));
    tokio::spawn(ticker(
        balancer.clone(),
        clock,
        config.report_interval,
        shutdown.clone(),
    ));
    let session = config.register_self.then(|| {
        let target = target(&config)?;
        let s = Session::start(target, config.lease_ttl);
        s.register(instance(
            "switchyard-balancer",
            &id,
            &advertised,
            Protocol::Grpc,
        ));
        Ok::<_, switchyard_runtime::ConfigError>(s)
    });
    let session = session.transpose()?;

    let http_addr = listeners.http.local_addr()?;
    let tls = switchyard_runtime::tls::server(config.mtls_files()?.as_ref())?;
    let grpc = grpc_server(
        balancer.clone(),
        tokens,
        listeners.grpc,
        tls,
        shutdown.clone(),
    )?;
    let router = runtime_admin::router(readiness).merge(admin::router(balancer.clone()));
    let http = tokio::spawn(runtime_admin::serve(
        listeners.http,
        router,
        shutdown.clone().cancelled_owned(),
    ));
    tracing::info!(grpc = %grpc_addr, http = %http_addr, %advertised, id = %balancer.id(), "balancer serving");

    shutdown.cancelled().await;
    if let Some(s) = session {
        s.shutdown(Duration::from_millis(500)).await;
    }
    let stopped =
        tokio::time::timeout(config.shutdown_timeout, async { (grpc.await, http.await) }).await;
    match stopped {
        Ok((Ok(Err(e)), _)) => Err(e.into()),
        Ok((_, Ok(Err(e)))) => Err(e.into()),
        Ok(_) => Ok(()),
        Err(_) => {
            tracing::warn!("shutdown timeout passed with streams still open");
            Ok(())
        }
    }
}

async fn follow_registry(
    discovery: Discovery,
    balancer: Arc<Balancer>,
    readiness: Readiness,
    shutdown: CancellationToken,
) {
    let mut changes = discovery.changes();
    loop {
        let view = changes.borrow_and_update().clone();
        if view.authoritative {
            readiness.done("registry");
        }
        balancer.apply_view(view);
        tokio::select! {
            () = shutdown.cancelled() => return,
            changed = changes.changed() => if changed.is_err() { return },
        }
    }
}

async fn ticker(
    balancer: Arc<Balancer>,
    clock: SharedClock,
    interval: Duration,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = clock.sleep(interval) => {}
        }
        balancer.tick();
        balancer.roll_counters();
    }
}

fn grpc_server(
    balancer: Arc<Balancer>,
    tokens: Arc<Tokens>,
    listener: TcpListener,
    tls: Option<switchyard_runtime::tls::ServerTls>,
    shutdown: CancellationToken,
) -> Result<tokio::task::JoinHandle<Result<(), tonic::transport::Error>>, ServeError> {
    let service = BalancerServer::new(grpc::BalancerService::new(
        balancer,
        tokens,
        shutdown.clone(),
    ));
    let keepalive = (Duration::from_secs(10), Duration::from_secs(5));
    Ok(switchyard_runtime::grpc::spawn(
        service,
        &[switchyard_proto::FILE_DESCRIPTOR_SET],
        listener,
        tls,
        keepalive,
        shutdown,
    )?)
}
