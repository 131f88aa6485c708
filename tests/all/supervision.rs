//! Supervision: restart (bounded, quarantining the input of the failed call), bypass of
//! optional stages, and isolation between pipelines in one process.

use std::path::Path;

use market_data::Checksum;
use sluicegate::config::PipelineSpec;
use sluicegate::report::{RunReport, RunStatus};
use sluicegate::{Pipeline, StageState};
use sluicegate_tests::{artifacts as a, pipelines};

fn build(toml: &str) -> Pipeline {
    let origin = std::env::temp_dir().join("sluicegate-supervision.toml");
    let spec = PipelineSpec::from_toml(toml, &origin).expect("valid spec");
    pipelines().build(&spec, &origin).expect("build")
}

fn stage(name: &str, path: &str, extra: &str) -> String {
    format!("[[stage]]\nname = {name:?}\ncomponent = {path:?}\n{extra}\n")
}

/// counter (30 records) → `name`, the poison pill trapping on record 13 under `policy` (its
/// `on_fault` and related keys) → a pass-through, the sink granting 5 credits.
fn poisoned_chain(name: &str, policy: &str) -> String {
    stage("counter", a::COUNTER, "config = { records = 30 }")
        + &stage(
            name,
            a::POISON_PILL,
            &format!("config = {{ poison = \"13\" }}\n{policy}"),
        )
        + &stage("after", a::PASSTHROUGH, "")
        + "[sink]\ncredits = 5\n"
}

fn checksum_of(numbers: impl IntoIterator<Item = u32>) -> String {
    let mut checksum = Checksum::default();
    for n in numbers {
        checksum.add(n.to_string().as_bytes());
    }
    format!("{:016x}", checksum.value())
}

fn framed_numbers(bytes: &[u8]) -> Vec<String> {
    let chunk = sluicegate::Chunk::from_framed(bytes.to_vec()).expect("framed");
    chunk
        .records()
        .map(|r| String::from_utf8_lossy(r).into_owned())
        .collect()
}

#[test]
fn restart_goes_on_after_a_fault_and_quarantines_the_failed_input() {
    let dead = std::env::temp_dir().join(format!("sluicegate-dead-{}.bin", std::process::id()));
    let toml = poisoned_chain(
        "poison",
        &format!(
            "on_fault = \"restart\"\ndead_letter = {:?}",
            dead.to_str().expect("path")
        ),
    );
    let mut p = build(&toml);
    let report = p.run();
    assert_eq!(report.status, RunStatus::Ok, "{report}");
    // The chunk 10..=14 was inside the call that trapped: quarantined, not delivered.
    assert_eq!(report.sink.checksum, checksum_of((0..10).chain(15..30)));
    let poison = &report.hops[1];
    assert_eq!((poison.restarts, poison.quarantined_records), (1, 5));
    assert_eq!(report.recovered.len(), 1);
    assert_eq!(report.recovered[0].stage, "poison");
    assert!(report.recovered[0].message.contains("poisoned by record"));
    let quarantined = std::fs::read(&dead).expect("dead-letter file");
    assert_eq!(framed_numbers(&quarantined), ["10", "11", "12", "13", "14"]);
    let _ = std::fs::remove_file(dead);
}

/// With no dead-letter sink, the failed call's input is counted, not copied (issue #13: no copy
/// of pulled chunks unless a policy needs them), and reported as quarantined all the same.
#[test]
fn restart_without_a_dead_letter_sink_still_counts_the_quarantined_input() {
    let toml = poisoned_chain("poison", "on_fault = \"restart\"");
    let report = build(&toml).run();
    assert_eq!(report.status, RunStatus::Ok, "{report}");
    assert_eq!(report.sink.checksum, checksum_of((0..10).chain(15..30)));
    let poison = report
        .hops
        .iter()
        .find(|hop| hop.name == "poison")
        .expect("the poison hop");
    assert_eq!((poison.restarts, poison.quarantined_records), (1, 5));
}

#[test]
fn restarts_are_bounded_and_then_the_fault_is_final() {
    let toml = stage(
        "never-starts",
        a::TRAP_IN_PRIMING,
        "on_fault = \"restart\"\nmax_restarts = 2\nrestart_backoff_ms = 1",
    ) + &stage("after", a::PASSTHROUGH, "");
    let mut p = build(&toml);
    let report = p.run();
    assert_eq!(report.status, RunStatus::Failed);
    let failure = report.failure.as_ref().expect("failure");
    assert_eq!(
        (failure.stage.as_str(), failure.kind.as_str()),
        ("never-starts", "trap")
    );
    assert_eq!(report.hops[0].restarts, 2);
    assert_eq!(p.stages()[1].state(), StageState::Closed);
}

#[test]
fn an_optional_stage_is_bypassed_and_nothing_is_lost() {
    let toml = poisoned_chain("monitor", "on_fault = \"bypass\"\noptional = true");
    let mut p = build(&toml);
    let report = p.run();
    assert_eq!(report.status, RunStatus::Ok, "{report}");
    assert_eq!(
        report.sink.checksum,
        checksum_of(0..30),
        "every record, in order"
    );
    assert_eq!(report.recovered.len(), 1);
    assert_eq!(report.hops[1].state, Some(StageState::Closed));
}

#[test]
fn bypass_needs_the_stage_to_be_optional() {
    let toml = stage("monitor", a::POISON_PILL, "on_fault = \"bypass\"");
    let origin = Path::new("p.toml");
    let err = PipelineSpec::from_toml(&toml, origin).expect_err("not optional");
    assert!(err.to_string().contains("optional = true"), "{err}");
}

#[test]
fn a_fault_in_one_pipeline_never_touches_another() {
    let healthy = stage("counter", a::COUNTER, "config = { records = 2000 }")
        + &stage("a", a::PASSTHROUGH, "")
        + "[sink]\ncredits = 3\n";
    let hostile = stage("spinner", a::LOOPS_IN_RESUME, "limits = { cpu_ms = 100 }")
        + &stage("b", a::PASSTHROUGH, "");
    let runs: Vec<RunReport> = std::thread::scope(|s| {
        let one = s.spawn(|| build(&hostile).run());
        let two = s.spawn(|| build(&healthy).run());
        vec![
            one.join().expect("hostile run"),
            two.join().expect("healthy run"),
        ]
    });
    assert_eq!(runs[0].status, RunStatus::Failed);
    assert_eq!(runs[1].status, RunStatus::Ok, "{}", runs[1]);
    assert_eq!(runs[1].sink.checksum, checksum_of(0..2000));
}
