//! Integration tests: real components, built from source by `tests/artifacts/build.rs`, driven
//! through the real host. One binary, one module per area.

mod check;
mod fast_path;
mod fused;
mod fuzz;
mod hostile;
mod languages;
mod loading;
mod model;
mod nats;
mod partitions;
mod pipeline;
mod protocol;
mod sandbox;
mod supervision;
mod swap;
