//! What the fast path serves a core module: every function it may import, by the component
//! import it lowers (interface and name), with its core signature and what its canonical
//! options must name. A component importing anything not listed here runs on the component
//! path. The functions themselves are in `stage_calls.rs` (the stage contract) and `wasi.rs`;
//! `instance.rs` makes them.

use wasmtime::{FuncType, ValType};

/// A WASI resource a stage may hold a handle to on the fast path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Resource {
    Error,
    Pollable,
    InputStream,
    OutputStream,
    TerminalInput,
    TerminalOutput,
}

impl Resource {
    /// The resource `name` of interface `interface` (version already split off).
    fn find(interface: &str, name: &str) -> Option<Self> {
        Some(match (interface, name) {
            ("wasi:io/error", "error") => Resource::Error,
            ("wasi:io/poll", "pollable") => Resource::Pollable,
            ("wasi:io/streams", "input-stream") => Resource::InputStream,
            ("wasi:io/streams", "output-stream") => Resource::OutputStream,
            ("wasi:cli/terminal-input", "terminal-input") => Resource::TerminalInput,
            ("wasi:cli/terminal-output", "terminal-output") => Resource::TerminalOutput,
            _ => return None,
        })
    }
}

/// A function the fast path serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum HostImport {
    /// `sluicegate:stage/upstream.pull`.
    Pull,
    /// `sluicegate:stage/host.log`.
    Log,
    /// `sluicegate:stage/host.config`.
    Config,
    /// `canon resource.drop` of a WASI resource.
    Drop(Resource),
    PollableReady,
    PollableBlock,
    Poll,
    InputRead {
        blocking: bool,
    },
    InputSkip {
        blocking: bool,
    },
    InputSubscribe,
    OutputCheckWrite,
    OutputWrite {
        blocking: bool,
    },
    OutputWriteZeroes {
        blocking: bool,
    },
    OutputFlush {
        blocking: bool,
    },
    OutputSubscribe,
    GetEnvironment,
    GetArguments,
    InitialCwd,
    Exit,
    GetStdin,
    GetStdout,
    GetStderr,
    GetTerminalStdin,
    GetTerminalStdout,
    GetTerminalStderr,
    MonotonicNow,
    MonotonicResolution,
    SubscribeInstant,
    SubscribeDuration,
    WallNow,
    WallResolution,
    RandomBytes {
        insecure: bool,
    },
    RandomU64 {
        insecure: bool,
    },
    InsecureSeed,
}

/// A core value type of the fast path's signatures.
#[derive(Clone, Copy, PartialEq, Eq)]
enum T {
    I32,
    I64,
}

use T::{I32, I64};

/// Splits `wasi:io/streams@0.2.6` into the interface and its version, accepting only the
/// versions the fast path serves (`sluicegate:stage/*@0.1.0`, `wasi:*@0.2.*`).
fn served(interface: &str) -> Option<&str> {
    let (name, version) = interface.split_once('@')?;
    let ok = if name.starts_with("sluicegate:stage/") {
        version == "0.1.0"
    } else {
        name.starts_with("wasi:") && version.starts_with("0.2.")
    };
    ok.then_some(name)
}

impl HostImport {
    /// The function `func` of the component import `interface`, if the fast path serves it.
    pub(super) fn find(interface: &str, func: &str) -> Option<Self> {
        use HostImport::*;
        Some(match (served(interface)?, func) {
            ("sluicegate:stage/upstream", "pull") => Pull,
            ("sluicegate:stage/host", "log") => Log,
            ("sluicegate:stage/host", "config") => Config,
            ("wasi:io/poll", "[method]pollable.ready") => PollableReady,
            ("wasi:io/poll", "[method]pollable.block") => PollableBlock,
            ("wasi:io/poll", "poll") => Poll,
            ("wasi:io/streams", "[method]input-stream.read") => InputRead { blocking: false },
            ("wasi:io/streams", "[method]input-stream.blocking-read") => {
                InputRead { blocking: true }
            }
            ("wasi:io/streams", "[method]input-stream.skip") => InputSkip { blocking: false },
            ("wasi:io/streams", "[method]input-stream.blocking-skip") => {
                InputSkip { blocking: true }
            }
            ("wasi:io/streams", "[method]input-stream.subscribe") => InputSubscribe,
            ("wasi:io/streams", "[method]output-stream.check-write") => OutputCheckWrite,
            ("wasi:io/streams", "[method]output-stream.write") => OutputWrite { blocking: false },
            ("wasi:io/streams", "[method]output-stream.blocking-write-and-flush") => {
                OutputWrite { blocking: true }
            }
            ("wasi:io/streams", "[method]output-stream.write-zeroes") => {
                OutputWriteZeroes { blocking: false }
            }
            ("wasi:io/streams", "[method]output-stream.blocking-write-zeroes-and-flush") => {
                OutputWriteZeroes { blocking: true }
            }
            ("wasi:io/streams", "[method]output-stream.flush") => OutputFlush { blocking: false },
            ("wasi:io/streams", "[method]output-stream.blocking-flush") => {
                OutputFlush { blocking: true }
            }
            ("wasi:io/streams", "[method]output-stream.subscribe") => OutputSubscribe,
            ("wasi:cli/environment", "get-environment") => GetEnvironment,
            ("wasi:cli/environment", "get-arguments") => GetArguments,
            ("wasi:cli/environment", "initial-cwd") => InitialCwd,
            ("wasi:cli/exit", "exit") => Exit,
            ("wasi:cli/stdin", "get-stdin") => GetStdin,
            ("wasi:cli/stdout", "get-stdout") => GetStdout,
            ("wasi:cli/stderr", "get-stderr") => GetStderr,
            ("wasi:cli/terminal-stdin", "get-terminal-stdin") => GetTerminalStdin,
            ("wasi:cli/terminal-stdout", "get-terminal-stdout") => GetTerminalStdout,
            ("wasi:cli/terminal-stderr", "get-terminal-stderr") => GetTerminalStderr,
            ("wasi:clocks/monotonic-clock", "now") => MonotonicNow,
            ("wasi:clocks/monotonic-clock", "resolution") => MonotonicResolution,
            ("wasi:clocks/monotonic-clock", "subscribe-instant") => SubscribeInstant,
            ("wasi:clocks/monotonic-clock", "subscribe-duration") => SubscribeDuration,
            ("wasi:clocks/wall-clock", "now") => WallNow,
            ("wasi:clocks/wall-clock", "resolution") => WallResolution,
            ("wasi:random/random", "get-random-bytes") => RandomBytes { insecure: false },
            ("wasi:random/random", "get-random-u64") => RandomU64 { insecure: false },
            ("wasi:random/insecure", "get-insecure-random-bytes") => RandomBytes { insecure: true },
            ("wasi:random/insecure", "get-insecure-random-u64") => RandomU64 { insecure: true },
            ("wasi:random/insecure-seed", "insecure-seed") => InsecureSeed,
            _ => return None,
        })
    }

    /// `canon resource.drop` of resource `name` exported by the component import `interface`.
    pub(super) fn find_drop(interface: &str, name: &str) -> Option<Self> {
        Resource::find(served(interface)?, name).map(HostImport::Drop)
    }

    /// The core signature (params, results) of the lowered function.
    fn signature(self) -> (&'static [T], &'static [T]) {
        use HostImport::*;
        match self {
            Pull => (&[I32, I32], &[]),
            Log => (&[I32, I32, I32, I32, I32], &[]),
            Config => (&[I32], &[]),
            Poll => (&[I32, I32, I32], &[]),
            Drop(_) | PollableBlock | Exit => (&[I32], &[]),
            PollableReady | InputSubscribe | OutputSubscribe => (&[I32], &[I32]),
            InputRead { .. } | InputSkip { .. } | OutputWriteZeroes { .. } => {
                (&[I32, I64, I32], &[])
            }
            OutputCheckWrite | OutputFlush { .. } => (&[I32, I32], &[]),
            OutputWrite { .. } => (&[I32, I32, I32, I32], &[]),
            GetEnvironment | GetArguments | InitialCwd => (&[I32], &[]),
            GetStdin | GetStdout | GetStderr => (&[], &[I32]),
            GetTerminalStdin | GetTerminalStdout | GetTerminalStderr => (&[I32], &[]),
            MonotonicNow | MonotonicResolution | RandomU64 { .. } => (&[], &[I64]),
            SubscribeInstant | SubscribeDuration => (&[I64], &[I32]),
            WallNow | WallResolution | InsecureSeed => (&[I32], &[]),
            RandomBytes { .. } => (&[I64, I32], &[]),
        }
    }

    /// True if `ty` is this function's core type.
    pub(super) fn has_type(self, ty: &FuncType) -> bool {
        let same = |want: &[T], got: &mut dyn ExactSizeIterator<Item = ValType>| {
            want.len() == got.len()
                && want.iter().zip(got).all(|(w, g)| match w {
                    I32 => matches!(g, ValType::I32),
                    I64 => matches!(g, ValType::I64),
                })
        };
        let (params, results) = self.signature();
        same(params, &mut ty.params()) && same(results, &mut ty.results())
    }

    /// True if the lowering needs the guest's memory (pointers in or out).
    pub(super) fn needs_memory(self) -> bool {
        use HostImport::*;
        !matches!(
            self,
            Drop(_)
                | PollableReady
                | PollableBlock
                | InputSubscribe
                | OutputSubscribe
                | Exit
                | GetStdin
                | GetStdout
                | GetStderr
                | MonotonicNow
                | MonotonicResolution
                | SubscribeInstant
                | SubscribeDuration
                | RandomU64 { .. }
        )
    }

    /// True if the lowering allocates in the guest (a list or string result).
    pub(super) fn needs_realloc(self) -> bool {
        use HostImport::*;
        matches!(
            self,
            Pull | Config
                | Poll
                | InputRead { .. }
                | GetEnvironment
                | GetArguments
                | InitialCwd
                | RandomBytes { .. }
        )
    }
}
