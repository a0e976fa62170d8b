#!/usr/bin/env bash
# Two custosd nodes on one PostgreSQL (docs/scale-out.md), with a private
# server of its own (it is stopped in the middle, which the shared fixture
# of the other *_pg tests must not see):
# - a device registers on one node and polls on the other;
# - both nodes register the same devices at the same moment: every one is
#   assigned, one record each, and the audit log stays one chain;
# - one node SIGKILLed under load: every registration a client saw succeed
#   is in the database, none twice;
# - the database stopped for a few seconds under load: 503 with
#   Retry-After, no crash, recovery without a restart, nothing lost;
# - with 202 answers (register-reply = assigning), under load on both
#   nodes: devices PUT on one node and poll the other;
# - a device's request budget (rate-device) is one for both nodes;
# - under load, PostgreSQL sees no more connections of Custos than the
#   nodes' workers plus the load drivers' own (a bounded pool).
BIN=${1:?usage: multinode.sh BIN LOADGEN [COUNT]}
LOADGEN=$(cd "$(dirname "${2:?}")" && pwd)/$(basename "$2")
N=${3:-2000}
unset CUSTOS_TEST_STORE CUSTOS_STORE CUSTOS_STORE_PASSWORD_FILE
. "$(dirname "$0")/lib.sh"
private_pg
ok "a private PostgreSQL at ${CUSTOS_STORE#postgresql://}"

STATE=$T/var
# Final answers to the PUT: two clients registering the same device would
# otherwise each poll an operation the other's PUT replaced (one per device).
start_server "$STATE" "log-level = warn" "retry-after = 1" "register-reply = final"
start_second_node "$STATE" "$T/var2"
ok "two nodes: $EP and $EP2"
EPA=$EP

# ---- register on one node, poll on the other ----
V='api-version=2021-06-01'
J='Content-Type: application/json'
PK=$(openssl rand -base64 32); echo "$PK" >"$T/pk"
expect_rc 0 "an individual enrollment, made through the command line" "$CUSTOS" enrollment create cross-1 \
  --attestation symmetricKey --primary-key-file "$T/pk" --state "$STATE"
AUTH="Authorization: $(sas "$SCOPE" cross-1 "$PK" $(( $(date +%s) + 600 )))"
expect_http 200 "PUT register on node A" PUT "/$SCOPE/registrations/cross-1/register?$V" -H "$J" -H "$AUTH" \
  -d '{"registrationId":"cross-1"}'
OPID=$(sed 's/.*"operationId":"\([^"]*\)".*/\1/' "$T/body")
EP=$EP2
expect_http 200 "the poll on node B finds the operation" GET "/$SCOPE/registrations/cross-1/operations/$OPID?$V" -H "$AUTH"
body_has '"status":"assigned"' "assigned, as node B reads it"
expect_http 200 "the device's status on node B" POST "/$SCOPE/registrations/cross-1?$V" -H "$J" -H "$AUTH" -d '{}'
EP=$EPA

# ---- both nodes register the same devices at once ----
loadgen() { # state prefix count successes-file out-file [extra...]
  local st=$1 p=$2 c=$3 s=$4 o=$5; shift 5
  "$LOADGEN" run --state "$st" --json --mode symmetric --count "$c" --concurrency 16 --prefix "$p" \
    --successes "$s" --max-seconds 240 "$@" >"$o" 2>&1
}
field() { sed "s/.*\"$1\":\\([0-9.]*\\).*/\\1/" "$1.json" 2>/dev/null; }
# pool_watch: Custos' connections to PostgreSQL (application_name custos:
# the nodes and the command line, not psql) every 0.1 s until pool_check;
# each row's client port tells (ss) which process holds it.
pool_watch() {
  rm -f "$T/pool.stop"; : >"$T/pool"
  local pgport; pgport=$(cat "$T/pg/port")
  (while [ ! -e "$T/pool.stop" ]; do
     ports=$(PGPASSWORD=$(cat "$T/pg/password") psql -X -At "$CUSTOS_STORE" \
       -c "SELECT client_port FROM pg_stat_activity WHERE application_name = 'custos'" 2>/dev/null)
     ss -tnpH state established "( dport = :$pgport )" >"$T/pool.ss" 2>/dev/null
     t=0; a=0; b=0
     for p in $ports; do
       t=$((t + 1))
       pid=$(awk -v p="$p" '{ n = split($3, l, ":"); if (l[n] == p) print $0 }' "$T/pool.ss" | sed -n 's/.*pid=\([0-9]*\).*/\1/p')
       [ "$pid" = "$SRV_PID" ] && a=$((a + 1))
       [ "$pid" = "$SRV2_PID" ] && b=$((b + 1))
     done
     echo "$t $a $b" >>"$T/pool"
     sleep 0.1
   done) &
  POOL_PID=$!
}
workers_of() { sed -n 's/.*"custosd serving".* workers=\([0-9]*\).*/\1/p' "$1" | tail -1; }
# pool_check WHAT DRIVERS: each node held at most its workers' connections,
# and all of Custos at most those plus two per load driver running (its
# own, and the one it checks the state with, which may not be gone yet).
pool_check() {
  touch "$T/pool.stop"; wait "$POOL_PID"
  local wa wb n mt ma mb
  wa=$(workers_of "$T/custosd.log"); wb=$(workers_of "$T/custosd2.log")
  n=$(wc -l <"$T/pool")
  mt=$(cut -d' ' -f1 "$T/pool" | sort -n | tail -1)
  ma=$(cut -d' ' -f2 "$T/pool" | sort -n | tail -1)
  mb=$(cut -d' ' -f3 "$T/pool" | sort -n | tail -1)
  if [ -z "$wa" ] || [ -z "$wb" ] || [ "$n" -lt 1 ] || [ "${ma:-0}" -lt 1 ] || [ "${mb:-0}" -lt 1 ]; then
    bad "$1: no connections counted (workers '$wa' '$wb', $n samples, nodes at most '${ma:-}' '${mb:-}')"
  elif [ "$ma" -le "$wa" ] && [ "$mb" -le "$wb" ] && [ "$mt" -le $((wa + wb + 2 * $2)) ]; then
    ok "$1: node A at most $ma connections (workers $wa), node B $mb ($wb), all of Custos $mt ($n samples)"
  else
    bad "$1: node A $ma connections (workers $wa), node B $mb ($wb), all of Custos $mt (at most $((wa + wb + 2 * $2)))"
  fi
}
: >"$T/succ-a"; : >"$T/succ-b"
pool_watch
loadgen "$STATE" same- "$N" "$T/succ-a" "$T/same-a.json" & la=$!
loadgen "$T/var2" same- "$N" "$T/succ-b" "$T/same-b.json" & lb=$!
wait $la; ra=$?; wait $lb; rb=$?
pool_check "the pool under the load on both nodes" 2
[ $ra = 0 ] && [ $rb = 0 ] && ok "the same $N devices registered on both nodes at once: all assigned on both" \
  || bad "concurrent registrations: $(cat "$T/same-a.json" "$T/same-b.json")"
expect_rc 0 "every one has an assigned record" "$LOADGEN" check "$STATE" same- "$N" -
contains "$T/out" "records in the store $((N + 1))" "one record per device ($N + cross-1), none duplicated"
expect_rc 0 "the audit log is one chain that verifies" "$CUSTOS" audit verify --state "$STATE" --pubkey "$STATE/audit.pub"

# ---- a node SIGKILLed under load ----
: >"$T/succ-ka"; : >"$T/succ-kb"
loadgen "$STATE" kill-a- "$N" "$T/succ-ka" "$T/kill-a.json" --retry & la=$!
loadgen "$T/var2" kill-b- "$N" "$T/succ-kb" "$T/kill-b.json" --retry & lb=$!
for _ in $(seq 1 400); do
  [ "$(wc -l <"$T/succ-ka")" -ge $((N / 4)) ] && break
  sleep 0.05
done
kill -KILL "$SRV_PID"; wait "$SRV_PID" 2>/dev/null; SRV_PID=
ok "node A SIGKILLed after $(wc -l <"$T/succ-ka") of its registrations"
sleep 0.5
"$CUSTOSD" --state "$STATE" --listen "127.0.0.1:${EPA##*:}" --config "$T/custosd.conf" >>"$T/custosd.log" 2>&1 &
SRV_PID=$!
wait $la; ra=$?; wait $lb; rb=$?
[ $ra = 0 ] && ok "node A's clients: all $N assigned across the kill and restart" || bad "node A's clients: $(cat "$T/kill-a.json")"
[ $rb = 0 ] && ok "node B's clients: all $N assigned, undisturbed" || bad "node B's clients: $(cat "$T/kill-b.json")"
cat "$T/succ-ka" "$T/succ-kb" >"$T/succ-k"
expect_rc 0 "every registration a client saw succeed is in the database" "$LOADGEN" check "$STATE" - 0 "$T/succ-k"
[ "$(sort "$T/succ-k" | uniq -d | wc -l)" = 0 ] && ok "no registration reported twice" || bad "duplicates in the successes"
# The store's own count: one record per device of both loads, none twice
# (ids compare case-insensitively: lower-cased too), none missing.
contains "$T/out" "records in the store $((3 * N + 1))" "the store holds $((3 * N + 1)) records: one per device so far"
PGPASSWORD=$(cat "$T/pg/password") psql -X -At -F' ' "$CUSTOS_STORE" -c "SELECT count(*), count(DISTINCT lower(id))
  FROM docs WHERE kind = 5 AND id LIKE 'kill-%'" >"$T/kill-count" 2>&1
[ "$(cat "$T/kill-count")" = "$((2 * N)) $((2 * N))" ] \
  && ok "$((2 * N)) registration records for the $((2 * N)) devices of the kill, all distinct" \
  || bad "registration records of the kill's devices (count, distinct): $(cat "$T/kill-count"), wanted $((2 * N))"

# ---- the database stopped for a few seconds under load ----
SVC=$(svc_token) # made while the database is up: the command reads the policy from it
: >"$T/succ-o"
loadgen "$T/var2" out- "$N" "$T/succ-o" "$T/out.json" --retry & lo=$!
# Halt early in the load (an eighth), so that a fast run cannot finish first.
for _ in $(seq 1 400); do
  [ "$(wc -l <"$T/succ-o")" -ge $((N / 8)) ] && break
  sleep 0.02
done
"$PGF" halt "$T/pg"
ok "PostgreSQL stopped after $(wc -l <"$T/succ-o") registrations"
EP=$EP2
t0=$(date +%s%N)
expect_http 503 "a registration while the database is out: 503" PUT "/$SCOPE/registrations/cross-1/register?$V" \
  -H "$J" -H "$AUTH" -d '{"registrationId":"cross-1"}'
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
[ "$ms" -lt 2000 ] && ok "it fails fast ($ms ms)" || bad "the 503 took $ms ms"
hdr_has '^Retry-After:' "with Retry-After"
body_has 'service unavailable' "and says why"
expect_http 503 "the service API while the database is out: 503" GET "/enrollments/cross-1?api-version=2021-10-01" \
  -H "Authorization: $SVC"
hdr_has '^Retry-After:' "with Retry-After"
sleep 3
"$PGF" resume "$T/pg" && ok "PostgreSQL back" || bad "PostgreSQL did not come back"
wait $lo; ro=$?
[ $ro = 0 ] && ok "all $N assigned across the outage" || bad "across the outage: $(cat "$T/out.json")"
grep -q '"retries":0,' "$T/out.json" && bad "the clients never saw the outage" || ok "the clients saw the outage and retried"
expect_rc 0 "nothing acknowledged is lost" "$LOADGEN" check "$STATE" - 0 "$T/succ-o"
kill -0 "$SRV_PID" && kill -0 "$SRV2_PID" && ok "both nodes still running (no crash, no restart)" || bad "a node died"
expect_http 200 "node B healthy" GET /healthz
expect_http 200 "node B registers again without a restart" PUT "/$SCOPE/registrations/cross-1/register?$V" \
  -H "$J" -H "$AUTH" -d '{"registrationId":"cross-1"}'
EP=$EPA
expect_http 200 "node A too" PUT "/$SCOPE/registrations/cross-1/register?$V" -H "$J" -H "$AUTH" \
  -d '{"registrationId":"cross-1"}'
expect_rc 0 "the audit chain still verifies" "$CUSTOS" audit verify --state "$STATE" --pubkey "$STATE/audit.pub"

# restart_nodes CONFIG...: both nodes again, with these settings.
restart_nodes() {
  stop_server TERM
  kill "$SRV2_PID" 2>/dev/null; wait "$SRV2_PID" 2>/dev/null; SRV2_PID=
  start_server "$STATE" "$@"
  rm -f "$T/var2/endpoint" # not the stopped node's
  start_second_node "$STATE" "$T/var2"
  EPA=$EP
}

# ---- 202 and polls: PUT on one node, poll the other, under load ----
restart_nodes "log-level = warn" "retry-after = 1" "register-reply = assigning"
GK=$(openssl rand -base64 64 | tr -d '\n')
echo "$GK" >"$T/gk"
expect_rc 0 "a symmetric-key group for the cross-node devices" "$CUSTOS" group create xgrp \
  --attestation symmetricKey --primary-key-file "$T/gk" --state "$STATE"
# cross_device I: device xn-I PUTs on node A, then polls its operation on
# node B until assigned; its outcome in $T/cross/xn-I.
cross_device() {
  local id=xn-$1 auth out st opid n
  auth="Authorization: $(sas "$SCOPE" "$id" "$(derive "$GK" "$id")" $(( $(date +%s) + 600 )))"
  out=$(curl -sS --max-time 30 --cacert "$CA" -X PUT -H "$J" -H "$auth" -d "{\"registrationId\":\"$id\"}" \
    -w ' %{http_code}' "$EPA/$SCOPE/registrations/$id/register?$V" 2>&1)
  st=${out##* }
  [ "$st" = 202 ] || { echo "PUT on A: $out" >"$T/cross/$id"; return; }
  opid=$(echo "$out" | sed -n 's/.*"operationId":"\([^"]*\)".*/\1/p')
  for n in $(seq 1 100); do
    out=$(curl -sS --max-time 30 --cacert "$CA" -H "$auth" -w ' %{http_code}' \
      "$EP2/$SCOPE/registrations/$id/operations/$opid?$V" 2>&1)
    st=${out##* }
    case "$st:$out" in
      200:*'"status":"assigned"'*) echo "assigned, polled on B $n times" >"$T/cross/$id"; return ;;
      200:*'"status":"assigning"'* | 202:* | 503:*) sleep 0.1 ;;
      *) echo "poll on B: $out" >"$T/cross/$id"; return ;;
    esac
  done
  echo "poll on B: still not assigned after $n polls" >"$T/cross/$id"
}
# load_until STATE NAME: batches of 200 registrations (PUT, 202, polls on
# the same node) until the cross-node devices are done; fails if one does.
load_until() {
  local k=0 rc=0
  while [ ! -e "$T/cross.done" ]; do
    loadgen "$1" "$2-$k-" 200 "$T/succ-$2" "$T/$2-$k.json" || { rc=1; cat "$T/$2-$k.json" >>"$T/$2.err"; }
    k=$((k + 1))
  done
  echo "$k" >"$T/$2.batches"
  return $rc
}
mkdir -p "$T/cross"
: >"$T/succ-asg-a"; : >"$T/succ-asg-b"
pool_watch
load_until "$STATE" asg-a & la=$!
load_until "$T/var2" asg-b & lb=$!
XN=50
for b in $(seq 0 10 $((XN - 1))); do # ten at a time
  pids=
  for i in $(seq $((b + 1)) $((b + 10 > XN ? XN : b + 10))); do cross_device "$i" & pids="$pids $!"; done
  wait $pids
done
touch "$T/cross.done"
wait $la; ra=$?; wait $lb; rb=$?
pool_check "the pool under the load with polls" 2
n=$(grep -l '^assigned' "$T"/cross/xn-* 2>/dev/null | wc -l)
[ "$n" = "$XN" ] && ok "$XN devices: 202 from node A, assigned as node B polls their operation" \
  || bad "cross-node polls: $n of $XN assigned; $(grep -hv '^assigned' "$T"/cross/xn-* 2>/dev/null | head -3)"
[ $ra = 0 ] && [ $rb = 0 ] \
  && ok "meanwhile the load with 202s and polls: all assigned ($(cat "$T/succ-asg-a" "$T/succ-asg-b" | wc -l) in $(cat "$T/asg-a.batches") + $(cat "$T/asg-b.batches") batches of 200)" \
  || bad "the load with 202s: $(head -c 600 "$T/asg-a.err" "$T/asg-b.err" 2>&1)"
ls "$T"/cross | cat - "$T/succ-asg-a" "$T/succ-asg-b" >"$T/succ-asg"
expect_rc 0 "every one of them is assigned in the database" "$LOADGEN" check "$STATE" - 0 "$T/succ-asg"

# ---- the per-device budget is one for both nodes ----
restart_nodes "log-level = warn" "retry-after = 1" "register-reply = assigning" "rate-device = 3"
expect_rc 0 "an enrollment for the budget" "$CUSTOS" enrollment create rate-1 --attestation symmetricKey \
  --primary-key-file "$T/pk" --state "$STATE"
AUTHR="Authorization: $(sas "$SCOPE" rate-1 "$PK" $(( $(date +%s) + 600 )))"
got=
for i in 1 2 3 4; do
  if [ $((i % 2)) = 1 ]; then EP=$EPA; else EP=$EP2; fi
  http PUT "/$SCOPE/registrations/rate-1/register?$V" -H "$J" -H "$AUTHR" -d '{"registrationId":"rate-1"}'
  got="$got${got:+,}$(cat "$T/status")"
done
[ "$got" = "202,202,202,429" ] && ok "rate-device = 3, PUTs alternating between the nodes: $got" \
  || bad "rate-device = 3 across two nodes: $got, wanted 202,202,202,429"
hdr_has '^Retry-After: [1-9]' "the 429 with Retry-After"
EP=$EPA
grep -q 'Sanitizer' "$T/custosd.log" "$T/custosd2.log" && bad "sanitizer report in a node's log" || ok "no sanitizer report"
