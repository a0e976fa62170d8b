#!/usr/bin/env bash
# Reproduces the token-layer rows of docs/benchmarks.md: `custos bench sign`
# on ECDSA P-256, RSA-2048 and HMAC-SHA256 keys in SoftHSM2, tpm2-pkcs11 and
# custos-soft tokens, 1 thread, 2 threads and 2 processes, RUNS times each
# (median printed), beside raw C_Sign and a software key in OpenSSL.
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

for kind in ${KINDS:-softhsm2 tpm2 soft}; do
  "$B" token init --kind "$kind" --label bench --dir "$T/$kind" >/dev/null
  for type in ec-p256 rsa2048 hmac256; do
    if [ "$type" = hmac256 ] && [ "$kind" = tpm2 ]; then
      head -c 32 /dev/urandom > "$T/hmac.key"   # tpm2-pkcs11 cannot generate one
      uri=$("$B" token hmac-import --dir "$T/$kind" --key-file "$T/hmac.key" --label "b-$type")
    else
      uri=$("$B" token keygen --dir "$T/$kind" --type "$type" --label "b-$type")
    fi
    for mode in "--threads 1" "--threads 2" "--processes 2"; do
      : > "$T/runs"
      for _ in $(seq "$RUNS"); do
        # shellcheck disable=SC2086
        "$B" bench sign --dir "$T/$kind" --uri "$uri" --seconds "$SECS" $mode --json >> "$T/runs"
      done
      layer=$(python3 -c 'import json,sys; [print(json.loads(l)["custos"]) for l in open(sys.argv[1])]' "$T/runs" | median)
      raw=$(python3 -c 'import json,sys; [print(json.loads(l)["raw-C_Sign"]) for l in open(sys.argv[1])]' "$T/runs" | median)
      copy=$(python3 -c 'import json,sys; [print(json.loads(l)["raw-C_Sign-copy"]) for l in open(sys.argv[1])]' "$T/runs" | median)
      soft=$(python3 -c 'import json,sys; [print(json.loads(l)["openssl-software"]) for l in open(sys.argv[1])]' "$T/runs" | median)
      python3 -c 'import sys; k,t,m,l,r,c,s=sys.argv[1:]; l,r,c,s=float(l),float(r),float(c),float(s)
f=lambda x: f"{x:,.0f}" if x else "—"; q=lambda a,b: f"{a/b:.2f}" if b else "—"
print(f"| {k} | {t} | {m} | {f(l)} | {f(r)} | {f(c)} | {f(s)} | {q(l,r)} | {q(l,c)} | {q(l,s)} |")' \
        "$kind" "$type" "${mode#--}" "$layer" "$raw" "$copy" "$soft"
    done
  done
  "$B" token stop --dir "$T/$kind" >/dev/null 2>&1 || true
done
