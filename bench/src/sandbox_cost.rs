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
            StageOptions::new().limits(Limits {
                cpu_per_call: deadline,
                ..Limits::default()
            }),
        )?;
        let started = Instant::now();
        let stopped = stage.prime().is_err();
        anyhow::ensure!(stopped, "the looping stage was not stopped");
        let over = started.elapsed().saturating_sub(deadline);
        overshoots.push(over.as_secs_f64() * 1000.0);
    }
    Ok(overshoots)
}
