//! The same kind of stage written in each language the product supports: component size,
//! compile time, instantiate + prime, and records/s through the stage alone (a host-native
//! upstream feeds it pre-built records at 256 credits). The pairs do the same work: Rust and
//! JavaScript decode the same text ticks; Rust filters binary ticks and Python the text ticks
//! they came from, on the same symbols; Rust and WAT pass records through.

use std::sync::Arc;
use std::time::Instant;

use market_data::{Feed, FeedConfig};
use sluicegate::{Chunk, Engine, StageComponent, StageOptions};

use crate::stages;

const WAT_PASSTHROUGH: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../example-stages/wat-passthrough/stage.wat"
);
const SYMBOLS: &str = "AAPL,MSFT,NVDA,AMZN,GOOG,META,TSLA,JPM";

/// One stage's figures.
pub struct LanguageRow {
    pub stage: &'static str,
    pub language: &'static str,
    pub toolchain: &'static str,
    pub bytes: usize,
    pub compile_ms: f64,
    pub instantiate_us: f64,
    pub records_per_s: f64,
}

/// One stage to measure, and what to feed it.
struct Case<'a> {
    stage: &'static str,
    language: &'static str,
    toolchain: &'static str,
    bytes: Vec<u8>,
    input: &'a Arc<Vec<Vec<u8>>>,
    config: &'a [(&'a str, &'a str)],
}

impl<'a> Case<'a> {
    fn new(
        stage: &'static str,
        language: &'static str,
        toolchain: &'static str,
        bytes: Vec<u8>,
        input: &'a Arc<Vec<Vec<u8>>>,
        config: &'a [(&'a str, &'a str)],
    ) -> Self {
        Case {
            stage,
            language,
            toolchain,
            bytes,
            input,
            config,
        }
    }
}

/// Measures every language's stage on `records` ticks; also returns why any stage was not
/// measured (its toolchain is not installed).
pub fn measure(
    engine: &Engine,
    records: u64,
    runs: u32,
) -> anyhow::Result<(Vec<LanguageRow>, Vec<String>)> {
    let text = Arc::new(raw_ticks(records));
    let binary: Arc<Vec<Vec<u8>>> = Arc::new(
        text.iter()
            .filter_map(|raw| market_data::decode_raw_tick(raw).map(|t| t.encode().to_vec()))
            .collect(),
    );
    let mut rows = Vec::new();
    let mut skipped = Vec::new();
    let mut file = |path: Result<&str, &str>| -> Option<Vec<u8>> {
        match path.map(std::fs::read) {
            Ok(Ok(bytes)) => Some(bytes),
            Ok(Err(e)) => {
                skipped.push(format!("reading a stage: {e}"));
                None
            }
            Err(why) => {
                skipped.push(why.to_string());
                None
            }
        }
    };
    let js = file(stages::JS_DECODE);
    let py = file(stages::PY_SYMBOL_FILTER);
    let wat = file(Ok(WAT_PASSTHROUGH));
    const SDK: &str = "wit-bindgen + sluicegate-guest";
    let filter: &[(&str, &str)] = &[("symbols", SYMBOLS)];
    let cases = [
        Some(Case::new(
            "decode",
            "Rust",
            SDK,
            stages::DECODE.to_vec(),
            &text,
            &[],
        )),
        js.map(|b| {
            Case::new(
                "js-decode",
                "JavaScript",
                "componentize-js 0.23.0",
                b,
                &text,
                &[],
            )
        }),
        Some(Case::new(
            "symbol-filter",
            "Rust",
            SDK,
            stages::SYMBOL_FILTER.to_vec(),
            &binary,
            filter,
        )),
        py.map(|b| {
            Case::new(
                "py-symbol-filter",
                "Python",
                "componentize-py 0.25.1",
                b,
                &text,
                filter,
            )
        }),
        Some(Case::new(
            "passthrough",
            "Rust",
            SDK,
            stages::PASSTHROUGH.to_vec(),
            &text,
            &[],
        )),
        wat.map(|b| Case::new("wat-passthrough", "WAT", "by hand", b, &text, &[])),
    ];
    for case in cases.into_iter().flatten() {
        let Case {
            stage,
            language,
            toolchain,
            bytes,
            input,
            config,
        } = case;
        eprintln!("  {stage} ({language})");
        let started = Instant::now();
        let component = engine.load_bytes(stage, &bytes)?;
        let compile_ms = started.elapsed().as_secs_f64() * 1e3;
        let mut times = Vec::new();
        for _ in 0..runs {
            let started = Instant::now();
            let s = instance(&component, input, config)?;
            s.prime()?;
            times.push(started.elapsed().as_secs_f64() * 1e6);
            s.close()?;
        }
        let s = instance(&component, input, config)?;
        s.prime()?;
        let started = Instant::now();
        let mut out = 0u64;
        while let Some(chunk) = s.resume(256)? {
            out += u64::from(chunk.len());
        }
        let elapsed = started.elapsed().as_secs_f64();
        s.close()?;
        anyhow::ensure!(out > 0, "{stage} produced nothing");
        rows.push(LanguageRow {
            stage,
            language,
            toolchain,
            bytes: bytes.len(),
            compile_ms,
            instantiate_us: crate::percentile(&mut times, 0.5),
            records_per_s: input.len() as f64 / elapsed,
        });
    }
    Ok((rows, skipped))
}

fn instance(
    component: &StageComponent,
    input: &Arc<Vec<Vec<u8>>>,
    config: &[(&str, &str)],
) -> anyhow::Result<sluicegate::Stage> {
    let input = input.clone();
    let mut next = 0usize;
    let upstream = move |demand: sluicegate::Demand| -> sluicegate::Result<Option<Chunk>> {
        let credits = demand.records;
        if next >= input.len() && credits > 0 {
            return Ok(None);
        }
        let mut chunk = Chunk::empty();
        while chunk.len() < credits && next < input.len() {
            chunk.push(&input[next]);
            next += 1;
        }
        Ok(Some(chunk))
    };
    let mut options = StageOptions::new().upstream(upstream);
    for (k, v) in config {
        options = options.config(*k, *v);
    }
    Ok(component.instantiate(component.name(), options)?)
}

/// `records` raw text ticks from the seeded feed (no garbled lines).
fn raw_ticks(records: u64) -> Vec<Vec<u8>> {
    let mut feed = Feed::new(FeedConfig {
        records,
        garble_every: 0,
        ..FeedConfig::default()
    });
    let mut out = Vec::new();
    let mut line = Vec::new();
    while feed.next_into(&mut line) {
        out.push(line.clone());
    }
    out
}
