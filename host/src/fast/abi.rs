//! The canonical ABI as the fast path does it by hand: every pointer, length, alignment,
//! discriminant and string a guest hands the host is checked here, against the guest's memory
//! through wasmtime's bounds-checked `Memory::data`, with the same rules and the same messages
//! as wasmtime's own lifting and lowering (so a fault reads the same on both paths). No
//! `unsafe`: a slice the guest names is taken with `get`, never indexed blindly.

use wasmtime::{AsContextMut, Memory, TypedFunc};

use crate::sandbox::StageCtx;

/// A guest's `cabi_realloc`: (old pointer, old size, alignment, new size) -> pointer.
pub(super) type Realloc = TypedFunc<(u32, u32, u32, u32), u32>;

/// The memory and allocator named by a `canon lower` or `canon lift` (its options).
pub(super) use crate::sandbox::Lowering as Options;

/// The options of the host function in slot `slot` of the calling store (the plan gave every
/// function that touches memory its options; a missing one is an error, never a panic).
pub(super) fn options(
    caller: &wasmtime::Caller<'_, StageCtx>,
    slot: usize,
) -> wasmtime::Result<Options> {
    caller
        .data()
        .lowerings
        .get(slot)
        .cloned()
        .flatten()
        .ok_or_else(|| wasmtime::format_err!("the canonical options name no memory"))
}

/// The options of slot `slot`, moved out of the calling store for the length of a hot call
/// (`pull`), so that no handle is cloned per call (a typed function's clone counts references
/// to its type); [`put_options`] moves them back. A call re-entering the same slot meanwhile
/// finds it empty and fails, as a re-entrant call must.
pub(super) fn take_options(
    caller: &mut wasmtime::Caller<'_, StageCtx>,
    slot: usize,
) -> wasmtime::Result<Options> {
    caller
        .data_mut()
        .lowerings
        .get_mut(slot)
        .and_then(Option::take)
        .ok_or_else(|| wasmtime::format_err!("the canonical options name no memory"))
}

/// Moves options taken with [`take_options`] back into their slot.
pub(super) fn put_options(
    caller: &mut wasmtime::Caller<'_, StageCtx>,
    slot: usize,
    options: Options,
) {
    if let Some(lowering) = caller.data_mut().lowerings.get_mut(slot) {
        *lowering = Some(options);
    }
}

/// Refuses a host call while the guest may not leave (inside `cabi_realloc` or a post-return
/// function), as wasmtime's trampolines do.
pub(super) fn check_may_leave(ctx: &StageCtx) -> wasmtime::Result<()> {
    if ctx.may_leave {
        Ok(())
    } else {
        Err(wasmtime::Trap::CannotLeaveComponent.into())
    }
}

/// The `size` bytes at `ptr`, which must be aligned to `align`: where the host writes a result
/// the guest asked for through a return pointer.
pub(super) fn return_area(
    memory: &[u8],
    ptr: u32,
    align: u32,
    size: usize,
) -> wasmtime::Result<usize> {
    let ptr = ptr as usize;
    if !ptr.is_multiple_of(align as usize) {
        wasmtime::bail!("pointer not aligned");
    }
    match ptr.checked_add(size) {
        Some(end) if end <= memory.len() => Ok(ptr),
        Some(_) => wasmtime::bail!("pointer out of bounds"),
        None => wasmtime::bail!("pointer size overflow"),
    }
}

/// The `size` bytes at `ptr` of a function's results stored in the guest's memory (a lifted
/// export's return pointer).
pub(super) fn results(memory: &[u8], ptr: u32, align: u32, size: usize) -> wasmtime::Result<&[u8]> {
    let at = ptr as usize;
    if !at.is_multiple_of(align as usize) {
        wasmtime::bail!("return pointer not aligned");
    }
    memory
        .get(at..)
        .and_then(|rest| rest.get(..size))
        .ok_or_else(|| wasmtime::format_err!("pointer out of bounds of memory"))
}

/// A `list<u8>` the guest passed: `len` bytes at `ptr`.
pub(super) fn list(memory: &[u8], ptr: u32, len: u32) -> wasmtime::Result<&[u8]> {
    memory
        .get(ptr as usize..)
        .and_then(|rest| rest.get(..len as usize))
        .ok_or_else(|| wasmtime::format_err!("list pointer/length out of bounds of memory"))
}

/// Checks a list of `len` elements of `size` bytes aligned to `align` at `ptr` (the elements
/// themselves are read later, each checked as it is read).
pub(super) fn list_of(
    memory: &[u8],
    ptr: u32,
    len: u32,
    size: usize,
    align: u32,
) -> wasmtime::Result<()> {
    match (len as usize)
        .checked_mul(size)
        .and_then(|bytes| (ptr as usize).checked_add(bytes))
    {
        Some(end) if end <= memory.len() => {}
        _ => wasmtime::bail!("list pointer/length out of bounds of memory"),
    }
    if !ptr.is_multiple_of(align) {
        wasmtime::bail!("list pointer is not aligned");
    }
    Ok(())
}

/// A `string` the guest passed: `len` bytes of UTF-8 at `ptr`.
pub(super) fn string(memory: &[u8], ptr: u32, len: u32) -> wasmtime::Result<&str> {
    let bytes = memory
        .get(ptr as usize..)
        .and_then(|rest| rest.get(..len as usize))
        .ok_or_else(|| wasmtime::format_err!("string pointer/length out of bounds of memory"))?;
    Ok(std::str::from_utf8(bytes)?)
}

/// Reads a little-endian `u32` at `at` of `bytes` (already bounds-checked by the caller's
/// slice; a short slice is an error, never a panic).
pub(super) fn u32_at(bytes: &[u8], at: usize) -> wasmtime::Result<u32> {
    bytes
        .get(at..at + 4)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_le_bytes)
        .ok_or_else(|| wasmtime::format_err!("pointer out of bounds of memory"))
}

/// Calls the guest's `cabi_realloc(0, 0, align, size)` for memory the host is about to fill,
/// with imports refused meanwhile, and checks what it answered.
pub(super) fn alloc(
    mut store: impl AsContextMut<Data = StageCtx>,
    options: &Options,
    align: u32,
    size: usize,
) -> wasmtime::Result<usize> {
    let at = call_realloc(&mut store, options, align, size)?;
    let memory = options.memory.data(&store);
    check_allocated(memory, at, size)?;
    Ok(at)
}

/// That `size` bytes at `at`, which the guest's realloc answered, lie in `memory`.
fn check_allocated(memory: &[u8], at: usize, size: usize) -> wasmtime::Result<()> {
    if memory.get(at..).and_then(|rest| rest.get(..size)).is_none() {
        wasmtime::bail!("realloc return: beyond end of memory");
    }
    Ok(())
}

/// [`alloc`] without the bounds check (its caller makes it, with the memory it then writes).
fn call_realloc(
    mut store: impl AsContextMut<Data = StageCtx>,
    options: &Options,
    align: u32,
    size: usize,
) -> wasmtime::Result<usize> {
    let Some(realloc) = &options.realloc else {
        wasmtime::bail!("the canonical options name no realloc function");
    };
    let size32 = u32::try_from(size)?;
    let before = std::mem::replace(&mut store.as_context_mut().data_mut().may_leave, false);
    let answer = realloc.call(&mut store, (0, 0, align, size32));
    store.as_context_mut().data_mut().may_leave = before;
    let at = answer?;
    if !at.is_multiple_of(align) {
        wasmtime::bail!("realloc return: result not aligned");
    }
    Ok(at as usize)
}

/// Copies `bytes` into the guest (a `list<u8>` or a `string` the host hands over): allocates
/// with the guest's realloc (alignment 1), copies, and returns (pointer, length).
pub(super) fn lower_bytes(
    mut store: impl AsContextMut<Data = StageCtx>,
    options: &Options,
    bytes: &[u8],
) -> wasmtime::Result<(u32, u32)> {
    let at = alloc(&mut store, options, 1, bytes.len())?;
    write(&mut store, options.memory, at, bytes)?;
    Ok((at as u32, bytes.len() as u32))
}

/// Answers `some(bytes)` through the return area at `at` (already checked): the bytes copied
/// into the guest's realloc, then the tag and the (pointer, length) pair, with one borrow of
/// the memory for the three writes.
pub(super) fn lower_some_bytes(
    mut store: impl AsContextMut<Data = StageCtx>,
    options: &Options,
    at: usize,
    bytes: &[u8],
) -> wasmtime::Result<()> {
    let list = call_realloc(&mut store, options, 1, bytes.len())?;
    let memory = options.memory.data_mut(&mut store);
    check_allocated(memory, list, bytes.len())?;
    let mut put = |offset: usize, src: &[u8]| {
        memory
            .get_mut(offset..)
            .and_then(|rest| rest.get_mut(..src.len()))
            .ok_or_else(|| wasmtime::format_err!("pointer out of bounds of memory"))
            .map(|dst| dst.copy_from_slice(src))
    };
    put(list, bytes)?;
    put(at, &[1])?;
    put(at + 4, &(list as u32).to_le_bytes())?;
    put(at + 8, &(bytes.len() as u32).to_le_bytes())
}

/// Writes `bytes` at `at` in the guest's memory (a place already checked or allocated).
pub(super) fn write(
    mut store: impl AsContextMut<Data = StageCtx>,
    memory: Memory,
    at: usize,
    bytes: &[u8],
) -> wasmtime::Result<()> {
    memory
        .data_mut(&mut store)
        .get_mut(at..)
        .and_then(|rest| rest.get_mut(..bytes.len()))
        .ok_or_else(|| wasmtime::format_err!("pointer out of bounds of memory"))?
        .copy_from_slice(bytes);
    Ok(())
}

/// Writes a (pointer, length) pair at `at`.
pub(super) fn write_pair(
    store: impl AsContextMut<Data = StageCtx>,
    memory: Memory,
    at: usize,
    (ptr, len): (u32, u32),
) -> wasmtime::Result<()> {
    let mut pair = [0u8; 8];
    pair[..4].copy_from_slice(&ptr.to_le_bytes());
    pair[4..].copy_from_slice(&len.to_le_bytes());
    write(store, memory, at, &pair)
}

/// Lowers a `list<tuple<string, string>>` (configuration, environment) into the guest, as
/// wasmtime does: the list first, then each key and value in order; returns (pointer, length).
pub(super) fn lower_pairs(
    mut store: impl AsContextMut<Data = StageCtx>,
    options: &Options,
    pairs: &[(String, String)],
) -> wasmtime::Result<(u32, u32)> {
    let size = pairs
        .len()
        .checked_mul(16)
        .ok_or_else(|| wasmtime::format_err!("size overflow copying a list"))?;
    let list = alloc(&mut store, options, 4, size)?;
    for (i, (key, value)) in pairs.iter().enumerate() {
        let key = lower_bytes(&mut store, options, key.as_bytes())?;
        write_pair(&mut store, options.memory, list + 16 * i, key)?;
        let value = lower_bytes(&mut store, options, value.as_bytes())?;
        write_pair(&mut store, options.memory, list + 16 * i + 8, value)?;
    }
    Ok((list as u32, pairs.len() as u32))
}

/// Lowers a `list<string>` into the guest; returns (pointer, length).
pub(super) fn lower_strings(
    mut store: impl AsContextMut<Data = StageCtx>,
    options: &Options,
    strings: &[String],
) -> wasmtime::Result<(u32, u32)> {
    let size = strings
        .len()
        .checked_mul(8)
        .ok_or_else(|| wasmtime::format_err!("size overflow copying a list"))?;
    let list = alloc(&mut store, options, 4, size)?;
    for (i, s) in strings.iter().enumerate() {
        let s = lower_bytes(&mut store, options, s.as_bytes())?;
        write_pair(&mut store, options.memory, list + 8 * i, s)?;
    }
    Ok((list as u32, strings.len() as u32))
}
