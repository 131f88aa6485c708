//! The WASI context a stage gets: deny-by-default (no files, environment, arguments, sockets
//! or name lookup; stdin closed; stdout and stderr go to the stage's log), clocks and randomness
//! virtual unless granted (`clocks.rs`), a bounded handle table. Its waits are served by
//! `waits.rs`.

use std::time::Instant;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder};

use super::clocks::{Clock, VirtualWallClock};
use crate::guest_log::LogPipe;

/// WASI resource handles one stage may hold at once.
pub(crate) const MAX_WASI_HANDLES: usize = 1024;

/// The stage's WASI context, denying everything but stdout/stderr (to its log) and clocks and
/// randomness (virtual unless `real`), and the monotonic clock that goes with it.
pub(crate) fn context(
    name: &str,
    stdout: LogPipe,
    stderr: LogPipe,
    real: bool,
) -> (WasiCtx, Clock) {
    let mut wasi = WasiCtxBuilder::new();
    wasi.stdout(stdout)
        .stderr(stderr)
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .socket_addr_check(|_, _| Box::pin(async { false }));
    let clock = if real {
        Clock::Real(Instant::now())
    } else {
        let clock = Clock::virtual_clock();
        if let Clock::Virtual(shared) = &clock {
            wasi.wall_clock(VirtualWallClock(shared.clone()));
        }
        wasi.secure_random(wasmtime_wasi::Deterministic::new(seed_bytes(name)))
            .insecure_random(wasmtime_wasi::Deterministic::new(seed_bytes(name)))
            .insecure_random_seed(0x5eed);
        clock
    };
    (wasi.build(), clock)
}

/// A resource table that holds at most [`MAX_WASI_HANDLES`] handles, so a guest cannot make
/// the host's handle table grow without bound.
pub(crate) fn handle_table() -> ResourceTable {
    let mut table = ResourceTable::new();
    table.set_max_capacity(MAX_WASI_HANDLES);
    table
}

/// Seeded "randomness" derived from the stage name: reproducible, and different per stage.
fn seed_bytes(name: &str) -> Vec<u8> {
    let mut state = 0xcbf2_9ce4_8422_2325u64;
    (0..64)
        .map(|i| {
            for b in name.bytes().chain([i]) {
                state = (state ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
            }
            (state >> 24) as u8
        })
        .collect()
}
