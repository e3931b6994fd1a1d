//! Outlier detection, Envoy's way: consecutive failures, success rate with
//! minimums, doubling ejection time, `max_ejection_percent` with one ejection
//! always allowed. Pure: time comes in as arguments.

use std::{
    collections::{BTreeMap, HashMap},
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

/// Thresholds, configurable per service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutlierConfig {
    /// Failures in a row that eject; 0 disables.
    pub consecutive_failures: u32,
    /// First ejection time; doubles with each ejection.
    #[serde(with = "switchyard_runtime::settings::duration")]
    pub base_ejection_time: Duration,
    /// Cap of the ejection time.
    #[serde(with = "switchyard_runtime::settings::duration")]
    pub max_ejection_time: Duration,
    /// Most endpoints ejected at once, in percent (one is always allowed).
    pub max_ejection_percent: u32,
    /// Success-rate ejection needs this many endpoints with enough requests.
    pub success_rate_minimum_hosts: u32,
    /// ... each with at least this many requests in the interval.
    pub success_rate_request_volume: u64,
    /// Ejects below mean − factor × stdev.
    pub success_rate_stdev_factor: f64,
    /// The success-rate interval.
    #[serde(with = "switchyard_runtime::settings::duration")]
    pub interval: Duration,
    /// Below this healthy share (percent), picks spread over every SERVING endpoint.
    pub healthy_panic_threshold: u32,
}

/// Why an endpoint is ejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// Too many failures in a row.
    ConsecutiveFailures,
    /// Success rate far below its peers'.
    SuccessRate,
    /// Learned from a reporter that received it from a balancer.
    Reported,
}

/// An endpoint's ejection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ejection {
    /// Why.
    pub reason: Reason,
    /// Until when.
    pub until: Instant,
}

/// Outlier state of one service.
#[derive(Debug, Default)]
pub struct Detector {
    endpoints: BTreeMap<String, EndpointState>,
    window_started: Option<Instant>,
}

#[derive(Debug, Default)]
struct EndpointState {
    ejection: Option<Ejection>,
    times_ejected: u32,
    last_change: Option<Instant>,
    consecutive: HashMap<String, u32>,
    requests: u64,
    failures: u64,
}

/// One reporter's view of one endpoint over one interval.
#[derive(Debug, Clone, Default)]
pub struct Observation {
    /// Requests finished.
    pub requests: u64,
    /// Of which failed.
    pub failures: u64,
    /// Failures in a row at the end of the interval.
    pub consecutive: u32,
    /// A balancer ejection the reporter holds, with the time left.
    pub ejected_for: Option<Duration>,
    /// Times ejected, as the reporter last received.
    pub times_ejected: u32,
}

// === impl OutlierConfig ===

impl Default for OutlierConfig {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            base_ejection_time: Duration::from_secs(30),
            max_ejection_time: Duration::from_secs(300),
            max_ejection_percent: 50,
            success_rate_minimum_hosts: 5,
            success_rate_request_volume: 100,
            success_rate_stdev_factor: 1.9,
            interval: Duration::from_secs(10),
            healthy_panic_threshold: 50,
        }
    }
}

// === impl Detector ===

impl Detector {
    /// Keeps state only for `ids` (the service's current endpoints).
    pub fn retain(&mut self, ids: &[&str]) {
        self.endpoints.retain(|id, _| ids.contains(&id.as_str()));
        for id in ids {
            self.endpoints.entry((*id).to_string()).or_default();
        }
    }

    /// The ejection of `id`, if it is ejected at `now`.
    pub fn ejection(&self, id: &str, now: Instant) -> Option<Ejection> {
        self.endpoints.get(id)?.ejection.filter(|e| e.until > now)
    }

    /// Times `id` was ejected (decays while it behaves).
    pub fn times_ejected(&self, id: &str) -> u32 {
        self.endpoints.get(id).map_or(0, |e| e.times_ejected)
    }

    /// Endpoints ejected at `now`.
    pub fn ejected_count(&self, now: Instant) -> usize {
        self.endpoints
            .values()
            .filter(|e| e.ejection.is_some_and(|x| x.until > now))
            .count()
    }

    /// Takes in one reporter's observation of `id`. Ejects on consecutive
    /// failures only when `decide` (enough data since start). Returns true
    /// when an ejection began.
    pub fn observe(
        &mut self,
        cfg: &OutlierConfig,
        reporter: &str,
        id: &str,
        o: &Observation,
        now: Instant,
        decide: bool,
    ) -> bool {
        let population = self.endpoints.len();
        let ejected = self.ejected_count(now);
        let Some(e) = self.endpoints.get_mut(id) else {
            return false;
        };
        e.requests += o.requests;
        e.failures += o.failures.min(o.requests);
        e.times_ejected = e.times_ejected.max(o.times_ejected);
        if let Some(left) = o.ejected_for.filter(|d| !d.is_zero()) {
            // Adopt what a previous balancer decided, so a restart does not
            // un-eject. Keep whichever lasts longer.
            let until = now + left;
            if e.ejection.is_none_or(|x| x.until < until) {
                let was = e.ejection.is_some_and(|x| x.until > now);
                let reason = e
                    .ejection
                    .filter(|x| x.until > now)
                    .map_or(Reason::Reported, |x| x.reason);
                e.ejection = Some(Ejection { reason, until });
                return !was;
            }
        }
        e.consecutive.insert(reporter.to_string(), o.consecutive);
        let worst = e.consecutive.values().copied().max().unwrap_or(0);
        let can_eject = ejected < max_ejections(cfg, population);
        if decide
            && cfg.consecutive_failures > 0
            && worst >= cfg.consecutive_failures
            && can_eject
            && e.ejection.is_none_or(|x| x.until <= now)
        {
            eject(e, cfg, Reason::ConsecutiveFailures, now);
            return true;
        }
        false
    }

    /// Runs the success-rate check once per interval, and lets ejection
    /// multipliers decay for endpoints that stayed in. Returns the ids ejected.
    pub fn tick(&mut self, cfg: &OutlierConfig, now: Instant, decide: bool) -> Vec<String> {
        let started = *self.window_started.get_or_insert(now);
        if now.saturating_duration_since(started) < cfg.interval {
            return Vec::new();
        }
        self.window_started = Some(now);
        for e in self.endpoints.values_mut() {
            let out = e.ejection.is_none_or(|x| x.until <= now);
            if out
                && e.times_ejected > 0
                && e.last_change
                    .is_none_or(|t| now.saturating_duration_since(t) >= cfg.interval)
            {
                e.times_ejected -= 1;
                e.last_change = Some(now);
            }
        }
        let ejected = if decide {
            self.success_rate(cfg, now)
        } else {
            Vec::new()
        };
        for e in self.endpoints.values_mut() {
            e.requests = 0;
            e.failures = 0;
        }
        ejected
    }

    fn success_rate(&mut self, cfg: &OutlierConfig, now: Instant) -> Vec<String> {
        let rates: Vec<(String, f64)> = self
            .endpoints
            .iter()
            .filter(|(_, e)| {
                e.requests >= cfg.success_rate_request_volume
                    && e.ejection.is_none_or(|x| x.until <= now)
            })
            .map(|(id, e)| (id.clone(), 1.0 - e.failures as f64 / e.requests as f64))
            .collect();
        if rates.len() < cfg.success_rate_minimum_hosts as usize {
            return Vec::new();
        }
        let n = rates.len() as f64;
        let mean = rates.iter().map(|(_, r)| r).sum::<f64>() / n;
        let stdev = (rates.iter().map(|(_, r)| (r - mean).powi(2)).sum::<f64>() / n).sqrt();
        let floor = mean - cfg.success_rate_stdev_factor * stdev;
        let population = self.endpoints.len();
        let mut out = Vec::new();
        let mut worst_first = rates;
        worst_first.sort_by(|a, b| a.1.total_cmp(&b.1));
        for (id, rate) in worst_first {
            if rate >= floor || self.ejected_count(now) >= max_ejections(cfg, population) {
                break;
            }
            if let Some(e) = self.endpoints.get_mut(&id) {
                eject(e, cfg, Reason::SuccessRate, now);
                out.push(id);
            }
        }
        out
    }
}

/// One endpoint can always be ejected, else at most the configured share.
fn max_ejections(cfg: &OutlierConfig, population: usize) -> usize {
    (population * cfg.max_ejection_percent as usize / 100).max(1)
}

fn eject(e: &mut EndpointState, cfg: &OutlierConfig, reason: Reason, now: Instant) {
    let factor = 1u32 << e.times_ejected.min(16);
    let time = cfg
        .base_ejection_time
        .saturating_mul(factor)
        .min(cfg.max_ejection_time);
    e.ejection = Some(Ejection {
        reason,
        until: now + time,
    });
    e.times_ejected += 1;
    e.last_change = Some(now);
    e.consecutive.clear();
    metrics::counter!("switchyard_balancer_ejections_total", "reason" => match reason {
        Reason::ConsecutiveFailures => "consecutive_failures",
        Reason::SuccessRate => "success_rate",
        Reason::Reported => "reported",
    })
    .increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failing(consecutive: u32) -> Observation {
        Observation {
            requests: u64::from(consecutive),
            failures: u64::from(consecutive),
            consecutive,
            ..Observation::default()
        }
    }

    #[test]
    fn consecutive_failures_eject_with_doubling_time() {
        let cfg = OutlierConfig::default();
        let mut d = Detector::default();
        d.retain(&["a", "b", "c", "d"]);
        let t0 = Instant::now();
        assert!(!d.observe(&cfg, "gw", "a", &failing(4), t0, true));
        assert!(d.observe(&cfg, "gw", "a", &failing(5), t0, true));
        let e = d.ejection("a", t0).expect("ejected");
        assert_eq!(e.until - t0, Duration::from_secs(30));
        // After it expires, the next ejection lasts twice as long.
        let t1 = t0 + Duration::from_secs(31);
        assert!(d.ejection("a", t1).is_none());
        assert!(d.observe(&cfg, "gw", "a", &failing(5), t1, true));
        assert_eq!(
            d.ejection("a", t1).expect("again").until - t1,
            Duration::from_secs(60)
        );
    }

    #[test]
    fn no_decision_without_enough_data_and_one_is_always_allowed() {
        let cfg = OutlierConfig::default();
        let mut d = Detector::default();
        d.retain(&["a", "b"]);
        let t = Instant::now();
        assert!(
            !d.observe(&cfg, "gw", "a", &failing(9), t, false),
            "no data yet"
        );
        assert!(
            d.observe(&cfg, "gw", "a", &failing(9), t, true),
            "one of two can be ejected"
        );
        assert!(
            !d.observe(&cfg, "gw", "b", &failing(9), t, true),
            "50% of 2 is 1: no second"
        );
    }

    #[test]
    fn success_rate_needs_minimums_and_ejects_the_outlier() {
        let cfg = OutlierConfig::default();
        let mut d = Detector::default();
        let ids = ["a", "b", "c", "d", "e", "f"];
        d.retain(&ids);
        let t0 = Instant::now();
        assert!(d.tick(&cfg, t0, true).is_empty());
        for id in ids {
            let failures = if id == "f" { 60 } else { 1 };
            let o = Observation {
                requests: 200,
                failures,
                consecutive: 0,
                ..Observation::default()
            };
            d.observe(&cfg, "gw", id, &o, t0, true);
        }
        assert_eq!(d.tick(&cfg, t0 + Duration::from_secs(10), true), ["f"]);
        // Four endpoints with volume are below the minimum of five.
        let mut d = Detector::default();
        d.retain(&ids);
        d.tick(&cfg, t0, true);
        for id in &ids[..4] {
            let failures = if *id == "a" { 150 } else { 0 };
            let o = Observation {
                requests: 200,
                failures,
                consecutive: 0,
                ..Observation::default()
            };
            d.observe(&cfg, "gw", id, &o, t0, true);
        }
        assert!(d.tick(&cfg, t0 + Duration::from_secs(10), true).is_empty());
    }

    #[test]
    fn reported_ejections_are_adopted() {
        let cfg = OutlierConfig::default();
        let mut d = Detector::default();
        d.retain(&["a", "b"]);
        let t = Instant::now();
        let o = Observation {
            ejected_for: Some(Duration::from_secs(20)),
            times_ejected: 2,
            ..Observation::default()
        };
        assert!(d.observe(&cfg, "gw", "a", &o, t, false));
        assert_eq!(
            d.ejection("a", t).expect("adopted").until - t,
            Duration::from_secs(20)
        );
        assert_eq!(d.times_ejected("a"), 2);
    }
}
