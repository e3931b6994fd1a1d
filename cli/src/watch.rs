//! `watch`: the registry's changes as they happen.

use serde_json::{Value, json};
use switchyard_client::{connect::Client, pb};

use crate::{
    Failure, Global, Output,
    args::Position,
    render::{event_line, instance_json, short},
};

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
