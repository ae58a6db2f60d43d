//! Criterion: `post` + `get` between two threads through a ringport
//! `CompletionPort`, against crossbeam-channel's unbounded channel, same run.
//!
//! ```text
//! cargo bench -p ringport-bench --bench handoff
//! ```

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ringport_bench::handoff::{self, Pattern, Transport};

fn bench(c: &mut Criterion) {
    for pattern in Pattern::ALL {
        let mut group = c.benchmark_group(format!("handoff/{pattern}"));
        group.throughput(Throughput::Elements(1));
        group.measurement_time(Duration::from_secs(3));
        for transport in [Transport::Port, Transport::Channel] {
            let id = BenchmarkId::from_parameter(transport);
            group.bench_function(id, |b| {
                b.iter_custom(|iters| {
                    handoff::run(transport, pattern, iters)
                        .unwrap_or_else(|e| panic!("{transport}, {pattern}: {e}"))
                })
            });
        }
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
