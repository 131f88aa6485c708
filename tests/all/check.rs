//! `sluicegate check` (the library behind the CLI): every example stage passes, and every
//! fixture gives the verdict its name promises. `foreach_fixture!` and `foreach_example!` make
//! a component without a test here a compile error.

use std::path::Path;

use sluicegate::{CheckOptions, CheckReport, Error, Limit, Rule, check_file};
use sluicegate_tests::{artifacts as a, engine, foreach_example, foreach_fixture};

macro_rules! assert_test_exists {
    ($name:ident) => {
        #[expect(unused_imports, reason = "only checks that the test exists")]
        use self::$name as _;
    };
}
foreach_fixture!(assert_test_exists);
foreach_example!(assert_test_exists);

fn run(path: &str, upstream: &[&str], config: &[(&str, &str)]) -> CheckReport {
    let options = CheckOptions {
        upstream: upstream.iter().map(Into::into).collect(),
        config: config
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..CheckOptions::default()
    };
    check_file(engine(), Path::new(path), &options)
}

fn passes(report: &CheckReport) {
    assert!(
        report.passed(),
        "{}: {:?}",
        report.path.display(),
        report.first_error()
    );
}

fn fails_on(report: &CheckReport, step: &str, rule: Rule) {
    let failed = report
        .steps
        .iter()
        .find(|s| s.outcome.is_err())
        .expect("a step fails");
    assert_eq!(failed.name, step, "{:?}", failed.outcome);
    assert_eq!(
        report.first_error().and_then(Error::rule),
        Some(rule),
        "{:?}",
        report.first_error()
    );
}

fn traps_in(report: &CheckReport, step: &str) {
    let failed = report
        .steps
        .iter()
        .find(|s| s.outcome.is_err())
        .expect("a step fails");
    assert_eq!(failed.name, step);
    assert!(
        matches!(report.first_error(), Some(Error::Trap { .. })),
        "{:?}",
        report.first_error()
    );
}

#[test]
fn tick_source() {
    let report = run(a::TICK_SOURCE, &[], &[("records", "500")]);
    passes(&report);
    let resume = report
        .steps
        .iter()
        .find(|s| s.name == "resume")
        .expect("resume step");
    assert!(
        matches!(&resume.outcome, Ok(e) if e.contains("500 records") && e.contains("exhausted")),
        "{:?}",
        resume.outcome
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
fn passthrough() {
    passes(&run(a::PASSTHROUGH, &[a::COUNTER], &[]));
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
        "prime",
        Rule::DataOnPriming,
    );
}

#[test]
fn data_while_paused() {
    fails_on(
        &run(a::DATA_WHILE_PAUSED, &[], &[]),
        "pause",
        Rule::DataWhilePaused,
    );
}

#[test]
fn credits_exceeded() {
    fails_on(
        &run(a::CREDITS_EXCEEDED, &[], &[]),
        "resume",
        Rule::CreditsExceeded,
    );
}

#[test]
fn bad_framing() {
    fails_on(&run(a::BAD_FRAMING, &[], &[]), "resume", Rule::BadFraming);
}

#[test]
fn pull_while_closing() {
    fails_on(
        &run(a::PULL_WHILE_CLOSING, &[a::COUNTER], &[]),
        "close",
        Rule::PullWhileClosing,
    );
}

#[test]
fn pull_without_demand() {
    fails_on(
        &run(a::PULL_WITHOUT_DEMAND, &[a::COUNTER], &[]),
        "pause",
        Rule::PullWithoutDemand,
    );
}

#[test]
fn trap_in_priming() {
    traps_in(&run(a::TRAP_IN_PRIMING, &[], &[]), "prime");
}

#[test]
fn trap_in_close() {
    traps_in(&run(a::TRAP_IN_CLOSE, &[], &[]), "close");
}

#[test]
fn trap_mid_stream() {
    traps_in(&run(a::TRAP_MID_STREAM, &[], &[]), "resume");
}

fn limit_in(report: &CheckReport, step: &str, limit: Limit) {
    let failed = report
        .steps
        .iter()
        .find(|s| s.outcome.is_err())
        .expect("a step fails");
    assert_eq!(failed.name, step, "{:?}", failed.outcome);
    assert!(
        matches!(report.first_error(), Some(Error::LimitExceeded { limit: l, .. }) if *l == limit),
        "{:?}",
        report.first_error()
    );
}

#[test]
fn loops_in_resume() {
    limit_in(&run(a::LOOPS_IN_RESUME, &[], &[]), "resume", Limit::Cpu);
}

#[test]
fn loops_in_priming() {
    limit_in(&run(a::LOOPS_IN_PRIMING, &[], &[]), "prime", Limit::Cpu);
}

#[test]
fn loops_in_close() {
    limit_in(
        &run(a::LOOPS_IN_CLOSE, &[a::COUNTER], &[]),
        "close",
        Limit::Cpu,
    );
}

#[test]
fn memory_bomb() {
    limit_in(
        &run(a::MEMORY_BOMB, &[a::COUNTER], &[]),
        "resume",
        Limit::Memory,
    );
}

#[test]
fn deep_recursion() {
    limit_in(&run(a::DEEP_RECURSION, &[], &[]), "resume", Limit::Stack);
}

#[test]
fn huge_chunk() {
    limit_in(&run(a::HUGE_CHUNK, &[], &[]), "resume", Limit::ChunkBytes);
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
    traps_in(&run(a::HANDLE_SPAM, &[], &[]), "resume");
}

#[test]
fn tag_v1() {
    passes(&run(a::TAG_V1, &[a::COUNTER], &[]));
}

#[test]
fn tag_v2() {
    passes(&run(a::TAG_V2, &[a::COUNTER], &[]));
}
