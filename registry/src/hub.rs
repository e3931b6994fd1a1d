//! Fan-out of events to watchers.
//!
//! Each watcher has a bounded buffer. Only watchers of the changed service
//! (and watchers of every service) are woken (hashicorp/consul#1244). A
//! watcher whose buffer is full is flagged and receives nothing more until
//! its stream resynchronises with a `reset` snapshot: never an unbounded
//! queue, never a silent gap (etcd-io/etcd#17529).

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use tokio::sync::mpsc;

use crate::model::Event;

/// The watchers of a registry.
#[derive(Debug, Default)]
pub(crate) struct Hub {
    next_id: u64,
    slots: HashMap<u64, Slot>,
    by_service: HashMap<String, HashSet<u64>>,
    wildcard: HashSet<u64>,
}

#[derive(Debug)]
struct Slot {
    services: Option<BTreeSet<String>>,
    tx: mpsc::Sender<Arc<Event>>,
    overflow: Arc<AtomicBool>,
}

/// One watcher's end.
#[derive(Debug)]
pub struct Subscription {
    /// Its id in the hub.
    pub id: u64,
    /// The services it watches; `None` is every service.
    pub services: Option<BTreeSet<String>>,
    /// Events, in revision order.
    pub rx: mpsc::Receiver<Arc<Event>>,
    /// An event taken from `rx` that starts the next message.
    pending: Option<Arc<Event>>,
    overflow: Arc<AtomicBool>,
}

// === impl Hub ===

impl Hub {
    /// Adds a watcher with a buffer of `buffer` events.
    pub(crate) fn add(
        &mut self,
        services: Option<BTreeSet<String>>,
        buffer: usize,
    ) -> Subscription {
        let id = self.next_id;
        self.next_id += 1;
        let (tx, rx) = mpsc::channel(buffer);
        let overflow = Arc::new(AtomicBool::new(false));
        match &services {
            Some(names) => {
                for name in names {
                    self.by_service.entry(name.clone()).or_default().insert(id);
                }
            }
            None => {
                self.wildcard.insert(id);
            }
        }
        let slot = Slot {
            services: services.clone(),
            tx,
            overflow: overflow.clone(),
        };
        self.slots.insert(id, slot);
        Subscription {
            id,
            services,
            rx,
            pending: None,
            overflow,
        }
    }

    /// Removes a watcher.
    pub(crate) fn remove(&mut self, id: u64) {
        let Some(slot) = self.slots.remove(&id) else {
            return;
        };
        match slot.services {
            Some(names) => {
                for name in names {
                    if let Some(ids) = self.by_service.get_mut(&name) {
                        ids.remove(&id);
                        if ids.is_empty() {
                            self.by_service.remove(&name);
                        }
                    }
                }
            }
            None => {
                self.wildcard.remove(&id);
            }
        }
    }

    /// Sends `event` to the watchers of its service.
    pub(crate) fn publish(&mut self, event: &Arc<Event>) {
        let service = &event.instance.spec.service;
        let mut gone = Vec::new();
        let targets = self
            .by_service
            .get(service)
            .into_iter()
            .flatten()
            .chain(self.wildcard.iter());
        for id in targets {
            let Some(slot) = self.slots.get(id) else {
                continue;
            };
            if slot.overflow.load(Ordering::Acquire) {
                continue;
            }
            match slot.tx.try_send(event.clone()) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    slot.overflow.store(true, Ordering::Release);
                    metrics::counter!("switchyard_registry_watch_overflows_total").increment(1);
                }
                Err(mpsc::error::TrySendError::Closed(_)) => gone.push(*id),
            }
        }
        for id in gone {
            self.remove(id);
        }
    }

    /// The whole state was replaced: every watcher resynchronises (its
    /// stream sees it as a buffer that overflowed).
    pub(crate) fn relisted(&mut self) {
        for slot in self.slots.values() {
            slot.overflow.store(true, Ordering::Release);
        }
    }

    /// Watchers connected.
    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }
}

// === impl Subscription ===

impl Subscription {
    /// True when events were dropped: the stream must resynchronise.
    pub fn overflowed(&self) -> bool {
        self.overflow.load(Ordering::Acquire)
    }

    /// Empties the buffer and clears the flag. Called under the registry's
    /// lock together with taking a snapshot, so nothing falls in between.
    pub(crate) fn reset(&mut self) {
        self.pending = None;
        while self.rx.try_recv().is_ok() {}
        self.overflow.store(false, Ordering::Release);
    }

    /// The next event (waiting for one).
    pub async fn next(&mut self) -> Option<Arc<Event>> {
        match self.pending.take() {
            Some(e) => Some(e),
            None => self.rx.recv().await,
        }
    }

    /// Whether events wait to be sent.
    pub fn has_pending(&self) -> bool {
        self.pending.is_some() || !self.rx.is_empty()
    }

    /// The next event if one is ready.
    pub fn try_next(&mut self) -> Option<Arc<Event>> {
        self.pending.take().or_else(|| self.rx.try_recv().ok())
    }

    /// Takes the rest of the revision of `events`' last event, which is
    /// all in the buffer when the registry's lock is held (events of one
    /// write are published under it together); an event of a later
    /// revision is kept for the next message.
    pub(crate) fn complete_revision(&mut self, events: &mut Vec<Arc<Event>>) {
        let Some(last) = events.last().map(|e| e.revision) else {
            return;
        };
        while let Some(e) = self.try_next() {
            if e.revision != last {
                self.pending = Some(e);
                return;
            }
            events.push(e);
        }
    }

    /// Whether this watcher follows `service`.
    pub fn follows(&self, service: &str) -> bool {
        self.services.as_ref().is_none_or(|s| s.contains(service))
    }
}
