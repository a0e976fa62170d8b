#!/usr/bin/env bash
# Statements and transactions per registration on PostgreSQL, counted from
# the server's own log (log_statement = all) over COUNT registrations of
# custos bench load against one custosd (docs/benchmarks.md). With MAX, fails
# when a registration costs more statements than that (a round trip added
# by mistake shows here, not in a timed test).
#   tests/server/pg_statements.sh BIN [COUNT [MAX]]
BIN=${1:?usage: pg_statements.sh BIN [COUNT [MAX]]}
COUNT=${2:-200}
MAX=${3:-}
unset CUSTOS_TEST_STORE CUSTOS_STORE CUSTOS_STORE_PASSWORD_FILE
. "$(dirname "$0")/lib.sh"
private_pg
# One worker: every statement of a registration on one connection, in order.
start_server "$T/var" "log-level = warn" "workers = 1"
# The warm-up (caches, the first head signature) is not counted.
"$CUSTOS" bench load --state "$T/var" --json --mode symmetric --count 20 --concurrency 1 --prefix warm- \
  >"$T/warm.json" 2>&1 || { bad "warm-up: $(cat "$T/warm.json")"; exit 1; }
# The session settings of the connections open now: log every statement of custos' own.
PGPASSWORD=$(cat "$T/pg/password") psql -X -q "$CUSTOS_STORE" \
  -c "ALTER SYSTEM SET log_statement = 'all'" -c "ALTER SYSTEM SET log_min_duration_statement = -1" \
  -c "SELECT pg_reload_conf()" >/dev/null || { bad "cannot set log_statement"; exit 1; }
sleep 0.5
# custosd's connections (open since the warm-up): the bench's own, which
# creates the enrollments, are not counted.
pids=$(PGPASSWORD=$(cat "$T/pg/password") psql -X -q -At "$CUSTOS_STORE" \
  -c "SELECT string_agg(pid::text, '|') FROM pg_stat_activity WHERE application_name = 'custos'")
[ -n "$pids" ] || { bad "no custosd connection"; exit 1; }
from=$(wc -l <"$T/pg/log")
"$CUSTOS" bench load --state "$T/var" --json --mode symmetric --count "$COUNT" --concurrency 1 --prefix st- \
  >"$T/load.json" 2>&1 || { bad "load: $(cat "$T/load.json")"; exit 1; }
sleep 0.5
tail -n +"$((from + 1))" "$T/pg/log" | grep -E "\[($pids)\] LOG:  (statement|execute)" >"$T/stmts"
n=$(wc -l <"$T/stmts")
per=$(echo "scale=2; $n / $COUNT" | bc)
echo "# $COUNT registrations (PUT + poll each, symmetric key, one worker): $n statements, $per per registration"
# By prepared statement name (BEGIN and COMMIT: a pipeline's own). In a
# write transaction only a read (and the COMMIT) waits for an answer; the
# writes, BEGIN and the audit lock go with it: round trips = the rest.
sed -E 's/.*LOG:  execute <unnamed>: (BEGIN|COMMIT).*/\1/; s/.*LOG:  execute ([^:]*):.*/\1/; s/.*LOG:  statement: (.{0,60}).*/\1/' \
  "$T/stmts" | sort | uniq -c | sort -rn >"$T/kinds"
awk -v c="$COUNT" '{n=$1; $1=""; printf "%8.2f %s\n", n / c, $0}' "$T/kinds"
rt=$(awk '$2 !~ /^(BEGIN|alock|aappend|addkeys|delkeys|insq|updq|put|metaput|metaput2|hput)$/ {n += $1} END {print n + 0}' "$T/kinds")
echo "# round trips: $(echo "scale=2; $rt / $COUNT" | bc) per registration"
[ -n "${PG_STATEMENTS_KEEP:-}" ] && cp "$T/stmts" "$PG_STATEMENTS_KEEP"
# A registration is one write transaction with one audit record. Records
# that come with time, not with registrations (key uses per minute, a
# signed head), are transactions of their own (BEGIN, the audit lock and
# last record, the appends, COMMIT): a slow run (sanitizers) meets more of
# them, so they are not the registrations' cost.
kind() { awk -v k="$1" '$2 == k {print $1}' "$T/kinds" | head -1; }
xt=$(( $(kind BEGIN) - COUNT )); xa=$(( $(kind aappend) - COUNT ))
[ "$xt" -gt 0 ] || xt=0; [ "$xa" -gt 0 ] || xa=0
[ "$xt" -le "$xa" ] || xt=$xa   # each of those has an audit record of its own
own=$(echo "scale=2; ($n - 4 * $xt - $xa) / $COUNT" | bc)
[ "$xt" -gt 0 ] && echo "# not counted: $xt periodic audit transaction(s) ($xa record(s)): $own per registration"
if [ -n "$MAX" ]; then
  [ "$(echo "$own <= $MAX" | bc)" = 1 ] && ok "at most $MAX statements per registration ($own)" \
    || bad "$own statements per registration, more than $MAX"
else
  ok "counted"
fi
