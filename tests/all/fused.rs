//! Fused mode (`host/src/fuse.rs`): stages composed into one component. The records and the
//! checksum are the isolated pipeline's; every inner stage is primed and closed once,
//! upstream-first, reads its own configuration and logs under its own name; errors inside name
//! the inner stage; what cannot be fused is refused.

use std::path::Path;

use sluicegate::config::PipelineSpec;
use sluicegate::report::RunStatus;
use sluicegate::{Call, Error, Rule, StageComponent, StageOptions};
use sluicegate_tests::{artifacts as a, capture_logs, drain, engine, pipelines};

fn bytes(path: &str) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

/// Fuses the components at `parts` (name, path), most upstream first, into a stage named `name`.
fn fuse(name: &str, parts: &[(&str, &str)]) -> StageComponent {
    let parts: Vec<(String, Vec<u8>)> = parts
        .iter()
        .map(|(stage, path)| (stage.to_string(), bytes(path)))
        .collect();
    engine().load_fused(name, &parts).expect("fuses")
}

fn market(fused: bool, records: u64) -> String {
    format!(
        "name = \"market\"\nfused = {fused}\n\
         [[stage]]\nname = \"ticks\"\ncomponent = {:?}\n\
         config = {{ seed = 3, universe = 64, records = {records}, max_burst = 64, garble_every = 997 }}\n\
         [[stage]]\nname = \"decode\"\ncomponent = {:?}\n\
         [[stage]]\nname = \"filter\"\ncomponent = {:?}\nconfig = {{ symbols = [\"AAPL\", \"MSFT\", \"NVDA\", \"AMZN\"] }}\n\
         [[stage]]\nname = \"vwap\"\ncomponent = {:?}\nconfig = {{ window = 32 }}\n\
         [[stage]]\nname = \"strategy\"\ncomponent = {:?}\nconfig = {{ fast = 5, slow = 20, qty = 100 }}\n\
         [sink]\ncredits = 256\n",
        a::TICK_SOURCE,
        a::DECODE,
        a::SYMBOL_FILTER,
        a::VWAP,
        a::STRATEGY
    )
}

fn run(toml: &str) -> Result<sluicegate::report::RunReport, Error> {
    let origin = Path::new("fused.toml");
    let spec = PipelineSpec::from_toml(toml, origin)?;
    Ok(pipelines().build(&spec, origin)?.run())
}

#[test]
fn a_fused_market_pipeline_gives_the_isolated_checksum() {
    let isolated = run(&market(false, 30_000)).expect("isolated builds");
    let fused = run(&market(true, 30_000)).expect("fused builds");
    assert_eq!(isolated.status, RunStatus::Ok, "{isolated}");
    assert_eq!(fused.status, RunStatus::Ok, "{fused}");
    assert!(isolated.sink.records > 0);
    assert_eq!(fused.sink.records, isolated.sink.records);
    assert_eq!(fused.sink.checksum, isolated.sink.checksum);
    // One hop for the whole chain, named after its stages.
    assert_eq!(fused.hops.len(), 1, "{fused}");
    assert_eq!(fused.hops[0].name, "ticks+decode+filter+vwap+strategy");
}

#[test]
fn every_inner_stage_is_primed_and_closed_once_upstream_first() {
    // counter -> passthrough -> passthrough: each logs `cleanup ran` at close.
    let parts = [
        ("counter", a::COUNTER),
        ("first", a::PASSTHROUGH),
        ("second", a::PASSTHROUGH),
    ];
    let component = fuse("chain", &parts);
    // The counter (inner stage 0) reads its own configuration: 25 records, not the 99 given
    // to the last stage under the same key.
    let stage = component
        .instantiate(
            "chain",
            StageOptions::new()
                .config("records", "99")
                .inner_config(0, "records", "25"),
        )
        .expect("instantiates");
    let (records, logs) = capture_logs(|| {
        stage.prime().expect("primes");
        let records = drain(&stage, 7).expect("drains");
        stage.close().expect("closes");
        records
    });
    let expected: Vec<Vec<u8>> = (0..25).map(|n: u32| n.to_string().into_bytes()).collect();
    assert_eq!(records, expected, "every record, in order, none lost");
    let cleanups: Vec<&str> = logs
        .iter()
        .filter(|(_, message)| message.contains("cleanup ran"))
        .map(|(stage, _)| stage.as_str())
        .collect();
    assert_eq!(
        cleanups,
        ["chain/counter", "chain/first", "chain"],
        "one cleanup per stage, upstream-first, each under its own name"
    );
    assert_eq!(stage.stats().closes_entered, 1);
}

#[test]
fn a_trap_in_an_inner_close_names_the_inner_stage() {
    let parts = [("trapper", a::TRAP_IN_CLOSE), ("after", a::PASSTHROUGH)];
    let component = fuse("pair", &parts);
    let stage = component
        .instantiate("pair", StageOptions::new())
        .expect("instantiates");
    stage.prime().expect("primes");
    let err = stage.close().expect_err("the inner close traps");
    assert!(
        matches!(&err, Error::Trap { stage, call: Call::Close, .. } if stage == "pair/trapper"),
        "{err}"
    );
}

#[test]
fn each_fused_stage_reads_its_own_configuration_in_a_pipeline_file() {
    // The tick source is given `window = 16` too: in an isolated pipeline it ignores it, and
    // in a fused one the VWAP stage must still see only its own `window = 32`.
    let toml = |fused| market(fused, 20_000).replace("universe = 64", "universe = 64, window = 16");
    let isolated = run(&toml(false)).expect("isolated builds");
    let fused = run(&toml(true)).expect("fused builds");
    assert_eq!(fused.status, RunStatus::Ok, "{fused}");
    assert_eq!(fused.sink.checksum, isolated.sink.checksum);
    let window_16 =
        run(&market(false, 20_000).replace("window = 32", "window = 16")).expect("builds");
    assert_ne!(
        window_16.sink.checksum, isolated.sink.checksum,
        "the VWAP window changes the orders, so the check above can fail"
    );
}

#[test]
fn supervision_is_refused_when_fused() {
    let restart = market(true, 100).replace(
        "[[stage]]\nname = \"decode\"",
        "[[stage]]\non_fault = \"restart\"\nname = \"decode\"",
    );
    let err = run(&restart).expect_err("supervision");
    assert!(matches!(err, Error::Config { .. }), "{err}");
    assert!(err.to_string().contains("stage `decode`"), "{err}");
}

#[test]
fn one_stage_cannot_be_fused() {
    let err = engine()
        .load_fused("alone", &[("only".to_string(), bytes(a::PASSTHROUGH))])
        .expect_err("needs two");
    assert!(err.to_string().contains("at least two stages"), "{err}");
}

#[test]
fn a_fault_inside_a_fused_chain_faults_the_fused_stage_and_the_host_carries_on() {
    // counter -> poison-pill (traps on the record "7"): the trap happens inside the fused
    // chain's resume, so the fused stage faults as one, named, with the guest's message.
    let parts = [("counter", a::COUNTER), ("poison", a::POISON_PILL)];
    let component = fuse("chain", &parts);
    let stage = component
        .instantiate(
            "chain",
            StageOptions::new()
                .inner_config(0, "records", "20")
                .config("poison", "7"),
        )
        .expect("instantiates");
    stage.prime().expect("primes");
    let err = drain(&stage, 4).expect_err("the poison record traps");
    assert!(
        matches!(&err, Error::Trap { stage, call: Call::Resume, .. } if stage == "chain"),
        "{err}"
    );
    assert!(
        matches!(stage.close(), Err(Error::Faulted { .. })),
        "F2: faulted, no cleanup"
    );
    // The host is fine: a fresh instance of the same fused component runs clean input.
    let clean = component
        .instantiate(
            "chain",
            StageOptions::new()
                .inner_config(0, "records", "20")
                .config("poison", "none"),
        )
        .expect("instantiates");
    clean.prime().expect("primes");
    assert_eq!(drain(&clean, 4).expect("drains").len(), 20);
    clean.close().expect("closes");
}

#[test]
fn inner_stages_keep_p1_at_priming_and_r4_at_close() {
    // P1: an inner stage answering records to priming faults the fused stage, named inside.
    let parts = [("eager", a::DATA_ON_PRIMING), ("after", a::PASSTHROUGH)];
    let stage = fuse("pair", &parts)
        .instantiate("pair", StageOptions::new())
        .expect("instantiates");
    let err = stage.prime().expect_err("P1");
    assert_eq!(err.rule(), Some(Rule::DataOnPriming), "{err}");
    assert_eq!(err.stage(), "pair/eager");

    // R4: an inner stage pulling while closing is refused and named, after its cleanup.
    let parts = [("greedy", a::PULL_WHILE_CLOSING), ("after", a::PASSTHROUGH)];
    let stage = fuse("pair", &parts)
        .instantiate("pair", StageOptions::new())
        .expect("instantiates");
    stage.prime().expect("primes");
    let err = stage.close().expect_err("R4");
    assert_eq!(err.rule(), Some(Rule::PullWhileClosing), "{err}");
    assert_eq!(err.stage(), "pair/greedy");
}

#[test]
fn an_inner_cleanup_that_pulls_does_not_stop_the_others() {
    // pull-while-closing -> passthrough -> passthrough: the first stage's cleanup breaks R4
    // (its pull reaches the host), and the stages after it are still closed (each logs
    // `cleanup ran`): every primed stage is closed exactly once, whatever another one did
    // (docs/protocol.md, "Close order in a chain").
    let parts = [
        ("greedy", a::PULL_WHILE_CLOSING),
        ("middle", a::PASSTHROUGH),
        ("after", a::PASSTHROUGH),
    ];
    let stage = fuse("chain", &parts)
        .instantiate("chain", StageOptions::new())
        .expect("instantiates");
    stage.prime().expect("primes");
    let (closed, logs) = capture_logs(|| stage.close());
    let err = closed.expect_err("R4");
    assert_eq!(err.rule(), Some(Rule::PullWhileClosing), "{err}");
    assert_eq!(err.stage(), "chain/greedy");
    let cleanups: Vec<&str> = logs
        .iter()
        .filter(|(_, message)| message.contains("cleanup ran"))
        .map(|(stage, _)| stage.as_str())
        .collect();
    assert_eq!(cleanups, ["chain/middle", "chain"], "{logs:?}");
}

#[test]
fn an_inner_stage_s_priming_answer_is_held_to_the_chunk_cap() {
    // The first stage answers 2 MiB to its priming call, just over a cap of 2 MiB - 16 KiB:
    // the host refuses it by its size before anything else, the same check as any stage's
    // answer (and not only once it is far over the cap, where wasmtime's copy limit bites).
    let parts = [("bloated", a::SCRIPTED), ("after", a::PASSTHROUGH)];
    let stage = fuse("pair", &parts)
        .instantiate(
            "pair",
            StageOptions::new()
                .inner_config(0, "prime", "huge=2")
                .limits(sluicegate::Limits::default().with_max_chunk_bytes((2 << 20) - (16 << 10))),
        )
        .expect("instantiates");
    let err = stage.prime().expect_err("too big");
    assert!(
        matches!(&err, Error::LimitExceeded { stage, limit: sluicegate::Limit::ChunkBytes, call: Call::Prime, .. } if stage == "pair/bloated"),
        "{err}"
    );
}
