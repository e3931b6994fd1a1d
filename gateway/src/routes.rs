//! The route table: the routes file ([`RoutesFile`], checked in `file.rs`)
//! compiled into routes tried in file order (first match wins), with
//! per-route state that survives reloads of unchanged routes.

use std::{borrow::Cow, collections::BTreeSet, sync::Arc, time::Duration};

use http::{HeaderMap, Method};
use regex::Regex;

use crate::limits::{RateLimiter, Shedder};

pub mod file;

pub use file::{
    Bad, CorsSpec, DEFAULT_RULE, HashKey, RateLimitSpec, RetrySpec, RouteSpec, RoutesError,
    RoutesFile, UNMATCHED, valid_service,
};

/// How the path is matched.
#[derive(Debug, Clone)]
pub enum PathMatch {
    /// Any path.
    Any,
    /// Exactly this path.
    Exact(String),
    /// Starts with this.
    Prefix(String),
    /// Matches this regex.
    Regex(Regex),
}

/// A compiled route.
#[derive(Debug)]
pub struct Route {
    /// Its name, shared (logs and admin use it per request).
    pub name: Arc<str>,
    /// Its service, shared: a matched request takes a reference count, not
    /// a copy (which was an allocation per request).
    pub service: Arc<str>,
    /// As written.
    pub spec: RouteSpec,
    /// Compiled path matcher.
    pub path: PathMatch,
    /// Methods, parsed.
    pub methods: Vec<Method>,
    /// Headers, parsed.
    pub headers: Vec<(http::HeaderName, String)>,
    /// Hash key source.
    pub hash_key: Option<HashKey>,
    /// State kept across reloads while the spec is unchanged.
    pub state: Arc<RouteState>,
}

/// Per-route state: limits, and metric handles made once (a handle looked
/// up by labels on every request would allocate and hash each time).
#[derive(Debug)]
pub struct RouteState {
    /// The rate limiter.
    pub limiter: Option<RateLimiter>,
    /// The concurrency limit.
    pub shedder: Option<Shedder>,
    /// Request counters by status class and the latency histogram.
    pub metrics: RouteMetrics,
    /// The state of the route's service, found on first use (a route names
    /// one service, and the gateway keeps a service's state for good), so
    /// that requests skip the lookup by name.
    pub service: std::sync::OnceLock<Arc<crate::endpoints::ServiceState>>,
}

/// A route's metric handles.
#[derive(Debug)]
pub struct RouteMetrics {
    by_class: [metrics::Counter; 5],
    duration: metrics::Histogram,
}

// === impl RouteMetrics ===

impl RouteMetrics {
    /// Handles labelled with `route`.
    pub fn new(route: &str) -> Self {
        let counter = |class: &'static str| metrics::counter!("switchyard_gateway_requests_total", "route" => route.to_string(), "code" => class);
        Self {
            by_class: [
                counter("1xx"),
                counter("2xx"),
                counter("3xx"),
                counter("4xx"),
                counter("5xx"),
            ],
            duration: metrics::histogram!("switchyard_gateway_route_duration_seconds", "route" => route.to_string()),
        }
    }

    /// Counts one answer.
    pub fn record(&self, status: http::StatusCode, elapsed: Duration) {
        let class = usize::from((status.as_u16() / 100).clamp(1, 5) - 1);
        self.by_class[class].increment(1);
        self.duration.record(elapsed.as_secs_f64());
    }
}

/// The compiled table.
#[derive(Debug)]
pub struct RouteTable {
    /// Routes in file order.
    pub routes: Vec<Arc<Route>>,
    /// Whether the default `/<service>/` rule is on.
    pub default_rule: bool,
    /// Where its service name starts.
    pub default_rule_prefix: String,
    /// Its service cap.
    pub default_rule_max_services: usize,
    /// The state of default-rule routes, per service.
    pub default_route: Arc<Route>,
}

/// What matched a request.
#[derive(Debug, Clone)]
pub struct Matched {
    /// The route (for the default rule, its shared state).
    pub route: Arc<Route>,
    /// Whether the default rule matched, not a route of the file (a route
    /// of the file is never taken for it, whatever its name).
    pub default_rule: bool,
    /// The service (for the default rule, from the path).
    pub service: Arc<str>,
    /// Bytes of the path the route's prefix matched (for strip and rewrite).
    pub prefix_len: usize,
}

// === impl Route ===

impl Route {
    /// Compiles a checked spec, reusing `previous` state if the spec is unchanged.
    pub fn compile(spec: RouteSpec, previous: Option<&Route>) -> Self {
        let path = if !spec.path_exact.is_empty() {
            PathMatch::Exact(spec.path_exact.clone())
        } else if !spec.path_prefix.is_empty() {
            PathMatch::Prefix(spec.path_prefix.clone())
        } else if !spec.path_regex.is_empty() {
            Regex::new(&spec.path_regex).map_or(PathMatch::Any, PathMatch::Regex)
        } else {
            PathMatch::Any
        };
        let state = match previous {
            Some(p) if p.spec == spec => p.state.clone(),
            _ => Arc::new(RouteState {
                limiter: spec.rate_limit.as_ref().map(RateLimiter::new),
                shedder: (spec.concurrency_limit > 0).then(|| Shedder::new(spec.concurrency_limit)),
                metrics: RouteMetrics::new(&spec.name),
                service: std::sync::OnceLock::new(),
            }),
        };
        Self {
            name: Arc::from(spec.name.as_str()),
            service: Arc::from(spec.service.as_str()),
            methods: spec.methods.iter().filter_map(|m| m.parse().ok()).collect(),
            headers: spec
                .headers
                .iter()
                .filter_map(|(k, v)| Some((k.parse().ok()?, v.clone())))
                .collect(),
            hash_key: HashKey::parse(&spec.hash_key),
            path,
            spec,
            state,
        }
    }

    /// The matched prefix length if this route takes the request.
    fn matches(
        &self,
        method: &Method,
        host: &str,
        path: &str,
        headers: &HeaderMap,
    ) -> Option<usize> {
        if !self.methods.is_empty() && !self.methods.contains(method) {
            return None;
        }
        if !host_matches(&self.spec.host, host) {
            return None;
        }
        for (name, want) in &self.headers {
            let got = headers.get(name)?;
            if want != "*" && got.as_bytes() != want.as_bytes() {
                return None;
            }
        }
        match &self.path {
            PathMatch::Any => Some(0),
            PathMatch::Exact(p) => (path == p).then_some(0),
            PathMatch::Prefix(p) => path.starts_with(p.as_str()).then_some(p.len()),
            PathMatch::Regex(r) => r.is_match(path).then_some(0),
        }
    }
}

/// Whether `host` (without port and trailing dot, see
/// [`crate::authority`]) is the route's: the same name, case-blind, or
/// one below a `*.` pattern's suffix.
fn host_matches(pattern: &str, host: &str) -> bool {
    if pattern.is_empty() {
        return true;
    }
    match pattern.strip_prefix("*.") {
        Some(suffix) => {
            host.len() > suffix.len() + 1
                && host.as_bytes()[host.len() - suffix.len() - 1] == b'.'
                && host[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
        }
        None => pattern.eq_ignore_ascii_case(host),
    }
}

// === impl RouteTable ===

impl RouteTable {
    /// Compiles a checked file, carrying state over from `previous`.
    pub fn compile(file: RoutesFile, previous: Option<&RouteTable>) -> Self {
        let routes = file
            .routes
            .into_iter()
            .map(|spec| {
                let prev =
                    previous.and_then(|t| t.routes.iter().find(|r| r.spec.name == spec.name));
                Arc::new(Route::compile(spec, prev.map(|r| &**r)))
            })
            .collect();
        let default_spec = RouteSpec {
            name: DEFAULT_RULE.into(),
            service: "default".into(),
            strip_prefix: true,
            timeout: Duration::from_secs(15),
            per_try_timeout: Duration::from_secs(1),
            host_header: "preserve".into(),
            ..RouteSpec::default()
        };
        Self {
            routes,
            default_rule: file.default_rule,
            default_rule_prefix: file.default_rule_prefix,
            default_rule_max_services: file.default_rule_max_services,
            default_route: previous.map_or_else(
                || Arc::new(Route::compile(default_spec, None)),
                |p| p.default_route.clone(),
            ),
        }
    }

    /// The services the routes name.
    pub fn services(&self) -> BTreeSet<String> {
        self.routes.iter().map(|r| r.spec.service.clone()).collect()
    }

    /// First matching route, else the default rule's candidate service.
    pub fn find(
        &self,
        method: &Method,
        host: &str,
        path: &str,
        headers: &HeaderMap,
    ) -> Option<Matched> {
        for route in &self.routes {
            if let Some(prefix_len) = route.matches(method, host, path, headers) {
                return Some(Matched {
                    default_rule: false,
                    service: route.service.clone(),
                    route: route.clone(),
                    prefix_len,
                });
            }
        }
        if !self.default_rule {
            return None;
        }
        let rest = path.strip_prefix(self.default_rule_prefix.as_str())?;
        let (service, _) = rest.split_once('/').unwrap_or((rest, ""));
        // The control plane's own services (`switchyard-balancer`, ...) are
        // never reached this way: only a route can name them.
        let own = service.starts_with("switchyard-");
        (valid_service(service) && !own).then(|| Matched {
            default_rule: true,
            route: self.default_route.clone(),
            service: Arc::from(service),
            prefix_len: self.default_rule_prefix.len() + service.len(),
        })
    }
}

/// The path (and query) to send upstream for a matched request (borrowed
/// when the route rewrites nothing).
pub fn upstream_path<'a>(m: &Matched, path_and_query: &'a str) -> Cow<'a, str> {
    let spec = &m.route.spec;
    if m.prefix_len == 0 || !(spec.strip_prefix || spec.rewrite_prefix.is_some()) {
        return Cow::Borrowed(path_and_query);
    }
    let rest = path_and_query.get(m.prefix_len..).unwrap_or("");
    let replacement = spec.rewrite_prefix.as_deref().unwrap_or("/");
    let mut out = String::with_capacity(replacement.len() + rest.len() + 1);
    out.push_str(replacement);
    if out.ends_with('/') && rest.starts_with('/') {
        out.pop();
    } else if !out.ends_with('/')
        && !rest.is_empty()
        && !rest.starts_with('/')
        && !rest.starts_with('?')
    {
        out.push('/');
    }
    out.push_str(rest);
    if !out.starts_with('/') {
        out.insert(0, '/');
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests;
