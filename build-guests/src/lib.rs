//! Compiles guest stage crates to `wasm32-wasip2` components from a build script, the way
//! wasmtime's `test-programs/artifacts` does: one nested `cargo build` with its own target
//! directory under `OUT_DIR`, artifacts found from cargo's JSON output, and
//! `rerun-if-changed` on every source folder so edits to a guest rebuild it.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

mod lang;

pub use lang::{componentize_js, componentize_python};

/// The target every stage is built for.
pub const TARGET: &str = "wasm32-wasip2";

/// A built component.
#[derive(Debug, Clone)]
pub struct Artifact {
    /// The cargo package name, e.g. `tick-source`.
    pub package: String,
    /// Absolute path of the `.wasm` component.
    pub path: PathBuf,
}

/// Builds `packages` (cargo package names of `cdylib` guest crates in this workspace) in
/// release mode for [`TARGET`], watching `watch` (folders, relative to the workspace root) for
/// changes. Panics with an actionable message on failure, as build scripts do.
pub fn build(packages: &[&str], watch: &[&str]) -> Vec<Artifact> {
    let workspace = workspace_root();
    for folder in watch {
        println!(
            "cargo:rerun-if-changed={}",
            workspace.join(folder).display()
        );
    }
    let out_dir = PathBuf::from(env("OUT_DIR"));
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(&workspace)
        .args(["build", "--release", "--target", TARGET])
        .arg("--message-format=json-render-diagnostics")
        .env("CARGO_TARGET_DIR", guest_target_dir(&out_dir))
        // Small, quick-to-load components: no debug info in guests.
        .env("CARGO_PROFILE_RELEASE_DEBUG", "false")
        .env("CARGO_PROFILE_RELEASE_STRIP", "debuginfo")
        // One codegen unit, optimised across crates: the SDK and the stage's own crates inline
        // into each other (a stage is small; its build is quick either way).
        .env("CARGO_PROFILE_RELEASE_LTO", "fat")
        .env("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "1")
        // These describe the outer (host) build, not ours (a fuzz build's instrumentation, for
        // one, must not reach the guests).
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        // `cargo clippy` compiles the workspace through clippy-driver, which turns MIR
        // optimisations off: guests built under it run about a tenth slower, and would
        // replace the ones every other build (the benchmark's included) shares. The guests'
        // code is linted by the outer `cargo clippy --workspace` on the host target.
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("CLIPPY_ARGS")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for package in packages {
        cmd.args(["-p", package]);
    }
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run cargo to build the guest stages: {e}"));
    let mut artifacts = Vec::new();
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            artifacts.extend(parse_artifact(&line));
        }
    }
    let status = child.wait().expect("waiting for the nested cargo build");
    if !status.success() {
        panic!(
            "building the guest stages for {TARGET} failed (see the errors above). \
             If the target is missing, run `rustup target add {TARGET}`."
        );
    }
    for package in packages {
        assert!(
            artifacts.iter().any(|a| a.package == *package),
            "cargo built no component for `{package}`: is it a cdylib?"
        );
    }
    artifacts
}

/// The workspace root: the nearest ancestor of the calling crate with a `Cargo.lock` or `wit/`.
pub(crate) fn workspace_root() -> PathBuf {
    let manifest_dir = PathBuf::from(env("CARGO_MANIFEST_DIR"));
    manifest_dir
        .ancestors()
        .find(|dir| dir.join("Cargo.lock").exists() || dir.join("wit").is_dir())
        .unwrap_or(&manifest_dir)
        .to_path_buf()
}

/// One directory for every guest build of the workspace (`<target>/sluicegate-guests`), so the
/// host's and the tests' build scripts, in every profile, share one set of compiled guests.
/// Concurrent builds wait on cargo's lock there; the outer build never holds it.
pub(crate) fn guest_target_dir(out_dir: &Path) -> PathBuf {
    // OUT_DIR is `<target>[/<triple>]/<profile>/build/<pkg>-<hash>/out`.
    out_dir
        .ancestors()
        .find(|dir| dir.file_name().is_some_and(|n| n == "build"))
        .and_then(Path::parent)
        .and_then(Path::parent)
        .map(|target| target.join("sluicegate-guests"))
        .unwrap_or_else(|| out_dir.join("guests"))
}

fn parse_artifact(line: &str) -> Option<Artifact> {
    let msg: serde_json::Value = serde_json::from_str(line).ok()?;
    if msg.get("reason")?.as_str()? != "compiler-artifact" {
        return None;
    }
    let package = msg.get("target")?.get("name")?.as_str()?.replace('_', "-");
    let path = msg
        .get("filenames")?
        .as_array()?
        .iter()
        .filter_map(|f| f.as_str())
        .find(|f| f.ends_with(".wasm"))?;
    Some(Artifact {
        package,
        path: PathBuf::from(path),
    })
}

/// Writes `contents` to `OUT_DIR/name` and returns the path.
pub fn write_out(name: &str, contents: &str) -> PathBuf {
    let path = Path::new(&env("OUT_DIR")).join(name);
    std::fs::write(&path, contents).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    path
}

pub(crate) fn env(key: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| panic!("{key} is not set: call this from a build script"))
}
