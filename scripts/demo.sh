#!/usr/bin/env bash
# drctl's main job end to end on the embedded default: a local repository and a throwaway local
# PostgreSQL 15, no cloud account.
#  1. Files: back up a directory, change it, back up again (deduplicated), restore both
#     snapshots, verify them byte for byte, check every stored byte.
#  2. PostgreSQL: a server archiving its WAL through `drctl wal-push`, a base backup, good
#     writes, then a bad DELETE; a point-in-time restore to just before the DELETE, recovered
#     by PostgreSQL through `drctl wal-fetch`, then every row verified.
#  3. A policy job: the same server under a policy file (base backup, dump, config snapshot),
#     copied to a DR repository, retention applied, metrics written; the copy checked.
#  4. A failover: a streaming standby of the server and a stand-in for the API service on it;
#     the primary stops; the promote-replica runbook (dry run first) promotes the standby behind
#     its safety gates and the service turns ready; the audit log's chain is verified.
#  5. A DR drill: heartbeats on the new primary, then `drctl drill` restores the newest base backup
#     and the WAL archived up to its start (across the failover's timeline) into a scratch
#     cluster, verifies it and measures RTO and RPO against the policy's targets.
#  6. A compliance report of the day, judged from the repositories' evidence (job, check and
#     drill records, snapshots, WAL, copies, key slots), as Markdown and as one HTML file, and its
#     seal verified.
# Everything lives in one temporary directory, removed at the end. Run as root (PostgreSQL runs
# as the unprivileged `postgres` user).
set -euo pipefail
cd "$(dirname "$0")/.."

pgbin=/usr/lib/postgresql/15/bin
if ! test -x $pgbin/postgres || ! id postgres >/dev/null 2>&1; then
  apt-get update -qq && apt-get install -y -qq postgresql-15 >/dev/null
fi
cargo build --release --locked --quiet
work=$(mktemp -d /tmp/drctl-demo.XXXXXX)
chmod 755 "$work"
# A copy PostgreSQL's user can run whatever the checkout's permissions.
mkdir "$work/bin" && cp target/release/drctl "$work/bin/" && drctl="$work/bin/drctl"
cleanup() {
  status=$?
  [ -n "${standin:-}" ] && kill "$standin" 2>/dev/null
  for d in "$work/pgdata" "$work/restored" "$work/standby"; do
    [ -f "$d/postmaster.pid" ] && runuser -u postgres -- $pgbin/pg_ctl -D "$d" -m fast stop >/dev/null 2>&1
  done
  rm -rf "$work"
  [ $status -eq 0 ] || echo "demo FAILED (exit $status)" >&2
}
trap cleanup EXIT
export DRCTL_REPO="$work/repo" DRCTL_PASSWORD="demo passphrase"

step() { printf '\n== %s\n' "$*"; }

step "sample data: this project's sources plus 64 MiB of generated data"
mkdir -p "$work/data"
cp -a src docs README.md "$work/data/"
head -c 32M /dev/urandom > "$work/data/random.bin"
(yes "drctl demo line $(date +%s)" || true) | head -c 32M > "$work/data/text.log"
ln -s text.log "$work/data/current.log"

step "drctl init"
"$drctl" init
step "drctl backup (first)"
"$drctl" backup --path "$work/data" --tag demo
cp -a "$work/data" "$work/data-v1"
step "change 1 MiB of one file, add a file, back up again: only the change is stored"
dd if=/dev/urandom of="$work/data/random.bin" bs=1M count=1 seek=8 conv=notrunc status=none
echo "new file" > "$work/data/added.txt"
"$drctl" backup --path "$work/data" --tag demo
step "drctl snapshots"
"$drctl" snapshots
first=$("$drctl" snapshots --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["short_id"])')

step "drctl restore latest and the first snapshot, then verify byte for byte"
"$drctl" restore latest --to "$work/restore-latest"
"$drctl" restore "$first" --to "$work/restore-first"
diff -r "$work/data" "$work/restore-latest$work/data"
diff -r "$work/data-v1" "$work/restore-first$work/data"
echo "both restores are identical to their sources"

step "drctl check --read-data"
"$drctl" check --read-data

# ---- PostgreSQL -------------------------------------------------------------------------------
pg() { runuser -u postgres -- "$@"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
sql() { $pgbin/psql -X -At -v ON_ERROR_STOP=1 -h 127.0.0.1 -U postgres -p "$1" -d postgres -c "$2"; }
# Switches the server on port $1 to a new WAL segment and waits until the one written is archived.
archive_current_wal() {
  local last
  last=$(sql "$1" "SELECT pg_walfile_name(pg_current_wal_lsn())")
  sql "$1" "SELECT pg_switch_wal()" >/dev/null
  for _ in $(seq 100); do
    [ "$(sql "$1" "SELECT last_archived_wal >= '$last' FROM pg_stat_archiver")" = t ] && break
    sleep 0.2
  done
}

step "a PostgreSQL repository the server can write, opened by a key file (no argon2 per WAL segment)"
export DRCTL_REPO="$work/pgrepo"
"$drctl" init
"$drctl" key add --new-key-file "$work/pgrepo.key"
chown -R postgres: "$work/pgrepo" "$work/pgrepo.key"

step "a throwaway PostgreSQL 15 archiving its WAL with drctl wal-push"
port=$(free_port)
mkdir "$work/pgdata" "$work/logs" && chown postgres: "$work/pgdata" "$work/logs"
pg $pgbin/initdb -U postgres -A trust --no-sync -D "$work/pgdata" >/dev/null
cat >> "$work/pgdata/postgresql.conf" <<CONF
port = $port
listen_addresses = '127.0.0.1'
unix_socket_directories = ''
wal_level = replica
archive_mode = on
archive_command = 'DRCTL_REPO=$work/pgrepo DRCTL_KEY_FILE=$work/pgrepo.key $drctl wal-push %p'
CONF
pg $pgbin/pg_ctl -D "$work/pgdata" -l "$work/logs/pgdata.log" -w start >/dev/null
sql $port "CREATE TABLE orders (id int PRIMARY KEY, item text)"
sql $port "INSERT INTO orders SELECT g, 'item ' || g FROM generate_series(1, 10000) g"

step "drctl backup --pg (a base backup over the replication protocol)"
"$drctl" backup --pg "host=127.0.0.1 port=$port user=postgres"

step "more good writes, then the mistake: DELETE without WHERE"
sql $port "INSERT INTO orders SELECT g, 'item ' || g FROM generate_series(10001, 12000) g"
sleep 1
target=$(sql $port "SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00'")
sleep 1
sql $port "DELETE FROM orders"
archive_current_wal $port
echo "rows now: $(sql $port "SELECT count(*) FROM orders"); recovering to $target"

step "drctl restore --point-in-time (recovered through drctl wal-fetch, promoted, verified)"
"$drctl" snapshots
"$drctl" restore --point-in-time "$target" --to "$work/restored" --start --key-file "$work/pgrepo.key"
rport=$(free_port)
pg $pgbin/pg_ctl -D "$work/restored" -l "$work/logs/restored.log" -o "-p $rport -c archive_mode=off" -w start >/dev/null
rows=$(sql $rport "SELECT count(*) FROM orders")
echo "restored database: $rows rows"
[ "$rows" = 12000 ] || { echo "expected 12000 rows" >&2; exit 1; }

step "drctl check --read-data (base backup and WAL archive)"
"$drctl" check --read-data

# ---- A policy job -----------------------------------------------------------------------------
step "the same server under a policy: sources with their schedules, a DR copy, retention"
cat > "$work/demo-policy.yaml" <<POLICY
name: demo
kind: self-managed
database:
  dsn: "host=127.0.0.1 port=$port user=postgres"
sources:
  base:
    type: base-backup
    mode: stream
    schedule: "0 2 * * *"
  orders-dump:
    type: logical-dump
    databases: [postgres]
    schedule: "0 */6 * * *"
  config:
    type: config-snapshot
    paths: [$work/data/docs]
    schedule: "30 2 * * *"
repositories:
  primary:
    location: $work/pgrepo
    key_file: $work/pgrepo.key
  copies:
    - location: $work/pgrepo-dr
      key_file: $work/pgrepo.key
retention:
  keep_daily: 7
  pitr_window: 1d
targets:
  rto: 1h
  rpo: 15m
drill:
  heartbeat: 10s
  checks:
    - name: orders-present
      sql: SELECT count(*) > 0 FROM orders
      expect: t
POLICY
"$drctl" policy validate "$work/demo-policy.yaml"
step "drctl backup --policy: every source is due the first time; then the copy and retention"
"$drctl" backup --policy "$work/demo-policy.yaml" --metrics-file "$work/demo.prom"
step "a second job at once: no schedule fired since, so no source runs; the copy is in step"
"$drctl" backup --policy "$work/demo-policy.yaml" --metrics-file "$work/demo.prom"
grep '^drctl_backup_last_success_timestamp_seconds' "$work/demo.prom"
step "drctl check --read-data of the DR copy"
"$drctl" check --read-data --repo "$work/pgrepo-dr" --key-file "$work/pgrepo.key"

# ---- A failover -------------------------------------------------------------------------------
step "a streaming standby of the server (archive_mode on: it archives once promoted)"
sport=$(free_port)
mkdir -m 700 "$work/standby" && chown postgres: "$work/standby"
pg $pgbin/pg_basebackup -h 127.0.0.1 -p "$port" -U postgres -R -X stream -C -S demo_standby --checkpoint=fast \
  --no-sync -D "$work/standby"
cat >> "$work/standby/postgresql.conf" <<CONF
port = $sport
CONF
pg $pgbin/pg_ctl -D "$work/standby" -l "$work/logs/standby.log" -w start >/dev/null
sql $port "INSERT INTO orders SELECT g, 'item ' || g FROM generate_series(12001, 13000) g"
for _ in $(seq 100); do
  [ "$(sql $sport "SELECT count(*) FROM orders WHERE id > 12000")" = 1000 ] && break
  sleep 0.2
done
echo "the standby replays: $(sql $sport "SELECT pg_is_in_recovery()"), rows $(sql $sport "SELECT count(*) FROM orders")"

step "a stand-in for the API service on the standby: ready only while its database takes writes"
aport=$(free_port)
python3 scripts/standin-api.py "$aport" "host=127.0.0.1 port=$sport user=postgres" > "$work/logs/standin.log" &
standin=$!
ready() { python3 -c "import urllib.request,sys
try: print(urllib.request.urlopen('http://127.0.0.1:$aport/health/ready').status)
except Exception as e: print(getattr(e, 'code', 'down'))"; }
for _ in $(seq 50); do grep -q listening "$work/logs/standin.log" && break; sleep 0.1; done
echo "service ready: $(ready)"

step "the primary is lost"
pg $pgbin/pg_ctl -D "$work/pgdata" -m fast -w stop >/dev/null

run_promote() {
  "$drctl" runbook run promote-replica --audit-log "$work/audit.jsonl" \
    --param standby_dsn="host=127.0.0.1 port=$sport user=postgres" --param repo="$work/pgrepo" \
    --param service_url="http://127.0.0.1:$aport/health/ready" "$@"
}
step "drctl runbook run promote-replica --dry-run: every gate as it is now, nothing changed"
run_promote --dry-run
step "drctl runbook run promote-replica --yes"
run_promote --yes
echo "service ready: $(ready); new primary in recovery: $(sql $sport "SELECT pg_is_in_recovery()")"
[ "$(ready)" = 200 ] || { echo "the service is not ready on the new primary" >&2; exit 1; }
sql $sport "INSERT INTO orders VALUES (13001, 'after the failover')"
step "drctl runbook audit --verify"
"$drctl" runbook audit --verify --audit-log "$work/audit.jsonl"

# ---- A DR drill -------------------------------------------------------------------------------
step "heartbeats on the new primary (drctl schedule writes them every drill.heartbeat)"
sed "s/port=$port /port=$sport /" "$work/demo-policy.yaml" > "$work/demo-policy-after.yaml"
"$drctl" heartbeat --policy "$work/demo-policy-after.yaml"
sleep 1
"$drctl" heartbeat --policy "$work/demo-policy-after.yaml"
sql $sport "SELECT count(*) || ' heartbeat rows, newest ' || max(at) FROM drctl.heartbeat"
# archive_timeout does this on a real server; the drill itself never forces a WAL switch.
archive_current_wal $sport
step "drctl drill: restore into a scratch cluster, verify, measure RTO and RPO, store the record"
"$drctl" drill --policy "$work/demo-policy-after.yaml" --metrics-file "$work/drill.prom"
grep -E '^drctl_drill_(rpo|rto)_seconds' "$work/drill.prom"
step "drctl drill list"
"$drctl" drill list --policy "$work/demo-policy-after.yaml"

# ---- A compliance report ----------------------------------------------------------------------
step "one more policy job (the copy catches up with the new timeline), then a full check"
"$drctl" backup --policy "$work/demo-policy-after.yaml" --metrics-file "$work/demo.prom" >/dev/null
"$drctl" check --read-data --repo "$work/pgrepo" --key-file "$work/pgrepo.key"
step "drctl report: today's controls judged from the evidence in the repositories (exit 16 if one fails)"
today=$(date -u +%F)
"$drctl" report --policy "$work/demo-policy-after.yaml" --period "$today" --format md --out "$work/report.md" ||
  [ $? = 16 ]
sed -n '/^| Status/,/^$/p' "$work/report.md"
"$drctl" report --policy "$work/demo-policy-after.yaml" --period "$today" --format html --out "$work/report.html" ||
  [ $? = 16 ]
cp "$work/report.html" /tmp/drctl-demo-report.html
"$drctl" report verify --policy "$work/demo-policy-after.yaml" "$work/report.html"
echo "the HTML report (one self-contained file): /tmp/drctl-demo-report.html"
printf '\ndemo passed\n'
