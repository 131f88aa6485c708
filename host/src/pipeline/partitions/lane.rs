//! A replica's lane: the router's chunks for one replica, in order. Up to `memory` chunks wait in
//! memory; when those are taken, further chunks go to the lane's spill files on disk (within
//! their budget) and come back, in order, when the replica reaches them. Only when both are
//! full is a chunk refused and the router waits: a slow replica holds back only its own records
//! until its spill is full, and the memory between the router and a replica stays bounded
//! however far behind it falls. A spill file that cannot be written (a full disk, no file
//! descriptor left) makes the lane full for the moment, with a warning: nothing is lost, the
//! router waits for the replica as it would without spill files.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use super::spill::{Spill, SpillSettings};
use crate::chunk::Chunk;

/// What became of a chunk offered to a lane.
pub(crate) enum Offer {
    /// The lane holds it (in memory or on disk).
    Taken,
    /// Memory and spill are full: offer it again once the replica took some.
    Full(Chunk),
    /// The replica is gone (its chain ended): it takes nothing more.
    Gone(Chunk),
}

/// What a lane has done, for the report.
#[derive(Debug, Default)]
pub(crate) struct LaneStats {
    /// Chunks that went through the spill files.
    pub(crate) spilled_chunks: AtomicU64,
    /// The bytes waiting in the spill files now.
    pub(crate) spill_bytes: AtomicU64,
    /// The most bytes waiting in the spill files at once.
    pub(crate) peak_spill_bytes: AtomicU64,
    /// Records the lane held when its replica went away (its chain ended): never taken.
    pub(crate) abandoned_records: AtomicU64,
    /// Set once a spill file could not be written (warned about once).
    write_failed: AtomicBool,
}

struct State {
    memory: VecDeque<Chunk>,
    spill: Spill,
    /// The router will offer nothing more.
    ended: bool,
    /// The replica will take nothing more.
    gone: bool,
}

/// One replica's lane; the router holds a [`LaneSender`], the replica's input a
/// [`LaneReceiver`].
struct Lane {
    state: Mutex<State>,
    /// Signalled when a chunk arrives or the router ends.
    arrived: Condvar,
    /// Chunks the memory holds.
    capacity: usize,
    stats: Arc<LaneStats>,
}

/// The router's end of a lane; dropping it ends the replica's input once the lane is empty.
pub(crate) struct LaneSender(Arc<Lane>);

/// The replica's end of a lane; dropping it tells the router the replica takes nothing more.
pub(crate) struct LaneReceiver(Arc<Lane>);

/// A lane holding `capacity` chunks in memory and spilling as `spill` says, with its stats.
pub(crate) fn lane(
    capacity: usize,
    spill: SpillSettings,
) -> (LaneSender, LaneReceiver, Arc<LaneStats>) {
    let stats = Arc::new(LaneStats::default());
    let lane = Arc::new(Lane {
        state: Mutex::new(State {
            memory: VecDeque::with_capacity(capacity),
            spill: Spill::new(spill),
            ended: false,
            gone: false,
        }),
        arrived: Condvar::new(),
        capacity: capacity.max(1),
        stats: stats.clone(),
    });
    (LaneSender(lane.clone()), LaneReceiver(lane), stats)
}

impl Lane {
    /// The state; a thread that panicked holding it left nothing half-done that matters here.
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl LaneSender {
    /// Offers `chunk`: to memory while the memory has room and nothing waits on disk (so order
    /// holds), else to the spill.
    pub(crate) fn offer(&self, chunk: Chunk) -> Offer {
        let lane = &self.0;
        let mut state = lane.state();
        if state.gone {
            return Offer::Gone(chunk);
        }
        if state.spill.is_empty() && state.memory.len() < lane.capacity {
            state.memory.push_back(chunk);
        } else {
            match state.spill.push(&chunk) {
                Ok(true) => {
                    let waiting = state.spill.bytes();
                    lane.stats.spilled_chunks.fetch_add(1, Ordering::Relaxed);
                    lane.stats.spill_bytes.store(waiting, Ordering::Relaxed);
                    lane.stats
                        .peak_spill_bytes
                        .fetch_max(waiting, Ordering::Relaxed);
                }
                Ok(false) => return Offer::Full(chunk),
                Err(error) => {
                    if !lane.stats.write_failed.swap(true, Ordering::Relaxed) {
                        tracing::warn!(
                            "cannot write a spill file in {}: {error}; the partition holds the \
                             source back until it catches up",
                            state.spill.dir().display()
                        );
                    }
                    return Offer::Full(chunk);
                }
            }
        }
        drop(state);
        lane.arrived.notify_one();
        Offer::Taken
    }
}

impl Drop for LaneSender {
    fn drop(&mut self) {
        self.0.state().ended = true;
        self.0.arrived.notify_one();
    }
}

impl LaneReceiver {
    /// The next chunk, waiting for one; `None` once the router ended and the lane is empty.
    /// Memory first (it holds the oldest chunks: nothing goes to memory while the spill holds
    /// any), then the spill. An error is the spill file's.
    pub(crate) fn take(&self) -> std::io::Result<Option<Chunk>> {
        let lane = &self.0;
        let mut state = lane.state();
        loop {
            if let Some(chunk) = state.memory.pop_front() {
                return Ok(Some(chunk));
            }
            if let Some(chunk) = state.spill.pop()? {
                lane.stats
                    .spill_bytes
                    .store(state.spill.bytes(), Ordering::Relaxed);
                return Ok(Some(chunk));
            }
            if state.ended {
                return Ok(None);
            }
            state = lane.arrived.wait(state).unwrap_or_else(|e| e.into_inner());
        }
    }
}

impl LaneReceiver {
    /// The directory of the lane's spill files.
    pub(crate) fn spill_dir(&self) -> std::path::PathBuf {
        self.0.state().spill.dir().to_path_buf()
    }
}

impl Drop for LaneReceiver {
    /// The replica takes nothing more: what the lane holds is counted as never taken, and its
    /// memory and spill files are let go at once.
    fn drop(&mut self) {
        let lane = &self.0;
        let mut state = lane.state();
        state.gone = true;
        let in_memory: u64 = state.memory.drain(..).map(|c| u64::from(c.len())).sum();
        let records = in_memory + state.spill.discard();
        lane.stats
            .abandoned_records
            .fetch_add(records, Ordering::Relaxed);
        lane.stats.spill_bytes.store(0, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(max_bytes: u64) -> SpillSettings {
        SpillSettings {
            dir: std::env::temp_dir(),
            max_bytes,
        }
    }

    fn chunk(n: u32) -> Chunk {
        Chunk::from_records([n.to_le_bytes()])
    }

    #[test]
    fn q3_a_lane_holds_its_capacity_in_memory_spills_the_rest_and_keeps_order() {
        let (sender, receiver, stats) = lane(2, settings(u64::MAX));
        for n in 0..1000 {
            assert!(matches!(sender.offer(chunk(n)), Offer::Taken));
            assert!(sender.0.state().memory.len() <= 2, "memory holds at most 2");
        }
        assert_eq!(stats.spilled_chunks.load(Ordering::Relaxed), 998);
        assert!(stats.peak_spill_bytes.load(Ordering::Relaxed) > 0);
        // Interleaved: what comes after the spill goes after it, not into memory first.
        for n in 0..1000 {
            assert_eq!(receiver.take().expect("take"), Some(chunk(n)), "chunk {n}");
            assert!(matches!(sender.offer(chunk(1000 + n)), Offer::Taken));
        }
        drop(sender);
        for n in 1000..2000 {
            assert_eq!(receiver.take().expect("take"), Some(chunk(n)), "chunk {n}");
        }
        assert_eq!(receiver.take().expect("end"), None, "the router ended");
    }

    #[test]
    fn q3_a_lane_without_spill_is_full_at_its_capacity_and_a_gone_replica_takes_nothing() {
        let (sender, receiver, stats) = lane(2, settings(0));
        assert!(matches!(sender.offer(chunk(0)), Offer::Taken));
        assert!(matches!(sender.offer(chunk(1)), Offer::Taken));
        assert!(matches!(sender.offer(chunk(2)), Offer::Full(c) if c == chunk(2)));
        assert_eq!(stats.spilled_chunks.load(Ordering::Relaxed), 0);
        assert_eq!(receiver.take().expect("take"), Some(chunk(0)));
        assert!(matches!(sender.offer(chunk(2)), Offer::Taken));
        drop(receiver);
        assert!(matches!(sender.offer(chunk(3)), Offer::Gone(c) if c == chunk(3)));
        assert_eq!(
            stats.abandoned_records.load(Ordering::Relaxed),
            2,
            "the two chunks it held were never taken"
        );
    }

    #[test]
    fn q3_a_lane_with_a_small_spill_is_full_when_both_are_and_loses_nothing_across_threads() {
        // Room for 2 chunks in memory and about 40 on disk: the router meets a full lane again
        // and again while the replica reads, slowly, from memory and disk.
        let record_bytes = 8 + 4 + 4;
        let (sender, receiver, stats) = lane(2, settings(40 * record_bytes));
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            while let Some(chunk) = receiver.take().expect("take") {
                got.push(chunk);
                if got.len() % 7 == 0 {
                    std::thread::sleep(std::time::Duration::from_micros(200));
                }
            }
            got
        });
        let (mut n, mut full) = (0, 0);
        while n < 2000 {
            match sender.offer(chunk(n)) {
                Offer::Taken => n += 1,
                Offer::Full(_) => {
                    full += 1;
                    std::thread::yield_now();
                }
                Offer::Gone(_) => panic!("the replica is there"),
            }
        }
        drop(sender);
        let got = reader.join().expect("replica");
        assert_eq!(
            got,
            (0..2000).map(chunk).collect::<Vec<_>>(),
            "in order, all"
        );
        assert!(full > 0, "the lane was full at times");
        assert!(
            stats.spilled_chunks.load(Ordering::Relaxed) > 0,
            "it spilled"
        );
        assert!(stats.peak_spill_bytes.load(Ordering::Relaxed) <= 40 * record_bytes);
    }

    #[test]
    fn a_waiting_replica_gets_the_next_chunk_or_the_end() {
        let (sender, receiver, _) = lane(1, settings(0));
        let waiter = std::thread::spawn(move || {
            let mut got = Vec::new();
            while let Some(chunk) = receiver.take().expect("take") {
                got.push(chunk);
            }
            got
        });
        let mut n = 0;
        while n < 50 {
            match sender.offer(chunk(n)) {
                Offer::Taken => n += 1,
                Offer::Full(_) => std::thread::yield_now(),
                Offer::Gone(_) => panic!("the replica is there"),
            }
        }
        drop(sender);
        let got = waiter.join().expect("replica");
        assert_eq!(got, (0..50).map(chunk).collect::<Vec<_>>());
    }
}
