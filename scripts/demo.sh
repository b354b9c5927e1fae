#!/usr/bin/env bash
# drctl's main job end to end on the embedded default: a local repository, no cloud account.
# Creates a repository, backs up a directory, changes it, backs up again (deduplicated),
# restores both snapshots into new directories, verifies them byte for byte, and checks
# every stored byte. Everything lives in one temporary directory, removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --locked --quiet
drctl="$PWD/target/release/drctl"
work=$(mktemp -d /tmp/drctl-demo.XXXXXX)
trap 'status=$?; rm -rf "$work"; [ $status -eq 0 ] || echo "demo FAILED (exit $status)" >&2' EXIT
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
printf '\ndemo passed\n'
