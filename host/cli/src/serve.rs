//! The CLI's background servers (the metrics endpoint, the control socket): one thread each,
//! answering connections one at a time, that keeps serving whatever an accept throws.

use std::time::Duration;

/// How long a failed accept (out of file descriptors, say) is waited out before the next.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// Spawns thread `name`, which answers every connection `accept` yields with `answer`, until
/// the process ends. A failed accept is logged and waited out; it never ends the server.
pub fn spawn<C>(
    name: &str,
    mut accept: impl FnMut() -> std::io::Result<C> + Send + 'static,
    mut answer: impl FnMut(C) + Send + 'static,
) -> std::io::Result<()> {
    let label = name.to_string();
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            loop {
                match accept() {
                    Ok(connection) => answer(connection),
                    Err(e) => {
                        tracing::warn!("{label}: cannot accept a connection: {e}");
                        std::thread::sleep(ACCEPT_RETRY);
                    }
                }
            }
        })
        .map(drop)
}
