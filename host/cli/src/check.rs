//! `sluicegate check`: the conformance kit on the command line, one line per rule (or `--json`),
//! exit code 1 if a rule fails.

use std::path::PathBuf;

use anyhow::Context as _;
use sluicegate::check::{self, CheckOptions, Verdict};

use crate::progress;

#[derive(clap::Args)]
pub(crate) struct CheckArgs {
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
    #[arg(long, value_delimiter = ',', default_values_t = check::DEFAULT_CHECK_CREDITS)]
    credits: Vec<u32>,
    /// Stop each run after this many records (the stage is then closed mid-stream).
    #[arg(long, default_value_t = check::DEFAULT_CHECK_MAX_RECORDS)]
    max_records: u64,
    /// Records the short upstream serves before it ends (rule R5).
    #[arg(long, default_value_t = check::DEFAULT_SHORT_UPSTREAM)]
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

pub(crate) fn run_check(args: &CheckArgs, engine: sluicegate::EngineBuilder) -> anyhow::Result<()> {
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
    let mut options = CheckOptions::default()
        .with_credits(args.credits.clone())
        .with_max_records(args.max_records)
        .with_upstream(args.upstream.clone())
        .with_short_upstream(args.short_upstream)
        .deterministic(args.deterministic)
        .swappable(args.swap);
    for (key, value) in &args.config {
        options = options.with_config(key, value);
    }
    if let Some(input) = input {
        options = options.with_input(input);
    }
    let report = progress::while_loading("checking the stage", || {
        check::check_file(&engine, &args.stage, &options)
    });
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("check {}", report.path.display());
        if let Some(path) = &report.execution_path {
            println!("  path: {path}");
        }
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
