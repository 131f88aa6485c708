//! The hosts of a pipeline that reads NATS JetStream share its partitions (docs/scale-out.md,
//! rules N5–N6). Every host runs the same file; each holds leases on a fair share of the
//! partitions, `ceil(partitions / live hosts)`, and runs one replica of the stage chain per
//! partition it holds, on a thread of its own. Several times per lease a host renews its leases,
//! counts the live hosts, takes free partitions up to its share, and hands back those above it:
//! the replica stops at a chunk boundary, takes its last checkpoint, and only then is the lease
//! released, so the next holder starts from everything it did. A host that loses a lease (it
//! could not renew it in time) stops that replica without a checkpoint: the host that took the
//! partition over owns the checkpoint now. A host that dies stops renewing, and its partitions
//! are taken over once its leases have aged out.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::build::{Loaded, Replicas};
use super::partitions::replica_name;
use super::probe::ChainProbe;
use super::{Pipeline, Probe};
use crate::config::NatsSource;
use crate::error::{Error, Result};
use crate::nats::{Checkpoints, Hold, Leases, Nats, consumer_settled};
use crate::report::{FailureReport, HopReport, RunReport, RunStatus, SinkReport};
use crate::stage::{Stage, SwapReport};

/// The replicas running on this host, and the components new ones are built from.
pub(crate) struct Live {
    inner: Mutex<LiveInner>,
}

struct LiveInner {
    components: Vec<Loaded>,
    chains: BTreeMap<u32, ChainProbe>,
}

impl Live {
    pub(crate) fn new(components: Vec<Loaded>) -> Self {
        Live {
            inner: Mutex::new(LiveInner {
                components,
                chains: BTreeMap::new(),
            }),
        }
    }

    /// Builds partition `partition`'s replica with `build` from the current components and
    /// registers it, under one lock: a swap reaches it, or it is built with the new version.
    pub(crate) fn register(
        &self,
        partition: u32,
        build: impl FnOnce(&[Loaded]) -> Result<Pipeline>,
    ) -> Result<Pipeline> {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let replica = build(&inner.components)?;
        inner.chains.insert(partition, replica.chain_probe());
        Ok(replica)
    }

    fn unregister(&self, partition: u32) {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.chains.remove(&partition);
    }

    /// Swaps stage `stage` (`name`, or `name#N` for partition N's alone) in every running
    /// replica, and in the components replicas are built from from now on; each swap is
    /// recorded in `swaps` as it is made. The replicas are swapped outside the lock (a swap
    /// waits for a chunk boundary), so partitions come and go meanwhile.
    pub(crate) fn swap(
        &self,
        stage: &str,
        component: &crate::StageComponent,
        swaps: &Mutex<Vec<SwapReport>>,
    ) -> Result<SwapReport> {
        let (base, only) = match stage.split_once('#') {
            Some((base, n)) => (base, n.parse::<u32>().ok()),
            None => (stage, None),
        };
        let targets: Vec<Stage> = {
            let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
            let Some(loaded) = inner.components.iter_mut().find(|(s, _, _)| s.name == base) else {
                return Err(Error::SwapRefused {
                    stage: stage.to_string(),
                    reason: "the pipeline has no stage of that name".into(),
                });
            };
            // Partitions taken from now on run the new version.
            if only.is_none() {
                loaded.1 = component.clone();
            }
            inner
                .chains
                .iter()
                .filter(|(partition, _)| only.is_none_or(|n| n == **partition))
                .flat_map(|(partition, chain)| {
                    let target =
                        replica_name(base, usize::try_from(*partition).unwrap_or(usize::MAX));
                    chain
                        .stages
                        .iter()
                        .filter(move |s| s.name() == target)
                        .cloned()
                        .collect::<Vec<_>>()
                })
                .collect()
        };
        let (mut first, mut swapped, mut refused) = (None, Vec::new(), Vec::new());
        for target in &targets {
            match target.swap(component) {
                Ok(report) => {
                    if let Ok(mut swaps) = swaps.lock() {
                        swaps.push(report.clone());
                    }
                    swapped.push(target.name().to_string());
                    first.get_or_insert(report);
                }
                Err(e) => refused.push(format!("{}: {e}", target.name())),
            }
        }
        if !refused.is_empty() {
            return Err(Error::SwapRefused {
                stage: stage.to_string(),
                reason: format!(
                    "{}; the swap is PARTIAL: {} run the new version, as will the partitions \
                     this host takes from now on (swap again to finish)",
                    refused.join("; "),
                    if swapped.is_empty() {
                        "no running partition".to_string()
                    } else {
                        swapped.join(", ")
                    }
                ),
            });
        }
        first.ok_or_else(|| Error::SwapRefused {
            stage: stage.to_string(),
            reason: "no partition runs on this host now; the partitions it takes from now on \
                     run the new version"
                .into(),
        })
    }

    /// The chains of the partitions running now, each with its partition's number.
    pub(super) fn chains(&self) -> Vec<(usize, ChainProbe)> {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner
            .chains
            .iter()
            .map(|(p, chain)| (usize::try_from(*p).unwrap_or(usize::MAX), chain.clone()))
            .collect()
    }
}

/// A replica running on its thread.
struct Running {
    thread: JoinHandle<Finished>,
    stop: Arc<AtomicBool>,
    hold: Arc<Hold>,
}

/// What a replica's thread hands back: its last run's report, the checksum of what it
/// published, and whether its partition is done for good (its chain ended).
struct Finished {
    report: RunReport,
    sum: u64,
    ended: bool,
}

/// The run of this host so far, summed as replicas end (bounded by the partition count, however
/// often partitions come and go).
#[derive(Default)]
struct Summary {
    /// Each partition's last run's hops and sink.
    last: BTreeMap<u32, RunReport>,
    /// Sink totals of every run of every partition.
    records: u64,
    chunks: u64,
    bytes: u64,
    sum: u64,
    /// The first failure, and the faults recovered from (the first [`KEPT_FAULTS`]).
    failure: Option<FailureReport>,
    recovered: Vec<FailureReport>,
    close_errors: Vec<FailureReport>,
}

/// Recovered faults and close errors a host's report keeps.
const KEPT_FAULTS: usize = 256;

impl Summary {
    fn add(&mut self, partition: u32, finished: Finished) {
        let Finished {
            mut report, sum, ..
        } = finished;
        self.records += report.sink.records;
        self.chunks += report.sink.chunks;
        self.bytes += report.sink.bytes;
        self.sum = self.sum.wrapping_add(sum);
        if self.failure.is_none() {
            self.failure = report.failure.take();
        }
        let room = KEPT_FAULTS.saturating_sub(self.recovered.len());
        self.recovered
            .extend(std::mem::take(&mut report.recovered).into_iter().take(room));
        let room = KEPT_FAULTS.saturating_sub(self.close_errors.len());
        self.close_errors.extend(
            std::mem::take(&mut report.close_errors)
                .into_iter()
                .take(room),
        );
        self.last.insert(partition, report);
    }
}

/// This host's share of a NATS pipeline's partitions.
pub(crate) struct Fleet {
    replicas: Arc<Replicas>,
    nats: Arc<Nats>,
    settings: NatsSource,
    live: Arc<Live>,
    /// Partitions whose chain ended: done for good, never taken again.
    ended: BTreeSet<u32>,
}

impl Fleet {
    pub(crate) fn new(
        replicas: Arc<Replicas>,
        nats: Arc<Nats>,
        settings: NatsSource,
        live: Arc<Live>,
    ) -> Self {
        Fleet {
            replicas,
            nats,
            settings,
            live,
            ended: BTreeSet::new(),
        }
    }

    /// How many partitions the stream has (this host runs some of them at a time).
    pub(crate) fn partitions(&self) -> usize {
        usize::try_from(self.settings.partitions).unwrap_or(usize::MAX)
    }

    pub(crate) fn live(&self) -> Arc<Live> {
        self.live.clone()
    }

    /// A probe over the replicas running when it is read.
    pub(crate) fn probe(&self, name: &str) -> Probe {
        Probe {
            pipeline: name.into(),
            source: None,
            key: None,
            lanes: Vec::new(),
            chains: super::probe::Chains::Live(self.live.clone()),
        }
    }

    /// Holds and runs this host's share of the partitions until `stop` is set, a replica
    /// fails, or (with `drain`) every partition is done; then stops every replica at a chunk
    /// boundary, each taking its last checkpoint, releases the leases, and reports.
    pub(crate) fn run(
        &mut self,
        name: &str,
        credits: u32,
        stop: &Arc<AtomicBool>,
        swaps: &Mutex<Vec<SwapReport>>,
    ) -> RunReport {
        let started = Instant::now();
        let ttl = Duration::from_millis(self.settings.lease_ms);
        let mut leases = match Leases::join(
            self.nats.clone(),
            &self.settings.lease_bucket,
            &self.settings.consumer,
            ttl,
        ) {
            Ok(leases) => leases,
            Err(e) => return RunReport::failed(name, credits, &e),
        };
        tracing::info!(host = leases.host(), "joined the hosts of `{name}`");
        let mut running: BTreeMap<u32, Running> = BTreeMap::new();
        let mut summary = Summary::default();
        loop {
            self.reap(&mut running, &mut leases, &mut summary, false);
            if summary.failure.is_some() || stop.load(Ordering::Relaxed) {
                break;
            }
            if let Err(e) = self.balance(&mut leases, &mut running) {
                summary.failure = Some(FailureReport::from(&e));
                break;
            }
            if running.is_empty()
                && (self.ended.len() == self.partitions()
                    || (self.settings.drain && self.all_done()))
            {
                break;
            }
            // Sleep a third of a lease, waking for a stop or a replica that ended.
            let until = Instant::now() + ttl / 3;
            while Instant::now() < until
                && !stop.load(Ordering::Relaxed)
                && !running.values().any(|r| r.thread.is_finished())
            {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        for replica in running.values() {
            replica.stop.store(true, Ordering::Relaxed);
        }
        // The replicas take their last checkpoints: the leases are renewed meanwhile, so that
        // a slow stop does not let them run out first.
        let mut renewed = Instant::now();
        while !running.is_empty() {
            self.reap(&mut running, &mut leases, &mut summary, false);
            if renewed.elapsed() >= ttl / 4 {
                leases.renew();
                renewed = Instant::now();
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        leases.leave();
        combine(name, credits, started, summary, stop, swaps)
    }

    /// Renews the leases (stopping the replicas of those lost or run out), then takes free
    /// partitions up to this host's fair share, or hands back those above it.
    fn balance(&mut self, leases: &mut Leases, running: &mut BTreeMap<u32, Running>) -> Result<()> {
        let ttl = Duration::from_millis(self.settings.lease_ms);
        leases.announce()?;
        leases.renew();
        let mut renewed = Instant::now();
        for replica in running.values() {
            if !replica.hold.valid() {
                replica.hold.lose();
                replica.stop.store(true, Ordering::Relaxed);
            }
        }
        let partitions = self.settings.partitions;
        let hosts = u32::try_from(leases.hosts()?).unwrap_or(u32::MAX);
        // Partitions done for good are nobody's share.
        let open = partitions.saturating_sub(u32::try_from(self.ended.len()).unwrap_or(0));
        let share = open.div_ceil(hosts.max(1));
        let kept: Vec<u32> = running
            .iter()
            .filter(|(_, r)| !r.stop.load(Ordering::Relaxed))
            .map(|(p, _)| *p)
            .collect();
        let mut held = u32::try_from(kept.len()).unwrap_or(u32::MAX);
        if held > share {
            // Hand back the highest partitions: they stop, checkpoint, and are released
            // when their threads end.
            for partition in kept.iter().rev().take((held - share) as usize) {
                if let Some(replica) = running.get(partition) {
                    replica.stop.store(true, Ordering::Relaxed);
                }
            }
            return Ok(());
        }
        // Start looking at a place of this host's own, so hosts do not race for one partition.
        let offset = leases
            .host()
            .bytes()
            .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
        for i in 0..partitions {
            if held >= share {
                break;
            }
            let partition = offset.wrapping_add(i) % partitions;
            if running.contains_key(&partition)
                || self.ended.contains(&partition)
                || (self.settings.drain && self.partition_done(partition))
            {
                continue;
            }
            // Taking many partitions takes time: the leases held are renewed meanwhile.
            if renewed.elapsed() >= ttl / 4 {
                leases.renew();
                renewed = Instant::now();
            }
            let Some(hold) = leases.try_take(partition) else {
                continue;
            };
            match self.start(partition, hold) {
                Ok(Some(replica)) => {
                    running.insert(partition, replica);
                    held += 1;
                }
                Ok(None) => {
                    // Ended for good, or another host wrote its checkpoint meanwhile.
                    if self.partition_ended(partition) {
                        self.ended.insert(partition);
                    }
                    leases.release(partition);
                }
                Err(e) => {
                    leases.release(partition);
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Builds partition `partition`'s replica and runs it on a thread of its own (`None` if
    /// there is nothing to run). A fault of a stage whose policy is `restart` rolls the
    /// partition back to its last checkpoint: a new replica, restored from it, replays what
    /// came after (N7), up to `max_restarts` times.
    fn start(&self, partition: u32, hold: Arc<Hold>) -> Result<Option<Running>> {
        let stop = Arc::new(AtomicBool::new(false));
        let Some(mut replica) = self.replicas.build(partition, hold.clone())? else {
            return Ok(None);
        };
        replica.stop = stop.clone();
        tracing::info!(partition, "took partition {partition}");
        let dispatch = tracing::dispatcher::get_default(|d| d.clone());
        let (replicas, thread_stop, thread_hold) =
            (self.replicas.clone(), stop.clone(), hold.clone());
        let thread = std::thread::Builder::new()
            .name(format!("sluicegate-partition-{partition}"))
            .spawn(move || {
                tracing::dispatcher::with_default(&dispatch, || {
                    run_partition(partition, replica, &replicas, &thread_stop, &thread_hold)
                })
            })
            .map_err(|e| Error::Host {
                stage: "-".into(),
                message: format!("cannot start the thread of partition {partition}: {e}"),
            })?;
        Ok(Some(Running { thread, stop, hold }))
    }

    /// Collects the replicas that ended (all of them if `all`), giving their leases back.
    fn reap(
        &mut self,
        running: &mut BTreeMap<u32, Running>,
        leases: &mut Leases,
        summary: &mut Summary,
        all: bool,
    ) {
        let ended: Vec<u32> = running
            .iter()
            .filter(|(_, r)| all || r.thread.is_finished())
            .map(|(p, _)| *p)
            .collect();
        for partition in ended {
            let Some(replica) = running.remove(&partition) else {
                continue;
            };
            let mut finished = replica.thread.join().unwrap_or_else(|_| {
                let error = Error::Host {
                    stage: "-".into(),
                    message: format!("partition {partition}'s thread panicked (a host bug)"),
                };
                Finished {
                    report: RunReport::failed("-", 0, &error),
                    sum: 0,
                    ended: false,
                }
            });
            self.live.unregister(partition);
            // Given back in every case: the release is a compare-and-set, so a lease that is
            // another host's now is left alone.
            leases.release(partition);
            if replica.hold.lost() {
                // N5: the partition went to another host; what stopped it here is no failure.
                if let Some(failure) = finished.report.failure.take() {
                    tracing::warn!(
                        partition,
                        "partition {partition} given up: {}",
                        failure.message
                    );
                }
                finished.report.status = RunStatus::Ok;
            }
            if finished.ended {
                self.ended.insert(partition);
            }
            tracing::info!(partition, "gave partition {partition} back");
            summary.add(partition, finished);
        }
    }

    /// True when every partition is done (see [`Fleet::partition_done`]).
    fn all_done(&self) -> bool {
        (0..self.settings.partitions).all(|p| self.ended.contains(&p) || self.partition_done(p))
    }

    /// The partition's last checkpoint, if it can be read.
    fn checkpoint(&self, partition: u32) -> Option<crate::nats::Checkpoint> {
        let settings = &self.settings;
        Checkpoints::open(
            self.nats.clone(),
            &settings.checkpoint_bucket,
            &settings.consumer,
            partition,
        )
        .and_then(|mut checkpoints| checkpoints.load())
        .ok()
        .flatten()
    }

    /// True when partition `partition`'s chain ended: it is done for good.
    fn partition_ended(&self, partition: u32) -> bool {
        self.checkpoint(partition).is_some_and(|c| c.ended)
    }

    /// True when partition `partition` has read everything its stream holds, acknowledged it,
    /// and its last checkpoint was taken with its chain answering nothing more (no output
    /// still held in a stage), or its chain ended: with `drain`, nothing is left to do for it.
    fn partition_done(&self, partition: u32) -> bool {
        match self.checkpoint(partition) {
            Some(c) if c.ended => true,
            Some(c) => c.quiescent && consumer_settled(&self.nats, &self.settings, partition),
            None => false,
        }
    }
}

/// A partition's thread: runs its replica, rolling it back to the last checkpoint after a
/// fault of a stage whose policy is `restart` (N7), as often as its `max_restarts` allows.
fn run_partition(
    partition: u32,
    mut replica: Pipeline,
    replicas: &Replicas,
    stop: &Arc<AtomicBool>,
    hold: &Arc<Hold>,
) -> Finished {
    let mut restarts = 0u32;
    let mut recovered = Vec::new();
    loop {
        let mut report = replica.run();
        let sum = replica.sink.unordered();
        // Done for good only if the checkpoint that says so was written by this host's hold.
        let ended = report.failure.is_none() && replica.ended() && !hold.lost();
        let rollback = report
            .failure
            .as_ref()
            .and_then(|f| replicas.restart_policy(f).map(|policy| (f.clone(), policy)));
        let again = match rollback {
            Some((failure, (max, backoff)))
                if restarts < max && !stop.load(Ordering::Relaxed) && hold.valid() =>
            {
                tracing::warn!(
                    partition,
                    "{}: {}; partition {partition} rolls back to its last checkpoint \
                     (restart {} of {max})",
                    failure.stage,
                    failure.message,
                    restarts + 1
                );
                std::thread::sleep(backoff);
                recovered.push(failure);
                replicas.build(partition, hold.clone())
            }
            _ => {
                report.recovered.extend(recovered);
                return Finished { report, sum, ended };
            }
        };
        match again {
            Ok(Some(next)) => {
                restarts += 1;
                replica = next;
                replica.stop = stop.clone();
            }
            // Another host wrote the checkpoint meanwhile: it holds the partition now.
            Ok(None) => {
                hold.lose();
                report.recovered.extend(recovered);
                return Finished {
                    report,
                    sum,
                    ended: false,
                };
            }
            Err(e) => {
                let mut report = RunReport::failed("-", 0, &e);
                report.recovered.extend(recovered);
                return Finished {
                    report,
                    sum,
                    ended: false,
                };
            }
        }
    }
}

/// One report of this host's run from its replicas' runs.
fn combine(
    name: &str,
    credits: u32,
    started: Instant,
    summary: Summary,
    stop: &AtomicBool,
    swaps: &Mutex<Vec<SwapReport>>,
) -> RunReport {
    let elapsed_s = started.elapsed().as_secs_f64();
    let mut hops: Vec<HopReport> = Vec::new();
    let mut records_in = 0;
    let mut sinks = Vec::new();
    for (partition, report) in summary.last {
        for mut hop in report.hops {
            if hop.state.is_none() {
                hop.name = replica_name("partition", partition as usize);
                hop.records_in = hop.records_out;
                records_in += hop.records_out;
            }
            hops.push(hop);
        }
        sinks.push(report.sink);
    }
    let kind = sinks.first().map(|s| s.kind).unwrap_or_default();
    RunReport {
        pipeline: name.to_string(),
        status: RunStatus::of(summary.failure.is_some(), summary.close_errors.len()),
        elapsed_s,
        records_per_s: crate::report::rate(records_in, elapsed_s),
        credits,
        hops,
        sink: SinkReport {
            kind,
            records: summary.records,
            chunks: summary.chunks,
            bytes: summary.bytes,
            checksum: format!("{:016x}", summary.sum),
        },
        failure: summary.failure,
        close_errors: summary.close_errors,
        recovered: summary.recovered,
        swaps: swaps.lock().map(|s| s.clone()).unwrap_or_default(),
        stopped: stop.load(Ordering::Relaxed),
        partitions: sinks,
    }
}
