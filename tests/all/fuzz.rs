//! The hostile-stage fuzzer's deterministic runner (`sluicegate_tests::fuzz` has the harness and
//! its invariants; `fuzz/` runs the same harness under libFuzzer for as long as you like):
//! cases decoded from seeded bytes, run one after another. `SLUICEGATE_FUZZ_CASES` sets how
//! many (300 by default, well under a minute), `SLUICEGATE_FUZZ_FIRST_SEED` the first seed
//! (0 by default).

use sluicegate_tests::fuzz::{Case, Outcome, run, run_bytes};

/// SplitMix64, to make case bytes from a seed.
fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed;
    (0..len)
        .map(|_| {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            (z ^ (z >> 31)) as u8
        })
        .collect()
}

#[test]
fn seeded_hostile_cases_keep_every_invariant() {
    let setting = |name: &str, default: u64| -> u64 {
        std::env::var(name)
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(default)
    };
    let cases = setting("SLUICEGATE_FUZZ_CASES", 300);
    let first = setting("SLUICEGATE_FUZZ_FIRST_SEED", 0);
    let mut totals = (0u32, 0u32, 0u32, 0u64);
    for seed in first..first.saturating_add(cases) {
        let len = 8 + (seed % 9) as usize * 12;
        let Outcome {
            delivered,
            finished,
            faulted,
            swaps,
        } = run_bytes(&bytes(seed, len));
        totals.0 += u32::from(finished);
        totals.1 += u32::from(faulted);
        totals.2 += swaps;
        totals.3 += delivered;
    }
    let (finished, faulted, swaps, delivered) = totals;
    println!(
        "{cases} cases: {finished} ran to the end, {faulted} ended on a named fault, \
         {swaps} swaps stood, {delivered} records delivered"
    );
    // The cases exercise what they are meant to (a decoder that only made empty cases would
    // pass the invariants vacuously).
    if cases >= 100 {
        assert!(
            finished > 0 && faulted > 0 && swaps > 0 && delivered > 0,
            "{totals:?}"
        );
    }
}

#[test]
fn a_case_of_every_hostile_op_keeps_every_invariant() {
    // One case per op of the scripted stage, in the middle of a stream, so that each is run
    // whatever the seeds above happen to pick.
    let ops = [
        "ok",
        "pull=0",
        "pull=4294967295",
        "more",
        "frame",
        "data",
        "none",
        "loop",
        "sleep=3600",
        "trap",
        "grow=100",
        "log=5000",
        "forge",
        "spin=1000000",
        "huge=20",
    ];
    for op in ops {
        for real_time in [false, true] {
            let case = Case {
                records: 50,
                script: vec![
                    ("resume".into(), format!("ok,{op},ok")),
                    ("close".into(), "pull".into()),
                    ("snapshot".into(), "ok".into()),
                    ("restore".into(), "ok".into()),
                ],
                real_time,
                restart: false,
                steps: vec![
                    sluicegate_tests::fuzz::Step::Resume(3),
                    sluicegate_tests::fuzz::Step::SwapSelf,
                    sluicegate_tests::fuzz::Step::Resume(5),
                    sluicegate_tests::fuzz::Step::Resume(0),
                    sluicegate_tests::fuzz::Step::Resume(u32::MAX),
                    sluicegate_tests::fuzz::Step::Resume(64),
                    sluicegate_tests::fuzz::Step::Close,
                ],
            };
            run(&case);
        }
    }
}
