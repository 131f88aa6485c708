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

    /// What of each call's input must be kept, to quarantine or forward after a fault:
    /// nothing if a fault is final; the records' count if a restart quarantines them with no
    /// dead-letter sink (`dead_letter`) to write them to; else copies of them.
    pub(crate) fn keeps_inputs(self, dead_letter: bool) -> InputKeeping {
        match self {
            FaultPolicy::Fail => InputKeeping::Nothing,
            FaultPolicy::Restart { .. } if !dead_letter => InputKeeping::Count,
            FaultPolicy::Restart { .. } | FaultPolicy::Bypass => InputKeeping::Copies,
        }
    }
}

/// What a stage keeps of the chunks it pulls during a call, for its fault policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum InputKeeping {
    /// Nothing (`fail`).
    #[default]
    Nothing,
    /// How many records (`restart` with no dead-letter sink: they are counted as quarantined).
    Count,
    /// Copies of them (`restart` writing to a dead-letter sink, `bypass` forwarding them).
    Copies,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restart_without_a_dead_letter_sink_counts_its_inputs_and_copies_none() {
        assert_eq!(
            FaultPolicy::restart().keeps_inputs(false),
            InputKeeping::Count
        );
        assert_eq!(
            FaultPolicy::restart().keeps_inputs(true),
            InputKeeping::Copies
        );
        assert_eq!(
            FaultPolicy::Bypass.keeps_inputs(false),
            InputKeeping::Copies
        );
        assert_eq!(FaultPolicy::Fail.keeps_inputs(true), InputKeeping::Nothing);
    }
}
