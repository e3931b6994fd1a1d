//! `status`: each registry replica's own status (GetStatus, asked of every
//! address given), the counts of services and instances, and with the etcd
//! store, etcd's members, leader, revision and database size.

use serde_json::{Value, json};
use switchyard_client::pb;

use crate::{
    Failure, Global, Output,
    registry::connect,
    render::{relative, rfc3339},
    table,
};

/// One address and what it answered.
struct Replica {
    address: String,
    answer: Result<pb::GetStatusResponse, String>,
}

/// `status`.
pub(crate) async fn status(g: &Global) -> Result<(), Failure> {
    let addresses: Vec<String> = g
        .registry
        .clone()
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(str::to_string)
        .collect();
    let mut replicas = Vec::new();
    let mut listing = None;
    for address in addresses {
        let one = Global {
            registry: Some(address.clone()),
            ..g.clone()
        };
        let answer = match connect(&one).await {
            Ok(mut c) => match c.get_status(pb::GetStatusRequest {}).await {
                Ok(r) => {
                    if listing.is_none() {
                        listing = c
                            .list_services(pb::ListServicesRequest {})
                            .await
                            .ok()
                            .map(tonic::Response::into_inner);
                    }
                    Ok(r.into_inner())
                }
                Err(s) => Err(Failure::from(s).message().to_string()),
            },
            Err(e) => Err(e.message().to_string()),
        };
        replicas.push(Replica { address, answer });
    }
    let Some(listing) = listing else {
        let why = replicas
            .iter()
            .filter_map(|r| r.answer.as_ref().err())
            .cloned()
            .collect::<Vec<_>>()
            .join("; ");
        return Err(Failure::Failed(format!("no registry answered: {why}")));
    };
    let etcd = replicas
        .iter()
        .filter_map(|r| r.answer.as_ref().ok()?.etcd.as_ref())
        .find(|e| e.error.is_empty())
        .or_else(|| {
            replicas
                .iter()
                .find_map(|r| r.answer.as_ref().ok()?.etcd.as_ref())
        });
    if g.output == Output::Json {
        println!("{}", status_json(&replicas, &listing, etcd));
        return Ok(());
    }
    print_replicas(&replicas);
    let instances: u32 = listing.services.iter().map(|s| s.instances).sum();
    let unhealthy: u32 = listing.services.iter().map(|s| s.unhealthy).sum();
    println!(
        "\nservices   {} ({instances} instances, {unhealthy} unhealthy)",
        listing.services.len()
    );
    if let Some(brake) = replicas
        .iter()
        .filter_map(|r| r.answer.as_ref().ok()?.brake.as_ref())
        .find(|b| b.engaged)
    {
        println!(
            "brake      ENGAGED ({}), holding {} leases, releases {}",
            brake.reason,
            brake.held_leases,
            brake.releases_at.as_ref().map_or("-".into(), relative)
        );
    }
    if let Some(etcd) = etcd {
        print_etcd(etcd);
    }
    Ok(())
}

fn print_replicas(replicas: &[Replica]) {
    let rows: Vec<Vec<String>> = replicas
        .iter()
        .map(|r| match &r.answer {
            Ok(s) => {
                let position = s.position.clone().unwrap_or_default();
                let view = if s.authoritative {
                    "authoritative"
                } else {
                    "NOT authoritative"
                };
                let brake = s.brake.as_ref().is_some_and(|b| b.engaged);
                vec![
                    r.address.clone(),
                    if s.replica.is_empty() {
                        "-".into()
                    } else {
                        s.replica.clone()
                    },
                    format!("{}:{}", position.epoch, position.revision),
                    view.into(),
                    if s.warming_up { "warming up" } else { "over" }.into(),
                    if brake { "ENGAGED" } else { "released" }.into(),
                    s.leases.to_string(),
                    s.watchers.to_string(),
                    s.store.clone(),
                ]
            }
            Err(e) => vec![r.address.clone(), "-".into(), format!("unreachable: {e}")],
        })
        .collect();
    table::print(
        &[
            "ADDRESS", "REPLICA", "POSITION", "VIEW", "WARM-UP", "BRAKE", "LEASES", "WATCHERS",
            "STORE",
        ],
        &rows,
    );
}

fn print_etcd(etcd: &pb::EtcdStatus) {
    if !etcd.error.is_empty() {
        println!("\netcd       did not answer: {}", etcd.error);
        return;
    }
    let name_of = |id: u64| {
        etcd.members
            .iter()
            .find(|m| m.id == id)
            .map_or_else(|| format!("{id:x}"), |m| m.name.clone())
    };
    let leader = if etcd.leader == 0 {
        "NONE".to_string()
    } else {
        name_of(etcd.leader)
    };
    println!(
        "\netcd       revision {}, leader {leader}, db {} ({} in use) on {}, version {}",
        etcd.revision,
        bytes(etcd.db_size),
        bytes(etcd.db_size_in_use),
        name_of(etcd.member_id),
        etcd.version
    );
    let rows: Vec<Vec<String>> = etcd
        .members
        .iter()
        .map(|m| {
            vec![
                m.name.clone(),
                format!("{:x}", m.id),
                if m.id == etcd.leader { "leader" } else { "" }.into(),
                m.client_urls.join(","),
            ]
        })
        .collect();
    table::print(&["MEMBER", "ID", "ROLE", "CLIENT URLS"], &rows);
}

fn bytes(n: i64) -> String {
    let n = n as f64;
    if n >= 1e6 {
        format!("{:.1} MB", n / 1e6)
    } else {
        format!("{:.0} kB", n / 1e3)
    }
}

fn status_json(
    replicas: &[Replica],
    listing: &pb::ListServicesResponse,
    etcd: Option<&pb::EtcdStatus>,
) -> Value {
    let replicas: Vec<Value> = replicas
        .iter()
        .map(|r| match &r.answer {
            Ok(s) => {
                let position = s.position.clone().unwrap_or_default();
                let brake = s.brake.clone().unwrap_or_default();
                json!({
                    "address": r.address,
                    "replica": s.replica,
                    "epoch": position.epoch,
                    "revision": position.revision,
                    "authoritative": s.authoritative,
                    "warming_up": s.warming_up,
                    "brake": {
                        "engaged": brake.engaged,
                        "held_leases": brake.held_leases,
                        "reason": brake.reason,
                        "engaged_at": brake.engaged_at.as_ref().map(rfc3339),
                        "releases_at": brake.releases_at.as_ref().map(rfc3339),
                    },
                    "leases": s.leases,
                    "watchers": s.watchers,
                    "store": s.store,
                    "version": s.version,
                })
            }
            Err(e) => json!({ "address": r.address, "error": e }),
        })
        .collect();
    let etcd = etcd.map(|e| {
        json!({
            "error": (!e.error.is_empty()).then_some(&e.error),
            "revision": e.revision,
            "leader": format!("{:x}", e.leader),
            "db_size": e.db_size,
            "db_size_in_use": e.db_size_in_use,
            "version": e.version,
            "answered_by": format!("{:x}", e.member_id),
            "members": e.members.iter().map(|m| json!({
                "id": format!("{:x}", m.id),
                "name": m.name,
                "client_urls": m.client_urls,
                "leader": m.id == e.leader,
            })).collect::<Vec<_>>(),
        })
    });
    // The first replica that answered, at the top as one registry's view.
    let first = replicas.iter().find(|r| r.get("error").is_none());
    let top = |k: &str| first.map_or(Value::Null, |r| r[k].clone());
    json!({
        "epoch": top("epoch"),
        "revision": top("revision"),
        "authoritative": top("authoritative"),
        "warming_up": top("warming_up"),
        "brake": top("brake"),
        "leases": top("leases"),
        "replicas": replicas,
        "services": listing.services.len(),
        "instances": listing.services.iter().map(|s| s.instances).sum::<u32>(),
        "unhealthy": listing.services.iter().map(|s| s.unhealthy).sum::<u32>(),
        "etcd": etcd,
    })
}
