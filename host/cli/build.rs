//! Builds the example stages to components and embeds them (`builtin:NAME` in pipeline files),
//! so `sluicegate demo` runs with nothing else to build or download.

use std::fmt::Write as _;

const BUILTIN: &[&str] = &["tick-source", "decode", "symbol-filter", "vwap", "strategy"];

fn main() {
    let artifacts =
        sluicegate_build_guests::build(BUILTIN, &["wit", "guest-sdk", "example-stages"]);
    let mut code = String::from(
        "/// The embedded example stages, by name.\nconst BUILTIN: &[(&str, &[u8])] = &[\n",
    );
    for artifact in &artifacts {
        writeln!(
            code,
            "    ({:?}, include_bytes!({:?})),",
            artifact.package, artifact.path
        )
        .ok();
    }
    code.push_str("];\n");
    sluicegate_build_guests::write_out("builtin.rs", &code);
    println!("cargo:rerun-if-changed=build.rs");
}
