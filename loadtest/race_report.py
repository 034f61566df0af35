#!/usr/bin/env python3
"""Turns the JSON lines of loadtest/race.sh into BENCHMARKS.md (stdout)."""
import json
import os
import re
import platform
import subprocess
import sys


def machine():
    model = "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores ({model}), Linux {platform.release()}"


def fmt(value, digits=0):
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def lossless(r):
    if "lossless" in r:
        return r["lossless"]
    return r.get("losses", 1) == 0 and r.get("gaps", 1) == 0


def ratio(a, b):
    if not a or not b:
        return None
    return a / b


def run_time(path):
    """When the race ran: from its file name (race-YYYY-MM-DDTHH-MM-SSZ.jsonl,
    as race.sh names it), so a report made again later keeps the race's
    time; otherwise now."""
    m = re.search(r"(\d{4}-\d{2}-\d{2})T(\d{2})-(\d{2})-\d{2}Z", os.path.basename(path))
    if m:
        return f"{m.group(1)} {m.group(2)}:{m.group(3)} UTC"
    return subprocess.run(['date', '-u', '+%Y-%m-%d %H:%M UTC'], capture_output=True, text=True).stdout.strip()


def median(values):
    values = sorted(v for v in values if v is not None)
    if not values:
        return None
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


# The figures the report shows; a race of several rounds shows the median
# of each over the rounds.
FIGURES = ("deliveries_per_s", "server_cpu_s_per_million_deliveries", "server_rss_per_connection_bytes",
           "connects_per_s", "server_cpu_seconds", "connections_open", "connections_requested",
           "generator_cpu_util", "connecting_generator_cpu_util", "server_cpu_us_per_connect")
PERCENTILES = ("p50", "p99", "p999")


def merge_rounds(runs):
    """One server's runs of one scenario as one row: the median of each
    figure, lossless only if every run was, the generator saturated if it
    was in any run, and `rounds` = how many runs there were. A single run
    is returned as it is."""
    if len(runs) == 1:
        return dict(runs[0], rounds=1)
    merged = {"server": runs[0]["server"], "race_scenario": runs[0]["race_scenario"], "rounds": len(runs)}
    for key in FIGURES:
        merged[key] = median(r.get(key) for r in runs)
    latencies = [r.get("latency_us") or {} for r in runs]
    if any(latencies):
        merged["latency_us"] = {p: median(l.get(p) for l in latencies) for p in PERCENTILES}
    for key in ("latency_ms_p50", "latency_ms_p99"):
        if any(key in r for r in runs):
            merged[key] = median(r.get(key) for r in runs)
    merged["lossless"] = all(lossless(r) for r in runs)
    merged["generator_saturated"] = any(r.get("generator_saturated") for r in runs)
    errors = {}
    for r in runs:
        for error, n in (r.get("connect_errors") or {}).items():
            errors[error] = errors.get(error, 0) + n
    merged["connect_errors"] = errors
    return merged


def round_ratios(runs, a, b, scenario, figure):
    """`figure` of server `a` over that of server `b`, round by round, for
    the rounds both ran lossless (a connections run delivers nothing, so it
    counts whatever it lost): paired this way, a round's own noise (a busy
    neighbour for a few minutes) weighs on both sides of its ratio."""
    by_round = {}
    for server in (a, b):
        for r in runs.get((server, scenario), []):
            if scenario == "connections" or lossless(r):
                by_round.setdefault(r.get("round", 1), {})[server] = figure(r)
    return [ratio(pair[a], pair[b]) for _, pair in sorted(by_round.items())
            if len(pair) == 2 and ratio(pair[a], pair[b]) is not None]


def paired(ratios):
    """Round-by-round ratios as the report shows them: each, then their median."""
    if len(ratios) < 2:
        return ""
    return " / ".join(fmt(x, 2) for x in ratios) + f" (median {fmt(median(ratios), 2)})"


def main(path):
    rows = [json.loads(line) for line in open(path) if line.strip()]
    runs = {}
    for r in rows:
        runs.setdefault((r["server"], r["race_scenario"]), []).append(r)
    by = {key: merge_rounds(group) for key, group in runs.items()}
    rounds = max((row["rounds"] for row in by.values()), default=1)
    servers = []
    for r in rows:
        if r["server"] not in servers:
            servers.append(r["server"])
    out = []
    w = out.append
    w("# Benchmarks")
    w("")
    w(f"Run on {run_time(path)}, "
      f"on {machine()}: a shared, noisy machine; compare ratios within this one run, not with other runs.")
    w("Server pinned to core 0 and generator to core 1 (`taskset`); servers run one core "
      "(roomcast `--workers 1`). Produced by `loadtest/race.sh`; raw JSON at the end.")
    if rounds > 1:
        w(f"Every figure is the median of {rounds} rounds (in each round, every server runs a scenario "
          "before the next scenario starts); a server's scenario counts as lossless only if all its rounds were.")
    w("")
    w("Columns: **deliveries/s** = deliveries that arrived in the measured window; **CPU µs/delivery** = "
      "server CPU-seconds per million deliveries (the fair comparison when the generator is the ceiling); "
      "**gen. saturated** = the generator's own core was above 90% (then deliveries/s measures the generator).")
    for scenario, title in [("fanout", "Fan-out: 1 room × 1,000 subscribers, 128 B, closed loop (window 64)"),
                            ("rooms", "Many rooms: 100 rooms × 10 subscribers, one publisher each, 128 B"),
                            ("latency", "Latency: 1,000 msg/s into 100 subscribers, 128 B")]:
        present = [s for s in servers if (s, scenario) in by]
        if not present:
            continue
        w("")
        w(f"## {title}")
        w("")
        w("| server | deliveries/s | × bun | × limit | CPU µs/delivery | p50 µs | p99 µs | p99.9 µs | lossless | gen. saturated |")
        w("|---|---:|---:|---:|---:|---:|---:|---:|---|---|")
        bun = by.get(("bun", scenario), {})
        limit = by.get(("limit", scenario), {})
        for s in present:
            r = by[(s, scenario)]
            lat = r.get("latency_us") or {}
            if s == "socketio" and "latency_ms_p50" in r:
                lat = {"p50": (r.get("latency_ms_p50") or 0) * 1000, "p99": (r.get("latency_ms_p99") or 0) * 1000}
            w(f"| {s} | {fmt(r.get('deliveries_per_s'))} | {fmt(ratio(r.get('deliveries_per_s'), bun.get('deliveries_per_s')), 2)} "
              f"| {fmt(ratio(r.get('deliveries_per_s'), limit.get('deliveries_per_s')), 2)} "
              f"| {fmt(r.get('server_cpu_s_per_million_deliveries'), 3)} | {fmt(lat.get('p50'))} | {fmt(lat.get('p99'))} "
              f"| {fmt(lat.get('p999'))} | {'yes' if lossless(r) else '**NO**'} | {'yes' if r.get('generator_saturated') else 'no'} |")
    present = [s for s in servers if (s, "connections") in by]
    if present:
        w("")
        w("## Idle connections")
        w("")
        w("Server CPU per connection and the generator's load are measured while connecting, without the hold "
          "(older results: over the whole run). With the generator near 1, it sets the connect rate, and "
          "the servers compare by their CPU per connection.")
        w("")
        w("| server | opened | server RSS per connection (bytes) | connects/s | server CPU µs/connection | gen. busy while connecting | errors |")
        w("|---|---:|---:|---:|---:|---:|---|")
        for s in present:
            r = by[(s, "connections")]
            opened = r.get("connections_open") or 0
            cpu = r.get("server_cpu_seconds")
            per_connection = r.get("server_cpu_us_per_connect")
            if per_connection is None:
                per_connection = cpu * 1e6 / opened if cpu is not None and opened else None
            busy = r.get("connecting_generator_cpu_util")
            if busy is None:
                busy = r.get("generator_cpu_util")
            w(f"| {s} | {fmt(r.get('connections_open'))} of {fmt(r.get('connections_requested'))} "
              f"| {fmt(r.get('server_rss_per_connection_bytes'))} | {fmt(r.get('connects_per_s'))} "
              f"| {fmt(per_connection, 1)} | {fmt(busy, 2)} | {json.dumps(r.get('connect_errors') or {})} |")
    # Targets.
    rc = lambda sc: by.get(("roomcast", sc), {})
    bn = lambda sc: by.get(("bun", sc), {})
    lm = lambda sc: by.get(("limit", sc), {})
    w("")
    w("## Against the targets")
    w("")
    if rounds > 1:
        w("**measured** compares the medians of the tables above; **round by round** pairs the two servers "
          "within each round (roomcast's figure over Bun's, or Bun's over roomcast's where less is better), "
          "so that a noisy round weighs on both sides of its own ratio. A target is met when both meet it.")
        w("")
    w("| target | goal | measured | round by round | met |")
    w("|---|---|---|---|---|")

    def target(name, goal, value, ok, fair=True, by_round=(), round_ok=None):
        """A target is met when the medians meet it and, with two rounds or
        more paired, so does the median of the rounds' ratios."""
        by_round = list(by_round)
        shown = fmt(value, 2) if isinstance(value, float) else fmt(value)
        if value is None or not fair:
            verdict = "not measured"
        elif not ok:
            verdict = "no"
        elif len(by_round) >= 2 and round_ok is not None and not round_ok(median(by_round)):
            verdict = "no (by the medians only)"
        else:
            verdict = "yes"
        w(f"| {name} | {goal} | {shown} | {paired(by_round)} | {verdict} |")

    def vs_bun(scenario, figure, ours_over_theirs=True):
        a, b = ("roomcast", "bun") if ours_over_theirs else ("bun", "roomcast")
        return round_ratios(runs, a, b, scenario, figure)

    deliveries = lambda r: r.get("deliveries_per_s")
    cpu = lambda r: r.get("server_cpu_s_per_million_deliveries")
    p99 = lambda r: (r.get("latency_us") or {}).get("p99")

    f_rc, f_bn, f_lm = rc("fanout"), bn("fanout"), lm("fanout")
    fair = lossless(f_rc) if f_rc else False
    target("fan-out deliveries/s vs Bun", "≥ 1.5×", ratio(f_rc.get("deliveries_per_s"), f_bn.get("deliveries_per_s")),
           (ratio(f_rc.get("deliveries_per_s"), f_bn.get("deliveries_per_s")) or 0) >= 1.5, fair,
           vs_bun("fanout", deliveries), lambda m: m >= 1.5)
    target("fan-out CPU per delivery, Bun ÷ roomcast", "≥ 1.5× (when the generator is the ceiling)",
           ratio(f_bn.get("server_cpu_s_per_million_deliveries"), f_rc.get("server_cpu_s_per_million_deliveries")),
           (ratio(f_bn.get("server_cpu_s_per_million_deliveries"), f_rc.get("server_cpu_s_per_million_deliveries")) or 0) >= 1.5, fair,
           vs_bun("fanout", cpu, ours_over_theirs=False), lambda m: m >= 1.5)
    target("fan-out deliveries/s vs limit", "≥ 0.70×", ratio(f_rc.get("deliveries_per_s"), f_lm.get("deliveries_per_s")),
           (ratio(f_rc.get("deliveries_per_s"), f_lm.get("deliveries_per_s")) or 0) >= 0.7, fair)
    r_rc, r_bn = rc("rooms"), bn("rooms")
    target("rooms deliveries/s vs Bun", "≥ 1.5×", ratio(r_rc.get("deliveries_per_s"), r_bn.get("deliveries_per_s")),
           (ratio(r_rc.get("deliveries_per_s"), r_bn.get("deliveries_per_s")) or 0) >= 1.5, lossless(r_rc) if r_rc else False,
           vs_bun("rooms", deliveries), lambda m: m >= 1.5)
    l_rc, l_bn = rc("latency"), bn("latency")
    p99_rc = (l_rc.get("latency_us") or {}).get("p99")
    p99_bn = (l_bn.get("latency_us") or {}).get("p99")
    target("latency p99 (µs), roomcast", f"< Bun's ({fmt(p99_bn)}) and < 1,000", p99_rc,
           p99_rc is not None and p99_bn is not None and p99_rc < p99_bn and p99_rc < 1000, lossless(l_rc) if l_rc else False,
           vs_bun("latency", p99), lambda m: m < 1)
    c_rc, c_bn = rc("connections"), bn("connections")
    target("RSS per idle connection (bytes), roomcast", "≤ 2 KiB (2,048; issue 11's target)",
           c_rc.get("server_rss_per_connection_bytes"),
           (c_rc.get("server_rss_per_connection_bytes") or 1e18) <= 2048)
    target("RSS per idle connection (bytes), roomcast", f"≤ Bun's ({fmt(c_bn.get('server_rss_per_connection_bytes'))})",
           c_rc.get("server_rss_per_connection_bytes"),
           (c_rc.get("server_rss_per_connection_bytes") or 1e18) <= (c_bn.get("server_rss_per_connection_bytes") or 0))
    target("connects/s vs Bun", "≥ 1×", ratio(c_rc.get("connects_per_s"), c_bn.get("connects_per_s")),
           (ratio(c_rc.get("connects_per_s"), c_bn.get("connects_per_s")) or 0) >= 1.0,
           by_round=vs_bun("connections", lambda r: r.get("connects_per_s")), round_ok=lambda m: m >= 1.0)
    connect_cost = lambda r: r.get("server_cpu_us_per_connect")
    target("connects: server CPU per connection, Bun ÷ roomcast", "≥ 1× (when the generator is the ceiling)",
           ratio(c_bn.get("server_cpu_us_per_connect"), c_rc.get("server_cpu_us_per_connect")),
           (ratio(c_bn.get("server_cpu_us_per_connect"), c_rc.get("server_cpu_us_per_connect")) or 0) >= 1.0,
           c_rc.get("server_cpu_us_per_connect") is not None,
           vs_bun("connections", connect_cost, ours_over_theirs=False), lambda m: m >= 1.0)
    w("")
    w("No target may be met by dropping: a run that is not lossless does not count.")
    results = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
    for extra in ("profiles.md", "scaling.md", "changes.md"):
        path = os.path.join(results, extra)
        if os.path.exists(path):
            w("")
            w(open(path).read().rstrip())
    w("")
    w("## Raw results")
    w("")
    w("```json")
    for r in rows:
        w(json.dumps(r))
    w("```")
    print("\n".join(out))


if __name__ == "__main__":
    main(sys.argv[1])
