#!/usr/bin/env bash
# Load, bounded and on loopback: N symmetric-key registrations from 64
# concurrent clients and M X.509 registrations with a fresh TLS handshake
# each, every one accounted for in the store; then the same load while
# custosd is killed with SIGKILL once and restarted: every registration the
# clients saw succeed is in the store.
BIN=${1:?usage: load.sh BIN LOADGEN [SYM X509]}
LOADGEN=$(cd "$(dirname "${2:?}")" && pwd)/$(basename "$2")
NSYM=${3:-20000}
NX509=${4:-5000}
. "$(dirname "$0")/lib.sh"

STATE=$T/var
start_server "$STATE" "log-level = warn"
echo "# custosd at $EP; $NSYM symmetric-key and $NX509 X.509 registrations"

load() { "$LOADGEN" run --state "$STATE" --json "$@"; }
field() { sed "s/.*\"$1\":\\([0-9.]*\\).*/\\1/" "$T/out"; }
report() { echo "# $1: $(field perSecond)/s, p50 $(field p50Ms) ms, p99 $(field p99Ms) ms, $(field handshakes) handshakes, $(field retries) retries"; }

# ---- steady load ----
expect_rc 0 "$NSYM symmetric-key registrations, 64 clients, keep-alive" load --mode symmetric --count "$NSYM" --concurrency 64 --prefix sym-
report symmetric
expect_rc 0 "every symmetric-key registration is in the store" "$LOADGEN" check "$STATE" sym- "$NSYM" -
expect_rc 0 "$NX509 X.509 registrations, a full handshake each" load --mode x509 --count "$NX509" --concurrency 32 --prefix x509-
report x509
[ "$(field handshakes)" -ge "$NX509" ] && ok "one handshake per X.509 registration" || bad "only $(field handshakes) handshakes"
expect_rc 0 "every X.509 registration is in the store" "$LOADGEN" check "$STATE" x509- "$NX509" -

# ---- the same load through a SIGKILL and a restart ----
kill_during() { # mode count prefix [signal]
  local mode=$1 count=$2 prefix=$3 sig=${4:-KILL} succ="$T/succ-$3" lg
  : >"$succ"
  "$LOADGEN" run --state "$STATE" --json --mode "$mode" --count "$count" --concurrency 32 --prefix "$prefix" \
    --retry --max-seconds 240 --successes "$succ" >"$T/kill-$prefix.json" 2>&1 &
  lg=$!
  for _ in $(seq 1 600); do
    [ "$(wc -l <"$succ")" -ge $((count / 4)) ] && break
    kill -0 "$lg" 2>/dev/null || break
    sleep 0.05
  done
  local before; before=$(wc -l <"$succ")
  kill -"$sig" "$SRV_PID"; wait "$SRV_PID" 2>/dev/null; local src=$?; SRV_PID=
  ok "custosd stopped by SIG$sig after $before $mode registrations"
  if [ "$sig" = TERM ]; then
    [ "$src" = 0 ] && ok "SIGTERM under load: custosd exits 0" || bad "SIGTERM under load: exit status $src"
  fi
  sleep 0.3
  "$CUSTOSD" --state "$STATE" --listen "127.0.0.1:$PORT" --config "$T/custosd.conf" >>"$T/custosd.log" 2>&1 &
  SRV_PID=$!
  wait "$lg"; local rc=$?
  cp "$T/kill-$prefix.json" "$T/out"
  if [ $rc = 0 ]; then ok "$mode: all $count assigned across the restart"; else bad "$mode across the restart: $(cat "$T/out")"; fi
  report "$mode with a SIG$sig"
  [ "$(field retries)" -gt 0 ] && ok "$mode: clients saw the outage and retried" || bad "$mode: no retries (was the stop felt?)"
  expect_rc 0 "$mode: every registration a client saw succeed is in the store" "$LOADGEN" check "$STATE" - 0 "$succ"
  [ "$(sort "$succ" | uniq -d | wc -l)" = 0 ] && ok "$mode: no registration reported twice" || bad "$mode: duplicates in the successes"
}
kill_during symmetric "$NSYM" ksym-
kill_during x509 "$NX509" kx509-
# A graceful stop under load loses nothing either.
kill_during symmetric $((NSYM / 4)) tsym- TERM
expect_http 200 "custosd healthy after the restarts" GET /healthz
stop_server TERM
[ "$SRV_RC" = 0 ] && ok "custosd exits 0" || bad "custosd exit status $SRV_RC"
