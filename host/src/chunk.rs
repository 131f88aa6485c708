//! Chunks: batches of records framed with a little-endian u32 length prefix (rule C1).
//!
//! A [`Chunk`] can only be made from bytes whose framing was checked, so every chunk the host
//! hands on is well framed and knows how many records it holds.

use std::fmt;

pub(crate) mod buffers;
mod lent;

pub(crate) use self::lent::{Answered, Deliver, Lent};

/// Bytes of the length prefix in front of every record.
pub const PREFIX_LEN: usize = 4;

/// A checked batch of records, as returned by `resume` and passed to `pull`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Chunk {
    bytes: Vec<u8>,
    records: u32,
}

/// Why bytes are not a well-framed chunk (rule C1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FramingError {
    /// Offset of the record whose framing is broken.
    pub offset: usize,
    /// What is wrong there.
    pub problem: String,
}

impl fmt::Display for FramingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at byte {}: {}", self.offset, self.problem)
    }
}

/// Counts the records in `bytes`, checking the framing (rule C1) and stopping early, without
/// reading on, as soon as more than `max_records` are found.
pub(crate) fn count_records(bytes: &[u8], max_records: u32) -> Result<u32, CountError> {
    let mut offset = 0usize;
    let mut records = 0u32;
    while offset < bytes.len() {
        let Some(prefix) = bytes.get(offset..offset + PREFIX_LEN) else {
            return Err(CountError::Framing(FramingError {
                offset,
                problem: format!(
                    "{} trailing byte(s), too few for a 4-byte length prefix",
                    bytes.len() - offset
                ),
            }));
        };
        let len = u32::from_le_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
        let end = offset + PREFIX_LEN;
        if len > bytes.len() - end {
            return Err(CountError::Framing(FramingError {
                offset,
                problem: format!(
                    "record announces {len} bytes but only {} remain",
                    bytes.len() - end
                ),
            }));
        }
        records += 1;
        if records > max_records {
            return Err(CountError::TooMany { max_records });
        }
        offset = end + len;
    }
    Ok(records)
}

/// Why [`count_records`] stopped.
#[derive(Debug)]
pub(crate) enum CountError {
    /// C1 broken.
    Framing(FramingError),
    /// More than `max_records` records (C2 broken when `max_records` is the credit grant).
    TooMany { max_records: u32 },
}

impl Chunk {
    /// An empty chunk: zero records, "nothing now".
    pub fn empty() -> Self {
        Self::default()
    }

    /// Checks the framing of `bytes` and wraps them.
    pub fn from_framed(bytes: Vec<u8>) -> Result<Self, FramingError> {
        match count_records(&bytes, u32::MAX) {
            Ok(records) => Ok(Chunk { bytes, records }),
            Err(CountError::Framing(e)) => Err(e),
            Err(CountError::TooMany { max_records }) => Err(FramingError {
                offset: 0,
                problem: format!("more than {max_records} records"),
            }),
        }
    }

    /// Builds a chunk from records, framing each one.
    pub fn from_records<I, R>(records: I) -> Self
    where
        I: IntoIterator<Item = R>,
        R: AsRef<[u8]>,
    {
        let mut chunk = Chunk::empty();
        for record in records {
            chunk.push(record.as_ref());
        }
        chunk
    }

    /// Appends one record.
    ///
    /// # Panics
    /// If the record is 4 GiB or larger, which its u32 length prefix cannot express.
    pub fn push(&mut self, record: &[u8]) {
        let len = u32::try_from(record.len()).expect("a record is smaller than 4 GiB");
        let framed = PREFIX_LEN + record.len();
        if self.bytes.capacity() == 0 {
            // A new chunk's first record: a buffer a chunk delivered on this thread gave back
            // (`buffers.rs`), so a host source that answers a chunk per pull allocates none.
            self.bytes = buffers::take(framed);
        } else {
            self.bytes.reserve(framed);
        }
        self.bytes.extend_from_slice(&len.to_le_bytes());
        self.bytes.extend_from_slice(record);
        self.records += 1;
    }

    /// Wraps bytes already checked by [`count_records`].
    pub(crate) fn from_checked(bytes: Vec<u8>, records: u32) -> Self {
        Chunk { bytes, records }
    }

    /// Number of records in the chunk.
    pub fn len(&self) -> u32 {
        self.records
    }

    /// True when the chunk holds no record.
    pub fn is_empty(&self) -> bool {
        self.records == 0
    }

    /// The framed bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The framed bytes, owned.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    /// Iterates over the records (without their prefixes).
    pub fn records(&self) -> Records<'_> {
        Records { rest: &self.bytes }
    }
}

impl fmt::Debug for Chunk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Chunk({} records, {} bytes)",
            self.records,
            self.bytes.len()
        )
    }
}

/// Iterator over the records of a [`Chunk`].
#[derive(Debug, Clone)]
pub struct Records<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Records<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        // The framing was checked when the chunk was made, so `get` only fails at the end.
        let prefix = self.rest.get(..PREFIX_LEN)?;
        let len = u32::from_le_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
        let record = self.rest.get(PREFIX_LEN..PREFIX_LEN + len)?;
        self.rest = &self.rest[PREFIX_LEN + len..];
        Some(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_chunk_frames_its_records_in_a_buffer_a_delivered_chunk_gave_back() {
        let delivered = Chunk::from_records(["a long enough record to need a real buffer"]);
        let at = delivered.as_bytes().as_ptr();
        Lent::Owned(delivered.into_bytes()).release();
        let mut chunk = Chunk::empty();
        chunk.push(b"tick");
        assert_eq!(
            chunk.as_bytes().as_ptr(),
            at,
            "the buffer given back is reused"
        );
        chunk.push(b"and one more record, longer than the buffer's room");
        let records: Vec<&[u8]> = chunk.records().collect();
        assert_eq!(
            records,
            [
                &b"tick"[..],
                b"and one more record, longer than the buffer's room"
            ]
        );
    }

    #[test]
    fn c1_round_trip_and_count() {
        let chunk = Chunk::from_records(["a", "", "hello"]);
        assert_eq!(chunk.len(), 3);
        let again = Chunk::from_framed(chunk.as_bytes().to_vec()).expect("well framed");
        let records: Vec<&[u8]> = again.records().collect();
        assert_eq!(records, [&b"a"[..], b"", b"hello"]);
    }

    #[test]
    fn c1_truncated_prefix_is_rejected() {
        let err = Chunk::from_framed(vec![1, 0, 0, 0, b'x', 9]).expect_err("trailing bytes");
        assert_eq!(err.offset, 5);
    }

    #[test]
    fn c1_length_past_end_is_rejected() {
        let err = Chunk::from_framed(vec![9, 0, 0, 0, b'x']).expect_err("short record");
        assert!(err.problem.contains("announces 9 bytes"), "{err}");
    }

    #[test]
    fn c2_counting_stops_past_the_limit() {
        let chunk = Chunk::from_records(["a", "b", "c"]);
        assert!(matches!(
            count_records(chunk.as_bytes(), 2),
            Err(CountError::TooMany { max_records: 2 })
        ));
        assert_eq!(count_records(chunk.as_bytes(), 3).ok(), Some(3));
    }
}
