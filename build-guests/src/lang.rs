//! Stages written in Python and JavaScript, built with their own toolchains: componentize-py
//! (PyPI) and componentize-js (npm), installed by `scripts/lang-tools` into
//! `<target>/sluicegate-tools` at the versions the stage folders pin. A component is rebuilt
//! only when a source file, the WIT or the toolchain changed (each build takes 10-15 s).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

use crate::{Artifact, env, guest_target_dir, workspace_root};

/// Builds the Python stage in `dir` (relative to the workspace root) whose app module is
/// `module`, with componentize-py, to a component named `name`, for the `stateful-stage`
/// world (the module exports `Generator` and `State`). `Err` says what is missing and how to
/// install it.
pub fn componentize_python(name: &str, dir: &str, module: &str) -> Result<Artifact, String> {
    let tools = tools_dir();
    let tool = tools.join("py/bin/componentize-py");
    let stamp = tools.join("py/installed.txt");
    let root = workspace_root();
    build_with(name, dir, &tool, &stamp, |out| {
        let mut cmd = Command::new(&tool);
        cmd.current_dir(&root)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .args([
                "-d",
                "wit",
                "-w",
                "stateful-stage",
                "componentize",
                "-p",
                dir,
                module,
                "-o",
            ])
            .arg(out);
        cmd
    })
}

/// Builds the JavaScript stage in `dir` (relative to the workspace root) whose module is
/// `entry`, with componentize-js, to a component named `name`, for the `stateful-stage` world
/// (the module exports `generator` and `state`). WASI HTTP is left out: the host does not
/// serve it. `Err` says what is missing and how to install it.
pub fn componentize_js(name: &str, dir: &str, entry: &str) -> Result<Artifact, String> {
    let tools = tools_dir();
    let tool = tools.join("js/node_modules/.bin/componentize-js");
    let stamp = tools.join("js/installed.json");
    let root = workspace_root();
    let source = format!("{dir}/{entry}");
    build_with(name, dir, &tool, &stamp, |out| {
        let mut cmd = Command::new(&tool);
        cmd.current_dir(&root)
            .arg(&source)
            .args(["--wit", "wit", "--world-name", "stateful-stage"])
            .args(["--disable", "http", "fetch-event", "-o"])
            .arg(out);
        cmd
    })
}

/// `<target>/sluicegate-tools`, where `scripts/lang-tools` installs the toolchains.
fn tools_dir() -> PathBuf {
    let guests = guest_target_dir(Path::new(&env("OUT_DIR")));
    guests
        .parent()
        .map(|target| target.join("sluicegate-tools"))
        .unwrap_or_else(|| guests.join("tools"))
}

fn build_with(
    name: &str,
    dir: &str,
    tool: &Path,
    stamp: &Path,
    command: impl FnOnce(&Path) -> Command,
) -> Result<Artifact, String> {
    let root = workspace_root();
    println!("cargo:rerun-if-changed={}", stamp.display());
    if !tool.exists() || !stamp.exists() {
        return Err(format!(
            "building the {name} stage needs {}, which is not installed: run \
             `scripts/lang-tools` (./scripts/test runs it for you)",
            tool.display()
        ));
    }
    let mut inputs = source_files(&root.join(dir));
    inputs.extend(source_files(&root.join("wit")));
    inputs.push(stamp.to_path_buf());
    for input in &inputs {
        println!("cargo:rerun-if-changed={}", input.display());
    }
    let out_dir = guest_target_dir(Path::new(&env("OUT_DIR"))).join("lang");
    std::fs::create_dir_all(&out_dir)
        .map_err(|e| format!("creating {}: {e}", out_dir.display()))?;
    let out = out_dir.join(format!("{name}.wasm"));
    let newest_input = inputs.iter().filter_map(|p| modified(p)).max();
    let fresh = match (modified(&out), newest_input) {
        (Some(built), Some(input)) => built > input,
        _ => false,
    };
    if !fresh {
        // Build beside the output and rename, so concurrent build scripts never see half a file.
        let partial = out_dir.join(format!("{name}.wasm.{}", std::process::id()));
        let output = command(&partial)
            .output()
            .map_err(|e| format!("cannot run {}: {e}", tool.display()))?;
        if !output.status.success() {
            let _ = std::fs::remove_file(&partial);
            return Err(format!(
                "{} failed to build the {name} stage:\n{}{}",
                tool.display(),
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        std::fs::rename(&partial, &out).map_err(|e| format!("renaming {}: {e}", out.display()))?;
    }
    Ok(Artifact {
        package: name.to_string(),
        path: out,
    })
}

/// The files directly in `dir`, skipping caches and installed packages.
fn source_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}
