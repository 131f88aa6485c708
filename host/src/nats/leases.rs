//! Which host reads which partition: leases in a JetStream key-value bucket whose entries live
//! `lease_ms` unless renewed (the bucket's `max_age`). A host announces itself under
//! `host.<id>` and holds partition `p` under `partition.<p>`, both renewed several times per
//! `lease_ms`; a lease is taken with create (only if nobody holds it) and renewed with a
//! compare-and-set on its revision, so a host that fails to renew knows at once that it lost
//! the partition. A host that dies stops renewing: its entries age out within `lease_ms`, and
//! the partitions are taken over by the hosts still alive.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv;
use futures_util::StreamExt;

use super::Nats;
use crate::error::Result;

/// One host's view of the leases.
pub(crate) struct Leases {
    nats: Arc<Nats>,
    store: kv::Store,
    /// This host's id.
    host: String,
    /// The partitions this host holds, with their entries' revisions.
    held: BTreeMap<u32, u64>,
}

impl Leases {
    /// Joins the hosts sharing `bucket` (created with entries living `ttl` if missing).
    pub(crate) fn join(nats: Arc<Nats>, bucket: &str, ttl: Duration) -> Result<Leases> {
        let js = nats.js.clone();
        let store = nats.retry(&format!("opening bucket `{bucket}`"), || async {
            match js.get_key_value(bucket).await {
                Ok(store) => Ok(store),
                Err(_) => {
                    js.create_key_value(kv::Config {
                        bucket: bucket.to_string(),
                        history: 1,
                        max_age: ttl,
                        ..Default::default()
                    })
                    .await
                }
            }
        })?;
        let host = format!(
            "{}-{}-{:x}",
            std::env::var("HOSTNAME").unwrap_or_else(|_| "host".into()),
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        );
        let leases = Leases {
            nats,
            store,
            host,
            held: BTreeMap::new(),
        };
        leases.announce()?;
        Ok(leases)
    }

    /// This host's id.
    pub(crate) fn host(&self) -> &str {
        &self.host
    }

    /// Renews this host's announcement.
    pub(crate) fn announce(&self) -> Result<()> {
        let (store, key) = (&self.store, format!("host.{}", self.host));
        let value = bytes::Bytes::from(self.host.clone());
        self.nats
            .retry("announcing this host", || store.put(&key, value.clone()))
            .map(|_| ())
    }

    /// The hosts alive (announced within the entries' lifetime), this one included.
    pub(crate) fn hosts(&self) -> Result<usize> {
        let store = &self.store;
        let keys = self.nats.retry("listing the hosts", || async {
            let mut keys = store.keys().await?;
            let mut hosts = 0usize;
            while let Some(key) = keys.next().await {
                if key?.starts_with("host.") {
                    hosts += 1;
                }
            }
            Ok::<_, async_nats::Error>(hosts)
        })?;
        Ok(keys.max(1))
    }

    /// The partitions this host holds.
    pub(crate) fn held(&self) -> impl Iterator<Item = u32> + '_ {
        self.held.keys().copied()
    }

    /// Takes partition `partition` if nobody holds it; `true` if this host now does.
    pub(crate) fn try_take(&mut self, partition: u32) -> bool {
        let key = format!("partition.{partition}");
        let value = bytes::Bytes::from(self.host.clone());
        match self.nats.quick(self.store.create(&key, value)) {
            Some(Ok(revision)) => {
                self.held.insert(partition, revision);
                true
            }
            _ => false,
        }
    }

    /// Renews every lease held; returns the partitions whose lease was lost (another host
    /// holds it now, or the server was away longer than the lease).
    pub(crate) fn renew(&mut self) -> Vec<u32> {
        let mut lost = Vec::new();
        let value = bytes::Bytes::from(self.host.clone());
        for (partition, revision) in self.held.iter_mut() {
            let key = format!("partition.{partition}");
            match self
                .nats
                .quick(self.store.update(&key, value.clone(), *revision))
            {
                Some(Ok(next)) => *revision = next,
                Some(Err(e)) => {
                    tracing::warn!("lease of partition {partition} lost: {e}");
                    lost.push(*partition);
                }
                // The server did not answer: the lease may still be ours; the next round tells.
                None => {}
            }
        }
        for partition in &lost {
            self.held.remove(partition);
        }
        lost
    }

    /// Gives partition `partition` up (only if this host still holds it).
    pub(crate) fn release(&mut self, partition: u32) {
        let Some(revision) = self.held.remove(&partition) else {
            return;
        };
        let key = format!("partition.{partition}");
        let released = self
            .nats
            .quick(self.store.delete_expect_revision(&key, Some(revision)));
        if !matches!(released, Some(Ok(()))) {
            tracing::warn!("partition {partition}'s lease was not given back: it will age out");
        }
    }

    /// Leaves: every lease released, the announcement withdrawn.
    pub(crate) fn leave(&mut self) {
        let held: Vec<u32> = self.held().collect();
        for partition in held {
            self.release(partition);
        }
        let _ = self
            .nats
            .quick(self.store.delete(format!("host.{}", self.host)));
    }
}
