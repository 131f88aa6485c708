//! The engine: one wasmtime `Engine` and one `Linker`, built once. Components are compiled and
//! type-checked against the `stage` world once ([`StageComponent`]) and instantiated many times.

use std::path::Path;
use std::sync::Arc;

use wasmtime::component::{Component, Linker};

use crate::bindings::{StageWorld, StageWorldPre};
use crate::error::{Error, Result};
use crate::stage::{Stage, StageCtx, StageOptions};

/// Loads and compiles stage components. Cheap to clone; share one per process.
#[derive(Clone)]
pub struct Engine {
    inner: wasmtime::Engine,
    linker: Arc<Linker<StageCtx>>,
}

impl Engine {
    /// An engine with the default configuration: Cranelift, the component model, and WASI
    /// linked with nothing granted (no files, env, args or network), because `wasm32-wasip2`
    /// guests import WASI through std.
    pub fn new() -> Result<Self> {
        let mut config = wasmtime::Config::new();
        config.wasm_component_model(true);
        let inner = wasmtime::Engine::new(&config).map_err(|e| host_error("-", e))?;
        let mut linker = Linker::new(&inner);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(|e| host_error("-", e))?;
        StageWorld::add_to_linker::<_, wasmtime::component::HasSelf<StageCtx>>(
            &mut linker,
            |ctx| ctx,
        )
        .map_err(|e| host_error("-", e))?;
        Ok(Engine {
            inner,
            linker: Arc::new(linker),
        })
    }

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

    /// Loads a component from bytes (binary, or WAT text), naming it `name` in errors.
    pub fn load_bytes(&self, name: &str, bytes: &[u8]) -> Result<StageComponent> {
        check_header(name, bytes)?;
        let component = Component::new(&self.inner, bytes).map_err(|e| Error::Load {
            stage: name.to_string(),
            reason: format!("invalid component: {e:#}"),
        })?;
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
        let pre = StageWorldPre::new(pre).map_err(wrong_world)?;
        Ok(StageComponent {
            name: name.into(),
            engine: self.clone(),
            pre,
        })
    }

    pub(crate) fn wasmtime(&self) -> &wasmtime::Engine {
        &self.inner
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
        // WAT text is accepted (handy in tests); anything else is not wasm.
        _ if bytes.trim_ascii_start().starts_with(b"(") => Ok(()),
        _ => Err(load(
            "not a WebAssembly file (no `\\0asm` header); expected a component built for \
             `wasm32-wasip2`",
        )),
    }
}

pub(crate) fn host_error(stage: &str, e: wasmtime::Error) -> Error {
    Error::Host {
        stage: stage.to_string(),
        message: format!("{e:#}"),
    }
}

/// A compiled component, checked against the `stage` world. Instantiate it as many times as
/// needed; each instance gets its own store.
#[derive(Clone)]
pub struct StageComponent {
    name: Arc<str>,
    engine: Engine,
    pre: StageWorldPre<StageCtx>,
}

impl StageComponent {
    /// The name the component was loaded under (the file stem for files).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Instantiates a new stage named `name`. The stage starts **Created**: nothing in it
    /// has run except component start functions; call [`Stage::prime`] next.
    pub fn instantiate(&self, name: &str, options: StageOptions) -> Result<Stage> {
        Stage::instantiate(&self.engine, &self.pre, name, options)
    }
}
