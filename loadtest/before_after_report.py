"""Medians of a before/after run (loadtest/before_after.sh) as a Markdown table."""
import json
import statistics
import sys

FIGURES = [
    ("fanout", "deliveries/s", lambda r: r.get("deliveries_per_s"), True),
    ("fanout", "server CPU s per M deliveries", lambda r: r.get("server_cpu_s_per_million_deliveries"), False),
    ("rooms", "deliveries/s", lambda r: r.get("deliveries_per_s"), True),
    ("rooms", "server CPU s per M deliveries", lambda r: r.get("server_cpu_s_per_million_deliveries"), False),
    ("latency", "p99 publish to deliver, us", lambda r: (r.get("latency_us") or {}).get("p99"), False),
    ("latency", "p50 publish to deliver, us", lambda r: (r.get("latency_us") or {}).get("p50"), False),
    ("connections", "server RSS per idle connection, bytes", lambda r: r.get("server_rss_per_connection_bytes"), False),
    ("connections", "connects/s", lambda r: r.get("connects_per_s"), True),
]


def main(path):
    rows = [json.loads(line) for line in open(path) if line.strip()]
    print("| scenario | figure | before | after | after / before | runs (lossless, generator not saturated) |")
    print("|---|---|---:|---:|---:|---|")
    for scenario, name, pick, higher_is_better in FIGURES:
        medians = {}
        notes = []
        for label in ("before", "after"):
            runs = [r for r in rows if r.get("binary") == label and r.get("race_scenario") == scenario]
            values = [pick(r) for r in runs if pick(r) is not None]
            if not values:
                break
            medians[label] = statistics.median(values)
            clean = sum(1 for r in runs if r.get("lossless", True) and not r.get("generator_saturated"))
            notes.append(f"{label} {clean}/{len(runs)}")
        if len(medians) < 2:
            continue
        before, after = medians["before"], medians["after"]
        ratio = after / before if before else float("nan")
        worse = (ratio < 0.97) if higher_is_better else (ratio > 1.03)
        flag = " (worse)" if worse else ""
        print(f"| {scenario} | {name} | {before:,.3f} | {after:,.3f} | {ratio:.3f}{flag} | {', '.join(notes)} |")


if __name__ == "__main__":
    main(sys.argv[1])
