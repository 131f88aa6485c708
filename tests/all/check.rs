//! `sluicegate check` (the library behind the CLI): every example stage passes, and every
//! fixture gives the verdict its name promises. `foreach_fixture!` and `foreach_example!` make
//! a component without a test here a compile error. A stage that takes the fast path is
//! checked on both execution paths, which must give the same report (issue #13).

use std::path::Path;

use sluicegate::check::{CheckOptions, CheckReport, Verdict, check_file};
use sluicegate::{Call, Error, Limit, Rule};
use sluicegate_tests::{
    artifacts as a, check_on_both_paths, engine, foreach_example, foreach_fixture, within,
};

macro_rules! assert_test_exists {
    ($name:ident) => {
        #[expect(unused_imports, reason = "only checks that the test exists")]
        use self::$name as _;
    };
}
foreach_fixture!(assert_test_exists);
foreach_example!(assert_test_exists);

fn options(upstream: &[&str], config: &[(&str, &str)]) -> CheckOptions {
    config.iter().fold(
        CheckOptions::default().with_upstream(upstream.iter().copied()),
        |options, (k, v)| options.with_config(*k, *v),
    )
}

fn run(path: &str, upstream: &[&str], config: &[(&str, &str)]) -> CheckReport {
    check_on_both_paths(path, &options(upstream, config))
}

fn passes(report: &CheckReport) {
    assert!(
        report.passed(),
        "{}: {:?}",
        report.path.display(),
        report.first_failure()
    );
}

/// The first line that failed: its rule id and its error.
fn failure(report: &CheckReport) -> (&'static str, &Error) {
    let failed = report.first_failure().expect("a rule fails");
    (
        failed.id,
        failed
            .error
            .as_ref()
            .expect("a failed rule carries its error"),
    )
}

fn fails_on(report: &CheckReport, id: &str, rule: Rule) {
    let (failed, error) = failure(report);
    assert_eq!(failed, id, "{error}");
    assert_eq!(error.rule(), Some(rule), "{error}");
}

fn traps_in(report: &CheckReport, call: Call) {
    let (failed, error) = failure(report);
    assert_eq!(failed, "X1", "{error}");
    assert!(
        matches!(error, Error::Trap { call: c, .. } if *c == call),
        "{error}"
    );
}

#[test]
fn tick_source() {
    let report = run(a::TICK_SOURCE, &[], &[("records", "500")]);
    passes(&report);
    let credits = report.rule("C2").expect("C2 line");
    assert!(
        credits.evidence.contains("256: 500 records") && credits.evidence.contains("then none"),
        "{}",
        credits.evidence
    );
    assert_eq!(report.rule("E1").map(|r| r.verdict), Some(Verdict::Pass));
    assert_eq!(
        report.rule("R5").map(|r| r.verdict),
        Some(Verdict::Skip),
        "a source never pulls"
    );
}

#[test]
fn decode() {
    passes(&run(a::DECODE, &[a::TICK_SOURCE], &[]));
}

#[test]
fn symbol_filter() {
    passes(&run(
        a::SYMBOL_FILTER,
        &[a::TICK_SOURCE, a::DECODE],
        &[("symbols", "AAPL,MSFT")],
    ));
}

#[test]
fn vwap() {
    passes(&run(a::VWAP, &[a::TICK_SOURCE, a::DECODE], &[]));
}

#[test]
fn strategy() {
    passes(&run(
        a::STRATEGY,
        &[a::TICK_SOURCE, a::DECODE, a::VWAP],
        &[],
    ));
}

#[test]
fn counter() {
    passes(&run(a::COUNTER, &[], &[]));
}

#[test]
fn ends_on_key() {
    // Ending early is allowed: the kit's rules hold for a stage that never sees its key.
    passes(&run(a::ENDS_ON_KEY, &[a::COUNTER], &[("key", "never")]));
}

#[test]
fn field_key() {
    // A key stage is a plain 1:1 map: it passes the kit.
    passes(&run(a::FIELD_KEY, &[a::COUNTER], &[("field", "0")]));
}

#[test]
fn slow_key() {
    // Slow on the records it is told to be slow on, and otherwise a plain pass-through.
    passes(&run(
        a::SLOW_KEY,
        &[a::COUNTER],
        &[("key", "1"), ("spin", "1000")],
    ));
}

#[test]
fn stalls_on_key() {
    // A pass-through until it sees its key: the kit's records never hold it.
    passes(&run(a::STALLS_ON_KEY, &[a::COUNTER], &[("key", "never")]));
}

#[test]
fn flaky() {
    // A pass-through until its instance has passed `after` records: the kit's runs stay below.
    passes(&run(a::FLAKY, &[a::COUNTER], &[("after", "1000000")]));
}

#[test]
fn passthrough() {
    passes(&run(a::PASSTHROUGH, &[a::COUNTER], &[]));
}

#[test]
fn log_flood() {
    // Logging over budget is not a protocol violation: the host cuts and counts it.
    let report = run(a::LOG_FLOOD, &[], &[("lines", "2000")]);
    passes(&report);
    let k2 = report.rules.iter().find(|r| r.id == "K2").expect("K2 line");
    assert!(
        k2.evidence.contains("were suppressed"),
        "K2 says the stage logged over its budget: {}",
        k2.evidence
    );
}

#[test]
fn sleeper() {
    // Sleeping an hour through WASI, in virtual time: the sleep moves the stage's clock and
    // returns at once, so the kit finishes (it used to wait the hour in host code).
    let report = within(std::time::Duration::from_secs(120), || {
        run(a::SLEEPER, &[], &[("records", "3")])
    });
    passes(&report);
}

#[test]
fn scripted() {
    // Unscripted, the fuzzer's hostile stage is a well-behaved pass-through.
    passes(&run(a::SCRIPTED, &[a::COUNTER], &[]));
}

#[test]
fn trap_in_snapshot() {
    // The kit does not swap, so a broken snapshot is not seen here (the swap tests cover it).
    passes(&run(a::TRAP_IN_SNAPSHOT, &[a::COUNTER], &[]));
}

#[test]
fn pull_past_end() {
    passes(&run(a::PULL_PAST_END, &[a::COUNTER], &[]));
}

#[test]
fn finishes_in_priming() {
    passes(&run(a::FINISHES_IN_PRIMING, &[], &[]));
}

#[test]
fn data_on_priming() {
    fails_on(
        &run(a::DATA_ON_PRIMING, &[], &[]),
        "P1",
        Rule::DataOnPriming,
    );
}

#[test]
fn data_while_paused() {
    fails_on(
        &run(a::DATA_WHILE_PAUSED, &[], &[]),
        "S1",
        Rule::DataWhilePaused,
    );
}

#[test]
fn credits_exceeded() {
    fails_on(
        &run(a::CREDITS_EXCEEDED, &[], &[]),
        "C2",
        Rule::CreditsExceeded,
    );
}

#[test]
fn bad_framing() {
    fails_on(&run(a::BAD_FRAMING, &[], &[]), "C1", Rule::BadFraming);
}

#[test]
fn pull_while_closing() {
    fails_on(
        &run(a::PULL_WHILE_CLOSING, &[a::COUNTER], &[]),
        "R4",
        Rule::PullWhileClosing,
    );
}

#[test]
fn pull_without_demand() {
    fails_on(
        &run(a::PULL_WITHOUT_DEMAND, &[a::COUNTER], &[]),
        "R3",
        Rule::PullWithoutDemand,
    );
}

#[test]
fn trap_in_priming() {
    traps_in(&run(a::TRAP_IN_PRIMING, &[], &[]), Call::Prime);
}

#[test]
fn trap_in_close() {
    traps_in(&run(a::TRAP_IN_CLOSE, &[], &[]), Call::Close);
}

#[test]
fn trap_mid_stream() {
    traps_in(&run(a::TRAP_MID_STREAM, &[], &[]), Call::Resume);
}

fn limit_in(report: &CheckReport, limit: Limit) {
    let (failed, error) = failure(report);
    assert_eq!(failed, "K2", "{error}");
    assert!(
        matches!(error, Error::LimitExceeded { limit: l, .. } if *l == limit),
        "{error}"
    );
}

#[test]
fn loops_in_resume() {
    limit_in(&run(a::LOOPS_IN_RESUME, &[], &[]), Limit::Cpu);
}

#[test]
fn loops_in_priming() {
    limit_in(&run(a::LOOPS_IN_PRIMING, &[], &[]), Limit::Cpu);
}

#[test]
fn loops_in_close() {
    limit_in(&run(a::LOOPS_IN_CLOSE, &[a::COUNTER], &[]), Limit::Cpu);
}

#[test]
fn memory_bomb() {
    limit_in(&run(a::MEMORY_BOMB, &[a::COUNTER], &[]), Limit::Memory);
}

#[test]
fn deep_recursion() {
    limit_in(&run(a::DEEP_RECURSION, &[], &[]), Limit::Stack);
}

#[test]
fn huge_chunk() {
    limit_in(&run(a::HUGE_CHUNK, &[], &[]), Limit::ChunkBytes);
}

#[test]
fn probes_the_sandbox() {
    // Nosy but within the protocol: check passes it; the sandbox test checks what it saw.
    passes(&run(a::PROBES_THE_SANDBOX, &[], &[]));
}

#[test]
fn residue() {
    passes(&run(a::RESIDUE, &[], &[("mode", "read")]));
}

#[test]
fn poison_pill() {
    // Passes on input without the poison; traps on the poison record.
    passes(&run(a::POISON_PILL, &[a::COUNTER], &[("poison", "none")]));
    let report = run(a::POISON_PILL, &[a::COUNTER], &[("poison", "7")]);
    assert!(
        matches!(report.first_error(), Some(Error::Trap { .. })),
        "{:?}",
        report.first_error()
    );
}

#[test]
fn answers_empty_forever() {
    let report = run(a::ANSWERS_EMPTY_FOREVER, &[], &[]);
    assert!(
        matches!(report.first_error(), Some(Error::Stalled { .. })),
        "{:?}",
        report.first_error()
    );
}

#[test]
fn handle_spam() {
    traps_in(&run(a::HANDLE_SPAM, &[], &[]), Call::Resume);
}

#[test]
fn tag_v1() {
    passes(&run(a::TAG_V1, &[a::COUNTER], &[]));
}

#[test]
fn tag_v2() {
    passes(&run(a::TAG_V2, &[a::COUNTER], &[]));
}

#[test]
fn not_sticky() {
    // E1: the host never resumes an exhausted stage; the kit's probe does, and sees the zombie.
    let report = run(a::NOT_STICKY, &[], &[]);
    let (failed, error) = failure(&report);
    assert_eq!(failed, "E1", "{error}");
    assert!(
        matches!(
            error,
            Error::Nonconforming {
                check: "E1 none-sticky",
                ..
            }
        ),
        "{error}"
    );
}

fn deterministic(path: &str, upstream: &[&str]) -> CheckReport {
    check_on_both_paths(path, &options(upstream, &[]).deterministic(true))
}

#[test]
fn credit_echo() {
    // Within the protocol, so it passes when it claims nothing...
    let report = run(a::CREDIT_ECHO, &[], &[]);
    passes(&report);
    assert_eq!(report.rule("K1").map(|r| r.verdict), Some(Verdict::Skip));
    // ...but its output depends on the credits, so it fails K1 when it claims determinism.
    let report = deterministic(a::CREDIT_ECHO, &[]);
    let (failed, error) = failure(&report);
    assert_eq!(failed, "K1", "{error}");
    assert!(
        error.to_string().contains("at credits 256 and 1"),
        "{error}"
    );
}

#[test]
fn k1_passes_a_deterministic_map_at_every_credit_size() {
    let report = deterministic(a::DECODE, &[a::TICK_SOURCE]);
    passes(&report);
    let k1 = report.rule("K1").expect("K1 line");
    assert_eq!(k1.verdict, Verdict::Pass, "{}", k1.evidence);
    assert!(k1.evidence.contains("credits 1/7/256"), "{}", k1.evidence);
}

#[test]
fn r5_short_upstream_then_none() {
    let report = run(a::PASSTHROUGH, &[], &[]);
    passes(&report);
    let r5 = report.rule("R5").expect("R5 line");
    assert_eq!(r5.verdict, Verdict::Pass);
    assert!(
        r5.evidence.contains("ended after 3 record(s)")
            && r5.evidence.contains("answered 3 record(s), then none"),
        "{}",
        r5.evidence
    );
}

#[test]
fn every_rule_line_is_named_as_in_the_protocol_document() {
    let protocol = include_str!("../../docs/protocol.md");
    let report = run(a::COUNTER, &[], &[]);
    for rule in &report.rules {
        let needle = format!("| **{}** | `{}` |", rule.id, rule.name);
        assert!(
            protocol.contains(&needle),
            "docs/protocol.md lacks `{needle}`"
        );
    }
}

#[test]
fn k2_reports_memory_and_the_slowest_resume() {
    let report = run(a::VWAP, &[a::TICK_SOURCE, a::DECODE], &[]);
    let k2 = report.rule("K2").expect("K2 line");
    assert_eq!(k2.verdict, Verdict::Pass);
    assert!(
        k2.evidence.contains("peak linear memory") && !k2.evidence.contains("memory 0.0 MiB"),
        "{}",
        k2.evidence
    );
}

#[test]
fn py_symbol_filter() {
    // The Python stage (componentize-py) conforms, deterministically, fed raw text ticks.
    let options = options(&[a::TICK_SOURCE], &[("symbols", "AAPL,MSFT,NVDA")]).deterministic(true);
    let report = check_file(engine(), Path::new(a::PY_SYMBOL_FILTER), &options);
    passes(&report);
    // Swapped mid-stream for a fresh instance of itself, through the helper's `State`.
    let swapped = options.swappable(true);
    let report = check_file(engine(), Path::new(a::PY_SYMBOL_FILTER), &swapped);
    passes(&report);
    assert_eq!(report.rule("H1").map(|r| r.verdict), Some(Verdict::Pass));
    for id in ["E1", "R5", "K1"] {
        let line = report.rule(id).expect("line");
        assert!(
            line.verdict == Verdict::Pass || (id == "E1" && line.verdict == Verdict::Skip),
            "{id}: {}",
            line.evidence
        );
    }
}

#[test]
fn js_decode() {
    // The JavaScript stage (componentize-js) conforms, deterministically, and hands its state
    // over when swapped mid-stream (its own `state` export).
    let report = swappable(a::JS_DECODE, &[a::TICK_SOURCE], &[]);
    passes(&report);
    assert_eq!(report.rule("K1").map(|r| r.verdict), Some(Verdict::Pass));
    assert_eq!(report.rule("R5").map(|r| r.verdict), Some(Verdict::Pass));
    let h1 = report.rule("H1").expect("H1 line");
    assert_eq!(h1.verdict, Verdict::Pass, "{}", h1.evidence);
    assert!(
        !h1.evidence.contains("handed over 0 time"),
        "{}",
        h1.evidence
    );
}

fn swappable(path: &str, upstream: &[&str], config: &[(&str, &str)]) -> CheckReport {
    check_on_both_paths(
        path,
        &options(upstream, config)
            .deterministic(true)
            .swappable(true),
    )
}

#[test]
fn h1_a_stage_that_hands_over_its_state_gives_the_same_records_when_swapped() {
    let report = swappable(a::VWAP, &[a::TICK_SOURCE, a::DECODE], &[("window", "32")]);
    passes(&report);
    let line = report.rule("H1").expect("H1 line");
    assert_eq!(line.verdict, Verdict::Pass, "{}", line.evidence);
    assert!(
        line.evidence.contains("state handed over"),
        "{}",
        line.evidence
    );
    assert!(!line.evidence.contains("over 0 time"), "{}", line.evidence);
}

#[test]
fn h1_every_rust_example_stage_is_hot_swappable() {
    let cases: [(&str, &[&str]); 5] = [
        (a::TICK_SOURCE, &[]),
        (a::DECODE, &[a::TICK_SOURCE]),
        (a::SYMBOL_FILTER, &[a::TICK_SOURCE, a::DECODE]),
        (a::VWAP, &[a::TICK_SOURCE, a::DECODE]),
        (a::STRATEGY, &[a::TICK_SOURCE, a::DECODE, a::VWAP]),
    ];
    for (stage, upstream) in cases {
        let report = swappable(stage, upstream, &[]);
        passes(&report);
        let line = report.rule("H1").expect("H1 line");
        assert_eq!(line.verdict, Verdict::Pass, "{stage}: {}", line.evidence);
    }
}

#[test]
fn h1_a_source_that_keeps_its_position_to_itself_fails_when_swapped() {
    // The counter hands nothing over, so every new instance counts from 0 again.
    let report = swappable(a::COUNTER, &[], &[("records", "1000")]);
    let (failed, error) = failure(&report);
    assert_eq!(failed, "H1", "{error}");
    assert!(
        matches!(
            error,
            Error::Nonconforming {
                check: "H1 hot-swap",
                ..
            }
        ),
        "{error}"
    );
    assert!(
        error.to_string().contains("does not hand its state over"),
        "{error}"
    );
    assert_eq!(
        run(a::COUNTER, &[], &[("records", "1000")])
            .rule("H1")
            .map(|r| r.verdict),
        Some(Verdict::Skip),
        "not claimed, not checked"
    );
}

#[test]
fn h1_a_version_that_traps_while_handing_over_fails() {
    let report = swappable(a::TRAP_IN_SNAPSHOT, &[], &[]);
    let line = report.rule("H1").expect("H1 line");
    assert_eq!(line.verdict, Verdict::Fail, "{}", line.evidence);
    let error = line.error.as_ref().expect("error");
    assert!(
        error
            .to_string()
            .contains("snapshot is broken in this version"),
        "{error}"
    );
}
