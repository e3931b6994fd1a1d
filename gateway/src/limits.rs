//! Rate limits (token buckets, per route or per client key) and concurrency
//! limits with load shedding.
//!
//! Why not tower's `RateLimit` and `ConcurrencyLimit`: they make callers wait
//! for capacity; a gateway must answer at once (429 or 503 with
//! Retry-After), per client key, with state that survives route reloads.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::routes::file::RateLimitSpec;

/// Most client buckets kept per route; the idlest go first beyond it.
const MAX_CLIENT_BUCKETS: usize = 10_000;

/// One token bucket.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// A route's rate limiter.
#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    per_client: bool,
    /// The client key source: `None` is the client IP.
    pub header: Option<http::HeaderName>,
    buckets: Mutex<HashMap<String, Bucket>>,
}

/// A route's concurrency limit.
#[derive(Debug)]
pub struct Shedder {
    permits: Arc<Semaphore>,
    limit: usize,
}

// === impl RateLimiter ===

impl RateLimiter {
    /// From a checked spec.
    pub fn new(spec: &RateLimitSpec) -> Self {
        Self {
            rate: spec.per_second,
            burst: spec.burst,
            per_client: spec.per_client,
            header: spec
                .client_key
                .strip_prefix("header:")
                .and_then(|h| h.parse().ok()),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Whether it keys by client.
    pub fn per_client(&self) -> bool {
        self.per_client
    }

    /// Takes a token for `key` (ignored unless per client); Err carries how
    /// long until one is available.
    pub fn acquire(&self, key: &str, now: Instant) -> Result<(), Duration> {
        let key = if self.per_client { key } else { "" };
        let mut buckets = switchyard_time::sync::lock(&self.buckets);
        if buckets.len() >= MAX_CLIENT_BUCKETS && !buckets.contains_key(key) {
            let oldest = buckets
                .iter()
                .min_by_key(|(_, b)| b.at)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                buckets.remove(&k);
            }
        }
        let b = buckets.entry(key.to_string()).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.rate).min(self.burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / self.rate))
        }
    }
}

// === impl Shedder ===

impl Shedder {
    /// At most `limit` in flight.
    pub fn new(limit: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(limit)),
            limit,
        }
    }

    /// A permit, or None when full (shed the request).
    pub fn try_acquire(&self) -> Option<OwnedSemaphorePermit> {
        self.permits.clone().try_acquire_owned().ok()
    }

    /// Requests in flight.
    pub fn in_flight(&self) -> usize {
        self.limit - self.permits.available_permits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_burst_then_refills() {
        let spec = RateLimitSpec {
            per_second: 2.0,
            burst: 3.0,
            per_client: true,
            client_key: String::new(),
        };
        let l = RateLimiter::new(&spec);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(l.acquire("a", t0).is_ok());
        }
        let wait = l.acquire("a", t0).expect_err("empty");
        assert!(wait <= Duration::from_millis(500) && wait > Duration::ZERO);
        assert!(
            l.acquire("b", t0).is_ok(),
            "another client has its own bucket"
        );
        assert!(
            l.acquire("a", t0 + Duration::from_millis(500)).is_ok(),
            "refilled"
        );
    }

    #[test]
    fn shedder_sheds_when_full() {
        let s = Shedder::new(1);
        let p = s.try_acquire().expect("first");
        assert!(s.try_acquire().is_none());
        assert_eq!(s.in_flight(), 1);
        drop(p);
        assert!(s.try_acquire().is_some());
    }
}
