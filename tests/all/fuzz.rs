//! The hostile-stage fuzzer's deterministic runner (`sluicegate_tests::fuzz` has the harness and
//! its invariants; `fuzz/` runs the same harness under libFuzzer for as long as you like):
//! cases decoded from seeded bytes, run one after another. `SLUICEGATE_FUZZ_CASES` sets how
//! many (300 by default, well under a minute), `SLUICEGATE_FUZZ_FIRST_SEED` the first seed
//! (0 by default).

use sluicegate_tests::fuzz::{Case, Outcome, Step, run, run_bytes};

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
            ..
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

/// One case: `script` for the hostile stage over a source of 50 records, clocks real or not,
/// driven through resumes, a pause, greedy grants, a swap to itself (whose new version runs the
/// script again, so a resume op fires on the first resume after it too, never on a pause), a
/// swap to a pass-through and a close.
fn case(script: &[(&str, &str)], real_time: bool, native_source: bool) -> Case {
    Case {
        records: 50,
        native_source,
        script: script
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        real_time,
        restart: false,
        steps: vec![
            Step::Resume(3),
            Step::Resume(5),
            Step::Resume(0),
            Step::Resume(u32::MAX),
            Step::SwapSelf,
            Step::Resume(7),
            Step::Resume(64),
            Step::SwapPassthrough,
            Step::Resume(64),
            Step::Close,
        ],
    }
}

#[test]
fn a_case_of_every_hostile_op_keeps_every_invariant_and_is_named() {
    // Each op of the scripted stage on its first resume, so that each runs whatever the seeds
    // above pick, with the fault it must end in (`None`: it must not end the stream).
    let expected: &[(&str, bool, Option<&str>)] = &[
        ("ok", false, None),
        ("pull=0", false, None),
        ("pull=4294967295", false, None),
        ("drain", false, None),
        ("more", false, Some("protocol-violation C2")),
        ("frame", false, Some("protocol-violation C1")),
        ("none", false, None),
        ("loop", false, Some("limit-exceeded cpu")),
        ("sleep=3600", false, None),
        ("sleep=3600", true, Some("limit-exceeded wall")),
        ("trap", false, Some("trap")),
        ("grow=100", false, Some("limit-exceeded memory")),
        ("log=5000", false, None),
        ("forge", false, None),
        ("spin=1000000", false, None),
        ("huge=2", false, Some("limit-exceeded chunk-bytes")),
    ];
    for &(op, real_time, fault) in expected {
        for native_source in [false, true] {
            let outcome = run(&case(&[("resume", op)], real_time, native_source));
            assert_eq!(
                outcome.fault.as_deref(),
                fault,
                "{op} (real time {real_time}, native source {native_source}): {outcome:?}"
            );
        }
    }
}

#[test]
fn hostile_cleanups_handoffs_and_primes_keep_every_invariant_and_are_named() {
    // Ops outside `resume`: priming, the state handoff of a swap, and the cleanup.
    type Script = &'static [(&'static str, &'static str)];
    let faults: &[(Script, Option<&str>)] = &[
        (&[("prime", "data")], Some("protocol-violation P1")),
        (&[("prime", "pull=5")], Some("protocol-violation R3")),
        (&[("prime", "trap")], Some("trap")),
        (&[("prime", "loop")], Some("limit-exceeded cpu")),
        // A snapshot that breaks loses the state, named in the swap report; the stream goes on.
        (&[("resume", "pull=20"), ("snapshot", "trap")], None),
        (&[("resume", "pull=20"), ("snapshot", "loop")], None),
        (&[("resume", "pull=20"), ("restore", "refuse")], None),
        (&[("resume", "pull=20"), ("restore", "trap")], None),
        // A cleanup that breaks is reported by close, after the stream.
        (&[("close", "pull")], None),
        (&[("close", "trap")], None),
        (&[("close", "loop")], None),
    ];
    for &(script, fault) in faults {
        let outcome = run(&case(script, false, false));
        assert_eq!(outcome.fault.as_deref(), fault, "{script:?}: {outcome:?}");
    }
}
