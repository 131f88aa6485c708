//! What the `sluicegate` command adds to the library's pipelines, as a library so that tests and
//! programs can build the same pipelines: the example stages embedded in the binary
//! (`component = "builtin:NAME"`) and the `generate` source, the synthetic market feed
//! (`[source] kind = "generate"`, `feed.rs`).
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod feed;

use sluicegate::{Engine, PipelineBuilder};

include!(concat!(env!("OUT_DIR"), "/builtin.rs"));

/// A pipeline builder that knows the embedded example stages and the `generate` source.
pub fn pipelines(engine: &Engine) -> PipelineBuilder<'_> {
    BUILTIN.iter().fold(
        PipelineBuilder::new(engine).source_kind(feed::KIND, feed::open),
        |builder, (name, bytes)| builder.builtin(name, *bytes),
    )
}

/// The names of the embedded example stages (`builtin:NAME`).
pub fn builtin_names() -> impl Iterator<Item = &'static str> {
    BUILTIN.iter().map(|(name, _)| *name)
}
