//! What a guest may do while it runs: the store data of one stage instance, and the host
//! functions it imports (`upstream.pull`, `host.log`, `host.config`, WASI with nothing
//! granted). Rules R2–R5 and X4–X5 of docs/protocol.md are enforced here; the state machine
//! in `stage.rs` reads what happened when the call returns.

use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::bindings::{HostImports, Level, TypesImports, UpstreamImports};
use crate::error::{Error, Rule};
use crate::guest_log::{self, LogPipe};
use crate::upstream::Upstream;

/// What the host is waiting for the guest to finish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Serving {
    /// Not inside any export (instantiation, or between calls).
    Nothing,
    /// Inside `resume(credits)`.
    Resume(u32),
    /// Inside `close()`.
    Close,
}

/// What went wrong at the boundary during one call, collected for the state machine.
#[derive(Debug, Default)]
pub(crate) struct CallReport {
    /// The first rule the guest broke, with details.
    pub(crate) violation: Option<(Rule, String)>,
    /// The upstream's error, if it faulted while serving a pull (X4).
    pub(crate) upstream_fault: Option<Error>,
}

/// The data of one stage's store.
pub(crate) struct StageCtx {
    name: Arc<str>,
    serving: Serving,
    report: CallReport,
    upstream: Box<dyn Upstream>,
    upstream_done: bool,
    config: Vec<(String, String)>,
    stderr: LogPipe,
    wasi: WasiCtx,
    table: ResourceTable,
}

impl StageCtx {
    pub(crate) fn new(
        name: Arc<str>,
        upstream: Box<dyn Upstream>,
        config: Vec<(String, String)>,
    ) -> Self {
        let stdout = LogPipe::new(name.clone(), "stdout");
        let stderr = LogPipe::new(name.clone(), "stderr");
        // Deny by default: no preopens, env, args or network; stdin closed.
        let wasi = WasiCtx::builder()
            .stdout(stdout)
            .stderr(stderr.clone())
            .build();
        StageCtx {
            name,
            serving: Serving::Nothing,
            report: CallReport::default(),
            upstream,
            upstream_done: false,
            config,
            stderr,
            wasi,
            table: ResourceTable::new(),
        }
    }

    /// Marks the start of a call into the guest.
    pub(crate) fn begin(&mut self, serving: Serving) {
        self.serving = serving;
        self.report = CallReport::default();
        self.stderr.forget();
    }

    /// Marks the end of a call and hands over what happened at the boundary.
    pub(crate) fn end(&mut self) -> CallReport {
        self.serving = Serving::Nothing;
        std::mem::take(&mut self.report)
    }

    /// What the guest last wrote to stderr that explains a trap (a Rust panic message).
    pub(crate) fn last_words(&self) -> Option<String> {
        self.stderr.last_words()
    }

    fn violate(&mut self, rule: Rule, detail: String) {
        if self.report.violation.is_none() {
            self.report.violation = Some((rule, detail));
        }
    }
}

impl UpstreamImports for StageCtx {
    fn pull(&mut self, credits: u32) -> wasmtime::Result<Option<Vec<u8>>> {
        match self.serving {
            Serving::Nothing => {
                self.violate(
                    Rule::PullOutsideCall,
                    format!("pull({credits}) while the host is not inside resume or close"),
                );
                wasmtime::bail!("protocol violation: pull outside a call");
            }
            Serving::Close => {
                // R4: refuse, let cleanup go on, report once close returns.
                self.violate(
                    Rule::PullWhileClosing,
                    format!("pull({credits}) while closing; the host answered none"),
                );
                return Ok(None);
            }
            Serving::Resume(0) if credits > 0 => {
                self.violate(
                    Rule::PullWithoutDemand,
                    format!("pull({credits}) while serving resume(0); only pull(0) is allowed"),
                );
                wasmtime::bail!("protocol violation: pull without demand");
            }
            Serving::Resume(_) => {}
        }
        if self.upstream_done {
            return Ok(None); // R5
        }
        match self.upstream.pull(credits) {
            Ok(Some(chunk)) => Ok(Some(chunk.into_bytes())),
            Ok(None) => {
                self.upstream_done = true;
                Ok(None)
            }
            Err(error) => {
                // X4: the guest sees the end of its input; the state machine fails the call.
                self.upstream_done = true;
                self.report.upstream_fault = Some(error);
                Ok(None)
            }
        }
    }
}

impl HostImports for StageCtx {
    fn log(
        &mut self,
        level: Level,
        message: String,
        fields: Vec<(String, String)>,
    ) -> wasmtime::Result<()> {
        guest_log::emit(&self.name, level, &message, &fields);
        Ok(())
    }

    fn config(&mut self) -> wasmtime::Result<Vec<(String, String)>> {
        Ok(self.config.clone())
    }
}

impl TypesImports for StageCtx {}

impl WasiView for StageCtx {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}
