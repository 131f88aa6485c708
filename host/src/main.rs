//! The `sluicegate` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use sluicegate::{Engine, Stage, StageOptions};

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
    /// prime → resume → close, printing what happened.
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
    #[arg(long, default_value_t = 64)]
    credits: u32,
    /// Stop after this many records (the stage is then closed mid-stream).
    #[arg(long, default_value_t = 10_000)]
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
    let mut chain: Vec<Stage> = Vec::new();
    for path in &args.upstream {
        let component = engine.load_file(path)?;
        let mut options = StageOptions::new();
        if let Some(previous) = chain.last() {
            options = options.upstream(previous.clone());
        }
        chain.push(component.instantiate(component.name(), options)?);
    }
    let component = engine.load_file(&args.stage)?;
    println!("check {}", args.stage.display());
    println!("  load     ok  implements sluicegate:stage/stage@0.1.0");
    let mut options = StageOptions::new();
    for (k, v) in &args.config {
        options = options.config(k, v);
    }
    if let Some(previous) = chain.last() {
        options = options.upstream(previous.clone());
    }
    let stage = component.instantiate(component.name(), options)?;
    chain.push(stage.clone());

    let driven = drive(&chain, &stage, args);
    // Close every stage upstream-first, whatever happened, and report every failure.
    let mut close_errors = Vec::new();
    for s in &chain {
        if let Err(e) = s.close() {
            close_errors.push(e);
        }
    }
    driven?;
    if let Some(e) = close_errors.into_iter().next() {
        println!("  close    FAIL {e}");
        return Err(e.into());
    }
    println!("  close    ok  cleanup ran once on every primed stage");
    println!("result: ok");
    Ok(())
}

fn drive(chain: &[Stage], stage: &Stage, args: &CheckArgs) -> anyhow::Result<()> {
    for s in chain {
        if let Err(e) = s.prime() {
            println!("  prime    FAIL {e}");
            return Err(e.into());
        }
    }
    println!("  prime    ok  resume(0) answered no records");
    let (mut resumes, mut records, mut bytes) = (0u64, 0u64, 0u64);
    let finished = loop {
        if records >= args.max_records {
            break false;
        }
        match stage.resume(args.credits) {
            Ok(Some(chunk)) => {
                resumes += 1;
                records += u64::from(chunk.len());
                bytes += chunk.as_bytes().len() as u64;
            }
            Ok(None) => break true,
            Err(e) => {
                println!("  resume   FAIL after {resumes} resumes and {records} records: {e}");
                return Err(e.into());
            }
        }
    };
    let end = if finished {
        "exhausted"
    } else {
        "stopped mid-stream"
    };
    println!(
        "  resume   ok  {resumes} resumes of {} credits: {records} records, {bytes} bytes, {end}",
        args.credits
    );
    Ok(())
}
