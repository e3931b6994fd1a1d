//! A coarse timer for the deadlines armed on every request that almost
//! never fire: the request-header deadline hyper sets while it waits for a
//! request head, and the per-try timeout.
//!
//! tokio's timer enters each sleep into its wheel on the first poll and
//! takes it out when dropped, each under a lock: with the boxing hyper adds,
//! about 600 instructions per sleep, twice per proxied request, in the
//! profile in `bench/PROFILE.md`. Here arming is a push onto a list,
//! cancelling is a flag, and one ticker task per timer wakes what expired,
//! [`TICK`] at a time: a deadline fires up to one tick late, which is no
//! matter for timeouts of a second or more. The ticker sleeps while nothing
//! is armed.

use std::{
    pin::Pin,
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    task::{Context, Poll, Waker},
    time::{Duration, Instant},
};

use switchyard_time::sync::lock;
use tokio::sync::Notify;

/// How late a deadline may fire.
pub const TICK: Duration = Duration::from_millis(20);

/// The timer (cheap to clone). Its ticker runs on the runtime of the first
/// sleep that is polled.
#[derive(Debug, Clone, Default)]
pub struct Coarse {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Deadlines are kept as nanoseconds since this instant, so that a
    /// sleep can move its deadline with one store ([`Sleep::reset`]).
    base: Instant,
    armed: Mutex<Vec<Arc<Entry>>>,
    /// Something was armed on an empty list.
    first: Notify,
    ticking: AtomicBool,
}

#[derive(Debug)]
struct Entry {
    /// Nanoseconds since [`Inner::base`].
    deadline: AtomicU64,
    /// Fired, or its sleep was dropped: the ticker forgets it.
    done: AtomicBool,
    fired: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

/// A sleep until a deadline; armed when first polled.
#[derive(Debug)]
pub struct Sleep {
    deadline: Instant,
    timer: Arc<Inner>,
    entry: Option<Arc<Entry>>,
}

/// A future that gave up at its deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed;

// === impl Coarse ===

impl Coarse {
    /// A timer with nothing armed.
    pub fn new() -> Self {
        Self::default()
    }

    /// A sleep that ends at `deadline` (up to [`TICK`] later).
    pub fn sleep_until(&self, deadline: Instant) -> Sleep {
        Sleep {
            deadline,
            timer: self.inner.clone(),
            entry: None,
        }
    }

    /// Runs `future` until `deadline`.
    pub async fn timeout_at<F: Future>(
        &self,
        deadline: Instant,
        future: F,
    ) -> Result<F::Output, Elapsed> {
        let mut sleep = self.sleep_until(deadline);
        race(future, &mut sleep).await
    }

    /// Sleeps armed right now (for tests).
    #[cfg(test)]
    fn armed(&self) -> usize {
        lock(&self.inner.armed)
            .iter()
            .filter(|e| !e.done.load(Ordering::Acquire))
            .count()
    }
}

impl hyper::rt::Timer for Coarse {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(self.sleep_until(Instant::now() + duration))
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(Coarse::sleep_until(self, deadline))
    }
}

// === impl Inner ===

impl Default for Inner {
    fn default() -> Self {
        Self {
            base: Instant::now(),
            armed: Mutex::default(),
            first: Notify::new(),
            ticking: AtomicBool::new(false),
        }
    }
}

impl Inner {
    /// `at` as nanoseconds since `base` (0 for anything before it).
    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX)
    }

    fn arm(self: &Arc<Self>, entry: Arc<Entry>) {
        let was_empty = {
            let mut armed = lock(&self.armed);
            armed.push(entry);
            armed.len() == 1
        };
        if !self.ticking.swap(true, Ordering::AcqRel) {
            tokio::spawn(tick(Arc::downgrade(self)));
        }
        if was_empty {
            self.first.notify_one();
        }
    }

    /// Wakes what expired and forgets what is done; whether any is left.
    fn expire(&self, now: Instant) -> bool {
        let now = self.nanos(now);
        let mut armed = lock(&self.armed);
        armed.retain(|e| {
            if e.done.load(Ordering::Acquire) {
                return false;
            }
            if e.deadline.load(Ordering::Acquire) > now {
                return true;
            }
            e.fired.store(true, Ordering::Release);
            e.done.store(true, Ordering::Release);
            if let Some(w) = lock(&e.waker).take() {
                w.wake();
            }
            false
        });
        !armed.is_empty()
    }
}

/// The ticker: every [`TICK`] while anything is armed, else asleep until
/// something is. Ends when its timer is gone.
async fn tick(timer: Weak<Inner>) {
    loop {
        let Some(inner) = timer.upgrade() else { return };
        if inner.expire(Instant::now()) {
            drop(inner);
            tokio::time::sleep(TICK).await;
        } else {
            // An arm since `expire` has left a permit: no wake-up is lost.
            // Waking each second lets the ticker end with its timer.
            tokio::select! {
                () = inner.first.notified() => {}
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }
}

// === impl Sleep ===

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        match &self.entry {
            Some(entry) => {
                if entry.fired.load(Ordering::Acquire) {
                    return Poll::Ready(());
                }
                let mut waker = lock(&entry.waker);
                if !waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    *waker = Some(cx.waker().clone());
                }
                drop(waker);
                // Fired between the check and the registration.
                if entry.fired.load(Ordering::Acquire) {
                    return Poll::Ready(());
                }
                Poll::Pending
            }
            None => {
                // No clock reading here: the deadlines armed on every
                // request are seconds away, and one already past fires at
                // the next tick.
                let entry = Arc::new(Entry {
                    deadline: AtomicU64::new(self.timer.nanos(self.deadline)),
                    done: AtomicBool::new(false),
                    fired: AtomicBool::new(false),
                    waker: Mutex::new(Some(cx.waker().clone())),
                });
                self.timer.arm(entry.clone());
                self.entry = Some(entry);
                Poll::Pending
            }
        }
    }
}

/// `future`, or [`Elapsed`] if `sleep` ends first.
async fn race<F: Future>(future: F, sleep: &mut Sleep) -> Result<F::Output, Elapsed> {
    let future = std::pin::pin!(future);
    match futures_util::future::select(future, sleep).await {
        futures_util::future::Either::Left((output, _)) => Ok(output),
        futures_util::future::Either::Right(((), _)) => Err(Elapsed),
    }
}

impl Sleep {
    /// Runs `future` until `deadline`, this sleep moved to it. A caller that
    /// keeps a sleep (a client connection's header deadline, idle while its
    /// request is served) lends it for a request's timeouts this way, which
    /// spares arming a new one (an allocation, a lock and the ticker's visit)
    /// for each.
    pub async fn timeout_at<F: Future>(
        &mut self,
        deadline: Instant,
        future: F,
    ) -> Result<F::Output, Elapsed> {
        self.reset(deadline);
        race(future, self).await
    }

    /// Moves the deadline: an armed sleep keeps its place in the timer and
    /// only its deadline changes (one store), so a connection can keep one
    /// sleep for all its request heads.
    pub fn reset(&mut self, deadline: Instant) {
        self.deadline = deadline;
        if let Some(entry) = &self.entry {
            if entry.fired.load(Ordering::Acquire) {
                // Fired already: armed anew when next polled.
                entry.done.store(true, Ordering::Release);
                self.entry = None;
            } else {
                entry
                    .deadline
                    .store(self.timer.nanos(deadline), Ordering::Release);
            }
        }
    }
}

impl hyper::rt::Sleep for Sleep {}

impl Drop for Sleep {
    fn drop(&mut self) {
        if let Some(entry) = &self.entry {
            entry.done.store(true, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_sleep_ends_at_its_deadline_within_a_tick() {
        let timer = Coarse::new();
        for wait in [
            Duration::ZERO,
            Duration::from_millis(30),
            Duration::from_millis(120),
        ] {
            let start = Instant::now();
            timer.sleep_until(start + wait).await;
            let took = start.elapsed();
            assert!(took >= wait, "{took:?} < {wait:?}");
            assert!(took < wait + TICK * 5, "{took:?} for {wait:?}");
        }
    }

    #[tokio::test]
    async fn timeouts_give_up_at_the_deadline_and_dropped_sleeps_are_forgotten() {
        let timer = Coarse::new();
        let start = Instant::now();
        let slow = timer
            .timeout_at(
                start + Duration::from_millis(50),
                std::future::pending::<()>(),
            )
            .await;
        assert_eq!(slow, Err(Elapsed));
        assert!(start.elapsed() >= Duration::from_millis(50));
        let quick = timer
            .timeout_at(Instant::now() + Duration::from_secs(30), async { 7 })
            .await;
        assert_eq!(quick, Ok(7));
        // Armed and then dropped (the answer came first): nothing is left
        // armed, and the ticker forgets them.
        for _ in 0..100 {
            let answered = timer
                .timeout_at(
                    Instant::now() + Duration::from_secs(30),
                    tokio::task::yield_now(),
                )
                .await;
            assert_eq!(answered, Ok(()));
        }
        assert_eq!(timer.armed(), 0);
        tokio::time::sleep(TICK * 3).await;
        assert!(
            lock(&timer.inner.armed).is_empty(),
            "done entries are dropped"
        );
    }

    #[tokio::test]
    async fn a_reset_sleep_keeps_its_entry_and_ends_at_the_new_deadline() {
        let timer = Coarse::new();
        let start = Instant::now();
        let mut sleep = timer.sleep_until(start + Duration::from_millis(40));
        // Armed by a first poll, then moved later before it fires.
        assert!(futures_util::poll!(&mut sleep).is_pending());
        sleep.reset(start + Duration::from_millis(200));
        assert_eq!(timer.armed(), 1);
        (&mut sleep).await;
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(200), "{took:?}");
        assert!(took < Duration::from_millis(200) + TICK * 5, "{took:?}");
        // Fired, then reset: it sleeps again until its new deadline.
        let again = Instant::now();
        sleep.reset(again + Duration::from_millis(60));
        (&mut sleep).await;
        assert!(again.elapsed() >= Duration::from_millis(60));
        // Moved earlier: it ends sooner.
        let mut long = timer.sleep_until(Instant::now() + Duration::from_secs(30));
        assert!(futures_util::poll!(&mut long).is_pending());
        let early = Instant::now();
        long.reset(early + Duration::from_millis(30));
        (&mut long).await;
        assert!(early.elapsed() < Duration::from_secs(1));
    }

    #[tokio::test]
    async fn many_sleeps_with_different_deadlines_each_end_in_order() {
        let timer = Coarse::new();
        let start = Instant::now();
        let mut handles = Vec::new();
        for i in (1..=5u64).rev() {
            let timer = timer.clone();
            handles.push(tokio::spawn(async move {
                timer
                    .sleep_until(start + Duration::from_millis(40 * i))
                    .await;
                (i, start.elapsed())
            }));
        }
        for h in handles {
            let (i, took) = h.await.expect("task");
            let want = Duration::from_millis(40 * i);
            assert!(took >= want && took < want + TICK * 5, "{i}: {took:?}");
        }
    }
}
