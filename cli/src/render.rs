//! How the registry's objects are shown: table rows, JSON, names and
//! times for people.

use std::{
    collections::BTreeMap,
    time::{Duration, SystemTime},
};

use serde_json::{Value, json};
use switchyard_client::pb;

pub(crate) fn instance_row(i: &pb::Instance) -> Vec<String> {
    let spec = i.spec.clone().unwrap_or_default();
    let mut flags = Vec::new();
    if i.expired_held {
        flags.push("held");
    }
    if spec.tls {
        flags.push("tls");
    }
    vec![
        spec.instance_id,
        spec.address,
        or_dash(&spec.zone),
        state_name(i.state),
        match &i.health_changed_at {
            Some(t) => format!("{} {}", health_name(i.health), age(t)),
            None => health_name(i.health),
        },
        i.weight.to_string(),
        i.registered_at.as_ref().map_or("-".into(), age),
        i.lease_remaining
            .map_or("-".into(), |d| format!("{}s", d.seconds)),
        i.mod_revision.to_string(),
        or_dash(&flags.join(",")),
        i.r#override.as_ref().map_or("-".into(), override_text),
        or_dash(&i.health_detail),
    ]
}

/// `draining, weight 5, 12m left: "disk swap"`.
fn override_text(o: &pb::OperatorOverride) -> String {
    let mut parts = Vec::new();
    if let Some(s) = o.state {
        parts.push(state_name(s));
    }
    if let Some(w) = o.weight {
        parts.push(format!("weight {w}"));
    }
    if let Some(t) = &o.expires_at {
        parts.push(match system_time(t).duration_since(SystemTime::now()) {
            Ok(left) => format!("{} left", span(left)),
            Err(_) => "expiring".into(),
        });
    }
    let mut text = parts.join(", ");
    if !o.reason.is_empty() {
        text.push_str(&format!(": {:?}", o.reason));
    }
    text
}

pub(crate) fn instance_json(i: &pb::Instance) -> Value {
    let spec = i.spec.clone().unwrap_or_default();
    let protocol = pb::Protocol::try_from(spec.protocol)
        .map_or("unknown".into(), |p| short(p.as_str_name(), "PROTOCOL_"));
    let mut v = json!({
        "service": spec.service, "instance_id": spec.instance_id, "address": spec.address,
        "protocol": protocol, "tls": spec.tls, "zone": spec.zone, "version": spec.version,
        "state": state_name(i.state), "weight": i.weight, "health": health_name(i.health),
        "health_detail": i.health_detail, "expired_held": i.expired_held,
        "health_changed_at": i.health_changed_at.as_ref().map(rfc3339),
        "lease_remaining_seconds": i.lease_remaining.map(|d| d.seconds),
        "mod_revision": i.mod_revision, "registered_at": i.registered_at.as_ref().map(rfc3339),
        "tags": spec.tags, "metadata": spec.metadata.iter().collect::<BTreeMap<_, _>>(),
        "override": i.r#override.as_ref().map(|o| json!({
            "state": o.state.map(state_name), "weight": o.weight, "reason": o.reason,
            "updated_at": o.updated_at.as_ref().map(rfc3339),
            "expires_at": o.expires_at.as_ref().map(rfc3339),
        })),
    });
    if i.lease_id != 0 {
        v["lease_id"] = json!(i.lease_id);
    }
    v
}

pub(crate) fn event_line(kind: &str, i: &pb::Instance) -> String {
    let spec = i.spec.clone().unwrap_or_default();
    format!(
        "{kind:<7} {}/{}  {}  {}  {}",
        spec.service,
        spec.instance_id,
        spec.address,
        state_name(i.state),
        health_name(i.health)
    )
}

pub(crate) fn short(name: &str, prefix: &str) -> String {
    name.strip_prefix(prefix)
        .unwrap_or(name)
        .to_ascii_lowercase()
        .replace('_', "-")
}

pub(crate) fn state_name(s: i32) -> String {
    pb::State::try_from(s).map_or("unknown".into(), |s| short(s.as_str_name(), "STATE_"))
}

pub(crate) fn health_name(h: i32) -> String {
    pb::Health::try_from(h).map_or("unknown".into(), |h| short(h.as_str_name(), "HEALTH_"))
}

pub(crate) fn or_dash(s: &str) -> String {
    if s.is_empty() {
        "-".into()
    } else {
        s.to_string()
    }
}

pub(crate) fn system_time(t: &prost_types::Timestamp) -> SystemTime {
    SystemTime::try_from(*t).unwrap_or(SystemTime::UNIX_EPOCH)
}

/// A timestamp as `seconds since the epoch` in RFC 3339's UTC form.
pub(crate) fn rfc3339(t: &prost_types::Timestamp) -> String {
    t.to_string()
}

/// How long ago, for people: `42s`, `5m`, `3h`, `2d`.
pub(crate) fn age(t: &prost_types::Timestamp) -> String {
    let d = SystemTime::now()
        .duration_since(system_time(t))
        .unwrap_or(Duration::ZERO);
    span(d)
}

/// From now, for people: `in 42s` or `42s ago`.
pub(crate) fn relative(t: &prost_types::Timestamp) -> String {
    let at = system_time(t);
    match at.duration_since(SystemTime::now()) {
        Ok(ahead) => format!("in {}", span(ahead)),
        Err(e) => format!("{} ago", span(e.duration())),
    }
}

pub(crate) fn span(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86_400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}
