//! A few chunk buffers kept per thread for reuse: a chunk lifted out of one stage is copied
//! into the next one's memory and dropped, once per hop; handing its buffer back here lets the
//! next hop on the thread lift into it instead of asking the allocator. Bounded: at most
//! [`KEPT`] buffers of at most [`LARGEST`] bytes each are kept per thread.

use std::cell::RefCell;

/// Buffers kept per thread.
const KEPT: usize = 8;
/// The largest buffer kept (bigger ones go back to the allocator).
const LARGEST: usize = 1 << 20;

thread_local! {
    static FREE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// An empty buffer with room for at least `len` bytes: the smallest kept one that fits, so a
/// small chunk does not take (and hold) the largest; a new one if none does.
pub(crate) fn take(len: usize) -> Vec<u8> {
    let reused = FREE
        .try_with(|free| {
            let mut free = free.try_borrow_mut().ok()?;
            let (at, _) = free
                .iter()
                .enumerate()
                .filter(|(_, b)| b.capacity() >= len)
                .min_by_key(|(_, b)| b.capacity())?;
            Some(free.swap_remove(at))
        })
        .ok()
        .flatten();
    reused.unwrap_or_else(|| Vec::with_capacity(len))
}

/// Gives `buffer` back for reuse (or to the allocator if enough are kept, or it is large).
pub(crate) fn give_back(mut buffer: Vec<u8>) {
    if buffer.capacity() == 0 || buffer.capacity() > LARGEST {
        return;
    }
    buffer.clear();
    let _ = FREE.try_with(|free| {
        if let Ok(mut free) = free.try_borrow_mut()
            && free.len() < KEPT
        {
            free.push(buffer);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_given_back_is_reused_and_the_pool_is_bounded() {
        let buffer = take(100);
        let at = buffer.as_ptr();
        give_back(buffer);
        let again = take(50);
        assert_eq!(again.as_ptr(), at, "reused");
        assert!(again.is_empty());
        for _ in 0..3 * KEPT {
            give_back(Vec::with_capacity(10));
        }
        FREE.with(|free| assert!(free.borrow().len() <= KEPT));
        give_back(Vec::with_capacity(LARGEST + 1));
        FREE.with(|free| {
            assert!(free.borrow().iter().all(|b| b.capacity() <= LARGEST));
        });
    }

    #[test]
    fn a_small_chunk_takes_the_smallest_buffer_that_fits() {
        give_back(Vec::with_capacity(100_000));
        give_back(Vec::with_capacity(10));
        give_back(Vec::with_capacity(200));
        assert!(
            (200..100_000).contains(&take(50).capacity()),
            "not the largest"
        );
        assert!(
            take(5_000).capacity() >= 100_000,
            "the large one is still there"
        );
    }
}
