//! The command line every binary shares: `--help`, `--version`, settings
//! flags, and the `probe` subcommand. Exit codes follow sysexits: 64 for a
//! usage or configuration error.

use std::{net::SocketAddr, process::ExitCode, time::Duration};

use crate::settings::{self, ConfigError, Settings, Sources};

/// Exit code for a bad flag, variable or file (sysexits `EX_USAGE`).
pub const EXIT_CONFIG: u8 = 64;

/// What the command line asked for.
#[derive(Debug)]
pub enum Command<S> {
    /// Run the server with these settings.
    Serve(S),
    /// Check the `/readyz` of a running instance at this address.
    Probe(SocketAddr),
    /// Stop now with this code (after `--help`, `--version` or an error,
    /// already printed).
    Exit(ExitCode),
}

/// What a binary says about itself.
#[derive(Debug, Clone, Copy)]
pub struct About {
    /// The binary's name.
    pub name: &'static str,
    /// Its version.
    pub version: &'static str,
    /// One line on what it does.
    pub summary: &'static str,
}

/// Settings that know where their admin listener is, so `probe` can find it.
pub trait AdminAddr {
    /// The admin HTTP listen address.
    fn admin_listen(&self) -> SocketAddr;
}

/// Parses this process's command line.
pub fn parse<S: Settings + AdminAddr>(about: About) -> Command<S> {
    parse_from(about, Sources::from_process(1))
}

/// Parses `sources` (arguments after the binary name).
pub fn parse_from<S: Settings + AdminAddr>(about: About, mut sources: Sources) -> Command<S> {
    match sources.args.first().map(String::as_str) {
        Some("--help" | "-h" | "help") => {
            print!("{}", usage::<S>(about));
            return Command::Exit(ExitCode::SUCCESS);
        }
        Some("--version" | "-V") => {
            println!("{} {}", about.name, about.version);
            return Command::Exit(ExitCode::SUCCESS);
        }
        Some("probe") => {
            sources.args.remove(0);
            return probe_command(&mut sources);
        }
        _ => {}
    }
    match settings::load::<S>(&sources) {
        Ok(s) => Command::Serve(s),
        Err(e) => config_error(about, &e),
    }
}

fn probe_command<S: Settings + AdminAddr>(sources: &mut Sources) -> Command<S> {
    // `probe --url host:port` overrides; otherwise the settings' admin address.
    if let Some(i) = sources.args.iter().position(|a| a == "--addr") {
        let value = sources.args.get(i + 1).cloned().unwrap_or_default();
        return match value.parse() {
            Ok(addr) => Command::Probe(addr),
            Err(e) => {
                eprintln!("error: invalid configuration: `--addr`: {e}");
                Command::Exit(ExitCode::from(EXIT_CONFIG))
            }
        };
    }
    match settings::load::<S>(sources) {
        Ok(s) => Command::Probe(crate::probe::local_target(s.admin_listen())),
        Err(e) => {
            eprintln!("error: {e}");
            Command::Exit(ExitCode::from(EXIT_CONFIG))
        }
    }
}

fn config_error<S>(about: About, e: &ConfigError) -> Command<S> {
    eprintln!("{}: error: {e}", about.name);
    Command::Exit(ExitCode::from(EXIT_CONFIG))
}

/// Runs a probe and turns its outcome into an exit code (0 ready, 1 not).
pub async fn run_probe(addr: SocketAddr) -> ExitCode {
    match crate::probe::probe(addr, "/readyz", Duration::from_secs(3)).await {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("probe: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The whole `main` of a binary: parse the command line, run `probe` or
/// initialise logging and run `serve` on a multi-threaded runtime with a
/// shutdown token cancelled by SIGTERM/SIGINT (one
/// worker thread: the current-thread scheduler). A serve error exits 1, or
/// 64 when a [`ConfigError`] caused it (a routes or TLS file found unusable
/// at start is as much a bad setting as a bad flag).
pub fn main<S, F, Fut, E>(about: About, serve: F) -> ExitCode
where
    S: Settings + AdminAddr + LogSettings,
    F: FnOnce(S, crate::shutdown::CancellationToken) -> Fut,
    Fut: std::future::Future<Output = Result<(), E>>,
    E: Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
{
    let command = parse::<S>(about);
    let workers = match &command {
        Command::Serve(s) => s.runtime_threads(),
        _ => 0,
    };
    // One worker gets the current-thread scheduler: it has no other worker
    // to steal from or wake, so the multi-threaded scheduler's queues and
    // wake-ups would be pure cost (measured in bench/RESULTS.md).
    let mut builder = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    if workers > 1 {
        builder.worker_threads(workers);
    }
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{}: cannot start the async runtime: {e}", about.name);
            return ExitCode::FAILURE;
        }
    };
    match command {
        Command::Exit(code) => code,
        Command::Probe(addr) => runtime.block_on(run_probe(addr)),
        Command::Serve(settings) => runtime.block_on(async move {
            crate::logging::init(settings.log_format(), "info");
            tracing::info!(name = about.name, version = about.version, "starting");
            let shutdown = crate::shutdown::on_signal();
            match serve(settings, shutdown).await {
                Ok(()) => {
                    tracing::info!("stopped");
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    let error = error.into();
                    tracing::error!(%error, "fatal");
                    eprintln!("{}: error: {error}", about.name);
                    if caused_by_config(&*error) {
                        ExitCode::from(EXIT_CONFIG)
                    } else {
                        ExitCode::FAILURE
                    }
                }
            }
        }),
    }
}

/// Binds a listener for the setting `key`; a failure names the setting and
/// the address ("cannot listen on 0.0.0.0:7000 (`grpc_listen`): Address
/// already in use"), where the bare OS error named neither.
pub async fn listen(key: &str, addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        std::io::Error::new(e.kind(), format!("cannot listen on {addr} (`{key}`): {e}"))
    })
}

/// Where a listener that takes changes (a JSON API, an admin API) binds:
/// as configured when tokens guard it; without tokens, an address meaning
/// every interface (`0.0.0.0`, `::`) becomes loopback, with a warning, so
/// that only this machine can reach it (its changes were loopback-only
/// already, and its reads say what runs where).
pub fn guarded_addr(key: &str, addr: SocketAddr, tokens_set: bool) -> SocketAddr {
    if tokens_set || !addr.ip().is_unspecified() {
        return addr;
    }
    let loopback: std::net::IpAddr = if addr.is_ipv4() {
        std::net::Ipv4Addr::LOCALHOST.into()
    } else {
        std::net::Ipv6Addr::LOCALHOST.into()
    };
    let bound = SocketAddr::new(loopback, addr.port());
    tracing::warn!(
        key,
        configured = %addr,
        %bound,
        "no tokens are set: this listener takes changes, so it listens on loopback only (set tokens to serve it on every address)"
    );
    bound
}

/// Whether a [`ConfigError`] is in the error's chain of sources.
fn caused_by_config(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(e) = next {
        if e.is::<ConfigError>() {
            return true;
        }
        next = e.source();
    }
    false
}

/// Settings that shape the process: log format, the threads of its async
/// runtime.
pub trait LogSettings {
    /// Text or JSON.
    fn log_format(&self) -> crate::logging::LogFormat;
    /// Threads of the process's own async runtime (the one `main` starts);
    /// 0 means one per core. A binary's `worker_threads` setting may mean
    /// something else (the gateway's starts runtimes of its own).
    fn runtime_threads(&self) -> usize {
        0
    }
}

/// The `--help` text.
pub fn usage<S: Settings>(about: About) -> String {
    format!(
        "{name} {version}: {summary}\n\n\
         Usage:\n  {name} [--config FILE] [--KEY VALUE]...\n  {name} probe [--addr HOST:PORT]\n  \
         {name} --help | --version\n\n\
         Settings (flag > environment > file given by --config or SWITCHYARD_CONFIG):\n{keys}\n\
         Exit codes: 0 ok, 1 probe failed, 64 invalid configuration.\n",
        name = about.name,
        version = about.version,
        summary = about.summary,
        keys = settings::help::<S>(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    crate::settings! {
        /// Test settings.
        pub(crate) struct Demo {
            /// Admin listen address.
            pub(crate) admin_listen: SocketAddr = ([0, 0, 0, 0], 7001).into(),
        }
    }
    impl Settings for Demo {}
    impl AdminAddr for Demo {
        fn admin_listen(&self) -> SocketAddr {
            self.admin_listen
        }
    }

    const ABOUT: About = About {
        name: "demo",
        version: "1.0",
        summary: "a demo",
    };

    fn run(args: &[&str]) -> Command<Demo> {
        let sources = Sources {
            args: args.iter().map(|s| s.to_string()).collect(),
            env: Default::default(),
        };
        parse_from(ABOUT, sources)
    }

    #[test]
    fn serve_probe_and_errors() {
        assert!(matches!(run(&[]), Command::Serve(_)));
        match run(&["probe", "--admin-listen", "0.0.0.0:9"]) {
            Command::Probe(addr) => assert_eq!(addr, "127.0.0.1:9".parse().expect("addr")),
            other => panic!("{other:?}"),
        }
        match run(&["probe", "--addr", "10.0.0.1:5"]) {
            Command::Probe(addr) => assert_eq!(addr, "10.0.0.1:5".parse().expect("addr")),
            other => panic!("{other:?}"),
        }
        let Command::Exit(code) = run(&["--admin-listen", "nope"]) else {
            panic!("bad value must exit")
        };
        assert_eq!(code, ExitCode::from(EXIT_CONFIG));
        assert!(matches!(run(&["--version"]), Command::Exit(c) if c == ExitCode::SUCCESS));
        assert!(usage::<Demo>(ABOUT).contains("SWITCHYARD_ADMIN_LISTEN"));
    }
}
