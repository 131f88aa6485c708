//! What the designs cost besides time: peak memory as the stream grows behind a slow
//! consumer, and CPU spent beyond the useful work.
//!
//! **Memory.** Each measurement runs in a child process of its own (`bench --memory-child
//! VARIANT N`), which reports its peak resident set (`VmHWM`). The stream is N small records
//! (decimal numbers) from a fast producer through a pass-through stage to a consumer that is
//! several times slower than the producer (it spins per record). Pull-based sluicegate
//! produces only what the consumer asks for; the threaded design with bounded queues blocks
//! its producer; a design with an unbounded queue buffers whatever the consumer has not
//! caught up with.
//!
//! **CPU.** User and system time of the whole process (all threads) for the market pipeline,
//! against native Rust on one thread (the useful work): what lies beyond is coordination
//! (threads: queues, wake-ups, cache traffic between cores) or the sandbox boundary
//! (sluicegate: copies across memories, checks, the wasm calls).

use std::hint::black_box;
use std::process::Command;
use std::time::Instant;

use crossbeam_channel::{bounded, unbounded};
use sluicegate::{Chunk, Engine, StageOptions};

use crate::market::{self, MarketStages, PythonDesign, Ticks};
use crate::stages;

/// The memory variants, as named on the command line and in the report.
pub const MEMORY_VARIANTS: [&str; 3] = ["sluicegate", "threads-bounded", "unbounded-queue"];

/// Records per chunk or batch.
const BATCH: u32 = 256;
/// Batches a bounded queue holds.
const QUEUE_BATCHES: usize = 4;
/// Spin iterations the slow consumer spends per record.
const CONSUMER_SPIN: u32 = 50;

/// One peak-RSS measurement.
pub struct MemoryRow {
    pub variant: &'static str,
    pub records: u64,
    pub peak_rss_mib: f64,
    /// The resident set once the input was prepared, where the child measured it (the peak
    /// then counts from there).
    pub input_rss_mib: Option<f64>,
    pub seconds: f64,
}

/// Runs `variant` on `records` records in a child process and returns its peak RSS.
pub fn measure_memory(variant: &'static str, records: u64) -> anyhow::Result<MemoryRow> {
    let started = Instant::now();
    let out = Command::new(std::env::current_exe()?)
        .args(["--memory-child", variant, &records.to_string()])
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "memory child {variant} {records}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let kib = child_value(&stdout, "peak_rss_kib")
        .ok_or_else(|| anyhow::anyhow!("memory child {variant} printed no peak: {stdout}"))?;
    Ok(MemoryRow {
        variant,
        records,
        peak_rss_mib: kib / 1024.0,
        input_rss_mib: child_value(&stdout, "input_rss_kib").map(|kib| kib / 1024.0),
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The child's side: runs the variant, checks every record arrived, prints `peak_rss_kib=`.
pub fn memory_child(variant: &str, records: u64) -> anyhow::Result<()> {
    if variant == MARKET_CHILD {
        return market_child(records);
    }
    if let Some(partitions) = variant.strip_prefix(PARTITIONS_CHILD) {
        crate::partitions::child(partitions.parse()?, records)?;
        return print_peak_rss();
    }
    let consumed = match variant {
        "sluicegate" => sluicegate_stream(records)?,
        "threads-bounded" => threaded_stream(records, true),
        "unbounded-queue" => threaded_stream(records, false),
        other => anyhow::bail!("unknown memory variant `{other}`"),
    };
    anyhow::ensure!(
        consumed == records,
        "{variant}: {consumed} of {records} records arrived"
    );
    print_peak_rss()
}

/// Prints the process's peak resident set as `peak_rss_kib=`.
fn print_peak_rss() -> anyhow::Result<()> {
    println!("peak_rss_kib={}", status_kib("VmHWM")?);
    Ok(())
}

/// A `kB` field of /proc/self/status.
fn status_kib(key: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no {key} in /proc/self/status"))
}

/// Resets the process's peak resident set to its current one (Linux: `5` into
/// /proc/self/clear_refs) and returns that, in KiB; `None` where the peak cannot be reset.
pub(crate) fn reset_peak_rss() -> Option<u64> {
    std::fs::write("/proc/self/clear_refs", "5").ok()?;
    status_kib("VmRSS").ok()
}

/// Parses a `KEY=value` line the child printed.
fn child_value(stdout: &str, key: &str) -> Option<f64> {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .and_then(|v| v.trim().parse().ok())
}

/// The slow consumer's work on one record.
fn consume(record: &[u8]) {
    let mut x = record.len() as u64;
    for _ in 0..CONSUMER_SPIN {
        x = black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
    }
    black_box(x);
}

/// The fast producer: record `n` is its decimal digits.
fn produce(n: u64, out: &mut Chunk) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut v = n;
    loop {
        at -= 1;
        digits[at] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.push(&digits[at..]);
}

fn sluicegate_stream(records: u64) -> anyhow::Result<u64> {
    let engine = Engine::new()?;
    let passthrough = engine.load_bytes("passthrough", stages::PASSTHROUGH)?;
    let mut next = 0u64;
    let source = move |demand: sluicegate::Demand| -> sluicegate::Result<Option<Chunk>> {
        let credits = demand.records;
        if next >= records && credits > 0 {
            return Ok(None);
        }
        let mut chunk = Chunk::empty();
        while chunk.len() < credits && next < records {
            produce(next, &mut chunk);
            next += 1;
        }
        Ok(Some(chunk))
    };
    let stage = passthrough.instantiate("passthrough", StageOptions::new().upstream(source))?;
    stage.prime()?;
    let mut consumed = 0;
    while let Some(chunk) = stage.resume(BATCH)? {
        for record in chunk.records() {
            consume(record);
            consumed += 1;
        }
    }
    stage.close()?;
    Ok(consumed)
}

fn threaded_stream(records: u64, bounded_queues: bool) -> u64 {
    let ((to_map, map_in), (to_sink, sink_in)) = if bounded_queues {
        (
            bounded::<Chunk>(QUEUE_BATCHES),
            bounded::<Chunk>(QUEUE_BATCHES),
        )
    } else {
        (unbounded::<Chunk>(), unbounded::<Chunk>())
    };
    std::thread::scope(|s| {
        s.spawn(move || {
            let mut next = 0;
            while next < records {
                let mut chunk = Chunk::empty();
                while chunk.len() < BATCH && next < records {
                    produce(next, &mut chunk);
                    next += 1;
                }
                if to_map.send(chunk).is_err() {
                    break;
                }
            }
        });
        s.spawn(move || {
            for chunk in map_in {
                let copy = Chunk::from_records(chunk.records().map(<[u8]>::to_vec));
                if to_sink.send(copy).is_err() {
                    break;
                }
            }
        });
        let mut consumed = 0;
        for chunk in sink_in {
            for record in chunk.records() {
                consume(record);
                consumed += 1;
            }
        }
        consumed
    })
}

/// CPU time of the process so far: (user, system) seconds.
pub(crate) fn process_cpu() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // USER_HZ is 100 on Linux.
    (ticks(11) / 100.0, ticks(12) / 100.0)
}

/// One variant's CPU use on the market pipeline.
pub struct CpuRow {
    pub variant: String,
    pub wall_s: f64,
    pub user_s: f64,
    pub sys_s: f64,
}

impl CpuRow {
    pub fn cpu_s(&self) -> f64 {
        self.user_s + self.sys_s
    }
}

/// Measures native, threads and sluicegate on the market pipeline at `credits`, and the two
/// CPython designs (which measure their own CPU time), all on the same ticks.
pub fn measure_cpu(
    stages: &MarketStages,
    ticks: &Ticks,
    credits: u32,
) -> anyhow::Result<Vec<CpuRow>> {
    let mut rows = Vec::new();
    let mut run = |variant: String, f: &mut dyn FnMut() -> anyhow::Result<()>| {
        let (user0, sys0) = process_cpu();
        let started = Instant::now();
        let outcome = f();
        let wall_s = started.elapsed().as_secs_f64();
        let (user1, sys1) = process_cpu();
        rows.push(CpuRow {
            variant,
            wall_s,
            user_s: user1 - user0,
            sys_s: sys1 - sys0,
        });
        outcome
    };
    let native = market::native(ticks);
    run("native Rust (the useful work)".into(), &mut || {
        black_box(market::native(ticks));
        Ok(())
    })?;
    run(format!("threads, credits {credits}"), &mut || {
        let outcome = market::threads(ticks, credits, None);
        anyhow::ensure!(outcome.checksum == native.checksum, "threads: checksum");
        Ok(())
    })?;
    run(format!("sluicegate, credits {credits}"), &mut || {
        let outcome = market::sluicegate(stages, ticks, credits, None, None)?;
        anyhow::ensure!(outcome.checksum == native.checksum, "sluicegate: checksum");
        Ok(())
    })?;
    for (name, design) in [
        ("CPython generators", PythonDesign::Generators),
        ("CPython threads + queues", PythonDesign::Threads),
    ] {
        if let Some(outcome) = market::cpython(ticks, credits, design, false)? {
            anyhow::ensure!(outcome.checksum == native.checksum, "{name}: checksum");
            let (user_s, sys_s) = outcome.cpu_s.unwrap_or_default();
            rows.push(CpuRow {
                variant: format!("{name}, credits {credits}"),
                wall_s: outcome.seconds,
                user_s,
                sys_s,
            });
        }
    }
    Ok(rows)
}

/// The memory variant that runs the market pipeline in sluicegate (a child process).
const MARKET_CHILD: &str = "market-sluicegate";

/// The memory variants that run the partitioned market pipeline: this, then the count.
pub const PARTITIONS_CHILD: &str = "market-partitions-";

/// Credits of the market memory comparison.
pub const MARKET_MEMORY_CREDITS: u32 = 256;

/// One design's memory on the market pipeline.
pub struct MarketMemoryRow {
    pub design: &'static str,
    /// The resident set with the input prepared, before the run; `None` where the peak could
    /// not be reset (then the peak includes preparing the input).
    pub input_rss_mib: Option<f64>,
    /// The peak resident set from then to the end of the run.
    pub peak_rss_mib: f64,
}

/// Peak resident set of the market pipeline in sluicegate and in both CPython designs, each in
/// a process of its own, on the same ticks (each process holds them in memory, read before
/// the run: the input is part of every figure).
pub fn market_memory(ticks: &Ticks, credits: u32) -> anyhow::Result<Vec<MarketMemoryRow>> {
    let sluicegate = measure_memory(MARKET_CHILD, ticks.len())?;
    let mut rows = vec![MarketMemoryRow {
        design: "sluicegate",
        input_rss_mib: sluicegate.input_rss_mib,
        peak_rss_mib: sluicegate.peak_rss_mib,
    }];
    for (design, python) in [
        ("CPython generators", PythonDesign::Generators),
        ("CPython threads + queues", PythonDesign::Threads),
    ] {
        if let Some(outcome) = market::cpython(ticks, credits, python, false)? {
            rows.push(MarketMemoryRow {
                design,
                input_rss_mib: outcome.input_rss_kib.map(|kib| kib as f64 / 1024.0),
                peak_rss_mib: outcome.peak_rss_kib.unwrap_or(0) as f64 / 1024.0,
            });
        }
    }
    Ok(rows)
}

/// The market pipeline in sluicegate, in this (child) process: prepares the ticks, resets the
/// peak resident set, loads the stages, runs, checks the orders against native Rust, prints
/// the resident set with the input prepared and the peak from then on.
fn market_child(records: u64) -> anyhow::Result<()> {
    let ticks = Ticks::prepare(records)?;
    let expected = market::native(&ticks).checksum;
    if let Some(kib) = reset_peak_rss() {
        println!("input_rss_kib={kib}");
    }
    let engine = Engine::new()?;
    let stages = MarketStages::load(&engine)?;
    let outcome = market::sluicegate(&stages, &ticks, MARKET_MEMORY_CREDITS, None, None)?;
    anyhow::ensure!(outcome.checksum == expected, "market child: checksum");
    print_peak_rss()
}
