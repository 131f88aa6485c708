//! Spill files: the chunks a replica's lane cannot hold in memory, written to disk in order and
//! read back in order, within a byte budget. A spill is a queue of segment files, anonymous
//! temporary files (the system removes them when they are closed, even if the process dies):
//! chunks are appended to the last segment, read from the first, and a segment read to its end
//! is closed, so the disk a spill holds follows what the replica has yet to read (at most one
//! segment more than the budget, the part of the first segment already read).

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::PathBuf;

use crate::chunk::Chunk;

/// The smallest segment: a segment grows to a quarter of the budget, at least this, before the
/// next chunk opens a new one (so a lane holds a handful of files however large its budget).
const MIN_SEGMENT_BYTES: u64 = 1 << 20;

/// Bytes before each chunk in a segment: its framed length, little-endian.
const HEADER: u64 = 8;

/// Where a lane spills, and how much.
#[derive(Debug, Clone)]
pub(crate) struct SpillSettings {
    /// The directory of the segment files.
    pub(crate) dir: PathBuf,
    /// The most bytes of chunks the spill may hold unread; 0: the lane never spills.
    pub(crate) max_bytes: u64,
}

/// One segment file: written up to `written`, read up to `read`.
struct Segment {
    file: File,
    written: u64,
    read: u64,
}

/// Chunks on disk, first in first out.
pub(crate) struct Spill {
    settings: SpillSettings,
    segments: VecDeque<Segment>,
    /// Bytes written and not yet read (headers included): what the budget bounds.
    bytes: u64,
    /// Chunks written and not yet read.
    chunks: u64,
    /// Records in those chunks.
    records: u64,
}

impl Spill {
    /// An empty spill; it opens no file until a chunk is written.
    pub(crate) fn new(settings: SpillSettings) -> Self {
        Spill {
            settings,
            segments: VecDeque::new(),
            bytes: 0,
            chunks: 0,
            records: 0,
        }
    }

    /// True when no chunk waits on disk.
    pub(crate) fn is_empty(&self) -> bool {
        self.chunks == 0
    }

    /// The bytes waiting on disk (headers included).
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The records waiting on disk.
    #[cfg(test)]
    pub(crate) fn records(&self) -> u64 {
        self.records
    }

    /// The directory of the spill's files.
    pub(crate) fn dir(&self) -> &std::path::Path {
        &self.settings.dir
    }

    /// Bytes a segment grows to before a new one is opened.
    fn segment_bytes(&self) -> u64 {
        (self.settings.max_bytes / 4).max(MIN_SEGMENT_BYTES)
    }

    /// Appends `chunk`; false (and nothing counted) when it would take what waits past the
    /// budget. An error leaves the spill as it was (a partly written chunk is overwritten by
    /// the next).
    pub(crate) fn push(&mut self, chunk: &Chunk) -> io::Result<bool> {
        let body = chunk.as_bytes();
        let size = HEADER + body.len() as u64;
        if self.bytes.saturating_add(size) > self.settings.max_bytes {
            return Ok(false);
        }
        let segment_bytes = self.segment_bytes();
        let fits = self
            .segments
            .back()
            .is_some_and(|last| last.written == 0 || last.written + size <= segment_bytes);
        if !fits {
            let file = tempfile::tempfile_in(&self.settings.dir)?;
            self.segments.push_back(Segment {
                file,
                written: 0,
                read: 0,
            });
        }
        let Some(last) = self.segments.back_mut() else {
            return Ok(false);
        };
        last.file.seek(SeekFrom::Start(last.written))?;
        last.file.write_all(&(body.len() as u64).to_le_bytes())?;
        last.file.write_all(body)?;
        last.written += size;
        self.bytes += size;
        self.chunks += 1;
        self.records += u64::from(chunk.len());
        Ok(true)
    }

    /// The oldest chunk on disk, if any.
    pub(crate) fn pop(&mut self) -> io::Result<Option<Chunk>> {
        if self.chunks == 0 {
            return Ok(None);
        }
        let only = self.segments.len() == 1;
        let Some(first) = self.segments.front_mut() else {
            return Ok(None);
        };
        first.file.seek(SeekFrom::Start(first.read))?;
        let mut header = [0u8; HEADER as usize];
        first.file.read_exact(&mut header)?;
        let len = u64::from_le_bytes(header);
        let room = first
            .written
            .saturating_sub(first.read.saturating_add(HEADER));
        if len > room {
            return Err(corrupt("a chunk runs past the end of its segment"));
        }
        let mut body = vec![0u8; usize::try_from(len).map_err(|_| corrupt("a chunk too large"))?];
        first.file.read_exact(&mut body)?;
        first.read += HEADER + len;
        self.bytes = self.bytes.saturating_sub(HEADER + len);
        self.chunks -= 1;
        if first.read == first.written {
            // Read to its end: the last segment is emptied for the next chunks (best effort:
            // if the file cannot shrink, it is written over), any other closed (the system
            // frees its blocks).
            if only {
                let _ = first.file.set_len(0);
                first.written = 0;
                first.read = 0;
            } else {
                self.segments.pop_front();
            }
        }
        let chunk = Chunk::from_framed(body)
            .map_err(|e| corrupt(&format!("a chunk read back is not framed: {e}")))?;
        self.records = self.records.saturating_sub(u64::from(chunk.len()));
        Ok(Some(chunk))
    }

    /// Forgets every chunk and closes every file; answers the records that were waiting.
    pub(crate) fn discard(&mut self) -> u64 {
        let records = self.records;
        self.segments.clear();
        (self.bytes, self.chunks, self.records) = (0, 0, 0);
        records
    }
}

fn corrupt(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("spill file: {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_budget(max_bytes: u64) -> Spill {
        Spill::new(SpillSettings {
            dir: std::env::temp_dir(),
            max_bytes,
        })
    }

    #[test]
    fn chunks_come_back_in_order_and_the_files_shrink_as_they_are_read() {
        let mut spill = with_budget(64 << 20);
        let chunks: Vec<Chunk> = (0..3000u32)
            .map(|i| {
                Chunk::from_records((0..(i % 7)).map(|j| vec![j as u8; (i * 37 % 4000) as usize]))
            })
            .collect();
        for chunk in &chunks {
            assert!(spill.push(chunk).expect("write"));
        }
        assert!(spill.segments.len() > 1, "more than one segment");
        assert_eq!(
            spill.records(),
            chunks.iter().map(|c| u64::from(c.len())).sum::<u64>()
        );
        let full = spill.bytes();
        for (n, chunk) in chunks.iter().enumerate() {
            assert_eq!(
                spill.pop().expect("read").as_ref(),
                Some(chunk),
                "chunk {n}"
            );
            assert!(spill.bytes() <= full);
        }
        assert_eq!(spill.pop().expect("read"), None);
        assert!(spill.is_empty());
        assert_eq!(
            (spill.bytes(), spill.records()),
            (0, 0),
            "every byte given back"
        );
        assert_eq!(spill.segments.len(), 1, "read segments are closed");
        // Written and read in turns, it keeps one segment and reuses it.
        for chunk in &chunks[..10] {
            assert!(spill.push(chunk).expect("write"));
            assert_eq!(spill.pop().expect("read").as_ref(), Some(chunk));
        }
        assert_eq!((spill.segments.len(), spill.bytes()), (1, 0));
    }

    #[test]
    fn a_chunk_past_the_budget_is_refused_and_nothing_is_written() {
        let chunk = Chunk::from_records([vec![7u8; 100]]);
        let size = HEADER + chunk.as_bytes().len() as u64;
        let mut spill = with_budget(2 * size);
        assert!(spill.push(&chunk).expect("write"));
        assert!(spill.push(&chunk).expect("write"));
        assert!(!spill.push(&chunk).expect("no room"), "the budget is full");
        assert_eq!(spill.bytes(), 2 * size);
        assert_eq!(spill.pop().expect("read").as_ref(), Some(&chunk));
        assert!(spill.push(&chunk).expect("room again once read"));
        assert_eq!(spill.discard(), 2, "two records were waiting");
        assert!(spill.is_empty() && spill.segments.is_empty());
        assert!(
            !with_budget(0).push(&chunk).expect("no budget"),
            "0 never spills"
        );
    }
}
