# syntax=docker/dockerfile:1
#
# The Switchyard image: one static-ish binary on Debian slim, run as a
# non-root user. The stack in docker-compose.yml builds it; on its own:
#
#   docker build -t switchyard .
#   docker run -p 8080:8080 switchyard
#
# The same image runs the demo backends (`switchyard demo-backend ...`).

# --- build -----------------------------------------------------------------
# Debian bookworm on both sides, so the binary links against the glibc it
# runs with.
FROM rust:1.95-bookworm AS build
WORKDIR /src

# Dependencies first, in a layer of their own: the workspace manifests and
# Cargo.lock with empty stand-ins for the sources. Editing the code leaves
# this layer cached; only changing a manifest or Cargo.lock rebuilds it.
COPY Cargo.toml Cargo.lock ./
COPY control-plane/Cargo.toml control-plane/
COPY data-plane/Cargo.toml data-plane/
RUN mkdir -p src control-plane/src data-plane/src data-plane/benches \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs control-plane/src/lib.rs data-plane/src/lib.rs \
             data-plane/benches/hot_path.rs \
    && cargo build --release --locked --bin switchyard \
    && rm -rf src control-plane/src data-plane/src data-plane/benches

# The real sources. migrations/, openapi/openapi.yaml and the dashboard's
# files (control-plane/ui/) are compiled into
# the binary (sqlx::migrate!, include_str!). The stand-ins' build is newer
# than the copied files' timestamps, so the entry points are touched to make
# cargo build the workspace's own crates again.
COPY migrations migrations
COPY openapi openapi
COPY src src
COPY control-plane/src control-plane/src
COPY control-plane/ui control-plane/ui
COPY data-plane/src data-plane/src
COPY data-plane/benches data-plane/benches
RUN touch src/main.rs src/lib.rs control-plane/src/lib.rs data-plane/src/lib.rs \
    && cargo build --release --locked --bin switchyard

# --- runtime ---------------------------------------------------------------
FROM debian:bookworm-slim

# A system user of its own; the data directory is its home and a volume.
RUN groupadd --system --gid 10001 switchyard \
    && useradd --system --uid 10001 --gid switchyard --no-create-home \
       --home-dir /var/lib/switchyard --shell /usr/sbin/nologin switchyard \
    && install -d -o switchyard -g switchyard -m 0750 /var/lib/switchyard

# The binary is the only thing taken from the build: no TLS roots or SQLite
# library are needed (webpki roots and SQLite are compiled in).
COPY --from=build /src/target/release/switchyard /usr/local/bin/switchyard

# Defaults for a container: the proxy and the metrics listener (/metrics,
# /healthz, /readyz: no admin API, so no token) on every interface, the
# database on the volume, JSON logs. The admin API stays on the container's
# loopback unless SWITCHYARD_ADMIN_LISTEN says otherwise (e.g. :8081), which
# then needs SWITCHYARD_ADMIN_TOKEN: see docker-compose.yml.
ENV SWITCHYARD_PROXY_LISTEN=:8080 \
    SWITCHYARD_METRICS_LISTEN=:9090 \
    SWITCHYARD_DATABASE_URL=sqlite:///var/lib/switchyard/switchyard.db \
    SWITCHYARD_LOG_FORMAT=json

USER 10001:10001
WORKDIR /var/lib/switchyard
VOLUME ["/var/lib/switchyard"]

# 8080 proxy, 8081 admin API (once it listens beyond loopback), 9090 metrics.
EXPOSE 8080 8081 9090

# The binary checks itself: no curl or wget in the image. It asks the
# metrics listener, so this holds while SWITCHYARD_METRICS_LISTEN is :9090.
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
    CMD ["switchyard", "healthcheck", "--timeout-ms", "3000", "http://127.0.0.1:9090/healthz"]

# SIGTERM drains in-flight requests (SWITCHYARD_DRAIN_SECONDS, default 30).
STOPSIGNAL SIGTERM
ENTRYPOINT ["switchyard"]
