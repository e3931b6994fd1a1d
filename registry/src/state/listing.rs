//! Listing: one service's instances, and every service with counts.

use std::{collections::BTreeMap, sync::Arc, time::SystemTime};

use super::Registry;
use crate::{
    brake::Engaged,
    model::{Event, Health, Instance, Position},
};

/// One service's instances.
#[derive(Debug, Clone)]
pub struct ServiceView {
    /// Ordered by instance id.
    pub instances: Vec<Instance>,
    /// Where the registry was.
    pub position: Position,
    /// False during warm-up and while the brake holds.
    pub authoritative: bool,
}

/// Counts for one service.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// The service.
    pub service: String,
    /// Instances by effective state.
    pub by_state: BTreeMap<&'static str, u32>,
    /// Instances in total.
    pub instances: u32,
    /// Instances whose check fails.
    pub unhealthy: u32,
    /// Instances held by the brake.
    pub expired_held: u32,
    /// Revision of the last change.
    pub mod_revision: u64,
}

/// The brake as ListServices shows it.
#[derive(Debug, Clone, Default)]
pub struct BrakeView {
    /// Engaged details.
    pub engaged: Option<(SystemTime, SystemTime, String)>,
    /// Leases held.
    pub held_leases: u32,
}

/// The states a dashboard shows as a banner.
#[derive(Debug, Clone, Default)]
pub struct Banner {
    /// In warm-up after start: expiries wait.
    pub warming_up: bool,
    /// The brake's reason while it holds expiries.
    pub brake: Option<String>,
    /// False during warm-up and while the brake holds.
    pub authoritative: bool,
}

/// Every service.
#[derive(Debug, Clone)]
pub struct Listing {
    /// Per service.
    pub services: Vec<Summary>,
    /// The brake.
    pub brake: BrakeView,
    /// In warm-up.
    pub warming_up: bool,
    /// Live leases.
    pub leases: u32,
    /// Where the registry was.
    pub position: Position,
    /// False during warm-up and while the brake holds.
    pub authoritative: bool,
}

// === impl Registry ===

impl Registry {
    /// One service.
    pub fn service(&self, name: &str) -> ServiceView {
        let inner = self.lock();
        let instances = inner
            .services
            .get(name)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default();
        ServiceView {
            instances,
            position: inner.position(&self.epoch),
            authoritative: inner.authoritative(),
        }
    }

    /// Whether the warm-up after start is still on (cheap: no listing).
    pub fn warming_up(&self) -> bool {
        self.lock().warming
    }

    /// What the dashboard's banners say, without a listing.
    pub fn banner(&self) -> Banner {
        let inner = self.lock();
        Banner {
            warming_up: inner.warming,
            brake: inner.brake.engaged().map(|e| e.reason.clone()),
            authoritative: inner.authoritative(),
        }
    }

    /// Counts for the services named; a service with no instance left is
    /// `None` (it is gone from the list).
    pub fn summaries<'a>(
        &self,
        names: impl IntoIterator<Item = &'a str>,
    ) -> Vec<(String, Option<Summary>)> {
        let inner = self.lock();
        names
            .into_iter()
            .map(|name| {
                let summary = inner.services.get(name).map(|m| summarize(name, m));
                (name.to_string(), summary)
            })
            .collect()
    }

    /// The changes to `service` the registry still holds (its watch
    /// history, shared by every service and bounded), oldest first, at most
    /// the last `limit`.
    pub fn history(&self, service: &str, limit: usize) -> Vec<Arc<Event>> {
        let inner = self.lock();
        let mut events: Vec<Arc<Event>> = inner
            .history
            .iter()
            .rev()
            .filter(|e| e.instance.spec.service == service)
            .take(limit)
            .cloned()
            .collect();
        events.reverse();
        events
    }

    /// Every service, with counts.
    pub fn list(&self) -> Listing {
        let inner = self.lock();
        let services = inner
            .services
            .iter()
            .map(|(name, instances)| summarize(name, instances))
            .collect();
        let held = inner.leases.values().filter(|l| l.held).count();
        let brake = BrakeView {
            engaged: inner.brake.engaged().map(
                |Engaged {
                     at_wall, reason, ..
                 }| {
                    (*at_wall, *at_wall + inner.brake.max_hold(), reason.clone())
                },
            ),
            held_leases: u32::try_from(held).unwrap_or(u32::MAX),
        };
        Listing {
            services,
            brake,
            warming_up: inner.warming,
            leases: u32::try_from(inner.leases.len()).unwrap_or(u32::MAX),
            position: inner.position(&self.epoch),
            authoritative: inner.authoritative(),
        }
    }
}

fn summarize(name: &str, instances: &BTreeMap<String, Instance>) -> Summary {
    let mut s = Summary {
        service: name.to_string(),
        ..Summary::default()
    };
    for i in instances.values() {
        s.instances += 1;
        *s.by_state.entry(i.state().as_str()).or_default() += 1;
        s.unhealthy += u32::from(i.health == Health::Unhealthy);
        s.expired_held += u32::from(i.expired_held);
        s.mod_revision = s.mod_revision.max(i.mod_revision);
    }
    s
}
