#!/bin/bash
# What the audit log costs custosd: alternating runs with the log on and off
# (needs a benchmark build: cmake -S . -B build-bench -DCMAKE_C_FLAGS=-DCUSTOS_AUDIT_BENCH_SWITCH;
# cmake --build build-bench --target custosd custos). custosd CPU (utime+stime
# from /proc) per registration, and `custos bench load`'s rate.
#   bench_load_audit.sh BIN_DIR [COUNT [ROUNDS [symmetric|x509]]]
B=${1:?bin dir}; N=${2:-5000}; ROUNDS=${3:-3}; MODE=${4:-symmetric}
T=$(mktemp -d /tmp/audit-load.XXXXXX)
echo "log-level = warn" > $T/conf
tick=$(getconf CLK_TCK)
cpu() { awk '{print $14+$15}' /proc/$1/stat; }
run() { # label env
  local label=$1; shift
  rm -f $T/var/endpoint
  env "$@" $B/custosd --state $T/var --listen 127.0.0.1:0 --config $T/conf >>$T/log 2>&1 &
  local pid=$!
  for _ in $(seq 1 200); do [ -s $T/var/endpoint ] && break; sleep 0.05; done
  local c0; c0=$(cpu $pid)
  out=$($B/custos bench load --state $T/var --mode $MODE --count $N --concurrency 64 --json 2>&1)
  local c1; c1=$(cpu $pid)
  kill -TERM $pid; wait $pid 2>/dev/null
  rate=$(echo "$out" | sed 's/.*"perSecond":\([0-9.]*\).*/\1/')
  us=$(awk -v a=$c0 -v b=$c1 -v n=$N -v t=$tick 'BEGIN{printf "%.0f", (b-a)/t/n*1e6}')
  echo "$label $rate/s custosd-cpu ${us}us/registration"
}
for r in $(seq 1 $ROUNDS); do
  run on
  run off CUSTOS_BENCH_AUDIT_OFF=1
done
rm -rf $T
