//! The scenarios of the conformance kit. Each one instantiates the checked stage afresh, with
//! its own upstream (the `--upstream` stages, or host-native records), drives it, closes it
//! upstream-first, and records what it saw against the rules of `docs/protocol.md`.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use market_data::Checksum;

use super::{CheckOptions, CheckReport, DEFAULT_INPUT_RECORDS, RULES};
use crate::chunk::Chunk;
use crate::engine::{Engine, StageComponent};
use crate::error::{Error, Result};
use crate::limits::Limits;
use crate::stage::{Stage, StageOptions, StageState};
use crate::upstream::{Demand, IterUpstream, Upstream};

/// Consecutive resumes with credits that may answer no record before the stage is declared
/// stalled.
const MAX_IDLE_RESUMES: u32 = 1000;

/// Credits of the pause, upstream-end and hot-swap scenarios.
const SMALL_CREDITS: u32 = 7;

/// The hot-swap scenario swaps the stage after every this many chunks.
const SWAP_EVERY_CHUNKS: u64 = 5;

/// Runs every scenario, filling `report`.
pub(super) fn run_all(
    engine: &Engine,
    path: &Path,
    options: &CheckOptions,
    report: &mut CheckReport,
) {
    let subject = match Subject::load(engine, path, options) {
        Ok(subject) => subject,
        Err(error) => {
            report.fail("W1", error);
            for &(id, _) in &RULES[1..] {
                report.skip(id, "the stage did not load");
            }
            return;
        }
    };
    report.pass("W1", subject.world_evidence());
    subject.close_unprimed(report);
    subject.pause(report);
    let runs = subject.credit_runs(options, report);
    subject.upstream_end(options, report);
    subject.determinism(options, &runs, report);
    subject.hot_swap(options, &runs, report);
    subject.closes(report);
    subject.resources(report);
    let calls: u64 = subject
        .instances
        .borrow()
        .iter()
        .map(|s| s.stats().resumes_entered + s.stats().closes_entered)
        .sum();
    report.pass(
        "X1",
        format!("none of {calls} calls into the stage trapped"),
    );
}

/// The checked stage, loaded once and instantiated per scenario.
struct Subject {
    upstream: Vec<StageComponent>,
    stage: StageComponent,
    config: Vec<(String, String)>,
    input: Arc<Vec<Vec<u8>>>,
    /// Every instance of the checked stage made so far (for S3 and K2).
    instances: std::cell::RefCell<Vec<Stage>>,
}

/// What one run to the end (or to the record cap) produced.
#[derive(Debug, Clone)]
struct Run {
    credits: u32,
    records: u64,
    chunks: u64,
    largest: u32,
    finished: bool,
    /// A hash of each record delivered, in order (for K1).
    hashes: Vec<u64>,
}

/// One fresh instance of the checked stage, with its own fresh upstream.
struct Chain {
    upstream: Vec<Stage>,
    stage: Stage,
    /// Records the checked stage received from its upstream.
    records_in: Arc<AtomicU64>,
    /// Pulls the checked stage made.
    pulls: Arc<AtomicU64>,
}

impl Subject {
    fn load(engine: &Engine, path: &Path, options: &CheckOptions) -> Result<Subject> {
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

    fn world_evidence(&self) -> String {
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
    fn chain(&self, limit: Option<u64>) -> Result<Chain> {
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
    fn close(&self, chain: &Chain) -> Result<()> {
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
    fn finish(&self, chain: &Chain, report: &mut CheckReport) {
        if let Err(error) = self.close(chain) {
            report.fail("S3", error);
        }
    }

    /// P3: a stage that was never primed is closed without entering it.
    fn close_unprimed(&self, report: &mut CheckReport) {
        let chain = match self.chain(None) {
            Ok(chain) => chain,
            Err(error) => return report.fail("P3", error),
        };
        match chain.stage.close() {
            Ok(()) if chain.stage.stats().closes_entered == 0 => report.pass(
                "P3",
                "closed before priming without entering the guest; the instance was dropped cleanly",
            ),
            Ok(()) => report.fail(
                "P3",
                nonconforming(chain.stage.name(), "P3 close-unprimed", "close entered an unprimed stage".into()),
            ),
            Err(error) => report.fail("P3", error),
        }
        self.finish(&chain, report);
    }

    /// P1, S1, R3: prime, take some records, pause, and check the stage carries on.
    fn pause(&self, report: &mut CheckReport) {
        let chain = match self.chain(None) {
            Ok(chain) => chain,
            Err(error) => return report.fail("P1", error),
        };
        let outcome = (|| -> std::result::Result<(), (&'static str, Error)> {
            let started = Instant::now();
            let live = chain.prime().map_err(|e| ("P1", e))?;
            let took = started.elapsed();
            report.pass(
                "P1",
                format!(
                    "resume(0) answered {} in {:.1} ms",
                    if live {
                        "an empty chunk"
                    } else {
                        "none (finished while priming)"
                    },
                    took.as_secs_f64() * 1e3
                ),
            );
            if !live {
                report.skip("S1", "the stage finished while priming");
                report.skip("R3", "the stage finished while priming");
                return Ok(());
            }
            let before = chain.stage.resume(SMALL_CREDITS).map_err(|e| ("S1", e))?;
            let Some(before) = before else {
                report.skip(
                    "S1",
                    format!("the stage finished at its first resume({SMALL_CREDITS})"),
                );
                report.skip("R3", "the stage finished before a pause");
                return Ok(());
            };
            let pulled = chain.records_in.load(Relaxed);
            let paused = chain.stage.resume(0).map_err(|e| ("S1", e))?;
            let pulled_in_pause = chain.records_in.load(Relaxed) - pulled;
            let after = chain.stage.resume(SMALL_CREDITS).map_err(|e| ("S1", e))?;
            report.pass(
                "S1",
                format!(
                    "after {} record(s), resume(0) answered {}; the next resume({SMALL_CREDITS}) answered {}",
                    before.len(),
                    if paused.is_some() { "an empty chunk" } else { "none" },
                    match &after {
                        Some(chunk) => format!("{} record(s)", chunk.len()),
                        None => "none".into(),
                    }
                ),
            );
            report.pass(
                "R3",
                format!("the pause pulled {pulled_in_pause} records from upstream"),
            );
            Ok(())
        })();
        if let Err((scenario, error)) = outcome {
            report.fail(scenario, error);
        }
        self.finish(&chain, report);
    }

    /// C2, C1, E1, S3, R4: a run to the end (or the record cap) at each credit size.
    fn credit_runs(&self, options: &CheckOptions, report: &mut CheckReport) -> Vec<Run> {
        let mut runs = Vec::new();
        let mut probed_end = None;
        for &credits in &options.credits {
            let chain = match self.chain(None) {
                Ok(chain) => chain,
                Err(error) => {
                    report.fail("C2", error);
                    continue;
                }
            };
            match chain
                .prime()
                .and_then(|_| run(&chain.stage, credits, options.max_records, &mut |_| Ok(())))
            {
                Ok(r) => {
                    if r.finished && probed_end.is_none() {
                        probed_end = Some(probe_after_end(&chain.stage, credits, report));
                    }
                    runs.push(r);
                }
                Err(error) => report.fail("C2", error),
            }
            self.finish(&chain, report);
        }
        if !runs.is_empty() {
            let summary: Vec<String> = runs
                .iter()
                .map(|r| {
                    format!(
                        "{}: {} records in {} chunks, largest {}{}",
                        r.credits,
                        r.records,
                        r.chunks,
                        r.largest,
                        if r.finished {
                            ", then none"
                        } else {
                            ", stopped at the cap"
                        }
                    )
                })
                .collect();
            report.pass("C2", format!("credits {}", summary.join("; ")));
            let chunks: u64 = runs.iter().map(|r| r.chunks).sum();
            report.pass("C1", format!("all {chunks} chunks were well framed"));
        }
        if probed_end.is_none() && !runs.is_empty() {
            report.skip(
                "E1",
                format!(
                    "no run finished within {} records, so `none` was never answered",
                    options.max_records
                ),
            );
        }
        runs
    }

    /// R5: an upstream that ends after a few records; the stage must finish, not stall.
    fn upstream_end(&self, options: &CheckOptions, report: &mut CheckReport) {
        let short = options.short_upstream;
        let chain = match self.chain(Some(short)) {
            Ok(chain) => chain,
            Err(error) => return report.fail("R5", error),
        };
        match chain.prime().and_then(|_| {
            run(
                &chain.stage,
                SMALL_CREDITS,
                options.max_records,
                &mut |_| Ok(()),
            )
        }) {
            Ok(_) if chain.pulls.load(Relaxed) == 0 => {
                report.skip("R5", "the stage never pulls (a source): nothing to check")
            }
            Ok(r) if r.finished => report.pass(
                "R5",
                format!(
                    "upstream ended after {} record(s); the stage answered {} record(s), then none",
                    chain.records_in.load(Relaxed),
                    r.records
                ),
            ),
            Ok(r) => report.fail(
                "R5",
                nonconforming(
                    chain.stage.name(),
                    "R5 upstream-end",
                    format!(
                        "its upstream ended after {} record(s) but it answered {} records and \
                         had not finished",
                        chain.records_in.load(Relaxed),
                        r.records
                    ),
                ),
            ),
            Err(error) => report.fail("R5", error),
        }
        self.finish(&chain, report);
    }

    /// K1: a deterministic stage gives the same records in two runs on the same input, and
    /// whatever the credit size: the runs at every size agree on the records they share, and
    /// the largest-credit run, repeated on a fresh instance, gives exactly the same records.
    fn determinism(&self, options: &CheckOptions, runs: &[Run], report: &mut CheckReport) {
        if !options.deterministic {
            return report.skip("K1", "not claimed (pass --deterministic to check it)");
        }
        let Some(first) = runs.iter().max_by_key(|r| r.credits) else {
            return report.skip("K1", "no run completed");
        };
        for other in runs {
            if let Some(at) = first_difference(&first.hashes, &other.hashes) {
                let detail = format!(
                    "the same input gave different records at credits {} and {}: they differ \
                     at record #{at}",
                    first.credits, other.credits
                );
                return report.fail(
                    "K1",
                    nonconforming(self.stage.name(), "K1 determinism", detail),
                );
            }
        }
        let chain = match self.chain(None) {
            Ok(chain) => chain,
            Err(error) => return report.fail("K1", error),
        };
        match chain.prime().and_then(|_| {
            run(
                &chain.stage,
                first.credits,
                options.max_records,
                &mut |_| Ok(()),
            )
        }) {
            Ok(again) if again.hashes == first.hashes => {
                let shared = runs.iter().map(|r| r.hashes.len()).min().unwrap_or(0);
                report.pass(
                    "K1",
                    format!(
                        "two runs at credits {} gave the same {} records; the runs at credits \
                         {} agree on their first {shared} records",
                        first.credits,
                        first.records,
                        runs.iter()
                            .map(|r| r.credits.to_string())
                            .collect::<Vec<_>>()
                            .join("/"),
                    ),
                );
            }
            Ok(again) => {
                let at = first_difference(&first.hashes, &again.hashes)
                    .unwrap_or(first.hashes.len().min(again.hashes.len()));
                let detail = format!(
                    "two runs on the same input at credits {} differ at record #{at} ({} then \
                     {} records)",
                    first.credits, first.records, again.records
                );
                report.fail(
                    "K1",
                    nonconforming(self.stage.name(), "K1 determinism", detail),
                );
            }
            Err(error) => report.fail("K1", error),
        }
        self.finish(&chain, report);
    }

    /// H1: a stage that claims to be hot-swappable is swapped for a fresh instance of itself
    /// every few chunks of a run. With its state handed over, the run must deliver what an
    /// unswapped run at the same credits delivers: exactly the same records if it claims to be
    /// deterministic, else as many records.
    fn hot_swap(&self, options: &CheckOptions, runs: &[Run], report: &mut CheckReport) {
        if !options.swappable {
            return report.skip("H1", "not claimed (pass --swap to check it)");
        }
        let credits = SMALL_CREDITS;
        let reference = match runs.iter().find(|r| r.credits == credits) {
            Some(run) => Ok(run.clone()),
            None => self.chain(None).and_then(|chain| {
                let run = chain
                    .prime()
                    .and_then(|_| run(&chain.stage, credits, options.max_records, &mut |_| Ok(())));
                self.close(&chain).and(run)
            }),
        };
        let reference = match reference {
            Ok(run) => run,
            Err(error) => return report.fail("H1", error),
        };
        let chain = match self.chain(None) {
            Ok(chain) => chain,
            Err(error) => return report.fail("H1", error),
        };
        let (mut swaps, mut carried) = (0u64, 0u64);
        let swapped = chain.prime().and_then(|_| {
            run(&chain.stage, credits, options.max_records, &mut |chunks| {
                if chunks % SWAP_EVERY_CHUNKS == 0 {
                    let swap = chain.stage.swap(&self.stage)?;
                    swaps += 1;
                    carried += u64::from(swap.state_carried);
                    if let Some(lost) = swap.state_lost {
                        return Err(nonconforming(
                            chain.stage.name(),
                            "H1 hot-swap",
                            format!("it broke while handing over its state: {lost}"),
                        ));
                    }
                }
                Ok(())
            })
        });
        if swapped.is_ok() && swaps == 0 {
            self.finish(&chain, report);
            return report.skip(
                "H1",
                format!(
                    "the run ended before its first swap (after {SWAP_EVERY_CHUNKS} chunks): \
                     feed it more input to check it"
                ),
            );
        }
        let outcome = match swapped {
            Err(error) => Err(error),
            Ok(run) if options.deterministic && run.hashes != reference.hashes => {
                let at = first_difference(&reference.hashes, &run.hashes)
                    .unwrap_or(reference.hashes.len().min(run.hashes.len()));
                Err(self.swap_mismatch(
                    &reference,
                    &run,
                    swaps,
                    carried,
                    format!("differ at record #{at}"),
                ))
            }
            Ok(run) if run.records != reference.records => Err(self.swap_mismatch(
                &reference,
                &run,
                swaps,
                carried,
                format!("{} records against {}", run.records, reference.records),
            )),
            Ok(run) => Ok(format!(
                "swapped {swaps} time(s) mid-stream at credits {credits} (state handed over {carried} \
                 time(s)): the same {} {} as an unswapped run",
                run.records,
                if options.deterministic {
                    "records"
                } else {
                    "record count"
                }
            )),
        };
        match outcome {
            Ok(evidence) => report.pass("H1", evidence),
            Err(error) => report.fail("H1", error),
        }
        self.finish(&chain, report);
    }

    fn swap_mismatch(
        &self,
        reference: &Run,
        run: &Run,
        swaps: u64,
        carried: u64,
        how: String,
    ) -> Error {
        let hint = if carried < swaps {
            "; it does not hand its state over (export the `state` interface, world \
             `stateful-stage`), so each new instance starts afresh"
        } else {
            ""
        };
        nonconforming(
            self.stage.name(),
            "H1 hot-swap",
            format!(
                "swapped {swaps} time(s) mid-stream, it delivered other records than an unswapped \
                 run ({} then {} records; they {how}){hint}",
                reference.records, run.records
            ),
        )
    }

    /// S3, R4: every primed instance that did not fault was closed once, without pulling (a
    /// pull while closing would have failed R4 already).
    fn closes(&self, report: &mut CheckReport) {
        let instances = self.instances.borrow();
        let primed: Vec<&Stage> = instances
            .iter()
            .filter(|s| s.stats().resumes_entered > 0 && s.state() != StageState::Faulted)
            .collect();
        if primed.is_empty() {
            report.skip(
                "S3",
                "no instance was primed and still healthy at its close",
            );
            report.skip(
                "R4",
                "no instance was primed and still healthy at its close",
            );
        } else if primed
            .iter()
            .all(|s| s.stats().closes_entered == 1 + s.stats().swaps)
        {
            // A swap closes the version it replaces: one close per version.
            let versions: u64 = primed.iter().map(|s| 1 + s.stats().swaps).sum();
            report.pass(
                "S3",
                format!("close entered exactly once on each of {versions} primed instance(s)"),
            );
            report.pass(
                "R4",
                format!("none of {} close(s) pulled from upstream", primed.len()),
            );
        }
    }

    /// K2: memory and time per resume over every instance, under the default limits.
    fn resources(&self, report: &mut CheckReport) {
        let limits = Limits::default();
        let instances = self.instances.borrow();
        let memory = instances
            .iter()
            .map(|s| s.stats().memory_peak_bytes)
            .max()
            .unwrap_or(0);
        let slowest_us = instances
            .iter()
            .map(|s| s.stats().resume_max_us)
            .fold(0.0, f64::max);
        let suppressed: u64 = instances
            .iter()
            .map(|s| s.stats().log_lines_suppressed)
            .sum();
        let logging = match suppressed {
            0 => String::new(),
            n => format!(
                "; {n} log line(s) over the budget of {} lines/s were suppressed",
                limits.log_lines_per_s
            ),
        };
        report.pass(
            "K2",
            format!(
                "peak linear memory {:.1} MiB (limit {:.0} MiB); slowest resume {:.2} ms \
                 (limit {} ms of CPU per call); {} instance(s){logging}",
                memory as f64 / (1 << 20) as f64,
                limits.memory_bytes as f64 / (1 << 20) as f64,
                slowest_us / 1e3,
                limits.cpu_per_call.as_millis(),
                instances.len()
            ),
        );
    }
}

impl Chain {
    /// Primes the upstream stages, then the checked stage; `false` if it finished priming.
    fn prime(&self) -> Result<bool> {
        for stage in &self.upstream {
            stage.prime()?;
        }
        self.stage.prime()
    }
}

/// Resumes `stage` with `credits` until it answers `none` or `max_records` were delivered,
/// calling `after_chunk` with the count of chunks so far after each one.
fn run(
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
fn first_difference(a: &[u64], b: &[u64]) -> Option<usize> {
    a.iter().zip(b).position(|(x, y)| x != y)
}

/// E1: enters `resume` once more after `none`, which the host never does in a pipeline; a
/// conforming stage answers `none` again.
fn probe_after_end(stage: &Stage, credits: u32, report: &mut CheckReport) -> bool {
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

fn nonconforming(stage: &str, check: &'static str, detail: String) -> Error {
    Error::Nonconforming {
        stage: stage.to_string(),
        check,
        detail,
    }
}

/// The checked stage's upstream as the kit sees it: counts pulls and records, and ends after
/// `left` records when set.
struct Tap {
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
