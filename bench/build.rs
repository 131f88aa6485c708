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
    // The Python and JavaScript stages, if their toolchains are installed (scripts/lang-tools):
    // paths, not bytes (the Python one is 18 MB).
    let other_languages = [
        (
            "PY_SYMBOL_FILTER",
            sluicegate_build_guests::componentize_python(
                "py-symbol-filter",
                "example-stages/py-symbol-filter",
                "app",
            ),
        ),
        (
            "JS_DECODE",
            sluicegate_build_guests::componentize_js(
                "js-decode",
                "example-stages/js-decode",
                "stage.js",
            ),
        ),
    ];
    for (name, built) in other_languages {
        let value = match built {
            Ok(artifact) => format!("Ok({:?})", artifact.path),
            Err(why) => format!("Err({why:?})"),
        };
        writeln!(code, "pub const {name}: Result<&str, &str> = {value};").ok();
    }
    sluicegate_build_guests::write_out("stages.rs", &code);
    println!("cargo:rerun-if-changed=build.rs");
}
