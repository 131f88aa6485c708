//! Hot swap: replace the component a stage runs while the pipeline flows, with no record
//! lost or duplicated. The new version is instantiated and primed *before* the cut-over, off
//! the hot path; the cut-over happens at a chunk boundary (it waits for a resume in progress
//! to finish) and only moves the upstream across and, if both versions speak the `state`
//! interface, hands the state over; the old version's cleanup then runs exactly once, off the
//! hot path. If the new version cannot be loaded, instantiated or primed, nothing changes.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::Stage;
use super::instance::Live;
use super::lifecycle::Lifecycle;
use crate::component::StageComponent;
use crate::error::{Call, Error, Result};
use crate::upstream::{Demand, Upstream};

/// What a swap did.
#[derive(Debug, Clone, serde::Serialize)]
#[non_exhaustive]
pub struct SwapReport {
    /// The stage swapped.
    pub stage: String,
    /// When the cut-over happened, in seconds since the Unix epoch.
    pub at_unix_s: f64,
    /// Digest of the version replaced ([`StageComponent::digest`]).
    pub old_digest: String,
    /// Digest of the version now running.
    pub new_digest: String,
    /// Time to instantiate and prime the new version, before the cut-over.
    pub prepare: Duration,
    /// The cut-over: how long the stage could not be resumed.
    pub pause: Duration,
    /// The part of the pause spent handing the state over (the old version's `snapshot` and the
    /// new one's `restore`, each bounded by [`Limits::cpu_per_handoff`](crate::Limits)).
    pub handoff: Duration,
    /// The old version's state was handed to the new one (else the new one starts fresh).
    pub state_carried: bool,
    /// Bytes of state handed over.
    pub state_bytes: usize,
    /// The old version's cleanup failed (it still ran at most once; the swap stands).
    pub old_cleanup_error: Option<String>,
    /// The old version broke while handing over its state (a trap or a limit in `snapshot`):
    /// it cannot run on, nor can its cleanup (F2), so the new version took over without that
    /// state, which is lost. Never set when `state_carried`.
    pub state_lost: Option<String>,
}

/// The new version's upstream while it is primed: priming may only pause (`pull(0)`), and
/// gets an empty chunk; records cannot be pulled before the cut-over (rule R3).
struct Detached;

impl Upstream for Detached {
    fn pull(&mut self, _demand: Demand) -> Result<Option<crate::chunk::Chunk>> {
        Ok(Some(crate::chunk::Chunk::empty()))
    }
}

impl Stage {
    /// Replaces the component this stage runs with `component`, at the next chunk boundary.
    ///
    /// Safe to call from another thread while the pipeline runs: it waits for a resume in
    /// progress (bounded by the stage's CPU limit), and for any other swap of the same stage.
    /// Only a primed, suspended stage can be swapped. On any failure of the new version the
    /// swap is refused with the reason ([`Error::SwapRefused`]), the new version (if it was
    /// primed) is closed, and the old version keeps running untouched. A swap requested from
    /// inside a call of this stage (by its upstream, while it pulls) is refused: it would wait
    /// for itself.
    pub fn swap(&self, component: &StageComponent) -> Result<SwapReport> {
        let (name, counters) = (&self.shared.name, &self.shared.counters);
        let refused = |reason: String| Error::SwapRefused {
            stage: name.to_string(),
            reason,
        };
        if self.entered_here() {
            return Err(refused(
                "the swap was requested from inside a call of this stage (by its upstream, \
                 while it pulls); it would wait for itself"
                    .into(),
            ));
        }
        let _one_at_a_time = self.shared.swap_lock.lock().map_err(|_| self.poisoned())?;
        // 1. Off the hot path: the new version, instantiated and primed.
        let prepare_started = Instant::now();
        let mut fresh = self
            .shared
            .recipe
            .spawn(component, name, Box::new(Detached), false)
            .map_err(|e| refused(format!("the new version does not start: {e}")))?;
        match fresh.resume(name, Call::Prime, 0, &Default::default()) {
            Ok((Some(_), _)) => {}
            Ok((None, _)) => {
                let reason = "the new version finished while priming".to_string();
                return Err(refused(close_refused(fresh, name, reason)));
            }
            Err(e) => return Err(refused(format!("the new version failed priming: {e}"))),
        }
        let prepare = prepare_started.elapsed();

        // 2. The cut-over, at a chunk boundary.
        self.shared.swapping.store(true, Ordering::Release);
        let cut_over = self.cut_over(fresh, component);
        self.shared.swapping.store(false, Ordering::Release);
        let cut = match cut_over {
            Ok(cut) => {
                self.set_execution_path(component.execution_path());
                cut
            }
            Err((reason, fresh)) => {
                return Err(refused(match fresh {
                    Some(fresh) => close_refused(*fresh, name, reason),
                    None => reason,
                }));
            }
        };
        let at_unix_s = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);

        // 3. Off the hot path: the old version's cleanup, exactly once; unless it broke while
        // handing its state over, which left its store dead (F2: no cleanup can run in it).
        let old_cleanup_error = cut
            .old
            .filter(|_| cut.state_lost.is_none())
            .map(|mut old| old.close(name, counters))
            .and_then(|closed| closed.err())
            .map(|e| e.to_string());
        counters.swapped();
        tracing::info!(
            stage = &**name,
            prepare_us = prepare.as_micros() as u64,
            pause_us = cut.pause.as_micros() as u64,
            handoff_us = cut.handoff.as_micros() as u64,
            state_carried = cut.state_carried,
            "swapped"
        );
        Ok(SwapReport {
            stage: name.to_string(),
            at_unix_s,
            old_digest: cut.old_digest,
            new_digest: component.digest().to_string(),
            prepare,
            pause: cut.pause,
            handoff: cut.handoff,
            state_carried: cut.state_carried,
            state_bytes: cut.state_bytes,
            old_cleanup_error,
            state_lost: cut.state_lost,
        })
    }

    /// Moves the stage onto `fresh` at a chunk boundary: hands the state over (each half under
    /// the handoff budget) and moves the upstream across. On refusal, gives `fresh` back (if it
    /// is still live) with the reason.
    fn cut_over(
        &self,
        mut fresh: Live,
        component: &StageComponent,
    ) -> std::result::Result<Cut, (String, Option<Box<Live>>)> {
        let name = &self.shared.name;
        let Ok(mut inner) = self.shared.inner.lock() else {
            return Err((self.poisoned().to_string(), Some(Box::new(fresh))));
        };
        let pause_started = Instant::now();
        if !matches!(inner.state, Lifecycle::Suspended) || inner.upstream_lost.is_some() {
            let state = inner.state.public();
            return Err((
                format!("the stage is {state:?}; only a primed, suspended stage is swapped"),
                Some(Box::new(fresh)),
            ));
        }
        let Some(old) = inner.live.as_mut() else {
            return Err((
                "the stage has no live instance".into(),
                Some(Box::new(fresh)),
            ));
        };
        // State handoff, inside the pause: what the old version holds goes to the new.
        let (mut state_carried, mut state_bytes, mut state_lost) = (false, 0, None);
        match old.snapshot(name) {
            Ok(Some(state)) => {
                state_bytes = state.len();
                match fresh.restore(name, state) {
                    Ok(true) => state_carried = true,
                    Ok(false) => {
                        return Err((
                            format!(
                                "the running version hands over {state_bytes} bytes of state \
                                 (possibly records it still holds) and the new version has no \
                                 `state` interface to take them"
                            ),
                            Some(Box::new(fresh)),
                        ));
                    }
                    // A refusal leaves the new version usable (it is closed); a trap or a
                    // limit leaves it dead.
                    Err(e @ Error::Host { .. }) => {
                        return Err((format!("the new version: {e}"), Some(Box::new(fresh))));
                    }
                    Err(e) => return Err((format!("the new version: {e}"), None)),
                }
            }
            Ok(None) => {}
            // The old version broke while giving up its state; its store is dead, so the
            // new version takes over fresh.
            Err(e) => {
                tracing::error!(stage = &**name, "state lost in the swap: {e}");
                state_lost = Some(e.to_string());
            }
        }
        let handoff = pause_started.elapsed();
        let (upstream, upstream_done) = old.store.data_mut().take_upstream();
        fresh.store.data_mut().set_upstream(upstream, upstream_done);
        let old = inner.live.replace(fresh);
        let old_digest = inner.component.digest().to_string();
        inner.component = component.clone();
        Ok(Cut {
            old,
            pause: pause_started.elapsed(),
            handoff,
            state_carried,
            state_bytes,
            state_lost,
            old_digest,
        })
    }
}

/// What the cut-over did.
struct Cut {
    old: Option<Live>,
    pause: Duration,
    handoff: Duration,
    state_carried: bool,
    state_bytes: usize,
    state_lost: Option<String>,
    old_digest: String,
}

/// Closes a primed new version that the swap refused (rules S3, E2: every primed instance is
/// closed exactly once), and says so in the refusal.
fn close_refused(mut fresh: Live, name: &str, reason: String) -> String {
    match fresh.close(name, &Default::default()) {
        Ok(()) => reason,
        Err(e) => format!("{reason} (and the new version's cleanup failed: {e})"),
    }
}
