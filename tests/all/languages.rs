//! Stages not written with the Rust SDK: the hand-written WAT pass-through in
//! example-stages/wat-passthrough, through `check` and through a real pipeline.

use std::path::Path;

use sluicegate::{CheckOptions, Pipeline, PipelineSpec, RunStatus, check_file};
use sluicegate_tests::{artifacts as a, engine};

const WAT_PASSTHROUGH: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../example-stages/wat-passthrough/stage.wat"
);

#[test]
fn the_wat_stage_passes_check() {
    let options = CheckOptions {
        upstream: vec![a::COUNTER.into()],
        ..CheckOptions::default()
    };
    let report = check_file(engine(), Path::new(WAT_PASSTHROUGH), &options);
    assert!(report.passed(), "{:?}", report.first_error());
}

#[test]
fn the_wat_stage_forwards_every_record_and_propagates_pauses() {
    let toml = format!(
        "[[stage]]\nname = \"counter\"\ncomponent = {:?}\nconfig = {{ records = 5000 }}\n\
         [[stage]]\nname = \"wat\"\ncomponent = {WAT_PASSTHROUGH:?}\n\
         [[stage]]\nname = \"after\"\ncomponent = {:?}\n[sink]\ncredits = 7\n",
        a::COUNTER,
        a::PASSTHROUGH
    );
    let origin = Path::new("languages.toml");
    let spec = PipelineSpec::from_toml(&toml, origin).expect("spec");
    let mut p = Pipeline::build(engine(), &spec, origin).expect("build");
    p.resume(7).expect("resume");
    let before = p.probe().snapshot();
    assert_eq!(p.resume(0).expect("pause"), Some(0));
    let after = p.probe().snapshot();
    assert_eq!(
        after[0].stats.resumes_entered,
        before[0].stats.resumes_entered + 1,
        "the pause reached the counter through the WAT stage"
    );
    let report = p.run();
    assert_eq!(report.status, RunStatus::Ok, "{report}");
    let mut checksum = market_data::Checksum::default();
    for n in 0..5000u32 {
        checksum.add(n.to_string().as_bytes());
    }
    assert_eq!(report.sink.checksum, format!("{:016x}", checksum.value()));
    assert_eq!(report.hops[1].records_out, 5000);
}
