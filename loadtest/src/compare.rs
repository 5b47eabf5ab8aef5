//! `sipshard-load compare A.json B.json`: two runs' JSON summaries side by side, with B/A for
//! every number, so that comparing two servers (or two builds of one) under the same load is one
//! command. A `--search` summary is compared through its run at 90% of the best rate, and its
//! best rate is shown too.

use std::fmt::Write as _;

use serde_json::Value;

use crate::plot::{label, read_json, run_summary};

pub const USAGE: &str = "usage: sipshard-load compare A.json B.json
  Prints both runs' rates, counts, corrected latency percentiles and CPU side by side, with B/A.";

/// The rows: a title, where the number is in a run summary (a JSON pointer), its precision.
const ROWS: &[(&str, &str, usize)] = &[
    ("offered/s", "/rate/offered", 1),
    ("achieved/s", "/rate/achieved", 1),
    ("answered/s", "/rate/answered", 1),
    ("sent", "/counts/sent", 0),
    ("ok", "/counts/ok", 0),
    ("failed", "/counts/failed", 0),
    ("timed out", "/counts/timed_out", 0),
    ("retransmissions", "/counts/retransmissions", 0),
    ("unexpected", "/counts/unexpected", 0),
    ("p50 ms", "/latency_ms/corrected/p50_ms", 3),
    ("p90 ms", "/latency_ms/corrected/p90_ms", 3),
    ("p99 ms", "/latency_ms/corrected/p99_ms", 3),
    ("p99.9 ms", "/latency_ms/corrected/p99.9_ms", 3),
    ("max ms", "/latency_ms/corrected/max_ms", 3),
    ("p50 ms (uncorrected)", "/latency_ms/uncorrected/p50_ms", 3),
    ("p99 ms (uncorrected)", "/latency_ms/uncorrected/p99_ms", 3),
];

pub fn run(args: &[String]) -> Result<(), String> {
    let [a, b] = args else {
        return Err("compare takes two JSON summaries".into());
    };
    let (ja, jb) = (read_json(a)?, read_json(b)?);
    let ra = run_summary(&ja).ok_or(format!("{a}: not a run summary"))?;
    let rb = run_summary(&jb).ok_or(format!("{b}: not a run summary"))?;
    print!(
        "{}",
        table(
            (&label(a, Some(ra)), &ja, ra),
            (&label(b, Some(rb)), &jb, rb)
        )
    );
    Ok(())
}

/// B/A as text (three decimals below 100): "-" when both are 0 or either is missing, "inf"
/// when only A is 0.
pub fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if a != 0.0 => match b / a {
            r if r >= 1000.0 => format!("{r:.0}"),
            r if r >= 100.0 => format!("{r:.1}"),
            r => format!("{r:.3}"),
        },
        (Some(_), Some(b)) if b != 0.0 => "inf".into(),
        _ => "-".into(),
    }
}

/// The table for runs A and B: (label, whole summary, the run in it).
pub fn table(a: (&str, &Value, &Value), b: (&str, &Value, &Value)) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "A: {}\nB: {}", a.0, b.0);
    let _ = writeln!(out, "{:<22}{:>16}{:>16}{:>12}", "", "A", "B", "B/A");
    let row = |out: &mut String, title: &str, va: Option<f64>, vb: Option<f64>, digits: usize| {
        let cell = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.digits$}"));
        let _ = writeln!(
            out,
            "{title:<22}{:>16}{:>16}{:>12}",
            cell(va),
            cell(vb),
            ratio(va, vb)
        );
    };
    let best = |whole: &Value| whole.pointer("/search/best").and_then(Value::as_f64);
    if best(a.1).is_some() || best(b.1).is_some() {
        row(&mut out, "best clean rate/s", best(a.1), best(b.1), 1);
    }
    for (title, pointer, digits) in ROWS {
        let get = |run: &Value| run.pointer(pointer).and_then(Value::as_f64);
        row(&mut out, title, get(a.2), get(b.2), *digits);
    }
    // The generator's own CPU time: a run whose generator needed most of a core measured the
    // generator too.
    let cpu = |run: &Value| {
        let user = run.pointer("/cpu_s/user")?.as_f64()?;
        let system = run.pointer("/cpu_s/system")?.as_f64()?;
        Some(user + system)
    };
    row(&mut out, "generator CPU s", cpu(a.2), cpu(b.2), 3);
    let per_1000 = |run: &Value| {
        let sent = run.pointer("/counts/sent")?.as_f64()?;
        (sent > 0.0).then_some(cpu(run)? * 1000.0 * 1000.0 / sent)
    };
    row(
        &mut out,
        "CPU ms per 1000 sent",
        per_1000(a.2),
        per_1000(b.2),
        3,
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(p99: f64, ok: u64, user: f64) -> Value {
        serde_json::json!({
            "scenario": "register",
            "rate": { "offered": 1000.0, "achieved": 999.0, "answered": 998.0 },
            "counts": { "sent": 2000, "ok": ok, "failed": 2000 - ok, "timed_out": 0,
                        "retransmissions": 0, "unexpected": 0 },
            "latency_ms": { "corrected": { "p50_ms": 1.0, "p90_ms": 2.0, "p99_ms": p99,
                                           "p99.9_ms": 8.0, "max_ms": 9.0 },
                            "uncorrected": { "p50_ms": 0.5, "p99_ms": 1.0 } },
            "cpu_s": { "user": user, "system": 0.5 },
        })
    }

    fn cells<'a>(table: &'a str, title: &str) -> Vec<&'a str> {
        let line = table
            .lines()
            .find(|l| l.starts_with(title))
            .unwrap_or_else(|| panic!("no {title} in\n{table}"));
        line[22..].split_whitespace().collect()
    }

    #[test]
    fn ratios_are_b_over_a() {
        let (a, b) = (summary(4.0, 2000, 1.5), summary(10.0, 1500, 0.5));
        let t = table(("a", &a, &a), ("b", &b, &b));
        assert_eq!(cells(&t, "p99 ms "), ["4.000", "10.000", "2.500"]);
        assert_eq!(cells(&t, "ok"), ["2000", "1500", "0.750"]);
        assert_eq!(cells(&t, "failed"), ["0", "500", "inf"]);
        assert_eq!(cells(&t, "timed out"), ["0", "0", "-"]);
        assert_eq!(ratio(Some(0.063), Some(741.868)), "11776");
        assert_eq!(ratio(Some(2.0), Some(300.0)), "150.0");
        assert_eq!(ratio(None, Some(1.0)), "-");
        assert_eq!(cells(&t, "generator CPU s"), ["2.000", "1.000", "0.500"]);
        assert_eq!(
            cells(&t, "CPU ms per 1000 sent"),
            ["1000.000", "500.000", "0.500"]
        );
        assert!(!t.contains("best clean rate"), "{t}");
        // A field a summary lacks is shown as missing, not as 0.
        let mut older = a.clone();
        older["latency_ms"]["corrected"]
            .as_object_mut()
            .unwrap()
            .remove("p90_ms");
        let t = table(("a", &older, &older), ("b", &b, &b));
        assert_eq!(cells(&t, "p90 ms"), ["-", "2.000", "-"]);
    }

    #[test]
    fn search_summaries_compare_their_90_percent_runs_and_best_rates() {
        let a =
            serde_json::json!({ "search": { "best": 40000.0 }, "at_90": summary(3.0, 2000, 1.0) });
        let b =
            serde_json::json!({ "search": { "best": 10000.0 }, "at_90": summary(6.0, 2000, 1.0) });
        let (ra, rb) = (run_summary(&a).unwrap(), run_summary(&b).unwrap());
        let t = table(("a", &a, ra), ("b", &b, rb));
        assert_eq!(
            cells(&t, "best clean rate/s"),
            ["40000.0", "10000.0", "0.250"]
        );
        assert_eq!(cells(&t, "p99 ms "), ["3.000", "6.000", "2.000"]);
    }
}
