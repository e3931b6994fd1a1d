//! The routes file as written: its schema, and the checks that refuse a
//! file before anything is compiled from it (each error names the route
//! and the key).

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
    time::Duration,
};

use http::Method;
use regex::Regex;
use serde::{Deserialize, Serialize};
use switchyard_runtime::settings::duration;

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

// === impl HashKey ===

impl HashKey {
    /// Parses `header:NAME`, `query:NAME`, `path` or `ip`.
    pub fn parse(s: &str) -> Option<Self> {
        match s.split_once(':') {
            Some(("header", h)) => h.parse().ok().map(Self::Header),
            Some(("query", q)) if !q.is_empty() => Some(Self::Query(q.to_string())),
            None if s == "path" => Some(Self::Path),
            None if s == "ip" => Some(Self::Ip),
            _ => None,
        }
    }
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

/// Why a routes file was refused: where, and what is wrong there.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoutesError {
    /// The file could not be read.
    #[error("{path}: {message}")]
    Read {
        /// The file.
        path: String,
        /// The system's reason.
        message: String,
    },
    /// Not TOML, or not the schema.
    #[error("{0}")]
    Syntax(String),
    /// A key of the file itself.
    #[error("{0}")]
    File(Bad),
    /// A key of one route.
    #[error("route[{index}] ({name}).{bad}")]
    Route {
        /// Its place in the file, from 0.
        index: usize,
        /// Its name.
        name: String,
        /// The key and what is wrong with it.
        bad: Bad,
    },
}

/// A key and what is wrong with its value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct Bad {
    /// The key, as written in the file (`retry.attempts`).
    pub key: &'static str,
    /// What is wrong.
    pub message: String,
}

// === impl Bad ===

impl Bad {
    fn new(key: &'static str, message: impl Into<String>) -> Self {
        Self {
            key,
            message: message.into(),
        }
    }
}

// === impl RoutesFile ===

impl RoutesFile {
    /// Reads, parses and checks a routes file.
    pub fn load(path: &Path) -> Result<Self, RoutesError> {
        let text = std::fs::read_to_string(path).map_err(|e| RoutesError::Read {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        Self::parse(&text)
    }

    /// Parses and checks routes from text.
    pub fn parse(text: &str) -> Result<Self, RoutesError> {
        let mut file: Self =
            toml::from_str(text).map_err(|e| RoutesError::Syntax(e.to_string()))?;
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
            return Err(RoutesError::File(Bad::new(
                "default_rule_prefix",
                "a path in normal form that starts and ends with '/'",
            )));
        }
        let mut names = BTreeSet::new();
        for (i, r) in file.routes.iter_mut().enumerate() {
            if r.name.is_empty() {
                r.name = format!("route-{i}");
            }
            let name = r.name.clone();
            let at = |bad| RoutesError::Route {
                index: i,
                name: name.clone(),
                bad,
            };
            if !names.insert(r.name.clone()) {
                return Err(at(Bad::new("name", "appears twice")));
            }
            if r.name.starts_with('<') {
                return Err(at(Bad::new(
                    "name",
                    format!("may not start with '<' (kept for {DEFAULT_RULE} and {UNMATCHED})"),
                )));
            }
            check(r).map_err(at)?;
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

/// Checks one route (filling in defaults); the error names the key.
fn check(r: &mut RouteSpec) -> Result<(), Bad> {
    if !valid_service(&r.service) {
        return Err(Bad::new(
            "service",
            "must be a registry service name (a-z, 0-9, '-')",
        ));
    }
    check_matchers(r)?;
    check_forwarding(r)?;
    check_access(r)
}

/// What a request is matched by: path (in normal form), host, methods,
/// headers.
fn check_matchers(r: &mut RouteSpec) -> Result<(), Bad> {
    let set = [
        !r.path_exact.is_empty(),
        !r.path_prefix.is_empty(),
        !r.path_regex.is_empty(),
    ];
    if set.iter().filter(|s| **s).count() > 1 {
        return Err(Bad::new(
            "path_exact",
            "set at most one of path_exact, path_prefix and path_regex",
        ));
    }
    for (name, p) in [
        ("path_exact", &r.path_exact),
        ("path_prefix", &r.path_prefix),
    ] {
        if !p.is_empty() && !p.starts_with('/') {
            return Err(Bad::new(name, "must start with '/'"));
        }
        // Requests are matched in their normal form (`crate::path`): a
        // pattern in another could never match.
        match crate::path::normalize(p) {
            Ok(normal) if normal == p.as_str() => {}
            Ok(normal) => {
                return Err(Bad::new(
                    name,
                    format!("write it in normal form, `{normal}`"),
                ));
            }
            Err(e) => return Err(Bad::new(name, e.message())),
        }
    }
    check_host(r)?;
    if !r.path_regex.is_empty() {
        Regex::new(&r.path_regex).map_err(|e| Bad::new("path_regex", e.to_string()))?;
    }
    for m in &r.methods {
        m.parse::<Method>()
            .map_err(|_| Bad::new("methods", format!("`{m}` is not a method")))?;
    }
    for h in r.headers.keys() {
        h.parse::<http::HeaderName>()
            .map_err(|_| Bad::new("headers", format!("`{h}` is not a header name")))?;
    }
    Ok(())
}

/// The host pattern: a host name, or `*.` and one (a trailing dot dropped).
fn check_host(r: &mut RouteSpec) -> Result<(), Bad> {
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
        return Err(Bad::new(
            "host",
            "a host name without port, or `*.` and one",
        ));
    }
    Ok(())
}

/// How it is forwarded: prefix rewrites, timeouts, retries.
fn check_forwarding(r: &mut RouteSpec) -> Result<(), Bad> {
    if (r.strip_prefix || r.rewrite_prefix.is_some()) && r.path_prefix.is_empty() {
        return Err(Bad::new("strip_prefix", "needs path_prefix"));
    }
    if r.timeout.is_zero() {
        r.timeout = Duration::from_secs(15);
    }
    if r.per_try_timeout.is_zero() {
        r.per_try_timeout = Duration::from_secs(1);
    }
    // A deadline is a request's start plus these: bounded, so the sum is.
    if r.timeout > MAX_TIMEOUT {
        return Err(Bad::new("timeout", "at most 365d"));
    }
    if r.per_try_timeout > MAX_TIMEOUT {
        return Err(Bad::new("per_try_timeout", "at most 365d"));
    }
    if r.retry.attempts == 0 || r.retry.attempts > 10 {
        return Err(Bad::new("retry.attempts", "must be 1 to 10"));
    }
    Ok(())
}

/// Who may use it and how much: rate limit, hash key, credentials, and
/// the `Host` it goes with.
fn check_access(r: &mut RouteSpec) -> Result<(), Bad> {
    if let Some(rl) = &mut r.rate_limit {
        if rl.per_second.is_nan() || rl.per_second <= 0.0 {
            return Err(Bad::new("rate_limit.per_second", "must be above 0"));
        }
        if rl.burst <= 0.0 {
            rl.burst = rl.per_second.max(1.0);
        }
        if !(rl.client_key.is_empty()
            || rl.client_key == "ip"
            || rl.client_key.starts_with("header:"))
        {
            return Err(Bad::new(
                "rate_limit.client_key",
                "use `ip` or `header:NAME`",
            ));
        }
    }
    if !r.hash_key.is_empty() {
        HashKey::parse(&r.hash_key)
            .ok_or_else(|| Bad::new("hash_key", "use header:NAME, query:NAME, path or ip"))?;
    }
    if !r.api_keys.is_empty() && r.api_key_header.is_empty() {
        r.api_key_header = "x-api-key".into();
    }
    if !r.api_key_header.is_empty() {
        r.api_key_header
            .parse::<http::HeaderName>()
            .map_err(|_| Bad::new("api_key_header", "not a header name"))?;
    }
    match r.host_header.as_str() {
        "" => r.host_header = "preserve".into(),
        "preserve" | "upstream" => {}
        literal => {
            literal
                .parse::<http::HeaderValue>()
                .map_err(|_| Bad::new("host_header", "not a valid host"))?;
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
