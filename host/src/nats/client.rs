//! One connection to a NATS server and the runtime it runs on. The pipeline's threads are
//! synchronous (a stage's pull nests its upstream on the same stack), so every NATS operation
//! is a future they block on; an operation that fails for want of the server is retried until
//! the pipeline's `server_timeout_ms` has passed, then fails naming the operation and the
//! server.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use async_nats::jetstream::kv;

use crate::error::{Error, Result};

/// First pause between two attempts of a failing operation; doubled up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
/// Longest pause between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// The least time an attempt is given, even past the deadline.
const MIN_ATTEMPT: Duration = Duration::from_millis(100);
/// How long a best-effort operation may take.
const QUICK: Duration = Duration::from_secs(1);

/// A connection to one server, with its JetStream context.
pub(crate) struct Nats {
    runtime: tokio::runtime::Runtime,
    pub(crate) js: jetstream::Context,
    url: String,
    /// How long an operation is retried while the server cannot be reached.
    timeout: Duration,
    /// `source` or `sink`: who fails when the server does not come back.
    who: &'static str,
}

impl Nats {
    /// Connects to `url`, waiting up to `timeout` for the server.
    pub(crate) fn connect(url: &str, who: &'static str, timeout: Duration) -> Result<Arc<Nats>> {
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err(io_error(
                who,
                "a pipeline with NATS ends blocks on its own runtime: build and run it on a \
                 thread that is not a tokio runtime's (spawn_blocking, or a thread of its own)"
                    .into(),
            ));
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("sluicegate-nats")
            .enable_all()
            .build()
            .map_err(|e| io_error(who, format!("cannot start the NATS client's runtime: {e}")))?;
        let deadline = Instant::now() + timeout;
        let mut backoff = FIRST_BACKOFF;
        let client = loop {
            let attempt = runtime.block_on(async {
                async_nats::ConnectOptions::new()
                    .connection_timeout(timeout.min(Duration::from_secs(5)))
                    .name("sluicegate")
                    .connect(url)
                    .await
            });
            match attempt {
                Ok(client) => break client,
                Err(e) if Instant::now() + backoff < deadline => {
                    tracing::warn!("{who}: NATS server {url} not reachable yet ({e}); retrying");
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                Err(e) => {
                    return Err(io_error(
                        who,
                        format!(
                            "cannot reach the NATS server {url} within {} ms: {e}",
                            timeout.as_millis()
                        ),
                    ));
                }
            }
        };
        // The context starts a task of its own: inside the runtime.
        let js = runtime.block_on(async { jetstream::new(client) });
        Ok(Arc::new(Nats {
            runtime,
            js,
            url: url.to_string(),
            timeout,
            who,
        }))
    }

    /// Runs `future` to its end on the client's runtime.
    pub(crate) fn block_on<F: Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }

    /// Runs the operation `attempt` makes until it succeeds, retrying while the server does
    /// not answer, for up to the connection's timeout (each attempt cut short at it); then
    /// fails naming `what`.
    pub(crate) fn retry<T, E, F>(&self, what: &str, mut attempt: impl FnMut() -> F) -> Result<T>
    where
        E: std::fmt::Display,
        F: Future<Output = std::result::Result<T, E>>,
    {
        let deadline = self.deadline();
        let mut backoff = FIRST_BACKOFF;
        loop {
            let left = deadline
                .saturating_duration_since(Instant::now())
                .max(MIN_ATTEMPT);
            let attempt = attempt();
            let outcome = self.block_on(async { tokio::time::timeout(left, attempt).await });
            let error = match outcome {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(e)) => e.to_string(),
                Err(_) => "timed out".to_string(),
            };
            if Instant::now() + backoff >= deadline {
                return Err(self.error(format!("{what}: {error}")));
            }
            tracing::warn!("{}: {what} failed ({error}); retrying", self.who);
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Runs `future` for at most [`QUICK`]: for what is worth trying once and harmless to
    /// miss (an acknowledgement, giving a lease back). `None` if it did not finish in time.
    pub(crate) fn quick<F: Future>(&self, future: F) -> Option<F::Output> {
        self.within(QUICK, future)
    }

    /// Runs `future` for at most `limit`; `None` if it did not finish in time.
    pub(crate) fn within<F: Future>(&self, limit: Duration, future: F) -> Option<F::Output> {
        self.block_on(async { tokio::time::timeout(limit, future).await })
            .ok()
    }

    /// The key-value bucket `bucket`, created (one value per key, entries living `max_age`,
    /// zero: for ever) if it does not exist; refused, naming `what` it is for, if it exists
    /// with entries living another time (a bucket's entry lifetime is set when it is created).
    pub(crate) fn bucket(&self, bucket: &str, max_age: Duration, what: &str) -> Result<kv::Store> {
        let js = &self.js;
        let store: kv::Store = self.retry(&format!("opening bucket `{bucket}`"), || async {
            match js.get_key_value(bucket).await {
                Ok(store) => Ok(store),
                Err(_) => {
                    js.create_key_value(kv::Config {
                        bucket: bucket.to_string(),
                        history: 1,
                        max_age,
                        ..Default::default()
                    })
                    .await
                }
            }
        })?;
        let lives = self
            .retry(&format!("reading bucket `{bucket}`"), || store.status())?
            .max_age();
        if lives != max_age {
            let age = |d: Duration| match d.as_millis() {
                0 => "for ever".to_string(),
                ms => format!("{ms} ms"),
            };
            return Err(self.error(format!(
                "bucket `{bucket}` keeps its entries {} and {what} needs them kept {}: give the \
                 pipeline a bucket of its own",
                age(lives),
                age(max_age)
            )));
        }
        Ok(store)
    }

    /// When an operation started now stops being retried.
    pub(crate) fn deadline(&self) -> Instant {
        Instant::now() + self.timeout
    }

    /// An error of this connection's user, naming the server.
    pub(crate) fn error(&self, message: String) -> Error {
        io_error(
            self.who,
            format!(
                "{message} (NATS server {}, retried for {} ms)",
                self.url,
                self.timeout.as_millis()
            ),
        )
    }
}

fn io_error(who: &str, message: String) -> Error {
    Error::Io {
        stage: who.to_string(),
        message,
    }
}
