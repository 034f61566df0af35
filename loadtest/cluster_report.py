#!/usr/bin/env python3
"""Medians of loadtest/cluster.sh's runs, as a Markdown report.

Usage: cluster_report.py RUNS.jsonl REPORT.md DURATION
"""
import datetime
import json
import platform
import statistics
import subprocess
import sys


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(value, unit=""):
    if value is None:
        return "n/a"
    if value >= 1e6:
        return f"{value / 1e6:.2f} M{unit}"
    if value >= 1e4:
        return f"{value / 1e3:.1f} k{unit}"
    return f"{value:.0f}{unit}"


def main():
    runs_path, report_path, duration = sys.argv[1:4]
    runs = [json.loads(line) for line in open(runs_path) if line.strip()]
    groups = {}
    for run in runs:
        key = (run["scenario"], run["engine"], run["nodes"])
        groups.setdefault(key, []).append(run["result"])

    def figure(key, field, sub=None):
        results = groups.get(key, [])
        if sub:
            return median([(r.get(field) or {}).get(sub) for r in results])
        return median([r.get(field) for r in results])

    def flags(key):
        results = groups.get(key, [])
        notes = []
        if any(r.get("generator_saturated") for r in results):
            notes.append("generator saturated")
        if any(r.get("lossless") is False for r in results):
            notes.append("LOSSY")
        return ", ".join(notes) or "lossless"

    rounds = max((r["round"] for r in runs), default=0)
    cpu = subprocess.run(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"],
                         capture_output=True, text=True).stdout.strip()
    lines = [
        "# The cluster's cost: memory engine against 1, 2 and 3 nodes on one Redis",
        "",
        f"Made by `loadtest/cluster.sh` on {datetime.date.today()} ({platform.node()}, "
        f"{cpu}, {subprocess.run(['nproc'], capture_output=True, text=True).stdout.strip()} cores), "
        f"{rounds} rounds of {duration} each, medians. Nodes (one worker each) and Redis "
        "share one core, the generator has the other: on this machine the numbers compare "
        "configurations with each other, not with a machine where every node has its own cores. "
        "The publisher is on node 1; subscribers are spread round robin over the nodes. "
        "Server CPU is node 1's alone.",
        "",
        "## Fan-out: 1 room, 1,000 subscribers, one publisher with 64 in flight",
        "",
        "| engine | nodes | deliveries/s | ÷ memory | p50 µs | p99 µs | node 1 CPU s per M deliveries | |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    base = figure(("fanout", "memory", 1), "deliveries_per_s")
    for engine, nodes in [("memory", 1), ("redis", 1), ("redis", 2), ("redis", 3)]:
        key = ("fanout", engine, nodes)
        if key not in groups:
            continue
        d = figure(key, "deliveries_per_s")
        ratio = f"{d / base:.2f}" if d and base else "n/a"
        lines.append(
            f"| {engine} | {nodes} | {fmt(d)} | {ratio} | {fmt(figure(key, 'latency_us', 'p50'))} | "
            f"{fmt(figure(key, 'latency_us', 'p99'))} | "
            f"{figure(key, 'server_cpu_s_per_million_deliveries') or 'n/a'} | {flags(key)} |"
        )
    lines += [
        "",
        "## Latency: 1,000 publications/s into 100 subscribers",
        "",
        "| engine | nodes | p50 µs | p99 µs | p99.9 µs | p99 − memory's | |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    base_p99 = figure(("latency", "memory", 1), "latency_us", "p99")
    for engine, nodes in [("memory", 1), ("redis", 1), ("redis", 2), ("redis", 3)]:
        key = ("latency", engine, nodes)
        if key not in groups:
            continue
        p99 = figure(key, "latency_us", "p99")
        added = f"{p99 - base_p99:+.0f} µs" if p99 is not None and base_p99 is not None else "n/a"
        lines.append(
            f"| {engine} | {nodes} | {fmt(figure(key, 'latency_us', 'p50'))} | {fmt(p99)} | "
            f"{fmt(figure(key, 'latency_us', 'p999'))} | {added} | {flags(key)} |"
        )
    lines += [
        "",
        "## Publish throughput into one Redis (no subscribers; publishers with 64 in flight each)",
        "",
        "Here Redis has a core to itself; the node shares the other with the generator, as "
        "redis-benchmark (one connection, 64 commands in flight, the same publish.lua, a fresh "
        "idempotency key each call) does: both clients drive the same Redis from the same core.",
        "",
        "| what | rooms | publications/s | ÷ redis-benchmark |",
        "|---|---:|---:|---:|",
    ]
    bench = figure(("publish-1", "redis-benchmark", 0), "publishes_per_s")
    for rooms in (1, 1000):
        for engine in ("memory", "redis"):
            key = (f"publish-{rooms}", engine, 1)
            if key not in groups:
                continue
            p = figure(key, "publishes_per_s")
            ratio = f"{p / bench:.2f}" if p and bench and engine == "redis" else ""
            lines.append(f"| roomcast, {engine} engine, 1 node | {rooms} | {fmt(p)} | {ratio} |")
    lines.append(f"| redis-benchmark, publish.lua, 1 connection, -P 64 | 1 | {fmt(bench)} | 1.00 |")
    lines.append("")
    open(report_path, "w").write("\n".join(lines))


main()
