"""The race report's medians: what a reader of BENCHMARKS.md is shown when
a race ran several rounds (python3 -m unittest discover -s loadtest)."""
import io
import json
import os
import tempfile
import unittest
from contextlib import redirect_stdout

import race_report


def run(server, scenario, round_, **figures):
    row = {"server": server, "race_scenario": scenario, "round": round_, "lossless": True}
    row.update(figures)
    return row


class MergingRounds(unittest.TestCase):
    def test_each_figure_is_the_median_of_the_rounds(self):
        merged = race_report.merge_rounds([
            run("roomcast", "fanout", 1, deliveries_per_s=5.0e6, server_cpu_s_per_million_deliveries=0.20,
                latency_us={"p50": 10, "p99": 30, "p999": 40}),
            run("roomcast", "fanout", 2, deliveries_per_s=3.0e6, server_cpu_s_per_million_deliveries=0.90,
                latency_us={"p50": 20, "p99": 90, "p999": 99}),
            run("roomcast", "fanout", 3, deliveries_per_s=4.5e6, server_cpu_s_per_million_deliveries=0.10,
                latency_us={"p50": 15, "p99": 60, "p999": 70}),
        ])
        self.assertEqual(merged["rounds"], 3)
        self.assertEqual(merged["deliveries_per_s"], 4.5e6)  # the mean would be 4.17 M
        self.assertEqual(merged["server_cpu_s_per_million_deliveries"], 0.20)  # the mean would be 0.40
        self.assertEqual(merged["latency_us"], {"p50": 15, "p99": 60, "p999": 70})

    def test_an_even_number_of_rounds_averages_the_middle_two(self):
        merged = race_report.merge_rounds([
            run("bun", "connections", 1, server_rss_per_connection_bytes=1300.0, connects_per_s=20000.0),
            run("bun", "connections", 2, server_rss_per_connection_bytes=1400.0, connects_per_s=26000.0),
        ])
        self.assertEqual(merged["server_rss_per_connection_bytes"], 1350.0)
        self.assertEqual(merged["connects_per_s"], 23000.0)

    def test_one_lossy_or_saturated_round_marks_the_row(self):
        merged = race_report.merge_rounds([
            run("roomcast", "rooms", 1, deliveries_per_s=3e6),
            dict(run("roomcast", "rooms", 2, deliveries_per_s=3e6), lossless=False, generator_saturated=True),
            run("roomcast", "rooms", 3, deliveries_per_s=3e6),
        ])
        self.assertFalse(merged["lossless"])
        self.assertTrue(merged["generator_saturated"])

    def test_connect_errors_are_added_up(self):
        merged = race_report.merge_rounds([
            run("roomcast", "connections", 1, connect_errors={"timeout": 2}),
            run("roomcast", "connections", 2, connect_errors={"timeout": 1, "refused": 4}),
        ])
        self.assertEqual(merged["connect_errors"], {"timeout": 3, "refused": 4})


class PairingRounds(unittest.TestCase):
    def runs(self, rows):
        grouped = {}
        for r in rows:
            grouped.setdefault((r["server"], r["race_scenario"]), []).append(r)
        return grouped

    def test_servers_are_compared_within_each_round(self):
        runs = self.runs([
            run("roomcast", "fanout", 2, deliveries_per_s=3.0e6),
            run("bun", "fanout", 1, deliveries_per_s=4.0e6),
            run("roomcast", "fanout", 1, deliveries_per_s=6.0e6),
            run("bun", "fanout", 2, deliveries_per_s=1.5e6),
        ])
        ratios = race_report.round_ratios(runs, "roomcast", "bun", "fanout", lambda r: r["deliveries_per_s"])
        self.assertEqual(ratios, [1.5, 2.0])

    def test_a_lossy_round_and_a_round_one_server_missed_are_left_out(self):
        runs = self.runs([
            run("roomcast", "rooms", 1, deliveries_per_s=3.0e6),
            run("bun", "rooms", 1, deliveries_per_s=1.0e6),
            dict(run("roomcast", "rooms", 2, deliveries_per_s=9.0e6), lossless=False),
            run("bun", "rooms", 2, deliveries_per_s=1.0e6),
            run("roomcast", "rooms", 3, deliveries_per_s=2.0e6),
        ])
        ratios = race_report.round_ratios(runs, "roomcast", "bun", "rooms", lambda r: r["deliveries_per_s"])
        self.assertEqual(ratios, [3.0])


def report(rows):
    """The report race_report.main prints for these runs."""
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
        f.write("\n".join(json.dumps(r) for r in rows))
    try:
        out = io.StringIO()
        with redirect_stdout(out):
            race_report.main(f.name)
        return out.getvalue()
    finally:
        os.unlink(f.name)


def fanout_race(pairs):
    """A fan-out race of len(pairs) rounds: (roomcast, Bun) deliveries/s per round."""
    rows = []
    for round_, (ours, theirs) in enumerate(pairs, start=1):
        rows.append(run("roomcast", "fanout", round_, deliveries_per_s=ours))
        rows.append(run("bun", "fanout", round_, deliveries_per_s=theirs))
    return rows


class TheReport(unittest.TestCase):
    def test_a_three_round_race_shows_medians_and_says_so(self):
        text = report(fanout_race([(5.0e6, 3.0e6), (4.0e6, 3.5e6), (6.0e6, 2.0e6)]))
        self.assertIn("median of 3 rounds", text)
        # roomcast's median 5.0 M against Bun's 3.0 M: 1.67x.
        self.assertIn("| roomcast | 5,000,000 | 1.67 |", text)
        # Round by round: 5/3, 4/3.5, 6/2.
        self.assertIn("| fan-out deliveries/s vs Bun | ≥ 1.5× | 1.67 | 1.67 / 1.14 / 3.00 (median 1.67) | yes |",
                      text)

    def test_a_target_met_by_the_medians_but_not_round_by_round_is_not_met(self):
        # Medians 5.0 M against 3.0 M (1.67x), but two rounds of three below 1.5x.
        text = report(fanout_race([(6.0e6, 4.5e6), (5.0e6, 3.0e6), (4.0e6, 2.9e6)]))
        self.assertIn("| fan-out deliveries/s vs Bun | ≥ 1.5× | 1.67 | 1.33 / 1.67 / 1.38 (median 1.38) "
                      "| no (by the medians only) |", text)

    def test_connects_are_also_compared_by_what_a_connect_costs_each_server(self):
        # The generator sets the rate (22 k against 21 k); the server's own
        # CPU per connection, measured while connecting, is the fair figure.
        rows = []
        for round_, (ours, theirs) in enumerate([(26.0, 28.6), (27.0, 27.0), (25.0, 30.0)], start=1):
            rows.append(run("roomcast", "connections", round_, connects_per_s=22000.0,
                            connections_open=19000, connections_requested=19000,
                            server_cpu_seconds=5.0, server_cpu_us_per_connect=ours,
                            connecting_generator_cpu_util=0.85))
            rows.append(run("bun", "connections", round_, connects_per_s=21000.0,
                            connections_open=19000, connections_requested=19000,
                            server_cpu_seconds=5.0, server_cpu_us_per_connect=theirs,
                            connecting_generator_cpu_util=0.80))
        text = report(rows)
        # Per connection: the connect-phase figure, not 5 s over 19,000.
        self.assertIn("| roomcast | 19,000 of 19,000 | — | 22,000 | 26.0 | 0.85 | {} |", text)
        # Medians 28.6 / 26.0 = 1.10; rounds 1.10, 1.00, 1.20.
        self.assertIn("| connects: server CPU per connection, Bun ÷ roomcast | ≥ 1× (when the generator is "
                      "the ceiling) | 1.10 | 1.10 / 1.00 / 1.20 (median 1.10) | yes |", text)


if __name__ == "__main__":
    unittest.main()
