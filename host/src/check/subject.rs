//! The conformance kit's subject: the checked stage, loaded once and instantiated afresh for
//! each scenario with its own upstream (the `--upstream` stages, or host-native records seen
//! through a [`Tap`] that counts what the stage pulls), and the helpers the scenarios share.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use super::{CheckOptions, CheckReport, DEFAULT_INPUT_RECORDS};
use crate::checksum::Checksum;
use crate::chunk::Chunk;
use crate::component::StageComponent;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::stage::{Stage, StageOptions};
use crate::upstream::{Demand, IterUpstream, Upstream};

/// Consecutive resumes with credits that may answer no record before the stage is declared
/// stalled.
pub(super) const MAX_IDLE_RESUMES: u32 = 1000;

/// Credits of the pause, upstream-end and hot-swap scenarios.
pub(super) const SMALL_CREDITS: u32 = 7;

/// The hot-swap scenario swaps the stage after every this many chunks.
pub(super) const SWAP_EVERY_CHUNKS: u64 = 5;

/// The checked stage, loaded once and instantiated per scenario.
pub(super) struct Subject {
    pub(super) upstream: Vec<StageComponent>,
    pub(super) stage: StageComponent,
    pub(super) config: Vec<(String, String)>,
    pub(super) input: Arc<Vec<Vec<u8>>>,
    /// Every instance of the checked stage made so far (for S3 and K2).
    pub(super) instances: std::cell::RefCell<Vec<Stage>>,
}

/// What one run to the end (or to the record cap) produced.
#[derive(Debug, Clone)]
pub(super) struct Run {
    pub(super) credits: u32,
    pub(super) records: u64,
    pub(super) chunks: u64,
    pub(super) largest: u32,
    pub(super) finished: bool,
    /// A hash of each record delivered, in order (for K1).
    pub(super) hashes: Vec<u64>,
}

/// One fresh instance of the checked stage, with its own fresh upstream.
pub(super) struct Chain {
    pub(super) upstream: Vec<Stage>,
    pub(super) stage: Stage,
    /// Records the checked stage received from its upstream.
    pub(super) records_in: Arc<AtomicU64>,
    /// Pulls the checked stage made.
    pub(super) pulls: Arc<AtomicU64>,
}

impl Subject {
    pub(super) fn load(engine: &Engine, path: &Path, options: &CheckOptions) -> Result<Subject> {
        let upstream = options
            .upstream
            .iter()
            .map(|file| engine.load_file(file))
            .collect::<Result<Vec<_>>>()?;
        let stage = engine.load_file(path)?;
        let input = options.input.clone().unwrap_or_else(|| {
            (0..DEFAULT_INPUT_RECORDS)
                .map(|n| n.to_string().into_bytes())
                .collect()
        });
        let subject = Subject {
            upstream,
            stage,
            config: options.config.clone(),
            input: Arc::new(input),
            instances: std::cell::RefCell::new(Vec::new()),
        };
        // Instantiation runs start functions and links every import: part of W1.
        let chain = subject.chain(None)?;
        subject.close(&chain)?;
        Ok(subject)
    }

    pub(super) fn world_evidence(&self) -> String {
        let imports = self.stage.imports();
        let (ours, other): (Vec<&String>, Vec<&String>) = imports
            .iter()
            .partition(|name| name.starts_with("sluicegate:stage/"));
        let wasi = other.iter().filter(|n| n.starts_with("wasi:")).count();
        let mut evidence = format!(
            "exports sluicegate:stage/generator@0.1.0; imports {}",
            if ours.is_empty() {
                "nothing of sluicegate".to_string()
            } else {
                ours.iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        );
        if wasi > 0 {
            evidence.push_str(&format!(
                " and {wasi} WASI interface(s), served deny-by-default"
            ));
        }
        evidence
    }

    /// A fresh instance on a fresh upstream; `limit` ends the upstream after that many records.
    pub(super) fn chain(&self, limit: Option<u64>) -> Result<Chain> {
        let mut upstream: Vec<Stage> = Vec::new();
        for component in &self.upstream {
            let mut options = StageOptions::new();
            if let Some(previous) = upstream.last() {
                options = options.upstream(previous.clone());
            }
            upstream.push(component.instantiate(component.name(), options)?);
        }
        let inner: Box<dyn Upstream> = match upstream.last() {
            Some(last) => Box::new(last.clone()),
            None => {
                let input = self.input.clone();
                Box::new(IterUpstream::new(
                    (0..input.len()).map(move |i| input[i].clone()),
                ))
            }
        };
        let (records_in, pulls) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let tap = Tap {
            inner,
            left: limit,
            records: records_in.clone(),
            pulls: pulls.clone(),
        };
        let mut options = StageOptions::new().upstream(tap);
        for (key, value) in &self.config {
            options = options.config(key, value);
        }
        let stage = self.stage.instantiate(self.stage.name(), options)?;
        self.instances.borrow_mut().push(stage.clone());
        Ok(Chain {
            upstream,
            stage,
            records_in,
            pulls,
        })
    }

    /// Closes a chain upstream-first; every stage is closed, the first error is returned.
    pub(super) fn close(&self, chain: &Chain) -> Result<()> {
        let upstream = chain
            .upstream
            .iter()
            .map(Stage::close)
            .find_map(Result::err);
        let stage = chain.stage.close();
        match (upstream, stage) {
            (_, Err(e)) | (Some(e), Ok(())) => Err(e),
            (None, Ok(())) => Ok(()),
        }
    }

    /// Closes `chain`, recording a failed close against the close rules.
    pub(super) fn finish(&self, chain: &Chain, report: &mut CheckReport) {
        if let Err(error) = self.close(chain) {
            report.fail("S3", error);
        }
    }
}

impl Chain {
    /// Primes the upstream stages, then the checked stage; `false` if it finished priming.
    pub(super) fn prime(&self) -> Result<bool> {
        for stage in &self.upstream {
            stage.prime()?;
        }
        self.stage.prime()
    }
}

/// Resumes `stage` with `credits` until it answers `none` or `max_records` were delivered,
/// calling `after_chunk` with the count of chunks so far after each one.
pub(super) fn run(
    stage: &Stage,
    credits: u32,
    max_records: u64,
    after_chunk: &mut dyn FnMut(u64) -> Result<()>,
) -> Result<Run> {
    let mut r = Run {
        credits,
        records: 0,
        chunks: 0,
        largest: 0,
        finished: false,
        hashes: Vec::new(),
    };
    let (started, mut idle) = (Instant::now(), 0u32);
    while r.records < max_records {
        if idle >= MAX_IDLE_RESUMES {
            return Err(Error::Stalled {
                stage: stage.name().to_string(),
                after: started.elapsed(),
            });
        }
        let Some(chunk) = stage.resume(credits)? else {
            r.finished = true;
            break;
        };
        idle = if chunk.is_empty() { idle + 1 } else { 0 };
        r.chunks += 1;
        r.records += u64::from(chunk.len());
        r.largest = r.largest.max(chunk.len());
        r.hashes.extend(chunk.records().map(|record| {
            let mut hash = Checksum::default();
            hash.add(record);
            hash.value()
        }));
        after_chunk(r.chunks)?;
    }
    Ok(r)
}

/// The first index where two record sequences differ, over the records both have.
pub(super) fn first_difference(a: &[u64], b: &[u64]) -> Option<usize> {
    a.iter().zip(b).position(|(x, y)| x != y)
}

/// E1: enters `resume` once more after `none`, which the host never does in a pipeline; a
/// conforming stage answers `none` again.
pub(super) fn probe_after_end(stage: &Stage, credits: u32, report: &mut CheckReport) -> bool {
    match stage.resume_after_end(credits) {
        Ok(None) => report.pass(
            "E1",
            format!("after none, resume({credits}) entered once more answered none again"),
        ),
        Ok(Some(chunk)) => report.fail(
            "E1",
            nonconforming(
                stage.name(),
                "E1 none-sticky",
                format!(
                    "after answering none, resume({credits}) answered a chunk of {} record(s)",
                    chunk.len()
                ),
            ),
        ),
        Err(error) => report.fail("E1", error),
    }
    true
}

pub(super) fn nonconforming(stage: &str, check: &'static str, detail: String) -> Error {
    Error::Nonconforming {
        stage: stage.to_string(),
        check,
        detail,
    }
}

/// The checked stage's upstream as the kit sees it: counts pulls and records, and ends after
/// `left` records when set.
pub(super) struct Tap {
    inner: Box<dyn Upstream>,
    left: Option<u64>,
    records: Arc<AtomicU64>,
    pulls: Arc<AtomicU64>,
}

impl Upstream for Tap {
    fn pull(&mut self, demand: Demand) -> Result<Option<Chunk>> {
        self.pulls.fetch_add(1, Relaxed);
        let credits = match self.left {
            Some(0) if demand.records > 0 => return Ok(None),
            Some(left) => demand.records.min(u32::try_from(left).unwrap_or(u32::MAX)),
            None => demand.records,
        };
        let answer = self
            .inner
            .pull(Demand::records(credits).with_max_bytes(demand.bytes))?;
        if let Some(chunk) = &answer {
            let n = u64::from(chunk.len());
            self.records.fetch_add(n, Relaxed);
            if let Some(left) = self.left.as_mut() {
                *left = left.saturating_sub(n);
            }
        }
        Ok(answer)
    }
}
