//! The `sluicegate` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use sluicegate::{CheckOptions, Engine, check_file};

#[derive(Parser)]
#[command(
    version,
    about = "Run pipeline stages as sandboxed WebAssembly components"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Load a stage, check it implements the stage world, and drive it through
    /// prime → pause → resume → close, printing what happened.
    Check(CheckArgs),
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
    /// Credits granted on each resume.
    #[arg(long, default_value_t = sluicegate::DEFAULT_CHECK_CREDITS)]
    credits: u32,
    /// Stop after this many records (the stage is then closed mid-stream).
    #[arg(long, default_value_t = sluicegate::DEFAULT_CHECK_MAX_RECORDS)]
    max_records: u64,
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("expected KEY=VALUE, got `{s}`"))
}

fn main() -> ExitCode {
    init_tracing();
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Check(args) => check(&args),
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

fn check(args: &CheckArgs) -> anyhow::Result<()> {
    let engine = Engine::new().context("starting the engine")?;
    let options = CheckOptions {
        credits: args.credits,
        max_records: args.max_records,
        config: args.config.clone(),
        upstream: args.upstream.clone(),
    };
    let report = check_file(&engine, &args.stage, &options);
    println!("check {}", report.path.display());
    for step in &report.steps {
        match &step.outcome {
            Ok(evidence) => println!("  {:<8} ok    {evidence}", step.name),
            Err(e) => println!("  {:<8} FAIL  {e}", step.name),
        }
    }
    match report.first_error() {
        None => {
            println!("result: ok");
            Ok(())
        }
        Some(e) => {
            let rule = e.rule().map(|r| format!(" (rule {r})")).unwrap_or_default();
            println!("result: FAIL{rule}");
            Err(anyhow::anyhow!("{e}"))
        }
    }
}
