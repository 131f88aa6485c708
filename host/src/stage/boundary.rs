//! What a guest may do while it runs: the store data of one stage instance, and the host
//! functions it imports (`upstream.pull`, `host.log`, `host.config`, WASI with nothing
//! granted). Rules R2–R5 and X4–X5 of docs/protocol.md are enforced here; the state machine
//! in `stage.rs` reads what happened when the call returns.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::bindings::{HostImports, Level, TypesImports, UpstreamImports};
use crate::chunk::Chunk;
use crate::error::{Error, Rule};
use crate::guest_log::{self, LogGate, LogPipe};
use crate::limits::Budget;
use crate::stage::supervise::Salvage;
use crate::upstream::Upstream;

/// WASI resource handles one stage may hold at once.
const MAX_WASI_HANDLES: usize = 1024;

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
    /// Copies of the chunks pulled during the current call, kept when supervision needs them.
    inputs: Option<Vec<Chunk>>,
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
    table: ResourceTable,
}

/// What a stage may see of the outside world besides its input.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// Real wall and monotonic clocks and host randomness. Off by default: the stage sees a
    /// virtual clock that advances 1 µs per reading from a fixed date, and seeded randomness,
    /// so runs are reproducible and timing cannot be used as a side channel.
    pub real_time_and_random: bool,
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
        // Deny by default: no preopens, env, args; stdin closed; no sockets, no name lookup.
        let mut wasi = WasiCtx::builder();
        wasi.stdout(stdout)
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .socket_addr_check(|_, _| Box::pin(async { false }));
        if !capabilities.real_time_and_random {
            let clock = Arc::new(AtomicU64::new(0));
            wasi.wall_clock(VirtualWallClock(clock.clone()))
                .monotonic_clock(VirtualMonotonicClock(clock))
                .secure_random(wasmtime_wasi::Deterministic::new(seed_bytes(&name)))
                .insecure_random(wasmtime_wasi::Deterministic::new(seed_bytes(&name)))
                .insecure_random_seed(0x5eed);
        }
        let wasi = wasi.build();
        StageCtx {
            name,
            serving: Serving::Nothing,
            report: CallReport::default(),
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
            table: {
                // WASI handles (streams, pollables) a guest can hold at once: a guest cannot
                // make the host's handle table grow without bound.
                let mut table = ResourceTable::new();
                table.set_max_capacity(MAX_WASI_HANDLES);
                table
            },
        }
    }

    /// Keeps copies of every chunk pulled during a call (for supervision after a fault).
    pub(crate) fn keep_inputs(&mut self) {
        self.inputs = Some(Vec::new());
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

    /// `host.log` of inner stage `index` of a fused chain, under that stage's name.
    pub(crate) fn inner_log(
        &self,
        index: usize,
        level: Level,
        message: &str,
        fields: &[(String, String)],
    ) {
        let name = self.inner.get(index).map_or(&*self.name, |(name, _)| name);
        guest_log::emit(&self.log, name, level, message, fields);
    }

    /// `host.config` of inner stage `index` of a fused chain.
    pub(crate) fn inner_config(&self, index: usize) -> Vec<(String, String)> {
        self.inner
            .get(index)
            .map(|(_, config)| config.clone())
            .unwrap_or_default()
    }

    /// Marks the start of a call into the guest.
    pub(crate) fn begin(&mut self, serving: Serving, started: Instant) {
        if let Some(inputs) = self.inputs.as_mut() {
            inputs.clear();
        }
        self.serving = serving;
        self.report = CallReport::default();
        self.stderr.forget();
        self.budget.start_call(started);
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
        let ticks = self.budget.ticks();
        let answer = self.upstream.pull(credits);
        self.budget.charge_upstream(ticks);
        match answer {
            Ok(Some(chunk)) => {
                if let Some(inputs) = self.inputs.as_mut() {
                    inputs.push(chunk.clone());
                }
                Ok(Some(chunk.into_bytes()))
            }
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
        guest_log::emit(&self.log, &self.name, level, &message, &fields);
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

/// Nanoseconds a virtual clock advances per reading.
const VIRTUAL_TICK_NS: u64 = 1_000;
/// The virtual wall clock starts at 2024-01-01T00:00:00Z.
const VIRTUAL_EPOCH_S: u64 = 1_704_067_200;

/// A deterministic wall clock: a fixed date plus 1 µs per reading of either clock.
struct VirtualWallClock(Arc<AtomicU64>);

impl wasmtime_wasi::HostWallClock for VirtualWallClock {
    fn resolution(&self) -> Duration {
        Duration::from_nanos(VIRTUAL_TICK_NS)
    }

    fn now(&self) -> Duration {
        let ns = self.0.fetch_add(VIRTUAL_TICK_NS, Ordering::Relaxed);
        Duration::from_secs(VIRTUAL_EPOCH_S) + Duration::from_nanos(ns)
    }
}

/// A deterministic monotonic clock sharing the wall clock's counter.
struct VirtualMonotonicClock(Arc<AtomicU64>);

impl wasmtime_wasi::HostMonotonicClock for VirtualMonotonicClock {
    fn resolution(&self) -> u64 {
        VIRTUAL_TICK_NS
    }

    fn now(&self) -> u64 {
        self.0.fetch_add(VIRTUAL_TICK_NS, Ordering::Relaxed)
    }
}

/// Seeded "randomness" derived from the stage name: reproducible, and different per stage.
fn seed_bytes(name: &str) -> Vec<u8> {
    let mut state = 0xcbf2_9ce4_8422_2325u64;
    (0..64)
        .map(|i| {
            for b in name.bytes().chain([i]) {
                state = (state ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
            }
            (state >> 24) as u8
        })
        .collect()
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
