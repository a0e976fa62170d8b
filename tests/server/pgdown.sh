#!/usr/bin/env bash
# custosd nodes while their PostgreSQL is down (docs/scale-out.md), with a
# private server of its own (stopped in the middle):
# - a first start in an empty state directory needs the database and says so;
# - a node that joins while the database is down starts all the same: its
#   /healthz says the store is unreachable (and so does custos_store_up),
#   device and service requests get 503 with Retry-After;
# - when the database returns, the node serves registrations without a
#   restart, as does the node whose database went away under it;
# - a hung database (its processes stopped: connections open, nothing
#   answers) costs a request at most connect_timeout: 503 with Retry-After,
#   /healthz answers; serving again by itself when it resumes.
BIN=${1:?usage: pgdown.sh BIN}
unset CUSTOS_TEST_STORE CUSTOS_STORE CUSTOS_STORE_PASSWORD_FILE
. "$(dirname "$0")/lib.sh"
private_pg
# The deadline of every wait for the database (docs/scale-out.md), short
# for the test.
DEADLINE=2
CUSTOS_STORE="$CUSTOS_STORE?connect_timeout=$DEADLINE"

STATE=$T/var
start_server "$STATE" "log-level = warn" "retry-after = 3" "register-reply = final"
EPA=$EP
V='api-version=2021-06-01'
J='Content-Type: application/json'
PK=$(openssl rand -base64 32); echo "$PK" >"$T/pk"
expect_rc 0 "an individual enrollment" "$CUSTOS" enrollment create down-1 --attestation symmetricKey \
  --primary-key-file "$T/pk" --state "$STATE"
AUTH="Authorization: $(sas "$SCOPE" down-1 "$PK" $(( $(date +%s) + 600 )))"
SVC=$(svc_token)
expect_http 200 "node A: /healthz" GET /healthz
body_has '"store":"ok"' "says the store is reachable"
expect_http 200 "node A: /metrics" GET /metrics
body_has '^custos_store_up 1$' "custos_store_up 1"

"$PGF" halt "$T/pg" && ok "PostgreSQL stopped" || bad "PostgreSQL did not stop"

# A first start creates the scope, the policy key and the hub in the store.
"$CUSTOSD" --state "$T/fresh" --listen 127.0.0.1:0 --config "$T/custosd.conf" >"$T/fresh.out" 2>&1
[ $? != 0 ] && ok "a first start in an empty state directory fails while the database is down" \
  || bad "a first start without the database succeeded"
contains "$T/fresh.out" "first start in .*the database must be reachable" "and says the first start needs it"
[ ! -e "$T/fresh/ca.crt" ] && [ ! -e "$T/fresh/endpoint" ] && ok "no CA made, nothing served" \
  || bad "the failed first start left a CA or an endpoint"

# A node joining with the first one's files starts without it.
t0=$(date +%s%N)
start_second_node "$STATE" "$T/var2"
ok "node B started while the database is down ($(( ($(date +%s%N) - t0) / 1000000 )) ms)"
contains "$T/custosd2.log" "store unreachable at start" "its log says the store is unreachable"
EP=$EP2
expect_http 200 "node B: /healthz answers" GET /healthz
body_has '"status":"degraded"' "degraded"
body_has '"store":"unreachable"' "the store unreachable"
expect_http 200 "node B: /metrics answers" GET /metrics
body_has '^custos_store_up 0$' "custos_store_up 0"
t0=$(date +%s%N)
expect_http 503 "node B: a registration gets 503" PUT "/$SCOPE/registrations/down-1/register?$V" -H "$J" \
  -H "$AUTH" -d '{"registrationId":"down-1"}'
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
[ "$ms" -lt 2000 ] && ok "at once ($ms ms)" || bad "the 503 took $ms ms"
hdr_has '^Retry-After: 3' "with the configured Retry-After"
body_has 'store cannot be reached' "and says why"
expect_http 503 "node B: the service API gets 503" GET "/enrollments/down-1?api-version=2021-10-01" \
  -H "Authorization: $SVC"
hdr_has '^Retry-After: 3' "with Retry-After"
expect_http 503 "node B: a poll gets 503" GET "/$SCOPE/registrations/down-1/operations/x?$V" -H "$AUTH"
# A bulk operation whose first item cannot be stored: a 503 for the whole
# request, nothing applied (items after a store failure mid-request are
# listed with 503000 instead: service_api.c).
expect_http 503 "node B: a bulk create gets 503" POST "/enrollments/?api-version=2021-10-01" \
  -H "Authorization: $SVC" -H "$J" \
  -d '{"mode":"create","enrollments":[{"registrationId":"bulk-d1","attestation":{"type":"symmetricKey"}},{"registrationId":"bulk-d2","attestation":{"type":"symmetricKey"}}]}'
hdr_has '^Retry-After: 3' "with Retry-After"
body_has 'store cannot be reached' "and says why"
EP=$EPA
expect_http 200 "node A: /healthz answers" GET /healthz
body_has '"store":"unreachable"' "the store unreachable on the node that had it"
expect_http 503 "node A: a registration gets 503" PUT "/$SCOPE/registrations/down-1/register?$V" -H "$J" \
  -H "$AUTH" -d '{"registrationId":"down-1"}'

"$PGF" resume "$T/pg" && ok "PostgreSQL back" || bad "PostgreSQL did not come back"
EP=$EP2
# Each worker tries again at most once a second.
for _ in $(seq 1 40); do
  http GET /healthz
  grep -q '"store":"ok"' "$T/body" && break
  sleep 0.25
done
body_has '"status":"ok"' "node B: /healthz ok again, without a restart"
expect_http 200 "node B: /metrics" GET /metrics
body_has '^custos_store_up 1$' "custos_store_up 1"
# Each of B's workers catches up on its own: enough requests reach all.
okb=0
for i in $(seq 1 12); do
  http PUT "/$SCOPE/registrations/down-1/register?$V" -H "$J" -H "$AUTH" -d '{"registrationId":"down-1"}'
  if [ "$(cat "$T/status")" = 200 ]; then okb=$((okb + 1)); else sleep 0.3; fi
done
[ $okb -ge 1 ] && ok "node B registers the device ($okb of 12 at once or after a short wait)" \
  || bad "node B never registered: $(cat "$T/status") $(head -c 300 "$T/body")"
sleep 1.2
expect_http 200 "node B: a registration, every worker connected" PUT "/$SCOPE/registrations/down-1/register?$V" \
  -H "$J" -H "$AUTH" -d '{"registrationId":"down-1"}'
body_has '"status":"assigned"' "assigned"
expect_http 200 "node B: the service API reads the enrollment" GET "/enrollments/down-1?api-version=2021-10-01" \
  -H "Authorization: $SVC"
expect_http 404 "the refused bulk create stored nothing" GET "/enrollments/bulk-d1?api-version=2021-10-01" \
  -H "Authorization: $SVC"
EP=$EPA
sleep 1.2
expect_http 200 "node A registers too" PUT "/$SCOPE/registrations/down-1/register?$V" -H "$J" -H "$AUTH" \
  -d '{"registrationId":"down-1"}'
# The database connection lost in the middle of a bulk operation: the third
# item's INSERT ends its own backend (a trigger). The first two stay
# applied; the third and the untried rest are listed with 503000, with
# Retry-After; none of them is stored.
PGPASSWORD=$(cat "$T/pg/password") psql -X -q "$CUSTOS_STORE" -c "CREATE FUNCTION cut_bulk() RETURNS trigger
  LANGUAGE plpgsql AS \$\$ BEGIN IF NEW.id = 'bulk-m3' THEN PERFORM pg_terminate_backend(pg_backend_pid());
  PERFORM pg_sleep(5); END IF; RETURN NEW; END \$\$" \
  -c "CREATE TRIGGER cut_bulk BEFORE INSERT ON docs FOR EACH ROW EXECUTE FUNCTION cut_bulk()" >/dev/null \
  && ok "a trigger that drops the connection at item 3" || bad "cannot create the trigger"
items=
for i in 1 2 3 4 5; do items="$items${items:+,}{\"registrationId\":\"bulk-m$i\",\"attestation\":{\"type\":\"symmetricKey\"}}"; done
expect_http 200 "node A: a bulk create that loses the database at item 3" POST "/enrollments/?api-version=2021-10-01" \
  -H "Authorization: $SVC" -H "$J" -d "{\"mode\":\"create\",\"enrollments\":[$items]}"
python3 - "$T/body" <<'PY' && ok "items 1-2 applied; 3-5 listed with 503000" || bad "bulk reply: $(head -c 600 "$T/body")"
import json, sys
b = json.load(open(sys.argv[1]))
assert b["isSuccessful"] is False, b
assert [(e["registrationId"], e["errorCode"]) for e in b["errors"]] == [("bulk-m%d" % i, 503000) for i in (3, 4, 5)], b
PY
hdr_has '^Retry-After: 3' "with Retry-After"
PGPASSWORD=$(cat "$T/pg/password") psql -X -q -At "$CUSTOS_STORE" -c "DROP TRIGGER cut_bulk ON docs" \
  -c "SELECT string_agg(id, ',' ORDER BY id) FROM docs WHERE id LIKE 'bulk-m%'" >"$T/bulk-ids" 2>&1
[ "$(cat "$T/bulk-ids")" = "bulk-m1,bulk-m2" ] && ok "only items 1 and 2 are stored" || bad "stored: $(cat "$T/bulk-ids")"

# ---- a hung database ----
# Its processes stopped (SIGSTOP): TCP connects and sends still succeed (the
# kernel answers), nothing else does. Without a deadline on each answer a
# worker waits for ever: curl's --max-time catches that.
"$PGF" freeze "$T/pg" && ok "PostgreSQL frozen (SIGSTOP, postmaster and backends)" || bad "cannot freeze PostgreSQL"
limit=$(( DEADLINE * 1000 + 2500 ))
timed() { # NAME: the request after it, timed; its ms in $ms
  t0=$(date +%s%N); "$@"; ms=$(( ($(date +%s%N) - t0) / 1000000 ))
}
for node in A B; do
  if [ $node = A ]; then EP=$EPA; else EP=$EP2; fi
  for i in 1 2; do
    timed expect_http 503 "node $node: a registration on the hung database gets 503 ($i)" PUT \
      "/$SCOPE/registrations/down-1/register?$V" --max-time 15 -H "$J" -H "$AUTH" -d '{"registrationId":"down-1"}'
    [ "$ms" -lt "$limit" ] && ok "within the deadline ($ms ms, deadline ${DEADLINE} s)" || bad "the 503 took $ms ms"
    hdr_has '^Retry-After: 3' "with Retry-After"
  done
  timed expect_http 200 "node $node: /healthz answers on the hung database" GET /healthz --max-time 15
  [ "$ms" -lt "$limit" ] && ok "within the deadline ($ms ms)" || bad "/healthz took $ms ms"
  body_has '"store":"unreachable"' "the store unreachable"
  timed expect_http 503 "node $node: the service API gets 503" GET "/enrollments/down-1?api-version=2021-10-01" \
    --max-time 15 -H "Authorization: $SVC"
  [ "$ms" -lt "$limit" ] && ok "within the deadline ($ms ms)" || bad "the 503 took $ms ms"
done
"$PGF" thaw "$T/pg" && ok "PostgreSQL resumed (SIGCONT)" || bad "cannot resume PostgreSQL"
for node in A B; do
  if [ $node = A ]; then EP=$EPA; else EP=$EP2; fi
  okn=0
  for i in $(seq 1 30); do
    http PUT "/$SCOPE/registrations/down-1/register?$V" --max-time 15 -H "$J" -H "$AUTH" \
      -d '{"registrationId":"down-1"}'
    if [ "$(cat "$T/status")" = 200 ]; then okn=$((okn + 1)); [ $okn -ge 4 ] && break; else sleep 0.3; fi
  done
  [ $okn -ge 4 ] && ok "node $node registers again without a restart" \
    || bad "node $node after the hang: $(cat "$T/status") $(head -c 300 "$T/body")"
  # Each worker reconnects at its own next request, at most once a second:
  # one the registrations did not reach may still be waiting for its turn.
  for i in $(seq 1 20); do
    http GET /healthz --max-time 15
    grep -q '"store":"ok"' "$T/body" && break; sleep 0.3
  done
  [ "$(cat "$T/status")" = 200 ] && ok "node $node: /healthz" || bad "node $node: /healthz $(cat "$T/status")"
  body_has '"store":"ok"' "the store reachable again"
done

kill -0 "$SRV_PID" && kill -0 "$SRV2_PID" && ok "both nodes still running" || bad "a node died"
"$CUSTOS" registration show down-1 --state "$STATE" >"$T/reg" 2>&1 && ok "the registration is in the database" \
  || bad "no registration record: $(cat "$T/reg")"
expect_rc 0 "the audit log is one chain that verifies" "$CUSTOS" audit verify --state "$STATE" --pubkey "$STATE/audit.pub"
grep -q 'Sanitizer' "$T/custosd.log" "$T/custosd2.log" && bad "sanitizer report in a node's log" || ok "no sanitizer report"
