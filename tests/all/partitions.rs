//! Partitions (docs/scale-out.md): replicas of the stage chain on threads of their own, each
//! record routed by its key. Q1: a key's records reach one replica in source order, so every
//! symbol's orders are the single chain's. Q2: every replica keeps its own state, also across a
//! hot swap and a supervised restart. Q3: the router never holds more than a bounded number of
//! records in memory, however slow a replica is, and a slow partition holds back only itself
//! (its records wait in its spill files).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use market_data::Order;
use sluicegate::config::{PipelineSpec, QUEUE_CHUNKS, ROUTE_RECORDS};
use sluicegate::report::{RunReport, RunStatus};
use sluicegate::{Pipeline, StageState};
use sluicegate_tests::{artifacts as a, component, pipelines, within};

/// Longer than any of these runs takes on a loaded machine: a run still going then hangs.
const HANG: std::time::Duration = std::time::Duration::from_secs(120);

const PARTITIONED: &str = include_str!("../../examples/market-partitioned.toml");

/// The example pipeline on `records` ticks with `partitions` replicas (`None`: no
/// `[partitions]` at all), `front` (stages) before its first stage, its orders written framed
/// to a file of its own.
fn market(
    tag: &str,
    partitions: Option<(u32, usize, usize)>,
    records: u64,
    front: &str,
) -> (Pipeline, PathBuf) {
    market_with(tag, partitions, "", records, front)
}

/// [`market`] with `settings` (lines) added to its `[partitions]`.
fn market_with(
    tag: &str,
    partitions: Option<(u32, usize, usize)>,
    settings: &str,
    records: u64,
    front: &str,
) -> (Pipeline, PathBuf) {
    let dir = std::env::temp_dir().join(format!("sluicegate-partitions-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let out = dir.join(format!(
        "orders-{tag}-{}.bin",
        partitions.map_or("none".to_string(), |(n, _, _)| n.to_string())
    ));
    let mut toml = PARTITIONED.replace(
        "kind = \"discard\"",
        &format!(
            "kind = \"file\"\npath = {:?}\nformat = \"framed\"",
            out.display().to_string()
        ),
    );
    toml = match partitions {
        Some((n, queue, field)) => toml
            .replace(
                "count = 2",
                &format!("count = {n}\nqueue_chunks = {queue}\n{settings}"),
            )
            .replace("field = 2 }", &format!("field = {field} }}")),
        None => toml
            .replace("[partitions]\n", "")
            .replace("count = 2\n", "")
            .replace("key = { delimiter = \",\", field = 2 }\n", ""),
    };
    toml = toml.replacen("[[stage]]", &format!("{front}[[stage]]"), 1);
    let origin = dir.join(format!("market-{tag}.toml"));
    let mut spec = PipelineSpec::from_toml(&toml, &origin).expect("spec");
    spec.set_records(records);
    let pipeline = pipelines().build(&spec, &origin).expect("build");
    (pipeline, out)
}

/// Every order in the file, grouped by symbol, each symbol's in file order.
fn orders_by_symbol(path: &Path) -> BTreeMap<String, Vec<Order>> {
    let bytes = std::fs::read(path).expect("orders file");
    let mut by_symbol: BTreeMap<String, Vec<Order>> = BTreeMap::new();
    let mut rest = bytes.as_slice();
    while let Some((len, tail)) = rest.split_first_chunk::<4>() {
        let len = u32::from_le_bytes(*len) as usize;
        let (record, tail) = tail.split_at(len);
        let order = Order::decode(record).expect("an order");
        by_symbol
            .entry(order.symbol.as_str().to_string())
            .or_default()
            .push(order);
        rest = tail;
    }
    by_symbol
}

/// Runs `pipeline` (failing the test if it takes longer than [`HANG`]), which must succeed.
fn run(pipeline: Pipeline) -> RunReport {
    run_keep(pipeline).0
}

/// The orders the single chain places on the first `records` ticks, by symbol.
fn single_chain_orders(tag: &str, records: u64) -> BTreeMap<String, Vec<Order>> {
    let (single, path) = market(tag, None, records, "");
    run(single);
    orders_by_symbol(&path)
}

/// A first stage that spins `spin` times on every AAPL tick (a slow partition's front).
fn slow_on_aapl(spin: u32) -> String {
    format!(
        "[[stage]]\nname = \"slow\"\ncomponent = {:?}\nconfig = {{ key = \",AAPL,\", spin = {spin} }}\n",
        a::SLOW_KEY
    )
}

/// [`run`], giving the pipeline back.
fn run_keep(mut pipeline: Pipeline) -> (RunReport, Pipeline) {
    let (report, pipeline) = within(HANG, move || (pipeline.run(), pipeline));
    assert_eq!(report.status, RunStatus::Ok, "{report}");
    (report, pipeline)
}

#[test]
fn q1_every_symbol_gets_the_single_chain_orders_with_1_2_and_4_partitions() {
    let (single, path) = market("q1", None, 30_000, "");
    let reference = run(single);
    let expected = orders_by_symbol(&path);
    assert!(
        expected.len() > 1 && reference.sink.records > 0,
        "{reference}"
    );
    let mut checksums: Option<String> = None;
    for n in [1, 2, 4] {
        let (partitioned, path) = market("q1", Some((n, QUEUE_CHUNKS, 2)), 30_000, "");
        assert_eq!(partitioned.partitions(), n as usize);
        let report = run(partitioned);
        assert_eq!(
            report.sink.checksum,
            checksums
                .get_or_insert_with(|| report.sink.checksum.clone())
                .clone(),
            "the order-independent checksum is the same for every partition count: {report}"
        );
        assert_eq!(report.partitions.len(), n as usize, "{report}");
        let json = serde_json::to_value(&report).expect("the --json report");
        assert_eq!(
            json["partitions"].as_array().map(Vec::len),
            Some(n as usize),
            "--json has each partition's sink"
        );
        assert_eq!(report.sink.records, reference.sink.records, "{report}");
        assert_eq!(
            report.hops.first().map(|h| h.records_out),
            Some(30_000),
            "the source was read once: {report}"
        );
        assert_eq!(orders_by_symbol(&path), expected, "{n} partitions");
        if n > 1 {
            assert!(
                report.partitions.iter().filter(|p| p.records > 0).count() > 1,
                "orders came from more than one partition: {report}"
            );
        }
    }
}

/// A FIFO at `path` and a thread that opens it for reading at once (so that a sink can open
/// it) but reads it only once told to, to its end: a pipeline writing to it stops on its sink
/// mid-stream, deterministically, until the test lets it go.
fn held_fifo(
    path: &Path,
) -> (
    std::sync::mpsc::Sender<()>,
    std::thread::JoinHandle<Vec<u8>>,
) {
    let _ = std::fs::remove_file(path);
    let made = std::process::Command::new("mkfifo").arg(path).status();
    assert!(made.is_ok_and(|s| s.success()), "mkfifo");
    let (go, wait) = std::sync::mpsc::channel::<()>();
    let path = path.to_path_buf();
    let reader = std::thread::spawn(move || {
        let mut file = std::fs::File::open(&path).expect("open the fifo");
        let _ = wait.recv();
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut file, &mut bytes).expect("read the fifo");
        bytes
    });
    (go, reader)
}

/// decode -> vwap on `records` generated ticks, every VWAP update framed to `path`.
fn vwap_chain(partitions: &str, records: u64, path: &str) -> String {
    format!(
        "[source]\nkind = \"generate\"\nrecords = {records}\n\n{partitions}\
         [[stage]]\nname = \"decode\"\ncomponent = {:?}\n\n\
         [[stage]]\nname = \"vwap\"\ncomponent = {:?}\nconfig = {{ window = 32 }}\n\n\
         [sink]\nkind = \"file\"\npath = {path:?}\nformat = \"framed\"\ncredits = 64\n",
        a::DECODE,
        a::VWAP
    )
}

/// Framed records grouped by the symbol at bytes 8..16 (a VWAP update's or an order's), each
/// symbol's in order.
fn by_symbol(records: Vec<Vec<u8>>) -> BTreeMap<Vec<u8>, Vec<Vec<u8>>> {
    let mut grouped: BTreeMap<Vec<u8>, Vec<Vec<u8>>> = BTreeMap::new();
    for record in records {
        grouped
            .entry(record[8..16].to_vec())
            .or_default()
            .push(record);
    }
    grouped
}

#[test]
fn q4_a_key_stage_of_the_authors_choosing_routes_exactly_as_the_field_it_names() {
    // A key stage answering the symbol field routes every tick where `field = 2` does: the same
    // orders per symbol, and the same orders per partition.
    let (by_field, _) = market("q4", Some((2, QUEUE_CHUNKS, 2)), 30_000, "");
    let by_field = run(by_field);
    let dir = std::env::temp_dir().join(format!("sluicegate-keystage-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let out = dir.join("orders.bin");
    let toml = PARTITIONED
        .replace(
            "key = { delimiter = \",\", field = 2 }",
            &format!(
                "key = {{ stage = {{ name = \"symbol-key\", component = {:?}, config = {{ field = 2 }} }} }}",
                a::FIELD_KEY
            ),
        )
        .replace(
            "kind = \"discard\"",
            &format!("kind = \"file\"\npath = {:?}\nformat = \"framed\"", out.display().to_string()),
        );
    let origin = dir.join("keystage.toml");
    let mut spec = PipelineSpec::from_toml(&toml, &origin).expect("spec");
    spec.set_records(30_000);
    let report = run(pipelines().build(&spec, &origin).expect("build"));
    let (single, path) = market("q4", None, 30_000, "");
    run(single);
    assert_eq!(orders_by_symbol(&out), orders_by_symbol(&path));
    let per_partition = |r: &RunReport| r.partitions.iter().map(|p| p.records).collect::<Vec<_>>();
    assert_eq!(per_partition(&report), per_partition(&by_field), "{report}");
}

#[test]
fn q4_a_key_stage_that_does_not_answer_one_key_per_record_fails_the_run_by_name() {
    // `counter` ignores its input and counts: keys for records it never pulled.
    let dir = std::env::temp_dir().join(format!("sluicegate-badkey-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let toml = format!(
        "[source]\nkind = \"generate\"\nrecords = 5000\n\n\
         [partitions]\ncount = 2\nkey = {{ stage = {{ name = \"bad-key\", component = {:?}, config = {{ records = 100000 }} }} }}\n\n\
         [[stage]]\nname = \"pass\"\ncomponent = {:?}\n",
        a::COUNTER,
        a::PASSTHROUGH
    );
    let origin = dir.join("badkey.toml");
    let spec = PipelineSpec::from_toml(&toml, &origin).expect("spec");
    let mut pipeline = pipelines().build(&spec, &origin).expect("build");
    let report = within(HANG, move || pipeline.run());
    assert_eq!(report.status, RunStatus::Failed, "{report}");
    let failure = report.failure.as_ref().expect("a failure");
    assert!(
        failure.message.contains("bad-key") && failure.message.contains("Q4"),
        "{report}"
    );
}

#[test]
fn q2_a_hot_swap_mid_stream_replaces_the_stage_in_every_partition_each_with_its_own_state() {
    // Every VWAP update goes to a FIFO that the test reads only once the swap is done: the
    // output is far larger than a pipe holds, so both replicas are stopped mid-stream on the
    // sink when `vwap` is swapped (for itself), each at its own chunk boundary, each handing
    // its own windows over. If a replica's windows were lost or mixed up with the other's,
    // some symbol's VWAP updates would differ from the single chain's.
    let dir =
        std::env::temp_dir().join(format!("sluicegate-partitions-swap-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let origin = dir.join("swap.toml");
    let reference = dir.join("reference.bin");
    let spec = PipelineSpec::from_toml(
        &vwap_chain("", 30_000, &reference.display().to_string()),
        &origin,
    )
    .expect("spec");
    run(pipelines().build(&spec, &origin).expect("build"));
    let expected = by_symbol(framed_records(&reference));

    let fifo = dir.join("vwap.fifo");
    let (go, reader) = held_fifo(&fifo);
    let partitions = "[partitions]\ncount = 2\nkey = { delimiter = \",\", field = 2 }\n\n";
    let spec = PipelineSpec::from_toml(
        &vwap_chain(partitions, 30_000, &fifo.display().to_string()),
        &origin,
    )
    .expect("spec");
    let mut pipeline = pipelines().build(&spec, &origin).expect("build");
    let (swapper, probe) = (pipeline.swapper(), pipeline.probe());
    let running = std::thread::spawn(move || pipeline.run());
    let delivered = |hop: &str| {
        probe
            .snapshot()
            .iter()
            .find(|h| h.name == hop)
            .map_or(0, |h| h.stats.records)
    };
    let waiting = std::time::Instant::now();
    while delivered("vwap#0") == 0 || delivered("vwap#1") == 0 {
        assert!(waiting.elapsed() < HANG, "the replicas never delivered");
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let swapped = swapper.swap("vwap", &component(a::VWAP));
    go.send(()).expect("reader waits");
    let report = running.join().expect("run thread");
    let written = reader.join().expect("reader thread");
    assert!(swapped.is_ok(), "{swapped:?}");
    assert_eq!(report.status, RunStatus::Ok, "{report}");
    assert_eq!(report.swaps.len(), 2, "one swap per partition: {report}");
    assert!(
        report
            .swaps
            .iter()
            .all(|s| s.state_carried && s.state_lost.is_none()),
        "{report}"
    );
    let fifo_records = {
        std::fs::write(dir.join("partitioned.bin"), &written).expect("write");
        framed_records(&dir.join("partitioned.bin"))
    };
    assert_eq!(by_symbol(fifo_records), expected);
}

#[test]
fn q3_without_spill_a_slow_partition_holds_back_only_what_the_queues_hold_and_loses_nothing() {
    // A first stage that spins on every AAPL tick makes the partition slow: without spill
    // files, the router blocks on its queue. At no point are more records in flight between
    // the source and the replica than its queue (`queue_chunks`), its input's remainder and
    // the router's hand can hold.
    let slow = slow_on_aapl(20_000);
    let expected = single_chain_orders("q3", 200_000);
    let (partitioned, path) = market_with("q3", Some((2, 2, 99)), "spill_mib = 0", 200_000, &slow);
    assert!(
        partitioned
            .stages()
            .iter()
            .all(|s| s.state() == StageState::Created)
    );
    let probe = partitioned.probe();
    let watching = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let watch = {
        let watching = watching.clone();
        std::thread::spawn(move || {
            let mut most_in_flight = 0u64;
            while watching.load(std::sync::atomic::Ordering::Relaxed) {
                let hops = probe.snapshot();
                let routed = hops.first().map_or(0, |h| h.stats.records);
                let taken: u64 = hops
                    .iter()
                    .filter(|h| h.name.starts_with("partition#"))
                    .map(|h| h.stats.records)
                    .sum();
                most_in_flight = most_in_flight.max(routed.saturating_sub(taken));
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
            most_in_flight
        })
    };
    let report = run(partitioned);
    watching.store(false, std::sync::atomic::Ordering::Relaxed);
    let most_in_flight = watch.join().expect("watcher");
    // Every tick has the empty key (it has no field 99), so one partition gets every record
    // in whole routed chunks, and the other none: with queue_chunks = 2, at most 2 chunks in
    // its queue, 1 left in its input, 1 in the router's hand.
    let bound = (2 + 2) * ROUTE_RECORDS as usize;
    assert!(
        most_in_flight <= bound as u64,
        "{most_in_flight} records in flight, more than {bound}: {report}"
    );
    assert_eq!(orders_by_symbol(&path), expected);
}

/// Q3 and Q1 through the spill files: a partition slowed by its first stage (every AAPL tick
/// spins) falls behind, its queue holds one chunk and its spill 1 MiB, so its records go to
/// disk and, when that is full too, the router waits; every symbol still gets exactly the
/// single chain's orders.
#[test]
fn q3_records_that_went_through_a_full_spill_reach_the_sink_in_order() {
    let slow = slow_on_aapl(200_000);
    let expected = single_chain_orders("q3spill", 200_000);
    let (partitioned, path) =
        market_with("q3spill", Some((2, 1, 2)), "spill_mib = 1", 200_000, &slow);
    let probe = partitioned.probe();
    let report = run(partitioned);
    assert_eq!(report.status, RunStatus::Ok, "{report}");
    let spilled: u64 = probe.partition_spills().iter().map(|s| s.chunks).sum();
    assert!(spilled > 0, "the slow partition spilled: {report}");
    assert_eq!(orders_by_symbol(&path), expected);
}

/// Q3 with spill files (the default): a partition stuck behind its first stage holds back
/// only itself. The router reads the whole source, the other partition takes and delivers
/// every one of its records while the stuck one is still stuck, and the stuck partition's
/// records wait on disk, in files no one else can see.
#[test]
fn q3_a_stuck_partition_holds_back_only_itself_its_records_wait_in_its_spill() {
    const RECORDS: u64 = 200_000;
    let ticks = ticks(RECORDS);
    let dir = std::env::temp_dir().join(format!("sluicegate-spill-{}", std::process::id()));
    let spill_dir = dir.join("spill");
    std::fs::create_dir_all(&spill_dir).expect("temp dir");
    let toml = format!(
        "[source]\nkind = \"generate\"\nrecords = {RECORDS}\n\n\
         [partitions]\ncount = 2\nkey = {{ field = 2 }}\nqueue_chunks = 1\nspill_dir = \"spill\"\n\n\
         [[stage]]\nname = \"stalls\"\ncomponent = {:?}\nconfig = {{ key = \",AAPL,\" }}\n\n\
         [sink]\nkind = \"file\"\npath = \"out.bin\"\nformat = \"framed\"\n",
        a::STALLS_ON_KEY
    );
    let key = |tick: &[u8]| {
        tick.split(|&b| b == b',')
            .nth(2)
            .unwrap_or_default()
            .to_vec()
    };
    let stuck = fnv(b"AAPL") % 2;
    let other = 1 - stuck;
    let others: Vec<&Vec<u8>> = ticks.iter().filter(|t| fnv(&key(t)) % 2 == other).collect();
    assert!(others.len() > 1000 && others.len() < ticks.len() - 1000);
    let origin = dir.join("spill.toml");
    let spec = PipelineSpec::from_toml(&toml, &origin).expect("spec");
    let pipeline = pipelines().build(&spec, &origin).expect("build");
    let (stopper, probe) = (pipeline.stopper(), pipeline.probe());
    let running = std::thread::spawn(move || run_keep_stopped(pipeline));
    let records_of = |name: &str| {
        probe
            .snapshot()
            .iter()
            .find(|h| h.name == name)
            .map_or(0, |h| h.stats.records)
    };
    let other_input = format!("partition#{other}");
    let waiting = std::time::Instant::now();
    while records_of("source") < RECORDS || records_of(&other_input) < others.len() as u64 {
        assert!(
            waiting.elapsed() < HANG,
            "the stuck partition held the others back: source {} of {RECORDS}, {other_input} \
             {} of {}",
            records_of("source"),
            records_of(&other_input),
            others.len()
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let in_stuck = records_of(&format!("partition#{stuck}"));
    let spills = probe.partition_spills();
    let waiting_on_disk = spills.get(stuck as usize).map_or(0, |s| s.bytes);
    assert!(
        waiting_on_disk > 0,
        "the stuck partition's records wait in its spill: {spills:?}"
    );
    let page = probe.prometheus();
    let series = format!(
        "sluicegate_partition_spill_bytes{{pipeline=\"{}\",partition=\"{stuck}\"}} ",
        probe.pipeline()
    );
    let metric = page
        .lines()
        .find_map(|line| line.strip_prefix(series.as_str()))
        .and_then(|value| value.parse::<u64>().ok());
    assert!(metric.is_some_and(|bytes| bytes > 0), "{page}");
    let spilled: Vec<_> = std::fs::read_dir(&spill_dir).expect("spill dir").collect();
    stopper.stop();
    let (report, pipeline) = running.join().expect("run thread");
    drop(pipeline);
    assert_eq!(report.status, RunStatus::Ok, "{report}");
    assert!(report.stopped, "{report}");
    assert!(
        in_stuck < (RECORDS - others.len() as u64) / 2,
        "the stuck partition took only what it reached: {in_stuck}"
    );
    assert!(spilled.is_empty(), "spill files have no names: {spilled:?}");
    // The other partition delivered every one of its records, in source order.
    let delivered = framed_records(&dir.join("out.bin"));
    let (from_other, _): (Vec<_>, Vec<_>) = delivered
        .into_iter()
        .partition(|t| fnv(&key(t)) % 2 == other);
    assert_eq!(from_other.len(), others.len(), "{report}");
    assert!(from_other.iter().zip(&others).all(|(a, b)| a == *b));
}

/// Every record of a framed file.
fn framed_records(path: &Path) -> Vec<Vec<u8>> {
    let bytes = std::fs::read(path).unwrap_or_default();
    let mut records = Vec::new();
    let mut rest = bytes.as_slice();
    while let Some((len, tail)) = rest.split_first_chunk::<4>() {
        let (record, tail) = tail.split_at(u32::from_le_bytes(*len) as usize);
        records.push(record.to_vec());
        rest = tail;
    }
    records
}

/// The first `records` ticks of the `generate` source's feed (its default settings).
fn ticks(records: u64) -> Vec<Vec<u8>> {
    let mut feed = market_data::Feed::new(market_data::FeedConfig {
        records,
        ..market_data::FeedConfig::default()
    });
    let (mut ticks, mut line) = (Vec::new(), Vec::new());
    while feed.next_into(&mut line) {
        ticks.push(line.clone());
    }
    ticks
}

/// A partitioned pipeline (`partitions`: the settings of its `[partitions]` besides the key) of
/// replicas of one poison-pill stage over `records` generated ticks, poisoned by the `nth`
/// tick, with the stage's extra settings `policy`; returns it with the ticks and its directory.
fn poisoned(
    name: &str,
    partitions: &str,
    records: u64,
    nth: usize,
    policy: &str,
) -> (Pipeline, Vec<Vec<u8>>, PathBuf) {
    let ticks = ticks(records);
    let poison = String::from_utf8(ticks[nth].clone()).expect("a text tick");
    let dir = std::env::temp_dir().join(format!("sluicegate-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let toml = format!(
        "[source]\nkind = \"generate\"\nrecords = {records}\n\n\
         [partitions]\n{partitions}\nkey = {{ delimiter = \",\", field = 2 }}\n\n\
         [[stage]]\nname = \"poison\"\ncomponent = {:?}\nconfig = {{ poison = {poison:?} }}\n\
         {policy}\n\n\
         [sink]\nkind = \"file\"\npath = \"out.bin\"\nformat = \"framed\"\ncredits = 64\n",
        a::POISON_PILL
    );
    let origin = dir.join(format!("{name}.toml"));
    let spec = PipelineSpec::from_toml(&toml, &origin).expect("spec");
    let pipeline = pipelines().build(&spec, &origin).expect("build");
    (pipeline, ticks, dir)
}

#[test]
fn a_failed_partition_stops_the_router_the_others_finish_and_the_run_names_the_stage() {
    // Three partitions: the run fails, naming the replica's stage, and ends.
    let (mut pipeline, _, _) = poisoned("fail", "count = 3", 20_000, 4_999, "");
    let report = within(HANG, move || pipeline.run());
    assert_eq!(report.status, RunStatus::Failed, "{report}");
    let failure = report.failure.as_ref().expect("a failure");
    assert!(failure.stage.starts_with("poison#"), "{report}");
    // One partition without spill files: nobody else drains the router, whose queue is full
    // when the replica fails; it must see the failure and stop, long before the end of the
    // source (the queue bound keeps it within a few thousand records of the failure). With
    // spill files it may read on into them until it notices, at most `spill_mib` ahead.
    let (mut pipeline, _, _) = poisoned("fail-one", "count = 1\nspill_mib = 0", 200_000, 4_999, "");
    let stages = pipeline.stages().to_vec();
    let report = within(HANG, move || pipeline.run());
    assert_eq!(report.status, RunStatus::Failed, "{report}");
    let routed = report.hops.first().map_or(0, |h| h.records_out);
    let bound = 5_000 + (QUEUE_CHUNKS + 2) as u64 * u64::from(ROUTE_RECORDS);
    assert!(routed <= bound, "the router went on to {routed}: {report}");
    assert!(
        stages
            .iter()
            .all(|s| matches!(s.state(), StageState::Closed | StageState::Faulted)),
        "every stage closed or faulted"
    );
}

#[test]
fn a_stopped_partitioned_run_closes_every_stage_and_says_so() {
    let (mut pipeline, _, _) = poisoned("stop", "count = 2", 20_000, 19_999, "");
    pipeline.stopper().stop();
    let (report, pipeline) = within(HANG, move || (pipeline.run(), pipeline));
    assert!(report.stopped, "{report}");
    assert!(
        pipeline
            .stages()
            .iter()
            .all(|s| s.state() == StageState::Closed),
        "{report}"
    );
}

#[test]
fn a_partitioned_run_stopped_mid_stream_stops_every_partition_and_says_so() {
    // Held on a FIFO sink that is read only after the stop, the run cannot end first.
    let dir = std::env::temp_dir().join(format!("sluicegate-stopmid-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let fifo = dir.join("out.fifo");
    let (go, reader) = held_fifo(&fifo);
    let partitions = "[partitions]\ncount = 2\nkey = { delimiter = \",\", field = 2 }\n\n";
    let origin = dir.join("stop.toml");
    let spec = PipelineSpec::from_toml(
        &vwap_chain(partitions, 100_000, &fifo.display().to_string()),
        &origin,
    )
    .expect("spec");
    let pipeline = pipelines().build(&spec, &origin).expect("build");
    let (stopper, probe) = (pipeline.stopper(), pipeline.probe());
    let running = std::thread::spawn(move || run_keep_stopped(pipeline));
    let waiting = std::time::Instant::now();
    while probe
        .snapshot()
        .iter()
        .filter(|h| h.name.starts_with("vwap#"))
        .any(|h| h.stats.records == 0)
    {
        assert!(waiting.elapsed() < HANG, "the replicas never delivered");
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    stopper.stop();
    go.send(()).expect("reader waits");
    let (report, pipeline) = running.join().expect("run thread");
    let closed = pipeline
        .stages()
        .iter()
        .all(|s| s.state() == StageState::Closed);
    drop(pipeline); // closes the FIFO's writing end: the reader sees its end
    reader.join().expect("reader thread");
    assert!(report.stopped, "{report}");
    assert_eq!(report.status, RunStatus::Ok, "{report}");
    assert!(
        report.hops.first().map_or(0, |h| h.records_out) < 100_000,
        "stopped before the end of the source: {report}"
    );
    assert!(closed, "every stage closed: {report}");
}

/// Runs `pipeline` within [`HANG`], whatever its outcome.
fn run_keep_stopped(mut pipeline: Pipeline) -> (RunReport, Pipeline) {
    within(HANG, move || (pipeline.run(), pipeline))
}

#[test]
fn a_partition_whose_chain_ends_early_does_not_end_the_others() {
    // The first AAPL tick ends the chain of AAPL's partition (as a stage that takes the first
    // N records would); every other partition still gets every one of its records.
    let ticks = ticks(20_000);
    let dir = std::env::temp_dir().join(format!("sluicegate-ends-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let toml = format!(
        "[source]\nkind = \"generate\"\nrecords = 20000\n\n\
         [partitions]\ncount = 3\nkey = {{ field = 2 }}\n\n\
         [[stage]]\nname = \"ends\"\ncomponent = {:?}\nconfig = {{ key = \",AAPL,\" }}\n\n\
         [sink]\nkind = \"file\"\npath = \"out.bin\"\nformat = \"framed\"\n",
        a::ENDS_ON_KEY
    );
    let origin = dir.join("ends.toml");
    let spec = PipelineSpec::from_toml(&toml, &origin).expect("spec");
    let report = run(pipelines().build(&spec, &origin).expect("build"));
    let delivered: std::collections::HashSet<Vec<u8>> =
        framed_records(&dir.join("out.bin")).into_iter().collect();
    let key = |tick: &[u8]| {
        tick.split(|&b| b == b',')
            .nth(2)
            .unwrap_or_default()
            .to_vec()
    };
    let aapl = ticks
        .iter()
        .find(|t| key(t) == b"AAPL")
        .map(|t| key(t))
        .expect("AAPL trades");
    let ended: std::collections::HashSet<Vec<u8>> = ticks
        .iter()
        .filter(|t| !delivered.contains(*t))
        .map(|t| key(t))
        .collect();
    assert!(ended.contains(&aapl), "AAPL's partition ended: {report}");
    // Every tick that is missing belongs to the one partition that ended: the keys of all
    // the missing ticks hash to AAPL's partition, so no other partition lost a record.
    let routed = report.partitions.iter().filter(|p| p.records > 0).count();
    assert_eq!(routed, 3, "every partition delivered: {report}");
    let missing_partitions: std::collections::HashSet<u64> = ticks
        .iter()
        .filter(|t| !delivered.contains(*t))
        .map(|t| fnv(&key(t)) % 3)
        .collect();
    assert_eq!(missing_partitions.len(), 1, "{report}");
}

/// FNV-1a 64 of `bytes`, as the router hashes keys.
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[test]
fn partition_settings_that_cannot_work_are_refused_by_name() {
    let refused = |partitions: &str, stage_name: &str| -> String {
        let toml = format!(
            "[source]\nkind = \"generate\"\n\n{partitions}\n\
             [[stage]]\nname = {stage_name:?}\ncomponent = {:?}\n",
            a::PASSTHROUGH
        );
        let origin = Path::new(env!("CARGO_MANIFEST_DIR")).join("p.toml");
        match PipelineSpec::from_toml(&toml, &origin) {
            Ok(_) => panic!("accepted: {toml}"),
            Err(e) => e.to_string(),
        }
    };
    let field = "[partitions]\nkey = { field = 2 }";
    assert!(refused("[partitions]\ncount = 0\nkey = { field = 2 }", "s").contains("at least 1"));
    assert!(refused(field, "s#1").contains("`#`"));
    assert!(refused(field, "partition").contains("partition"));
    assert!(
        refused("[partitions]\nkey = { delimiter = \"::\", field = 2 }", "s").contains("one byte")
    );
    assert!(refused("[partitions]\ncount = 2\nkey = {}", "s").contains("either a `field`"));
    assert!(
        refused("[partitions]\nqueue_chunks = 0\nkey = { field = 2 }", "s")
            .contains("queue_chunks")
    );
    assert!(
        refused(
            "[partitions]\nspill_mib = 2000000\nkey = { field = 2 }",
            "s"
        )
        .contains("spill_mib is 2000000")
    );
    assert!(
        refused(
            "[partitions]\nspill_dir = \"no-such-dir\"\nkey = { field = 2 }",
            "s"
        )
        .contains("spill_dir")
    );
    let bypassed = format!(
        "[partitions]\nkey = {{ stage = {{ name = \"k\", component = {:?}, on_fault = \"bypass\", optional = true }} }}",
        a::FIELD_KEY
    );
    assert!(refused(&bypassed, "s").contains("on_fault must be \"fail\""));
    let same_name = format!(
        "[partitions]\nkey = {{ stage = {{ name = \"s\", component = {:?} }} }}",
        a::FIELD_KEY
    );
    assert!(refused(&same_name, "s").contains("its own"));
}

#[test]
fn q2_a_restart_in_one_partition_loses_and_repeats_nothing() {
    // The 5,000th tick poisons the stage of whichever partition it is routed to; that replica
    // restarts (its failed call's input quarantined to its own dead-letter file) and the run
    // goes on. Every tick is then either at the sink or in a dead-letter file, exactly once.
    let (pipeline, ticks, dir) = poisoned(
        "restart",
        "count = 3",
        20_000,
        4_999,
        "on_fault = \"restart\"\ndead_letter = \"dead.bin\"",
    );
    let report = run(pipeline);
    assert_eq!(report.recovered.len(), 1, "one restart: {report}");
    let mut seen = framed_records(&dir.join("out.bin"));
    let delivered = seen.len();
    for replica in 0..3 {
        seen.extend(framed_records(&dir.join(format!("dead.bin.{replica}"))));
    }
    let quarantined = seen.len() - delivered;
    assert!(
        quarantined >= 1,
        "the poisoned call's input was quarantined: {report}"
    );
    let restarted: Vec<_> = report.hops.iter().filter(|h| h.restarts > 0).collect();
    assert_eq!(restarted.len(), 1, "one partition restarted: {report}");
    assert_eq!(restarted[0].quarantined_records, quarantined as u64);
    seen.sort();
    let mut all = ticks;
    all.sort();
    assert_eq!(seen, all, "every tick once, at the sink or quarantined");
}
