//! Latency histograms (HdrHistogram, nanoseconds) and the reports made from them: the percentile
//! table, the `.hgrm` percentile distribution, the JSON summary's percentiles and its per-second
//! timeline.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use hdrhistogram::Histogram;

use crate::client::Counts;

/// Three significant digits from 1 ns to one hour.
pub fn new_histogram() -> Histogram<u64> {
    // The bounds are constants that hdrhistogram accepts.
    Histogram::new_with_bounds(1, 3_600_000_000_000, 3).unwrap_or_else(|e| panic!("{e:?}"))
}

/// Records `ns` (clamped into the histogram's range: a 0 ns latency counts as 1 ns).
pub fn record(h: &mut Histogram<u64>, ns: u64) {
    h.saturating_record(ns.max(1));
}

/// The percentiles the table and the JSON summary show.
pub const QUANTILES: [(&str, f64); 5] = [
    ("p50", 0.5),
    ("p90", 0.9),
    ("p99", 0.99),
    ("p99.9", 0.999),
    ("max", 1.0),
];

/// The reported values in nanoseconds, in the order of `QUANTILES` (zeros when empty).
pub fn percentiles(h: &Histogram<u64>) -> [u64; 5] {
    QUANTILES.map(|(_, q)| {
        if h.is_empty() {
            0
        } else if q >= 1.0 {
            h.max()
        } else {
            h.value_at_quantile(q)
        }
    })
}

/// The stdout table: one row per histogram, milliseconds.
pub fn table(rows: &[(&str, &Histogram<u64>)]) -> String {
    let mut out = String::new();
    let _ = write!(out, "{:<28}", "latency (ms)");
    for (name, _) in QUANTILES {
        let _ = write!(out, "{name:>10}");
    }
    out.push('\n');
    for (label, h) in rows {
        let _ = write!(out, "{label:<28}");
        for v in percentiles(h) {
            let _ = write!(out, "{:>10.3}", v as f64 / 1e6);
        }
        out.push('\n');
    }
    out
}

/// HdrHistogram's percentile distribution (`outputPercentileDistribution` with 5 ticks per half
/// distance), values divided by `scale` (1e6: nanoseconds shown as milliseconds).
pub fn hgrm(h: &Histogram<u64>, scale: f64) -> String {
    let digits = usize::from(h.sigfig());
    let mut out = format!(
        "{:>12} {:>14} {:>10} {:>14}\n\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    let mut total = 0u64;
    if !h.is_empty() {
        for v in h.iter_quantiles(5) {
            total += v.count_since_last_iteration();
            let value = v.value_iterated_to() as f64 / scale;
            let q = v.quantile_iterated_to();
            if q < 1.0 {
                let _ = writeln!(
                    out,
                    "{value:>12.digits$} {q:>2.12} {total:>10} {:>14.2}",
                    1.0 / (1.0 - q)
                );
            } else {
                let _ = writeln!(out, "{value:>12.digits$} {q:>2.12} {total:>10}");
            }
        }
    }
    let (mean, stdev, max) = if h.is_empty() {
        (0.0, 0.0, 0.0)
    } else {
        (h.mean() / scale, h.stdev() / scale, h.max() as f64 / scale)
    };
    let _ = writeln!(
        out,
        "#[Mean    = {mean:>12.digits$}, StdDeviation   = {stdev:>12.digits$}]"
    );
    let _ = writeln!(
        out,
        "#[Max     = {max:>12.digits$}, Total count    = {:>12}]",
        h.len()
    );
    let _ = writeln!(
        out,
        "#[Buckets = {:>12}, SubBuckets     = {:>12}]",
        h.buckets(),
        sub_buckets(h.sigfig())
    );
    out
}

/// HdrHistogram's sub-bucket count for a precision (2048 for 3 digits).
fn sub_buckets(sigfig: u8) -> u64 {
    let single_unit = 2 * 10u64.pow(u32::from(sigfig));
    single_unit.next_power_of_two()
}

/// The percentiles as a JSON object, milliseconds.
pub fn percentiles_json(h: &Histogram<u64>) -> serde_json::Value {
    let mut map = serde_json::Map::new();
    for ((name, _), v) in QUANTILES.iter().zip(percentiles(h)) {
        map.insert(format!("{name}_ms"), serde_json::json!(v as f64 / 1e6));
    }
    map.insert(
        "mean_ms".into(),
        serde_json::json!(if h.is_empty() { 0.0 } else { h.mean() / 1e6 }),
    );
    map.insert("count".into(), serde_json::json!(h.len()));
    map.insert("percentiles".into(), distribution_json(h));
    serde_json::Value::Object(map)
}

/// The percentile distribution as `[percentile, value in ms]` pairs: the `.hgrm` file's rows (5
/// ticks per half distance to 100%), which is what `plot --latency` draws.
pub fn distribution_json(h: &Histogram<u64>) -> serde_json::Value {
    if h.is_empty() {
        return serde_json::json!([]);
    }
    h.iter_quantiles(5)
        .map(|v| serde_json::json!([v.quantile_iterated_to(), v.value_iterated_to() as f64 / 1e6]))
        .collect()
}

/// A histogram for one second of a run: two significant digits (1%) from 1 µs to one hour, a
/// tenth of the memory of the run's histograms, so a long run can keep one per second.
pub fn new_second_histogram() -> Histogram<u32> {
    // The bounds are constants that hdrhistogram accepts.
    Histogram::new_with_bounds(1000, 3_600_000_000_000, 2).unwrap_or_else(|e| panic!("{e:?}"))
}

/// The run's time series, one entry a second (by when things happened, counted from the start):
/// first transmissions, final responses, timeouts and retransmissions, and the percentiles of the
/// latencies (corrected) of the transactions that ended in that second. Each shard hands in its
/// seconds in order; a second is summarised once every shard has handed it in (or at the end), so
/// only the seconds in flight keep a histogram.
pub struct Timeline {
    shards: u64,
    pending: BTreeMap<u64, (u64, Counts, Histogram<u32>)>,
    done: BTreeMap<u64, (Counts, [Option<f64>; 3])>,
}

impl Timeline {
    pub fn new(shards: u64) -> Timeline {
        Timeline {
            shards,
            pending: BTreeMap::new(),
            done: BTreeMap::new(),
        }
    }

    /// One shard's second `index`: what it counted then, and its latencies.
    pub fn add(&mut self, index: u64, counts: &Counts, latency: &Histogram<u32>) {
        let entry = self
            .pending
            .entry(index)
            .or_insert_with(|| (0, Counts::default(), new_second_histogram()));
        entry.0 += 1;
        entry.1.add(counts);
        // Same bounds: adding cannot fail.
        let _ = entry.2.add(latency);
        if entry.0 >= self.shards {
            if let Some((_, counts, h)) = self.pending.remove(&index) {
                self.done.insert(index, (counts, second_percentiles(&h)));
            }
        }
    }

    /// The series as JSON; `elapsed_s` (the run's length) gives the last second's span.
    pub fn finish(mut self, elapsed_s: f64) -> serde_json::Value {
        for (index, (_, counts, h)) in std::mem::take(&mut self.pending) {
            self.done.insert(index, (counts, second_percentiles(&h)));
        }
        self.done
            .iter()
            .map(|(&index, (c, [p50, p99, max]))| {
                let span = (elapsed_s - index as f64).clamp(0.001, 1.0);
                serde_json::json!({
                    "t_s": index,
                    "span_s": span,
                    "sent": c.sent,
                    "ok": c.ok,
                    "failed": c.failed,
                    "timed_out": c.timed_out,
                    "retransmissions": c.retransmissions,
                    "p50_ms": p50,
                    "p99_ms": p99,
                    "max_ms": max,
                })
            })
            .collect()
    }
}

/// p50, p99 and max in ms (`None` when nothing ended in that second).
fn second_percentiles(h: &Histogram<u32>) -> [Option<f64>; 3] {
    if h.is_empty() {
        return [None; 3];
    }
    [
        Some(h.value_at_quantile(0.5) as f64 / 1e6),
        Some(h.value_at_quantile(0.99) as f64 / 1e6),
        Some(h.max() as f64 / 1e6),
    ]
}

/// A parsed `.hgrm` file: rows (value, percentile, total count) and the footer's numbers.
pub struct Hgrm {
    pub rows: Vec<(f64, f64, u64)>,
    pub mean: f64,
    pub max: f64,
    pub total: u64,
}

/// Parses HdrHistogram's percentile-distribution format strictly (ours, and other tools' `.hgrm`
/// files, which `plot --latency` draws).
pub fn parse_hgrm(text: &str) -> Result<Hgrm, String> {
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().ok_or("empty")?.split_whitespace().collect();
    if header != ["Value", "Percentile", "TotalCount", "1/(1-Percentile)"] {
        return Err(format!("header {header:?}"));
    }
    if lines.next() != Some("") {
        return Err("no blank line after the header".into());
    }
    let mut rows = Vec::new();
    let mut footer = Vec::new();
    for line in lines {
        if let Some(f) = line.strip_prefix("#[") {
            footer.push(f.strip_suffix(']').ok_or("footer not closed")?.to_owned());
            continue;
        }
        if !footer.is_empty() {
            return Err(format!("row after the footer: {line}"));
        }
        let cols: Vec<&str> = line.split_whitespace().collect();
        let bad = || format!("row {line:?}");
        let value: f64 = cols.first().ok_or_else(bad)?.parse().map_err(|_| bad())?;
        let pct: f64 = cols.get(1).ok_or_else(bad)?.parse().map_err(|_| bad())?;
        let count: u64 = cols.get(2).ok_or_else(bad)?.parse().map_err(|_| bad())?;
        match cols.get(3) {
            Some(inv) => {
                let inv: f64 = inv.parse().map_err(|_| bad())?;
                if (inv - 1.0 / (1.0 - pct)).abs() > 0.01 * inv.max(1.0) {
                    return Err(bad());
                }
            }
            None if pct == 1.0 => {}
            None => return Err(bad()),
        }
        rows.push((value, pct, count));
    }
    let field = |i: usize, name: &str| -> Result<String, String> {
        let f = footer.get(i).ok_or(format!("no footer line {i}"))?;
        f.split(',')
            .find_map(|kv| {
                let (k, v) = kv.split_once('=')?;
                (k.trim() == name).then(|| v.trim().to_owned())
            })
            .ok_or(format!("no {name} in {f:?}"))
    };
    let num = |i, name| -> Result<f64, String> {
        field(i, name)?.parse().map_err(|e| format!("{name}: {e}"))
    };
    let int = |i, name| -> Result<u64, String> {
        field(i, name)?.parse().map_err(|e| format!("{name}: {e}"))
    };
    num(0, "StdDeviation")?;
    int(2, "Buckets")?;
    int(2, "SubBuckets")?;
    Ok(Hgrm {
        rows,
        mean: num(0, "Mean")?,
        max: num(1, "Max")?,
        total: int(1, "Total count")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sample at rank ceil(q * n) of the sorted samples (the nearest-rank percentile).
    fn reference(sorted: &[u64], q: f64) -> u64 {
        let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
        sorted[rank - 1]
    }

    fn samples() -> Vec<u64> {
        // A skewed, deterministic distribution: mostly ~1 ms, a tail to ~2 s.
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        (0..20_000)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let base = 800_000 + x % 400_000;
                if i % 100 == 0 {
                    base * (1 + x % 2000)
                } else {
                    base
                }
            })
            .collect()
    }

    #[test]
    fn percentiles_agree_with_a_reference_computation() {
        let mut values = samples();
        let mut h = new_histogram();
        for &v in &values {
            record(&mut h, v);
        }
        values.sort_unstable();
        for ((name, q), got) in QUANTILES.iter().zip(percentiles(&h)) {
            let want = reference(&values, *q);
            // Three significant digits: within 0.1% (HdrHistogram reports the highest value
            // equivalent to the sample's bucket).
            let err = got.abs_diff(want) as f64 / want as f64;
            assert!(err <= 0.001, "{name}: histogram {got}, reference {want}");
        }
        assert_eq!(percentiles(&new_histogram()), [0; 5]);
    }

    #[test]
    fn hgrm_parses_back() {
        let mut h = new_histogram();
        for v in samples() {
            record(&mut h, v);
        }
        let text = hgrm(&h, 1e6);
        let parsed = parse_hgrm(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(parsed.total, 20_000);
        assert!(text.contains("SubBuckets     =         2048]"), "{text}");
        assert!(
            text.contains(&format!("Buckets = {:>12},", h.buckets())),
            "{text}"
        );
        assert!((parsed.max - h.max() as f64 / 1e6).abs() < 0.001);
        assert!((parsed.mean - h.mean() / 1e6).abs() < 0.001);
        let last = *parsed.rows.last().unwrap();
        assert_eq!((last.1, last.2), (1.0, 20_000));
        assert!(
            parsed
                .rows
                .windows(2)
                .all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1 && w[0].2 <= w[1].2)
        );
        // The median row agrees with the histogram.
        let median = parsed.rows.iter().find(|r| r.1 >= 0.5).unwrap();
        assert!((median.0 - h.value_at_quantile(0.5) as f64 / 1e6).abs() < 0.001);
        // An empty histogram still writes a valid file.
        let empty = parse_hgrm(&hgrm(&new_histogram(), 1e6)).unwrap();
        assert_eq!((empty.rows.len(), empty.total), (0, 0));
        assert_eq!(sub_buckets(2), 256);
    }

    #[test]
    fn table_shows_every_percentile() {
        let mut h = new_histogram();
        // 1 ms is the low end of its bucket: reported as 1.000 (its bucket's top is 1.000447).
        record(&mut h, 1_000_000);
        let t = table(&[("corrected", &h)]);
        assert!(t.contains("p99.9"), "{t}");
        assert!(
            t.lines().nth(1).unwrap().trim_end().ends_with("1.000"),
            "{t}"
        );
        let json = percentiles_json(&h);
        assert_eq!(
            json["p50_ms"],
            serde_json::json!(h.value_at_quantile(0.5) as f64 / 1e6)
        );
        assert!((json["max_ms"].as_f64().unwrap() - 1.0).abs() < 0.001);
        assert_eq!(json["count"], serde_json::json!(1));
    }
}
