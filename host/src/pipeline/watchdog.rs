//! Liveness: the watchdog that fails a run whose sink receives nothing for a while although
//! demand is granted, naming the stage that kept answering empty chunks.

use std::time::{Duration, Instant};

use super::Probe;
use crate::error::{Error, Result};
use crate::report::HopSnapshot;

/// Declares the pipeline stalled when demand keeps being granted but no record reaches the
/// sink for a while (a stage answering empty chunks forever), and names the stage: the most
/// upstream one that was resumed with credits in that time and delivered nothing.
pub(super) struct Watchdog {
    timeout: Option<Duration>,
    probe: Probe,
    /// When the sink began receiving nothing: the run's start, or the first empty answer
    /// after the last records (`None` while records flow: no clock is read per chunk).
    quiet_since: Option<Instant>,
    at_progress: Vec<HopSnapshot>,
}

impl Watchdog {
    pub(super) fn new(timeout: Option<Duration>, probe: Probe) -> Self {
        let at_progress = probe.snapshot();
        Watchdog {
            timeout,
            probe,
            quiet_since: Some(Instant::now()),
            at_progress,
        }
    }

    pub(super) fn observe(&mut self, records: u32) -> Result<()> {
        let Some(timeout) = self.timeout else {
            return Ok(());
        };
        if records > 0 {
            self.quiet_since = None;
            self.at_progress.clear();
            return Ok(());
        }
        let quiet_since = *self.quiet_since.get_or_insert_with(Instant::now);
        if self.at_progress.is_empty() {
            self.at_progress = self.probe.snapshot();
        }
        if quiet_since.elapsed() < timeout {
            return Ok(());
        }
        let now = self.probe.snapshot();
        let culprit = now
            .iter()
            .zip(&self.at_progress)
            .find(|(n, then)| {
                n.stats.credits_granted > then.stats.credits_granted
                    && n.stats.records == then.stats.records
            })
            .map(|(n, _)| n.name.clone())
            .unwrap_or_else(|| "sink".into());
        Err(Error::Stalled {
            stage: culprit,
            after: timeout,
        })
    }
}
