//! Across hosts (docs/scale-out.md): the market pipeline through NATS JetStream on loopback,
//! against a real `nats-server` started here. The ticks are published into a stream of 8
//! partitions first (not timed); then the pipeline reads them back and publishes its orders,
//! in one process and in two (each a child process running the same file), every run's order
//! count checked against native Rust's. Only the runs are timed, from the first host's start to
//! the last host's end (building the pipeline, which compiles its stages, is not). Latency: a
//! pass-through stage between two streams, records published at a steady rate, each carrying
//! its send time, received from the output stream. Takeover: two hosts hold the partitions;
//! one is killed (SIGKILL); the time until the other holds all of them.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, ensure};
use futures_util::StreamExt;
use sluicegate::config::PipelineSpec;
use sluicegate::report::RunStatus;
use sluicegate::{Engine, PipelineBuilder};
use sluicegate_nats_server::{NatsServer, server_binary};

use crate::market::Ticks;

/// How long a host's lease lasts in these runs (the takeover bound).
const LEASE_MS: u64 = 3_000;

/// What was measured.
pub struct NatsFigures {
    pub records: u64,
    /// Records/s, one host process.
    pub one_host: f64,
    /// Records/s, two host processes.
    pub two_hosts: f64,
    pub latency_p50_us: f64,
    pub latency_p99_us: f64,
    pub latency_samples: usize,
    pub latency_rate: u64,
    /// Seconds from a host's SIGKILL until the other holds every partition.
    pub takeover_s: f64,
}

/// A builder with the example stages the pipelines here name.
fn builder(engine: &Engine) -> PipelineBuilder<'_> {
    PipelineBuilder::new(engine)
        .builtin("decode", crate::stages::DECODE)
        .builtin("symbol-filter", crate::stages::SYMBOL_FILTER)
        .builtin("vwap", crate::stages::VWAP)
        .builtin("strategy", crate::stages::STRATEGY)
        .builtin("passthrough", crate::stages::PASSTHROUGH)
}

/// The market pipeline reading stream `MD` as consumer `consumer`, writing `ORDERS_<consumer>`.
fn market_file(dir: &Path, url: &str, consumer: &str, drain: bool) -> anyhow::Result<PathBuf> {
    let toml = format!(
        "name = \"market-nats\"\n\
         [source]\nkind = \"nats\"\nurl = \"{url}\"\nstream = \"MD\"\nsubjects = \"md.in.p\"\n\
         partitions = 8\nconsumer = \"{consumer}\"\ndrain = {drain}\nlease_ms = {LEASE_MS}\n\
         lease_bucket = \"leases-{consumer}\"\n\
         [[stage]]\nname = \"decode\"\ncomponent = \"builtin:decode\"\n\
         [[stage]]\nname = \"filter\"\ncomponent = \"builtin:symbol-filter\"\n\
         config = {{ symbols = [\"AAPL\", \"MSFT\", \"NVDA\", \"AMZN\", \"GOOG\", \"META\", \"TSLA\", \"JPM\"] }}\n\
         [[stage]]\nname = \"vwap\"\ncomponent = \"builtin:vwap\"\nconfig = {{ window = 32 }}\n\
         [[stage]]\nname = \"strategy\"\ncomponent = \"builtin:strategy\"\n\
         [sink]\nkind = \"nats\"\nurl = \"{url}\"\nsubject = \"{consumer}.orders\"\n\
         stream = \"ORDERS_{consumer}\"\ncredits = 256\n"
    );
    let path = dir.join(format!("market-{consumer}.toml"));
    std::fs::write(&path, toml)?;
    Ok(path)
}

/// Runs the measurements, or `None` when no nats-server is installed (`scripts/lang-tools`).
pub fn measure(
    engine: &Engine,
    ticks: &Ticks,
    orders: u64,
    quick: bool,
) -> anyhow::Result<Option<NatsFigures>> {
    if !server_binary().is_file() {
        eprintln!(
            "nats: skipped, no nats-server at {} (scripts/lang-tools installs it)",
            server_binary().display()
        );
        return Ok(None);
    }
    let server = NatsServer::start("bench");
    let dir = std::env::temp_dir().join(format!("sluicegate-bench-nats-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let reader = Reader::connect(&server.url)?;
    publish(engine, ticks, &server.url, &dir)?;

    // One host, in this process.
    let one = market_file(&dir, &server.url, "one", true)?;
    let spec = PipelineSpec::from_file(&one)?;
    let mut pipeline = builder(engine).build(&spec, &one)?;
    let started = Instant::now();
    let report = pipeline.run();
    let one_host = ticks.len() as f64 / started.elapsed().as_secs_f64();
    ensure!(report.status == RunStatus::Ok, "{report}");
    ensure!(
        reader.count("ORDERS_one")? == orders,
        "one host: {} orders, native Rust {orders}",
        reader.count("ORDERS_one")?
    );
    eprintln!("  NATS, one host: {one_host:.0} records/s");

    // Two hosts, two child processes; each prints when its run started and ended.
    let two = market_file(&dir, &server.url, "two", true)?;
    let hosts = [spawn_host(&two)?, spawn_host(&two)?];
    let mut spans = Vec::new();
    for host in hosts {
        let output = host.wait_with_output()?;
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        ensure!(output.status.success(), "a host failed: {text}");
        let span: Vec<f64> = text
            .split_whitespace()
            .filter_map(|word| word.parse().ok())
            .collect();
        ensure!(span.len() == 2, "a host printed {text:?}");
        spans.push((span[0], span[1]));
    }
    let first = spans.iter().map(|s| s.0).fold(f64::INFINITY, f64::min);
    let last = spans.iter().map(|s| s.1).fold(0.0, f64::max);
    let two_hosts = ticks.len() as f64 / (last - first);
    ensure!(
        reader.count("ORDERS_two")? == orders,
        "two hosts: {} orders, native Rust {orders}",
        reader.count("ORDERS_two")?
    );
    eprintln!("  NATS, two hosts: {two_hosts:.0} records/s");

    let (rate, samples) = if quick { (500, 250) } else { (2_000, 10_000) };
    let mut latencies = latency(engine, &server.url, &dir, rate, samples)?;
    let latency_p50_us = crate::percentile(&mut latencies, 0.5);
    let latency_p99_us = crate::percentile(&mut latencies, 0.99);
    eprintln!("  NATS latency at {rate}/s: p50 {latency_p50_us:.0} µs, p99 {latency_p99_us:.0} µs");

    let takeover_s = takeover(&server.url, &dir, &reader)?;
    eprintln!("  NATS takeover: {takeover_s:.2} s (leases of {LEASE_MS} ms)");
    let _ = std::fs::remove_dir_all(&dir);
    Ok(Some(NatsFigures {
        records: ticks.len(),
        one_host,
        two_hosts,
        latency_p50_us,
        latency_p99_us,
        latency_samples: latencies.len(),
        latency_rate: rate,
        takeover_s,
    }))
}

/// The section of docs/benchmarks.md; `in_memory` is the single chain's records/s on the same
/// ticks read from memory.
pub fn markdown(figures: Option<&NatsFigures>, in_memory: Option<f64>) -> String {
    let mut m = String::from("### Across hosts: NATS JetStream on loopback\n\n");
    let Some(f) = figures else {
        m.push_str(
            "Not measured: no nats-server was installed (`scripts/lang-tools` installs it).\n",
        );
        return m;
    };
    m.push_str(&format!(
        "The same {} ticks published into a stream of 8 partitions (by symbol; not timed), then \
         read back by the market pipeline (`[source] kind = \"nats\"`, `drain = true`, \
         checkpoints every 10,000 records or second per partition, orders published with their \
         acknowledgements awaited), from the first host's start to the last one's end; the \
         orders in the output stream are counted against native Rust's. The server, the hosts \
         and the benchmark share this machine's cores.\n\n\
         | run | records/s | vs the single chain reading memory |\n|---|---:|---:|\n",
        f.records
    ));
    for (name, rate) in [
        ("one host process (8 partitions)", f.one_host),
        ("two host processes (4 partitions each)", f.two_hosts),
    ] {
        let versus =
            in_memory.map_or_else(|| "-".to_string(), |base| format!("{:.2}×", rate / base));
        m.push_str(&format!("| {name} | {rate:.0} | {versus} |\n"));
    }
    m.push_str(&format!(
        "\nLatency, one record at a time: {} records published at {}/s into a stream, relayed by \
         a pass-through stage to another, each timed from its publish to its arrival on the \
         output subject: p50 {:.0} µs, p99 {:.0} µs.\n\n\
         Takeover: two hosts hold the 8 partitions (leases of {} ms); one is killed with \
         SIGKILL; the other holds all 8 after {:.2} s (the bound is the lease, plus up to a third \
         of it for the survivor's next look, plus the server's expiry sweep).\n",
        f.latency_samples,
        f.latency_rate,
        f.latency_p50_us,
        f.latency_p99_us,
        LEASE_MS,
        f.takeover_s
    ));
    m
}

/// Publishes the ticks into stream `MD`, 8 partitions by symbol.
fn publish(engine: &Engine, ticks: &Ticks, url: &str, dir: &Path) -> anyhow::Result<()> {
    let toml = format!(
        "name = \"publish\"\n[source]\nkind = \"ticks\"\n\
         [sink]\nkind = \"nats\"\nurl = \"{url}\"\nsubject = \"md.in\"\n\
         key = {{ delimiter = \",\", field = 2 }}\nstream = \"MD\"\npartitions = 8\n"
    );
    let origin = dir.join("publish.toml");
    let spec = PipelineSpec::from_toml(&toml, &origin)?;
    let mut pipeline = builder(engine)
        .source_kind("ticks", crate::partitions::ticks_source(ticks))
        .build(&spec, &origin)?;
    let report = pipeline.run();
    ensure!(report.status == RunStatus::Ok, "{report}");
    ensure!(
        report.sink.records == ticks.len(),
        "published {}",
        report.sink.records
    );
    Ok(())
}

/// This benchmark as a host process running `file`.
fn spawn_host(file: &Path) -> anyhow::Result<Child> {
    Command::new(std::env::current_exe()?)
        .arg("--nats-host")
        .arg(file)
        .stdout(Stdio::piped())
        .spawn()
        .context("starting a host process")
}

/// The child's side: builds the pipeline of `file`, runs it (until it drains, or SIGINT), and
/// prints when the run started and ended (Unix seconds).
pub fn host_child(file: &Path) -> anyhow::Result<()> {
    let engine = Engine::new()?;
    let spec = PipelineSpec::from_file(file)?;
    let mut pipeline = builder(&engine).build(&spec, file)?;
    let stopper = pipeline.stopper();
    ctrlc::set_handler(move || {
        stopper.stop();
    })?;
    let start = unix_s();
    let report = pipeline.run();
    let end = unix_s();
    ensure!(report.status == RunStatus::Ok, "{report}");
    println!("{start} {end}");
    Ok(())
}

fn unix_s() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Per-record latency through NATS, sluicegate (a pass-through) and NATS again, µs: `samples`
/// records published at `rate` per second, each carrying its send time.
fn latency(
    engine: &Engine,
    url: &str,
    dir: &Path,
    rate: u64,
    samples: usize,
) -> anyhow::Result<Vec<f64>> {
    let toml = format!(
        "name = \"relay\"\n\
         [source]\nkind = \"nats\"\nurl = \"{url}\"\nstream = \"PINGS\"\nsubjects = \"ping.p\"\n\
         partitions = 1\nconsumer = \"relay\"\nlease_bucket = \"leases-relay\"\n\
         [[stage]]\nname = \"relay\"\ncomponent = \"builtin:passthrough\"\n\
         [sink]\nkind = \"nats\"\nurl = \"{url}\"\nsubject = \"pong\"\nstream = \"PONGS\"\n"
    );
    let origin = dir.join("relay.toml");
    std::fs::write(&origin, &toml)?;
    let client = Reader::connect(url)?;
    client.create_stream("PINGS", "ping.p.0.x")?;
    let spec = PipelineSpec::from_file(&origin)?;
    let mut pipeline = builder(engine).build(&spec, &origin)?;
    let stopper = pipeline.stopper();
    let relay = std::thread::spawn(move || pipeline.run());
    let latencies = client.ping(rate, samples)?;
    stopper.stop();
    let report = relay
        .join()
        .map_err(|_| anyhow::anyhow!("the relay's thread panicked"))?;
    ensure!(report.status == RunStatus::Ok, "{report}");
    Ok(latencies)
}

/// Two hosts hold the partitions of a drained stream; one is killed: seconds until the other
/// holds all 8.
fn takeover(url: &str, dir: &Path, reader: &Reader) -> anyhow::Result<f64> {
    let file = market_file(dir, url, "one", false)?;
    let mut first = spawn_host(&file)?;
    let second = spawn_host(&file)?;
    let deadline = Instant::now() + Duration::from_secs(120);
    while reader.lease_holders("leases-one")? < 2 || reader.leases("leases-one")? < 8 {
        ensure!(
            Instant::now() < deadline,
            "the hosts did not share the partitions"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    first.kill()?;
    let killed = Instant::now();
    let _ = first.wait();
    while reader.lease_holders("leases-one")? != 1 || reader.leases("leases-one")? < 8 {
        ensure!(
            Instant::now() < deadline,
            "the dead host's partitions were not taken over"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let seconds = killed.elapsed().as_secs_f64();
    // SIGINT stops the survivor, as Ctrl-C would.
    let stopped = Command::new("kill")
        .args(["-INT", &second.id().to_string()])
        .status()?;
    ensure!(stopped.success(), "kill -INT failed");
    let output = second.wait_with_output()?;
    ensure!(output.status.success(), "the surviving host failed");
    Ok(seconds)
}

/// A client of the server, for what the benchmark reads and publishes itself.
struct Reader {
    runtime: tokio::runtime::Runtime,
    client: async_nats::Client,
    js: async_nats::jetstream::Context,
}

impl Reader {
    fn connect(url: &str) -> anyhow::Result<Reader> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let (client, js) = runtime.block_on(async {
            let client = async_nats::connect(url).await?;
            let js = async_nats::jetstream::new(client.clone());
            Ok::<_, anyhow::Error>((client, js))
        })?;
        Ok(Reader {
            runtime,
            client,
            js,
        })
    }

    fn count(&self, stream: &str) -> anyhow::Result<u64> {
        self.runtime.block_on(async {
            let mut stream = self.js.get_stream(stream).await?;
            Ok(stream.info().await?.state.messages)
        })
    }

    fn create_stream(&self, name: &str, subject: &str) -> anyhow::Result<()> {
        self.runtime.block_on(async {
            self.js
                .get_or_create_stream(async_nats::jetstream::stream::Config {
                    name: name.to_string(),
                    subjects: vec![subject.to_string()],
                    ..Default::default()
                })
                .await?;
            Ok(())
        })
    }

    /// Distinct hosts holding a lease in `bucket`.
    fn lease_holders(&self, bucket: &str) -> anyhow::Result<usize> {
        Ok(self
            .lease_values(bucket)?
            .iter()
            .collect::<std::collections::BTreeSet<_>>()
            .len())
    }

    /// Partitions leased in `bucket`.
    fn leases(&self, bucket: &str) -> anyhow::Result<usize> {
        Ok(self.lease_values(bucket)?.len())
    }

    fn lease_values(&self, bucket: &str) -> anyhow::Result<Vec<String>> {
        self.runtime.block_on(async {
            let Ok(store) = self.js.get_key_value(bucket).await else {
                return Ok(Vec::new());
            };
            let mut keys = store.keys().await?;
            let mut values = Vec::new();
            while let Some(key) = keys.next().await {
                let key = key?;
                if key.contains(".partition.")
                    && let Some(value) = store.get(&key).await?
                {
                    values.push(String::from_utf8_lossy(&value).into_owned());
                }
            }
            Ok(values)
        })
    }

    /// Publishes `samples` pings at `rate` per second, each its send time in ns since this
    /// call, and returns each one's latency to `pong`, µs.
    fn ping(&self, rate: u64, samples: usize) -> anyhow::Result<Vec<f64>> {
        self.runtime.block_on(async {
            let mut pongs = self.client.subscribe("pong").await?;
            let origin = Instant::now();
            let collector = tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(samples);
                while latencies.len() < samples {
                    let Ok(Some(message)) =
                        tokio::time::timeout(Duration::from_secs(30), pongs.next()).await
                    else {
                        break;
                    };
                    let now = origin.elapsed().as_nanos() as f64;
                    if let Ok(bytes) = <[u8; 16]>::try_from(&message.payload[..]) {
                        let sent = u128::from_le_bytes(bytes) as f64;
                        latencies.push((now - sent) / 1_000.0);
                    }
                }
                latencies
            });
            // A moment for the relay to start and its consumer to exist.
            tokio::time::sleep(Duration::from_millis(500)).await;
            let gap = Duration::from_nanos(1_000_000_000 / rate.max(1));
            let mut next = Instant::now();
            for _ in 0..samples {
                next += gap;
                tokio::time::sleep_until(next.into()).await;
                let sent = origin.elapsed().as_nanos().to_le_bytes();
                self.js
                    .publish("ping.p.0.x", bytes::Bytes::copy_from_slice(&sent))
                    .await?
                    .await?;
            }
            let latencies = collector.await?;
            ensure!(
                latencies.len() == samples,
                "{} of {samples} pings came back",
                latencies.len()
            );
            Ok(latencies)
        })
    }
}
