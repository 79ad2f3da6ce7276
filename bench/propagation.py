#!/usr/bin/env python3
"""Propagation between gateways sharing one PostgreSQL (bench/propagation.sh).

Starts a demo backend and NODES gateways (the release binary) on the
database at $SWITCHYARD_TEST_POSTGRES, the first with a bootstrap config of
ROUTES routes (hosts and paths mixed: ROUTES/10 hosts x 10 paths). Then
CHANGES times, rotating over the nodes: POST a new route on one node and
time, on every other node, how long after the writer's answer the route is
proxied (GET through that node until 200; each node polled by its own
thread on a keep-alive connection). Reports p50/p99/max of "live on every
other node" (the slowest node of each change) and of the writer's own
answer, per round and over all, as JSON. Every process it starts is
stopped by PID at the end.
"""
import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reconfig import Client, dist_ms  # noqa: E402


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(what, check, deadline):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.02)
    sys.exit(f"propagation: {what} not within {deadline} s")


def bootstrap(routes):
    hosts = max(1, routes // 10)
    return {
        "upstreams": [{"name": "pool", "strategy": "round_robin", "backends": []}],
        "routes": [
            {"name": f"t{i}", "path": f"/p{i % 10}", "hosts": [f"tenant{i // 10}.example"], "upstream": "pool"}
            for i in range(hosts * 10)
        ][:routes],
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", required=True)
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--routes", type=int, default=10_000)
    ap.add_argument("--changes", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out")
    args = ap.parse_args()
    url = os.environ["SWITCHYARD_TEST_POSTGRES"]
    work = tempfile.mkdtemp(prefix="switchyard-propagation.")
    procs = []

    def spawn(argv, log):
        p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, log), "w"),
                             env=dict(os.environ, SWITCHYARD_LOG="warn"))
        procs.append(p)
        return p

    try:
        backend_port = free_port()
        spawn([args.binary, "demo-backend", "--port", str(backend_port), "--name", "b"], "backend.log")
        doc = bootstrap(args.routes)
        doc["upstreams"][0]["backends"] = [{"url": f"http://127.0.0.1:{backend_port}"}]
        with open(os.path.join(work, "bootstrap.json"), "w") as f:
            json.dump(doc, f)
        nodes = []
        for n in range(args.nodes):
            proxy, admin = free_port(), free_port()
            argv = [args.binary, "--database-url", url, "--proxy-listen", f"127.0.0.1:{proxy}",
                    "--admin-listen", f"127.0.0.1:{admin}", "--node-name", f"node-{n}",
                    "--cache-file", os.path.join(work, f"node-{n}.json"), "--no-access-log",
                    "--workers", "1"]
            if n == 0:
                argv += ["--bootstrap", os.path.join(work, "bootstrap.json")]
            started = time.monotonic()
            spawn(argv, f"node-{n}.log")
            client = Client(admin)
            wait_until(f"node-{n}", lambda: client.request("GET", "/admin/status")[0] == 200, 120)
            print(f"node-{n}: up with {args.routes} routes in {time.monotonic() - started:.2f} s", flush=True)
            nodes.append({"admin": client, "proxy": proxy})

        def live_at(node, path, out, i):
            c = Client(node["proxy"])
            while True:
                status = c.request("GET", path)[0]
                if status == 200:
                    out[i] = time.monotonic()
                    return
                time.sleep(0.0005)

        rounds = []
        per_round = max(1, args.changes // args.rounds)
        k = 0
        for r in range(args.rounds):
            spread, writer_ms = [], []
            for _ in range(per_round):
                w = k % len(nodes)
                others = [n for i, n in enumerate(nodes) if i != w]
                path = f"/c{k}"
                sent = time.monotonic()
                status, _ = nodes[w]["admin"].request(
                    "POST", "/admin/routes", {"name": f"c{k}", "path": path, "upstream": "pool"})
                answered = time.monotonic()
                if status != 201:
                    sys.exit(f"propagation: POST on node-{w} answered {status}")
                seen = [None] * len(others)
                threads = [threading.Thread(target=live_at, args=(n, path, seen, i))
                           for i, n in enumerate(others)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join(30)
                if any(s is None for s in seen):
                    sys.exit(f"propagation: change {k} not live everywhere within 30 s")
                spread.append(max(seen) - answered)
                writer_ms.append(answered - sent)
                k += 1
            rounds.append({"live_elsewhere": dist_ms(spread), "writer_answer": dist_ms(writer_ms)})
            print(f"round {r + 1}: live on every other node after the writer's answer: "
                  f"p50 {rounds[-1]['live_elsewhere']['p50_ms']:.1f} ms, "
                  f"p99 {rounds[-1]['live_elsewhere']['p99_ms']:.1f} ms, "
                  f"max {rounds[-1]['live_elsewhere']['max_ms']:.1f} ms; "
                  f"writer answers p50 {rounds[-1]['writer_answer']['p50_ms']:.1f} ms", flush=True)
        p99s = [x["live_elsewhere"]["p99_ms"] for x in rounds]
        result = {"nodes": args.nodes, "routes": args.routes, "changes": k, "rounds": rounds,
                  "p99_ms_min": min(p99s), "p99_ms_max": max(p99s)}
        print(f"p99 over rounds: {min(p99s):.1f}-{max(p99s):.1f} ms (target 1000 ms)")
        if args.out:
            with open(args.out, "w") as f:
                json.dump(result, f, indent=2)
            print(f"written {args.out}")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


if __name__ == "__main__":
    main()
