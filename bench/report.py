#!/usr/bin/env python3
"""Writes BENCHMARKS.md and its SVG plots from one run of bench/run.sh (phases 9-12).

    bench/report.py OUTDIR [--sipshard-load BIN] [--write ROOT]

OUTDIR is bench/run.sh's result directory: report/results.jsonl (one JSON object a line: the
machine, then one per search, memory, failover and scaling run, each naming its sipshard-load
summary and the commands) and the summaries in report/. Writes OUTDIR/BENCHMARKS.md and
OUTDIR/plots/; with --write ROOT also ROOT/BENCHMARKS.md and ROOT/bench/plots/ (the copy the
repository keeps). Latency and timeline plots are drawn by `sipshard-load plot` (BIN, default
target/release/sipshard-load); the bar and line charts here, by hand (a few SVG elements).

Every figure comes from the files: nothing is typed in. A figure that a run did not produce
(a phase not run, a server that found no clean rate) is printed as "n/a" with the reason.
"""

import argparse
import html
import json
import os
import shutil
import subprocess
import sys
import tempfile

WORKLOADS = [
    ("register", "REGISTER, bindings in memory (UDP)", "REGISTER/s"),
    ("register-redis", "REGISTER, bindings in Redis (UDP)", "REGISTER/s"),
    ("call", "Calls: INVITE-180-200-ACK, 1 s, BYE-200 (UDP)", "calls/s"),
    ("message", "MESSAGE to a registered user (UDP)", "MESSAGE/s"),
    ("register-tls", "REGISTER over TLS (persistent connections)", "REGISTER/s"),
]
SERVERS = ["kamailio", "sipshard"]
COLOURS = {"kamailio": "#D55E00", "sipshard": "#0072B2"}


def load_results(outdir):
    """Every phase's results-N.jsonl, in phase order; each starts with its machine line."""
    rows = []
    report = os.path.join(outdir, "report")
    names = sorted((n for n in os.listdir(report) if n.startswith("results-") and n.endswith(".jsonl")),
                   key=lambda n: int(n[len("results-"):-len(".jsonl")]))
    for name in names:
        with open(os.path.join(report, name)) as f:
            for line in f:
                line = line.strip()
                if line:
                    rows.append(json.loads(line))
    return rows


def run_line(m):
    """Where and when a phase ran, in one sentence."""
    if not m:
        return "Not run."
    return (f"Phase {m.get('phase', '?')} of `bench/run.sh`, {m.get('date', '?')}, commit {m.get('commit', '?')} "
            f"({m.get('dirty', '?')} modified files), {m.get('nproc', '?')} CPUs, load average at its start "
            f"{m.get('load_at_start', '?')}.")


def summary(outdir, name):
    try:
        with open(os.path.join(outdir, "report", name)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def fmt(v, digits=0):
    if v is None:
        return "n/a"
    if digits == 0:
        return f"{v:,.0f}"
    return f"{v:,.{digits}f}"


def ratio(a, b, digits=2):
    if a is None or b is None or b == 0:
        return "n/a"
    return f"{a / b:.{digits}f}×"


def cpu_per_1k(run):
    """The server's CPU-seconds per 1,000 requests answered with a 2xx (None if not measured)."""
    if not run or run.get("server_cpu_s") is None:
        return None
    ok = run["counts"]["ok"]
    return run["server_cpu_s"] * 1000 / ok if ok else None


def level_runs(s):
    """The search's best rate and its runs at 50 % and 90 % (None where missing)."""
    if not s:
        return None, None, None
    best = (s.get("search") or {}).get("best")
    return best, s.get("at_50"), s.get("at_90")


# ---- SVG by hand ---------------------------------------------------------------------------------

def num(v):
    """A value for a chart label: whole numbers with thousands separators, small ones with 3 digits."""
    if abs(v) >= 100:
        return f"{v:,.0f}"
    return f"{v:.3g}"


def svg_open(width, height, title, left, right, top, plot_h, vmax):
    """The start of a chart: the canvas, the title, and 5 horizontal grid lines labelled 0..vmax."""
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'font-family="sans-serif" font-size="12">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{width / 2}" y="22" text-anchor="middle" font-size="15">{html.escape(title)}</text>']
    for i in range(5):
        v = vmax * i / 4
        y = top + plot_h - plot_h * i / 4
        out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{width - right}" y2="{y:.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{num(v)}</text>')
    return out


def svg_bars(title, unit, categories, series, path):
    """Grouped bars: categories along x, one bar per series (name, values), values labelled."""
    width, height, left, right, top, bottom = 820, 420, 80, 20, 60, 110
    vmax = max([v for _, vals in series for v in vals if v is not None] or [1])
    plot_w, plot_h = width - left - right, height - top - bottom
    group = plot_w / max(1, len(categories))
    bar = group * 0.8 / max(1, len(series))
    out = svg_open(width, height, title, left, right, top, plot_h, vmax)
    out.append(f'<text x="16" y="{top + plot_h / 2}" transform="rotate(-90 16 {top + plot_h / 2})" '
               f'text-anchor="middle">{html.escape(unit)}</text>')
    for c, cat in enumerate(categories):
        x0 = left + c * group + group * 0.1
        for k, (name, vals) in enumerate(series):
            v = vals[c]
            x = x0 + k * bar
            if v is None:
                out.append(f'<text x="{x + bar / 2:.1f}" y="{top + plot_h - 4}" text-anchor="middle">n/a</text>')
                continue
            h = plot_h * v / vmax
            out.append(f'<rect x="{x:.1f}" y="{top + plot_h - h:.1f}" width="{bar - 2:.1f}" '
                       f'height="{h:.1f}" fill="{COLOURS.get(name, "#999")}"/>')
            out.append(f'<text x="{x + bar / 2:.1f}" y="{top + plot_h - h - 4:.1f}" '
                       f'text-anchor="middle" font-size="11">{num(v)}</text>')
        words, lines, cur = cat.split(), [], ""
        for w in words:
            if len(cur) + len(w) > 22:
                lines.append(cur)
                cur = w
            else:
                cur = (cur + " " + w).strip()
        lines.append(cur)
        for j, line in enumerate(lines[:4]):
            out.append(f'<text x="{left + c * group + group / 2:.1f}" y="{top + plot_h + 16 + 14 * j}" '
                       f'text-anchor="middle">{html.escape(line)}</text>')
    for k, (name, _) in enumerate(series):
        x = left + 10 + k * 100
        out.append(f'<rect x="{x}" y="30" width="12" height="12" fill="{COLOURS.get(name, "#999")}"/>')
        out.append(f'<text x="{x + 16}" y="40">{html.escape(name)}</text>')
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def svg_lines(title, xlabel, ylabel, xs, series, path):
    """Lines over xs (categorical, evenly spaced): series = [(name, colour, values)]."""
    width, height, left, right, top, bottom = 700, 400, 80, 30, 50, 60
    vmax = max([v for _, _, vals in series for v in vals if v is not None] or [1])
    plot_w, plot_h = width - left - right, height - top - bottom
    step = plot_w / max(1, len(xs) - 1) if len(xs) > 1 else 0
    out = svg_open(width, height, title, left, right, top, plot_h, vmax)
    for i, x in enumerate(xs):
        out.append(f'<text x="{left + i * step:.1f}" y="{top + plot_h + 18}" text-anchor="middle">{x}</text>')
    out.append(f'<text x="{left + plot_w / 2}" y="{height - 14}" text-anchor="middle">{html.escape(xlabel)}</text>')
    out.append(f'<text x="16" y="{top + plot_h / 2}" transform="rotate(-90 16 {top + plot_h / 2})" '
               f'text-anchor="middle">{html.escape(ylabel)}</text>')
    for k, (name, colour, vals) in enumerate(series):
        pts = [(left + i * step, top + plot_h - plot_h * v / vmax) for i, v in enumerate(vals) if v is not None]
        if pts:
            out.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="'
                       + " ".join(f"{x:.1f},{y:.1f}" for x, y in pts) + '"/>')
            for x, y in pts:
                out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colour}"/>')
        out.append(f'<line x1="{left + 10}" y1="{top + 10 + 16 * k}" x2="{left + 30}" y2="{top + 10 + 16 * k}" '
                   f'stroke="{colour}" stroke-width="2"/>')
        out.append(f'<text x="{left + 36}" y="{top + 14 + 16 * k}">{html.escape(name)}</text>')
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def sipshard_plot(load_bin, args, path):
    """`sipshard-load plot ARGS -o PATH`; False (and a note on stderr) if it failed."""
    try:
        r = subprocess.run([load_bin, "plot", *args, "-o", path], capture_output=True, text=True, timeout=60)
    except OSError as e:
        print(f"report: {load_bin}: {e}", file=sys.stderr)
        return False
    if r.returncode != 0:
        print(f"report: sipshard-load plot {' '.join(args)}: {r.stderr.strip()}", file=sys.stderr)
    return r.returncode == 0


# ---- the report ----------------------------------------------------------------------------------

def build(outdir, load_bin, plots_dir, plots_link, results_link):
    rows = load_results(outdir)
    machines = {r["phase"]: r for r in rows if r.get("kind") == "machine"}
    machine = machines.get(9) or next(iter(machines.values()), {})
    searches = {(r["workload"], r["server"]): r for r in rows if r.get("kind") == "search"}
    memory = [r for r in rows if r.get("kind") == "memory"]
    failover = [r for r in rows if r.get("kind") == "failover"]
    scaling = sorted((r for r in rows if r.get("kind") == "scaling"), key=lambda r: r["shards"])
    os.makedirs(plots_dir, exist_ok=True)
    md = []
    w = md.append

    w("# sipshard benchmarks")
    w("")
    w(f"Generated by `bench/run.sh` (its last step, `bench/report.py`) on {machine.get('date', '?')}: "
      "do not edit by hand, run it again. Every figure below comes from the run's files in "
      f"[{results_link}]({results_link}); each table names the command behind it. Earlier, "
      "hand-written investigations (profiles, SIPp-driven runs, the load generators compared, "
      "TLS handshakes, the cluster) are in [bench/NOTES.md](bench/NOTES.md).")
    w("")
    w("## Machine and method")
    w("")
    w(f"- **Machine**: {machine.get('host', '?')}, {machine.get('nproc', '?')} CPUs "
      f"({machine.get('cpu', '?')}), {machine.get('memory_gib', '?')} GiB; load average at the start "
      f"{machine.get('load_at_start', '?')}.")
    w(f"- **Servers**: {machine.get('kamailio', 'kamailio ?')} (Debian 12 package, configurations in "
      "`bench/`, 2 UDP workers / 2 TCP workers, TLSF allocator, usrloc in memory or write-through "
      f"to Redis {machine.get('redis', '?')}) against sipshard `--threads 2` (commit "
      f"{machine.get('commit', '?')}, {machine.get('dirty', '?')} modified files under engine/ "
      "net/ registrar/ loadtest/, binary sha256 "
      f"{machine.get('sipshard_sha256', '?')}…), both release builds on the same machine, "
      "in the same run, on 127.0.0.1.")
    w(f"- **Load**: `sipshard-load` (this repository's generator) for both servers, with the same "
      f"options, on the same {machine.get('nproc', '?')} CPUs as the server (so a server that "
      "needs less CPU leaves more to the generator: the maximum rates are what the pair reaches "
      "on this machine). Open-loop, exact schedule; latency from each request's intended send "
      "time (corrected for coordinated omission), HdrHistogram.")
    w(f"- **Maximum**: `--search`: the highest rate with nothing failed, timed out or "
      "retransmitted and 97 % of the rate achieved, bisection to 2 %, at most 10 probes of "
      f"{machine.get('dur', '?')} s; then one run at 50 % and one at 90 % of it, where latency "
      "and CPU are read.")
    w("- **CPU**: the server's CPU time during each run, from every thread's "
      "`/proc/PID/task/TID/schedstat` at the run's start and end (`--server-pid`; Kamailio: "
      "the main process and all its workers; in the Redis workload the redis-server's time "
      "is added to both servers'), per 1,000 requests answered 2xx (per 1,000 calls for calls).")
    w("- One run per figure: on a shared 2-CPU virtual machine, expect ±10–20 % between runs; "
      "the ratios, measured minutes apart, are steadier than the absolute figures.")
    w("")

    # -- summary
    w("## Summary")
    w("")
    w(run_line(machines.get(9)))
    w("")
    w("| workload | Kamailio max | sipshard max | sipshard ÷ Kamailio | Kamailio CPU-s / 1,000 at 90 % | sipshard CPU-s / 1,000 at 90 % | Kamailio ÷ sipshard CPU |")
    w("|---|---:|---:|---:|---:|---:|---:|")
    cats, max_k, max_s, cpu_k, cpu_s = [], [], [], [], []
    for key, title, unit in WORKLOADS:
        if not any((key, s) in searches for s in SERVERS):
            continue
        vals = {}
        for srv in SERVERS:
            r = searches.get((key, srv))
            s = summary(outdir, r["json"]) if r else None
            best, _, at90 = level_runs(s)
            vals[srv] = (best, cpu_per_1k(at90))
        (kb, kc), (sb, sc) = vals["kamailio"], vals["sipshard"]
        w(f"| {title} | {fmt(kb)} {unit} | {fmt(sb)} {unit} | {ratio(sb, kb)} | {fmt(kc, 4)} | "
          f"{fmt(sc, 4)} | {ratio(kc, sc)} |")
        cats.append(title)
        max_k.append(kb)
        max_s.append(sb)
        cpu_k.append(kc)
        cpu_s.append(sc)
    w("")
    if cats:
        svg_bars("Highest clean rate (requests or calls per second)", "per second", cats,
                 [("kamailio", max_k), ("sipshard", max_s)], os.path.join(plots_dir, "max-rate.svg"))
        svg_bars("Server CPU-seconds per 1,000 at 90 % of each maximum (lower is better)", "CPU-s",
                 cats, [("kamailio", cpu_k), ("sipshard", cpu_s)], os.path.join(plots_dir, "cpu-per-1000.svg"))
        w(f"![highest clean rate]({plots_link}/max-rate.svg)")
        w("")
        w(f"![CPU per 1,000]({plots_link}/cpu-per-1000.svg)")
        w("")

    # -- latency
    w("## Latency at 50 % and 90 % of each maximum")
    w("")
    w("Each server at 50 % and 90 % of its own highest clean rate (so the rates differ between "
      "servers). Latency from the intended send time to the final response (INVITE to 200 for "
      "calls), milliseconds.")
    w("")
    w("| workload | server | at | rate/s | p50 ms | p99 ms | p99.9 ms | max ms | answered 2xx | failed | timed out | retransmissions | CPU-s / 1,000 |")
    w("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    tmp = tempfile.mkdtemp(prefix="sipshard-report-")
    try:
        for key, title, unit in WORKLOADS:
            plot_inputs = []
            for srv in SERVERS:
                r = searches.get((key, srv))
                s = summary(outdir, r["json"]) if r else None
                best, at50, at90 = level_runs(s)
                for pct, run in (("50", at50), ("90", at90)):
                    if not run:
                        if r:
                            w(f"| {title} | {srv} | {pct} % | n/a | | | | | | | | | (no clean rate found) |")
                        continue
                    lat = run["latency_ms"]["corrected"]
                    c = run["counts"]
                    w(f"| {title} | {srv} | {pct} % | {fmt(run['rate']['offered'])} | {fmt(lat['p50_ms'], 2)} | "
                      f"{fmt(lat['p99_ms'], 2)} | {fmt(lat['p99.9_ms'], 2)} | {fmt(lat['max_ms'], 1)} | "
                      f"{fmt(c['ok'])} | {fmt(c['failed'])} | {fmt(c['timed_out'])} | {fmt(c['retransmissions'])} | "
                      f"{fmt(cpu_per_1k(run), 4)} |")
                    p = os.path.join(tmp, f"{srv}-{pct}pct.json")
                    with open(p, "w") as f:
                        json.dump(run, f)
                    plot_inputs.append(p)
            if plot_inputs and load_bin:
                out = os.path.join(plots_dir, f"latency-{key}.svg")
                sipshard_plot(load_bin, ["--latency", *plot_inputs, "--title", f"{title}: latency by percentile"], out)
        w("")
        for key, title, unit in WORKLOADS:
            if os.path.exists(os.path.join(plots_dir, f"latency-{key}.svg")) and any((key, s) in searches for s in SERVERS):
                w(f"![{title}]({plots_link}/latency-{key}.svg)")
                w("")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    w("### Commands")
    w("")
    w("PIDS: the server's processes (sipshard's one; Kamailio's main process and its workers; "
      "with the redis-server's in the Redis workload). CA.pem: the P-256 CA made for the run by "
      "openssl (`make_certs` in bench/run.sh), whose server certificate both servers present.")
    w("")
    for key, title, unit in WORKLOADS:
        for srv in SERVERS:
            r = searches.get((key, srv))
            if not r:
                continue
            alive = "" if r.get("server_alive", "yes") == "yes" else " **The server was gone at the end.**"
            w(f"- {title}, {srv}: `{r['command']}` against `{r['server_command']}`; CPU of "
              f"{r.get('counted_pids', '?')} processes.{alive}")
    w("")

    # -- memory
    w("## Memory per binding")
    w("")
    if memory:
        settle = memory[0].get("settle_s", "?")
        w(run_line(machines.get(10)))
        w("")
        w("A fresh server of each kind receives REGISTERs of distinct AORs, half of them, then the "
          "other half; its proportional set size (PSS: resident memory, shared pages split between "
          "the processes sharing them, summed over Kamailio's processes) is read before, at the end "
          f"of each half, and {settle} s later (settled): sipshard keeps each UDP REGISTER's server "
          "transaction for Timer J (32 s) after its 200 (Kamailio answers REGISTER statelessly), so "
          "the bindings are read once the transactions have ended. Over all the bindings, memory "
          "that the ended transactions left to the allocator still counts; the second half reuses "
          "it, so the marginal cost of the second half is the bindings' own.")
        w("")
        w("| server | bindings (REGISTERs answered 200) | PSS before, MiB | at half, settled, MiB | at the end of the load, MiB | settled, MiB | bytes per binding, all | bytes per binding, second half |")
        w("|---|---:|---:|---:|---:|---:|---:|---:|")
        per, marginal = {}, {}
        for srv in SERVERS:
            halves = {r["half"]: r for r in memory if r["server"] == srv}
            h1, h2 = halves.get(1), halves.get(2)
            if not h1 or not h2:
                continue
            total = h2.get("ok") or 0
            second = total - (h1.get("ok") or 0)
            per[srv] = (h2["pss_settled_kib"] - h2["pss_before_kib"]) * 1024 / total if total else None
            marginal[srv] = (h2["pss_settled_kib"] - h1["pss_settled_kib"]) * 1024 / second if second else None
            gauge = f" (node's gauge: {fmt(h2['bindings_gauge'])})" if isinstance(h2.get("bindings_gauge"), int) else ""
            w(f"| {srv} | {fmt(total)}{gauge} | {fmt(h2['pss_before_kib'] / 1024, 1)} | "
              f"{fmt(h1['pss_settled_kib'] / 1024, 1)} | {fmt(h2['pss_at_end_kib'] / 1024, 1)} | "
              f"{fmt(h2['pss_settled_kib'] / 1024, 1)} | {fmt(per[srv])} | {fmt(marginal[srv])} |")
        w("")
        if per.get("kamailio") and per.get("sipshard"):
            w(f"Per binding, sipshard uses {ratio(per['sipshard'], per['kamailio'])} of Kamailio's memory "
              f"over all the bindings and {ratio(marginal.get('sipshard'), marginal.get('kamailio'))} at the margin.")
            w("")
        for r in memory:
            w(f"- {r['server']}, half {r['half']}: `{r['command']}` against `{r['server_command']}`.")
        w("")
    else:
        w("Not measured in this run (phase 10).")
        w("")

    # -- failover
    w("## Redis master failover")
    w("")
    if failover:
        w(run_line(machines.get(11)))
        w("")
        w("REGISTER load through one node while the Redis master is killed (SIGKILL). sipshard: the "
          "three-node lab (`configs/lab/run`: 3 redis-server, 3 redis-sentinel with the seed's "
          "down-after-milliseconds 10000 and quorum 2, 3 nodes following the Sentinel-elected "
          "master, writes held up to `redis-failover-hold`). A REGISTER whose write cannot be "
          "made waits (its 200 is sent once the write is acknowledged by the new master), so the "
          "**unavailability window** is the longest wait for a 200: a REGISTER sent just after "
          "the kill waits for the whole failover. Kamailio 5.6's db_redis connects to one "
          "redis-server and follows no Sentinel: its figure is what the same kill does to it "
          "(its failures are answered at once, so its longest wait says nothing of a window).")
        w("")
        w("| server | rate/s | REGISTERs | answered 2xx | failed | timed out | retransmissions | statuses | longest wait for a final response, s | p99 ms |")
        w("|---|---:|---:|---:|---:|---:|---:|---|---:|---:|")
        for r in failover:
            s = summary(outdir, r["json"])
            if not s:
                w(f"| {r['server']} | {r['rate']} | n/a (no summary) | | | | | | | |")
                continue
            c = s["counts"]
            statuses = ", ".join(f"{k}: {v:,}" for k, v in sorted(s["statuses"].items()))
            lat = s["latency_ms"]["corrected"]
            w(f"| {r['server']} | {fmt(s['rate']['offered'])} | {fmt(c['sent'])} | {fmt(c['ok'])} | {fmt(c['failed'])} | "
              f"{fmt(c['timed_out'])} | {fmt(c['retransmissions'])} | {statuses} | {fmt(lat['max_ms'] / 1000, 2)} | "
              f"{fmt(lat['p99_ms'], 1)} |")
            if load_bin and r["server"] == "sipshard":
                sipshard_plot(load_bin, ["--timeline", os.path.join(outdir, "report", r["json"]), "--title",
                                         f"REGISTER through node 1, Redis master killed at {r['kill_at_s']} s"],
                              os.path.join(plots_dir, "failover-sipshard.svg"))
        w("")
        if os.path.exists(os.path.join(plots_dir, "failover-sipshard.svg")):
            w(f"![failover timeline]({plots_link}/failover-sipshard.svg)")
            w("")
        for r in failover:
            w(f"- {r['server']}: `{r['command']}` against {r['server_command']}.")
        w("")
    else:
        w("Not measured in this run (phase 11).")
        w("")

    # -- scaling
    w("## Scaling over shards")
    w("")
    if scaling:
        w(run_line(machines.get(12)))
        w("")
        w("| shards (`--threads`) | highest clean REGISTER/s | per shard | CPU-s / 1,000 at 90 % |")
        w("|---:|---:|---:|---:|")
        xs, ys = [], []
        for r in scaling:
            s = summary(outdir, r["json"])
            best, _, at90 = level_runs(s)
            w(f"| {r['shards']} | {fmt(best)} | {fmt(best / r['shards'] if best else None)} | {fmt(cpu_per_1k(at90), 4)} |")
            xs.append(r["shards"])
            ys.append(best)
        w("")
        svg_lines("sipshard: highest clean REGISTER/s by shards", "shards", "REGISTER/s", xs,
                  [("sipshard", COLOURS["sipshard"], ys)], os.path.join(plots_dir, "scaling.svg"))
        w(f"![scaling]({plots_link}/scaling.svg)")
        w("")
        w(f"- `{scaling[0]['command']}` (and the same for each N) against `{scaling[0]['server_command']}`.")
        w("")
    nproc = machine.get("nproc", 0)
    if not isinstance(nproc, int) or nproc < 16:
        w(f"This machine has {nproc} CPUs, shared by the server and the generator: the curve over "
          "1, 2, 4, 8 and 16 shards needs a machine with more (phase 12 of `bench/run.sh` runs "
          "every N up to the machine's CPU count); none was available for this run.")
        w("")

    w("## Regenerating")
    w("")
    w("On a Debian 12 machine with the packages `kamailio kamailio-redis-modules "
      "kamailio-tls-modules kamailio-websocket-modules redis-server redis-sentinel curl openssl`:")
    w("")
    w("    cargo build --release --locked")
    w("    bench/run.sh            # phases 9-12, about 25 minutes; writes BENCHMARKS.md and bench/plots/")
    w("")
    w("`PHASES=\"0 1 1b 2 3 4 5 6 7 8\" bench/run.sh DIR` runs the earlier SIPp-driven and TLS "
      "investigations described in bench/NOTES.md (results in DIR only).")
    return "\n".join(md) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("outdir")
    ap.add_argument("--sipshard-load", default="target/release/sipshard-load")
    ap.add_argument("--write", metavar="ROOT", help="also write ROOT/BENCHMARKS.md and ROOT/bench/plots/")
    a = ap.parse_args()
    outdir = os.path.abspath(a.outdir)
    load_bin = a.sipshard_load if os.access(a.sipshard_load, os.X_OK) else None
    if not load_bin:
        print(f"report: {a.sipshard_load} not found: no latency or timeline plots", file=sys.stderr)
    if a.write:
        root = os.path.abspath(a.write)
        text = build(outdir, load_bin, os.path.join(root, "bench", "plots"), "bench/plots",
                     os.path.relpath(os.path.join(outdir, "report"), root))
        with open(os.path.join(root, "BENCHMARKS.md"), "w") as f:
            f.write(text)
        print(f"report: wrote {os.path.join(root, 'BENCHMARKS.md')} and {os.path.join(root, 'bench', 'plots')}/")
    text = build(outdir, load_bin, os.path.join(outdir, "plots"), "plots", "report")
    with open(os.path.join(outdir, "BENCHMARKS.md"), "w") as f:
        f.write(text)
    print(f"report: wrote {os.path.join(outdir, 'BENCHMARKS.md')}")


if __name__ == "__main__":
    main()
