//! The scenarios of the conformance kit that every stage goes through. Each one instantiates
//! the checked stage afresh, drives it, closes it upstream-first, and records what it saw
//! against the rules of `docs/protocol.md`; `claims.rs` has the ones a stage opts into.

use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use super::{CheckOptions, CheckReport, RULES};
use crate::engine::Engine;
use crate::error::Error;
use crate::limits::Limits;
use crate::stage::{Stage, StageState};

use super::subject::{Run, SMALL_CREDITS, Subject, nonconforming, probe_after_end, run};

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
    report.execution_path = Some(subject.stage.execution_path().clone());
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

impl Subject {
    /// P3: a stage that was never primed is closed without entering it.
    pub(super) fn close_unprimed(&self, report: &mut CheckReport) {
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
    pub(super) fn pause(&self, report: &mut CheckReport) {
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
    pub(super) fn credit_runs(&self, options: &CheckOptions, report: &mut CheckReport) -> Vec<Run> {
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
    pub(super) fn upstream_end(&self, options: &CheckOptions, report: &mut CheckReport) {
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

    /// S3, R4: every primed instance that did not fault was closed once, without pulling (a
    /// pull while closing would have failed R4 already).
    pub(super) fn closes(&self, report: &mut CheckReport) {
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
    pub(super) fn resources(&self, report: &mut CheckReport) {
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
