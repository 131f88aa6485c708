//! Pipelines on real components: delegated demand through every hop, pauses, end of stream,
//! close order, faults, and pipeline-file validation.

use std::path::{Path, PathBuf};

use market_data::Checksum;
use sluicegate::config::PipelineSpec;
use sluicegate::report::{RunReport, RunStatus};
use sluicegate::{Error, Pipeline, Rule, StageState};
use sluicegate_tests::{artifacts as a, capture_logs, native_market_orders, pipelines};

const DEMO: &str = include_str!("../../examples/market.toml");

/// Builds a pipeline from TOML text; relative paths would resolve against the test dir.
fn pipeline(toml: &str) -> Result<Pipeline, Error> {
    let origin = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipeline.toml");
    let spec = PipelineSpec::from_toml(toml, &origin)?;
    pipelines().build(&spec, &origin)
}

fn stage(name: &str, path: &str, config: &str) -> String {
    format!("[[stage]]\nname = {name:?}\ncomponent = {path:?}\nconfig = {{ {config} }}\n")
}

fn checksum_of(records: impl IntoIterator<Item = Vec<u8>>) -> String {
    let mut checksum = Checksum::default();
    for record in records {
        checksum.add(&record);
    }
    format!("{:016x}", checksum.value())
}

fn counter_chain(records: u32, maps: &[&str], credits: u32) -> String {
    let mut toml = stage("counter", a::COUNTER, &format!("records = {records}"));
    for name in maps {
        toml += &stage(name, a::PASSTHROUGH, "");
    }
    toml + &format!("[sink]\ncredits = {credits}\n")
}

#[test]
fn records_are_conserved_through_one_to_one_stages() {
    let mut p = pipeline(&counter_chain(1000, &["a", "b", "c"], 64)).expect("build");
    let report = p.run();
    assert_eq!(report.status, RunStatus::Ok, "{report}");
    for hop in &report.hops[1..] {
        assert_eq!(
            (hop.records_in, hop.records_out),
            (1000, 1000),
            "{}",
            hop.name
        );
    }
    assert_eq!(report.sink.records, 1000);
    let expected = checksum_of((0..1000).map(|n: u32| n.to_string().into_bytes()));
    assert_eq!(report.sink.checksum, expected);
}

#[test]
fn the_market_pipeline_matches_the_same_logic_run_natively() {
    let mut spec = PipelineSpec::from_toml(DEMO, Path::new("market.toml")).expect("demo spec");
    spec.set_records(20_000);
    let mut p = pipelines()
        .build(&spec, Path::new("market.toml"))
        .expect("build");
    let report = p.run();
    assert_eq!(report.status, RunStatus::Ok, "{report}");
    let (orders, checksum) = native_market_orders(20_000);
    assert!(orders > 0, "the strategy traded");
    assert_eq!(report.sink.records, orders);
    assert_eq!(report.sink.checksum, format!("{checksum:016x}"));
    let decode = &report.hops[1];
    assert_eq!(
        decode.records_in - decode.records_out,
        20_000 / 997,
        "garbled lines dropped"
    );
}

#[test]
fn a_filter_drops_exactly_the_records_it_should() {
    let toml = format!(
        "[source]\nkind = \"generate\"\nrecords = 5000\n{}{}[sink]\ncredits = 100\n",
        stage("decode", "builtin:decode", ""),
        stage(
            "filter",
            "builtin:symbol-filter",
            "symbols = [\"AAPL\", \"TSLA\"]"
        ),
    );
    let report = pipeline(&toml).expect("build").run();
    assert_eq!(report.status, RunStatus::Ok, "{report}");
    let mut feed = market_data::Feed::new(market_data::FeedConfig {
        records: 5000,
        ..Default::default()
    });
    let mut line = Vec::new();
    let mut kept = Vec::new();
    while feed.next_into(&mut line) {
        let tick = market_data::decode_raw_tick(&line).expect("no garbling configured");
        if matches!(tick.symbol.as_str(), "AAPL" | "TSLA") {
            kept.push(tick.encode().to_vec());
        }
    }
    assert_eq!(report.sink.records, kept.len() as u64);
    assert_eq!(report.sink.checksum, checksum_of(kept));
    assert_eq!(report.hops[0].name, "source");
    assert_eq!(report.hops[0].records_out, 5000);
}

#[test]
fn credits_are_never_exceeded_on_any_hop() {
    let mut spec = PipelineSpec::from_toml(DEMO, Path::new("market.toml")).expect("demo spec");
    spec.set_records(3000);
    spec.sink.credits = 7;
    let report = pipelines()
        .build(&spec, Path::new("market.toml"))
        .expect("build")
        .run();
    assert_eq!(report.status, RunStatus::Ok, "{report}");
    for hop in &report.hops {
        assert!(
            hop.records_out <= hop.credits_granted,
            "{}: {hop:?}",
            hop.name
        );
        assert!(hop.records_out <= 7 * hop.chunks.max(1), "{}", hop.name);
    }
    assert!(report.sink.records <= 7 * report.sink.chunks);
}

#[test]
fn a_pause_stops_all_upstream_work_and_loses_nothing() {
    let toml = counter_chain(500, &["a", "b"], 16);
    let mut p = pipeline(&toml).expect("build");
    for _ in 0..3 {
        p.resume(16).expect("resume");
    }
    let before: Vec<_> = p.probe().snapshot();
    for _ in 0..4 {
        assert_eq!(p.resume(0).expect("pause"), Some(0));
    }
    let after = p.probe().snapshot();
    for (b, a) in before.iter().zip(&after) {
        assert_eq!(
            a.stats.records, b.stats.records,
            "{} moved records while paused",
            a.name
        );
        assert_eq!(
            a.stats.credits_granted, b.stats.credits_granted,
            "{} got credits",
            a.name
        );
        assert_eq!(
            a.stats.resumes_entered,
            b.stats.resumes_entered + 4,
            "{}",
            a.name
        );
    }
    assert_eq!(p.probe().sink().records, 48);
    let report = p.run();
    assert_eq!(report.sink.records, 500);
    let expected = checksum_of((0..500).map(|n: u32| n.to_string().into_bytes()));
    assert_eq!(report.sink.checksum, expected);
}

#[test]
fn end_of_stream_reaches_the_sink_and_every_stage_is_closed() {
    let mut p = pipeline(&counter_chain(10, &["a"], 4)).expect("build");
    let report = p.run();
    assert_eq!(report.status, RunStatus::Ok);
    assert_eq!(report.sink.records, 10);
    for stage in p.stages() {
        assert_eq!(stage.state(), StageState::Closed, "{}", stage.name());
    }
}

#[test]
fn stages_are_closed_upstream_first() {
    let mut p = pipeline(&counter_chain(10, &["a", "b"], 4)).expect("build");
    let (report, logs) = capture_logs(|| p.run());
    assert_eq!(report.status, RunStatus::Ok);
    let order: Vec<&str> = logs
        .iter()
        .filter(|(_, m)| m == "cleanup ran")
        .map(|(s, _)| s.as_str())
        .collect();
    assert_eq!(order, ["counter", "a", "b"]);
}

#[test]
fn a_violation_in_stage_k_stops_the_run_names_k_and_closes_the_others() {
    let toml = format!(
        "{}{}{}{}[sink]\ncredits = 8\n",
        stage("counter", a::COUNTER, "records = 100"),
        stage("before", a::PASSTHROUGH, ""),
        stage("greedy", a::CREDITS_EXCEEDED, ""),
        stage("after", a::PASSTHROUGH, ""),
    );
    let mut p = pipeline(&toml).expect("build");
    let (report, logs) = capture_logs(|| p.run());
    assert_eq!(report.status, RunStatus::Failed);
    let failure = report.failure.as_ref().expect("a failure");
    assert_eq!(
        (failure.stage.as_str(), failure.rule),
        ("greedy", Some(Rule::CreditsExceeded))
    );
    assert_eq!(
        report.sink.records, 0,
        "nothing of the bad chunk reached the sink"
    );
    let mut cleaned: Vec<&str> = logs
        .iter()
        .filter(|(_, m)| m == "cleanup ran")
        .map(|(s, _)| s.as_str())
        .collect();
    cleaned.sort();
    assert_eq!(cleaned, ["after", "before", "counter"]);
    assert!(report.close_errors.is_empty(), "{:?}", report.close_errors);
}

#[test]
fn a_trap_upstream_is_reported_at_its_root_and_what_came_before_is_delivered() {
    let toml = format!(
        "{}{}{}[sink]\ncredits = 5\n",
        stage("fragile", a::TRAP_MID_STREAM, ""),
        stage("a", a::PASSTHROUGH, ""),
        stage("b", a::PASSTHROUGH, ""),
    );
    let mut p = pipeline(&toml).expect("build");
    let report = p.run();
    let failure = report.failure.as_ref().expect("a failure");
    assert_eq!(
        (failure.stage.as_str(), failure.kind.as_str()),
        ("fragile", "trap")
    );
    assert!(
        failure.message.contains("index out of range"),
        "{}",
        failure.message
    );
    // Two good chunks of 5 came out before the third resume trapped.
    let expected = checksum_of((0..10).map(|n: u32| n.to_string().into_bytes()));
    assert_eq!(
        (report.sink.records, report.sink.checksum.clone()),
        (10, expected)
    );
    let states: Vec<StageState> = p.stages().iter().map(|s| s.state()).collect();
    assert_eq!(
        states,
        [StageState::Faulted, StageState::Closed, StageState::Closed]
    );
}

#[test]
fn a_trap_in_close_is_reported_and_the_others_still_close() {
    let toml = format!(
        "{}{}[sink]\ncredits = 5\n",
        stage("sloppy", a::TRAP_IN_CLOSE, ""),
        stage("a", a::PASSTHROUGH, ""),
    );
    let mut p = pipeline(&toml).expect("build");
    let report = p.run();
    assert_eq!(report.status, RunStatus::Failed);
    assert!(report.failure.is_none());
    assert_eq!(report.close_errors.len(), 1);
    assert_eq!(report.close_errors[0].stage, "sloppy");
    assert_eq!(p.stages()[1].state(), StageState::Closed);
}

fn config_error(toml: &str) -> String {
    match pipeline(toml) {
        Err(Error::Config { message, .. }) => message,
        Err(other) => panic!("expected a config error, got {other}"),
        Ok(_) => panic!("expected a config error"),
    }
}

#[test]
fn bad_toml_is_reported_with_its_line() {
    let message =
        config_error("[[stage]]\nname = \"x\"\ncomponent = \"builtin:decode\"\nconfig = {\n");
    assert!(message.contains("line 4"), "{message}");
}

#[test]
fn an_unknown_key_is_refused() {
    let message = config_error(&(stage("x", "builtin:decode", "") + "[sink]\ncredit = 5\n"));
    assert!(message.contains("unknown field `credit`"), "{message}");
}

#[test]
fn a_missing_component_file_is_named() {
    let message = config_error(&stage("strategy", "missing/strategy.wasm", ""));
    assert!(
        message.contains("stage `strategy`") && message.contains("does not exist"),
        "{message}"
    );
}

#[test]
fn an_unknown_builtin_is_named_with_the_choices() {
    // The program running the pipeline says which `builtin:` components it has, so the name is
    // checked when the pipeline is built, before anything runs.
    let err = pipeline(&stage("s", "builtin:nope", "")).err();
    assert!(
        matches!(&err, Some(Error::Load { stage, reason }) if stage == "s"
            && reason.contains("no component `builtin:nope`") && reason.contains("vwap")),
        "{err:?}"
    );
}

#[test]
fn duplicate_stage_names_are_refused() {
    let message =
        config_error(&(stage("x", "builtin:decode", "") + &stage("x", "builtin:vwap", "")));
    assert!(message.contains("two stages are named `x`"), "{message}");
}

#[test]
fn zero_credits_and_zero_limits_are_refused() {
    let message = config_error(&(stage("x", "builtin:decode", "") + "[sink]\ncredits = 0\n"));
    assert!(message.contains("sink.credits"), "{message}");
    let message =
        config_error(&(stage("x", "builtin:decode", "") + "[stage.limits]\ncpu_ms = 0\n"));
    assert!(message.contains("limits.cpu_ms"), "{message}");
    let message =
        config_error(&(stage("x", "builtin:decode", "") + "[stage.limits]\nlog_lines_per_s = 0\n"));
    assert!(message.contains("limits.log_lines_per_s"), "{message}");
}

#[test]
fn a_component_of_the_wrong_world_is_named_by_its_stage() {
    let dir = std::env::temp_dir().join(format!("sluicegate-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file: PathBuf = dir.join("empty.wasm");
    std::fs::write(&file, "(component)").expect("write");
    let err = pipeline(&stage("strategy", file.to_str().expect("utf-8 path"), ""))
        .err()
        .expect("wrong world");
    assert!(
        matches!(&err, Error::WrongWorld { stage, .. } if stage == "strategy"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn file_sources_read_lines_and_framed_records_and_a_file_sink_writes_them() {
    let dir = std::env::temp_dir().join(format!("sluicegate-files-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    std::fs::write(dir.join("in.txt"), "alpha\nbeta\n\ngamma").expect("write lines");
    let framed = sluicegate::Chunk::from_records(["one", "two", "three"]);
    std::fs::write(dir.join("in.bin"), framed.as_bytes()).expect("write framed");
    let origin = dir.join("p.toml");
    let run = |source: &str, sink_format: &str| {
        let toml = format!(
            "[source]\nkind = \"file\"\n{source}\n{}[sink]\nkind = \"file\"\npath = \"out\"\nformat = \"{sink_format}\"\ncredits = 2\n",
            stage("map", a::PASSTHROUGH, "")
        );
        let spec = PipelineSpec::from_toml(&toml, &origin).expect("spec");
        let report = pipelines().build(&spec, &origin).expect("build").run();
        assert_eq!(report.status, RunStatus::Ok, "{report}");
        std::fs::read(dir.join("out")).expect("sink output")
    };
    // Lines: the empty line is an (empty) record, and the last line needs no newline.
    assert_eq!(run("path = \"in.txt\"", "lines"), b"alpha\nbeta\n\ngamma\n");
    assert_eq!(
        run("path = \"in.bin\"\nformat = \"framed\"", "framed"),
        framed.as_bytes()
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// Runs a file source of `contents` (with `source` settings) into a pass-through and returns
/// the report.
fn run_file_source(name: &str, contents: &[u8], source: &str) -> RunReport {
    let dir = std::env::temp_dir().join(format!("sluicegate-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    std::fs::write(dir.join("in"), contents).expect("write");
    let origin = dir.join("p.toml");
    let toml = format!(
        "[source]\nkind = \"file\"\npath = \"in\"\n{source}\n{}[sink]\ncredits = 1\n",
        stage("map", a::PASSTHROUGH, "")
    );
    let spec = PipelineSpec::from_toml(&toml, &origin).expect("spec");
    let report = pipelines().build(&spec, &origin).expect("build").run();
    let _ = std::fs::remove_dir_all(dir);
    report
}

/// The failure of a run that must fail in the source with an I/O error.
fn source_failure(report: &RunReport) -> &str {
    let failure = report.failure.as_ref().expect("failure");
    assert_eq!(
        (failure.stage.as_str(), failure.kind.as_str()),
        ("source", "io")
    );
    &failure.message
}

#[test]
fn a_truncated_framed_input_file_is_an_error_of_the_source() {
    let report = run_file_source("trunc", &[9u8, 0, 0, 0, b'x'], "format = \"framed\"");
    let message = source_failure(&report);
    assert!(message.contains("inside a 9-byte record"), "{message}");
}

#[test]
fn an_input_line_longer_than_a_record_may_be_is_an_error_of_the_source() {
    let mut input = b"short\n".to_vec();
    input.resize(input.len() + (16 << 20) + 1, b'x'); // one byte over, and no newline
    let report = run_file_source("longline", &input, "");
    let message = source_failure(&report);
    assert!(message.contains("a line longer than"), "{message}");
    assert_eq!(report.sink.records, 1, "the line before it was delivered");
}

#[test]
fn a_stopped_run_closes_every_stage_and_says_so() {
    let mut p = pipeline(&counter_chain(100_000_000, &["a"], 4)).expect("build");
    let (stopper, probe) = (p.stopper(), p.probe());
    let report = std::thread::scope(|s| {
        s.spawn(|| {
            while probe.sink().records < 1000 {
                std::thread::yield_now();
            }
            stopper.stop();
        });
        p.run()
    });
    assert_eq!(report.status, RunStatus::Ok, "{report}");
    assert!(report.stopped);
    assert!(report.sink.records >= 1000 && report.sink.records < 100_000_000);
    for stage in p.stages() {
        assert_eq!(stage.state(), StageState::Closed, "{}", stage.name());
    }
}
