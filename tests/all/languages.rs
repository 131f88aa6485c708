//! Stages not written with the Rust SDK: the hand-written WAT pass-through, the Python symbol
//! filter (componentize-py) and the JavaScript decoder (componentize-js), through real
//! pipelines. (Each one's conformance is checked in `check.rs`.)

use std::path::Path;

use sluicegate::{CheckOptions, Pipeline, PipelineSpec, RunStatus, check_file};
use sluicegate_tests::{artifacts as a, engine};

const WAT_PASSTHROUGH: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../example-stages/wat-passthrough/stage.wat"
);

#[test]
fn the_wat_stage_passes_check() {
    let options = CheckOptions {
        upstream: vec![a::COUNTER.into()],
        ..CheckOptions::default()
    };
    let report = check_file(engine(), Path::new(WAT_PASSTHROUGH), &options);
    assert!(report.passed(), "{:?}", report.first_error());
}

#[test]
fn the_wat_stage_forwards_every_record_and_propagates_pauses() {
    let toml = format!(
        "[[stage]]\nname = \"counter\"\ncomponent = {:?}\nconfig = {{ records = 5000 }}\n\
         [[stage]]\nname = \"wat\"\ncomponent = {WAT_PASSTHROUGH:?}\n\
         [[stage]]\nname = \"after\"\ncomponent = {:?}\n[sink]\ncredits = 7\n",
        a::COUNTER,
        a::PASSTHROUGH
    );
    let origin = Path::new("languages.toml");
    let spec = PipelineSpec::from_toml(&toml, origin).expect("spec");
    let mut p = Pipeline::build(engine(), &spec, origin).expect("build");
    p.resume(7).expect("resume");
    let before = p.probe().snapshot();
    assert_eq!(p.resume(0).expect("pause"), Some(0));
    let after = p.probe().snapshot();
    assert_eq!(
        after[0].stats.resumes_entered,
        before[0].stats.resumes_entered + 1,
        "the pause reached the counter through the WAT stage"
    );
    let report = p.run();
    assert_eq!(report.status, RunStatus::Ok, "{report}");
    let mut checksum = market_data::Checksum::default();
    for n in 0..5000u32 {
        checksum.add(n.to_string().as_bytes());
    }
    assert_eq!(report.sink.checksum, format!("{:016x}", checksum.value()));
    assert_eq!(report.hops[1].records_out, 5000);
}

/// The market pipeline with every stage in Rust, or with the filter in Python and the decoder
/// in JavaScript (which filter raw text lines before decoding them). Same seed, same config.
fn market(python_and_js: bool, records: u64) -> String {
    let symbols =
        r#"config = { symbols = ["AAPL", "MSFT", "NVDA", "AMZN", "GOOG", "META", "TSLA", "JPM"] }"#;
    let middle = if python_and_js {
        format!(
            "[[stage]]\nname = \"filter\"\ncomponent = {:?}\n{symbols}\n\
             [[stage]]\nname = \"decode\"\ncomponent = {:?}\n",
            a::PY_SYMBOL_FILTER,
            a::JS_DECODE
        )
    } else {
        format!(
            "[[stage]]\nname = \"decode\"\ncomponent = {:?}\n\
             [[stage]]\nname = \"filter\"\ncomponent = {:?}\n{symbols}\n",
            a::DECODE,
            a::SYMBOL_FILTER
        )
    };
    format!(
        "name = \"market\"\n\
         [[stage]]\nname = \"ticks\"\ncomponent = {:?}\n\
         config = {{ seed = 7, universe = 64, records = {records}, max_burst = 64, garble_every = 997 }}\n\
         {middle}\
         [[stage]]\nname = \"vwap\"\ncomponent = {:?}\nconfig = {{ window = 32 }}\n\
         [[stage]]\nname = \"strategy\"\ncomponent = {:?}\nconfig = {{ fast = 5, slow = 20, qty = 100 }}\n\
         [sink]\ncredits = 64\n",
        a::TICK_SOURCE,
        a::VWAP,
        a::STRATEGY
    )
}

fn run_market(python_and_js: bool, records: u64) -> sluicegate::RunReport {
    let origin = Path::new("market.toml");
    let spec = PipelineSpec::from_toml(&market(python_and_js, records), origin).expect("spec");
    let report = Pipeline::build(engine(), &spec, origin)
        .expect("build")
        .run();
    assert_eq!(report.status, RunStatus::Ok, "{report}");
    report
}

#[test]
fn a_rust_python_javascript_pipeline_gives_the_all_rust_checksum() {
    // Rust source -> Python filter -> JavaScript decoder -> Rust VWAP -> Rust strategy, against
    // the all-Rust pipeline on the same seeded feed (with garbled lines).
    let records = 20_000;
    let rust = run_market(false, records);
    let mixed = run_market(true, records);
    assert!(rust.sink.records > 10, "the strategy placed orders: {rust}");
    assert_eq!(mixed.sink.records, rust.sink.records, "{mixed}\n{rust}");
    assert_eq!(mixed.sink.checksum, rust.sink.checksum, "{mixed}\n{rust}");
    // The same ticks reached the VWAP stage both ways: the filters kept the same symbols, and
    // the Python filter dropped every garbled line (it has no symbol) before JavaScript saw it.
    let hop = |r: &sluicegate::RunReport, name: &str| {
        r.hops
            .iter()
            .find(|h| h.name == name)
            .map(|h| h.records_out)
    };
    assert_eq!(hop(&mixed, "vwap"), hop(&rust, "vwap"));
    assert_eq!(hop(&mixed, "decode"), hop(&mixed, "filter"));
    assert!(
        hop(&rust, "decode") < Some(records),
        "the Rust decoder dropped garbled lines"
    );
}
