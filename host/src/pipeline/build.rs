//! From a [`PipelineSpec`] to a running chain: loads every component (files, or `builtin:`
//! components the program provides), instantiates the stages upstream to downstream with the
//! limits, capabilities and fault policy the file gives each, and opens the source (the
//! library's `file` and `stdin`, or a kind the program adds) and the sink.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

mod nats;

pub(crate) use self::nats::Replicas;

use super::Pipeline;
use super::partitions::{
    Key, KeyStage, Keys, PartitionInput, Partitions, Router, Shared, SpillSettings, replica_name,
};
use super::sink::Sink;
use super::source::{CountedSource, OpenSource};
use super::stage_settings::stage_options;
use crate::component::StageComponent;
use crate::config::{
    BUILTIN, ComponentRef, NATS, PipelineSpec, SourceSpec, StageSpec, base_dir, resolve,
    stage_config,
};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::stage::Stage;
use crate::upstream::Upstream;

/// A stage's spec and component, loaded once for every replica, with the configurations of
/// the inner stages when it is a fused chain.
pub(crate) type Loaded = (StageSpec, StageComponent, Vec<Vec<(String, String)>>);

/// Builds pipelines from pipeline files, with the components and source kinds a program adds
/// to what the library knows (component files; `file` and `stdin` sources).
///
/// ```no_run
/// # fn main() -> Result<(), sluicegate::Error> {
/// use sluicegate::config::PipelineSpec;
/// use sluicegate::{Engine, PipelineBuilder};
///
/// let engine = Engine::new()?;
/// let spec = PipelineSpec::from_file("pipeline.toml".as_ref())?;
/// let mut pipeline = PipelineBuilder::new(&engine)
///     // `component = "builtin:upper"` in the file
///     .builtin("upper", std::fs::read("upper.wasm").unwrap_or_default())
///     .build(&spec, "pipeline.toml".as_ref())?;
/// println!("{}", pipeline.run());
/// # Ok(())
/// # }
/// ```
pub struct PipelineBuilder<'a> {
    engine: &'a Engine,
    builtins: HashMap<String, Arc<[u8]>>,
    sources: HashMap<String, Arc<OpenSource>>,
}

impl<'a> PipelineBuilder<'a> {
    /// A builder that knows component files and the `file` and `stdin` sources.
    pub fn new(engine: &'a Engine) -> Self {
        PipelineBuilder {
            engine,
            builtins: HashMap::new(),
            sources: HashMap::new(),
        }
    }

    /// Makes `component = "builtin:NAME"` refer to the component `bytes`.
    pub fn builtin(mut self, name: &str, bytes: impl Into<Arc<[u8]>>) -> Self {
        self.builtins.insert(name.to_string(), bytes.into());
        self
    }

    /// Makes `[source] kind = "KIND"` a source that `open` opens from the source's settings
    /// (the other keys of its table; see [`SourceSpec::settings`]). The source must honour the
    /// [`Demand`](crate::Demand) of every pull.
    pub fn source_kind(
        mut self,
        kind: &str,
        open: impl Fn(&SourceSpec) -> Result<Box<dyn Upstream>> + Send + Sync + 'static,
    ) -> Self {
        self.sources.insert(kind.to_string(), Arc::new(open));
        self
    }

    /// Validates `spec`, loads every component (type-checked against the world), instantiates
    /// the stages chained upstream to downstream, and opens the source and sink. `origin` is
    /// the pipeline file: relative paths are resolved against its directory.
    pub fn build(&self, spec: &PipelineSpec, origin: &Path) -> Result<Pipeline> {
        spec.validate(origin)?;
        let base = base_dir(origin);
        let source = match &spec.source {
            Some(source) if source.kind == NATS => None,
            Some(source) => Some(CountedSource::open(source, origin, &self.sources)?),
            None => None,
        };
        let components = self.components(spec, origin, &base)?;
        let sink = Sink::open(&spec.sink, origin)?;
        if let Some(source) = spec.source.as_ref().filter(|s| s.kind == NATS) {
            return self.nats_partitions(spec, origin, components, source, sink);
        }
        match &spec.partitions {
            None => self.chain(spec, origin, &components, source, sink, None),
            Some(partitions) => {
                let source = source.ok_or_else(|| Error::Config {
                    file: origin.display().to_string(),
                    message:
                        "[partitions] routes the records of a [source]; this pipeline has none"
                            .into(),
                })?;
                let replicas = usize::try_from(partitions.replicas()).unwrap_or(1).max(1);
                let mut key_stage = None;
                let keys = match (&partitions.key.stage, partitions.key.field) {
                    (Some(stage_spec), _) => {
                        let stage = self.key_stage(stage_spec, &base)?;
                        key_stage = Some(stage.stage());
                        Keys::Stage(stage)
                    }
                    (None, field) => Keys::Field(Key {
                        delimiter: partitions.delimiter(),
                        field: field.unwrap_or(0),
                    }),
                };
                let shared = Arc::new(Shared::default());
                let stall = (spec.sink.stall_timeout_ms > 0)
                    .then(|| Duration::from_millis(spec.sink.stall_timeout_ms));
                let counters = source.counters();
                let spill = SpillSettings {
                    dir: partitions.spill_dir(&base),
                    max_bytes: partitions.spill_bytes(),
                };
                let spill_dir = spill.dir.clone();
                if spill.max_bytes > 0
                    && let Err(e) = tempfile::tempfile_in(&spill_dir)
                {
                    return Err(Error::Config {
                        file: origin.display().to_string(),
                        message: format!(
                            "[partitions] cannot make a spill file in {}: {e} (set spill_dir, or \
                             spill_mib = 0 for no spill files)",
                            spill_dir.display()
                        ),
                    });
                }
                let (router, queues) = Router::new(
                    Box::new(source),
                    keys,
                    (replicas, partitions.queue_chunks(), spill),
                    shared.clone(),
                    stall,
                );
                let mut built = Vec::with_capacity(replicas);
                let mut lanes = Vec::with_capacity(replicas);
                for (replica, (queue, stats)) in queues.into_iter().enumerate() {
                    lanes.push(stats);
                    let input = PartitionInput::new(queue, replica, shared.clone());
                    built.push(self.chain(
                        spec,
                        origin,
                        &components,
                        Some(CountedSource::wrap(Box::new(input))),
                        sink.replica(replica),
                        Some(replica),
                    )?);
                }
                let partitions = Partitions {
                    replicas: built,
                    router: Some(router),
                    shared,
                    source: Some(counters),
                    key_stage,
                    lanes,
                    spill_dir,
                };
                Ok(self.partitioned(spec, sink, partitions))
            }
        }
    }

    /// The top of a partitioned pipeline: it runs no chain itself; its replicas share its stop
    /// flag, and its stages are every replica's.
    fn partitioned(&self, spec: &PipelineSpec, sink: Sink, mut partitions: Partitions) -> Pipeline {
        let mut pipeline = self.partitioned_top(spec, sink);
        for replica in &mut partitions.replicas {
            replica.stop = pipeline.stop.clone();
        }
        pipeline.stages = partitions
            .replicas
            .iter()
            .flat_map(|r| r.stages.iter().cloned())
            .collect();
        pipeline.partitions = Some(partitions);
        pipeline
    }

    /// A pipeline that runs no chain itself: the top of replicas running on threads of their
    /// own.
    fn partitioned_top(&self, spec: &PipelineSpec, sink: Sink) -> Pipeline {
        Pipeline::new(
            spec.name.clone().unwrap_or_else(|| "pipeline".into()),
            spec.sink.credits,
            None,
            Vec::new(),
            Box::new(NoInput),
            sink,
            None,
            self.engine.max_wasm_stack(),
        )
    }

    /// The key stage of `[partitions]`, instantiated on the router's feed with its own
    /// settings (limits, capabilities, configuration).
    fn key_stage(&self, spec: &StageSpec, base: &Path) -> Result<KeyStage> {
        let bytes = self.component_bytes(&spec.name, &spec.component, base)?;
        let component = self.engine.load_bytes(&spec.name, &bytes)?;
        let (feeder, feed) = KeyStage::feeder();
        let mut options = stage_options(spec, base)?.upstream(feeder);
        let config = stage_config(spec).map_err(|message| Error::Config {
            file: base.display().to_string(),
            message: format!("key stage `{}`: {message}", spec.name),
        })?;
        for (key, value) in config {
            options = options.config(key, value);
        }
        Ok(KeyStage::new(
            component.instantiate(&spec.name, options)?,
            feed,
        ))
    }

    /// Every stage's component, loaded (compiled) once for every replica: with the inner
    /// stages' configurations when the pipeline is fused.
    fn components(&self, spec: &PipelineSpec, origin: &Path, base: &Path) -> Result<Vec<Loaded>> {
        let config_of = |stage_spec: &StageSpec| {
            stage_config(stage_spec).map_err(|message| Error::Config {
                file: origin.display().to_string(),
                message: format!("stage `{}`: {message}", stage_spec.name),
            })
        };
        if spec.fused {
            let (component, fused) = self.fuse_stages(spec, origin, base)?;
            // The last stage's configuration is the fused stage's; each inner stage gets its
            // own through `inner_config`.
            let inner = spec.stages[..spec.stages.len().saturating_sub(1)]
                .iter()
                .map(config_of)
                .collect::<Result<Vec<_>>>()?;
            return Ok(vec![(fused, component, inner)]);
        }
        spec.stages
            .iter()
            .map(|stage_spec| {
                let bytes = self.component_bytes(&stage_spec.name, &stage_spec.component, base)?;
                let component = self.engine.load_bytes(&stage_spec.name, &bytes)?;
                Ok((stage_spec.clone(), component, Vec::new()))
            })
            .collect()
    }

    /// One chain of `components` from `source` to `sink`; `replica` names its stages
    /// `name#replica` and its dead-letter files `path.replica`.
    fn chain(
        &self,
        spec: &PipelineSpec,
        origin: &Path,
        components: &[Loaded],
        mut source: Option<CountedSource>,
        sink: Sink,
        replica: Option<usize>,
    ) -> Result<Pipeline> {
        let base = base_dir(origin);
        let source_counters = source.as_ref().map(CountedSource::counters);
        let mut stages: Vec<Stage> = Vec::with_capacity(components.len());
        for (stage_spec, component, inner) in components {
            let mut stage_spec = stage_spec.clone();
            if let Some(replica) = replica
                && let Some(path) = stage_spec.dead_letter.as_mut()
            {
                let mut name = path.clone().into_os_string();
                name.push(format!(".{replica}"));
                *path = name.into();
            }
            let mut options = stage_options(&stage_spec, &base)?;
            let config = stage_config(&stage_spec).map_err(|message| Error::Config {
                file: origin.display().to_string(),
                message: format!("stage `{}`: {message}", stage_spec.name),
            })?;
            for (key, value) in config {
                options = options.config(key, value);
            }
            for (index, config) in inner.iter().enumerate() {
                for (key, value) in config {
                    options = options.inner_config(index, key.clone(), value.clone());
                }
            }
            options = match (stages.last(), source.take()) {
                (Some(previous), _) => options.upstream(previous.clone()),
                (None, Some(native)) => options.upstream(native),
                (None, None) => options,
            };
            let name = match replica {
                Some(replica) => replica_name(&stage_spec.name, replica),
                None => stage_spec.name.clone(),
            };
            stages.push(component.instantiate(&name, options)?);
        }
        let tail: Box<dyn Upstream> = match (stages.last(), source) {
            (Some(last), _) => Box::new(last.clone()),
            (None, Some(native)) => Box::new(native),
            (None, None) => Box::new(NoInput),
        };
        Ok(Pipeline::new(
            spec.name.clone().unwrap_or_else(|| "pipeline".into()),
            spec.sink.credits,
            source_counters,
            stages,
            tail,
            sink,
            (spec.sink.stall_timeout_ms > 0)
                .then(|| Duration::from_millis(spec.sink.stall_timeout_ms)),
            self.engine.max_wasm_stack(),
        ))
    }

    /// The bytes of a stage's component, naming the stage (not the file) in every error.
    fn component_bytes(&self, stage: &str, component: &str, base: &Path) -> Result<Arc<[u8]>> {
        match resolve(component, base) {
            ComponentRef::Builtin(name) => self.builtins.get(name).cloned().ok_or_else(|| {
                let mut known: Vec<&str> = self.builtins.keys().map(String::as_str).collect();
                known.sort_unstable();
                Error::Load {
                    stage: stage.to_string(),
                    reason: match known.as_slice() {
                        [] => format!("no component `{BUILTIN}{name}`: this program provides none"),
                        known => format!(
                            "no component `{BUILTIN}{name}`; this program provides {}",
                            known.join(", ")
                        ),
                    },
                }
            }),
            ComponentRef::File(path) => {
                std::fs::read(&path)
                    .map(Arc::from)
                    .map_err(|e| Error::Load {
                        stage: stage.to_string(),
                        reason: format!("cannot read {}: {e}", path.display()),
                    })
            }
        }
    }

    /// Fused mode: every stage composed into one component, run as one stage named after the
    /// stages (`decode+filter+vwap`) with the last stage's settings.
    fn fuse_stages(
        &self,
        spec: &PipelineSpec,
        origin: &Path,
        base: &Path,
    ) -> Result<(StageComponent, StageSpec)> {
        let parts = spec
            .stages
            .iter()
            .map(|s| {
                let bytes = self.component_bytes(&s.name, &s.component, base)?;
                Ok((s.name.clone(), bytes.to_vec()))
            })
            .collect::<Result<Vec<_>>>()?;
        let name = spec
            .stages
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>()
            .join("+");
        let component = self.engine.load_fused(&name, &parts)?;
        // Validation guarantees at least two stages.
        let mut fused = spec.stages.last().cloned().ok_or_else(|| Error::Config {
            file: origin.display().to_string(),
            message: "`fused = true` needs at least two stages".into(),
        })?;
        fused.name = name;
        Ok((component, fused))
    }
}

impl Pipeline {
    /// Builds the pipeline of `spec` with what the library knows alone: component files, and
    /// `file` and `stdin` sources. [`PipelineBuilder`] adds `builtin:` components and source
    /// kinds.
    pub fn build(engine: &Engine, spec: &PipelineSpec, origin: &Path) -> Result<Pipeline> {
        PipelineBuilder::new(engine).build(spec, origin)
    }
}

/// The input of the top of a partitioned pipeline, which runs no chain itself (its replicas
/// have their inputs), and of a chain with neither source nor stage (validation refuses it).
struct NoInput;

impl Upstream for NoInput {
    fn pull(&mut self, _demand: crate::upstream::Demand) -> Result<Option<crate::chunk::Chunk>> {
        Ok(None)
    }
}
