//! An injectable clock for timers: lease expiry, ejection, the brake, backoff.
//!
//! Production code uses [`SystemClock`]. Tests over real sockets use
//! [`ManualClock`] and move time by hand: `tokio::time::pause()` would race
//! ahead while a socket waits, so it is only for tests without I/O.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use tokio::sync::watch;

/// A boxed future returned by [`Clock::sleep_until`].
pub type Sleep = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// A shared clock.
pub type SharedClock = Arc<dyn Clock>;

/// Time as the timers see it.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// Monotonic now.
    fn now(&self) -> Instant;
    /// Wall-clock now, for timestamps people read.
    fn wall(&self) -> SystemTime;
    /// Completes once `now() >= deadline`.
    fn sleep_until(&self, deadline: Instant) -> Sleep;
    /// Completes after `d` of this clock's time.
    fn sleep(&self, d: Duration) -> Sleep {
        self.sleep_until(self.now() + d)
    }
}

/// The real clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

/// A clock that moves only when told to.
#[derive(Debug, Clone)]
pub struct ManualClock {
    base: Instant,
    base_wall: SystemTime,
    offset: Arc<watch::Sender<Duration>>,
}

/// The real clock, shared.
pub fn system() -> SharedClock {
    Arc::new(SystemClock)
}

// === impl SystemClock ===

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn wall(&self) -> SystemTime {
        SystemTime::now()
    }

    fn sleep_until(&self, deadline: Instant) -> Sleep {
        Box::pin(tokio::time::sleep_until(deadline.into()))
    }
}

// === impl ManualClock ===

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl ManualClock {
    /// A clock standing at the real now.
    pub fn new() -> Self {
        Self {
            base: Instant::now(),
            base_wall: SystemTime::now(),
            offset: Arc::new(watch::Sender::new(Duration::ZERO)),
        }
    }

    /// Moves time forward by `d` and wakes every sleeper whose deadline passed.
    pub fn advance(&self, d: Duration) {
        self.offset.send_modify(|offset| *offset += d);
    }

    /// This clock as a [`SharedClock`].
    pub fn shared(&self) -> SharedClock {
        Arc::new(self.clone())
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.base + *self.offset.borrow()
    }

    fn wall(&self) -> SystemTime {
        self.base_wall + *self.offset.borrow()
    }

    fn sleep_until(&self, deadline: Instant) -> Sleep {
        let mut rx = self.offset.subscribe();
        let base = self.base;
        Box::pin(async move {
            // The sender lives as long as any clone of the clock; if every
            // clone is gone, nobody can advance time and we sleep forever.
            let _ = rx.wait_for(|offset| base + *offset >= deadline).await;
            if rx.has_changed().is_err() {
                std::future::pending::<()>().await;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn manual_sleep_wakes_only_after_advance() {
        let clock = ManualClock::new();
        let start = clock.now();
        let mut sleep = tokio::spawn(clock.sleep(Duration::from_secs(10)));
        clock.advance(Duration::from_secs(9));
        let early = tokio::time::timeout(Duration::from_millis(50), &mut sleep).await;
        assert!(early.is_err(), "woke before its deadline");
        clock.advance(Duration::from_secs(1));
        sleep.await.expect("sleep task");
        assert_eq!(clock.now() - start, Duration::from_secs(10));
    }

    #[tokio::test]
    async fn system_clock_sleeps_for_real() {
        let clock = SystemClock;
        let start = Instant::now();
        clock.sleep(Duration::from_millis(20)).await;
        assert!(start.elapsed() >= Duration::from_millis(20));
    }
}
