//! The checksum a sink keeps of what it received, so that two runs (or a run and a reference)
//! can be compared: FNV-1a (64 bits) over every record as framed in a chunk, its 4-byte
//! little-endian length first, so record boundaries count.

/// A running checksum of a sequence of records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checksum(u64);

impl Default for Checksum {
    fn default() -> Self {
        Checksum(FNV_OFFSET)
    }
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

impl Checksum {
    /// Folds in one record.
    pub fn add(&mut self, record: &[u8]) {
        let len = u32::try_from(record.len())
            .unwrap_or(u32::MAX)
            .to_le_bytes();
        self.fold(&len);
        self.fold(record);
    }

    /// Folds in every record of a chunk: its framed bytes, as they are.
    pub(crate) fn add_framed(&mut self, framed: &[u8]) {
        self.fold(framed);
    }

    fn fold(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0 ^ u64::from(byte)).wrapping_mul(FNV_PRIME);
        }
    }

    /// The checksum so far.
    pub fn value(&self) -> u64 {
        self.0
    }
}

/// FNV-1a 64 of `bytes`, as 16 hex digits: tells component versions apart in reports (not a
/// security hash).
pub(crate) fn digest(bytes: &[u8]) -> String {
    let mut hash = Checksum::default();
    hash.fold(bytes);
    format!("{:016x}", hash.value())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk::Chunk;

    #[test]
    fn a_framed_chunk_sums_like_its_records_one_by_one() {
        let records = ["", "a", "hello"];
        let mut one_by_one = Checksum::default();
        records.iter().for_each(|r| one_by_one.add(r.as_bytes()));
        let mut framed = Checksum::default();
        framed.add_framed(Chunk::from_records(records).as_bytes());
        assert_eq!(one_by_one, framed);
        assert_ne!(one_by_one, Checksum::default());
    }

    #[test]
    fn record_boundaries_count() {
        let (mut ab, mut a_b) = (Checksum::default(), Checksum::default());
        ab.add(b"ab");
        a_b.add(b"a");
        a_b.add(b"b");
        assert_ne!(ab, a_b);
    }
}
