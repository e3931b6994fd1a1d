//! Shutdown signals and draining.
//!
//! A process turns SIGTERM or SIGINT into a cancelled [`CancellationToken`];
//! servers take a clone as their shutdown future. In-flight work is tracked
//! with a [`TaskTracker`] and [`drain`] waits for it, up to a deadline.

use std::time::Duration;

pub use tokio_util::{sync::CancellationToken, task::TaskTracker};

/// Which signal asked us to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM: drain, then exit 0.
    Terminate,
    /// SIGINT (Ctrl-C).
    Interrupt,
}

/// How a drain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drained {
    /// Every tracked task finished.
    Finished,
    /// The deadline passed with this many tasks left.
    TimedOut {
        /// Tasks still running.
        left: usize,
    },
}

/// Waits for SIGTERM or SIGINT.
pub async fn signal() -> Signal {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => tokio::select! {
                _ = term.recv() => Signal::Terminate,
                _ = tokio::signal::ctrl_c() => Signal::Interrupt,
            },
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; only Ctrl-C stops this process");
                let _ = tokio::signal::ctrl_c().await;
                Signal::Interrupt
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        Signal::Interrupt
    }
}

/// A token cancelled on the first SIGTERM or SIGINT.
pub fn on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        let signal = signal().await;
        tracing::info!(?signal, "shutdown requested");
        cancel.cancel();
    });
    token
}

/// Closes `tracker` and waits for its tasks, at most `deadline`.
pub async fn drain(tracker: &TaskTracker, deadline: Duration) -> Drained {
    tracker.close();
    match tokio::time::timeout(deadline, tracker.wait()).await {
        Ok(()) => Drained::Finished,
        Err(_) => Drained::TimedOut {
            left: tracker.len(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn drain_waits_for_tasks_then_gives_up_at_deadline() {
        let tracker = TaskTracker::new();
        tracker.spawn(tokio::time::sleep(Duration::from_millis(10)));
        assert_eq!(
            drain(&tracker, Duration::from_secs(5)).await,
            Drained::Finished
        );

        let tracker = TaskTracker::new();
        tracker.spawn(std::future::pending::<()>());
        assert_eq!(
            drain(&tracker, Duration::from_millis(20)).await,
            Drained::TimedOut { left: 1 }
        );
    }
}
