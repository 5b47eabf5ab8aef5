//! `sipshard check` over real fixture files: the verdicts a user sees.

use std::process::Command;

fn fixture(path: &str) -> String {
    format!("{}/../tests/fixtures/{path}", env!("CARGO_MANIFEST_DIR"))
}

fn check(paths: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sipshard"))
        .arg("check")
        .args(paths.iter().map(|p| fixture(p)))
        .output()
        .expect("run sipshard");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn accepts_a_real_register() {
    let (ok, out) = check(&["real/ndpi-sip/001-register.sip"]);
    assert!(ok, "{out}");
    assert!(
        out.contains("accepted: REGISTER sip:sip.cybercity.dk"),
        "{out}"
    );
}

#[test]
fn names_the_status_it_would_answer() {
    let (ok, out) = check(&[
        "rfc4475/badvers.dat",
        "rfc4475/insuf.dat",
        "rfc4475/bigcode.dat",
    ]);
    assert!(!ok);
    assert!(
        out.contains("badvers.dat: refused: would answer 505 Version Not Supported"),
        "{out}"
    );
    assert!(
        out.contains("insuf.dat: refused: would answer 400 Missing"),
        "{out}"
    );
    assert!(out.contains("bigcode.dat: refused: would drop"), "{out}");
}

#[test]
fn unknown_arguments_and_bad_config_exit_2_with_one_line() {
    let out = Command::new(env!("CARGO_BIN_EXE_sipshard"))
        .arg("--bogus")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown argument --bogus"));

    let out = Command::new(env!("CARGO_BIN_EXE_sipshard"))
        .args(["--set", "module::Registrar/max-expire=10"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("did you mean max-expires?"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}
