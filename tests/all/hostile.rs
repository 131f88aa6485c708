//! A hostile stage author's side doors into the host, each closed (docs/security.md, the
//! checklist rows 41 onwards): waits in WASI, greedy pulls, memory spread over several
//! memories and tables, supervision that loops, swaps that skip a cleanup or wait on
//! themselves, cycles, an undersized pipeline stack, forged log lines, costly log floods.

use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use market_data::Checksum;
use sluicegate::config::PipelineSpec;
use sluicegate::limits::DEFAULT_MAX_PULL_RECORDS;
use sluicegate::report::{RunReport, RunStatus};
use sluicegate::{
    Call, Capabilities, Chunk, Demand, Engine, Error, FaultPolicy, IterUpstream, Limit, Limits,
    Pipeline, Stage, StageOptions, StageState,
};
use sluicegate_tests::{
    ANSWER_EMPTY, artifacts as a, capture_logs, component, drain, engine, pipelines, wat_component,
    wat_logging_stage, within,
};

/// Generous: what these calls need is milliseconds; what they guard against is an hour.
const HANG: Duration = Duration::from_secs(120);

fn run(toml: &str) -> (RunReport, Vec<(String, String)>) {
    let origin = Path::new(env!("CARGO_MANIFEST_DIR")).join("hostile.toml");
    let spec = PipelineSpec::from_toml(toml, &origin).expect("valid spec");
    let mut pipeline = pipelines().build(&spec, &origin).expect("build");
    capture_logs(move || pipeline.run())
}

fn stage_toml(name: &str, path: &str, extra: &str) -> String {
    format!("[[stage]]\nname = {name:?}\ncomponent = {path:?}\n{extra}\n")
}

fn scripted(name: &str, options: StageOptions, script: &[(&str, &str)]) -> Stage {
    let options = script.iter().fold(options, |options, (key, value)| {
        options.config(*key, *value)
    });
    component(a::SCRIPTED)
        .instantiate(name, options)
        .expect("instantiate")
}

fn numbers(n: u32) -> IterUpstream<std::vec::IntoIter<String>, String> {
    IterUpstream::new(
        (0..n)
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .into_iter(),
    )
}

fn text(records: &[Vec<u8>]) -> Vec<String> {
    records
        .iter()
        .map(|r| String::from_utf8_lossy(r).into_owned())
        .collect()
}

fn wall_limits(wall: Duration) -> Limits {
    Limits::default().with_wall_per_call(wall)
}

// --- 1. Waits in WASI --------------------------------------------------------------------

#[test]
fn wall_a_sleep_in_virtual_time_returns_at_once_and_moves_the_stage_clock() {
    for how in ["sleep", "poll"] {
        let sleeper = component(a::SLEEPER)
            .instantiate(
                "sleeper",
                StageOptions::new()
                    .config("how", how)
                    .limits(wall_limits(Duration::from_millis(50))),
            )
            .expect("instantiate");
        let out = within(HANG, move || {
            sleeper.prime().expect("prime");
            drain(&sleeper, 1)
        })
        .expect("an hour of virtual sleep is within every budget");
        assert_eq!(
            text(&out),
            ["3600"],
            "{how}: the stage's clock moved by the hour"
        );
    }
}

#[test]
fn wall_a_wait_with_real_time_is_cut_off_at_the_wall_budget() {
    for how in ["sleep", "poll"] {
        let sleeper = component(a::SLEEPER)
            .instantiate(
                "sleeper",
                StageOptions::new()
                    .config("how", how)
                    .capabilities(Capabilities::none().with_real_time_and_random(true))
                    .limits(wall_limits(Duration::from_millis(100))),
            )
            .expect("instantiate");
        let probe = sleeper.clone();
        let err = within(HANG, move || {
            probe.prime().expect("prime");
            probe.resume(1).expect_err("an hour of real sleep")
        });
        assert!(
            matches!(&err, Error::LimitExceeded { stage, limit: Limit::Wall, call: Call::Resume, detail }
                if stage == "sleeper" && detail.contains("100ms")),
            "{how}: {err}"
        );
        assert_eq!(sleeper.state(), StageState::Faulted);
    }
}

#[test]
fn wall_a_pipeline_file_sets_the_wall_budget_and_the_run_names_it() {
    let toml = stage_toml(
        "napper",
        a::SLEEPER,
        "real_time_and_random = true\nlimits = { wall_ms = 50 }\nconfig = { how = \"poll\" }",
    ) + &stage_toml("after", a::PASSTHROUGH, "")
        + "[sink]\ncredits = 1\n";
    let (report, logs) = within(HANG, move || run(&toml));
    assert_eq!(report.status, RunStatus::Failed);
    let failure = report.failure.as_ref().expect("failed");
    assert_eq!(failure.stage, "napper");
    assert!(
        failure.message.contains("limit exceeded: wall"),
        "{}",
        failure.message
    );
    assert!(
        logs.iter().any(|(s, m)| s == "after" && m == "cleanup ran"),
        "the others are closed cleanly"
    );
}

#[test]
fn wall_virtual_time_moves_to_the_earliest_deadline_waited_on() {
    // poll on deadlines of 1 s and 1 h: virtual time moves to the first, which alone is ready.
    let racer = component(a::SLEEPER)
        .instantiate("racer", StageOptions::new().config("how", "race"))
        .expect("instantiate");
    let out = within(HANG, move || {
        racer.prime().expect("prime");
        drain(&racer, 1)
    })
    .expect("drain");
    assert_eq!(text(&out), ["ready=[0] after=1"]);
}

#[test]
fn wall_a_state_handoff_waits_no_longer_than_the_handoff_budget() {
    // The running version sleeps (in real time) while handing its state over: its wait is cut
    // at the handoff budget (20 ms), not the call's wall budget (a minute).
    let limits = Limits::default()
        .with_wall_per_call(Duration::from_secs(60))
        .with_cpu_per_handoff(Duration::from_millis(20));
    let old = scripted(
        "s",
        StageOptions::new()
            .upstream(numbers(20))
            .limits(limits)
            .capabilities(Capabilities::none().with_real_time_and_random(true)),
        &[("resume", "pull=10"), ("snapshot", "sleep=3600")],
    );
    old.prime().expect("prime");
    assert_eq!(old.resume(2).expect("two").map(|c| c.len()), Some(2));
    let probe = old.clone();
    let report = within(HANG, move || probe.swap(&component(a::PASSTHROUGH))).expect("stands");
    let lost = report.state_lost.as_deref().unwrap_or_default();
    assert!(
        lost.contains("limit exceeded: wall") && lost.contains("20ms"),
        "{lost}"
    );
    assert_eq!(
        report.old_cleanup_error, None,
        "the old version's store is dead: no cleanup is attempted in it (F2)"
    );
}

// --- 2. Greedy pulls -----------------------------------------------------------------------

#[test]
fn pull_a_greedy_pull_is_clamped_before_the_upstream_produces_anything() {
    let largest = Arc::new(AtomicU32::new(0));
    let seen = largest.clone();
    // An endless upstream: it answers whatever it is asked for.
    let endless = move |demand: Demand| {
        seen.fetch_max(demand.records, Ordering::Relaxed);
        Ok(Some(Chunk::from_records(
            (0..demand.records.min(1 << 20)).map(|i| i.to_string()),
        )))
    };
    let greedy = scripted(
        "greedy",
        StageOptions::new().upstream(endless),
        &[("resume", "pull=4294967295")],
    );
    let chunk = within(HANG, move || {
        greedy.prime().expect("prime");
        greedy.resume(3).expect("resume")
    });
    assert_eq!(chunk.map(|c| c.len()), Some(3));
    assert_eq!(
        largest.load(Ordering::Relaxed),
        DEFAULT_MAX_PULL_RECORDS,
        "the pull of u32::MAX reached the upstream clamped"
    );
}

#[test]
fn pull_what_a_clamp_leaves_upstream_comes_with_the_next_pull() {
    // A greedy stage over the host's feed: every pull asks for u32::MAX records, every record
    // arrives once, in order, and no pull asked the source for more than the clamp.
    const TICKS: u64 = 150_000;
    let toml = format!(
        "[source]\nkind = \"generate\"\nrecords = {TICKS}\n\n{}[sink]\ncredits = 4096\n",
        stage_toml(
            "greedy",
            a::SCRIPTED,
            &format!(
                "config = {{ resume = \"{}\" }}",
                ["pull=4294967295"; 8].join(",")
            )
        )
    );
    let (report, _) = run(&toml);
    assert_eq!(report.status, RunStatus::Ok, "{report}");
    assert_eq!(report.sink.records, TICKS);
    let mut feed = market_data::Feed::new(market_data::FeedConfig {
        records: TICKS,
        ..market_data::FeedConfig::default()
    });
    let (mut checksum, mut line) = (Checksum::default(), Vec::new());
    while feed.next_into(&mut line) {
        checksum.add(&line);
    }
    assert_eq!(report.sink.checksum, format!("{:016x}", checksum.value()));
    let source = report
        .hops
        .iter()
        .find(|h| h.name == "source")
        .expect("source hop");
    assert!(
        source.credits_granted <= source.resumes * u64::from(DEFAULT_MAX_PULL_RECORDS),
        "{} credits over {} pulls",
        source.credits_granted,
        source.resumes
    );
}

#[test]
fn pull_a_pull_is_held_to_the_pullers_chunk_bytes() {
    let asked = Arc::new(Mutex::new(Vec::new()));
    let log = asked.clone();
    let mut big = IterUpstream::new((0..200).map(|_| vec![b'r'; 10_000]));
    let upstream = move |demand: Demand| {
        let answer = sluicegate::Upstream::pull(&mut big, demand);
        if let (Ok(Some(chunk)), Ok(mut log)) = (&answer, log.lock()) {
            log.push((demand.bytes, chunk.as_bytes().len()));
        }
        answer
    };
    let limits = Limits::default().with_max_chunk_bytes(64 << 10);
    let greedy = scripted(
        "greedy",
        StageOptions::new().upstream(upstream).limits(limits),
        &[("resume", "pull=4294967295")],
    );
    greedy.prime().expect("prime");
    let out = drain(&greedy, 5).expect("drain");
    assert_eq!(out.len(), 200, "nothing is lost to the byte clamp");
    let asked = asked.lock().expect("log").clone();
    assert!(!asked.is_empty());
    for (bytes, answered) in asked {
        assert_eq!(bytes, 64 << 10, "the puller's max_chunk_bytes");
        assert!(answered <= bytes, "{answered} bytes answered to {bytes}");
    }
}

#[test]
fn pull_what_a_failing_call_pulled_is_kept_only_up_to_the_memory_budget() {
    // Under `restart`, the input of each call is kept to be quarantined if the call fails. A
    // call that pulls 40 MB and throws it away, then traps, must not make the host keep 40 MB
    // (nor more, without end): only up to the stage's memory budget (8 MiB here) is kept and
    // written to the dead letters; the rest is counted.
    const RECORDS: u32 = 400_000;
    let dead = std::env::temp_dir().join(format!("sluicegate-kept-{}.bin", std::process::id()));
    let file = std::fs::File::create(&dead).expect("dead-letter file");
    let limits = Limits::default().with_memory_bytes(8 << 20);
    let big = IterUpstream::new((0..RECORDS).map(|i| format!("{i:0>96}")));
    let hog = scripted(
        "hog",
        StageOptions::new()
            .upstream(big)
            .limits(limits)
            .on_fault(FaultPolicy::Restart {
                max_restarts: 1,
                backoff: Duration::ZERO,
            })
            .dead_letter(file),
        &[("resume", "drain+trap")],
    );
    hog.prime().expect("prime");
    // The restarted instance runs the same script: it traps again, and that fault is final.
    let after = hog.resume(4);
    assert!(matches!(after, Err(Error::Trap { .. })), "{after:?}");
    let stats = hog.stats();
    assert_eq!(stats.restarts, 1);
    assert_eq!(
        stats.quarantined_records,
        u64::from(RECORDS),
        "every record counted"
    );
    let written = std::fs::metadata(&dead).map(|m| m.len()).unwrap_or(0);
    let _ = std::fs::remove_file(&dead);
    assert!(
        written > 0 && written <= 8 << 20,
        "{written} bytes kept and written: at most the 8 MiB budget"
    );
}

#[test]
fn pull_a_bypassed_stage_s_pulls_are_clamped_and_pauses_passed_on() {
    let asked = Arc::new(Mutex::new(Vec::new()));
    let log = asked.clone();
    let mut records = numbers(100_000);
    let upstream = move |demand: Demand| {
        if let Ok(mut log) = log.lock() {
            log.push(demand);
        }
        sluicegate::Upstream::pull(&mut records, demand)
    };
    let limits = Limits::default()
        .with_max_pull_records(1000)
        .with_max_chunk_bytes(64 << 10);
    let stage = component(a::POISON_PILL)
        .instantiate(
            "optional",
            StageOptions::new()
                .config("poison", "1")
                .limits(limits)
                .on_fault(FaultPolicy::Bypass)
                .upstream(upstream),
        )
        .expect("instantiate");
    stage.prime().expect("prime");
    let first = stage.resume(4).expect("bypassed after the poison");
    assert_eq!(first.map(|c| c.len()), Some(4));
    assert_eq!(stage.state(), StageState::Bypassed);
    asked.lock().expect("log").clear();
    stage.resume(0).expect("a pause");
    stage.resume(u32::MAX).expect("a greedy grant");
    let asked = asked.lock().expect("log").clone();
    assert_eq!(asked[0].records, 0, "the pause went upstream: {asked:?}");
    assert!(
        asked[1..]
            .iter()
            .all(|d| d.records <= 1000 && d.bytes == 64 << 10),
        "{asked:?}"
    );
}

// --- 3. One memory budget per stage --------------------------------------------------------

/// A stage whose component holds `memories` core modules, each with a memory of `pages`.
fn many_memories(memories: usize, pages: u32) -> String {
    let extra: String = (0..memories.saturating_sub(1))
        .map(|i| {
            format!("(core module $x{i} (memory {pages})) (core instance (instantiate $x{i}))\n")
        })
        .collect();
    sluicegate_tests::wat_stage(pages, "", sluicegate_tests::ANSWER_EMPTY).replacen(
        "(core instance $i (instantiate $m))",
        &format!("{extra}(core instance $i (instantiate $m))"),
        1,
    )
}

#[test]
fn memory_the_budget_is_one_for_all_the_memories_of_a_stage() {
    // Three memories of 30 MiB each: each is under a 64 MiB budget, together they are not.
    let loaded = engine()
        .load_bytes("hoarder", many_memories(3, 480).as_bytes())
        .expect("loads");
    let err = loaded
        .instantiate("hoarder", StageOptions::new())
        .expect_err("90 MiB in three memories");
    assert!(
        matches!(&err, Error::LimitExceeded { stage, limit: Limit::Memory, call: Call::Instantiate, detail }
            if stage == "hoarder" && detail.contains("all its linear memories and tables")),
        "{err}"
    );
    // One memory of the same size is fine.
    let single = engine()
        .load_bytes("single", many_memories(1, 480).as_bytes())
        .expect("loads")
        .instantiate("single", StageOptions::new())
        .expect("30 MiB is within the budget");
    assert!(single.prime().expect("primes"));
}

#[test]
fn memory_table_growth_counts_against_the_same_budget() {
    // 60 MiB of memory, then a table grown by a million elements (8 MiB): over 64 MiB.
    let wat = wat_component(
        &format!(
            r#"(memory (export "memory") 960)
    (table $t 1 funcref)
    (func (export "realloc") (param i32 i32 i32 i32) (result i32) (i32.const 1024))
    (func (export "resume") (param i32) (result i32)
      (if (i32.eq (table.grow $t (ref.null func) (i32.const 1000000)) (i32.const -1))
        (then unreachable))
      {ANSWER_EMPTY})
    (func (export "close"))"#
        ),
        "",
    );
    let stage = engine()
        .load_bytes("tables", wat.as_bytes())
        .expect("loads")
        .instantiate("tables", StageOptions::new())
        .expect("60 MiB instantiates");
    let err = stage.prime().expect_err("the table pushes it over");
    assert!(
        matches!(&err, Error::LimitExceeded { limit: Limit::Memory, detail, .. } if detail.contains("table growth")),
        "{err}"
    );
}

#[test]
fn fused_only_load_fused_makes_a_fused_stage_never_export_names() {
    // The generator exported a second time under a fused inner stage's name. Only
    // Engine::load_fused makes a fused stage: the host must prime and close it once, not
    // twice (the guest traps on a second close).
    let wat = wat_component(
        &format!(
            r#"(memory (export "memory") 1)
    (global $closes (mut i32) (i32.const 0))
    (func (export "realloc") (param i32 i32 i32 i32) (result i32) (i32.const 1024))
    (func (export "resume") (param i32) (result i32) {ANSWER_EMPTY})
    (func (export "close")
      (global.set $closes (i32.add (global.get $closes) (i32.const 1)))
      (if (i32.gt_u (global.get $closes) (i32.const 1)) (then unreachable)))"#
        ),
        r#"(export "fused-a-impostor" (instance $g))"#,
    );
    let stage = engine()
        .load_bytes("impostor", wat.as_bytes())
        .expect("loads")
        .instantiate("impostor", StageOptions::new())
        .expect("instantiates");
    assert!(stage.prime().expect("primes"));
    stage.close().expect("closed once, as a plain stage");
    assert_eq!(stage.stats().resumes_entered, 1, "primed once");
}

#[test]
fn memory_limits_that_cannot_work_are_refused_naming_the_budget() {
    let err = component(a::PASSTHROUGH)
        .instantiate(
            "zero",
            StageOptions::new().limits(Limits::default().with_max_pull_records(0)),
        )
        .expect_err("a pull of 0 records is a pause: the stage could never get input");
    assert!(
        matches!(&err, Error::Host { stage, message } if stage == "zero" && message.contains("limits.max_pull_records")),
        "{err}"
    );
}

// --- 4. Supervision that loops -------------------------------------------------------------

/// An upstream serving `records` numbers, then failing with `error` on every pull.
fn failing_after(
    records: u32,
    error: Error,
) -> impl FnMut(Demand) -> sluicegate::Result<Option<Chunk>> + Send {
    let mut served = 0u32;
    move |demand: Demand| {
        if served >= records {
            return Err(error.clone());
        }
        let n = demand.records.min(records - served);
        let chunk = Chunk::from_records((served..served + n).map(|i| i.to_string()));
        served += n;
        Ok(Some(chunk))
    }
}

#[test]
fn supervision_a_bypassed_stage_whose_upstream_then_faults_fails_once_and_stops() {
    let source_fault = Error::Io {
        stage: "source".into(),
        message: "the disk went away".into(),
    };
    let stage = component(a::POISON_PILL)
        .instantiate(
            "optional",
            StageOptions::new()
                .config("poison", "3")
                .on_fault(FaultPolicy::Bypass)
                .upstream(failing_after(8, source_fault)),
        )
        .expect("instantiate");
    let probe = stage.clone();
    let (delivered, err) = within(HANG, move || {
        probe.prime().expect("prime");
        let mut delivered = Vec::new();
        loop {
            match probe.resume(2) {
                Ok(Some(chunk)) => delivered.extend(chunk.records().map(<[u8]>::to_vec)),
                Ok(None) => panic!("the stream does not end: its source failed"),
                Err(e) => return (delivered, e),
            }
        }
    });
    assert_eq!(text(&delivered), ["0", "1", "2", "3", "4", "5", "6", "7"]);
    assert!(
        matches!(&err, Error::UpstreamFaulted { stage, cause } if stage == "optional" && matches!(**cause, Error::Io { .. })),
        "{err}"
    );
    assert_eq!(stage.state(), StageState::Bypassed);
    assert_eq!(
        stage.recovered_faults().len(),
        1,
        "one bypass, no retry loop"
    );
    assert!(
        matches!(stage.resume(2), Err(Error::UpstreamFaulted { .. })),
        "and it stays failed: its input is gone"
    );
}

#[test]
fn supervision_an_upstream_refusal_is_not_the_end_of_input() {
    // The upstream refuses (it is closed): that is not the end of the stream, so the stage
    // must not see `none` and finish early; its call is abandoned and it faults, named X6.
    let closed = Error::Closed {
        stage: "upstream".into(),
    };
    let stage = component(a::PASSTHROUGH)
        .instantiate(
            "puller",
            StageOptions::new()
                .on_fault(FaultPolicy::restart())
                .upstream(failing_after(3, closed)),
        )
        .expect("instantiate");
    stage.prime().expect("prime");
    let first = stage.resume(3).expect("three records");
    assert_eq!(first.map(|c| c.len()), Some(3));
    let err = stage.resume(3).expect_err("refused");
    assert!(
        matches!(&err, Error::UpstreamRefused { stage, cause } if stage == "puller" && matches!(**cause, Error::Closed { .. })),
        "{err}"
    );
    assert_eq!(
        stage.stats().restarts,
        0,
        "not a fault of its own: no restart"
    );
    let later = stage.resume(3);
    assert!(
        matches!(&later, Err(Error::Faulted { cause, .. }) if matches!(**cause, Error::UpstreamRefused { .. })),
        "never a silent end of the stream: {later:?}"
    );
}

#[test]
fn supervision_after_an_upstream_fault_every_later_resume_is_refused() {
    let broken = Error::Io {
        stage: "source".into(),
        message: "truncated input".into(),
    };
    let stage = component(a::PASSTHROUGH)
        .instantiate(
            "downstream",
            StageOptions::new().upstream(failing_after(2, broken)),
        )
        .expect("instantiate");
    stage.prime().expect("prime");
    assert_eq!(stage.resume(2).expect("two").map(|c| c.len()), Some(2));
    for _ in 0..3 {
        let err = stage.resume(2).expect_err("X4");
        assert!(matches!(err, Error::UpstreamFaulted { .. }), "{err}");
    }
    assert_ne!(stage.state(), StageState::Faulted, "X4 does not fault it");
    stage.close().expect("and its cleanup still runs");
}

// --- 5. Swaps ------------------------------------------------------------------------------

fn closed_lines(logs: &[(String, String)], stage: &str) -> usize {
    logs.iter()
        .filter(|(s, m)| s == stage && m.contains("scripted line"))
        .count()
}

#[test]
fn swap_a_new_version_that_finishes_while_priming_is_refused_and_closed() {
    // The stage's configuration (shared by every version) makes a version finish while
    // priming and log a line from its cleanup.
    let target = scripted(
        "t",
        StageOptions::new().upstream(numbers(10)),
        &[("prime", "none"), ("close", "log=1")],
    );
    assert!(!target.prime().expect("prime"), "finished while priming");
    let (outcome, logs) = capture_logs(|| target.swap(&component(a::SCRIPTED)));
    let err = outcome.expect_err("refused");
    assert!(
        matches!(&err, Error::SwapRefused { reason, .. } if reason.contains("finished while priming")),
        "{err}"
    );
    assert_eq!(
        closed_lines(&logs, "t"),
        1,
        "the refused new version's cleanup ran once (E2): {logs:?}"
    );
}

#[test]
fn swap_a_new_version_that_refuses_the_state_is_closed() {
    let target = scripted(
        "t",
        StageOptions::new().upstream(numbers(10)),
        &[
            ("resume", "pull=6"),
            ("restore", "refuse"),
            ("close", "log=1"),
        ],
    );
    target.prime().expect("prime");
    let first = target.resume(2).expect("two").map(|c| c.len());
    assert_eq!(first, Some(2), "it holds four more");
    let (outcome, logs) = capture_logs(|| target.swap(&component(a::SCRIPTED)));
    let err = outcome.expect_err("refused");
    assert!(
        matches!(&err, Error::SwapRefused { reason, .. } if reason.contains("scripted refusal")),
        "{err}"
    );
    assert_eq!(
        closed_lines(&logs, "t"),
        1,
        "the primed, refused new version was closed (S3): {logs:?}"
    );
    assert_eq!(target.state(), StageState::Suspended, "the old one runs on");
    assert_eq!(drain(&target, 3).expect("drain").len(), 8);
}

#[test]
fn swap_the_state_handoff_has_its_own_budget() {
    // The running version loops in `snapshot`: the cut-over is bounded by the handoff budget,
    // not by the (long) CPU budget of a call, and the report says what was lost.
    let limits = Limits::default()
        .with_cpu_per_call(Duration::from_secs(60))
        .with_cpu_per_handoff(Duration::from_millis(20));
    let old = scripted(
        "s",
        StageOptions::new().upstream(numbers(50)).limits(limits),
        &[("snapshot", "loop")],
    );
    old.prime().expect("prime");
    let first = old.resume(5).expect("five").map(|c| c.len());
    assert_eq!(first, Some(5));
    let new = component(a::PASSTHROUGH);
    let probe = old.clone();
    let report = within(HANG, move || probe.swap(&new)).expect("the swap stands");
    let lost = report.state_lost.as_deref().unwrap_or_default();
    assert!(
        lost.contains("limit exceeded: cpu")
            && lost.contains("20ms")
            && lost.contains("state snapshot"),
        "{lost}"
    );
    assert!(report.handoff >= Duration::from_millis(20), "{report:?}");
    let rest = drain(&old, 7).expect("drain");
    assert_eq!(rest.len(), 45, "every record after the cut-over, once");
}

#[test]
fn swap_two_swaps_of_one_stage_run_one_after_the_other() {
    // The stage runs tag-v1. Swap 1 brings the scripted stage, whose priming (scripted by the
    // stage's configuration) logs a line and then spins for a while; swap 2 starts as soon as
    // that line is logged, with a version that primes at once. Serialised, swap 2 replaces
    // swap 1's version; overlapping, it would cut over first and replace tag-v1.
    let stage = component(a::TAG_V1)
        .instantiate(
            "s",
            StageOptions::new()
                .upstream(numbers(20))
                .config("prime", "log=1+spin=200000000")
                .limits(Limits::default().with_cpu_per_call(Duration::from_secs(60))),
        )
        .expect("instantiate");
    stage.prime().expect("prime");
    let slow = component(a::SCRIPTED);
    let fast = component(a::TAG_V2);
    let (priming_tx, priming_rx) = std::sync::mpsc::channel();
    let first = {
        let (stage, slow) = (stage.clone(), slow.clone());
        std::thread::spawn(move || {
            let notify = NotifyOnLog(Mutex::new(Some(priming_tx)));
            tracing::subscriber::with_default(notify.subscriber(), || stage.swap(&slow))
        })
    };
    priming_rx
        .recv_timeout(HANG)
        .expect("swap 1's new version primes");
    let second = stage.swap(&fast).expect("swap 2");
    let first = first.join().expect("thread").expect("swap 1");
    assert_eq!(first.old_digest, component(a::TAG_V1).digest());
    assert_eq!(
        second.old_digest,
        slow.digest(),
        "swap 2 replaced swap 1's version: it waited for swap 1"
    );
}

/// A tracing subscriber that sends once on the first stage log line it sees.
struct NotifyOnLog(Mutex<Option<std::sync::mpsc::Sender<()>>>);

impl NotifyOnLog {
    fn subscriber(self) -> impl tracing::Subscriber + Send + Sync {
        use tracing_subscriber::layer::SubscriberExt as _;
        tracing_subscriber::registry().with(self)
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for NotifyOnLog {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        if event.metadata().target() == "stage"
            && let Ok(mut sender) = self.0.lock()
            && let Some(sender) = sender.take()
        {
            let _ = sender.send(());
        }
    }
}

// --- 6. Deadlocks and aborts ---------------------------------------------------------------

#[test]
fn deadlock_a_swap_requested_from_inside_the_stage_is_refused() {
    let me: Arc<OnceLock<Stage>> = Arc::new(OnceLock::new());
    let reply: Arc<Mutex<Option<Error>>> = Arc::default();
    let (inside, answer) = (me.clone(), reply.clone());
    let mut records = numbers(10);
    // The stage's own upstream asks for a swap of the stage, while the stage pulls.
    let upstream = move |demand: Demand| {
        if let (Some(stage), Ok(mut answer)) = (inside.get(), answer.lock())
            && answer.is_none()
        {
            *answer = stage.swap(&component(a::PASSTHROUGH)).err();
        }
        sluicegate::Upstream::pull(&mut records, demand)
    };
    let stage = component(a::PASSTHROUGH)
        .instantiate("selfish", StageOptions::new().upstream(upstream))
        .expect("instantiate");
    let _ = me.set(stage.clone());
    let out = within(HANG, move || {
        stage.prime().expect("prime");
        drain(&stage, 4)
    })
    .expect("drain");
    assert_eq!(out.len(), 10);
    let err = reply.lock().expect("reply").clone();
    assert!(
        matches!(&err, Some(Error::SwapRefused { stage, reason }) if stage == "selfish" && reason.contains("inside a call")),
        "{err:?}"
    );
}

#[test]
fn deadlock_a_cycle_of_stages_is_refused_with_an_error() {
    // a pulls from b (through a closure), b pulls from a: resuming b comes back to b.
    let late_b: Arc<OnceLock<Stage>> = Arc::new(OnceLock::new());
    let to_b = late_b.clone();
    let stage_a = component(a::PASSTHROUGH)
        .instantiate(
            "a",
            StageOptions::new().upstream(move |demand: Demand| match to_b.get() {
                Some(b) => b.resume(demand.records),
                None => Ok(None),
            }),
        )
        .expect("a");
    let stage_b = component(a::PASSTHROUGH)
        .instantiate("b", StageOptions::new().upstream(stage_a.clone()))
        .expect("b");
    let _ = late_b.set(stage_b.clone());
    stage_a.prime().expect("prime a");
    stage_b.prime().expect("prime b");
    let err = within(HANG, move || stage_b.resume(1).expect_err("a cycle"));
    // b's pull reached a, whose pull came back to b, already running (R1): a refused input it
    // cannot account for (X6), which b sees as its upstream's fault (X4).
    assert!(
        matches!(&err, Error::UpstreamFaulted { stage, cause } if stage == "b"
            && matches!(&**cause, Error::UpstreamRefused { stage, cause } if stage == "a"
                && matches!(**cause, Error::AlreadyRunning { .. }))),
        "{err}"
    );
}

#[test]
fn deadlock_a_cycle_meeting_a_swap_is_refused_not_waited_on() {
    // b is inside a call (pulling from a) when another thread asks to swap b; a's pull comes
    // back to b on the first thread. b must be refused at once (R1): waiting for the swap to
    // finish would wait for this very call.
    let late_b: Arc<OnceLock<Stage>> = Arc::new(OnceLock::new());
    let (to_b, swap_b) = (late_b.clone(), late_b.clone());
    let (started_tx, started_rx) = std::sync::mpsc::channel::<()>();
    let started_tx = Mutex::new(Some(started_tx));
    let stage_a = component(a::PASSTHROUGH)
        .instantiate(
            "a",
            StageOptions::new().upstream(move |demand: Demand| {
                if let Some(tx) = started_tx.lock().ok().and_then(|mut tx| tx.take()) {
                    let _ = tx.send(());
                    // Give the other thread time to start its swap of b.
                    std::thread::sleep(Duration::from_millis(300));
                }
                match to_b.get() {
                    Some(b) => b.resume(demand.records),
                    None => Ok(None),
                }
            }),
        )
        .expect("a");
    let stage_b = component(a::PASSTHROUGH)
        .instantiate("b", StageOptions::new().upstream(stage_a.clone()))
        .expect("b");
    let _ = late_b.set(stage_b.clone());
    stage_a.prime().expect("prime a");
    stage_b.prime().expect("prime b");
    let swapper = std::thread::spawn(move || {
        let _ = started_rx.recv();
        swap_b.get().map(|b| b.swap(&component(a::PASSTHROUGH)))
    });
    let err = within(HANG, move || stage_b.resume(1).expect_err("a cycle"));
    assert!(
        matches!(&err, Error::UpstreamFaulted { stage, .. } if stage == "b"),
        "{err}"
    );
    let swapped = swapper.join().expect("swapper");
    assert!(
        swapped.is_some(),
        "the swap ran (and finished) after the refused call"
    );
}

// --- 7. Forged log lines -------------------------------------------------------------------

#[test]
fn log_a_guest_cannot_forge_host_log_lines() {
    let stage = scripted(
        "forger",
        StageOptions::new().upstream(numbers(3)),
        &[("resume", "forge")],
    );
    stage.prime().expect("prime");
    let (out, logs) = capture_logs(|| drain(&stage, 3));
    assert_eq!(out.expect("drain").len(), 3);
    let forged: Vec<&String> = logs
        .iter()
        .filter(|(s, m)| s == "forger" && m.contains("forged"))
        .map(|(_, m)| m)
        .collect();
    // host.log's message is one line, its newline escaped; stderr is split into lines at its
    // newlines, each logged under the stage's name. Either way no control character is
    // printed raw.
    assert_eq!(forged.len(), 2, "host.log and stderr: {logs:?}");
    for line in &forged {
        assert!(
            !line.contains('\n') && !line.contains('\u{1b}'),
            "a control character got through: {line:?}"
        );
        assert!(line.contains("\\u{1b}"), "{line:?}");
    }
    assert!(
        forged.iter().any(|line| line.starts_with("ok\\n2026")),
        "host.log: {forged:?}"
    );
}

#[test]
fn log_a_trap_after_a_pull_while_closing_is_named_as_the_trap() {
    // R4 lets a cleanup go on; if it then traps, the trap is what ended it (X1), and nothing
    // more runs in its store.
    let stage = scripted(
        "sloppy",
        StageOptions::new().upstream(numbers(3)),
        &[("close", "pull+trap")],
    );
    stage.prime().expect("prime");
    let err = stage.close().expect_err("the cleanup traps");
    assert!(
        matches!(&err, Error::Trap { stage, call: Call::Close, .. } if stage == "sloppy"),
        "{err}"
    );
}

// --- 8. A log line over budget costs nothing ----------------------------------------------

#[test]
fn log_a_line_over_budget_is_not_even_read() {
    // One valid line uses up a budget of one line per second; the next lines are not UTF-8.
    // Read, they would fault the stage (checklist #16); over budget, they are not read at all.
    let wat = wat_logging_stage(
        r#"(data (i32.const 100) "\ff\fe\fd") (data (i32.const 200) "fine")"#,
        &format!(
            "(call $log (i32.const 2) (i32.const 200) (i32.const 4) (i32.const 0) (i32.const 0))
      (loop $l
        (call $log (i32.const 2) (i32.const 100) (i32.const 3) (i32.const 0) (i32.const 0))
        (local.set $n (i32.add (local.get $n) (i32.const 1)))
        (br_if $l (i32.lt_u (local.get $n) (i32.const 1000))))
      {ANSWER_EMPTY}"
        ),
    );
    let stage = engine()
        .load_bytes("chatty", wat.as_bytes())
        .expect("loads")
        .instantiate(
            "chatty",
            StageOptions::new().limits(Limits::default().with_log_lines_per_s(1)),
        )
        .expect("instantiates");
    let (primed, logs) = capture_logs(|| stage.prime());
    assert!(primed.expect("suppressed lines are not read, so not refused"));
    assert_eq!(stage.stats().log_lines_suppressed, 1000);
    assert!(
        logs.iter().any(|(s, m)| s == "chatty" && m == "fine"),
        "{logs:?}"
    );
}

/// Recursion without end in wasm frames alone (no linear memory stack), with enough locals
/// that each frame takes real native stack.
fn deep_wat() -> String {
    wat_component(
        &format!(
            r#"(memory (export "memory") 1)
    (func (export "realloc") (param i32 i32 i32 i32) (result i32) (i32.const 1024))
    (func $down (param $n i64) (result i64)
      (local $a i64) (local $b i64) (local $c i64) (local $d i64)
      (local.set $a (i64.mul (local.get $n) (i64.const 3)))
      (local.set $b (i64.add (local.get $a) (i64.const 5)))
      (local.set $c (i64.xor (local.get $b) (local.get $n)))
      (local.set $d (call $down (i64.add (local.get $n) (i64.const 1))))
      (i64.add (i64.add (local.get $a) (local.get $b)) (i64.add (local.get $c) (local.get $d))))
    (func (export "resume") (param i32) (result i32)
      (if (i32.gt_u (local.get 0) (i32.const 0)) (then (drop (call $down (i64.const 0)))))
      {ANSWER_EMPTY})
    (func (export "close"))"#
        ),
        "",
    )
}

#[test]
fn stack_the_pipeline_thread_is_sized_from_the_engine_s_wasm_stack() {
    // Recursion without end behind two other stages, on an engine allowing 8 MiB of wasm stack
    // per stage: a pipeline thread sized for the default 512 KiB would run out of native stack
    // first and abort the process. So the pipeline runs in a child process, which must exit
    // cleanly, the recursion stopped by the stack limit.
    if std::env::var_os("SLUICEGATE_STACK_CHILD").is_some() {
        let engine = Engine::builder()
            .max_wasm_stack(8 << 20)
            .build()
            .expect("engine");
        let dir = std::env::temp_dir().join(format!("sluicegate-stack-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let deep = dir.join("deep.wat");
        std::fs::write(&deep, deep_wat()).expect("write");
        let toml = stage_toml("first", a::COUNTER, "config = { records = 10 }")
            + &stage_toml("middle", a::PASSTHROUGH, "")
            + &stage_toml("deep", &deep.display().to_string(), "")
            + "[sink]\ncredits = 4\n";
        let origin = dir.join("stack.toml");
        let spec = PipelineSpec::from_toml(&toml, &origin).expect("spec");
        let mut pipeline = Pipeline::build(&engine, &spec, &origin).expect("build");
        let report = pipeline.run();
        let failure = report.failure.expect("the recursion is stopped");
        assert_eq!(failure.stage, "deep");
        assert!(
            failure.message.contains("limit exceeded: stack"),
            "{}",
            failure.message
        );
        return;
    }
    let child = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "hostile::stack_the_pipeline_thread_is_sized_from_the_engine_s_wasm_stack",
            "--nocapture",
        ])
        .env("SLUICEGATE_STACK_CHILD", "1")
        .output()
        .expect("child runs");
    assert!(
        child.status.success(),
        "the child died: {:?}\n{}",
        child.status,
        String::from_utf8_lossy(&child.stderr)
    );
}
