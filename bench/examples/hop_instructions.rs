//! Instructions per hop, for `valgrind --tool=callgrind` (deterministic where timings on a
//! shared machine are not): a chain of 4 pass-through stages, one 64-byte record per chunk,
//! N resumes of the tail inside `hops`, which is the only function collected:
//!
//! ```sh
//! cargo build --release -p sluicegate-bench --example hop_instructions
//! valgrind --tool=callgrind --collect-atstart=no --toggle-collect='hop_instructions::hops' \
//!     target/release/examples/hop_instructions 20000
//! ```
//! Instructions per hop = collected instructions / (N × 4). A second argument `wat` runs the
//! hand-written WAT pass-through instead of the Rust SDK's, to see the host's and wasmtime's
//! share of a hop without the guest's own work.

use sluicegate::{Engine, Stage};

#[path = "../src/chain.rs"]
mod chain;

#[allow(dead_code, reason = "only the pass-through stage is used here")]
mod stages {
    include!(concat!(env!("OUT_DIR"), "/stages.rs"));
}

const DEPTH: usize = 4;

#[inline(never)]
fn hops(tail: &Stage, n: u32) -> u64 {
    let mut records = 0;
    for _ in 0..n {
        if let Ok(Some(chunk)) = tail.resume(1) {
            records += u64::from(chunk.len());
        }
    }
    records
}

fn main() -> anyhow::Result<()> {
    let n: u32 = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(20_000);
    let engine = Engine::new()?;
    let component = match std::env::args().nth(2).as_deref() {
        Some("wat") => engine.load_bytes(
            "wat-passthrough",
            include_bytes!("../../example-stages/wat-passthrough/stage.wat"),
        )?,
        _ => engine.load_bytes("passthrough", stages::PASSTHROUGH)?,
    };
    let chain = chain::primed_chain(&component, DEPTH, 64)?;
    let tail = chain.last().ok_or_else(|| anyhow::anyhow!("empty chain"))?;
    hops(tail, 100); // warm up outside the collected call
    let records = hops(tail, n);
    anyhow::ensure!(records == u64::from(n), "lost records: {records} of {n}");
    for stage in &chain {
        stage.close()?;
    }
    println!("{n} resumes through {DEPTH} stages");
    Ok(())
}
