#!/usr/bin/env python3
"""Reads tail.sh's output directory and says where each candidate's fixed-rate tail comes from.

For each run: wrk's p99; the proxy-side latency of every request, from the client's request
packet to the proxy's response packet on loopback (tcpdump's timestamps); which of the slowest 1%
overlapped another task's time on the proxy core (perf's sched_switch trace of core 0: anything
but the idle task and the candidate's own threads); and the p99 of the requests that no other task
touched. Then, per candidate, the median of the same-round ratios to nginx.
"""

import bisect
import collections
import json
import re
import statistics
import subprocess
import sys

PROXY_CORE = 0


def packets(pcap):
    """(time, source port, destination port) of every captured packet, in order."""
    out = subprocess.run(["tcpdump", "-r", pcap, "-tt", "-n", "-q"], capture_output=True, text=True,
                         check=True).stdout
    rows = []
    for line in out.splitlines():
        f = line.split()
        if len(f) < 6 or f[1] != "IP":
            continue
        rows.append((float(f[0]), int(f[2].rsplit(".", 1)[1]), int(f[4].rstrip(":").rsplit(".", 1)[1])))
    rows.sort()
    return rows


def latencies(pcap, port):
    """(request time, response time) per request: HTTP/1.1, one request at a time per connection."""
    sent, out = {}, []
    for t, src, dst in packets(pcap):
        if dst == port:
            sent[src] = t
        elif src == port and src != dst and dst in sent:
            out.append((sent.pop(dst), t))
    return out


def foreign_time(perf, offset, own):
    """Intervals (start, end, task name) when a task other than `own` ran on the proxy core."""
    text = subprocess.run(["perf", "script", "-i", perf], capture_output=True, text=True).stdout
    running, intervals = None, []
    for line in text.splitlines():
        m = re.search(r"\[(\d+)\]\s+([\d.]+):", line)
        if not m or int(m.group(1)) != PROXY_CORE or "next_pid=" not in line:
            continue
        t = float(m.group(2)) + offset
        name = line.split("next_comm=")[1].split(" next_pid=")[0]
        pid = int(line.split("next_pid=")[1].split()[0])
        if running and running[2] != 0 and running[2] not in own:
            intervals.append((running[0], t, running[1]))
        running = (t, name, pid)
    return intervals


def quantile(sorted_values, q):
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def analyse(out, candidate, rnd, port):
    own = {int(x) for x in open(f"{out}/{candidate}.tids").read().split()}
    offset = float(open(f"{out}/{candidate}-{rnd}.offset").read())
    lat = latencies(f"{out}/{candidate}-{rnd}.pcap", port)
    others = foreign_time(f"{out}/{candidate}-{rnd}.perf", offset, own)
    starts = [a for a, _, _ in others]
    rows = []  # (latency us, names of other tasks that ran on the proxy core meanwhile)
    for a, b in lat:
        names = set()
        k = bisect.bisect_right(starts, b)
        for j in range(k - 1, -1, -1):
            fa, fb, name = others[j]
            if fb <= a:  # one core runs one task at a time: earlier intervals end earlier still
                break
            if fb > a and fa < b:
                names.add(re.sub(r"[/-]\d+.*$|:\d+$", "", name))
        rows.append(((b - a) * 1e6, names))
    everything = sorted(x for x, _ in rows)
    p99 = quantile(everything, 0.99)
    top = [n for x, n in rows if x >= p99]
    untouched = sorted(x for x, n in rows if not n)
    by_task = collections.Counter(name for n in top for name in n)
    return {
        "requests": len(rows), "p99": p99, "p50": quantile(everything, 0.5),
        "top": len(top), "top_shared": sum(1 for n in top if n), "by_task": by_task,
        "untouched": len(untouched), "untouched_p99": quantile(untouched, 0.99) if untouched else 0.0,
        "other_ms": sum(b - a for a, b, _ in others) * 1e3,
    }


def main(out):
    meta = json.load(open(f"{out}/meta.json"))
    wrk = {}
    for line in open(f"{out}/wrk.txt"):
        c, r, requests, p50, p99, errors = line.split()
        wrk[(c, int(r))] = {"p50": int(p50), "p99": int(p99), "errors": int(errors)}
    candidates = open(f"{out}/candidates").read().split()
    rounds = sorted({r for _, r in wrk})
    res = {}
    print(f"{meta['rate']} req/s over {meta['connections']} connections, {meta['duration']} s per run; "
          f"latencies in us; 'shared' = of the slowest 1%, how many overlapped another task's time "
          f"on the proxy core" + ("; a busy loop shared the proxy core throughout (--neighbour)"
                                   if meta.get("neighbour") else ""))
    print()
    print("| run | candidate | wrk p99 | proxy-side p50 | proxy-side p99 | slowest 1% shared | by task | "
          "p99 of untouched requests | other tasks' time on the core |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rounds:
        for c in candidates:
            a = analyse(out, c, r, meta["ports"][c])
            a["wrk_p99"] = wrk[(c, r)]["p99"]
            res[(c, r)] = a
            tasks = ", ".join(f"{k} {v}" for k, v in a["by_task"].most_common(3))
            print(f"| {r} | {c} | {a['wrk_p99']} | {a['p50']:.0f} | {a['p99']:.0f} | "
                  f"{a['top_shared']}/{a['top']} | {tasks} | {a['untouched_p99']:.0f} "
                  f"({a['untouched']}/{a['requests']}) | {a['other_ms']:.1f} ms |")
    print()
    shared = sum(res[k]["top_shared"] for k in res) / max(1, sum(res[k]["top"] for k in res))
    print(f"Of the slowest 1% of all runs, {shared:.0%} overlapped another task's time on the proxy core.")
    print()
    print("| ×nginx, median of the same-round ratios (quartiles) | " + " | ".join(candidates[1:]) + " |")
    print("|---|" + "---|" * (len(candidates) - 1))
    for key, name in (("wrk_p99", "wrk p99"), ("p99", "proxy-side p99"), ("untouched_p99", "p99 of untouched requests")):
        cells = []
        for c in candidates[1:]:
            ratios = sorted(res[(c, r)][key] / res[("nginx", r)][key] for r in rounds if res[("nginx", r)][key])
            q = lambda f: ratios[min(len(ratios) - 1, int(f * len(ratios)))]
            cells.append(f"{statistics.median(ratios):.2f} ({q(0.25):.2f}–{q(0.75):.2f})")
        print(f"| {name} | " + " | ".join(cells) + " |")
    errors = sum(v["errors"] for v in wrk.values())
    if errors:
        print(f"\nwrk counted {errors} errors")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: tail.py OUT_DIR (written by tail.sh)")
    main(sys.argv[1])
