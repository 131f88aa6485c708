//! Memory per live stage: many primed pass-through stages held at once (chains of ten, so no
//! chain nests deeper than a pipeline would), each child process measuring its own resident
//! set before the stages exist, once they are primed, and once every chain has carried a few
//! records. The difference over the number of stages is what one more live stage costs.

use std::process::Command;

use sluicegate::Engine;

/// One measurement: `stages` live instances of `stage` on `path`.
pub struct StageMemoryRow {
    pub stage: &'static str,
    /// The path its calls take (`core` or `component`), as the child reported it.
    pub path: String,
    pub stages: usize,
    /// KiB of resident set per stage once primed.
    pub primed_kib: f64,
    /// KiB per stage once every chain has run.
    pub run_kib: f64,
    /// Of `run_kib`: the part in the C heap (`[heap]` in /proc/self/smaps), where the host's
    /// allocations go (the store and its data, the instances and their contexts, the WASI
    /// context, the counters).
    pub heap_kib: f64,
    /// Of `run_kib`: the part in linear memories (anonymous mappings, where wasmtime reserves
    /// each memory, and the copy-on-write pages of a module's memory image laid over their
    /// start); the rest of `run_kib` is neither.
    pub linear_kib: f64,
    /// The whole process's resident set at the end, MiB.
    pub total_mib: f64,
}

const CHAIN: usize = 10;

/// Runs a child process holding `stages` live `stage`s, on the fast path or not.
pub fn measure(stage: &'static str, fast: bool, stages: usize) -> anyhow::Result<StageMemoryRow> {
    let mut child = Command::new(std::env::current_exe()?);
    child.args(["--stage-memory-child", stage, &stages.to_string()]);
    if !fast {
        child.env("SLUICEGATE_FAST_PATH", "0");
    }
    let out = child.output()?;
    anyhow::ensure!(
        out.status.success(),
        "stage memory child {stage} {stages}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let value = |key: &str| -> anyhow::Result<f64> {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| anyhow::anyhow!("stage memory child printed no {key}: {stdout}"))
    };
    let path = stdout
        .lines()
        .find_map(|l| l.strip_prefix("path="))
        .unwrap_or("?")
        .to_string();
    Ok(StageMemoryRow {
        stage,
        path,
        stages,
        primed_kib: value("primed_kib")? / stages as f64,
        run_kib: value("run_kib")? / stages as f64,
        heap_kib: value("heap_kib")? / stages as f64,
        linear_kib: value("linear_kib")? / stages as f64,
        total_mib: value("total_kib")? / 1024.0,
    })
}

/// The child's side: prints `path=`, `primed_kib=`, `run_kib=`, `heap_kib=`, `linear_kib=`
/// (growth over the baseline) and `total_kib=`.
pub fn child(stage: &str, stages: usize) -> anyhow::Result<()> {
    let engine = Engine::new()?;
    let component = match stage {
        "sdk-passthrough" => engine.load_bytes(stage, crate::stages::PASSTHROUGH)?,
        "wat-passthrough" => engine.load_bytes(
            stage,
            include_bytes!("../../example-stages/wat-passthrough/stage.wat"),
        )?,
        other => anyhow::bail!("unknown stage `{other}`"),
    };
    // One chain first, run, so that code, caches and thread-locals are in the baseline.
    let warm = crate::chain::primed_chain(&component, CHAIN, 64)?;
    run(&warm)?;
    let baseline = rss_kib()?;
    let (heap_before, linear_before) = resident_by_kind()?;
    let mut chains = Vec::with_capacity(stages.div_ceil(CHAIN));
    for _ in 0..stages.div_ceil(CHAIN) {
        chains.push(crate::chain::primed_chain(&component, CHAIN, 64)?);
    }
    let primed = rss_kib()?;
    for chain in &chains {
        run(chain)?;
    }
    let after = rss_kib()?;
    let (heap_after, linear_after) = resident_by_kind()?;
    println!("path={}", warm[0].execution_path());
    println!("primed_kib={}", primed.saturating_sub(baseline));
    println!("run_kib={}", after.saturating_sub(baseline));
    println!("heap_kib={}", heap_after.saturating_sub(heap_before));
    println!("linear_kib={}", linear_after.saturating_sub(linear_before));
    println!("total_kib={after}");

    Ok(())
}

/// Ten one-record resumes of the chain's tail, every record checked to arrive.
fn run(chain: &[sluicegate::Stage]) -> anyhow::Result<()> {
    let tail = chain.last().ok_or_else(|| anyhow::anyhow!("empty chain"))?;
    for _ in 0..10 {
        let chunk = tail.resume(1)?;
        anyhow::ensure!(chunk.is_some_and(|c| c.len() == 1), "a record was lost");
    }
    Ok(())
}

fn rss_kib() -> anyhow::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no VmRSS in /proc/self/status"))
}

/// Resident KiB in the C heap (`[heap]`) and in linear memories (anonymous mappings and
/// wasmtime's memory images), from
/// /proc/self/smaps, read a line at a time through one small buffer (a large one would be a
/// mapping of its own, counted). Reading allocates, which may grow the heap while the kernel
/// lists it: a mapping listed again (the same start as the one before) counts once, as last
/// listed.
fn resident_by_kind() -> anyhow::Result<(u64, u64)> {
    use std::io::BufRead;
    let smaps =
        std::io::BufReader::with_capacity(16 << 10, std::fs::File::open("/proc/self/smaps")?);
    let (mut heap, mut linear) = (0u64, 0u64);
    // The mapping being read: its start, whether it is the heap (`None`: neither kind).
    let mut current: Option<(u64, Option<bool>)> = None;
    // The last mapping counted: its start, kind and resident KiB, taken back if listed again.
    let mut counted: Option<(u64, bool, u64)> = None;
    let mut line = String::with_capacity(256);
    let mut lines = smaps;
    loop {
        line.clear();
        if lines.read_line(&mut line)? == 0 {
            break;
        }
        let mut words = line.split_whitespace();
        let first = words.next().unwrap_or("");
        if let Some((start, _)) = first.split_once('-').filter(|_| !first.ends_with(':')) {
            let start = u64::from_str_radix(start, 16).unwrap_or(0);
            // Linear memories: wasmtime's anonymous reservations, and the copy-on-write
            // mappings of a module's memory image laid over their start.
            let kind = match words.nth(4).unwrap_or("") {
                "[heap]" => Some(true),
                "" => Some(false),
                name if name.contains("memfd:wasm-memory-image") => Some(false),
                _ => None,
            };
            current = Some((start, kind));
        } else if first == "Rss:"
            && let Some((start, Some(is_heap))) = current
        {
            let kib: u64 = words.next().and_then(|v| v.parse().ok()).unwrap_or(0);
            if let Some((last, was_heap, last_kib)) = counted
                && last == start
            {
                *(if was_heap { &mut heap } else { &mut linear }) -= last_kib;
            }
            *(if is_heap { &mut heap } else { &mut linear }) += kib;
            counted = Some((start, is_heap, kib));
        }
    }
    Ok((heap, linear))
}
