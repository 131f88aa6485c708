//! Controlling a running pipeline from another thread: [`Swapper`] hot-swaps its stages,
//! [`Stopper`] stops it at the next chunk boundary.

use std::sync::Arc;

use crate::component::StageComponent;
use crate::error::{Error, Result};
use crate::stage::{Stage, SwapReport};

/// Hot-swaps the stages of a pipeline, from any thread (see [`Stage::swap`]). Swaps are
/// serialised per stage and recorded in the run's report.
#[derive(Clone)]
pub struct Swapper {
    pub(super) stages: Vec<Stage>,
    pub(super) swaps: Arc<std::sync::Mutex<Vec<SwapReport>>>,
    /// Partitioned: a stage's name names its replica in every partition (`name#N`).
    pub(super) partitioned: bool,
    /// A NATS pipeline: the replicas running on this host now, and the components of those
    /// it starts later.
    pub(super) live: Option<Arc<super::fleet::Live>>,
}

impl Swapper {
    /// Replaces the component of the stage named `stage` at its next chunk boundary; in a
    /// partitioned pipeline, in every partition, one after the other, each at its own chunk
    /// boundary with its own state handoff (`name#N` swaps partition N's alone). Returns the
    /// first partition's report (every one is in the run's report); stops at the first
    /// partition that refuses it, and then says which partitions run the new version.
    pub fn swap(&self, stage: &str, component: &StageComponent) -> Result<SwapReport> {
        if let Some(live) = &self.live {
            return live.swap(stage, component, &self.swaps);
        }
        let mut first = None;
        let mut swapped: Vec<&str> = Vec::new();
        for target in self.stages.iter().filter(|s| self.names(s, stage)) {
            let report = match target.swap(component) {
                Ok(report) => report,
                // Earlier partitions run the new version already: say so, never "unchanged".
                Err(error) if !swapped.is_empty() => {
                    return Err(Error::SwapRefused {
                        stage: target.name().to_string(),
                        reason: format!(
                            "{error}; the swap is PARTIAL: {} run(s) the new version, `{}` and \
                             the partitions after it the old one (swap again to finish, or \
                             swap the old version back)",
                            swapped.join(", "),
                            target.name()
                        ),
                    });
                }
                Err(error) => return Err(error),
            };
            if let Ok(mut swaps) = self.swaps.lock() {
                swaps.push(report.clone());
            }
            swapped.push(target.name());
            first.get_or_insert(report);
        }
        first.ok_or_else(|| Error::SwapRefused {
            stage: stage.to_string(),
            reason: "the pipeline has no stage of that name".into(),
        })
    }

    /// True if `candidate` is the stage `stage` names (or, partitioned, one of its replicas).
    fn names(&self, candidate: &Stage, stage: &str) -> bool {
        candidate.name() == stage
            || (self.partitioned
                && candidate
                    .name()
                    .rsplit_once('#')
                    .is_some_and(|(base, _)| base == stage))
    }
}

/// Stops a running pipeline at its next chunk boundary; see [`Pipeline::stopper`](crate::Pipeline::stopper).
#[derive(Clone)]
pub struct Stopper(pub(super) Arc<std::sync::atomic::AtomicBool>);

impl Stopper {
    /// Asks the pipeline to stop; returns `true` if it had already been asked.
    pub fn stop(&self) -> bool {
        self.0.swap(true, std::sync::atomic::Ordering::Relaxed)
    }
}
