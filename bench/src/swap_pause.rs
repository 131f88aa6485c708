//! How long a hot swap stops a stage: the cut-over pause (the stage cannot be resumed), with
//! and without state handoff, measured on swaps between chunks of a flowing chain.

use market_data::{Feed, FeedConfig, decode_raw_tick};
use sluicegate::{Engine, IterUpstream, StageOptions};

use crate::stages;

pub struct PauseRow {
    pub what: &'static str,
    pub swaps: usize,
    pub p50_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
    pub prepare_p50_us: f64,
}

fn row(what: &'static str, reports: &[sluicegate::SwapReport]) -> PauseRow {
    let mut pause: Vec<f64> = reports
        .iter()
        .map(|r| r.pause.as_secs_f64() * 1e6)
        .collect();
    let mut prepare: Vec<f64> = reports
        .iter()
        .map(|r| r.prepare.as_secs_f64() * 1e6)
        .collect();
    PauseRow {
        what,
        swaps: reports.len(),
        p50_us: crate::percentile(&mut pause, 0.5),
        p99_us: crate::percentile(&mut pause, 0.99),
        max_us: crate::percentile(&mut pause, 1.0),
        prepare_p50_us: crate::percentile(&mut prepare, 0.5),
    }
}

/// Swaps a tagging stage between two versions (nothing to hand over), then VWAP for a copy
/// of itself (its windows handed over), `swaps` times each, one swap per chunk.
pub fn measure(engine: &Engine, swaps: usize) -> anyhow::Result<Vec<PauseRow>> {
    let counter = engine.load_bytes("counter", stages::COUNTER)?;
    let (v1, v2) = (
        engine.load_bytes("tag", stages::TAG_V1)?,
        engine.load_bytes("tag", stages::TAG_V2)?,
    );
    let source = counter.instantiate(
        "counter",
        StageOptions::new().config("records", "100000000"),
    )?;
    let tag = v1.instantiate("tag", StageOptions::new().upstream(source.clone()))?;
    source.prime()?;
    tag.prime()?;
    let mut stateless = Vec::with_capacity(swaps);
    for i in 0..swaps {
        tag.resume(64)?;
        stateless.push(tag.swap(if i % 2 == 0 { &v2 } else { &v1 })?);
    }

    let mut feed = Feed::new(FeedConfig {
        records: u64::MAX,
        ..FeedConfig::default()
    });
    let mut line = Vec::new();
    let ticks = std::iter::from_fn(move || {
        feed.next_into(&mut line);
        decode_raw_tick(&line).map(|t| t.encode().to_vec())
    });
    let vwap_component = engine.load_bytes("vwap", stages::VWAP)?;
    let vwap = vwap_component.instantiate(
        "vwap",
        StageOptions::new().upstream(IterUpstream::new(ticks)),
    )?;
    vwap.prime()?;
    let mut stateful = Vec::with_capacity(swaps);
    for _ in 0..swaps {
        vwap.resume(64)?;
        let report = vwap.swap(&vwap_component)?;
        anyhow::ensure!(report.state_carried, "VWAP did not hand its windows over");
        stateful.push(report);
    }
    let bytes = stateful.last().map(|r| r.state_bytes).unwrap_or(0);
    eprintln!("swap pauses measured (VWAP state: {bytes} bytes)");
    Ok(vec![
        row("without state (tag v1 ↔ v2)", &stateless),
        row("with state handoff (VWAP, 64 symbols' windows)", &stateful),
    ])
}
