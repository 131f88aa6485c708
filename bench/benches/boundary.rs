//! Micro-benchmarks of the boundary (`cargo bench -p sluicegate-bench`): one hop through
//! pass-through stages at chain depths 1 and 4, one 64-byte record per chunk; the raw component
//! call that is the floor; and the host's chunk framing. The comparisons across variants
//! (native, threads, CPython) are in the bench binary (`--bin bench`).

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use sluicegate::{Chunk, Engine, Stage};

#[allow(dead_code, reason = "the micro-benchmarks use only some of the stages")]
mod stages {
    include!(concat!(env!("OUT_DIR"), "/stages.rs"));
}

#[path = "../src/chain.rs"]
mod chain;

fn chain(engine: &Engine, depth: usize, bytes: usize) -> Vec<Stage> {
    let component = engine
        .load_bytes("passthrough", stages::PASSTHROUGH)
        .expect("passthrough loads");
    chain::primed_chain(&component, depth, bytes).expect("a primed chain")
}

fn hops(c: &mut Criterion) {
    let engine = Engine::new().expect("engine");
    let mut group = c.benchmark_group("hop-64B");
    for depth in [1usize, 4] {
        let stages = chain(&engine, depth, 64);
        let tail = stages.last().expect("a stage").clone();
        group.bench_function(format!("depth-{depth}"), |b| {
            b.iter(|| black_box(tail.resume(1).expect("resume")))
        });
        for stage in &stages {
            stage.close().expect("closes");
        }
    }
    group.finish();
}

fn framing(c: &mut Criterion) {
    let record = [7u8; 40];
    c.bench_function("chunk-push-256x40B", |b| {
        b.iter(|| {
            let mut chunk = Chunk::empty();
            for _ in 0..256 {
                chunk.push(black_box(&record));
            }
            chunk
        })
    });
    let chunk = Chunk::from_records((0..256).map(|_| record.to_vec()));
    c.bench_function("chunk-records-256x40B", |b| {
        b.iter(|| black_box(&chunk).records().map(<[u8]>::len).sum::<usize>())
    });
}

criterion_group!(benches, hops, framing);
criterion_main!(benches);
