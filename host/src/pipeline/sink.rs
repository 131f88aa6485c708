//! Sinks: where records end up. Every sink counts and checksums what it receives, so runs can
//! be compared; `file` and `stdout` also write the records, `nats` publishes them.

use std::io::{BufWriter, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::checksum::Checksum;
use crate::chunk::Chunk;
use crate::config::{RecordFormat, SinkKind, SinkSpec, base_dir};
use crate::counters::Counters;
use crate::error::{Error, Result};
use crate::nats::NatsOutput;

/// Name of the sink hop in reports and errors.
pub(crate) const SINK: &str = "sink";

pub(crate) struct Sink {
    kind: SinkKind,
    format: RecordFormat,
    /// Shared by the replicas of a partitioned pipeline, each writing whole chunks.
    output: Option<Arc<Mutex<Box<dyn Write + Send>>>>,
    checksum: Checksum,
    counters: Arc<Counters>,
    /// A replica's sink: the wrapping sum of every record's own FNV-1a, which does not depend
    /// on the order the replicas' records reach the sink in (`None` for a single chain).
    unordered: Option<Arc<AtomicU64>>,
    /// A `nats` sink's publisher (each replica its own, on one connection).
    nats: Option<NatsOutput>,
}

impl Sink {
    pub(crate) fn open(spec: &SinkSpec, origin: &std::path::Path) -> Result<Sink> {
        let mut nats = None;
        let output: Option<Box<dyn Write + Send>> = match (spec.kind, &spec.path) {
            (SinkKind::Discard, _) => None,
            (SinkKind::Nats, _) => {
                let settings = spec.nats().map_err(io_error)?;
                nats = Some(NatsOutput::open(&settings)?);
                None
            }
            (SinkKind::Stdout, _) => Some(Box::new(BufWriter::new(std::io::stdout()))),
            (SinkKind::File, Some(path)) => {
                let path = base_dir(origin).join(path);
                let file = std::fs::File::create(&path)
                    .map_err(|e| io_error(format!("cannot create {}: {e}", path.display())))?;
                Some(Box::new(BufWriter::new(file)))
            }
            (SinkKind::File, None) => {
                return Err(io_error("a file sink needs a path".into()));
            }
        };
        Ok(Sink {
            kind: spec.kind,
            format: spec.format,
            output: output.map(|out| Arc::new(Mutex::new(out))),
            checksum: Checksum::default(),
            counters: Arc::new(Counters::default()),
            unordered: None,
            nats,
        })
    }

    /// A sink for one replica of a partitioned pipeline: the same output (each chunk written
    /// whole, so the records of one replica stay in its order), its own counters and checksum;
    /// a `nats` sink's publisher of its own (ids `<prefix>.<replica>.…`).
    pub(crate) fn replica(&self, replica: usize) -> Sink {
        Sink {
            kind: self.kind,
            format: self.format,
            output: self.output.clone(),
            checksum: Checksum::default(),
            counters: Arc::new(Counters::default()),
            unordered: Some(Arc::default()),
            nats: self.nats.as_ref().map(|nats| nats.replica(replica)),
        }
    }

    /// A `nats` sink: its ids (and its replicas') start with `prefix`.
    pub(crate) fn name_ids(&mut self, prefix: &str) {
        if let Some(nats) = self.nats.as_mut() {
            nats.name_ids(prefix);
        }
    }

    /// A `nats` sink: the next record is its partition's `ordinal`-th.
    pub(crate) fn count_from(&mut self, ordinal: u64) {
        if let Some(nats) = self.nats.as_mut() {
            nats.count_from(ordinal);
        }
    }

    /// A `nats` sink: how many records its partition has published.
    pub(crate) fn published(&self) -> u64 {
        self.nats.as_ref().map_or(0, NatsOutput::published)
    }

    /// A replica's order-independent checksum so far (see `unordered`).
    pub(crate) fn unordered(&self) -> u64 {
        self.unordered
            .as_ref()
            .map_or(0, |sum| sum.load(Ordering::Relaxed))
    }

    pub(crate) fn kind(&self) -> SinkKind {
        self.kind
    }

    pub(crate) fn counters(&self) -> Arc<Counters> {
        self.counters.clone()
    }

    /// The checksum of every record received so far.
    pub(crate) fn checksum(&self) -> u64 {
        self.checksum.value()
    }

    /// Accepts one chunk (already checked by the hop that delivered it).
    pub(crate) fn write(&mut self, chunk: &Chunk) -> Result<()> {
        self.counters.delivered(chunk.len(), chunk.as_bytes().len());
        self.checksum.add_framed(chunk.as_bytes());
        if let Some(sum) = &self.unordered {
            let mut total = sum.load(Ordering::Relaxed);
            for record in chunk.records() {
                let mut one = Checksum::default();
                one.add(record);
                total = total.wrapping_add(one.value());
            }
            sum.store(total, Ordering::Relaxed);
        }
        if let Some(nats) = self.nats.as_mut() {
            return nats.publish(chunk);
        }
        let Some(output) = self.output.as_ref() else {
            return Ok(());
        };
        let mut out = output
            .lock()
            .map_err(|_| io_error("a replica panicked while writing records".into()))?;
        let written = match self.format {
            RecordFormat::Framed => out.write_all(chunk.as_bytes()),
            RecordFormat::Lines => chunk.records().try_for_each(|record| {
                out.write_all(record)?;
                out.write_all(b"\n")
            }),
        };
        // stdout is read by people and pipes as records arrive: flush every chunk.
        let flushed = written.and_then(|()| match self.kind {
            SinkKind::Stdout => out.flush(),
            _ => Ok(()),
        });
        flushed.map_err(|e| io_error(format!("writing records: {e}")))
    }

    /// Writes out what is buffered; a `nats` sink waits for every publish's acknowledgement.
    pub(crate) fn flush(&mut self) -> Result<()> {
        if let Some(nats) = self.nats.as_mut() {
            return nats.flush();
        }
        match self.output.as_ref() {
            Some(output) => output
                .lock()
                .map_err(|_| io_error("a replica panicked while writing records".into()))?
                .flush()
                .map_err(|e| io_error(format!("flushing records: {e}"))),
            None => Ok(()),
        }
    }
}

fn io_error(message: String) -> Error {
    Error::Io {
        stage: SINK.into(),
        message,
    }
}
