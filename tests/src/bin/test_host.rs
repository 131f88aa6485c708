//! Runs one pipeline file with the test rig's builder (the example stages as `builtin:`
//! components, the `generate` source), as `sluicegate run` would, in a process of its own:
//! tests kill it (SIGKILL) to check what a host's death loses, or stop it (SIGINT) as an
//! operator would. Exits 0 if the run succeeded.

fn main() {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: sluicegate-test-host PIPELINE.toml");
        std::process::exit(2);
    };
    let path = std::path::PathBuf::from(path);
    let spec = match sluicegate::config::PipelineSpec::from_file(&path) {
        Ok(spec) => spec,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let mut pipeline = match sluicegate_tests::pipelines().build(&spec, &path) {
        Ok(pipeline) => pipeline,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    };
    let stopper = pipeline.stopper();
    if let Err(e) = ctrlc::set_handler(move || {
        stopper.stop();
    }) {
        eprintln!("cannot handle SIGINT: {e}");
    }
    let report = pipeline.run();
    println!("{report}");
    let failed = report.status == sluicegate::report::RunStatus::Failed;
    std::process::exit(i32::from(failed));
}
