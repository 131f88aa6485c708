//! The protocol's state table (docs/protocol.md, "The state table") as a plain type: for each
//! state a stage is in and each call the host is asked to make, what happens ([`action`]), and
//! where an entered call leaves the stage ([`after`]). No wasm here: the unit tests below walk
//! the table row by row, rule by rule. `Running` is not a row: a call made while another is in
//! progress is refused before the table is consulted (R1, the caller mark of `stage.rs`).

use crate::error::Call;

/// Where a stage is between calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    /// Instantiated, never entered.
    Created,
    /// Primed, waiting between calls.
    Suspended,
    /// Answered `none`; its cleanup has not run.
    Exhausted,
    /// Cleanup ran (or there was none to run). Terminal.
    Closed,
    /// A trap, a violation or a limit ended it. Terminal.
    Faulted,
    /// Faulted under the `bypass` policy: its input passes through (rule B1).
    Bypassed,
}

/// A call the host is asked to make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Request {
    /// `resume(credits)`: priming or a pause when 0.
    Resume(u32),
    /// `close()`.
    Close,
}

/// What the host does, and under which rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// Enter the guest with this call.
    Enter(Call),
    /// Answer without entering the guest.
    Answer(Answer),
    /// Refuse without entering the guest; the state does not change.
    Refuse(Refusal),
}

/// An answer the host gives itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Answer {
    /// `none`: the stage is finished (E1).
    Finished,
    /// The stage is closed now, without its cleanup having to run (P3, B1).
    ClosedWithoutCleanup,
    /// Already closed: nothing to do (D2).
    AlreadyClosed,
    /// The input passes through the bypassed stage (B1).
    PassThrough,
}

/// Why a call is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Credits before priming (P2).
    NotPrimed,
    /// A resume after close (D1).
    Closed,
    /// Any call after a fault, with the original cause (F1, F2, X3).
    Faulted,
}

/// The table: what `request` does to a stage in `state`, and the rule that says so.
pub(crate) fn action(state: State, request: Request) -> (&'static str, Action) {
    use Action::{Answer as A, Enter, Refuse};
    match (state, request) {
        (State::Created, Request::Resume(0)) => ("P1", Enter(Call::Prime)),
        (State::Created, Request::Resume(_)) => ("P2", Refuse(Refusal::NotPrimed)),
        (State::Created, Request::Close) => ("P3", A(Answer::ClosedWithoutCleanup)),
        (State::Suspended, Request::Resume(0)) => ("S1", Enter(Call::Resume)),
        (State::Suspended, Request::Resume(_)) => ("S2", Enter(Call::Resume)),
        (State::Suspended, Request::Close) => ("S3", Enter(Call::Close)),
        (State::Exhausted, Request::Resume(_)) => ("E1", A(Answer::Finished)),
        (State::Exhausted, Request::Close) => ("E2", Enter(Call::Close)),
        (State::Closed, Request::Resume(_)) => ("D1", Refuse(Refusal::Closed)),
        (State::Closed, Request::Close) => ("D2", A(Answer::AlreadyClosed)),
        (State::Faulted, Request::Resume(_)) => ("F1", Refuse(Refusal::Faulted)),
        (State::Faulted, Request::Close) => ("F2", Refuse(Refusal::Faulted)),
        (State::Bypassed, Request::Resume(_)) => ("B1", A(Answer::PassThrough)),
        (State::Bypassed, Request::Close) => ("B1", A(Answer::ClosedWithoutCleanup)),
    }
}

/// What an entered call answered, once every check passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// A chunk (empty or not): more may come.
    Chunk,
    /// `none`: finished for good.
    Finished,
    /// `close` returned.
    Cleaned,
}

/// Where an entered call that passed every check leaves the stage. One that did not (a trap,
/// a violation, a limit: X1, X2) leaves it [`State::Faulted`], whatever it was.
pub(crate) fn after(outcome: Outcome) -> State {
    match outcome {
        Outcome::Chunk => State::Suspended,
        Outcome::Finished => State::Exhausted,
        Outcome::Cleaned => State::Closed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATES: [State; 6] = [
        State::Created,
        State::Suspended,
        State::Exhausted,
        State::Closed,
        State::Faulted,
        State::Bypassed,
    ];

    #[test]
    fn p1_priming_enters_a_created_stage_and_p2_refuses_credits_before_it() {
        assert_eq!(
            action(State::Created, Request::Resume(0)),
            ("P1", Action::Enter(Call::Prime))
        );
        assert_eq!(
            action(State::Created, Request::Resume(5)),
            ("P2", Action::Refuse(Refusal::NotPrimed))
        );
    }

    #[test]
    fn p3_closing_an_unprimed_stage_enters_nothing() {
        assert_eq!(
            action(State::Created, Request::Close),
            ("P3", Action::Answer(Answer::ClosedWithoutCleanup))
        );
    }

    #[test]
    fn s1_s2_s3_a_suspended_stage_is_entered_for_every_call() {
        for (request, rule, call) in [
            (Request::Resume(0), "S1", Call::Resume),
            (Request::Resume(7), "S2", Call::Resume),
            (Request::Close, "S3", Call::Close),
        ] {
            assert_eq!(
                action(State::Suspended, request),
                (rule, Action::Enter(call))
            );
        }
    }

    #[test]
    fn e1_an_exhausted_stage_answers_none_and_e2_still_gets_its_cleanup() {
        for credits in [0, 3] {
            assert_eq!(
                action(State::Exhausted, Request::Resume(credits)),
                ("E1", Action::Answer(Answer::Finished))
            );
        }
        assert_eq!(
            action(State::Exhausted, Request::Close),
            ("E2", Action::Enter(Call::Close))
        );
    }

    #[test]
    fn d1_d2_a_closed_stage_refuses_resumes_and_closes_idempotently() {
        for credits in [0, 5] {
            assert_eq!(
                action(State::Closed, Request::Resume(credits)),
                ("D1", Action::Refuse(Refusal::Closed))
            );
        }
        assert_eq!(
            action(State::Closed, Request::Close),
            ("D2", Action::Answer(Answer::AlreadyClosed))
        );
    }

    #[test]
    fn f1_a_faulted_stage_refuses_resumes_and_f2_its_cleanup() {
        for credits in [0, 1] {
            assert_eq!(
                action(State::Faulted, Request::Resume(credits)),
                ("F1", Action::Refuse(Refusal::Faulted))
            );
        }
        assert_eq!(
            action(State::Faulted, Request::Close),
            ("F2", Action::Refuse(Refusal::Faulted))
        );
    }

    #[test]
    fn b1_a_bypassed_stage_passes_input_through_and_closes_without_cleanup() {
        assert_eq!(
            action(State::Bypassed, Request::Resume(4)),
            ("B1", Action::Answer(Answer::PassThrough))
        );
        assert_eq!(
            action(State::Bypassed, Request::Close),
            ("B1", Action::Answer(Answer::ClosedWithoutCleanup))
        );
    }

    #[test]
    fn only_created_suspended_and_exhausted_stages_are_ever_entered() {
        for state in STATES {
            for request in [Request::Resume(0), Request::Resume(9), Request::Close] {
                let enters = matches!(action(state, request).1, Action::Enter(_));
                let may = matches!(state, State::Created | State::Suspended | State::Exhausted);
                assert!(!enters || may, "{state:?} entered for {request:?}");
            }
        }
    }

    #[test]
    fn an_entered_call_leaves_the_stage_where_its_outcome_says() {
        assert_eq!(after(Outcome::Chunk), State::Suspended);
        assert_eq!(after(Outcome::Finished), State::Exhausted);
        assert_eq!(after(Outcome::Cleaned), State::Closed);
    }
}
