//! Where a stage's words go: its `host.log` calls and its stdout/stderr become `tracing`
//! events carrying the stage's name. Nothing a guest writes reaches the host's own stdout.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};
use wasmtime_wasi_io::bytes::Bytes;

use crate::bindings::Level;

/// Lines of a call's stderr kept to explain a trap.
const RECENT_LINES: usize = 8;

/// Longest line kept from a guest's stdout/stderr; longer lines are cut, so a guest cannot
/// make the host buffer without bound.
pub(crate) const MAX_LINE_BYTES: usize = 4096;

/// Emits one `host.log` line as a tracing event.
pub(crate) fn emit(stage: &str, level: Level, message: &str, fields: &[(String, String)]) {
    let fields = FieldList(fields);
    match level {
        Level::Trace => tracing::trace!(target: "stage", stage, %fields, "{message}"),
        Level::Debug => tracing::debug!(target: "stage", stage, %fields, "{message}"),
        Level::Info => tracing::info!(target: "stage", stage, %fields, "{message}"),
        Level::Warn => tracing::warn!(target: "stage", stage, %fields, "{message}"),
        Level::Error => tracing::error!(target: "stage", stage, %fields, "{message}"),
    }
}

struct FieldList<'a>(&'a [(String, String)]);

impl std::fmt::Display for FieldList<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (k, v)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{k}={v:?}")?;
        }
        Ok(())
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
    stream: &'static str,
    partial: Vec<u8>,
    recent: VecDeque<String>,
}

impl LogPipe {
    pub(crate) fn new(stage: Arc<str>, stream: &'static str) -> Self {
        LogPipe {
            inner: Arc::new(Mutex::new(PipeState {
                stage,
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
        let mut lines: Vec<String> = state.recent.iter().cloned().collect();
        if !state.partial.is_empty() {
            lines.push(String::from_utf8_lossy(&state.partial).into_owned());
        }
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
        for &byte in bytes {
            if byte == b'\n' {
                state.flush_line();
            } else if state.partial.len() < MAX_LINE_BYTES {
                state.partial.push(byte);
            }
        }
    }
}

impl PipeState {
    fn flush_line(&mut self) {
        let line = String::from_utf8_lossy(&self.partial).into_owned();
        self.partial.clear();
        if line.trim().is_empty() {
            return;
        }
        tracing::warn!(target: "stage", stage = %self.stage, stream = self.stream, "{line}");
        if self.recent.len() == RECENT_LINES {
            self.recent.pop_front();
        }
        self.recent.push_back(line);
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
