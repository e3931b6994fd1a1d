//! Reading the registry over its gRPC API: connecting, `services`,
//! `instances`.

use serde_json::{Value, json};
use switchyard_client::{Target, connect::Client, pb};
use tokio_util::sync::CancellationToken;

use crate::{
    Failure, Global, Output,
    args::{InstanceFilters, ServiceFilters},
    render::{instance_json, instance_row},
    table,
};

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
            "INSTANCE", "ADDRESS", "ZONE", "STATE", "HEALTH", "WEIGHT", "AGE", "LEASE", "REVISION",
            "FLAGS", "OVERRIDE", "CHECK",
        ],
        &rows,
    );
    Ok(())
}
