#!/usr/bin/env python3
"""Pools the fixed-rate runs of several run.sh reports into one figure per candidate.

One run.sh report gives the fixed-rate latency as the median of six same-round ratios to nginx,
and a 10 s run's p99 at 2,000 req/s moves by about a fifth from run to run: whether the median of
six falls above or below 1 is, near parity, close to a coin toss. Pooling the same-round ratios of
several reports (each ratio is still taken between two runs a few seconds apart) gives the median
over all of them, with a bootstrap 90% interval (2,000 resamples, fixed seed) and how many
ratios were below 1. Nothing is dropped: a disturbed round counts as run.sh kept it.

Usage: loadtest/compare/pool.py REPORT.md.raw [REPORT.md.raw ...]
(the directories `run.sh --out REPORT.md` writes beside the report). Prints markdown.
"""

import json
import random
import statistics
import sys
from pathlib import Path

PERCENTILES = (("p50", "p50_us"), ("p99", "p99_us"), ("p99.9", "p999_us"))
RESAMPLES = 2000


def rate_rounds(raw: Path) -> dict:
    """{round: {candidate: client figures}} of the fixed-rate runs of one report."""
    rounds: dict = {}
    with open(raw / "rounds.jsonl", encoding="utf-8") as lines:
        for line in lines:
            row = json.loads(line)
            if row.get("kind") == "rate":
                rounds.setdefault(row["round"], {})[row["candidate"]] = row["client"]
    return rounds


def ratios(rounds: dict, candidate: str, key: str) -> list:
    return [
        r[candidate][key] / r["nginx"][key]
        for r in rounds.values()
        if candidate in r and "nginx" in r and r["nginx"][key] > 0
    ]


def interval(values: list) -> tuple:
    """A bootstrap 90% interval of the median."""
    rng = random.Random(16)
    medians = sorted(
        statistics.median(rng.choice(values) for _ in values) for _ in range(RESAMPLES)
    )
    return medians[int(0.05 * RESAMPLES)], medians[int(0.95 * RESAMPLES)]


def main(paths: list) -> int:
    if not paths:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    reports = []
    for path in paths:
        raw = Path(path)
        if not (raw / "rounds.jsonl").is_file():
            print(f"pool.py: {raw} has no rounds.jsonl (pass the REPORT.md.raw directory)", file=sys.stderr)
            return 2
        reports.append((raw, rate_rounds(raw)))
    candidates = sorted(
        {c for _, rounds in reports for r in rounds.values() for c in r} - {"nginx", "direct"}
    )
    print("| Report | " + " | ".join(f"{c} p99 ×nginx (median, ratios below 1)" for c in candidates) + " |")
    print("|---|" + "---|" * len(candidates))
    for raw, rounds in reports:
        cells = []
        for c in candidates:
            r = ratios(rounds, c, "p99_us")
            cells.append(f"{statistics.median(r):.2f} ({sum(x < 1 for x in r)}/{len(r)})" if r else "–")
        print(f"| {raw.name} | " + " | ".join(cells) + " |")
    print()
    print("| Pooled, same-round ratio to nginx | ratios | median | 90% interval | below 1 |")
    print("|---|---|---|---|---|")
    for c in candidates:
        for name, key in PERCENTILES:
            r = [x for _, rounds in reports for x in ratios(rounds, c, key)]
            if not r:
                continue
            low, high = interval(r)
            print(
                f"| {c} {name} | {len(r)} | {statistics.median(r):.3f} | {low:.3f}–{high:.3f} "
                f"| {sum(x < 1 for x in r)}/{len(r)} |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
