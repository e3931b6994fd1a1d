//! What `/readyz` reports: the things a process still waits for.
//!
//! DESIGN: `/readyz` turns 200 once the process can do its job and *stays*
//! 200 through later control-plane outages, so a blip never takes a healthy
//! container out of rotation. Hence readiness latches.

use std::{
    collections::BTreeSet,
    sync::{Arc, Mutex},
};

/// Shared readiness state; clones share it. The default waits for nothing
/// (ready at once).
#[derive(Debug, Clone)]
pub struct Readiness {
    inner: Arc<Mutex<State>>,
}

#[derive(Debug, Default)]
struct State {
    waiting_for: BTreeSet<String>,
    latched: bool,
}

// === impl Readiness ===

impl Default for Readiness {
    fn default() -> Self {
        Self::waiting_for(Vec::<String>::new())
    }
}

impl Readiness {
    /// Not ready until every item of `waiting_for` is [`done`](Self::done).
    pub fn waiting_for<I, S>(items: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let waiting_for: BTreeSet<String> = items.into_iter().map(Into::into).collect();
        let latched = waiting_for.is_empty();
        Self {
            inner: Arc::new(Mutex::new(State {
                waiting_for,
                latched,
            })),
        }
    }

    /// Marks `item` as done. Once nothing is left, the process is ready for good.
    pub fn done(&self, item: &str) {
        let mut state = self.lock();
        if state.waiting_for.remove(item) && state.waiting_for.is_empty() {
            state.latched = true;
            tracing::info!("ready");
        }
    }

    /// True once everything was done at least once.
    pub fn is_ready(&self) -> bool {
        self.lock().latched
    }

    /// What is still awaited (empty once ready).
    pub fn pending(&self) -> Vec<String> {
        self.lock().waiting_for.iter().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is two plain fields; a panic elsewhere cannot leave it torn.
        switchyard_time::sync::lock(&self.inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latches_once_everything_is_done() {
        let r = Readiness::waiting_for(["registry", "routes"]);
        assert!(!r.is_ready());
        r.done("registry");
        assert_eq!(r.pending(), ["routes"]);
        r.done("routes");
        assert!(r.is_ready());
        r.done("routes");
        assert!(r.is_ready(), "stays ready");
        assert!(Readiness::waiting_for(Vec::<String>::new()).is_ready());
        assert!(Readiness::default().is_ready(), "nothing to wait for");
    }
}
