//! Builds the stages the benchmarks run (the market stages and a pass-through) to components.

use std::fmt::Write as _;

const STAGES: &[&str] = &[
    "decode",
    "symbol-filter",
    "vwap",
    "strategy",
    "passthrough",
    "counter",
    "tag-v1",
    "tag-v2",
];

fn main() {
    let artifacts = sluicegate_build_guests::build(
        STAGES,
        &["wit", "guest-sdk", "example-stages", "tests/fixtures"],
    );
    let mut code = String::new();
    for artifact in &artifacts {
        let name = artifact.package.to_uppercase().replace('-', "_");
        writeln!(
            code,
            "pub const {name}: &[u8] = include_bytes!({:?});",
            artifact.path
        )
        .ok();
    }
    sluicegate_build_guests::write_out("stages.rs", &code);
    println!("cargo:rerun-if-changed=build.rs");
}
