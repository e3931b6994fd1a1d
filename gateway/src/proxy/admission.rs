//! The admission order, without sockets: each request goes straight into
//! [`Gateway::respond`] (as axum's `oneshot` does with a router), and the
//! answer is what a client would read. The order is a contract: a request
//! that fails several checks hears about the first, and a check it never
//! reached spends nothing (no rate-limit token, no concurrency permit).

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::BodyExt;

use super::*;
use crate::routes::RoutesFile;

/// Most bytes a request body may have in these tests.
const MAX_BODY: u64 = 16;

/// A route that asks for everything the admission checks: a token, a rate
/// (one request, then one a thousand seconds later), one request in flight.
/// Its service has no instance.
const ROUTES: &str = r#"
[[route]]
name = "guarded"
service = "guarded"
path_prefix = "/guarded/"
bearer_tokens = ["secret"]
rate_limit = { per_second = 0.001, burst = 1 }
concurrency_limit = 1
"#;

/// The gateway `serve` would build from its default settings and
/// `routes`, with bodies limited to [`MAX_BODY`].
fn gateway(routes: &str) -> Gateway {
    let file = RoutesFile::parse(routes).expect("routes parse");
    let config = crate::Config {
        max_body_bytes: MAX_BODY,
        access_log: false,
        ..crate::Config::default()
    };
    crate::gateway(&config, file).expect("gateway")
}

/// What a client reads: the status and the JSON body's `error`.
async fn send(gw: &Gateway, path: &str, token: bool, body: &'static [u8]) -> (StatusCode, String) {
    let mut req = Request::post(path)
        .header("host", "gw.test")
        .header("content-length", body.len());
    if token {
        req = req.header("authorization", "Bearer secret");
    }
    let (mut parts, ()) = req.body(()).expect("request").into_parts();
    let peer = Peer::new("127.0.0.1:40000".parse().expect("address"), false);
    let (res, _id) = gw
        .respond(
            &mut parts,
            Inbound::Whole(Bytes::from_static(body)),
            &peer,
            None,
        )
        .await;
    let status = res.status();
    let body = res.into_body().collect().await.expect("body").to_bytes();
    let json: serde_json::Value = serde_json::from_slice(&body).expect("a JSON answer");
    (
        status,
        json["error"].as_str().unwrap_or_default().to_string(),
    )
}

/// Takes the guarded route's one concurrency permit, as a request in
/// flight would.
fn hold_permit(gw: &Gateway) -> tokio::sync::OwnedSemaphorePermit {
    let table = gw.routes.load();
    let shedder = table.routes[0].state.shedder.as_ref();
    shedder
        .and_then(|s| s.try_acquire())
        .expect("the one permit")
}

/// Requests in flight on the guarded route.
fn in_flight(gw: &Gateway) -> usize {
    let table = gw.routes.load();
    table.routes[0]
        .state
        .shedder
        .as_ref()
        .map_or(0, |s| s.in_flight())
}

const LARGE: &[u8] = b"more than sixteen bytes";

#[tokio::test]
async fn each_check_answers_alone() {
    let gw = gateway(ROUTES);
    assert_eq!(
        send(&gw, "/elsewhere", true, b"").await,
        (
            StatusCode::NOT_FOUND,
            "no route matches this request".into()
        )
    );
    assert_eq!(
        send(&gw, "/guarded/x", false, b"").await,
        (
            StatusCode::UNAUTHORIZED,
            "missing or invalid credentials".into()
        )
    );
    // Admitted, and no instance to take it.
    assert_eq!(
        send(&gw, "/guarded/x", true, b"").await,
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "no healthy endpoint".into()
        )
    );
    assert_eq!(
        send(&gw, "/guarded/x", true, b"").await,
        (StatusCode::TOO_MANY_REQUESTS, "rate limit exceeded".into())
    );

    let gw = gateway(ROUTES);
    let held = hold_permit(&gw);
    assert_eq!(
        send(&gw, "/guarded/x", true, b"").await,
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "too many requests in flight".into()
        )
    );
    drop(held);

    let gw = gateway(ROUTES);
    assert_eq!(
        send(&gw, "/guarded/x", true, LARGE).await,
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            "request body too large".into()
        )
    );
}

#[tokio::test]
async fn the_first_failing_check_answers_and_later_ones_spend_nothing() {
    let gw = gateway(ROUTES);
    let held = hold_permit(&gw);
    // Unrouted beats unauthorized; unauthorized beats every limit. None of
    // these spends the route's single rate-limit token.
    for _ in 0..3 {
        assert_eq!(
            send(&gw, "/elsewhere", false, LARGE).await.0,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            send(&gw, "/guarded/x", false, LARGE).await.0,
            StatusCode::UNAUTHORIZED
        );
    }
    // The token is still there: overloaded beats too large, and spends it.
    assert_eq!(
        send(&gw, "/guarded/x", true, LARGE).await,
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "too many requests in flight".into()
        )
    );
    drop(held);
    // Rate limited beats too large, and takes no permit.
    assert_eq!(
        send(&gw, "/guarded/x", true, LARGE).await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(in_flight(&gw), 0);

    // Too large beats no endpoint: the body is refused before a pick.
    let gw = gateway(ROUTES);
    assert_eq!(
        send(&gw, "/guarded/x", true, LARGE).await.0,
        StatusCode::PAYLOAD_TOO_LARGE
    );
    // And a refused request gave its permit back.
    assert_eq!(in_flight(&gw), 0);
}

#[tokio::test]
async fn a_route_the_user_named_default_is_an_ordinary_route() {
    // Without the default rule, a route called "default" is just a route:
    // its service needs no registry entry to be tried (a default-rule
    // service unknown to the registry is 404, an ordinary route's service
    // with no instance is 503).
    let gw = gateway(
        r#"
[[route]]
name = "default"
service = "svc"
path_prefix = "/"
"#,
    );
    assert_eq!(
        send(&gw, "/x", false, b"").await,
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "no healthy endpoint".into()
        )
    );
    // With it, an unknown service under the default rule is 404.
    let gw = gateway("default_rule = true\n");
    assert_eq!(
        send(&gw, "/svc/x", false, b"").await,
        (StatusCode::NOT_FOUND, "no such service".into())
    );
}

/// Span fields as a subscriber sees them: `(span name, field, value)`.
type Seen = std::sync::Arc<std::sync::Mutex<Vec<(String, String, String)>>>;

/// Keeps every span field it is told of, when created or recorded later.
struct Capture(Seen);

struct Fields<'a>(&'a Seen, &'static str);

impl tracing::field::Visit for Fields<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        let seen = (
            self.1.to_string(),
            field.name().to_string(),
            format!("{value:?}"),
        );
        switchyard_time::sync::lock(self.0).push(seen);
    }
}

impl<S> tracing_subscriber::Layer<S> for Capture
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        _: &tracing::span::Id,
        _: tracing_subscriber::layer::Context<'_, S>,
    ) {
        attrs.record(&mut Fields(&self.0, attrs.metadata().name()));
    }

    fn on_record(
        &self,
        id: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let name = ctx.span(id).map_or("?", |s| s.name());
        values.record(&mut Fields(&self.0, name));
    }
}

#[tokio::test]
async fn each_request_has_a_span_with_its_route_and_service_when_one_is_wanted() {
    use tracing_subscriber::layer::SubscriberExt as _;
    let seen = Seen::default();
    let subscriber = tracing_subscriber::registry().with(Capture(seen.clone()));
    let _default = tracing::subscriber::set_default(subscriber);
    let gw = gateway(ROUTES);
    assert_eq!(
        send(&gw, "/guarded/x", true, b"").await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    let seen = switchyard_time::sync::lock(&seen).clone();
    let field = |name: &str| {
        seen.iter()
            .find(|(span, f, _)| span == "request" && f == name)
            .map(|(_, _, v)| v.clone())
    };
    assert_eq!(field("route").as_deref(), Some("\"guarded\""), "{seen:?}");
    assert_eq!(field("service").as_deref(), Some("\"guarded\""), "{seen:?}");
    // No instance: no endpoint was tried.
    assert_eq!(field("endpoint"), None, "{seen:?}");
}
