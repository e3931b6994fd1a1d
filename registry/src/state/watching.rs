//! Watching: the first message of a watch (snapshot or resumed deltas),
//! resyncs of slow watchers, progress and delta messages.

use std::{collections::BTreeSet, sync::Arc};

use super::{Inner, Registry};
use crate::{
    hub::Subscription,
    model::{Event, Instance, Position},
};

/// Why a snapshot is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotReason {
    /// A new watch.
    Initial,
    /// `since` is from another epoch.
    OtherEpoch,
    /// `since` is ahead of the registry.
    FutureRevision,
    /// `since` is older than the history.
    Compacted,
    /// The watcher's buffer overflowed.
    SlowWatcher,
}

/// What a watch message carries.
#[derive(Debug, Clone)]
pub enum WatchBody {
    /// Full state of the watched services.
    Snapshot {
        /// The instances.
        instances: Vec<Instance>,
        /// Drop what you hold.
        reset: bool,
        /// Why.
        reason: SnapshotReason,
    },
    /// Ordered events.
    Delta(Vec<Arc<Event>>),
    /// Nothing changed.
    Progress,
}

/// One message on a watch stream.
#[derive(Debug, Clone)]
pub struct WatchMessage {
    /// The content.
    pub body: WatchBody,
    /// Position after it.
    pub position: Position,
    /// Whether empty views may be applied.
    pub authoritative: bool,
}

// === impl Registry ===

impl Registry {
    /// The current position.
    pub fn position(&self) -> Position {
        self.lock().position(&self.epoch)
    }

    /// Opens a watch: the first message and the subscription, atomically.
    pub fn subscribe(
        &self,
        services: Option<BTreeSet<String>>,
        since: Option<Position>,
    ) -> (WatchMessage, Subscription) {
        let mut inner = self.lock();
        let sub = inner.hub.add(services.clone(), self.cfg.watch_buffer);
        let body = match since {
            None => inner.snapshot(&sub, false, SnapshotReason::Initial),
            Some(since) => inner.resume(&sub, &since, &self.epoch),
        };
        let message = WatchMessage {
            body,
            position: inner.position(&self.epoch),
            authoritative: inner.authoritative(),
        };
        (message, sub)
    }

    /// A reset snapshot for a watcher whose buffer overflowed (`reason`:
    /// it fell behind, or the whole state was listed again).
    pub fn resync(&self, sub: &mut Subscription, reason: SnapshotReason) -> WatchMessage {
        let inner = self.lock();
        sub.reset();
        WatchMessage {
            body: inner.snapshot(sub, true, reason),
            position: inner.position(&self.epoch),
            authoritative: inner.authoritative(),
        }
    }

    /// A progress message, only when the watcher has nothing buffered: its
    /// position is the registry's, so a resume from it must not skip events.
    pub fn progress(&self, sub: &Subscription) -> Option<WatchMessage> {
        let inner = self.lock();
        if sub.has_pending() || sub.overflowed() {
            return None;
        }
        Some(WatchMessage {
            body: WatchBody::Progress,
            position: inner.position(&self.epoch),
            authoritative: inner.authoritative(),
        })
    }

    /// A delta message for `events` (taken from `sub`), completed with the
    /// rest of its last revision: a message never ends inside a revision,
    /// so a resume from its position skips nothing (with etcd, one write's
    /// events share a revision and may be taken while still published).
    pub fn delta(&self, sub: &mut Subscription, mut events: Vec<Arc<Event>>) -> WatchMessage {
        let inner = self.lock();
        sub.complete_revision(&mut events);
        let last = events.last().map_or(0, |e| e.revision);
        WatchMessage {
            body: WatchBody::Delta(events),
            position: Position {
                epoch: self.epoch.clone(),
                revision: last,
            },
            authoritative: inner.authoritative(),
        }
    }

    /// Removes a watcher.
    pub fn unsubscribe(&self, id: u64) {
        self.lock().hub.remove(id);
    }

    /// Watchers connected.
    pub fn watchers(&self) -> usize {
        self.lock().hub.len()
    }
}

// === impl Inner ===

impl Inner {
    fn snapshot(&self, sub: &Subscription, reset: bool, reason: SnapshotReason) -> WatchBody {
        let instances = match &sub.services {
            Some(names) => names
                .iter()
                .filter_map(|n| self.services.get(n))
                .flat_map(|m| m.values().cloned())
                .collect(),
            None => self
                .services
                .values()
                .flat_map(|m| m.values().cloned())
                .collect(),
        };
        WatchBody::Snapshot {
            instances,
            reset,
            reason,
        }
    }

    fn resume(&self, sub: &Subscription, since: &Position, epoch: &Arc<str>) -> WatchBody {
        let reason = if since.epoch != *epoch {
            Some(SnapshotReason::OtherEpoch)
        } else if since.revision > self.revision {
            Some(SnapshotReason::FutureRevision)
        } else if since.revision < self.floor {
            Some(SnapshotReason::Compacted)
        } else {
            None
        };
        if let Some(reason) = reason {
            return self.snapshot(sub, true, reason);
        }
        let events: Vec<Arc<Event>> = self
            .history
            .iter()
            .filter(|e| e.revision > since.revision && sub.follows(&e.instance.spec.service))
            .cloned()
            .collect();
        if events.is_empty() {
            WatchBody::Progress
        } else {
            WatchBody::Delta(events)
        }
    }
}
