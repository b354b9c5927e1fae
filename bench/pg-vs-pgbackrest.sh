#!/usr/bin/env bash
# Side-by-side PostgreSQL backup benchmark: drctl against pgBackRest, on one throwaway
# PostgreSQL 15 cluster whose archive_command pushes every WAL segment to both tools.
#
#   1. initdb, archive to both, pgbench -i -s $SCALE, an incompressible table ($RANDOM_MB MiB of
#      gen_random_bytes), CHECKPOINT
#   2. full backup:  drctl backup --pg --pg-mode local | pgbackrest backup --type=full
#      (and, for reference, drctl's stream mode into a separate repository)
#   3. pgbench -c 2 -t $TXNS, then second backup:  drctl local mode (unchanged files skipped,
#      dedup) | pgbackrest --type=incr
#   4. restore into empty directories (then, untimed, each restore is started and its rows
#      compared with the live cluster unless VERIFY=0); 4b. drctl only: a recovery of the full
#      backup through the pgbench run's WAL (restore --target-lsn --start), with and without
#      wal-fetch's prefetch
#   5. WAL: $WAL_SEGS fresh, never-archived segments (the archive_command is switched to a copy
#      into a staging directory while they are generated) pushed one process per segment with
#      drctl wal-push and pgbackrest archive-push (synchronous), then fetched back with
#      drctl wal-fetch and pgbackrest archive-get and compared byte for byte; then the same with
#      drctl wal-push --async / pgbackrest --archive-async (a pg_wal directory with .ready files,
#      each file handed over by one process, as the archiver does) and wal-fetch with prefetch /
#      archive-get --archive-async
#   6. a table of wall time, throughput, peak RSS and bytes for both
#
# Helpers (measure, record, drop_caches, the cluster and its data, restore checks) are in
# bench/lib.sh, shared with bench/s3.sh.
#
# Every timed command runs as the postgres user under /usr/bin/time (wall seconds,
# peak RSS in KiB: the largest single process of the command's tree, not a sum). The page cache
# is dropped before every timed phase when /proc/sys/vm/drop_caches is writable (the WAL segments
# of the push rows are then read back in: archiving reads files PostgreSQL has just written) (DROP_CACHES=0 to
# skip). Both tools: zstd level 3, encryption (drctl AES-256-GCM, pgBackRest aes-256-cbc).
#
# Usage (as root; PostgreSQL itself runs as `postgres`):
#   bash bench/pg-vs-pgbackrest.sh                 # SCALE=100
#   SCALE=5 RANDOM_MB=32 bash bench/pg-vs-pgbackrest.sh
# Environment: SCALE (pgbench scale, 100), RANDOM_MB (incompressible table, 256), TXNS (pgbench
# transactions per client in phase 3; 20000 at SCALE>=100, else 200*SCALE, at least 500),
# WAL_SEGS (32), VERIFY (1), DROP_CACHES (1), KEEP (1 keeps the work directory),
# DRCTL_BIN (a prebuilt drctl; else `cargo build --release` here; DRCTL_REV: what it was built
# from), BENCH_DIR (parent of the work directory, /tmp).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh

WAL_SEGS=${WAL_SEGS:-32}
stanza=bench
bench_init drctl-bench

mkdir -p "$work/drctl-repo" "$work/drctl-stream" "$work/pgbr-repo" \
  "$work/pgbr-log" "$work/pgbr-lock" "$work/pgbr-spool" "$work/walstage"
chown postgres: "$work/drctl-repo" "$work/drctl-stream" "$work/pgbr-repo" \
  "$work/pgbr-log" "$work/pgbr-lock" "$work/pgbr-spool" "$work/walstage"

# ---- 1. the cluster and its data ---------------------------------------------------------------
port=$(free_port)
drctl_env=(env "DRCTL_REPO=$work/drctl-repo" "DRCTL_KEY_FILE=$work/keys/drctl.key" DRCTL_LOG_FORMAT=text)
pgbr_conf="$work/pgbackrest.conf"
pgbr=(pgbackrest "--config=$pgbr_conf" "--stanza=$stanza")
cat >"$pgbr_conf" <<CONF
[global]
repo1-path=$work/pgbr-repo
repo1-retention-full=2
repo1-cipher-type=aes-256-cbc
repo1-cipher-pass=bench-cipher-pass-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
compress-type=zst
compress-level=3
process-max=2
start-fast=y
log-path=$work/pgbr-log
lock-path=$work/pgbr-lock
spool-path=$work/pgbr-spool
log-level-console=warn
log-level-file=info

[$stanza]
pg1-path=$work/pgdata
pg1-port=$port
pg1-socket-path=$work/sock
pg1-user=postgres
CONF
chown postgres: "$pgbr_conf" && chmod 600 "$pgbr_conf"

say "drctl $drctl_rev, $(pgbackrest version), PostgreSQL $($pgbin/postgres --version | awk '{print $3}')"
say "work directory $work; SCALE=$SCALE RANDOM_MB=$RANDOM_MB TXNS=$TXNS (x2 clients) WAL_SEGS=$WAL_SEGS"
say "1. initdb, drctl init + key file, pgBackRest stanza"
pg env DRCTL_PASSWORD="bench passphrase" "$drctl" -q init --repo "$work/drctl-repo"
pg env DRCTL_PASSWORD="bench passphrase" "$drctl" -q key add --repo "$work/drctl-repo" --new-key-file "$work/keys/drctl.key"
pg env DRCTL_PASSWORD="bench passphrase" "$drctl" -q init --repo "$work/drctl-stream"
# Opened with a key file like the local-mode repository (as a scheduled job would), so that the
# two modes differ only in how PGDATA is read, not in a passphrase's key derivation.
pg env DRCTL_PASSWORD="bench passphrase" "$drctl" -q key add --repo "$work/drctl-stream" --new-key-file "$work/keys/stream.key"
cluster_create "$work/pgdata" "$port" "${drctl_env[*]} $drctl -q wal-push %p && ${pgbr[*]} archive-push %p"
pg "${pgbr[@]}" stanza-create
load_data

# ---- 2. full backups --------------------------------------------------------------------------
dsn="host=127.0.0.1 port=$port user=postgres"

local_mode=(--pg-mode local --pgdata "$work/pgdata")
say "2. drctl full backup, stream mode (reference; separate repository)"
drop_caches
measure drctl_full_stream env "DRCTL_KEY_FILE=$work/keys/stream.key" DRCTL_LOG_FORMAT=text "$drctl" backup --repo "$work/drctl-stream" --pg "$dsn" --json
say "   ${WALL} s, RSS ${RSS} KiB, stored_bytes $(json_field "$work/m/drctl_full_stream.out" stored_bytes)"
stream_wall=$WALL stream_rss=$RSS stream_bytes=$(bytes_of "$work/drctl-stream")
wait_archived
say "2. drctl full backup (local mode)"
before=$(bytes_of "$work/drctl-repo")
drop_caches
measure drctl_full "${drctl_env[@]}" "$drctl" backup --pg "$dsn" "${local_mode[@]}" --json
d_wall=$WALL d_rss=$RSS
d_bytes=$(($(bytes_of "$work/drctl-repo") - before))
say "   ${d_wall} s, stored_bytes $(json_field "$work/m/drctl_full.out" stored_bytes), logical $(json_field "$work/m/drctl_full.out" logical_bytes)"
wait_archived
say "2. pgbackrest full backup"
before=$(bytes_of "$work/pgbr-repo")
drop_caches
measure pgbr_full "${pgbr[@]}" backup --type=full
p_wall=$WALL p_rss=$RSS
p_bytes=$(($(bytes_of "$work/pgbr-repo") - before))
say "   ${p_wall} s"
record "full backup (bytes added)" "$d_wall" "$pgdata" "$d_rss" "$d_bytes" "$p_wall" "$pgdata" "$p_rss" "$p_bytes"
record "full backup, drctl stream mode" "$stream_wall" "$pgdata" "$stream_rss" "$stream_bytes" "$p_wall" "$pgdata" "$p_rss" "$p_bytes"
drctl_repo_full=$(bytes_of "$work/drctl-repo") pgbr_repo_full=$(bytes_of "$work/pgbr-repo")

# ---- 3. changes, then incremental backups -----------------------------------------------------
say "3. pgbench -c 2 -j 2 -t $TXNS --random-seed=42"
measure pgbench_run $pgbin/pgbench -c 2 -j 2 -t "$TXNS" --random-seed=42 -h 127.0.0.1 -p "$port" -U postgres postgres
tps=$(grep -o 'tps = [0-9.]*' "$work/m/pgbench_run.out" | head -1)
say "   ${WALL} s, $tps"
wait_archived
pgdata2=$(($(bytes_of "$work/pgdata") - $(bytes_of "$work/pgdata/pg_wal")))
say "3. drctl second backup (local mode: unchanged files skipped, the rest deduplicated)"
before=$(bytes_of "$work/drctl-repo")
drop_caches
measure drctl_incr "${drctl_env[@]}" "$drctl" backup --pg "$dsn" "${local_mode[@]}" --json
d_wall=$WALL d_rss=$RSS
d_bytes=$(($(bytes_of "$work/drctl-repo") - before))
say "   ${d_wall} s, stored_bytes $(json_field "$work/m/drctl_incr.out" stored_bytes)"
wait_archived
say "3. pgbackrest incremental backup"
before=$(bytes_of "$work/pgbr-repo")
drop_caches
measure pgbr_incr "${pgbr[@]}" backup --type=incr
p_wall=$WALL p_rss=$RSS
p_bytes=$(($(bytes_of "$work/pgbr-repo") - before))
say "   ${p_wall} s"
record "incremental backup (bytes added)" "$d_wall" "$pgdata2" "$d_rss" "$d_bytes" "$p_wall" "$pgdata2" "$p_rss" "$p_bytes"

# ---- 4. restores ------------------------------------------------------------------------------
# The recovery rows of 4b replay up to here: a position with WAL after it, archived.
recovery_lsn=$(sql "SELECT pg_current_wal_insert_lsn()")
wait_archived
pg "${drctl_env[@]}" "$drctl" snapshots --json | python3 -c 'import json,sys; snaps=json.load(sys.stdin); full=sys.argv[1]; print(json.dumps([s for s in snaps if s["id"]==full][0]))' "$(json_field "$work/m/drctl_full.out" snapshot_id)" >"$work/m/drctl_full_snap.json"
expect=$(sql "$fingerprint_sql")
for d in restore-drctl restore-pgbr; do install -d -o postgres -g postgres -m 700 "$work/$d"; done
say "4. drctl restore latest"
drop_caches
measure drctl_restore "${drctl_env[@]}" "$drctl" restore latest --to "$work/restore-drctl" --key-file "$work/keys/drctl.key"
d_wall=$WALL d_rss=$RSS d_bytes=$(bytes_of "$work/restore-drctl")
say "   ${d_wall} s"
say "4. pgbackrest restore"
drop_caches
measure pgbr_restore "${pgbr[@]}" restore "--pg1-path=$work/restore-pgbr"
p_wall=$WALL p_rss=$RSS p_bytes=$(bytes_of "$work/restore-pgbr")
say "   ${p_wall} s"
record "restore (bytes restored)" "$d_wall" "$pgdata2" "$d_rss" "$d_bytes" "$p_wall" "$pgdata2" "$p_rss" "$p_bytes"

if [ "$VERIFY" = 1 ]; then
  say "4. verify the restores"
  for d in restore-drctl restore-pgbr; do verify_restore "$work/$d" "$expect"; done
fi

# ---- 4b. a recovery that replays the pgbench run through wal-fetch, with and without prefetch ----
full_id=$(json_field "$work/m/drctl_full.out" snapshot_id)
full_start=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["pg"]["start_lsn"])' "$work/m/drctl_full_snap.json")
recovery_segments=$(sql "SELECT ceil(pg_wal_lsn_diff('$recovery_lsn', '$full_start') / 16777216.0)::int")
for mode in prefetch none; do
  prefetch_env=()
  [ "$mode" = none ] && prefetch_env=(DRCTL_PREFETCH=0)
  say "4b. drctl restore (full backup) --target-lsn $recovery_lsn --start, WAL fetch: $mode ($recovery_segments segments to replay)"
  install -d -o postgres -g postgres -m 700 "$work/recover-$mode"
  drop_caches
  measure "drctl_recover_$mode" "${drctl_env[@]}" "${prefetch_env[@]}" "$drctl" restore "$full_id" --target-lsn "$recovery_lsn" \
    --start --key-file "$work/keys/drctl.key" --to "$work/recover-$mode"
  say "   ${WALL} s"
  eval "recover_$mode=$WALL"
  rm -rf "$work/recover-$mode"
done

# ---- 5. WAL push and fetch --------------------------------------------------------------------
say "5. generating $WAL_SEGS fresh WAL segments (archive_command copies them to a staging directory)"
sql "ALTER SYSTEM SET archive_command = 'test ! -f $work/walstage/%f && cp %p $work/walstage/%f'" >/dev/null
sql "SELECT pg_reload_conf()" >/dev/null
sleep 1
wait_archived # the first segment switched after the reload went to the staging directory
find "$work/walstage" -type f -delete
sql "CREATE TABLE walgen AS SELECT * FROM pgbench_accounts LIMIT 0; CREATE TABLE walgen_blob AS SELECT * FROM random_blob LIMIT 0" >/dev/null
segs() { find "$work/walstage" -maxdepth 1 -type f -regextype posix-extended -regex '.*/[0-9A-F]{24}' | sort; }
for _ in $(seq 200); do
  [ "$(segs | wc -l)" -ge "$WAL_SEGS" ] && break
  # About 3/4 row data (pgbench_accounts: compressible) and 1/4 random bytes.
  sql "INSERT INTO walgen SELECT * FROM pgbench_accounts LIMIT 300000; INSERT INTO walgen_blob SELECT * FROM random_blob LIMIT 12000; DELETE FROM walgen_blob" >/dev/null
  sleep 0.2
done
mapfile -t walset < <(segs | head -n "$WAL_SEGS")
[ "${#walset[@]}" = "$WAL_SEGS" ] || { echo "only ${#walset[@]} WAL segments were generated" >&2; exit 1; }
install -d -o postgres -g postgres "$work/walset" "$work/fetch-drctl" "$work/fetch-pgbr"
cp "${walset[@]}" "$work/walset/" && chown postgres: "$work/walset"/*
mapfile -t walset < <(find "$work/walset" -type f | sort)
names=()
for f in "${walset[@]}"; do names+=("$(basename "$f")"); done
wal_bytes=$(cat "${walset[@]}" | wc -c)
say "   ${names[0]} .. ${names[-1]} ($wal_bytes bytes)"

say "5. drctl wal-push x $WAL_SEGS"
before=$(bytes_of "$work/drctl-repo")
wal_just_written "${walset[@]}"
measure drctl_walpush "${drctl_env[@]}" bash -c 'd=$1; shift; for f in "$@"; do "$d" -q wal-push "$f"; done' _ "$drctl" "${walset[@]}"
d_wall=$WALL d_rss=$RSS d_bytes=$(($(bytes_of "$work/drctl-repo") - before))
say "   ${d_wall} s"
say "5. pgbackrest archive-push x $WAL_SEGS"
before=$(bytes_of "$work/pgbr-repo")
wal_just_written "${walset[@]}"
measure pgbr_walpush bash -c 'for f in "$@"; do pgbackrest "--config='"$pgbr_conf"'" "--stanza='"$stanza"'" archive-push "$f"; done' _ "${walset[@]}"
p_wall=$WALL p_rss=$RSS p_bytes=$(($(bytes_of "$work/pgbr-repo") - before))
say "   ${p_wall} s"
record "wal-push x$WAL_SEGS (bytes added)" "$d_wall" "$wal_bytes" "$d_rss" "$d_bytes" "$p_wall" "$wal_bytes" "$p_rss" "$p_bytes"

say "5. drctl wal-fetch --prefetch 0 x $WAL_SEGS"
drop_caches
measure drctl_walfetch "${drctl_env[@]}" bash -c 'd=$1; o=$2; shift 2; for n in "$@"; do "$d" -q wal-fetch --prefetch 0 "$n" "$o/$n"; done' _ "$drctl" "$work/fetch-drctl" "${names[@]}"
d_wall=$WALL d_rss=$RSS d_bytes=$(bytes_of "$work/fetch-drctl")
say "   ${d_wall} s"
say "5. pgbackrest archive-get x $WAL_SEGS"
drop_caches
measure pgbr_walfetch bash -c 'o=$1; shift; for n in "$@"; do pgbackrest "--config='"$pgbr_conf"'" "--stanza='"$stanza"'" archive-get "$n" "$o/$n"; done' _ "$work/fetch-pgbr" "${names[@]}"
p_wall=$WALL p_rss=$RSS p_bytes=$(bytes_of "$work/fetch-pgbr")
say "   ${p_wall} s"
record "wal-fetch x$WAL_SEGS (bytes fetched)" "$d_wall" "$wal_bytes" "$d_rss" "$d_bytes" "$p_wall" "$wal_bytes" "$p_rss" "$p_bytes"
fetch_ok=yes
for n in "${names[@]}"; do
  cmp -s "$work/walset/$n" "$work/fetch-drctl/$n" || { fetch_ok=no; echo "drctl wal-fetch $n differs" >&2; }
  cmp -s "$work/walset/$n" "$work/fetch-pgbr/$n" || { fetch_ok=no; echo "pgbackrest archive-get $n differs" >&2; }
done

# Asynchronous archiving as the archiver drives it: a pg_wal directory whose files are marked
# .ready; one process per file, in order, each marking its file .done when it returns. The WAL
# goes to fresh repositories, so nothing is "already archived".
async_dir() { # async_dir DIR: DIR/pg_wal with the WAL set and a .ready file for each
  install -d -o postgres -g postgres "$1" "$1/pg_wal" "$1/pg_wal/archive_status" "$1/spool"
  cp "${walset[@]}" "$1/pg_wal/"
  for n in "${names[@]}"; do : >"$1/pg_wal/archive_status/$n.ready"; done
  pgdata_look_alike "$1"
}
pgdata_look_alike() { # pgBackRest reads pg_control (and PG_VERSION) from the pg1-path it works for
  install -d -o postgres -g postgres "$1/global"
  cp "$work/pgdata/global/pg_control" "$1/global/" && cp "$work/pgdata/PG_VERSION" "$1/"
  chown -R postgres: "$1"
}
archiver_loop='d=$1 && shift && for n in $NAMES; do "$@" "$d/pg_wal/$n" || exit 1; mv "$d/pg_wal/archive_status/$n.ready" "$d/pg_wal/archive_status/$n.done"; done'
export NAMES="${names[*]}"
async_dir "$work/async-drctl"
async_dir "$work/async-pgbr"
install -d -o postgres -g postgres "$work/drctl-async"
pg env DRCTL_PASSWORD="bench passphrase" "$drctl" -q init --repo "$work/drctl-async"
pg env DRCTL_PASSWORD="bench passphrase" "$drctl" -q key add --repo "$work/drctl-async" --new-key-file "$work/keys/async.key"
pgbr_async_repo="$work/pgbr-async"
install -d -o postgres -g postgres "$pgbr_async_repo"
pg pgbackrest "--config=$pgbr_conf" "--stanza=$stanza" "--repo1-path=$pgbr_async_repo" stanza-create
pgbr_async=(pgbackrest "--config=$pgbr_conf" "--stanza=$stanza" "--repo1-path=$pgbr_async_repo" --archive-async "--spool-path=$work/async-pgbr/spool" "--pg1-path=$work/async-pgbr")
say "5. drctl wal-push --async x $WAL_SEGS (archiver-style loop)"
wal_just_written "$work/async-drctl/pg_wal"/0*
measure drctl_walpush_async env "DRCTL_REPO=$work/drctl-async" "DRCTL_KEY_FILE=$work/keys/async.key" NAMES="$NAMES" \
  bash -c "$archiver_loop" _ "$work/async-drctl" "$drctl" -q wal-push --async --spool-dir "$work/async-drctl/spool"
d_wall=$WALL d_rss=$RSS d_bytes=$(bytes_of "$work/drctl-async/wal")
say "   ${d_wall} s"
say "5. pgbackrest archive-push --archive-async x $WAL_SEGS"
wal_just_written "$work/async-pgbr/pg_wal"/0*
measure pgbr_walpush_async env NAMES="$NAMES" bash -c "$archiver_loop" _ "$work/async-pgbr" "${pgbr_async[@]}" archive-push
p_wall=$WALL p_rss=$RSS p_bytes=$(bytes_of "$pgbr_async_repo/archive")
say "   ${p_wall} s"
record "wal-push async x$WAL_SEGS (bytes)" "$d_wall" "$wal_bytes" "$d_rss" "$d_bytes" "$p_wall" "$wal_bytes" "$p_rss" "$p_bytes"

# Fetching with prefetch: drctl wal-fetch (prefetch 8, its default) and pgbackrest archive-get
# --archive-async, each called once per segment in order, as recovery does.
install -d -o postgres -g postgres "$work/fetch2-drctl" "$work/fetch2-drctl/pg_wal" "$work/fetch2-pgbr" "$work/fetch2-pgbr/pg_wal"
pgdata_look_alike "$work/fetch2-pgbr"
fetch_loop='d=$1 && shift && for n in $NAMES; do "$@" "$n" "$d/pg_wal/RECOVERYXLOG" || exit 1; cmp -s "$d/pg_wal/RECOVERYXLOG" "$WALSET/$n" || { echo "$n differs" >&2; exit 1; }; done'
say "5. drctl wal-fetch (prefetch) x $WAL_SEGS"
drop_caches
measure drctl_walfetch_prefetch env "${drctl_env[@]:1}" NAMES="$NAMES" WALSET="$work/walset" \
  bash -c "$fetch_loop" _ "$work/fetch2-drctl" "$drctl" -q wal-fetch
d_wall=$WALL d_rss=$RSS
say "   ${d_wall} s"
say "5. pgbackrest archive-get --archive-async x $WAL_SEGS"
drop_caches
measure pgbr_walfetch_async env NAMES="$NAMES" WALSET="$work/walset" bash -c "$fetch_loop" _ "$work/fetch2-pgbr" \
  "${pgbr[@]}" --archive-async "--spool-path=$work/pgbr-spool" "--pg1-path=$work/fetch2-pgbr" archive-get
p_wall=$WALL p_rss=$RSS
say "   ${p_wall} s"
record "wal-fetch prefetch x$WAL_SEGS" "$d_wall" "$wal_bytes" "$d_rss" "$wal_bytes" "$p_wall" "$wal_bytes" "$p_rss" "$wal_bytes"

# ---- 6. the table -----------------------------------------------------------------------------
echo
echo "== drctl ($drctl_rev) vs $(pgbackrest version): PostgreSQL 15, pgbench scale $SCALE + $RANDOM_MB MiB random bytea"
machine_line
echo "PGDATA: $pgdata bytes without pg_wal after phase 1 ($pgdata2 after phase 3); pg_wal $pgwal bytes"
python3 - "$results" "$WAL_SEGS" <<'PY'
import sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
segs = int(sys.argv[2])
hdr = ["phase", "drctl wall s", "MB/s", "RSS MiB", "bytes",
       "pgBackRest wall s", "MB/s", "RSS MiB", "bytes", "speed drctl/pgbr", "bytes drctl/pgbr"]
out = []
for name, dw, dsz, drss, db, pw, psz, prss, pb in rows:
    dw, pw = float(dw), float(pw)
    out.append([name, f"{dw:.2f}", f"{int(dsz)/1e6/dw:.1f}" if dw else "-", f"{int(drss)/1024:.0f}", db,
                f"{pw:.2f}", f"{int(psz)/1e6/pw:.1f}" if pw else "-", f"{int(prss)/1024:.0f}", pb,
                f"{pw/dw:.2f}" if dw else "-", f"{int(db)/int(pb):.2f}" if int(pb) else "-"])
w = [max(len(r[i]) for r in out + [hdr]) for i in range(len(hdr))]
line = lambda r: "| " + " | ".join(c.ljust(w[i]) if i == 0 else c.rjust(w[i]) for i, c in enumerate(r)) + " |"
print(line(hdr))
print("|" + "|".join("-" * (x + 2) for x in w) + "|")
for r in out:
    print(line(r))
for name, dw, _, _, _, pw, *_ in rows:
    if name.startswith("wal-"):
        print(f"{name.split(' x')[0]}: drctl {segs/float(dw):.1f} segments/s, pgBackRest {segs/float(pw):.1f} segments/s")
PY
echo "MB/s = PGDATA without pg_wal (backups, restores) or WAL bytes (wal rows) / wall; 10^6 bytes."
echo "speed = pgBackRest wall / drctl wall (>1: drctl faster); bytes ratio <1: drctl smaller."
echo "RSS = peak resident set of the largest single process of the command (pgBackRest runs process-max=2 workers); the detached background workers of the async rows are not counted for either tool."
echo "repositories at the end: drctl $(bytes_of "$work/drctl-repo") bytes, pgBackRest $(bytes_of "$work/pgbr-repo") bytes (archive $(bytes_of "$work/pgbr-repo/archive"), backups $(bytes_of "$work/pgbr-repo/backup")); after the full backups (incl. the WAL archive of the load): drctl $drctl_repo_full, pgBackRest $pgbr_repo_full"
echo "drctl full backup in stream mode (pg_basebackup, separate repository): ${stream_wall} s, RSS ${stream_rss} KiB, repository $stream_bytes bytes"
echo "drctl --json: full stored_bytes $(json_field "$work/m/drctl_full.out" stored_bytes) logical_bytes $(json_field "$work/m/drctl_full.out" logical_bytes) duration $(json_field "$work/m/drctl_full.out" duration_seconds) s; second stored_bytes $(json_field "$work/m/drctl_incr.out" stored_bytes) unchanged_bytes (not read) $(json_field "$work/m/drctl_incr.out" unchanged_bytes) new_chunks $(json_field "$work/m/drctl_incr.out" new_chunks) delta_chunks $(json_field "$work/m/drctl_incr.out" delta_chunks) duration $(json_field "$work/m/drctl_incr.out" duration_seconds) s"
echo "load: pgbench -i $(cut -d' ' -f1 "$work/m/load_pgbench.time" | tail -1) s; phase 3 pgbench -c 2 -t $TXNS: $(tail -1 "$work/m/pgbench_run.time" | cut -d' ' -f1) s, $tps"
echo "recovery of the full backup through the pgbench run ($recovery_segments WAL segments, restore included): ${recover_prefetch} s with prefetch, ${recover_none} s without"
echo "WAL fetched back byte-identical: $fetch_ok"
for v in "${verify_result[@]}"; do echo "restore check: $v"; done
fail=0
[ "$fetch_ok" = yes ] || fail=1
for v in "${verify_result[@]}"; do case $v in *MISMATCH*) fail=1 ;; esac; done
exit $fail
