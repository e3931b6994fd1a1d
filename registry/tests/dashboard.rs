//! What the dashboard reads and does, over real HTTP against the real
//! registry: the server-sent event stream fed by the Watch (counts of every
//! service, or one service's instances and changes), resuming from a
//! position, a service's history, the pages and their headers, and the
//! override the dashboard posts (operator token and JSON only).

mod support;

use std::{
    net::SocketAddr,
    time::{Duration, SystemTime},
};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use serde_json::{Value, json};
use support::{authed, client_of, http, listed_instance, register, send_http, spec, start, stop};
use switchyard_proto::registry::v1 as pb;

const OPERATOR: &str = "dashboard-operator-token";
const REGISTER: &str = "dashboard-register-token";

/// An open `text/event-stream` response, read message by message.
struct Events {
    body: Incoming,
    buffer: String,
    /// The headers of the response.
    content_type: String,
}

/// One server-sent event.
#[derive(Debug)]
struct Message {
    kind: String,
    id: String,
    data: Value,
}

/// Opens `path` (with `last_event_id`, when given) and checks it streams.
async fn open(addr: SocketAddr, path: &str, last_event_id: Option<&str>) -> Events {
    let mut req = hyper::Request::builder().uri(path);
    if let Some(id) = last_event_id {
        req = req.header("last-event-id", id);
    }
    let res = send_http(addr, req.body(Full::new(Bytes::new())).expect("request")).await;
    assert_eq!(res.status(), 200, "GET {path}");
    let content_type = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    Events {
        body: res.into_body(),
        buffer: String::new(),
        content_type,
    }
}

impl Events {
    /// The next message, within 5 s.
    async fn next(&mut self) -> Message {
        tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                if let Some(end) = self.buffer.find("\n\n") {
                    let block: String = self.buffer.drain(..end + 2).collect();
                    let (mut kind, mut id, mut data) =
                        (String::new(), String::new(), String::new());
                    for line in block.lines() {
                        if let Some(v) = line.strip_prefix("event: ") {
                            kind = v.into();
                        } else if let Some(v) = line.strip_prefix("id: ") {
                            id = v.into();
                        } else if let Some(v) = line.strip_prefix("data: ") {
                            data.push_str(v);
                        }
                    }
                    if data.is_empty() {
                        continue; // a keep-alive comment
                    }
                    let data = serde_json::from_str(&data).expect("JSON data");
                    return Message { kind, id, data };
                }
                let frame = self
                    .body
                    .frame()
                    .await
                    .expect("stream open")
                    .expect("frame");
                if let Ok(bytes) = frame.into_data() {
                    self.buffer
                        .push_str(std::str::from_utf8(&bytes).expect("utf-8"));
                }
            }
        })
        .await
        .expect("a message within 5 s")
    }

    /// The next message that is not a `banner` (progress).
    async fn next_change(&mut self) -> Message {
        loop {
            let m = self.next().await;
            if m.kind != "banner" {
                return m;
            }
        }
    }
}

fn service_named<'a>(m: &'a Message, name: &str) -> Option<&'a Value> {
    m.data["services"]
        .as_array()
        .expect("services")
        .iter()
        .find(|s| s["service"] == name)
}

fn with_tokens() -> switchyard_registry::Config {
    switchyard_registry::Config {
        register_tokens: vec![REGISTER.into()],
        operator_tokens: vec![OPERATOR.into()],
        ..support::config()
    }
}

#[tokio::test]
async fn the_counts_stream_starts_with_every_service_and_follows_changes() {
    let r = start(support::config()).await;
    let mut c = client_of(&r).await;
    let lease = register(&mut c, 0, vec![spec("orders", "o-1"), spec("users", "u-1")])
        .await
        .lease_id;
    let mut events = open(r.http, "/api/events", None).await;
    assert!(events.content_type.starts_with("text/event-stream"));

    let first = events.next().await;
    assert_eq!(first.kind, "services");
    assert_eq!(first.data["reset"], true);
    assert_eq!(
        service_named(&first, "orders").expect("orders")["instances"],
        1
    );
    assert_eq!(
        service_named(&first, "users").expect("users")["by_state"]["SERVING"],
        1
    );
    assert_eq!(first.data["banner"]["warming_up"], false);
    let epoch = first.data["epoch"].as_str().expect("epoch").to_string();
    assert_eq!(first.id, format!("{epoch}:{}", first.data["revision"]));

    // A third instance: the counts of its service alone.
    register(&mut c, lease, vec![spec("orders", "o-2")]).await;
    let m = events.next_change().await;
    assert_eq!(m.data["reset"], false);
    assert_eq!(service_named(&m, "orders").expect("orders")["instances"], 2);
    assert!(service_named(&m, "users").is_none(), "{:?}", m.data);

    // The last instance of a service gone: it leaves the list.
    c.deregister(pb::DeregisterRequest {
        lease_id: lease,
        service: "users".into(),
        instance_id: "u-1".into(),
    })
    .await
    .expect("deregister");
    let m = events.next_change().await;
    assert_eq!(m.data["removed"], json!(["users"]));
    stop(r).await;
}

#[tokio::test]
async fn a_service_stream_sends_its_instances_then_each_change_and_resumes() {
    let r = start(support::config()).await;
    let mut c = client_of(&r).await;
    register(&mut c, 0, vec![spec("orders", "o-1"), spec("users", "u-1")]).await;
    let mut events = open(r.http, "/api/events?service=orders", None).await;
    let first = events.next().await;
    assert_eq!(first.kind, "snapshot");
    let ids: Vec<&Value> = first.data["instances"]
        .as_array()
        .expect("instances")
        .iter()
        .map(|i| &i["instance_id"])
        .collect();
    assert_eq!(ids, [&json!("o-1")]);

    let before = SystemTime::now();
    let (status, _) = http(
        r.http,
        "PUT",
        "/api/services/orders/instances/o-1",
        None,
        Some(r#"{"state":"DRAINING","reason":"kernel upgrade"}"#),
    )
    .await;
    assert_eq!(status, 200);
    let m = events.next_change().await;
    assert_eq!(m.kind, "delta");
    let e = &m.data["events"][0];
    assert_eq!(e["change"], "put");
    assert_eq!(e["instance"]["state"], "DRAINING");
    assert_eq!(e["instance"]["override"]["reason"], "kernel upgrade");
    let at = e["at"].as_f64().expect("at");
    let since_epoch = |t: SystemTime| {
        t.duration_since(SystemTime::UNIX_EPOCH)
            .expect("after 1970")
            .as_secs_f64()
    };
    assert!(
        at >= since_epoch(before) - 1.0 && at <= since_epoch(SystemTime::now()) + 1.0,
        "the change is stamped with when it happened: {at}"
    );

    // Reconnecting with the first message's id replays the drain, no
    // snapshot (what EventSource does with Last-Event-ID).
    let mut resumed = open(r.http, "/api/events?service=orders", Some(&first.id)).await;
    let m = resumed.next_change().await;
    assert_eq!(m.kind, "delta", "{:?}", m.data);
    assert_eq!(m.data["events"][0]["instance"]["state"], "DRAINING");
    // And `?since=` does the same.
    let path = format!("/api/events?service=orders&since={}", first.id);
    let m = open(r.http, &path, None).await.next_change().await;
    assert_eq!(m.kind, "delta");
    stop(r).await;
}

#[tokio::test]
async fn a_bad_position_or_name_is_refused_naming_it() {
    let r = start(support::config()).await;
    for (path, field) in [
        ("/api/events?since=nonsense", "since"),
        ("/api/events?since=abc:x", "since"),
        ("/api/events?service=Not%20A%20Name", "service"),
        ("/api/events?services=orders", "services"),
        ("/api/services/Not%20A%20Name/history", "service"),
    ] {
        let (status, body) = http(r.http, "GET", path, None, None).await;
        assert_eq!(status, 400, "{path}: {body}");
        let error = body["error"].as_str().unwrap_or_default();
        assert!(error.contains(field), "{path}: {error}");
    }
    stop(r).await;
}

#[tokio::test]
async fn history_lists_a_services_changes_oldest_first() {
    let r = start(support::config()).await;
    let mut c = client_of(&r).await;
    let lease = register(&mut c, 0, vec![spec("orders", "o-1"), spec("users", "u-1")])
        .await
        .lease_id;
    let path = "/api/services/orders/instances/o-1";
    let drain = r#"{"state":"DRAINING","reason":"deploy"}"#;
    assert_eq!(http(r.http, "PUT", path, None, Some(drain)).await.0, 200);
    let clear = r#"{"clear":true}"#;
    assert_eq!(http(r.http, "PUT", path, None, Some(clear)).await.0, 200);
    c.deregister(pb::DeregisterRequest {
        lease_id: lease,
        service: "orders".into(),
        instance_id: "o-1".into(),
    })
    .await
    .expect("deregister");

    let (status, body) = http(r.http, "GET", "/api/services/orders/history", None, None).await;
    assert_eq!(status, 200, "{body}");
    let events = body["events"].as_array().expect("events");
    let seen: Vec<(&str, &str)> = events
        .iter()
        .map(|e| {
            (
                e["change"].as_str().unwrap_or_default(),
                e["instance"]["state"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("put", "SERVING"),
            ("put", "DRAINING"),
            ("put", "SERVING"),
            ("deregistered", "SERVING")
        ]
    );
    let revisions: Vec<u64> = events
        .iter()
        .filter_map(|e| e["revision"].as_u64())
        .collect();
    assert!(revisions.windows(2).all(|w| w[0] < w[1]), "{revisions:?}");
    let (_, limited) = http(
        r.http,
        "GET",
        "/api/services/orders/history?limit=1",
        None,
        None,
    )
    .await;
    assert_eq!(limited["events"][0]["change"], "deregistered", "the newest");
    stop(r).await;
}

async fn state_of(r: &support::Running, service: &str, id: &str) -> String {
    let i = listed_instance(r.http, service, id, Some(OPERATOR)).await;
    i["state"].as_str().unwrap_or_default().to_string()
}

#[tokio::test]
async fn the_dashboards_override_needs_the_operator_token_and_a_json_body() {
    let r = start(with_tokens()).await;
    let mut c = client_of(&r).await;
    c.register(authed(
        pb::RegisterRequest {
            lease_id: 0,
            ttl_seconds: 10,
            instances: vec![spec("orders", "o-1")],
        },
        REGISTER,
    ))
    .await
    .expect("register");
    let path = "/api/services/orders/instances/o-1/override";
    let drain = r#"{"state":"DRAINING","reason":"from the dashboard"}"#;

    // Reads are open, but a reader does not see lease ids (credentials).
    let first = open(r.http, "/api/events?service=orders", None)
        .await
        .next()
        .await;
    assert_eq!(first.data["instances"][0]["instance_id"], "o-1");
    assert!(
        first.data["instances"][0].get("lease_id").is_none(),
        "{:?}",
        first.data
    );

    // From loopback, without a token: refused (unlike PUT without tokens).
    let (status, body) = http(r.http, "POST", path, None, Some(drain)).await;
    assert_eq!(status, 401, "{body}");
    let (status, body) = http(r.http, "POST", path, Some(REGISTER), Some(drain)).await;
    assert_eq!(status, 403, "a register token is not an operator's: {body}");
    assert_eq!(state_of(&r, "orders", "o-1").await, "SERVING");

    // A body a cross-site form could send (text/plain) is not taken.
    let stream = tokio::net::TcpStream::connect(r.http)
        .await
        .expect("connect");
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("handshake");
    tokio::spawn(conn);
    let req = hyper::Request::post(path)
        .header("host", r.http.to_string())
        .header("authorization", format!("Bearer {OPERATOR}"))
        .header("content-type", "text/plain")
        .body(http_body_util::Full::new(Bytes::from(drain)))
        .expect("request");
    let res = sender.send_request(req).await.expect("response");
    assert_eq!(res.status(), 415);
    assert_eq!(state_of(&r, "orders", "o-1").await, "SERVING");

    // A bad body names its field and changes nothing.
    let (status, body) = http(
        r.http,
        "POST",
        path,
        Some(OPERATOR),
        Some(r#"{"weight":-1}"#),
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("weight"),
        "{body}"
    );

    let (status, body) = http(r.http, "POST", path, Some(OPERATOR), Some(drain)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "DRAINING");
    assert_eq!(body["override"]["reason"], "from the dashboard");
    assert_eq!(state_of(&r, "orders", "o-1").await, "DRAINING");
    stop(r).await;
}

#[tokio::test]
async fn without_tokens_the_dashboard_cannot_change_anything() {
    let r = start(support::config()).await;
    let mut c = client_of(&r).await;
    register(&mut c, 0, vec![spec("orders", "o-1")]).await;
    let drain = r#"{"state":"DRAINING"}"#;
    let (status, body) = http(
        r.http,
        "POST",
        "/api/services/orders/instances/o-1/override",
        None,
        Some(drain),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("operator_tokens"),
        "{body}"
    );
    assert_eq!(state_of(&r, "orders", "o-1").await, "SERVING");
    stop(r).await;
}

#[tokio::test]
async fn the_pages_are_served_from_the_binary_and_keep_to_themselves() {
    let r = start(support::config()).await;
    let addr = r.http;
    let get = |path: &'static str| async move {
        let req = hyper::Request::get(path)
            .body(Full::new(Bytes::new()))
            .expect("request");
        let res = send_http(addr, req).await;
        let (parts, body) = res.into_parts();
        let body = body.collect().await.expect("body").to_bytes();
        (parts, String::from_utf8_lossy(&body).into_owned())
    };
    let (parts, body) = get("/ui/").await;
    assert_eq!(parts.status, 200);
    assert!(body.contains(r#"data-server="registry""#), "{body}");
    assert!(
        !body.contains("http://") && !body.contains("https://"),
        "no CDN"
    );
    let csp = parts.headers["content-security-policy"]
        .to_str()
        .expect("csp");
    assert!(csp.contains("default-src 'self'") && csp.contains("frame-ancestors 'none'"));
    assert_eq!(parts.headers["x-frame-options"], "DENY");
    let (parts, body) = get("/ui/app.js").await;
    assert_eq!(parts.status, 200);
    assert!(
        parts.headers["content-type"]
            .to_str()
            .expect("type")
            .starts_with("text/javascript")
    );
    assert!(body.contains("/api/events"));
    let (parts, _) = get("/ui").await;
    assert_eq!(parts.status, 308);
    assert_eq!(parts.headers["location"], "/ui/");
    stop(r).await;
}

/// GetStatus (what `switchyard status` shows per replica) counts the
/// dashboard's streams among the watchers, and on etcd tells its members.
#[tokio::test]
async fn get_status_counts_the_dashboards_streams_and_tells_the_store() {
    let r = start(support::config()).await;
    let mut c = client_of(&r).await;
    let reader = c.clone();
    let status = || {
        let mut c = reader.clone();
        async move {
            c.get_status(pb::GetStatusRequest {})
                .await
                .expect("status")
                .into_inner()
        }
    };
    let before = status().await.watchers;
    let mut events = open(r.http, "/api/events", None).await;
    events.next().await;
    support::eventually("the stream counted", || async {
        status().await.watchers == before + 1
    })
    .await;
    register(&mut c, 0, vec![spec("orders", "o-1")]).await;
    let s = status().await;
    assert_eq!(s.leases, 1);
    assert!(s.authoritative && !s.warming_up);
    assert!(s.position.expect("position").revision > 0);
    if support::on_etcd() {
        assert_eq!(s.store, "etcd");
        let etcd = s.etcd.expect("etcd status");
        assert!(etcd.error.is_empty(), "{}", etcd.error);
        assert_eq!(etcd.members.len(), 1);
        assert_eq!(etcd.leader, etcd.members[0].id);
        assert!(etcd.db_size > 0 && etcd.revision > 0);
    } else {
        assert_eq!(s.store, "file");
        assert!(s.etcd.is_none());
    }
    drop(events);
    stop(r).await;
}
