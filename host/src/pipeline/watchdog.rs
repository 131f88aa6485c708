//! Liveness: the watchdog that fails a run whose sink receives nothing for a while although
//! demand is granted, naming the stage that kept answering empty chunks.

use std::time::{Duration, Instant};

use super::Probe;
use crate::error::{Error, Result};
use crate::report::HopSnapshot;

/// Declares the pipeline stalled when demand keeps being granted but no record reaches the
/// sink for a while (a stage answering empty chunks forever), and names the stage: the most
/// upstream one that was resumed with credits in that time and delivered nothing.
///
/// Cheap while records flow: a chunk with records costs no clock read and no allocation; the
/// clock is read on empty answers only, and the stages' counters are taken once a quiet spell
/// has lasted a quarter of the timeout (so a sink that alternates records and empty answers,
/// as behind a filter, takes none).
pub(super) struct Watchdog {
    timeout: Option<Duration>,
    probe: Probe,
    /// When the sink began receiving nothing: the run's start, or the first empty answer
    /// after the last records (`None` while records flow).
    quiet_since: Option<Instant>,
    /// The stages' counters a quarter of the timeout into the quiet spell: the culprit is the
    /// stage granted credits since then that delivered nothing.
    during_quiet: Option<Vec<HopSnapshot>>,
}

impl Watchdog {
    pub(super) fn new(timeout: Option<Duration>, probe: Probe) -> Self {
        Watchdog {
            timeout,
            probe,
            quiet_since: Some(Instant::now()),
            during_quiet: None,
        }
    }

    pub(super) fn observe(&mut self, records: u32) -> Result<()> {
        let Some(timeout) = self.timeout else {
            return Ok(());
        };
        if records > 0 {
            self.quiet_since = None;
            self.during_quiet = None;
            return Ok(());
        }
        let Some(since) = self.quiet_since else {
            self.quiet_since = Some(Instant::now());
            return Ok(());
        };
        let quiet = since.elapsed();
        let Some(then) = &self.during_quiet else {
            if quiet >= timeout / 4 {
                self.during_quiet = Some(self.probe.snapshot());
            }
            return Ok(());
        };
        if quiet < timeout {
            return Ok(());
        }
        let now = self.probe.snapshot();
        let culprit = now
            .iter()
            .zip(then)
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
