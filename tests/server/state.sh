#!/usr/bin/env bash
# First start and the state directory: what custosd creates (id scope,
# policy key, CA, server certificate with its names, one hub), what it keeps
# across restarts, what `custos service info` prints, config errors; the
# defaults (no arguments) and the config keys end to end.
BIN=${1:?usage: state.sh path/to/bin}
. "$(dirname "$0")/lib.sh"

STATE=$T/fresh/new/var   # a state directory whose parents do not exist yet
start_server "$STATE" "host-name = dps.test" "log-format = json"
for f in keyring.key ca.crt ca.key server.crt server.key endpoint; do
  [ -s "$STATE/$f" ] && ok "first start made $f" || bad "no $f"
done
has_store "$STATE" && ok "first start made the store (${PG_DB:+PostgreSQL }${PG_DB:-custos.db})" || bad "no store"
for f in keyring.key ca.key server.key; do
  [ "$(stat -c %a "$STATE/$f")" = 600 ] && ok "$f is 0600" || bad "$f mode $(stat -c %a "$STATE/$f")"
done
[ "$(stat -c %a "$STATE")" = 700 ] && ok "the state directory is 0700" || bad "state mode $(stat -c %a "$STATE")"
echo "$SCOPE" | grep -Eq '^0ne[0-9A-F]{8}$' && ok "id scope $SCOPE looks like 0ne + 8 hex" || bad "id scope '$SCOPE'"
openssl x509 -in "$STATE/server.crt" -noout -ext subjectAltName >"$T/san" 2>/dev/null
for n in DNS:localhost "IP Address:127.0.0.1" DNS:dps.test; do contains "$T/san" "$n" "the server certificate names $n"; done
openssl verify -CAfile "$CA" "$STATE/server.crt" >/dev/null 2>&1 && ok "ca.crt verifies the server certificate" || bad "server certificate does not verify"
expect_rc 0 "custos service info" "$CUSTOS" service info --state "$STATE"
contains "$T/out" "HostName=dps.test;SharedAccessKeyName=provisioningserviceowner;SharedAccessKey=" "connection string"
contains "$T/out" "https://dps.test:$PORT" "device endpoint"
contains "$T/out" "$STATE/ca.crt" "CA file"
"$CUSTOS" service info --state "$STATE" --json >"$T/info.json"
contains "$T/info.json" "\"idScope\":\"$SCOPE\"" "JSON info: idScope"
KEY1=$(sed 's/.*SharedAccessKey=\([^"]*\)".*/\1/' "$T/info.json")
# The name in the certificate and in the service SAS works.
curl -sS --cacert "$CA" --resolve "dps.test:$PORT:127.0.0.1" -o "$T/body" -w '%{http_code}' \
  -H "Authorization: $("$CUSTOS" service token --state "$STATE")" \
  "https://dps.test:$PORT/enrollments/query?api-version=2021-10-01" -X POST >"$T/status"
[ "$(cat "$T/status")" = 200 ] && ok "service API at https://dps.test with a token for sr=dps.test" || bad "dps.test: HTTP $(cat "$T/status")"
# The hub that makes the first registration work.
K=$(openssl rand -base64 32); echo "$K" >"$T/k"
"$CUSTOS" enrollment create first --attestation symmetricKey --primary-key-file "$T/k" --state "$STATE" >/dev/null
expect_rc 0 "the first registration works out of the box" "$CUSTOS" device register --scope "$SCOPE" --host "localhost:$PORT" --ca "$CA" --key-file "$T/k" --registration-id first
contains "$T/custosd.log" '^{"ts":"' "log-format = json writes JSON lines"
contains "$T/custosd.log" '"reqid":"' "JSON lines carry the request id"
stop_server TERM

# A restart keeps everything; a new host name reissues the certificate.
OLDSCOPE=$SCOPE
start_server "$STATE" "host-name = dps.test" "host-name = other.test"
[ "$SCOPE" = "$OLDSCOPE" ] && ok "the id scope survives a restart" || bad "id scope changed: $OLDSCOPE -> $SCOPE"
"$CUSTOS" service info --state "$STATE" --json >"$T/info.json"
KEY2=$(sed 's/.*SharedAccessKey=\([^"]*\)".*/\1/' "$T/info.json")
[ "$KEY1" = "$KEY2" ] && ok "the policy key survives a restart" || bad "policy key changed"
openssl x509 -in "$STATE/server.crt" -noout -ext subjectAltName >"$T/san" 2>/dev/null
contains "$T/san" "DNS:other.test" "a new host-name reissues the certificate"
stop_server TERM

# Configuration errors stop custosd with the file and line.
printf 'listen = 127.0.0.1:0\nworkers = many\n' >"$T/bad.conf"
expect_rc 2 "a bad config value is refused" "$CUSTOSD" --state "$STATE" --config "$T/bad.conf"
contains "$T/err" "bad.conf:2: workers" "the error names file, line and key"
printf 'no-such-key = 1\n' >"$T/bad2.conf"
expect_rc 2 "an unknown config key is refused" "$CUSTOSD" --state "$STATE" --config "$T/bad2.conf"
printf 'id-scope = 0neFFFFFFFF\nlisten = 127.0.0.1:0\n' >"$T/scope.conf"
expect_rc 1 "a different id scope for existing state is refused" "$CUSTOSD" --state "$STATE" --config "$T/scope.conf"
contains "$T/err" "id scope" "and says why"
expect_rc 2 "an unknown option" "$CUSTOSD" --frobnicate
expect_rc 0 "--help" "$CUSTOSD" --help
expect_rc 1 "service info on a missing state" "$CUSTOS" service info --state "$T/none"

# ---- no arguments: 127.0.0.1:8443, state in ./var ----
port_busy() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }
# serving_lines LOG N: until LOG has N "custosd serving" lines (written
# just after the endpoint file), 5 s at most.
serving_lines() {
  for _ in $(seq 1 100); do
    [ "$(grep -c 'custosd serving' "$1")" -ge "$2" ] && return 0
    sleep 0.05
  done
}
if port_busy 127.0.0.1 8443; then
  echo "# 127.0.0.1:8443 is in use: the no-argument start is skipped"
else
  mkdir -p "$T/cwd"
  new_pg_store   # ./var has a keyring of its own
  (cd "$T/cwd" && exec "$CUSTOSD") >"$T/noargs.log" 2>&1 &
  SRV_PID=$!
  await_endpoint "$T/cwd/var" "$SRV_PID" "$T/noargs.log" "custosd without arguments"
  serving_lines "$T/noargs.log" 1
  contains "$T/noargs.log" "custosd serving\" url=https://127.0.0.1:8443 " "without arguments it says it serves https://127.0.0.1:8443"
  has_store "$T/cwd/var" && [ -s "$T/cwd/var/ca.crt" ] && ok "... with its state in ./var" || bad "no state in ./var: $(ls "$T/cwd")"
  s=$(curl -sS --cacert "$T/cwd/var/ca.crt" -o /dev/null -w '%{http_code}' https://127.0.0.1:8443/healthz 2>&1)
  [ "$s" = 200 ] && ok "... and answers there" || bad "https://127.0.0.1:8443/healthz: $s"
  (cd "$T/cwd" && "$CUSTOS" service info --json) >"$T/out" 2>"$T/err"
  contains "$T/out" '"idScope":"0ne' "custos service info without --state reads ./var"
  contains "$T/out" ':8443' "... and names the port"
  stop_server TERM
fi

# ---- config keys end to end ----
# id-scope (first start), hub = NAME,WEIGHT, store = sqlite:PATH, log-file;
# --listen replaces the config's listen (an address that cannot be bound).
S2=$T/keys/var
mkdir -p "$T/keys"
cat >"$T/keys.conf" <<CONF
id-scope = 0ne00ABCDEF
hub = east.test,3
hub = west.test
store = sqlite:$T/keys/elsewhere.db
log-file = $T/keys/custosd.log
listen = 192.0.2.1:9
CONF
"$CUSTOSD" --state "$S2" --config "$T/keys.conf" --listen 127.0.0.1:0 >"$T/keys.out" 2>&1 &
SRV_PID=$!
await_endpoint "$S2" "$SRV_PID" "$T/keys.out" "custosd with every key"
serving_lines "$T/keys/custosd.log" 1
ok "--listen replaces the config's listen (192.0.2.1:9 is never bound)"
"$CUSTOS" service info --state "$S2" --config "$T/keys.conf" --json >"$T/out" 2>"$T/err"
contains "$T/out" '"idScope":"0ne00ABCDEF"' "id-scope names the scope on first start"
[ -s "$T/keys/elsewhere.db" ] && [ ! -e "$S2/custos.db" ] && ok "store = sqlite:PATH puts the store there" \
  || bad "store: $(ls "$T/keys" "$S2")"
CUSTOS_STORE="sqlite:$T/keys/elsewhere.db" "$CUSTOS" hub list --state "$S2" --json >"$T/hubs" 2>&1
contains "$T/hubs" '"east.test"' "hub = east.test,3 is linked"
grep -o '{[^}]*"east.test"[^}]*}' "$T/hubs" | grep -q '"allocationWeight":3' && ok "... with weight 3" || bad "east.test weight: $(cat "$T/hubs")"
contains "$T/hubs" '"west.test"' "hub = west.test is linked"
if grep -q 'hub1.custos.local' "$T/hubs"; then bad "the default hub was made although hubs are configured"; else ok "no default hub beside the configured ones"; fi
contains "$T/keys/custosd.log" 'custosd serving" url=https://127.0.0.1:' "log-file receives the log"
if grep -q 'custosd serving' "$T/keys.out"; then bad "the log went to stderr too"; else ok "... and stderr does not"; fi
stop_server TERM

# Repeated --listen: IPv4 and, where the host has it, IPv6.
L2="--listen 127.0.0.1:0"
if python3 -c 'import socket; socket.socket(socket.AF_INET6).bind(("::1", 0))' 2>/dev/null; then L2="$L2 --listen [::1]:0"; fi
: >"$T/keys/custosd.log"
# shellcheck disable=SC2086
"$CUSTOSD" --state "$S2" --config "$T/keys.conf" $L2 >"$T/keys.out" 2>&1 &
SRV_PID=$!
await_endpoint "$S2" "$SRV_PID" "$T/keys.out" "custosd on two addresses"
serving_lines "$T/keys/custosd.log" "$(echo "$L2" | grep -o -- --listen | wc -l)"
for u in $(grep -o 'custosd serving" url=[^ ]*' "$T/keys/custosd.log" | sed 's/.*url=//'); do
  s=$(curl -sS -g --cacert "$S2/ca.crt" -o /dev/null -w '%{http_code}' "$u/healthz" 2>&1)
  [ "$s" = 200 ] && ok "serves $u" || bad "$u/healthz: $s"
done
n=$(grep -c 'custosd serving' "$T/keys/custosd.log")
[ "$n" = "$(echo "$L2" | grep -o -- --listen | wc -l)" ] && ok "one serving line per --listen ($n)" || bad "$n serving lines for: $L2"
stop_server TERM
