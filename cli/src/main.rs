//! `switchyard`: the operator's command line (issue 22).
//!
//! It talks gRPC to the registry (mutual TLS with `https://`) and HTTP to
//! the gateway's admin port. Run from the repository against the stack
//! `deploy/up.sh` started, it needs no flag: that script writes
//! `deploy/stack.env` with the stack's addresses, the operator's
//! certificate and token ([`stack`]).
//!
//! Exit codes: 0 done, 1 failed (unreachable, refused), 2 bad usage or
//! input, 3 not found.

mod args;
mod balancers;
mod endpoints;
mod gateway;
mod overrides;
mod registry;
mod render;
mod stack;
mod status;
mod table;
mod watch;

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};

const EXIT_CODES: &str = "Exit codes: 0 done, 1 failed (unreachable, refused), 2 bad usage or input, 3 not found.\n\
Without flags, addresses and credentials come from SWITCHYARD_* variables, then from deploy/stack.env\n\
(written by deploy/up.sh; another file with SWITCHYARD_STACK=PATH).";

#[derive(Parser)]
#[command(
    name = "switchyard",
    version,
    about = "Operate a Switchyard stack: services, instances, overrides, watch, the gateway's endpoints and routes.",
    after_help = EXIT_CODES
)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

/// Where the stack is and who we are to it.
#[derive(Args, Debug, Clone)]
pub(crate) struct Global {
    /// The registry's gRPC address; https:// dials it with mutual TLS.
    #[arg(long, env = "SWITCHYARD_REGISTRY", global = true)]
    registry: Option<String>,
    /// The gateway's admin address.
    #[arg(long, env = "SWITCHYARD_GATEWAY_ADMIN", global = true)]
    gateway_admin: Option<String>,
    /// An operator token (with no client certificate).
    #[arg(long, env = "SWITCHYARD_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
    /// A file holding the operator token.
    #[arg(long, env = "SWITCHYARD_TOKEN_FILE", global = true)]
    token_file: Option<PathBuf>,
    /// The CA certificate (PEM) that signed the registry's.
    #[arg(long, env = "SWITCHYARD_MTLS_CA", global = true)]
    mtls_ca: Option<PathBuf>,
    /// Our certificate (PEM), the operator's.
    #[arg(long, env = "SWITCHYARD_MTLS_CERT", global = true)]
    mtls_cert: Option<PathBuf>,
    /// Our certificate's key (PEM).
    #[arg(long, env = "SWITCHYARD_MTLS_KEY", global = true)]
    mtls_key: Option<PathBuf>,
    /// Output: aligned tables for people, or JSON.
    #[arg(short, long, value_enum, default_value = "table", global = true)]
    output: Output,
    /// Seconds to wait for an answer.
    #[arg(long, default_value_t = 5, global = true)]
    timeout: u64,
}

/// How results are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Output {
    /// Aligned columns.
    Table,
    /// JSON (one document; `watch` prints one per line).
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// The registry: revision, warm-up, the mass-expiry brake, leases, services.
    Status,
    /// Services with their instances counted by state.
    Services(args::ServiceFilters),
    /// One service's instances.
    Instances {
        /// The service.
        service: String,
        #[command(flatten)]
        filters: args::InstanceFilters,
    },
    /// Forces an instance's state (an operator override, kept until cleared).
    SetState {
        /// The service.
        service: String,
        /// The instance's id.
        instance: String,
        /// serving, draining or out-of-service.
        state: args::ForcedState,
        #[command(flatten)]
        why: args::Why,
    },
    /// Drains an instance: DRAINING until `clear` (or --for).
    Drain {
        /// The service.
        service: String,
        /// The instance's id.
        instance: String,
        #[command(flatten)]
        why: args::Why,
    },
    /// Forces an instance's weight (1 to 10000).
    SetWeight {
        /// The service.
        service: String,
        /// The instance's id.
        instance: String,
        /// The weight.
        weight: u32,
        #[command(flatten)]
        why: args::Why,
    },
    /// Drops an instance's overrides (state and weight).
    Clear {
        /// The service.
        service: String,
        /// The instance's id.
        instance: String,
    },
    /// Removes an instance from the registry.
    Deregister {
        /// The service.
        service: String,
        /// The instance's id.
        instance: String,
    },
    /// Streams changes of services (all when none is named) until interrupted.
    Watch {
        /// Services to watch.
        services: Vec<String>,
        /// Resume after EPOCH:REVISION (as printed); a reset snapshot if it cannot.
        #[arg(long, value_parser = args::parse_position)]
        since: Option<args::Position>,
    },
    /// A service's endpoints as the gateway uses them (in flight, latency, breakers, ejections)
    /// and as each balancer assigns them (effective weights, ejections, reported load).
    Endpoints {
        /// The service.
        service: String,
    },
    /// The gateway's routes.
    Routes,
}

/// Why a command failed, and its exit code.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Unreachable, refused, or failed: exit 1.
    Failed(String),
    /// Bad input the server refused: exit 2.
    Invalid(String),
    /// No such service or instance: exit 3.
    NotFound(String),
}

impl Failure {
    /// What it says, without its exit code.
    pub(crate) fn message(&self) -> &str {
        match self {
            Self::Failed(m) | Self::Invalid(m) | Self::NotFound(m) => m,
        }
    }
}

impl From<tonic::Status> for Failure {
    fn from(s: tonic::Status) -> Self {
        let message = s.message().to_string();
        match s.code() {
            tonic::Code::NotFound => Self::NotFound(message),
            tonic::Code::InvalidArgument => Self::Invalid(message),
            code => Self::Failed(format!("{code:?}: {message}")),
        }
    }
}

impl Global {
    fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout.max(1))
    }

    /// The certificate files for mutual TLS: with an `https://` registry,
    /// all three or none; ignored for an `http://` one.
    fn tls_files(&self) -> Result<Option<switchyard_client::connect::TlsFiles>, Failure> {
        let https = self
            .registry
            .as_deref()
            .is_some_and(|r| r.starts_with("https://"));
        match (&self.mtls_ca, &self.mtls_cert, &self.mtls_key) {
            _ if !https => Ok(None),
            (Some(ca), Some(cert), Some(key)) => Ok(Some(switchyard_client::connect::TlsFiles {
                ca: ca.clone(),
                cert: cert.clone(),
                key: key.clone(),
            })),
            (None, None, None) => Ok(None),
            _ => Err(Failure::Invalid(
                "set --mtls-ca, --mtls-cert and --mtls-key together".into(),
            )),
        }
    }

    /// [`Self::tls_files`], loaded.
    fn client_tls(&self) -> Result<Option<switchyard_tls::ClientTls>, Failure> {
        self.tls_files()?
            .map(|f| switchyard_tls::ClientTls::load(&f))
            .transpose()
            .map_err(|e| Failure::Invalid(e.to_string()))
    }
}

fn main() -> ExitCode {
    let mut cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage(&e),
    };
    stack::fill(&mut cli.global);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("switchyard: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Failed(m)) => {
            eprintln!("switchyard: {m}");
            ExitCode::from(1)
        }
        Err(Failure::Invalid(m)) => {
            eprintln!("switchyard: {m}");
            ExitCode::from(2)
        }
        Err(Failure::NotFound(m)) => {
            eprintln!("switchyard: {m}");
            ExitCode::from(3)
        }
    }
}

/// Help and version as clap prints them; a usage error as one line naming
/// the problem (exit 2).
fn usage(e: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        let _ = e.print();
        return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
    }
    let text = e.render().to_string();
    let first = text.lines().next().unwrap_or_default();
    eprintln!(
        "switchyard: {} (switchyard --help)",
        first.trim_start_matches("error: ")
    );
    ExitCode::from(2)
}

async fn run(cli: Cli) -> Result<(), Failure> {
    let g = &cli.global;
    let registry = || registry::connect(g);
    match cli.command {
        Command::Status => status::status(g).await,
        Command::Services(f) => registry::services(&mut registry().await?, g, &f).await,
        Command::Instances { service, filters } => {
            registry::instances(&mut registry().await?, g, &service, &filters).await
        }
        Command::SetState {
            service,
            instance,
            state,
            why,
        } => {
            let change = overrides::Change {
                state: state.into(),
                weight: None,
                why,
            };
            overrides::set(&mut registry().await?, g, &service, &instance, change).await
        }
        Command::Drain {
            service,
            instance,
            why,
        } => {
            let change = overrides::Change {
                state: args::ForcedState::Draining.into(),
                weight: None,
                why,
            };
            overrides::set(&mut registry().await?, g, &service, &instance, change).await
        }
        Command::SetWeight {
            service,
            instance,
            weight,
            why,
        } => {
            let change = overrides::Change {
                state: None,
                weight: Some(weight),
                why,
            };
            overrides::set(&mut registry().await?, g, &service, &instance, change).await
        }
        Command::Clear { service, instance } => {
            overrides::clear(&mut registry().await?, g, &service, &instance).await
        }
        Command::Deregister { service, instance } => {
            overrides::deregister(&mut registry().await?, g, &service, &instance).await
        }
        Command::Watch { services, since } => {
            watch::watch(&mut registry().await?, g, services, since).await
        }
        Command::Endpoints { service } => endpoints::show(g, &service).await,
        Command::Routes => gateway::routes(g).await,
    }
}
