//! A recycling front for the stage's allocator: every hop allocates two chunk buffers (the
//! chunk the host writes in through `cabi_realloc`, and the chunk the stage answers, freed by
//! the post-return), and the same sizes come back on every resume. A freed block of up to
//! [`MAX_CLASS`] bytes is kept on a short free list of its size class and handed out again,
//! instead of a round trip through `malloc`/`free` (wasi-libc's dlmalloc), which cost about a
//! quarter of a 64-byte hop's instructions.
//!
//! Bounds: [`PER_CLASS`] blocks per class, so the blocks kept are at most
//! `PER_CLASS × 2 × MAX_CLASS` bytes, and only blocks the stage had already allocated (its
//! linear memory never shrinks anyway). A small block costs up to twice its size (sizes are
//! rounded up to a power of two).
//!
//! Only on `wasm32` without the `atomics` feature: a stage instance runs one thread, so the
//! lists need no lock. Elsewhere (a stage's unit tests on the build machine) nothing is
//! installed. Turn the `recycle` feature off to bring your own `#[global_allocator]`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::UnsafeCell;

/// The smallest size class, in bytes (its log2).
const MIN_SHIFT: u32 = 4;
/// The largest size class kept, in bytes (its log2): 64 KiB.
const MAX_SHIFT: u32 = 16;
/// The largest block kept for reuse.
const MAX_CLASS: usize = 1 << MAX_SHIFT;
/// Classes from 16 B to 64 KiB.
const CLASSES: usize = (MAX_SHIFT - MIN_SHIFT + 1) as usize;
/// Freed blocks kept per class.
const PER_CLASS: usize = 4;
/// The alignment every block of a class is allocated with (and the most a kept block serves).
const CLASS_ALIGN: usize = 8;

/// The global allocator of a stage built with the SDK.
pub struct Recycle {
    lists: UnsafeCell<[FreeList; CLASSES]>,
}

#[derive(Clone, Copy)]
struct FreeList {
    len: usize,
    blocks: [*mut u8; PER_CLASS],
}

// SAFETY: installed only where a program has one thread (wasm32 without atomics), so the lists
// are never touched from two threads.
unsafe impl Sync for Recycle {}

impl Recycle {
    /// An allocator with empty lists.
    pub const fn new() -> Self {
        Recycle {
            lists: UnsafeCell::new(
                [FreeList {
                    len: 0,
                    blocks: [std::ptr::null_mut(); PER_CLASS],
                }; CLASSES],
            ),
        }
    }
}

impl Default for Recycle {
    fn default() -> Self {
        Self::new()
    }
}

/// The size class of a layout, if blocks of it are recycled.
fn class_of(layout: Layout) -> Option<usize> {
    if layout.size() > MAX_CLASS || layout.align() > CLASS_ALIGN || layout.size() == 0 {
        return None;
    }
    let shift = usize::BITS - (layout.size() - 1).leading_zeros();
    Some(shift.max(MIN_SHIFT) as usize - MIN_SHIFT as usize)
}

/// The layout every block of a class is allocated with.
fn class_layout(class: usize) -> Layout {
    // A power of two of at most 64 KiB with an alignment of 8 is always a valid layout.
    Layout::from_size_align(1 << (class + MIN_SHIFT as usize), CLASS_ALIGN)
        .unwrap_or(Layout::new::<u64>())
}

unsafe impl GlobalAlloc for Recycle {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let Some(class) = class_of(layout) else {
            // SAFETY: the caller's layout has a non-zero size (GlobalAlloc's contract).
            return unsafe { System.alloc(layout) };
        };
        // SAFETY: one thread (see `Sync`), and no reference into the lists outlives this call.
        let list = unsafe { &mut (*self.lists.get())[class] };
        if list.len > 0 {
            list.len -= 1;
            return list.blocks[list.len];
        }
        // SAFETY: a class layout has a non-zero size.
        unsafe { System.alloc(class_layout(class)) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let Some(class) = class_of(layout) else {
            // SAFETY: `ptr` came from `System.alloc(layout)` above.
            return unsafe { System.dealloc(ptr, layout) };
        };
        // SAFETY: as in `alloc`.
        let list = unsafe { &mut (*self.lists.get())[class] };
        if list.len < PER_CLASS {
            list.blocks[list.len] = ptr;
            list.len += 1;
        } else {
            // SAFETY: blocks of a class are allocated with its class layout.
            unsafe { System.dealloc(ptr, class_layout(class)) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let old = class_of(layout);
        let Ok(new_layout) = Layout::from_size_align(new_size, layout.align()) else {
            return std::ptr::null_mut();
        };
        let new = class_of(new_layout);
        match (old, new) {
            // The block already has room for the new size.
            (Some(old), Some(new)) if old == new => ptr,
            (None, None) => {
                // SAFETY: `ptr` came from `System` with `layout`; the caller checked the size.
                unsafe { System.realloc(ptr, layout, new_size) }
            }
            _ => {
                // SAFETY: the caller guarantees a non-zero `new_size` that does not overflow.
                let moved = unsafe { self.alloc(new_layout) };
                if !moved.is_null() {
                    // SAFETY: both blocks hold at least the smaller size and do not overlap.
                    unsafe {
                        std::ptr::copy_nonoverlapping(ptr, moved, layout.size().min(new_size));
                        self.dealloc(ptr, layout);
                    }
                }
                moved
            }
        }
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    reason = "a test fails loudly on a layout it got wrong"
)]
mod tests {
    use super::*;

    #[test]
    fn classes_round_up_to_a_power_of_two_and_stop_at_64_kib() {
        let class = |size, align| class_of(Layout::from_size_align(size, align).unwrap());
        assert_eq!(class(1, 1), Some(0));
        assert_eq!(class(16, 1), Some(0));
        assert_eq!(class(17, 1), Some(1));
        assert_eq!(class(68, 1), Some(3)); // a 64-byte record and its prefix: 128 B
        assert_eq!(class(MAX_CLASS, 8), Some(CLASSES - 1));
        assert_eq!(class(MAX_CLASS + 1, 1), None);
        assert_eq!(class(64, 16), None);
    }

    #[test]
    fn a_freed_block_is_handed_out_again_and_the_lists_are_bounded() {
        let heap = Recycle::new();
        let layout = Layout::from_size_align(68, 1).unwrap();
        unsafe {
            let first = heap.alloc(layout);
            heap.dealloc(first, layout);
            // Another size of the same class gets the same block back.
            let again = heap.alloc(Layout::from_size_align(100, 4).unwrap());
            assert_eq!(again, first);
            // Growing within the class keeps the block; past it, the bytes move.
            again.write(7);
            assert_eq!(
                heap.realloc(again, Layout::from_size_align(100, 4).unwrap(), 128),
                again
            );
            let moved = heap.realloc(again, Layout::from_size_align(128, 4).unwrap(), 129);
            assert_ne!(moved, again);
            assert_eq!(moved.read(), 7);
            heap.dealloc(moved, Layout::from_size_align(129, 4).unwrap());

            let blocks: Vec<_> = (0..PER_CLASS + 2).map(|_| heap.alloc(layout)).collect();
            for &block in &blocks {
                heap.dealloc(block, layout);
            }
            let lists = &*heap.lists.get();
            assert_eq!(lists[class_of(layout).unwrap()].len, PER_CLASS);
        }
    }
}
