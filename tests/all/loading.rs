//! Bad input at load time gets a clear, typed error naming the stage and the cause; and X5, a
//! pull during instantiation, is refused.

use sluicegate::{Error, Rule, StageOptions};
use sluicegate_tests::engine;

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
