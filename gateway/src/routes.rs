//! The routes file: parsed, checked, compiled into a table tried in file
//! order (first match wins), with per-route state that survives reloads of
//! unchanged routes.

use std::{
    borrow::Cow,
    collections::{BTreeMap, BTreeSet},
    path::Path,
    sync::Arc,
    time::Duration,
};

use http::{HeaderMap, Method};
use regex::Regex;
use serde::{Deserialize, Serialize};
use switchyard_runtime::settings::duration;

use crate::limits::{RateLimiter, Shedder};

/// The routes file as written.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoutesFile {
    /// Map `/<service>/...` to a registry service of that name (prefix stripped).
    pub default_rule: bool,
    /// Where the default rule's service name starts: `/` (the default) for
    /// `/<service>/...`, or e.g. `/api/service/` for `/api/service/<service>/...`.
    pub default_rule_prefix: String,
    /// Most services the default rule may subscribe to.
    pub default_rule_max_services: usize,
    /// The routes, tried in this order.
    #[serde(rename = "route")]
    pub routes: Vec<RouteSpec>,
}

/// One route as written.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RouteSpec {
    /// Unique name (for metrics, admin and state carried over reloads).
    pub name: String,
    /// The registry service to send to.
    pub service: String,
    /// Host to match: exact, or `*.example.com`; empty matches any.
    pub host: String,
    /// Exact path.
    pub path_exact: String,
    /// Path prefix.
    pub path_prefix: String,
    /// Path regex (anchored by you).
    pub path_regex: String,
    /// Methods; empty matches any.
    pub methods: Vec<String>,
    /// Headers that must be present with these values (`*`: any value).
    pub headers: BTreeMap<String, String>,
    /// Remove the matched prefix before forwarding.
    pub strip_prefix: bool,
    /// Replace the matched prefix with this before forwarding.
    pub rewrite_prefix: Option<String>,
    /// `preserve` (default), `upstream` (the endpoint's address), or a literal host.
    pub host_header: String,
    /// Whole-request deadline, retries included.
    #[serde(with = "duration")]
    pub timeout: Duration,
    /// Deadline of one attempt until response headers.
    #[serde(with = "duration")]
    pub per_try_timeout: Duration,
    /// Retry policy.
    pub retry: RetrySpec,
    /// Rate limit.
    pub rate_limit: Option<RateLimitSpec>,
    /// Most requests in flight on this route; 0 is unlimited.
    pub concurrency_limit: usize,
    /// Hash key for ring_hash/maglev: `header:NAME`, `query:NAME`, `path` or `ip`.
    pub hash_key: String,
    /// CORS.
    pub cors: Option<CorsSpec>,
    /// Accepted API keys (in `api_key_header`).
    pub api_keys: Vec<String>,
    /// The header that carries the API key.
    pub api_key_header: String,
    /// Accepted bearer tokens.
    pub bearer_tokens: Vec<String>,
    /// Forward TRACE requests (405 otherwise, as nginx answers): a TRACE
    /// echoes the request, credentials included, back to whoever sent it.
    pub allow_trace: bool,
}

/// Retries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetrySpec {
    /// Attempts in all, first included (1 disables retries).
    pub attempts: u32,
    /// Retry non-idempotent methods too (after they may have reached a backend).
    pub retryable: bool,
    /// Retry on these upstream statuses (idempotent or retryable requests only).
    pub statuses: Vec<u16>,
    /// First backoff; doubles with jitter.
    #[serde(with = "duration")]
    pub backoff: Duration,
    /// Backoff cap.
    #[serde(with = "duration")]
    pub backoff_max: Duration,
}

/// A token bucket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSpec {
    /// Sustained requests per second.
    pub per_second: f64,
    /// Burst size; defaults to one second's worth.
    #[serde(default)]
    pub burst: f64,
    /// One bucket per client key instead of one for the route.
    #[serde(default)]
    pub per_client: bool,
    /// The client key: `ip` (default) or `header:NAME`.
    #[serde(default)]
    pub client_key: String,
}

/// CORS.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CorsSpec {
    /// Allowed origins, or `*`.
    pub allow_origins: Vec<String>,
    /// Allowed methods.
    pub allow_methods: Vec<String>,
    /// Allowed request headers.
    pub allow_headers: Vec<String>,
    /// Preflight cache time.
    #[serde(with = "duration")]
    pub max_age: Duration,
    /// Allow credentials.
    pub allow_credentials: bool,
}

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

/// Where a hash key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    /// A request header.
    Header(http::HeaderName),
    /// A query parameter.
    Query(String),
    /// The path.
    Path,
    /// The client IP.
    Ip,
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

// === impl RetrySpec ===

impl Default for RetrySpec {
    fn default() -> Self {
        Self {
            attempts: 3,
            retryable: false,
            statuses: vec![502, 503, 504],
            backoff: Duration::from_millis(10),
            backoff_max: Duration::from_millis(250),
        }
    }
}

// === impl RoutesFile ===

impl RoutesFile {
    /// Reads, parses and checks a routes file.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Self::parse(&text)
    }

    /// Parses and checks routes from text.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut file: Self = toml::from_str(text).map_err(|e| e.to_string())?;
        if file.default_rule_max_services == 0 {
            file.default_rule_max_services = 64;
        }
        if file.default_rule_prefix.is_empty() {
            file.default_rule_prefix = "/".into();
        }
        let prefix = &file.default_rule_prefix;
        if !prefix.starts_with('/')
            || !prefix.ends_with('/')
            || crate::path::normalize(prefix).ok().as_deref() != Some(prefix.as_str())
        {
            return Err(
                "default_rule_prefix: a path in normal form that starts and ends with '/'".into(),
            );
        }
        let mut names = BTreeSet::new();
        for (i, r) in file.routes.iter_mut().enumerate() {
            if r.name.is_empty() {
                r.name = format!("route-{i}");
            }
            let at = format!("route[{i}] ({})", r.name);
            if !names.insert(r.name.clone()) {
                return Err(format!("{at}.name: appears twice"));
            }
            if r.name.starts_with('<') {
                return Err(format!(
                    "{at}.name: may not start with '<' (kept for {DEFAULT_RULE} and {UNMATCHED})"
                ));
            }
            check(r).map_err(|e| format!("{at}.{e}"))?;
        }
        Ok(file)
    }
}

/// The route name of the default rule in metrics, logs and the admin API.
/// No route of the file can share it (names starting with `<` are
/// refused), so a route the user named `default` keeps series of its own.
pub const DEFAULT_RULE: &str = "<default rule>";

/// The route name of requests no route matched, likewise kept apart.
pub const UNMATCHED: &str = "<none>";

/// The longest `timeout` and `per_try_timeout` a route may have.
const MAX_TIMEOUT: Duration = Duration::from_secs(365 * 24 * 3600);

fn check(r: &mut RouteSpec) -> Result<(), String> {
    if !valid_service(&r.service) {
        return Err("service: must be a registry service name (a-z, 0-9, '-')".into());
    }
    let set = [
        !r.path_exact.is_empty(),
        !r.path_prefix.is_empty(),
        !r.path_regex.is_empty(),
    ];
    if set.iter().filter(|s| **s).count() > 1 {
        return Err("path_exact: set at most one of path_exact, path_prefix and path_regex".into());
    }
    for (name, p) in [
        ("path_exact", &r.path_exact),
        ("path_prefix", &r.path_prefix),
    ] {
        if !p.is_empty() && !p.starts_with('/') {
            return Err(format!("{name}: must start with '/'"));
        }
        // Requests are matched in their normal form (`crate::path`): a
        // pattern in another could never match.
        match crate::path::normalize(p) {
            Ok(normal) if normal == p.as_str() => {}
            Ok(normal) => return Err(format!("{name}: write it in normal form, `{normal}`")),
            Err(e) => return Err(format!("{name}: {}", e.message())),
        }
    }
    // Hosts are matched without a trailing dot, case-blind.
    if let Some(host) = r.host.strip_suffix('.') {
        r.host = host.to_string();
    }
    let name = r.host.strip_prefix("*.").unwrap_or(&r.host);
    if !r.host.is_empty()
        && http::HeaderValue::from_str(name)
            .ok()
            .and_then(|v| crate::authority::Authority::parse(&v).ok())
            .is_none_or(|a| a.host() != name)
    {
        return Err("host: a host name without port, or `*.` and one".into());
    }
    if !r.path_regex.is_empty() {
        Regex::new(&r.path_regex).map_err(|e| format!("path_regex: {e}"))?;
    }
    for m in &r.methods {
        m.parse::<Method>()
            .map_err(|_| format!("methods: `{m}` is not a method"))?;
    }
    for h in r.headers.keys() {
        h.parse::<http::HeaderName>()
            .map_err(|_| format!("headers: `{h}` is not a header name"))?;
    }
    if (r.strip_prefix || r.rewrite_prefix.is_some()) && r.path_prefix.is_empty() {
        return Err("strip_prefix: needs path_prefix".into());
    }
    if r.timeout.is_zero() {
        r.timeout = Duration::from_secs(15);
    }
    if r.per_try_timeout.is_zero() {
        r.per_try_timeout = Duration::from_secs(1);
    }
    // A deadline is a request's start plus these: bounded, so the sum is.
    if r.timeout > MAX_TIMEOUT {
        return Err("timeout: at most 365d".into());
    }
    if r.per_try_timeout > MAX_TIMEOUT {
        return Err("per_try_timeout: at most 365d".into());
    }
    if r.retry.attempts == 0 || r.retry.attempts > 10 {
        return Err("retry.attempts: must be 1 to 10".into());
    }
    if let Some(rl) = &mut r.rate_limit {
        if rl.per_second.is_nan() || rl.per_second <= 0.0 {
            return Err("rate_limit.per_second: must be above 0".into());
        }
        if rl.burst <= 0.0 {
            rl.burst = rl.per_second.max(1.0);
        }
        if !(rl.client_key.is_empty()
            || rl.client_key == "ip"
            || rl.client_key.starts_with("header:"))
        {
            return Err("rate_limit.client_key: use `ip` or `header:NAME`".into());
        }
    }
    if !r.hash_key.is_empty() {
        parse_hash_key(&r.hash_key).ok_or("hash_key: use header:NAME, query:NAME, path or ip")?;
    }
    if !r.api_keys.is_empty() && r.api_key_header.is_empty() {
        r.api_key_header = "x-api-key".into();
    }
    if !r.api_key_header.is_empty() {
        r.api_key_header
            .parse::<http::HeaderName>()
            .map_err(|_| "api_key_header: not a header name")?;
    }
    match r.host_header.as_str() {
        "" => r.host_header = "preserve".into(),
        "preserve" | "upstream" => {}
        literal => {
            literal
                .parse::<http::HeaderValue>()
                .map_err(|_| "host_header: not a valid host")?;
        }
    }
    Ok(())
}

/// A registry service name.
pub fn valid_service(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && name.bytes().next().is_some_and(|b| b.is_ascii_lowercase())
}

fn parse_hash_key(s: &str) -> Option<HashKey> {
    match s.split_once(':') {
        Some(("header", h)) => h.parse().ok().map(HashKey::Header),
        Some(("query", q)) if !q.is_empty() => Some(HashKey::Query(q.to_string())),
        None if s == "path" => Some(HashKey::Path),
        None if s == "ip" => Some(HashKey::Ip),
        _ => None,
    }
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
            hash_key: parse_hash_key(&spec.hash_key),
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
