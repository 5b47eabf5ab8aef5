//! `sipshard-load options|register` against `sipshard-load responder` (and against a socket that
//! never answers), on loopback: the counts add up exactly, a 486 responder fails every request,
//! timeouts and retransmissions are counted, and the report files are valid.

use std::io::{BufRead, BufReader};
use std::net::UdpSocket;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

const LOAD: &str = env!("CARGO_BIN_EXE_sipshard-load");

/// Kills the responder even when an assertion fails.
struct Responder(Child);

impl Drop for Responder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn responder(status: &str) -> (Responder, String) {
    responder_with(&["--status", status])
}

fn responder_with(args: &[&str]) -> (Responder, String) {
    let mut child = Command::new(LOAD)
        .args(["responder", "--listen", "127.0.0.1:0"])
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start sipshard-load responder");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read address");
    let addr = line
        .trim()
        .strip_prefix("listening on udp ")
        .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
        .to_owned();
    (Responder(child), addr)
}

/// A run's exit status, stdout and stderr, and its JSON summary and .hgrm file.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    json: serde_json::Value,
    hgrm: String,
}

fn out_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("sipshard-load-test-{}-{name}", std::process::id()))
}

fn load(name: &str, args: &[&str]) -> Run {
    let json_path = out_path(&format!("{name}.json"));
    let hgrm_path = out_path(&format!("{name}.hgrm"));
    let out = Command::new(LOAD)
        .args(args)
        .arg("--json")
        .arg(&json_path)
        .arg("--hgrm")
        .arg(&hgrm_path)
        .output()
        .expect("run sipshard-load");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let text = std::fs::read_to_string(&json_path)
        .unwrap_or_else(|e| panic!("no JSON summary ({e})\n{stdout}\n{stderr}"));
    let json = serde_json::from_str(&text).unwrap_or_else(|e| panic!("invalid JSON: {e}\n{text}"));
    let hgrm = std::fs::read_to_string(&hgrm_path).expect("no .hgrm file");
    let _ = std::fs::remove_file(json_path);
    let _ = std::fs::remove_file(hgrm_path);
    Run {
        code: out.status.code(),
        stdout,
        stderr,
        json,
        hgrm,
    }
}

fn count(run: &Run, name: &str) -> u64 {
    run.json["counts"][name]
        .as_u64()
        .unwrap_or_else(|| panic!("no counts.{name} in {}", run.json))
}

/// The exact accounting every run must satisfy.
fn assert_counts_add_up(run: &Run, sent: u64) {
    let ctx = format!("{}\n{}\n{}", run.json, run.stdout, run.stderr);
    assert_eq!(count(run, "sent"), sent, "{ctx}");
    assert_eq!(
        count(run, "ok") + count(run, "failed") + count(run, "timed_out"),
        sent,
        "{ctx}"
    );
    assert_eq!(count(run, "unexpected"), 0, "{ctx}");
}

/// Checks HdrHistogram's percentile-distribution format and returns (rows, footer total count).
fn check_hgrm(text: &str) -> (Vec<(f64, f64, u64)>, u64) {
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["Value", "Percentile", "TotalCount", "1/(1-Percentile)"]
    );
    assert_eq!(lines.next(), Some(""));
    let mut rows = Vec::new();
    let mut footer = Vec::new();
    for line in lines {
        if line.starts_with("#[") {
            footer.push(line);
            continue;
        }
        assert!(footer.is_empty(), "row after the footer: {text}");
        let cols: Vec<&str> = line.split_whitespace().collect();
        let pct: f64 = cols[1].parse().unwrap();
        assert_eq!(cols.len(), if pct == 1.0 { 3 } else { 4 }, "{line}");
        rows.push((cols[0].parse().unwrap(), pct, cols[2].parse().unwrap()));
    }
    assert_eq!(footer.len(), 3, "{text}");
    assert!(footer[0].starts_with("#[Mean    =") && footer[0].contains("StdDeviation   ="));
    assert!(footer[2].starts_with("#[Buckets =") && footer[2].contains("SubBuckets     ="));
    let total = footer[1]
        .split("Total count    =")
        .nth(1)
        .unwrap()
        .trim_end_matches(']')
        .trim()
        .parse()
        .unwrap();
    (rows, total)
}

/// `--server-pid`: the responder's CPU time during the run, which answering 20,000 requests
/// makes more than nothing and, at a few µs each, far less than the 2 s run's wall time.
#[test]
fn server_pid_reports_the_servers_cpu_time_per_run() {
    let (responder, target) = responder("200");
    let pid = responder.0.id().to_string();
    let run = load(
        "server-cpu",
        &[
            "options",
            "--target",
            &target,
            "--rate",
            "10000",
            "--count",
            "20000",
            "--server-pid",
            &pid,
        ],
    );
    assert_eq!(count(&run, "ok"), 20000, "{}", run.json);
    let server = run.json["server_cpu_s"].as_f64().expect("server_cpu_s");
    assert!(server > 0.0 && server < 2.0, "{server}");
    // A pid that does not exist is a usage error, not a silent null.
    let out = Command::new(LOAD)
        .args([
            "options",
            "--target",
            &target,
            "--rate",
            "1",
            "--server-pid",
            "4194305",
        ])
        .output()
        .expect("run sipshard-load");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--server-pid"),
        "{out:?}"
    );
}

#[test]
fn options_counts_add_up_against_the_responder() {
    let (_responder, target) = responder("200");
    let run = load(
        "options",
        &[
            "options",
            "--target",
            &target,
            "--rate",
            "2000",
            "--count",
            "400",
            "--duration",
            "10",
        ],
    );
    assert_counts_add_up(&run, 400);
    assert_eq!(count(&run, "ok"), 400, "{}", run.json);
    assert_eq!(run.json["statuses"], serde_json::json!({"200": 400}));
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    // The table and the reports.
    assert!(
        run.stdout.contains("from intended send (corr.)"),
        "{}",
        run.stdout
    );
    assert_eq!(run.json["latency_ms"]["corrected"]["count"], 400);
    assert_eq!(run.json["latency_ms"]["uncorrected"]["count"], 400);
    assert_eq!(run.json["rate"]["offered"], 2000.0);
    assert_eq!(run.json["settings"]["requests_scheduled"], 400);
    assert!(
        run.json["cpu_s"]["user"].as_f64().unwrap() >= 0.0,
        "{}",
        run.json
    );
    assert_eq!(
        run.json["server_cpu_s"],
        serde_json::Value::Null,
        "no --server-pid"
    );
    let p50 = run.json["latency_ms"]["corrected"]["p50_ms"]
        .as_f64()
        .unwrap();
    let max = run.json["latency_ms"]["corrected"]["max_ms"]
        .as_f64()
        .unwrap();
    assert!(p50 > 0.0 && p50 <= max, "{}", run.json);
    let (rows, total) = check_hgrm(&run.hgrm);
    assert_eq!(total, 400);
    assert_eq!(rows.last().map(|r| r.2), Some(400));
    assert!((rows.last().unwrap().0 - max).abs() < 0.001, "{}", run.hgrm);
}

#[test]
fn register_counts_add_up_over_two_threads() {
    let (_responder, target) = responder("200");
    let run = load(
        "register",
        &[
            "register",
            "--target",
            &target,
            "--rate",
            "3000",
            "--count",
            "601",
            "--threads",
            "2",
            "--users",
            "user%06d",
            "--user-count",
            "100",
            "--expires",
            "60",
        ],
    );
    assert_counts_add_up(&run, 601);
    assert_eq!(count(&run, "ok"), 601, "{}", run.json);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
}

#[test]
fn a_486_responder_fails_every_request() {
    let (_responder, target) = responder("486");
    let run = load(
        "busy",
        &[
            "register", "--target", &target, "--rate", "2000", "--count", "300",
        ],
    );
    assert_counts_add_up(&run, 300);
    assert_eq!(count(&run, "failed"), 300, "{}", run.json);
    assert_eq!(count(&run, "ok"), 0);
    assert_eq!(run.json["statuses"], serde_json::json!({"486": 300}));
    assert!(
        run.stdout.contains("final responses by status: 486: 300"),
        "{}",
        run.stdout
    );
    // Failed requests have latencies too.
    assert_eq!(run.json["latency_ms"]["corrected"]["count"], 300);
    assert_eq!(run.code, Some(1));
}

#[test]
fn a_silent_target_times_out_after_retransmissions() {
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let target = silent.local_addr().unwrap().to_string();
    // T1 = 10 ms: Timer E at 10, 30, 70, 150, 230, ... ms, Timer F at 640 ms: 10 retransmissions.
    let started = std::time::Instant::now();
    let run = load(
        "silent",
        &[
            "options", "--target", &target, "--rate", "100", "--count", "10", "--t1-ms", "10",
        ],
    );
    assert!(started.elapsed().as_secs() < 10);
    assert_counts_add_up(&run, 10);
    assert_eq!(count(&run, "timed_out"), 10, "{}", run.json);
    assert_eq!(count(&run, "retransmissions"), 100, "{}", run.json);
    assert_eq!(run.json["latency_ms"]["corrected"]["count"], 0);
    assert_eq!(run.code, Some(1));
    // The silent socket got every transmission.
    silent.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 2048];
    let mut got = 0;
    while silent.recv_from(&mut buf).is_ok() {
        got += 1;
    }
    assert_eq!(got, 110);
}

#[test]
fn the_duration_bounds_a_run() {
    let (_responder, target) = responder("200");
    let started = std::time::Instant::now();
    let run = load(
        "duration",
        &[
            "options",
            "--target",
            &target,
            "--rate",
            "500",
            "--duration",
            "0.5",
        ],
    );
    assert!(started.elapsed().as_secs() < 5);
    assert_counts_add_up(&run, 250);
    assert!(run.stderr.lines().count() <= 2, "{}", run.stderr);
}

#[test]
fn a_ramp_sends_what_its_schedule_says() {
    let (_responder, target) = responder("200");
    // 0 to 2000/s over 0.5 s (500 requests), then 2000/s for 0.5 s (1000 more).
    let run = load(
        "ramp",
        &[
            "options",
            "--target",
            &target,
            "--rate",
            "2000",
            "--ramp-from",
            "0",
            "--ramp-secs",
            "0.5",
            "--duration",
            "1",
        ],
    );
    assert_counts_add_up(&run, 1500);
    assert_eq!(run.json["rate"]["final"], 2000.0);
    let offered = run.json["rate"]["offered"].as_f64().unwrap();
    assert!((offered - 1500.0).abs() < 2.0, "{}", run.json);
    assert_eq!(run.json["settings"]["ramp"]["secs"], 0.5);
}

#[test]
fn a_stalled_server_shows_in_the_percentiles() {
    // 200/s for 3 s; the responder stalls for 1 s after 200 answers. The ~200 requests sent
    // during the stall wait up to 1 s each (T1 of 2 s: no retransmission muddles it).
    let (_responder, target) = responder_with(&["--pause-after", "200", "--pause-ms", "1000"]);
    let run = load(
        "stall",
        &[
            "options", "--target", &target, "--rate", "200", "--count", "600", "--t1-ms", "2000",
        ],
    );
    assert_counts_add_up(&run, 600);
    assert_eq!(count(&run, "ok"), 600, "{}", run.json);
    assert_eq!(count(&run, "retransmissions"), 0, "{}", run.json);
    let corrected = &run.json["latency_ms"]["corrected"];
    let p = |name: &str| corrected[name].as_f64().unwrap();
    assert!(p("p50_ms") < 50.0, "{corrected}");
    assert!(p("p90_ms") > 500.0, "{corrected}");
    assert!(p("p99_ms") > 900.0 && p("max_ms") < 1500.0, "{corrected}");
}

#[test]
fn search_finds_the_top_rate_clean_then_measures_at_50_and_90_percent() {
    let (_responder, target) = responder("200");
    let run = load(
        "search",
        &[
            "options",
            "--target",
            &target,
            "--rate",
            "2000",
            "--duration",
            "0.2",
            "--search",
        ],
    );
    assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
    assert_eq!(run.json["search"]["best"], 2000.0, "{}", run.json);
    assert_eq!(run.json["search"]["probes"].as_array().unwrap().len(), 1);
    assert_eq!(run.json["at_50"]["rate"]["final"], 1000.0);
    assert_eq!(run.json["at_90"]["rate"]["final"], 1800.0);
    for at in ["at_50", "at_90"] {
        let c = &run.json[at]["counts"];
        assert_eq!(c["sent"], c["ok"], "{}", run.json);
    }
    // The .hgrm file is the 90% run's.
    let (_, total) = check_hgrm(&run.hgrm);
    assert_eq!(total, run.json["at_90"]["counts"]["ok"].as_u64().unwrap());
}

#[test]
fn search_reports_no_clean_rate_when_every_request_fails() {
    let (_responder, target) = responder("486");
    let run = load(
        "search-busy",
        &[
            "options",
            "--target",
            &target,
            "--rate",
            "2000",
            "--duration",
            "0.1",
            "--search",
        ],
    );
    assert_eq!(run.code, Some(1));
    assert!(run.json["search"]["best"].is_null(), "{}", run.json);
    let probes = run.json["search"]["probes"].as_array().unwrap();
    assert_eq!(probes.len(), 10);
    // Each probe halves the rate, and none is clean.
    assert_eq!(probes[1]["rate"], 1000.0);
    assert!(probes.iter().all(|p| p["clean"] == false));
    assert!(run.stdout.contains("no clean rate found"), "{}", run.stdout);
}

#[test]
fn usage_errors() {
    for args in [
        &["options", "--rate", "10"][..],
        &["options", "--target", "127.0.0.1:5060"],
        &["options", "--target", "127.0.0.1:5060", "--rate", "0"],
        &[
            "register",
            "--target",
            "127.0.0.1:5060",
            "--rate",
            "1",
            "--users",
            "nopattern",
        ],
        &[
            "options",
            "--target",
            "127.0.0.1:5060",
            "--rate",
            "1",
            "--bogus",
            "1",
        ],
    ] {
        let out = Command::new(LOAD).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
}
