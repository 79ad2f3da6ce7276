"""The compose file's `shared` profile as processes, under .ci/postgres.sh:
`python3 shared.py COMPOSE_RESOLVED SWITCHYARD_BINARY`.

What `docker compose --profile shared up` starts, as e2e.py starts the
default services: the profile's gateways with the image's and the compose
file's environment (their database URL pointed at the server that
.ci/postgres.sh runs, which stands for the postgres service: its user and
database are made from the service's POSTGRES_* environment, and its
healthcheck is run), and the demo backends they depend on.

Then: each gateway names itself in /admin/status; all serve one config,
bootstrapped once; each proxies the bootstrap route; README's "Running
several gateways" commands are replayed, and a weight changed on one
gateway shows on the other; each gateway's cache file, on its own volume,
holds the config; a gateway stopped and started comes back with it; every
gateway exits 0 on SIGTERM. Processes are stopped by PID.
"""

import json
import os
import shutil
import signal
import sys
import tempfile

import yaml

from checks import curl, readme_commands
from common import fail, listen_port, log, request, wait_until
from e2e import Stack

README_SECTION = "## Running several gateways"
PROFILE = "shared"


class Gateway:
    def __init__(self, stack, name):
        self.name = name
        env = stack.declared(name)
        self.node = env["SWITCHYARD_NODE_NAME"]
        self.admin = f"http://127.0.0.1:{stack.addr.local(name, listen_port(env['SWITCHYARD_ADMIN_LISTEN']))}"
        self.proxy = f"http://127.0.0.1:{stack.addr.local(name, listen_port(env['SWITCHYARD_PROXY_LISTEN']))}"
        self.auth = {"authorization": f"Bearer {env.get('SWITCHYARD_ADMIN_TOKEN', '')}"}
        self.cache = stack.path(name, env["SWITCHYARD_CACHE_FILE"])

    def get(self, path):
        status, body = request("GET", self.admin + path, headers=self.auth)
        if status != 200:
            fail(f"{self.name}: GET {path} answered {status}: {body[:300]!r}")
        return json.loads(body)

    def ready(self):
        return request("GET", self.admin + "/admin/status", headers=self.auth)[0] == 200, None


def weights(gw):
    return {
        (u["name"], b["id"]): b["weight"]
        for u in gw.get("/admin/status")["upstreams"]
        for b in u["backends"]
    }


def main():
    compose_file, binary = sys.argv[1], os.path.abspath(sys.argv[2])
    with open(compose_file, encoding="utf-8") as f:
        compose = yaml.safe_load(f)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("shared: stopped (SIGTERM)"))
    work = tempfile.mkdtemp(prefix="switchyard-shared-")
    stack = Stack(compose, binary, work, profile=PROFILE)
    names = [n for n, s in stack.services.items() if PROFILE in s.get("profiles", []) and stack.built(n)]
    ok = False
    try:
        stack.up()
        gws = [Gateway(stack, n) for n in names]
        for gw in gws:
            wait_until(f"{gw.name}'s admin API", gw.ready, 60)
            status = gw.get("/admin/status")
            if status["node"] != gw.node:
                fail(f"{gw.name}: /admin/status names {status['node']!r}, not {gw.node!r}")
        configs = [gw.get("/admin/config") for gw in gws]
        if any(c != configs[0] for c in configs):
            fail(f"the gateways serve different configs: {configs}")
        revisions = gws[0].get("/admin/revisions")["items"]
        if [r["source"] for r in revisions] != ["bootstrap"]:
            fail(f"the bootstrap file was not applied exactly once: {revisions}")
        log(f"{', '.join(gw.node for gw in gws)}: one config (version {configs[0]['version']}), bootstrapped once")
        for gw in gws:
            for _ in range(20):
                status, body = request("GET", gw.proxy + "/item/1")
                if status != 200:
                    fail(f"{gw.name}: GET /item/1 answered {status}: {body[:200]!r}")
        log("every gateway proxies the bootstrap route")
        token = gws[0].auth["authorization"].removeprefix("Bearer ")
        for words in readme_commands(README_SECTION):
            shown = " ".join(words)
            if words[0] == "curl":
                before = weights(gws[-1])
                method, url = curl(stack, words[1:], token)
                if method == "PATCH":
                    changed = {k: v for k, v in weights(gws[0]).items() if before.get(k) != v}
                    if not changed:
                        fail(f"README: {shown} changed no weight")
                    for gw in gws[1:]:
                        wait_until(
                            f"{gw.name} to have the weight changed on {gws[0].name}",
                            lambda gw=gw: (all(weights(gw).get(k) == v for k, v in changed.items()), weights(gw)),
                            10,
                        )
                    log(f"the weights changed on {gws[0].name} are live on the others: {changed}")
            elif words[:2] == ["docker", "compose"] or words[0] in ("switchyard", "export"):
                log(f"README: {shown[:70]}  (the processes stand for it)")
            else:
                fail(f"README: the shared-profile test does not know `{shown}`")
        version = gws[0].get("/admin/config")["version"]

        def cached(gw):
            try:
                with open(gw.cache, encoding="utf-8") as f:
                    doc = json.load(f)
            except (OSError, ValueError):
                return False, None
            return doc["config"]["version"] == version, doc["config"]["version"]

        for gw in gws:
            wait_until(f"{gw.name}'s cache file to hold version {version}", lambda gw=gw: cached(gw), 10)
        log(f"each gateway's cache file (on its own volume) holds version {version}")
        last = gws[-1]
        code = stack.stop(last.name)
        if code != 0:
            fail(f"{last.name} exited {code} on SIGTERM, not 0")
        stack.start(last.name)
        wait_until(f"the restarted {last.name}", last.ready, 60)
        if last.get("/admin/config") != gws[0].get("/admin/config"):
            fail(f"the restarted {last.name} serves another config")
        log(f"{last.name} restarted with the shared config")
        ok = True
    finally:
        codes = stack.down()
        if not ok:
            for name in os.listdir(work):
                if name.endswith(".log"):
                    with open(os.path.join(work, name), encoding="utf-8", errors="replace") as f:
                        tail = f.read().splitlines()[-25:]
                    print(f"== {name} (last lines)\n" + "\n".join(tail), file=sys.stderr)
        shutil.rmtree(work, ignore_errors=True)
    bad = {n: c for n, c in codes.items() if c != 0}
    if bad:
        fail(f"exited non-zero on SIGTERM: {bad}")
    log(f"shared profile: all passed; {', '.join(names)} drained and exited 0")


if __name__ == "__main__":
    main()
