//! The task behind each Watch stream: first message, then deltas, progress
//! on idle, and a reset snapshot when the watcher fell behind.

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::{
    model::Position,
    state::{Registry, SnapshotReason, WatchMessage},
};

/// Most events in one delta message.
const MAX_BATCH: usize = 512;

/// Removes the watcher when its task ends, however it ends.
struct Unsubscribe(Arc<Registry>, u64);

impl Drop for Unsubscribe {
    fn drop(&mut self) {
        self.0.unsubscribe(self.1);
    }
}

/// Starts a watch; messages arrive on the returned channel until the client
/// goes away or `shutdown` is cancelled (then the channel closes cleanly).
pub fn spawn(
    registry: Arc<Registry>,
    services: Option<BTreeSet<String>>,
    since: Option<Position>,
    progress_interval: Duration,
    shutdown: CancellationToken,
) -> mpsc::Receiver<WatchMessage> {
    // A small output buffer: when the client stops reading, the watcher's
    // own bounded buffer fills and it gets a reset instead of a backlog.
    let (tx, rx) = mpsc::channel(2);
    tokio::spawn(async move {
        let (first, mut sub) = registry.subscribe(services, since);
        let _guard = Unsubscribe(registry.clone(), sub.id);
        metrics::gauge!("switchyard_registry_watchers").increment(1.0);
        let _gauge = scopeguard(|| metrics::gauge!("switchyard_registry_watchers").decrement(1.0));
        if tx.send(first).await.is_err() {
            return;
        }
        let mut authoritative = registry.authoritative_changes();
        authoritative.borrow_and_update();
        let mut resets = registry.resets();
        resets.borrow_and_update();
        let start = tokio::time::Instant::now() + progress_interval;
        let mut ticker = tokio::time::interval_at(start, progress_interval);
        loop {
            let message = tokio::select! {
                biased;
                () = shutdown.cancelled() => return,
                () = tx.closed() => return,
                event = sub.next() => {
                    let Some(event) = event else { return };
                    if sub.overflowed() {
                        tracing::debug!(watcher = sub.id, "watcher fell behind; sending a reset");
                        registry.resync(&mut sub, SnapshotReason::SlowWatcher)
                    } else {
                        let mut events = vec![event];
                        while events.len() < MAX_BATCH {
                            match sub.try_next() {
                                Some(e) => events.push(e),
                                None => break,
                            }
                        }
                        registry.delta(&mut sub, events)
                    }
                }
                changed = resets.changed() => {
                    if changed.is_err() || registry.fenced() { return; }
                    if !sub.overflowed() { continue; }
                    registry.resync(&mut sub, SnapshotReason::Compacted)
                }
                changed = authoritative.changed() => {
                    if changed.is_err() { return; }
                    match registry.progress(&sub) { Some(m) => m, None => continue }
                }
                _ = ticker.tick() => match registry.progress(&sub) { Some(m) => m, None => continue },
            };
            ticker.reset();
            if tx.send(message).await.is_err() {
                return;
            }
        }
    });
    rx
}

/// Runs `f` on drop.
fn scopeguard(f: impl FnOnce()) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }
    Guard(Some(f))
}
