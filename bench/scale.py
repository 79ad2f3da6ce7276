#!/usr/bin/env python3
"""Config-scale figures for bench/scale.sh (stdlib only): Switchyard with
100,000 routes shaped like a multi-tenant gateway (10,000 hosts, each its
own upstream, × 10 paths). The backends are already running; this starts
and stops the gateway itself (by PID). Phases, in order:
  PUT the config into an empty database (timed) -> RSS
  -> S restarts: spawn to /readyz 200, and to the first proxied 200 -> RSS
  -> samples of "POST a route on a tenant's host; GET it through the proxy
     until 200; DELETE it" (change live)
  -> N changes under wrk load on one tenant's route (failed requests).
"""
import argparse
import copy
import http.client
import json
import os
import signal
import subprocess
import sys
import time

from reconfig import Client, changes_under_load, dist_ms, expect, pct, rss_kb

log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731


def tenant(i):
    return f"t{i}.example"


def config_doc(hosts, paths, backends):
    upstreams = [{"name": f"t{i}", "backends": [{"url": backends[i % len(backends)]}]}
                 for i in range(hosts)]
    routes = [{"name": f"t{i}-p{j}", "hosts": [tenant(i)], "path": f"/p{j}", "upstream": f"t{i}"}
              for i in range(hosts) for j in range(paths)]
    return {"upstreams": upstreams, "routes": routes}


def get_status(port, path, host=None, timeout=1.0):
    """One GET on a fresh connection: its status, or None if refused."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Host": host} if host else {})
        r = conn.getresponse()
        r.read()
        return r.status
    except (ConnectionError, OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


class Gateway:
    def __init__(self, args):
        self.args = args
        self.proc = None

    def start(self):
        a = self.args
        cmd = ["taskset", "-c", str(a.proxy_cpu), a.bin,
               "--proxy-listen", f"127.0.0.1:{a.proxy_port}",
               "--admin-listen", f"127.0.0.1:{a.admin_port}",
               "--metrics-listen", f"127.0.0.1:{a.metrics_port}",
               "--database-url", f"sqlite://{a.dir}/scale.db",
               "--access-log", f"{a.dir}/scale-access.log",
               "--workers", "1", "--drain-seconds", "1"]
        out = open(f"{a.dir}/scale-gateway.log", "ab")
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(cmd, cwd=a.dir, stdout=out, stderr=out)
        return t0

    def wait_ready(self, t0, deadline_s=60):
        """Seconds from t0 to /readyz 200."""
        while True:
            if self.proc.poll() is not None:
                raise SystemExit(f"gateway exited with {self.proc.returncode} (see {self.args.dir}/scale-gateway.log)")
            if get_status(self.args.metrics_port, "/readyz") == 200:
                return time.perf_counter() - t0
            if time.perf_counter() - t0 > deadline_s:
                raise SystemExit(f"gateway not ready after {deadline_s} s")
            time.sleep(0.002)

    def stop(self):
        if self.proc is None:
            return
        os.kill(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


def first_proxied(port, host, path, t0, deadline_s=60):
    while True:
        if get_status(port, path, host) == 200:
            return time.perf_counter() - t0
        if time.perf_counter() - t0 > deadline_s:
            raise SystemExit(f"no proxied 200 for {host}{path} after {deadline_s} s")
        time.sleep(0.002)


def change_live(admin, proxy, hosts, samples):
    """POST a route on a tenant's host, GET it through the proxy until 200,
    DELETE it; the tenants spread over the table."""
    live, post, extra = [], [], 0
    for j in range(samples):
        i = (j * 7919) % hosts
        name, path = f"probe{j}", f"/probe{j}"
        t0 = time.perf_counter()
        st, body = admin.request("POST", "/admin/routes",
                                 {"name": name, "hosts": [tenant(i)], "path": path, "upstream": f"t{i}"})
        t1 = time.perf_counter()
        expect(st, body, (201,), "POST /admin/routes")
        tries = 0
        while True:
            tries += 1
            st, _ = proxy.request("GET", f"{path}/x", headers={"Host": tenant(i)})
            if st == 200:
                break
            if time.perf_counter() - t0 > 10:
                raise SystemExit(f"route {name} not live after 10 s (last status {st})")
        live.append(time.perf_counter() - t0)
        post.append(t1 - t0)
        extra += tries - 1
        st, body = admin.request("DELETE", f"/admin/routes/{name}")
        expect(st, body, (204,), "DELETE /admin/routes")
    return {"post_route": dist_ms(post), "change_to_first_200": dist_ms(live),
            "proxied_requests_before_200": extra}


def steady_latency(args, admin, doc):
    """Proxied latency at a steady rate (bench/rate-load, pinned like wrk)
    in three windows: the admin API idle; whole configs written back to
    back (`doc` with one route and one weight changed, then `doc` again,
    and so on until the window ends); and `/metrics` scraped back to back
    on the metrics listener. A route without hosts (`/steady`, on tenant
    0's upstream) carries the load: rate-load sends `Host: 127.0.0.1:PORT`."""
    doc = copy.deepcopy(doc)
    doc["routes"].append({"name": "steady", "path": "/steady", "upstream": "t0"})
    # The changes are tenant 1's: the upstream under load stays as it is.
    other = copy.deepcopy(doc)
    other["routes"][args.paths]["path"] = "/p0-other"
    other["upstreams"][1]["backends"][0]["weight"] = 3
    st, body = admin.request("PUT", "/admin/config", doc)
    expect(st, body, (200,), "PUT /admin/config (with /steady)")

    def window(work=None):
        """rate-load for one window; `work()` again and again meanwhile.
        Returns its figures and the durations of each `work()`."""
        load = subprocess.Popen(
            ["taskset", "-c", str(args.load_cpu), args.rate_load, "-q", str(args.steady_rate), "-c", "16",
             "-d", str(args.steady_seconds), f"http://127.0.0.1:{args.proxy_port}/steady"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        took = []
        try:
            while work and load.poll() is None:
                t0 = time.perf_counter()
                work(len(took))
                took.append(time.perf_counter() - t0)
            out, err = load.communicate(timeout=args.steady_seconds + 30)
        finally:
            if load.poll() is None:
                load.kill()
                load.wait()
        if load.returncode != 0:
            raise SystemExit(f"rate-load failed: {err.strip()}")
        return json.loads(out), took

    def write(k):
        st, body = admin.request("PUT", "/admin/config", other if k % 2 == 0 else doc)
        expect(st, body, (200,), "PUT /admin/config (under steady load)")

    metrics = Client(args.metrics_port)
    size = []

    def scrape(_):
        st, body = metrics.request("GET", "/metrics")
        expect(st, body, (200,), "GET /metrics")
        size.append(len(body))

    quiet, _ = window()
    writing, puts = window(write)
    scraping, scrapes = window(scrape)
    return {"rate": args.steady_rate, "seconds": args.steady_seconds, "quiet": quiet,
            "writing": writing, "puts": dist_ms(puts),
            "scraping": scraping, "scrapes": dist_ms(scrapes), "metrics_bytes": max(size)}


def summary(res, args):
    s = res["starts"]
    ready = [x["ready_s"] for x in s]
    first = [x["first_200_s"] for x in s]
    c = res["change_live"]["change_to_first_200"]
    u = res["under_load"]
    m = res["memory_kb"]
    routes = args.hosts * args.paths
    rows = [
        ("routes", f"{routes:,} ({args.hosts:,} hosts × {args.paths} paths, {args.hosts:,} upstreams)", ""),
        ("PUT /admin/config (empty database)", f"{res['put_config_ms'] / 1e3:.2f} s", ""),
        ("the same document again", f"{res['put_again_ms'] / 1e3:.2f} s", ""),
        ("the document with one route and one weight changed", f"{res['put_two_changes_ms'] / 1e3:.2f} s", ""),
        ("GET /admin/config", f"{res['get_config_ms'] / 1e3:.2f} s", ""),
        ("start-up to ready (/readyz 200)", f"median {pct(ready, 50):.2f} s (min–max {min(ready):.2f}–{max(ready):.2f}) over {len(ready)} starts", "≤ 2 s"),
        ("start-up to first proxied 200", f"median {pct(first, 50):.2f} s ({min(first):.2f}–{max(first):.2f})", ""),
        ("change live (POST → first proxied 200)", f"p50 {c['p50_ms']:.2f} ms, p99 {c['p99_ms']:.2f} ms, max {c['max_ms']:.2f} ms ({c['n']} changes)", "p99 ≤ 5 ms"),
        ("changes under load (wrk c64)", f"{u['changes']} changes in {u['seconds']:.1f} s, {u['requests']:,} requests, {u['failed_requests']} failed", "0 failed"),
        *steady_rows(res["steady"]),
        ("RSS", ", ".join(f"{k} {v / 1024:.0f} MiB" for k, v in m.items()), "reported"),
    ]
    print(f"\nConfig scale (one worker on CPU {args.proxy_cpu}; backends and wrk on CPU {args.load_cpu}):")
    print("| figure | measured | target |")
    print("|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")


def steady_failed(r):
    """A rate-load window's requests that got no 2xx answer."""
    return r["errors"] + r["non2xx"] + r["unsent"] + r["unfinished"]


def steady_rows(w):
    def cell(r):
        return (f"p50 {r['p50_us'] / 1e3:.2f} ms, p99 {r['p99_us'] / 1e3:.2f} ms, "
                f"p99.9 {r['p999_us'] / 1e3:.2f} ms, max {r['max_us'] / 1e3:.2f} ms, "
                f"{steady_failed(r)} failed")
    rate = f"proxied at {w['rate']:,}/s"
    return [
        (f"{rate}, admin API idle ({w['seconds']} s)", cell(w["quiet"]), ""),
        (f"{rate} while whole configs are written ({w['puts']['n']} PUTs back to back, "
         f"median {w['puts']['p50_ms'] / 1e3:.2f} s)", cell(w["writing"]), "reported"),
        (f"{rate} while /metrics is scraped ({w['scrapes']['n']} scrapes back to back of "
         f"{w['metrics_bytes'] / 1e6:.1f} MB, median {w['scrapes']['p50_ms'] / 1e3:.2f} s)",
         cell(w["scraping"]), "reported"),
    ]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--dir", required=True, help="working directory (database, logs)")
    ap.add_argument("--proxy-port", type=int, required=True)
    ap.add_argument("--admin-port", type=int, required=True)
    ap.add_argument("--metrics-port", type=int, required=True)
    ap.add_argument("--backend-port", type=int, required=True)
    ap.add_argument("--backend2-port", type=int, required=True)
    ap.add_argument("--proxy-cpu", type=int, default=0)
    ap.add_argument("--load-cpu", type=int, default=1)
    ap.add_argument("--lua", required=True)
    ap.add_argument("--hosts", type=int, default=10_000)
    ap.add_argument("--paths", type=int, default=10)
    ap.add_argument("--starts", type=int, default=5)
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--changes", type=int, default=1000)
    ap.add_argument("--rate-load", required=True, help="the bench/rate-load binary")
    ap.add_argument("--steady-rate", type=int, default=2000)
    ap.add_argument("--steady-seconds", type=int, default=10)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    backends = [f"http://127.0.0.1:{args.backend_port}", f"http://127.0.0.1:{args.backend2_port}"]
    gw = Gateway(args)
    res = {"hosts": args.hosts, "paths": args.paths, "memory_kb": {}, "starts": []}
    try:
        gw.wait_ready(gw.start())
        res["memory_kb"]["empty"] = rss_kb(gw.proc.pid)
        doc = config_doc(args.hosts, args.paths, backends)
        log(f"scale: PUT /admin/config with {len(doc['routes']):,} routes")
        admin = Client(args.admin_port)
        t0 = time.perf_counter()
        st, body = admin.request("PUT", "/admin/config", doc)
        res["put_config_ms"] = (time.perf_counter() - t0) * 1e3
        expect(st, body, (200,), "PUT /admin/config")
        res["memory_kb"]["after_put"] = rss_kb(gw.proc.pid)
        # What a GitOps sync does when nothing changed: the same document
        # again (every row read and compared, none written).
        t0 = time.perf_counter()
        st, body = admin.request("PUT", "/admin/config", doc)
        res["put_again_ms"] = (time.perf_counter() - t0) * 1e3
        expect(st, body, (200,), "PUT /admin/config (again)")
        # A sync that changes one route and one backend's weight (tenant 1;
        # the runs below use the last and the middle tenants).
        doc["routes"][args.paths]["path"] = "/p0-moved"
        doc["upstreams"][1]["backends"][0]["weight"] = 2
        t0 = time.perf_counter()
        st, body = admin.request("PUT", "/admin/config", doc)
        res["put_two_changes_ms"] = (time.perf_counter() - t0) * 1e3
        expect(st, body, (200,), "PUT /admin/config (two changes)")
        t0 = time.perf_counter()
        st, body = admin.request("GET", "/admin/config")
        res["get_config_ms"] = (time.perf_counter() - t0) * 1e3
        expect(st, body, (200,), "GET /admin/config")
        got = len(json.loads(body)["routes"])
        if got != len(doc["routes"]):
            raise SystemExit(f"GET /admin/config has {got} routes, not {len(doc['routes'])}")
        last = args.hosts - 1
        for k in range(args.starts):
            gw.stop()
            admin = Client(args.admin_port)
            t0 = gw.start()
            ready = gw.wait_ready(t0)
            first = first_proxied(args.proxy_port, tenant(last), f"/p{args.paths - 1}", t0)
            res["starts"].append({"ready_s": ready, "first_200_s": first})
            log(f"scale: start {k + 1}/{args.starts}: ready in {ready:.3f} s, first proxied 200 in {first:.3f} s")
        res["memory_kb"]["started"] = rss_kb(gw.proc.pid)
        proxy = Client(args.proxy_port)
        log(f"scale: {args.samples} changes, each until live")
        res["change_live"] = change_live(admin, proxy, args.hosts, args.samples)
        log(f"scale: {args.changes} changes under wrk load")
        mid = args.hosts // 2
        res["under_load"] = changes_under_load(args, admin, args.changes, path="/p3",
                                               host=tenant(mid), upstream=f"t{mid}")
        res["memory_kb"]["after_changes"] = rss_kb(gw.proc.pid)
        log(f"scale: proxied latency at {args.steady_rate}/s: idle, while whole configs are written, "
            "while /metrics is scraped")
        res["steady"] = steady_latency(args, admin, doc)
    finally:
        gw.stop()
    with open(args.out, "w") as f:
        json.dump(res, f, indent=1)
    summary(res, args)
    print(f"JSON: {args.out}")
    late = res["change_live"]["proxied_requests_before_200"]
    w = res["steady"]
    failed_steady = sum(steady_failed(r) for r in (w["quiet"], w["writing"], w["scraping"]))
    if res["under_load"]["failed_requests"] or late or failed_steady:
        print(f"FAILED: {res['under_load']['failed_requests']} failed requests under load, "
              f"{late} proxied requests not routed right after the admin 201, "
              f"{failed_steady} failed at a steady rate", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
