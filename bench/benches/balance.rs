//! Micro-benchmarks of the pick algorithms and of assignment building.
//! Run with: cargo bench -p switchyard-bench --bench balance
#![allow(missing_docs)]

use std::{hint::black_box, sync::Arc, time::Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use switchyard_balancer::{config::ServiceConfig, service::Service};
use switchyard_client::balance::{Load, Member, Pick, Picker, Policy};
use switchyard_proto::registry::v1 as reg;

fn members(n: usize) -> Vec<Member> {
    (0..n)
        .map(|i| {
            let load = Arc::new(Load::new());
            load.observe(std::time::Duration::from_micros(500 + (i as u64 % 17) * 50));
            Member {
                id: Arc::from(format!("instance-{i}")),
                weight: 100.0,
                load,
            }
        })
        .collect()
}

fn picks(c: &mut Criterion) {
    let mut group = c.benchmark_group("pick");
    for n in [10usize, 1000] {
        for policy in Policy::ALL {
            let picker = Picker::new(policy, members(n));
            let mut i = 0u64;
            group.bench_with_input(BenchmarkId::new(policy.name(), n), &n, |b, _| {
                b.iter(|| {
                    i = i.wrapping_add(1);
                    let key = i.to_le_bytes();
                    black_box(picker.pick(Pick { key: Some(&key) }, |_| true))
                })
            });
        }
    }
    group.finish();
}

fn instances(n: usize) -> Vec<reg::Instance> {
    (0..n)
        .map(|i| reg::Instance {
            spec: Some(reg::InstanceSpec {
                service: "hello".into(),
                instance_id: format!("instance-{i:04}"),
                address: format!("10.0.{}.{}:8080", i / 250, i % 250),
                protocol: reg::Protocol::Http1 as i32,
                zone: format!("z{}", i % 3),
                ..Default::default()
            }),
            state: reg::State::Serving as i32,
            weight: 100,
            registered_at: Some(prost_types::Timestamp {
                seconds: 0,
                nanos: 0,
            }),
            ..Default::default()
        })
        .collect()
}

fn assignment(c: &mut Criterion) {
    let all = instances(1000);
    let mut flip = all.clone();
    flip[500].weight = 50;
    let mut service = Service::new("hello", ServiceConfig::default());
    service.set_instances(&all, None, true);
    let mut toggle = false;
    c.bench_function("assignment/recompute_1000", |b| {
        b.iter(|| {
            toggle = !toggle;
            service.set_instances(if toggle { &flip } else { &all }, None, true);
            black_box(service.publish(Instant::now(), std::time::SystemTime::now(), "b1"))
        })
    });
}

criterion_group!(benches, picks, assignment);
criterion_main!(benches);
