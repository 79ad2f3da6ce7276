"""bench/log-cost.sh's rounds: the gateway without the access log and the one
with it loaded at the same time, each by its own wrk -c32; each round's
figure is the ratio of their CPU per request. Prints each round, the median
and min–max; writes JSON to --out; exits 1 on a failed request."""

import argparse
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

from measure import cpu_seconds, median_range, proc_cpu_ticks, run_wrk, wrk_errors

CONNS = 32


def port_pid(text):
    port, pid = text.split(":")
    return int(port), int(pid)


def paired(args, peers, duration):
    """Both loaded at once for `duration` s: per peer, (wrk report, CPU s)."""
    t0 = {name: proc_cpu_ticks(pid) for name, (_, pid) in peers.items()}
    with ThreadPoolExecutor(len(peers)) as pool:
        runs = {name: pool.submit(run_wrk, args, port, CONNS, duration)
                for name, (port, _) in peers.items()}
        reports = {name: run.result() for name, run in runs.items()}
    return {name: (reports[name], sum(cpu_seconds(t0[name], proc_cpu_ticks(pid))))
            for name, (_, pid) in peers.items()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--off", type=port_pid, required=True, help="PORT:PID without the log")
    ap.add_argument("--on", type=port_pid, required=True, help="PORT:PID with the log")
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--load-cpu", type=int, default=1)
    ap.add_argument("--lua", required=True)
    ap.add_argument("--gateway", default="")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    peers = {"off": args.off, "on": args.on}

    print("warm-up (3 s, both at once)", file=sys.stderr, flush=True)
    paired(args, peers, 3)
    rows = []
    for rnd in range(1, args.rounds + 1):
        row = {"round": rnd}
        for name, (w, cpu) in paired(args, peers, args.duration).items():
            row[name] = {"requests": w["requests"], "failed": wrk_errors(w),
                         "cpu_us_per_request": round(cpu * 1e6 / max(w["requests"], 1), 3)}
        row["ratio"] = round(row["on"]["cpu_us_per_request"] / row["off"]["cpu_us_per_request"], 4)
        rows.append(row)
        print(f"round {rnd}: log on {row['on']['cpu_us_per_request']} µs/req, "
              f"off {row['off']['cpu_us_per_request']} µs/req, on ÷ off {row['ratio']}",
              file=sys.stderr, flush=True)

    ratio = median_range([r["ratio"] for r in rows])
    failed = sum(r[k]["failed"] for r in rows for k in ("on", "off"))
    git = subprocess.run(["git", "describe", "--always", "--dirty"],
                         capture_output=True, text=True).stdout.strip()
    result = {"git": git, "gateway": args.gateway, "rounds": args.rounds,
              "duration_s": args.duration, "ratio_median": ratio["median"],
              "ratio_min": ratio["min"], "ratio_max": ratio["max"], "failed": failed, "rows": rows}
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print(f"access log on ÷ off, CPU per request, {len(rows)} paired rounds: "
          f"{ratio['median']:.3f} ({ratio['min']:.3f}–{ratio['max']:.3f}); failed requests {failed}")
    print(f"written {args.out}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
