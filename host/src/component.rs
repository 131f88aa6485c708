//! Loading a stage component: the size cap and the header check before compiling, compiling on
//! a worker thread with a timeout, and the world check (imports the host serves, exports of the
//! right types) before anything is instantiated. A [`StageComponent`] is compiled once and
//! instantiated many times.

use std::path::Path;
use std::sync::Arc;

use wasmtime::component::{Component, InstancePre};

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::fast::{ExecutionPath, Plan};
use crate::sandbox::StageCtx;

impl Engine {
    /// Loads a component from a file. The stage is named after the file stem until it is
    /// given a name at instantiation.
    pub fn load_file(&self, path: impl AsRef<Path>) -> Result<StageComponent> {
        let path = path.as_ref();
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.display().to_string());
        let bytes = std::fs::read(path).map_err(|e| Error::Load {
            stage: name.clone(),
            reason: format!("cannot read {}: {e}", path.display()),
        })?;
        self.load_bytes(&name, &bytes)
    }

    /// Fused mode: composes `stages` (name, component bytes), most upstream first, into one
    /// component and loads it as a single stage named `name` (see `host/src/fuse.rs` for what the
    /// host stops checking inside). Its instances prime and close every inner stage,
    /// upstream-first; errors inside name the stage as `name/inner`.
    pub fn load_fused(&self, name: &str, stages: &[(String, Vec<u8>)]) -> Result<StageComponent> {
        let (bytes, inner) = crate::fuse::compose(name, stages)?;
        let mut component = self.load_bytes(name, &bytes)?;
        // Only a component composed here is fused: never inferred from export names.
        component.fused = inner.into();
        component.plan = None;
        component.path = ExecutionPath::Component {
            reason: "a fused chain: its stages call one another inside wasmtime".into(),
        };
        Ok(component)
    }

    /// Loads a component from bytes (binary, or WAT text), naming it `name` in errors.
    pub fn load_bytes(&self, name: &str, bytes: &[u8]) -> Result<StageComponent> {
        if bytes.len() > self.max_component_bytes {
            return Err(Error::Load {
                stage: name.to_string(),
                reason: format!(
                    "the component is {} bytes, more than the {} the engine compiles",
                    bytes.len(),
                    self.max_component_bytes
                ),
            });
        }
        check_header(name, bytes)?;
        let (component, plan) = self.compile(name, bytes)?;
        let wrong_world = |e: wasmtime::Error| Error::WrongWorld {
            stage: name.to_string(),
            reason: format!("{e:#}"),
        };
        // Imports first (something the host does not grant), then the exports' shape.
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(wrong_world)?;
        crate::world::check_exports(&self.inner, &component).map_err(|reason| {
            Error::WrongWorld {
                stage: name.to_string(),
                reason,
            }
        })?;
        let (plan, path) = match plan {
            Ok(plan) => (Some(Arc::new(plan)), ExecutionPath::Core),
            Err(reason) => (None, ExecutionPath::Component { reason }),
        };
        Ok(StageComponent {
            name: name.into(),
            digest: crate::checksum::digest(bytes).into(),
            engine: self.clone(),
            pre,
            fused: Arc::new([]),
            plan,
            path,
        })
    }

    /// Compiles on a worker thread, giving up after the compile timeout (checklist #3: a
    /// "compile bomb" must not hold the caller hostage); with the fast path on, also reads the
    /// component's wiring and compiles its core modules there ([`crate::fast::plan`]).
    fn compile(&self, name: &str, bytes: &[u8]) -> Result<(Component, PlanOutcome)> {
        let (engine, bytes) = (self.inner.clone(), bytes.to_vec());
        let fast = self.core_fast_path;
        let (done, outcome) = std::sync::mpsc::channel();
        let worker = std::thread::Builder::new()
            .name(format!("sluicegate-compile-{name}"))
            .spawn(move || {
                let compiled = Component::new(&engine, &bytes).map(|component| {
                    let plan = if fast {
                        crate::fast::plan(&engine, &bytes)
                    } else {
                        Err("the engine was built without the fast path".to_string())
                    };
                    (component, plan)
                });
                let _ = done.send(compiled);
            })
            .map_err(|e| Error::Host {
                stage: name.to_string(),
                message: format!("cannot start a compile thread: {e}"),
            })?;
        let load = |reason: String| Error::Load {
            stage: name.to_string(),
            reason,
        };
        match outcome.recv_timeout(self.compile_timeout) {
            Ok(Ok(compiled)) => {
                let _ = worker.join();
                Ok(compiled)
            }
            Ok(Err(e)) => Err(load(format!("invalid component: {e:#}"))),
            Err(_) => Err(load(format!(
                "compiling took longer than {:?}; refused (the compile thread finishes in \
                 the background and its result is discarded)",
                self.compile_timeout
            ))),
        }
    }
}

/// Tells apart "not wasm at all", "a core module" and "a component" before compiling, so the
/// error says what to do.
fn check_header(name: &str, bytes: &[u8]) -> Result<()> {
    const MAGIC: &[u8] = b"\0asm";
    const CORE_VERSION: [u8; 4] = [1, 0, 0, 0];
    let load = |reason: &str| Error::Load {
        stage: name.to_string(),
        reason: reason.to_string(),
    };
    match bytes.get(..8) {
        Some(header) if header.starts_with(MAGIC) => {
            if header[4..8] == CORE_VERSION {
                Err(load(
                    "this is a core WebAssembly module, not a component: build for \
                     `wasm32-wasip2`, or wrap it with `wasm-tools component new`",
                ))
            } else {
                Ok(())
            }
        }
        // WAT text is accepted (hand-written stages, tests); anything else is not wasm.
        _ if looks_like_wat(bytes) => Ok(()),
        _ => Err(load(
            "not a WebAssembly file (no `\\0asm` header); expected a component built for \
             `wasm32-wasip2`",
        )),
    }
}

/// True if `bytes` start, after white space and `;;` line comments, with `(`.
fn looks_like_wat(bytes: &[u8]) -> bool {
    let mut rest = bytes.trim_ascii_start();
    while rest.starts_with(b";;") {
        let end = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
        rest = rest[end..].trim_ascii_start();
    }
    rest.starts_with(b"(")
}

/// A compiled component, checked against the `stage` world. Instantiate it as many times as
/// needed; each instance gets its own store.
#[derive(Clone)]
pub struct StageComponent {
    name: Arc<str>,
    digest: Arc<str>,
    pub(crate) engine: Engine,
    pre: InstancePre<StageCtx>,
    /// Set by [`Engine::load_fused`] only: the inner stages' generator exports and names,
    /// most upstream first.
    fused: Arc<[(String, String)]>,
    /// How to run it as its core modules, when the fast path takes it.
    plan: Option<Arc<Plan>>,
    path: ExecutionPath,
}

/// The fast path's plan for a component, or why it does not take it.
type PlanOutcome = std::result::Result<Plan, String>;

impl std::fmt::Debug for StageComponent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StageComponent")
            .field("name", &self.name)
            .field("digest", &self.digest)
            .finish()
    }
}

impl StageComponent {
    /// The name the component was loaded under (the file stem for files).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A digest of the component's bytes (FNV-1a, 64 bits, hex), to tell versions apart.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// Which way its calls cross the sandbox boundary: its core modules directly (the fast
    /// path), or wasmtime's component model, and why.
    pub fn execution_path(&self) -> &ExecutionPath {
        &self.path
    }

    /// The fast path's plan, when the stage runs on it.
    pub(crate) fn plan(&self) -> Option<&Plan> {
        self.plan.as_deref()
    }

    pub(crate) fn instance_pre(&self) -> &InstancePre<StageCtx> {
        &self.pre
    }

    /// Fused mode: the inner stages' generator exports and names, most upstream first; empty
    /// unless the component was built by [`Engine::load_fused`].
    pub(crate) fn fused_stages(&self) -> &[(String, String)] {
        &self.fused
    }

    /// The names of the interfaces the component imports, in its own order.
    pub(crate) fn imports(&self) -> Vec<String> {
        let component = self.pre.component();
        component
            .component_type()
            .imports(self.engine.wasmtime())
            .map(|(name, _)| name.to_string())
            .collect()
    }
}
