#!/usr/bin/env bash
# Reproduces the token-layer rows of docs/benchmarks.md: `custos bench sign`
# on ECDSA P-256 and RSA-2048 keys in a SoftHSM2 and a tpm2-pkcs11 token,
# 1 thread, 2 threads and 2 processes, RUNS times each (median printed).
# Usage: [KINDS="softhsm2 tpm2 soft"] tools/bench-tokens.sh BUILD_DIR [SECONDS] [RUNS]
set -euo pipefail
B=${1:-build}/bin/custos
SECS=${2:-2}
RUNS=${3:-5}
T=$(mktemp -d /tmp/cu-bench-XXXXXX)
cleanup() { "$B" token stop --dir "$T/tpm2" >/dev/null 2>&1 || true; rm -rf "$T"; }
trap cleanup EXIT
export CUSTOS_PIN=bench-pin CUSTOS_SO_PIN=bench-so-pin

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

for kind in ${KINDS:-softhsm2 tpm2}; do
  "$B" token init --kind "$kind" --label bench --dir "$T/$kind" >/dev/null
  for type in ec-p256 rsa2048; do
    uri=$("$B" token keygen --dir "$T/$kind" --type "$type" --label "b-$type")
    for mode in "--threads 1" "--threads 2" "--processes 2"; do
      : > "$T/runs"
      for _ in $(seq "$RUNS"); do
        # shellcheck disable=SC2086
        "$B" bench sign --dir "$T/$kind" --uri "$uri" --seconds "$SECS" $mode --json >> "$T/runs"
      done
      layer=$(python3 -c 'import json,sys; [print(json.loads(l)["custos"]) for l in open(sys.argv[1])]' "$T/runs" | median)
      raw=$(python3 -c 'import json,sys; [print(json.loads(l)["raw-C_Sign"]) for l in open(sys.argv[1])]' "$T/runs" | median)
      copy=$(python3 -c 'import json,sys; [print(json.loads(l)["raw-C_Sign-copy"]) for l in open(sys.argv[1])]' "$T/runs" | median)
      python3 -c 'import sys; k,t,m,l,r,c=sys.argv[1:]; l,r,c=float(l),float(r),float(c)
print(f"| {k} | {t} | {m} | {l:,.0f} | {r:,.0f} | {c:,.0f} | {l/r:.2f} | {(l/c if c else 0):.2f} |")' \
        "$kind" "$type" "${mode#--}" "$layer" "$raw" "$copy"
    done
  done
  "$B" token stop --dir "$T/$kind" >/dev/null 2>&1 || true
done
