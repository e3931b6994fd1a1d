//! Matchers, rewrites and file checks.

use http::{HeaderMap, HeaderValue, Method};

use super::*;

fn table(text: &str) -> RouteTable {
    RouteTable::compile(RoutesFile::parse(text).expect("routes parse"), None)
}

fn find(
    t: &RouteTable,
    method: Method,
    host: &str,
    path: &str,
    headers: &[(&'static str, &str)],
) -> Option<String> {
    let mut h = HeaderMap::new();
    for (k, v) in headers {
        h.insert(*k, HeaderValue::from_str(v).expect("value"));
    }
    let _ = t;
    t.find(&method, host, path, &h)
        .map(|m| m.route.spec.name.clone())
}

const ROUTES: &str = r#"
[[route]]
name = "exact"
service = "a"
path_exact = "/health"

[[route]]
name = "host"
service = "b"
host = "*.example.com"
path_prefix = "/"

[[route]]
name = "get-only"
service = "c"
path_prefix = "/read/"
methods = ["GET"]

[[route]]
name = "header"
service = "d"
path_prefix = "/beta/"
headers = { "x-env" = "beta" }

[[route]]
name = "regex"
service = "e"
path_regex = "^/items/[0-9]+$"

[[route]]
name = "catch"
service = "f"
path_prefix = "/api/"
strip_prefix = true
"#;

#[test]
fn first_match_in_file_order_with_every_matcher() {
    let t = table(ROUTES);
    assert_eq!(
        find(&t, Method::GET, "x", "/health", &[]).as_deref(),
        Some("exact")
    );
    assert_eq!(find(&t, Method::GET, "x", "/health/more", &[]), None);
    assert_eq!(
        find(&t, Method::GET, "api.example.com:8080", "/health", &[]).as_deref(),
        Some("exact"),
        "file order"
    );
    assert_eq!(
        find(&t, Method::GET, "api.example.com", "/x", &[]).as_deref(),
        Some("host")
    );
    assert_eq!(
        find(&t, Method::GET, "example.com", "/x", &[]),
        None,
        "*.example.com needs a subdomain"
    );
    assert_eq!(
        find(&t, Method::GET, "API.Example.COM", "/x", &[]).as_deref(),
        Some("host"),
        "hosts compare case-blind"
    );
    assert_eq!(find(&t, Method::GET, "apiXexample.com", "/x", &[]), None);
    assert_eq!(
        find(&t, Method::GET, "h", "/read/1", &[]).as_deref(),
        Some("get-only")
    );
    assert_eq!(find(&t, Method::POST, "h", "/read/1", &[]), None);
    assert_eq!(
        find(&t, Method::GET, "h", "/beta/1", &[("x-env", "beta")]).as_deref(),
        Some("header")
    );
    assert_eq!(
        find(&t, Method::GET, "h", "/beta/1", &[("x-env", "prod")]),
        None
    );
    assert_eq!(
        find(&t, Method::GET, "h", "/items/42", &[]).as_deref(),
        Some("regex")
    );
    assert_eq!(find(&t, Method::GET, "h", "/items/x", &[]), None);
    assert_eq!(
        find(&t, Method::GET, "h", "/svc-1/x", &[]),
        None,
        "no default rule unless asked"
    );
    let t = table(&format!("default_rule = true\n{ROUTES}"));
    let m = t
        .find(&Method::GET, "h", "/svc-1/x", &HeaderMap::new())
        .expect("default rule");
    assert_eq!(&*m.service, "svc-1");
    assert_eq!(upstream_path(&m, "/svc-1/x?y=1"), "/x?y=1");
    assert!(
        t.find(
            &Method::GET,
            "h",
            "/switchyard-balancer/x",
            &HeaderMap::new()
        )
        .is_none(),
        "the control plane's services only by a route"
    );
    // Elsewhere than at the root, as the seed's sketch called services.
    let t = table("default_rule = true\ndefault_rule_prefix = \"/api/service/\"\n");
    let m = t
        .find(&Method::GET, "h", "/api/service/svc-1/x", &HeaderMap::new())
        .expect("default rule");
    assert_eq!(&*m.service, "svc-1");
    assert_eq!(upstream_path(&m, "/api/service/svc-1/x?y=1"), "/x?y=1");
    assert_eq!(upstream_path(&m, "/api/service/svc-1"), "/");
    assert!(
        t.find(&Method::GET, "h", "/svc-1/x", &HeaderMap::new())
            .is_none()
    );
}

#[test]
fn a_route_named_default_is_a_route_of_the_file() {
    let t = table(
        "default_rule = true\n[[route]]\nname = \"default\"\nservice = \"a\"\npath_prefix = \"/a/\"\n",
    );
    let m = t
        .find(&Method::GET, "h", "/a/x", &HeaderMap::new())
        .expect("the route");
    assert!(!m.default_rule);
    assert_eq!((&*m.route.name, &*m.service), ("default", "a"));
    let m = t
        .find(&Method::GET, "h", "/b/x", &HeaderMap::new())
        .expect("the default rule");
    assert!(m.default_rule);
    assert_eq!((&*m.route.name, &*m.service), (DEFAULT_RULE, "b"));
}

#[test]
fn strip_and_rewrite_prefixes() {
    let t = table(
        r#"
[[route]]
name = "strip"
service = "a"
path_prefix = "/api/"
strip_prefix = true

[[route]]
name = "rewrite"
service = "a"
path_prefix = "/old"
rewrite_prefix = "/new/v2"

[[route]]
name = "keep"
service = "a"
path_prefix = "/keep/"
"#,
    );
    let m = |p: &str| {
        t.find(&Method::GET, "h", p, &HeaderMap::new())
            .expect("match")
    };
    assert_eq!(
        upstream_path(&m("/api/users?id=3"), "/api/users?id=3"),
        "/users?id=3"
    );
    assert_eq!(upstream_path(&m("/api/"), "/api/"), "/");
    assert_eq!(
        upstream_path(&m("/old/thing"), "/old/thing"),
        "/new/v2/thing"
    );
    assert_eq!(upstream_path(&m("/oldthing"), "/oldthing"), "/new/v2/thing");
    assert_eq!(upstream_path(&m("/keep/x"), "/keep/x"), "/keep/x");
}

#[test]
fn bad_files_are_refused_with_the_route_and_key() {
    for (text, needle) in [
        ("[[route]]\nservice = \"Bad\"\n", "service"),
        (
            "[[route]]\nservice = \"a\"\npath_regex = \"(\"\n",
            "path_regex",
        ),
        (
            "[[route]]\nservice = \"a\"\npath_prefix = \"x\"\n",
            "path_prefix",
        ),
        (
            "[[route]]\nservice = \"a\"\nmethods = [\"GE T\"]\n",
            "methods",
        ),
        (
            "[[route]]\nservice = \"a\"\nstrip_prefix = true\n",
            "strip_prefix",
        ),
        (
            "[[route]]\nservice = \"a\"\nretry = { attempts = 0 }\n",
            "retry.attempts",
        ),
        (
            "[[route]]\nservice = \"a\"\nhash_key = \"cookie:x\"\n",
            "hash_key",
        ),
        // Past a year, a request's start plus it could overflow an instant.
        (
            "[[route]]\nservice = \"a\"\ntimeout = \"400years\"\n",
            ".timeout: at most 365d",
        ),
        (
            "[[route]]\nservice = \"a\"\nper_try_timeout = \"400years\"\n",
            "per_try_timeout: at most 365d",
        ),
        ("[[route]]\nservice = \"a\"\ncolour = 1\n", "colour"),
        ("default_rule_prefix = \"/api\"\n", "default_rule_prefix"),
        // Requests are matched in normal form: a pattern in another would
        // never match.
        (
            "[[route]]\nservice = \"a\"\npath_prefix = \"/app//admin/\"\n",
            "path_prefix: write it in normal form, `/app/admin/`",
        ),
        (
            "[[route]]\nservice = \"a\"\npath_exact = \"/a/%2fb\"\n",
            "path_exact: escaped slash",
        ),
        (
            "[[route]]\nservice = \"a\"\nhost = \"a.example:80\"\n",
            "host: a host name without port",
        ),
        (
            "[[route]]\nname = \"x\"\nservice = \"a\"\n[[route]]\nname = \"x\"\nservice = \"b\"\n",
            "twice",
        ),
        (
            "[[route]]\nname = \"<default rule>\"\nservice = \"a\"\n",
            "route[0] (<default rule>).name: may not start with '<'",
        ),
    ] {
        let err = RoutesFile::parse(text).expect_err(text).to_string();
        assert!(err.contains(needle), "`{needle}` not in `{err}`");
    }
}

#[test]
fn state_carries_over_for_unchanged_routes_only() {
    let a = table(
        "[[route]]\nname = \"r\"\nservice = \"a\"\nconcurrency_limit = 3\n[[route]]\nname = \"s\"\nservice = \"a\"\nconcurrency_limit = 3\n",
    );
    let next = RoutesFile::parse("[[route]]\nname = \"r\"\nservice = \"a\"\nconcurrency_limit = 3\n[[route]]\nname = \"s\"\nservice = \"a\"\nconcurrency_limit = 4\n").expect("parse");
    let b = RouteTable::compile(next, Some(&a));
    assert!(
        Arc::ptr_eq(&a.routes[0].state, &b.routes[0].state),
        "unchanged route keeps its state"
    );
    assert!(
        !Arc::ptr_eq(&a.routes[1].state, &b.routes[1].state),
        "a changed route starts afresh"
    );
}
