//! Live progress on stderr: a spinner while stages load (compiling a large component, e.g. a
//! Python one, takes seconds the first time), then, while a pipeline runs, overall records and
//! rate and one line per hop with records in and out and its state. Hidden when stderr is not
//! a terminal.

use std::io::IsTerminal as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use sluicegate::Probe;

/// How often the display is redrawn.
const REFRESH: Duration = Duration::from_millis(100);

/// A running progress display; stops and clears itself on drop.
pub struct Progress {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Progress {
    pub fn start(probe: Probe, credits: u32) -> Progress {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        // Nobody would see it: no thread, no sampling.
        let thread = std::io::stderr()
            .is_terminal()
            .then(|| std::thread::spawn(move || draw(&probe, credits, &flag)));
        Progress { stop, thread }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn draw(probe: &Probe, credits: u32, stop: &AtomicBool) {
    let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(10));
    let style = ProgressStyle::with_template("{prefix:>14.bold} {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_spinner());
    let header = multi.add(ProgressBar::new_spinner().with_style(style.clone()));
    header.set_prefix("sluicegate");
    let hops: Vec<ProgressBar> = probe
        .snapshot()
        .iter()
        .map(|hop| {
            let bar = multi.add(ProgressBar::new_spinner().with_style(style.clone()));
            bar.set_prefix(hop.name.clone());
            bar
        })
        .collect();
    let started = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let sink = probe.sink();
        let secs = started.elapsed().as_secs_f64().max(1e-9);
        header.set_message(format!(
            "{} records to the sink, {:.0}/s, {:.1} s, demand window {credits} credits",
            sink.records,
            sink.records as f64 / secs,
            secs
        ));
        for (bar, hop) in hops.iter().zip(probe.snapshot()) {
            let state = hop
                .state
                .map(|s| format!("{s:?}").to_lowercase())
                .unwrap_or_else(|| "native".into());
            let events = match (hop.stats.swaps, hop.stats.restarts) {
                (0, 0) => String::new(),
                (swaps, restarts) => format!("  swaps {swaps}  restarts {restarts}"),
            };
            bar.set_message(format!(
                "in {:>10}  out {:>10}  credits granted {:>10}  {state}{events}",
                hop.records_in, hop.stats.records, hop.stats.credits_granted
            ));
        }
        std::thread::sleep(REFRESH);
    }
    for bar in hops.iter().chain(Some(&header)) {
        bar.finish_and_clear();
    }
    let _ = multi.clear();
}

/// Runs `work` (loading or compiling stages) behind a spinner that says `what` and how long it
/// has taken, shown only if it lasts over half a second.
pub fn while_loading<T>(what: &str, work: impl FnOnce() -> T) -> T {
    let spinner = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(10));
    spinner.set_style(
        ProgressStyle::with_template("{spinner} {msg} {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    spinner.set_message(format!(
        "{what} (a stage is compiled on its first load only, then cached)"
    ));
    let done = Arc::new(AtomicBool::new(false));
    let ticker = {
        let (spinner, done) = (spinner.clone(), done.clone());
        std::thread::spawn(move || {
            let started = Instant::now();
            while !done.load(Ordering::Relaxed) {
                if started.elapsed() > Duration::from_millis(500) {
                    spinner.tick();
                }
                std::thread::sleep(REFRESH);
            }
        })
    };
    let result = work();
    done.store(true, Ordering::Relaxed);
    let _ = ticker.join();
    spinner.finish_and_clear();
    result
}
