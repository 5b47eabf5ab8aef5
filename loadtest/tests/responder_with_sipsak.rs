//! The responder answers a real SIP client: sipsak (Debian's `sipsak`) sends OPTIONS over UDP on
//! loopback and must get the status the responder was told to send.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// Kills the responder even when an assertion fails.
struct Responder(Child);

impl Drop for Responder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_responder(status: &str) -> (Responder, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sipshard-load"))
        .args(["responder", "--listen", "127.0.0.1:0", "--status", status])
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

fn sipsak_options(addr: &str) -> std::process::Output {
    Command::new("sipsak")
        .args(["-vv", "-s", &format!("sip:probe@{addr}")])
        .output()
        .expect("sipsak is required for this test (apt-get install sipsak; the README's test command installs it)")
}

#[test]
fn sipsak_gets_200_ok() {
    let (_responder, addr) = start_responder("200");
    let out = sipsak_options(&addr);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "sipsak failed: {text}");
    assert!(text.contains("SIP/2.0 200 OK"), "{text}");
}

#[test]
fn sipsak_sees_the_configured_error_status() {
    let (_responder, addr) = start_responder("503");
    let out = sipsak_options(&addr);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("SIP/2.0 503 Service Unavailable"), "{text}");
    assert!(
        !out.status.success(),
        "sipsak should report the 5xx as a failure"
    );
}
