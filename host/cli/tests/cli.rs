//! The `sluicegate` binary itself: exit codes and what it prints.

use std::process::Command;

use sluicegate_test_artifacts as a;

/// The compile cache the tests' runs share (not the user's).
const CACHE: &str = concat!(env!("CARGO_TARGET_TMPDIR"), "/compile-cache");

fn sluicegate(args: &[&str]) -> (bool, String, String) {
    sluicegate_with_cache(args, CACHE)
}

fn sluicegate_with_cache(args: &[&str], cache: &str) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sluicegate"))
        .args(args)
        .env("RUST_LOG", "off")
        .env("SLUICEGATE_CACHE_DIR", cache)
        .env_remove("SLUICEGATE_FAST_PATH")
        .output()
        .expect("run sluicegate");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_passes_a_good_stage_with_exit_code_zero() {
    let (ok, stdout, _) = sluicegate(&["check", a::TICK_SOURCE, "--config", "records=300"]);
    assert!(ok, "{stdout}");
    assert!(stdout.contains("256: 300 records"), "{stdout}");
    assert!(stdout.contains("result: ok"), "{stdout}");
    assert!(
        stdout.contains("path: core (the fast path)"),
        "the report says which path the stage runs on: {stdout}"
    );
}

#[test]
fn check_json_gives_one_entry_per_rule_and_the_exit_code_follows_it() {
    let (ok, stdout, _) = sluicegate(&[
        "check",
        a::PASSTHROUGH,
        "--json",
        "--deterministic",
        "--swap",
    ]);
    assert!(ok, "{stdout}");
    let report = json(&stdout);
    assert_eq!(report["passed"], true);
    let rules = report["rules"].as_array().expect("rules");
    let ids: Vec<&str> = rules.iter().filter_map(|r| r["id"].as_str()).collect();
    assert_eq!(
        ids,
        [
            "W1", "P1", "P3", "S1", "R3", "C2", "C1", "E1", "S3", "R4", "R5", "X1", "K1", "H1",
            "K2"
        ]
    );
    assert!(rules.iter().all(|r| r["verdict"] == "pass"), "{stdout}");

    let (ok, stdout, _) = sluicegate(&["check", a::BAD_FRAMING, "--json"]);
    assert!(!ok, "{stdout}");
    let report = json(&stdout);
    assert_eq!(report["passed"], false);
    let c1 = report["rules"]
        .as_array()
        .and_then(|rules| rules.iter().find(|r| r["id"] == "C1"))
        .expect("C1");
    assert_eq!(c1["verdict"], "fail");
    assert_eq!(c1["error_kind"], "protocol-violation");
}

#[test]
fn check_credits_and_input_options() {
    let dir = std::env::temp_dir().join(format!("sluicegate-cli-input-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let input = dir.join("input.txt");
    std::fs::write(&input, "a\nbb\nccc\n").expect("input");
    let input = input.to_string_lossy().into_owned();
    let (ok, stdout, _) = sluicegate(&[
        "check",
        a::PASSTHROUGH,
        "--input",
        &input,
        "--credits",
        "2,5",
    ]);
    assert!(ok, "{stdout}");
    assert!(
        stdout.contains(
            "credits 2: 3 records in 2 chunks, largest 2, then none; 5: 3 records in 1 chunks"
        ),
        "{stdout}"
    );
}

#[test]
fn check_names_the_broken_rule_with_a_nonzero_exit_code() {
    let (ok, stdout, stderr) = sluicegate(&["check", a::CREDITS_EXCEEDED]);
    assert!(!ok, "{stdout}");
    assert!(
        stdout.contains("result: FAIL (1 rule(s) failed, first C2 credits)"),
        "{stdout}"
    );
    assert!(
        stderr.contains("C2 credits failed: stage `credits_exceeded`: protocol violation C2"),
        "{stderr}"
    );
}

#[test]
fn compiled_components_are_cached_on_disk_unless_told_not_to() {
    let dir = std::env::temp_dir().join(format!("sluicegate-cli-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let cache = dir.to_string_lossy().into_owned();
    let files = || walk(&dir);
    let (ok, stdout, _) = sluicegate_with_cache(&["--no-cache", "check", a::COUNTER], &cache);
    assert!(ok, "{stdout}");
    assert_eq!(files(), 0, "--no-cache writes nothing");
    let (ok, stdout, _) = sluicegate_with_cache(&["check", a::COUNTER], &cache);
    assert!(ok, "{stdout}");
    let cached = files();
    assert!(cached > 0, "the compiled component was written to {cache}");
    // A second load of the same component is served from the cache: no new artifact is
    // written, and the verdict is the same.
    let (ok, again, _) = sluicegate_with_cache(&["check", a::COUNTER], &cache);
    assert!(ok, "{again}");
    assert_eq!(files(), cached);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Compiled artifacts below `dir`, recursively (0 if it does not exist): files without a dot
/// in their name (wasmtime's cache worker also writes `.stats` and `.cleanup` files).
fn walk(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| {
                    let path = e.path();
                    if path.is_dir() {
                        walk(&path)
                    } else {
                        usize::from(!e.file_name().to_string_lossy().contains('.'))
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}

#[test]
fn check_refuses_a_file_that_is_not_a_component() {
    let this_file = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/cli.rs");
    let (ok, stdout, _) = sluicegate(&["check", this_file]);
    assert!(!ok);
    assert!(
        stdout.contains("W1  world                FAIL")
            && stdout.contains("not a WebAssembly file"),
        "{stdout}"
    );
}

const MARKET: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/market.toml");

fn json(stdout: &str) -> serde_json::Value {
    serde_json::from_str(stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

#[test]
fn run_json_reports_every_hop_and_a_stable_checksum() {
    let args = [
        "run",
        "--json",
        MARKET,
        "--records",
        "5000",
        "--credits",
        "64",
    ];
    let (ok, stdout, stderr) = sluicegate(&args);
    assert!(ok, "{stderr}\n{stdout}");
    let report = json(&stdout);
    assert_eq!(report["status"], "ok");
    assert_eq!(report["credits"], 64);
    let hops: Vec<&str> = report["hops"]
        .as_array()
        .expect("hops")
        .iter()
        .filter_map(|h| h["name"].as_str())
        .collect();
    assert_eq!(hops, ["ticks", "decode", "filter", "vwap", "strategy"]);
    assert_eq!(report["hops"][0]["records_out"], 5000);
    assert!(report["hops"][4]["resume_p99_us"].as_f64().expect("p99") > 0.0);
    for hop in report["hops"].as_array().expect("hops") {
        assert_eq!(
            hop["path"], "core",
            "each stage says which path it runs on: {hop}"
        );
    }
    assert!(report["failure"].is_null());
    let (_, again, _) = sluicegate(&args);
    assert_eq!(json(&again)["sink"]["checksum"], report["sink"]["checksum"]);
}

#[test]
fn run_of_a_failing_pipeline_exits_nonzero_and_names_the_stage() {
    let dir = std::env::temp_dir().join(format!("sluicegate-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("failing.toml");
    let toml = format!(
        "[[stage]]\nname = \"fragile\"\ncomponent = {:?}\n[[stage]]\nname = \"map\"\ncomponent = {:?}\n",
        a::TRAP_MID_STREAM,
        a::PASSTHROUGH
    );
    std::fs::write(&file, toml).expect("write");
    let (ok, stdout, stderr) = sluicegate(&["run", "--json", file.to_str().expect("path")]);
    assert!(!ok);
    let report = json(&stdout);
    assert_eq!(report["status"], "failed");
    assert_eq!(report["failure"]["stage"], "fragile");
    assert_eq!(report["failure"]["kind"], "trap");
    assert!(stderr.contains("failed in stage `fragile`"), "{stderr}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn run_refuses_a_bad_pipeline_file_with_its_name() {
    let (ok, _, stderr) = sluicegate(&["run", "/nonexistent/pipeline.toml"]);
    assert!(!ok);
    assert!(
        stderr.contains("pipeline file /nonexistent/pipeline.toml"),
        "{stderr}"
    );
}

#[test]
fn demo_runs_the_market_pipeline() {
    let (ok, stdout, stderr) = sluicegate(&["demo", "--records", "3000"]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("ticks in: 3000, orders out:"), "{stdout}");
    assert!(stdout.contains("status: ok"), "{stdout}");
}

#[test]
fn demo_fused_gives_the_same_orders_as_the_isolated_demo() {
    let (ok, isolated, stderr) = sluicegate(&["demo", "--records", "20000", "--json"]);
    assert!(ok, "{stderr}\n{isolated}");
    let (ok, fused, stderr) = sluicegate(&["demo", "--records", "20000", "--json", "--fused"]);
    assert!(ok, "{stderr}\n{fused}");
    let (isolated, fused) = (json(&isolated), json(&fused));
    assert_eq!(fused["sink"]["checksum"], isolated["sink"]["checksum"]);
    assert_eq!(fused["sink"]["records"], isolated["sink"]["records"]);
    assert_eq!(
        fused["hops"].as_array().map(Vec::len),
        Some(1),
        "one fused hop"
    );
}

fn write_pipeline(name: &str, toml: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("sluicegate-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("pipeline.toml");
    std::fs::write(&file, toml).expect("write");
    file
}

#[test]
fn run_with_a_hostile_stage_names_it_and_the_limit_and_exits_nonzero() {
    let file = write_pipeline(
        "hostile",
        &format!(
            "[[stage]]\nname = \"spinner\"\ncomponent = {:?}\nlimits = {{ cpu_ms = 50 }}\n[[stage]]\nname = \"map\"\ncomponent = {:?}\n",
            a::LOOPS_IN_RESUME,
            a::PASSTHROUGH
        ),
    );
    let (ok, stdout, stderr) = sluicegate(&["run", file.to_str().expect("path")]);
    assert!(!ok);
    assert!(
        stdout.contains("stage `spinner` (limit-exceeded)")
            && stdout.contains("limit exceeded: cpu"),
        "{stdout}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn run_with_restart_completes_and_reports_the_restarts() {
    let file = write_pipeline(
        "restart",
        &format!(
            "[[stage]]\nname = \"counter\"\ncomponent = {:?}\nconfig = {{ records = 40 }}\n\
             [[stage]]\nname = \"strategy\"\ncomponent = {:?}\nconfig = {{ poison = \"21\" }}\non_fault = \"restart\"\n\
             [sink]\ncredits = 4\n",
            a::COUNTER,
            a::POISON_PILL
        ),
    );
    let (ok, stdout, stderr) = sluicegate(&["run", "--json", file.to_str().expect("path")]);
    assert!(ok, "{stderr}");
    let report = json(&stdout);
    assert_eq!(report["status"], "ok");
    assert_eq!(report["hops"][1]["restarts"], 1);
    assert_eq!(report["hops"][1]["quarantined_records"], 4);
    assert_eq!(report["sink"]["records"], 36);
    assert_eq!(report["recovered"][0]["stage"], "strategy");
}

#[test]
fn run_reads_stdin_and_writes_stdout() {
    use std::io::Write as _;
    let file = write_pipeline(
        "stdio",
        &format!(
            "[source]\nkind = \"stdin\"\n[[stage]]\nname = \"map\"\ncomponent = {:?}\n[sink]\nkind = \"stdout\"\ncredits = 2\n",
            a::PASSTHROUGH
        ),
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluicegate"))
        .env("SLUICEGATE_CACHE_DIR", CACHE)
        .args(["run", file.to_str().expect("path")])
        .env("RUST_LOG", "off")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"buy 100\nsell 50\nhold\n")
        .expect("write");
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout, "buy 100\nsell 50\nhold\n",
        "only the records on stdout"
    );
}

/// One line in, one tagged line out, through a running `sluicegate run`.
struct Interactive {
    stdin: std::process::ChildStdin,
    stdout: std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
}

impl Interactive {
    fn send(&mut self, n: u32) -> (u32, String) {
        use std::io::Write as _;
        writeln!(self.stdin, "{n}").expect("write");
        self.stdin.flush().expect("flush");
        let line = self.stdout.next().expect("a line").expect("utf-8");
        let (number, tag) = line.split_once(':').expect("tagged");
        (number.parse().expect("number"), tag.to_string())
    }

    /// Sends lines until one comes back with `tag`; returns every (number, tag) seen.
    fn until(&mut self, next: &mut u32, tag: &str) -> Vec<(u32, String)> {
        let mut seen = Vec::new();
        for _ in 0..400 {
            let got = self.send(*next);
            *next += 1;
            let done = got.1 == tag;
            seen.push(got);
            if done {
                return seen;
            }
            std::thread::sleep(std::time::Duration::from_millis(25));
        }
        panic!("no record tagged {tag} after 400 lines: {seen:?}");
    }
}

#[test]
fn run_watch_and_control_swap_a_running_stage_with_every_record_once() {
    use std::io::BufRead as _;
    let dir = std::env::temp_dir().join(format!("sluicegate-watch-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::copy(a::TAG_V1, dir.join("tag.wasm")).expect("copy v1");
    let pipeline = dir.join("pipeline.toml");
    std::fs::write(
        &pipeline,
        "[source]\nkind = \"stdin\"\n[[stage]]\nname = \"tagger\"\ncomponent = \"tag.wasm\"\n\
         [sink]\nkind = \"stdout\"\ncredits = 1\n",
    )
    .expect("pipeline");
    let socket = dir.join("control.sock");
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluicegate"))
        .env("SLUICEGATE_CACHE_DIR", CACHE)
        .args(["run", "--watch", "--control"])
        .arg(&socket)
        .arg(&pipeline)
        .env("RUST_LOG", "off")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut io = Interactive {
        stdin: child.stdin.take().expect("stdin"),
        stdout: std::io::BufReader::new(child.stdout.take().expect("stdout")).lines(),
    };
    let mut seen: Vec<(u32, String)> = (0..3).map(|n| io.send(n)).collect();
    let mut next = 3;
    assert!(seen.iter().all(|(_, tag)| tag == "v1"));

    // --watch: a new build lands (written aside, then renamed, as build tools do).
    std::fs::copy(a::TAG_V2, dir.join("tag.wasm.tmp")).expect("copy v2");
    std::fs::rename(dir.join("tag.wasm.tmp"), dir.join("tag.wasm")).expect("rename");
    seen.extend(io.until(&mut next, "v2"));

    // --control with a broken file: refused at load, before it can reach the stage; the run
    // keeps v2 (checked by the records that follow).
    std::fs::write(dir.join("broken.wasm"), b"\0asm garbage").expect("broken file");
    let refused = Command::new(env!("CARGO_BIN_EXE_sluicegate"))
        .env("SLUICEGATE_CACHE_DIR", CACHE)
        .args(["swap", "--control"])
        .arg(&socket)
        .arg("tagger")
        .arg(dir.join("broken.wasm"))
        .output()
        .expect("swap client");
    let answer = String::from_utf8_lossy(&refused.stdout);
    assert!(
        !refused.status.success() && answer.starts_with("error:") && answer.contains("tagger"),
        "{answer}"
    );
    let after_refusal = io.send(next);
    next += 1;
    assert_eq!(after_refusal.1, "v2", "the refused swap changed nothing");
    seen.push(after_refusal);

    // --control: `sluicegate swap` back to v1. It waits for the chunk boundary, which comes
    // with the next line, so it runs beside us.
    let control = socket.clone();
    let client = std::thread::spawn(move || {
        Command::new(env!("CARGO_BIN_EXE_sluicegate"))
            .env("SLUICEGATE_CACHE_DIR", CACHE)
            .args(["swap", "--control"])
            .arg(&control)
            .args(["tagger", a::TAG_V1])
            .output()
    });
    seen.extend(io.until(&mut next, "v1"));
    let client = client.join().expect("client thread").expect("client ran");
    let answer = String::from_utf8_lossy(&client.stdout);
    assert!(
        client.status.success() && answer.starts_with("ok: swapped stage `tagger`"),
        "{answer}"
    );

    drop(io);
    let out = child
        .wait_with_output()
        .expect("the run ends with its input");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let numbers: Vec<u32> = seen.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        numbers,
        (0..next).collect::<Vec<_>>(),
        "every record once, in order"
    );
    let switches = seen.windows(2).filter(|w| w[0].1 != w[1].1).count();
    assert_eq!(switches, 2, "v1 -> v2 -> v1: {seen:?}");
    let report = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        report.matches("swapped stage `tagger`").count(),
        2,
        "{report}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// Starts `sluicegate run --json` on `pipeline` (TOML) in the background and returns once its
/// run has begun (the control socket appears just before it), with the scratch directory.
fn start_long_run(name: &str, pipeline: &str) -> (std::process::Child, std::path::PathBuf) {
    start_long_run_with(name, pipeline, &[])
}

/// [`start_long_run`] with more command-line arguments.
fn start_long_run_with(
    name: &str,
    pipeline: &str,
    extra: &[&str],
) -> (std::process::Child, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("sluicegate-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("long.toml");
    std::fs::write(&file, pipeline).expect("pipeline");
    let socket = dir.join("control.sock");
    let child = Command::new(env!("CARGO_BIN_EXE_sluicegate"))
        .args(["run", "--json", "--control"])
        .arg(&socket)
        .args(extra)
        .arg(&file)
        .env("RUST_LOG", "off")
        .env("SLUICEGATE_CACHE_DIR", CACHE)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    for _ in 0..400 {
        if socket.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
    (child, dir)
}

fn signal(child: &std::process::Child, signal: &str) {
    let sent = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(sent.success(), "kill {signal}");
}

/// Interrupts a run started by [`start_long_run`] and returns its JSON report.
fn interrupt(child: std::process::Child, dir: std::path::PathBuf) -> serde_json::Value {
    signal(&child, "-INT");
    let out = child.wait_with_output().expect("wait");
    let _ = std::fs::remove_dir_all(dir);
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    json(&String::from_utf8_lossy(&out.stdout))
}

#[test]
fn ctrl_c_stops_a_run_cleanly_with_its_report() {
    let (child, dir) = start_long_run(
        "sigint",
        &format!(
            "[[stage]]\nname = \"counter\"\ncomponent = {:?}\nconfig = {{ records = 1000000000 }}\n",
            a::COUNTER
        ),
    );
    let report = interrupt(child, dir);
    assert_eq!(report["status"], "ok");
    assert_eq!(report["stopped"], true);
    assert_eq!(report["hops"][0]["state"], "closed");
}

/// The CPU budget charges a stage its own CPU time, not the wall time a busy or stalled
/// machine keeps it waiting: a run stopped (SIGSTOP) for longer than the 500 ms budget per
/// call, several times, mostly in the middle of some stage's call, carries on unharmed.
#[test]
fn a_run_stalled_longer_than_the_cpu_budget_is_not_faulted() {
    let mut toml = format!(
        "[[stage]]\nname = \"counter\"\ncomponent = {:?}\nconfig = {{ records = 1000000000 }}\n",
        a::COUNTER
    );
    for i in 0..4 {
        toml += &format!(
            "[[stage]]\nname = \"pass{i}\"\ncomponent = {:?}\n",
            a::PASSTHROUGH
        );
    }
    toml += "[sink]\nkind = \"discard\"\ncredits = 1\n";
    let (child, dir) = start_long_run("sigstop", &toml);
    for _ in 0..4 {
        signal(&child, "-STOP");
        std::thread::sleep(std::time::Duration::from_millis(700));
        signal(&child, "-CONT");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let report = interrupt(child, dir);
    assert_eq!(report["status"], "ok", "{report:#}");
    assert_eq!(report["stopped"], true);
}

/// One HTTP GET on `addr` (host:port); the status line and the body.
fn http_get(addr: &str, path: &str) -> (String, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("connect to the metrics server");
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").expect("request");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("answer");
    let (head, body) = answer.split_once("\r\n\r\n").expect("headers end");
    (
        head.lines().next().unwrap_or_default().to_string(),
        body.to_string(),
    )
}

/// The value of the sample `name{labels}` in a Prometheus text page.
fn sample(page: &str, name_and_labels: &str) -> Option<f64> {
    page.lines()
        .find_map(|line| line.strip_prefix(name_and_labels)?.trim().parse().ok())
}

#[test]
fn run_metrics_serves_every_hop_for_prometheus_while_the_pipeline_runs() {
    let toml = format!(
        "name = \"long\"\n[[stage]]\nname = \"counter\"\ncomponent = {:?}\nconfig = {{ records = 1000000000 }}\n\
         [[stage]]\nname = \"map\"\ncomponent = {:?}\n",
        a::COUNTER,
        a::PASSTHROUGH
    );
    let (mut child, dir) = start_long_run_with("metrics", &toml, &["--metrics", "127.0.0.1:0"]);
    let mut stderr = std::io::BufReader::new(child.stderr.take().expect("stderr"));
    let addr = {
        use std::io::BufRead;
        let mut line = String::new();
        loop {
            line.clear();
            if stderr.read_line(&mut line).expect("stderr line") == 0 {
                panic!("the run ended without printing its metrics address");
            }
            if let Some(url) = line.trim().strip_prefix("metrics: http://") {
                break url.trim_end_matches("/metrics").to_string();
            }
        }
    };
    let (status, first) = http_get(&addr, "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK", "{first}");
    let records = |page: &str| {
        sample(
            page,
            "sluicegate_records_total{pipeline=\"long\",stage=\"map\"}",
        )
    };
    let before = records(&first).expect("the map's records");
    // Records flow between scrapes (polled: a loaded machine may starve the run a while).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let second = loop {
        std::thread::sleep(std::time::Duration::from_millis(50));
        let (_, page) = http_get(&addr, "/metrics");
        let after = records(&page).expect("the map's records");
        if after > before {
            break page;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no records flowed in 20 s: {before} then {after}"
        );
    };
    assert!(
        second.contains("# TYPE sluicegate_records_total counter"),
        "{second}"
    );
    assert!(
        sample(
            &second,
            "sluicegate_stage_state{pipeline=\"long\",stage=\"counter\",state=\"suspended\"}"
        )
        .is_some()
            || second.contains("stage=\"counter\",state=\"running\""),
        "{second}"
    );
    assert!(sample(&second, "sluicegate_sink_records_total{pipeline=\"long\"}").is_some());
    let (status, _) = http_get(&addr, "/elsewhere");
    assert_eq!(status, "HTTP/1.1 404 Not Found");
    let report = interrupt(child, dir);
    assert_eq!(report["status"], "ok");
}

#[test]
fn logs_piped_to_a_file_or_a_pipe_carry_no_colour_codes() {
    // stderr is a pipe here, as in CI or `2> file`: the log must be plain text.
    let out = Command::new(env!("CARGO_BIN_EXE_sluicegate"))
        .args(["demo", "--records", "2000"])
        .env("RUST_LOG", "stage=info")
        .env_remove("NO_COLOR")
        .env("SLUICEGATE_CACHE_DIR", CACHE)
        .output()
        .expect("run sluicegate");
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("decoder closed"),
        "the stage's log line is there: {stderr}"
    );
    assert!(!stderr.contains('\u{1b}'), "an escape code in {stderr:?}");
}
