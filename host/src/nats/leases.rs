//! Which host reads which partition: leases in a JetStream key-value bucket whose entries live
//! `lease_ms` unless renewed (the bucket's `max_age`). A host announces itself under
//! `<consumer>.host.<id>` and holds partition `p` under `<consumer>.partition.<p>`, both
//! renewed several times per `lease_ms`; a lease is taken with create (only if nobody holds
//! it) and renewed with a compare-and-set on its revision. A host that dies stops renewing:
//! its entries age out within `lease_ms`, and the partitions are taken over by the hosts still
//! alive. A host counts its own lease as valid only until a quarter of `lease_ms` before it
//! could have aged out since its last renewal ([`Hold`]): past that, it writes nothing more for
//! the partition.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_nats::jetstream::kv;
use futures_util::StreamExt;

use super::Nats;
use crate::error::Result;

/// This host's lease on one partition, as its replica sees it.
pub(crate) struct Hold {
    lost: AtomicBool,
    valid_until: Mutex<Instant>,
    /// How long after a renewal the lease still counts as this host's.
    trust: Duration,
}

impl Hold {
    /// A lease taken by a request sent at `asked` (the entry's age counts from about then).
    fn new(ttl: Duration, asked: Instant) -> Arc<Hold> {
        let trust = ttl.saturating_sub(ttl / 4);
        Arc::new(Hold {
            lost: AtomicBool::new(false),
            valid_until: Mutex::new(asked + trust),
            trust,
        })
    }

    /// Renewed by a request sent at `asked`.
    fn renewed(&self, asked: Instant) {
        *self
            .valid_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = asked + self.trust;
    }

    /// True while the lease is this host's for sure.
    pub(crate) fn valid(&self) -> bool {
        !self.lost()
            && Instant::now()
                < *self
                    .valid_until
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
    }

    /// True once the lease is known lost (or ran out).
    pub(crate) fn lost(&self) -> bool {
        self.lost.load(Ordering::Relaxed)
    }

    /// Marks the lease lost: the replica writes nothing more.
    pub(crate) fn lose(&self) {
        self.lost.store(true, Ordering::Relaxed);
    }
}

/// One host's view of the leases.
pub(crate) struct Leases {
    nats: Arc<Nats>,
    store: kv::Store,
    /// The pipeline's consumer: the prefix of its keys, so pipelines sharing a bucket do not
    /// share leases.
    prefix: String,
    /// This host's id.
    host: String,
    ttl: Duration,
    /// The partitions this host holds, with their entries' revisions.
    held: BTreeMap<u32, (u64, Arc<Hold>)>,
}

impl Leases {
    /// Joins the hosts of consumer `prefix` sharing `bucket` (created with entries living `ttl`
    /// if missing).
    pub(crate) fn join(
        nats: Arc<Nats>,
        bucket: &str,
        prefix: &str,
        ttl: Duration,
    ) -> Result<Leases> {
        // Entries must live as long as this host trusts a lease: a bucket made for another
        // lease_ms would let leases age out under their holders, or never.
        let store = nats.bucket(bucket, ttl, "a lease of this pipeline's lease_ms")?;
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
            prefix: prefix.to_string(),
            host,
            ttl,
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
        let (store, key) = (&self.store, format!("{}.host.{}", self.prefix, self.host));
        let value = bytes::Bytes::from(self.host.clone());
        self.nats
            .retry("announcing this host", || store.put(&key, value.clone()))
            .map(|_| ())
    }

    /// The hosts alive (announced within the entries' lifetime), this one included.
    pub(crate) fn hosts(&self) -> Result<usize> {
        let (store, prefix) = (&self.store, format!("{}.host.", self.prefix));
        let keys = self.nats.retry("listing the hosts", || async {
            let mut keys = store.keys().await?;
            let mut hosts = 0usize;
            while let Some(key) = keys.next().await {
                if key?.starts_with(&prefix) {
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

    /// Takes partition `partition` if nobody holds it: this host's hold on it, if it does now.
    pub(crate) fn try_take(&mut self, partition: u32) -> Option<Arc<Hold>> {
        let key = format!("{}.partition.{partition}", self.prefix);
        let value = bytes::Bytes::from(self.host.clone());
        let asked = Instant::now();
        match self
            .nats
            .within(self.ttl / 4, self.store.create(&key, value))
        {
            Some(Ok(revision)) => {
                let hold = Hold::new(self.ttl, asked);
                self.held.insert(partition, (revision, hold.clone()));
                Some(hold)
            }
            _ => None,
        }
    }

    /// Renews every lease held. One another host holds now is lost at once; one the server
    /// did not answer for stays this host's only until its hold runs out.
    pub(crate) fn renew(&mut self) {
        let mut lost = Vec::new();
        let value = bytes::Bytes::from(self.host.clone());
        for (partition, (revision, hold)) in self.held.iter_mut() {
            let key = format!("{}.partition.{partition}", self.prefix);
            let asked = Instant::now();
            match self.nats.within(
                self.ttl / 4,
                self.store.update(&key, value.clone(), *revision),
            ) {
                Some(Ok(next)) => {
                    *revision = next;
                    hold.renewed(asked);
                }
                Some(Err(e)) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                    tracing::warn!("lease of partition {partition} lost: {e}");
                    hold.lose();
                    lost.push(*partition);
                }
                _ => {}
            }
        }
        for partition in &lost {
            self.held.remove(partition);
        }
    }

    /// Gives partition `partition` up (only if this host still holds it).
    pub(crate) fn release(&mut self, partition: u32) {
        let Some((revision, _)) = self.held.remove(&partition) else {
            return;
        };
        let key = format!("{}.partition.{partition}", self.prefix);
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
        let _ = self.nats.quick(
            self.store
                .delete(format!("{}.host.{}", self.prefix, self.host)),
        );
    }
}
