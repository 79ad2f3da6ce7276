"""The compose stack as processes on this machine, which has no Docker
engine: `python3 e2e.py COMPOSE_RESOLVED SWITCHYARD_BINARY`.

Every service is started from what docker-compose.yml (resolved by
`docker-compose config`) and the Dockerfile say, rewritten only where a
container differs from a process here:

- addresses: a service's container ports become free ports on 127.0.0.1,
  in its listen settings, its command, its healthcheck and in every file it
  mounts (`backend-a:9001` in deploy/bootstrap.json, `switchyard:9090` in
  prometheus.yml); the host's published ports in README's commands;
- paths: a mount's target becomes a directory under a temporary root (a
  named volume an empty one, a bind mount a copy of its source).

The gateway runs with the image's ENV plus the compose file's environment,
the demo backends with their compose commands, Prometheus (Debian's) with
its compose command-line flags; each waits for what it depends on to pass
its healthcheck, run as the compose file or the image writes it. Grafana
cannot run here: files.py checks its files.

Then, with traffic flowing: the split follows the bootstrap weights; the
commands of README's "Full stack" section are replayed (a route added, a
weight changed, a backend stopped and started), each followed by what the
README says to watch; every query of the Grafana dashboard must return
data (a finite value) from Prometheus, every variable values; the alert
rules load. Processes are stopped by PID; the gateway must exit 0.
"""

import http.client
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading

import yaml

from common import (
    Addresses,
    dockerfile_env,
    dockerfile_stages,
    exec_form,
    fail,
    listen_port,
    log,
    read,
    request,
    volumes,
    wait_until,
)

# Images run as the Debian program of the same software (PostgreSQL: the
# server .ci/postgres.sh runs, in $SWITCHYARD_TEST_POSTGRES).
PROGRAMS = {"prom/prometheus": "prometheus", "postgres": "postgres"}
NOT_RUN = {"grafana/grafana-oss": "no Grafana package here: files.py checks its files"}
# The gateway's listeners when no variable names them (switchyard --help).
LISTEN_DEFAULTS = {"SWITCHYARD_PROXY_LISTEN": "0.0.0.0:8080", "SWITCHYARD_ADMIN_LISTEN": "127.0.0.1:8081"}


class Stack:
    def __init__(self, compose, binary, work, profile=None):
        self.compose, self.binary, self.work = compose, binary, work
        everything = compose["services"]
        if profile is None:
            # What `docker compose up` starts: the services without a profile.
            self.services = {n: s for n, s in everything.items() if not s.get("profiles")}
        else:
            # The profile's services and what they depend on (shared.py).
            wanted = [n for n, s in everything.items() if profile in s.get("profiles", [])]
            while True:
                more = [d for n in wanted for d in everything[n].get("depends_on", {}) if d not in wanted]
                if not more:
                    break
                wanted += more
            self.services = {n: s for n, s in everything.items() if n in wanted}
        stages = dockerfile_stages(read("Dockerfile"))
        self.runtime = stages[-1]
        self.image_env = dockerfile_env(self.runtime)
        self.addr = Addresses()
        self.procs = {}
        self.healthy = set()
        self.env = {}  # the gateway's environment as the container has it
        self.claim_ports()

    # --- what each service is ----------------------------------------------------

    def built(self, name):
        return "build" in self.services[name]

    def claim_ports(self):
        for name, svc in self.services.items():
            if self.built(name):
                args = svc.get("command", [])
                if "--port" in args:  # demo-backend
                    self.addr.add(name, args[args.index("--port") + 1])
                else:  # the gateway
                    env = self.declared(name)
                    for key, value in env.items():
                        if key.endswith("_LISTEN"):
                            self.addr.add(name, listen_port(value))
            elif self.program(name) == "prometheus":
                self.addr.add(name, listen_port(self.flag(name, "web.listen-address", "0.0.0.0:9090")))
            elif self.program(name) == "postgres":
                self.addr.ports[(name, 5432)] = external_postgres()[1]

    def declared(self, name):
        """A built service's environment as the container has it: the
        image's ENV, then the compose file's (the gateway's listeners at
        their defaults where neither names them)."""
        env = dict(self.image_env, **self.services[name].get("environment", {}))
        if "--port" not in self.services[name].get("command", []):
            env = dict(LISTEN_DEFAULTS, **env)
        return env

    def program(self, name):
        image = self.services[name].get("image", "")
        return PROGRAMS.get(image.split(":")[0])

    def flag(self, name, flag, default=None):
        for arg in self.services[name].get("command", []):
            if arg.startswith(f"--{flag}="):
                return arg.split("=", 1)[1]
        return default

    def root(self, name):
        return os.path.join(self.work, name)

    def mount(self, name):
        """Lay out the service's mounts under its root: named volumes empty,
        bind mounts copied with their addresses rewritten."""
        for src, tgt, _ in volumes(self.services[name]):
            dest = self.root(name) + tgt
            if not os.path.isabs(src):
                os.makedirs(dest, exist_ok=True)
                continue
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            if os.path.isdir(src):
                shutil.copytree(src, dest, dirs_exist_ok=True)
                continue
            with open(src, encoding="utf-8") as f:
                text = f.read()
            with open(dest, "w", encoding="utf-8") as f:
                f.write(self.addr.network(text))

    def path(self, name, value):
        """Container paths in a value (under a mount target) -> under the root."""
        targets = sorted((t for _, t, _ in volumes(self.services[name])), key=len, reverse=True)
        for tgt in targets:
            if tgt in value:
                return re.sub(rf"{re.escape(tgt)}(?=/|$)", self.root(name) + tgt, value)
        return value

    # --- starting ------------------------------------------------------------------

    def argv(self, name):
        svc = self.services[name]
        if self.built(name):
            entry = exec_form(next(i for i in self.runtime["instructions"] if i.keyword == "ENTRYPOINT"))
            if entry != ["switchyard"]:
                fail(f"Dockerfile: ENTRYPOINT {entry}: the stack test expects [\"switchyard\"]")
            args = list(svc.get("command", []))
            for i, arg in enumerate(args):
                if i and args[i - 1] == "--port":
                    args[i] = str(self.addr.local(name, arg))
                elif i and args[i - 1] == "--host":
                    args[i] = "127.0.0.1"
            return [self.binary] + args
        program = self.program(name)
        args = []
        for arg in svc.get("command", []):
            if not arg.startswith("--web.listen-address="):
                args.append(self.path(name, arg))
        port = self.addr.local(name, listen_port(self.flag(name, "web.listen-address", "0.0.0.0:9090")))
        return [program] + args + [f"--web.listen-address=127.0.0.1:{port}"]

    def environment(self, name):
        env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHYARD_")}
        if not self.built(name):
            return env
        declared = self.declared(name)
        known = set(re.findall(r"\[env: (\w+)", self.help()))
        for key, value in declared.items():
            if key.startswith("SWITCHYARD_") and key not in known:
                fail(f"{key} is set for {name} but `switchyard --help` knows no such variable")
            local = value
            if key.endswith("_LISTEN"):
                # A demo backend has the image's variables too, and no use for them.
                if (name, listen_port(value)) in self.addr.ports:
                    local = f"127.0.0.1:{self.addr.local(name, listen_port(value))}"
            else:
                # A database URL names the postgres service: where it is here.
                local = self.addr.network(self.path(name, value))
            env[key] = local
            shown = value if local == value else f"{value} -> {local}"
            shown = re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", shown)
            if "TOKEN" not in key and self.services[name].get("environment"):
                log(f"  {name}: {key}={shown}")
        if name == "switchyard":
            self.env = declared
        return env

    def help(self):
        return subprocess.run([self.binary, "--help"], capture_output=True, text=True, check=True).stdout

    def start(self, name):
        if self.program(name) == "postgres":
            self.provision_postgres(name)
            return
        self.mount(name)
        workdir = self.root(name)
        if self.built(name):
            for ins in self.runtime["instructions"]:
                if ins.keyword == "WORKDIR":
                    workdir = self.root(name) + ins.args
            os.makedirs(workdir, exist_ok=True)
        argv, env = self.argv(name), self.environment(name)
        log(f"start {name}: {' '.join(argv)}")
        out = open(os.path.join(self.work, f"{name}.log"), "ab")
        self.procs[name] = subprocess.Popen(argv, env=env, cwd=workdir, stdout=out, stderr=subprocess.STDOUT)

    def provision_postgres(self, name):
        """What the postgres image does on an empty volume: make the user
        and database of its POSTGRES_* environment (on the external server,
        as its superuser)."""
        env = self.services[name].get("environment", {})
        user, password = env.get("POSTGRES_USER", "postgres"), env["POSTGRES_PASSWORD"]
        db = env.get("POSTGRES_DB", user)
        superuser = os.environ["SWITCHYARD_TEST_POSTGRES"]
        for sql in (
            f"DROP DATABASE IF EXISTS {db} WITH (FORCE)",
            f"DROP ROLE IF EXISTS {user}",
            f"CREATE ROLE {user} LOGIN PASSWORD '{password}'",
            f"CREATE DATABASE {db} OWNER {user}",
        ):
            subprocess.run(["psql", "-q", "-v", "ON_ERROR_STOP=1", superuser, "-c", sql], check=True,
                           capture_output=True)
        log(f"{name}: user {user} and database {db} made on the server of .ci/postgres.sh")

    def healthcheck(self, name):
        """The service's healthcheck as compose (or the image) writes it."""
        test = self.services[name].get("healthcheck", {}).get("test")
        if test is None and self.built(name):
            health = [i for i in self.runtime["instructions"] if i.keyword == "HEALTHCHECK"]
            test = ["CMD"] + exec_form(health[-1]) if health else None
        if not test:
            return None
        if test[0] != "CMD":
            fail(f"{name}: healthcheck {test}: the exec form (CMD) please")
        argv = [self.addr.inside(name, a) for a in test[1:]]
        if argv[0] == "pg_isready":
            host, port = external_postgres()
            argv += ["-h", host, "-p", str(port)]
            return lambda: subprocess.run(argv, capture_output=True).returncode == 0
        if argv[0] == "switchyard":
            return lambda: subprocess.run([self.binary] + argv[1:], capture_output=True).returncode == 0
        if argv[0] in ("wget", "curl"):
            url = next(a for a in argv if a.startswith("http"))
            return lambda: 200 <= request("GET", url, timeout=3)[0] < 300
        fail(f"{name}: healthcheck {test}: the stack test cannot run {argv[0]}")

    def wait_healthy(self, name):
        check = self.healthcheck(name)
        if check is None or name in self.healthy:
            return

        def probe():
            if name in self.procs and self.procs[name].poll() is not None:
                fail(f"{name} exited ({self.procs[name].returncode}): see its log")
            return check(), "healthcheck failing"

        wait_until(f"{name} healthy", probe, 60)
        self.healthy.add(name)
        log(f"{name} is healthy (its healthcheck passes)")

    def up(self):
        started = set()

        def bring(name):
            if name in started:
                return
            for dep, cond in self.services[name].get("depends_on", {}).items():
                bring(dep)
                if cond.get("condition") == "service_healthy":
                    self.wait_healthy(dep)
            started.add(name)
            image = self.services[name].get("image", "").split(":")[0]
            if image in NOT_RUN:
                log(f"not run: {name} ({NOT_RUN[image]})")
                return
            self.start(name)

        for name in self.services:
            bring(name)
        for name in self.procs:
            self.wait_healthy(name)

    def stop(self, name):
        self.healthy.discard(name)
        proc = self.procs.pop(name)
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            fail(f"{name} did not stop on SIGTERM within 15 s")

    def down(self):
        codes = {}
        for name in reversed(list(self.procs)):
            proc = self.procs.pop(name)
            proc.send_signal(signal.SIGTERM)
            try:
                codes[name] = proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                codes[name] = proc.wait()
        return codes


def external_postgres():
    """Host and port of the server .ci/postgres.sh started."""
    url = os.environ.get("SWITCHYARD_TEST_POSTGRES")
    if not url:
        fail("the postgres service needs a server: run this under .ci/postgres.sh")
    m = re.match(r"postgres://[^@]*@([^:/]+):(\d+)/", url)
    return m.group(1), int(m.group(2))


class Traffic(threading.Thread):
    """Requests to the proxy, about 50 a second, on one keep-alive connection."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.port, self.stopping, self.statuses = port, threading.Event(), {}

    def run(self):
        conn = None
        n = 0
        while not self.stopping.is_set():
            n += 1
            try:
                conn = conn or http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                conn.request("GET", f"/item/{n % 10}?n={n}")
                resp = conn.getresponse()
                resp.read()
                self.statuses[resp.status] = self.statuses.get(resp.status, 0) + 1
            except (OSError, http.client.HTTPException):
                self.statuses["error"] = self.statuses.get("error", 0) + 1
                conn = None
            self.stopping.wait(0.02)


def main():
    compose_file, binary = sys.argv[1], os.path.abspath(sys.argv[2])
    with open(compose_file, encoding="utf-8") as f:
        compose = yaml.safe_load(f)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("stack: stopped (SIGTERM)"))
    work = tempfile.mkdtemp(prefix="switchyard-stack-")
    stack = Stack(compose, binary, work)
    traffic = None
    ok = False
    try:
        stack.up()
        from checks import Checks

        proxy = stack.addr.local("switchyard", listen_port(stack.env.get("SWITCHYARD_PROXY_LISTEN", ":8080")))
        traffic = Traffic(proxy)
        traffic.start()
        checks = Checks(stack)
        checks.run()
        traffic.stopping.set()
        traffic.join(timeout=15)
        if set(traffic.statuses) != {200}:
            fail(f"the route over both backends answered other than 200: {traffic.statuses}")
        log(f"traffic: {traffic.statuses[200]} requests, every one answered 200")
        checks.restart_keeps_config()
        ok = True
    finally:
        if traffic and not ok:
            traffic.stopping.set()
            traffic.join(timeout=15)
            log(f"traffic: {dict(sorted(traffic.statuses.items(), key=str))}")
        codes = stack.down()
        if not ok:
            for name in os.listdir(work):
                if name.endswith(".log"):
                    with open(os.path.join(work, name), encoding="utf-8", errors="replace") as f:
                        lines = [ln for ln in f.read().splitlines() if "switchyard::access" not in ln]
                    tail = lines[-25:]
                    print(f"== {name} (last lines)\n" + "\n".join(tail), file=sys.stderr)
        shutil.rmtree(work, ignore_errors=True)
    if codes.get("switchyard") != 0:
        fail(f"the gateway exited {codes.get('switchyard')} on SIGTERM, not 0")
    log("stack: all passed; the gateway drained and exited 0")


if __name__ == "__main__":
    main()
