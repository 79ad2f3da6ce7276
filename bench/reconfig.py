#!/usr/bin/env python3
"""Reconfiguration and memory figures for bench/reconfig.sh (stdlib only).

Switchyard and two backends are already running. Phases, in order:
  idle RSS -> 10 routes -> 1,000 routes -> N changes under wrk load
  -> 10,000 routes -> RSS -> 1,000 idle keep-alive clients -> RSS.
At each route count: PUT /admin/config with that many routes (timed), then
S samples of "POST a new route; GET it through the proxy until 200; DELETE
it": admin POST latency, change-to-first-proxied-200, DELETE latency.
"""
import argparse
import http.client
import json
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import time


def pct(values, p):
    s = sorted(values)
    if not s:
        return None
    k = (len(s) - 1) * p / 100
    f = int(k)
    c = min(f + 1, len(s) - 1)
    return s[f] + (s[c] - s[f]) * (k - f)


def dist_ms(values):
    return {"n": len(values), "p50_ms": pct(values, 50) * 1e3, "p99_ms": pct(values, 99) * 1e3,
            "max_ms": max(values) * 1e3, "mean_ms": statistics.mean(values) * 1e3}


class Client:
    """One keep-alive HTTP/1.1 connection (reconnects when closed)."""

    def __init__(self, port):
        self.port = port
        self.conn = None

    def request(self, method, path, body=None, headers=None):
        headers = dict(headers or {})
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["content-type"] = "application/json"
        for attempt in (0, 1):
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
            try:
                self.conn.request(method, path, body=data, headers=headers)
                r = self.conn.getresponse()
                payload = r.read()
                if r.getheader("connection", "").lower() == "close":
                    self.conn.close()
                    self.conn = None
                return r.status, payload
            except (http.client.HTTPException, ConnectionError, OSError):
                self.conn.close()
                self.conn = None
                if attempt:
                    raise
        raise AssertionError("unreachable")


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return None


def config_doc(n, backend_url):
    routes = [{"name": "root", "path": "/", "upstream": "be"}]
    routes += [{"name": f"r{i}", "path": f"/r{i}", "upstream": "be"} for i in range(n - 1)]
    return {"upstreams": [{"name": "be", "backends": [{"url": backend_url}]}], "routes": routes}


def expect(status, payload, ok, what):
    if status not in ok:
        raise SystemExit(f"{what}: HTTP {status}: {payload[:300]!r}")


def phase(admin, proxy, n, samples, backend_url):
    t0 = time.perf_counter()
    st, body = admin.request("PUT", "/admin/config", config_doc(n, backend_url))
    put_s = time.perf_counter() - t0
    expect(st, body, (200,), f"PUT /admin/config with {n} routes")
    post, live, delete = [], [], []
    extra_attempts = 0
    for j in range(samples):
        name = f"probe{j}"
        t0 = time.perf_counter()
        st, body = admin.request("POST", "/admin/routes", {"name": name, "path": f"/{name}", "upstream": "be"})
        t1 = time.perf_counter()
        expect(st, body, (201,), "POST /admin/routes")
        tries = 0
        while True:
            tries += 1
            st, body = proxy.request("GET", f"/{name}/x")
            if st == 200:
                break
            if time.perf_counter() - t0 > 10:
                raise SystemExit(f"route {name} not live after 10 s (last status {st})")
        t2 = time.perf_counter()
        extra_attempts += tries - 1
        t3 = time.perf_counter()
        st, body = admin.request("DELETE", f"/admin/routes/{name}")
        t4 = time.perf_counter()
        expect(st, body, (204,), "DELETE /admin/routes")
        post.append(t1 - t0)
        live.append(t2 - t0)
        delete.append(t4 - t3)
    return {
        "routes": n, "put_config_ms": put_s * 1e3,
        "post_route": dist_ms(post), "change_to_first_200": dist_ms(live),
        "delete_route": dist_ms(delete),
        "proxied_requests_before_200": extra_attempts,
    }


def changes_under_load(args, admin, changes, path="/under-load", host=None, upstream="be"):
    """`changes` config mutations (to `upstream` and routes beside it)
    while wrk drives the proxy at c64 (GET `path`, with `Host: host`)."""
    header = ["-H", f"Host: {host}"] if host else []
    wrk = subprocess.Popen(
        ["taskset", "-c", str(args.load_cpu), "wrk", "-t1", "-c64", "-d600s", "--latency", *header,
         "-s", args.lua, f"http://127.0.0.1:{args.proxy_port}{path}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        time.sleep(1.0)
        second = f"http://127.0.0.1:{args.backend2_port}"
        done = 0
        i = 0
        lat = []
        t_start = time.perf_counter()
        backend_id = None
        while done < changes:
            step = done % 5
            t0 = time.perf_counter()
            if step == 0:
                st, body = admin.request("POST", "/admin/routes",
                                         {"name": f"tmp{i}", "path": f"/tmp{i}", "upstream": upstream})
                expect(st, body, (201,), "POST route")
            elif step == 1:
                st, body = admin.request("POST", f"/admin/upstreams/{upstream}/backends", {"url": second})
                expect(st, body, (200, 201), "POST backend")
                backend_id = json.loads(body)["id"]
            elif step == 2:
                st, body = admin.request("PATCH", f"/admin/upstreams/{upstream}/backends/{backend_id}",
                                         {"weight": 3})
                expect(st, body, (200,), "PATCH backend weight")
            elif step == 3:
                st, body = admin.request("DELETE", f"/admin/upstreams/{upstream}/backends/{backend_id}")
                expect(st, body, (200, 204), "DELETE backend")
            else:
                st, body = admin.request("DELETE", f"/admin/routes/tmp{i}")
                expect(st, body, (204,), "DELETE route")
                i += 1
            lat.append(time.perf_counter() - t0)
            done += 1
        elapsed = time.perf_counter() - t_start
        time.sleep(0.5)
    finally:
        wrk.send_signal(signal.SIGINT)
        try:
            out, _ = wrk.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            wrk.kill()
            out, _ = wrk.communicate()
    w = next((json.loads(l[8:]) for l in out.splitlines() if l.startswith("WRKJSON ")), None)
    if w is None:
        raise SystemExit(f"wrk gave no summary:\n{out}")
    failed = w["connect_errors"] + w["read_errors"] + w["write_errors"] + w["timeouts"] + w["non2xx"]
    return {"changes": changes, "seconds": elapsed, "admin_change": dist_ms(lat),
            "requests": w["requests"], "failed_requests": failed, "wrk": w}


def hold_connections(port, n):
    """Open n keep-alive client connections, one request each, keep them."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, max(soft, n + 256))
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    socks = []
    req = b"GET /held HTTP/1.1\r\nHost: bench\r\n\r\n"
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(req)
        buf = b""
        while b"\r\n\r\n" not in buf:
            buf += s.recv(65536)
        head, _, body = buf.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            raise SystemExit(f"held connection got {head[:40]!r}")
        length = next(int(l.split(b":")[1]) for l in head.split(b"\r\n")
                      if l.lower().startswith(b"content-length:"))
        while len(body) < length:
            body += s.recv(65536)
        socks.append(s)
    return socks


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--admin-port", type=int, required=True)
    ap.add_argument("--proxy-port", type=int, required=True)
    ap.add_argument("--backend-port", type=int, required=True)
    ap.add_argument("--backend2-port", type=int, required=True)
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--load-cpu", type=int, default=1)
    ap.add_argument("--lua", required=True)
    ap.add_argument("--counts", default="10,1000,10000")
    ap.add_argument("--samples", type=int, default=100)
    ap.add_argument("--changes", type=int, default=1000)
    ap.add_argument("--connections", type=int, default=1000)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    counts = [int(c) for c in args.counts.split(",")]
    backend = f"http://127.0.0.1:{args.backend_port}"
    admin, proxy = Client(args.admin_port), Client(args.proxy_port)
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731

    res = {"phases": [], "memory_kb": {}}
    res["memory_kb"]["idle"] = rss_kb(args.pid)
    load_at = 1000 if 1000 in counts else counts[-1]
    for n in counts:
        log(f"reconfig: {n} routes, {args.samples} samples")
        res["phases"].append(phase(admin, proxy, n, args.samples, backend))
        if n == load_at:
            log(f"reconfig: {args.changes} changes under wrk load at {n} routes")
            res["under_load"] = changes_under_load(args, admin, args.changes)
            res["under_load"]["routes"] = n
    res["memory_kb"][f"routes_{counts[-1]}"] = rss_kb(args.pid)
    log(f"memory: holding {args.connections} idle keep-alive connections")
    socks = hold_connections(args.proxy_port, args.connections)
    time.sleep(0.5)
    res["memory_kb"][f"routes_{counts[-1]}_conns_{args.connections}"] = rss_kb(args.pid)
    for s in socks:
        s.close()

    with open(args.out, "w") as f:
        json.dump(res, f, indent=1)
    print("\nReconfiguration (one switchyard worker on CPU 0; admin and proxy share it):")
    print("| routes | PUT /admin/config | POST route p50/p99 | change→first 200 p50/p99 | DELETE p50/p99 |")
    print("|---|---|---|---|---|")
    for p in res["phases"]:
        print(f"| {p['routes']} | {p['put_config_ms']:.1f} ms "
              f"| {p['post_route']['p50_ms']:.2f}/{p['post_route']['p99_ms']:.2f} ms "
              f"| {p['change_to_first_200']['p50_ms']:.2f}/{p['change_to_first_200']['p99_ms']:.2f} ms "
              f"| {p['delete_route']['p50_ms']:.2f}/{p['delete_route']['p99_ms']:.2f} ms |")
    u = res["under_load"]
    print(f"\nUnder load ({u['routes']} routes, wrk c64): {u['changes']} changes in {u['seconds']:.1f} s "
          f"(change p50/p99 {u['admin_change']['p50_ms']:.1f}/{u['admin_change']['p99_ms']:.1f} ms), "
          f"{u['requests']} requests, failed: {u['failed_requests']}")
    m = res["memory_kb"]
    print("Memory (RSS): " + ", ".join(f"{k} {v / 1024:.1f} MiB" for k, v in m.items()))
    print(f"JSON: {args.out}")
    late = sum(p["proxied_requests_before_200"] for p in res["phases"])
    if u["failed_requests"] or late:
        print(f"FAILED: {u['failed_requests']} failed requests under load, "
              f"{late} proxied requests not routed right after the admin 201", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
