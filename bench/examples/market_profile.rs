//! The market pipeline at a given credit count, for profilers (`perf record`): runs
//! sluicegate's isolated variant `ROUNDS` times over the same prepared ticks (`native` as a
//! third argument: the native Rust variant instead).
//!
//! ```sh
//! cargo build --release -p sluicegate-bench --example market_profile
//! SLUICEGATE_PERF_MAP=1 perf record target/release/examples/market_profile 256 20
//! valgrind --tool=callgrind --collect-atstart=no \
//!     --toggle-collect='market_profile::market::sluicegate' \
//!     target/release/examples/market_profile 256 1
//! ```

#[allow(
    dead_code,
    reason = "only the isolated sluicegate variant is used here"
)]
#[path = "../src/market.rs"]
mod market;

#[allow(dead_code, reason = "only the market stages are used here")]
mod stages {
    include!(concat!(env!("OUT_DIR"), "/stages.rs"));
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let credits: u32 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(256);
    let rounds: u32 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(5);
    let engine = sluicegate::Engine::new()?;
    let stages = market::MarketStages::load(&engine)?;
    let ticks = market::Ticks::prepare(500_000)?;
    let native = std::env::args().nth(3).as_deref() == Some("native");
    for _ in 0..rounds {
        let outcome = if native {
            market::native(&ticks)
        } else {
            market::sluicegate(&stages, &ticks, credits, None, None)?
        };
        println!("{:.0} records/s", outcome.records_per_s(ticks.len()));
    }
    Ok(())
}
