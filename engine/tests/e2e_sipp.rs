//! The node end to end: the `sipshard` binary on loopback, real SIPp user agents (scenarios in
//! `tests/sipp/`) and sipsak as clients, over UDP and TCP. Registration, fetch and removal; a call
//! through the proxy (INVITE, 180, 200, ACK and BYE along the Record-Route); CANCEL; forking to
//! two phones where the losing branch is cancelled; MESSAGE.

mod support;

use support::{InjectionFile, Node, SIPP_TIMEOUT, Sipp, SippUas};

const TRANSPORTS: [&str; 2] = ["u1", "t1"];

/// A node on a free port; returns it with its `127.0.0.1:PORT`.
fn node() -> (Node, String) {
    let port = support::free_port();
    let node = Node::start_on(port, &["--threads", "2"]);
    (node, format!("127.0.0.1:{port}"))
}

/// Registers `user` at the node with `uas` as its contact (the registration is made on the
/// phone's behalf from another port, as a provisioning tool would).
fn register(target: &str, user: &str, uas: &SippUas, transport: &str) {
    let users = InjectionFile::sequential(&[&format!("{user};{};", uas.contact())]);
    Sipp::run(
        "register.xml",
        target,
        &["-inf", users.path(), "-t", transport],
        SIPP_TIMEOUT,
    )
    .assert_success(1);
}

#[test]
fn register_fetch_and_unregister() {
    let (_node, target) = node();
    for transport in TRANSPORTS {
        let users = InjectionFile::sequential(&["alice;127.0.0.1:5070;"]);
        let args = ["-inf", users.path(), "-t", transport, "-m", "3", "-r", "50"];
        Sipp::run("register.xml", &target, &args, SIPP_TIMEOUT).assert_success(3);
        Sipp::run("register_fetch.xml", &target, &args, SIPP_TIMEOUT).assert_success(3);
        Sipp::run("unregister.xml", &target, &args, SIPP_TIMEOUT).assert_success(3);
        // Nothing left to fetch.
        Sipp::run("register_fetch.xml", &target, &args, SIPP_TIMEOUT).assert_all_failed(3);
        Sipp::run("register.xml", &target, &args, SIPP_TIMEOUT).assert_success(3);
        Sipp::run("unregister_all.xml", &target, &args, SIPP_TIMEOUT).assert_success(3);
    }
}

#[test]
fn calls_through_the_proxy() {
    let (mut node, target) = node();
    for transport in TRANSPORTS {
        let uas = Sipp::spawn_uas(
            "uas_answer.xml",
            support::free_port(),
            &["-t", transport, "-m", "5"],
            SIPP_TIMEOUT,
        );
        // A user per transport: the first loop's phone is gone when the second one runs.
        let user = format!("bob-{transport}");
        register(&target, &user, &uas, transport);
        let caller = Sipp::run(
            "uac_call.xml",
            &target,
            &["-t", transport, "-s", &user, "-m", "5", "-r", "20"],
            SIPP_TIMEOUT,
        );
        caller.assert_success(5);
        uas.wait().assert_success(5);
    }
    node.process.assert_running();
}

#[test]
fn cancel_reaches_the_ringing_phone() {
    let (_node, target) = node();
    for transport in TRANSPORTS {
        let uas = Sipp::spawn_uas(
            "uas_ring_forever.xml",
            support::free_port(),
            &["-t", transport, "-m", "3"],
            SIPP_TIMEOUT,
        );
        let user = format!("carol-{transport}");
        register(&target, &user, &uas, transport);
        Sipp::run(
            "uac_cancel.xml",
            &target,
            &["-t", transport, "-s", &user, "-m", "3", "-r", "20"],
            SIPP_TIMEOUT,
        )
        .assert_success(3);
        uas.wait().assert_success(3);
    }
}

#[test]
fn forking_to_two_phones_cancels_the_one_that_did_not_answer() {
    let (_node, target) = node();
    let answering = Sipp::spawn_uas(
        "uas_answer.xml",
        support::free_port(),
        &["-m", "2"],
        SIPP_TIMEOUT,
    );
    let ringing = Sipp::spawn_uas(
        "uas_ring_forever.xml",
        support::free_port(),
        &["-m", "2"],
        SIPP_TIMEOUT,
    );
    let users = InjectionFile::sequential(&[
        &format!("dave;{};", answering.contact()),
        &format!("dave;{};", ringing.contact()),
    ]);
    Sipp::run(
        "register.xml",
        &target,
        &["-inf", users.path(), "-m", "2", "-r", "20"],
        SIPP_TIMEOUT,
    )
    .assert_success(2);
    Sipp::run(
        "uac_call.xml",
        &target,
        &["-s", "dave", "-m", "2", "-r", "5"],
        SIPP_TIMEOUT,
    )
    .assert_success(2);
    answering.wait().assert_success(2);
    // The other phone rang, got CANCEL, answered 200 and 487, and received the ACK.
    ringing.wait().assert_success(2);
}

#[test]
fn messages_are_delivered() {
    let (_node, target) = node();
    for transport in TRANSPORTS {
        let uas = Sipp::spawn_uas(
            "uas_message.xml",
            support::free_port(),
            &["-t", transport, "-m", "5"],
            SIPP_TIMEOUT,
        );
        let user = format!("erin-{transport}");
        register(&target, &user, &uas, transport);
        Sipp::run(
            "uac_message.xml",
            &target,
            &["-t", transport, "-s", &user, "-m", "5", "-r", "20"],
            SIPP_TIMEOUT,
        )
        .assert_success(5);
        uas.wait().assert_success(5);
    }
}

#[test]
fn sipsak_options_and_registration() {
    let (_node, target) = node();
    let options = std::process::Command::new("sipsak")
        .args(["-s", &format!("sip:{target}")])
        .output()
        .expect("sipsak is required (the README's test command installs it)");
    assert!(options.status.success(), "{options:?}");

    // sipsak's usrloc mode: registers itself, checks the binding, removes it.
    let usrloc = std::process::Command::new("sipsak")
        .args(["-U", "-x", "300", "-s", &format!("sip:frank@{target}")])
        .output()
        .expect("sipsak");
    let stdout = String::from_utf8_lossy(&usrloc.stdout);
    assert!(usrloc.status.success(), "{stdout}\n{usrloc:?}");
}
