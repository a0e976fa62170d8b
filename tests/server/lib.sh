# Shared helpers of the custosd end-to-end tests (sourced). The caller sets
# BIN (the build's bin directory) before sourcing.
set -u
BIN=$(cd "$BIN" && pwd)
T=$(mktemp -d /tmp/cu-srv-XXXXXX)
CUSTOS="$BIN/custos"
CUSTOSD="$BIN/custosd"
SRV_PID=
. "$(dirname "${BASH_SOURCE[0]}")/../common/check.sh"
# CUSTOS_TEST_STORE=postgresql: the store is a fresh database in the server
# of tests/common/pg_fixture.sh (CUSTOS_TEST_PG_DIR), for custosd and the
# command line alike (CUSTOS_STORE, custos/state.h).
PG_DB=
if [ "${CUSTOS_TEST_STORE:-}" = postgresql ]; then
  PG_FIXTURE=$(cd "$(dirname "${BASH_SOURCE[0]}")/../common" && pwd)/pg_fixture.sh
  PG_DB=t_$(basename "$T" | tr -c 'a-zA-Z0-9\n' _)
  CUSTOS_STORE=$("$PG_FIXTURE" createdb "$CUSTOS_TEST_PG_DIR" "$PG_DB") || { echo "FAIL - no PostgreSQL fixture"; exit 1; }
  export CUSTOS_STORE CUSTOS_STORE_PASSWORD_FILE="$CUSTOS_TEST_PG_DIR/password"
fi
# new_pg_store: in PostgreSQL mode, CUSTOS_STORE names one more fresh
# database, dropped at exit like the first: a store for a state directory
# with a keyring of its own (a store refuses another service key). Nothing
# in SQLite mode, where each state directory has its own custos.db.
PG_DBS=$PG_DB
new_pg_store() {
  [ -n "$PG_DB" ] || return 0
  local name
  name=${PG_DB}_$(echo "$PG_DBS" | wc -w)
  CUSTOS_STORE=$("$PG_FIXTURE" createdb "$CUSTOS_TEST_PG_DIR" "$name") || { bad "no database $name"; exit 1; }
  PG_DBS="$PG_DBS $name"
}
# has_store STATE: the store of STATE was made: its custos.db, or in
# PostgreSQL mode the schema in the database CUSTOS_STORE names.
has_store() {
  if [ -z "$PG_DB" ]; then [ -s "$1/custos.db" ]; return; fi
  local n
  n=$(PGPASSWORD=$(cat "$CUSTOS_TEST_PG_DIR/password") psql -X -q -t -A "$CUSTOS_STORE" \
      -c "SELECT count(*) FROM information_schema.tables WHERE table_schema = current_schema()" 2>/dev/null)
  [ "${n:-0}" -gt 0 ]
}
SRV2_PID=
finish() {
  [ -n "$SRV_PID" ] && kill "$SRV_PID" 2>/dev/null && wait "$SRV_PID" 2>/dev/null
  [ -n "$SRV2_PID" ] && kill "$SRV2_PID" 2>/dev/null && wait "$SRV2_PID" 2>/dev/null
  if [ "$fail" -ne 0 ]; then echo "state and logs kept in $T"; else rm -rf "$T"; fi
  local db
  [ -n "$PG_DB" ] && [ "$fail" -eq 0 ] && for db in $PG_DBS; do
    PGPASSWORD=$(cat "$CUSTOS_TEST_PG_DIR/password") \
      PGOPTIONS='-c client_min_messages=warning' psql -X -q "${CUSTOS_STORE%/*}/postgres" \
      -c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" >/dev/null 2>&1
  done
  summary
}
trap 'finish; exit $?' EXIT

# private_pg: a PostgreSQL server of this test's own in $T/pg (one it may
# halt and resume, which the shared fixture of the other *_pg tests must not
# see), stopped at exit; CUSTOS_STORE names a fresh database in it. Skips
# the test (77) where no server can run.
private_pg() {
  PGF=$(cd "$(dirname "${BASH_SOURCE[0]}")/../common" && pwd)/pg_fixture.sh
  trap '"$PGF" stop "$T/pg" >/dev/null 2>&1; finish; exit $?' EXIT
  "$PGF" start "$T/pg" >"$T/pg.out" 2>&1
  local rc=$?
  if [ $rc = 77 ]; then
    trap - EXIT
    echo "skipped: no PostgreSQL server"; rm -rf "$T"; exit 77
  fi
  [ $rc = 0 ] || { bad "PostgreSQL did not start: $(cat "$T/pg.out")"; exit 1; }
  CUSTOS_STORE=$("$PGF" createdb "$T/pg" custos) || { bad "no database"; exit 1; }
  export CUSTOS_STORE CUSTOS_STORE_PASSWORD_FILE="$T/pg/password"
}

# await_endpoint STATE PID LOG NAME: until custosd PID has written where it
# serves (5 s at most); else the test ends, with the log.
await_endpoint() {
  for _ in $(seq 1 100); do
    [ -s "$1/endpoint" ] && return 0
    kill -0 "$2" 2>/dev/null || break
    sleep 0.05
  done
  bad "$4 did not start: $(cat "$3")"; exit 1
}

# start_server STATE [config lines...]: custosd on a free loopback port.
start_server() {
  local state=$1; shift
  : >"$T/custosd.conf"
  for l in "$@"; do echo "$l" >>"$T/custosd.conf"; done
  rm -f "$state/endpoint"
  "$CUSTOSD" --state "$state" --listen 127.0.0.1:0 --config "$T/custosd.conf" >>"$T/custosd.log" 2>&1 &
  SRV_PID=$!
  await_endpoint "$state" "$SRV_PID" "$T/custosd.log" custosd
  EP=$(cat "$state/endpoint")
  HP=${EP#https://}
  PORT=${HP##*:}
  CA="$state/ca.crt"
  SCOPE=$("$CUSTOS" service info --state "$state" --config "$T/custosd.conf" --json | sed 's/.*"idScope":"\([^"]*\)".*/\1/')
}

stop_server() { # [signal]: sets SRV_RC
  kill -"${1:-TERM}" "$SRV_PID" 2>/dev/null
  wait "$SRV_PID" 2>/dev/null; SRV_RC=$?
  SRV_PID=
  if grep -q 'Sanitizer' "$T/custosd.log"; then bad "custosd sanitizer report: $(grep -m3 -A5 Sanitizer "$T/custosd.log")"; fi
}

# http METHOD PATH [curl args...]: status in $T/status, body in $T/body,
# headers in $T/hdr.
http() {
  local m=$1 p=$2; shift 2
  curl -sS --cacert "$CA" -X "$m" -o "$T/body" -D "$T/hdr" -w '%{http_code}' "$@" "$EP$p" >"$T/status" 2>"$T/curlerr"
}
expect_http() { # status description method path [curl args...]
  local want=$1 what=$2; shift 2
  http "$@"
  local got; got=$(cat "$T/status")
  if [ "$got" = "$want" ]; then ok "$what"; else bad "$what (HTTP $got, wanted $want): $(head -c 300 "$T/body") $(cat "$T/curlerr")"; fi
}
body_has() { contains "$T/body" "$1" "$2"; }
hdr_has() { if grep -qi -- "$1" "$T/hdr"; then ok "$2"; else bad "$2: '$1' not in headers"; fi; }
hdr_lacks() { if grep -qi -- "$1" "$T/hdr"; then bad "$2: '$1' present"; else ok "$2"; fi; }

# sas SCOPE REGID KEY_B64 EXPIRY: a device SAS token the way the C SDK makes it.
sas() {
  local sr="$1%2fregistrations%2f$2" hex sig
  hex=$(printf '%s' "$3" | base64 -d | od -An -tx1 | tr -d ' \n')
  sig=$(printf '%s\n%s' "$sr" "$4" | openssl dgst -sha256 -mac HMAC -macopt "hexkey:$hex" -binary | base64 \
        | sed 's/+/%2b/g; s/\//%2f/g; s/=/%3d/g')
  echo "SharedAccessSignature sr=$sr&sig=$sig&se=$4&skn=registration"
}
# derive GROUPKEY_B64 REGID: the group-derived device key.
derive() {
  local hex; hex=$(printf '%s' "$1" | base64 -d | od -An -tx1 | tr -d ' \n')
  printf '%s' "$2" | openssl dgst -sha256 -mac HMAC -macopt "hexkey:$hex" -binary | base64
}
svc_token() { "$CUSTOS" service token --state "$STATE" --config "$T/custosd.conf"; }

# start_second_node STATE STATE2: a second custosd on the same (shared)
# store, joined the way docs/scale-out.md says: the first node's keyring
# key, CA, server and audit keys copied into its own state directory.
# Sets EP2 and SRV2_PID.
start_second_node() {
  local a=$1 b=$2 f
  mkdir -p -m 0700 "$b"
  for f in keyring.key ca.crt ca.key server.key server.crt audit.key audit.pub; do
    [ -e "$a/$f" ] && cp -p "$a/$f" "$b/$f"
  done
  "$CUSTOSD" --state "$b" --listen 127.0.0.1:0 --config "$T/custosd.conf" >>"$T/custosd2.log" 2>&1 &
  SRV2_PID=$!
  await_endpoint "$b" "$SRV2_PID" "$T/custosd2.log" "the second custosd"
  EP2=$(cat "$b/endpoint")
}
