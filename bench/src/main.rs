//! `cargo run --release -p sluicegate-bench --bin bench`: sluicegate against native Rust,
//! threads with bounded queues and CPython generators, measured in one run on this machine.
//! Every variant's checksum is verified against native Rust before anything is reported.
//! Writes docs/benchmarks.md and docs/benchmarks-records-per-s.svg (unless `--quick`).

mod chain;
mod hops;
mod languages;
mod market;
mod report;
mod resources;
mod sandbox_cost;
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

use crate::market::{MarketStages, Stamps};
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
    let records = if args.quick { 20_000 } else { args.records };
    let python_records = (records / 5).max(20_000);
    let engine = Engine::new()?;
    let stages = MarketStages::load(&engine)?;
    let rounds = if args.quick { 1 } else { MARKET_ROUNDS };
    let mut report = Report::new(records, python_records, rounds);

    eprintln!("market pipeline, {records} ticks, credits {CREDITS:?}");
    // Every figure of the market table is the median of ROUNDS interleaved runs (each round
    // runs every variant once), so that a noisy neighbour for a moment skews no single figure.
    let native = market::median((0..rounds).map(|_| market::native(records)).collect());
    ensure!(native.orders > 0, "the strategy placed no order");
    let python_native = market::native(python_records);
    for credits in CREDITS {
        let (mut threads, mut wasm, mut fused, mut python) = (vec![], vec![], vec![], vec![]);
        for _ in 0..rounds {
            threads.push(market::threads(records, credits, None));
            wasm.push(market::sluicegate(&stages, records, credits, None, None)?);
            fused.push(market::sluicegate_fused(&stages, records, credits, None)?);
            if let Some(run) = market::cpython(python_records, credits, false)? {
                python.push(run);
            }
        }
        for (name, runs) in [
            ("threads", &threads),
            ("sluicegate", &wasm),
            ("sluicegate fused", &fused),
        ] {
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
        for python in &python {
            ensure!(
                (python.orders, python.checksum) == (python_native.orders, python_native.checksum),
                "CPython at credits {credits}: checksum {:016x}, native Rust {:016x}",
                python.checksum,
                python_native.checksum
            );
        }
        let (threads, wasm, fused) = (
            market::median(threads),
            market::median(wasm),
            market::median(fused),
        );
        let python = (!python.is_empty()).then(|| market::median(python));
        eprintln!(
            "  credits {credits:>4}: native {:>10.0}/s  threads {:>10.0}/s  sluicegate {:>10.0}/s  fused {:>10.0}/s  cpython {}",
            native.records_per_s(records),
            threads.records_per_s(records),
            wasm.records_per_s(records),
            fused.records_per_s(records),
            python
                .as_ref()
                .map(|p| format!("{:.0}/s", p.records_per_s(python_records)))
                .unwrap_or_else(|| "skipped (no python3)".into())
        );
        report.market.push(MarketRow {
            credits,
            native: native.records_per_s(records),
            threads: threads.records_per_s(records),
            sluicegate: wasm.records_per_s(records),
            fused: fused.records_per_s(records),
            cpython: python.map(|p| p.records_per_s(python_records)),
        });
    }
    report.checksum = format!("{:016x} ({} orders)", native.checksum, native.orders);
    if args.market_only {
        println!("{}", report.table());
        return Ok(());
    }

    let latency_records = if args.quick { 20_000 } else { 200_000 };
    for credits in [1, 16] {
        let stamps = Stamps::new(latency_records);
        let threads = market::threads(latency_records, credits, Some(&stamps));
        let stamps = Stamps::new(latency_records);
        let wasm = market::sluicegate(&stages, latency_records, credits, Some(&stamps), None)?;
        let stamps = Stamps::new(latency_records);
        let fused = market::sluicegate_fused(&stages, latency_records, credits, Some(&stamps))?;
        let stamps = Stamps::new(latency_records);
        let native = market::native_stamped(latency_records, Some(&stamps));
        // CPython on fewer ticks (it is slow), so fewer orders are sampled.
        if let Some(python) = market::cpython(latency_records / 5, credits, true)? {
            report.latency.push(LatencyRow::new(
                "CPython generators",
                credits,
                python.latencies_ns,
            ));
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
    let cost_records = records.min(300_000);
    for (name, engine, fuel) in [
        ("no CPU limits", &unlimited, None),
        ("epoch deadlines (default)", &engine, None),
        ("epoch deadlines + fuel", &metered, Some(u64::MAX / 2)),
    ] {
        let stages = MarketStages::load(engine)?;
        let outcome = market::sluicegate(&stages, cost_records, 256, None, fuel)?;
        ensure!(
            outcome.checksum == market::native(cost_records).checksum,
            "{name}: checksum"
        );
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
    let cpu_records = if args.quick { 20_000 } else { 1_000_000 };
    for credits in [16, 256] {
        report.cpu.push((
            credits,
            resources::measure_cpu(&stages, cpu_records, credits)?,
        ));
    }
    report.cpu_records = cpu_records;

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
