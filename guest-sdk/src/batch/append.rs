//! Appending a framed record to a chunk without a `memcpy` call for small records.
//!
//! A copy of a length the compiler does not know becomes a call to `memcpy`, which on wasm32
//! is the `memory.copy` instruction, which wasmtime runs as a call out of the guest into the
//! host (about fifty instructions for a 40-byte record, more than the copy). Records of up to
//! [`SMALL`] bytes are copied as two fixed-size blocks instead (the first and the last bytes
//! of the record, overlapping in the middle), which compile to a few loads and stores; larger
//! ones still go through `memcpy`, whose host side is fastest for bulk.

use std::mem::MaybeUninit;

/// The largest record copied without `memcpy`.
const SMALL: usize = 64;

/// Appends `prefix` and then `record` to `bytes`, growing it if needed.
pub(super) fn append(bytes: &mut Vec<u8>, prefix: [u8; 4], record: &[u8]) {
    let n = record.len();
    bytes.reserve(prefix.len() + n);
    if n > SMALL {
        bytes.extend_from_slice(&prefix);
        bytes.extend_from_slice(record);
        return;
    }
    let start = bytes.len();
    let spare = &mut bytes.spare_capacity_mut()[..prefix.len() + n];
    let (head, body) = spare.split_at_mut(prefix.len());
    head.write_copy_of_slice(&prefix);
    copy_small(body, record);
    // SAFETY: `reserve` made room for the prefix and the record, and both were just written
    // in full: the prefix's 4 bytes and, by `copy_small`, every byte of `body`.
    unsafe { bytes.set_len(start + prefix.len() + n) };
}

/// Copies `src` (at most [`SMALL`] bytes) into `dst` of the same length, every byte written.
fn copy_small(dst: &mut [MaybeUninit<u8>], src: &[u8]) {
    let n = src.len();
    debug_assert!(dst.len() == n && n <= SMALL);
    match n {
        0 => {}
        1..=3 => {
            // First, middle and last byte: every byte of 1, 2 or 3.
            for i in [0, n / 2, n - 1] {
                dst[i].write(src[i]);
            }
        }
        4..=7 => ends::<4>(dst, src),
        8..=15 => ends::<8>(dst, src),
        16..=31 => ends::<16>(dst, src),
        _ => ends::<32>(dst, src),
    }
}

/// Copies the first and the last `K` bytes of `src` (of `K` to `2K` bytes): all of them.
fn ends<const K: usize>(dst: &mut [MaybeUninit<u8>], src: &[u8]) {
    let n = src.len();
    let (first, last) = (block::<K>(&src[..K]), block::<K>(&src[n - K..]));
    dst[..K].write_copy_of_slice(&first);
    dst[n - K..].write_copy_of_slice(&last);
}

/// `K` bytes as an array, so that copying them is a fixed-size copy.
fn block<const K: usize>(bytes: &[u8]) -> [u8; K] {
    let mut out = [0; K];
    out.copy_from_slice(bytes);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_size_is_appended_byte_for_byte_after_its_prefix() {
        for n in 0..=SMALL + 8 {
            let record: Vec<u8> = (0..n).map(|i| (i * 7 + n) as u8).collect();
            // Room left over and none: both paths of `reserve`.
            for spare in [0, 200] {
                let mut bytes = Vec::with_capacity(spare);
                bytes.extend_from_slice(b"xy");
                append(&mut bytes, [1, 2, 3, 4], &record);
                assert_eq!(bytes[..2], *b"xy", "size {n}");
                assert_eq!(bytes[2..6], [1, 2, 3, 4], "size {n}");
                assert_eq!(bytes[6..], record[..], "size {n}");
            }
        }
    }
}
