//! `endpoints SERVICE`: a service's endpoints as the gateway uses them
//! (its admin JSON) and as each balancer assigns them (their gRPC stats).

use crate::{Failure, Global, Output, balancers, gateway, registry};

/// `endpoints SERVICE`: the gateway's view, then each balancer's. Not
/// found (3) when none of them knows the service; failed (1) when none
/// could be asked.
pub(crate) async fn show(g: &Global, service: &str) -> Result<(), Failure> {
    let gateway = gateway::service(g, service).await;
    let balancers = match registry::connect(g).await {
        Ok(mut c) => balancers::views(&mut c, g, service).await,
        Err(e) => Err(e),
    };
    let known = matches!(gateway, Ok(Some(_)))
        || matches!(&balancers, Ok(v) if v.iter().any(|b| matches!(b.stats, Ok(Some(_)))));
    let reached =
        gateway.is_ok() || matches!(&balancers, Ok(v) if v.iter().any(|b| b.stats.is_ok()));
    let text = |e: &Failure| match e {
        Failure::Failed(m) | Failure::Invalid(m) | Failure::NotFound(m) => m.clone(),
    };
    if g.output == Output::Json {
        let mut out = serde_json::json!({ "service": service });
        match &gateway {
            Ok(v) => out["gateway"] = v.clone().unwrap_or_default(),
            Err(e) => out["gateway_error"] = text(e).into(),
        }
        match &balancers {
            Ok(v) => out["balancers"] = balancers::json(v),
            Err(e) => out["balancers_error"] = text(e).into(),
        }
        println!("{out}");
    } else {
        match &gateway {
            Ok(Some(v)) => gateway::print_service(service, v),
            Ok(None) => println!("gateway: does not follow `{service}`"),
            Err(e) => println!("gateway: {}", text(e)),
        }
        match &balancers {
            Ok(v) if v.is_empty() => println!("\nbalancers: none registered"),
            Ok(v) => balancers::print(v),
            Err(e) => println!("\nbalancers: {}", text(e)),
        }
    }
    if !reached {
        return Err(Failure::Failed(
            "neither the gateway nor a balancer could be asked".into(),
        ));
    }
    if !known {
        return Err(Failure::NotFound(format!(
            "neither the gateway nor a balancer follows `{service}`"
        )));
    }
    Ok(())
}
