//! A stage's state taken and given outside a swap, for the checkpoints of a partition that
//! reads NATS JetStream (docs/scale-out.md): `snapshot` between two resumes of a primed stage,
//! which then carries on (rule N3 of docs/scale-out.md), and `restore` right after priming,
//! before the first resume. Both run under the handoff budget, like a swap's.

use super::Stage;
use super::lifecycle::{Lifecycle, missing_store};
use crate::error::{Error, Result};

impl Stage {
    /// The stage's state now, between two resumes (empty if it has no `state` interface or
    /// nothing to hand over). A stage that breaks while giving it faults.
    pub(crate) fn checkpoint_state(&self) -> Result<Vec<u8>> {
        let mut inner = self.lock()?;
        let name = &self.shared.name;
        if !matches!(inner.state, Lifecycle::Suspended | Lifecycle::Exhausted) {
            let state = inner.state.public();
            return Err(Error::Host {
                stage: name.to_string(),
                message: format!(
                    "a checkpoint needs a primed stage between calls; it is {state:?}"
                ),
            });
        }
        let Some(live) = inner.live.as_mut() else {
            return Err(inner.fault(missing_store(name)));
        };
        match live.snapshot(name) {
            Ok(state) => Ok(state.unwrap_or_default()),
            Err(error) => Err(inner.fault(error)),
        }
    }

    /// Gives a primed, never resumed stage the state of a checkpoint. A stage without a
    /// `state` interface cannot take a non-empty one; a refusal or a fault fails the restore.
    pub(crate) fn restore_checkpoint(&self, state: Vec<u8>) -> Result<()> {
        if state.is_empty() {
            return Ok(());
        }
        let mut inner = self.lock()?;
        let name = &self.shared.name;
        if !matches!(inner.state, Lifecycle::Suspended) {
            let state = inner.state.public();
            return Err(Error::Host {
                stage: name.to_string(),
                message: format!("a checkpoint is restored into a primed stage; it is {state:?}"),
            });
        }
        let Some(live) = inner.live.as_mut() else {
            return Err(inner.fault(missing_store(name)));
        };
        let bytes = state.len();
        match live.restore(name, state) {
            Ok(true) => Ok(()),
            Ok(false) => Err(Error::Host {
                stage: name.to_string(),
                message: format!(
                    "the checkpoint holds {bytes} bytes of this stage's state and it has no \
                     `state` interface to take them (was the pipeline changed?)"
                ),
            }),
            Err(error @ Error::Host { .. }) => Err(error),
            Err(error) => Err(inner.fault(error)),
        }
    }
}
