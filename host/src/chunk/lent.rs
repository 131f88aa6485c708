//! A checked chunk on its way from the stage that answered it to the one that pulled it:
//! owned by the host (a host-native source's chunk, or one lifted into a host buffer), or lent
//! straight from the answering stage's linear memory for the span of the delivery, so that the
//! fast path copies it once, from one guest's memory into the next (`Stage::resume_with`).
//! A delivery can precede a fault of the answering stage (its post-return trapping), and a
//! restart then delivers again: a receiver keeps only the last delivery.

use super::{Chunk, buffers};

/// What receives a chunk: its bytes and its number of records, once they passed every check.
pub(crate) type Deliver<'d, T> = &'d mut dyn FnMut(Lent<'_>, u32) -> T;

/// A checked answer: delivered already, straight from the guest's memory (with what it held,
/// for the counters), or lifted into a chunk for the caller to deliver.
pub(crate) enum Answered<T> {
    /// Handed to the delivery from the guest's memory.
    Delivered {
        /// What the delivery answered.
        value: T,
        /// The chunk's records.
        records: u32,
        /// The chunk's bytes, framing included.
        bytes: usize,
    },
    /// In a host buffer, not delivered yet.
    Lifted(Chunk),
}

/// A checked chunk's framed bytes, owned or lent.
pub(crate) enum Lent<'a> {
    /// In a host buffer.
    Owned(Vec<u8>),
    /// In the answering stage's memory, until the host next enters that stage (its
    /// post-return, or for an SDK stage its next call).
    Borrowed(&'a [u8]),
}

impl Lent<'_> {
    /// The framed bytes.
    pub(crate) fn bytes(&self) -> &[u8] {
        match self {
            Lent::Owned(bytes) => bytes,
            Lent::Borrowed(bytes) => bytes,
        }
    }

    /// The framed bytes in a host buffer: the owned one, or a copy (into a pooled buffer).
    pub(crate) fn into_vec(self) -> Vec<u8> {
        match self {
            Lent::Owned(bytes) => bytes,
            Lent::Borrowed(bytes) => {
                let mut owned = buffers::take(bytes.len());
                owned.extend_from_slice(bytes);
                owned
            }
        }
    }

    /// Done with the bytes: an owned buffer goes back to the pool.
    pub(crate) fn release(self) {
        if let Lent::Owned(bytes) = self {
            buffers::give_back(bytes);
        }
    }
}
