//! `--metrics ADDR`: the running pipeline's counters for Prometheus at `http://ADDR/metrics`
//! (the text exposition format), served by one background thread with `std::net`. A scrape
//! reads the counters the pipeline already keeps; it never enters a stage.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use anyhow::Context as _;
use sluicegate::Probe;

/// Most bytes of a request read: a scrape is a request line and a few headers.
const MAX_REQUEST_BYTES: usize = 8192;
/// How long one client may take to send its request or read the answer.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(2);

/// Listens on `addr` and serves `probe` until the process ends; returns the bound address
/// (useful with port 0).
pub fn serve(addr: &str, probe: Probe) -> anyhow::Result<SocketAddr> {
    let listener =
        TcpListener::bind(addr).with_context(|| format!("--metrics: cannot listen on {addr}"))?;
    let bound = listener.local_addr()?;
    crate::serve::spawn(
        "sluicegate-metrics",
        move || listener.accept().map(|(stream, _)| stream),
        move |stream| {
            if let Err(e) = answer(stream, &probe) {
                tracing::debug!("metrics request: {e}");
            }
        },
    )
    .context("--metrics: cannot start the server thread")?;
    Ok(bound)
}

fn answer(mut stream: TcpStream, probe: &Probe) -> std::io::Result<()> {
    stream.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    stream.set_write_timeout(Some(CLIENT_TIMEOUT))?;
    let mut request = Vec::new();
    let mut buf = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < MAX_REQUEST_BYTES {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        request.extend_from_slice(&buf[..n]);
    }
    let first_line = request.split(|&b| b == b'\n').next().unwrap_or_default();
    let first_line = String::from_utf8_lossy(first_line);
    let mut words = first_line.split_whitespace();
    let method = words.next().unwrap_or_default();
    let path = words.next().unwrap_or_default();
    let path = path.split('?').next().unwrap_or_default();
    let text = "text/plain; charset=utf-8";
    let (status, content_type, body) = match (method, path) {
        ("GET", "/metrics") => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            probe.prometheus(),
        ),
        ("GET", _) => (
            "404 Not Found",
            text,
            "the metrics are at /metrics\n".into(),
        ),
        _ => (
            "405 Method Not Allowed",
            text,
            "only GET is served\n".into(),
        ),
    };
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}
