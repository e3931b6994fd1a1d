//! Commands that change an instance: overrides (`set-state`, `drain`,
//! `set-weight`, `clear`) and `deregister`. They need the operator.

use serde_json::json;
use switchyard_client::{connect::Client, pb};

use crate::{
    Failure, Global, Output,
    args::Why,
    render::{instance_json, state_name},
};

/// What `set-state`, `drain` and `set-weight` ask of an instance.
pub(crate) struct Change {
    /// The state to force, if any.
    pub state: Option<pb::State>,
    /// The weight to force, if any.
    pub weight: Option<u32>,
    /// Why, and for how long.
    pub why: Why,
}

/// `set-state`, `drain`, `set-weight`: an operator override.
pub(crate) async fn set(
    c: &mut Client,
    g: &Global,
    service: &str,
    instance: &str,
    change: Change,
) -> Result<(), Failure> {
    let Change { state, weight, why } = change;
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
