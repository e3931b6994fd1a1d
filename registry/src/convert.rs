//! Prost types to and from domain types, with validation on the way in.
//! Every refusal names the field as a path (`instances[2].address`).

use std::{
    collections::BTreeSet,
    time::{Duration, SystemTime},
};

use prost_types::Timestamp;
use switchyard_proto::registry::v1 as pb;

use crate::{
    config::Limits,
    error::Error,
    model::{
        self, Change, CheckKind, DeleteReason, Event, Health, HealthCheck, Instance, InstanceSpec,
        OverrideRequest, Position, Protocol, State,
    },
    state::{SnapshotReason, WatchBody, WatchMessage},
    validate,
};

fn invalid(field: &str, reason: impl Into<String>) -> Error {
    Error::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

/// Validates and converts one instance of a Register call.
pub fn spec_from_pb(field: &str, p: pb::InstanceSpec) -> Result<InstanceSpec, Error> {
    validate::service(&format!("{field}.service"), &p.service)?;
    validate::instance_id(&format!("{field}.instance_id"), &p.instance_id)?;
    validate::address(&format!("{field}.address"), &p.address)?;
    let protocol = match pb::Protocol::try_from(p.protocol) {
        // Not given: plain HTTP/1.1, what most instances serve.
        Ok(pb::Protocol::Unspecified | pb::Protocol::Http1) => Protocol::Http1,
        Ok(pb::Protocol::H2c) => Protocol::H2c,
        Ok(pb::Protocol::Grpc) => Protocol::Grpc,
        _ => {
            return Err(invalid(
                &format!("{field}.protocol"),
                "must be HTTP1, H2C or GRPC (or unset, for HTTP1)",
            ));
        }
    };
    let metadata = p.metadata.into_iter().collect();
    validate::metadata(&format!("{field}.metadata"), &metadata)?;
    validate::tags(&format!("{field}.tags"), &p.tags)?;
    let weight = validate::weight(&format!("{field}.weight"), p.weight)?;
    validate::short(&format!("{field}.zone"), &p.zone)?;
    validate::short(&format!("{field}.version"), &p.version)?;
    let state = client_state(&format!("{field}.state"), p.state)?;
    let health_check = p
        .health_check
        .map(|h| check_from_pb(&format!("{field}.health_check"), h))
        .transpose()?;
    if p.tls
        && health_check
            .as_ref()
            .is_some_and(|h| h.kind != CheckKind::Tcp)
    {
        // The registry's HTTP and gRPC checks speak plaintext: on a TLS
        // port they would fail every time and mark the instance unhealthy.
        return Err(invalid(
            &format!("{field}.health_check"),
            "an instance served over TLS takes a tcp check only",
        ));
    }
    Ok(InstanceSpec {
        service: p.service,
        instance_id: p.instance_id,
        address: p.address,
        protocol,
        metadata,
        tags: p.tags,
        weight,
        zone: p.zone,
        version: p.version,
        state,
        health_check,
        tls: p.tls,
    })
}

/// The state a client may ask for: STARTING, SERVING (the default) or DRAINING.
pub fn client_state(field: &str, raw: i32) -> Result<State, Error> {
    match pb::State::try_from(raw) {
        Ok(pb::State::Unspecified | pb::State::Serving) => Ok(State::Serving),
        Ok(pb::State::Starting) => Ok(State::Starting),
        Ok(pb::State::Draining) => Ok(State::Draining),
        Ok(pb::State::OutOfService) => Err(invalid(
            field,
            "OUT_OF_SERVICE is set by operators with SetState",
        )),
        Err(_) => Err(invalid(field, format!("unknown state {raw}"))),
    }
}

/// The state an operator may force (not STARTING); None leaves it.
pub fn operator_state(field: &str, raw: i32) -> Result<Option<State>, Error> {
    match pb::State::try_from(raw) {
        Ok(pb::State::Unspecified) => Ok(None),
        Ok(pb::State::Serving) => Ok(Some(State::Serving)),
        Ok(pb::State::Draining) => Ok(Some(State::Draining)),
        Ok(pb::State::OutOfService) => Ok(Some(State::OutOfService)),
        Ok(pb::State::Starting) => Err(invalid(field, "STARTING cannot be forced")),
        Err(_) => Err(invalid(field, format!("unknown state {raw}"))),
    }
}

fn duration_or(
    field: &str,
    d: Option<prost_types::Duration>,
    default: Duration,
) -> Result<Duration, Error> {
    match d {
        None => Ok(default),
        Some(d) if d.seconds < 0 || d.nanos < 0 => Err(invalid(field, "must not be negative")),
        Some(d) => Ok(Duration::new(
            d.seconds.unsigned_abs(),
            d.nanos.unsigned_abs(),
        )),
    }
}

/// A SetState call's override request, checked.
pub fn override_request(r: pb::SetStateRequest) -> Result<OverrideRequest, Error> {
    let expires_in = r
        .expires_in
        .map(|d| duration_or("expires_in", Some(d), Duration::ZERO))
        .transpose()?;
    validate::override_request(OverrideRequest {
        state: operator_state("state", r.state)?,
        weight: r.weight,
        clear: r.clear,
        reason: r.reason,
        expires_in,
    })
}

fn check_from_pb(field: &str, h: pb::HealthCheck) -> Result<HealthCheck, Error> {
    let kind = match h.kind {
        Some(pb::health_check::Kind::Grpc(g)) => CheckKind::Grpc { service: g.service },
        Some(pb::health_check::Kind::Http(http)) => {
            validate::check_path(&format!("{field}.http.path"), &http.path)?;
            CheckKind::Http { path: http.path }
        }
        Some(pb::health_check::Kind::Tcp(_)) => CheckKind::Tcp,
        None => {
            return Err(invalid(
                &format!("{field}.kind"),
                "set one of grpc, http or tcp",
            ));
        }
    };
    let interval = duration_or(
        &format!("{field}.interval"),
        h.interval,
        Duration::from_secs(5),
    )?;
    if !(Duration::from_secs(1)..=Duration::from_secs(300)).contains(&interval) {
        return Err(invalid(
            &format!("{field}.interval"),
            "must be 1 s to 300 s",
        ));
    }
    let timeout = duration_or(
        &format!("{field}.timeout"),
        h.timeout,
        Duration::from_secs(2).min(interval / 2),
    )?;
    if timeout.is_zero() || timeout >= interval {
        return Err(invalid(
            &format!("{field}.timeout"),
            "must be above 0 and below interval",
        ));
    }
    let threshold = |name: &str, v: u32, default: u32| match v {
        0 => Ok(default),
        1..=100 => Ok(v),
        _ => Err(invalid(&format!("{field}.{name}"), "must be 1 to 100")),
    };
    Ok(HealthCheck {
        kind,
        interval,
        timeout,
        unhealthy_threshold: threshold("unhealthy_threshold", h.unhealthy_threshold, 2)?,
        healthy_threshold: threshold("healthy_threshold", h.healthy_threshold, 1)?,
    })
}

/// Validates a whole Register request; nothing is applied if any field fails.
pub fn register_from_pb(
    r: pb::RegisterRequest,
    limits: &Limits,
) -> Result<(u64, u32, Vec<InstanceSpec>), Error> {
    validate::instance_count("instances", r.instances.len())?;
    let ttl = validate::ttl("ttl_seconds", r.ttl_seconds, limits)?;
    let mut seen = BTreeSet::new();
    let mut specs = Vec::with_capacity(r.instances.len());
    for (i, p) in r.instances.into_iter().enumerate() {
        let field = format!("instances[{i}]");
        let spec = spec_from_pb(&field, p)?;
        if !seen.insert((spec.service.clone(), spec.instance_id.clone())) {
            return Err(invalid(
                &format!("{field}.instance_id"),
                "appears twice in this request",
            ));
        }
        specs.push(spec);
    }
    Ok((r.lease_id, ttl, specs))
}

/// A Watch's `since`, if any.
pub fn position_from_pb(p: Option<pb::WatchPosition>) -> Option<Position> {
    p.map(|p| Position {
        epoch: p.epoch.into(),
        revision: p.revision,
    })
}

/// A position on the wire.
pub fn position_to_pb(p: &Position) -> pb::WatchPosition {
    pb::WatchPosition {
        epoch: p.epoch.to_string(),
        revision: p.revision,
    }
}

/// A wall-clock time on the wire.
pub fn timestamp(t: SystemTime) -> Timestamp {
    Timestamp::from(t)
}

fn protocol_to_pb(p: Protocol) -> pb::Protocol {
    match p {
        Protocol::Http1 => pb::Protocol::Http1,
        Protocol::H2c => pb::Protocol::H2c,
        Protocol::Grpc => pb::Protocol::Grpc,
    }
}

/// A state on the wire.
pub fn state_to_pb(s: State) -> pb::State {
    match s {
        State::Starting => pb::State::Starting,
        State::Serving => pb::State::Serving,
        State::Draining => pb::State::Draining,
        State::OutOfService => pb::State::OutOfService,
    }
}

fn health_to_pb(h: Health) -> pb::Health {
    match h {
        Health::Unknown => pb::Health::Unknown,
        Health::Healthy => pb::Health::Healthy,
        Health::Unhealthy => pb::Health::Unhealthy,
    }
}

fn check_to_pb(h: &HealthCheck) -> pb::HealthCheck {
    let kind = match &h.kind {
        CheckKind::Grpc { service } => pb::health_check::Kind::Grpc(pb::GrpcHealthCheck {
            service: service.clone(),
        }),
        CheckKind::Http { path } => {
            pb::health_check::Kind::Http(pb::HttpHealthCheck { path: path.clone() })
        }
        CheckKind::Tcp => pb::health_check::Kind::Tcp(pb::TcpHealthCheck {}),
    };
    pb::HealthCheck {
        kind: Some(kind),
        interval: Some(switchyard_proto::duration(h.interval)),
        timeout: Some(switchyard_proto::duration(h.timeout)),
        unhealthy_threshold: h.unhealthy_threshold,
        healthy_threshold: h.healthy_threshold,
    }
}

fn spec_to_pb(s: &InstanceSpec) -> pb::InstanceSpec {
    pb::InstanceSpec {
        service: s.service.clone(),
        instance_id: s.instance_id.clone(),
        address: s.address.clone(),
        protocol: protocol_to_pb(s.protocol) as i32,
        metadata: s
            .metadata
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        tags: s.tags.clone(),
        weight: s.weight,
        zone: s.zone.clone(),
        version: s.version.clone(),
        state: state_to_pb(s.state) as i32,
        health_check: s.health_check.as_ref().map(check_to_pb),
        tls: s.tls,
    }
}

/// An instance on the wire.
pub fn instance_to_pb(i: &Instance) -> pb::Instance {
    pb::Instance {
        spec: Some(spec_to_pb(&i.spec)),
        state: state_to_pb(i.state()) as i32,
        weight: i.weight(),
        health: health_to_pb(i.health) as i32,
        expired_held: i.expired_held,
        lease_id: i.lease_id,
        r#override: i.overrides.as_ref().map(|o| pb::OperatorOverride {
            state: o.state.map(|s| state_to_pb(s) as i32),
            weight: o.weight,
            updated_at: Some(timestamp(o.updated_at)),
            reason: o.reason.clone(),
            expires_at: o.expires_at.map(timestamp),
        }),
        mod_revision: i.mod_revision,
        registered_at: Some(timestamp(i.registered_at)),
        health_detail: i.health_detail.clone(),
        health_changed_at: i.health_changed_at.map(timestamp),
        // Where the replica keeps the lease: filled by GetService.
        lease_remaining: None,
    }
}

fn event_to_pb(e: &Event) -> pb::Event {
    let (kind, reason) = match e.change {
        Change::Put => (pb::event::Kind::Put, pb::event::DeleteReason::Unspecified),
        Change::Delete(r) => (
            pb::event::Kind::Delete,
            match r {
                DeleteReason::Deregistered => pb::event::DeleteReason::Deregistered,
                DeleteReason::Expired => pb::event::DeleteReason::Expired,
                DeleteReason::Revoked => pb::event::DeleteReason::Revoked,
            },
        ),
    };
    pb::Event {
        revision: e.revision,
        kind: kind as i32,
        instance: Some(instance_to_pb(&e.instance)),
        delete_reason: reason as i32,
    }
}

fn reason_to_pb(r: SnapshotReason) -> pb::snapshot::Reason {
    match r {
        SnapshotReason::Initial => pb::snapshot::Reason::Initial,
        SnapshotReason::OtherEpoch => pb::snapshot::Reason::OtherEpoch,
        SnapshotReason::FutureRevision => pb::snapshot::Reason::FutureRevision,
        SnapshotReason::Compacted => pb::snapshot::Reason::Compacted,
        SnapshotReason::SlowWatcher => pb::snapshot::Reason::SlowWatcher,
    }
}

/// Lease ids are bearer credentials (whoever holds one can renew, replace
/// and deregister its instances): only operators see them. Clears them in
/// a message for anyone else.
pub fn hide_lease_ids<'a>(instances: impl IntoIterator<Item = &'a mut pb::Instance>) {
    for i in instances {
        i.lease_id = 0;
    }
}

/// [`hide_lease_ids`] for a watch message.
pub fn hide_watch_lease_ids(m: &mut pb::WatchResponse) {
    use pb::watch_response::Kind;
    match &mut m.kind {
        Some(Kind::Snapshot(s)) => hide_lease_ids(&mut s.instances),
        Some(Kind::Delta(d)) => {
            hide_lease_ids(d.events.iter_mut().filter_map(|e| e.instance.as_mut()))
        }
        Some(Kind::Progress(_)) | None => {}
    }
}

/// A watch message on the wire.
pub fn watch_to_pb(m: &WatchMessage) -> pb::WatchResponse {
    use pb::watch_response::Kind;
    let kind = match &m.body {
        WatchBody::Snapshot {
            instances,
            reset,
            reason,
        } => Kind::Snapshot(pb::Snapshot {
            instances: instances.iter().map(instance_to_pb).collect(),
            reset: *reset,
            reason: reason_to_pb(*reason) as i32,
        }),
        WatchBody::Delta(events) => Kind::Delta(pb::Delta {
            events: events.iter().map(|e| event_to_pb(e)).collect(),
        }),
        WatchBody::Progress => Kind::Progress(pb::Progress {}),
    };
    pb::WatchResponse {
        kind: Some(kind),
        position: Some(position_to_pb(&m.position)),
        authoritative: m.authoritative,
    }
}

/// The key an RPC names, validated.
pub fn key(service: &str, instance_id: &str) -> Result<model::Key, Error> {
    validate::service("service", service)?;
    validate::instance_id("instance_id", instance_id)?;
    Ok(model::Key {
        service: service.into(),
        instance_id: instance_id.into(),
    })
}
