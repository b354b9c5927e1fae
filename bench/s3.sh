#!/usr/bin/env bash
# Side-by-side PostgreSQL backup benchmark on S3: drctl against pgBackRest, both writing to the
# same S3-compatible server on loopback, on one throwaway PostgreSQL 15 cluster whose
# archive_command pushes every WAL segment to both tools' S3 repositories.
#
#   0. the S3 server: s3s-fs (crates.io, an S3 API over a directory; a bucket is a subdirectory),
#      installed once with `cargo install` into $BENCH_CACHE, else moto's server (pip) as a
#      fallback; stunnel4 in front of it for TLS (pgBackRest's S3 driver speaks only HTTPS), with
#      a throwaway CA and server certificate made by openssl. Both tools go through the same TLS
#      terminator (drctl trusts the CA through SSL_CERT_FILE); DRCTL_TLS=0 sends drctl straight
#      to the server over HTTP instead
#   1. initdb, archive to both, pgbench -i -s $SCALE, an incompressible table ($RANDOM_MB MiB of
#      gen_random_bytes), CHECKPOINT
#   2. full backup:  drctl backup --pg --pg-mode local | pgbackrest backup --type=full
#      (and, for reference, drctl over plain HTTP into a bucket of its own, no TLS terminator)
#   3. pgbench -c 2 -t $TXNS, then the second backup:  drctl local mode | pgbackrest --type=incr
#      (drctl reads the delta bases from the base cache the full backup filled, $work/drctl-cache;
#      its size is printed)
#   4. restore of the newest backup into empty directories (then, untimed, each restore is
#      started and its rows compared with the live cluster unless VERIFY=0); then the same for
#      the full backups (drctl's full snapshot, pgBackRest's --set), compared with the rows the
#      cluster held when they were taken
#   5. drctl only: drctl copy --all --wal into a second bucket, then drctl check --read-data on
#      the copy
#   6. a table: wall time, throughput, CPU, peak RSS, bytes and S3 requests for both; the bytes
#      and objects each bucket holds
#
# S3 requests: drctl counts the HTTP requests it sends (retries included) and logs them when it
# closes a store (RUST_LOG=drctl::store::s3=debug: one JSON line per store); a phase's count is
# the sum over its processes. pgBackRest's are counted on the server: s3s-fs logs every request
# (RUST_LOG=s3s::service=debug) with its user agent, and the lines a phase added are counted, so
# they include the archive-push calls PostgreSQL makes during that phase (a few per backup); the
# same server-side count of drctl's requests is printed as a cross-check. With moto there is no
# server-side count.
#
# Every timed command runs as the postgres user under /usr/bin/time (see bench/lib.sh: wall
# seconds, peak RSS of the largest single process, CPU of the command's whole tree; the S3
# server and stunnel are not in it). The page cache is dropped before every timed phase when
# /proc/sys/vm/drop_caches is writable (DROP_CACHES=0 to skip): the buckets are directories on
# the same disk, so restores and checks read them cold. Both tools: zstd level 3, encryption
# (drctl AES-256-GCM, pgBackRest aes-256-cbc), pgBackRest process-max=2.
#
# Usage (as root; PostgreSQL itself runs as `postgres`):
#   bash bench/s3.sh                               # SCALE=100, RANDOM_MB=256
#   SCALE=5 RANDOM_MB=32 bash bench/s3.sh
# Environment: SCALE (pgbench scale, 100), RANDOM_MB (incompressible table, 256), TXNS (pgbench
# transactions per client in phase 3; 20000 at SCALE>=100, else 200*SCALE, at least 500),
# VERIFY (1), DROP_CACHES (1), KEEP (1 keeps the work directory), DRCTL_BIN (a prebuilt drctl;
# else `cargo build --release` here; DRCTL_REV: what it was built from), BENCH_DIR (parent of
# the work directory, /tmp), BENCH_CACHE (where s3s-fs is installed, ~/.cache/drctl-bench),
# S3S_FS (a prebuilt s3s-fs), S3_SERVER (s3s-fs or moto: force one), DRCTL_TLS (1: drctl
# through the TLS terminator too; 0: straight to the server over HTTP).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh

BENCH_CACHE=${BENCH_CACHE:-$HOME/.cache/drctl-bench}
DRCTL_TLS=${DRCTL_TLS:-1}
S3S_FS_VERSION=0.14.1 # the newest s3s-fs needs a newer rustc than the project's
stanza=bench
bench_init drctl-s3-bench
[ -x /usr/bin/stunnel4 ] || { apt-get update -qq && apt-get install -y -qq stunnel4 >/dev/null; }

# ---- 0. the S3 server and its TLS terminator ---------------------------------------------------
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench-secret-key AWS_REGION=us-east-1
s3_port=$(free_port)
tls_port=$(free_port)
s3_dir="$work/s3" # s3s-fs: one subdirectory per bucket
buckets=(drctl-bench drctl-http drctl-copy pgbackrest)
server=${S3_SERVER:-}
s3s_fs=${S3S_FS:-$BENCH_CACHE/bin/s3s-fs}
if [ "$server" != moto ] && [ ! -x "$s3s_fs" ]; then
  say "0. installing s3s-fs $S3S_FS_VERSION into $BENCH_CACHE (once, a few minutes)"
  mkdir -p "$BENCH_CACHE"
  if cargo install "s3s-fs@$S3S_FS_VERSION" --features binary --locked --root "$BENCH_CACHE" >"$work/logs/s3s-fs-install.log" 2>&1; then
    server=s3s-fs
  else
    echo "note: s3s-fs could not be installed (see below); falling back to moto's server" >&2
    tail -n 5 "$work/logs/s3s-fs-install.log" >&2
    server=moto
  fi
fi
[ -n "$server" ] || server=s3s-fs
s3_log="$work/logs/s3-server.log"
# Neither s3s-fs (hyper) nor moto sets TCP_NODELAY on the connections it accepts: a response
# whose headers and body go out in two writes then waits for the client's delayed ACK (40 ms
# on Linux) on most small requests, which no real S3 service does and which would make every
# phase a count of requests times 40 ms. A tiny LD_PRELOAD shim sets it on each accepted socket.
cat >"$work/nodelay.c" <<'C'
#define _GNU_SOURCE
#include <dlfcn.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
static int nodelay(int fd) {
  int one = 1;
  if (fd >= 0) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return fd;
}
int accept4(int s, struct sockaddr *addr, socklen_t *len, int flags) {
  static int (*real)(int, struct sockaddr *, socklen_t *, int);
  if (!real) real = (int (*)(int, struct sockaddr *, socklen_t *, int))dlsym(RTLD_NEXT, "accept4");
  return nodelay(real(s, addr, len, flags));
}
int accept(int s, struct sockaddr *addr, socklen_t *len) {
  static int (*real)(int, struct sockaddr *, socklen_t *);
  if (!real) real = (int (*)(int, struct sockaddr *, socklen_t *))dlsym(RTLD_NEXT, "accept");
  return nodelay(real(s, addr, len));
}
C
cc -shared -fPIC -O2 -o "$work/nodelay.so" "$work/nodelay.c" -ldl
if [ "$server" = s3s-fs ]; then
  server_version="s3s-fs $("$s3s_fs" --version | awk '{print $2}')"
  mkdir -p "${buckets[@]/#/$s3_dir/}"
  # s3s::service=debug: one line per request, with its method, path and user agent.
  LD_PRELOAD="$work/nodelay.so" RUST_LOG=s3s::service=debug "$s3s_fs" --host 127.0.0.1 --port "$s3_port" \
    --access-key "$AWS_ACCESS_KEY_ID" --secret-key "$AWS_SECRET_ACCESS_KEY" "$s3_dir" >"$s3_log" 2>&1 &
  bg_pids+=($!)
  server_pid=$!
else
  python3 -c 'import moto.server' 2>/dev/null || pip install -q 'moto[server]' >"$work/logs/moto-install.log" 2>&1
  server_version="moto $(python3 -c 'import moto; print(moto.__version__)') (fallback: s3s-fs unavailable)"
  LD_PRELOAD="$work/nodelay.so" moto_server -H 127.0.0.1 -p "$s3_port" >"$s3_log" 2>&1 &
  bg_pids+=($!)
  server_pid=$!
fi
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$s3_port/" && break; sleep 0.1; done
if [ "$server" = moto ]; then # buckets through the API (moto checks no signature)
  for b in "${buckets[@]}"; do curl -sf -X PUT "http://127.0.0.1:$s3_port/$b" >/dev/null; done
fi

# TLS: a throwaway CA, a certificate for 127.0.0.1 signed by it, stunnel4 in front of the server.
tls="$work/tls"
mkdir -p "$tls"
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$tls/ca.key" -out "$tls/ca.crt" -days 2 -subj "/CN=drctl bench CA" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -keyout "$tls/server.key" -out "$tls/server.csr" -subj /CN=127.0.0.1 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' >"$tls/server.ext"
openssl x509 -req -in "$tls/server.csr" -CA "$tls/ca.crt" -CAkey "$tls/ca.key" -CAcreateserial \
  -out "$tls/server.crt" -days 2 -extfile "$tls/server.ext" 2>/dev/null
chmod 644 "$tls/ca.crt"
# drctl (rustls with the system's roots) trusts the CA through SSL_CERT_FILE: every drctl the
# script starts gets it, and so do the restored clusters' restore_command (wal-fetch), which
# inherit this environment, as they do the AWS_* credentials.
export SSL_CERT_FILE="$tls/ca.crt"
cat >"$tls/stunnel.conf" <<CONF
foreground = yes
pid =
debug = warning
socket = l:TCP_NODELAY=1
socket = r:TCP_NODELAY=1
[s3]
accept = 127.0.0.1:$tls_port
connect = 127.0.0.1:$s3_port
cert = $tls/server.crt
key = $tls/server.key
CONF
stunnel4 "$tls/stunnel.conf" >"$work/logs/stunnel.log" 2>&1 &
bg_pids+=($!)
stunnel_pid=$!
for _ in $(seq 100); do curl -s -o /dev/null --cacert "$tls/ca.crt" "https://127.0.0.1:$tls_port/" && break; sleep 0.1; done
tls_version=$(stunnel4 -version 2>&1 | awk '/^stunnel/ {print $1 " " $2; exit}')

# Stored bytes and objects of a bucket: the directory for s3s-fs (object data; s3s-fs keeps
# each object's metadata in small JSON files beside the buckets, not counted), a listing for moto.
bucket_stats() { # prints "bytes objects"
  if [ "$server" = s3s-fs ]; then
    echo "$(bytes_of "$s3_dir/$1") $(find "$s3_dir/$1" -type f | wc -l)"
  else
    python3 - "$s3_port" "$1" <<'PY'
import boto3, sys
s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{sys.argv[1]}")
sizes = [o["Size"] for p in s3.get_paginator("list_objects_v2").paginate(Bucket=sys.argv[2]) for o in p.get("Contents", [])]
print(sum(sizes), len(sizes))
PY
  fi
}
bucket_bytes() { bucket_stats "$1" | cut -d' ' -f1; }
# The server's view of a phase: s3s-fs logs each request (method, headers, user agent) and each
# response (status, headers) as one event followed by its span, whose start_time pairs them.
# server_traffic MARK AGENT prints, for the requests of that user agent in what the log gained
# since MARK (its size before the phase): requests, bytes downloaded (GET bodies), bytes uploaded
# (PUT bodies). With moto: "- - -".
log_mark() { stat -c %s "$s3_log"; }
server_traffic() {
  if [ "$server" != s3s-fs ]; then echo "- - -"; return; fi
  tail -c +$(($1 + 1)) "$s3_log" | python3 -c '
import re, sys
agent = sys.argv[1]
reqs, resps, pending = {}, {}, None
header = lambda line, name: (re.search(r"\"%s\": \"(\d+)\"" % name, line) or [None, None])[1]
for line in sys.stdin.buffer:
    line = line.decode("utf-8", "replace")
    if "s3s::service: req: Request {" in line:
        method = re.search(r"method: (\w+)", line).group(1)
        up = header(line, "x-amz-decoded-content-length") or header(line, "content-length") or 0
        pending = ("req", (agent in line, method, int(up)))
    elif "s3s::service: duration:" in line:
        status = int(re.search(r"status: (\d+)", line).group(1))
        pending = ("resp", (status, int(header(line, "content-length") or 0)))
    elif pending and "in s3s::service::call with start_time:" in line:
        key = line.split("start_time:", 1)[1].strip()
        (reqs if pending[0] == "req" else resps)[key] = pending[1]
        pending = None
n = down = up = 0
for key, (mine, method, sent) in reqs.items():
    if not mine:
        continue
    n += 1
    status, length = resps.get(key, (0, 0))
    if method == "GET" and status in (200, 206):
        down += length
    if method == "PUT":
        up += sent
print(n, down, up)
' "$2"
}
# CPU seconds (user + system) a process has used so far: the S3 server's and stunnel's per phase.
proc_cpu() { awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f\n", ($14 + $15) / hz }' "/proc/$1/stat"; }
# drctl's own count: the sum of the "S3 requests sent" lines the phase's processes logged.
drctl_requests() { # drctl_requests NAME: from $work/m/NAME.err
  python3 - "$work/m/$1.err" <<'PY'
import json, sys
total = 0
for line in open(sys.argv[1], errors="replace"):
    if '"S3 requests sent"' in line:
        total += json.loads(line)["fields"]["total"]
print(total)
PY
}
drctl_methods() { # the by-method counts of the phase, summed
  python3 - "$work/m/$1.err" <<'PY'
import collections, json, sys
by = collections.Counter()
for line in open(sys.argv[1], errors="replace"):
    if '"S3 requests sent"' in line:
        by.update(json.loads(json.loads(line)["fields"]["by_method"]))
print(" ".join(f"{k} {v}" for k, v in sorted(by.items())))
PY
}

# ---- 1. the cluster and its data ---------------------------------------------------------------
port=$(free_port)
if [ "$DRCTL_TLS" = 1 ]; then
  drctl_endpoint="https://127.0.0.1:$tls_port"
else
  drctl_endpoint="http://127.0.0.1:$s3_port"
fi
# Everything a drctl process needs, passed explicitly (archive_command runs in the server's
# environment); RUST_LOG makes each process log its S3 request count.
# Local-mode backups keep a copy of the packs they write in a base cache (the next incremental
# reads its delta bases from it): in the work directory, so each run starts without one.
install -d -o postgres -g postgres -m 700 "$work/drctl-cache"
s3_env=("AWS_ACCESS_KEY_ID=$AWS_ACCESS_KEY_ID" "AWS_SECRET_ACCESS_KEY=$AWS_SECRET_ACCESS_KEY" "AWS_REGION=$AWS_REGION"
  DRCTL_S3_PATH_STYLE=true "SSL_CERT_FILE=$tls/ca.crt" "RUST_LOG=drctl=warn,drctl::store::s3=debug" DRCTL_LOG_FORMAT=json
  "DRCTL_CACHE_DIR=$work/drctl-cache")
drctl_repo=s3://drctl-bench/repo
drctl_env=(env "${s3_env[@]}" "DRCTL_S3_ENDPOINT=$drctl_endpoint" "DRCTL_REPO=$drctl_repo" "DRCTL_KEY_FILE=$work/keys/drctl.key")
# The reference repository: plain HTTP, straight to the server.
drctl_http_env=(env "${s3_env[@]}" "DRCTL_S3_ENDPOINT=http://127.0.0.1:$s3_port" DRCTL_REPO=s3://drctl-http/repo
  "DRCTL_KEY_FILE=$work/keys/drctl-http.key")
pgbr_conf="$work/pgbackrest.conf"
pgbr=(pgbackrest "--config=$pgbr_conf" "--stanza=$stanza")
install -d -o postgres -g postgres "$work/pgbr-log" "$work/pgbr-lock" "$work/pgbr-spool"
cat >"$pgbr_conf" <<CONF
[global]
repo1-type=s3
repo1-path=/repo
repo1-s3-bucket=pgbackrest
repo1-s3-endpoint=127.0.0.1
repo1-storage-port=$tls_port
repo1-s3-uri-style=path
repo1-storage-verify-tls=n
repo1-s3-region=$AWS_REGION
repo1-s3-key=$AWS_ACCESS_KEY_ID
repo1-s3-key-secret=$AWS_SECRET_ACCESS_KEY
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
say "S3 server: $server_version on 127.0.0.1:$s3_port; TLS: $tls_version on 127.0.0.1:$tls_port; drctl endpoint $drctl_endpoint"
say "work directory $work; SCALE=$SCALE RANDOM_MB=$RANDOM_MB TXNS=$TXNS (x2 clients)"
say "1. initdb, drctl init + key file (two repositories), pgBackRest stanza"
for r in "drctl-bench drctl.key $drctl_endpoint" "drctl-http drctl-http.key http://127.0.0.1:$s3_port"; do
  read -r bucket key endpoint <<<"$r"
  pg env "${s3_env[@]}" "DRCTL_S3_ENDPOINT=$endpoint" DRCTL_PASSWORD="bench passphrase" "$drctl" -q init --repo "s3://$bucket/repo" \
    2>>"$work/logs/init.log"
  pg env "${s3_env[@]}" "DRCTL_S3_ENDPOINT=$endpoint" DRCTL_PASSWORD="bench passphrase" "$drctl" -q key add --repo "s3://$bucket/repo" \
    --new-key-file "$work/keys/$key" 2>>"$work/logs/init.log"
done
cluster_create "$work/pgdata" "$port" "${drctl_env[*]} $drctl -q wal-push %p && ${pgbr[*]} archive-push %p"
pg "${pgbr[@]}" stanza-create
load_data
archived_load=$(sql "SELECT archived_count FROM pg_stat_archiver")

# ---- 2. full backups ---------------------------------------------------------------------------
dsn="host=127.0.0.1 port=$port user=postgres"
local_mode=(--pg-mode local --pgdata "$work/pgdata")
# phase NAME TOOL BUCKET CMD...: one timed command (drop_caches, measure), with what it added to
# BUCKET, its S3 requests (drctl: its own count; pgBackRest: the server's) and the server's view
# (requests, bytes down and up, CPU of the S3 server and stunnel) appended to $traffic.
# Sets WALL RSS CPU ADDED REQ.
traffic="$work/traffic.tsv"
phase() {
  local name=$1 tool=$2 bucket=$3 before mark s3_cpu tls_cpu agent=aws-sdk-rust
  shift 3
  [ "$tool" = pgBackRest ] && agent=pgBackRest
  before=$(bucket_bytes "$bucket")
  drop_caches
  mark=$(log_mark) s3_cpu=$(proc_cpu "$server_pid") tls_cpu=$(proc_cpu "$stunnel_pid")
  measure "$name" "$@"
  s3_cpu=$(python3 -c "print(round($(proc_cpu "$server_pid") - $s3_cpu, 2))")
  tls_cpu=$(python3 -c "print(round($(proc_cpu "$stunnel_pid") - $tls_cpu, 2))")
  ADDED=$(($(bucket_bytes "$bucket") - before))
  read -r sreq sdown sup < <(server_traffic "$mark" "$agent")
  if [ "$tool" = drctl ]; then REQ=$(drctl_requests "$name"); else REQ=$sreq; fi
  record_traffic "$name" "$tool" "$REQ" "$sreq" "$sdown" "$sup" "$s3_cpu" "$tls_cpu"
  say "   ${WALL} s, CPU ${CPU} s, RSS ${RSS} KiB, +$ADDED bytes in $bucket, $REQ S3 requests$([ "$tool" = drctl ] && echo " ($(drctl_methods "$name"))"); server: $sreq requests, $sdown bytes down, $sup up, CPU s3 ${s3_cpu} s, stunnel ${tls_cpu} s"
}
record_traffic() { printf '%s\n' "$(IFS=$'\t'; echo "$*")" >>"$traffic"; }
# A row: name, then for each tool wall, bytes the MB/s are of, CPU, RSS KiB, S3 bytes, requests.
say "2. drctl full backup over plain HTTP, no TLS terminator (reference; its own bucket)"
phase drctl_full_http drctl drctl-http "${drctl_http_env[@]}" "$drctl" backup --pg "$dsn" "${local_mode[@]}" --json
http=("$WALL" "$pgdata" "$CPU" "$RSS" "$ADDED" "$REQ")
wait_archived
say "2. drctl full backup (local mode, $drctl_endpoint)"
phase drctl_full drctl drctl-bench "${drctl_env[@]}" "$drctl" backup --pg "$dsn" "${local_mode[@]}" --json
d=("$WALL" "$pgdata" "$CPU" "$RSS" "$ADDED" "$REQ")
wait_archived
say "2. pgbackrest full backup"
phase pgbr_full pgBackRest pgbackrest "${pgbr[@]}" backup --type=full
p=("$WALL" "$pgdata" "$CPU" "$RSS" "$ADDED" "$REQ")
record "full backup (bytes added)" "${d[@]}" "${p[@]}"
record "full backup, drctl over HTTP (reference)" "${http[@]}" "${p[@]}"
expect_full=$(sql "$fingerprint_sql") # what a restore of the full backups must hold

# ---- 3. changes, then incremental backups ------------------------------------------------------
say "3. pgbench -c 2 -j 2 -t $TXNS --random-seed=42"
measure pgbench_run $pgbin/pgbench -c 2 -j 2 -t "$TXNS" --random-seed=42 -h 127.0.0.1 -p "$port" -U postgres postgres
tps=$(grep -o 'tps = [0-9.]*' "$work/m/pgbench_run.out" | head -1)
say "   ${WALL} s, $tps"
wait_archived
pgdata2=$(($(bytes_of "$work/pgdata") - $(bytes_of "$work/pgdata/pg_wal")))
say "3. drctl second backup (local mode: unchanged files skipped, changed blocks as deltas)"
phase drctl_incr drctl drctl-bench "${drctl_env[@]}" "$drctl" backup --pg "$dsn" "${local_mode[@]}" --json
d=("$WALL" "$pgdata2" "$CPU" "$RSS" "$ADDED" "$REQ")
wait_archived
say "3. pgbackrest incremental backup"
phase pgbr_incr pgBackRest pgbackrest "${pgbr[@]}" backup --type=incr
p=("$WALL" "$pgdata2" "$CPU" "$RSS" "$ADDED" "$REQ")
record "incremental after pgbench (bytes added)" "${d[@]}" "${p[@]}"

# ---- 4. restores -------------------------------------------------------------------------------
# restore_pair ROW SNAPSHOT EXPECT BYTES SUFFIX PGBR_ARG...: drctl restores SNAPSHOT and
# pgBackRest restores with PGBR_ARG..., each into an empty directory (timed as the phases
# drctl_restoreSUFFIX and pgbr_restoreSUFFIX, MB/s of BYTES); then, untimed, each restore is
# started and its rows compared with EXPECT.
restore_pair() {
  local row=$1 snapshot=$2 expect=$3 bytes=$4 suffix=$5 dir
  shift 5
  for dir in restore-drctl restore-pgbr; do install -d -o postgres -g postgres -m 700 "$work/$dir"; done
  say "4. drctl restore $snapshot"
  phase "drctl_restore$suffix" drctl drctl-bench "${drctl_env[@]}" "$drctl" restore "$snapshot" --to "$work/restore-drctl" \
    --key-file "$work/keys/drctl.key"
  d=("$WALL" "$bytes" "$CPU" "$RSS" "$(bytes_of "$work/restore-drctl")" "$REQ")
  say "4. pgbackrest restore $*"
  phase "pgbr_restore$suffix" pgBackRest pgbackrest "${pgbr[@]}" restore "$@" "--pg1-path=$work/restore-pgbr"
  p=("$WALL" "$bytes" "$CPU" "$RSS" "$(bytes_of "$work/restore-pgbr")" "$REQ")
  record "$row" "${d[@]}" "${p[@]}"
  if [ "$VERIFY" = 1 ]; then
    say "4. verify the restores (untimed)"
    for dir in restore-drctl restore-pgbr; do verify_restore "$work/$dir" "$expect"; done
  fi
  rm -rf "$work/restore-drctl" "$work/restore-pgbr"
}
wait_archived
restore_pair "restore of the incremental (bytes restored)" latest "$(sql "$fingerprint_sql")" "$pgdata2" ""
# The full backups restored too: no deltas, each tool's plainest case. --type=immediate: recovery
# ends where the backup is consistent, as drctl's restore of a snapshot does (pgBackRest's default
# would replay the whole archive).
full_set=$(pg "${pgbr[@]}" info --output=json |
  python3 -c 'import json, sys; print([b["label"] for b in json.load(sys.stdin)[0]["backup"] if b["type"] == "full"][-1])')
restore_pair "restore of the full backup (bytes restored)" "$(json_field "$work/m/drctl_full.out" snapshot_id)" \
  "$expect_full" "$pgdata" _full "--set=$full_set" --type=immediate --target-action=promote

# ---- 5. drctl copy to a second bucket, then check --read-data on the copy ------------------------
none=(0 0 0 0 0 -)
source_bytes=$(bucket_bytes drctl-bench)
say "5. drctl copy --all --wal s3://drctl-bench/repo -> s3://drctl-copy/repo"
phase drctl_copy drctl drctl-copy "${drctl_env[@]}" "$drctl" copy --from "$drctl_repo" --to s3://drctl-copy/repo --all --wal --json
copied=$(json_field "$work/m/drctl_copy.out" bytes_copied)
record "copy --all --wal to a second bucket (bytes added)" "$WALL" "$ADDED" "$CPU" "$RSS" "$ADDED" "$REQ" "${none[@]}"
say "5. drctl check --read-data on the copy"
copy_bytes=$(bucket_bytes drctl-copy)
phase drctl_check drctl drctl-copy "${drctl_env[@]}" "$drctl" check --repo s3://drctl-copy/repo --read-data --json
record "check --read-data of the copy (bytes read)" "$WALL" "$copy_bytes" "$CPU" "$RSS" "$copy_bytes" "$REQ" "${none[@]}"

# WAL archiving: the wal-push processes of archive_command log their counts into the server log.
read -r walpush_procs walpush_reqs < <(python3 - "$work/logs/postgres.log" <<'PY'
import json, sys
n = total = 0
for line in open(sys.argv[1], errors="replace"):
    if '"S3 requests sent"' in line:
        n += 1
        total += json.loads(line[line.index("{"):])["fields"]["total"]
print(n, total)
PY
)
archived_total=$(sql "SELECT archived_count FROM pg_stat_archiver")

# ---- 6. the table ------------------------------------------------------------------------------
echo
echo "== drctl ($drctl_rev) vs $(pgbackrest version) on S3: PostgreSQL 15, pgbench scale $SCALE + $RANDOM_MB MiB random bytea"
echo "S3 server: $server_version on loopback; TLS terminator: $tls_version (TLS 1.3, self-signed CA) in front of it for pgBackRest$([ "$DRCTL_TLS" = 1 ] && echo " and drctl" || echo "; drctl over plain HTTP")"
machine_line
echo "PGDATA: $pgdata bytes without pg_wal after phase 1 ($pgdata2 after phase 3); pg_wal $pgwal bytes"
python3 - "$results" <<'PY'
import sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
hdr = ["phase", "drctl s", "MB/s", "CPU s", "RSS MiB", "bytes", "requests", "req/GiB",
       "pgBackRest s", "MB/s", "CPU s", "RSS MiB", "bytes", "requests", "req/GiB", "speed", "bytes ratio"]
def tool(wall, size, cpu, rss, nbytes, req):
    wall, size, nbytes = float(wall), int(size), int(nbytes)
    if wall == 0:
        return ["-"] * 7
    per_gib = f"{int(req) / (nbytes / 2**30):.0f}" if req.isdigit() and nbytes else "-"
    return [f"{wall:.2f}", f"{size / 1e6 / wall:.0f}", cpu, f"{int(rss) / 1024:.0f}", f"{nbytes / 1e6:.1f} MB", req, per_gib]
out = []
for r in rows:
    d, p = tool(*r[1:7]), tool(*r[7:13])
    speed = f"{float(r[7]) / float(r[1]):.2f}" if float(r[7]) else "-"
    ratio = f"{int(r[5]) / int(r[11]):.2f}" if int(r[11]) else "-"
    out.append([r[0]] + d + p + [speed, ratio])
w = [max(len(r[i]) for r in out + [hdr]) for i in range(len(hdr))]
line = lambda r: "| " + " | ".join(c.ljust(w[i]) if i == 0 else c.rjust(w[i]) for i, c in enumerate(r)) + " |"
print(line(hdr))
print("|" + "|".join("-" * (x + 2) for x in w) + "|")
for r in out:
    print(line(r))
PY
echo "MB/s = PGDATA without pg_wal (backups, restores) or the bytes column (copy, check) / wall; 10^6 bytes."
echo "speed = pgBackRest wall / drctl wall (>1: drctl faster); bytes ratio <1: drctl smaller; req/GiB = requests per GiB (2^30) of the bytes column."
echo "requests: drctl's own count (sum over the phase's processes); pgBackRest's as the S3 server logged them during the phase (archive-push calls included)."
echo "RSS = peak resident set of the largest single process of the command; CPU = user + system of the command's processes (not the S3 server's or stunnel's)."
echo
echo "The S3 server's view of each phase (requests of that tool's user agent; for drctl, its own count beside it; archive_command's calls during the phase included):"
python3 - "$traffic" <<'PY2'
import sys
hdr = ["phase", "tool", "requests (own)", "requests (server)", "MB down", "MB up", "S3 server CPU s", "stunnel CPU s"]
mb = lambda b: f"{int(b) / 1e6:.1f}" if b.isdigit() else b
out = [[n, t, own if t == "drctl" else "-", sreq, mb(down), mb(up), s3, tls]
       for n, t, own, sreq, down, up, s3, tls in (l.rstrip("\n").split("\t") for l in open(sys.argv[1]))]
w = [max(len(r[i]) for r in out + [hdr]) for i in range(len(hdr))]
line = lambda r: "| " + " | ".join(c.ljust(w[i]) if i < 2 else c.rjust(w[i]) for i, c in enumerate(r)) + " |"
print(line(hdr))
print("|" + "|".join("-" * (x + 2) for x in w) + "|")
for r in out:
    print(line(r))
PY2
echo
echo "| bucket | bytes | objects |"
echo "|---|--:|--:|"
for b in "${buckets[@]}"; do read -r nbytes nobjects < <(bucket_stats "$b"); echo "| $b | $nbytes | $nobjects |"; done
echo
echo "drctl-bench: full + incremental + the WAL archive; drctl-copy: its copy (drctl copy reported $copied bytes copied from $source_bytes); drctl-http: one full backup over plain HTTP, no WAL; pgbackrest: full + incremental + its WAL archive."
echo "WAL archiving (archive_command, every segment to both tools): $archived_total segments archived in all, $archived_load of them during the load; drctl wal-push: $walpush_procs processes logged $walpush_reqs S3 requests ($(python3 -c "print(round($walpush_reqs / max($walpush_procs, 1), 1))") per segment)."
echo "drctl --json: full stored_bytes $(json_field "$work/m/drctl_full.out" stored_bytes) logical_bytes $(json_field "$work/m/drctl_full.out" logical_bytes); second stored_bytes $(json_field "$work/m/drctl_incr.out" stored_bytes) unchanged_bytes (not read) $(json_field "$work/m/drctl_incr.out" unchanged_bytes) new_chunks $(json_field "$work/m/drctl_incr.out" new_chunks) delta_chunks $(json_field "$work/m/drctl_incr.out" delta_chunks)"
for name in drctl_full_http drctl_full drctl_incr drctl_restore drctl_restore_full drctl_copy drctl_check; do
  echo "drctl requests by method, $name: $(drctl_methods "$name")"
done
echo "load: pgbench -i $(cut -d' ' -f1 "$work/m/load_pgbench.time" | tail -1) s; phase 3 pgbench -c 2 -t $TXNS: $(tail -1 "$work/m/pgbench_run.time" | cut -d' ' -f1) s, $tps"
for v in "${verify_result[@]}"; do echo "restore check: $v"; done
fail=0
for v in "${verify_result[@]}"; do case $v in *MISMATCH*) fail=1 ;; esac; done
exit $fail
