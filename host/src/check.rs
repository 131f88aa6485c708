//! `sluicegate check`: the conformance kit. It loads a stage, runs it through scenarios on fresh
//! instances (prime, pause, runs at several credit sizes, a short upstream, close without
//! priming, a probe after the end, a second run for determinism) and reports one line per rule
//! of `docs/protocol.md`, with the evidence it saw or the error that broke the rule.
//!
//! The scenarios are in `check/scenarios.rs` (every stage) and `check/claims.rs` (what a stage
//! claims with a flag), on the subject of `check/subject.rs`; this module holds the options,
//! the report and the attribution of each error to the rule it broke.

mod claims;
mod scenarios;
mod subject;

use std::path::{Path, PathBuf};

use crate::engine::Engine;
use crate::error::{Error, Rule};

/// Credit sizes the stage is run with, each on a fresh instance, unless told otherwise.
pub const DEFAULT_CHECK_CREDITS: [u32; 3] = [1, 7, 256];
/// Records after which a run stops resuming (and closes the stage mid-stream).
pub const DEFAULT_CHECK_MAX_RECORDS: u64 = 10_000;
/// Records the short upstream of the R5 scenario serves before it ends.
pub const DEFAULT_SHORT_UPSTREAM: u64 = 3;
/// Records fed to a stage checked without `--upstream` or `--input`: `"0"`, `"1"`, ...
pub const DEFAULT_INPUT_RECORDS: u64 = 1_000;

/// What to check and how. [`CheckOptions::default`] has every default; the `with_*` methods
/// change one.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct CheckOptions {
    /// Credit sizes to run the stage with ([`DEFAULT_CHECK_CREDITS`]); each gets a fresh
    /// instance and a run to the end or to `max_records`.
    pub credits: Vec<u32>,
    /// Stop a run after this many records ([`DEFAULT_CHECK_MAX_RECORDS`]).
    pub max_records: u64,
    /// Configuration handed to the checked stage.
    pub config: Vec<(String, String)>,
    /// Stage files to chain upstream of it, most upstream first. Without them the stage is fed
    /// `input`, or the records `"0"`, `"1"`, ... ([`DEFAULT_INPUT_RECORDS`] of them).
    pub upstream: Vec<PathBuf>,
    /// The records to feed the stage when there is no `upstream`.
    pub input: Option<Vec<Vec<u8>>>,
    /// Records the short upstream serves before it ends ([`DEFAULT_SHORT_UPSTREAM`]).
    pub short_upstream: u64,
    /// The stage claims to be deterministic: the same input twice gives the same output (K1).
    pub deterministic: bool,
    /// The stage claims to be hot-swappable: swapped mid-stream for a fresh instance of itself,
    /// with its state handed over, it delivers what an unswapped run delivers (H1).
    pub swappable: bool,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            credits: DEFAULT_CHECK_CREDITS.to_vec(),
            max_records: DEFAULT_CHECK_MAX_RECORDS,
            config: Vec::new(),
            upstream: Vec::new(),
            input: None,
            short_upstream: DEFAULT_SHORT_UPSTREAM,
            deterministic: false,
            swappable: false,
        }
    }
}

impl CheckOptions {
    /// Runs the stage with these credit sizes, each on a fresh instance.
    pub fn with_credits(mut self, credits: impl Into<Vec<u32>>) -> Self {
        self.credits = credits.into();
        self
    }

    /// Stops each run after this many records.
    pub fn with_max_records(mut self, records: u64) -> Self {
        self.max_records = records;
        self
    }

    /// Adds one configuration entry for the checked stage.
    pub fn with_config(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.config.push((key.into(), value.into()));
        self
    }

    /// Chains these stage files upstream of the checked one, most upstream first.
    pub fn with_upstream(mut self, files: impl IntoIterator<Item = impl Into<PathBuf>>) -> Self {
        self.upstream = files.into_iter().map(Into::into).collect();
        self
    }

    /// Feeds the stage these records when there is no upstream stage.
    pub fn with_input(mut self, records: Vec<Vec<u8>>) -> Self {
        self.input = Some(records);
        self
    }

    /// The short upstream of the R5 scenario serves this many records.
    pub fn with_short_upstream(mut self, records: u64) -> Self {
        self.short_upstream = records;
        self
    }

    /// Checks the stage's claim to be deterministic (K1).
    pub fn deterministic(mut self, claimed: bool) -> Self {
        self.deterministic = claimed;
        self
    }

    /// Checks the stage's claim to be hot-swappable (H1).
    pub fn swappable(mut self, claimed: bool) -> Self {
        self.swappable = claimed;
        self
    }
}

/// A rule's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// The stage honoured the rule; the evidence says how it was seen.
    Pass,
    /// The stage broke the rule; the error says how.
    Fail,
    /// Not checked; the evidence says why (not claimed, not applicable, not reached).
    Skip,
}

/// One line of a check: a rule, its verdict, and what showed it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RuleCheck {
    /// The rule's identifier in `docs/protocol.md` (`P1`, `C2`, ...).
    pub id: &'static str,
    /// Its short name (`prime`, `credits`, ...).
    pub name: &'static str,
    /// Pass, fail or skip.
    pub verdict: Verdict,
    /// What the kit saw (on pass), or why it did not check (on skip).
    pub evidence: String,
    /// The error that broke the rule (on fail).
    pub error: Option<Error>,
}

/// The rules the kit reports, in order, as `(id, name)`.
pub(crate) const RULES: &[(&str, &str)] = &[
    ("W1", "world"),
    ("P1", "prime"),
    ("P3", "close-unprimed"),
    ("S1", "pause"),
    ("R3", "pause-pulls-nothing"),
    ("C2", "credits"),
    ("C1", "framing"),
    ("E1", "none-sticky"),
    ("S3", "close-once"),
    ("R4", "close-never-pulls"),
    ("R5", "upstream-end"),
    ("X1", "no-traps"),
    ("K1", "determinism"),
    ("H1", "hot-swap"),
    ("K2", "resources"),
];

/// The result of [`check_file`]. Serialises (serde) as `{ path, execution_path, passed, rules:
/// [{ id, name, verdict, evidence, error, error_kind }] }`.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct CheckReport {
    /// The checked file.
    pub path: PathBuf,
    /// One line per rule, in the order of `docs/protocol.md`'s conformance table.
    pub rules: Vec<RuleCheck>,
    /// Which way the stage's calls cross the sandbox boundary, and why (`None` if it did not
    /// load).
    pub execution_path: Option<crate::ExecutionPath>,
}

impl CheckReport {
    fn new(path: &Path) -> Self {
        let rules = RULES
            .iter()
            .map(|&(id, name)| RuleCheck {
                id,
                name,
                verdict: Verdict::Skip,
                evidence: "not reached".into(),
                error: None,
            })
            .collect();
        CheckReport {
            path: path.to_path_buf(),
            rules,
            execution_path: None,
        }
    }

    /// True when no rule failed.
    pub fn passed(&self) -> bool {
        self.rules.iter().all(|r| r.verdict != Verdict::Fail)
    }

    /// The first rule that failed, if any.
    pub fn first_failure(&self) -> Option<&RuleCheck> {
        self.rules.iter().find(|r| r.verdict == Verdict::Fail)
    }

    /// The error of the first rule that failed, if any.
    pub fn first_error(&self) -> Option<&Error> {
        self.first_failure().and_then(|r| r.error.as_ref())
    }

    /// The line of rule `id`.
    pub fn rule(&self, id: &str) -> Option<&RuleCheck> {
        self.rules.iter().find(|r| r.id == id)
    }

    fn line(&mut self, id: &str) -> Option<&mut RuleCheck> {
        self.rules.iter_mut().find(|r| r.id == id)
    }

    /// Records evidence that rule `id` held, unless it already failed.
    pub(crate) fn pass(&mut self, id: &str, evidence: impl Into<String>) {
        if let Some(line) = self.line(id).filter(|l| l.verdict != Verdict::Fail) {
            line.verdict = Verdict::Pass;
            line.evidence = evidence.into();
        }
    }

    /// Records why rule `id` was not checked, unless it already has a verdict.
    pub(crate) fn skip(&mut self, id: &str, why: impl Into<String>) {
        if let Some(line) = self.line(id).filter(|l| l.verdict == Verdict::Skip) {
            line.evidence = why.into();
        }
    }

    /// Records `error`, seen while checking `scenario`, against the rule it broke: a protocol
    /// violation against its own rule, a trap against X1, a limit against K2, anything else
    /// against `scenario`.
    /// The first failure of a rule is kept.
    pub(crate) fn fail(&mut self, scenario: &str, error: Error) {
        let id = attribute(&error, scenario);
        if let Some(line) = self.line(id).filter(|l| l.verdict != Verdict::Fail) {
            line.verdict = Verdict::Fail;
            line.evidence = String::new();
            line.error = Some(error);
        }
    }
}

impl serde::Serialize for CheckReport {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut report = serializer.serialize_struct("CheckReport", 4)?;
        report.serialize_field("path", &self.path.display().to_string())?;
        report.serialize_field(
            "execution_path",
            &self.execution_path.as_ref().map(ToString::to_string),
        )?;
        report.serialize_field("passed", &self.passed())?;
        report.serialize_field("rules", &self.rules)?;
        report.end()
    }
}

impl serde::Serialize for RuleCheck {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut line = serializer.serialize_struct("RuleCheck", 6)?;
        line.serialize_field("id", self.id)?;
        line.serialize_field("name", self.name)?;
        line.serialize_field("verdict", &self.verdict)?;
        line.serialize_field("evidence", &self.evidence)?;
        line.serialize_field("error", &self.error.as_ref().map(ToString::to_string))?;
        line.serialize_field("error_kind", &self.error.as_ref().map(Error::kind))?;
        line.end()
    }
}

/// The rule an error breaks, given the scenario it happened in.
fn attribute<'a>(error: &Error, scenario: &'a str) -> &'a str {
    match error.root_cause() {
        // X5 fires during instantiation: the component is unusable as a stage.
        Error::ProtocolViolation {
            rule: Rule::PullOutsideCall,
            ..
        } => "W1",
        Error::ProtocolViolation { rule, .. } => rule.id(),
        Error::LimitExceeded { .. } => "K2",
        Error::Trap { .. } => "X1",
        _ => scenario,
    }
}

/// Checks the stage component at `path`: every rule of `docs/protocol.md`'s conformance table,
/// each scenario on fresh instances.
pub fn check_file(engine: &Engine, path: &Path, options: &CheckOptions) -> CheckReport {
    let mut report = CheckReport::new(path);
    scenarios::run_all(engine, path, options, &mut report);
    report
}
