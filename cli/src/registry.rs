//! Commands on the registry, over its gRPC API.

use std::{
    collections::BTreeMap,
    time::{Duration, SystemTime},
};

use clap::{Args, ValueEnum};
use serde_json::{Value, json};
use switchyard_client::{Target, connect::Client, pb};
use tokio_util::sync::CancellationToken;

use crate::{Failure, Global, Output, table};

/// Filters on instances: every one given must hold.
#[derive(Args, Debug, Default)]
pub(crate) struct InstanceFilters {
    /// Only instances with this tag (repeat for several).
    #[arg(long = "tag")]
    tags: Vec<String>,
    /// Only instances with this metadata, KEY=VALUE (repeat for several).
    #[arg(long = "meta", value_parser = parse_meta)]
    meta: Vec<(String, String)>,
    /// Only instances in this zone.
    #[arg(long)]
    zone: Option<String>,
    /// Only instances in this state.
    #[arg(long, value_enum)]
    state: Option<StateArg>,
    /// Only instances with this health.
    #[arg(long, value_enum)]
    health: Option<HealthArg>,
}

/// Filters on services, and on the instances counted.
#[derive(Args, Debug)]
pub(crate) struct ServiceFilters {
    /// Only services whose name contains this.
    #[arg(long)]
    name: Option<String>,
    #[command(flatten)]
    instances: InstanceFilters,
}

/// An instance's state, as filters take it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum StateArg {
    /// Registered, not ready yet.
    Starting,
    /// Takes traffic.
    Serving,
    /// Finishing in-flight work.
    Draining,
    /// Kept out by an operator.
    OutOfService,
}

/// A state an operator may force.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum ForcedState {
    /// Takes traffic.
    Serving,
    /// Finishing in-flight work, then out.
    Draining,
    /// Out of traffic.
    OutOfService,
}

/// Health, as filters take it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum HealthArg {
    /// No check, or none finished.
    Unknown,
    /// The check passes.
    Healthy,
    /// The check fails.
    Unhealthy,
}

/// Why an override is set, and for how long.
#[derive(Args, Debug, Clone, Default)]
pub(crate) struct Why {
    /// Why, kept with the override for whoever reads it later.
    #[arg(long, default_value = "")]
    reason: String,
    /// Drop the override by itself after this long: 90s, 30m, 2h, 1d (1 s to 30 days).
    #[arg(long = "for", value_parser = parse_span)]
    expires_in: Option<Duration>,
}

/// `90`, `90s`, `30m`, `2h`, `1d`.
fn parse_span(s: &str) -> Result<Duration, String> {
    let (digits, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("`{s}` is not a duration like 90s, 30m, 2h or 1d"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n.saturating_mul(60),
        "h" => n.saturating_mul(3600),
        "d" => n.saturating_mul(86_400),
        _ => return Err(format!("`{s}` is not a duration like 90s, 30m, 2h or 1d")),
    };
    Ok(Duration::from_secs(secs))
}

/// A point in the registry's history: `EPOCH:REVISION`.
#[derive(Clone, Debug)]
pub(crate) struct Position(pb::WatchPosition);

/// `--since EPOCH:REVISION`.
pub(crate) fn parse_position(s: &str) -> Result<Position, String> {
    let (epoch, revision) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("`{s}` is not EPOCH:REVISION"))?;
    let revision = revision
        .parse()
        .map_err(|_| format!("`{revision}` is not a revision"))?;
    if epoch.is_empty() {
        return Err(format!("`{s}` has no epoch"));
    }
    Ok(Position(pb::WatchPosition {
        epoch: epoch.to_string(),
        revision,
    }))
}

fn parse_meta(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("`{s}` is not KEY=VALUE"))
}

impl From<ForcedState> for Option<pb::State> {
    fn from(s: ForcedState) -> Self {
        Some(match s {
            ForcedState::Serving => pb::State::Serving,
            ForcedState::Draining => pb::State::Draining,
            ForcedState::OutOfService => pb::State::OutOfService,
        })
    }
}

impl StateArg {
    fn pb(self) -> pb::State {
        match self {
            Self::Starting => pb::State::Starting,
            Self::Serving => pb::State::Serving,
            Self::Draining => pb::State::Draining,
            Self::OutOfService => pb::State::OutOfService,
        }
    }
}

impl HealthArg {
    fn pb(self) -> pb::Health {
        match self {
            Self::Unknown => pb::Health::Unknown,
            Self::Healthy => pb::Health::Healthy,
            Self::Unhealthy => pb::Health::Unhealthy,
        }
    }
}

impl InstanceFilters {
    fn any(&self) -> bool {
        !self.tags.is_empty()
            || !self.meta.is_empty()
            || self.zone.is_some()
            || self.state.is_some()
            || self.health.is_some()
    }

    fn admit(&self, i: &pb::Instance) -> bool {
        let Some(spec) = &i.spec else { return false };
        self.tags.iter().all(|t| spec.tags.contains(t))
            && self
                .meta
                .iter()
                .all(|(k, v)| spec.metadata.get(k) == Some(v))
            && self.zone.as_ref().is_none_or(|z| &spec.zone == z)
            && self.state.is_none_or(|s| i.state == s.pb() as i32)
            && self.health.is_none_or(|h| i.health == h.pb() as i32)
    }
}

/// Connects to the registry, within the timeout.
pub(crate) async fn connect(g: &Global) -> Result<Client, Failure> {
    let address = g.registry.clone().unwrap_or_default();
    let token = match (&g.token, &g.token_file) {
        (Some(t), _) => Some(t.clone()),
        (None, Some(path)) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| Failure::Invalid(format!("--token-file {}: {e}", path.display())))?
                .trim()
                .to_string(),
        ),
        (None, None) => None,
    };
    let files = g.tls_files()?;
    let target = Target::new([address.as_str()], token.as_deref())
        .and_then(|t| t.with_tls(files.as_ref()))
        .map_err(|e| Failure::Invalid(format!("--registry {address}: {e}")))?;
    match tokio::time::timeout(g.timeout(), target.connect(&CancellationToken::new())).await {
        Ok(Some(client)) => Ok(client),
        _ => {
            let hint = if files.is_none() {
                " (a stack deploy/up.sh started serves mutual TLS: https:// with the operator's certificate)"
            } else {
                ""
            };
            Err(Failure::Failed(format!(
                "the registry at {address} did not answer within {} s{hint}",
                g.timeout().as_secs()
            )))
        }
    }
}

/// `status`.
pub(crate) async fn status(c: &mut Client, g: &Global) -> Result<(), Failure> {
    let l = c
        .list_services(pb::ListServicesRequest {})
        .await?
        .into_inner();
    let position = l.position.clone().unwrap_or_default();
    let brake = l.brake.clone().unwrap_or_default();
    let instances: u32 = l.services.iter().map(|s| s.instances).sum();
    let unhealthy: u32 = l.services.iter().map(|s| s.unhealthy).sum();
    if g.output == Output::Json {
        println!(
            "{}",
            json!({
                "registry": g.registry,
                "epoch": position.epoch,
                "revision": position.revision,
                "authoritative": l.authoritative,
                "warming_up": l.warming_up,
                "brake": {
                    "engaged": brake.engaged,
                    "held_leases": brake.held_leases,
                    "reason": brake.reason,
                    "engaged_at": brake.engaged_at.as_ref().map(rfc3339),
                    "releases_at": brake.releases_at.as_ref().map(rfc3339),
                },
                "leases": l.leases,
                "services": l.services.len(),
                "instances": instances,
                "unhealthy": unhealthy,
            })
        );
        return Ok(());
    }
    let view = if l.authoritative {
        "authoritative".to_string()
    } else {
        "NOT authoritative: clients keep the view they hold".to_string()
    };
    let warm = if l.warming_up {
        "warming up: expiry paused"
    } else {
        "over"
    };
    let brake_line = if brake.engaged {
        format!(
            "ENGAGED ({}), holding {} leases, releases {}",
            brake.reason,
            brake.held_leases,
            brake.releases_at.as_ref().map_or("-".into(), relative)
        )
    } else {
        "released".to_string()
    };
    let rows = [
        ("registry", g.registry.clone().unwrap_or_default()),
        (
            "position",
            format!("{}:{}", position.epoch, position.revision),
        ),
        ("view", view),
        ("warm-up", warm.to_string()),
        ("brake", brake_line),
        ("leases", l.leases.to_string()),
        (
            "services",
            format!(
                "{} ({instances} instances, {unhealthy} unhealthy)",
                l.services.len()
            ),
        ),
    ];
    for (k, v) in rows {
        println!("{k:<10} {v}");
    }
    Ok(())
}

/// Instances counted by state.
#[derive(Default)]
struct Counts {
    instances: u32,
    serving: u32,
    starting: u32,
    draining: u32,
    out_of_service: u32,
    unhealthy: u32,
    held: u32,
    revision: u64,
}

impl Counts {
    fn of_summary(s: &pb::ServiceSummary) -> Self {
        Self {
            instances: s.instances,
            serving: s.serving,
            starting: s.starting,
            draining: s.draining,
            out_of_service: s.out_of_service,
            unhealthy: s.unhealthy,
            held: s.expired_held,
            revision: s.mod_revision,
        }
    }

    fn of_instances<'a>(instances: impl Iterator<Item = &'a pb::Instance>) -> Self {
        let mut c = Self::default();
        for i in instances {
            c.instances += 1;
            match pb::State::try_from(i.state) {
                Ok(pb::State::Serving) => c.serving += 1,
                Ok(pb::State::Starting) => c.starting += 1,
                Ok(pb::State::Draining) => c.draining += 1,
                Ok(pb::State::OutOfService) => c.out_of_service += 1,
                _ => {}
            }
            c.unhealthy += u32::from(i.health == pb::Health::Unhealthy as i32);
            c.held += u32::from(i.expired_held);
            c.revision = c.revision.max(i.mod_revision);
        }
        c
    }
}

/// `services`: every service (or those the filters keep), with counts.
pub(crate) async fn services(
    c: &mut Client,
    g: &Global,
    f: &ServiceFilters,
) -> Result<(), Failure> {
    let l = c
        .list_services(pb::ListServicesRequest {})
        .await?
        .into_inner();
    let mut found = Vec::new();
    for s in &l.services {
        if f.name
            .as_ref()
            .is_some_and(|n| !s.service.contains(n.as_str()))
        {
            continue;
        }
        let counts = if f.instances.any() {
            let got = get_service(c, &s.service).await?;
            let counts =
                Counts::of_instances(got.instances.iter().filter(|i| f.instances.admit(i)));
            if counts.instances == 0 {
                continue;
            }
            counts
        } else {
            Counts::of_summary(s)
        };
        found.push((s.service.clone(), counts));
    }
    if g.output == Output::Json {
        let services: Vec<Value> = found
            .iter()
            .map(|(name, c)| {
                json!({
                    "service": name, "instances": c.instances, "serving": c.serving,
                    "starting": c.starting, "draining": c.draining, "out_of_service": c.out_of_service,
                    "unhealthy": c.unhealthy, "expired_held": c.held, "mod_revision": c.revision,
                })
            })
            .collect();
        println!(
            "{}",
            json!({ "services": services, "authoritative": l.authoritative })
        );
        return Ok(());
    }
    if !l.authoritative {
        eprintln!("note: the registry's view is not authoritative (warm-up or the brake)");
    }
    let rows: Vec<Vec<String>> = found
        .iter()
        .map(|(name, c)| {
            vec![
                name.clone(),
                c.instances.to_string(),
                c.serving.to_string(),
                c.starting.to_string(),
                c.draining.to_string(),
                c.out_of_service.to_string(),
                c.unhealthy.to_string(),
                c.held.to_string(),
                c.revision.to_string(),
            ]
        })
        .collect();
    table::print(
        &[
            "SERVICE",
            "INSTANCES",
            "SERVING",
            "STARTING",
            "DRAINING",
            "OUT",
            "UNHEALTHY",
            "HELD",
            "REVISION",
        ],
        &rows,
    );
    Ok(())
}

async fn get_service(c: &mut Client, service: &str) -> Result<pb::GetServiceResponse, Failure> {
    Ok(c.get_service(pb::GetServiceRequest {
        service: service.to_string(),
    })
    .await?
    .into_inner())
}

/// `instances SERVICE`.
pub(crate) async fn instances(
    c: &mut Client,
    g: &Global,
    service: &str,
    f: &InstanceFilters,
) -> Result<(), Failure> {
    let got = get_service(c, service).await?;
    if got.instances.is_empty() {
        return Err(Failure::NotFound(format!(
            "service `{service}` has no instances"
        )));
    }
    let kept: Vec<&pb::Instance> = got.instances.iter().filter(|i| f.admit(i)).collect();
    if g.output == Output::Json {
        let list: Vec<Value> = kept.iter().map(|i| instance_json(i)).collect();
        println!(
            "{}",
            json!({ "service": service, "instances": list, "authoritative": got.authoritative })
        );
        return Ok(());
    }
    let rows: Vec<Vec<String>> = kept.iter().map(|i| instance_row(i)).collect();
    table::print(
        &[
            "INSTANCE", "ADDRESS", "ZONE", "STATE", "HEALTH", "WEIGHT", "AGE", "REVISION", "FLAGS",
            "OVERRIDE", "CHECK",
        ],
        &rows,
    );
    Ok(())
}

fn instance_row(i: &pb::Instance) -> Vec<String> {
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

fn instance_json(i: &pb::Instance) -> Value {
    let spec = i.spec.clone().unwrap_or_default();
    let protocol = pb::Protocol::try_from(spec.protocol)
        .map_or("unknown".into(), |p| short(p.as_str_name(), "PROTOCOL_"));
    let mut v = json!({
        "service": spec.service, "instance_id": spec.instance_id, "address": spec.address,
        "protocol": protocol, "tls": spec.tls, "zone": spec.zone, "version": spec.version,
        "state": state_name(i.state), "weight": i.weight, "health": health_name(i.health),
        "health_detail": i.health_detail, "expired_held": i.expired_held,
        "health_changed_at": i.health_changed_at.as_ref().map(rfc3339),
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

/// `set-state`, `drain`, `set-weight`: an operator override.
pub(crate) async fn set(
    c: &mut Client,
    g: &Global,
    (service, instance): (&str, &str),
    (state, weight, why): (Option<pb::State>, Option<u32>, Why),
) -> Result<(), Failure> {
    let request = pb::SetStateRequest {
        service: service.to_string(),
        instance_id: instance.to_string(),
        state: state.map_or(0, |s| s as i32),
        weight,
        reason: why.reason,
        expires_in: why.expires_in.map(|d| prost_types::Duration {
            seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            nanos: 0,
        }),
        clear: false,
    };
    print_changed(g, c.set_state(request).await?.into_inner())
}

/// `clear`: the instance's overrides dropped.
pub(crate) async fn clear(
    c: &mut Client,
    g: &Global,
    service: &str,
    instance: &str,
) -> Result<(), Failure> {
    let request = pb::SetStateRequest {
        service: service.to_string(),
        instance_id: instance.to_string(),
        clear: true,
        ..Default::default()
    };
    print_changed(g, c.set_state(request).await?.into_inner())
}

fn print_changed(g: &Global, done: pb::SetStateResponse) -> Result<(), Failure> {
    let i = done.instance.unwrap_or_default();
    let revision = done.position.map_or(0, |p| p.revision);
    if g.output == Output::Json {
        println!(
            "{}",
            json!({ "instance": instance_json(&i), "revision": revision })
        );
        return Ok(());
    }
    let spec = i.spec.clone().unwrap_or_default();
    println!(
        "{}/{}: {}, weight {}{} (revision {revision})",
        spec.service,
        spec.instance_id,
        state_name(i.state),
        i.weight,
        if i.r#override.is_some() {
            ", overridden"
        } else {
            ""
        }
    );
    Ok(())
}

/// `deregister SERVICE INSTANCE`.
pub(crate) async fn deregister(
    c: &mut Client,
    g: &Global,
    service: &str,
    instance: &str,
) -> Result<(), Failure> {
    let done = c
        .deregister(pb::DeregisterRequest {
            service: service.to_string(),
            instance_id: instance.to_string(),
            lease_id: 0,
        })
        .await?
        .into_inner();
    let revision = done.position.map_or(0, |p| p.revision);
    if g.output == Output::Json {
        println!(
            "{}",
            json!({ "service": service, "instance_id": instance, "revision": revision })
        );
    } else {
        println!("{service}/{instance}: deregistered (revision {revision})");
    }
    Ok(())
}

/// `watch [SERVICE...] [--since EPOCH:REVISION]`: until the stream ends or
/// Ctrl-C.
pub(crate) async fn watch(
    c: &mut Client,
    g: &Global,
    services: Vec<String>,
    since: Option<Position>,
) -> Result<(), Failure> {
    let mut stream = c
        .watch(pb::WatchRequest {
            services,
            since: since.map(|p| p.0),
        })
        .await?
        .into_inner();
    loop {
        let message = tokio::select! {
            m = stream.message() => m?,
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        let Some(m) = message else {
            return Err(Failure::Failed("the registry ended the watch".into()));
        };
        print_watched(g, &m);
    }
}

fn print_watched(g: &Global, m: &pb::WatchResponse) {
    let position = m
        .position
        .as_ref()
        .map_or(String::new(), |p| format!("{}:{}", p.epoch, p.revision));
    let json = g.output == Output::Json;
    match &m.kind {
        Some(pb::watch_response::Kind::Snapshot(s)) => {
            let reason = pb::snapshot::Reason::try_from(s.reason)
                .map_or("unknown".into(), |r| short(r.as_str_name(), "REASON_"));
            if json {
                let list: Vec<Value> = s.instances.iter().map(instance_json).collect();
                println!(
                    "{}",
                    json!({ "snapshot": { "reason": reason, "reset": s.reset, "instances": list }, "position": position })
                );
            } else {
                println!(
                    "snapshot ({reason}{}) at {position}: {} instances",
                    if s.reset { ", reset" } else { "" },
                    s.instances.len()
                );
                for i in &s.instances {
                    println!("  {}", event_line("present", i));
                }
            }
        }
        Some(pb::watch_response::Kind::Delta(d)) => {
            for e in &d.events {
                let kind = pb::event::Kind::try_from(e.kind)
                    .map_or("unknown".into(), |k| short(k.as_str_name(), "KIND_"));
                let i = e.instance.clone().unwrap_or_default();
                if json {
                    println!(
                        "{}",
                        json!({ "event": kind, "revision": e.revision, "instance": instance_json(&i), "position": position })
                    );
                } else {
                    println!("{:>8}  {}", e.revision, event_line(&kind, &i));
                }
            }
        }
        Some(pb::watch_response::Kind::Progress(_)) | None => {}
    }
}

fn event_line(kind: &str, i: &pb::Instance) -> String {
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

fn short(name: &str, prefix: &str) -> String {
    name.strip_prefix(prefix)
        .unwrap_or(name)
        .to_ascii_lowercase()
        .replace('_', "-")
}

fn state_name(s: i32) -> String {
    pb::State::try_from(s).map_or("unknown".into(), |s| short(s.as_str_name(), "STATE_"))
}

fn health_name(h: i32) -> String {
    pb::Health::try_from(h).map_or("unknown".into(), |h| short(h.as_str_name(), "HEALTH_"))
}

fn or_dash(s: &str) -> String {
    if s.is_empty() {
        "-".into()
    } else {
        s.to_string()
    }
}

fn system_time(t: &prost_types::Timestamp) -> SystemTime {
    SystemTime::try_from(*t).unwrap_or(SystemTime::UNIX_EPOCH)
}

/// A timestamp as `seconds since the epoch` in RFC 3339's UTC form.
fn rfc3339(t: &prost_types::Timestamp) -> String {
    t.to_string()
}

/// How long ago, for people: `42s`, `5m`, `3h`, `2d`.
fn age(t: &prost_types::Timestamp) -> String {
    let d = SystemTime::now()
        .duration_since(system_time(t))
        .unwrap_or(Duration::ZERO);
    span(d)
}

/// From now, for people: `in 42s` or `42s ago`.
fn relative(t: &prost_types::Timestamp) -> String {
    let at = system_time(t);
    match at.duration_since(SystemTime::now()) {
        Ok(ahead) => format!("in {}", span(ahead)),
        Err(e) => format!("{} ago", span(e.duration())),
    }
}

fn span(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86_400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}
