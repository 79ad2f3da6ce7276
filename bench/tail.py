"""bench/tail.sh's runs (issue 23 point 3): the direct backend and the
proxies measured at one steady rate in the same seconds. Each run is one
bench/rate-load with every peer's URL: the schedule is cut into slices
(100 ms by default), each slice's requests go to one peer, and each cycle
of slices visits every peer once in a freshly shuffled order. A peer's
figures are over all its slices in the run; its added latency is its
percentile minus the direct backend's in the same run. A peer named
`nginx_again` is nginx a second time (the same server, other
connections): how far nginx differs from itself is the measure's
resolution. Prints each run, then the median (min–max) over runs and,
for each Switchyard (and nginx_again), its added p99 minus its nginx
peer's run by run; writes JSON to --out; exits 1 on a failed request."""

import argparse
import json
import subprocess
import sys

from measure import (cpu_busy, cpu_seconds, markdown, median_range, nginx_peer, proc_cpu_ticks, run_wrk,
                     span, wrk_errors)

QUANTILES = ("p50_us", "p90_us", "p99_us", "p999_us")


def peer(text):
    """NAME:PORT[:PID]"""
    name, port, pid = (text.split(":") + [""])[:3]
    return {"name": name, "port": int(port), "pid": int(pid) if pid else None}


def saturated_rate(args, port):
    """nginx's rate at saturation (wrk -c64, the median of 3 runs of 5 s)."""
    rates = []
    for _ in range(3):
        w = run_wrk(args, port, 64, 5)
        if wrk_errors(w):
            sys.exit(f"tail.py: {wrk_errors(w)} failed requests while measuring nginx's saturated rate")
        rates.append(w["requests"] / (w["duration_us"] / 1e6))
    return median_range(rates)["median"]


def interleaved(args, peers, rate):
    """One run: every peer in its slices; per peer its counts, percentiles
    and CPU per request (its /proc ticks over the run ÷ its requests)."""
    t0 = {p["name"]: proc_cpu_ticks(p["pid"]) for p in peers if p["pid"]}
    c0 = cpu_busy({args.proxy_cpu, args.load_cpu})
    cmd = ["taskset", "-c", str(args.load_cpu), args.rate_load, "-q", str(rate), "-c", str(args.conns),
           "-d", str(args.duration), "-t", str(args.tick_us), "-s", str(args.slice_ms)]
    cmd += [f"http://127.0.0.1:{p['port']}/" for p in peers]
    j = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
    c1 = cpu_busy({args.proxy_cpu, args.load_cpu})
    cpu = {p["name"]: sum(cpu_seconds(t0[p["name"]], proc_cpu_ticks(p["pid"]))) for p in peers if p["pid"]}
    # How busy each core was over the run (the direct backend's slices
    # included): the load core runs the client and the backend.
    busy = {role: round(100 * (c1[c][0] - c0[c][0]) / max(c1[c][1] - c0[c][1], 1), 1)
            for role, c in (("proxy_cpu_busy_pct", args.proxy_cpu), ("load_cpu_busy_pct", args.load_cpu))}
    # Requests per server: a peer without a PID (nginx_again) is served by
    # the peer on its port that has one.
    served = {}
    for p, t in zip(peers, j["targets"]):
        served[p["port"]] = served.get(p["port"], 0) + t["requests"]
    out = {}
    for p, t in zip(peers, j["targets"]):
        rec = {k: t[k] for k in ("requests", "rps", "slices") + QUANTILES}
        # A request still queued or unanswered after the 2 s of grace failed.
        rec["errors"] = t["errors"] + t["non2xx"] + t["unsent"] + t["unfinished"]
        if p["pid"]:
            rec["cpu_us_per_req"] = round(cpu[p["name"]] * 1e6 / max(served[p["port"]], 1), 2)
        out[p["name"]] = rec
    return out, j["lag_p99_us"], busy


def summary(peers, runs):
    """Per peer: medians (min–max) over runs of its added percentiles, CPU
    per request, and, for a Switchyard, its added p99 minus its nginx
    peer's in each run."""
    out = {}
    for p in peers:
        name = p["name"]
        s = {"errors": sum(r["peers"][name]["errors"] for r in runs),
             "cpu_us_per_req": median_range([r["peers"][name].get("cpu_us_per_req") for r in runs])}
        for q in QUANTILES:
            s[q] = median_range([r["peers"][name][q] for r in runs])
            if name != "direct":
                s["added_" + q] = median_range([r["peers"][name][q] - r["peers"]["direct"][q] for r in runs])
        base = nginx_peer(name)
        if name.startswith(("switchyard", "nginx_again")) and any(base in r["peers"] for r in runs):
            diffs = [r["peers"][name]["p99_us"] - r["peers"][base]["p99_us"] for r in runs]
            s["added_p99_minus_nginx_us"] = median_range(diffs) | {
                "vs": base, "runs_above": sum(d > 0 for d in diffs), "runs": len(diffs)}
        out[name] = s
    return out


def table(peers, s):
    rows = [["peer", "added p50 (µs)", "added p90", "added p99", "added p99.9", "CPU µs/req",
             "added p99 − nginx's", "errors"]]
    for p in peers:
        x = s[p["name"]]
        added = ["—"] * 4 if p["name"] == "direct" else [span(x["added_" + q]) for q in QUANTILES]
        d = x.get("added_p99_minus_nginx_us")
        rows.append([p["name"]] + added
                    + [f"{x['cpu_us_per_req']['median']:.1f}" if x["cpu_us_per_req"] else "—",
                       f"{span(d)} vs {d['vs']}; above in {d['runs_above']} of {d['runs']} runs" if d else "—",
                       str(x["errors"])])
    direct = s["direct"]
    return markdown(rows) + "\n(direct backend itself: " + ", ".join(
        f"{q[:-3]} {span(direct[q])} µs" for q in QUANTILES) + ")"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--peer", type=peer, action="append", required=True,
                    help="NAME:PORT[:PID], 'direct' first")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--duration", type=int, default=50, help="seconds per run, all peers together")
    ap.add_argument("--slice-ms", type=int, default=100)
    ap.add_argument("--tick-us", type=int, default=100)
    ap.add_argument("--conns", type=int, default=64, help="connections per peer")
    ap.add_argument("--rate", type=int, default=0, help="requests/s; 0: half of nginx's saturated rate")
    ap.add_argument("--proxy-cpu", type=int, default=0)
    ap.add_argument("--load-cpu", type=int, default=1)
    ap.add_argument("--rate-load", required=True)
    ap.add_argument("--lua", required=True)
    ap.add_argument("--gateway", default="")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    peers = args.peer
    if peers[0]["name"] != "direct":
        sys.exit("tail.py: the first --peer must be 'direct'")

    saturated = None
    rate = args.rate
    if not rate:
        nginx = next(p for p in peers if p["name"] == "nginx")
        saturated = saturated_rate(args, nginx["port"])
        rate = max(100, int(saturated / 2))
        print(f"nginx saturated: {saturated:.0f}/s; the steady rate: {rate}/s", file=sys.stderr, flush=True)
    runs = []
    for rnd in range(1, args.rounds + 1):
        recs, lag, busy = interleaved(args, peers, rate)
        runs.append({"run": rnd, "client_lag_p99_us": lag, "peers": recs} | busy)
        direct = recs["direct"]
        print(f"run {rnd}/{args.rounds} at {rate}/s (client lag p99 {lag} µs; cores busy: proxy "
              f"{busy['proxy_cpu_busy_pct']}%, load {busy['load_cpu_busy_pct']}%): " + "; ".join(
            f"{n} p50 {r['p50_us']} p99 {r['p99_us']}"
            + (f" ({r['p99_us'] - direct['p99_us']:+d})" if n != "direct" else "")
            + (f" {r['cpu_us_per_req']} µs CPU/req" if "cpu_us_per_req" in r else "")
            + (f" ERRORS {r['errors']}" if r["errors"] else "")
            for n, r in recs.items()), file=sys.stderr, flush=True)
    s = summary(peers, runs)
    git = subprocess.run(["git", "describe", "--always", "--dirty"],
                         capture_output=True, text=True).stdout.strip()
    result = {"git": git, "gateway": args.gateway, "rate": rate, "nginx_saturated_rps": saturated,
              "rounds": args.rounds, "duration_s": args.duration, "slice_ms": args.slice_ms,
              "tick_us": args.tick_us, "conns_per_peer": args.conns, "summary": s, "runs": runs}
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print(f"\nSteady rate, peers interleaved in {args.slice_ms} ms slices: bench/rate-load -q {rate} "
          f"-c {args.conns} -t {args.tick_us} -s {args.slice_ms}, {args.rounds} runs of {args.duration} s; "
          "added = a peer's percentile minus the direct backend's in the same run; medians (min to max) "
          "over runs\n")
    print(table(peers, s))
    print("cores busy over a run, median (min to max): proxy " + span(
        median_range([r["proxy_cpu_busy_pct"] for r in runs])) + " %, load " + span(
        median_range([r["load_cpu_busy_pct"] for r in runs])) + " %")
    print(f"written {args.out}")
    failed = sum(x["errors"] for x in s.values())
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
