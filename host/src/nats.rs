//! NATS JetStream at the ends of a pipeline (docs/scale-out.md, "Across hosts"): a partition's
//! input is a durable pull consumer whose fetch sizes are the chain's demand (`input.rs`), the
//! sink publishes every record with a deduplication id and awaits its acknowledgement
//! (`output.rs`), and a partition's stages are checkpointed with the input sequence they cover
//! in a key-value bucket (`checkpoint.rs`); which host reads which partition is a lease in
//! another (`leases.rs`). `client.rs` holds the connection and the runtime
//! the synchronous pipeline threads block on.

mod checkpoint;
mod client;
mod input;
mod leases;
mod output;

pub(crate) use self::checkpoint::{Checkpoint, Checkpoints};
pub(crate) use self::client::Nats;
pub(crate) use self::input::{NatsInput, Position, consumer_settled};
pub(crate) use self::leases::{Hold, Leases};
pub(crate) use self::output::NatsOutput;
