//! Instantiate + prime + close of one stage, with and without the pooling allocator.

use std::time::Instant;

use sluicegate::{Engine, StageOptions};

use crate::stages;

/// Median microseconds to instantiate, prime and close the VWAP stage.
pub fn instantiate_prime_us(engine: &Engine, runs: u32) -> anyhow::Result<f64> {
    let component = engine.load_bytes("vwap", stages::VWAP)?;
    let mut times = Vec::with_capacity(runs as usize);
    for _ in 0..runs {
        let started = Instant::now();
        let stage = component.instantiate("vwap", StageOptions::new())?;
        stage.prime()?;
        stage.close()?;
        drop(stage);
        times.push(started.elapsed().as_nanos() as f64 / 1000.0);
    }
    Ok(crate::percentile(&mut times, 0.5))
}
