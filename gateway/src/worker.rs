//! The data plane's workers: one single-threaded tokio runtime per worker,
//! each accepting on a listening socket of its own (`SO_REUSEPORT`: the
//! kernel spreads new connections over them) and serving its connections
//! from start to end with its own idle upstream connections and its own
//! timer, as nginx's worker processes do and as Pingora's runtimes without
//! work stealing do.
//!
//! Why not tokio's multi-threaded scheduler: with the proxy, its backends
//! and the load generator sharing two cores, its workers woke one another
//! for each other's tasks (work stealing, wake-ups across threads): twice
//! nginx's context switches per second and three quarters of its
//! throughput, though it spent less CPU per request (issue 20, measured in
//! `bench/RESULTS.md`). A worker's tasks never leave its thread.
//!
//! Worker 0 is the process's own runtime, which also runs the control
//! plane and the admin API; workers 1 and up are threads started here.

use std::{cell::Cell, future::Future};

use tokio_util::sync::CancellationToken;

thread_local! {
    static INDEX: Cell<usize> = const { Cell::new(0) };
}

/// This thread's worker: 0 on the process's own runtime and on any thread
/// that is not a worker's.
pub fn index() -> usize {
    INDEX.with(Cell::get)
}

/// One value per worker, each worker reaching its own ([`PerWorker::get`]).
#[derive(Debug)]
pub struct PerWorker<T>(Box<[T]>);

// === impl PerWorker ===

impl<T> PerWorker<T> {
    /// A value for each of `workers` workers (at least one).
    pub fn new(workers: usize, mut make: impl FnMut() -> T) -> Self {
        Self((0..workers.max(1)).map(|_| make()).collect())
    }

    /// This thread's worker's value.
    pub fn get(&self) -> &T {
        self.at(index())
    }

    /// Worker `i`'s value.
    pub fn at(&self, i: usize) -> &T {
        &self.0[i % self.0.len()]
    }

    /// Every worker's value.
    pub fn all(&self) -> impl Iterator<Item = &T> {
        self.0.iter()
    }
}

/// Starts worker `i` (1 and up) on a thread of its own running `job` on a
/// single-threaded runtime. The handle ends when `job` has; the runtime
/// keeps running until `release` (connections made on it, such as an
/// upstream's HTTP/2 connection, may still serve other workers that are
/// draining), then ends with its thread.
pub fn start<F, Fut>(
    i: usize,
    release: CancellationToken,
    job: F,
) -> std::io::Result<tokio::task::JoinHandle<()>>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (done, finished) = tokio::sync::oneshot::channel::<()>();
    std::thread::Builder::new()
        .name(format!("gw-worker-{i}"))
        .spawn(move || {
            INDEX.with(|c| c.set(i));
            runtime.block_on(async move {
                job().await;
                let _ = done.send(());
                release.cancelled().await;
            });
        })?;
    Ok(tokio::spawn(async move {
        let _ = finished.await;
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_worker_reaches_its_own_slot_and_keeps_running_until_released() {
        let slots = std::sync::Arc::new(PerWorker::new(3, {
            let mut n = 0;
            move || {
                n += 1;
                n
            }
        }));
        assert_eq!(*slots.get(), 1, "the process's own runtime is worker 0");
        let release = CancellationToken::new();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let seen = slots.clone();
        let done = start(2, release.clone(), move || async move {
            let _ = tx.send((index(), *seen.get()));
        })
        .expect("a worker");
        done.await.expect("the job ended");
        assert_eq!(rx.await.expect("the job ran"), (2, 3));
        release.cancel();
    }
}
