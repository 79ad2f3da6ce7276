"""What e2e.py checks once the stack runs with traffic: the split follows
the weights, README's "Full stack" commands do what it says, every query of
the Grafana dashboard returns data from Prometheus, the alert rules load.
"""

import json
import math
import os
import re
import shlex
import urllib.parse

from common import REPO, fail, listen_port, log, request, wait_until

DASHBOARD = "deploy/grafana/dashboards/switchyard.json"
README_SECTION = "## Full stack"
# Compose commands that the running processes already stand for.
COMPOSE_NOOPS = {"up", "down", "ps", "logs", "pull", "build"}


class Checks:
    def __init__(self, stack):
        self.stack = stack
        self.addr = stack.addr
        port = stack.addr.local("prometheus", listen_port(stack.flag("prometheus", "web.listen-address", ":9090")))
        self.prom = f"http://127.0.0.1:{port}"
        gw = stack.env
        self.admin = f"http://127.0.0.1:{stack.addr.local('switchyard', listen_port(gw['SWITCHYARD_ADMIN_LISTEN']))}"
        self.token = gw.get("SWITCHYARD_ADMIN_TOKEN", "")
        with open(os.path.join(REPO, DASHBOARD), encoding="utf-8") as f:
            self.dashboard = json.load(f)
        scrape = self.prometheus_config()["global"]["scrape_interval"]
        # Grafana's $__rate_interval for a short range: 4 x the datasource's
        # timeInterval (the scrape interval, checked equal by files.py).
        self.vars = {
            "__rate_interval": f"{4 * seconds(scrape)}s",
            **{v["name"]: v.get("allValue", ".*") for v in self.dashboard["templating"]["list"]},
        }

    def prometheus_config(self):
        import yaml

        path = self.stack.path("prometheus", self.stack.flag("prometheus", "config.file"))
        with open(path, encoding="utf-8") as f:
            return yaml.safe_load(f)

    # --- Prometheus ------------------------------------------------------------------

    def query(self, expr):
        body = urllib.parse.urlencode({"query": expr}).encode()
        status, raw = request("POST", f"{self.prom}/api/v1/query", body, {"content-type": "application/x-www-form-urlencoded"})
        answer = json.loads(raw)
        if status != 200 or answer.get("status") != "success":
            fail(f"Prometheus refused {expr!r}: {answer.get('error', status)}")
        return [(r["metric"], float(r["value"][1])) for r in answer["data"]["result"]]

    def expr(self, text):
        out = re.sub(r"\$\{?(\w+)\}?", lambda m: self.vars[m.group(1)], text)
        return out

    def panel(self, title):
        for p in self.dashboard["panels"]:
            if p["title"] == title:
                return [self.expr(t["expr"]) for t in p["targets"]]
        fail(f"the dashboard has no panel {title!r}")

    def admin_get(self, path):
        status, raw = request("GET", self.admin + path, headers={"authorization": f"Bearer {self.token}"})
        if status != 200:
            fail(f"GET {path}: {status} {raw[:200]!r}")
        return json.loads(raw)

    # --- what README says to watch -------------------------------------------------

    def wait_for_split(self, upstream):
        """The "Traffic share per backend" panel shows the upstream's weights."""
        backends = self.admin_get(f"/admin/upstreams/{upstream}")["backends"]
        total = sum(b["weight"] for b in backends)
        want = {b["url"]: b["weight"] / total for b in backends}
        (expr,) = self.panel("Traffic share per backend")

        def check():
            got = {m["backend"]: v for m, v in self.query(expr) if m.get("upstream") == upstream}
            close = set(got) == set(want) and all(abs(got[u] - want[u]) < 0.05 for u in want)
            return close, {u: round(v, 3) for u, v in got.items()}

        got = wait_until(f"the traffic share of {upstream} to reach {want}", check, 90)
        log(f"traffic share of {upstream}: {got} (weights {[b['weight'] for b in backends]})")

    def wait_for_health(self, service, healthy):
        """The "Backend health" panel shows the service up or down in every
        upstream that health-checks it."""
        port = self.addr.local(service, self.backend_port(service))
        checked = {u["name"] for u in self.admin_get("/admin/upstreams")["items"] if u.get("health_check")}
        (expr,) = self.panel("Backend health")
        want = 1.0 if healthy else 0.0

        def check():
            mine = {
                m["upstream"]: v
                for m, v in self.query(expr)
                if m.get("upstream") in checked and m.get("backend", "").endswith(f"//127.0.0.1:{port}")
            }
            return bool(mine) and all(v == want for v in mine.values()), mine

        state = "up" if healthy else "down"
        mine = wait_until(f"{service} to show {state} on the dashboard", check, 60)
        log(f"backend health: {service} {state} on the dashboard in {sorted(mine)}")

    def backend_port(self, service):
        args = self.stack.services[service].get("command", [])
        return args[args.index("--port") + 1]

    # --- README's commands -----------------------------------------------------------

    def readme_commands(self):
        return readme_commands(README_SECTION)

    def replay(self, words):
        shown = " ".join(words)
        if words[0] == "curl":
            self.curl(words[1:])
        elif words[:2] == ["docker", "compose"]:
            verb, args = words[2], [w for w in words[3:] if not w.startswith("-")]
            if verb in COMPOSE_NOOPS:
                log(f"README: {shown}  (the processes stand for it)")
            elif verb == "stop":
                for service in args:
                    log(f"README: {shown}")
                    self.stack.stop(service)
                    self.wait_for_health(service, healthy=False)
            elif verb == "start":
                for service in args:
                    log(f"README: {shown}")
                    self.stack.start(service)
                    self.stack.wait_healthy(service)
                    self.wait_for_health(service, healthy=True)
            else:
                fail(f"README: the stack test does not know `{shown}`")
        elif words[0] in ("export", "while"):
            log(f"README: {shown[:60]}...  (the test's own traffic and token stand for it)")
        else:
            fail(f"README: the stack test does not know `{shown}`")

    def curl(self, args):
        method, url = curl(self.stack, args, self.token)
        m = re.search(r"/admin/upstreams/([^/]+)/backends/\d+$", url)
        if method == "PATCH" and m:
            self.wait_for_split(m.group(1))

    # --- the dashboard ---------------------------------------------------------------

    def dashboard_queries(self):
        queries = [(p["title"], t["refId"], self.expr(t["expr"])) for p in self.dashboard["panels"] for t in p["targets"]]

        def check():
            missing = []
            for title, ref, expr in queries:
                result = self.query(expr)
                if not any(math.isfinite(v) for _, v in result):
                    missing.append(f"{title} {ref}: {len(result)} series, none finite")
            return not missing, missing

        wait_until("every dashboard query to return data", check, 60)
        for title, ref, expr in queries:
            result = self.query(expr)
            labels, value = next((m, v) for m, v in result if math.isfinite(v))
            log(f"  {title} [{ref}]: {len(result)} series, e.g. {labels} = {value:.4g}")
        for v in self.dashboard["templating"]["list"]:
            m = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", v["query"])
            if not m:
                fail(f"variable {v['name']}: label_values(metric, label) expected")
            q = urllib.parse.urlencode({"match[]": m.group(1)})
            answer = json.loads(request("GET", f"{self.prom}/api/v1/label/{m.group(2)}/values?{q}")[1])
            if not answer.get("data"):
                fail(f"variable {v['name']}: no values ({answer})")
            log(f"  variable ${v['name']}: {answer['data']}")
        log(f"dashboard: {len(queries)} queries and {len(self.dashboard['templating']['list'])} variables evaluated, each returned data")

    def rules_and_targets(self):
        groups = json.loads(request("GET", f"{self.prom}/api/v1/rules")[1])["data"]["groups"]
        rules = [r for g in groups for r in g["rules"]]
        bad = [r["name"] for r in rules if r.get("health") != "ok"]
        if not rules or bad:
            fail(f"alert rules not loaded or failing: {bad or 'none loaded'}")
        up = self.query("up")
        if not up or any(v != 1 for _, v in up):
            fail(f"a scrape target is down: {up}")
        log(f"prometheus: {len(rules)} alert rules loaded and evaluated ({', '.join(r['name'] for r in rules)}); every target up")

    def restart_keeps_config(self):
        """The database is on the volume: a restarted gateway keeps what the
        API changed, and the bootstrap file is not applied again."""
        before = self.admin_get("/admin/config")
        code = self.stack.stop("switchyard")
        if code != 0:
            fail(f"the gateway exited {code} on SIGTERM, not 0")
        self.stack.start("switchyard")
        self.stack.wait_healthy("switchyard")
        # The healthcheck (/healthz) passes once the process is up; the
        # admin API listens once the config is loaded, a moment later on a
        # busy machine: wait for it rather than race it.
        auth = {"authorization": f"Bearer {self.token}"}
        wait_until(
            "the restarted gateway's admin API",
            lambda: (request("GET", self.admin + "/admin/config", headers=auth)[0] == 200, None),
            60,
        )
        after = self.admin_get("/admin/config")
        if after != before:
            fail(f"the restarted gateway has another config: {before} -> {after}")
        log(f"restart: the gateway came back with config version {after['version']} and routes {[r['name'] for r in after['routes']]}")

    def run(self):
        wait_until("Prometheus to scrape switchyard_requests_total", lambda: (bool(self.query("switchyard_requests_total")), None), 60)
        log("prometheus has scraped switchyard_requests_total")
        for upstream in self.admin_get("/admin/upstreams")["items"]:
            self.wait_for_split(upstream["name"])
        for words in self.readme_commands():
            self.replay(words)
        self.dashboard_queries()
        self.rules_and_targets()


def curl(stack, args, token):
    """Replay a README curl command against the stack's processes (the
    host's published ports rewritten); it must answer 2xx. Returns the
    method and the URL it went to."""
    method, headers, data, url = None, {}, None, None
    it = iter(args)
    for arg in it:
        if arg == "-X":
            method = next(it)
        elif arg == "-H":
            name, _, value = next(it).partition(":")
            headers[name.strip().lower()] = value.strip().replace("$SWITCHYARD_ADMIN_TOKEN", token)
        elif arg in ("-d", "--data"):
            data = stack.addr.network(next(it)).encode()
        elif arg in ("-o", "-w"):
            next(it)
        elif arg.startswith("-") and set(arg[1:]) <= set("sSif"):
            pass
        elif arg.startswith("-"):
            fail(f"README: curl {arg}: the stack test does not know this flag")
        else:
            url = arg
    method = method or ("POST" if data else "GET")
    shown = f"curl -X {method} {url}"
    url = stack.addr.host(stack.compose, url if "://" in url else "http://" + url)
    status, body = request(method, url, data, headers)
    log(f"README: {shown} -> {status} {body[:100]!r}")
    if not 200 <= status < 300:
        fail(f"README: {shown} answered {status}: {body[:300]!r}")
    return method, url


def readme_commands(section_title):
    """Each command of the ```sh blocks of README's section."""
    text = open(os.path.join(REPO, "README.md"), encoding="utf-8").read()
    start = text.find(f"\n{section_title}\n")
    if start < 0:
        fail(f"README has no {section_title!r} section")
    section = text[start + 1 :]
    end = section.find("\n## ", 3)
    section = section[: end if end > 0 else None]
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", section, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words:
                commands.append(words)
    if not commands:
        fail(f"README's {section_title!r} section has no commands")
    return commands


def seconds(duration):
    m = re.fullmatch(r"(\d+)(ms|s|m)", duration)
    if not m:
        fail(f"scrape interval {duration}: write it in ms, s or m")
    n = int(m.group(1))
    return {"ms": n / 1000, "s": n, "m": 60 * n}[m.group(2)]
