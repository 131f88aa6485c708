//! A recycling front for the stage's allocator: every hop allocates a chunk buffer (the chunk
//! the host writes in through `cabi_realloc`; the chunk the stage answers is written into the
//! last answered one, see `answer.rs`, unless it outgrew it), and the same sizes come back on
//! every resume. A freed block of up to
//! [`MAX_CLASS`] bytes is kept on a short free list of its size class and handed out again,
//! instead of a round trip through `malloc`/`free` (wasi-libc's dlmalloc), which cost about a
//! quarter of a 64-byte hop's instructions.
//!
//! Bounds: [`PER_CLASS`] blocks per class, so the blocks kept are at most
//! `PER_CLASS × 2 × MAX_CLASS` bytes, and only blocks the stage had already allocated (its
//! linear memory never shrinks anyway). A small block costs up to twice its size (sizes are
//! rounded up to a power of two).
//!
//! The first small blocks (up to [`ARENA_BLOCK`] bytes) come from a [`ARENA`]-byte arena in
//! the allocator's own static state, before anything is asked of `malloc`: a stage whose
//! chunks are small then never initializes dlmalloc, whose first use writes two more pages of
//! linear memory (the heap's start and the fencepost at its end), 8 KiB per live stage. Arena
//! blocks are recycled like any other; one the full free list cannot keep is simply not used
//! again (the arena is never given to `free`).
//!
//! Only on `wasm32` without the `atomics` feature: a stage instance runs one thread, so the
//! lists need no lock. Elsewhere (a stage's unit tests on the build machine) nothing is
//! installed. Turn the `recycle` feature off to bring your own `#[global_allocator]`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::{Cell, UnsafeCell};
use std::mem::MaybeUninit;

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

/// Bytes of the arena the first small blocks come from.
const ARENA: usize = 512;
/// The largest block the arena serves.
const ARENA_BLOCK: usize = 256;

/// The global allocator of a stage built with the SDK.
pub struct Recycle {
    lists: UnsafeCell<[FreeList; CLASSES]>,
    arena: Arena,
}

/// The arena: `bytes` first, so that a block at a multiple of its (power-of-two, at least
/// 16-byte) size is aligned to [`CLASS_ALIGN`]. The bytes are only ever reached through raw
/// pointers (blocks handed out are the program's), never through a reference to the array.
#[repr(C, align(16))]
struct Arena {
    bytes: UnsafeCell<[MaybeUninit<u8>; ARENA]>,
    used: Cell<usize>,
}

// Blocks are aligned only if the bytes start the arena and the arena is 16-aligned.
const _: () =
    assert!(std::mem::align_of::<Arena>() >= 16 && std::mem::offset_of!(Arena, bytes) == 0);

impl Arena {
    /// A fresh block of `size` bytes, if the arena has room and serves that size.
    fn take(&self, size: usize) -> Option<*mut u8> {
        let used = self.used.get();
        if size > ARENA_BLOCK || used + size > ARENA {
            return None;
        }
        // Blocks are handed out in any order of sizes: round up to this one's alignment.
        let at = used.next_multiple_of(size);
        if at + size > ARENA {
            return None;
        }
        self.used.set(at + size);
        Some(self.bytes.get().cast::<u8>().wrapping_add(at))
    }

    /// True if `ptr` is a block of the arena.
    fn holds(&self, ptr: *mut u8) -> bool {
        let start = self.bytes.get() as usize;
        (start..start + ARENA).contains(&(ptr as usize))
    }
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
            arena: Arena {
                bytes: UnsafeCell::new([MaybeUninit::uninit(); ARENA]),
                used: Cell::new(0),
            },
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
        if let Some(block) = self.arena.take(class_layout(class).size()) {
            return block;
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
        } else if !self.arena.holds(ptr) {
            // SAFETY: blocks of a class are allocated with its class layout.
            unsafe { System.dealloc(ptr, class_layout(class)) }
        }
        // An arena block the full list cannot keep is not used again: never handed to `free`.
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

    #[test]
    fn arena_blocks_of_every_class_in_any_order_are_aligned_and_disjoint() {
        for order in [
            [16, 256, 32, 128, 64],
            [256, 16, 64, 32, 128],
            [64, 64, 16, 256, 32],
        ] {
            let heap = Recycle::new();
            let mut blocks: Vec<(usize, usize)> = Vec::new();
            for size in order.iter().cycle().take(40) {
                let layout = Layout::from_size_align(*size, 8).unwrap();
                // SAFETY: a non-zero size.
                let block = unsafe { heap.alloc(layout) };
                if !heap.arena.holds(block) {
                    // SAFETY: from `alloc` with `layout`.
                    unsafe { heap.dealloc(block, layout) };
                    continue;
                }
                let at = block as usize;
                let start = heap.arena.bytes.get() as usize;
                assert_eq!(
                    (at - start) % size,
                    0,
                    "a {size}-byte block at a multiple of its size"
                );
                assert_eq!(at % CLASS_ALIGN, 0);
                for &(other, len) in &blocks {
                    assert!(at + size <= other || other + len <= at, "disjoint");
                }
                blocks.push((at, *size));
            }
            assert!(blocks.len() >= 2, "{order:?}");
        }
    }

    #[test]
    fn the_first_small_blocks_come_from_the_arena_aligned_and_are_never_freed_to_malloc() {
        let heap = Recycle::new();
        let small = Layout::from_size_align(20, 8).unwrap(); // class 32
        let chunk = Layout::from_size_align(68, 1).unwrap(); // class 128
        let big = Layout::from_size_align(300, 1).unwrap(); // class 512: past the arena
        unsafe {
            let a = heap.alloc(small);
            let b = heap.alloc(chunk);
            let c = heap.alloc(chunk);
            let arena = &heap.arena;
            for block in [a, b, c] {
                assert!(arena.holds(block), "from the arena");
                assert_eq!(block as usize % CLASS_ALIGN, 0, "aligned");
            }
            assert_eq!(b as usize % 128, arena.bytes.get() as usize % 128);
            let d = heap.alloc(big);
            assert!(!arena.holds(d), "a large block comes from malloc");
            heap.dealloc(d, big);
            // Filled up, the arena hands out nothing more; freed arena blocks are reused.
            let rest: Vec<_> = (0..8).map(|_| heap.alloc(chunk)).collect();
            assert!(rest.iter().any(|&r| !arena.holds(r)), "the arena runs out");
            heap.dealloc(b, chunk);
            assert_eq!(heap.alloc(chunk), b, "recycled");
            // More arena blocks freed than the list keeps: dropped, not given to `free`.
            for block in rest.into_iter().chain([b, c]) {
                heap.dealloc(block, chunk);
            }
            heap.dealloc(a, small);
        }
    }
}
