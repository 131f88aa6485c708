//! The hostile-stage fuzz target: every input is a case of `sluicegate_tests::fuzz` (a scripted
//! hostile stage inside a three-stage chain, driven through random host calls); the harness
//! panics, and libFuzzer reports, when an invariant breaks. See docs/security.md.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    sluicegate_tests::fuzz::run_bytes(data);
});
