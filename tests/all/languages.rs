//! Stages not written with the Rust SDK: the hand-written WAT pass-through, the Python symbol
//! filter (componentize-py) and the JavaScript decoder (componentize-js), through real
//! pipelines. (Each one's conformance is checked in `check.rs`.)

use std::path::Path;

use sluicegate::check::CheckOptions;
use sluicegate::config::PipelineSpec;
use sluicegate::report::{RunReport, RunStatus};
use sluicegate::{Error, StageOptions};
use sluicegate_tests::{
    WAT_PASSTHROUGH, artifacts as a, capture_logs, check_on_both_paths, component, pipelines,
};

#[test]
fn the_wat_stage_passes_check() {
    let options = CheckOptions::default().with_upstream([a::COUNTER]);
    // It takes the fast path: checked on both paths, which must agree (issue #13).
    let report = check_on_both_paths(WAT_PASSTHROUGH, &options);
    assert_eq!(report.execution_path, Some(sluicegate::ExecutionPath::Core));
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
    let mut p = pipelines().build(&spec, origin).expect("build");
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

/// Records the stage `name` delivered in a run.
fn records_out(report: &RunReport, name: &str) -> Option<u64> {
    report
        .hops
        .iter()
        .find(|h| h.name == name)
        .map(|h| h.records_out)
}

fn run_market(python_and_js: bool, records: u64) -> RunReport {
    let origin = Path::new("market.toml");
    let spec = PipelineSpec::from_toml(&market(python_and_js, records), origin).expect("spec");
    let report = pipelines().build(&spec, origin).expect("build").run();
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
    let hop = records_out;
    assert_eq!(hop(&mixed, "vwap"), hop(&rust, "vwap"));
    assert_eq!(hop(&mixed, "decode"), hop(&mixed, "filter"));
    assert!(
        hop(&rust, "decode") < Some(records),
        "the Rust decoder dropped garbled lines"
    );
}

/// The mixed pipeline, run for `before` resumes of 64 credits, then `stage` swapped for a
/// version built from `next`, then to the end.
fn run_mixed_with_swap(records: u64, before: usize, stage: &str, next: &str) -> RunReport {
    let origin = Path::new("market.toml");
    let spec = PipelineSpec::from_toml(&market(true, records), origin).expect("spec");
    let mut pipeline = pipelines().build(&spec, origin).expect("build");
    for _ in 0..before {
        pipeline.resume(64).expect("resume before the swap");
    }
    assert!(
        pipeline.probe().sink().records > 0,
        "orders flowed before the swap"
    );
    pipeline
        .swapper()
        .swap(stage, &component(next))
        .expect("the swap is accepted");
    let report = pipeline.run();
    assert_eq!(report.status, RunStatus::Ok, "{report}");
    report
}

/// The counts a stage's close log line gives (`... closed: <first> N, ...`) for each version
/// of stage `stage` that closed, oldest first.
fn closed_counts(logs: &[(String, String)], stage: &str, first: &str) -> Vec<Option<u64>> {
    logs.iter()
        .filter(|(s, m)| s == stage && m.contains(" closed: "))
        .map(|(_, m)| {
            m.split(&format!("{first} "))
                .nth(1)?
                .split(',')
                .next()?
                .parse()
                .ok()
        })
        .collect()
}

/// A stage in another language hot-swapped mid-stream for a new version of itself hands over
/// its state through its `state` export (Python: `sluicegate_records.State`; JavaScript: its
/// own): its counts carry on, each version's cleanup runs once, and the orders are exactly
/// those of an unswapped all-Rust run.
#[test]
fn python_and_javascript_stages_hot_swapped_mid_stream_hand_their_state_over() {
    let records = 20_000;
    let rust = run_market(false, records);
    for (stage, component, counted) in [
        ("filter", a::PY_SYMBOL_FILTER, "kept"),
        ("decode", a::JS_DECODE, "decoded"),
    ] {
        let (swapped, logs) = capture_logs(|| run_mixed_with_swap(records, 40, stage, component));
        assert_eq!(swapped.sink.checksum, rust.sink.checksum, "{swapped}");
        let swap = swapped.swaps.first().expect("the swap is reported");
        assert!(swap.state_carried, "{stage}: {swapped}");
        // The old version closed with its counts so far; the new one, having taken them over,
        // closed with the counts of the whole stream.
        let closed = closed_counts(&logs, stage, counted);
        let out = records_out(&swapped, stage);
        assert_eq!(closed.len(), 2, "{stage}: {closed:?}");
        assert!(closed[0] < out, "{stage}: {closed:?}");
        assert_eq!(closed[1], out, "{stage}: {closed:?}");
    }
}

/// Rewrite a stage in another language and swap it in live: the JavaScript decoder is
/// replaced mid-stream by the Rust one, and the orders are exactly those of an all-Rust run.
#[test]
fn a_javascript_stage_is_hot_swapped_for_its_rust_rewrite_with_nothing_lost() {
    let records = 20_000;
    let rust = run_market(false, records);
    let (swapped, logs) = capture_logs(|| run_mixed_with_swap(records, 40, "decode", a::DECODE));
    assert_eq!(swapped.sink.records, rust.sink.records, "{swapped}");
    assert_eq!(swapped.sink.checksum, rust.sink.checksum, "{swapped}");
    // The JavaScript version's counts went to the Rust one, which closed with the whole
    // stream's: the two speak the same state.
    assert!(swapped.swaps[0].state_carried, "{swapped}");
    let closed = closed_counts(&logs, "decode", "decoded");
    assert_eq!(closed.len(), 2, "{closed:?}");
    assert_eq!(closed[1], records_out(&swapped, "decode"), "{closed:?}");
}

/// A JavaScript stage refuses a state it does not understand by throwing (componentize-js
/// turns the thrown string into `err`): the swap is refused with its reason and the running
/// version carries on.
#[test]
fn a_javascript_stage_refuses_a_state_it_does_not_understand_and_nothing_changes() {
    let source = component(a::TICK_SOURCE)
        .instantiate("ticks", StageOptions::new().config("records", "100"))
        .expect("ticks");
    let decode = component(a::DECODE)
        .instantiate("decode", StageOptions::new().upstream(source.clone()))
        .expect("decode");
    let vwap = component(a::VWAP)
        .instantiate("vwap", StageOptions::new().upstream(decode.clone()))
        .expect("vwap");
    for stage in [&source, &decode, &vwap] {
        stage.prime().expect("prime");
    }
    vwap.resume(5).expect("resume");
    // VWAP's windows are not a decoder's counts.
    let err = vwap
        .swap(&component(a::JS_DECODE))
        .expect_err("the swap is refused");
    assert!(
        matches!(&err, Error::SwapRefused { reason, .. }
            if reason.contains("refused the state: state is not a js-decode state")),
        "{err}"
    );
    assert_eq!(vwap.stats().swaps, 0);
    let next = vwap
        .resume(5)
        .expect("VWAP keeps running")
        .expect("records");
    assert!(!next.is_empty());
}
