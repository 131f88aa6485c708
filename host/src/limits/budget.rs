//! The per-store side of the limits: the memory limiter (one budget across every linear memory
//! and table of a stage), the CPU clock of the current call (the epoch deadline's callback), and
//! its time blocked in WASI waits. What a check refused is recorded, so the fault that follows
//! is named from these records.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cpu_time::ThreadTime;
use wasmtime::{ResourceLimiter, StoreLimits, StoreLimitsBuilder, UpdateDeadline};

use super::{EPOCH_TICK, Limit, Limits, TABLE_ELEMENT_BYTES};

/// CPU time consumed by the current thread.
fn cpu_clock() -> Duration {
    ThreadTime::now().as_duration()
}

/// The per-store side of the limits: the memory limiter (one budget across every linear memory
/// and table of the stage, remembering what it denied, so a trap that follows can be named),
/// the CPU clock of the current call, and its time blocked in WASI waits.
pub(crate) struct Budget {
    limits: Limits,
    /// Counts of instances, tables and memories per store (not their sizes: see `held`).
    store_limits: StoreLimits,
    /// Bytes held by every linear memory and table of the store together.
    held: usize,
    /// What a limit refused during the current call, for naming the fault that follows.
    exceeded: Option<(Limit, String)>,
    /// The CPU budget of the current call (the handoff budget during a swap's handoff).
    cpu_budget: Duration,
    /// Wall time the current call may spend blocked in WASI waits, and has spent.
    wall_budget: Duration,
    waited: Duration,
    /// The engine's tick counter (one increment per [`EPOCH_TICK`]).
    ticks: Arc<AtomicU64>,
    /// Ticks of the current call that were not this stage's: while its upstream served its
    /// pulls, and (fast path) while a chunk it answered was being delivered into its puller.
    /// Each span reads the counter before and after (two atomic loads, no clock read): a span
    /// across a tick boundary is charged a whole tick, one that is not is charged nothing, so
    /// the sum is an unbiased estimate of the time, good to a tick or so.
    upstream_ticks: u64,
    /// Taken at the first epoch tick of a call that lasts that long: the thread's CPU clock
    /// and the upstream ticks so far. Reading the CPU clock is a system call, so healthy
    /// calls, which end before a tick, never pay for it.
    cpu_base: Option<(Duration, u64)>,
    /// The most memory held so far (memories and tables), and whether it grew since it was
    /// last read.
    memory_peak: usize,
    memory_grew: bool,
}

impl Budget {
    /// `components` is how many stage components share the store (more than one when fused):
    /// the counts of instances, tables and memories scale with it; the size limits do not.
    pub(crate) fn new(limits: Limits, ticks: Arc<AtomicU64>, components: usize) -> Self {
        let components = components.max(1);
        let store_limits = StoreLimitsBuilder::new()
            .instances(64 * components)
            .tables(16 * components)
            .memories(4 * components)
            .build();
        Budget {
            limits,
            store_limits,
            held: 0,
            exceeded: None,
            cpu_budget: limits.cpu_per_call,
            wall_budget: limits.wall_per_call,
            waited: Duration::ZERO,
            ticks,
            upstream_ticks: 0,
            cpu_base: None,
            memory_peak: 0,
            memory_grew: false,
        }
    }

    /// The most memory held (memories and tables), if it grew since the last call to this.
    pub(crate) fn take_memory_growth(&mut self) -> Option<usize> {
        std::mem::take(&mut self.memory_grew).then_some(self.memory_peak)
    }

    /// The stage's budgets.
    pub(crate) fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Starts the budgets of a call: `cpu` of CPU, `wall` of time it may spend blocked in WASI
    /// waits. No clock is read: a call is charged from its first epoch tick on (most calls end
    /// before one), so it may run up to one tick past its CPU budget, never less than it.
    pub(crate) fn start_call(&mut self, cpu: Duration, wall: Duration) {
        self.cpu_budget = cpu;
        self.wall_budget = wall;
        self.upstream_ticks = 0;
        self.cpu_base = None;
        self.exceeded = None;
        self.waited = Duration::ZERO;
    }

    /// How long the current call may still block in a WASI wait.
    pub(crate) fn wait_left(&self) -> Duration {
        self.wall_budget.saturating_sub(self.waited)
    }

    /// The current call blocked for `waited`; `over` says it was cut off at its wall budget,
    /// which is recorded so that the trap that follows is named `wall`.
    pub(crate) fn charge_wait(&mut self, waited: Duration, over: bool) {
        self.waited += waited;
        if over {
            self.exceeded = Some((
                Limit::Wall,
                format!(
                    "the call blocked in WASI waits (a sleep, a poll) for longer than its wall \
                     budget of {:?}",
                    self.wall_budget
                ),
            ));
        }
    }

    /// The engine's tick counter (the log gate's clock).
    pub(crate) fn tick_counter(&self) -> Arc<AtomicU64> {
        self.ticks.clone()
    }

    /// The engine's tick count now; give it back to [`Budget::charge_upstream`] after a pull.
    pub(crate) fn ticks(&self) -> u64 {
        self.ticks.load(Ordering::Relaxed)
    }

    /// A pull that began at tick `since` is over: its time is upstream's, not this stage's.
    /// (Also a delivery into the puller that began at `since`: its time is the puller's.)
    pub(crate) fn charge_upstream(&mut self, since: u64) {
        self.upstream_ticks += self.ticks().saturating_sub(since);
    }

    fn upstream_time(ticks: u64) -> Duration {
        EPOCH_TICK.saturating_mul(u32::try_from(ticks).unwrap_or(u32::MAX))
    }

    /// An epoch tick reached the deadline: trap if the stage's own time is over budget, else
    /// extend the deadline by what remains. The first tick of a call only takes the CPU
    /// baseline; from then on the stage is charged the thread's CPU time, so a stage that is
    /// merely descheduled on a busy host is not faulted. Time before the first tick is charged
    /// as wall time, at most one tick of it (the deadline is one tick ahead, so a stage that
    /// was running the whole time cannot have used more; a longer wait means the thread was
    /// descheduled), and upstream time (and a delivery into the puller) is never charged.
    pub(crate) fn on_deadline(&mut self) -> UpdateDeadline {
        self.on_deadline_at(cpu_clock())
    }

    /// [`Budget::on_deadline`] with the thread's CPU clock read as `cpu`.
    fn on_deadline_at(&mut self, cpu: Duration) -> UpdateDeadline {
        let (base_cpu, base_upstream) = *self.cpu_base.get_or_insert((cpu, self.upstream_ticks));
        let upstream_since = Self::upstream_time(self.upstream_ticks.saturating_sub(base_upstream));
        // The time before the first tick (the baseline) is not charged: no clock was read when
        // the call started, and charging a guess could stop a call before it had its budget.
        // A call may so run at most one tick past its budget, never less than its budget.
        let own = cpu.saturating_sub(base_cpu).saturating_sub(upstream_since);
        match self.cpu_budget.checked_sub(own) {
            Some(left) if !left.is_zero() => {
                let ticks = left.as_nanos() / EPOCH_TICK.as_nanos().max(1);
                UpdateDeadline::Continue(u64::try_from(ticks).unwrap_or(u64::MAX).max(1))
            }
            _ => UpdateDeadline::Interrupt,
        }
    }

    /// The limit a host-side check refused during the current call (memory, table, wall), if
    /// any: the cause of the trap that followed.
    pub(crate) fn exceeded(&self) -> Option<&(Limit, String)> {
        self.exceeded.as_ref()
    }

    /// The CPU budget of the current call.
    pub(crate) fn cpu_budget(&self) -> Duration {
        self.cpu_budget
    }

    /// Charges `bytes` more against the memory budget; `false` (and the refusal recorded) if
    /// that would pass it.
    fn charge_memory(&mut self, bytes: usize, what: &str) -> bool {
        match self.held.checked_add(bytes) {
            Some(total) if total <= self.limits.memory_bytes => {
                self.held = total;
                if total > self.memory_peak {
                    self.memory_peak = total;
                    self.memory_grew = true;
                }
                true
            }
            _ => {
                self.exceeded = Some((
                    Limit::Memory,
                    format!(
                        "{what} refused: the stage would hold more than its memory budget of {} \
                         bytes (all its linear memories and tables together; {} held)",
                        self.limits.memory_bytes, self.held
                    ),
                ));
                false
            }
        }
    }
}

impl ResourceLimiter for Budget {
    /// Called for every linear memory when it is created (`current` 0) and when it grows: the
    /// growth is charged against the stage's one memory budget.
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if maximum.is_some_and(|max| desired > max) {
            return Ok(false); // past the memory's own declared maximum: wasm semantics, not ours
        }
        let what = format!("linear memory growth from {current} to {desired} bytes");
        Ok(self.charge_memory(desired.saturating_sub(current), &what))
    }

    /// Called for every table when it is created and when it grows: each element is charged
    /// [`TABLE_ELEMENT_BYTES`] against the same budget as memory.
    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if maximum.is_some_and(|max| desired > max) {
            return Ok(false);
        }
        let what = format!("table growth from {current} to {desired} elements");
        let bytes = desired
            .saturating_sub(current)
            .saturating_mul(TABLE_ELEMENT_BYTES);
        Ok(self.charge_memory(bytes, &what))
    }

    fn instances(&self) -> usize {
        self.store_limits.instances()
    }

    fn tables(&self) -> usize {
        self.store_limits.tables()
    }

    fn memories(&self) -> usize {
        self.store_limits.memories()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(cpu_per_call: Duration) -> Budget {
        let limits = Limits {
            cpu_per_call,
            ..Limits::default()
        };
        Budget::new(limits, Arc::new(AtomicU64::new(0)), 1)
    }

    #[test]
    fn a_call_descheduled_before_its_first_tick_is_not_charged_the_wait() {
        let mut budget = budget(Duration::from_millis(500));
        budget.start_call(Duration::from_millis(500), Duration::from_secs(1));
        let cpu = Duration::from_secs(10);
        assert!(matches!(
            budget.on_deadline_at(cpu),
            UpdateDeadline::Continue(_)
        ));
        // Its own CPU time after the baseline is charged: 600 ms is over the budget.
        assert!(matches!(
            budget.on_deadline_at(cpu + Duration::from_millis(600)),
            UpdateDeadline::Interrupt
        ));
    }

    #[test]
    fn cpu_time_after_the_baseline_is_charged_and_extends_the_deadline_by_what_is_left() {
        let mut budget = budget(Duration::from_millis(500));
        budget.start_call(Duration::from_millis(500), Duration::from_secs(1));
        let cpu = Duration::from_secs(10);
        budget.on_deadline_at(cpu);
        match budget.on_deadline_at(cpu + Duration::from_millis(400)) {
            // At most 100 ms remain.
            UpdateDeadline::Continue(ticks) => {
                assert!((1..=20).contains(&ticks), "{ticks} ticks left of 100 ms")
            }
            _ => panic!("400 ms of 500 is within the budget"),
        }
    }

    #[test]
    fn a_call_is_never_stopped_before_it_used_its_budget() {
        let mut budget = budget(Duration::from_millis(500));
        budget.start_call(Duration::from_millis(500), Duration::from_secs(1));
        let cpu = Duration::from_secs(10);
        budget.on_deadline_at(cpu);
        // 496 ms of its own CPU time since its first tick: still under the budget, whatever
        // it ran before that tick (no clock was read, so nothing is guessed against it).
        assert!(matches!(
            budget.on_deadline_at(cpu + Duration::from_millis(496)),
            UpdateDeadline::Continue(_)
        ));
    }

    #[test]
    fn upstream_time_is_not_charged() {
        let mut budget = budget(Duration::from_millis(500));
        budget.start_call(Duration::from_millis(500), Duration::from_secs(1));
        let cpu = Duration::from_secs(10);
        budget.on_deadline_at(cpu);
        // 600 ms of CPU on this thread, all of it while the upstream served a pull.
        budget.upstream_ticks += (600 / EPOCH_TICK.as_millis()) as u64;
        assert!(matches!(
            budget.on_deadline_at(cpu + Duration::from_millis(600)),
            UpdateDeadline::Continue(_)
        ));
    }
}
