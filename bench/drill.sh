#!/usr/bin/env bash
# Measures a DR drill's RTO and RPO on pgbench data, as production runs: a PostgreSQL 15 primary
# with data checksums archiving through `drctl wal-push --async` with archive_timeout = 60s,
# heartbeats every 10 s, pgbench writing at a steady rate; after a base backup and LOAD seconds of
# writes, `drctl drill --latest` restores into a scratch cluster, verifies it (pg_checksums,
# pg_amcheck --heapallindexed, databases and roles, a row-count check) and measures RTO and RPO.
#
#   bash bench/drill.sh            # SCALE=100 LOAD=240 RATE=200 CLIENTS=4
#
# Prints the drill's record (phases, RTO, RPO) and a summary line. Run as root (PostgreSQL runs as
# the `postgres` user); everything lives in one temporary directory, removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
scale=${SCALE:-100} load=${LOAD:-240} rate=${RATE:-200} clients=${CLIENTS:-4}
pgbin=/usr/lib/postgresql/15/bin
cargo build --release --locked --quiet
work=$(mktemp -d /tmp/drctl-drill-bench.XXXXXX)
chmod 755 "$work"
mkdir "$work/bin" && cp target/release/drctl "$work/bin/" && drctl="$work/bin/drctl"
pg() { runuser -u postgres -- "$@"; }
cleanup() {
  [ -n "${beats:-}" ] && kill "$beats" 2>/dev/null
  [ -f "$work/pgdata/postmaster.pid" ] && pg $pgbin/pg_ctl -D "$work/pgdata" -m fast stop >/dev/null 2>&1
  rm -rf "$work"
}
trap cleanup EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
sql() { $pgbin/psql -X -At -v ON_ERROR_STOP=1 -h 127.0.0.1 -U postgres -p "$port" -d postgres -c "$1"; }

export DRCTL_REPO="$work/repo" DRCTL_PASSWORD="bench passphrase"
"$drctl" --quiet init
"$drctl" --quiet key add --new-key-file "$work/repo.key"
chown -R postgres: "$work/repo" "$work/repo.key"
mkdir "$work/pgdata" "$work/logs" && chown postgres: "$work/pgdata" "$work/logs"
pg $pgbin/initdb -U postgres -A trust --data-checksums --no-sync -D "$work/pgdata" >/dev/null
cat >> "$work/pgdata/postgresql.conf" <<CONF
port = $port
listen_addresses = '127.0.0.1'
unix_socket_directories = ''
wal_level = replica
max_wal_size = 4GB
archive_mode = on
archive_timeout = 60s
archive_command = 'DRCTL_REPO=$work/repo DRCTL_KEY_FILE=$work/repo.key $drctl wal-push --async %p'
CONF
pg $pgbin/pg_ctl -D "$work/pgdata" -l "$work/logs/pg.log" -w start >/dev/null
echo "== pgbench -i -s $scale"
$pgbin/pgbench -i -q -s "$scale" -h 127.0.0.1 -p "$port" -U postgres postgres 2>&1 | tail -1
cat > "$work/policy.yaml" <<POLICY
name: pgbench
kind: self-managed
database:
  dsn: "host=127.0.0.1 port=$port user=postgres dbname=postgres"
sources:
  base:
    type: base-backup
    mode: stream
    schedule: "0 2 * * *"
repositories:
  primary:
    location: $work/repo
    key_file: $work/repo.key
retention:
  keep_daily: 7
targets:
  rto: 2m
  rpo: 60s
drill:
  heartbeat: 10s
  checks:
    - name: accounts-present
      sql: SELECT count(*) = $scale * 100000 FROM pgbench_accounts
      expect: t
POLICY
echo "== base backup"
"$drctl" backup --policy "$work/policy.yaml" --source base | tail -3
echo "== $load s of pgbench at $rate tps ($clients clients), heartbeats every 10 s"
"$drctl" heartbeat --policy "$work/policy.yaml" --every 10s >/dev/null 2>&1 &
beats=$!
$pgbin/pgbench -n -T "$load" -R "$rate" -c "$clients" -h 127.0.0.1 -p "$port" -U postgres postgres 2>&1 |
  grep -E "tps|number of transactions actually processed"
echo "== drctl drill --latest (heartbeats and writes still running)"
$pgbin/pgbench -n -T 600 -R "$rate" -c "$clients" -h 127.0.0.1 -p "$port" -U postgres postgres >/dev/null 2>&1 &
load_pid=$!
status=0
"$drctl" drill --policy "$work/policy.yaml" --latest --json > "$work/drill.json" || status=$?
kill "$load_pid" 2>/dev/null || true
python3 - "$work/drill.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print("phases: " + ", ".join(f"{p['name']} {p['seconds']:.1f} s" for p in r["phases"]))
print(f"RTO {r['rto_seconds']:.1f} s (target {r['targets']['rto_seconds']:.0f} s), "
      f"RPO {r['rpo_seconds']:.1f} s (target {r['targets']['rpo_seconds']:.0f} s): "
      + ("PASSED" if r["passed"] else "FAILED: " + "; ".join(r["failures"])))
PY
exit $status
