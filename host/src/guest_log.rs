//! Where a stage's words go: its `host.log` calls and its stdout/stderr become `tracing`
//! events carrying the stage's name. Nothing a guest writes reaches the host's own stdout.
//!
//! A stage cannot flood the host's log: every line passes its [`LogGate`] (a budget of lines
//! per second, [`Limits::log_lines_per_s`](crate::Limits::log_lines_per_s)), and messages,
//! fields and stdout/stderr lines are cut to a bounded size. Lines over the budget are counted
//! (in [`StageStats::log_lines_suppressed`](crate::StageStats::log_lines_suppressed)) and
//! announced, never silently lost.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};
use wasmtime_wasi_io::bytes::Bytes;

use crate::bindings::Level;
use crate::limits::EPOCH_TICK;

/// Lines of a call's stderr kept to explain a trap.
const RECENT_LINES: usize = 8;

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

/// A guest's stdout or stderr: complete lines become tracing events; the last few are kept so a
/// trap report can quote them (a Rust guest prints its panic message there before trapping).
#[derive(Clone)]
pub(crate) struct LogPipe {
    inner: Arc<Mutex<PipeState>>,
    /// Something was written since the last `forget`: lets `forget`, called on every call
    /// into the guest, skip the lock in the usual case of a silent guest.
    written: Arc<AtomicBool>,
}

struct PipeState {
    stage: Arc<str>,
    gate: Arc<LogGate>,
    stream: &'static str,
    partial: Vec<u8>,
    /// The last lines written, raw: quoted (escaped) only if a trap needs explaining.
    recent: VecDeque<Vec<u8>>,
}

impl LogPipe {
    pub(crate) fn new(stage: Arc<str>, stream: &'static str, gate: Arc<LogGate>) -> Self {
        LogPipe {
            inner: Arc::new(Mutex::new(PipeState {
                stage,
                gate,
                stream,
                partial: Vec::new(),
                recent: VecDeque::new(),
            })),
            written: Arc::default(),
        }
    }

    /// What the guest last said that explains a trap: a Rust panic's location and message
    /// when there is one, else its last line.
    pub(crate) fn last_words(&self) -> Option<String> {
        let state = self.inner.lock().ok()?;
        let mut lines: Vec<String> = state
            .recent
            .iter()
            .chain(Some(&state.partial).filter(|p| !p.is_empty()))
            .map(|line| clean(&String::from_utf8_lossy(line), MAX_LINE_BYTES).into_owned())
            .collect();
        lines.retain(|l| !l.starts_with("note: run with `RUST_BACKTRACE"));
        match lines.iter().rposition(|l| l.contains("panicked at")) {
            Some(i) => Some(lines[i..].join(" ")),
            None => lines.pop(),
        }
    }

    /// Forgets what was written so far, so a trap report quotes only the current call.
    pub(crate) fn forget(&self) {
        // A plain load first: the common case (nothing written) costs no atomic write.
        if !self.written.load(Ordering::Relaxed) || !self.written.swap(false, Ordering::Relaxed) {
            return;
        }
        if let Ok(mut state) = self.inner.lock() {
            state.partial.clear();
            state.recent.clear();
        }
    }

    fn write_bytes(&self, bytes: &[u8]) {
        self.written.store(true, Ordering::Relaxed);
        let Ok(mut state) = self.inner.lock() else {
            return;
        };
        let mut rest = bytes;
        loop {
            let (line, more) = match rest.iter().position(|&b| b == b'\n') {
                Some(end) => (&rest[..end], Some(&rest[end + 1..])),
                None => (rest, None),
            };
            let room = MAX_LINE_BYTES.saturating_sub(state.partial.len());
            state
                .partial
                .extend_from_slice(&line[..line.len().min(room)]);
            match more {
                Some(after) => {
                    state.flush_line();
                    rest = after;
                }
                None => break,
            }
        }
    }
}

impl PipeState {
    /// Ends the current line: logs it if the budget allows, and keeps it for a trap report
    /// either way, reusing the buffers of older lines (nothing is allocated or formatted for a
    /// line over budget).
    fn flush_line(&mut self) {
        if self.partial.trim_ascii().is_empty() {
            self.partial.clear();
            return;
        }
        if self.gate.admit() {
            let line = String::from_utf8_lossy(&self.partial);
            let line = clean(&line, MAX_LINE_BYTES);
            tracing::warn!(target: "stage", stage = %self.stage, stream = self.stream, "{line}");
        }
        let mut kept = if self.recent.len() == RECENT_LINES {
            self.recent.pop_front().unwrap_or_default()
        } else {
            Vec::new()
        };
        kept.clear();
        kept.extend_from_slice(&self.partial);
        self.partial.clear();
        self.recent.push_back(kept);
    }
}

impl IsTerminal for LogPipe {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogPipe {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }

    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl OutputStream for LogPipe {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        self.write_bytes(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        Ok(MAX_LINE_BYTES)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for LogPipe {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for LogPipe {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.write_bytes(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
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
