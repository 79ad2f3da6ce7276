"""Static checks of the stack's files, run by .ci/stack.sh with the resolved
compose file (`docker-compose config` output) as its argument:

- the Dockerfile's build context (after .dockerignore) is small and holds
  everything the build reads: the workspace manifests, each member's sources,
  and every file the crates embed at compile time (include_str!, migrate!);
  the runtime stage copies the binary only and runs as a non-root user;
- the compose file publishes the admin API on the host's loopback only and
  the metrics listener not at all, keeps state in named volumes, pins images;
- Grafana: no Grafana can run here, so its provisioning files and the
  dashboard JSON model are checked against the documented schema as far as
  structure goes (keys, unique panel ids, gridPos on the 24-column grid
  without overlaps, every datasource the provisioned uid, every target an
  expr, every $variable defined), and against the compose file and
  Prometheus (mount paths, datasource URL, scrape interval);
- README's alert rules are alerts.yml's, and README names the pinned images.

Every query's validity and data are e2e.py's job, against a real Prometheus.
"""

import json
import os
import re
import sys

import yaml

from common import (
    REPO,
    build_context,
    dockerfile_env,
    dockerfile_stages,
    dockerignore,
    exec_form,
    fail,
    load_yaml,
    published,
    read,
    under,
    volumes,
)

GRAFANA_BUILTIN_VARS = {"__rate_interval", "__interval", "__interval_ms", "__range", "__range_s", "__all"}
PANEL_TYPES = {"stat", "timeseries", "state-timeline", "gauge", "bargauge", "table", "text", "row", "heatmap"}


def check_build_context():
    stages = dockerfile_stages(read("Dockerfile"))
    if len(stages) < 2:
        fail("Dockerfile: a multi-stage build is expected (build, runtime)")
    build, runtime = stages[0], stages[-1]
    rules = dockerignore(read(".dockerignore"))
    files, size = build_context(rules)
    if size > 20 * 1024 * 1024:
        fail(f"the build context is {size >> 20} MiB: does .dockerignore keep target/ out?")
    for bad in ("target/", ".git/", "fuzz/", "bench/results/"):
        if any(f.startswith(bad) or f"/{bad}" in f for f in files):
            fail(f".dockerignore lets {bad} into the build context")
    if any(f.endswith(".db") for f in files):
        fail(".dockerignore lets a database file into the build context")

    # What the build stage copies, relative to its WORKDIR.
    copied = []
    for ins in build["instructions"]:
        if ins.keyword in ("COPY", "ADD") and "from" not in ins.flags:
            *sources, _dest = ins.args.split()
            for src in sources:
                src = src.rstrip("/")
                hits = [f for f in files if f == src or f.startswith(src + "/")]
                if not hits:
                    fail(f"Dockerfile: {ins}: {src} is not in the build context")
                copied += hits
    copied = set(copied)

    # The workspace: every member's manifest and sources, and whatever a
    # crate reads at compile time, must be copied.
    manifest = load_yaml_toml("Cargo.toml")
    members = manifest["workspace"]["members"]
    for need in ["Cargo.toml", "Cargo.lock"] + [f"{m}/Cargo.toml" for m in members]:
        if need not in copied:
            fail(f"Dockerfile: the build does not copy {need}")
    for crate in [""] + [m + "/" for m in members]:
        for rel in [f for f in files if f.startswith(crate + "src/") and f.endswith(".rs")]:
            if rel not in copied:
                fail(f"Dockerfile: the build does not copy {rel}")
            text = read(rel)
            for macro, arg in re.findall(r"(include_str|include_bytes|migrate)!\(\s*\"([^\"]+)\"", text):
                base = os.path.dirname(rel) if macro != "migrate" else crate.rstrip("/")
                target = os.path.normpath(os.path.join(base, arg))
                if not any(f == target or f.startswith(target + "/") for f in copied):
                    fail(f"{rel} embeds {target} ({macro}!), which the Docker build does not copy")
        if os.path.exists(os.path.join(REPO, crate, "build.rs")) and f"{crate}build.rs" not in copied:
            fail(f"Dockerfile: the build does not copy {crate}build.rs")

    # The runtime stage: the binary alone, a non-root user, a health check.
    copies = [i for i in runtime["instructions"] if i.keyword in ("COPY", "ADD")]
    if len(copies) != 1 or copies[0].flags.get("from") != build["name"]:
        fail("Dockerfile: the runtime stage should copy only the binary from the build stage")
    users = [i.args for i in runtime["instructions"] if i.keyword == "USER"]
    if not users or users[-1].split(":")[0] in ("root", "0"):
        fail("Dockerfile: the runtime stage should run as a non-root USER")
    health = [i for i in runtime["instructions"] if i.keyword == "HEALTHCHECK"]
    if not health or "healthcheck" not in exec_form(health[-1]):
        fail("Dockerfile: HEALTHCHECK should run `switchyard healthcheck`")
    env = dockerfile_env(runtime)
    db = env.get("SWITCHYARD_DATABASE_URL", "")
    declared = [v for i in runtime["instructions"] if i.keyword == "VOLUME" for v in json.loads(i.args)]
    if not any(under(db.removeprefix("sqlite://"), v) for v in declared):
        fail(f"Dockerfile: the database ({db}) is not on a VOLUME ({declared})")
    exposed = {int(p.split("/")[0]) for i in runtime["instructions"] if i.keyword == "EXPOSE" for p in i.args.split()}
    if not {8080, 8081, 9090} <= exposed:
        fail(f"Dockerfile: EXPOSE 8080 8081 9090 expected, got {sorted(exposed)}")
    print(f"build context: {len(files)} files, {size // 1024} KiB; the build copies {len(copied)}")
    return env


def load_yaml_toml(path):
    import tomllib

    with open(os.path.join(REPO, path), "rb") as f:
        return tomllib.load(f)


def check_compose(compose, image_env):
    services = compose["services"]
    gw = services["switchyard"]
    env = dict(image_env, **gw.get("environment", {}))
    admin = env.get("SWITCHYARD_ADMIN_LISTEN", "127.0.0.1:8081")
    metrics = env.get("SWITCHYARD_METRICS_LISTEN")
    if not metrics:
        fail("the gateway has no metrics listener (SWITCHYARD_METRICS_LISTEN)")
    admin_port, metrics_port = int(admin.rsplit(":", 1)[1]), int(metrics.rsplit(":", 1)[1])
    for host_ip, host_port, container_port in published(gw):
        if container_port == admin_port and host_ip != "127.0.0.1":
            fail("docker-compose.yml publishes the admin API beyond the host's 127.0.0.1")
        if container_port == metrics_port and host_port:
            fail("docker-compose.yml publishes the metrics listener: keep it on the compose network")
    if not env.get("SWITCHYARD_ADMIN_TOKEN"):
        fail("the admin API listens beyond loopback without SWITCHYARD_ADMIN_TOKEN")
    db_dir = os.path.dirname(env["SWITCHYARD_DATABASE_URL"].removeprefix("sqlite://"))
    named = set(compose.get("volumes", {}))
    for name, service in services.items():
        image = service.get("image")
        if image and (":" not in image or image.endswith(":latest")):
            fail(f"service {name}: pin the image to a version ({image})")
        if not image and "build" not in service:
            fail(f"service {name}: neither image nor build")
    state = {
        "switchyard": db_dir,
        "prometheus": flag(services["prometheus"].get("command", []), "storage.tsdb.path"),
        "grafana": "/var/lib/grafana",
    }
    for name, path in state.items():
        if not any(src in named and tgt == path for src, tgt, _ in volumes(services[name])):
            fail(f"service {name}: {path} is not on a named volume")
    return env


def check_shared_profile(compose, image_env):
    """The `shared` profile: a PostgreSQL service and at least two gateways
    whose database URL names it, each with its own node name and its cache
    file on a named volume of its own, the admin API on the host's loopback
    only, behind a token."""
    services = compose["services"]
    shared = {n: s for n, s in services.items() if "shared" in s.get("profiles", [])}
    databases = [n for n, s in shared.items() if s.get("image", "").startswith("postgres:")]
    gateways = {n: s for n, s in shared.items() if "build" in s}
    if len(databases) != 1 or len(gateways) < 2:
        fail(f"profile shared: one postgres service and two gateways expected, not {sorted(shared)}")
    named = set(compose.get("volumes", {}))
    names, caches = set(), set()
    for name, gw in gateways.items():
        env = dict(image_env, **gw.get("environment", {}))
        url = env.get("SWITCHYARD_DATABASE_URL", "")
        m = re.match(r"postgres://[^@]*@([^:/]+)(?::\d+)?/", url)
        if not m or m.group(1) != databases[0]:
            fail(f"service {name}: SWITCHYARD_DATABASE_URL {url!r} does not name the {databases[0]} service")
        if "postgres" not in gw.get("depends_on", {}):
            fail(f"service {name}: does not wait for postgres")
        node = env.get("SWITCHYARD_NODE_NAME")
        if not node or node in names:
            fail(f"service {name}: SWITCHYARD_NODE_NAME {node!r} is missing or not its own")
        names.add(node)
        cache = env.get("SWITCHYARD_CACHE_FILE", "")
        cache_dir = os.path.dirname(cache) if cache.startswith("/") else env.get("WORKDIR", "")
        volume = [src for src, tgt, _ in volumes(gw) if tgt == cache_dir and src in named]
        if not volume or volume[0] in caches:
            fail(f"service {name}: its cache file {cache!r} is not on a named volume of its own")
        caches.add(volume[0])
        if not env.get("SWITCHYARD_ADMIN_TOKEN"):
            fail(f"service {name}: the admin API listens beyond loopback without SWITCHYARD_ADMIN_TOKEN")
        admin_port = int(env.get("SWITCHYARD_ADMIN_LISTEN", "127.0.0.1:8081").rsplit(":", 1)[1])
        for host_ip, _, container_port in published(gw):
            if container_port == admin_port and host_ip != "127.0.0.1":
                fail(f"service {name}: publishes the admin API beyond the host's 127.0.0.1")
    print(f"profile shared: {databases[0]} and gateways {', '.join(sorted(gateways))} share one config")


def flag(command, name):
    for arg in command:
        if arg.startswith(f"--{name}="):
            return arg.split("=", 1)[1]
    fail(f"no --{name}= in {command}")


def bind_source(service, target):
    for src, tgt, _ in volumes(service):
        if tgt == target:
            return os.path.relpath(src, REPO)
    fail(f"nothing is mounted at {target}")


def check_grafana(compose):
    services = compose["services"]
    grafana = services["grafana"]
    prov_dir = bind_source(grafana, "/etc/grafana/provisioning")

    # Datasources: apiVersion 1, a list with name/type/access/url/uid.
    sources = []
    for doc in provisioning(prov_dir, "datasources"):
        if doc.get("apiVersion") != 1 or not isinstance(doc.get("datasources"), list):
            fail("datasource provisioning: apiVersion 1 and a datasources list expected")
        sources += doc["datasources"]
    allowed = {"name", "uid", "type", "access", "url", "isDefault", "editable", "jsonData", "orgId", "version"}
    uids = {}
    for ds in sources:
        if set(ds) - allowed:
            fail(f"datasource provisioning: unknown keys {sorted(set(ds) - allowed)}")
        for key in ("name", "uid", "type", "access", "url"):
            if not ds.get(key):
                fail(f"datasource provisioning: {key} missing")
        if ds["access"] not in ("proxy", "direct"):
            fail("datasource provisioning: access is proxy or direct")
        uids[ds["uid"]] = ds
    if sum(bool(ds.get("isDefault")) for ds in sources) != 1:
        fail("datasource provisioning: exactly one default datasource")
    prom = next(ds for ds in sources if ds["type"] == "prometheus")
    m = re.fullmatch(r"http://([\w-]+):(\d+)", prom["url"])
    if not m or m.group(1) not in services:
        fail(f"the Prometheus datasource URL {prom['url']} names no compose service")
    prom_listen = "0.0.0.0:9090"
    for arg in services[m.group(1)].get("command", []):
        if arg.startswith("--web.listen-address="):
            prom_listen = arg.split("=", 1)[1]
    if int(m.group(2)) != int(prom_listen.rsplit(":", 1)[1]):
        fail(f"the Prometheus datasource URL {prom['url']}: Prometheus listens on {prom_listen}")
    prom_config = bind_source(services[m.group(1)], flag(services[m.group(1)]["command"], "config.file"))
    scrape = load_yaml(prom_config)["global"]["scrape_interval"]
    if prom.get("jsonData", {}).get("timeInterval") != scrape:
        fail(f"the datasource's timeInterval should be Prometheus' scrape_interval ({scrape})")

    # Dashboard providers: apiVersion 1, providers of type file with a path
    # where compose mounts the dashboards.
    providers = []
    for doc in provisioning(prov_dir, "dashboards"):
        if doc.get("apiVersion") != 1 or not isinstance(doc.get("providers"), list):
            fail("dashboard provisioning: apiVersion 1 and a providers list expected")
        providers += doc["providers"]
    dashboards = []
    for p in providers:
        if p.get("type") != "file" or not p.get("name") or not p.get("options", {}).get("path"):
            fail("dashboard provisioning: each provider has a name, type file and options.path")
        src = bind_source(grafana, p["options"]["path"])
        dashboards += [os.path.join(src, f) for f in sorted(os.listdir(os.path.join(REPO, src))) if f.endswith(".json")]
    if not dashboards:
        fail("dashboard provisioning: no dashboard JSON where the provider looks")
    home = grafana.get("environment", {}).get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH")
    if home:
        src = bind_source(grafana, os.path.dirname(home))
        if not os.path.exists(os.path.join(REPO, src, os.path.basename(home))):
            fail(f"GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH {home}: no such file mounted")
    count = 0
    for path in dashboards:
        count += check_dashboard(path, uids)
    print(f"grafana: {len(uids)} datasource, {len(dashboards)} dashboard, {count} panels well-formed")
    return dashboards


def provisioning(prov_dir, kind):
    """The YAML documents Grafana reads from provisioning/<kind>/."""
    folder = os.path.join(REPO, prov_dir, kind)
    names = sorted(f for f in os.listdir(folder) if f.endswith((".yml", ".yaml")))
    if not names:
        fail(f"no provisioning file in {prov_dir}/{kind}")
    return [load_yaml(os.path.join(prov_dir, kind, f)) for f in names]


def check_dashboard(path, uids):
    with open(os.path.join(REPO, path), encoding="utf-8") as f:
        dash = json.load(f)
    where = os.path.basename(path)
    for key, kind in (("uid", str), ("title", str), ("schemaVersion", int), ("panels", list), ("templating", dict)):
        if not isinstance(dash.get(key), kind):
            fail(f"{where}: {key} missing or not a {kind.__name__}")
    variables = {"__rate_interval", "__interval"}
    for v in dash["templating"].get("list", []):
        if not v.get("name") or v.get("type") not in ("query", "custom", "interval", "datasource", "constant"):
            fail(f"{where}: template variable without name or with an unknown type: {v}")
        if v["type"] == "query":
            check_datasource(where, v.get("datasource"), uids, f"variable {v['name']}")
            if not v.get("query"):
                fail(f"{where}: variable {v['name']} has no query")
        variables.add(v["name"])
    ids, cells = set(), {}
    for p in dash["panels"]:
        pid, title = p.get("id"), p.get("title")
        if not isinstance(pid, int) or pid in ids:
            fail(f"{where}: panel {title!r}: id {pid!r} missing or not unique")
        ids.add(pid)
        if p.get("type") not in PANEL_TYPES or not title:
            fail(f"{where}: panel {pid}: unknown type {p.get('type')!r} or no title")
        g = p.get("gridPos", {})
        if not all(isinstance(g.get(k), int) for k in "xywh") or g["w"] <= 0 or g["h"] <= 0 or g["x"] < 0 or g["x"] + g["w"] > 24:
            fail(f"{where}: panel {title!r}: gridPos must be x, y, w, h on the 24-column grid: {g}")
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                if (x, y) in cells:
                    fail(f"{where}: panels {title!r} and {cells[(x, y)]!r} overlap")
                cells[(x, y)] = title
        check_datasource(where, p.get("datasource"), uids, f"panel {title!r}")
        targets = p.get("targets", [])
        if not targets:
            fail(f"{where}: panel {title!r} has no query")
        refs = [t.get("refId") for t in targets]
        if len(set(refs)) != len(refs) or not all(refs):
            fail(f"{where}: panel {title!r}: refIds missing or repeated")
        for t in targets:
            check_datasource(where, t.get("datasource", p["datasource"]), uids, f"panel {title!r} {t['refId']}")
            if not t.get("expr", "").strip():
                fail(f"{where}: panel {title!r} {t['refId']}: no expr")
            for used in re.findall(r"\$\{?(\w+)", t["expr"]):
                if used not in variables and used not in GRAFANA_BUILTIN_VARS:
                    fail(f"{where}: panel {title!r}: ${used} is not a variable of the dashboard")
    for a in dash.get("annotations", {}).get("list", []):
        if not a.get("builtIn"):
            check_datasource(where, a.get("datasource"), uids, f"annotation {a.get('name')}")
    return len(ids)


def check_datasource(where, ds, uids, what):
    if not isinstance(ds, dict) or ds.get("uid") not in uids:
        fail(f"{where}: {what}: datasource {ds} is not a provisioned one ({sorted(uids)})")
    if ds.get("type") != uids[ds["uid"]]["type"]:
        fail(f"{where}: {what}: datasource type {ds.get('type')} but {ds['uid']} is {uids[ds['uid']]['type']}")


def check_readme(compose):
    readme = read("README.md")
    blocks = re.findall(r"```yaml\n(.*?)```", readme, re.S)
    readme_rules = [yaml.safe_load(b) for b in blocks if "groups:" in b]
    if len(readme_rules) != 1:
        fail("README: one yaml block of alert rules expected")
    alerts = load_yaml(bind_source(compose["services"]["prometheus"], "/etc/prometheus/alerts.yml"))

    def rules(doc):
        return [
            (r["alert"], " ".join(r["expr"].split()), r.get("for"))
            for g in doc["groups"]
            for r in g["rules"]
        ]

    if rules(readme_rules[0]) != rules(alerts):
        fail("README's alert rules and deploy/prometheus/alerts.yml differ (alert, expr, for)")
    for name, service in compose["services"].items():
        if service.get("image") and service["image"] not in readme:
            fail(f"README does not name {service['image']} (service {name})")
    print(f"README: its {len(rules(alerts))} alert rules are alerts.yml's; it names the pinned images")


def main():
    with open(sys.argv[1], encoding="utf-8") as f:
        compose = yaml.safe_load(f)
    image_env = check_build_context()
    check_compose(compose, image_env)
    check_shared_profile(compose, image_env)
    check_grafana(compose)
    check_readme(compose)


if __name__ == "__main__":
    main()
