#!/usr/bin/env bash
# Registrations/s and p99 side by side in one run (docs/benchmarks.md):
# one custosd on SQLite, one on PostgreSQL, two on the same PostgreSQL,
# taking turns ROUNDS times. PostgreSQL durable (fsync on, a commit waits
# for its WAL flush; BENCH_PG_DURABLE=0: fsync off), private to this run.
# Not part of ctest:
#   tests/server/bench_scaleout.sh build/bin [COUNT [ROUNDS [CONCURRENCY]]]
BIN=${1:?usage: bench_scaleout.sh BIN [COUNT [ROUNDS [CONCURRENCY]]]}
COUNT=${2:-4000}
ROUNDS=${3:-2}
CONC=${4:-32}
unset CUSTOS_TEST_STORE CUSTOS_STORE CUSTOS_STORE_PASSWORD_FILE
. "$(dirname "$0")/lib.sh"
PGF=$(cd "$(dirname "$0")/../common" && pwd)/pg_fixture.sh
# The server is stopped before finish, which removes $T (its pid file with it).
trap '"$PGF" stop "$T/pg" >/dev/null 2>&1; finish; exit $?' EXIT
PG_FIXTURE_DURABLE=${BENCH_PG_DURABLE:-1} "$PGF" start "$T/pg" >/dev/null || { bad "PostgreSQL did not start"; exit 1; }
PGURI=$("$PGF" createdb "$T/pg" bench)

conf="log-level = warn"
bench() { "$CUSTOS" bench load --state "$1" --json --mode symmetric --count "$2" --concurrency "$3" --prefix "$4"; }
num() { sed "s/.*\"$2\":\\([0-9.]*\\).*/\\1/" "$1"; }

# CPU seconds (user + system) of processes, from /proc: robust where the
# wall-clock rate is not (the machine is shared).
cpu() {
  local t=0 p
  for p in "$@"; do
    [ -r "/proc/$p/stat" ] && t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat")))
  done
  echo "$t"
}
pg_pids() { local pm; pm=$(cat "$T/pg/pid"); echo "$pm" $(pgrep -P "$pm"); }
per_reg() { echo "scale=3; ($2 - $1) * 1000 / $(getconf CLK_TCK) / $3" | bc; }

# The three set-ups, started once.
start_server "$T/sq" "$conf"; SQ_PID=$SRV_PID; SRV_PID=
export CUSTOS_STORE=$PGURI CUSTOS_STORE_PASSWORD_FILE=$T/pg/password
start_server "$T/pg1" "$conf"; PG1_PID=$SRV_PID; SRV_PID=
start_second_node "$T/pg1" "$T/pg2"
echo "# $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg); $COUNT registrations x $ROUNDS rounds, $CONC clients"
printf '%-28s %10s %8s %8s %14s %10s\n' setup "reg/s" "p50 ms" "p99 ms" "custosd ms/reg" "PG ms/reg"
for r in $(seq 1 "$ROUNDS"); do
  c0=$(cpu "$SQ_PID")
  (unset CUSTOS_STORE CUSTOS_STORE_PASSWORD_FILE; bench "$T/sq" "$COUNT" "$CONC" "sq$r-" >"$T/sq.json")
  c1=$(cpu "$SQ_PID")
  printf '%-28s %10s %8s %8s %14s %10s\n' "1 node, SQLite" "$(num "$T/sq.json" perSecond)" "$(num "$T/sq.json" p50Ms)" \
    "$(num "$T/sq.json" p99Ms)" "$(per_reg "$c0" "$c1" "$COUNT")" -
  c0=$(cpu "$PG1_PID"); g0=$(cpu $(pg_pids))
  bench "$T/pg1" "$COUNT" "$CONC" "p1$r-" >"$T/p1.json"
  c1=$(cpu "$PG1_PID"); g1=$(cpu $(pg_pids))
  printf '%-28s %10s %8s %8s %14s %10s\n' "1 node, PostgreSQL" "$(num "$T/p1.json" perSecond)" "$(num "$T/p1.json" p50Ms)" \
    "$(num "$T/p1.json" p99Ms)" "$(per_reg "$c0" "$c1" "$COUNT")" "$(per_reg "$g0" "$g1" "$COUNT")"
  # Two nodes: half the clients and half the devices on each, at once.
  c0=$(cpu "$PG1_PID" "$SRV2_PID"); g0=$(cpu $(pg_pids))
  t0=$(date +%s.%N)
  bench "$T/pg1" $((COUNT / 2)) $((CONC / 2)) "p2a$r-" >"$T/p2a.json" & a=$!
  bench "$T/pg2" $((COUNT / 2)) $((CONC / 2)) "p2b$r-" >"$T/p2b.json" & b=$!
  wait $a; wait $b
  t1=$(date +%s.%N)
  c1=$(cpu "$PG1_PID" "$SRV2_PID"); g1=$(cpu $(pg_pids))
  rate=$(echo "scale=1; $COUNT / ($t1 - $t0)" | bc)
  p50=$(printf '%s\n%s\n' "$(num "$T/p2a.json" p50Ms)" "$(num "$T/p2b.json" p50Ms)" | sort -g | tail -1)
  p99=$(printf '%s\n%s\n' "$(num "$T/p2a.json" p99Ms)" "$(num "$T/p2b.json" p99Ms)" | sort -g | tail -1)
  printf '%-28s %10s %8s %8s %14s %10s\n' "2 nodes, one PostgreSQL" "$rate" "$p50" "$p99" "$(per_reg "$c0" "$c1" "$COUNT")" \
    "$(per_reg "$g0" "$g1" "$COUNT")"
done
echo "# load after: $(cut -d' ' -f1-3 /proc/loadavg)"
kill "$SQ_PID" "$PG1_PID" 2>/dev/null; wait "$SQ_PID" "$PG1_PID" 2>/dev/null
ok "benchmark done"
