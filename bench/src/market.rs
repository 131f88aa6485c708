//! The 4-stage market pipeline (decode → filter → VWAP → crossover strategy) in the designs
//! compared, doing the same work on the same input: native Rust iterators (the limit), native
//! threads with bounded crossbeam queues, sluicegate (isolated and fused), and CPython in two
//! designs, generators driven with `send(credits)` and threads with bounded `queue.Queue`s.
//! Every variant reads the same ticks, prepared before timing ([`Ticks`]), and returns the
//! orders' checksum; only the pipeline is timed.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crossbeam_channel::bounded;
use market_data::{
    Checksum, Crossover, Feed, FeedConfig, Order, Symbol, Tick, Vwap, VwapWindow, decode_raw_tick,
};
use sluicegate::{Chunk, Engine, Stage, StageComponent, StageOptions};

use crate::stages;

/// What one run produced.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub orders: u64,
    pub checksum: u64,
    pub seconds: f64,
    /// Source-to-sink latency of each order, in ns (when stamps were asked for).
    pub latencies_ns: Vec<u64>,
    /// CPU time of the run, user and system, all threads (measured by the CPython variants
    /// themselves; the Rust ones are measured in `resources.rs`).
    pub cpu_s: Option<(f64, f64)>,
    /// Resident set once the input is read (CPython variants, where the peak can be reset).
    pub input_rss_kib: Option<u64>,
    /// Peak resident set of the process from then to the end of the run, input included
    /// (CPython variants).
    pub peak_rss_kib: Option<u64>,
}

/// The input every variant reads: the feed's ticks, generated once before anything is timed,
/// held in memory and written to a file for the CPython variants (which read it whole before
/// their clock starts).
pub struct Ticks {
    lines: Arc<[Vec<u8>]>,
    file: std::path::PathBuf,
}

impl Ticks {
    /// The first `records` ticks of the seeded feed.
    pub fn prepare(records: u64) -> anyhow::Result<Self> {
        let (mut feed, mut line) = (feed(records), Vec::new());
        let mut lines = Vec::with_capacity(usize::try_from(records).unwrap_or(0));
        let mut text = Vec::new();
        while feed.next_into(&mut line) {
            text.extend_from_slice(&line);
            text.push(b'\n');
            lines.push(line.clone());
        }
        let file = std::env::temp_dir().join(format!(
            "sluicegate-bench-ticks-{}-{records}.txt",
            std::process::id()
        ));
        std::fs::write(&file, text)?;
        Ok(Ticks {
            lines: lines.into(),
            file,
        })
    }

    /// The ticks, shared.
    pub fn lines(&self) -> Arc<[Vec<u8>]> {
        self.lines.clone()
    }

    /// How many ticks.
    pub fn len(&self) -> u64 {
        self.lines.len() as u64
    }
}

impl Drop for Ticks {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.file);
    }
}

impl Outcome {
    pub fn records_per_s(&self, records: u64) -> f64 {
        records as f64 / self.seconds.max(1e-12)
    }
}

fn feed(records: u64) -> Feed {
    Feed::new(FeedConfig {
        records,
        ..FeedConfig::default()
    })
}

fn keep() -> Vec<Symbol> {
    [
        "AAPL", "MSFT", "NVDA", "AMZN", "GOOG", "META", "TSLA", "JPM",
    ]
    .iter()
    .filter_map(|s| Symbol::parse(s))
    .collect()
}

/// Emission times, indexed by tick sequence number, in ns since `base`.
pub struct Stamps {
    base: Instant,
    at: Arc<[AtomicU64]>,
}

impl Stamps {
    pub fn new(records: u64) -> Self {
        Stamps {
            base: Instant::now(),
            at: (0..=records).map(|_| AtomicU64::new(0)).collect(),
        }
    }
    fn stamp(&self, seq: u64) {
        if let Some(slot) = self.at.get(seq as usize) {
            slot.store(self.base.elapsed().as_nanos() as u64, Ordering::Relaxed);
        }
    }
    fn latency(&self, seq: u64) -> Option<u64> {
        let at = self.at.get(seq as usize)?.load(Ordering::Relaxed);
        Some((self.base.elapsed().as_nanos() as u64).saturating_sub(at))
    }
    fn share(&self) -> Stamps {
        Stamps {
            base: self.base,
            at: self.at.clone(),
        }
    }
}

/// The run of median time among `runs` (at least one).
pub fn median(mut runs: Vec<Outcome>) -> Outcome {
    runs.sort_by(|a, b| a.seconds.total_cmp(&b.seconds));
    let middle = runs.len() / 2;
    runs.swap_remove(middle)
}

/// (a) Native Rust: one iterator chain, no batching, no copies between stages.
pub fn native(ticks: &Ticks) -> Outcome {
    native_stamped(ticks, None)
}

/// [`native`], stamping each tick at the source and measuring each order at the sink.
pub fn native_stamped(ticks: &Ticks, stamps: Option<&Stamps>) -> Outcome {
    let started = Instant::now();
    let keep = keep();
    let (mut vwap, mut strategy) = (VwapWindow::new(32), Crossover::new(5, 20, 100));
    let (mut checksum, mut orders) = (Checksum::default(), 0);
    let mut latencies_ns = Vec::new();
    for (at, line) in ticks.lines.iter().enumerate() {
        if let Some(st) = stamps {
            st.stamp(at as u64 + 1);
        }
        let Some(tick) = decode_raw_tick(line) else {
            continue;
        };
        if !keep.contains(&tick.symbol) {
            continue;
        }
        if let Some(order) = strategy.update(&vwap.update(&tick)) {
            if let Some(st) = stamps {
                latencies_ns.extend(st.latency(order.seq));
            }
            checksum.add(&order.encode());
            orders += 1;
        }
    }
    Outcome {
        orders,
        checksum: checksum.value(),
        seconds: started.elapsed().as_secs_f64(),
        latencies_ns,
        ..Outcome::default()
    }
}

type Batch = Vec<Vec<u8>>;

/// Batches in flight per queue.
const QUEUE_BATCHES: usize = 4;

/// (b) One thread per stage, bounded crossbeam queues of batches of `credits` records, the
/// records encoded between stages exactly as the wasm stages exchange them.
pub fn threads(ticks: &Ticks, credits: u32, stamps: Option<&Stamps>) -> Outcome {
    let started = Instant::now();
    let credits = credits.max(1) as usize;
    let (to_decode, decode_in) = bounded::<Batch>(QUEUE_BATCHES);
    let (to_filter, filter_in) = bounded::<Batch>(QUEUE_BATCHES);
    let (to_vwap, vwap_in) = bounded::<Batch>(QUEUE_BATCHES);
    let (to_strategy, strategy_in) = bounded::<Batch>(QUEUE_BATCHES);
    let (to_sink, sink_in) = bounded::<Batch>(QUEUE_BATCHES);
    let source_stamps = stamps.map(Stamps::share);
    let lines = ticks.lines.clone();
    std::thread::scope(|s| {
        s.spawn(move || {
            for (first, batch) in lines.chunks(credits).enumerate() {
                if let Some(st) = &source_stamps {
                    for at in 0..batch.len() {
                        st.stamp((first * credits + at) as u64 + 1);
                    }
                }
                if to_decode.send(batch.to_vec()).is_err() {
                    break;
                }
            }
        });
        s.spawn(move || {
            for batch in decode_in {
                let out = batch
                    .iter()
                    .filter_map(|r| decode_raw_tick(r).map(|t| t.encode().to_vec()))
                    .collect();
                if to_filter.send(out).is_err() {
                    break;
                }
            }
        });
        s.spawn(move || {
            let keep = keep();
            for batch in filter_in {
                let out = batch
                    .into_iter()
                    .filter(|r| Tick::symbol_of(r).is_some_and(|s| keep.contains(&s)))
                    .collect();
                if to_vwap.send(out).is_err() {
                    break;
                }
            }
        });
        s.spawn(move || {
            let mut vwap = VwapWindow::new(32);
            for batch in vwap_in {
                let out = batch
                    .iter()
                    .filter_map(|r| Tick::decode(r).map(|t| vwap.update(&t).encode().to_vec()))
                    .collect();
                if to_strategy.send(out).is_err() {
                    break;
                }
            }
        });
        s.spawn(move || {
            let mut strategy = Crossover::new(5, 20, 100);
            for batch in strategy_in {
                let out = batch
                    .iter()
                    .filter_map(|r| Vwap::decode(r).and_then(|v| strategy.update(&v)))
                    .map(|o| o.encode().to_vec())
                    .collect();
                if to_sink.send(out).is_err() {
                    break;
                }
            }
        });
        let (mut checksum, mut orders, mut latencies_ns) = (Checksum::default(), 0, Vec::new());
        for batch in sink_in {
            for record in batch {
                if let (Some(st), Some(order)) = (stamps, Order::decode(&record)) {
                    latencies_ns.extend(st.latency(order.seq));
                }
                checksum.add(&record);
                orders += 1;
            }
        }
        Outcome {
            orders,
            checksum: checksum.value(),
            seconds: started.elapsed().as_secs_f64(),
            latencies_ns,
            ..Outcome::default()
        }
    })
}

/// The market stages, compiled once per engine, isolated and fused.
pub struct MarketStages {
    decode: StageComponent,
    filter: StageComponent,
    vwap: StageComponent,
    strategy: StageComponent,
    /// decode → filter → VWAP → strategy composed into one component (fused mode).
    fused: StageComponent,
}

impl MarketStages {
    pub fn load(engine: &Engine) -> anyhow::Result<Self> {
        Ok(MarketStages {
            decode: engine.load_bytes("decode", stages::DECODE)?,
            filter: engine.load_bytes("filter", stages::SYMBOL_FILTER)?,
            vwap: engine.load_bytes("vwap", stages::VWAP)?,
            strategy: engine.load_bytes("strategy", stages::STRATEGY)?,
            fused: engine.load_fused(
                "market",
                &[
                    ("decode".into(), stages::DECODE.to_vec()),
                    ("filter".into(), stages::SYMBOL_FILTER.to_vec()),
                    ("vwap".into(), stages::VWAP.to_vec()),
                    ("strategy".into(), stages::STRATEGY.to_vec()),
                ],
            )?,
        })
    }
}

/// The prepared ticks as a host-native upstream, stamping each tick's emission when asked.
fn ticks_source(
    ticks: &Ticks,
    stamps: Option<&Stamps>,
) -> impl FnMut(sluicegate::Demand) -> sluicegate::Result<Option<Chunk>> + Send + 'static {
    let source_stamps = stamps.map(Stamps::share);
    let lines = ticks.lines.clone();
    let mut at = 0usize;
    move |demand: sluicegate::Demand| {
        let credits = demand.records;
        let mut chunk = Chunk::empty();
        while chunk.len() < credits {
            let Some(line) = lines.get(at) else {
                return Ok((!chunk.is_empty() || credits == 0).then_some(chunk));
            };
            at += 1;
            if let Some(st) = &source_stamps {
                st.stamp(at as u64);
            }
            chunk.push(line);
        }
        Ok(Some(chunk))
    }
}

/// The sink: resumes `tail` with `credits` until it is exhausted, checksumming the orders and
/// measuring their latency when stamps are given. `seconds` is left for the caller.
fn drain_orders(tail: &Stage, credits: u32, stamps: Option<&Stamps>) -> anyhow::Result<Outcome> {
    let (mut checksum, mut orders, mut latencies_ns) = (Checksum::default(), 0, Vec::new());
    while let Some(chunk) = tail.resume(credits)? {
        for record in chunk.records() {
            if let (Some(st), Some(order)) = (stamps, Order::decode(record)) {
                latencies_ns.extend(st.latency(order.seq));
            }
            checksum.add(record);
            orders += 1;
        }
    }
    Ok(Outcome {
        orders,
        checksum: checksum.value(),
        latencies_ns,
        ..Outcome::default()
    })
}

/// (c) sluicegate: a host-native feed, then the four example stages as components, each in
/// its own sandbox; the sink grants `credits` per resume.
pub fn sluicegate(
    stages: &MarketStages,
    ticks: &Ticks,
    credits: u32,
    stamps: Option<&Stamps>,
    fuel: Option<u64>,
) -> anyhow::Result<Outcome> {
    let source = ticks_source(ticks, stamps);
    let limits = sluicegate::Limits::default().with_fuel_per_call(fuel);
    let options = || StageOptions::new().limits(limits);
    let decode = stages
        .decode
        .instantiate("decode", options().upstream(source))?;
    let filter = stages.filter.instantiate(
        "filter",
        options()
            .upstream(decode.clone())
            .config("symbols", "AAPL,MSFT,NVDA,AMZN,GOOG,META,TSLA,JPM"),
    )?;
    let vwap = stages.vwap.instantiate(
        "vwap",
        options().upstream(filter.clone()).config("window", "32"),
    )?;
    let strategy = stages
        .strategy
        .instantiate("strategy", options().upstream(vwap.clone()))?;
    let chain: [&Stage; 4] = [&decode, &filter, &vwap, &strategy];
    let started = Instant::now();
    for stage in chain {
        stage.prime()?;
    }
    let mut outcome = drain_orders(&strategy, credits, stamps)?;
    outcome.seconds = started.elapsed().as_secs_f64();
    for stage in chain {
        stage.close()?;
    }
    Ok(outcome)
}

/// (c') sluicegate in fused mode: the same four stages composed into one component, one
/// sandbox; hops between them are calls inside wasmtime, not host round trips.
pub fn sluicegate_fused(
    stages: &MarketStages,
    ticks: &Ticks,
    credits: u32,
    stamps: Option<&Stamps>,
) -> anyhow::Result<Outcome> {
    let source = ticks_source(ticks, stamps);
    let stage = stages.fused.instantiate(
        "market",
        StageOptions::new()
            .upstream(source)
            // Inner stages: 0 decode, 1 filter, 2 VWAP; the strategy (last) takes `config`.
            .inner_config(1, "symbols", "AAPL,MSFT,NVDA,AMZN,GOOG,META,TSLA,JPM")
            .inner_config(2, "window", "32"),
    )?;
    let started = Instant::now();
    stage.prime()?;
    let mut outcome = drain_orders(&stage, credits, stamps)?;
    outcome.seconds = started.elapsed().as_secs_f64();
    stage.close()?;
    Ok(outcome)
}

/// How the CPython variant is built (`bench/python/market.py`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PythonDesign {
    /// Generators driven with `send(credits)`.
    Generators,
    /// One thread per stage, bounded `queue.Queue`s of batches of `credits` records.
    Threads,
}

/// (d) CPython, on the same prepared ticks; `None` when python3 is not installed.
pub fn cpython(
    ticks: &Ticks,
    credits: u32,
    design: PythonDesign,
    latency: bool,
) -> anyhow::Result<Option<Outcome>> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/market.py");
    let design = match design {
        PythonDesign::Generators => "generators",
        PythonDesign::Threads => "threads",
    };
    let mut args = vec![
        script.to_string(),
        ticks.file.display().to_string(),
        credits.to_string(),
        design.to_string(),
    ];
    if latency {
        args.push("latency".into());
    }
    let output = match Command::new("python3").args(&args).output() {
        Ok(output) => output,
        Err(_) => return Ok(None),
    };
    anyhow::ensure!(
        output.status.success(),
        "python3 market.py failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    let field = |key: &str| {
        report
            .get(key)
            .ok_or_else(|| anyhow::anyhow!("market.py printed no `{key}`: {report}"))
    };
    let number = |key: &str| -> anyhow::Result<f64> {
        field(key)?
            .as_f64()
            .ok_or_else(|| anyhow::anyhow!("market.py: `{key}` is not a number"))
    };
    let checksum = field("checksum")?
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("market.py: `checksum` is not a string"))?;
    Ok(Some(Outcome {
        orders: number("orders")? as u64,
        checksum: u64::from_str_radix(checksum, 16)?,
        seconds: number("seconds")?,
        latencies_ns: field("latencies_ns")?
            .as_array()
            .map(|a| a.iter().filter_map(serde_json::Value::as_u64).collect())
            .unwrap_or_default(),
        cpu_s: Some((number("user_s")?, number("sys_s")?)),
        input_rss_kib: field("input_rss_kib")?.as_u64(),
        peak_rss_kib: Some(number("peak_rss_kib")? as u64),
    }))
}
