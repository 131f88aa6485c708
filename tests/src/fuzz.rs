//! The hostile-stage harness shared by the fuzz target (`fuzz/`, libFuzzer) and its
//! deterministic runner (`tests/all/fuzz.rs`, in CI).
//!
//! A case is decoded from arbitrary bytes: a three-stage chain `counter → hostile → after`
//! where `hostile` is the `scripted` fixture, its behaviour on every call chosen by the bytes
//! (answer, break framing, loop, sleep, pull any number of records including 0 and
//! `u32::MAX`, pull while closing, trap, grow memory, flood the log, trap or loop in
//! `snapshot`, refuse a state...), its limits small, its clocks virtual or real, its fault
//! policy `fail` or `restart`; then a sequence of host calls (resumes with any credits,
//! pauses, hot swaps to itself or to a pass-through, a close).
//!
//! [`run`] runs every case twice, on the core-wasm fast path and on the component path, and
//! requires the same answer at every step (records, faults and their rules, swaps, closes,
//! counters): issue #13's differential test. After every step it checks: no panic; no step longer than [`STEP_LIMIT`] (minutes
//! above what the budgets allow: a hang detector, not a speed test); the process's memory
//! under [`RSS_LIMIT`]; every record delivered exactly once, in order, unless a loss was named
//! (a restart's quarantine, a swap's `state_lost`); every error naming one of the chain's
//! stages, and every fault rooted in the hostile stage with its rule, limit or trap; every
//! stage closed at most once; no instance left alive at the end.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use sluicegate::{
    Capabilities, Engine, Error, FaultPolicy, IterUpstream, Limits, Stage, StageComponent,
    StageOptions,
};

use crate::Path;
use crate::artifacts as a;
use crate::differential::{describe, summary};

/// Longest a single step may take before the harness calls it a hang: the budgets are 100 ms at most,
/// a step enters at most a few dozen calls, so this is two orders of magnitude of slack for a
/// loaded machine, not a speed test.
pub const STEP_LIMIT: Duration = Duration::from_secs(10);

/// Most resident memory the process may hold during a case (other tests share the process).
pub const RSS_LIMIT: u64 = 2 << 30;

/// One host call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// `resume(credits)` on the last stage (0 is a pause).
    Resume(u32),
    /// Swap the hostile stage for a fresh instance of itself (same script, from its start).
    SwapSelf,
    /// Swap the hostile stage for the well-behaved pass-through.
    SwapPassthrough,
    /// Close every stage, upstream first.
    Close,
}

/// One case: the chain's input, the hostile stage's script, limits and policy, and the calls.
#[derive(Debug, Clone)]
pub struct Case {
    /// Records the source emits.
    pub records: u32,
    /// The source is host-native (an iterator of records, which honours every demand), not the
    /// `counter` stage: greedy pulls then reach the host.
    pub native_source: bool,
    /// The scripted stage's configuration (`prime`, `resume`, `close`, `snapshot`, `restore`).
    pub script: Vec<(String, String)>,
    /// Real clocks for the hostile stage (its waits then block, up to the wall budget).
    pub real_time: bool,
    /// `restart` (at most twice, no backoff) instead of `fail`.
    pub restart: bool,
    /// The host's calls.
    pub steps: Vec<Step>,
}

/// Reads choices out of fuzz bytes; past the end every choice is the first option.
struct Choices<'a>(&'a [u8]);

impl Choices<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    fn pick<T: Copy>(&mut self, from: &[T]) -> T {
        from[usize::from(self.byte()) % from.len()]
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

const CREDITS: &[u32] = &[1, 0, 3, 7, 64, 256, u32::MAX];
const PULLS: &[&str] = &["pull=0", "pull=1", "pull=7", "pull=1000", "pull=4294967295"];

/// An op for a resume (or prime) step.
fn resume_op(c: &mut Choices<'_>) -> String {
    match c.byte() % 20 {
        0..=5 => "ok".into(),
        6 | 7 => c.pick(PULLS).into(),
        8 => "more".into(),
        9 => "frame".into(),
        10 => "data".into(),
        11 => "none".into(),
        12 => "loop".into(),
        13 => c.pick(&["sleep=0", "sleep=1", "sleep=3600"]).into(),
        14 => "trap".into(),
        15 => c.pick(&["grow=1", "grow=8", "grow=100"]).into(),
        16 => c.pick(&["log=10", "log=5000", "forge"]).into(),
        17 => c.pick(&["spin=1000", "spin=1000000"]).into(),
        18 => c.pick(&["huge=2", "drain"]).into(),
        _ => format!("{}+{}", c.pick(PULLS), c.pick(&["ok", "more", "log=3"])),
    }
}

/// An op for close, snapshot or restore.
fn other_op(c: &mut Choices<'_>, kind: &str) -> String {
    let special = match kind {
        "close" => "pull",
        "restore" => "refuse",
        _ => "sleep=3600",
    };
    c.pick(&["ok", "ok", "ok", "trap", "loop", "log=2000", special])
        .into()
}

impl Case {
    /// Decodes a case from arbitrary bytes (any bytes make a case).
    pub fn decode(bytes: &[u8]) -> Case {
        let mut c = Choices(bytes);
        let native_source = c.byte() % 3 == 0;
        let records = if native_source {
            u32::from(c.byte()) * 400 + u32::from(c.byte() % 8)
        } else {
            u32::from(c.byte()) * 8 + u32::from(c.byte() % 8)
        };
        let real_time = c.byte() % 4 == 0;
        let restart = c.byte() % 3 == 0;
        let prime = if c.byte() % 4 == 0 {
            resume_op(&mut c)
        } else {
            "ok".into()
        };
        let resumes: Vec<String> = (0..usize::from(c.byte() % 12))
            .map(|_| resume_op(&mut c))
            .collect();
        let mut script = vec![
            ("prime".to_string(), prime),
            ("resume".to_string(), resumes.join(",")),
        ];
        for kind in ["close", "snapshot", "restore"] {
            script.push((kind.to_string(), other_op(&mut c, kind)));
        }
        let mut steps = Vec::new();
        while !c.is_empty() && steps.len() < 64 {
            steps.push(match c.byte() % 16 {
                0..=10 => Step::Resume(c.pick(CREDITS)),
                11 => Step::Resume(0),
                12 | 13 => Step::SwapSelf,
                14 => Step::SwapPassthrough,
                _ => Step::Close,
            });
        }
        // Then drain: the stream is run to its end (or its fault) and closed.
        steps.extend(std::iter::repeat_n(Step::Resume(64), 64));
        steps.push(Step::Close);
        Case {
            records,
            native_source,
            script,
            real_time,
            restart,
            steps,
        }
    }
}

/// The harness's engine for `on`: its own, so that its live-instance count is the harness's
/// alone (callers run cases one at a time), with the tests' compile cache.
fn engine(on: Path) -> &'static Engine {
    static FAST: OnceLock<Engine> = OnceLock::new();
    static COMPONENT: OnceLock<Engine> = OnceLock::new();
    let cell = match on {
        Path::Fast => &FAST,
        Path::Component => &COMPONENT,
    };
    cell.get_or_init(|| {
        crate::with_compile_cache(Engine::builder().core_fast_path(on == Path::Fast))
            .build()
            .expect("the harness's engine starts")
    })
}

fn load(on: Path, path: &str) -> StageComponent {
    engine(on)
        .load_file(path)
        .unwrap_or_else(|e| panic!("loading {path}: {e}"))
}

/// Small budgets, so that loops and waits end in a tenth of a second at most; the CPU budget
/// leaves a legitimate call (a 2 MiB answer, say) twenty times what it needs.
fn hostile_limits() -> Limits {
    Limits::default()
        .with_cpu_per_call(Duration::from_millis(100))
        .with_wall_per_call(Duration::from_millis(20))
        .with_cpu_per_handoff(Duration::from_millis(10))
        .with_max_chunk_bytes(1 << 20)
        .with_log_lines_per_s(100)
}

/// What the case did, for the runner's summary.
#[derive(Debug, Default, Clone)]
pub struct Outcome {
    /// Records that reached the end of the chain.
    pub delivered: u64,
    /// The stream ended (`none`), rather than faulting or being closed early.
    pub finished: bool,
    /// A fault (or refusal) ended the stream, named.
    pub faulted: bool,
    /// Swaps that stood.
    pub swaps: u32,
    /// What ended the stream, if a fault did: the root cause's kind and, for a violation or
    /// a limit, which (`protocol-violation C2`, `limit-exceeded cpu`, `trap`).
    pub fault: Option<String>,
    /// What each step answered, and each stage's counters at the end: what the two execution
    /// paths must agree on.
    pub events: Vec<String>,
}

/// Runs `case` on both execution paths, checking every invariant after every step, and
/// requires the same events of both; panics with the case and the step when one breaks.
/// Returns the fast path's outcome.
pub fn run(case: &Case) -> Outcome {
    // One case at a time: the live-instance count at the end must be this case's alone.
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _alone = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let fast = run_on(case, Path::Fast);
    let component = run_on(case, Path::Component);
    if fast.events != component.events {
        crate::require_same_on_both_paths(
            &format!("case {case:#?}"),
            &fast.events,
            &component.events,
        );
    }
    fast
}

/// Runs `case` on the engine of `on`, checking every invariant after every step.
fn run_on(case: &Case, on: Path) -> Outcome {
    let fail = Failure(case, on);
    let scripted = load(on, a::SCRIPTED);
    let passthrough = load(on, a::PASSTHROUGH);
    let counter = (!case.native_source).then(|| {
        load(on, a::COUNTER)
            .instantiate(
                "counter",
                StageOptions::new().config("records", case.records.to_string()),
            )
            .unwrap_or_else(|e| fail.at(0, format!("counter: {e}")))
    });
    let mut options = StageOptions::new();
    options = match &counter {
        Some(counter) => options.upstream(counter.clone()),
        None => options.upstream(IterUpstream::new(
            (0..case.records).map(|n| n.to_string().into_bytes()),
        )),
    };
    options = options
        .limits(hostile_limits())
        .capabilities(Capabilities::none().with_real_time_and_random(case.real_time))
        .on_fault(if case.restart {
            FaultPolicy::Restart {
                max_restarts: 2,
                backoff: Duration::ZERO,
            }
        } else {
            FaultPolicy::Fail
        });
    for (key, value) in &case.script {
        options = options.config(key, value);
    }
    let hostile = match scripted.instantiate("hostile", options) {
        Ok(stage) => stage,
        // Instantiation runs no script: it must succeed.
        Err(e) => fail.at(0, format!("hostile does not instantiate: {e}")),
    };
    let after = passthrough
        .instantiate("after", StageOptions::new().upstream(hostile.clone()))
        .unwrap_or_else(|e| fail.at(0, format!("after: {e}")));
    let chain: Vec<Stage> = counter
        .into_iter()
        .chain([hostile.clone(), after.clone()])
        .collect();

    let mut outcome = Outcome::default();
    let mut next = 0u32; // the next record expected, in order
    let mut lost = false; // a named loss happened: order still holds, gaps may not
    let mut ended = false; // the stream ended or failed: later resumes must be refused
    let mut closed = false;
    let mut primed = false;
    for (i, &step) in case.steps.iter().enumerate() {
        let started = Instant::now();
        match step {
            Step::Resume(credits) => {
                if !primed {
                    primed = true;
                    for stage in &chain {
                        if let Err(e) = stage.prime() {
                            outcome.events.push(format!("{i}: prime: {}", describe(&e)));
                            check_error(&e, i, &fail);
                            outcome.faulted = true;
                            outcome.fault.get_or_insert_with(|| fault_name(&e));
                            ended = true;
                            break;
                        }
                    }
                }
                let answer = after.resume(credits);
                // A restart quarantines the input of the failed call, and the stage's held
                // records go with its instance: a named loss (`restarts` counts it).
                lost |= hostile.stats().restarts > 0;
                outcome.events.push(format!(
                    "{i}: resume({credits}): {}",
                    match &answer {
                        Ok(Some(chunk)) => summary(chunk),
                        Ok(None) => "none".into(),
                        Err(e) => describe(e),
                    }
                ));
                match answer {
                    Ok(Some(chunk)) => {
                        if closed || (ended && !outcome.finished && credits > 0) {
                            fail.at(i, "records after the end of the stream".into());
                        }
                        if chunk.len() > credits {
                            fail.at(i, format!("C2: {} records for {credits}", chunk.len()));
                        }
                        for record in chunk.records() {
                            let n: u32 = std::str::from_utf8(record)
                                .ok()
                                .and_then(|t| t.parse().ok())
                                .unwrap_or_else(|| {
                                    fail.at(i, format!("a foreign record {record:?}"))
                                });
                            let in_order = if lost { n >= next } else { n == next };
                            if !in_order {
                                fail.at(
                                    i,
                                    format!("record {n} where {next} was due (lost: {lost})"),
                                );
                            }
                            next = n + 1;
                            outcome.delivered += 1;
                        }
                    }
                    Ok(None) => {
                        if !ended {
                            outcome.finished = true;
                            ended = true;
                        }
                    }
                    Err(e) => {
                        check_error(&e, i, &fail);
                        if !matches!(e, Error::Closed { .. }) {
                            outcome.faulted = true;
                            outcome.fault.get_or_insert_with(|| fault_name(&e));
                        }
                        ended = true;
                    }
                }
            }
            Step::SwapSelf | Step::SwapPassthrough => {
                let target = if step == Step::SwapSelf {
                    &scripted
                } else {
                    &passthrough
                };
                let swapped = hostile.swap(target);
                outcome.events.push(format!(
                    "{i}: {step:?}: {}",
                    match &swapped {
                        Ok(report) => format!(
                            "carried {} ({} bytes), lost {}",
                            report.state_carried,
                            report.state_bytes,
                            report.state_lost.is_some()
                        ),
                        Err(e) => describe(e),
                    }
                ));
                match swapped {
                    Ok(report) => {
                        outcome.swaps += 1;
                        if closed {
                            fail.at(i, "a closed stage was swapped".into());
                        }
                        lost |= report.state_lost.is_some();
                    }
                    Err(Error::SwapRefused { stage, .. }) if stage == "hostile" => {}
                    Err(e) => fail.at(i, format!("a swap failed other than by refusal: {e}")),
                }
            }
            Step::Close => {
                for stage in &chain {
                    let closed = stage.close();
                    outcome.events.push(format!(
                        "{i}: close {}: {}",
                        stage.name(),
                        closed.as_ref().map_or_else(describe, |()| "ok".into())
                    ));
                    if let Err(e) = closed {
                        check_error(&e, i, &fail);
                    }
                }
                closed = true;
                ended = true;
            }
        }
        let took = started.elapsed();
        if took > STEP_LIMIT {
            fail.at(i, format!("{step:?} took {took:?}"));
        }
        if let Some(rss) = resident_bytes()
            && rss > RSS_LIMIT
        {
            fail.at(i, format!("the process holds {rss} bytes"));
        }
        // Each version is closed once: a swap closes the version it replaces.
        for stage in &chain {
            let stats = stage.stats();
            if stats.closes_entered > 1 + stats.swaps {
                fail.at(
                    i,
                    format!(
                        "`{}` closed {} times over {} swaps",
                        stage.name(),
                        stats.closes_entered,
                        stats.swaps
                    ),
                );
            }
        }
    }
    if outcome.finished && !lost && !script_may_end_early(case) && next != case.records {
        fail.at(
            case.steps.len(),
            format!(
                "the stream ended after {next} of {} records, nothing named",
                case.records
            ),
        );
    }
    for stage in &chain {
        let stats = stage.stats();
        outcome.events.push(format!(
            "{}: {:?}; {} resumes, {} closes, {} records, {} restarts ({} records quarantined), \
             {} swaps",
            stage.name(),
            stage.state(),
            stats.resumes_entered,
            stats.closes_entered,
            stats.records,
            stats.restarts,
            stats.quarantined_records,
            stats.swaps
        ));
    }
    drop(chain);
    drop((hostile, after));
    if engine(on).live_instances() != 0 {
        fail.at(
            case.steps.len(),
            format!("{} instances still alive", engine(on).live_instances()),
        );
    }
    outcome
}

/// True if the script lets the hostile stage end its stream before its input does (`none`) or
/// throw input away (`drain`): a pass-through's exactly-once no longer applies.
fn script_may_end_early(case: &Case) -> bool {
    case.script
        .iter()
        .any(|(_, ops)| ops.contains("none") || ops.contains("drain"))
}

/// Reports a broken invariant with the case that broke it, and on which path.
struct Failure<'a>(&'a Case, Path);

impl Failure<'_> {
    fn at(&self, step: usize, what: String) -> ! {
        panic!(
            "step {step} ({:?} path): {what}\ncase: {:#?}",
            self.1, self.0
        )
    }
}

/// The root cause of `error` in a word or two: its kind, and which rule or limit.
fn fault_name(error: &Error) -> String {
    let root = error.root_cause();
    match root {
        Error::ProtocolViolation { rule, .. } => format!("{} {}", root.kind(), rule.id()),
        Error::LimitExceeded { limit, .. } => format!("{} {limit}", root.kind()),
        other => other.kind().to_string(),
    }
}

/// Every error names one of the chain's stages; every fault is rooted in the hostile stage and
/// names its rule, limit or trap.
fn check_error(error: &Error, step: usize, fail: &Failure<'_>) {
    if !["counter", "hostile", "after"].contains(&error.stage()) {
        fail.at(
            step,
            format!("an error naming no stage of the chain: {error}"),
        );
    }
    let root = error.root_cause();
    match root {
        Error::ProtocolViolation { stage, .. }
        | Error::Trap { stage, .. }
        | Error::LimitExceeded { stage, .. } => {
            if stage != "hostile" {
                fail.at(
                    step,
                    format!("a fault blamed on a well-behaved stage: {error}"),
                );
            }
        }
        Error::Closed { .. } | Error::NotPrimed { .. } => {}
        other => fail.at(
            step,
            format!("an error of an unexpected kind: {other} (from {error})"),
        ),
    }
}

/// The process's resident memory, from /proc (Linux); `None` elsewhere.
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// Decodes and runs a case: the fuzz target's body (a case that panics is a finding).
pub fn run_bytes(bytes: &[u8]) -> Outcome {
    run(&Case::decode(bytes))
}
