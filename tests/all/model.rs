//! The protocol as a random walk: seeded sequences of the calls a host may make (resumes with
//! any credits, pauses, hot swaps of a middle stage, a close at a random moment) on a real
//! chain counter → pass-through → pass-through, each step checked against what
//! docs/protocol.md says must happen. Deterministic: the seeds are fixed, so a failure names
//! the seed and the step that reproduce it. Every walk runs on both execution paths, the
//! core-wasm fast path and the component path, which must agree step by step (issue #13).

use sluicegate::{Error, ExecutionPath, Stage, StageOptions, StageState};
use sluicegate_tests::differential::{describe, summary};
use sluicegate_tests::{Path, artifacts as a, require_same_on_both_paths};

/// A small, seeded generator (SplitMix64): enough to pick calls, no dependency.
struct Walk(u64);

impl Walk {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn pick<T: Copy>(&mut self, from: &[T]) -> T {
        from[(self.next() % from.len() as u64) as usize]
    }
}

/// Long enough that most walks swap and pause many times before the stream ends.
const RECORDS: u32 = 10_000;

/// counter → a → b on the engine of `on`, primed upstream first.
fn chain(on: Path) -> Vec<Stage> {
    let counter = on
        .load(a::COUNTER)
        .instantiate(
            "counter",
            StageOptions::new().config("records", RECORDS.to_string()),
        )
        .expect("counter");
    let first = on
        .load(a::PASSTHROUGH)
        .instantiate("a", StageOptions::new().upstream(counter.clone()))
        .expect("a");
    let second = on
        .load(a::PASSTHROUGH)
        .instantiate("b", StageOptions::new().upstream(first.clone()))
        .expect("b");
    let chain = vec![counter, first, second];
    for stage in &chain {
        stage.prime().expect("P1: priming a healthy stage succeeds");
    }
    chain
}

#[derive(Debug, Clone, Copy)]
enum Step {
    Resume(u32),
    Swap,
    Close,
}

#[test]
fn random_walks_over_the_protocol_keep_every_rule() {
    let (mut mid_stream_swaps, mut early_closes) = (0, 0);
    for seed in 0..24u64 {
        let [fast, component] = Path::BOTH.map(|on| walk(seed, on));
        require_same_on_both_paths(&format!("seed {seed}"), &fast.events, &component.events);
        mid_stream_swaps += fast.mid_stream_swaps;
        early_closes += fast.early_closes;
    }
    // The walks did what they are for: swaps and closes in the middle of the stream.
    assert!(
        mid_stream_swaps > 100,
        "{mid_stream_swaps} swaps mid-stream"
    );
    assert!(early_closes > 3, "{early_closes} walks closed mid-stream");
}

/// What one walk did: every step's answer, and how often it swapped or closed mid-stream.
struct Walked {
    events: Vec<String>,
    mid_stream_swaps: u32,
    early_closes: u32,
}

/// Walks `seed` on the engine of `on`, checking every step.
fn walk(seed: u64, on: Path) -> Walked {
    let passthrough = on.load(a::PASSTHROUGH);
    if on == Path::Fast {
        assert_eq!(
            passthrough.execution_path(),
            &ExecutionPath::Core,
            "the comparison needs the fast path to run the walk"
        );
    }
    let steps = [
        Step::Resume(0),
        Step::Resume(1),
        Step::Resume(2),
        Step::Resume(7),
        Step::Resume(64),
        Step::Resume(256),
        Step::Swap,
        Step::Close,
    ];
    let (mut mid_stream_swaps, mut early_closes) = (0, 0);
    let mut events = Vec::new();
    let mut walk = Walk(seed);
    let chain = chain(on);
    let tail = &chain[2];
    let mut delivered: Vec<u32> = Vec::new();
    let (mut exhausted, mut closed) = (false, false);
    // One walk in four is closed at a random step; the others must deliver everything.
    let closes = seed % 4 == 3;
    for step_no in 0..400 {
        let at = format!("seed {seed}, step {step_no}");
        let mut step = walk.pick(&steps);
        if matches!(step, Step::Close) && !closes {
            step = Step::Resume(3);
        }
        match (step, closed) {
            (Step::Resume(credits), false) => match tail.resume(credits) {
                Ok(Some(chunk)) => {
                    events.push(format!("{at}: resume({credits}): {}", summary(&chunk)));
                    assert!(!exhausted, "{at}: E1 data after none");
                    assert!(
                        chunk.len() <= credits,
                        "{at}: C2 {} > {credits}",
                        chunk.len()
                    );
                    if credits == 0 {
                        assert!(chunk.is_empty(), "{at}: S1 data on a pause");
                    }
                    for record in chunk.records() {
                        let text = String::from_utf8_lossy(record);
                        delivered.push(text.parse().expect("a number"));
                    }
                }
                Ok(None) => {
                    events.push(format!("{at}: resume({credits}): none"));
                    exhausted = true;
                }
                Err(e) => panic!("{at}: resume({credits}) failed: {e}"),
            },
            (Step::Resume(credits), true) => {
                let answer = tail.resume(credits);
                let said = match &answer {
                    Ok(_) => "an answer".to_string(),
                    Err(e) => describe(e),
                };
                events.push(format!("{at}: resume({credits}) after close: {said}"));
                assert!(
                    matches!(answer, Err(Error::Closed { .. })),
                    "{at}: D1 resume after close"
                );
            }
            (Step::Swap, _) => {
                let middle = &chain[1];
                let before = middle.stats().swaps;
                let swapped = middle.swap(&passthrough);
                events.push(format!(
                    "{at}: swap: {}",
                    match &swapped {
                        Ok(report) => format!("carried {}", report.state_carried),
                        Err(e) => describe(e),
                    }
                ));
                if middle.state() == StageState::Suspended || swapped.is_ok() {
                    swapped.unwrap_or_else(|e| panic!("{at}: swap of a suspended stage: {e}"));
                    assert_eq!(middle.stats().swaps, before + 1, "{at}");
                    mid_stream_swaps += u32::from(!exhausted && !closed);
                } else {
                    assert!(
                        matches!(swapped, Err(Error::SwapRefused { .. })),
                        "{at}: only a suspended stage is swapped"
                    );
                }
            }
            (Step::Close, _) => {
                // Upstream first, as PEP 380 closes a subgenerator first; idempotent (D2).
                for stage in &chain {
                    stage.close().unwrap_or_else(|e| panic!("{at}: close: {e}"));
                    stage
                        .close()
                        .unwrap_or_else(|e| panic!("{at}: D2 close again: {e}"));
                }
                events.push(format!("{at}: closed"));
                early_closes += u32::from(!closed && !exhausted);
                closed = true;
            }
        }
    }
    // Every record at most once and in order; all of them if the walk was not closed early.
    let expected: Vec<u32> = (0..delivered.len() as u32).collect();
    assert_eq!(
        delivered, expected,
        "seed {seed}: records in order, none twice"
    );
    if !closed {
        let mut resumes = 0;
        while let Some(chunk) = tail.resume(64).expect("drain") {
            resumes += 1;
            assert!(resumes < 10_000, "seed {seed}: the stream stopped flowing");
            delivered.extend(
                chunk
                    .records()
                    .map(|r| String::from_utf8_lossy(r).parse::<u32>().expect("a number")),
            );
        }
        assert_eq!(
            delivered,
            (0..RECORDS).collect::<Vec<_>>(),
            "seed {seed}: every record exactly once"
        );
        for stage in &chain {
            stage.close().expect("close");
        }
    }
    for stage in &chain {
        let stats = stage.stats();
        events.push(format!(
            "{}: {:?}, {} resumes, {} records, {} swaps, {} closes",
            stage.name(),
            stage.state(),
            stats.resumes_entered,
            stats.records,
            stats.swaps,
            stats.closes_entered
        ));
        assert_eq!(
            stage.state(),
            StageState::Closed,
            "seed {seed}: {}",
            stage.name()
        );
        assert!(
            stage.stats().closes_entered <= 1 + stage.stats().swaps,
            "seed {seed}: S3 cleanup once per version of {}",
            stage.name()
        );
    }
    Walked {
        events,
        mid_stream_swaps,
        early_closes,
    }
}
