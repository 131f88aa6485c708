//! What happens when a stage faults: [`FaultPolicy`] and its defaults. The policy is applied by
//! `stage/supervise.rs`; pipeline files name it `on_fault`.

use std::time::Duration;

/// Restarts allowed by default before a fault becomes final.
pub const DEFAULT_MAX_RESTARTS: u32 = 3;
/// First backoff before a restart; doubled on each further restart, capped at one second.
pub const DEFAULT_RESTART_BACKOFF: Duration = Duration::from_millis(10);

/// What to do when a stage faults (trap, violation or limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum FaultPolicy {
    /// The fault is final: later calls are refused with the cause (rules F1, X3).
    #[default]
    Fail,
    /// Replace the instance with a fresh, primed one and retry the call.
    Restart {
        /// Restarts allowed over the stage's life.
        max_restarts: u32,
        /// Backoff before the first restart; doubled each time.
        backoff: Duration,
    },
    /// Take the stage out of the chain: its input passes through unchanged from then on.
    Bypass,
}

impl FaultPolicy {
    /// `Restart` with [`DEFAULT_MAX_RESTARTS`] and [`DEFAULT_RESTART_BACKOFF`].
    pub fn restart() -> Self {
        FaultPolicy::Restart {
            max_restarts: DEFAULT_MAX_RESTARTS,
            backoff: DEFAULT_RESTART_BACKOFF,
        }
    }

    /// True if the input of each call must be kept, to quarantine or forward after a fault.
    pub(crate) fn keeps_inputs(self) -> bool {
        self != FaultPolicy::Fail
    }
}
