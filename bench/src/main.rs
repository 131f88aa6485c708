//! `cargo run --release -p sluicegate-bench --bin bench`: sluicegate against native Rust,
//! threads with bounded queues and CPython generators, measured in one run on this machine.
//! Every variant's checksum is verified against native Rust before anything is reported.
//! Writes docs/benchmarks.md and docs/benchmarks-records-per-s.svg (unless `--quick`).

mod chain;
mod hops;
mod languages;
mod market;
mod nats;
mod partitions;
mod report;
mod resources;
mod sandbox_cost;
mod stage_memory;
mod startup;
mod swap_pause;

mod stages {
    include!(concat!(env!("OUT_DIR"), "/stages.rs"));
}

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, ensure};
use clap::Parser;
use sluicegate::Engine;

use crate::market::{MarketStages, Outcome, PythonDesign, Stamps, Ticks};
use crate::report::{LatencyRow, MarketRow, Report};

#[derive(Parser)]
struct Args {
    /// Tiny sizes, checksums checked, nothing written: the CI smoke run.
    #[arg(long)]
    quick: bool,
    /// Ticks per run of the market pipeline.
    #[arg(long, default_value_t = 500_000)]
    records: u64,
    /// Only the market table, printed, nothing written: to compare two builds (run each
    /// build's bench with it, on the same machine, one after the other).
    #[arg(long)]
    market_only: bool,
    /// Where to write the report.
    #[arg(long, default_value = "docs/benchmarks.md")]
    out: PathBuf,
    /// Internal: run one memory measurement (VARIANT RECORDS) and print its peak RSS.
    #[arg(long, num_args = 2, value_names = ["VARIANT", "RECORDS"], hide = true)]
    memory_child: Option<Vec<String>>,
    /// Internal: hold STAGES live instances of STAGE and print the resident set per stage.
    #[arg(long, num_args = 2, value_names = ["STAGE", "STAGES"], hide = true)]
    stage_memory_child: Option<Vec<String>>,
    /// Internal: run the NATS pipeline FILE as one host, print when its run started and ended.
    #[arg(long, value_name = "FILE", hide = true)]
    nats_host: Option<PathBuf>,
}

const CREDITS: [u32; 4] = [1, 16, 256, 4096];

/// Interleaved runs of every market variant; the table shows each one's median.
const MARKET_ROUNDS: usize = 3;

pub(crate) fn percentile(values: &mut [f64], q: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    let rank = ((values.len() as f64 - 1.0) * q).round() as usize;
    values[rank.min(values.len() - 1)]
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some([variant, records]) = args.memory_child.as_deref() {
        return resources::memory_child(variant, records.parse()?);
    }
    if let Some([stage, stages]) = args.stage_memory_child.as_deref() {
        return stage_memory::child(stage, stages.parse()?);
    }
    if let Some(file) = &args.nats_host {
        return nats::host_child(file);
    }
    let records = if args.quick { 20_000 } else { args.records };
    let engine = Engine::new()?;
    let stages = MarketStages::load(&engine)?;
    let rounds = if args.quick { 1 } else { MARKET_ROUNDS };
    let mut report = Report::new(records, rounds);

    // Every variant reads the same ticks, generated here, before anything is timed.
    let ticks = Ticks::prepare(records)?;
    eprintln!("market pipeline, {records} ticks, credits {CREDITS:?}");
    // Every figure of the market table is the median of ROUNDS interleaved runs (each round
    // runs every variant once), so that a noisy neighbour for a moment skews no single figure.
    let native = market::median((0..rounds).map(|_| market::native(&ticks)).collect());
    ensure!(native.orders > 0, "the strategy placed no order");
    for credits in CREDITS {
        let mut runs: [Vec<Outcome>; 5] = Default::default();
        for _ in 0..rounds {
            runs[0].push(market::threads(&ticks, credits, None));
            runs[1].push(market::sluicegate(&stages, &ticks, credits, None, None)?);
            runs[2].push(market::sluicegate_fused(&stages, &ticks, credits, None)?);
            for (i, design) in [(3, PythonDesign::Generators), (4, PythonDesign::Threads)] {
                if let Some(run) = market::cpython(&ticks, credits, design, false)? {
                    runs[i].push(run);
                }
            }
        }
        let names = [
            "threads",
            "sluicegate",
            "sluicegate fused",
            "CPython generators",
            "CPython threads",
        ];
        for (name, runs) in names.iter().zip(&runs) {
            for outcome in runs {
                ensure!(
                    (outcome.orders, outcome.checksum) == (native.orders, native.checksum),
                    "{name} at credits {credits}: {} orders, checksum {:016x}; native Rust: {} orders, {:016x}",
                    outcome.orders,
                    outcome.checksum,
                    native.orders,
                    native.checksum
                );
            }
        }
        let [threads, wasm, fused, python, python_threads] =
            runs.map(|runs| (!runs.is_empty()).then(|| market::median(runs)));
        let rate = |o: &Option<Outcome>| o.as_ref().map(|o| o.records_per_s(records));
        let shown = |o: &Option<Outcome>| {
            rate(o).map_or_else(|| "skipped".to_string(), |r| format!("{r:.0}/s"))
        };
        eprintln!(
            "  credits {credits:>4}: native {:>10.0}/s  threads {}  sluicegate {}  fused {}  cpython {}  cpython threads {}",
            native.records_per_s(records),
            shown(&threads),
            shown(&wasm),
            shown(&fused),
            shown(&python),
            shown(&python_threads),
        );
        report.market.push(MarketRow {
            credits,
            native: native.records_per_s(records),
            threads: rate(&threads).unwrap_or(0.0),
            sluicegate: rate(&wasm).unwrap_or(0.0),
            fused: rate(&fused).unwrap_or(0.0),
            cpython: rate(&python),
            cpython_threads: rate(&python_threads),
        });
    }
    report.checksum = format!("{:016x} ({} orders)", native.checksum, native.orders);

    // The same pipeline partitioned by symbol, on the same ticks.
    let mut rows = partitions::measure(&engine, &ticks, rounds, native.orders)?;
    for row in &mut rows {
        let variant = match row.partitions {
            1 => "market-partitions-1",
            2 => "market-partitions-2",
            _ => "market-partitions-4",
        };
        let memory = resources::measure_memory(variant, records)?;
        row.peak_rss_mib = Some(memory.peak_rss_mib - memory.input_rss_mib.unwrap_or(0.0));
        eprintln!(
            "  {} partition(s): {:.0} records/s, {:.2} µs CPU per tick, {:.1} MiB peak growth",
            row.partitions,
            row.records_per_s,
            row.cpu_us_per_record,
            row.peak_rss_mib.unwrap_or(0.0)
        );
    }
    report.partitions = rows;

    // The same pipeline across hosts, through NATS JetStream on loopback.
    report.nats = nats::measure(&engine, &ticks, native.orders, args.quick)?;
    if args.market_only {
        println!("{}", report.table());
        return Ok(());
    }

    // Latency: every variant on the same ticks, so each samples the same orders.
    let latency_ticks = Ticks::prepare(if args.quick { 20_000 } else { 200_000 })?;
    let latency_records = latency_ticks.len();
    for credits in [1, 16] {
        let stamps = Stamps::new(latency_records);
        let threads = market::threads(&latency_ticks, credits, Some(&stamps));
        let stamps = Stamps::new(latency_records);
        let wasm = market::sluicegate(&stages, &latency_ticks, credits, Some(&stamps), None)?;
        let stamps = Stamps::new(latency_records);
        let fused = market::sluicegate_fused(&stages, &latency_ticks, credits, Some(&stamps))?;
        let stamps = Stamps::new(latency_records);
        let native = market::native_stamped(&latency_ticks, Some(&stamps));
        for (variant, design) in [
            ("CPython generators", PythonDesign::Generators),
            ("CPython threads + queues", PythonDesign::Threads),
        ] {
            if let Some(python) = market::cpython(&latency_ticks, credits, design, true)? {
                report
                    .latency
                    .push(LatencyRow::new(variant, credits, python.latencies_ns));
            }
        }
        for (variant, outcome) in [
            ("native Rust (no batching: credits do not apply)", native),
            ("threads", threads),
            ("sluicegate", wasm),
            ("sluicegate fused", fused),
        ] {
            report
                .latency
                .push(LatencyRow::new(variant, credits, outcome.latencies_ns));
        }
    }
    eprintln!("latency done");

    let passthrough = engine.load_bytes("passthrough", stages::PASSTHROUGH)?;
    let sizes: &[usize] = if args.quick {
        &[64]
    } else {
        &[64, 1024, 16 << 10, 64 << 10]
    };
    for &bytes in sizes {
        let iters = if args.quick {
            2_000
        } else if bytes > 4096 {
            20_000
        } else {
            100_000
        };
        report
            .hops
            .push(hops::measure(&engine, &passthrough, bytes, iters)?);
    }
    eprintln!("hops done");

    report.swap_pauses = swap_pause::measure(&engine, if args.quick { 20 } else { 1000 })?;

    let runs = if args.quick { 20 } else { 300 };
    report.startup_default_us = startup::instantiate_prime_us(&engine, runs)?;
    let pooled = Engine::builder().pooling(64).build()?;
    report.startup_pooled_us = startup::instantiate_prime_us(&pooled, runs)?;

    let unlimited = Engine::builder()
        .without_cpu_deadlines_for_benchmarks()
        .build()?;
    let metered = Engine::builder().fuel(true).build()?;
    let cost_ticks = Ticks::prepare(records.min(300_000))?;
    let cost_records = cost_ticks.len();
    let cost_checksum = market::native(&cost_ticks).checksum;
    for (name, engine, fuel) in [
        ("no CPU limits", &unlimited, None),
        ("epoch deadlines (default)", &engine, None),
        ("epoch deadlines + fuel", &metered, Some(u64::MAX / 2)),
    ] {
        let stages = MarketStages::load(engine)?;
        let outcome = market::sluicegate(&stages, &cost_ticks, 256, None, fuel)?;
        ensure!(outcome.checksum == cost_checksum, "{name}: checksum");
        report
            .limits_cost
            .push((name.to_string(), outcome.records_per_s(cost_records)));
    }
    let mut overshoot = sandbox_cost::overshoot_ms(
        &engine,
        Duration::from_millis(20),
        if args.quick { 3 } else { 30 },
    )?;
    report.overshoot_p50_ms = percentile(&mut overshoot, 0.5);
    report.overshoot_max_ms = percentile(&mut overshoot, 1.0);
    report.log_line_ns = sandbox_cost::log_line_ns(&engine)?;
    eprintln!(
        "  host.log: {:.0} ns over budget, {:.0} ns within",
        report.log_line_ns.0, report.log_line_ns.1
    );

    let lengths: &[u64] = if args.quick {
        &[100_000]
    } else {
        &[100_000, 1_000_000, 10_000_000, 100_000_000]
    };
    for &n in lengths {
        for variant in resources::MEMORY_VARIANTS {
            let row = resources::measure_memory(variant, n)?;
            eprintln!(
                "  peak RSS {variant:>16} {n:>10} records: {:>8.1} MiB ({:.1} s)",
                row.peak_rss_mib, row.seconds
            );
            report.memory.push(row);
        }
    }
    for (stage, fast, stages) in [
        ("sdk-passthrough", true, 1_000),
        ("sdk-passthrough", false, 1_000),
        ("wat-passthrough", true, 1_000),
        ("wat-passthrough", false, 1_000),
        ("sdk-passthrough", true, 10_000),
    ] {
        let stages = if args.quick { stages / 10 } else { stages };
        let row = stage_memory::measure(stage, fast, stages)?;
        println!(
            "memory per stage: {stage} ({}) x {stages}: {:.1} KiB primed, {:.1} KiB after running \
             ({:.1} heap, {:.1} linear memory), {:.0} MiB in all",
            row.path, row.primed_kib, row.run_kib, row.heap_kib, row.linear_kib, row.total_mib
        );
        report.stage_memory.push(row);
    }
    let cpu_ticks = Ticks::prepare(if args.quick { 20_000 } else { 1_000_000 })?;
    for credits in [16, 256] {
        report.cpu.push((
            credits,
            resources::measure_cpu(&stages, &cpu_ticks, credits)?,
        ));
    }
    report.cpu_records = cpu_ticks.len();
    report.market_memory = resources::market_memory(&cpu_ticks, 256)?;

    eprintln!("stages by language");
    let (rows, skipped) = languages::measure(
        &engine,
        if args.quick { 5_000 } else { 100_000 },
        if args.quick { 3 } else { 20 },
    )?;
    report.languages = rows;
    report.languages_skipped = skipped;

    println!("{}", report.table());
    if !args.quick {
        let authoring = args.out.with_file_name("authoring.md");
        report::write_between_markers(&authoring, "languages", &report.languages_table())
            .with_context(|| format!("updating {}", authoring.display()))?;
        let markdown = report.markdown();
        std::fs::write(&args.out, markdown)
            .with_context(|| format!("writing {}", args.out.display()))?;
        let svg = args.out.with_file_name("benchmarks-records-per-s.svg");
        std::fs::write(&svg, report.svg()).with_context(|| format!("writing {}", svg.display()))?;
        eprintln!("wrote {} and {}", args.out.display(), svg.display());
    }
    println!("checksums: all variants agree");
    Ok(())
}
