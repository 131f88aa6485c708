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

use std::collections::BTreeMap;
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
use crate::nats::{Checkpoints, Leases, Nats, consumer_settled};
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
    /// replica, and in the components replicas are built from from now on.
    pub(crate) fn swap(
        &self,
        stage: &str,
        component: &crate::StageComponent,
        swap_one: impl Fn(&Stage) -> Result<SwapReport>,
    ) -> Result<Vec<SwapReport>> {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let (base, only) = match stage.split_once('#') {
            Some((base, n)) => (base, n.parse::<u32>().ok()),
            None => (stage, None),
        };
        if !inner
            .components
            .iter()
            .any(|(spec, _, _)| spec.name == base)
        {
            return Err(Error::SwapRefused {
                stage: stage.to_string(),
                reason: "the pipeline has no stage of that name".into(),
            });
        }
        let mut reports = Vec::new();
        for (partition, chain) in &inner.chains {
            if only.is_some_and(|n| n != *partition) {
                continue;
            }
            let target = replica_name(base, usize::try_from(*partition).unwrap_or(usize::MAX));
            for running in chain.stages.iter().filter(|s| s.name() == target) {
                reports.push(swap_one(running)?);
            }
        }
        if only.is_none()
            && let Some(loaded) = inner.components.iter_mut().find(|(s, _, _)| s.name == base)
        {
            loaded.1 = component.clone();
        }
        Ok(reports)
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
    thread: JoinHandle<(RunReport, u64)>,
    stop: Arc<AtomicBool>,
    abandoned: Arc<AtomicBool>,
}

/// This host's share of a NATS pipeline's partitions.
pub(crate) struct Fleet {
    replicas: Arc<Replicas>,
    nats: Arc<Nats>,
    settings: NatsSource,
    live: Arc<Live>,
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
        }
    }

    /// How many partitions the stream has (this host runs some of them at a time).
    pub(crate) fn partitions(&self) -> usize {
        usize::try_from(self.settings.partitions).unwrap_or(usize::MAX)
    }

    pub(crate) fn live(&self) -> Arc<Live> {
        self.live.clone()
    }

    /// A probe over the replicas running now.
    pub(crate) fn probe(&self, name: &str) -> Probe {
        Probe {
            pipeline: name.into(),
            source: None,
            key: None,
            chains: super::probe::Chains::Live(self.live.clone()),
        }
    }

    /// Holds and runs this host's share of the partitions until `stop` is set, a replica
    /// fails, or (with `drain`) every partition has read and checkpointed all its stream
    /// holds; then stops every replica at a chunk boundary, each taking its last checkpoint,
    /// releases the leases, and reports.
    pub(crate) fn run(
        &mut self,
        name: &str,
        credits: u32,
        stop: &Arc<AtomicBool>,
        swaps: &Mutex<Vec<SwapReport>>,
    ) -> RunReport {
        let started = Instant::now();
        let ttl = Duration::from_millis(self.settings.lease_ms);
        let mut leases = match Leases::join(self.nats.clone(), &self.settings.lease_bucket, ttl) {
            Ok(leases) => leases,
            Err(e) => return RunReport::failed(name, credits, &e),
        };
        tracing::info!(host = leases.host(), "joined the hosts of `{name}`");
        let mut running: BTreeMap<u32, Running> = BTreeMap::new();
        let mut finished: Vec<(u32, RunReport, u64)> = Vec::new();
        let mut failure = None;
        loop {
            self.reap(&mut running, &mut leases, &mut finished, false);
            if failure.is_none() {
                failure = finished
                    .iter()
                    .find(|(_, r, _)| r.status == RunStatus::Failed)
                    .and_then(|(_, r, _)| r.failure.clone());
            }
            if failure.is_some() || stop.load(Ordering::Relaxed) {
                break;
            }
            if let Err(e) = self.balance(&mut leases, &mut running) {
                failure = Some(FailureReport::from(&e));
                break;
            }
            if self.settings.drain && running.is_empty() && self.all_done() {
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
        self.reap(&mut running, &mut leases, &mut finished, true);
        leases.leave();
        self.combine(name, credits, started, finished, failure, stop, swaps)
    }

    /// Renews the leases (stopping the replicas of those lost), then takes free partitions up
    /// to this host's fair share, or hands back those above it.
    fn balance(&self, leases: &mut Leases, running: &mut BTreeMap<u32, Running>) -> Result<()> {
        leases.announce()?;
        for lost in leases.renew() {
            if let Some(replica) = running.get(&lost) {
                replica.abandoned.store(true, Ordering::Relaxed);
                replica.stop.store(true, Ordering::Relaxed);
            }
        }
        let partitions = self.settings.partitions;
        let hosts = u32::try_from(leases.hosts()?).unwrap_or(u32::MAX);
        let share = partitions.div_ceil(hosts.max(1));
        let kept: Vec<u32> = running
            .iter()
            .filter(|(_, r)| !r.stop.load(Ordering::Relaxed))
            .map(|(p, _)| *p)
            .collect();
        let held = u32::try_from(kept.len()).unwrap_or(u32::MAX);
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
        let mut held = held;
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
                || (self.settings.drain && self.partition_done(partition))
                || !leases.try_take(partition)
            {
                continue;
            }
            match self.start(partition) {
                Ok(replica) => {
                    running.insert(partition, replica);
                    held += 1;
                }
                Err(e) => {
                    leases.release(partition);
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Builds partition `partition`'s replica and runs it on a thread of its own. A fault of a
    /// stage whose policy is `restart` rolls the partition back to its last checkpoint: a new
    /// replica, restored from it, replays what came after (N7), up to `max_restarts` times.
    fn start(&self, partition: u32) -> Result<Running> {
        let abandoned = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let mut replica = self.replicas.build(partition, abandoned.clone())?;
        replica.stop = stop.clone();
        tracing::info!(partition, "took partition {partition}");
        let dispatch = tracing::dispatcher::get_default(|d| d.clone());
        let (replicas, thread_stop, thread_abandoned) =
            (self.replicas.clone(), stop.clone(), abandoned.clone());
        let thread = std::thread::Builder::new()
            .name(format!("sluicegate-partition-{partition}"))
            .spawn(move || {
                tracing::dispatcher::with_default(&dispatch, || {
                    let mut restarts = 0u32;
                    let mut recovered = Vec::new();
                    loop {
                        let mut report = replica.run();
                        let sum = replica.sink.unordered();
                        let rollback = report
                            .failure
                            .as_ref()
                            .and_then(|f| replicas.restart_policy(f).map(|p| (f.clone(), p)));
                        let again = match rollback {
                            Some((failure, (max, backoff)))
                                if restarts < max
                                    && !thread_stop.load(Ordering::Relaxed)
                                    && !thread_abandoned.load(Ordering::Relaxed) =>
                            {
                                tracing::warn!(
                                    partition,
                                    "{}: {}; partition {partition} rolls back to its last \
                                     checkpoint (restart {} of {max})",
                                    failure.stage,
                                    failure.message,
                                    restarts + 1
                                );
                                std::thread::sleep(backoff);
                                recovered.push(failure);
                                replicas.build(partition, thread_abandoned.clone())
                            }
                            _ => {
                                report.recovered.extend(recovered);
                                return (report, sum);
                            }
                        };
                        match again {
                            Ok(next) => {
                                restarts += 1;
                                replica = next;
                                replica.stop = thread_stop.clone();
                            }
                            Err(e) => {
                                let mut report = RunReport::failed("-", 0, &e);
                                report.recovered.extend(recovered);
                                return (report, sum);
                            }
                        }
                    }
                })
            })
            .map_err(|e| Error::Host {
                stage: "-".into(),
                message: format!("cannot start the thread of partition {partition}: {e}"),
            })?;
        Ok(Running {
            thread,
            stop,
            abandoned,
        })
    }

    /// Collects the replicas that ended (all of them if `all`), releasing their leases.
    fn reap(
        &self,
        running: &mut BTreeMap<u32, Running>,
        leases: &mut Leases,
        finished: &mut Vec<(u32, RunReport, u64)>,
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
            let (mut report, sum) = replica.thread.join().unwrap_or_else(|_| {
                let error = Error::Host {
                    stage: "-".into(),
                    message: format!("partition {partition}'s thread panicked (a host bug)"),
                };
                (RunReport::failed("-", 0, &error), 0)
            });
            self.live.unregister(partition);
            if replica.abandoned.load(Ordering::Relaxed) {
                // N5: the partition went to another host; what stopped it here is no failure.
                if let Some(failure) = report.failure.take() {
                    tracing::warn!(
                        partition,
                        "partition {partition} given up: {}",
                        failure.message
                    );
                }
                report.status = RunStatus::Ok;
            } else {
                leases.release(partition);
            }
            tracing::info!(partition, "gave partition {partition} back");
            finished.push((partition, report, sum));
        }
    }

    /// True when every partition is done (see [`Fleet::partition_done`]).
    fn all_done(&self) -> bool {
        (0..self.settings.partitions).all(|p| self.partition_done(p))
    }

    /// True when partition `partition` has read everything its stream holds, acknowledged it,
    /// and its last checkpoint was taken with its chain answering nothing more (no output
    /// still held in a stage): with `drain`, nothing is left to do for it.
    fn partition_done(&self, partition: u32) -> bool {
        let settings = &self.settings;
        consumer_settled(&self.nats, settings, partition)
            && Checkpoints::open(
                self.nats.clone(),
                &settings.checkpoint_bucket,
                &settings.consumer,
                partition,
            )
            .and_then(|mut checkpoints| checkpoints.load())
            .ok()
            .flatten()
            .is_some_and(|checkpoint| checkpoint.quiescent)
    }

    /// One report of this host's run from its replicas' runs.
    #[expect(clippy::too_many_arguments, reason = "the run's parts, named once")]
    fn combine(
        &self,
        name: &str,
        credits: u32,
        started: Instant,
        finished: Vec<(u32, RunReport, u64)>,
        failure: Option<FailureReport>,
        stop: &AtomicBool,
        swaps: &Mutex<Vec<SwapReport>>,
    ) -> RunReport {
        let elapsed_s = started.elapsed().as_secs_f64();
        let mut hops: Vec<HopReport> = Vec::new();
        let (mut records, mut chunks, mut bytes, mut sum, mut records_in) = (0, 0, 0, 0u64, 0);
        let (mut recovered, mut close_errors, mut sinks) = (Vec::new(), Vec::new(), Vec::new());
        let mut failure = failure;
        for (partition, report, unordered) in finished {
            for mut hop in report.hops {
                if hop.state.is_none() {
                    hop.name = replica_name("partition", partition as usize);
                    hop.records_in = hop.records_out;
                    records_in += hop.records_out;
                }
                hops.push(hop);
            }
            records += report.sink.records;
            chunks += report.sink.chunks;
            bytes += report.sink.bytes;
            sum = sum.wrapping_add(unordered);
            sinks.push(report.sink);
            if failure.is_none() {
                failure = report.failure;
            }
            recovered.extend(report.recovered);
            close_errors.extend(report.close_errors);
        }
        let kind = sinks.first().map(|s| s.kind).unwrap_or_default();
        let failed = failure.is_some() || !close_errors.is_empty();
        RunReport {
            pipeline: name.to_string(),
            status: if failed {
                RunStatus::Failed
            } else {
                RunStatus::Ok
            },
            elapsed_s,
            records_per_s: if elapsed_s > 0.0 {
                records_in as f64 / elapsed_s
            } else {
                0.0
            },
            credits,
            hops,
            sink: SinkReport {
                kind,
                records,
                chunks,
                bytes,
                checksum: format!("{sum:016x}"),
            },
            failure,
            close_errors,
            recovered,
            swaps: swaps.lock().map(|s| s.clone()).unwrap_or_default(),
            stopped: stop.load(Ordering::Relaxed),
            partitions: sinks,
        }
    }
}
