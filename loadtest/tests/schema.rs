//! The JSON summaries of real runs validate against `loadtest/schema/summary.schema.json`
//! (draft 2020-12): options over UDP with a ramp and with rate steps, a call (BYE and ACK counts), register over TLS
//! with a connection per request and users from a CSV (connections, TLS settings), options over
//! WebSocket, and a `--search`. And the check can fail: summaries with a count missing, a wrong type, a negative
//! count or a field the schema does not know are refused, as is a schema keyword the validator
//! does not implement.

mod support;

use support::schema::validate;
use support::stream::{Certificates, responder, ws_responder};
use support::{load, out_path, read_json, server};

fn schema() -> serde_json::Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/schema/summary.schema.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("read the schema"))
        .expect("the schema is JSON")
}

fn run(name: &str, args: &[&str]) -> serde_json::Value {
    let (code, stdout, path) = load(name, args);
    let json = read_json(&path);
    let _ = std::fs::remove_file(path);
    assert_eq!(code, Some(0), "{name}: {stdout}\n{json}");
    json
}

#[test]
fn real_summaries_validate() {
    let schema = schema();
    let responder_udp = server("responder", &[]);
    let uas = server("uas", &[]);
    let certs = Certificates::new("schema");
    let tls = responder(Some(&certs), None);
    let ws = ws_responder(None);
    let csv = out_path("schema-users.csv");
    std::fs::write(&csv, "user,password,domain\nalice,pw\nbob,pw,example.org\n").unwrap();
    let ca = certs.path("ca.pem");
    let summaries = [
        run(
            "schema-options",
            &[
                "options",
                "--target",
                &responder_udp.addr,
                "--rate",
                "2000",
                "--ramp-from",
                "500",
                "--ramp-secs",
                "0.1",
                "--count",
                "300",
            ],
        ),
        run(
            "schema-steps",
            &[
                "options",
                "--target",
                &responder_udp.addr,
                "--steps",
                "500:0.2,1000:0.2,250:0.2",
            ],
        ),
        run(
            "schema-call",
            &[
                "call",
                "--target",
                &uas.addr,
                "--rate",
                "500",
                "--count",
                "50",
                "--hold-ms",
                "10",
            ],
        ),
        run(
            "schema-tls",
            &[
                "register",
                "--transport",
                "tls",
                "--tls-ca",
                &ca,
                "--connection-per-request",
                "--users-csv",
                csv.to_str().unwrap(),
                "--target",
                &tls.addr,
                "--rate",
                "200",
                "--count",
                "20",
            ],
        ),
        run(
            "schema-ws",
            &[
                "options",
                "--transport",
                "ws",
                "--target",
                &ws.addr,
                "--rate",
                "200",
                "--count",
                "20",
            ],
        ),
        run(
            "schema-search",
            &[
                "register",
                "--search",
                "--target",
                &responder_udp.addr,
                "--rate",
                "1000",
                "--count",
                "100",
            ],
        ),
    ];
    let _ = std::fs::remove_file(&csv);
    for summary in &summaries {
        if let Err(errors) = validate(&schema, summary) {
            panic!("{errors:#?}\n{summary}");
        }
    }
    // What each run adds is there, so the optional parts of the schema were exercised.
    assert!(summaries[0]["settings"]["ramp"].is_object());
    // 100 + 200 + 50 requests: each step's rate for its 0.2 s.
    assert_eq!(summaries[1]["counts"]["sent"], 350, "{}", summaries[1]);
    assert_eq!(summaries[1]["settings"]["steps"][1]["rate"], 1000.0);
    assert_eq!(summaries[1]["rate"]["final"], 250.0);
    assert!(summaries[2]["bye"].is_object() && summaries[2]["calls"].is_object());
    assert!(summaries[3]["connections"].is_object());
    assert_eq!(summaries[3]["settings"]["users"]["from"], "csv");
    assert_eq!(summaries[4]["settings"]["ws_path"], "/");
    assert!(summaries[5]["at_90"].is_object(), "{}", summaries[5]);
}

#[test]
fn summaries_that_break_the_schema_are_refused() {
    let schema = schema();
    let responder_udp = server("responder", &[]);
    let good = run(
        "schema-base",
        &[
            "options",
            "--target",
            &responder_udp.addr,
            "--rate",
            "1000",
            "--count",
            "20",
        ],
    );
    validate(&schema, &good).expect("the unchanged summary validates");
    let broken = |edit: &dyn Fn(&mut serde_json::Value)| {
        let mut s = good.clone();
        edit(&mut s);
        validate(&schema, &s).expect_err("refused").join("\n")
    };
    let e = broken(&|s| {
        s["counts"].as_object_mut().unwrap().remove("sent");
    });
    assert!(e.contains("/counts: sent is missing"), "{e}");
    let e = broken(&|s| s["counts"]["ok"] = serde_json::json!("20"));
    assert!(e.contains("/counts/ok: \"20\" is not of type"), "{e}");
    let e = broken(&|s| s["counts"]["failed"] = serde_json::json!(-1));
    assert!(e.contains("/counts/failed: -1 is out of range"), "{e}");
    let e = broken(&|s| s["transport"] = serde_json::json!("sctp"));
    assert!(e.contains("/transport: \"sctp\" is not one of"), "{e}");
    let e = broken(&|s| s["surprise"] = serde_json::json!(1));
    assert!(e.contains("/surprise: not allowed here"), "{e}");
    let e = broken(&|s| s["latency_ms"]["corrected"]["percentiles"][0] = serde_json::json!([0.5]));
    assert!(
        e.contains("/latency_ms/corrected/percentiles/0: 1 items (minItems 2)"),
        "{e}"
    );
    // A keyword the validator does not implement is an error, not skipped.
    let mut schema = schema;
    schema["$defs"]["count"]["multipleOf"] = serde_json::json!(1);
    let e = validate(&schema, &good).expect_err("refused").join("\n");
    assert!(e.contains("keyword multipleOf is not supported"), "{e}");
}
