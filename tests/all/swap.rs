//! Hot swap: the new version takes over at a chunk boundary, every record is processed by
//! exactly one version, the old version's cleanup runs, and a broken new version changes
//! nothing.

use std::path::Path;

use sluicegate::config::PipelineSpec;
use sluicegate::report::RunStatus;
use sluicegate::{Error, Stage, StageComponent, StageOptions};
use sluicegate_tests::{
    ANSWER_EMPTY, artifacts as a, capture_logs, component, engine, pipelines, wat_stage,
};

fn chain(records: u32, version: &str) -> (Stage, Stage) {
    chain_named(records, version, "tagger")
}

/// A counter of `records` feeding the stage `name` built from `path`, both primed.
fn chain_named(records: u32, path: &str, name: &str) -> (Stage, Stage) {
    let source = component(a::COUNTER)
        .instantiate(
            "counter",
            StageOptions::new().config("records", records.to_string()),
        )
        .expect("counter");
    let stage = component(path)
        .instantiate(name, StageOptions::new().upstream(source.clone()))
        .expect(name);
    source.prime().expect("prime");
    stage.prime().expect("prime");
    (source, stage)
}

/// Splits `"17:v2"` into (17, "v2").
fn parse(record: &[u8]) -> (u32, String) {
    let text = String::from_utf8_lossy(record);
    let (n, tag) = text.split_once(':').expect("tagged record");
    (n.parse().expect("number"), tag.to_string())
}

#[test]
fn swaps_under_flow_lose_nothing_duplicate_nothing_and_switch_at_the_cut_over() {
    let versions = [a::TAG_V1, a::TAG_V2];
    let (_source, tagger) = chain(3000, a::TAG_V1);
    let mut seen: Vec<(u32, String)> = Vec::new();
    let mut cut_overs = Vec::new();
    let mut chunks = 0;
    while let Some(chunk) = tagger.resume(7).expect("resume") {
        seen.extend(chunk.records().map(parse));
        chunks += 1;
        if chunks % 5 == 0 {
            // Alternate: v1 -> v2 -> v1 -> ...
            let next = versions[(cut_overs.len() + 1) % 2];
            tagger.swap(&component(next)).expect("swap");
            cut_overs.push(seen.len());
        }
    }
    let numbers: Vec<u32> = seen.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        numbers,
        (0..3000).collect::<Vec<_>>(),
        "every record once, in order"
    );
    let mut expected_tag = "v1";
    let mut boundaries = cut_overs.iter().peekable();
    for (i, (_, tag)) in seen.iter().enumerate() {
        if boundaries.peek() == Some(&&i) {
            boundaries.next();
            expected_tag = if expected_tag == "v1" { "v2" } else { "v1" };
        }
        assert_eq!(
            tag, expected_tag,
            "record {i}: the tag switches exactly at the cut-overs"
        );
    }
    assert!(cut_overs.len() > 50, "{} swaps", cut_overs.len());
    assert_eq!(tagger.stats().swaps, cut_overs.len() as u64);
}

#[test]
fn the_old_versions_cleanup_runs_once_per_swap() {
    let (_source, stage) = chain_named(10, a::PASSTHROUGH, "map");
    stage.resume(2).expect("resume");
    let (swapped, logs) = capture_logs(|| stage.swap(&component(a::PASSTHROUGH)));
    let report = swapped.expect("swap");
    assert!(report.old_cleanup_error.is_none());
    let cleanups = logs
        .iter()
        .filter(|(s, m)| s == "map" && m == "cleanup ran")
        .count();
    assert_eq!(cleanups, 1);
    assert_eq!(
        stage.resume(100).expect("resume").map(|c| c.len()),
        Some(8),
        "the rest"
    );
}

#[test]
fn a_broken_new_version_is_refused_and_the_old_one_keeps_running() {
    let (_source, tagger) = chain(100, a::TAG_V1);
    let mut numbers = Vec::new();
    let take = |tagger: &Stage, numbers: &mut Vec<u32>| {
        if let Some(chunk) = tagger.resume(10).expect("resume") {
            for (n, tag) in chunk.records().map(parse) {
                assert_eq!(tag, "v1", "still the old version");
                numbers.push(n);
            }
        }
    };
    take(&tagger, &mut numbers);
    let broken: [(&str, StageComponent); 4] = [
        ("traps while priming", component(a::TRAP_IN_PRIMING)),
        ("answers data to priming", component(a::DATA_ON_PRIMING)),
        ("finishes while priming", component(a::FINISHES_IN_PRIMING)),
        (
            "loops while priming (CPU limit)",
            component(a::LOOPS_IN_PRIMING),
        ),
    ];
    for (what, new) in &broken {
        let err = tagger.swap(new).expect_err(what);
        assert!(
            matches!(&err, Error::SwapRefused { stage, .. } if stage == "tagger"),
            "{what}: {err}"
        );
        take(&tagger, &mut numbers);
    }
    // Not a component of the world: refused before a swap can even be asked for.
    assert!(matches!(
        engine().load_bytes("tagger", b"(component)"),
        Err(Error::WrongWorld { .. })
    ));
    while tagger.resume(10).expect("resume").is_some_and(|c| {
        numbers.extend(c.records().map(|r| parse(r).0));
        true
    }) {}
    assert_eq!(
        numbers,
        (0..100).collect::<Vec<_>>(),
        "no loss across refused swaps"
    );
    assert_eq!(tagger.stats().swaps, 0);
}

#[test]
fn a_swap_storm_leaves_the_instance_count_flat() {
    // An engine of its own, so the count is exactly this test's.
    let own = sluicegate::Engine::new().expect("engine");
    let load = |path: &str| {
        own.load_bytes("x", &std::fs::read(path).expect("fixture"))
            .expect("load")
    };
    let (counter, v1, v2) = (load(a::COUNTER), load(a::TAG_V1), load(a::TAG_V2));
    let source = counter
        .instantiate("counter", StageOptions::new().config("records", "1000000"))
        .expect("counter");
    let tagger = v1
        .instantiate("tagger", StageOptions::new().upstream(source.clone()))
        .expect("tagger");
    source.prime().expect("prime");
    tagger.prime().expect("prime");
    tagger.resume(4).expect("resume");
    assert_eq!(own.live_instances(), 2);
    for i in 0..300 {
        tagger
            .swap(if i % 2 == 0 { &v2 } else { &v1 })
            .expect("swap");
        tagger.resume(4).expect("resume");
        assert_eq!(own.live_instances(), 2, "after swap {i}");
    }
    assert_eq!(tagger.stats().swaps, 300);
    drop((source, tagger));
    assert_eq!(own.live_instances(), 0, "every store is freed");
}

#[test]
fn swaps_from_another_thread_while_the_pipeline_runs() {
    const SWAPS: usize = 20;
    let dir = std::env::temp_dir().join(format!("sluicegate-swap-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let origin = dir.join("p.toml");
    let toml = format!(
        "[[stage]]\nname = \"counter\"\ncomponent = {:?}\nconfig = {{ records = 1000000000 }}\n\
         [[stage]]\nname = \"tagger\"\ncomponent = {:?}\n\
         [sink]\nkind = \"file\"\npath = \"out.txt\"\ncredits = 16\n",
        a::COUNTER,
        a::TAG_V1
    );
    let spec = PipelineSpec::from_toml(&toml, Path::new(&origin)).expect("spec");
    let mut pipeline = pipelines().build(&spec, &origin).expect("build");
    let (swapper, stopper, probe) = (pipeline.swapper(), pipeline.stopper(), pipeline.probe());
    let (v1, v2) = (component(a::TAG_V1), component(a::TAG_V2));
    let report = std::thread::scope(|s| {
        s.spawn(|| {
            // Each swap waits for the tagger to have delivered records since the last one, so
            // every version tags some records; after SWAPS of them the run is stopped. (The
            // tagger's own count, not the sink's: a chunk the old version made before the
            // cut-over can reach the sink after the swap returned, and would let the next swap
            // come before the new version made anything.)
            let tagged = || {
                probe
                    .snapshot()
                    .iter()
                    .find(|h| h.name == "tagger")
                    .map_or(0, |h| h.stats.records)
            };
            for i in 0..SWAPS {
                let seen = tagged();
                while tagged() <= seen {
                    std::thread::yield_now();
                }
                swapper
                    .swap("tagger", if i % 2 == 0 { &v2 } else { &v1 })
                    .expect("swap");
            }
            let seen = tagged();
            while tagged() <= seen {
                std::thread::yield_now();
            }
            stopper.stop();
        });
        pipeline.run()
    });
    assert_eq!(report.status, RunStatus::Ok, "{report}");
    let out = std::fs::read_to_string(dir.join("out.txt")).expect("output");
    let seen: Vec<(u32, String)> = out.lines().map(|l| parse(l.as_bytes())).collect();
    let numbers: Vec<u32> = seen.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        numbers,
        (0..seen.len() as u32).collect::<Vec<_>>(),
        "every record once, in order"
    );
    let switches = seen.windows(2).filter(|w| w[0].1 != w[1].1).count();
    assert_eq!(switches, SWAPS, "the tag switches once per swap");
    assert_eq!(report.swaps.len(), SWAPS, "every swap is in the report");
    let _ = std::fs::remove_dir_all(dir);
}

fn encoded_ticks(n: u64) -> Vec<Vec<u8>> {
    let mut feed = market_data::Feed::new(market_data::FeedConfig {
        records: n,
        ..Default::default()
    });
    let (mut line, mut out) = (Vec::new(), Vec::new());
    while feed.next_into(&mut line) {
        if let Some(tick) = market_data::decode_raw_tick(&line) {
            out.push(tick.encode().to_vec());
        }
    }
    out
}

/// Runs VWAP over the ticks, swapping it for a fresh copy of itself every `swap_every`
/// chunks; returns its output and the swap reports.
fn vwap_run(
    ticks: Vec<Vec<u8>>,
    swap_every: Option<usize>,
) -> (Vec<Vec<u8>>, Vec<sluicegate::SwapReport>) {
    let source = sluicegate::IterUpstream::new(ticks.into_iter());
    let vwap = component(a::VWAP)
        .instantiate(
            "vwap",
            StageOptions::new().upstream(source).config("window", "32"),
        )
        .expect("vwap");
    vwap.prime().expect("prime");
    let (mut out, mut reports, mut chunks) = (Vec::new(), Vec::new(), 0);
    while let Some(chunk) = vwap.resume(50).expect("resume") {
        out.extend(chunk.records().map(<[u8]>::to_vec));
        chunks += 1;
        if swap_every.is_some_and(|every| chunks % every == 0) {
            reports.push(vwap.swap(&component(a::VWAP)).expect("swap"));
        }
    }
    (out, reports)
}

#[test]
fn a_vwap_swapped_mid_window_gives_the_same_output_as_an_unswapped_run() {
    let ticks = encoded_ticks(3000);
    let (plain, _) = vwap_run(ticks.clone(), None);
    let (swapped, reports) = vwap_run(ticks.clone(), Some(7));
    assert_eq!(plain.len(), ticks.len());
    assert!(reports.len() >= 8, "{} swaps", reports.len());
    assert!(reports.iter().all(|r| r.state_carried && r.state_bytes > 0));
    assert_eq!(swapped, plain, "the windows survived every swap");
}

#[test]
fn state_is_never_dropped_by_a_swap_to_a_version_that_cannot_take_it() {
    let stateless = engine()
        .load_bytes("plain", wat_stage(1, "", ANSWER_EMPTY).as_bytes())
        .expect("loads");
    let ticks = encoded_ticks(200);
    let source = sluicegate::IterUpstream::new(ticks.into_iter());
    let vwap = component(a::VWAP)
        .instantiate("vwap", StageOptions::new().upstream(source))
        .expect("vwap");
    vwap.prime().expect("prime");
    vwap.resume(20).expect("resume");
    let err = vwap.swap(&stateless).expect_err("VWAP holds windows");
    assert!(err.to_string().contains("no `state` interface"), "{err}");
    assert_eq!(
        vwap.resume(20).expect("still running").map(|c| c.len()),
        Some(20)
    );
    // A stage with nothing to hand over swaps to it freely, starting it fresh.
    let (_source, tagger) = chain(100, a::TAG_V1);
    tagger.resume(5).expect("resume");
    let report = tagger.swap(&stateless).expect("nothing to carry");
    assert!(!report.state_carried);
}

#[test]
fn a_swap_report_names_both_versions() {
    let (_source, tagger) = chain(100, a::TAG_V1);
    tagger.resume(5).expect("resume");
    let (v1, v2) = (component(a::TAG_V1), component(a::TAG_V2));
    assert_ne!(v1.digest(), v2.digest());
    let report = tagger.swap(&v2).expect("swap");
    assert_eq!(
        (report.old_digest.as_str(), report.new_digest.as_str()),
        (v1.digest(), v2.digest())
    );
    assert!(report.at_unix_s > 1.7e9, "a wall-clock time");
    let back = tagger.swap(&v1).expect("swap back");
    assert_eq!(back.old_digest, v2.digest());
}

/// A version that breaks while handing over its state cannot run on: the swap stands, the new
/// version takes over from the same upstream (no record is lost or repeated at the boundary),
/// and the report says the state was lost and why.
#[test]
fn a_version_that_traps_in_snapshot_is_replaced_and_the_lost_state_is_reported() {
    let (_source, stage) = chain_named(100, a::TRAP_IN_SNAPSHOT, "map");
    let mut seen: Vec<String> = Vec::new();
    let first = stage.resume(10).expect("resume").expect("records");
    seen.extend(
        first
            .records()
            .map(|r| String::from_utf8_lossy(r).into_owned()),
    );
    let report = stage
        .swap(&component(a::PASSTHROUGH))
        .expect("the swap stands");
    assert!(!report.state_carried);
    let lost = report.state_lost.as_deref().unwrap_or_default();
    assert!(
        lost.contains("snapshot is broken in this version"),
        "the report quotes the old version's last words: {lost:?}"
    );
    while let Some(chunk) = stage.resume(10).expect("resume after the swap") {
        seen.extend(
            chunk
                .records()
                .map(|r| String::from_utf8_lossy(r).into_owned()),
        );
    }
    let expected: Vec<String> = (0..100).map(|n| n.to_string()).collect();
    assert_eq!(seen, expected);
    stage.close().expect("close");
}
