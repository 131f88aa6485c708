//! A primed chain of pass-through stages fed one `bytes`-byte record per chunk by an endless
//! host-native source: what the hop measurements run through. Shared by the bench binary, the
//! criterion benches and the callgrind example (each includes this file).

use sluicegate::{Chunk, Stage, StageComponent, StageOptions};

/// `depth` instances of `component`, each pulling from the previous one, primed upstream-first.
pub fn primed_chain(
    component: &StageComponent,
    depth: usize,
    bytes: usize,
) -> sluicegate::Result<Vec<Stage>> {
    let record = Chunk::from_records([vec![7u8; bytes]]);
    let source = move |demand: sluicegate::Demand| -> sluicegate::Result<Option<Chunk>> {
        let credits = demand.records;
        Ok(Some(if credits == 0 {
            Chunk::empty()
        } else {
            record.clone()
        }))
    };
    let mut chain: Vec<Stage> = Vec::new();
    for i in 0..depth {
        let options = match chain.last() {
            Some(previous) => StageOptions::new().upstream(previous.clone()),
            None => StageOptions::new().upstream(source.clone()),
        };
        chain.push(component.instantiate(&format!("hop{i}"), options)?);
    }
    for stage in &chain {
        stage.prime()?;
    }
    Ok(chain)
}
