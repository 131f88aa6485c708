//! Spill files: the chunks a replica's lane cannot hold in memory, written to disk in order and
//! read back in order, within a byte budget. A spill is a queue of segment files, anonymous
//! temporary files (the system removes them when they are closed, even if the process dies):
//! chunks are appended to the last segment, read from the first, and a segment read to its end
//! is closed, so the disk a spill holds follows what the replica has yet to read.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::PathBuf;

use crate::chunk::Chunk;

/// Bytes a segment grows to before the next chunk opens a new one (a chunk larger than that
/// gets a segment of its own).
const SEGMENT_BYTES: u64 = 8 << 20;

/// Bytes before each chunk in a segment: its framed length, little-endian.
const HEADER: u64 = 8;

/// Where a lane spills, and how much.
#[derive(Debug, Clone)]
pub(crate) struct SpillSettings {
    /// The directory of the segment files.
    pub(crate) dir: PathBuf,
    /// The most bytes the spill's files may hold; 0: the lane never spills.
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
    /// The bytes of every open segment file (what the spill holds on disk).
    bytes: u64,
    /// Chunks written and not yet read.
    chunks: u64,
}

impl Spill {
    /// An empty spill; it opens no file until a chunk is written.
    pub(crate) fn new(settings: SpillSettings) -> Self {
        Spill {
            settings,
            segments: VecDeque::new(),
            bytes: 0,
            chunks: 0,
        }
    }

    /// True when no chunk waits on disk.
    pub(crate) fn is_empty(&self) -> bool {
        self.chunks == 0
    }

    /// The bytes the spill's files hold now.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Appends `chunk`; false (and nothing written) when it would take the files past the
    /// budget.
    pub(crate) fn push(&mut self, chunk: &Chunk) -> io::Result<bool> {
        let body = chunk.as_bytes();
        let size = HEADER + body.len() as u64;
        if self.bytes + size > self.settings.max_bytes {
            return Ok(false);
        }
        let fits = self
            .segments
            .back()
            .is_some_and(|last| last.written == 0 || last.written + size <= SEGMENT_BYTES);
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
        if first.read + HEADER + len > first.written {
            return Err(corrupt("a chunk runs past the end of its segment"));
        }
        let mut body = vec![0u8; usize::try_from(len).map_err(|_| corrupt("a chunk too large"))?];
        first.file.read_exact(&mut body)?;
        first.read += HEADER + len;
        self.chunks -= 1;
        if first.read == first.written {
            // Read to its end: the last segment is emptied for the next chunks, any other
            // closed (the system frees its blocks).
            if only {
                first.file.set_len(0)?;
                self.bytes -= first.written;
                first.written = 0;
                first.read = 0;
            } else if let Some(done) = self.segments.pop_front() {
                self.bytes -= done.written;
            }
        }
        Chunk::from_framed(body)
            .map(Some)
            .map_err(|e| corrupt(&format!("a chunk read back is not framed: {e}")))
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
        let mut spill = with_budget(u64::MAX);
        let chunks: Vec<Chunk> = (0..3000u32)
            .map(|i| {
                Chunk::from_records((0..(i % 7)).map(|j| vec![j as u8; (i * 37 % 4000) as usize]))
            })
            .collect();
        for chunk in &chunks {
            assert!(spill.push(chunk).expect("write"));
        }
        assert!(spill.segments.len() > 1, "more than one segment");
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
        assert_eq!(spill.bytes(), 0, "every byte given back");
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
        assert!(
            !spill.push(&chunk).expect("no room"),
            "a segment's bytes count until it is read to its end"
        );
        assert_eq!(spill.pop().expect("read").as_ref(), Some(&chunk));
        assert!(spill.push(&chunk).expect("room again once read"));
        assert!(
            !with_budget(0).push(&chunk).expect("no budget"),
            "0 never spills"
        );
    }
}
