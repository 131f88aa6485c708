//! One test per row of the state table in docs/protocol.md, on real components. Each test is
//! named after the rule it checks.

use std::sync::mpsc;

use sluicegate::{Call, Chunk, Error, IterUpstream, Rule, Stage, StageOptions, StageState};
use sluicegate_tests::{artifacts as a, capture_logs, component, drain};

fn counter(records: u32) -> Stage {
    component(a::COUNTER)
        .instantiate(
            "counter",
            StageOptions::new().config("records", records.to_string()),
        )
        .expect("instantiate counter")
}

fn stage(path: &str, name: &str, options: StageOptions) -> Stage {
    component(path)
        .instantiate(name, options)
        .expect("instantiate")
}

fn text(records: &[Vec<u8>]) -> Vec<String> {
    records
        .iter()
        .map(|r| String::from_utf8_lossy(r).into_owned())
        .collect()
}

fn numbers(range: std::ops::Range<u32>) -> Vec<String> {
    range.map(|n| n.to_string()).collect()
}

fn cleanup_lines(logs: &[(String, String)], stage: &str) -> usize {
    logs.iter()
        .filter(|(s, m)| s == stage && m == "cleanup ran")
        .count()
}

#[test]
fn p1_priming_enters_the_guest_and_suspends() {
    let s = counter(3);
    assert_eq!(s.state(), StageState::Created);
    assert!(s.prime().expect("prime"), "the stage is not finished");
    assert_eq!(s.state(), StageState::Suspended);
    let stats = s.stats();
    assert_eq!((stats.resumes_entered, stats.records), (1, 0));
}

#[test]
fn p1_priming_answered_none_exhausts() {
    let s = stage(a::FINISHES_IN_PRIMING, "done", StageOptions::new());
    assert!(!s.prime().expect("prime"));
    assert_eq!(s.state(), StageState::Exhausted);
}

#[test]
fn p1_data_on_priming_faults() {
    let s = stage(a::DATA_ON_PRIMING, "eager", StageOptions::new());
    let err = s.prime().expect_err("records on priming");
    assert!(
        matches!(&err, Error::ProtocolViolation { stage, rule: Rule::DataOnPriming, .. } if stage == "eager"),
        "{err}"
    );
    assert_eq!(s.state(), StageState::Faulted);
    assert_eq!(s.stats().records, 0, "C3: nothing delivered");
}

#[test]
fn p2_resume_before_priming_is_refused_without_entering() {
    let s = counter(3);
    let err = s.resume(5).expect_err("not primed");
    assert!(
        matches!(&err, Error::NotPrimed { stage, credits: 5 } if stage == "counter"),
        "{err}"
    );
    assert_eq!(s.stats().resumes_entered, 0, "the guest was not entered");
    assert_eq!(s.state(), StageState::Created, "still unprimed");
    // And it can still be primed and used.
    s.prime().expect("prime after refusal");
    assert_eq!(text(&drain(&s, 10).expect("drain")), numbers(0..3));
}

#[test]
fn p3_close_unprimed_enters_nothing() {
    let s = counter(3);
    let (closed, logs) = capture_logs(|| s.close());
    closed.expect("close");
    assert_eq!(s.state(), StageState::Closed);
    assert_eq!(s.stats().closes_entered, 0);
    assert_eq!(cleanup_lines(&logs, "counter"), 0);
}

#[test]
fn s1_pause_answers_empty_and_loses_nothing() {
    let s = counter(5);
    s.prime().expect("prime");
    let paused = s.resume(0).expect("pause");
    assert_eq!(paused, Some(Chunk::empty()));
    assert_eq!(s.state(), StageState::Suspended);
    assert_eq!(text(&drain(&s, 2).expect("drain")), numbers(0..5));
}

#[test]
fn s1_data_while_paused_faults() {
    let s = stage(a::DATA_WHILE_PAUSED, "restless", StageOptions::new());
    s.prime().expect("prime");
    let err = s.resume(0).expect_err("records on a pause");
    assert_eq!(err.rule(), Some(Rule::DataWhilePaused), "{err}");
    assert_eq!(s.state(), StageState::Faulted);
}

#[test]
fn s2_resume_answers_at_most_credits_in_order() {
    let s = counter(10);
    s.prime().expect("prime");
    let mut sizes = Vec::new();
    let mut all = Vec::new();
    while let Some(chunk) = s.resume(3).expect("resume") {
        sizes.push(chunk.len());
        all.extend(chunk.records().map(<[u8]>::to_vec));
    }
    assert_eq!(sizes, [3, 3, 3, 1]);
    assert_eq!(text(&all), numbers(0..10));
    assert_eq!(s.state(), StageState::Exhausted);
    assert_eq!(s.stats().records, 10);
}

#[test]
fn s2_c2_more_records_than_credits_faults_and_delivers_nothing() {
    let s = stage(a::CREDITS_EXCEEDED, "greedy", StageOptions::new());
    s.prime().expect("prime");
    let err = s.resume(4).expect_err("5 records for 4 credits");
    assert!(
        matches!(&err, Error::ProtocolViolation { rule: Rule::CreditsExceeded, detail, .. } if detail.contains("resume(4)")),
        "{err}"
    );
    assert_eq!(s.stats().records, 0, "C3: nothing delivered");
    assert_eq!(s.state(), StageState::Faulted);
}

#[test]
fn s2_c1_broken_framing_faults_and_delivers_nothing() {
    let s = stage(a::BAD_FRAMING, "garbled", StageOptions::new());
    s.prime().expect("prime");
    let err = s.resume(10).expect_err("broken framing");
    assert_eq!(err.rule(), Some(Rule::BadFraming), "{err}");
    assert!(err.to_string().contains("announces 100 bytes"), "{err}");
    assert_eq!(s.stats().records, 0, "C3: not even the good first record");
}

#[test]
fn s3_close_runs_cleanup_once_mid_stream() {
    let s = counter(10);
    s.prime().expect("prime");
    s.resume(2).expect("resume");
    let (closed, logs) = capture_logs(|| s.close());
    closed.expect("close");
    assert_eq!(cleanup_lines(&logs, "counter"), 1);
    assert_eq!(s.state(), StageState::Closed);
    assert_eq!(s.stats().closes_entered, 1);
}

#[test]
fn s3_close_while_paused_runs_cleanup_once() {
    let s = counter(10);
    s.prime().expect("prime");
    s.resume(0).expect("pause");
    let (closed, logs) = capture_logs(|| s.close());
    closed.expect("close");
    assert_eq!(cleanup_lines(&logs, "counter"), 1);
}

#[test]
fn r1_a_running_stage_cannot_be_entered_again() {
    // The stage's upstream blocks inside the first call until the test has tried to re-enter.
    let (inside_tx, inside_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let mut calls = 0;
    let upstream = move |demand: sluicegate::Demand| {
        let credits = demand.records;
        calls += 1;
        if calls == 1 {
            let _ = inside_tx.send(());
            let _ = release_rx.recv();
        }
        Ok(Some(Chunk::from_records(
            (0..credits).map(|i| i.to_string()),
        )))
    };
    let s = stage(
        a::PASSTHROUGH,
        "busy",
        StageOptions::new().upstream(upstream),
    );
    s.prime().expect("prime");
    let running = s.clone();
    let worker = std::thread::spawn(move || running.resume(2));
    inside_rx.recv().expect("the stage is inside resume");
    assert_eq!(s.state(), StageState::Running);
    assert!(matches!(s.resume(1), Err(Error::AlreadyRunning { .. })));
    assert!(matches!(s.close(), Err(Error::AlreadyRunning { .. })));
    release_tx.send(()).expect("release");
    let chunk = worker.join().expect("worker").expect("first resume");
    assert_eq!(chunk.map(|c| c.len()), Some(2));
    assert_eq!(
        s.stats().resumes_entered,
        2,
        "prime + one resume: the refused calls never entered"
    );
    s.close().expect("close after the call finished");
}

/// R1 refuses a second *call*, not a glance: another thread reading the stage's state and
/// counters as fast as it can (a progress display, `--watch`) never makes a call fail.
#[test]
fn r1_observers_never_make_a_call_refused() {
    let s = counter(u32::MAX);
    s.prime().expect("prime");
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (observed, stop) = (s.clone(), done.clone());
    let observer = std::thread::spawn(move || {
        let mut glances = 0u64;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let _ = observed.state();
            let _ = observed.stats();
            let _ = observed.recovered_faults();
            glances += 1;
        }
        glances
    });
    let mut records = 0;
    for _ in 0..20_000 {
        let chunk = s.resume(1).expect("no call is refused while only observed");
        records += chunk.map_or(0, |c| c.len());
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let glances = observer.join().expect("observer");
    assert!(glances > 0, "the observer ran");
    assert_eq!(records, 20_000);
    s.close().expect("close");
}

#[test]
fn r2_pull_is_answered_by_resuming_upstream() {
    let source = counter(10);
    let map = stage(
        a::PASSTHROUGH,
        "map",
        StageOptions::new().upstream(source.clone()),
    );
    source.prime().expect("prime source");
    map.prime().expect("prime map");
    assert_eq!(text(&drain(&map, 4).expect("drain")), numbers(0..10));
    let up = source.stats();
    assert_eq!(
        up.records, 10,
        "every record went through the upstream stage"
    );
    assert!(
        up.chunks >= 3,
        "demand of 4 credits was delegated: {} chunks",
        up.chunks
    );
}

#[test]
fn r3_pause_propagates_upstream_as_pull_zero() {
    let source = counter(10);
    let map = stage(
        a::PASSTHROUGH,
        "map",
        StageOptions::new().upstream(source.clone()),
    );
    source.prime().expect("prime source");
    map.prime().expect("prime map");
    let before = source.stats().resumes_entered;
    assert_eq!(map.resume(0).expect("pause"), Some(Chunk::empty()));
    let after = source.stats();
    assert_eq!(
        after.resumes_entered,
        before + 1,
        "the pause reached upstream"
    );
    assert_eq!(after.records, 0, "no record moved during the pause");
}

#[test]
fn r3_pull_without_demand_faults() {
    let source = counter(10);
    let s = stage(
        a::PULL_WITHOUT_DEMAND,
        "eager-puller",
        StageOptions::new().upstream(source.clone()),
    );
    source.prime().expect("prime source");
    s.prime().expect("prime");
    let err = s.resume(0).expect_err("pulled records on a pause");
    assert!(
        matches!(&err, Error::ProtocolViolation { stage, rule: Rule::PullWithoutDemand, .. } if stage == "eager-puller"),
        "{err}"
    );
    assert_eq!(
        source.stats().records,
        0,
        "upstream was not asked for records"
    );
}

#[test]
fn r4_pull_while_closing_is_refused_and_reported_after_cleanup() {
    let source = counter(10);
    let s = stage(
        a::PULL_WHILE_CLOSING,
        "clingy",
        StageOptions::new().upstream(source.clone()),
    );
    source.prime().expect("prime source");
    s.prime().expect("prime");
    assert_eq!(s.resume(2).expect("resume").map(|c| c.len()), Some(2));
    let (closed, logs) = capture_logs(|| s.close());
    let err = closed.expect_err("pulled while closing");
    assert_eq!(err.rule(), Some(Rule::PullWhileClosing), "{err}");
    let messages: Vec<&str> = logs
        .iter()
        .filter(|(stage, _)| stage == "clingy")
        .map(|(_, m)| m.as_str())
        .collect();
    assert_eq!(
        messages,
        ["pull while closing answered none", "cleanup finished"]
    );
    assert_eq!(
        source.stats().records,
        2,
        "upstream was not resumed by the refused pull"
    );
    assert_eq!(s.state(), StageState::Faulted);
}

#[test]
fn r5_no_pull_reaches_upstream_after_it_answered_none() {
    let pulls = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let counted = pulls.clone();
    let mut records = IterUpstream::new((0..5).map(|i| i.to_string()));
    let upstream = move |demand: sluicegate::Demand| {
        counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        sluicegate::Upstream::pull(&mut records, demand)
    };
    let s = stage(
        a::PULL_PAST_END,
        "persistent",
        StageOptions::new().upstream(upstream),
    );
    s.prime().expect("prime");
    let out = drain(&s, 2).expect("drain");
    assert_eq!(
        text(&out),
        ["5"],
        "it saw 5 records and nothing past the end"
    );
    // 2 + 2 + 1 records, then the one `none`; the three extra pulls never left the host.
    assert_eq!(pulls.load(std::sync::atomic::Ordering::SeqCst), 4);
}

#[test]
fn e1_exhausted_stage_answers_none_without_entering() {
    let s = counter(2);
    s.prime().expect("prime");
    drain(&s, 5).expect("drain");
    let entered = s.stats().resumes_entered;
    assert_eq!(s.resume(5).expect("resume"), None);
    assert_eq!(s.resume(0).expect("pause"), None);
    assert_eq!(s.stats().resumes_entered, entered);
}

#[test]
fn e2_close_after_exhaustion_runs_cleanup_once() {
    let s = counter(2);
    s.prime().expect("prime");
    drain(&s, 5).expect("drain");
    let (closed, logs) = capture_logs(|| s.close());
    closed.expect("close");
    assert_eq!(cleanup_lines(&logs, "counter"), 1);
    assert_eq!(s.state(), StageState::Closed);
}

#[test]
fn d1_resume_after_close_is_refused() {
    let s = counter(2);
    s.prime().expect("prime");
    s.close().expect("close");
    assert!(matches!(s.resume(1), Err(Error::Closed { .. })));
    assert!(matches!(s.resume(0), Err(Error::Closed { .. })));
}

#[test]
fn d2_close_is_idempotent() {
    let s = counter(2);
    s.prime().expect("prime");
    let (closed, logs) = capture_logs(|| (s.close(), s.close(), s.close()));
    assert!(closed.0.is_ok() && closed.1.is_ok() && closed.2.is_ok());
    assert_eq!(cleanup_lines(&logs, "counter"), 1);
    assert_eq!(s.stats().closes_entered, 1);
}

#[test]
fn f1_faulted_stage_refuses_calls_with_the_original_cause() {
    let s = stage(a::TRAP_MID_STREAM, "fragile", StageOptions::new());
    s.prime().expect("prime");
    let first = s.resume(2).expect("1st").expect("a chunk");
    let first: Vec<Vec<u8>> = first.records().map(<[u8]>::to_vec).collect();
    assert_eq!(text(&first), numbers(0..2));
    s.resume(2).expect("2nd resume");
    let err = s.resume(2).expect_err("3rd resume traps");
    assert!(
        matches!(
            &err,
            Error::Trap {
                call: Call::Resume,
                ..
            }
        ),
        "{err}"
    );
    let entered = s.stats().resumes_entered;
    let again = s.resume(1).expect_err("refused");
    match &again {
        Error::Faulted { stage, cause } => {
            assert_eq!(stage, "fragile");
            assert!(matches!(
                **cause,
                Error::Trap {
                    call: Call::Resume,
                    ..
                }
            ));
        }
        other => panic!("expected Faulted, got {other}"),
    }
    assert_eq!(s.stats().resumes_entered, entered, "not entered again");
    assert_eq!(s.stats().records, 4, "the two good chunks were delivered");
}

#[test]
fn f2_close_on_faulted_stage_cannot_run_cleanup() {
    let s = stage(a::TRAP_MID_STREAM, "fragile", StageOptions::new());
    s.prime().expect("prime");
    for _ in 0..3 {
        let _ = s.resume(1);
    }
    let err = s.close().expect_err("cannot clean up");
    assert!(matches!(err, Error::Faulted { .. }), "{err}");
    assert_eq!(s.stats().closes_entered, 0);
}

#[test]
fn x1_trap_in_priming_names_the_call_and_quotes_the_guest() {
    let s = stage(a::TRAP_IN_PRIMING, "no-market", StageOptions::new());
    let err = s.prime().expect_err("init fails");
    match &err {
        Error::Trap {
            stage,
            call: Call::Prime,
            message,
        } => {
            assert_eq!(stage, "no-market");
            assert!(message.contains("no market connection"), "{message}");
        }
        other => panic!("expected a trap in priming, got {other}"),
    }
    assert_eq!(s.state(), StageState::Faulted);
}

#[test]
fn x1_trap_in_close_is_reported() {
    let s = stage(a::TRAP_IN_CLOSE, "sloppy", StageOptions::new());
    s.prime().expect("prime");
    assert_eq!(drain(&s, 2).expect("drain").len(), 5);
    let err = s.close().expect_err("close traps");
    assert!(
        matches!(&err, Error::Trap { call: Call::Close, message, .. } if message.contains("lost the order book")),
        "{err}"
    );
    assert_eq!(s.state(), StageState::Faulted);
}

#[test]
fn x4_upstream_fault_fails_the_resume_but_not_the_stage() {
    let source = stage(a::TRAP_MID_STREAM, "fragile", StageOptions::new());
    let map = stage(
        a::PASSTHROUGH,
        "map",
        StageOptions::new().upstream(source.clone()),
    );
    source.prime().expect("prime source");
    map.prime().expect("prime map");
    assert_eq!(map.resume(3).expect("1st").map(|c| c.len()), Some(3));
    assert_eq!(map.resume(3).expect("2nd").map(|c| c.len()), Some(3));
    let delivered = map.stats().records;
    let err = map.resume(3).expect_err("upstream traps");
    match &err {
        Error::UpstreamFaulted { stage, cause } => {
            assert_eq!(stage, "map");
            assert_eq!(cause.stage(), "fragile");
        }
        other => panic!("expected UpstreamFaulted, got {other}"),
    }
    assert_eq!(map.stats().records, delivered, "nothing more was delivered");
    assert_ne!(map.state(), StageState::Faulted);
    let (closed, logs) = capture_logs(|| map.close());
    closed.expect("the map still closes cleanly");
    assert_eq!(cleanup_lines(&logs, "map"), 1);
}
