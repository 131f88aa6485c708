//! Bad input at load time gets a clear, typed error naming the stage and the cause; and X5, a
//! pull during instantiation, is refused.

use sluicegate::{Error, Rule, StageOptions};
use sluicegate_tests::{ANSWER_EMPTY, engine, wat_component, wat_logging_stage, wat_stage};

fn load_err(bytes: &[u8]) -> Error {
    match engine().load_bytes("suspect", bytes) {
        Ok(_) => panic!("loading should fail"),
        Err(e) => e,
    }
}

#[test]
fn a_file_that_is_not_wasm_is_refused() {
    let err = load_err(b"#!/bin/sh\necho hi\n");
    assert!(
        matches!(&err, Error::Load { stage, reason } if stage == "suspect" && reason.contains("not a WebAssembly file")),
        "{err}"
    );
}

#[test]
fn a_core_module_is_refused_with_what_to_do() {
    let err = load_err(b"\0asm\x01\0\0\0");
    assert!(
        matches!(&err, Error::Load { reason, .. } if reason.contains("core WebAssembly module") && reason.contains("wasm32-wasip2")),
        "{err}"
    );
}

#[test]
fn a_truncated_component_is_refused() {
    let err = load_err(b"\0asm\x0d\0\x01\0\x07\x05");
    assert!(
        matches!(&err, Error::Load { reason, .. } if reason.contains("invalid component")),
        "{err}"
    );
}

#[test]
fn a_missing_file_is_named() {
    let err = match engine().load_file("/nonexistent/strategy.wasm") {
        Ok(_) => panic!("no such file"),
        Err(e) => e,
    };
    assert!(
        matches!(&err, Error::Load { stage, reason } if stage == "strategy" && reason.contains("/nonexistent/strategy.wasm")),
        "{err}"
    );
}

#[test]
fn a_component_without_the_generator_export_is_of_the_wrong_world() {
    let err = load_err(b"(component)");
    assert!(
        matches!(&err, Error::WrongWorld { reason, .. } if reason.contains("generator")),
        "{err}"
    );
}

#[test]
fn a_component_importing_what_the_host_does_not_grant_is_of_the_wrong_world() {
    let err = load_err(
        br#"(component (import "evil:net/socket@1.0.0" (instance (export "connect" (func)))))"#,
    );
    assert!(
        matches!(&err, Error::WrongWorld { reason, .. } if reason.contains("evil:net/socket")),
        "{err}"
    );
}

#[test]
fn a_mistyped_resume_is_of_the_wrong_world() {
    let err = load_err(
        br#"(component
  (core module $m
    (func (export "resume") (param i32) (result i32) i32.const 0)
    (func (export "close")))
  (core instance $i (instantiate $m))
  (func $resume (param "credits" u32) (result u32) (canon lift (core func $i "resume")))
  (func $close (canon lift (core func $i "close")))
  (instance $g (export "resume" (func $resume)) (export "close" (func $close)))
  (export "sluicegate:stage/generator@0.1.0" (instance $g)))"#,
    );
    assert!(
        matches!(&err, Error::WrongWorld { reason, .. } if reason.contains("generator@0.1.0#resume") && reason.contains("wrong type")),
        "{err}"
    );
}

/// A complete, minimal stage in WAT whose core start function calls `upstream.pull`.
const PULLS_AT_START: &str = r#"(component
  (import "sluicegate:stage/upstream@0.1.0" (instance $up
    (export "pull" (func (param "credits" u32) (result (option (list u8)))))))
  (core module $mem
    (memory (export "memory") 1)
    (global $next (mut i32) (i32.const 1024))
    (func (export "realloc") (param i32 i32 i32 i32) (result i32)
      (local $p i32)
      global.get $next
      local.set $p
      global.get $next
      local.get 3
      i32.add
      global.set $next
      local.get $p))
  (core instance $m (instantiate $mem))
  (core func $pull (canon lower (func $up "pull") (memory (core memory $m "memory")) (realloc (core func $m "realloc"))))
  (core module $main
    (import "up" "pull" (func $pull (param i32 i32)))
    (import "m" "memory" (memory 1))
    (func $start (call $pull (i32.const 1) (i32.const 16)))
    (start $start)
    (func (export "resume") (param i32) (result i32)
      (i32.store (i32.const 32) (i32.const 0))
      (i32.const 32))
    (func (export "close")))
  (core instance $i (instantiate $main
    (with "up" (instance (export "pull" (func $pull))))
    (with "m" (instance $m))))
  (func $resume (param "credits" u32) (result (option (list u8)))
    (canon lift (core func $i "resume") (memory (core memory $m "memory")) (realloc (core func $m "realloc"))))
  (func $close (canon lift (core func $i "close")))
  (instance $g (export "resume" (func $resume)) (export "close" (func $close)))
  (export "sluicegate:stage/generator@0.1.0" (instance $g)))"#;

#[test]
fn x5_pull_outside_a_call_fails_instantiation() {
    let component = engine()
        .load_bytes("starter", PULLS_AT_START.as_bytes())
        .expect("the component is of the stage world");
    let err = component
        .instantiate("starter", StageOptions::new())
        .expect_err("pull during instantiation");
    assert!(
        matches!(&err, Error::ProtocolViolation { stage, rule: Rule::PullOutsideCall, .. } if stage == "starter"),
        "{err}"
    );
}

#[test]
fn checklist_4_a_memory_minimum_over_the_limit_fails_instantiation_cleanly() {
    // 2048 pages = 128 MiB, over the 64 MiB default.
    let component = engine()
        .load_bytes(
            "greedy-memory",
            wat_stage(2048, "", ANSWER_EMPTY).as_bytes(),
        )
        .expect("loads");
    let err = component
        .instantiate("greedy-memory", StageOptions::new())
        .expect_err("over the memory limit");
    assert!(
        matches!(
            &err,
            sluicegate::Error::LimitExceeded {
                limit: sluicegate::Limit::Memory,
                call: sluicegate::Call::Instantiate,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn checklist_5_a_start_function_that_loops_is_stopped() {
    let component = engine()
        .load_bytes(
            "endless-start",
            wat_stage(1, "(loop $l (br $l))", ANSWER_EMPTY).as_bytes(),
        )
        .expect("loads");
    let options = StageOptions::new().limits(
        sluicegate::Limits::default().with_cpu_per_call(std::time::Duration::from_millis(50)),
    );
    let err = component
        .instantiate("endless-start", options)
        .expect_err("loops at start");
    assert!(
        matches!(
            &err,
            sluicegate::Error::LimitExceeded {
                limit: sluicegate::Limit::Cpu,
                call: sluicegate::Call::Instantiate,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn checklist_13_a_list_pointing_outside_memory_is_a_clean_fault() {
    // some(list) with pointer 0 and length 0xFFFF_FFFF.
    let body = "(i32.store (i32.const 32) (i32.const 1)) (i32.store (i32.const 36) (i32.const 0)) \
                (i32.store (i32.const 40) (i32.const -1)) (i32.const 32)";
    let stage = engine()
        .load_bytes("liar", wat_stage(1, "", body).as_bytes())
        .expect("loads")
        .instantiate("liar", StageOptions::new())
        .expect("instantiates");
    let err = stage.prime().expect_err("bad list");
    assert!(
        matches!(&err, sluicegate::Error::Trap { message, .. } if message.contains("out of bounds")),
        "{err}"
    );
    assert_eq!(stage.stats().bytes, 0);
}

#[test]
fn checklist_35_an_exhausted_pool_refuses_the_next_stage_cleanly() {
    let pooled = sluicegate::Engine::builder()
        .pooling(1)
        .build()
        .expect("engine");
    let component = pooled
        .load_bytes("tiny", wat_stage(1, "", ANSWER_EMPTY).as_bytes())
        .expect("loads");
    let first = component
        .instantiate("first", StageOptions::new())
        .expect("the pool has one slot");
    let err = component
        .instantiate("second", StageOptions::new())
        .expect_err("no slot left");
    assert!(err.to_string().contains("second"), "{err}");
    assert!(first.prime().expect("the first stage is unaffected"));
}

fn short_cpu() -> StageOptions {
    StageOptions::new().limits(
        sluicegate::Limits::default().with_cpu_per_call(std::time::Duration::from_millis(50)),
    )
}

#[test]
fn checklist_9_bulk_copies_of_the_whole_memory_in_a_loop_are_stopped() {
    // 256 pages = 16 MiB copied over itself, forever.
    let body = "(loop $l (memory.copy (i32.const 0) (i32.const 8) (i32.const 16777000)) (br $l)) (i32.const 32)";
    let stage = engine()
        .load_bytes("copier", wat_stage(256, "", body).as_bytes())
        .expect("loads")
        .instantiate("copier", short_cpu())
        .expect("instantiates");
    let err = stage.prime().expect_err("stopped");
    assert!(
        matches!(
            &err,
            sluicegate::Error::LimitExceeded {
                limit: sluicegate::Limit::Cpu,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn checklist_11_table_growth_is_capped() {
    // A table grown by a million elements at a time until refused, then trap on refusal.
    let wat = wat_component(
        r#"(memory (export "memory") 1)
    (table $t 1 funcref)
    (func (export "realloc") (param i32 i32 i32 i32) (result i32) (i32.const 1024))
    (func (export "resume") (param i32) (result i32)
      (loop $l
        (br_if $l (i32.ne (table.grow $t (ref.null func) (i32.const 1000000)) (i32.const -1))))
      unreachable)
    (func (export "close"))"#,
        "",
    );
    let stage = engine()
        .load_bytes("tables", wat.as_bytes())
        .expect("loads")
        .instantiate("tables", StageOptions::new())
        .expect("instantiates");
    let err = stage.prime().expect_err("refused growth");
    assert!(
        matches!(&err, sluicegate::Error::LimitExceeded { limit: sluicegate::Limit::Memory, detail, .. } if detail.contains("table growth")),
        "{err}"
    );
}

#[test]
fn checklist_16_invalid_utf8_from_a_guest_is_a_clean_fault() {
    // host.log with a "string" of bytes that are not UTF-8.
    let wat = wat_logging_stage(
        r#"(data (i32.const 100) "\ff\fe\fd")"#,
        &format!(
            "(call $log (i32.const 2) (i32.const 100) (i32.const 3) (i32.const 0) (i32.const 0)) {ANSWER_EMPTY}"
        ),
    );
    let stage = engine()
        .load_bytes("mojibake", wat.as_bytes())
        .expect("loads")
        .instantiate("mojibake", StageOptions::new())
        .expect("instantiates");
    let err = stage.prime().expect_err("invalid utf-8");
    assert!(
        matches!(&err, sluicegate::Error::Trap { stage, message, .. } if stage == "mojibake" && message.contains("invalid utf-8")),
        "{err}"
    );
}

#[test]
fn checklist_24_cumulative_credits_past_u32_max_do_not_wrap() {
    let stage = sluicegate_tests::component(sluicegate_tests::artifacts::COUNTER)
        .instantiate("counter", StageOptions::new().config("records", "100000"))
        .expect("instantiates");
    stage.prime().expect("prime");
    let first = stage.resume(u32::MAX).expect("resume").expect("a chunk");
    assert_eq!(first.len(), 100_000, "every record, in one chunk");
    assert_eq!(stage.resume(u32::MAX).expect("resume"), None);
    let stats = stage.stats();
    assert_eq!(
        stats.credits_granted,
        2 * u64::from(u32::MAX),
        "no wrap-around"
    );
    assert!(stats.records <= stats.credits_granted);
}
