//! Issue #13's differential tests: the core-wasm fast path against the component path, which
//! is the reference. Each path has an engine of its own; a stage that takes the fast path must
//! give the same records, states, errors and rules on both.

use std::sync::OnceLock;

use sluicegate::check::{CheckOptions, CheckReport, check_file};
use sluicegate::{Engine, ExecutionPath, StageComponent};

use crate::with_compile_cache;

/// The two ways a stage's calls cross the sandbox boundary: each has an engine of its own,
/// whatever `SLUICEGATE_FAST_PATH` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// The core-wasm fast path, for the components of its shape (`host/src/fast/`).
    Fast,
    /// The component model for every component: the reference.
    Component,
}

impl Path {
    /// Both, the fast path first.
    pub const BOTH: [Path; 2] = [Path::Fast, Path::Component];

    /// The engine of this path, shared by every test in the process, with the compile cache.
    pub fn engine(self) -> &'static Engine {
        static FAST: OnceLock<Engine> = OnceLock::new();
        static COMPONENT: OnceLock<Engine> = OnceLock::new();
        let (cell, fast) = match self {
            Path::Fast => (&FAST, true),
            Path::Component => (&COMPONENT, false),
        };
        cell.get_or_init(|| {
            with_compile_cache(Engine::builder().core_fast_path(fast))
                .build()
                .expect("engine starts")
        })
    }

    /// `path` loaded on this path's engine.
    pub fn load(self, path: &str) -> StageComponent {
        self.engine()
            .load_file(path)
            .unwrap_or_else(|e| panic!("loading {path}: {e}"))
    }
}

/// A chunk's records as the two paths must agree on them: how many, the first and the last,
/// and a checksum of every record.
pub fn summary(chunk: &sluicegate::Chunk) -> String {
    let mut checksum = sluicegate::Checksum::default();
    for record in chunk.records() {
        checksum.add(record);
    }
    let mut records = chunk
        .records()
        .map(|r| String::from_utf8_lossy(r).into_owned());
    let first = records.next();
    let last = records.last().or_else(|| first.clone());
    format!(
        "{} records {first:?}..{last:?} ({:016x})",
        chunk.len(),
        checksum.value()
    )
}

/// An error as the two paths must agree on it: its message, timings blanked, and its rule.
pub fn describe(error: &sluicegate::Error) -> String {
    without_timing(&format!("{error} [rule {:?}]", error.rule()))
}

/// Panics, naming `what` and the first event where they part, unless the fast path's
/// `fast` and the component path's `component` are the same events.
pub fn require_same_on_both_paths(what: &str, fast: &[String], component: &[String]) {
    let cut = |line: Option<&String>| {
        line.map_or("(nothing)".to_string(), |l| l.chars().take(400).collect())
    };
    if let Some(i) = (0..fast.len().max(component.len())).find(|&i| fast.get(i) != component.get(i))
    {
        panic!(
            "{what}: the fast path and the component path disagree at event {i}:\n  fast path: \
             {}\n  component: {}",
            cut(fast.get(i)),
            cut(component.get(i))
        );
    }
}

/// Runs the kit on `path`, and again on the component path if the stage takes the fast path
/// (issue #13's differential test): every line must get the same verdict, evidence and error
/// on both paths, timings aside. Returns the fast path's report.
pub fn check_on_both_paths(path: &str, options: &CheckOptions) -> CheckReport {
    let fast = check_file(Path::Fast.engine(), std::path::Path::new(path), options);
    if fast.execution_path == Some(ExecutionPath::Core) {
        let component = check_file(
            Path::Component.engine(),
            std::path::Path::new(path),
            options,
        );
        require_same_on_both_paths(path, &lines(&fast), &lines(&component));
    }
    fast
}

/// A report's lines as text, each duration (`12.3 ms`) blanked: what two paths must agree on.
fn lines(report: &CheckReport) -> Vec<String> {
    report
        .rules
        .iter()
        .map(|line| {
            let error = line.error.as_ref().map(describe);
            format!(
                "{} {:?}: {} {error:?}",
                line.id,
                line.verdict,
                without_timing(&line.evidence)
            )
        })
        .collect()
}

/// `text` with what depends on the machine's speed blanked (`_`): durations (`12.3 ms`,
/// `1.46ms`, `(3µs,`), and the log budget's clause (`; N log line(s) over the budget … were
/// suppressed`), which the budget's real-time clock decides for a stage logging near it.
fn without_timing(text: &str) -> String {
    // The clause runs from its "; " to the end of the evidence.
    let clause = text
        .find(" log line(s) over the budget")
        .and_then(|at| text[..at].rfind("; "));
    let text = clause.map_or(text, |at| &text[..at]);
    let words: Vec<&str> = text.split(' ').collect();
    let bare = |word: &str| -> (usize, String) {
        let inner = word.trim_start_matches('(');
        let number_len = inner
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(inner.len());
        let unit = inner[number_len..].trim_end_matches([',', ';', ')', '.']);
        (number_len, unit.to_string())
    };
    let units = ["ms", "µs", "us", "ns", "s"];
    words
        .iter()
        .enumerate()
        .map(|(i, word)| {
            let (number_len, unit) = bare(word);
            let next = words.get(i + 1).map(|next| bare(next));
            let timing = number_len > 0
                && (units.contains(&unit.as_str())
                    || (unit.is_empty()
                        && next.is_some_and(|(n, u)| {
                            n == 0 && (units.contains(&u.as_str()) || u == "log")
                        })));
            if timing { "_" } else { word }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::without_timing;

    #[test]
    fn durations_and_the_log_budget_clause_are_blanked_and_nothing_else() {
        assert_eq!(
            without_timing("resume(0) answered in 1.5 ms; stalled for 1.462262ms (3µs, 7 s)"),
            "resume(0) answered in _ ms; stalled for _ _ _ s)"
        );
        assert_eq!(
            without_timing(
                "slowest resume 0.12 ms; 7 instance(s); 14915 log line(s) over the budget of \
                 1000 lines/s were suppressed"
            ),
            "slowest resume _ ms; 7 instance(s)"
        );
        assert_eq!(
            without_timing("120 records, 7 instance(s)"),
            "120 records, 7 instance(s)"
        );
    }
}
