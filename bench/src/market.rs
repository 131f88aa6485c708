//! The 4-stage market pipeline (decode → filter → VWAP → crossover strategy, fed by the
//! synthetic tick feed) in four designs doing the same work on the same input: native Rust
//! iterators (the limit), native threads with bounded crossbeam queues, sluicegate, and
//! CPython generators driven with `send(credits)`. Every variant returns the orders' checksum.

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

/// (a) Native Rust: one iterator chain, no batching, no copies between stages.
/// The run of median time among `runs` (at least one).
pub fn median(mut runs: Vec<Outcome>) -> Outcome {
    runs.sort_by(|a, b| a.seconds.total_cmp(&b.seconds));
    let middle = runs.len() / 2;
    runs.swap_remove(middle)
}

pub fn native(records: u64) -> Outcome {
    native_stamped(records, None)
}

/// [`native`], stamping each tick at the source and measuring each order at the sink.
pub fn native_stamped(records: u64, stamps: Option<&Stamps>) -> Outcome {
    let started = Instant::now();
    let (mut feed, keep) = (feed(records), keep());
    let (mut vwap, mut strategy) = (VwapWindow::new(32), Crossover::new(5, 20, 100));
    let (mut line, mut checksum, mut orders) = (Vec::new(), Checksum::default(), 0);
    let mut latencies_ns = Vec::new();
    while feed.next_into(&mut line) {
        if let Some(st) = stamps {
            st.stamp(feed.emitted());
        }
        let Some(tick) = decode_raw_tick(&line) else {
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
    }
}

type Batch = Vec<Vec<u8>>;

/// Batches in flight per queue.
const QUEUE_BATCHES: usize = 4;

/// (b) One thread per stage, bounded crossbeam queues of batches of `credits` records, the
/// records encoded between stages exactly as the wasm stages exchange them.
pub fn threads(records: u64, credits: u32, stamps: Option<&Stamps>) -> Outcome {
    let started = Instant::now();
    let credits = credits.max(1) as usize;
    let (to_decode, decode_in) = bounded::<Batch>(QUEUE_BATCHES);
    let (to_filter, filter_in) = bounded::<Batch>(QUEUE_BATCHES);
    let (to_vwap, vwap_in) = bounded::<Batch>(QUEUE_BATCHES);
    let (to_strategy, strategy_in) = bounded::<Batch>(QUEUE_BATCHES);
    let (to_sink, sink_in) = bounded::<Batch>(QUEUE_BATCHES);
    let source_stamps = stamps.map(Stamps::share);
    std::thread::scope(|s| {
        s.spawn(move || {
            let (mut feed, mut line) = (feed(records), Vec::new());
            loop {
                let mut batch = Vec::with_capacity(credits);
                while batch.len() < credits && feed.next_into(&mut line) {
                    if let Some(st) = &source_stamps {
                        st.stamp(feed.emitted());
                    }
                    batch.push(line.clone());
                }
                if batch.is_empty() || to_decode.send(batch).is_err() {
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

/// The host-native feed as an upstream, stamping each tick's emission when asked.
fn feed_source(
    records: u64,
    stamps: Option<&Stamps>,
) -> impl FnMut(sluicegate::Demand) -> sluicegate::Result<Option<Chunk>> + Send + 'static {
    let source_stamps = stamps.map(Stamps::share);
    let mut feed = feed(records);
    let mut line = Vec::new();
    move |demand: sluicegate::Demand| {
        let credits = demand.records;
        let mut chunk = Chunk::empty();
        while chunk.len() < credits {
            if !feed.next_into(&mut line) {
                return Ok((!chunk.is_empty() || credits == 0).then_some(chunk));
            }
            if let Some(st) = &source_stamps {
                st.stamp(feed.emitted());
            }
            chunk.push(&line);
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
        seconds: 0.0,
        latencies_ns,
    })
}

/// (c) sluicegate: a host-native feed, then the four example stages as components, each in
/// its own sandbox; the sink grants `credits` per resume.
pub fn sluicegate(
    stages: &MarketStages,
    records: u64,
    credits: u32,
    stamps: Option<&Stamps>,
    fuel: Option<u64>,
) -> anyhow::Result<Outcome> {
    let source = feed_source(records, stamps);
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
    records: u64,
    credits: u32,
    stamps: Option<&Stamps>,
) -> anyhow::Result<Outcome> {
    let source = feed_source(records, stamps);
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

/// (d) CPython generators with `send(credits)`; `None` when python3 is not installed.
pub fn cpython(records: u64, credits: u32, latency: bool) -> anyhow::Result<Option<Outcome>> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/market.py");
    let mut args = vec![script.to_string(), records.to_string(), credits.to_string()];
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
    }))
}
