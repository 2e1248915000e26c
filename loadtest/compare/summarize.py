#!/usr/bin/env python3
"""Summarize the rounds written by run.sh into markdown tables.

usage: summarize.py META.json ROUNDS.jsonl
       summarize.py --line < ONE_ROUND.json     (one line of progress)

Medians per candidate over its rounds, and each figure as the median same-round ratio to nginx
with its spread (min-max), so that drift of the machine between rounds cancels.
"""
import json
import statistics
import sys

ORDER = ["direct", "nginx", "haproxy", "switchyard"]
LABEL = {
    "direct": "direct (no proxy)",
    "nginx": "nginx",
    "haproxy": "HAProxy",
    "switchyard": "Switchyard",
}
BUSY = 0.90  # a core this busy is saturated
DISTURBED = 0.10  # CPU of processes that are not ours, in cores, above which a round is suspect


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(x, digits=0):
    if x is None:
        return "—"
    return f"{x:,.{digits}f}"


def ratio_cell(rs, digits=2):
    rs = [r for r in rs if r is not None]
    if not rs:
        return "—"
    return f"{statistics.median(rs):.{digits}f} ({min(rs):.{digits}f}–{max(rs):.{digits}f})"


def derive(r):
    """Per-round figures from one raw record."""
    tck = r["clk_tck"]
    wall = r["wall"]
    c = r["client"]
    d = {"candidate": r["candidate"], "round": r["round"], "position": r["position"]}
    served = r["hits"]["stable"] + r["hits"]["canary"]
    if "duration_us" in c:  # wrk, through report.lua
        d["rps"] = c["requests"] / (c["duration_us"] / 1e6)
        d["p50"] = c["p50_us"] / 1000
        d["p90"] = c["p90_us"] / 1000
        d["p99"] = c["p99_us"] / 1000
        d["p999"] = c["p999_us"] / 1000
        d["max"] = c["max_us"] / 1000
        d["errors"] = sum(c[k] for k in ("err_connect", "err_read", "err_write", "err_status", "err_timeout"))
        d["client_requests"] = c["requests"]
    else:
        lat = c["latency_ms"]
        d["rps"] = c["requests_per_sec"]
        for k in ("p50", "p90", "p99", "p999", "max"):
            d[k] = lat[k]
        e = c["errors"]
        d["errors"] = e["connect"] + e["timeout"] + e["other"] + sum(e["status"].values())
        d["client_requests"] = c["completed"]
        hc = (c.get("header_counts") or {}).get("counts") or {}
        d["client_split"] = hc
    if served <= 0:
        served = d["client_requests"]
    d["served"] = served
    d["stable"] = r["hits"]["stable"]
    d["canary"] = r["hits"]["canary"]
    proxy_s = r["proxy_ticks"] / tck
    d["proxy_util"] = proxy_s / wall if wall > 0 else None
    d["cpu_us"] = proxy_s / served * 1e6 if r["candidate"] != "direct" and served else None
    pc, lc = r["proxy_core"], r["load_core"]
    d["proxy_core"] = pc["busy"] / pc["total"] if pc["total"] else None
    d["load_core"] = lc["busy"] / lc["total"] if lc["total"] else None
    # CPU that none of our processes used, in cores: on the load core, and (with a proxy) on the
    # proxy core; the direct run leaves the proxy core unused, so what runs there does no harm.
    load_other = max(0.0, lc["busy"] / tck - r["upstream_ticks"] / tck - r["loadgen_cpu_s"])
    proxy_other = 0.0 if r["candidate"] == "direct" else max(0.0, pc["busy"] / tck - proxy_s)
    d["foreign"] = (load_other + proxy_other) / wall if wall > 0 else 0.0
    d["steal"] = (pc["steal"] + lc["steal"]) / tck / wall if wall > 0 else 0.0
    if r["candidate"] == "direct":
        d["bound"] = "load (the limit)"
    else:
        proxy_full = d["proxy_util"] is not None and d["proxy_util"] >= BUSY
        load_full = d["load_core"] is not None and d["load_core"] >= BUSY
        d["bound"] = {(True, True): "both", (True, False): "proxy",
                      (False, True): "load", (False, False): "neither"}[(proxy_full, load_full)]
    return d


def majority(xs):
    xs = list(xs)
    best = max(set(xs), key=xs.count)
    n = xs.count(best)
    return best if n == len(xs) else f"{best} ({n}/{len(xs)})"


def ratios(rounds, cand, key):
    """Same-round ratio of cand to nginx for one figure, one value per round where both ran."""
    by_round = {}
    for d in rounds:
        by_round.setdefault(d["round"], {})[d["candidate"]] = d
    out = []
    for _, ds in sorted(by_round.items()):
        if cand in ds and "nginx" in ds:
            a, b = ds[cand].get(key), ds["nginx"].get(key)
            if a is not None and b:
                out.append(a / b)
    return out


def main():
    meta = json.load(open(sys.argv[1]))
    raw = [json.loads(line) for line in open(sys.argv[2]) if line.strip()]
    closed = [derive(r) for r in raw if r["kind"] == "closed"]
    opened = [derive(r) for r in raw if r["kind"] == "rate"]
    cands = [c for c in ORDER if any(d["candidate"] == c for d in closed + opened)]
    out = []
    w = out.append

    v = meta["versions"]
    w(f"**{meta['date']}** · {meta['nproc']} CPUs ({meta['cpu_model']}), Linux {meta['kernel']} · "
      f"proxy pinned to CPU {meta['proxy_cpu']}, load generator and upstream to CPU {meta['load_cpu']} · "
      f"nginx {v['nginx']}, HAProxy {v['haproxy']}, wrk {v['wrk']}, Switchyard {v['switchyard']}")
    w("")
    w(f"Command: `{meta['command']}`")
    w("")

    if closed:
        nrounds = len({d["round"] for d in closed})
        w(f"### Closed loop: wrk, {meta['connections']} connections, {meta['duration']} s per round, "
          f"{nrounds} rounds per candidate (medians)")
        w("")
        w("| candidate | req/s | p50 ms | p99 ms | errors | canary share | proxy CPU µs/req | "
          "proxy CPU use | load core busy | peak RSS MiB | bound by |")
        w("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
        for c in cands:
            ds = [d for d in closed if d["candidate"] == c]
            if not ds:
                continue
            stable = sum(d["stable"] for d in ds)
            canary = sum(d["canary"] for d in ds)
            share = "—" if c == "direct" or not stable + canary else f"{100 * canary / (stable + canary):.2f}%"
            rss = meta["peak_rss_kib"].get(c)
            pu = med(d["proxy_util"] for d in ds) if c != "direct" else None
            w(f"| {LABEL[c]} | {fmt(med(d['rps'] for d in ds))} | {fmt(med(d['p50'] for d in ds), 2)} | "
              f"{fmt(med(d['p99'] for d in ds), 2)} | {sum(d['errors'] for d in ds)} | {share} | "
              f"{fmt(med(d['cpu_us'] for d in ds), 1)} | "
              f"{'—' if pu is None else f'{100 * pu:.0f}%'} | {100 * med(d['load_core'] for d in ds):.0f}% | "
              f"{'—' if not rss else f'{rss / 1024:.1f}'} | {majority(d['bound'] for d in ds)} |")
        w("")
        w("Same-round ratio to nginx, median (min–max) over the rounds; below 1 is better for "
          "latency and CPU, above 1 is better for req/s:")
        w("")
        w("| candidate | req/s | p50 | p99 | proxy CPU per request | peak RSS |")
        w("|---|---:|---:|---:|---:|---:|")
        for c in cands:
            if c == "nginx" or not any(d["candidate"] == c for d in closed):
                continue
            rss, nrss = meta["peak_rss_kib"].get(c), meta["peak_rss_kib"].get("nginx")
            w(f"| {LABEL[c]} | {ratio_cell(ratios(closed, c, 'rps'))} | {ratio_cell(ratios(closed, c, 'p50'))} | "
              f"{ratio_cell(ratios(closed, c, 'p99'))} | {ratio_cell(ratios(closed, c, 'cpu_us'))} | "
              f"{'—' if not rss or not nrss else f'{rss / nrss:.2f}'} |")
        w("")

    if opened:
        nrounds = len({d["round"] for d in opened})
        if meta.get("rate_tool") == "switchyard-load":
            how = (f"switchyard-load in open loop at {meta['rate']} req/s over {meta['rate_connections']} "
                   "connections (latency from the scheduled send)")
        else:
            how = (f"wrk paced to about {meta['rate']} req/s over {meta['rate_connections']} connections "
                   "(random per-connection delay; latency from the send)")
        w(f"### Fixed rate: {how}, {meta['rate_duration']} s per run, {nrounds} runs per candidate (medians)")
        w("")
        w("| candidate | req/s | p50 ms | p99 ms | p99.9 ms | max ms | errors | canary share | "
          "proxy CPU µs/req | p99 ratio to nginx |")
        w("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for c in cands:
            ds = [d for d in opened if d["candidate"] == c]
            if not ds:
                continue
            stable = sum(d["stable"] for d in ds)
            canary = sum(d["canary"] for d in ds)
            share = "—" if c == "direct" or not stable + canary else f"{100 * canary / (stable + canary):.2f}%"
            rc = "1" if c == "nginx" else ratio_cell(ratios(opened, c, "p99"))
            w(f"| {LABEL[c]} | {fmt(med(d['rps'] for d in ds))} | {fmt(med(d['p50'] for d in ds), 3)} | "
              f"{fmt(med(d['p99'] for d in ds), 3)} | {fmt(med(d['p999'] for d in ds), 3)} | "
              f"{fmt(med(d['max'] for d in ds), 2)} | {sum(d['errors'] for d in ds)} | {share} | "
              f"{fmt(med(d['cpu_us'] for d in ds), 1)} | {rc} |")
        w("")

    if closed:
        w("Per round (closed loop): req/s and proxy CPU µs/req in the order run; "
          "`*` marks a round where other processes used over "
          f"{int(DISTURBED * 100)}% of a core (disturbed: rerun if it matters)")
        w("")
        present = [c for c in cands if any(d["candidate"] == c for d in closed)]
        w("| round | " + " | ".join(LABEL[c] for c in present) + " | other CPU |")
        w("|---|" + "---:|" * len(present) + "---:|")
        for rnd in sorted({d["round"] for d in closed}):
            ds = {d["candidate"]: d for d in closed if d["round"] == rnd}
            order = " ".join(c[0].upper() for c, _ in sorted(((c, d["position"]) for c, d in ds.items()), key=lambda t: t[1]))
            cells = []
            for c in present:
                d = ds.get(c)
                if not d:
                    cells.append("—")
                    continue
                cell = fmt(d["rps"])
                if d["cpu_us"] is not None:
                    cell += f" / {d['cpu_us']:.1f}"
                cells.append(cell)
            other = max(d["foreign"] for d in ds.values())
            mark = " *" if other > DISTURBED else ""
            w(f"| {rnd} ({order}) | " + " | ".join(cells) + f" | {100 * other:.0f}%{mark} |")
        w("")

    if meta.get("redone"):
        w(f"{meta['redone']} disturbed round(s) were run again; the tables hold the last attempt of each.")
        w("")
    th = meta.get("threads", {})
    if th:
        w("Threads per candidate at the end: " + ", ".join(f"{LABEL[c]} {n}" for c, n in th.items()) + ".")
        w("")
    print("\n".join(out))


def line():
    d = derive(json.load(sys.stdin))
    cpu = "" if d["cpu_us"] is None else f", proxy {d['cpu_us']:.1f} µs/req ({100 * d['proxy_util']:.0f}% of a core)"
    print(f"{d['rps']:,.0f} req/s, p50 {d['p50']:.2f} ms, p99 {d['p99']:.2f} ms, errors {d['errors']}{cpu}, "
          f"load core {100 * d['load_core']:.0f}%, other {100 * d['foreign']:.0f}% of a core")


if __name__ == "__main__":
    if sys.argv[1:] == ["--line"]:
        line()
    else:
        main()
