//! The SIPp scenarios of `tests/sipp/` and the end-to-end harness (`engine/tests/support`),
//! checked before the node exists: the client scenarios against `sipshard-load responder` (a
//! stateless server answering 200 to everything, without Contact), and every client scenario
//! against its SIPp server counterpart, both ends real SIPp, over UDP and TCP. The checks the
//! scenarios make are shown to fail when they should, too, so a green end-to-end test later
//! means what it says.

#[path = "../../engine/tests/support/mod.rs"]
mod support;

use std::time::Duration;

use support::{InjectionFile, Process, SIPP_TIMEOUT, Sipp, SippResult};

const RESPONDER: &str = env!("CARGO_BIN_EXE_sipshard-load");
/// Calls per run against the responder, and their rate (calls per second).
const CALLS: u64 = 20;
const RATE: &str = "100";

/// The responder on a port of its choosing; returns it and its address.
fn responder() -> (Process, String) {
    let process = Process::start(
        RESPONDER,
        &["responder", "--listen", "127.0.0.1:0", "--status", "200"],
    );
    let addr = process
        .ready_addr()
        .unwrap_or_else(|| panic!("no address in {:?}", process.ready_line()));
    (process, addr.to_string())
}

fn against_responder(target: &str, scenario: &str, extra: &[&str]) -> SippResult {
    let calls = CALLS.to_string();
    let mut args = vec!["-m", calls.as_str(), "-r", RATE, "-t", "u1"];
    args.extend_from_slice(extra);
    Sipp::run(scenario, target, &args, SIPP_TIMEOUT)
}

#[test]
fn registrations_against_the_responder() {
    let (_responder, target) = responder();
    let users = InjectionFile::sequential(&["alice;127.0.0.1:5070;"]);
    // The responder's 200 lists no binding: register.xml's Contact check must be switched off.
    let lax = ["-inf", users.path(), "-set", "allow_no_contact", "1"];
    against_responder(&target, "register.xml", &lax).assert_success(CALLS);
    against_responder(&target, "register_fetch.xml", &lax).assert_success(CALLS);
    // A 200 without Contact is what the unregister scenarios want anyway.
    let strict = ["-inf", users.path()];
    against_responder(&target, "unregister.xml", &strict).assert_success(CALLS);
    against_responder(&target, "unregister_all.xml", &strict).assert_success(CALLS);
}

#[test]
fn message_against_the_responder() {
    let (_responder, target) = responder();
    against_responder(&target, "uac_message.xml", &["-s", "bob"]).assert_success(CALLS);
}

#[test]
fn call_against_the_responder() {
    let (mut responder, target) = responder();
    // No 100, no 180, a 200 without Contact: ACK and BYE go to the Request-URI.
    let lax = ["-s", "bob", "-set", "allow_no_contact", "1"];
    against_responder(&target, "uac_call.xml", &lax).assert_success(CALLS);
    responder.assert_running();
}

#[test]
fn contact_checks_fail_against_the_responder() {
    let (_responder, target) = responder();
    let users = InjectionFile::sequential(&["alice;127.0.0.1:5070;"]);
    for scenario in ["register.xml", "register_fetch.xml"] {
        let result = Sipp::run(
            scenario,
            &target,
            &["-inf", users.path(), "-m", "3", "-r", RATE],
            SIPP_TIMEOUT,
        );
        result.assert_all_failed(3);
        assert!(
            result.errors.contains("Failed regexp match"),
            "the Contact check should be what failed\n{result:?}"
        );
    }
    let result = Sipp::run(
        "uac_call.xml",
        &target,
        &["-s", "bob", "-m", "3", "-r", RATE],
        SIPP_TIMEOUT,
    );
    result.assert_all_failed(3);
    assert!(
        result.errors.contains("allow_no_contact=#contact="),
        "the Contact check should be what failed\n{result:?}"
    );
}

/// Runs `uac` against `uas` (both SIPp, no node) for `calls` calls over `transport` (`u1` or
/// `t1`), and asserts that both ends saw every call succeed.
fn pair(uas: &str, uac: &str, transport: &str, calls: u64, uas_extra: &[&str], uac_extra: &[&str]) {
    let calls = calls.to_string();
    let port = support::free_port();
    let mut uas_args = vec!["-t", transport, "-m", calls.as_str()];
    uas_args.extend_from_slice(uas_extra);
    let server = Sipp::spawn_uas(uas, port, &uas_args, SIPP_TIMEOUT);
    let mut uac_args = vec![
        "-t",
        transport,
        "-m",
        calls.as_str(),
        "-r",
        "50",
        "-s",
        "bob",
    ];
    uac_args.extend_from_slice(uac_extra);
    let client = Sipp::run(uac, &format!("127.0.0.1:{port}"), &uac_args, SIPP_TIMEOUT);
    let server = server.wait();
    let n = calls.parse().unwrap_or_else(|e| panic!("{calls}: {e}"));
    client.assert_success(n);
    server.assert_success(n);
}

#[test]
fn call_against_sipp_uas() {
    for transport in ["u1", "t1"] {
        pair("uas_answer.xml", "uac_call.xml", transport, 5, &[], &[]);
    }
}

#[test]
fn cancel_against_sipp_uas() {
    for transport in ["u1", "t1"] {
        pair(
            "uas_ring_forever.xml",
            "uac_cancel.xml",
            transport,
            5,
            &[],
            &[],
        );
    }
}

#[test]
fn message_against_sipp_uas() {
    for transport in ["u1", "t1"] {
        pair("uas_message.xml", "uac_message.xml", transport, 5, &[], &[]);
    }
}

#[test]
fn registrations_against_a_registrar_stub() {
    // The stub lists the binding of its own injection file, after two decoys.
    let users = InjectionFile::sequential(&["alice;127.0.0.1:5070;"]);
    let inf = ["-inf", users.path()];
    for transport in ["u1", "t1"] {
        pair(
            "uas_registrar_stub.xml",
            "register.xml",
            transport,
            3,
            &inf,
            &inf,
        );
        pair(
            "uas_registrar_stub.xml",
            "register_fetch.xml",
            transport,
            3,
            &inf,
            &inf,
        );
    }
}

#[test]
fn registration_checks_fail_against_a_registrar_stub() {
    let listed = InjectionFile::sequential(&["alice;127.0.0.1:5070;"]);
    // Same user and host, a port that starts like the listed one: must not pass for it.
    let other = InjectionFile::sequential(&["alice;127.0.0.1:507;"]);
    for (uac, uac_users) in [
        ("register.xml", &other),
        ("register_fetch.xml", &other),
        ("unregister.xml", &listed),
        ("unregister_all.xml", &listed),
    ] {
        let port = support::free_port();
        let server = Sipp::spawn_uas(
            "uas_registrar_stub.xml",
            port,
            &["-inf", listed.path(), "-m", "2"],
            SIPP_TIMEOUT,
        );
        let client = Sipp::run(
            uac,
            &format!("127.0.0.1:{port}"),
            &["-inf", uac_users.path(), "-m", "2", "-r", "50"],
            SIPP_TIMEOUT,
        );
        server.wait().assert_success(2);
        client.assert_all_failed(2);
        assert!(
            client.errors.contains("Failed regexp match")
                || client.errors.contains("Regexp matched but should not"),
            "{uac}: the Contact check should be what failed\n{client:?}"
        );
    }
}

#[test]
fn sipp_runs_are_bounded_in_time() {
    // Nobody answers: SIPp must give up at its -timeout, report it, and not hang the test.
    let silent = support::free_port();
    let started = std::time::Instant::now();
    let result = Sipp::run(
        "uac_message.xml",
        &format!("127.0.0.1:{silent}"),
        &["-s", "bob"],
        Duration::from_secs(2),
    );
    assert!(started.elapsed() < Duration::from_secs(10), "{result:?}");
    assert_ne!(result.exit_code, Some(0), "{result:?}");
    assert!(result.errors.contains("timed out"), "{result:?}");
}
