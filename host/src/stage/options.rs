//! How to instantiate a stage: [`StageOptions`], a builder of its upstream, configuration,
//! limits, capabilities and fault policy.

use std::io::Write;

use crate::limits::Limits;
use crate::policy::FaultPolicy;
use crate::sandbox::Capabilities;
use crate::upstream::Upstream;

/// How to instantiate a stage: its upstream, configuration, limits and capabilities.
#[derive(Default)]
pub struct StageOptions {
    pub(super) upstream: Option<Box<dyn Upstream>>,
    pub(super) config: Vec<(String, String)>,
    /// Fused mode: the configuration of each inner stage, most upstream first.
    pub(super) inner_configs: Vec<Vec<(String, String)>>,
    pub(super) limits: Limits,
    pub(super) capabilities: Capabilities,
    pub(super) policy: FaultPolicy,
    pub(super) dead_letter: Option<Box<dyn Write + Send>>,
}

impl StageOptions {
    /// No upstream (every pull answers `none`), no configuration.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets where the stage's pulls go: another [`Stage`](super::Stage), or a host-native source.
    pub fn upstream(mut self, upstream: impl Upstream + 'static) -> Self {
        self.upstream = Some(Box::new(upstream));
        self
    }

    /// Sets the stage's budgets (default: [`Limits::default`]).
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Sets what the stage may see of the outside world (default: nothing real).
    pub fn capabilities(mut self, capabilities: Capabilities) -> Self {
        self.capabilities = capabilities;
        self
    }

    /// Sets what happens when the stage faults (default: [`FaultPolicy::Fail`]).
    pub fn on_fault(mut self, policy: FaultPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Where the input of a call that faulted is written (framed) under
    /// [`FaultPolicy::Restart`]. Without one it is counted and logged only.
    pub fn dead_letter(mut self, out: impl Write + Send + 'static) -> Self {
        self.dead_letter = Some(Box::new(out));
        self
    }

    /// Adds one configuration entry, returned to the guest by `host.config` in this order.
    /// For a fused stage ([`crate::Engine::load_fused`]) this is the last stage's
    /// configuration; see [`StageOptions::inner_config`] for the others.
    pub fn config(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.config.push((key.into(), value.into()));
        self
    }

    /// Fused mode: adds a configuration entry for inner stage `index` of a fused chain (0 is
    /// the most upstream; the last stage takes [`StageOptions::config`]). Each inner stage
    /// reads only its own configuration.
    pub fn inner_config(
        mut self,
        index: usize,
        key: impl Into<String>,
        value: impl Into<String>,
    ) -> Self {
        if self.inner_configs.len() <= index {
            self.inner_configs.resize_with(index + 1, Vec::new);
        }
        self.inner_configs[index].push((key.into(), value.into()));
        self
    }
}
