//! The core-wasm fast path (`host/src/fast/`) against the component path, which is the
//! reference: every fixture and example stage the fast path takes, driven through the same
//! calls on both, must deliver the same records, reach the same states and fail with the same
//! errors and rules; and every malformed thing a guest can hand the host at the boundary (a
//! pointer, a length, an alignment, a discriminant, a string, a realloc answer, an import
//! called where none may be) must be refused identically. The conformance kit (`check.rs`),
//! the random walks (`model.rs`) and the fuzzer (`sluicegate_tests::fuzz`) compare both paths
//! too; the whole suite also runs a second time on the component path alone
//! (`SLUICEGATE_FAST_PATH=0`, `scripts/test`).

use sluicegate::{
    Engine, ExecutionPath, FaultPolicy, IterUpstream, Limits, StageComponent, StageOptions,
};
use sluicegate_tests::differential::describe;
use sluicegate_tests::{Path, artifacts as a, capture_logs, require_same_on_both_paths};

/// Small budgets so that hostile fixtures end quickly, the same on both paths. The CPU budget
/// is wide enough that a fixture stopped by another limit (memory, handles) reaches it first
/// even on a loaded machine: the CPU budget counts wall-clock epochs.
fn limits() -> Limits {
    Limits::default()
        .with_cpu_per_call(std::time::Duration::from_millis(1000))
        .with_wall_per_call(std::time::Duration::from_millis(50))
        .with_cpu_per_handoff(std::time::Duration::from_millis(100))
}

/// What a stage did, call by call, as text: what two paths must agree on.
fn transcript(component: &StageComponent) -> Vec<String> {
    let (mut events, logs) = capture_logs(|| {
        let mut events = Vec::new();
        let upstream = IterUpstream::new((0..300u32).map(|i| format!("record {i}").into_bytes()));
        let options = StageOptions::new()
            .upstream(upstream)
            .limits(limits())
            .config("records", "120")
            .config("symbols", "AAPL,MSFT")
            .config("lines", "300");
        let stage = match component.instantiate("subject", options) {
            Ok(stage) => stage,
            Err(e) => return vec![format!("instantiate: {}", describe(&e))],
        };
        events.push(format!("prime: {}", outcome(stage.prime().map(Some))));
        let plan = [0u32, 1, 2, 5, 0, 16, 3, 100, 1000, 4096];
        for (step, credits) in plan.iter().cycle().take(40).enumerate() {
            if step == 12 {
                events.push(match stage.swap(component) {
                    Ok(report) => format!(
                        "swap: state carried {} ({} bytes)",
                        report.state_carried, report.state_bytes
                    ),
                    Err(e) => format!("swap: {}", describe(&e)),
                });
            }
            let answer = stage.resume(*credits);
            let done = !matches!(answer, Ok(Some(_)));
            events.push(format!(
                "resume({credits}): {}",
                outcome(answer.map(|a| a.map(|chunk| {
                    let records: Vec<String> = chunk
                        .records()
                        .map(|r| String::from_utf8_lossy(r).into_owned())
                        .collect();
                    records.join("|")
                })))
            ));
            if done {
                break;
            }
        }
        events.push(format!(
            "close: {}",
            outcome(stage.close().map(|()| None::<String>))
        ));
        let stats = stage.stats();
        events.push(format!(
            "stats: {} resumes, {} closes, {} chunks, {} records, {} bytes, {} restarts, {} swaps, {} credits",
            stats.resumes_entered,
            stats.closes_entered,
            stats.chunks,
            stats.records,
            stats.bytes,
            stats.restarts,
            stats.swaps,
            stats.credits_granted
        ));
        events.push(format!("state: {:?}", stage.state()));
        events
    });
    // Log lines up to the first the log budget suppresses: from there on, which lines pass
    // depends on how fast the machine is, on either path.
    events.extend(
        logs.into_iter()
            .take_while(|(_, line)| !line.contains("suppressed"))
            .map(|(stage, line)| format!("log {stage}: {line}")),
    );
    events
}

fn outcome<T: std::fmt::Debug>(result: sluicegate::Result<Option<T>>) -> String {
    match result {
        Ok(Some(value)) => format!("{value:?}"),
        Ok(None) => "none".into(),
        Err(e) => describe(&e),
    }
}

/// Loads `path` on both engines and requires the same transcript; returns the fast engine's
/// execution path.
fn same_on_both_paths(path: &str) -> ExecutionPath {
    let fast = Path::Fast.load(path);
    let reference = Path::Component.load(path);
    assert!(
        matches!(reference.execution_path(), ExecutionPath::Component { .. }),
        "the reference engine runs everything on the component path"
    );
    require_same_on_both_paths(path, &transcript(&fast), &transcript(&reference));
    fast.execution_path().clone()
}

/// Every fixture behaves the same on both paths.
#[test]
fn every_fixture_behaves_the_same_on_both_paths() {
    let elsewhere: Vec<String> = a::FIXTURES
        .iter()
        .filter_map(|path| match same_on_both_paths(path) {
            ExecutionPath::Core => None,
            other => Some(format!("{path}: {other}")),
        })
        .collect();
    // The comparison means something only if the fast path ran them: every fixture is built
    // with wit-bindgen, the shape the fast path takes, except the one that probes the WASI
    // interfaces the fast path does not serve (the filesystem), which must say so.
    assert!(
        elsewhere.len() == 1
            && elsewhere[0].contains("probes_the_sandbox")
            && elsewhere[0].contains("wasi:filesystem"),
        "not on the fast path: {elsewhere:#?}"
    );
}

/// Every example stage behaves the same on both paths.
#[test]
fn every_example_stage_behaves_the_same_on_both_paths() {
    let elsewhere: Vec<&str> = a::EXAMPLES
        .iter()
        .copied()
        .filter(|path| same_on_both_paths(path) != ExecutionPath::Core)
        .collect();
    // Every Rust example takes the fast path (else the comparison would be the component
    // path's with itself); the Python and JavaScript stages link several core modules.
    let mut expected = vec![a::PY_SYMBOL_FILTER, a::JS_DECODE];
    expected.sort_unstable();
    let mut elsewhere = elsewhere;
    elsewhere.sort_unstable();
    assert_eq!(elsewhere, expected, "the examples not on the fast path");
}

/// The hand-written WAT example stage behaves the same on both paths, and takes the fast one.
#[test]
fn the_wat_example_stage_behaves_the_same_on_both_paths() {
    assert_eq!(
        same_on_both_paths(sluicegate_tests::WAT_PASSTHROUGH),
        ExecutionPath::Core
    );
}

/// The SDK's `resume` export has no post-return (its answered chunk is written over on the
/// next resume instead of freed after the call), so a hop enters the answering stage once
/// for `resume`, not twice. wit-component names a post-return `cabi_post_` + the export.
#[test]
fn sdk_stages_answer_resume_without_a_post_return() {
    const RESUME: &str = "sluicegate:stage/generator@0.1.0#resume";
    for path in [a::PASSTHROUGH, a::COUNTER, a::DECODE, a::VWAP, a::SCRIPTED] {
        let bytes = std::fs::read(path).expect("reads");
        let mut core_exports = Vec::new();
        for payload in wasmparser::Parser::new(0).parse_all(&bytes) {
            if let wasmparser::Payload::ExportSection(exports) = payload.expect("parses") {
                for export in exports {
                    core_exports.push(export.expect("parses").name.to_string());
                }
            }
        }
        assert!(
            core_exports.iter().any(|name| name == RESUME),
            "{path} exports {RESUME}: {core_exports:?}"
        );
        assert!(
            !core_exports
                .iter()
                .any(|name| name == &format!("cabi_post_{RESUME}")),
            "{path}: resume has a post-return"
        );
    }
}

/// The stages the SDK builds take the fast path; the others say why they do not.
#[test]
fn sdk_stages_take_the_fast_path_and_the_others_say_why_not() {
    for path in [a::PASSTHROUGH, a::COUNTER, a::DECODE, a::VWAP, a::SCRIPTED] {
        let component = Path::Fast.load(path);
        assert_eq!(
            component.execution_path(),
            &ExecutionPath::Core,
            "{path} takes the fast path"
        );
    }
    for path in [a::PY_SYMBOL_FILTER, a::JS_DECODE, a::PROBES_THE_SANDBOX] {
        let component = Path::Fast.load(path);
        match component.execution_path() {
            ExecutionPath::Component { reason } => assert!(
                reason.contains("wasi:filesystem"),
                "{path}: the reason names what the fast path does not serve: {reason}"
            ),
            other => panic!("{path} runs on {other}"),
        }
    }
    let fused = Path::Fast
        .engine()
        .load_fused(
            "chain",
            &[
                ("a".into(), std::fs::read(a::PASSTHROUGH).expect("reads")),
                ("b".into(), std::fs::read(a::PASSTHROUGH).expect("reads")),
            ],
        )
        .expect("composes");
    assert!(
        matches!(fused.execution_path(), ExecutionPath::Component { reason } if reason.contains("fused")),
        "{}",
        fused.execution_path()
    );
    let off = Path::Component
        .engine()
        .load_file(a::PASSTHROUGH)
        .expect("loads");
    assert!(
        matches!(off.execution_path(), ExecutionPath::Component { reason } if reason.contains("without the fast path")),
        "{}",
        off.execution_path()
    );
}

/// A stage in WAT with the shape wit-component gives the SDK's stages: `pull`, `log` and
/// `config` reach the main module through a shim table that a fix-up module fills once the
/// main module (its memory and `realloc`) exists. `data` goes in the main module (data
/// segments, globals); `realloc`, `resume` and `post` (the post-return of `resume`) are
/// function bodies. `$heap` is a bump pointer from 4096 the default `realloc` uses.
fn boundary_stage(data: &str, realloc: &str, resume: &str, post: &str) -> String {
    format!(
        r#"(component
  (import "sluicegate:stage/upstream@0.1.0" (instance $up
    (export "pull" (func (param "credits" u32) (result (option (list u8)))))))
  (import "sluicegate:stage/host@0.1.0" (instance $host
    (type $l (enum "trace" "debug" "info" "warn" "error"))
    (export "level" (type $level (eq $l)))
    (export "log" (func (param "level" $level) (param "message" string)
      (param "fields" (list (tuple string string)))))
    (export "config" (func (result (list (tuple string string)))))))
  (core module $shim
    (table (export "t") 3 3 funcref)
    (type $pull (func (param i32 i32)))
    (type $log (func (param i32 i32 i32 i32 i32)))
    (type $config (func (param i32)))
    (func (export "pull") (type $pull)
      (call_indirect (type $pull) (local.get 0) (local.get 1) (i32.const 0)))
    (func (export "log") (type $log)
      (call_indirect (type $log) (local.get 0) (local.get 1) (local.get 2) (local.get 3)
        (local.get 4) (i32.const 1)))
    (func (export "config") (type $config)
      (call_indirect (type $config) (local.get 0) (i32.const 2))))
  (core instance $shim (instantiate $shim))
  (core module $main
    (import "up" "pull" (func $pull (param i32 i32)))
    (import "host" "log" (func $log (param i32 i32 i32 i32 i32)))
    (import "host" "config" (func $config (param i32)))
    (memory (export "memory") 1)
    (global $heap (mut i32) (i32.const 4096))
    {data}
    (func (export "realloc") (param $old i32) (param $old_size i32) (param $align i32)
          (param $size i32) (result i32)
      {realloc})
    (func (export "resume") (param $credits i32) (result i32) {resume})
    (func (export "post") (param $ret i32) {post})
    (func (export "close")))
  (core instance $main (instantiate $main
    (with "up" (instance (export "pull" (func $shim "pull"))))
    (with "host" (instance (export "log" (func $shim "log"))
      (export "config" (func $shim "config"))))))
  (core func $pull (canon lower (func $up "pull") (memory (core memory $main "memory"))
    (realloc (core func $main "realloc"))))
  (core func $log (canon lower (func $host "log") (memory (core memory $main "memory"))))
  (core func $config (canon lower (func $host "config") (memory (core memory $main "memory"))
    (realloc (core func $main "realloc"))))
  (core module $fixup
    (import "" "pull" (func (param i32 i32)))
    (import "" "log" (func (param i32 i32 i32 i32 i32)))
    (import "" "config" (func (param i32)))
    (import "" "t" (table 3 3 funcref))
    (elem (i32.const 0) func 0 1 2))
  (core instance (instantiate $fixup (with "" (instance (export "pull" (func $pull))
    (export "log" (func $log)) (export "config" (func $config))
    (export "t" (table $shim "t"))))))
  (func $resume (param "credits" u32) (result (option (list u8)))
    (canon lift (core func $main "resume") (memory (core memory $main "memory"))
      (post-return (core func $main "post"))))
  (func $close (canon lift (core func $main "close")))
  (instance $g (export "resume" (func $resume)) (export "close" (func $close)))
  (export "sluicegate:stage/generator@0.1.0" (instance $g)))"#
    )
}

/// A bump allocator honouring the alignment asked for.
const BUMP: &str = "(global.set $heap (i32.and (i32.add (global.get $heap) \
    (i32.sub (local.get $align) (i32.const 1))) (i32.sub (i32.const 0) (local.get $align)))) \
    (global.set $heap (i32.add (global.get $heap) (local.get $size))) \
    (i32.sub (global.get $heap) (local.get $size))";

/// Forwards what upstream answers (the answer at 16).
const FORWARD: &str = "(call $pull (local.get $credits) (i32.const 16)) (i32.const 16)";

/// What the stage did on the path `engine` runs it on, and that it ran on the expected path.
fn boundary_transcript(engine: &Engine, wat: &str, fast: bool) -> Vec<String> {
    let component = engine
        .load_bytes("boundary", wat.as_bytes())
        .expect("loads");
    assert_eq!(
        component.execution_path() == &ExecutionPath::Core,
        fast,
        "{}",
        component.execution_path()
    );
    transcript(&component)
}

/// Runs `wat` on both paths, requires the same transcript, and returns it.
fn boundary(wat: &str) -> Vec<String> {
    alike(|engine, fast| boundary_transcript(engine, wat, fast))
}

/// `transcript` on the fast engine and on the reference (the flag says which); requires the
/// same and returns it.
fn alike(transcript: impl Fn(&Engine, bool) -> Vec<String>) -> Vec<String> {
    let got = transcript(Path::Fast.engine(), true);
    let want = transcript(Path::Component.engine(), false);
    assert_eq!(
        got, want,
        "the fast path (left) and the component path (right) disagree"
    );
    got
}

/// Asserts the stage faulted with an error mentioning `what`, on both paths alike.
fn refused(wat: &str, what: &str) {
    let transcript = boundary(wat);
    assert!(
        transcript.iter().any(|line| line.contains(what)),
        "expected `{what}` in {transcript:#?}"
    );
}

#[test]
fn a_well_formed_stage_in_the_wit_component_shape_runs_the_same_on_both_paths() {
    let transcript = boundary(&boundary_stage("", BUMP, FORWARD, ""));
    assert!(
        transcript
            .iter()
            .any(|l| l.contains("record 3|record 4|record 5|record 6|record 7")),
        "{transcript:#?}"
    );
}

#[test]
fn c3_an_answer_pointer_out_of_line_is_refused_alike() {
    refused(
        &boundary_stage("", BUMP, "(i32.const 18)", ""),
        "return pointer not aligned",
    );
    refused(
        &boundary_stage("", BUMP, "(i32.const 65532)", ""),
        "pointer out of bounds of memory",
    );
}

#[test]
fn c3_an_answer_with_a_bad_option_tag_is_refused_alike() {
    refused(
        &boundary_stage(
            "",
            BUMP,
            "(i32.store8 (i32.const 16) (i32.const 2)) (i32.const 16)",
            "",
        ),
        "invalid option discriminant",
    );
}

#[test]
fn c3_an_answer_list_beyond_memory_is_refused_alike() {
    let body = "(i32.store8 (i32.const 16) (i32.const 1)) \
                (i32.store (i32.const 20) (i32.const 65000)) \
                (i32.store (i32.const 24) (i32.const 1000)) (i32.const 16)";
    refused(
        &boundary_stage("", BUMP, body, ""),
        "list pointer/length out of bounds of memory",
    );
}

#[test]
fn a_pull_answer_pointer_out_of_line_is_refused_alike() {
    refused(
        &boundary_stage(
            "",
            BUMP,
            "(call $pull (local.get $credits) (i32.const 18)) (i32.const 16)",
            "",
        ),
        "pointer not aligned",
    );
    refused(
        &boundary_stage(
            "",
            BUMP,
            "(call $pull (local.get $credits) (i32.const 65532)) (i32.const 16)",
            "",
        ),
        "pointer out of bounds",
    );
}

#[test]
fn a_realloc_answer_beyond_memory_or_misaligned_is_refused_alike() {
    refused(
        &boundary_stage("", "(i32.const 65530)", FORWARD, ""),
        "realloc return: beyond end of memory",
    );
    // `config` lowers a list of 16-byte tuples: aligned to 4.
    let config = "(call $config (i32.const 64)) (call $pull (local.get $credits) (i32.const 16)) \
                  (i32.const 16)";
    refused(
        &boundary_stage("", "(i32.const 4097)", config, ""),
        "realloc return: result not aligned",
    );
}

#[test]
fn a_realloc_or_post_return_that_calls_the_host_is_refused_alike() {
    let realloc = format!("(call $pull (i32.const 0) (i32.const 48)) {BUMP}");
    refused(
        &boundary_stage("", &realloc, FORWARD, ""),
        "cannot leave component instance",
    );
    refused(
        &boundary_stage(
            "",
            BUMP,
            FORWARD,
            "(call $pull (i32.const 0) (i32.const 48))",
        ),
        "cannot leave component instance",
    );
}

#[test]
fn a_realloc_that_traps_faults_the_stage_alike() {
    refused(
        &boundary_stage("", "(unreachable)", FORWARD, ""),
        "unreachable",
    );
}

#[test]
fn a_log_line_with_a_bad_level_pointer_or_string_is_refused_alike() {
    let data = r#"(data (i32.const 256) "hello\ff")"#;
    let log = |args: &str| format!("(call $log {args}) {FORWARD}");
    refused(
        &boundary_stage(
            data,
            BUMP,
            &log("(i32.const 9) (i32.const 256) (i32.const 5) (i32.const 0) (i32.const 0)"),
            "",
        ),
        "unexpected discriminant: 9",
    );
    refused(
        &boundary_stage(
            data,
            BUMP,
            &log("(i32.const 2) (i32.const 65530) (i32.const 50) (i32.const 0) (i32.const 0)"),
            "",
        ),
        "string pointer/length out of bounds of memory",
    );
    refused(
        &boundary_stage(
            data,
            BUMP,
            &log("(i32.const 2) (i32.const 256) (i32.const 6) (i32.const 0) (i32.const 0)"),
            "",
        ),
        "invalid utf-8",
    );
    refused(
        &boundary_stage(
            data,
            BUMP,
            &log("(i32.const 2) (i32.const 256) (i32.const 5) (i32.const 258) (i32.const 1)"),
            "",
        ),
        "list pointer is not aligned",
    );
    refused(
        &boundary_stage(
            data,
            BUMP,
            &log("(i32.const 2) (i32.const 256) (i32.const 5) (i32.const 0) (i32.const 100000)"),
            "",
        ),
        "list pointer/length out of bounds of memory",
    );
    // A field whose key lies beyond memory.
    let field = r#"(data (i32.const 512) "\00\00\01\00\05\00\00\00\00\01\00\00\05\00\00\00")"#;
    refused(
        &boundary_stage(
            &format!("{data} {field}"),
            BUMP,
            &log("(i32.const 2) (i32.const 256) (i32.const 5) (i32.const 512) (i32.const 1)"),
            "",
        ),
        "string pointer/length out of bounds of memory",
    );
}

#[test]
fn a_log_line_and_the_configuration_cross_alike() {
    let data = r#"(data (i32.const 256) "hello") (data (i32.const 512) "\00\01\00\00\01\00\00\00\00\01\00\00\05\00\00\00")"#;
    let body = format!(
        "(call $log (i32.const 2) (i32.const 256) (i32.const 5) (i32.const 512) (i32.const 1)) \
         (call $config (i32.const 64)) {FORWARD}"
    );
    let transcript = boundary(&boundary_stage(data, BUMP, &body, ""));
    assert!(
        transcript.iter().any(|l| l.contains("hello")),
        "the line was logged: {transcript:#?}"
    );
}

#[test]
fn the_conformance_report_says_which_path_a_stage_runs_on_and_why() {
    use sluicegate::check::{CheckOptions, check_file};
    let report = check_file(
        Path::Fast.engine(),
        std::path::Path::new(a::PASSTHROUGH),
        &CheckOptions::default(),
    );
    assert_eq!(report.execution_path, Some(ExecutionPath::Core));
    let report = check_file(
        Path::Fast.engine(),
        std::path::Path::new(a::PROBES_THE_SANDBOX),
        &CheckOptions::default(),
    );
    assert!(
        matches!(&report.execution_path, Some(ExecutionPath::Component { reason }) if reason.contains("wasi:filesystem")),
        "{:?}",
        report.execution_path
    );
    let broken = check_file(
        Path::Fast.engine(),
        std::path::Path::new("/nonexistent.wasm"),
        &CheckOptions::default(),
    );
    assert_eq!(
        broken.execution_path, None,
        "a stage that does not load has no path"
    );
}

/// A dead-letter file in memory, to compare.
#[derive(Clone, Default)]
struct Letters(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Letters {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut letters) = self.0.lock() {
            letters.extend_from_slice(bytes);
        }
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A chain of two stages on `engine`: `upstream` (WAT, under `policy`) fed 300 records, then
/// an SDK stage that traps on `record 10` (the poison pill), restarts, and quarantines the
/// input of the call that faulted to a dead-letter file;
/// what the tail delivered, call by call, both stages' counters and states, and both
/// dead-letter files. On the fast path the upstream's chunks go straight from its memory into
/// the pass-through's (`sandbox/pull.rs`); on the component path through a host buffer.
fn chain_transcript(
    engine: &Engine,
    fast: bool,
    upstream: &str,
    policy: FaultPolicy,
) -> Vec<String> {
    let head = engine
        .load_bytes("head", upstream.as_bytes())
        .expect("loads");
    let tail = engine.load_file(a::POISON_PILL).expect("loads");
    for component in [&head, &tail] {
        assert_eq!(
            component.execution_path() == &ExecutionPath::Core,
            fast,
            "{}",
            component.execution_path()
        );
    }
    let (head_letters, tail_letters) = (Letters::default(), Letters::default());
    let head = head
        .instantiate(
            "head",
            StageOptions::new()
                .upstream(IterUpstream::new(
                    (0..300u32).map(|i| format!("record {i}").into_bytes()),
                ))
                .limits(limits())
                .on_fault(policy)
                .dead_letter(head_letters.clone()),
        )
        .expect("instantiates");
    let tail = tail
        .instantiate(
            "tail",
            StageOptions::new()
                .upstream(head.clone())
                .limits(limits())
                .config("poison", "record 10")
                .on_fault(FaultPolicy::restart())
                .dead_letter(tail_letters.clone()),
        )
        .expect("instantiates");
    let mut events = vec![
        format!("prime head: {}", outcome(head.prime().map(Some))),
        format!("prime tail: {}", outcome(tail.prime().map(Some))),
    ];
    for credits in [1u32, 2, 0, 5, 16, 3, 100, 1000].iter().cycle().take(40) {
        let answer = tail.resume(*credits);
        let done = !matches!(answer, Ok(Some(_)));
        events.push(format!(
            "resume({credits}): {}",
            outcome(answer.map(|a| a.map(|chunk| {
                chunk
                    .records()
                    .map(|r| String::from_utf8_lossy(r).into_owned())
                    .collect::<Vec<_>>()
                    .join("|")
            })))
        ));
        if done {
            break;
        }
    }
    for stage in [&tail, &head] {
        let closed = outcome(stage.close().map(|()| None::<String>));
        let stats = stage.stats();
        events.push(format!(
            "{}: close {closed}, {:?}, {} records, {} chunks, {} restarts",
            stage.name(),
            stage.state(),
            stats.records,
            stats.chunks,
            stats.restarts
        ));
    }
    for (name, letters) in [("head", head_letters), ("tail", tail_letters)] {
        let letters = letters.0.lock().map(|l| l.clone()).unwrap_or_default();
        let records = sluicegate::Chunk::from_framed(letters)
            .map(|chunk| {
                chunk
                    .records()
                    .map(|r| String::from_utf8_lossy(r).into_owned())
                    .collect::<Vec<_>>()
                    .join("|")
            })
            .unwrap_or_else(|e| format!("not framed: {e}"));
        events.push(format!("dead letters of {name}: {records}"));
    }
    events
}

/// [`chain_transcript`] on both paths; requires the same transcript and returns it.
fn chain(upstream: &str, policy: FaultPolicy) -> Vec<String> {
    alike(|engine, fast| chain_transcript(engine, fast, upstream, policy))
}

/// A forwarder whose post-return traps on its `n`th call (a counter in its memory, so a fresh
/// instance counts from zero again).
fn traps_in_post_return_on_call(n: u32) -> String {
    let post = format!(
        "(i32.store (i32.const 8) (i32.add (i32.load (i32.const 8)) (i32.const 1))) \
         (if (i32.eq (i32.load (i32.const 8)) (i32.const {n})) (then (unreachable)))"
    );
    boundary_stage("", BUMP, FORWARD, &post)
}

#[test]
fn a_chain_delivers_the_same_records_on_both_paths_straight_from_memory_to_memory() {
    let transcript = chain(&boundary_stage("", BUMP, FORWARD, ""), FaultPolicy::Fail);
    let delivered = transcript.join("\n");
    assert!(
        delivered.contains("record 0") && delivered.contains("record 299"),
        "{transcript:#?}"
    );
}

#[test]
fn x1_a_post_return_that_traps_after_a_delivery_delivers_only_the_retried_answer_alike() {
    // The head's post-return traps on its 5th call (priming is the 1st), after the fast path
    // delivered that call's chunk (records 3-7) into the tail: the head restarts, quarantines
    // records 3-7, and answers again with records 8-12. The tail must see those once; it traps
    // on record 10, and must quarantine only what it was answered (8-12), not the chunk whose
    // post-return trapped.
    let restarted = chain(
        &traps_in_post_return_on_call(5),
        FaultPolicy::Restart {
            max_restarts: 3,
            backoff: std::time::Duration::ZERO,
        },
    );
    let letters = |name: &str, lines: &[String]| {
        lines
            .iter()
            .find_map(|l| l.strip_prefix(&format!("dead letters of {name}: ")))
            .map(str::to_string)
            .unwrap_or_default()
    };
    let (head, tail) = (letters("head", &restarted), letters("tail", &restarted));
    assert!(
        head.starts_with("record 3|record 4|record 5|record 6|record 7|"),
        "the head quarantined the chunk whose post-return trapped: {head}"
    );
    assert_eq!(
        tail, "record 8|record 9|record 10|record 11|record 12",
        "the tail quarantined only what it was answered"
    );
    // Bypassed instead: the head's input passes through from the fault on.
    chain(&traps_in_post_return_on_call(5), FaultPolicy::Bypass);
}
