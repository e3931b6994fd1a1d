//! Route reloads: on a change in the routes file's directory, on SIGHUP and
//! on `POST /api/reload`. A bad file is refused, counted, and the old table
//! stays; a good one swaps in once its services are known, keeping limit
//! state for unchanged routes. In-flight requests and open WebSockets hold
//! their own references and are never touched.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime},
};

use tokio_util::sync::CancellationToken;

use crate::{
    proxy::Gateway,
    routes::{RouteTable, RoutesFile},
};

/// Why a reload was refused.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct ReloadError(pub String);

/// Reads the file and swaps the table in, or refuses it.
pub fn reload(gw: &Gateway, path: &Path) -> Result<usize, ReloadError> {
    let file = RoutesFile::load(path).map_err(|e| {
        metrics::counter!("switchyard_gateway_reload_failures_total").increment(1);
        tracing::warn!(error = %e, "routes file refused; the old table stays");
        ReloadError(e)
    })?;
    let n = file.routes.len();
    let previous = gw.routes.load_full();
    let table = RouteTable::compile(file, Some(&previous));
    // Subscribe the new table's services before it takes traffic.
    for service in table.services() {
        gw.service(&service);
    }
    gw.routes.store(Arc::new(table));
    metrics::counter!("switchyard_gateway_reloads_total").increment(1);
    tracing::info!(routes = n, "routes reloaded");
    Ok(n)
}

/// Watches the directory of `path` (not the file: editors and config
/// mounts replace files by renaming) by polling its entries' modification
/// times, and reloads on SIGHUP. Polling rather than inotify keeps it
/// working on bind mounts and needs no extra dependency.
pub async fn watch(gw: Arc<Gateway>, path: PathBuf, shutdown: CancellationToken) {
    let dir = path
        .parent()
        .map(Path::to_path_buf)
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or_else(|| PathBuf::from("."));
    let mut seen = stamp(&dir);
    #[cfg(unix)]
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    loop {
        #[cfg(unix)]
        let hangup = async {
            match hup.as_mut() {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        };
        #[cfg(not(unix))]
        let hangup = std::future::pending::<()>();
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = hangup => {
                tracing::info!("SIGHUP: reloading routes");
                let _ = reload(&gw, &path);
            }
            () = tokio::time::sleep(Duration::from_millis(500)) => {
                let now = stamp(&dir);
                if now != seen {
                    seen = now;
                    let _ = reload(&gw, &path);
                }
            }
        }
    }
}

fn stamp(dir: &Path) -> Vec<(PathBuf, Option<SystemTime>, u64)> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| {
            let meta = std::fs::metadata(e.path()).ok();
            (
                e.path(),
                meta.as_ref().and_then(|m| m.modified().ok()),
                meta.map_or(0, |m| m.len()),
            )
        })
        .collect();
    entries.sort();
    entries
}
