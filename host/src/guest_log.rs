//! Where a stage's words go: its `host.log` calls and its stdout/stderr become `tracing`
//! events carrying the stage's name. Nothing a guest writes reaches the host's own stdout.
//!
//! A stage cannot flood the host's log: every line passes its [`LogGate`] (a budget of lines
//! per second, [`Limits::log_lines_per_s`](crate::Limits::log_lines_per_s)), and messages,
//! fields and stdout/stderr lines are cut to a bounded size. Lines over the budget are counted
//! (in [`StageStats::log_lines_suppressed`](crate::StageStats::log_lines_suppressed)) and
//! announced, never silently lost.

mod pipe;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

pub(crate) use self::pipe::LogPipe;

use crate::bindings::Level;
use crate::limits::EPOCH_TICK;

/// Longest line kept from a guest's stdout/stderr; longer lines are cut, so a guest cannot
/// make the host buffer without bound.
pub(crate) const MAX_LINE_BYTES: usize = 4096;

/// Most `key=value` fields kept from one `host.log` call (the others are not even read).
pub(crate) const MAX_LOG_FIELDS: usize = 16;

/// Longest field key or value kept; longer ones are cut.
const MAX_FIELD_BYTES: usize = 256;

/// Emits one `host.log` line, already admitted by the stage's [`LogGate`], as a tracing event:
/// the message cut to [`MAX_LINE_BYTES`], at most [`MAX_LOG_FIELDS`] fields each cut to
/// [`MAX_FIELD_BYTES`], control characters escaped so that a guest cannot forge log lines.
pub(crate) fn emit(stage: &str, level: Level, message: &str, fields: &[(&str, &str)]) {
    let message = clean(message, MAX_LINE_BYTES);
    let fields = FieldList(&fields[..fields.len().min(MAX_LOG_FIELDS)]);
    match level {
        Level::Trace => tracing::trace!(target: "stage", stage, %fields, "{message}"),
        Level::Debug => tracing::debug!(target: "stage", stage, %fields, "{message}"),
        Level::Info => tracing::info!(target: "stage", stage, %fields, "{message}"),
        Level::Warn => tracing::warn!(target: "stage", stage, %fields, "{message}"),
        Level::Error => tracing::error!(target: "stage", stage, %fields, "{message}"),
    }
}

struct FieldList<'a>(&'a [(&'a str, &'a str)]);

impl std::fmt::Display for FieldList<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (k, v)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(
                f,
                "{}={:?}",
                clean(k, MAX_FIELD_BYTES),
                cut(v, MAX_FIELD_BYTES)
            )?;
        }
        Ok(())
    }
}

/// `text` cut to `max` bytes, with every control character (newline, carriage return, escape,
/// ...) written as a Rust escape (`\n`, `\u{1b}`), so one guest line is one host log line.
pub(crate) fn clean(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    let text = cut(text, max);
    if !text.chars().any(char::is_control) {
        return text;
    }
    let mut escaped = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if c.is_control() {
            escaped.extend(c.escape_default());
        } else {
            escaped.push(c);
        }
    }
    escaped.into()
}

/// `text` cut to at most `max` bytes at a character boundary, saying how much was cut.
fn cut(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if text.len() <= max {
        return text.into();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} more bytes cut)", &text[..end], text.len() - end).into()
}

/// A stage's log budget: a token bucket of lines per second shared by its `host.log`, stdout
/// and stderr (and, fused, by every inner stage), refilled from the engine's tick counter (no
/// clock read), holding at most one second's worth. Lines over budget are counted; the count
/// is announced with the next line that gets through, or when the instance is dropped.
pub(crate) struct LogGate {
    stage: Arc<str>,
    per_sec: u32,
    ticks: Arc<AtomicU64>,
    state: Mutex<GateState>,
    /// The stage's lifetime count of suppressed lines (shared with its counters).
    suppressed_total: Arc<AtomicU64>,
}

struct GateState {
    /// Lines the stage may still log now, in thousandths of a line.
    milli_lines: u64,
    last_tick: u64,
    /// Lines suppressed since the last one that got through.
    suppressed: u64,
}

impl LogGate {
    pub(crate) fn new(
        stage: Arc<str>,
        per_sec: u32,
        ticks: Arc<AtomicU64>,
        suppressed_total: Arc<AtomicU64>,
    ) -> Arc<Self> {
        let last_tick = ticks.load(Ordering::Relaxed);
        Arc::new(LogGate {
            stage,
            per_sec,
            ticks,
            state: Mutex::new(GateState {
                milli_lines: Self::burst(per_sec),
                last_tick,
                suppressed: 0,
            }),
            suppressed_total,
        })
    }

    fn burst(per_sec: u32) -> u64 {
        u64::from(per_sec) * 1000
    }

    /// Takes one line from the budget: `true` if it may be emitted.
    pub(crate) fn admit(&self) -> bool {
        let Ok(mut state) = self.state.lock() else {
            return false;
        };
        let now = self.ticks.load(Ordering::Relaxed);
        if now > state.last_tick {
            let tick_ms = u64::try_from(EPOCH_TICK.as_millis()).unwrap_or(u64::MAX);
            let refill = (now - state.last_tick)
                .saturating_mul(u64::from(self.per_sec))
                .saturating_mul(tick_ms);
            state.milli_lines = state
                .milli_lines
                .saturating_add(refill)
                .min(Self::burst(self.per_sec));
            state.last_tick = now;
        }
        if state.milli_lines < 1000 {
            state.suppressed += 1;
            self.suppressed_total.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        state.milli_lines -= 1000;
        let missed = std::mem::take(&mut state.suppressed);
        drop(state);
        self.announce(missed);
        true
    }

    fn announce(&self, missed: u64) {
        if missed > 0 {
            tracing::warn!(
                target: "stage",
                stage = %self.stage,
                "{missed} log line(s) suppressed: over the stage's budget of {} lines/s",
                self.per_sec
            );
        }
    }
}

impl Drop for LogGate {
    fn drop(&mut self) {
        let missed = self.state.get_mut().map_or(0, |s| s.suppressed);
        self.announce(missed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_keeps_short_text_and_cuts_long_text_at_a_character_boundary() {
        assert_eq!(cut("short", 10), "short");
        let long = "é".repeat(10); // 2 bytes each
        let cut_text = cut(&long, 5);
        assert!(cut_text.starts_with("éé…"), "{cut_text}");
        assert!(cut_text.ends_with("(16 more bytes cut)"), "{cut_text}");
    }

    #[test]
    fn a_gate_admits_its_burst_then_counts_what_it_refuses() {
        let ticks = Arc::new(AtomicU64::new(0));
        let total = Arc::new(AtomicU64::new(0));
        let gate = LogGate::new("s".into(), 3, ticks.clone(), total.clone());
        let admitted = (0..10).filter(|_| gate.admit()).count();
        assert_eq!(admitted, 3);
        assert_eq!(total.load(Ordering::Relaxed), 7);
        // One second of ticks refills the bucket to its burst, not beyond.
        let per_second = 1000 / EPOCH_TICK.as_millis() as u64;
        ticks.store(10 * per_second, Ordering::Relaxed);
        let admitted = (0..10).filter(|_| gate.admit()).count();
        assert_eq!(admitted, 3);
        assert_eq!(total.load(Ordering::Relaxed), 14);
    }
}
