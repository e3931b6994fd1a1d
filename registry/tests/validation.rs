//! Bad input gets a clear error naming the field, and changes nothing.

mod support;

use std::collections::HashMap;

use support::*;
use switchyard_proto::registry::v1::{self as pb, registry_client::RegistryClient};
use tonic::{Code, transport::Channel};

async fn fingerprint(c: &mut RegistryClient<Channel>) -> (u64, u32, Vec<(String, u32)>) {
    let l = c
        .list_services(pb::ListServicesRequest {})
        .await
        .expect("list")
        .into_inner();
    let services = l
        .services
        .iter()
        .map(|s| (s.service.clone(), s.instances))
        .collect();
    (l.position.expect("position").revision, l.leases, services)
}

fn with(f: impl FnOnce(&mut pb::InstanceSpec)) -> pb::InstanceSpec {
    let mut s = spec("hello", "bad");
    f(&mut s);
    s
}

fn http_check(path: &str, interval: i64, timeout: i64) -> Option<pb::HealthCheck> {
    Some(pb::HealthCheck {
        kind: Some(pb::health_check::Kind::Http(pb::HttpHealthCheck {
            path: path.into(),
        })),
        interval: Some(prost_types::Duration {
            seconds: interval,
            nanos: 0,
        }),
        timeout: Some(prost_types::Duration {
            seconds: timeout,
            nanos: 0,
        }),
        ..Default::default()
    })
}

#[tokio::test]
async fn bad_grpc_registrations_name_the_field_and_change_nothing() {
    let r = start(config()).await;
    let mut c = client_of(&r).await;
    let lease = register(&mut c, 0, vec![spec("hello", "good")])
        .await
        .lease_id;
    let before = fingerprint(&mut c).await;

    let many_meta: HashMap<String, String> =
        (0..65).map(|i| (format!("k{i}"), "v".into())).collect();
    let cases: Vec<(&str, u32, Vec<pb::InstanceSpec>)> = vec![
        (
            "instances[0].service",
            10,
            vec![with(|s| s.service = String::new())],
        ),
        (
            "instances[0].service",
            10,
            vec![with(|s| s.service = "Bad_Name".into())],
        ),
        (
            "instances[0].instance_id",
            10,
            vec![with(|s| s.instance_id = "a/b".into())],
        ),
        (
            "instances[0].address",
            10,
            vec![with(|s| s.address = "nohost".into())],
        ),
        (
            "instances[0].address",
            10,
            vec![with(|s| s.address = "h:0".into())],
        ),
        ("instances[0].protocol", 10, vec![with(|s| s.protocol = 9)]),
        ("instances[0].weight", 10, vec![with(|s| s.weight = 10_001)]),
        (
            "instances[0].metadata",
            10,
            vec![with(|s| s.metadata = many_meta.clone())],
        ),
        (
            "instances[0].tags",
            10,
            vec![with(|s| s.tags = vec!["x".repeat(65)])],
        ),
        (
            "instances[0].state",
            10,
            vec![with(|s| s.state = pb::State::OutOfService as i32)],
        ),
        (
            "instances[0].zone",
            10,
            vec![with(|s| s.zone = "z\n".into())],
        ),
        (
            "instances[0].health_check.http.path",
            10,
            vec![with(|s| s.health_check = http_check("noslash", 5, 1))],
        ),
        (
            "instances[0].health_check.timeout",
            10,
            vec![with(|s| s.health_check = http_check("/h", 5, 5))],
        ),
        (
            // The registry's HTTP check speaks plaintext: on a TLS port it
            // would fail every time.
            "instances[0].health_check",
            10,
            vec![with(|s| {
                s.tls = true;
                s.health_check = http_check("/h", 5, 1);
            })],
        ),
        ("ttl_seconds", 1, vec![spec("hello", "t")]),
        ("ttl_seconds", 301, vec![spec("hello", "t")]),
        ("instances", 10, vec![]),
        (
            "instances[1].instance_id",
            10,
            vec![spec("hello", "dup"), spec("hello", "dup")],
        ),
        // One good instance with a bad one: all or nothing.
        (
            "instances[1].address",
            10,
            vec![spec("hello", "fine"), with(|s| s.address = "x".into())],
        ),
    ];
    assert!(cases.len() >= 15);
    for (field, ttl, instances) in cases {
        for lease_id in [0, lease] {
            let err = c
                .register(pb::RegisterRequest {
                    lease_id,
                    ttl_seconds: ttl,
                    instances: instances.clone(),
                })
                .await
                .expect_err(field);
            assert_eq!(
                err.code(),
                Code::InvalidArgument,
                "{field}: {}",
                err.message()
            );
            assert!(
                err.message().starts_with(field),
                "expected `{field}` in `{}`",
                err.message()
            );
        }
        assert_eq!(fingerprint(&mut c).await, before, "{field} changed state");
    }
    stop(r).await;
}

#[tokio::test]
async fn bad_grpc_operator_and_watch_calls_are_refused() {
    let r = start(config()).await;
    let mut c = client_of(&r).await;
    register(&mut c, 0, vec![spec("hello", "good")]).await;
    let before = fingerprint(&mut c).await;
    let set = |state: pb::State, weight: Option<u32>, id: &str| pb::SetStateRequest {
        service: "hello".into(),
        instance_id: id.into(),
        state: state as i32,
        weight,
        ..Default::default()
    };
    let drain_with = |reason: &str, seconds: i64| pb::SetStateRequest {
        reason: reason.into(),
        expires_in: Some(prost_types::Duration { seconds, nanos: 0 }),
        ..set(pb::State::Draining, None, "good")
    };
    let cases = [
        (
            set(pb::State::Starting, None, "good"),
            Code::InvalidArgument,
            "state",
        ),
        (
            set(pb::State::Unspecified, Some(0), "good"),
            Code::InvalidArgument,
            "weight",
        ),
        (
            set(pb::State::Unspecified, Some(20_000), "good"),
            Code::InvalidArgument,
            "weight",
        ),
        (
            set(pb::State::Unspecified, None, "good"),
            Code::InvalidArgument,
            "state",
        ),
        (
            set(pb::State::Draining, None, "missing"),
            Code::NotFound,
            "instance_id",
        ),
        (
            drain_with(&"x".repeat(257), 60),
            Code::InvalidArgument,
            "reason",
        ),
        (
            drain_with("line\nbreak", 60),
            Code::InvalidArgument,
            "reason",
        ),
        (drain_with("ok", 0), Code::InvalidArgument, "expires_in"),
        (
            drain_with("ok", 31 * 86_400),
            Code::InvalidArgument,
            "expires_in",
        ),
        (drain_with("ok", -5), Code::InvalidArgument, "expires_in"),
    ];
    for (req, code, field) in cases {
        let err = c.set_state(req).await.expect_err(field);
        assert_eq!(err.code(), code, "{}", err.message());
        assert!(err.message().starts_with(field), "{}", err.message());
    }
    let err = c
        .watch(pb::WatchRequest {
            services: vec!["Nope!".into()],
            since: None,
        })
        .await
        .expect_err("bad service");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().starts_with("services[0]"),
        "{}",
        err.message()
    );
    let err = c
        .deregister(pb::DeregisterRequest {
            service: "hello".into(),
            instance_id: "nope".into(),
            lease_id: 0,
        })
        .await
        .expect_err("unknown instance");
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(fingerprint(&mut c).await, before);
    stop(r).await;
}

#[tokio::test]
async fn oversized_messages_are_refused() {
    let mut cfg = config();
    cfg.max_message_bytes = 16 * 1024;
    let r = start(cfg).await;
    let mut c = client_of(&r).await;
    let specs: Vec<_> = (0..1000)
        .map(|i| spec("hello", &format!("instance-with-a-long-id-{i}")))
        .collect();
    let err = c
        .register(pb::RegisterRequest {
            lease_id: 0,
            ttl_seconds: 10,
            instances: specs,
        })
        .await
        .expect_err("too large");
    // gRPC's status table, not tonic's OUT_OF_RANGE.
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(ids_of(&r, "hello").await.is_empty());
    stop(r).await;
}

#[tokio::test]
async fn bad_json_requests_get_4xx_with_the_field_and_change_nothing() {
    let r = start(config()).await;
    let (code, body) = http(
        r.http,
        "POST",
        "/api/register",
        None,
        Some(r#"{"service":"hello","instance_id":"j1","address":"127.0.0.1:9","protocol":"http1","ttl_seconds":10}"#),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let lease = body["lease_id"].as_u64().expect("lease id");
    let mut c = client_of(&r).await;
    let before = fingerprint(&mut c).await;

    let cases: [(&str, &str, &str, u16, &str); 12] = [
        ("POST", "/api/register", "{not json", 400, "body"),
        (
            "POST",
            "/api/register",
            r#"{"service":"hello","instance_id":"x","address":"h:1","protocol":"http1","colour":"red"}"#,
            400,
            "colour",
        ),
        (
            "POST",
            "/api/register",
            r#"{"service":"hello","instance_id":"x","protocol":"http1"}"#,
            400,
            "address",
        ),
        (
            "POST",
            "/api/register",
            r#"{"service":"hello","instance_id":"x","address":"h:1","protocol":"http3"}"#,
            400,
            "protocol",
        ),
        (
            "POST",
            "/api/register",
            r#"{"service":"hello","instance_id":"x","address":"h:1","protocol":"http1","ttl_seconds":1}"#,
            400,
            "ttl_seconds",
        ),
        (
            "POST",
            "/api/register",
            r#"{"service":"hello","instance_id":"x","address":"h","protocol":"http1"}"#,
            400,
            "address",
        ),
        (
            "POST",
            "/api/heartbeat",
            r#"{"lease_id":"seven"}"#,
            400,
            "lease_id",
        ),
        (
            "POST",
            "/api/heartbeat",
            r#"{"lease_id":7}"#,
            404,
            "lease_id",
        ),
        (
            "PUT",
            "/api/services/hello/instances/j1",
            r#"{"state":"STARTING"}"#,
            400,
            "state",
        ),
        (
            "PUT",
            "/api/services/hello/instances/j1",
            r#"{"weight":0}"#,
            400,
            "weight",
        ),
        (
            "PUT",
            "/api/services/hello/instances/j1",
            r#"{"state":"DRAINING","expires_in_seconds":0}"#,
            400,
            "expires_in",
        ),
        (
            "PUT",
            "/api/services/hello/instances/j1",
            r#"{"state":"DRAINING","reason":"bell\u0007"}"#,
            400,
            "reason",
        ),
    ];
    for (method, path, body, code, field) in cases {
        let (got, json) = http(r.http, method, path, None, Some(body)).await;
        assert_eq!(got, code, "{method} {path} {body}: {json}");
        let error = json["error"].as_str().unwrap_or_default();
        assert!(error.contains(field), "`{field}` not named in `{error}`");
    }
    let (got, json) = http(r.http, "GET", "/api/services/Bad_Name", None, None).await;
    assert_eq!(got, 400, "{json}");
    let (got, _) = http(
        r.http,
        "DELETE",
        "/api/services/hello/instances/nope",
        None,
        None,
    )
    .await;
    assert_eq!(got, 404);
    assert_eq!(fingerprint(&mut c).await, before, "bad JSON changed state");

    // The good paths of the same API.
    let (got, _) = http(
        r.http,
        "POST",
        "/api/heartbeat",
        None,
        Some(&format!(r#"{{"lease_id":{lease}}}"#)),
    )
    .await;
    assert_eq!(got, 200);
    let (got, json) = http(
        r.http,
        "PUT",
        "/api/services/hello/instances/j1",
        None,
        Some(r#"{"state":"DRAINING","weight":5}"#),
    )
    .await;
    assert_eq!(got, 200, "{json}");
    assert_eq!(json["state"], "DRAINING");
    assert_eq!(json["weight"], 5);
    let (_, json) = http(r.http, "GET", "/api/services/hello", None, None).await;
    assert_eq!(json["instances"][0]["state"], "DRAINING");
    let (got, _) = http(
        r.http,
        "POST",
        "/api/deregister",
        None,
        Some(r#"{"service":"hello","instance_id":"j1"}"#),
    )
    .await;
    assert_eq!(got, 200);
    assert!(ids_of(&r, "hello").await.is_empty());
    stop(r).await;
}
