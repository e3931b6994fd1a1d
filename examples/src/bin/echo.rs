//! `echo`: the `echo.v1.Echo` gRPC service (unary, server streaming,
//! bidirectional), registered with the SDK, draining on SIGTERM.
//!
//! Run with: cargo run -p switchyard-examples --bin echo -- --listen 127.0.0.1:9100 --registry http://127.0.0.1:7000
//!
//! Same fault flags as `hello` (`--latency`, `--latency-jitter`,
//! `--fail-rate` answers UNAVAILABLE, `--exit-after`). `/readyz` is on
//! `--admin-listen` for `echo probe`.

use std::{net::SocketAddr, pin::Pin, process::ExitCode, sync::Arc, time::Duration};

use switchyard_client::pb::Protocol;
use switchyard_examples::{
    Faults,
    pb::{EchoRequest, EchoResponse, echo_server},
};
use switchyard_runtime::{
    ConfigError, Readiness, Settings, admin,
    cli::{self, About, AdminAddr, LogSettings},
    logging::LogFormat,
    settings::duration,
    tls::Files as TlsFiles,
};
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

switchyard_runtime::settings! {
    /// Settings of the echo example.
    struct Config {
        /// gRPC listen address.
        listen: SocketAddr = ([0, 0, 0, 0], 9100).into(),
        /// Admin listen address (/healthz, /readyz).
        admin_listen: SocketAddr = ([0, 0, 0, 0], 9101).into(),
        /// Registry addresses; empty runs unregistered.
        registry: Vec<String> = Vec::new(),
        /// Register token.
        registry_token: String = String::new(),
        /// CA certificate (PEM) for mutual TLS to the registry; with mtls_cert and mtls_key.
        mtls_ca: String = String::new(),
        /// This service's certificate (PEM), URI SAN spiffe://switchyard/service/echo.
        mtls_cert: String = String::new(),
        /// This service's private key (PEM).
        mtls_key: String = String::new(),
        /// Dial the registry in plaintext, without mtls_* files.
        plaintext: bool = false,
        /// Address to advertise (host:port).
        advertise_addr: String = String::new(),
        /// Advertise the local address inside this CIDR.
        advertise_cidr: String = String::new(),
        /// Instance id; empty uses the advertised address.
        instance_id: String = String::new(),
        /// Added latency per message.
        #[serde(with = "duration")]
        latency: Duration = Duration::ZERO,
        /// Extra random latency, up to this much.
        #[serde(with = "duration")]
        latency_jitter: Duration = Duration::ZERO,
        /// Share of calls answered UNAVAILABLE, 0 to 1.
        fail_rate: f64 = 0.0,
        /// Exit (like a crash) after this many calls; 0 never.
        exit_after: u64 = 0,
        /// Keep serving this long after SIGTERM while DRAINING spreads.
        #[serde(with = "duration")]
        drain_delay: Duration = Duration::from_secs(3),
        /// Log format: text or json.
        log_format: LogFormat = LogFormat::Text,
    }
}

impl Settings for Config {
    fn validate(&self) -> Result<(), ConfigError> {
        if !(0.0..=1.0).contains(&self.fail_rate) {
            return Err(ConfigError::new("fail_rate", "must be 0 to 1"));
        }
        let files = (&*self.mtls_ca, &*self.mtls_cert, &*self.mtls_key);
        switchyard_examples::check_registry_tls(&self.registry, files, self.plaintext)
    }
}

impl Config {
    fn mtls_files(&self) -> Result<Option<TlsFiles>, ConfigError> {
        switchyard_runtime::tls::files(&self.mtls_ca, &self.mtls_cert, &self.mtls_key)
    }
}

impl AdminAddr for Config {
    fn admin_listen(&self) -> SocketAddr {
        self.admin_listen
    }
}

impl LogSettings for Config {
    fn log_format(&self) -> LogFormat {
        self.log_format
    }
}

struct Echo {
    instance: String,
    faults: Arc<Faults>,
}

type Answers = Pin<Box<dyn Stream<Item = Result<EchoResponse, Status>> + Send>>;

impl Echo {
    fn answer(&self, message: String, index: u32) -> EchoResponse {
        EchoResponse {
            message,
            instance: self.instance.clone(),
            index,
        }
    }
}

#[tonic::async_trait]
impl echo_server::Echo for Echo {
    async fn unary(&self, req: Request<EchoRequest>) -> Result<Response<EchoResponse>, Status> {
        if !self.faults.apply().await {
            return Err(Status::unavailable("injected failure"));
        }
        Ok(Response::new(self.answer(req.into_inner().message, 0)))
    }

    type ServerStreamStream = Answers;

    async fn server_stream(&self, req: Request<EchoRequest>) -> Result<Response<Answers>, Status> {
        if !self.faults.apply().await {
            return Err(Status::unavailable("injected failure"));
        }
        let r = req.into_inner();
        let answers: Vec<_> = (0..r.count.max(1))
            .map(|i| Ok(self.answer(r.message.clone(), i)))
            .collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(answers))))
    }

    type BidiStream = Answers;

    async fn bidi(
        &self,
        req: Request<Streaming<EchoRequest>>,
    ) -> Result<Response<Answers>, Status> {
        let (instance, faults) = (self.instance.clone(), self.faults.clone());
        let mut index = 0;
        let out = req.into_inner().then(move |m| {
            let (instance, faults) = (instance.clone(), faults.clone());
            index += 1;
            let i = index - 1;
            async move {
                let m = m?;
                if !faults.apply().await {
                    return Err(Status::unavailable("injected failure"));
                }
                Ok(EchoResponse {
                    message: m.message,
                    instance,
                    index: i,
                })
            }
        });
        Ok(Response::new(Box::pin(out)))
    }
}

fn main() -> ExitCode {
    const ABOUT: About = About {
        name: "echo",
        version: env!("CARGO_PKG_VERSION"),
        summary: "example gRPC service echo.v1.Echo",
    };
    cli::main::<Config, _, _, _>(ABOUT, |c, shutdown| async move {
        let listener = switchyard_runtime::cli::listen("listen", c.listen).await?;
        let admin_listener =
            switchyard_runtime::cli::listen("admin_listen", c.admin_listen).await?;
        let local = listener.local_addr()?;
        let advertised = switchyard_runtime::advertise::choose(
            &c.advertise_addr,
            &c.advertise_cidr,
            local.port(),
            local,
        )?;
        let instance = switchyard_client::instance_id(&c.instance_id, &advertised);
        let faults = Arc::new(Faults::new(
            c.latency,
            c.latency_jitter,
            c.fail_rate,
            c.exit_after,
        ));
        let (health, health_service) = tonic_health::server::health_reporter();
        health.set_serving::<echo_server::EchoServer<Echo>>().await;
        let stop = tokio_util::sync::CancellationToken::new();
        let grpc = tonic::transport::Server::builder()
            .add_service(health_service)
            .add_service(echo_server::EchoServer::new(Echo {
                instance: instance.clone(),
                faults,
            }))
            .serve_with_incoming_shutdown(
                // Nagle plus delayed ACKs would add ~40 ms to small answers.
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
                stop.clone().cancelled_owned(),
            );
        let grpc = tokio::spawn(grpc);
        let admin_task = tokio::spawn(admin::serve(
            admin_listener,
            admin::router(Readiness::default()),
            stop.clone().cancelled_owned(),
        ));
        let session = switchyard_examples::register(
            &c.registry,
            &c.registry_token,
            c.mtls_files()?.as_ref(),
            "echo",
            &instance,
            &advertised,
            Protocol::Grpc,
        )?;
        tracing::info!(%local, %instance, "echo serving");
        shutdown.cancelled().await;
        if let Some(s) = session {
            s.shutdown(c.drain_delay).await;
        }
        stop.cancel();
        grpc.await??;
        admin_task.await??;
        Ok::<_, anyhow::Error>(())
    })
}
