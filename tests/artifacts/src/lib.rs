//! Paths of the components built from `example-stages/` and `tests/fixtures/` by `build.rs`,
//! plus `foreach_fixture!` and `foreach_example!` so that every component has a test.

include!(concat!(env!("OUT_DIR"), "/artifacts.rs"));
