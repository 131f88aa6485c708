//! Resource handles between guest and host: the guest's handle for a host resource (its
//! table index plus one), borrowing, taking and dropping one, and writing an optional one.

use wasmtime::component::Resource;
use wasmtime_wasi::WasiView;
use wasmtime_wasi::cli::WasiCliView;
use wasmtime_wasi::p2::bindings::cli::{terminal_input, terminal_output};
use wasmtime_wasi::p2::bindings::sync::io::{poll, streams};
use wasmtime_wasi::p2::{DynInputStream, DynOutputStream, DynPollable};

use super::{C, R};
use crate::fast::abi;
use crate::fast::imports::Resource as Kind;
use crate::sandbox::StageCtx;

/// The host resource behind a handle the guest lends.
pub(super) fn borrow<T: 'static>(handle: u32) -> R<Resource<T>> {
    handle
        .checked_sub(1)
        .map(Resource::new_borrow)
        .ok_or_else(|| wasmtime::format_err!("unknown handle index {handle}"))
}

/// The host resource behind a handle the guest gives up.
fn own<T: 'static>(handle: u32) -> R<Resource<T>> {
    handle
        .checked_sub(1)
        .map(Resource::new_own)
        .ok_or_else(|| wasmtime::format_err!("unknown handle index {handle}"))
}

/// The guest's handle for a resource the host hands over.
pub(super) fn to_guest<T: 'static>(resource: Resource<T>) -> R<u32> {
    resource
        .rep()
        .checked_add(1)
        .ok_or_else(|| wasmtime::format_err!("resource table full"))
}

/// `canon resource.drop` of a WASI resource.
pub(super) fn drop_handle(ctx: &mut StageCtx, kind: Kind, handle: u32) -> R {
    match kind {
        Kind::Error => {
            let table = ctx.ctx().table;
            wasmtime_wasi_io::bindings::wasi::io::error::HostError::drop(table, own(handle)?)
        }
        Kind::Pollable => poll::HostPollable::drop(&mut ctx.waits(), own::<DynPollable>(handle)?),
        Kind::InputStream => {
            streams::HostInputStream::drop(&mut ctx.waits(), own::<DynInputStream>(handle)?)
        }
        Kind::OutputStream => {
            streams::HostOutputStream::drop(&mut ctx.waits(), own::<DynOutputStream>(handle)?)
        }
        Kind::TerminalInput => {
            let r: Resource<terminal_input::TerminalInput> = own(handle)?;
            terminal_input::HostTerminalInput::drop(&mut ctx.cli(), r)
        }
        Kind::TerminalOutput => {
            let r: Resource<terminal_output::TerminalOutput> = own(handle)?;
            terminal_output::HostTerminalOutput::drop(&mut ctx.cli(), r)
        }
    }
}

/// Writes `option<own<terminal>>` at `ret` (size 8, alignment 4).
pub(super) fn write_option_handle(c: &mut C<'_>, slot: usize, ret: u32, rep: Option<u32>) -> R {
    let o = &abi::options(c, slot)?;
    let at = abi::return_area(o.memory.data(&*c), ret, 4, 8)?;
    match rep {
        None => abi::write(&mut *c, o.memory, at, &[0]),
        Some(rep) => {
            let handle = rep
                .checked_add(1)
                .ok_or_else(|| wasmtime::format_err!("resource table full"))?;
            abi::write(&mut *c, o.memory, at, &[1])?;
            abi::write(&mut *c, o.memory, at + 4, &handle.to_le_bytes())
        }
    }
}
