//! Fused mode: a chain of stages composed into **one** component, so that a hop between them
//! is a call between component instances inside wasmtime (a compiled adapter that copies the
//! chunk from one linear memory to the next) instead of a round trip through the host.
//!
//! The composition (with `wac-graph`) instantiates each stage, and satisfies stage *i*'s
//! `upstream` import with stage *i − 1*'s `generator` export through a tiny adapter component
//! (`pull` is `resume`: same signature). The fused component imports what the first stage
//! imports (its `upstream`, the host's services, WASI) and exports the last stage's
//! `generator`, plus every inner stage's generator as `fused-<letter>-<name>`, most upstream
//! first, so that the host can prime and close each inner stage itself, upstream-first
//! (`stage/instance.rs` does).
//!
//! Each inner stage also imports host services of its own (`fused-<letter>-host`), so it reads
//! its own configuration and logs under its own name (`fused/inner`).
//!
//! What fusing gives up, by design: the host no longer sees the hops inside. Chunks between
//! fused stages are not checked (C1, C2), not counted per stage, and the stages share one
//! store: one CPU budget per call, one fault for all. Fuse stages you trust together; keep
//! untrusted ones isolated.

use wac_graph::types::{ItemKind, Package};
use wac_graph::{CompositionGraph, EncodeOptions, NodeId};

use crate::error::{Error, Result};

/// The interface a stage exports, and the one it imports from upstream.
const GENERATOR: &str = "sluicegate:stage/generator@0.1.0";
const UPSTREAM: &str = "sluicegate:stage/upstream@0.1.0";
const HOST: &str = "sluicegate:stage/host@0.1.0";

/// Most stages a chain can fuse (one letter each in the inner export names).
pub(crate) const MAX_FUSED: usize = 26;

/// Prefix of the exports through which the host reaches the inner stages.
const INNER_PREFIX: &str = "fused-";

/// Turns a `generator` instance into an `upstream` instance: `pull` is `resume`.
const ADAPTER: &str = r#"(component
  (import "sluicegate:stage/generator@0.1.0" (instance $g
    (type $bytes (list u8))
    (export "chunk" (type $chunk (eq $bytes)))
    (export "resume" (func (param "credits" u32) (result (option $chunk))))
    (export "close" (func))))
  (alias export $g "resume" (func $resume))
  (alias export $g "chunk" (type $chunk))
  (instance $upstream (export "chunk" (type $chunk)) (export "pull" (func $resume)))
  (export "sluicegate:stage/upstream@0.1.0" (instance $upstream)))"#;

/// The inner stages of a fused chain, most upstream first: each one's generator export and its
/// stage name.
pub(crate) type InnerStages = Vec<(String, String)>;

/// Composes `stages` (name, component bytes), most upstream first, into one component.
/// `name` names the fused stage in errors. Returns the component and, most upstream first,
/// each inner stage's generator export and its name in errors.
pub(crate) fn compose(name: &str, stages: &[(String, Vec<u8>)]) -> Result<(Vec<u8>, InnerStages)> {
    let fail = |reason: String| Error::Load {
        stage: name.to_string(),
        reason: format!("cannot fuse: {reason}"),
    };
    if stages.len() < 2 {
        return Err(fail("fusing needs at least two stages".into()));
    }
    if stages.len() > MAX_FUSED {
        return Err(fail(format!(
            "{} stages; at most {MAX_FUSED} can be fused",
            stages.len()
        )));
    }
    let adapter = wat::parse_str(ADAPTER).map_err(|e| fail(format!("adapter: {e}")))?;
    let mut graph = CompositionGraph::new();
    let adapter = Package::from_bytes("sluicegate:fuse-adapter", None, adapter, graph.types_mut())
        .map_err(|e| fail(format!("adapter: {e:#}")))?;
    let adapter = graph
        .register_package(adapter)
        .map_err(|e| fail(format!("adapter: {e:#}")))?;
    let mut previous: Option<NodeId> = None;
    let mut inner = Vec::with_capacity(stages.len() - 1);
    for (i, (stage, bytes)) in stages.iter().enumerate() {
        let at = |e: &dyn std::fmt::Display| fail(format!("stage `{stage}`: {e:#}"));
        let package = Package::from_bytes(
            &format!("sluicegate:fused-{}", letter(i)),
            None,
            bytes.clone(),
            graph.types_mut(),
        )
        .map_err(|e| at(&e))?;
        let package = graph.register_package(package).map_err(|e| at(&e))?;
        let world = graph[package].ty();
        let host = graph.types()[world].imports.get(HOST).copied();
        let instance = graph.instantiate(package);
        // An inner stage gets host services of its own (`fused-<letter>-host`: its own
        // configuration, its own name in the log); the last stage keeps the fused stage's.
        if let Some(ItemKind::Instance(iface)) = host.filter(|_| i + 1 < stages.len()) {
            // The same exports as an anonymous instance type: an interface-typed import under
            // another name would be encoded with `(implements ...)`, which wasmtime 48 does
            // not read.
            let mut anonymous = graph.types()[iface].clone();
            anonymous.id = None;
            let kind = ItemKind::Instance(graph.types_mut().add_interface(anonymous));
            let import = graph
                .import(inner_host_import(i), kind)
                .map_err(|e| at(&e))?;
            graph
                .set_instantiation_argument(instance, HOST, import)
                .map_err(|e| at(&e))?;
        }
        if let Some(generator) = previous {
            let bridge = graph.instantiate(adapter);
            graph
                .set_instantiation_argument(bridge, GENERATOR, generator)
                .map_err(|e| at(&e))?;
            let upstream = graph
                .alias_instance_export(bridge, UPSTREAM)
                .map_err(|e| at(&e))?;
            graph
                .set_instantiation_argument(instance, UPSTREAM, upstream)
                .map_err(|e| at(&e))?;
        }
        let generator = graph
            .alias_instance_export(instance, GENERATOR)
            .map_err(|e| at(&e))?;
        let export = if i + 1 == stages.len() {
            GENERATOR.to_string()
        } else {
            let export = inner_export(i, stage);
            inner.push((export.clone(), stage.clone()));
            export
        };
        graph.export(generator, &export).map_err(|e| at(&e))?;
        previous = Some(generator);
    }
    let bytes = graph
        .encode(EncodeOptions::default())
        .map_err(|e| fail(format!("{e:#}")))?;
    Ok((bytes, inner))
}

/// `fused-<letter>-<name as kebab-case>`: the letter keeps the order, the name the errors.
fn inner_export(index: usize, name: &str) -> String {
    let words: Vec<String> = name
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(|w| {
            let w = w.to_ascii_lowercase();
            if w.starts_with(|c: char| c.is_ascii_digit()) {
                format!("n{w}")
            } else {
                w
            }
        })
        .collect();
    let name = if words.is_empty() {
        "stage".to_string()
    } else {
        words.join("-")
    };
    format!("{INNER_PREFIX}{}-{name}", letter(index))
}

/// The name inner stage `inner` of the fused stage `fused` goes by in errors and logs.
pub(crate) fn inner_stage_name(fused: &str, inner: &str) -> String {
    format!("{fused}/{inner}")
}

/// The import through which inner stage `index` reaches its own host services.
pub(crate) fn inner_host_import(index: usize) -> String {
    format!("{INNER_PREFIX}{}-host", letter(index))
}

fn letter(index: usize) -> char {
    char::from(b'a' + u8::try_from(index % 26).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inner_exports_are_kebab_case_and_keep_the_order() {
        assert_eq!(inner_export(0, "decode"), "fused-a-decode");
        assert_eq!(inner_export(1, "symbol_filter"), "fused-b-symbol-filter");
        assert_eq!(inner_export(2, "VWAP 32"), "fused-c-vwap-n32");
    }
}
