//! Across hosts (docs/scale-out.md): pipelines that read and write NATS JetStream, against a
//! real `nats-server` started per test. N1–N4: a partition's outputs are acknowledged before
//! its checkpoint, its checkpoint before its input's acknowledgement, and a host that dies is
//! replaced by one that restores the checkpoint and replays from its sequence, republishing
//! under the same ids, so the output stream holds every order exactly once, in order per
//! symbol.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use market_data::Order;
use sluicegate::config::PipelineSpec;
use sluicegate::report::{RunReport, RunStatus};
use sluicegate_tests::nats_server::NatsServer;
use sluicegate_tests::{pipelines, within};

const PUBLISH: &str = include_str!("../../examples/nats-publish.toml");
const MARKET: &str = include_str!("../../examples/market-nats.toml");

/// Longer than any of these runs takes on a loaded machine.
const HANG: Duration = Duration::from_secs(240);

/// A directory of the test's own for its pipeline files.
fn test_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sluicegate-nats-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// The example files against `server`, with `edits` (from, to) applied.
fn pipeline_file(dir: &Path, name: &str, text: &str, url: &str, edits: &[(&str, &str)]) -> PathBuf {
    let mut text = text.replace("nats://127.0.0.1:4222", url);
    for (from, to) in edits {
        assert!(text.contains(from), "{name}: no `{from}` to edit");
        text = text.replace(from, to);
    }
    let path = dir.join(name);
    std::fs::write(&path, text).expect("pipeline file");
    path
}

/// Runs the pipeline file in this process; it must succeed.
fn run_here(path: &Path) -> RunReport {
    let path = path.to_path_buf();
    let report = within(HANG, move || {
        let spec = PipelineSpec::from_file(&path).expect("spec");
        pipelines().build(&spec, &path).expect("build").run()
    });
    assert_eq!(report.status, RunStatus::Ok, "{report}");
    report
}

/// The market pipeline of examples/market-nats.toml as consumer `consumer`, writing orders to
/// `<consumer>.orders` in stream `ORDERS_<consumer>`, ending once its input is drained.
fn market_file(dir: &Path, url: &str, consumer: &str, checkpoint_records: u64) -> PathBuf {
    pipeline_file(
        dir,
        &format!("market-{consumer}.toml"),
        MARKET,
        url,
        &[
            (
                "consumer = \"market\"",
                &format!("consumer = \"{consumer}\"\ndrain = true"),
            ),
            (
                "checkpoint_records = 10000",
                &format!("checkpoint_records = {checkpoint_records}"),
            ),
            (
                "subject = \"orders\"",
                &format!("subject = \"{consumer}.orders\""),
            ),
            (
                "stream = \"ORDERS\"",
                &format!("stream = \"ORDERS_{consumer}\""),
            ),
        ],
    )
}

/// Publishes `records` ticks of the feed into stream `MD` (examples/nats-publish.toml).
fn publish_feed(dir: &Path, url: &str, records: u64) {
    let path = pipeline_file(
        dir,
        "publish.toml",
        PUBLISH,
        url,
        &[("records = 200000", &format!("records = {records}"))],
    );
    let report = run_here(&path);
    assert_eq!(report.sink.records, records);
}

/// A client for reading streams back.
struct Reader {
    runtime: tokio::runtime::Runtime,
    js: async_nats::jetstream::Context,
}

impl Reader {
    fn connect(url: &str) -> Reader {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let js = runtime.block_on(async {
            let client = async_nats::connect(url).await.expect("connect");
            async_nats::jetstream::new(client)
        });
        Reader { runtime, js }
    }

    /// How many messages stream `name` holds (0 if it does not exist yet).
    fn count(&self, name: &str) -> u64 {
        self.runtime.block_on(async {
            match self.js.get_stream(name).await {
                Ok(mut stream) => stream.info().await.map_or(0, |info| info.state.messages),
                Err(_) => 0,
            }
        })
    }

    /// Every message of stream `name`, in stream order.
    fn messages(&self, name: &str) -> Vec<Vec<u8>> {
        self.runtime.block_on(async {
            let stream = self.js.get_stream(name).await.expect("stream");
            let consumer: async_nats::jetstream::consumer::PullConsumer = stream
                .create_consumer(async_nats::jetstream::consumer::pull::Config::default())
                .await
                .expect("consumer");
            let mut out = Vec::new();
            loop {
                let mut batch = consumer
                    .fetch()
                    .max_messages(1000)
                    .messages()
                    .await
                    .expect("fetch");
                let before = out.len();
                while let Some(message) = batch.next().await {
                    out.push(message.expect("message").payload.to_vec());
                }
                if out.len() == before {
                    return out;
                }
            }
        })
    }
}

/// Orders grouped by symbol, each symbol's in stream order.
fn by_symbol(records: &[Vec<u8>]) -> BTreeMap<String, Vec<Order>> {
    let mut orders: BTreeMap<String, Vec<Order>> = BTreeMap::new();
    for record in records {
        let order = Order::decode(record).expect("an order");
        orders
            .entry(order.symbol.as_str().to_string())
            .or_default()
            .push(order);
    }
    orders
}

/// The test host process running `path`.
fn spawn_host(path: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_sluicegate-test-host"))
        .arg(path)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("test host starts")
}

/// Waits for `child` to exit, successfully.
fn wait_ok(mut child: Child) {
    let deadline = Instant::now() + HANG;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            assert!(status.success(), "the host failed: {status}");
            return;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the host did not finish in {HANG:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// N1–N4: a host killed with SIGKILL mid-stream and started again publishes exactly the
/// orders of an uninterrupted run: none lost, none duplicated, each symbol's in order, through
/// the stateful VWAP and strategy stages of all 8 partitions.
#[test]
fn n1_n4_a_host_killed_mid_stream_and_restarted_loses_and_repeats_nothing() {
    let server = NatsServer::start("kill");
    let dir = test_dir("kill");
    publish_feed(&dir, &server.url, 60_000);
    let reader = Reader::connect(&server.url);

    let reference = market_file(&dir, &server.url, "reference", 2_000);
    let report = run_here(&reference);
    assert_eq!(report.records_in(), 60_000, "{report}");
    let expected = reader.messages("ORDERS_reference");
    assert!(
        expected.len() > 100,
        "too few orders to tell: {}",
        expected.len()
    );

    let crashing = market_file(&dir, &server.url, "crash", 2_000);
    let mut host = spawn_host(&crashing);
    // Killed once about a third of the orders are out: after some checkpoints, before the end.
    let third = expected.len() as u64 / 3;
    let deadline = Instant::now() + HANG;
    while reader.count("ORDERS_crash") < third {
        assert!(
            host.try_wait().expect("wait").is_none(),
            "the host ended before it could be killed mid-stream"
        );
        assert!(Instant::now() < deadline, "no orders from the host");
        std::thread::sleep(Duration::from_millis(5));
    }
    host.kill().expect("SIGKILL");
    let _ = host.wait();
    let published = reader.count("ORDERS_crash");
    assert!(
        published < expected.len() as u64,
        "the host had published every order ({published}) before it was killed"
    );
    wait_ok(spawn_host(&crashing));

    let got = reader.messages("ORDERS_crash");
    assert_eq!(
        got.len(),
        expected.len(),
        "orders lost or duplicated across the kill"
    );
    assert_eq!(by_symbol(&got), by_symbol(&expected));
}

/// N4: a run that ended (its input drained) left a checkpoint of everything: run again, it
/// reads nothing twice and publishes nothing; fed more ticks, it reads only those.
#[test]
fn n4_a_second_run_starts_from_the_checkpoint_of_the_first() {
    let server = NatsServer::start("again");
    let dir = test_dir("again");
    publish_feed(&dir, &server.url, 5_000);
    let path = market_file(&dir, &server.url, "again", 1_000);
    assert_eq!(run_here(&path).records_in(), 5_000);
    let again = run_here(&path);
    assert_eq!(again.records_in(), 0, "{again}");
    assert_eq!(again.sink.records, 0, "{again}");
    publish_feed(&dir, &server.url, 5_000);
    assert_eq!(run_here(&path).records_in(), 5_000);
}
