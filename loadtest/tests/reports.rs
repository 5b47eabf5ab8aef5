//! The report commands on real runs against `sipshard-load responder`: the JSON summary's
//! timeline adds up to its counts, `plot` writes well-formed SVG with one line per run, and
//! `compare` prints the ratios of two summaries.

mod support;

use std::process::Command;

use support::{LOAD, load, out_path, read_json, server};

fn options_run(name: &str, target: &str, rate: &str, count: &str) -> std::path::PathBuf {
    let (code, stdout, json) = load(
        name,
        &[
            "options", "--target", target, "--rate", rate, "--count", count,
        ],
    );
    assert_eq!(code, Some(0), "{stdout}");
    json
}

#[test]
fn the_timeline_adds_up_and_plots_are_well_formed_svg() {
    let responder = server("responder", &[]);
    // 1,500 requests at 1,000/s: seconds 0 and 1 (and a short drain).
    let a = options_run("plot-a", &responder.addr, "1000", "1500");
    let b = options_run("plot-b", &responder.addr, "2000", "1000");
    let run = read_json(&a);
    let timeline = run["timeline"].as_array().expect("timeline");
    assert!((2..=3).contains(&timeline.len()), "{run}");
    let sum = |name: &str| -> u64 { timeline.iter().map(|s| s[name].as_u64().unwrap()).sum() };
    assert_eq!(sum("sent"), 1500);
    assert_eq!(sum("ok"), run["counts"]["ok"].as_u64().unwrap());
    // The first second sends its share of the schedule: 1000, or a few less when the shard was
    // descheduled for a few milliseconds just before the second ended (two cores shared with
    // the responder and other tests); those few then count in the next second.
    let first = timeline[0]["sent"].as_u64().unwrap();
    assert!((990..=1000).contains(&first), "{run}");
    assert_eq!(timeline[0]["t_s"], 0);
    assert_eq!(timeline[0]["span_s"], 1.0);
    assert!(timeline[0]["p99_ms"].as_f64().unwrap() > 0.0);

    let latency_svg = out_path("latency.svg");
    let out = Command::new(LOAD)
        .args(["plot", "--latency"])
        .args([&a, &b])
        .arg("-o")
        .arg(&latency_svg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let svg = std::fs::read_to_string(&latency_svg).unwrap();
    let names = support::well_formed(&svg).unwrap_or_else(|e| panic!("{e}\n{svg}"));
    assert_eq!(names[0], "svg");
    assert_eq!(names.iter().filter(|n| *n == "polyline").count(), 2);
    let stem = a.file_stem().unwrap().to_string_lossy().into_owned();
    assert!(
        svg.contains(&format!(">{stem} (options, 1000/s)</text>")),
        "{svg}"
    );

    let timeline_svg = out_path("timeline.svg");
    let out = Command::new(LOAD)
        .args(["plot", "--timeline"])
        .arg(&a)
        .arg("-o")
        .arg(&timeline_svg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let svg = std::fs::read_to_string(&timeline_svg).unwrap();
    let names = support::well_formed(&svg).unwrap_or_else(|e| panic!("{e}\n{svg}"));
    assert!(names.iter().filter(|n| *n == "polyline").count() >= 4);

    // Usage errors: nothing to plot, a file that is not a summary.
    let bad = out_path("not-a-summary.json");
    std::fs::write(&bad, "{\"x\": 1}").unwrap();
    for args in [
        vec!["plot".to_owned(), "-o".into(), "x.svg".into()],
        vec![
            "plot".into(),
            "--latency".into(),
            bad.to_string_lossy().into_owned(),
            "-o".into(),
            "x.svg".into(),
        ],
    ] {
        let out = Command::new(LOAD).args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
    for path in [a, b, latency_svg, timeline_svg, bad] {
        let _ = std::fs::remove_file(path);
    }
}
#[test]
fn the_xml_check_rejects_what_is_not_well_formed() {
    assert!(
        support::well_formed(r#"<?xml version="1.0"?><svg a="1"><g/><text>x &amp; y</text></svg>"#)
            .is_ok()
    );
    for bad in [
        "<svg><g></svg>",
        "<svg a=1/>",
        r#"<svg a="1" a="2"/>"#,
        "<svg>&nbsp;</svg>",
        "<svg/><svg/>",
        "<svg>x < y</svg>",
        r#"<svg a="<"/>"#,
        "<svg>",
    ] {
        assert!(support::well_formed(bad).is_err(), "{bad}");
    }
}

#[test]
fn compare_prints_the_ratios_of_two_runs() {
    let responder = server("responder", &[]);
    let a = options_run("compare-a", &responder.addr, "1000", "300");
    let b = options_run("compare-b", &responder.addr, "2000", "600");
    let out = Command::new(LOAD)
        .arg("compare")
        .args([&a, &b])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    let (ja, jb) = (read_json(&a), read_json(&b));
    let row = |title: &str| -> Vec<String> {
        let line = table
            .lines()
            .find(|l| l.starts_with(title))
            .unwrap_or_else(|| panic!("no {title} in\n{table}"));
        line[22..].split_whitespace().map(str::to_owned).collect()
    };
    assert_eq!(row("sent"), ["300", "600", "2.000"]);
    assert_eq!(row("offered/s"), ["1000.0", "2000.0", "2.000"]);
    // The p99 ratio is the ratio of the files' p99s.
    let p99 = |j: &serde_json::Value| j["latency_ms"]["corrected"]["p99_ms"].as_f64().unwrap();
    let cells = row("p99 ms ");
    assert_eq!(cells[0], format!("{:.3}", p99(&ja)));
    assert_eq!(cells[1], format!("{:.3}", p99(&jb)));
    assert_eq!(cells[2], format!("{:.3}", p99(&jb) / p99(&ja)));
    assert!(row("generator CPU s").len() == 3, "{table}");
    // One file is a usage error.
    let out = Command::new(LOAD).arg("compare").arg(&a).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    for path in [a, b] {
        let _ = std::fs::remove_file(path);
    }
}
