//! `sipshard-load plot`: SVG pictures of runs, written by hand (a few lines of `<polyline>` and
//! `<text>` need no plotting library, and the output stays small enough to commit and to read).
//!
//! - `--latency A.json B.json ...`: latency by percentile, the HdrHistogram way: x is
//!   `log10(1/(1-p))` (0%, 90%, 99%, 99.9%, ... evenly spaced) so the tail gets as much room as
//!   the median, y is latency on a log scale, several runs overlaid with a legend. The points are
//!   the JSON summary's `latency_ms.corrected.percentiles` (the `.hgrm` rows); `.hgrm` files (ours,
//!   or another tool's) are accepted too.
//! - `--timeline RUN.json`: the run's `timeline`, one point a second: requests sent and answered
//!   per second above, p50 and p99 of the transactions that ended in that second below (log
//!   scale), so a stall or a saturation shows where it happened.
//!
//! Inputs are files a user hands in: every field is read with a check, never an unwrap.

use std::fmt::Write as _;
use std::path::Path;

use serde_json::Value;

use crate::report;

pub const USAGE: &str =
    "usage: sipshard-load plot --latency RUN.json|RUN.hgrm... -o OUT.svg [--title T]
       sipshard-load plot --timeline RUN.json -o OUT.svg [--title T]
  --latency: latency by percentile (log scales), one line per run, labelled by file name.
  --timeline: requests sent and answered per second, and p50/p99 per second, over the run.
  A --search summary is drawn from its run at 90% of the best rate.";

/// Line colours, in the order of the inputs (colour-blind friendly: Okabe and Ito).
const PALETTE: [&str; 8] = [
    "#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442",
];

const WIDTH: f64 = 800.0;
const HEIGHT: f64 = 480.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 50.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 60.0;

/// Runs `sipshard-load plot ARGS`.
pub fn run(args: &[String]) -> Result<(), String> {
    let mut latency = Vec::new();
    let mut timeline = None;
    let mut out = None;
    let mut title = None;
    let mut it = args.iter();
    let mut in_latency = false;
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--latency" => in_latency = true,
            "--timeline" => {
                timeline = Some(it.next().ok_or("--timeline needs a file")?.clone());
                in_latency = false;
            }
            "-o" | "--output" => {
                out = Some(it.next().ok_or("-o needs a file")?.clone());
                in_latency = false;
            }
            "--title" => {
                title = Some(it.next().ok_or("--title needs a value")?.clone());
                in_latency = false;
            }
            flag if flag.starts_with('-') => return Err(format!("unknown option {flag}")),
            file if in_latency => latency.push(file.to_owned()),
            other => return Err(format!("unexpected argument {other}")),
        }
    }
    let out = out.ok_or("-o OUT.svg is required")?;
    let svg = match (latency.is_empty(), timeline) {
        (false, None) => {
            let series = latency
                .iter()
                .map(|path| load_distribution(path))
                .collect::<Result<Vec<_>, _>>()?;
            latency_svg(title.as_deref().unwrap_or("Latency by percentile"), &series)?
        }
        (true, Some(path)) => {
            let json = read_json(&path)?;
            let run = run_summary(&json).ok_or(format!("{path}: not a run summary"))?;
            let seconds = timeline_points(run).map_err(|e| format!("{path}: {e}"))?;
            let default_title = format!("{} over the run", label(&path, Some(run)));
            timeline_svg(title.as_deref().unwrap_or(&default_title), &seconds)?
        }
        _ => return Err("give either --latency FILES or --timeline FILE".into()),
    };
    std::fs::write(&out, svg).map_err(|e| format!("{out}: {e}"))
}

pub fn read_json(path: &str) -> Result<Value, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    serde_json::from_str(&text).map_err(|e| format!("{path}: not JSON: {e}"))
}

/// The run a summary describes: the summary itself, or for a `--search` summary its run at 90%.
pub fn run_summary(json: &Value) -> Option<&Value> {
    if json.get("latency_ms").is_some() {
        Some(json)
    } else {
        json.get("at_90").filter(|r| r.get("latency_ms").is_some())
    }
}

/// A file's label: its name without the extension, and what ran for a JSON summary.
pub fn label(path: &str, run: Option<&Value>) -> String {
    let stem = Path::new(path)
        .file_stem()
        .map_or(path.into(), |s| s.to_string_lossy().into_owned());
    match run {
        Some(run) => {
            let scenario = run["scenario"].as_str().unwrap_or("?");
            match run["rate"]["offered"].as_f64() {
                Some(rate) => format!("{stem} ({scenario}, {rate:.0}/s)"),
                None => format!("{stem} ({scenario})"),
            }
        }
        None => stem,
    }
}

/// One line of the latency plot: `(percentile in [0, 1], latency in ms)`, percentiles rising.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
}

/// Reads a JSON summary's corrected percentile distribution, or a `.hgrm` file's rows.
fn load_distribution(path: &str) -> Result<Series, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    let (label, points) = if text.trim_start().starts_with('{') {
        let json: Value =
            serde_json::from_str(&text).map_err(|e| format!("{path}: not JSON: {e}"))?;
        let run = run_summary(&json).ok_or(format!("{path}: not a run summary"))?;
        let rows = run["latency_ms"]["corrected"]["percentiles"]
            .as_array()
            .ok_or(format!(
                "{path}: no latency_ms.corrected.percentiles (written by an older sipshard-load?)"
            ))?;
        let points = rows
            .iter()
            .map(|row| match (row[0].as_f64(), row[1].as_f64()) {
                (Some(q), Some(ms)) => Ok((q, ms)),
                _ => Err(format!("{path}: bad percentile row {row}")),
            })
            .collect::<Result<Vec<_>, _>>()?;
        (label(path, Some(run)), points)
    } else {
        let hgrm = report::parse_hgrm(&text).map_err(|e| format!("{path}: not .hgrm: {e}"))?;
        let label = format!(
            "{} (n={}, mean {:.3}, max {:.3})",
            label(path, None),
            hgrm.total,
            hgrm.mean,
            hgrm.max
        );
        (label, hgrm.rows.iter().map(|&(v, q, _)| (q, v)).collect())
    };
    if points.is_empty() {
        return Err(format!("{path}: no latencies recorded"));
    }
    if points
        .iter()
        .any(|&(q, ms)| !(0.0..=1.0).contains(&q) || !ms.is_finite() || ms < 0.0)
    {
        return Err(format!("{path}: percentiles out of range"));
    }
    Ok(Series { label, points })
}

/// A linear or logarithmic axis mapping values to pixels.
#[derive(Debug, Clone, Copy)]
pub struct Axis {
    /// The range, in log10 units when `log`.
    pub lo: f64,
    pub hi: f64,
    pub log: bool,
    /// The pixels of `lo` and `hi` (`px_hi < px_lo` for a y axis).
    pub px_lo: f64,
    pub px_hi: f64,
}

impl Axis {
    pub fn pos(&self, v: f64) -> f64 {
        let v = if self.log { v.max(1e-12).log10() } else { v };
        let f = ((v - self.lo) / (self.hi - self.lo)).clamp(0.0, 1.0);
        self.px_lo + f * (self.px_hi - self.px_lo)
    }

    /// The value at pixel `px` (the inverse of `pos` inside the range).
    #[cfg(test)]
    pub fn value(&self, px: f64) -> f64 {
        let v = self.lo + (px - self.px_lo) / (self.px_hi - self.px_lo) * (self.hi - self.lo);
        if self.log { 10f64.powf(v) } else { v }
    }
}

/// x of percentile `q`: `log10(1/(1-q))`; 100% sits at the right end, `decades`.
pub fn percentile_x(q: f64, decades: f64) -> f64 {
    if q >= 1.0 {
        decades
    } else {
        (1.0 / (1.0 - q)).log10().min(decades)
    }
}

/// "0%", "90%", "99%", "99.9%", ... for `decades` nines.
fn nines(decades: u32) -> String {
    match decades {
        0 => "0%".into(),
        1 => "90%".into(),
        n => format!("99.{}%", "9".repeat(n as usize - 2)).replace(".%", "%"),
    }
}

/// A duration in ms as text with a unit that suits it.
fn fmt_ms(ms: f64) -> String {
    let (v, unit) = if ms >= 1000.0 {
        (ms / 1000.0, "s")
    } else if ms >= 1.0 {
        (ms, "ms")
    } else {
        (ms * 1000.0, "µs")
    };
    let v = format!("{v:.3}");
    let v = v.trim_end_matches('0').trim_end_matches('.');
    format!("{v} {unit}")
}

/// Escapes text for XML content and attribute values.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// A picture being written.
struct Svg(String);

impl Svg {
    fn new(title: &str) -> Svg {
        let mut s = String::new();
        let _ = write!(
            s,
            r#"<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">
<title>{t}</title>
<rect width="100%" height="100%" fill="white"/>
<text x="{x}" y="24" text-anchor="middle" font-size="15">{t}</text>
"#,
            t = escape(title),
            x = WIDTH / 2.0,
        );
        Svg(s)
    }

    fn line(&mut self, (x1, y1): (f64, f64), (x2, y2): (f64, f64), style: &str) {
        let _ = writeln!(
            self.0,
            r#"<line x1="{x1:.2}" y1="{y1:.2}" x2="{x2:.2}" y2="{y2:.2}" {style}/>"#
        );
    }

    fn text(&mut self, (x, y): (f64, f64), anchor: &str, text: &str) {
        let _ = writeln!(
            self.0,
            r#"<text x="{x:.2}" y="{y:.2}" text-anchor="{anchor}">{}</text>"#,
            escape(text)
        );
    }

    fn polyline(&mut self, points: &[(f64, f64)], colour: &str, label: &str) {
        if points.is_empty() {
            return;
        }
        let _ = write!(
            self.0,
            r#"<polyline fill="none" stroke="{colour}" stroke-width="1.8" data-label="{}" points=""#,
            escape(label)
        );
        for (i, (x, y)) in points.iter().enumerate() {
            let sep = if i == 0 { "" } else { " " };
            let _ = write!(self.0, "{sep}{x:.2},{y:.2}");
        }
        self.0.push_str("\"/>\n");
    }

    /// A legend in the plot area's top left corner.
    fn legend(&mut self, at: (f64, f64), entries: &[(&str, &str)]) {
        for (i, (label, colour)) in entries.iter().enumerate() {
            let y = at.1 + 16.0 * i as f64;
            self.line(
                (at.0, y - 4.0),
                (at.0 + 22.0, y - 4.0),
                &format!(r#"stroke="{colour}" stroke-width="2.5""#),
            );
            self.text((at.0 + 28.0, y), "start", label);
        }
    }

    /// The frame around a plot area and the label of its y axis.
    fn frame(&mut self, x: Axis, y: Axis, y_label: &str) {
        let _ = writeln!(
            self.0,
            r#"<rect x="{:.2}" y="{:.2}" width="{:.2}" height="{:.2}" fill="none" stroke="black"/>"#,
            x.px_lo,
            y.px_hi,
            x.px_hi - x.px_lo,
            y.px_lo - y.px_hi
        );
        let mid = (y.px_lo + y.px_hi) / 2.0;
        let _ = writeln!(
            self.0,
            r#"<text x="16" y="{mid:.2}" text-anchor="middle" transform="rotate(-90 16 {mid:.2})">{}</text>"#,
            escape(y_label)
        );
    }

    /// Decade grid lines and labels on a logarithmic y axis (minor lines at 2 and 5).
    fn log_y_grid(&mut self, x: Axis, y: Axis) {
        for decade in (y.lo as i32)..=(y.hi as i32) {
            let base = 10f64.powi(decade);
            for (m, major) in [(1.0, true), (2.0, false), (5.0, false)] {
                let v = base * m;
                if v.log10() > y.hi + 1e-9 {
                    break;
                }
                let py = y.pos(v);
                let style = if major {
                    r##"stroke="#bbbbbb""##
                } else {
                    r##"stroke="#e4e4e4""##
                };
                self.line((x.px_lo, py), (x.px_hi, py), style);
                if major {
                    self.text((x.px_lo - 6.0, py + 4.0), "end", &fmt_ms(v));
                }
            }
        }
    }

    fn finish(mut self) -> String {
        self.0.push_str("</svg>\n");
        self.0
    }
}

/// The latency axis for values from `min` to `max` ms: whole decades around them.
fn latency_axis(min: f64, max: f64, px_lo: f64, px_hi: f64) -> Axis {
    let lo = min.max(1e-4).log10().floor();
    let hi = max.max(1e-4).log10().ceil().max(lo + 1.0);
    Axis {
        lo,
        hi,
        log: true,
        px_lo,
        px_hi,
    }
}

/// Latency by percentile, one line per series, on the axes `latency_axes` chooses.
pub fn latency_svg(title: &str, series: &[Series]) -> Result<String, String> {
    let (x, y) = latency_axes(series)?;
    let mut svg = Svg::new(title);
    svg.frame(x, y, "latency from intended send time");
    svg.log_y_grid(x, y);
    for k in 0..=(x.hi as u32) {
        let px = x.pos(f64::from(k));
        svg.line((px, y.px_lo), (px, y.px_hi), r##"stroke="#bbbbbb""##);
        svg.text((px, y.px_lo + 18.0), "middle", &nines(k));
    }
    svg.text(
        ((x.px_lo + x.px_hi) / 2.0, HEIGHT - 14.0),
        "middle",
        "percentile",
    );
    let mut legend = Vec::new();
    for (i, s) in series.iter().enumerate() {
        let colour = PALETTE[i % PALETTE.len()];
        let points: Vec<(f64, f64)> = s
            .points
            .iter()
            .map(|&(q, ms)| (x.pos(percentile_x(q, x.hi)), y.pos(ms)))
            .collect();
        svg.polyline(&points, colour, &s.label);
        legend.push((s.label.as_str(), colour));
    }
    svg.legend((x.px_lo + 12.0, y.px_hi + 18.0), &legend);
    Ok(svg.finish())
}

/// The axes of the latency plot: x from 0 to the decade past the highest finite percentile (at
/// least 99%, at most 99.99999%), y the decades around the latencies.
pub fn latency_axes(series: &[Series]) -> Result<(Axis, Axis), String> {
    let all = || series.iter().flat_map(|s| s.points.iter());
    let finite = all()
        .filter(|(q, _)| *q < 1.0)
        .map(|&(q, _)| (1.0 / (1.0 - q)).log10())
        .fold(0.0f64, f64::max);
    let decades = finite.ceil().clamp(2.0, 7.0);
    let positive = all().map(|p| p.1).filter(|&ms| ms > 0.0);
    let min = positive.clone().fold(f64::INFINITY, f64::min);
    let max = positive.fold(0.0f64, f64::max);
    if !min.is_finite() {
        return Err("nothing to plot: no latency above zero".into());
    }
    let x = Axis {
        lo: 0.0,
        hi: decades,
        log: false,
        px_lo: LEFT,
        px_hi: WIDTH - RIGHT,
    };
    Ok((x, latency_axis(min, max, HEIGHT - BOTTOM, TOP)))
}

/// One second of a run's timeline.
#[derive(Debug, Clone, PartialEq)]
pub struct SecondPoint {
    /// The second's start, seconds from the run's start, and its length (the last one is
    /// partial).
    pub t: f64,
    pub span: f64,
    pub sent_per_s: f64,
    pub answered_per_s: f64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

/// Reads a run summary's `timeline`.
pub fn timeline_points(run: &Value) -> Result<Vec<SecondPoint>, String> {
    let seconds = run["timeline"]
        .as_array()
        .ok_or("no timeline (written by an older sipshard-load?)")?;
    let num = |s: &Value, name: &str| -> Result<f64, String> {
        s[name]
            .as_f64()
            .ok_or(format!("timeline entry without {name}: {s}"))
    };
    seconds
        .iter()
        .map(|s| {
            let span = num(s, "span_s")?;
            if !(span > 0.0 && span <= 1.0) {
                return Err(format!("bad span in timeline entry {s}"));
            }
            Ok(SecondPoint {
                t: num(s, "t_s")?,
                span,
                sent_per_s: num(s, "sent")? / span,
                answered_per_s: (num(s, "ok")? + num(s, "failed")?) / span,
                p50_ms: s["p50_ms"].as_f64(),
                p99_ms: s["p99_ms"].as_f64(),
            })
        })
        .collect()
}

/// A round upper bound for a linear axis (1, 2 or 5 times a power of ten).
fn round_up(v: f64) -> f64 {
    if v <= 0.0 {
        return 1.0;
    }
    let base = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * base)
        .find(|&b| b >= v)
        .unwrap_or(10.0 * base)
}

/// Throughput (top) and latency (bottom) per second.
pub fn timeline_svg(title: &str, seconds: &[SecondPoint]) -> Result<String, String> {
    if seconds.is_empty() {
        return Err("the timeline is empty".into());
    }
    let end = seconds
        .iter()
        .map(|s| s.t + s.span)
        .fold(0.0, f64::max)
        .ceil()
        .max(1.0);
    let x = Axis {
        lo: 0.0,
        hi: end,
        log: false,
        px_lo: LEFT,
        px_hi: WIDTH - RIGHT,
    };
    let top_max = round_up(
        seconds
            .iter()
            .map(|s| s.sent_per_s.max(s.answered_per_s))
            .fold(0.0, f64::max),
    );
    let split = TOP + (HEIGHT - TOP - BOTTOM) / 2.0;
    let rate = Axis {
        lo: 0.0,
        hi: top_max,
        log: false,
        px_lo: split - 14.0,
        px_hi: TOP,
    };
    let latencies = seconds.iter().flat_map(|s| [s.p50_ms, s.p99_ms]).flatten();
    let min = latencies
        .clone()
        .filter(|&v| v > 0.0)
        .fold(f64::INFINITY, f64::min);
    let max = latencies.fold(0.0f64, f64::max);
    let latency = latency_axis(
        if min.is_finite() { min } else { 1.0 },
        max.max(1e-3),
        HEIGHT - BOTTOM,
        split + 14.0,
    );

    let mut svg = Svg::new(title);
    svg.frame(x, rate, "per second");
    svg.frame(x, latency, "latency");
    for k in 0..=4 {
        let v = top_max * f64::from(k) / 4.0;
        let py = rate.pos(v);
        svg.line((x.px_lo, py), (x.px_hi, py), r##"stroke="#e4e4e4""##);
        svg.text((x.px_lo - 6.0, py + 4.0), "end", &format!("{v:.0}"));
    }
    svg.log_y_grid(x, latency);
    let step = round_up(end / 10.0);
    let mut t = 0.0;
    while t <= end + 1e-9 {
        let px = x.pos(t);
        svg.line(
            (px, latency.px_lo),
            (px, latency.px_lo + 4.0),
            r#"stroke="black""#,
        );
        svg.text((px, latency.px_lo + 18.0), "middle", &format!("{t:.0}"));
        t += step;
    }
    svg.text(
        ((x.px_lo + x.px_hi) / 2.0, HEIGHT - 14.0),
        "middle",
        "seconds since the start",
    );
    // Rates are counts over a second: steps, level over each second.
    let rate_steps = |f: fn(&SecondPoint) -> f64| -> Vec<(f64, f64)> {
        seconds
            .iter()
            .flat_map(|s| {
                let py = rate.pos(f(s));
                [(x.pos(s.t), py), (x.pos(s.t + s.span), py)]
            })
            .collect()
    };
    svg.polyline(&rate_steps(|s| s.sent_per_s), PALETTE[0], "sent/s");
    svg.polyline(&rate_steps(|s| s.answered_per_s), PALETTE[1], "answered/s");
    // Latencies sit in the middle of their second; the lines break over seconds in which
    // nothing ended.
    for (f, colour, label) in [
        (
            (|s: &SecondPoint| s.p50_ms) as fn(&SecondPoint) -> Option<f64>,
            PALETTE[2],
            "p50",
        ),
        (|s: &SecondPoint| s.p99_ms, PALETTE[3], "p99"),
    ] {
        let mut run = Vec::new();
        for s in seconds {
            match f(s) {
                Some(ms) => run.push((x.pos(s.t + s.span / 2.0), latency.pos(ms))),
                None => svg.polyline(&std::mem::take(&mut run), colour, label),
            }
        }
        svg.polyline(&run, colour, label);
    }
    svg.legend(
        (x.px_lo + 12.0, rate.px_hi + 18.0),
        &[("sent/s", PALETTE[0]), ("answered/s", PALETTE[1])],
    );
    svg.legend(
        (x.px_lo + 12.0, latency.px_hi + 18.0),
        &[("p50", PALETTE[2]), ("p99", PALETTE[3])],
    );
    Ok(svg.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The points of every polyline: (data-label, [(x, y)]).
    fn polylines(svg: &str) -> Vec<(String, Vec<(f64, f64)>)> {
        svg.split("<polyline ")
            .skip(1)
            .map(|rest| {
                let attr = |name: &str| {
                    let start = rest.find(&format!("{name}=\"")).unwrap() + name.len() + 2;
                    let len = rest[start..].find('"').unwrap();
                    rest[start..start + len].to_owned()
                };
                let points = attr("points")
                    .split(' ')
                    .map(|p| {
                        let (x, y) = p.split_once(',').unwrap();
                        (x.parse().unwrap(), y.parse().unwrap())
                    })
                    .collect();
                (attr("data-label"), points)
            })
            .collect()
    }

    fn histogram(scale: u64) -> hdrhistogram::Histogram<u64> {
        let mut h = report::new_histogram();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for i in 0..50_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let base = scale + x % scale;
            report::record(&mut h, if i % 500 == 0 { base * 40 } else { base });
        }
        h
    }

    /// The series a JSON summary of histogram `h` gives.
    fn series(label: &str, h: &hdrhistogram::Histogram<u64>) -> Series {
        let json = serde_json::json!({
            "latency_ms": { "corrected": report::percentiles_json(h) },
            "scenario": "options",
        });
        let dir = std::env::temp_dir().join(format!("sipshard-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{label}.json"));
        std::fs::write(&path, json.to_string()).unwrap();
        let s = load_distribution(path.to_str().unwrap()).unwrap();
        let _ = std::fs::remove_file(path);
        s
    }

    #[test]
    fn the_plotted_points_are_the_histograms_percentiles() {
        let (fast, slow) = (histogram(1_000_000), histogram(5_000_000));
        let runs = [series("fast", &fast), series("slow", &slow)];
        assert_eq!(runs[0].label, "fast (options)");
        let svg = latency_svg("t", &runs).unwrap();
        let (x, y) = latency_axes(&runs).unwrap();
        // 50,000 samples: 99.99% is the last finite tick's decade (4), y spans 1 ms to 1 s.
        assert_eq!((x.lo, x.hi), (0.0, 5.0));
        assert_eq!((y.lo, y.hi), (0.0, 3.0));
        let lines = polylines(&svg);
        assert_eq!(lines.len(), 2);
        for ((label, points), h) in lines.iter().zip([&fast, &slow]) {
            let ticks: Vec<_> = h.iter_quantiles(5).collect();
            assert_eq!(points.len(), ticks.len(), "{label}");
            for (&(px, py), tick) in points.iter().zip(&ticks) {
                let q = tick.quantile_iterated_to();
                // x: the percentile on the log scale (100% at the right edge).
                assert!(
                    (x.value(px) - percentile_x(q, x.hi)).abs() < 0.01,
                    "{label} {q}"
                );
                // y: the histogram's value at that percentile, within its three significant
                // digits (the iteration reports a bucket's highest equivalent value).
                let want = h.value_at_quantile(q) as f64 / 1e6;
                let got = y.value(py);
                assert!(
                    (got - want).abs() / want < 1e-3,
                    "{label} q {q}: {got} vs {want}"
                );
            }
            // The p99 that the table reports lies on the line.
            let p99 = h.value_at_quantile(0.99) as f64 / 1e6;
            let at = points
                .iter()
                .zip(&ticks)
                .find(|(_, t)| t.quantile_iterated_to() >= 0.99)
                .map(|(p, _)| y.value(p.1))
                .unwrap();
            assert!(at >= p99 * 0.999, "{at} {p99}");
        }
        // The axis labels.
        for label in [
            "0%", "90%", "99%", "99.9%", "99.99%", "99.999%", "1 ms", "1 s",
        ] {
            assert!(svg.contains(&format!(">{label}</text>")), "{label}");
        }
    }

    #[test]
    fn hgrm_files_plot_the_same_points() {
        let h = histogram(2_000_000);
        let dir = std::env::temp_dir().join(format!("sipshard-plot-h-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("run.hgrm");
        std::fs::write(&path, report::hgrm(&h, 1e6)).unwrap();
        let from_hgrm = load_distribution(path.to_str().unwrap()).unwrap();
        let _ = std::fs::remove_file(path);
        let from_json = series("run", &h);
        assert_eq!(from_hgrm.points.len(), from_json.points.len());
        for (a, b) in from_hgrm.points.iter().zip(&from_json.points) {
            assert!(
                (a.0 - b.0).abs() < 1e-9 && (a.1 - b.1).abs() < 1e-3,
                "{a:?} {b:?}"
            );
        }
        assert!(
            from_hgrm.label.starts_with("run (n=50000, mean "),
            "{}",
            from_hgrm.label
        );
    }

    #[test]
    fn axis_labels_and_escaping() {
        assert_eq!(
            (0..=4).map(nines).collect::<Vec<_>>(),
            ["0%", "90%", "99%", "99.9%", "99.99%"]
        );
        assert_eq!(fmt_ms(0.01), "10 µs");
        assert_eq!(fmt_ms(2.5), "2.5 ms");
        assert_eq!(fmt_ms(1000.0), "1 s");
        assert_eq!(escape("a<b & \"c\""), "a&lt;b &amp; &quot;c&quot;");
        assert!((percentile_x(0.99, 5.0) - 2.0).abs() < 1e-9);
        assert_eq!(percentile_x(1.0, 5.0), 5.0);
        assert_eq!(round_up(3100.0), 5000.0);
        assert_eq!(round_up(10.0), 10.0);
    }

    #[test]
    fn the_timeline_draws_each_second_and_breaks_over_silence() {
        let second = |t: u64, sent: u64, p99: Option<f64>| {
            serde_json::json!({ "t_s": t, "span_s": 1.0, "sent": sent, "ok": sent, "failed": 0,
                "p50_ms": p99.map(|v| v / 2.0), "p99_ms": p99 })
        };
        let run = serde_json::json!({ "timeline": [
            second(0, 1000, Some(1.0)), second(1, 1000, None), second(2, 1000, Some(800.0)),
            { "t_s": 3, "span_s": 0.5, "sent": 250, "ok": 250, "failed": 0, "p50_ms": 1.0, "p99_ms": 2.0 },
        ]});
        let points = timeline_points(&run).unwrap();
        assert_eq!((points[3].t, points[3].span), (3.0, 0.5));
        assert_eq!(points[3].sent_per_s, 500.0);
        let svg = timeline_svg("t", &points).unwrap();
        let lines = polylines(&svg);
        let labels: Vec<&str> = lines.iter().map(|l| l.0.as_str()).collect();
        // p50 and p99 each break in two over second 1.
        assert_eq!(labels, ["sent/s", "answered/s", "p50", "p50", "p99", "p99"]);
        // Rates are steps: two points a second.
        assert_eq!(lines[0].1.len(), 8);
        assert_eq!(lines[0].1[6].1, lines[0].1[7].1);
        assert_eq!(lines[5].1.len(), 2);
        assert!(timeline_points(&serde_json::json!({})).is_err());
        assert!(timeline_points(&serde_json::json!({"timeline": [{"t_s": 0}]})).is_err());
    }
}
