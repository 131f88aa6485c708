//! The `sluicegate` command line: `run` a pipeline file, run the built-in `demo`, or `check`
//! a stage.

mod metrics_server;
mod progress;
mod serve;
mod swap_control;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use sluicegate::{CheckOptions, Engine, Pipeline, RunReport, RunStatus, Verdict, check_file};

/// The demo pipeline, embedded so `sluicegate demo` needs nothing else.
const DEMO: &str = include_str!("../../../../examples/market.toml");

#[derive(Parser)]
#[command(
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
    Check(CheckArgs),
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
    fn apply(&self, spec: &mut sluicegate::PipelineSpec) {
        if let Some(records) = self.records {
            spec.set_records(records);
        }
        if let Some(credits) = self.credits {
            spec.sink.credits = credits;
        }
        spec.fused |= self.fused;
    }
}

#[derive(clap::Args)]
struct CheckArgs {
    /// The stage component (.wasm) to check.
    stage: PathBuf,
    /// Stages to chain upstream of it, most upstream first (each is primed and closed too).
    #[arg(long = "upstream", value_name = "STAGE.wasm")]
    upstream: Vec<PathBuf>,
    /// Configuration for the checked stage, as KEY=VALUE (repeatable).
    #[arg(long = "config", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    config: Vec<(String, String)>,
    /// Feed the stage these records, one per line, when there is no --upstream (default:
    /// the records "0", "1", ... "999").
    #[arg(long, value_name = "FILE", conflicts_with = "upstream")]
    input: Option<PathBuf>,
    /// Credit sizes to run the stage with, each on a fresh instance.
    #[arg(long, value_delimiter = ',', default_values_t = sluicegate::DEFAULT_CHECK_CREDITS)]
    credits: Vec<u32>,
    /// Stop each run after this many records (the stage is then closed mid-stream).
    #[arg(long, default_value_t = sluicegate::DEFAULT_CHECK_MAX_RECORDS)]
    max_records: u64,
    /// Records the short upstream serves before it ends (rule R5).
    #[arg(long, default_value_t = sluicegate::DEFAULT_SHORT_UPSTREAM)]
    short_upstream: u64,
    /// The stage is deterministic: check that the same input twice gives the same output (K1).
    #[arg(long)]
    deterministic: bool,
    /// The stage is hot-swappable: swap it mid-stream for a fresh instance of itself every few
    /// chunks and check it delivers what an unswapped run delivers (H1).
    #[arg(long)]
    swap: bool,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    json: bool,
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("expected KEY=VALUE, got `{s}`"))
}

fn main() -> ExitCode {
    init_tracing();
    let cli = Cli::parse();
    let engine = engine_builder(cli.no_cache);
    let outcome = match cli.command {
        Command::Run(args) => run_file(&args, engine),
        Command::Swap(args) => swap(&args),
        Command::Demo(options) => run_demo(&options, engine),
        Command::Check(args) => check(&args, engine),
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
        .init();
}

fn run_file(args: &RunArgs, engine: sluicegate::EngineBuilder) -> anyhow::Result<()> {
    let path = &args.pipeline;
    let mut spec = sluicegate::PipelineSpec::from_file(path)?;
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
        Pipeline::build(&engine, &spec, path)
    })?;
    stop_on_ctrl_c(&pipeline);
    let _watcher = if args.watch {
        let base = path.parent().unwrap_or(Path::new("."));
        let files: Vec<(String, PathBuf)> = spec
            .stages
            .iter()
            .filter(|s| !s.component.starts_with("builtin:"))
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
    anyhow::ensure!(answer.starts_with("ok"), "the swap did not happen");
    Ok(())
}

fn run_demo(options: &RunOptions, engine: sluicegate::EngineBuilder) -> anyhow::Result<()> {
    let engine = engine.build().context("starting the engine")?;
    let origin = Path::new("examples/market.toml");
    let mut spec = sluicegate::PipelineSpec::from_toml(DEMO, origin)?;
    spec.name = Some("market".into());
    options.apply(&mut spec);
    let pipeline = progress::while_loading("loading the stages", || {
        Pipeline::build(&engine, &spec, origin)
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
    if report.sink.kind == sluicegate::SinkKind::Stdout {
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

fn check(args: &CheckArgs, engine: sluicegate::EngineBuilder) -> anyhow::Result<()> {
    let engine = engine.build().context("starting the engine")?;
    let input = match &args.input {
        None => None,
        Some(file) => {
            let text = std::fs::read(file)
                .with_context(|| format!("reading the input file {}", file.display()))?;
            Some(
                text.split(|&b| b == b'\n')
                    .filter(|l| !l.is_empty())
                    .map(<[u8]>::to_vec)
                    .collect(),
            )
        }
    };
    let options = CheckOptions {
        credits: args.credits.clone(),
        max_records: args.max_records,
        config: args.config.clone(),
        upstream: args.upstream.clone(),
        input,
        short_upstream: args.short_upstream,
        deterministic: args.deterministic,
        swappable: args.swap,
    };
    let report = progress::while_loading("checking the stage", || {
        check_file(&engine, &args.stage, &options)
    });
    if args.json {
        println!("{:#}", report.to_json());
    } else {
        println!("check {}", report.path.display());
        for rule in &report.rules {
            let (verdict, detail) = match (&rule.verdict, &rule.error) {
                (Verdict::Fail, Some(e)) => ("FAIL", e.to_string()),
                (Verdict::Fail, None) => ("FAIL", rule.evidence.clone()),
                (Verdict::Pass, _) => ("pass", rule.evidence.clone()),
                (Verdict::Skip, _) => ("skip", rule.evidence.clone()),
            };
            println!("  {:<3} {:<20} {verdict:<4}  {detail}", rule.id, rule.name);
        }
    }
    match report.first_failure() {
        None => {
            if !args.json {
                let skipped = report
                    .rules
                    .iter()
                    .filter(|r| r.verdict == Verdict::Skip)
                    .count();
                println!(
                    "result: ok ({} rules passed, {skipped} skipped)",
                    report.rules.len() - skipped
                );
            }
            Ok(())
        }
        Some(rule) => {
            let failed = report
                .rules
                .iter()
                .filter(|r| r.verdict == Verdict::Fail)
                .count();
            if !args.json {
                println!(
                    "result: FAIL ({failed} rule(s) failed, first {} {})",
                    rule.id, rule.name
                );
            }
            let cause = rule
                .error
                .as_ref()
                .map(|e| format!(": {e}"))
                .unwrap_or_default();
            Err(anyhow::anyhow!(
                "{} does not conform: {} {} failed{cause}",
                report.path.display(),
                rule.id,
                rule.name
            ))
        }
    }
}
