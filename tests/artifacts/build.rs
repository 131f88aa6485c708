//! Builds every example stage and every fixture under `tests/fixtures/` to a component (the
//! Python and JavaScript examples with componentize-py and componentize-js, which
//! `scripts/lang-tools` installs), and generates `artifacts.rs`: one path constant per
//! component plus `foreach_fixture!` and `foreach_example!`, so that a fixture or example
//! without a test is a compile error.

use std::fmt::Write as _;
use std::path::Path;

const EXAMPLES: &[&str] = &["tick-source", "decode", "symbol-filter", "vwap", "strategy"];

/// Example stages in other languages: (name, folder, entry point).
const PYTHON: &[(&str, &str, &str)] =
    &[("py-symbol-filter", "example-stages/py-symbol-filter", "app")];
const JAVASCRIPT: &[(&str, &str, &str)] = &[("js-decode", "example-stages/js-decode", "stage.js")];

fn main() {
    // Read at run time, not baked in with env!: a build script compiled in another checkout
    // that shares the target directory must still look at this one.
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let fixtures_dir = Path::new(&manifest_dir).join("../fixtures");
    let mut fixtures: Vec<String> = std::fs::read_dir(&fixtures_dir)
        .expect("reading tests/fixtures")
        .filter_map(|entry| entry.ok())
        .filter(|entry| entry.path().join("Cargo.toml").exists())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    fixtures.sort();
    let mut packages: Vec<&str> = EXAMPLES.to_vec();
    packages.extend(fixtures.iter().map(String::as_str));
    let mut artifacts = sluicegate_build_guests::build(
        &packages,
        &["wit", "guest-sdk", "example-stages", "tests/fixtures"],
    );
    let other_languages = PYTHON
        .iter()
        .map(|&(name, dir, module)| sluicegate_build_guests::componentize_python(name, dir, module))
        .chain(
            JAVASCRIPT.iter().map(|&(name, dir, entry)| {
                sluicegate_build_guests::componentize_js(name, dir, entry)
            }),
        );
    for built in other_languages {
        artifacts.push(built.unwrap_or_else(|e| panic!("{e}")));
    }

    let mut code = String::new();
    for artifact in &artifacts {
        let name = artifact.package.to_uppercase().replace('-', "_");
        writeln!(code, "/// Component built from `{}`.", artifact.package).ok();
        writeln!(code, "pub const {name}: &str = {:?};", artifact.path).ok();
    }
    let list = |names: &[&str]| -> String {
        names
            .iter()
            .map(|n| format!("$mac!({});", n.replace('-', "_")))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let fixture_names: Vec<&str> = fixtures.iter().map(String::as_str).collect();
    let paths = |names: &mut dyn Iterator<Item = &str>| -> String {
        names
            .map(|n| n.to_uppercase().replace('-', "_"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    writeln!(
        code,
        "/// Every fixture component.\npub const FIXTURES: &[&str] = &[{}];",
        paths(&mut fixture_names.iter().copied())
    )
    .ok();
    writeln!(
        code,
        "/// Every example stage component, in every language.\npub const EXAMPLES: &[&str] = &[{}];",
        paths(
            &mut EXAMPLES
                .iter()
                .chain(PYTHON.iter().chain(JAVASCRIPT).map(|(name, ..)| name))
                .copied()
        )
    )
    .ok();
    writeln!(
        code,
        "/// Calls `$mac!(name)` for every fixture.\n#[macro_export]\nmacro_rules! foreach_fixture {{ ($mac:ident) => {{ {} }}; }}",
        list(&fixture_names)
    )
    .ok();
    writeln!(
        code,
        "/// Calls `$mac!(name)` for every example stage.\n#[macro_export]\nmacro_rules! foreach_example {{ ($mac:ident) => {{ {} }}; }}",
        list(
            &EXAMPLES
                .iter()
                .chain(PYTHON.iter().chain(JAVASCRIPT).map(|(name, ..)| name))
                .copied()
                .collect::<Vec<_>>()
        )
    )
    .ok();
    sluicegate_build_guests::write_out("artifacts.rs", &code);
    println!("cargo:rerun-if-changed=build.rs");
}
