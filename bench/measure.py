#!/usr/bin/env python3
"""Proxy benchmark rounds for bench/run.sh (stdlib only).

Peers are already running; this runs wrk against each, round by round with
the order rotated, reads CPU time from /proc, and prints/writes the report.
"""
import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")


def proc_cpu_ticks(pid):
    """(utime, stime) of a whole process (all threads), in clock ticks."""
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return int(rest[11]), int(rest[12])  # fields 14 and 15


def cpu_seconds(t0, t1):
    """(user, system) seconds between two proc_cpu_ticks readings."""
    return tuple((b - a) / CLK_TCK for a, b in zip(t0, t1))


def cpu_busy(cpus):
    """(busy, total) jiffies per CPU index from /proc/stat."""
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            m = re.match(r"cpu(\d+) (.*)", line)
            if m and int(m.group(1)) in cpus:
                v = [int(x) for x in m.group(2).split()]
                total = sum(v[:8])
                out[int(m.group(1))] = (total - v[3] - v[4], total)
    return out


def all_tids(pid):
    return os.listdir(f"/proc/{pid}/task")


def pin(pid, cpu):
    """Move every thread of pid to one CPU."""
    for tid in all_tids(pid):
        try:
            os.sched_setaffinity(int(tid), {cpu})
        except (ProcessLookupError, FileNotFoundError):
            pass


# The modes measured besides plain HTTP/1.1 (`--extra MODE:PEER:URL:PID`):
# the load tool, its connections, and what it sends.
MODES = {
    # HTTPS, HTTP/1.1 keep-alive (wrk offers no ALPN: HTTP/1.1).
    "https": {"tool": "wrk", "conns": 64, "headers": []},
    # HTTPS with a new connection (a full TLS 1.3 handshake) per request,
    # driven by bench/tls-load: wrk's OpenSSL client spends more per
    # handshake than either server and bounded the rate (see its module doc).
    "https_handshake": {"tool": "tls-load", "conns": 64},
    # HTTP/2 over TLS, 10 streams per connection.
    "h2": {"tool": "h2load", "conns": 64, "streams": 10},
    # A 1 MiB response body per request.
    "1mib": {"tool": "wrk", "conns": 16, "headers": []},
}


def run_wrk(args, port, conns, duration, url=None, headers=()):
    url = url or f"http://127.0.0.1:{port}/"
    cmd = [
        "taskset", "-c", str(args.load_cpu), "wrk", "-t1", f"-c{conns}", f"-d{duration}s",
        "--latency", "-s", args.lua,
    ]
    for h in headers:
        cmd += ["-H", h]
    out = subprocess.run(cmd + [url], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        if line.startswith("WRKJSON "):
            return json.loads(line[8:])
    raise RuntimeError(f"no WRKJSON line in wrk output:\n{out}")


def wrk_errors(w):
    """Failed requests in a WRKJSON report: socket errors and non-2xx/3xx."""
    return w["connect_errors"] + w["read_errors"] + w["write_errors"] + w["timeouts"] + w["non2xx"]


def run_tls_load(args, url, conns, duration):
    """bench/tls-load: a full TLS 1.3 handshake and one request per
    connection; it prints wrk-report.lua's WRKJSON line."""
    cmd = ["taskset", "-c", str(args.load_cpu), args.tls_load, "-c", str(conns), "-d", str(duration), url]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        if line.startswith("WRKJSON "):
            return json.loads(line[8:])
    raise RuntimeError(f"no WRKJSON line in bench-tls-load output:\n{out}")


def run_h2load(args, url, conns, streams, duration):
    """h2load for `duration` seconds; the same keys as run_wrk's (h2load
    reports the mean request time, no percentiles)."""
    cmd = ["taskset", "-c", str(args.load_cpu), "h2load", "-t1", f"-c{conns}", f"-m{streams}",
           f"-D{duration}", url]
    out = subprocess.run(cmd, capture_output=True, text=True).stdout
    done = re.search(r"^requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                     r"(\d+) failed, (\d+) errored, (\d+) timeout", out, re.M)
    codes = re.search(r"^status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out, re.M)
    traffic = re.search(r"^traffic: .*?\((\d+)\) total", out, re.M)
    mean = re.search(r"^time for request:\s+\S+\s+\S+\s+(\S+)", out, re.M)
    if not (done and codes):
        raise RuntimeError(f"unexpected h2load output:\n{out}")

    def us(text):
        m = re.match(r"([\d.]+)(us|ms|s)$", text or "")
        return float(m.group(1)) * {"us": 1, "ms": 1e3, "s": 1e6}[m.group(2)] if m else 0.0
    succeeded = int(done.group(4))
    return {
        "requests": succeeded, "duration_us": duration * 1e6,
        "bytes": int(traffic.group(1)) if traffic else 0,
        "connect_errors": 0, "read_errors": int(done.group(6)), "write_errors": 0,
        "timeouts": int(done.group(7)), "non2xx": int(codes.group(2)) + int(codes.group(3)) + int(codes.group(4))
        + int(done.group(5)),
        "lat_mean_us": us(mean.group(1) if mean else None), "lat_max_us": 0,
        "p50_us": 0, "p90_us": 0, "p99_us": 0, "p999_us": 0,
    }


def run_rate_load(args, port, rate, conns, duration):
    """bench/rate-load at a fixed rate (requests released every
    --fixed-tick-us, each request's latency counted from its due time):
    its latency percentiles in µs and its counts."""
    cmd = ["taskset", "-c", str(args.load_cpu), args.rate_load, "-q", str(rate), "-c", str(conns),
           "-d", str(duration), "-t", str(args.fixed_tick_us), f"http://127.0.0.1:{port}/"]
    j = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
    # A request still queued or unanswered when the run's 2 s of grace end
    # counts as failed.
    return {"rate": rate, "requests": j["requests"],
            "errors": j["errors"] + j["non2xx"] + j["unsent"] + j["unfinished"], "rps": j["rps"],
            "p50_us": j["p50_us"], "p90_us": j["p90_us"], "p99_us": j["p99_us"],
            "p99.9_us": j["p999_us"], "lag_p99_us": j["lag_p99_us"]}


def span(v):
    """A median with its min–max, in whole units."""
    return f"{v['median']:.0f} ({v['min']:.0f} to {v['max']:.0f})"


def nginx_peer(name):
    """The nginx a peer is compared with: nginx with its access log for a
    peer whose log is on (named `*_log`), else plain nginx."""
    return "nginx_log" if name.endswith("_log") else "nginx"


def fixed_rate_rounds(args, peers, rate):
    """Each peer at `rate` requests/s, rounds rotated like the others; the
    p99 each adds over the direct backend in the same round, and each
    proxy's CPU per request at that rate. Many short rounds: a few times
    in a run a woken thread waits milliseconds to run (kernel threads
    with it: the vCPU is not running), whichever peer is measured, and a
    few such stalls are a whole run's p99; the median over rounds keeps
    the runs with fewer."""
    records = []
    rounds, duration = args.fixed_rounds, args.fixed_duration
    for rnd in range(rounds):
        for p in peers[rnd % len(peers):] + peers[: rnd % len(peers)]:
            pid = p.get("pid")
            t0 = proc_cpu_ticks(pid) if pid else None
            rec = run_rate_load(args, p["port"], rate, args.conns, duration)
            if pid:
                rec["cpu_us_per_req"] = sum(cpu_seconds(t0, proc_cpu_ticks(pid))) * 1e6 / max(
                    rec["requests"], 1)
            rec.update(round=rnd, peer=p["name"])
            records.append(rec)
            print(f"round {rnd + 1}/{rounds} fixed {rate}/s   {p['name']:16} "
                  f"p50 {rec['p50_us']:7.0f} µs  p99 {rec['p99_us']:7.0f} µs"
                  + (f"  {rec['cpu_us_per_req']:5.1f} µs CPU/req" if "cpu_us_per_req" in rec else "")
                  + (f"  ERRORS {rec['errors']}" if rec["errors"] else ""), file=sys.stderr, flush=True)
    idx = {(r["round"], r["peer"]): r for r in records}
    out, rows = {}, [["peer", "p50 (µs)", "p99 (µs)", "p99.9 (µs)", "CPU µs/req",
                      "added p99 over direct (µs)", "added p99 − nginx's (µs)", "errors"]]
    added = {}
    for p in peers:
        mine = [r for r in records if r["peer"] == p["name"]]
        added[p["name"]] = {i: idx[(i, p["name"])]["p99_us"] - idx[(i, "direct")]["p99_us"]
                            for i in range(rounds) if (i, "direct") in idx and (i, p["name"]) in idx}
        out[p["name"]] = {
            "p50_us": median_range([r["p50_us"] for r in mine]),
            "p99_us": median_range([r["p99_us"] for r in mine]),
            "p999_us": median_range([r["p99.9_us"] for r in mine]),
            "cpu_us_per_req": median_range([r["cpu_us_per_req"] for r in mine if "cpu_us_per_req" in r]),
            "client_lag_p99_us": median_range([r["lag_p99_us"] for r in mine]),
            "added_p99_us": median_range(list(added[p["name"]].values())) if p["name"] != "direct" else None,
            "errors": sum(r["errors"] for r in mine),
        }
    for p in peers:
        s = out[p["name"]]
        base = nginx_peer(p["name"])
        # The target's comparison, round by round: > 0 means this peer
        # added more than nginx did in that round.
        mine, theirs = added.get(p["name"], {}), added.get(base, {})
        diffs = [mine[i] - theirs[i] for i in mine if i in theirs]
        s["added_p99_minus_nginx_us"] = (median_range(diffs) | {"rounds_above": sum(d > 0 for d in diffs)}
                                         if p["name"] not in ("direct", base) and diffs else None)
        d = s["added_p99_minus_nginx_us"]
        rows.append([p["name"], fmt(s["p50_us"], digits=0), fmt(s["p99_us"], digits=0),
                     fmt(s["p999_us"], digits=0),
                     fmt(s["cpu_us_per_req"]) if s["cpu_us_per_req"] else "—",
                     span(s["added_p99_us"]) if s["added_p99_us"] else "—",
                     f"{span(d)}, vs {base}; above it in {d['rounds_above']} of {len(diffs)} rounds"
                     if d else "—",
                     str(s["errors"])])
    return {"rate": rate, "rounds": rounds, "duration_s": duration, "tick_us": args.fixed_tick_us,
            "summary": out, "records": records}, markdown(rows)


def measure(args, peer, conns, duration, one_core, mode=None):
    pid = peer.get("pid")
    if pid and one_core:
        pin(pid, args.load_cpu)
    try:
        t0 = proc_cpu_ticks(pid) if pid else None
        c0 = cpu_busy({args.proxy_cpu, args.load_cpu})
        if mode is None:
            w = run_wrk(args, peer["port"], conns, duration)
        elif mode["tool"] == "h2load":
            w = run_h2load(args, peer["url"], conns, mode["streams"], duration)
        elif mode["tool"] == "tls-load":
            w = run_tls_load(args, peer["url"], conns, duration)
        else:
            w = run_wrk(args, None, conns, duration, peer["url"], mode["headers"])
        c1 = cpu_busy({args.proxy_cpu, args.load_cpu})
        t1 = proc_cpu_ticks(pid) if pid else None
    finally:
        if pid and one_core:
            pin(pid, args.proxy_cpu)
    rec = {
        "peer": peer["name"], "conns": conns, "duration_s": duration, "one_core": one_core,
        **w,
        "rps": w["requests"] / (w["duration_us"] / 1e6),
        "errors": wrk_errors(w),
    }
    for cpu, key in ((args.proxy_cpu, "proxy_core_busy"), (args.load_cpu, "load_core_busy")):
        b = c1[cpu][0] - c0[cpu][0]
        t = c1[cpu][1] - c0[cpu][1]
        rec[key] = b / t if t else None
    if pid:
        user, system = cpu_seconds(t0, t1)
        per_req = 1e6 / max(w["requests"], 1)
        rec["proxy_cpu_s"] = user + system
        rec["cpu_us_per_req"] = (user + system) * per_req
        # Where it goes: the proxy's own code vs the kernel's socket work.
        rec["user_us_per_req"] = user * per_req
        rec["sys_us_per_req"] = system * per_req
    return rec


def report_line(rnd, rounds, kind, p, rec):
    print(
        f"round {rnd + 1}/{rounds} {kind:15} {p['name']:16} "
        f"{rec['rps'] / 1e3:7.1f}k rps  p99 {rec['p99_us']:6d} µs"
        + (f"  {rec['cpu_us_per_req']:6.1f} µs CPU/req" if "cpu_us_per_req" in rec else "")
        + (f"  ERRORS {rec['errors']}" if rec["errors"] else ""),
        file=sys.stderr, flush=True,
    )


def extra_table(records, extra, rounds):
    """Per extra mode and peer: medians, and same-round ratios vs the
    mode's nginx peer (the peer whose name starts with "nginx")."""
    idx = {(r["round"], r["peer"], r["kind"]): r for r in records}
    out, rows = {}, [["mode", "peer", "rps", "CPU µs/req", "CPU ÷ nginx", "rps ÷ nginx",
                      "MiB/s", "p99 (µs; h2load: mean)", "errors"]]
    for mode, mode_peers in extra.items():
        base = next((p["name"] for p in mode_peers if p["name"].startswith("nginx")), None)
        for p in mode_peers:
            mine = [idx[(i, p["name"], mode)] for i in range(rounds) if (i, p["name"], mode) in idx]
            s = {"errors": sum(r["errors"] for r in mine)}
            for key in ("rps", "cpu_us_per_req", "p99_us", "lat_mean_us"):
                s[key] = median_range([r.get(key) for r in mine])
            s["mib_per_s"] = median_range([r["bytes"] / (r["duration_us"] / 1e6) / 2**20 for r in mine])
            for key in ("rps", "cpu_us_per_req"):
                ratios = []
                for i in range(rounds):
                    a, b = idx.get((i, p["name"], mode)), idx.get((i, base, mode))
                    if a and b and a.get(key) and b.get(key):
                        ratios.append(a[key] / b[key])
                s[key + "_vs_nginx"] = median_range(ratios)
            out.setdefault(mode, {})[p["name"]] = s
            lat = s["lat_mean_us"] if MODES[mode]["tool"] == "h2load" else s["p99_us"]
            rows.append([mode, p["name"], fmt(s["rps"], 1e-3, 2, "k"), fmt(s["cpu_us_per_req"]),
                         fmt_ratio(s["cpu_us_per_req_vs_nginx"]), fmt_ratio(s["rps_vs_nginx"]),
                         fmt(s["mib_per_s"], digits=0), fmt(lat, digits=0), str(s["errors"])])
    return out, markdown(rows)


def median_range(values):
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def summarise(records, peers, rounds):
    """Per peer: medians of each metric, and same-round ratios vs nginx."""
    metrics = {
        "rps": ("c64", "rps"),
        "cpu_us_per_req": ("c64", "cpu_us_per_req"),
        "user_us_per_req": ("c64", "user_us_per_req"),
        "sys_us_per_req": ("c64", "sys_us_per_req"),
        "p50_us": ("c64", "p50_us"),
        "p99_us": ("c64", "p99_us"),
        "p999_us": ("c64", "p999_us"),
        "c1_p50_us": ("c1", "p50_us"),
        "c1_p99_us": ("c1", "p99_us"),
        "proxy_core_busy": ("c64", "proxy_core_busy"),
        "load_core_busy": ("c64", "load_core_busy"),
    }
    idx = {(r["round"], r["peer"], r["kind"]): r for r in records}
    out = {}
    for p in peers:
        name = p["name"]
        s = {"errors": sum(r["errors"] for r in records if r["peer"] == name)}
        for m, (kind, key) in metrics.items():
            vals = [idx[(i, name, kind)].get(key) for i in range(rounds) if (i, name, kind) in idx]
            s[m] = median_range(vals)
            ratios = []
            for i in range(rounds):
                a, b = idx.get((i, name, kind)), idx.get((i, "nginx", kind))
                if a and b and a.get(key) and b.get(key):
                    ratios.append(a[key] / b[key])
            s[m + "_vs_nginx"] = median_range(ratios)
        out[name] = s
    return out


def same_round_ratio(records, rounds, a_name, b_name):
    """Median (min–max) of a ÷ b over rounds, for rps and CPU per request at c64."""
    idx = {(r["round"], r["peer"], r["kind"]): r for r in records}
    out = {}
    for key in ("rps", "cpu_us_per_req"):
        ratios = []
        for i in range(rounds):
            a, b = idx.get((i, a_name, "c64")), idx.get((i, b_name, "c64"))
            if a and b and a.get(key) and b.get(key):
                ratios.append(a[key] / b[key])
        out[key] = median_range(ratios)
    return out


def fmt_ratio(r):
    if not r:
        return "—"
    if abs(r["max"] - r["min"]) < 0.005:
        return f"{r['median']:.2f}×"
    return f"{r['median']:.2f}× ({r['min']:.2f}–{r['max']:.2f})"


def fmt(v, scale=1.0, digits=1, unit=""):
    if not v:
        return "—"
    return f"{v['median'] * scale:.{digits}f}{unit}"


def table(summary, peers):
    rows = [[
        "peer", "rps c64", "rps ÷ nginx", "CPU µs/req", "CPU ÷ nginx",
        "user/sys µs/req", "user ÷ nginx", "sys ÷ nginx", "p50/p99/p99.9 c64 (µs)", "c1 p50/p99 (µs)", "c1 p99 ÷ nginx", "proxy/load core busy", "errors",
    ]]
    for p in peers:
        s = summary[p["name"]]
        lat = "/".join(fmt(s[k], digits=0) for k in ("p50_us", "p99_us", "p999_us"))
        c1 = "/".join(fmt(s[k], digits=0) for k in ("c1_p50_us", "c1_p99_us"))
        busy = f"{fmt(s['proxy_core_busy'], 100, 0, '%')}/{fmt(s['load_core_busy'], 100, 0, '%')}"
        rows.append([
            p["name"], fmt(s["rps"], 1e-3, 1, "k"), fmt_ratio(s["rps_vs_nginx"]),
            fmt(s["cpu_us_per_req"], digits=1), fmt_ratio(s["cpu_us_per_req_vs_nginx"]),
            f"{fmt(s['user_us_per_req'], digits=1)}/{fmt(s['sys_us_per_req'], digits=1)}",
            fmt_ratio(s["user_us_per_req_vs_nginx"]), fmt_ratio(s["sys_us_per_req_vs_nginx"]),
            lat, c1, fmt_ratio(s["c1_p99_us_vs_nginx"]), busy, str(s["errors"]),
        ])
    return markdown(rows)


def markdown(rows):
    """rows (the first is the header) as a Markdown table, columns padded."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for n, r in enumerate(rows):
        lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |")
        if n == 0:
            lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def tool_version(cmd):
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=5)
        return (p.stdout + p.stderr).strip().splitlines()[0]
    except Exception as e:  # noqa: BLE001 - informational only
        return f"unknown ({e})"


def machine():
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), "")
    except OSError:
        pass
    return {
        "cpu_model": model, "cpus": os.cpu_count(), "kernel": platform.release(),
        "nginx": tool_version(["/usr/sbin/nginx", "-v"]),
        "haproxy": tool_version(["/usr/sbin/haproxy", "-v"]),
        "wrk": tool_version(["wrk", "-v"]),
        "rustc": tool_version(["rustc", "-V"]),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--peer", action="append", required=True, help="name:port[:pid]")
    ap.add_argument("--extra", action="append", default=[], help="mode:name:url:[pid] (modes: MODES)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--c1-duration", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--conns", type=int, default=64)
    ap.add_argument("--proxy-cpu", type=int, default=0)
    ap.add_argument("--load-cpu", type=int, default=1)
    ap.add_argument("--lua", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--git", default="")
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--fixed-rate", default="",
                    help="peers (names of --peer, 'direct' first) for the fixed-rate mode, comma-separated")
    ap.add_argument("--rate-load", default="bench-rate-load", help="the bench/rate-load binary (fixed-rate mode)")
    ap.add_argument("--fixed-tick-us", type=int, default=100,
                    help="the fixed-rate client releases the requests due every this many µs")
    ap.add_argument("--tls-load", default="bench-tls-load", help="the bench/tls-load binary (https_handshake)")
    ap.add_argument("--fixed-rounds", type=int, default=9)
    ap.add_argument("--fixed-duration", type=int, default=5)
    args = ap.parse_args()

    extra = {}
    for spec in args.extra:
        mode, name, rest = spec.split(":", 2)
        url, pid = rest.rsplit(":", 1)
        if mode not in MODES:
            ap.error(f"--extra: unknown mode {mode} (one of {', '.join(MODES)})")
        extra.setdefault(mode, []).append({"name": name, "url": url, "pid": int(pid) if pid else None})

    peers = []
    for spec in args.peer:
        parts = spec.split(":")
        peers.append({"name": parts[0], "port": int(parts[1]),
                      "pid": int(parts[2]) if len(parts) > 2 and parts[2] else None})

    if args.warmup > 0:
        for p in peers:
            print(f"warm-up {p['name']} ({args.warmup} s)", file=sys.stderr, flush=True)
            run_wrk(args, p["port"], args.conns, args.warmup)
        for mode_name, mode_peers in extra.items():
            for p in mode_peers:
                print(f"warm-up {mode_name} {p['name']} ({args.warmup} s)", file=sys.stderr, flush=True)
                measure(args, p, MODES[mode_name]["conns"], args.warmup, False, MODES[mode_name])

    records = []
    started = time.time()
    for rnd in range(args.rounds):
        order = peers[rnd % len(peers):] + peers[: rnd % len(peers)]
        for kind, conns, dur, one_core in (
            ("c64", args.conns, args.duration, False),
            ("c1", 1, args.c1_duration, True),
        ):
            for p in order:
                rec = measure(args, p, conns, dur, one_core)
                rec.update(round=rnd, kind=kind)
                records.append(rec)
                report_line(rnd, args.rounds, kind, p, rec)
        for mode_name, mode_peers in extra.items():
            mode = MODES[mode_name]
            for p in mode_peers[rnd % len(mode_peers):] + mode_peers[: rnd % len(mode_peers)]:
                rec = measure(args, p, mode["conns"], args.duration, False, mode)
                rec.update(round=rnd, kind=mode_name)
                records.append(rec)
                report_line(rnd, args.rounds, mode_name, p, rec)

    summary = summarise(records, peers, args.rounds)
    fixed, fixed_text = None, ""
    if args.fixed_rate:
        by_name = {p["name"]: p for p in peers}
        fixed_peers = [by_name[n] for n in args.fixed_rate.split(",")]
        # Half of nginx's saturated rate, measured above.
        rate = max(100, int(summary["nginx"]["rps"]["median"] / 2))
        print(f"fixed rate: {rate} requests/s (half of nginx's {summary['nginx']['rps']['median']:.0f})",
              file=sys.stderr, flush=True)
        fixed, fixed_text = fixed_rate_rounds(args, fixed_peers, rate)
    extra_summary, extra_text = extra_table(records, extra, args.rounds) if extra else ({}, "")
    inline_gain = same_round_ratio(records, args.rounds, "switchyard", "switchyard_hyper_server")
    # The access log on (the default) against off, and the defaults of both.
    names = {p["name"] for p in peers}
    pairs = {
        "access_log_on_vs_off": ("switchyard_log", "switchyard"),
        "defaults_vs_nginx_defaults": ("switchyard_log", "nginx_log"),
        "nginx_access_log_on_vs_off": ("nginx_log", "nginx"),
    }
    logged = {key: same_round_ratio(records, args.rounds, a, b)
              for key, (a, b) in pairs.items() if a in names and b in names}
    report = {
        "started_unix": started, "git": args.git, "smoke": args.smoke,
        "inline_vs_hyper_server": inline_gain,
        "access_log": logged,
        "settings": {k: getattr(args, k) for k in
                     ("rounds", "duration", "c1_duration", "warmup", "conns", "proxy_cpu", "load_cpu")},
        "machine": machine(), "summary": summary, "modes": extra_summary, "fixed_rate": fixed,
        "records": records,
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(report, f, indent=1)
    print()
    print(f"Pinned layout: proxies on CPU {args.proxy_cpu} (1 worker), wrk + backend on CPU {args.load_cpu}; "
          f"{args.rounds} round(s) × {args.duration} s at {args.conns} connections, "
          f"{args.c1_duration} s at 1 connection (one-core layout). Medians; ratios are medians of "
          f"same-round ratios vs nginx (min–max).")
    print(table(summary, peers))
    if inline_gain["rps"]:
        rps, cpu = inline_gain["rps"], inline_gain["cpu_us_per_req"]
        print(f"\nInline server (switchyard ÷ switchyard --no-inline-server, same rounds): "
              f"rps {fmt_ratio(rps)}, CPU µs/req {fmt_ratio(cpu)}")
    for key, (a, b) in pairs.items():
        if key in logged and logged[key]["rps"]:
            r = logged[key]
            print(f"{key.replace('_', ' ')} ({a} ÷ {b}, same rounds): "
                  f"CPU µs/req {fmt_ratio(r['cpu_us_per_req'])}, rps {fmt_ratio(r['rps'])}")
    if extra_text:
        print(f"\nOther modes, pinned layout, {args.duration} s per peer per round "
              f"(https_handshake: a TLS 1.3 handshake per request, so rps = handshakes/s; "
              f"1mib: CPU µs/req = CPU µs per MiB):")
        print(extra_text)
    if fixed_text:
        print(f"\nFixed rate (bench/rate-load -q {fixed['rate']} -c {args.conns} -t {fixed['tick_us']}: "
              f"half of nginx's saturated rate, released every {fixed['tick_us']} µs; "
              f"{fixed['rounds']} rounds of {fixed['duration_s']} s per peer; added p99 = "
              f"peer p99 − direct p99 in the same round; medians over rounds (min–max)):")
        print(fixed_text)
    print(f"\nJSON: {args.out}")
    bad = [p["name"] for p in peers if summary[p["name"]]["errors"]]
    if fixed:
        bad += [f"fixed/{n}" for n, s in fixed["summary"].items() if s["errors"]]
    bad += [f"{m}/{n}" for m, ps in extra_summary.items() for n, s in ps.items() if s["errors"]]
    if bad:
        print(f"FAILED requests for: {', '.join(bad)}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
