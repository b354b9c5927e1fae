# syntax=docker/dockerfile:1
#
# The drctl container image: the drctl binary with the PostgreSQL client programs it drives
# (psql, pg_basebackup, pg_dump, pg_restore, pg_amcheck) and the server binaries drills and
# `restore --start` run, of every supported major version (13 to 18, PGDG's packages), running
# as an unprivileged user under tini. drctl picks each program by the server's version.
#
#   docker build -t ghcr.io/acme/drctl:0.1.0 .
#   docker run --rm ghcr.io/acme/drctl:0.1.0 backup --policy /etc/drctl/policies/rds-orders.yaml --json
#
# The arguments of `docker run` (and the `args` of a Kubernetes container) are drctl's arguments:
# the entrypoint is tini, then drctl. tini is PID 1: it forwards SIGTERM to drctl (so `drctl
# schedule` lets a running job finish) and reaps the background workers drctl starts.
#
# The same binary also runs inside the postgres:15-bookworm image (k8s/postgres-statefulset.yaml
# copies it there for archive_command / restore_command): both stages below are Debian bookworm,
# so the glibc it links against is the one it finds there.

FROM rust:1.95-bookworm AS build
WORKDIR /src
# Cargo.toml declares `[[bench]] name = "repo"`: cargo will not read the manifest without
# benches/repo.rs, even though a release build of the binary never compiles it.
COPY Cargo.toml Cargo.lock ./
COPY benches/ benches/
COPY src/ src/
# The cache mounts keep the registry and the build directory between builds (BuildKit); the binary
# is copied out of the cached target directory in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked \
    && install -D -m 0755 target/release/drctl /out/drctl

FROM debian:bookworm-slim AS runtime
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="drctl" \
      org.opencontainers.image.description="Backup and disaster recovery for PostgreSQL-backed services: encrypted, deduplicated snapshots in S3, WAL archiving, point-in-time restore, cross-region copies" \
      org.opencontainers.image.source="https://github.com/acme/drctl" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.base.name="debian:bookworm-slim"
# The PostgreSQL versions whose programs the image carries (PG_VERSIONS="16 17" for a smaller
# image that serves those servers only). For each, from PGDG's repository (apt.postgresql.org):
# postgresql-client-N: psql, pg_basebackup, pg_dump, pg_restore, pg_amcheck. Clients must be at
#   least the server's version: pg_basebackup and pg_dump refuse newer servers.
# postgresql-N: the server binaries of that version (postgres, initdb, pg_controldata,
#   pg_checksums) that a drill's scratch cluster and `restore --start` run: a data directory
#   runs only on its own major version. No cluster is created at install.
ARG PG_VERSIONS="13 14 15 16 17 18"
ADD --chmod=644 https://www.postgresql.org/media/keys/ACCC4CF8.asc /usr/share/postgresql-common/pgdg/apt.postgresql.org.asc
RUN mkdir -p /etc/postgresql-common/createcluster.d \
    && echo 'create_main_cluster = false' > /etc/postgresql-common/createcluster.d/drctl.conf \
    && apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates tini \
    && echo "deb [signed-by=/usr/share/postgresql-common/pgdg/apt.postgresql.org.asc] https://apt.postgresql.org/pub/repos/apt bookworm-pgdg main" \
        > /etc/apt/sources.list.d/pgdg.list \
    && apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        $(for v in $PG_VERSIONS; do echo "postgresql-client-$v postgresql-$v"; done) \
    && rm -rf /var/lib/apt/lists/*
# drctl finds each version's programs in /usr/lib/postgresql/N/bin itself; PATH stays Debian's.
ENV HOME=/home/drctl \
    DRCTL_LOG_FORMAT=json
RUN groupadd --system --gid 10001 drctl \
    && useradd --system --uid 10001 --gid 10001 --home-dir /home/drctl --create-home \
        --shell /usr/sbin/nologin drctl
COPY --from=build /out/drctl /usr/local/bin/drctl
# `drctl schedule --listen 0.0.0.0:9187`: /metrics and /healthz.
EXPOSE 9187
# Numeric, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd. No WORKDIR in
# the home directory: a pod may run the image as another user (the api-db sidecar runs as
# postgres, uid 999, to read PGDATA), who could not enter it; the working directory stays /.
USER 10001:10001
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/drctl"]
CMD ["--help"]
