//! The errors of the public API: one enum, every variant names the stage it is about.
//!
//! Inside the crate, wasmtime calls return `wasmtime::Result`; they are turned into these
//! variants at the boundary of each public call (`wasmtime::Error` is not a
//! `std::error::Error`, so its message is kept as text).

use std::fmt;

/// A rule of the stage protocol, as named in `docs/protocol.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Rule {
    /// C1: every record is a complete little-endian u32 length prefix plus its bytes.
    BadFraming,
    /// C2: a chunk answered to `resume(n)` holds at most `n` records.
    CreditsExceeded,
    /// P1: the priming call `resume(0)` must answer an empty chunk or `none`.
    DataOnPriming,
    /// S1: a pause `resume(0)` must answer an empty chunk or `none`.
    DataWhilePaused,
    /// R3: while serving `resume(0)` a stage may only `pull(0)`.
    PullWithoutDemand,
    /// R4: a stage must not `pull` while closing.
    PullWhileClosing,
    /// X5: a stage may only `pull` while the host is inside one of its exports.
    PullOutsideCall,
}

impl Rule {
    /// The rule's identifier in `docs/protocol.md`.
    pub fn id(self) -> &'static str {
        match self {
            Rule::BadFraming => "C1",
            Rule::CreditsExceeded => "C2",
            Rule::DataOnPriming => "P1",
            Rule::DataWhilePaused => "S1",
            Rule::PullWithoutDemand => "R3",
            Rule::PullWhileClosing => "R4",
            Rule::PullOutsideCall => "X5",
        }
    }

    /// The rule's short name, as printed in errors and reports.
    pub fn name(self) -> &'static str {
        match self {
            Rule::BadFraming => "bad-framing",
            Rule::CreditsExceeded => "credits-exceeded",
            Rule::DataOnPriming => "data-on-priming",
            Rule::DataWhilePaused => "data-while-paused",
            Rule::PullWithoutDemand => "pull-without-demand",
            Rule::PullWhileClosing => "pull-while-closing",
            Rule::PullOutsideCall => "pull-outside-call",
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.id(), self.name())
    }
}

/// Which export of a stage a call went to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Call {
    /// The priming `resume(0)`.
    Prime,
    /// `resume(n)`, including a pause `resume(0)` after priming.
    Resume,
    /// `close()`.
    Close,
    /// Instantiation (start functions run here).
    Instantiate,
    /// `state.snapshot()`, during a hot swap.
    Snapshot,
    /// `state.restore()`, during a hot swap.
    Restore,
}

impl fmt::Display for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Call::Prime => "priming resume(0)",
            Call::Resume => "resume",
            Call::Close => "close",
            Call::Instantiate => "instantiation",
            Call::Snapshot => "state snapshot",
            Call::Restore => "state restore",
        })
    }
}

/// Everything that can go wrong in sluicegate. Every variant names the stage (or file) it is
/// about; the message says which rule or cause, and what to do where that is not obvious.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The file could not be read, or is not a WebAssembly component at all.
    #[error("stage `{stage}`: cannot load component: {reason}")]
    Load {
        /// The stage (or file) being loaded.
        stage: String,
        /// What is wrong, and how to fix it.
        reason: String,
    },
    /// The component is valid but does not implement the world `sluicegate:stage/stage@0.1.0`
    /// (a missing or mistyped export, or an import the host does not provide).
    #[error(
        "stage `{stage}`: component does not implement world sluicegate:stage/stage@0.1.0: {reason}"
    )]
    WrongWorld {
        /// The stage (or file) being loaded.
        stage: String,
        /// What the host found, as wasmtime reports it.
        reason: String,
    },
    /// P2: `resume(n > 0)` on a stage that was never primed; the guest was not entered.
    #[error(
        "stage `{stage}`: P2 not-primed: resume({credits}) on a stage that was never primed; call resume(0) first"
    )]
    NotPrimed {
        /// The stage.
        stage: String,
        /// The credits that were refused.
        credits: u32,
    },
    /// R1: the stage is already running (re-entry, or a call from another thread).
    #[error(
        "stage `{stage}`: R1 already-running: the stage is inside a call and cannot be re-entered"
    )]
    AlreadyRunning {
        /// The stage.
        stage: String,
    },
    /// D1: `resume` after `close`.
    #[error("stage `{stage}`: D1 closed: resume on a closed stage")]
    Closed {
        /// The stage.
        stage: String,
    },
    /// X2: the guest broke a rule of the protocol; nothing of the offending call was delivered.
    #[error("stage `{stage}`: protocol violation {rule}: {detail}")]
    ProtocolViolation {
        /// The stage.
        stage: String,
        /// The rule broken.
        rule: Rule,
        /// What exactly happened.
        detail: String,
    },
    /// X1: the guest trapped. Its store is dropped, so its cleanup cannot run.
    #[error(
        "stage `{stage}`: trapped during {call}: {message} (the stage is faulted and its store dropped; its cleanup cannot run)"
    )]
    Trap {
        /// The stage.
        stage: String,
        /// The call that trapped.
        call: Call,
        /// wasmtime's description of the trap.
        message: String,
    },
    /// A budget of the sandbox ran out (CPU time, fuel, memory, stack, chunk size). The stage
    /// is faulted and its store dropped.
    #[error("stage `{stage}`: limit exceeded: {limit}: {detail} (during {call})")]
    LimitExceeded {
        /// The stage.
        stage: String,
        /// Which budget.
        limit: crate::limits::Limit,
        /// The call during which it ran out.
        call: Call,
        /// What exactly, with the budget.
        detail: String,
    },
    /// Demand kept being granted but no record reached the sink for `after`: this stage was
    /// resumed with credits all that time and delivered nothing.
    #[error(
        "stage `{stage}`: stalled: resumed with credits for {after:?} without delivering a record"
    )]
    Stalled {
        /// The stage that kept answering empty chunks.
        stage: String,
        /// The watchdog's timeout.
        after: std::time::Duration,
    },
    /// The conformance kit (`sluicegate check`) saw behaviour the protocol rules out but the
    /// host cannot see in a pipeline: data after `none` when probed (E1), two runs on the same
    /// input that differ (K1), a stage that never finishes after its upstream ended (R5); or a
    /// key stage did not answer one key per record (Q4, docs/scale-out.md).
    #[error("stage `{stage}`: {check}: {detail}")]
    Nonconforming {
        /// The stage.
        stage: String,
        /// The kit's check, as `ID name` (for example `E1 none-sticky`).
        check: &'static str,
        /// What the kit saw.
        detail: String,
    },
    /// A hot swap was refused; the old version keeps running untouched.
    #[error("stage `{stage}`: swap refused, the running version is unchanged: {reason}")]
    SwapRefused {
        /// The stage.
        stage: String,
        /// Why, with the new version's error.
        reason: String,
    },
    /// X3: a call on a stage that faulted earlier; carries the original cause.
    #[error("stage `{stage}`: X3 faulted earlier: {cause}")]
    Faulted {
        /// The stage.
        stage: String,
        /// The error that faulted it.
        cause: Box<Error>,
    },
    /// X4: the stage upstream faulted while serving this stage's `pull`. Sticky: every later
    /// `resume` of this stage is refused with it (its input is gone); `close` still runs.
    #[error("stage `{stage}`: X4 upstream faulted: {cause}")]
    UpstreamFaulted {
        /// The stage whose `pull` failed.
        stage: String,
        /// The upstream's error (it names the upstream stage).
        cause: Box<Error>,
    },
    /// X6: the upstream refused this stage's `pull` for a reason that is not a fault of its
    /// own (it was already running: a cycle or a second caller; not primed; closed): the
    /// stage's call was abandoned in the middle (its guest trapped in `pull`) and it is
    /// faulted, since it may hold input it can no longer account for.
    #[error("stage `{stage}`: X6 upstream refused a pull: {cause}")]
    UpstreamRefused {
        /// The stage whose `pull` was refused.
        stage: String,
        /// Why the upstream refused (it names the upstream stage).
        cause: Box<Error>,
    },
    /// A pipeline file is invalid: bad TOML, an unknown key, a missing file, a duplicate name.
    /// The message names the stage when the problem is in one.
    #[error("pipeline file {file}: {message}")]
    Config {
        /// The pipeline file.
        file: String,
        /// What is wrong, with line and column where the parser knows them.
        message: String,
    },
    /// A host-native source or sink failed (an I/O error, a truncated input file).
    #[error("{stage}: {message}")]
    Io {
        /// `source` or `sink`.
        stage: String,
        /// What failed.
        message: String,
    },
    /// The host itself could not be set up (engine configuration), or a host-side resource
    /// failed. Names the stage when there is one.
    #[error("stage `{stage}`: host error: {message}")]
    Host {
        /// The stage, or `-` when the error is not about one.
        stage: String,
        /// What failed.
        message: String,
    },
}

impl Error {
    /// The name of the stage this error is about (the file, for a pipeline file error).
    pub fn stage(&self) -> &str {
        match self {
            Error::Load { stage, .. }
            | Error::WrongWorld { stage, .. }
            | Error::NotPrimed { stage, .. }
            | Error::AlreadyRunning { stage }
            | Error::Closed { stage }
            | Error::ProtocolViolation { stage, .. }
            | Error::Trap { stage, .. }
            | Error::LimitExceeded { stage, .. }
            | Error::Stalled { stage, .. }
            | Error::SwapRefused { stage, .. }
            | Error::Nonconforming { stage, .. }
            | Error::Faulted { stage, .. }
            | Error::UpstreamFaulted { stage, .. }
            | Error::UpstreamRefused { stage, .. }
            | Error::Io { stage, .. }
            | Error::Host { stage, .. } => stage,
            Error::Config { file, .. } => file,
        }
    }

    /// The error at the root: looks through `UpstreamFaulted` and `Faulted` to the stage that
    /// actually failed.
    pub fn root_cause(&self) -> &Error {
        match self {
            Error::UpstreamFaulted { cause, .. }
            | Error::UpstreamRefused { cause, .. }
            | Error::Faulted { cause, .. } => cause.root_cause(),
            other => other,
        }
    }

    /// The protocol rule this error reports, looking through `Faulted` to the original cause.
    pub fn rule(&self) -> Option<Rule> {
        match self {
            Error::ProtocolViolation { rule, .. } => Some(*rule),
            Error::Faulted { cause, .. } => cause.rule(),
            _ => None,
        }
    }

    /// True if the error ended the stage it names (or, for a host-native source or sink, the
    /// stream): a trap, a violation, a limit, a failed source, or a fault carried from further
    /// upstream. False for a call refused without anything ending (R1, P2, D1, a refused
    /// swap, a host error): for a puller, only the first kind is the end of its input (X4).
    pub fn is_fault(&self) -> bool {
        matches!(
            self,
            Error::ProtocolViolation { .. }
                | Error::Trap { .. }
                | Error::LimitExceeded { .. }
                | Error::Nonconforming { .. }
                | Error::Faulted { .. }
                | Error::UpstreamFaulted { .. }
                | Error::UpstreamRefused { .. }
                | Error::Io { .. }
        )
    }

    /// A short machine-readable name of the error's kind, for reports.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Load { .. } => "load",
            Error::WrongWorld { .. } => "wrong-world",
            Error::NotPrimed { .. } => "not-primed",
            Error::AlreadyRunning { .. } => "already-running",
            Error::Closed { .. } => "closed",
            Error::ProtocolViolation { .. } => "protocol-violation",
            Error::Trap { .. } => "trap",
            Error::LimitExceeded { .. } => "limit-exceeded",
            Error::Stalled { .. } => "stalled",
            Error::SwapRefused { .. } => "swap-refused",
            Error::Nonconforming { .. } => "nonconforming",
            Error::Faulted { .. } => "faulted",
            Error::UpstreamFaulted { .. } => "upstream-faulted",
            Error::UpstreamRefused { .. } => "upstream-refused",
            Error::Config { .. } => "config",
            Error::Io { .. } => "io",
            Error::Host { .. } => "host",
        }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
