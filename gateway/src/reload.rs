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
    app::Gateway,
    routes::{RouteTable, RoutesFile},
};

/// Why a reload was refused.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct ReloadError(#[from] pub crate::routes::RoutesError);

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

/// Watches the routes file by polling its modification time, size and
/// inode (following symlinks), and reloads on SIGHUP. Editors and config
/// mounts replace the file by renaming (a Kubernetes ConfigMap swaps a
/// symlinked directory); both show as a new inode. Other files beside it
/// (logs, say) change nothing. Polling rather than inotify keeps it working
/// on bind mounts and needs no extra dependency.
pub async fn watch(gw: Arc<Gateway>, path: PathBuf, shutdown: CancellationToken) {
    let mut seen = stamp(&path);
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
                let now = stamp(&path);
                if now != seen {
                    seen = now;
                    let _ = reload(&gw, &path);
                }
            }
        }
    }
}

/// What tells a changed file: modification time, size and inode.
fn stamp(path: &Path) -> Option<(Option<SystemTime>, u64, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&meta);
    #[cfg(not(unix))]
    let inode = 0;
    Some((meta.modified().ok(), meta.len(), inode))
}
