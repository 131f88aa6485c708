//! The data of one stage instance's store: its upstream, what the host is serving, what went
//! wrong during the current call (for the state machine in `stage/lifecycle.rs` to read when it
//! returns), its budgets, its log and its WASI context; and what survives it after a fault.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::Capabilities;
use super::clocks::Clock;
use super::waits::WaitView;
use super::wasi;
use crate::bindings::TypesImports;
use crate::chunk::Chunk;
use crate::error::{Error, Rule};
use crate::guest_log::{LogGate, LogPipe};
use crate::limits::Budget;
use crate::policy::InputKeeping;
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

/// What went wrong at the boundary during one call, collected for the state machine. Every
/// field is a failure: the store makes a report only to record one (`report_mut`), so a call
/// without a report is clean (`call_is_clean`).
#[derive(Debug, Default)]
pub(crate) struct CallReport {
    /// The first rule the guest broke, with details.
    pub(crate) violation: Option<(Rule, String)>,
    /// The upstream's error, if it faulted while serving a pull (X4).
    pub(crate) upstream_fault: Option<Box<Error>>,
    /// The upstream's error, if it refused a pull for a reason that is not its fault (X6):
    /// the guest was trapped in its pull.
    pub(crate) upstream_refused: Option<Error>,
}

/// The canonical options (memory and allocator) a host function was lowered with on the fast
/// path, kept in the store so that the function itself can be shared by every store.
#[derive(Clone)]
pub(crate) struct Lowering {
    pub(crate) memory: wasmtime::Memory,
    pub(crate) realloc: Option<wasmtime::TypedFunc<(u32, u32, u32, u32), u32>>,
}

/// The data of one stage's store.
pub(crate) struct StageCtx {
    name: Arc<str>,
    pub(super) serving: Serving,
    /// What went wrong at the boundary during the current call: made only when something
    /// does (rare), so that a clean call moves one pointer, not the report.
    pub(super) report: Option<Box<CallReport>>,
    pub(super) upstream: Box<dyn Upstream>,
    pub(super) upstream_done: bool,
    /// Copies of the chunks pulled during the current call, kept when supervision needs them.
    pub(super) inputs: Option<KeptInputs>,
    config: Vec<(String, String)>,
    /// Fused mode: each inner stage's name (`fused/inner`) and configuration, served through
    /// its own `fused-<letter>-host` import.
    inner: Vec<(String, Vec<(String, String)>)>,
    stderr: LogPipe,
    /// The stage's log budget, shared by `host.log`, stdout and stderr.
    log: Arc<LogGate>,
    pub(crate) budget: Budget,
    _alive: AliveGuard,
    wasi: WasiCtx,
    /// The monotonic clock the stage reads (virtual unless granted real time).
    clock: Clock,
    table: ResourceTable,
    /// False while the guest may not call the host (inside `cabi_realloc` or a post-return
    /// function called by the fast path, `fast/abi.rs`), as wasmtime's flag of the same name.
    pub(crate) may_leave: bool,
    /// Fast path: the options of each host function the stage imports, by the function's
    /// index in the plan (`fast/instance.rs`); `None` where it names no memory.
    pub(crate) lowerings: Vec<Option<Lowering>>,
}

impl StageCtx {
    pub(crate) fn new(
        name: Arc<str>,
        upstream: Box<dyn Upstream>,
        config: Vec<(String, String)>,
        budget: Budget,
        capabilities: Capabilities,
        alive: Arc<std::sync::atomic::AtomicUsize>,
        log_lines_suppressed: Arc<AtomicU64>,
    ) -> Self {
        let log = LogGate::new(
            name.clone(),
            budget.limits().log_lines_per_s,
            budget.tick_counter(),
            log_lines_suppressed,
        );
        let stdout = LogPipe::new(name.clone(), "stdout", log.clone());
        let stderr = LogPipe::new(name.clone(), "stderr", log.clone());
        let (wasi, clock) = wasi::context(
            &name,
            stdout,
            stderr.clone(),
            capabilities.real_time_and_random,
        );
        StageCtx {
            name,
            serving: Serving::Nothing,
            report: None,
            upstream,
            upstream_done: false,
            inputs: None,
            config,
            inner: Vec::new(),
            stderr,
            log,
            budget,
            _alive: AliveGuard::new(alive),
            wasi,
            clock,
            table: wasi::handle_table(),
            may_leave: true,
            lowerings: Vec::new(),
        }
    }

    /// What the bounded WASI waits need (`wasi.rs`).
    pub(crate) fn waits(&mut self) -> WaitView<'_> {
        WaitView {
            table: &mut self.table,
            budget: &mut self.budget,
            clock: &self.clock,
        }
    }

    /// The stage's log budget, checked before a `host.log` call reads anything.
    pub(crate) fn log_gate(&self) -> &LogGate {
        &self.log
    }

    /// The name a log line of inner stage `inner` (or of the stage itself) goes under.
    pub(crate) fn log_name(&self, inner: Option<usize>) -> &str {
        inner
            .and_then(|i| self.inner.get(i))
            .map_or(&*self.name, |(name, _)| name)
    }

    /// The configuration of inner stage `inner` of a fused chain, or of the stage itself.
    pub(crate) fn config_of(&self, inner: Option<usize>) -> Vec<(String, String)> {
        match inner {
            None => self.config.clone(),
            Some(i) => self
                .inner
                .get(i)
                .map(|(_, config)| config.clone())
                .unwrap_or_default(),
        }
    }

    /// True while the current call broke no rule and its upstream neither faulted nor refused:
    /// its answer will be delivered if it passes the chunk checks.
    pub(crate) fn call_is_clean(&self) -> bool {
        self.report.is_none()
    }

    /// What is kept of the chunks pulled during a call (the fault policy's need).
    pub(crate) fn input_keeping(&self) -> InputKeeping {
        self.inputs
            .as_ref()
            .map_or(InputKeeping::Nothing, |inputs| inputs.keeping)
    }

    /// Keeps what `keeping` says of every chunk pulled during a call (for supervision after a
    /// fault): copies of them, how many records they held, or nothing.
    pub(crate) fn keep_inputs(&mut self, keeping: InputKeeping) {
        self.inputs = (keeping != InputKeeping::Nothing).then(|| KeptInputs {
            keeping,
            ..KeptInputs::default()
        });
    }

    /// Takes the upstream away (a swap moves it to the new version), leaving none behind.
    pub(crate) fn take_upstream(&mut self) -> (Box<dyn Upstream>, bool) {
        let upstream = std::mem::replace(&mut self.upstream, Box::new(crate::upstream::NoUpstream));
        (upstream, std::mem::replace(&mut self.upstream_done, true))
    }

    /// Gives the stage its upstream (the other half of a swap's move).
    pub(crate) fn set_upstream(&mut self, upstream: Box<dyn Upstream>, done: bool) {
        self.upstream = upstream;
        self.upstream_done = done;
    }

    /// Carries over an upstream that already answered `none` (rule R5 across a restart).
    pub(crate) fn set_upstream_done(&mut self, done: bool) {
        self.upstream_done = done;
    }

    /// Takes what survives a fault: the upstream and the input of the last call.
    pub(crate) fn into_salvage(self) -> Salvage {
        Salvage {
            upstream: self.upstream,
            upstream_done: self.upstream_done,
            inputs: self.inputs.unwrap_or_default(),
        }
    }

    /// Fused mode: the inner stages' names and configurations, most upstream first.
    pub(crate) fn set_inner(&mut self, inner: Vec<(String, Vec<(String, String)>)>) {
        self.inner = inner;
    }

    /// Marks the start of a call into the guest.
    pub(crate) fn begin(
        &mut self,
        serving: Serving,
        cpu: std::time::Duration,
        wall: std::time::Duration,
    ) {
        if let Some(inputs) = self.inputs.as_mut() {
            inputs.clear();
        }
        self.serving = serving;
        self.report = None;
        self.stderr.forget();
        self.budget.start_call(cpu, wall);
    }

    /// Marks the end of a call and hands over what happened at the boundary, if anything.
    pub(crate) fn end(&mut self) -> Option<Box<CallReport>> {
        self.serving = Serving::Nothing;
        self.report.take()
    }

    /// The current call's report, made on its first entry.
    pub(super) fn report_mut(&mut self) -> &mut CallReport {
        self.report.get_or_insert_default()
    }

    /// What the guest last wrote to stderr that explains a trap (a Rust panic message).
    pub(crate) fn last_words(&self) -> Option<String> {
        self.stderr.last_words()
    }

    /// Records that the guest broke `rule` during the current call (the first break counts).
    pub(super) fn violate(&mut self, rule: Rule, detail: String) {
        let report = self.report_mut();
        if report.violation.is_none() {
            report.violation = Some((rule, detail));
        }
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

/// What survives a faulted store: its upstream, and the input of the call that faulted.
pub(crate) struct Salvage {
    pub(crate) upstream: Box<dyn Upstream>,
    pub(crate) upstream_done: bool,
    pub(crate) inputs: KeptInputs,
}

/// Copies of the chunks a stage pulled during its current call, kept when its fault policy
/// needs them (to quarantine or forward after a fault), up to as many bytes as the stage's
/// memory budget: a stage pulling without end cannot make the host keep without end. Records
/// over the cap are counted, not kept. A policy that only counts them (a restart with no
/// dead-letter sink) has no copies made at all.
#[derive(Default)]
pub(crate) struct KeptInputs {
    pub(crate) chunks: Vec<Chunk>,
    bytes: usize,
    /// Records pulled during the call, kept or not.
    records: u64,
    /// Records pulled during the call whose copy was over the cap.
    pub(crate) unkept_records: u64,
    /// Copies, or only the count.
    keeping: InputKeeping,
}

impl KeptInputs {
    /// Counts a pulled chunk's `records` records and keeps `bytes`, its copy (given when the
    /// policy keeps copies), if `cap` bytes allow; else counts them as unkept.
    pub(super) fn keep(&mut self, bytes: Option<Vec<u8>>, records: u32, cap: usize) {
        debug_assert_eq!(
            bytes.is_some(),
            self.keeping == InputKeeping::Copies,
            "a copy is made exactly when the policy keeps copies"
        );
        self.records += u64::from(records);
        let Some(bytes) = bytes else {
            return;
        };
        match self
            .bytes
            .checked_add(bytes.len())
            .filter(|&total| total <= cap)
        {
            Some(total) => {
                self.bytes = total;
                self.chunks.push(Chunk::from_checked(bytes, records));
            }
            None => self.unkept_records += u64::from(records),
        }
    }

    /// Records pulled during the call, kept or not.
    pub(crate) fn records(&self) -> u64 {
        self.records
    }

    fn clear(&mut self) {
        self.chunks.clear();
        self.bytes = 0;
        self.records = 0;
        self.unkept_records = 0;
    }
}

/// Counts a live store in its engine's instance count for as long as the store exists.
struct AliveGuard(Arc<std::sync::atomic::AtomicUsize>);

impl AliveGuard {
    fn new(count: Arc<std::sync::atomic::AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        AliveGuard(count)
    }
}

impl Drop for AliveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_only_counted_are_not_copied_but_all_their_records_count() {
        let mut counted = KeptInputs {
            keeping: InputKeeping::Count,
            ..KeptInputs::default()
        };
        counted.keep(None, 3, 1 << 20);
        counted.keep(None, 1, 0);
        assert!(counted.chunks.is_empty(), "no copy is kept");
        assert_eq!(counted.records(), 4);
        counted.clear();
        assert_eq!(counted.records(), 0, "a new call counts afresh");

        let mut copied = KeptInputs {
            keeping: InputKeeping::Copies,
            ..KeptInputs::default()
        };
        copied.keep(Some(b"\x01\x00\x00\x00a".to_vec()), 1, 1 << 20);
        copied.keep(Some(vec![0; 64]), 2, 8);
        assert_eq!(copied.chunks.len(), 1, "a copy within the cap is kept");
        assert_eq!((copied.unkept_records, copied.records()), (2, 3));
    }
}
