//! Swapping stages of a running `sluicegate run`: `--watch` swaps a stage when its `.wasm`
//! file changes, and `--control SOCKET` accepts `swap STAGE FILE` lines from
//! `sluicegate swap`, answering one line with the outcome.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read as _, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use notify::{RecursiveMode, Watcher};
use sluicegate::{Engine, Swapper};

/// Quiet time after the last change to a file before it is swapped in: a build writes a
/// file in several steps, and only the finished file is worth loading.
const SETTLE: Duration = Duration::from_millis(300);

/// Loads `file` and swaps it in as `stage`; one line saying what happened.
pub fn swap_in(
    engine: &Engine,
    swapper: &Swapper,
    stage: &str,
    file: &Path,
) -> Result<String, String> {
    let component = engine.load_file(file).map_err(|e| {
        format!(
            "stage `{stage}` keeps its current version: {} cannot be loaded: {e}",
            file.display()
        )
    })?;
    let report = swapper.swap(stage, &component).map_err(|e| e.to_string())?;
    Ok(format!(
        "swapped stage `{stage}` to {}: pause {} µs, state {}",
        file.display(),
        report.pause.as_micros(),
        if report.state_carried {
            format!("carried ({} bytes)", report.state_bytes)
        } else {
            "not carried (the new version starts fresh)".into()
        }
    ))
}

/// Watches the component files of `stages` (stage name, file) and swaps each in when it
/// changes. Runs until the returned watcher is dropped.
pub fn watch(
    engine: Engine,
    swapper: Swapper,
    stages: Vec<(String, PathBuf)>,
) -> anyhow::Result<notify::RecommendedWatcher> {
    let (events, changes) = mpsc::channel();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        // Only new content counts: loading the file ourselves produces open/read events.
        match event {
            Ok(event) if writes_content(&event.kind) => {
                let _ = events.send(event.paths);
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("--watch: the file watcher reported an error: {e}"),
        }
    })?;
    let mut by_file: HashMap<PathBuf, String> = HashMap::new();
    for (stage, file) in stages {
        let file = std::path::absolute(&file).unwrap_or(file);
        let dir = file.parent().unwrap_or(Path::new(".")).to_path_buf();
        watcher
            .watch(&dir, RecursiveMode::NonRecursive)
            .with_context(|| format!("watching {}", dir.display()))?;
        tracing::info!(stage, file = %file.display(), "watching for new versions");
        by_file.insert(file, stage);
    }
    std::thread::Builder::new()
        .name("sluicegate-watch".into())
        .spawn(move || {
            let mut pending: HashMap<PathBuf, Instant> = HashMap::new();
            loop {
                match changes.recv_timeout(SETTLE / 3) {
                    Ok(paths) => {
                        for path in paths {
                            if by_file.contains_key(&path) {
                                pending.insert(path, Instant::now());
                            }
                        }
                    }
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    Err(mpsc::RecvTimeoutError::Disconnected) => return,
                }
                let settled: Vec<PathBuf> = pending
                    .iter()
                    .filter(|(_, at)| at.elapsed() >= SETTLE)
                    .map(|(path, _)| path.clone())
                    .collect();
                for path in settled {
                    pending.remove(&path);
                    let Some(stage) = by_file.get(&path) else {
                        continue;
                    };
                    match swap_in(&engine, &swapper, stage, &path) {
                        Ok(done) => tracing::warn!(target: "sluicegate::swap", "{done}"),
                        Err(why) => tracing::error!(target: "sluicegate::swap", "{why}"),
                    }
                }
            }
        })?;
    Ok(watcher)
}

fn writes_content(kind: &notify::EventKind) -> bool {
    use notify::event::{AccessKind, AccessMode, EventKind, ModifyKind};
    matches!(
        kind,
        EventKind::Create(_)
            | EventKind::Modify(ModifyKind::Data(_) | ModifyKind::Name(_) | ModifyKind::Any)
            | EventKind::Access(AccessKind::Close(AccessMode::Write))
    )
}

/// Longest request line read (a stage name and a path).
const MAX_REQUEST_BYTES: u64 = 64 << 10;
/// How long a client may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Listens on `socket` for `swap STAGE FILE` lines until the process ends.
pub fn listen(engine: Engine, swapper: Swapper, socket: &Path) -> anyhow::Result<()> {
    let _ = std::fs::remove_file(socket);
    let listener = UnixListener::bind(socket)
        .with_context(|| format!("binding the control socket {}", socket.display()))?;
    crate::serve::spawn(
        "sluicegate-control",
        move || listener.accept().map(|(connection, _)| connection),
        move |connection| {
            let answer = handle(&engine, &swapper, &connection);
            let _ = writeln!(&connection, "{answer}");
        },
    )
    .context("starting the control socket's thread")?;
    Ok(())
}

fn handle(engine: &Engine, swapper: &Swapper, connection: &UnixStream) -> String {
    // One short line, promptly: a client that stalls or floods does not hold up the next.
    let _ = connection.set_read_timeout(Some(REQUEST_TIMEOUT));
    let mut line = String::new();
    if BufReader::new(connection.take(MAX_REQUEST_BYTES))
        .read_line(&mut line)
        .is_err()
    {
        return "error: cannot read the request".into();
    }
    // The file is the rest of the line, so paths with spaces work.
    let words: Vec<&str> = line.trim().splitn(3, ' ').collect();
    match words.as_slice() {
        ["swap", stage, file] => match swap_in(engine, swapper, stage, Path::new(file)) {
            Ok(done) => format!("ok: {done}"),
            Err(why) => format!("error: {why}"),
        },
        _ => format!("error: expected `swap STAGE FILE`, got `{}`", line.trim()),
    }
}

/// The client side: sends one swap request and returns the answer line.
pub fn request(socket: &Path, stage: &str, file: &Path) -> anyhow::Result<String> {
    let file = std::path::absolute(file)?;
    let mut stream = UnixStream::connect(socket).with_context(|| {
        format!(
            "connecting to {} (is `sluicegate run --control` running?)",
            socket.display()
        )
    })?;
    writeln!(stream, "swap {stage} {}", file.display())?;
    let mut answer = String::new();
    BufReader::new(stream).read_line(&mut answer)?;
    Ok(answer.trim().to_string())
}
