//! `[partitions]`: how many replicas of the stage chain a pipeline runs, and how the router
//! reads each record's key. Records with the same key always go to the same replica, in the
//! order the source gave them; docs/scale-out.md says what is ordered and what is not.

use serde::{Deserialize, Serialize};

use super::{OnFault, StageSpec};

/// The most replicas a pipeline may ask for.
pub const MAX_PARTITIONS: u32 = 256;

/// Records the router asks the source for at a time (and so the most in one routed chunk).
pub const ROUTE_RECORDS: u32 = 1024;

/// Routed chunks a replica's queue holds before the router waits for the replica, unless
/// `[partitions] queue_chunks` says otherwise. What a partitioned pipeline holds between its
/// source and its replicas is bounded by `(replicas × (queue_chunks + 1) + 1) × ROUTE_RECORDS`
/// records: the queues, what each replica's input has left of a chunk, and the chunk in the
/// router's hand (held twice while it is split into the replicas' parts).
pub const QUEUE_CHUNKS: usize = 4;

/// The most chunks a replica's queue may be given.
pub const MAX_QUEUE_CHUNKS: usize = 1024;

/// MiB of spill files a replica's lane may hold on disk once its queue is full, unless
/// `[partitions] spill_mib` says otherwise: how far a partition may fall behind before it holds
/// the source, and so every partition, back.
pub const SPILL_MIB: u64 = 256;

/// The most `spill_mib` a partition may be given (1 TiB).
pub const MAX_SPILL_MIB: u64 = 1 << 20;

/// Where spill files go unless `spill_dir` says otherwise: `/var/tmp` where it exists (a disk
/// on most systems, where `/tmp` is often a RAM file system), else the system's temporary
/// directory.
pub fn default_spill_dir() -> std::path::PathBuf {
    let var_tmp = std::path::Path::new("/var/tmp");
    if cfg!(unix) && var_tmp.is_dir() {
        var_tmp.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

/// `[partitions]` of a pipeline file.
///
/// ```toml
/// [partitions]
/// count = 4                               # default: one per core
/// key = { delimiter = ",", field = 1 }    # the second comma-separated field
/// ```
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct PartitionsSpec {
    /// Replicas of the stage chain, each on a thread of its own; default: the cores this
    /// process may use.
    #[serde(default)]
    pub count: Option<u32>,
    /// How a record's key is read.
    pub key: KeySpec,
    /// Routed chunks (of at most `ROUTE_RECORDS` records) each replica's queue holds: how far
    /// a replica may fall behind before the router, and so every replica, waits for it.
    /// Default [`QUEUE_CHUNKS`].
    #[serde(default)]
    pub queue_chunks: Option<usize>,
    /// MiB of spill files each replica's lane may hold on disk once its queue is full, so that a
    /// slow partition holds back only itself; 0: no spill (a full queue holds the source back).
    /// Default [`SPILL_MIB`].
    #[serde(default)]
    pub spill_mib: Option<u64>,
    /// The directory of the spill files (anonymous files, removed when closed); relative to
    /// the pipeline file. Default: [`default_spill_dir`] (`/var/tmp`).
    #[serde(default)]
    pub spill_dir: Option<std::path::PathBuf>,
}

/// Where a record's key is: a field between delimiters (text records), or what a key stage of
/// the author's choosing answers for it.
///
/// ```toml
/// key = { delimiter = ",", field = 2 }
/// key = { stage = { name = "key", component = "symbol-key.wasm" } }
/// ```
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct KeySpec {
    /// The one-byte character between fields; default `,`. Only with `field`.
    #[serde(default)]
    pub delimiter: Option<String>,
    /// The key's field, counted from 0. A record with fewer fields has the empty key.
    #[serde(default)]
    pub field: Option<usize>,
    /// A key stage: a stage (any language, the same world) that answers, for every record it
    /// pulls, exactly one record, that record's key, in order (rule Q4 of docs/scale-out.md).
    /// It runs on the router's thread under its own limits; whatever format the records are
    /// in, the host never needs to read them.
    #[serde(default)]
    pub stage: Option<StageSpec>,
}

impl PartitionsSpec {
    /// `count` replicas keyed by field `field` of `delimiter`-separated records (an ASCII
    /// delimiter: the file's `delimiter` is one byte of UTF-8).
    pub fn new(count: Option<u32>, delimiter: u8, field: usize) -> Self {
        PartitionsSpec {
            count,
            queue_chunks: None,
            spill_mib: None,
            spill_dir: None,
            key: KeySpec {
                delimiter: Some(char::from(delimiter).to_string()),
                field: Some(field),
                stage: None,
            },
        }
    }

    /// The number of replicas: `count`, or the cores this process may use.
    pub fn replicas(&self) -> u32 {
        self.count.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| u32::try_from(n.get()).unwrap_or(MAX_PARTITIONS))
                .unwrap_or(1)
                .min(MAX_PARTITIONS)
        })
    }

    /// Chunks per replica queue: `queue_chunks` or [`QUEUE_CHUNKS`].
    pub fn queue_chunks(&self) -> usize {
        self.queue_chunks.unwrap_or(QUEUE_CHUNKS)
    }

    /// Bytes of spill files per replica: `spill_mib` or [`SPILL_MIB`], in bytes.
    pub fn spill_bytes(&self) -> u64 {
        self.spill_mib.unwrap_or(SPILL_MIB).min(MAX_SPILL_MIB) << 20
    }

    /// The directory of the spill files: `spill_dir` against `base` (the pipeline file's
    /// directory), or [`default_spill_dir`].
    pub(crate) fn spill_dir(&self, base: &std::path::Path) -> std::path::PathBuf {
        self.spill_dir
            .as_ref()
            .map_or_else(default_spill_dir, |dir| base.join(dir))
    }

    /// The delimiter as a byte (validated to be one).
    pub(crate) fn delimiter(&self) -> u8 {
        self.key
            .delimiter
            .as_deref()
            .and_then(|d| d.as_bytes().first().copied())
            .unwrap_or(b',')
    }

    /// What is wrong with the section, in one sentence.
    pub(crate) fn check(&self) -> Result<(), String> {
        match self.count {
            Some(0) => return Err("[partitions] count must be at least 1".into()),
            Some(n) if n > MAX_PARTITIONS => {
                return Err(format!(
                    "[partitions] count is {n}; at most {MAX_PARTITIONS} replicas are allowed"
                ));
            }
            _ => {}
        }
        if let Some(n) = self.queue_chunks
            && !(1..=MAX_QUEUE_CHUNKS).contains(&n)
        {
            return Err(format!(
                "[partitions] queue_chunks is {n}; it must be from 1 to {MAX_QUEUE_CHUNKS}"
            ));
        }
        if let Some(n) = self.spill_mib
            && n > MAX_SPILL_MIB
        {
            return Err(format!(
                "[partitions] spill_mib is {n}; it must be from 0 to {MAX_SPILL_MIB}"
            ));
        }
        match (&self.key.field, &self.key.stage) {
            (Some(_), None) | (None, Some(_)) => {}
            _ => {
                return Err(
                    "[partitions] key names either a `field` (with its `delimiter`) or a key \
                     `stage`, not both, not neither"
                        .into(),
                );
            }
        }
        match (&self.key.delimiter, &self.key.stage) {
            (Some(d), None) if d.len() != 1 => {
                return Err(format!(
                    "[partitions] key delimiter {d:?} must be exactly one byte"
                ));
            }
            (Some(_), Some(_)) => {
                return Err(
                    "[partitions] key: a `delimiter` goes with a `field`; a key stage reads its \
                     own records"
                        .into(),
                );
            }
            _ => {}
        }
        if let Some(key) = &self.key.stage
            && (key.on_fault != OnFault::Fail || key.dead_letter.is_some())
        {
            return Err(format!(
                "[partitions] key stage `{}`: on_fault must be \"fail\" and there is no \
                 dead_letter: a key it did not answer would route records wrongly",
                key.name
            ));
        }
        Ok(())
    }

    /// What is wrong with the stage names of a partitioned pipeline: `name#N` names a
    /// stage's replica and `partition#N` a partition's input, so `#` and `partition` are
    /// reserved; the key stage needs a name of its own.
    pub(crate) fn check_stages(&self, stages: &[StageSpec]) -> Result<(), String> {
        let key = self.key.stage.iter();
        for stage in stages.iter().chain(key) {
            if stage.name.contains('#') || stage.name == "partition" {
                return Err(format!(
                    "stage `{}`: in a partitioned pipeline a stage name may not contain `#` \
                     nor be `partition` (they name replicas and partitions)",
                    stage.name
                ));
            }
        }
        if let Some(key) = &self.key.stage
            && stages.iter().any(|s| s.name == key.name)
        {
            return Err(format!(
                "[partitions] key stage `{}` has the name of a [[stage]]; it needs its own",
                key.name
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_count_of_zero_or_a_long_delimiter_is_refused() {
        assert!(PartitionsSpec::new(Some(0), b',', 1).check().is_err());
        assert!(
            PartitionsSpec::new(Some(MAX_PARTITIONS + 1), b',', 1)
                .check()
                .is_err()
        );
        let mut spec = PartitionsSpec::new(Some(2), b',', 1);
        spec.key.delimiter = Some("::".into());
        assert!(spec.check().is_err());
        assert!(PartitionsSpec::new(Some(2), b'\t', 0).check().is_ok());
        let mut spec = PartitionsSpec::new(Some(2), b',', 1);
        spec.key.field = None;
        assert!(spec.check().is_err(), "neither a field nor a stage");
    }
}
