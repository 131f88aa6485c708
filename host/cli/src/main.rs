//! The `sluicegate` command line: `run` a pipeline file, run the built-in `demo`, or `check`
//! a stage.

mod check;
mod metrics_server;
mod progress;
mod serve;
mod swap_control;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use sluicegate::config::{BUILTIN, PipelineSpec, SinkKind};
use sluicegate::report::{RunReport, RunStatus};
use sluicegate::{Engine, Pipeline};

/// The demo pipeline, embedded so `sluicegate demo` needs nothing else.
const DEMO: &str = include_str!("../../../examples/market.toml");

#[derive(Parser)]
#[command(
    name = "sluicegate",
    version,
    about = "Run pipeline stages as sandboxed WebAssembly components"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Do not keep compiled components on disk. By default they are cached in
    /// $SLUICEGATE_CACHE_DIR, else $XDG_CACHE_HOME/sluicegate/compiled, else
    /// ~/.cache/sluicegate/compiled, so a stage loads without recompiling when it has not changed.
    #[arg(long, global = true)]
    no_cache: bool,
}

/// An engine builder with the compile cache the command line asked for.
fn engine_builder(no_cache: bool) -> sluicegate::EngineBuilder {
    let builder = Engine::builder();
    if no_cache {
        return builder;
    }
    let dir = std::env::var_os("SLUICEGATE_CACHE_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("sluicegate/compiled"))
        })
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/sluicegate/compiled"))
        });
    match dir {
        Some(dir) => builder.compile_cache(dir),
        None => builder,
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run a pipeline file: live progress on stderr, a summary (or --json report) on stdout.
    Run(RunArgs),
    /// Run the built-in market-data demo (examples/market.toml with embedded stages).
    Demo(RunOptions),
    /// Hot-swap a stage of a pipeline running with `--control SOCKET`.
    Swap(SwapArgs),
    /// The conformance kit: run a stage through the protocol's scenarios on fresh instances
    /// and print one line per rule of docs/protocol.md (pass, FAIL or skip, with evidence).
    /// Exits non-zero if any rule fails.
    Check(check::CheckArgs),
}

#[derive(clap::Args)]
struct SwapArgs {
    /// The control socket given to `sluicegate run --control`.
    #[arg(long)]
    control: PathBuf,
    /// The stage to swap.
    stage: String,
    /// The new version of its component (.wasm).
    component: PathBuf,
}

#[derive(clap::Args)]
struct RunArgs {
    /// The pipeline file (TOML).
    pipeline: PathBuf,
    /// Swap a stage in whenever its .wasm file changes (stages given by path, not builtin).
    #[arg(long)]
    watch: bool,
    /// Accept swap requests from `sluicegate swap` on this Unix socket.
    #[arg(long, value_name = "SOCKET")]
    control: Option<PathBuf>,
    #[command(flatten)]
    options: RunOptions,
}

#[derive(clap::Args)]
struct RunOptions {
    /// Print a machine-readable JSON report on stdout instead of the summary table.
    #[arg(long)]
    json: bool,
    /// Override how many records the source emits.
    #[arg(long)]
    records: Option<u64>,
    /// Override the sink's demand window (credits per resume).
    #[arg(long)]
    credits: Option<u32>,
    /// Fused mode: compose every stage into one component (faster hops; the host no longer
    /// checks the protocol between the stages, only at the ends). Same as `fused = true`.
    #[arg(long)]
    fused: bool,
    /// Serve every hop's counters for Prometheus at http://ADDR/metrics while the pipeline
    /// runs (e.g. 127.0.0.1:9464; port 0 picks a free one, printed on stderr).
    #[arg(long, value_name = "ADDR")]
    metrics: Option<String>,
}

impl RunOptions {
    /// Applies the command-line overrides to a pipeline file's spec.
    fn apply(&self, spec: &mut PipelineSpec) {
        if let Some(records) = self.records {
            spec.set_records(records);
        }
        if let Some(credits) = self.credits {
            spec.sink.credits = credits;
        }
        spec.fused |= self.fused;
    }
}

fn main() -> ExitCode {
    init_tracing();
    let cli = Cli::parse();
    let engine = engine_builder(cli.no_cache);
    let outcome = match cli.command {
        Command::Run(args) => run_file(&args, engine),
        Command::Swap(args) => swap(&args),
        Command::Demo(options) => run_demo(&options, engine),
        Command::Check(args) => check::run_check(&args, engine),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,stage=info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour(
            std::io::IsTerminal::is_terminal(&std::io::stderr()),
            std::env::var_os("NO_COLOR").as_deref(),
        ))
        .init();
}

/// Colour in the log only on a terminal, and never when `NO_COLOR` is set to anything but
/// the empty string (<https://no-color.org>).
fn colour(terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    terminal && no_color.is_none_or(std::ffi::OsStr::is_empty)
}

fn run_file(args: &RunArgs, engine: sluicegate::EngineBuilder) -> anyhow::Result<()> {
    let path = &args.pipeline;
    let mut spec = PipelineSpec::from_file(path)?;
    args.options.apply(&mut spec);
    anyhow::ensure!(
        !(spec.fused && (args.watch || args.control.is_some())),
        "a fused pipeline is one stage: --watch and --control swap single stages, so they \
         cannot be combined with fused mode"
    );
    // Fuel metering costs throughput, so the engine meters only if a stage asks for it.
    let engine = engine
        .fuel(spec.needs_fuel())
        .build()
        .context("starting the engine")?;
    let pipeline = progress::while_loading("loading the stages", || {
        sluicegate_cli::pipelines(&engine).build(&spec, path)
    })?;
    stop_on_ctrl_c(&pipeline);
    let _watcher = if args.watch {
        let base = path.parent().unwrap_or(Path::new("."));
        let files: Vec<(String, PathBuf)> = spec
            .stages
            .iter()
            .filter(|s| !s.component.starts_with(BUILTIN))
            .map(|s| (s.name.clone(), base.join(&s.component)))
            .collect();
        anyhow::ensure!(
            !files.is_empty(),
            "--watch: every stage is a builtin; give a stage a .wasm path to watch"
        );
        Some(swap_control::watch(
            engine.clone(),
            pipeline.swapper(),
            files,
        )?)
    } else {
        None
    };
    if let Some(socket) = &args.control {
        swap_control::listen(engine.clone(), pipeline.swapper(), socket)?;
    }
    let outcome = run(pipeline, &args.options, false);
    if let Some(socket) = &args.control {
        let _ = std::fs::remove_file(socket);
    }
    outcome
}

fn swap(args: &SwapArgs) -> anyhow::Result<()> {
    let answer = swap_control::request(&args.control, &args.stage, &args.component)?;
    println!("{answer}");
    anyhow::ensure!(
        answer.starts_with("ok"),
        if answer.contains("PARTIAL") {
            "the swap happened in some partitions only (see above)"
        } else {
            "the swap did not happen"
        }
    );
    Ok(())
}

fn run_demo(options: &RunOptions, engine: sluicegate::EngineBuilder) -> anyhow::Result<()> {
    let engine = engine.build().context("starting the engine")?;
    let origin = Path::new("examples/market.toml");
    let mut spec = PipelineSpec::from_toml(DEMO, origin)?;
    spec.name = Some("market".into());
    options.apply(&mut spec);
    let pipeline = progress::while_loading("loading the stages", || {
        sluicegate_cli::pipelines(&engine).build(&spec, origin)
    })?;
    stop_on_ctrl_c(&pipeline);
    run(pipeline, options, true)
}

/// First Ctrl-C: stop at the next chunk, close every stage, report. Second: exit now.
fn stop_on_ctrl_c(pipeline: &Pipeline) {
    let stopper = pipeline.stopper();
    let handler = ctrlc::set_handler(move || {
        if stopper.stop() {
            std::process::exit(130);
        }
        eprintln!("stopping at the next chunk (Ctrl-C again to quit at once)");
    });
    if let Err(e) = handler {
        tracing::warn!("Ctrl-C will not stop the pipeline cleanly: {e}");
    }
}

fn run(mut pipeline: Pipeline, options: &RunOptions, demo: bool) -> anyhow::Result<()> {
    if let Some(addr) = &options.metrics {
        let bound = metrics_server::serve(addr, pipeline.probe())?;
        eprintln!("metrics: http://{bound}/metrics");
    }
    let report = {
        let _progress = progress::Progress::start(pipeline.probe(), pipeline.credits());
        pipeline.run()
    };
    // When the records themselves go to stdout, the report goes to stderr so the data stays
    // clean for whatever reads it.
    let text = if options.json {
        format!("{}\n", serde_json::to_string_pretty(&report)?)
    } else if demo {
        format!("{report}{}", demo_outcome(&report))
    } else {
        report.to_string()
    };
    if report.sink.kind == SinkKind::Stdout {
        eprint!("{text}");
    } else {
        print!("{text}");
    }
    match report.status {
        RunStatus::Ok => Ok(()),
        RunStatus::Failed => {
            // The report went to stdout (maybe as JSON): stderr names the stage and the cause
            // again, so a log that keeps only stderr still says what went wrong.
            match report.failure.iter().chain(&report.close_errors).next() {
                Some(f) => anyhow::bail!(
                    "pipeline `{}` failed in stage `{}`: {}",
                    report.pipeline,
                    f.stage,
                    f.message
                ),
                None => anyhow::bail!("pipeline `{}` failed", report.pipeline),
            }
        }
    }
}

fn demo_outcome(report: &RunReport) -> String {
    // In fused mode the first hop is the whole fused chain: its input is not visible.
    let ticks = match report.hops.first() {
        Some(hop) if !hop.name.contains('+') => format!("ticks in: {}, ", hop.records_out),
        _ => String::new(),
    };
    format!(
        "{ticks}orders out: {}, checksum {} (the same on every run with the same seed)\n",
        report.sink.records, report.sink.checksum
    )
}

#[cfg(test)]
mod tests {
    use super::colour;

    #[test]
    fn the_log_is_coloured_only_on_a_terminal_without_no_color() {
        use std::ffi::OsStr;
        assert!(colour(true, None));
        assert!(
            colour(true, Some(OsStr::new(""))),
            "an empty NO_COLOR is unset"
        );
        assert!(!colour(true, Some(OsStr::new("1"))));
        assert!(
            !colour(false, None),
            "a pipe or a file gets no escape codes"
        );
    }
}
