//! A guest's stdout and stderr as the log sees them: complete lines, each admitted by the
//! stage's [`LogGate`] before anything is formatted, cut and escaped; the last few kept raw so
//! that a trap report can quote the guest's last words (a Rust panic message).

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};
use wasmtime_wasi_io::bytes::Bytes;

use super::{LogGate, MAX_LINE_BYTES, clean};

/// Lines of a call's stderr kept to explain a trap.
const RECENT_LINES: usize = 8;

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
