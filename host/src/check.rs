//! `sluicegate check`: load a stage, check it implements the world, and drive it through
//! prime → pause → resume → close, reporting each step with its evidence or the rule it broke.

use std::path::{Path, PathBuf};

use crate::engine::Engine;
use crate::error::Error;
use crate::stage::{Stage, StageOptions};

/// Credits granted on each resume unless told otherwise.
pub const DEFAULT_CHECK_CREDITS: u32 = 64;
/// Records after which the check stops resuming (and closes mid-stream).
pub const DEFAULT_CHECK_MAX_RECORDS: u64 = 10_000;

/// Consecutive resumes with credits that may answer no record before the stage is declared
/// stalled.
const MAX_IDLE_RESUMES: u32 = 1000;

/// What to check and how.
#[derive(Debug, Clone)]
pub struct CheckOptions {
    /// Credits granted on each resume ([`DEFAULT_CHECK_CREDITS`]).
    pub credits: u32,
    /// Stop after this many records ([`DEFAULT_CHECK_MAX_RECORDS`]).
    pub max_records: u64,
    /// Configuration handed to the checked stage.
    pub config: Vec<(String, String)>,
    /// Stage files to chain upstream of it, most upstream first.
    pub upstream: Vec<PathBuf>,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            credits: DEFAULT_CHECK_CREDITS,
            max_records: DEFAULT_CHECK_MAX_RECORDS,
            config: Vec::new(),
            upstream: Vec::new(),
        }
    }
}

/// One step of a check: its name and what it showed.
#[derive(Debug, Clone)]
pub struct CheckStep {
    /// `load`, `prime`, `pause`, `resume` or `close`.
    pub name: &'static str,
    /// The evidence on success, the error on failure.
    pub outcome: Result<String, Error>,
}

/// The result of [`check_file`].
#[derive(Debug, Clone)]
pub struct CheckReport {
    /// The checked file.
    pub path: PathBuf,
    /// The steps, in order; the first failure ends the driving, but close always runs.
    pub steps: Vec<CheckStep>,
}

impl CheckReport {
    /// True when every step passed.
    pub fn passed(&self) -> bool {
        self.steps.iter().all(|s| s.outcome.is_ok())
    }

    /// The first error, if any.
    pub fn first_error(&self) -> Option<&Error> {
        self.steps.iter().find_map(|s| s.outcome.as_ref().err())
    }
}

/// Checks the stage component at `path`.
pub fn check_file(engine: &Engine, path: &Path, options: &CheckOptions) -> CheckReport {
    let mut report = CheckReport {
        path: path.to_path_buf(),
        steps: Vec::new(),
    };
    let mut step = |name, outcome| report.steps.push(CheckStep { name, outcome });
    let chain = match build_chain(engine, path, options) {
        Ok(chain) => chain,
        Err(e) => {
            step("load", Err(e));
            return report;
        }
    };
    step(
        "load",
        Ok("implements sluicegate:stage/stage@0.1.0".to_string()),
    );
    drive(&chain, options, &mut step);
    // Close every stage upstream-first whatever happened; report the first failure.
    let closed = chain.iter().map(Stage::close).find_map(Result::err);
    match closed {
        None => step("close", Ok("cleanup ran once on every primed stage".into())),
        Some(e) => step("close", Err(e)),
    }
    report
}

fn build_chain(engine: &Engine, path: &Path, options: &CheckOptions) -> Result<Vec<Stage>, Error> {
    let mut chain: Vec<Stage> = Vec::new();
    for (i, file) in options
        .upstream
        .iter()
        .chain(Some(&path.to_path_buf()))
        .enumerate()
    {
        let component = engine.load_file(file)?;
        let mut stage_options = StageOptions::new();
        if i == options.upstream.len() {
            for (k, v) in &options.config {
                stage_options = stage_options.config(k, v);
            }
        }
        if let Some(previous) = chain.last() {
            stage_options = stage_options.upstream(previous.clone());
        }
        chain.push(component.instantiate(component.name(), stage_options)?);
    }
    Ok(chain)
}

fn drive(
    chain: &[Stage],
    options: &CheckOptions,
    step: &mut impl FnMut(&'static str, Result<String, Error>),
) {
    if let Some(e) = chain.iter().map(Stage::prime).find_map(Result::err) {
        return step("prime", Err(e));
    }
    step("prime", Ok("resume(0) answered no records".into()));
    let Some(stage) = chain.last() else { return };
    match stage.resume(0) {
        Ok(Some(_)) => step("pause", Ok("resume(0) answered an empty chunk".into())),
        Ok(None) => step("pause", Ok("resume(0) answered none: exhausted".into())),
        Err(e) => return step("pause", Err(e)),
    }
    let (mut resumes, mut records, mut bytes) = (0u64, 0u64, 0u64);
    let (started, mut idle) = (std::time::Instant::now(), 0u32);
    let finished = loop {
        if records >= options.max_records {
            break false;
        }
        if idle >= MAX_IDLE_RESUMES {
            let stage = stage.name().to_string();
            let after = started.elapsed();
            return step("resume", Err(Error::Stalled { stage, after }));
        }
        match stage.resume(options.credits) {
            Ok(Some(chunk)) => {
                idle = if chunk.is_empty() { idle + 1 } else { 0 };
                resumes += 1;
                records += u64::from(chunk.len());
                bytes += chunk.as_bytes().len() as u64;
            }
            Ok(None) => break true,
            Err(e) => return step("resume", Err(e)),
        }
    };
    let end = if finished {
        "exhausted"
    } else {
        "stopped mid-stream"
    };
    step(
        "resume",
        Ok(format!(
            "{resumes} resumes of {} credits: {records} records, {bytes} bytes, {end}",
            options.credits
        )),
    );
}
