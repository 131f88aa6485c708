//! The generator's `resume` export, written here rather than by wit-bindgen, so that the chunk
//! a stage answers needs no post-return.
//!
//! wit-bindgen's export frees the answered list in a post-return function, which the host
//! calls after it has read the answer: a third entry into the guest on every hop. Here the
//! answered buffer is kept until the next `resume` instead, and handed back to the stage
//! ([`RawStage::reuse`]) to write its next chunk into, so the export has no post-return and a
//! steady stage allocates no answer buffer at all. The canonical ABI is the one wit-bindgen
//! generates for `resume: func(credits: u32) -> option<chunk>`: the answer goes through a
//! 4-aligned return area of 12 bytes (the option's tag at 0, the list's pointer at 4, its
//! length at 8), whose address the export returns. The world's type (the `component-type`
//! section) is still wit-bindgen's, `resume` skipped in its generated code only.
//!
//! Memory: a stage holds at most one answered chunk beyond the one it is writing, between
//! two calls; every call into the stage (`resume`, `close`, `snapshot`, `restore`) first hands
//! it back ([`settle`]), and the SDK's driver keeps it only up to 64 KiB.

use std::cell::{Cell, RefCell};
use std::thread::LocalKey;

use crate::stage::RawStage;

/// Bytes of the return area of `option<list<u8>>` on wasm32.
const RETURN_AREA: usize = 12;

/// The return area, aligned as the canonical ABI aligns it.
#[repr(C, align(4))]
struct ReturnArea(Cell<[u8; RETURN_AREA]>);

const _: () = assert!(
    std::mem::size_of::<ReturnArea>() == RETURN_AREA && std::mem::align_of::<ReturnArea>() == 4
);
// The pointer and length go into the return area as the `u32`s wasm32's `usize` is.
#[cfg(target_arch = "wasm32")]
const _: () = assert!(std::mem::size_of::<usize>() == 4);

thread_local! {
    /// The return area of `resume` (a wasm32 stage has one thread: a plain static there).
    static AREA: ReturnArea = const { ReturnArea(Cell::new([0; RETURN_AREA])) };
    /// The chunk the last `resume` answered, which the host reads after the call returns.
    static ANSWERED: Cell<Option<Vec<u8>>> = const { Cell::new(None) };
}

/// Hands the chunk the last `resume` answered back to the stage ([`RawStage::reuse`]): the
/// host read it when that call returned. Runs first in every call into the stage.
pub fn settle<S: RawStage>(stage: &'static LocalKey<RefCell<S>>) {
    stage.with(|stage| hand_back(&mut *stage.borrow_mut()));
}

/// [`settle`] on a stage already borrowed.
fn hand_back<S: RawStage>(stage: &mut S) {
    if let Some(previous) = ANSWERED.take() {
        stage.reuse(previous);
    }
}

/// The body of the `resume` export: hands the previous answer back to the stage, resumes it,
/// keeps the answer and returns the address of the return area describing it.
pub fn resume<S: RawStage>(stage: &'static LocalKey<RefCell<S>>, credits: u32) -> *mut u8 {
    stage.with(|stage| {
        let mut stage = stage.borrow_mut();
        hand_back(&mut *stage);
        let answer = stage.resume(credits);
        AREA.with(|area| {
            area.0.set(encode(answer.as_deref()));
            ANSWERED.set(answer);
            area.0.as_ptr().cast::<u8>()
        })
    })
}

/// The return area for `answer`: its tag, then (for `some`) its pointer and length as the
/// wasm32 `u32`s they are.
fn encode(answer: Option<&[u8]>) -> [u8; RETURN_AREA] {
    let mut area = [0; RETURN_AREA];
    if let Some(bytes) = answer {
        area[0] = 1;
        area[4..8].copy_from_slice(&(bytes.as_ptr() as usize as u32).to_le_bytes());
        // A chunk is at most the host's chunk cap, far below 4 GiB.
        area[8..12].copy_from_slice(&(bytes.len() as u32).to_le_bytes());
    }
    area
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn none_is_a_zero_tag_and_some_carries_its_length() {
        assert_eq!(encode(None), [0; RETURN_AREA]);
        let bytes = [7u8; 5];
        let area = encode(Some(&bytes));
        assert_eq!(area[0], 1);
        assert_eq!(area[8..12], 5u32.to_le_bytes());
    }
}
