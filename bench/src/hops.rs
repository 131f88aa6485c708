//! The cost of one hop: chains of 1, 2, 4 and 8 pass-through stages, one record per chunk,
//! records of 64 B to 64 KiB; the per-hop cost is the slope over depth. The floor is a raw
//! wasmtime component call returning a list of the same size, with no sluicegate around it.

use std::time::Instant;

use sluicegate::StageComponent;
use wasmtime::component::{Component, Linker};
use wasmtime::{Engine, Store};

pub const DEPTHS: [usize; 4] = [1, 2, 4, 8];
/// Fused chains need two stages at least.
pub const FUSED_DEPTHS: [usize; 3] = [2, 4, 8];

pub struct HopRow {
    pub bytes: usize,
    /// ns per chunk through each depth of [`DEPTHS`].
    pub per_chunk_ns: Vec<f64>,
    /// Least-squares slope over depth: ns added per hop.
    pub per_hop_ns: f64,
    /// The same slope for chains fused into one component, at [`FUSED_DEPTHS`].
    pub fused_per_hop_ns: f64,
    /// A raw component call answering `some(list)` of `bytes` bytes, ns.
    pub floor_ns: f64,
    /// ns per hop of CPython relay generators, (passing the chunk on, building a new one);
    /// `None` without python3.
    pub cpython_per_hop_ns: Option<(f64, f64)>,
}

pub fn measure(
    engine: &sluicegate::Engine,
    passthrough: &StageComponent,
    bytes: usize,
    iters: u32,
) -> anyhow::Result<HopRow> {
    let mut per_chunk_ns = Vec::new();
    for depth in DEPTHS {
        per_chunk_ns.push(chain_ns(passthrough, depth, bytes, iters)?);
    }
    let mut fused_per_chunk_ns = Vec::new();
    for depth in FUSED_DEPTHS {
        let parts: Vec<(String, Vec<u8>)> = (0..depth)
            .map(|i| (format!("hop{i}"), crate::stages::PASSTHROUGH.to_vec()))
            .collect();
        let fused = engine.load_fused("fused-hops", &parts)?;
        fused_per_chunk_ns.push(chain_ns(&fused, 1, bytes, iters)?);
    }
    Ok(HopRow {
        bytes,
        per_hop_ns: slope(&DEPTHS, &per_chunk_ns),
        per_chunk_ns,
        fused_per_hop_ns: slope(&FUSED_DEPTHS, &fused_per_chunk_ns),
        floor_ns: floor_ns(bytes, iters)?,
        cpython_per_hop_ns: match (
            cpython_per_hop_ns("pass", bytes, iters)?,
            cpython_per_hop_ns("map", bytes, iters)?,
        ) {
            (Some(pass), Some(map)) => Some((pass, map)),
            _ => None,
        },
    })
}

/// The per-hop slope of CPython relay generators (`bench/python/hops.py`) over [`DEPTHS`];
/// `None` when python3 is not installed.
fn cpython_per_hop_ns(relay: &str, bytes: usize, iters: u32) -> anyhow::Result<Option<f64>> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/hops.py");
    let mut args = vec![
        script.to_string(),
        relay.to_string(),
        bytes.to_string(),
        iters.to_string(),
    ];
    args.extend(DEPTHS.iter().map(usize::to_string));
    let Ok(output) = std::process::Command::new("python3").args(&args).output() else {
        return Ok(None);
    };
    anyhow::ensure!(
        output.status.success(),
        "python3 hops.py failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    let per_chunk: Vec<f64> = report
        .get("per_chunk_ns")
        .and_then(serde_json::Value::as_array)
        .map(|a| a.iter().filter_map(serde_json::Value::as_f64).collect())
        .unwrap_or_default();
    anyhow::ensure!(
        per_chunk.len() == DEPTHS.len(),
        "hops.py printed {} figures for {} depths: {report}",
        per_chunk.len(),
        DEPTHS.len()
    );
    Ok(Some(slope(&DEPTHS, &per_chunk)))
}

fn chain_ns(
    passthrough: &StageComponent,
    depth: usize,
    bytes: usize,
    iters: u32,
) -> anyhow::Result<f64> {
    let chain = crate::chain::primed_chain(passthrough, depth, bytes)?;
    let tail = chain.last().ok_or_else(|| anyhow::anyhow!("empty chain"))?;
    for _ in 0..iters / 10 {
        tail.resume(1)?;
    }
    let started = Instant::now();
    for _ in 0..iters {
        tail.resume(1)?;
    }
    let ns = started.elapsed().as_nanos() as f64 / f64::from(iters);
    for stage in &chain {
        stage.close()?;
    }
    Ok(ns)
}

fn slope(depths: &[usize], per_depth: &[f64]) -> f64 {
    let xs: Vec<f64> = depths.iter().map(|&d| d as f64).collect();
    let n = xs.len() as f64;
    let (mx, my) = (
        xs.iter().sum::<f64>() / n,
        per_depth.iter().sum::<f64>() / n,
    );
    let cov: f64 = xs
        .iter()
        .zip(per_depth)
        .map(|(x, y)| (x - mx) * (y - my))
        .sum();
    let var: f64 = xs.iter().map(|x| (x - mx) * (x - mx)).sum();
    cov / var
}

/// A raw call of a WAT component whose `resume` answers `some(list)` of `bytes` bytes.
fn floor_ns(bytes: usize, iters: u32) -> anyhow::Result<f64> {
    raw_floor_ns(bytes, iters).map_err(|e| anyhow::anyhow!("floor measurement: {e:#}"))
}

fn raw_floor_ns(bytes: usize, iters: u32) -> wasmtime::Result<f64> {
    let pages = bytes / 65536 + 2;
    let wat = format!(
        r#"(component
  (core module $m
    (memory (export "memory") {pages})
    (func (export "realloc") (param i32 i32 i32 i32) (result i32) (i32.const 0))
    (func (export "resume") (param i32) (result i32)
      (i32.store (i32.const 32) (i32.const 1))
      (i32.store (i32.const 36) (i32.const 1024))
      (i32.store (i32.const 40) (i32.const {bytes}))
      (i32.const 32)))
  (core instance $i (instantiate $m))
  (func $resume (param "credits" u32) (result (option (list u8)))
    (canon lift (core func $i "resume") (memory (core memory $i "memory"))
      (realloc (core func $i "realloc"))))
  (instance $g (export "resume" (func $resume)))
  (export "sluicegate:stage/generator@0.1.0" (instance $g)))"#
    );
    let engine = Engine::default();
    let component = Component::new(&engine, wat)?;
    let mut store = Store::new(&engine, ());
    let instance = Linker::new(&engine).instantiate(&mut store, &component)?;
    let generator = instance
        .get_export_index(&mut store, None, "sluicegate:stage/generator@0.1.0")
        .ok_or_else(|| wasmtime::format_err!("no generator export"))?;
    let index = instance
        .get_export_index(&mut store, Some(&generator), "resume")
        .ok_or_else(|| wasmtime::format_err!("no resume export"))?;
    let resume = instance.get_typed_func::<(u32,), (Option<Vec<u8>>,)>(&mut store, &index)?;
    for _ in 0..iters / 10 {
        resume.call(&mut store, (1,))?;
    }
    let started = Instant::now();
    for _ in 0..iters {
        std::hint::black_box(resume.call(&mut store, (1,))?);
    }
    Ok(started.elapsed().as_nanos() as f64 / f64::from(iters))
}
