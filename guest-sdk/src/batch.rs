//! Records in and out: [`Input`] reads a chunk from upstream, [`Batch`] writes the chunk a
//! stage answers. Both hide the framing (a little-endian u32 length before every record).

use std::collections::VecDeque;

mod append;

/// Bytes of the length prefix in front of every record.
const PREFIX_LEN: usize = 4;

/// A chunk received from upstream.
#[derive(Debug, Clone, Default)]
pub struct Input {
    bytes: Vec<u8>,
}

impl Input {
    pub(crate) fn new(bytes: Vec<u8>) -> Self {
        Input { bytes }
    }

    /// Iterates over the records of the chunk.
    pub fn records(&self) -> Records<'_> {
        Records { rest: &self.bytes }
    }

    /// True if the chunk holds no record ("nothing now" from upstream).
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Bytes of the chunk, framing included.
    pub(crate) fn byte_len(&self) -> usize {
        self.bytes.len()
    }
}

/// Iterator over the records of an [`Input`].
#[derive(Debug, Clone)]
pub struct Records<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Records<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        // The host checked the framing before handing the chunk over.
        let prefix = self.rest.get(..PREFIX_LEN)?;
        let len = u32::from_le_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
        let record = self.rest.get(PREFIX_LEN..PREFIX_LEN + len)?;
        self.rest = &self.rest[PREFIX_LEN + len..];
        Some(record)
    }
}

/// The chunk a stage is writing for the current `resume(credits)`.
///
/// At most `credits` records go into the chunk; records pushed past that are kept, in order,
/// and delivered first on the next resume. Nothing is dropped, and the host never sees more
/// records than it asked for.
#[derive(Debug)]
pub struct Batch {
    bytes: Vec<u8>,
    records: u32,
    credits: u32,
    overflow: VecDeque<Vec<u8>>,
}

impl Batch {
    /// A batch for `resume(credits)`: the records `overflow` kept from the last resume go
    /// first; `bytes` is an empty buffer to write into (the last answered one, or a new one).
    pub(crate) fn new(credits: u32, overflow: VecDeque<Vec<u8>>, mut bytes: Vec<u8>) -> Self {
        // Nothing of an earlier chunk may lead this one.
        bytes.clear();
        if overflow.is_empty() {
            // The usual case: the (empty) queue is kept, not dropped and made anew.
            return Batch {
                bytes,
                records: 0,
                credits,
                overflow,
            };
        }
        let mut batch = Batch {
            bytes,
            records: 0,
            credits,
            overflow: VecDeque::new(),
        };
        for record in overflow {
            batch.push(&record);
        }
        batch
    }

    /// Appends a record: into this chunk while credits remain, else kept for the next resume.
    pub fn push(&mut self, record: &[u8]) {
        if self.records < self.credits {
            if self.bytes.capacity() == 0 {
                // Guess the chunk's size from its first record, so that a chunk of many
                // records is not grown (and copied) a dozen times on its way up.
                let guess = PREFIX_LEN + record.len();
                self.reserve(guess.saturating_mul(self.remaining().min(64) as usize));
            }
            let len = u32::try_from(record.len()).unwrap_or(u32::MAX);
            append::append(&mut self.bytes, len.to_le_bytes(), &record[..len as usize]);
            self.records += 1;
        } else {
            self.overflow.push_back(record.to_vec());
        }
    }

    /// Records that still fit in this chunk.
    pub fn remaining(&self) -> u32 {
        self.credits - self.records
    }

    /// True when the chunk holds as many records as credits were granted.
    pub fn is_full(&self) -> bool {
        self.records >= self.credits
    }

    /// Records in this chunk so far.
    pub fn len(&self) -> u32 {
        self.records
    }

    /// True when no record has been written to this chunk yet.
    pub fn is_empty(&self) -> bool {
        self.records == 0
    }

    /// Makes room for `bytes` more bytes (a map's input chunk is a good guess at its output).
    pub(crate) fn reserve(&mut self, bytes: usize) {
        if self.bytes.capacity() == 0 {
            // Allocated at its size at once: cheaper than growing an empty vector.
            self.bytes = Vec::with_capacity(bytes);
        } else {
            self.bytes.reserve(bytes);
        }
    }

    /// Records waiting for a later resume.
    pub fn pending(&self) -> usize {
        self.overflow.len()
    }

    pub(crate) fn finish(self) -> (Vec<u8>, VecDeque<Vec<u8>>) {
        (self.bytes, self.overflow)
    }
}
