"""What the stack checks share: reading the Dockerfile, .dockerignore, the
resolved compose file (`docker-compose config`), and turning a container's
view of the stack (service names, container ports and paths) into this
machine's (127.0.0.1, free ports, temporary directories).

Used by files.py (static checks) and e2e.py (the stack as processes).
"""

import os
import re
import shlex
import socket
import sys
import time
import urllib.error
import urllib.request

import yaml

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def fail(msg):
    sys.exit(f"stack: FAILED: {msg}")


OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def log(msg):
    print(f"[stack {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def request(method, url, body=None, headers=None, timeout=10):
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with OPENER.open(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def wait_until(what, check, seconds):
    """Poll `check` (-> (done, detail)) until done or the deadline."""
    deadline = time.monotonic() + seconds
    detail = None
    while time.monotonic() < deadline:
        try:
            done, detail = check()
        except OSError as e:
            done, detail = False, str(e)
        if done:
            return detail
        time.sleep(0.25)
    fail(f"{what}: not within {seconds} s (last: {detail})")


def read(path):
    with open(os.path.join(REPO, path), encoding="utf-8") as f:
        return f.read()


def load_yaml(path):
    with open(os.path.join(REPO, path), encoding="utf-8") as f:
        return yaml.safe_load(f)


# --- Dockerfile -----------------------------------------------------------------


class Instruction:
    def __init__(self, keyword, args, flags):
        self.keyword = keyword  # upper case: FROM, COPY, ENV, ...
        self.args = args  # the text after the keyword and its --flags
        self.flags = flags  # {"from": "build", ...}

    def __repr__(self):
        return f"{self.keyword} {self.args}"


def dockerfile_stages(text):
    """The Dockerfile as a list of stages, each {"name", "base", "instructions"}.
    Continuation lines are joined; comments and parser directives dropped."""
    logical, current = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#") and not current:
            continue
        if stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
            continue
        current += line
        if current.strip():
            logical.append(current.strip())
        current = ""
    if current.strip():
        logical.append(current.strip())
    stages = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        flags = {}
        rest = rest.strip()
        while keyword in ("COPY", "ADD", "RUN", "HEALTHCHECK") and rest.startswith("--"):
            flag, _, rest = rest.partition(" ")
            name, _, value = flag[2:].partition("=")
            flags[name] = value
            rest = rest.strip()
        ins = Instruction(keyword, rest, flags)
        if keyword == "FROM":
            words = rest.split()
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append({"name": name, "base": words[0], "instructions": []})
        elif not stages:
            fail(f"Dockerfile: {keyword} before the first FROM")
        stages[-1]["instructions"].append(ins)
    return stages


def dockerfile_env(stage):
    """The ENV of a stage, as the container gets it (KEY=VALUE forms only)."""
    env = {}
    for ins in stage["instructions"]:
        if ins.keyword == "ENV":
            for word in shlex.split(ins.args):
                key, eq, value = word.partition("=")
                if not eq:
                    fail(f"Dockerfile: write ENV as KEY=VALUE ({ins})")
                env[key] = value
    return env


def exec_form(ins):
    """The JSON (exec) form of CMD/ENTRYPOINT/HEALTHCHECK CMD as a list."""
    import json

    args = ins.args
    if ins.keyword == "HEALTHCHECK":
        if not args.startswith("CMD "):
            fail(f"Dockerfile: HEALTHCHECK without CMD ({ins})")
        args = args[4:].strip()
    try:
        value = json.loads(args)
    except ValueError:
        fail(f"Dockerfile: {ins.keyword} in the exec form (a JSON list) please: {ins}")
    return value


# --- .dockerignore -----------------------------------------------------------------


def dockerignore(text):
    """(pattern, excluded) pairs, in order; the last match decides."""
    rules = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        excluded = not line.startswith("!")
        pattern = line.lstrip("!").strip().strip("/")
        pattern = os.path.normpath(pattern)
        rules.append((pattern, excluded))
    return rules


def _match(pattern, path):
    # Docker's patterns are Go filepath.Match patterns plus `**` for any
    # number of directories; `*` stops at "/".
    regex = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            regex += "(?:.*/)?"
            i += 3
        elif pattern.startswith("**", i):
            regex += ".*"
            i += 2
        elif pattern[i] == "*":
            regex += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            regex += "[^/]"
            i += 1
        else:
            regex += re.escape(pattern[i])
            i += 1
    return re.fullmatch(regex, path) is not None


def ignored(rules, path):
    """Whether .dockerignore keeps `path` (relative, "/"-separated) out of the
    build context: a path is out if it or a directory above it matches."""
    parts = path.split("/")
    out = False
    for pattern, excluded in rules:
        for n in range(1, len(parts) + 1):
            if _match(pattern, "/".join(parts[:n])):
                out = excluded
                break
    return out


def build_context(rules):
    """Every file Docker would send as the build context of the repository,
    relative paths, and their total size in bytes."""
    files, size = [], 0
    has_exceptions = any(not excluded for _, excluded in rules)
    for root, dirs, names in os.walk(REPO):
        rel_root = os.path.relpath(root, REPO)
        rel_root = "" if rel_root == "." else rel_root + "/"
        if not has_exceptions:
            dirs[:] = [d for d in dirs if not ignored(rules, rel_root + d)]
        for name in names:
            rel = rel_root + name
            if not ignored(rules, rel):
                files.append(rel)
                size += os.path.getsize(os.path.join(root, name))
    return files, size


# --- compose -----------------------------------------------------------------------


def volumes(service):
    """The service's mounts as (source, target, read_only): a bind mount's
    source is an absolute path, a named volume's its name."""
    mounts = []
    for v in service.get("volumes", []):
        if isinstance(v, dict):
            mounts.append((v["source"], v["target"], v.get("read_only", False)))
            continue
        parts = v.split(":")
        mode = parts[2] if len(parts) > 2 else "rw"
        mounts.append((parts[0], parts[1], "ro" in mode.split(",")))
    return mounts


def published(service):
    """The service's published ports as (host_ip, host_port, container_port)."""
    out = []
    for p in service.get("ports", []):
        if isinstance(p, dict):
            out.append((p.get("host_ip", "0.0.0.0"), int(p["published"]), int(p["target"])))
            continue
        spec = str(p).split("/")[0]
        parts = spec.split(":")
        if len(parts) == 3:
            out.append((parts[0], int(parts[1]), int(parts[2])))
        elif len(parts) == 2:
            out.append(("0.0.0.0", int(parts[0]), int(parts[1])))
        else:
            out.append(("", 0, int(parts[0])))  # not published to the host
    return out


def listen_port(addr):
    """The port of a listen address as the binary reads it (`:8080`,
    `0.0.0.0:8080`, `host:8080`)."""
    return int(addr.rsplit(":", 1)[1])


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Addresses:
    """Where each (service, container port) of the stack is on this machine:
    127.0.0.1 and a free port. Rewrites text written for the compose network
    (`backend-a:9001`), for a service's own loopback (`127.0.0.1:9090`
    inside it) or for the host's published ports (`localhost:8080`)."""

    def __init__(self):
        self.ports = {}  # (service, container port) -> local port

    def add(self, service, container_port):
        key = (service, int(container_port))
        if key not in self.ports:
            self.ports[key] = free_port()
        return self.ports[key]

    def local(self, service, container_port):
        try:
            return self.ports[(service, int(container_port))]
        except KeyError:
            fail(f"nothing of the stack listens on {service}:{container_port}")

    def network(self, text):
        """`service:port` of the compose network -> `127.0.0.1:local`."""
        for (service, port), local in self.ports.items():
            text = re.sub(rf"(?<![\w.-]){re.escape(service)}:{port}(?!\d)", f"127.0.0.1:{local}", text)
        return text

    def inside(self, service, text):
        """The service's own loopback (`127.0.0.1:9090` in its healthcheck)."""
        for (name, port), local in self.ports.items():
            if name == service:
                text = re.sub(rf"(?:127\.0\.0\.1|localhost):{port}(?!\d)", f"127.0.0.1:{local}", text)
        return text

    def host(self, compose, text):
        """The host's published ports (`localhost:8080`, `127.0.0.1:8081`)."""
        table = {}
        for name, service in compose["services"].items():
            for _, host_port, container_port in published(service):
                if host_port and (name, container_port) in self.ports:
                    table[host_port] = self.ports[(name, container_port)]

        def swap(m):
            port = int(m.group(2))
            if port not in table:
                fail(f"{m.group(0)}: no service that runs here publishes port {port}")
            return f"127.0.0.1:{table[port]}"

        return re.sub(r"(localhost|127\.0\.0\.1):(\d+)", swap, text)


def under(path, root):
    return path == root or path.startswith(root.rstrip("/") + "/")
