# Helpers shared by the PostgreSQL benchmarks (bench/pg-vs-pgbackrest.sh, bench/s3.sh): sourced,
# never run. The caller has `set -euo pipefail` and runs from the repository root, as root.
#
#   bench_init NAME        defaults (SCALE, RANDOM_MB, TXNS, VERIFY, DROP_CACHES, KEEP), packages,
#                          drctl built, a work directory $work (removed on exit unless KEEP=1) with
#                          $work/m (measurements), $work/logs, $work/sock, $work/keys; $drctl
#   measure NAME CMD...    CMD as postgres under /usr/bin/time: WALL, RSS (KiB), CPU (user+sys s)
#   record FIELD...        one TSV line per phase in $results
#   cluster_create DIR PORT ARCHIVE_COMMAND; load_data; wait_archived; verify_restore DIR
#
# Processes the script starts in the background go into bg_pids (ended by pid on exit), started
# clusters into running (stopped on exit).

pgbin=/usr/lib/postgresql/15/bin

bench_init() {
  SCALE=${SCALE:-100}
  RANDOM_MB=${RANDOM_MB:-256}
  if [ -z "${TXNS:-}" ]; then
    if [ "$SCALE" -ge 100 ]; then TXNS=20000; else TXNS=$((SCALE * 200)); [ $TXNS -ge 500 ] || TXNS=500; fi
  fi
  VERIFY=${VERIFY:-1}
  DROP_CACHES=${DROP_CACHES:-1}
  KEEP=${KEEP:-0}

  [ "$(id -u)" = 0 ] || { echo "run as root (PostgreSQL and pgBackRest run as the postgres user)" >&2; exit 2; }
  if ! test -x $pgbin/postgres || ! id postgres >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq postgresql-15 >/dev/null
  fi
  if ! command -v pgbackrest >/dev/null; then
    apt-get update -qq && apt-get install -y -qq pgbackrest >/dev/null
  fi
  [ -x /usr/bin/time ] || { apt-get update -qq && apt-get install -y -qq time >/dev/null; }
  if [ -z "${DRCTL_BIN:-}" ]; then
    cargo build --release --quiet
    DRCTL_BIN=target/release/drctl
  fi
  if [ -n "${DRCTL_REV:-}" ]; then # what a prebuilt DRCTL_BIN was built from
    drctl_rev=$DRCTL_REV
  else
    drctl_rev=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
    git diff --quiet HEAD 2>/dev/null || drctl_rev="$drctl_rev+uncommitted changes"
  fi

  work=$(mktemp -d "${BENCH_DIR:-/tmp}/$1.XXXXXX")
  chmod 755 "$work"
  mkdir "$work/bin" && cp "$DRCTL_BIN" "$work/bin/drctl" && drctl="$work/bin/drctl"
  running=()
  bg_pids=()
  trap bench_cleanup EXIT

  if [ "$DROP_CACHES" = 1 ] && ! (echo 1 >/proc/sys/vm/drop_caches) 2>/dev/null; then
    echo "note: /proc/sys/vm/drop_caches is not writable: runs are with a warm page cache" >&2
    DROP_CACHES=0
  fi
  install -d -o postgres -g postgres "$work/m" "$work/logs" "$work/sock" "$work/keys"
  results="$work/results.tsv"
  verify_result=()
}

bench_cleanup() {
  status=$?
  set +e
  for d in "${running[@]}"; do
    [ -f "$d/postmaster.pid" ] && runuser -u postgres -- $pgbin/pg_ctl -D "$d" -m immediate stop >/dev/null 2>&1
  done
  for p in "${bg_pids[@]}"; do kill "$p" 2>/dev/null; done
  if [ "$KEEP" = 1 ]; then echo "work directory kept: $work" >&2; else rm -rf "$work"; fi
  [ $status -eq 0 ] || echo "benchmark FAILED (exit $status)" >&2
}

pg() { runuser -u postgres -- "$@"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
say() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*"; }
bytes_of() { du -sb "$1" | cut -f1; }
json_field() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"; }
drop_caches() {
  [ "$DROP_CACHES" = 1 ] || return 0
  sync
  echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
}
# Archiving reads segments PostgreSQL has just written: drop the cache, then read them back in.
wal_just_written() {
  drop_caches
  cat "$@" >/dev/null
}

# measure NAME CMD...: runs CMD as postgres under /usr/bin/time; NAME.out/.err/.time in $work/m.
# Sets WALL (s), RSS (KiB: the largest single process of CMD's tree) and CPU (user + system s of
# the whole tree). A failing command stops the benchmark with its output.
measure() {
  local name=$1 user sys
  shift
  if ! pg /usr/bin/time -f "%e %M %U %S" -o "$work/m/$name.time" "$@" >"$work/m/$name.out" 2>"$work/m/$name.err"; then
    echo "FAILED: $name: $*" >&2
    tail -n 40 "$work/m/$name.out" "$work/m/$name.err" >&2
    exit 1
  fi
  read -r WALL RSS user sys < <(tail -n 1 "$work/m/$name.time")
  CPU=$(python3 -c "print(round($user + $sys, 2))")
}
# Results: one TSV line per phase, formatted at the end.
record() { printf '%s\n' "$(IFS=$'\t'; echo "$*")" >>"$results"; }

# ---- the cluster ------------------------------------------------------------------------------
# cluster_create DIR PORT ARCHIVE_COMMAND: initdb, settings, start; sets $port, $pgdata_dir and sql().
cluster_create() {
  pgdata_dir=$1 port=$2
  install -d -o postgres -g postgres -m 700 "$pgdata_dir"
  pg $pgbin/initdb -U postgres -A trust --no-sync -D "$pgdata_dir" >"$work/logs/initdb.log"
  cat >>"$pgdata_dir/postgresql.conf" <<CONF
port = $port
listen_addresses = '127.0.0.1'
unix_socket_directories = '$work/sock'
wal_level = replica
max_wal_senders = 4
archive_mode = on
archive_command = '$3'
CONF
  pg $pgbin/pg_ctl -D "$pgdata_dir" -l "$work/logs/postgres.log" -w start >/dev/null
  running+=("$pgdata_dir")
}
sql() { $pgbin/psql -X -At -v ON_ERROR_STOP=1 -h 127.0.0.1 -U postgres -p "${2:-$port}" -d postgres -c "$1"; }

# Waits until every WAL segment written so far is archived (by both tools).
wait_archived() {
  sql "INSERT INTO bench_tick VALUES (now())" >/dev/null
  local last
  last=$(sql "SELECT pg_walfile_name(pg_switch_wal())")
  for _ in $(seq 1200); do
    [ "$(sql "SELECT coalesce(last_archived_wal, '') >= '$last' FROM pg_stat_archiver")" = t ] && return 0
    sleep 0.5
  done
  echo "archiving stalled at $last:" >&2
  sql "SELECT * FROM pg_stat_archiver" >&2
  tail -n 20 "$work/logs/postgres.log" >&2
  exit 1
}

# load_data: pgbench -i -s $SCALE and $RANDOM_MB MiB of incompressible bytea, vacuumed and
# checkpointed, every segment archived; sets pgdata (bytes without pg_wal) and pgwal.
load_data() {
  sql "CREATE TABLE bench_tick (t timestamptz)" >/dev/null
  say "1. pgbench -i -s $SCALE"
  measure load_pgbench $pgbin/pgbench -i -q -s "$SCALE" -h 127.0.0.1 -p "$port" -U postgres postgres
  say "   ${WALL} s"
  say "1. random_blob: $RANDOM_MB MiB of gen_random_bytes (1 KiB per row)"
  sql "CREATE EXTENSION pgcrypto" >/dev/null
  measure load_random $pgbin/psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres -d postgres -c \
    "CREATE TABLE random_blob (id int PRIMARY KEY, b bytea); INSERT INTO random_blob SELECT g, gen_random_bytes(1024) FROM generate_series(1, $RANDOM_MB * 1024) g"
  say "   ${WALL} s"
  # pgbench -i vacuums its tables; random_blob too, so autovacuum does not rewrite it (hint bits,
  # visibility map) at a random moment between the backups and make runs incomparable.
  sql "VACUUM ANALYZE random_blob" >/dev/null
  sql "CHECKPOINT" >/dev/null
  say "1. waiting for the archiver (both tools) to catch up"
  wait_archived
  local total
  total=$(bytes_of "$pgdata_dir")
  pgwal=$(bytes_of "$pgdata_dir/pg_wal")
  pgdata=$((total - pgwal))
  say "   PGDATA $pgdata bytes without pg_wal (pg_wal $pgwal); archived $(sql "SELECT archived_count FROM pg_stat_archiver") segments"
}

# What a restored cluster must hold: row counts, a balance sum and a digest of the random bytes.
fingerprint_sql="SELECT (SELECT count(*) || ':' || sum(abalance) FROM pgbench_accounts) || ':' || (SELECT count(*) || ':' || md5(string_agg(md5(b), '' ORDER BY id)) FROM random_blob)"

# verify_restore DIR EXPECT: starts the restored cluster in DIR (archive_mode=off, its own port),
# waits for recovery to end, compares its fingerprint with EXPECT, stops it; appends the outcome
# to verify_result.
verify_restore() {
  local d=$1 expect=$2 rport started got took
  rport=$(free_port)
  say "   verify $(basename "$d"): start it (archive_mode=off, port $rport), recover, compare rows"
  # Each restored cluster starts from a cold cache: the first one restored would otherwise have
  # been evicted by the cache drop before the second restore, and the second start warm.
  drop_caches
  started=$(date +%s.%N)
  pg $pgbin/pg_ctl -D "$d" -l "$work/logs/$(basename "$d").log" -o "-p $rport -c archive_mode=off" -w -t 600 start >/dev/null
  running+=("$d")
  for _ in $(seq 1200); do
    [ "$(sql "SELECT pg_is_in_recovery()" "$rport" 2>/dev/null)" = f ] && break
    sleep 0.5
  done
  got=$(sql "$fingerprint_sql" "$rport" 2>&1 || true)
  took=$(python3 -c "import time; print(round(time.time() - $started, 1))")
  pg $pgbin/pg_ctl -D "$d" -m fast stop >/dev/null
  # drctl's restore_command started a prefetch worker that outlives the server (it exits when
  # idle): stop it, or it may still write into the directory while the caller removes it.
  pkill -f "wal-fetch --worker.*$d/" 2>/dev/null || true
  while pgrep -f "wal-fetch --worker.*$d/" >/dev/null; do sleep 0.1; done
  if [ "$got" = "$expect" ]; then
    verify_result+=("$(basename "$d"): rows identical to the source (started and recovered in $took s)")
  else
    verify_result+=("$(basename "$d"): MISMATCH: expected $expect, got $got")
  fi
  say "   ${verify_result[-1]}"
}

machine_line() {
  echo "machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), $(free -m | awk '/^Mem:/ {print $2 " MiB RAM, " $7 " MiB available"}'), load average before the run $load_before, page cache dropped before each timed phase: $([ "$DROP_CACHES" = 1 ] && echo yes || echo no)"
}
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
