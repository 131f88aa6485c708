//! A stream call's outcome as the guest sees it: its value, or a `stream-error`, written into
//! the guest's return area as a `result`.

use wasmtime_wasi::p2::StreamError;
use wasmtime_wasi::p2::bindings::sync::io::streams;

use super::handles::to_guest;
use super::{C, R};
use crate::fast::abi::{self, Options};
use crate::sandbox::StageCtx;

/// A stream's `stream-error`, as the guest sees it: `last-operation-failed` with the handle of
/// its error (case 0), or `closed` (case 1). A trap stays a trap.
pub(super) struct GuestStreamError {
    case: u8,
    handle: u32,
}

/// Splits a stream call's outcome into its value or the error the guest sees; a trap is an
/// `Err` of the outer result.
pub(super) fn stream_result<T>(
    ctx: &mut StageCtx,
    result: Result<T, StreamError>,
) -> R<Result<T, GuestStreamError>> {
    match result {
        Ok(value) => Ok(Ok(value)),
        Err(error) => match streams::Host::convert_stream_error(&mut ctx.waits(), error)? {
            streams::StreamError::LastOperationFailed(error) => Ok(Err(GuestStreamError {
                case: 0,
                handle: to_guest(error)?,
            })),
            streams::StreamError::Closed => Ok(Err(GuestStreamError { case: 1, handle: 0 })),
        },
    }
}

/// Writes `result<_, stream-error>` at `ret` (size 12, alignment 4).
pub(super) fn write_unit_result(
    c: &mut C<'_>,
    o: &Options,
    ret: u32,
    result: Result<(), GuestStreamError>,
) -> R {
    let at = abi::return_area(o.memory.data(&*c), ret, 4, 12)?;
    match result {
        Ok(()) => abi::write(&mut *c, o.memory, at, &[0]),
        Err(error) => write_error(c, o, at, 4, error),
    }
}

/// Writes `result<u64, stream-error>` at `ret` (size 16, alignment 8).
pub(super) fn write_u64_result(
    c: &mut C<'_>,
    o: &Options,
    ret: u32,
    result: Result<u64, GuestStreamError>,
) -> R {
    let at = abi::return_area(o.memory.data(&*c), ret, 8, 16)?;
    match result {
        Ok(value) => {
            abi::write(&mut *c, o.memory, at, &[0])?;
            abi::write(&mut *c, o.memory, at + 8, &value.to_le_bytes())
        }
        Err(error) => write_error(c, o, at, 8, error),
    }
}

/// Writes the error case of a result at `at`, its `stream-error` payload at `at + payload`.
pub(super) fn write_error(
    c: &mut C<'_>,
    o: &Options,
    at: usize,
    payload: usize,
    error: GuestStreamError,
) -> R {
    abi::write(&mut *c, o.memory, at, &[1])?;
    abi::write(&mut *c, o.memory, at + payload, &[error.case])?;
    if error.case == 0 {
        abi::write(
            &mut *c,
            o.memory,
            at + payload + 4,
            &error.handle.to_le_bytes(),
        )?;
    }
    Ok(())
}
