//! The market pipeline partitioned by symbol (`[partitions]`, docs/scale-out.md): 1, 2 and 4
//! replicas of the four stages, a router reading the same prepared ticks, against native Rust
//! on one thread and Rust threads with bounded queues, all on the same ticks. Only the run is
//! timed (priming included, as for the single chain); the CPU time is the process's over the
//! run; the peak memory is measured in a child process per count.

use std::path::Path;
use std::time::Instant;

use sluicegate::config::PipelineSpec;
use sluicegate::report::RunStatus;
use sluicegate::{Chunk, Demand, Engine, PipelineBuilder};

use crate::market::Ticks;

/// The partition counts measured.
pub const COUNTS: [u32; 3] = [1, 2, 4];

/// Credits the sink grants each replica.
pub const CREDITS: u32 = 256;

/// One partitioned run's figures (the median of the rounds).
pub struct PartitionRow {
    pub partitions: u32,
    pub records_per_s: f64,
    /// Process CPU time (user + system) per tick, µs.
    pub cpu_us_per_record: f64,
    /// Peak resident set of a child process running it, MiB (the ticks held in memory
    /// included), when measured.
    pub peak_rss_mib: Option<f64>,
}

/// The market pipeline of `examples/market-partitioned.toml` over the prepared ticks.
fn spec(partitions: u32) -> anyhow::Result<PipelineSpec> {
    let toml = format!(
        "name = \"market-partitioned\"\n\
         [source]\nkind = \"ticks\"\n\
         [partitions]\ncount = {partitions}\nkey = {{ delimiter = \",\", field = 2 }}\n\
         [[stage]]\nname = \"decode\"\ncomponent = \"builtin:decode\"\n\
         [[stage]]\nname = \"filter\"\ncomponent = \"builtin:symbol-filter\"\n\
         config = {{ symbols = [\"AAPL\", \"MSFT\", \"NVDA\", \"AMZN\", \"GOOG\", \"META\", \"TSLA\", \"JPM\"] }}\n\
         [[stage]]\nname = \"vwap\"\ncomponent = \"builtin:vwap\"\nconfig = {{ window = 32 }}\n\
         [[stage]]\nname = \"strategy\"\ncomponent = \"builtin:strategy\"\n\
         [sink]\nkind = \"discard\"\ncredits = {CREDITS}\n"
    );
    Ok(PipelineSpec::from_toml(
        &toml,
        Path::new("market-partitioned.toml"),
    )?)
}

/// A builder that knows the example stages and a `ticks` source serving `ticks`.
fn builder<'a>(engine: &'a Engine, ticks: &Ticks) -> PipelineBuilder<'a> {
    PipelineBuilder::new(engine)
        .builtin("decode", crate::stages::DECODE)
        .builtin("symbol-filter", crate::stages::SYMBOL_FILTER)
        .builtin("vwap", crate::stages::VWAP)
        .builtin("strategy", crate::stages::STRATEGY)
        .source_kind("ticks", ticks_source(ticks))
}

/// The opener of a `ticks` source: the prepared ticks, each pull honouring its demand.
pub fn ticks_source(
    ticks: &Ticks,
) -> impl Fn(&sluicegate::config::SourceSpec) -> sluicegate::Result<Box<dyn sluicegate::Upstream>>
+ Send
+ Sync
+ 'static {
    let lines = ticks.lines();
    move |_| {
        let lines = lines.clone();
        let mut at = 0usize;
        Ok(Box::new(move |demand: Demand| {
            let mut chunk = Chunk::empty();
            while chunk.len() < demand.records {
                let Some(line) = lines.get(at) else {
                    return Ok((!chunk.is_empty() || demand.records == 0).then_some(chunk));
                };
                at += 1;
                chunk.push(line);
            }
            Ok(Some(chunk))
        }))
    }
}

/// One run with `partitions` replicas: (records/s, CPU seconds, orders).
pub fn run(engine: &Engine, ticks: &Ticks, partitions: u32) -> anyhow::Result<(f64, f64, u64)> {
    let mut pipeline = builder(engine, ticks).build(&spec(partitions)?, Path::new("."))?;
    let (user, sys) = crate::resources::process_cpu();
    let started = Instant::now();
    let report = pipeline.run();
    let seconds = started.elapsed().as_secs_f64();
    let (user_after, sys_after) = crate::resources::process_cpu();
    anyhow::ensure!(report.status == RunStatus::Ok, "{report}");
    Ok((
        ticks.len() as f64 / seconds,
        (user_after - user) + (sys_after - sys),
        report.sink.records,
    ))
}

/// The median of `rounds` runs per count, every count's orders checked against `orders`.
pub fn measure(
    engine: &Engine,
    ticks: &Ticks,
    rounds: usize,
    orders: u64,
) -> anyhow::Result<Vec<PartitionRow>> {
    let mut rows = Vec::new();
    for partitions in COUNTS {
        let mut rates = Vec::new();
        let mut cpus = Vec::new();
        for _ in 0..rounds {
            let (rate, cpu, got) = run(engine, ticks, partitions)?;
            anyhow::ensure!(
                got == orders,
                "{partitions} partitions: {got} orders, native Rust {orders}"
            );
            rates.push(rate);
            cpus.push(cpu);
        }
        rows.push(PartitionRow {
            partitions,
            records_per_s: crate::percentile(&mut rates, 0.5),
            cpu_us_per_record: crate::percentile(&mut cpus, 0.5) * 1e6 / ticks.len() as f64,
            peak_rss_mib: None,
        });
    }
    Ok(rows)
}

/// The child's side of the memory measurement: prepares the ticks, resets the peak, runs
/// with `partitions` replicas; the caller prints the peak.
pub fn child(partitions: u32, records: u64) -> anyhow::Result<()> {
    let ticks = Ticks::prepare(records)?;
    if let Some(kib) = crate::resources::reset_peak_rss() {
        println!("input_rss_kib={kib}");
    }
    let engine = Engine::new()?;
    run(&engine, &ticks, partitions)?;
    Ok(())
}
