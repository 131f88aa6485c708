//! The scenarios of the conformance kit for what a stage claims with a flag: determinism
//! (`--deterministic`, K1) and hot-swappability (`--swap`, H1).

use super::{CheckOptions, CheckReport};
use crate::error::Error;

use super::subject::{
    Run, SMALL_CREDITS, SWAP_EVERY_CHUNKS, Subject, first_difference, nonconforming, run,
};

impl Subject {
    /// K1: a deterministic stage gives the same records in two runs on the same input, and
    /// whatever the credit size: the runs at every size agree on the records they share, and
    /// the largest-credit run, repeated on a fresh instance, gives exactly the same records.
    pub(super) fn determinism(
        &self,
        options: &CheckOptions,
        runs: &[Run],
        report: &mut CheckReport,
    ) {
        if !options.deterministic {
            return report.skip("K1", "not claimed (pass --deterministic to check it)");
        }
        let Some(first) = runs.iter().max_by_key(|r| r.credits) else {
            return report.skip("K1", "no run completed");
        };
        for other in runs {
            if let Some(at) = first_difference(&first.hashes, &other.hashes) {
                let detail = format!(
                    "the same input gave different records at credits {} and {}: they differ \
                     at record #{at}",
                    first.credits, other.credits
                );
                return report.fail(
                    "K1",
                    nonconforming(self.stage.name(), "K1 determinism", detail),
                );
            }
        }
        let chain = match self.chain(None) {
            Ok(chain) => chain,
            Err(error) => return report.fail("K1", error),
        };
        match chain.prime().and_then(|_| {
            run(
                &chain.stage,
                first.credits,
                options.max_records,
                &mut |_| Ok(()),
            )
        }) {
            Ok(again) if again.hashes == first.hashes => {
                let shared = runs.iter().map(|r| r.hashes.len()).min().unwrap_or(0);
                report.pass(
                    "K1",
                    format!(
                        "two runs at credits {} gave the same {} records; the runs at credits \
                         {} agree on their first {shared} records",
                        first.credits,
                        first.records,
                        runs.iter()
                            .map(|r| r.credits.to_string())
                            .collect::<Vec<_>>()
                            .join("/"),
                    ),
                );
            }
            Ok(again) => {
                let at = first_difference(&first.hashes, &again.hashes)
                    .unwrap_or(first.hashes.len().min(again.hashes.len()));
                let detail = format!(
                    "two runs on the same input at credits {} differ at record #{at} ({} then \
                     {} records)",
                    first.credits, first.records, again.records
                );
                report.fail(
                    "K1",
                    nonconforming(self.stage.name(), "K1 determinism", detail),
                );
            }
            Err(error) => report.fail("K1", error),
        }
        self.finish(&chain, report);
    }

    /// H1: a stage that claims to be hot-swappable is swapped for a fresh instance of itself
    /// every few chunks of a run. With its state handed over, the run must deliver what an
    /// unswapped run at the same credits delivers: exactly the same records if it claims to be
    /// deterministic, else as many records.
    pub(super) fn hot_swap(&self, options: &CheckOptions, runs: &[Run], report: &mut CheckReport) {
        if !options.swappable {
            return report.skip("H1", "not claimed (pass --swap to check it)");
        }
        let credits = SMALL_CREDITS;
        let reference = match runs.iter().find(|r| r.credits == credits) {
            Some(run) => Ok(run.clone()),
            None => self.chain(None).and_then(|chain| {
                let run = chain
                    .prime()
                    .and_then(|_| run(&chain.stage, credits, options.max_records, &mut |_| Ok(())));
                self.close(&chain).and(run)
            }),
        };
        let reference = match reference {
            Ok(run) => run,
            Err(error) => return report.fail("H1", error),
        };
        let chain = match self.chain(None) {
            Ok(chain) => chain,
            Err(error) => return report.fail("H1", error),
        };
        let (mut swaps, mut carried) = (0u64, 0u64);
        let swapped = chain.prime().and_then(|_| {
            run(&chain.stage, credits, options.max_records, &mut |chunks| {
                if chunks % SWAP_EVERY_CHUNKS == 0 {
                    let swap = chain.stage.swap(&self.stage)?;
                    swaps += 1;
                    carried += u64::from(swap.state_carried);
                    if let Some(lost) = swap.state_lost {
                        return Err(nonconforming(
                            chain.stage.name(),
                            "H1 hot-swap",
                            format!("it broke while handing over its state: {lost}"),
                        ));
                    }
                }
                Ok(())
            })
        });
        if swapped.is_ok() && swaps == 0 {
            self.finish(&chain, report);
            return report.skip(
                "H1",
                format!(
                    "the run ended before its first swap (after {SWAP_EVERY_CHUNKS} chunks): \
                     feed it more input to check it"
                ),
            );
        }
        let outcome = match swapped {
            Err(error) => Err(error),
            Ok(run) if options.deterministic && run.hashes != reference.hashes => {
                let at = first_difference(&reference.hashes, &run.hashes)
                    .unwrap_or(reference.hashes.len().min(run.hashes.len()));
                Err(self.swap_mismatch(
                    &reference,
                    &run,
                    swaps,
                    carried,
                    format!("differ at record #{at}"),
                ))
            }
            Ok(run) if run.records != reference.records => Err(self.swap_mismatch(
                &reference,
                &run,
                swaps,
                carried,
                format!("{} records against {}", run.records, reference.records),
            )),
            Ok(run) => Ok(format!(
                "swapped {swaps} time(s) mid-stream at credits {credits} (state handed over {carried} \
                 time(s)): the same {} {} as an unswapped run",
                run.records,
                if options.deterministic {
                    "records"
                } else {
                    "record count"
                }
            )),
        };
        match outcome {
            Ok(evidence) => report.pass("H1", evidence),
            Err(error) => report.fail("H1", error),
        }
        self.finish(&chain, report);
    }

    pub(super) fn swap_mismatch(
        &self,
        reference: &Run,
        run: &Run,
        swaps: u64,
        carried: u64,
        how: String,
    ) -> Error {
        let hint = if carried < swaps {
            "; it does not hand its state over (export the `state` interface, world \
             `stateful-stage`), so each new instance starts afresh"
        } else {
            ""
        };
        nonconforming(
            self.stage.name(),
            "H1 hot-swap",
            format!(
                "swapped {swaps} time(s) mid-stream, it delivered other records than an unswapped \
                 run ({} then {} records; they {how}){hint}",
                reference.records, run.records
            ),
        )
    }
}
