//! What the sandbox's CPU limits cost, and how far past its deadline a looping stage runs.

use std::time::{Duration, Instant};

use sluicegate::{Engine, Limits, StageOptions};

/// Milliseconds by which a looping stage overran a `deadline` CPU budget, one per run.
pub fn overshoot_ms(engine: &Engine, deadline: Duration, runs: u32) -> anyhow::Result<Vec<f64>> {
    let wat = r#"(component
  (core module $m
    (memory (export "memory") 1)
    (func (export "realloc") (param i32 i32 i32 i32) (result i32) (i32.const 0))
    (func (export "resume") (param i32) (result i32) (loop $l (br $l)) (i32.const 0))
    (func (export "close")))
  (core instance $i (instantiate $m))
  (func $resume (param "credits" u32) (result (option (list u8)))
    (canon lift (core func $i "resume") (memory (core memory $i "memory"))
      (realloc (core func $i "realloc"))))
  (func $close (canon lift (core func $i "close")))
  (instance $g (export "resume" (func $resume)) (export "close" (func $close)))
  (export "sluicegate:stage/generator@0.1.0" (instance $g)))"#;
    let component = engine.load_bytes("spinner", wat.as_bytes())?;
    let mut overshoots = Vec::new();
    for _ in 0..runs {
        let stage = component.instantiate(
            "spinner",
            StageOptions::new().limits(Limits::default().with_cpu_per_call(deadline)),
        )?;
        let started = Instant::now();
        let stopped = stage.prime().is_err();
        anyhow::ensure!(stopped, "the looping stage was not stopped");
        let over = started.elapsed().saturating_sub(deadline);
        overshoots.push(over.as_secs_f64() * 1000.0);
    }
    Ok(overshoots)
}

/// Nanoseconds per `host.log` call of a 64-byte message with two fields, over the stage's log
/// budget (refused before anything is read) and within it (read, escaped, handed to
/// `tracing`, which has no subscriber here): `(over, within)`.
pub fn log_line_ns(engine: &Engine) -> anyhow::Result<(f64, f64)> {
    const CALLS: u32 = 200_000;
    let wat = format!(
        r#"(component
  (import "sluicegate:stage/host@0.1.0" (instance $host
    (type $l (enum "trace" "debug" "info" "warn" "error"))
    (export "level" (type $level (eq $l)))
    (export "log" (func (param "level" $level) (param "message" string)
      (param "fields" (list (tuple string string)))))))
  (core module $mem
    (memory (export "memory") 1)
    (data (i32.const 256) "a log line of sixty-four bytes, as a busy stage would write it..")
    (data (i32.const 512) "key1")
    (data (i32.const 516) "value one")
    (data (i32.const 528) "key2")
    (data (i32.const 532) "value two")
    ;; the fields list: two (ptr, len, ptr, len) tuples
    (data (i32.const 600) "\00\02\00\00\04\00\00\00\04\02\00\00\09\00\00\00\10\02\00\00\04\00\00\00\14\02\00\00\09\00\00\00")
    (func (export "realloc") (param i32 i32 i32 i32) (result i32) (i32.const 4096)))
  (core instance $m (instantiate $mem))
  (core func $log (canon lower (func $host "log") (memory (core memory $m "memory"))
    (realloc (core func $m "realloc"))))
  (core module $main
    (import "host" "log" (func $log (param i32 i32 i32 i32 i32)))
    (import "mem" "memory" (memory 1))
    (func (export "resume") (param $credits i32) (result i32)
      (local $n i32)
      (if (i32.gt_u (local.get $credits) (i32.const 0))
        (then
          (loop $l
            (call $log (i32.const 2) (i32.const 256) (i32.const 64) (i32.const 600) (i32.const 2))
            (local.set $n (i32.add (local.get $n) (i32.const 1)))
            (br_if $l (i32.lt_u (local.get $n) (i32.const {CALLS}))))))
      (i32.store (i32.const 32) (i32.const 1))
      (i64.store (i32.const 36) (i64.const 0))
      (i32.const 32))
    (func (export "close")))
  (core instance $i (instantiate $main
    (with "host" (instance (export "log" (func $log))))
    (with "mem" (instance (export "memory" (memory $m "memory"))))))
  (func $resume (param "credits" u32) (result (option (list u8)))
    (canon lift (core func $i "resume") (memory (core memory $m "memory"))
      (realloc (core func $m "realloc"))))
  (func $close (canon lift (core func $i "close")))
  (instance $g (export "resume" (func $resume)) (export "close" (func $close)))
  (export "sluicegate:stage/generator@0.1.0" (instance $g)))"#
    );
    let component = engine.load_bytes("logger", wat.as_bytes())?;
    let mut per_call = Vec::new();
    for budget in [1, u32::MAX] {
        let stage = component.instantiate(
            "logger",
            StageOptions::new().limits(
                Limits::default()
                    .with_log_lines_per_s(budget)
                    .with_cpu_per_call(Duration::from_secs(600)),
            ),
        )?;
        stage.prime()?;
        let started = Instant::now();
        stage.resume(1)?;
        per_call.push(started.elapsed().as_secs_f64() * 1e9 / f64::from(CALLS));
        stage.close()?;
    }
    Ok((per_call[0], per_call[1]))
}
