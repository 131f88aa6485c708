//! Shared helpers for the integration tests: paths of the components built by `build.rs`, one
//! engine with a compile cache, and a capture of what stages log.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use sluicegate::{Engine, StageComponent};

pub use sluicegate_test_artifacts as artifacts;

pub mod differential;
pub mod fuzz;
pub use differential::{Path, check_on_both_paths, require_same_on_both_paths};
pub use sluicegate_nats_server as nats_server;
pub use sluicegate_test_artifacts::{foreach_example, foreach_fixture};

/// The hand-written WAT pass-through example stage (`example-stages/wat-passthrough`), loaded
/// from its text.
pub const WAT_PASSTHROUGH: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../example-stages/wat-passthrough/stage.wat"
);

/// The engine shared by every test in the process. It keeps compiled components on disk
/// (`<target>/sluicegate-compile-cache`), so the Python and JavaScript stages, which take
/// seconds to compile, are compiled once per change rather than once per test run. Tests of
/// compilation itself (limits, timeouts) build engines of their own, without a cache.
pub fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        with_compile_cache(Engine::builder())
            .build()
            .expect("engine starts")
    })
}

/// `builder` with the tests' compile cache, `<target>/sluicegate-compile-cache`.
pub fn with_compile_cache(builder: sluicegate::EngineBuilder) -> sluicegate::EngineBuilder {
    // <target>/sluicegate-guests/lang/<stage>.wasm -> <target>
    let target = std::path::Path::new(artifacts::PY_SYMBOL_FILTER)
        .ancestors()
        .nth(3)
        .map(|target| target.join("sluicegate-compile-cache"));
    match target {
        Some(dir) => builder.compile_cache(dir),
        None => builder,
    }
}

/// A pipeline builder with what the `sluicegate` command adds to the library: the example
/// stages as `builtin:NAME` and the `generate` source.
pub fn pipelines() -> sluicegate::PipelineBuilder<'static> {
    sluicegate_cli::pipelines(engine())
}

/// Loads (and compiles once per process) the component at `path`.
pub fn component(path: &str) -> StageComponent {
    static CACHE: OnceLock<Mutex<HashMap<String, StageComponent>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(found) = cache.lock().expect("cache lock").get(path) {
        return found.clone();
    }
    let loaded = engine()
        .load_file(path)
        .unwrap_or_else(|e| panic!("loading {path}: {e}"));
    cache
        .lock()
        .expect("cache lock")
        .insert(path.to_string(), loaded.clone());
    loaded
}

/// Log lines emitted by stages (their `host.log` calls and stdout/stderr) on this thread
/// while `f` runs, as `(stage, message)` pairs.
pub fn capture_logs<T>(f: impl FnOnce() -> T) -> (T, Vec<(String, String)>) {
    use tracing_subscriber::layer::SubscriberExt as _;
    // While exactly one Dispatch exists, tracing-core lets a thread without a subscriber
    // (another test) cache "never" for a callsite it hits first, and this capture then misses
    // that callsite's events (tokio-rs/tracing#3611). A second Dispatch, alive for the whole
    // process, keeps tracing on the path that asks every live subscriber.
    static KEEP_TWO_DISPATCHES: std::sync::OnceLock<tracing::Dispatch> = std::sync::OnceLock::new();
    KEEP_TWO_DISPATCHES.get_or_init(|| tracing::Dispatch::new(tracing_subscriber::registry()));
    let lines = Arc::new(Mutex::new(Vec::new()));
    let subscriber = tracing_subscriber::registry().with(Capture(lines.clone()));
    let out = tracing::subscriber::with_default(subscriber, f);
    let lines = lines.lock().map(|l| l.clone()).unwrap_or_default();
    (out, lines)
}

struct Capture(Arc<Mutex<Vec<(String, String)>>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Capture {
    fn on_event(
        &self,
        event: &tracing::Event<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        if event.metadata().target() != "stage" {
            return;
        }
        let mut visitor = Fields::default();
        event.record(&mut visitor);
        if let Ok(mut lines) = self.0.lock() {
            lines.push((visitor.stage, visitor.message));
        }
    }
}

#[derive(Default)]
struct Fields {
    stage: String,
    message: String,
}

impl tracing::field::Visit for Fields {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "stage" {
            self.stage = value.to_string();
        }
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "message" => self.message = format!("{value:?}"),
            "stage" => self.stage = format!("{value:?}").trim_matches('"').to_string(),
            _ => {}
        }
    }
}

/// Collects every record a stage answers until it is exhausted, resuming with `credits`.
pub fn drain(stage: &sluicegate::Stage, credits: u32) -> Result<Vec<Vec<u8>>, sluicegate::Error> {
    let mut out = Vec::new();
    while let Some(chunk) = stage.resume(credits)? {
        assert!(
            chunk.len() <= credits,
            "C2: the host delivered more than {credits}"
        );
        out.extend(chunk.records().map(<[u8]>::to_vec));
    }
    Ok(out)
}

/// The demo's market pipeline computed natively with the same library the stages use: feed
/// (seed 42, 64 symbols, one garbled line in 997) → decode → filter (the 8 named symbols) →
/// VWAP (32) → crossover (5/20, qty 100). Returns the orders' count and checksum.
pub fn native_market_orders(records: u64) -> (u64, u64) {
    use market_data::*;
    let mut feed = Feed::new(FeedConfig {
        seed: 42,
        symbols: 64,
        records,
        max_burst: 64,
        garble_every: 997,
    });
    let keep: Vec<Symbol> = [
        "AAPL", "MSFT", "NVDA", "AMZN", "GOOG", "META", "TSLA", "JPM",
    ]
    .iter()
    .filter_map(|s| Symbol::parse(s))
    .collect();
    let mut vwap = VwapWindow::new(32);
    let mut strategy = Crossover::new(5, 20, 100);
    let mut checksum = Checksum::default();
    let (mut orders, mut line) = (0, Vec::new());
    while feed.next_into(&mut line) {
        let Some(tick) = decode_raw_tick(&line) else {
            continue;
        };
        if !keep.contains(&tick.symbol) {
            continue;
        }
        if let Some(order) = strategy.update(&vwap.update(&tick)) {
            orders += 1;
            checksum.add(&order.encode());
        }
    }
    (orders, checksum.value())
}

/// A stage component in WAT around one core module whose fields are `module`: they must export
/// `memory`, `realloc`, `resume` (`(param i32) (result i32)`, leaving a pointer to the
/// `option<list<u8>>` answer) and `close`. `extra` is added at the component's end (more
/// exports, say).
pub fn wat_component(module: &str, extra: &str) -> String {
    format!(
        r#"(component
  (core module $m
    {module})
  (core instance $i (instantiate $m))
  (func $resume (param "credits" u32) (result (option (list u8)))
    (canon lift (core func $i "resume") (memory (core memory $i "memory"))
      (realloc (core func $i "realloc"))))
  (func $close (canon lift (core func $i "close")))
  (instance $g (export "resume" (func $resume)) (export "close" (func $close)))
  (export "sluicegate:stage/generator@0.1.0" (instance $g))
  {extra})"#
    )
}

/// A minimal stage in WAT, with `$memory_pages` of initial memory and `$start` run when it
/// is instantiated; `$resume_body` must leave a pointer to the `option<list<u8>>` answer.
pub fn wat_stage(memory_pages: u32, start: &str, resume_body: &str) -> String {
    wat_component(
        &format!(
            r#"(memory (export "memory") {memory_pages})
    (func (export "realloc") (param i32 i32 i32 i32) (result i32) (i32.const 1024))
    (func $start {start})
    (start $start)
    (func (export "resume") (param i32) (result i32) {resume_body})
    (func (export "close"))"#
        ),
        "",
    )
}

/// A stage in WAT that calls `host.log`: its memory (one page) holds `data` (data segments),
/// and `resume_body` may `(call $log level message-ptr message-len fields-ptr fields-len)` and
/// must leave a pointer to the answer; it answers `some(empty)` if it ends with
/// [`ANSWER_EMPTY`].
pub fn wat_logging_stage(data: &str, resume_body: &str) -> String {
    format!(
        r#"(component
  (import "sluicegate:stage/host@0.1.0" (instance $host
    (type $l (enum "trace" "debug" "info" "warn" "error"))
    (export "level" (type $level (eq $l)))
    (export "log" (func (param "level" $level) (param "message" string)
      (param "fields" (list (tuple string string)))))))
  (core module $mem
    (memory (export "memory") 1)
    {data}
    (func (export "realloc") (param i32 i32 i32 i32) (result i32) (i32.const 4096)))
  (core instance $m (instantiate $mem))
  (core func $log (canon lower (func $host "log") (memory (core memory $m "memory"))
    (realloc (core func $m "realloc"))))
  (core module $main
    (import "host" "log" (func $log (param i32 i32 i32 i32 i32)))
    (import "mem" "memory" (memory 1))
    (func (export "resume") (param $credits i32) (result i32)
      (local $n i32)
      {resume_body})
    (func (export "close")))
  (core instance $i (instantiate $main
    (with "host" (instance (export "log" (func $log))))
    (with "mem" (instance (export "memory" (memory $m "memory"))))))
  (func $resume (param "credits" u32) (result (option (list u8)))
    (canon lift (core func $i "resume") (memory (core memory $m "memory"))
      (realloc (core func $m "realloc"))))
  (func $close (canon lift (core func $i "close")))
  (instance $g (export "resume" (func $resume)) (export "close" (func $close)))
  (export "sluicegate:stage/generator@0.1.0" (instance $g)))"#
    )
}

/// Answers `some(empty)`: discriminant 1, pointer 0, length 0 at address 32.
pub const ANSWER_EMPTY: &str = "(i32.store (i32.const 32) (i32.const 1)) (i64.store (i32.const 36) (i64.const 0)) (i32.const 32)";

/// Runs `f` on another thread and returns what it returns, failing the test if it has not
/// returned after `limit`: for the tests of hangs, so that a regression fails with a message
/// instead of holding up the suite. `limit` is minutes above what the call needs.
pub fn within<T: Send + 'static>(
    limit: std::time::Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (done, outcome) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(f());
    });
    match outcome.recv_timeout(limit) {
        Ok(value) => value,
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            panic!("still running after {limit:?}: the host is hanging")
        }
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            panic!("the call panicked (see above)")
        }
    }
}
