#!/usr/bin/env bash
# The quarterly DR drill: one `drctl drill` per policy file given, each record kept as JSON, one
# summary line per policy, and an exit code a CI job or a CronJob can act on.
#
#   scripts/quarterly-drill.sh [--out DIR] POLICY.yaml...
#
# Each drill restores the policy's backup into a scratch cluster, verifies it and measures RTO and
# RPO against the policy's targets (docs/DRILLS.md); the record is also stored in the policy's
# primary repository (`drctl drill list --policy FILE`). DRILL_ARGS adds drill flags, e.g.
# DRILL_ARGS="--random-within 7d" or "--pushgateway URL"; DRCTL names the drctl binary.
#
# Exit codes: 0 every drill passed; 16 a drill ran and failed a check or missed a target (and no
# drill failed otherwise); any other code: a drill could not run to its end (the first such
# drill's documented code: 2 bad policy or flags, 3 damaged data, 13 nothing to restore, …).
set -uo pipefail
drctl=${DRCTL:-drctl}
out=.
if [ "${1:-}" = --out ]; then
  out=$2
  shift 2
fi
if [ $# -eq 0 ]; then
  echo "usage: $0 [--out DIR] POLICY.yaml..." >&2
  exit 2
fi
mkdir -p "$out" || exit 2
worst=0
for policy in "$@"; do
  name=$(basename "$policy" .yaml)
  record="$out/drill-$name-$(date -u +%Y%m%dT%H%M%SZ).json"
  # shellcheck disable=SC2086 # DRILL_ARGS is a list of flags.
  "$drctl" drill --policy "$policy" --json ${DRILL_ARGS:-} > "$record"
  code=$?
  summary=$(python3 -c '
import json, sys
try:
    r = json.load(open(sys.argv[1]))
except Exception:
    sys.exit(1)
def s(v): return "-" if v is None else "%.1fs" % v
print("%s RTO %s (target %s) RPO %s (target %s)%s" % ("passed" if r["passed"] else "FAILED",
      s(r["rto_seconds"]), s(r["targets"]["rto_seconds"]), s(r["rpo_seconds"]), s(r["targets"]["rpo_seconds"]),
      "".join("\n    " + f for f in r["failures"])))' "$record" 2>/dev/null) || summary="no record (exit $code)"
  echo "$name: $summary; record in $record"
  if [ $code -ne 0 ] && { [ $worst -eq 0 ] || [ $worst -eq 16 ]; }; then
    worst=$code
  fi
done
exit $worst
