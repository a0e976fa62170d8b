#!/usr/bin/env bash
# custos store migrate: an SQLite deployment (enrollments, a group, a CA,
# hubs, registrations, a signed audit log) copied into PostgreSQL and
# verified (a progress bar on a terminal); re-run safely; refused when the target has moved on or the
# keyring is another; custosd then serves the copy.
BIN=${1:?usage: migrate.sh BIN}
unset CUSTOS_TEST_STORE CUSTOS_STORE CUSTOS_STORE_PASSWORD_FILE
. "$(dirname "$0")/lib.sh"
PGF=$(cd "$(dirname "$0")/../common" && pwd)/pg_fixture.sh
[ -s "${CUSTOS_TEST_PG_DIR:-}/uri" ] || { echo "skipped: no PostgreSQL fixture (CUSTOS_TEST_PG_DIR)"; exit 77; }
PW=$CUSTOS_TEST_PG_DIR/password
DB=m_$(basename "$T" | tr -c 'a-zA-Z0-9\n' _)
URI=$("$PGF" createdb "$CUSTOS_TEST_PG_DIR" "$DB") || { bad "no database"; exit 1; }
V='api-version=2021-06-01'
J='Content-Type: application/json'

# ---- an SQLite deployment with some history ----
STATE=$T/var
start_server "$STATE" "audit-sign-every = 5" "register-reply = final"
PK=$(openssl rand -base64 32); echo "$PK" >"$T/pk"
GK=$(openssl rand -base64 64 | tr -d '\n'); echo "$GK" >"$T/gk"
expect_rc 0 "an individual enrollment" "$CUSTOS" enrollment create dev-1 --attestation symmetricKey --primary-key-file "$T/pk" --state "$STATE"
expect_rc 0 "a group" "$CUSTOS" group create grp-1 --attestation symmetricKey --primary-key-file "$T/gk" --state "$STATE"
expect_rc 0 "a hub" "$CUSTOS" hub add hub2.custos.local --weight 3 --state "$STATE"
for d in dev-1 g-1 g-2 g-3; do
  if [ $d = dev-1 ]; then K=$PK; else K=$(derive "$GK" $d); fi
  expect_http 200 "$d registers on the SQLite node" PUT "/$SCOPE/registrations/$d/register?$V" -H "$J" \
    -H "Authorization: $(sas "$SCOPE" $d "$K" $(( $(date +%s) + 600 )))" -d "{\"registrationId\":\"$d\"}"
done
stop_server TERM
"$CUSTOS" registration show g-2 --state "$STATE" --json >"$T/g2-before.json"

# ---- migrate ----
expect_rc 2 "--to must be PostgreSQL" "$CUSTOS" store migrate --from "$STATE" --to "$T/other.db"
# The right password, so that only the refusal can make these fail.
PWV=$(cat "$PW")
HP=${URI#postgresql://custos@}; HP=${HP%%/*}
expect_rc 2 "a password in the URI on the command line is refused" "$CUSTOS" store migrate --from "$STATE" \
  --to "${URI/custos@/custos:$PWV@}"
contains "$T/err" "password-file" "and says to use a password file"
contains "$T/err" "PGPASSWORD" "or the environment"
if grep -q "$PWV" "$T/err" "$T/out"; then bad "the password is echoed"; else ok "the password is not echoed"; fi
expect_rc 2 "a password in a conninfo is refused" "$CUSTOS" store migrate --from "$STATE" \
  --to "postgresql:host=${HP%:*} port=${HP##*:} dbname=$DB user=custos password=$PWV"
expect_rc 2 "so is one in the URI's query" "$CUSTOS" store migrate --from "$STATE" --to "$URI?password=$PWV"
expect_rc 2 "an invalid URI is a usage error, not echoed" "$CUSTOS" store migrate --from "$STATE" \
  --to "$URI?pasword=$PWV"
if grep -q "$PWV" "$T/err" "$T/out"; then bad "the invalid URI is echoed"; else ok "not echoed"; fi
expect_rc 1 "a wrong password is refused" env PGPASSWORD=wrong "$CUSTOS" store migrate --from "$STATE" --to "$URI"
contains "$T/err" "127.0.0.1" "the error names the server"
if grep -q wrong "$T/err"; then bad "the password appears in the error"; else ok "not the password"; fi
expect_rc 0 "migrate into PostgreSQL" "$CUSTOS" store migrate --from "$STATE" --to "$URI" --password-file "$PW" --json
contains "$T/out" '"verified":true' "verified"
contains "$T/out" '"auditRecordsAlreadyThere":0' "the whole audit log copied"
grep -q '"auditHeads":0,' "$T/out" && bad "no signed heads copied" || ok "signed heads copied"
FIRST_SUM=$(sed 's/.*"documentsSha256":"\([0-9a-f]*\)".*/\1/' "$T/out")
expect_rc 0 "migrate again: safe" "$CUSTOS" store migrate --from "$STATE" --to "$URI" --password-file "$PW" --json
contains "$T/out" '"auditRecordsCopied":0' "nothing copied twice"
contains "$T/out" "\"documentsSha256\":\"$FIRST_SUM\"" "the same checksum"
expect_rc 0 "migrate again, not on a terminal" "$CUSTOS" store migrate --from "$STATE" --to "$URI" --password-file "$PW"
grep -q '\[[#.]*\]' "$T/err" && bad "a progress bar without a terminal" || ok "no progress bar without a terminal"
# On a terminal (script(1) gives the command one), a bar per phase that
# ends at 100%.
script -qec "$(printf '%q ' "$CUSTOS" store migrate --from "$STATE" --to "$URI" --password-file "$PW")" /dev/null \
  >"$T/tty" 2>&1 && ok "migrate on a terminal" || bad "migrate on a terminal: $(head -c 400 "$T/tty")"
tr '\r' '\n' <"$T/tty" >"$T/bars"
grep -Eq '^documents +\[#{40}\] 100% ' "$T/bars" && ok "the documents' bar reaches 100%" \
  || bad "no documents bar at 100%: $(head -c 400 "$T/bars")"
LAST=$(grep -E '^[a-z ]+ +\[[#.]{40}\]' "$T/bars" | tail -1)
[[ $LAST =~ ^verify\ +\[#{40}\]\ 100%\ ([0-9]+)/([0-9]+)$ && ${BASH_REMATCH[1]} = "${BASH_REMATCH[2]}" ]] \
  && ok "the last bar is the verification's, at 100%" || bad "the last bar: '$LAST'"
contains "$T/tty" "^copied " "then the summary"

# ---- the copy, through the command line and custosd ----
export CUSTOS_STORE=$URI CUSTOS_STORE_PASSWORD_FILE=$PW
expect_rc 0 "audit verify against PostgreSQL, signatures checked" "$CUSTOS" audit verify --state "$STATE" --pubkey "$STATE/audit.pub"
expect_rc 0 "the registration record reads the same" "$CUSTOS" registration show g-2 --state "$STATE" --json
cmp -s "$T/out" "$T/g2-before.json" && ok "identical" || bad "g-2 differs: $(cat "$T/out") vs $(cat "$T/g2-before.json")"
expect_rc 0 "the group lists" "$CUSTOS" group show grp-1 --state "$STATE"
start_server "$STATE" "audit-sign-every = 5" "register-reply = final"
expect_http 200 "custosd on PostgreSQL: a migrated device registers again" PUT "/$SCOPE/registrations/g-1/register?$V" \
  -H "$J" -H "Authorization: $(sas "$SCOPE" g-1 "$(derive "$GK" g-1)" $(( $(date +%s) + 600 )))" -d '{"registrationId":"g-1"}'
body_has '"status":"assigned"' "assigned"
stop_server TERM
expect_rc 0 "the chain still verifies" "$CUSTOS" audit verify --state "$STATE" --pubkey "$STATE/audit.pub"
unset CUSTOS_STORE CUSTOS_STORE_PASSWORD_FILE

# ---- refusals ----
expect_rc 1 "a target written to since is refused" "$CUSTOS" store migrate --from "$STATE" --to "$URI" --password-file "$PW"
contains "$T/err" "not the beginning of the source" "and says why"
URI2=$("$PGF" createdb "$CUSTOS_TEST_PG_DIR" "${DB}_2")
mkdir -p "$T/other" && head -c 32 /dev/urandom >"$T/other/keyring.key" && cp "$STATE/custos.db" "$T/other/"
expect_rc 1 "a source under another keyring is refused" "$CUSTOS" store migrate --from "$T/other" --to "$URI2" --password-file "$PW"
expect_rc 0 "the target is still empty" env PGPASSWORD="$(cat "$PW")" psql -X -At "$URI2" -c "SELECT count(*) FROM pg_tables WHERE tablename='docs'"
contains "$T/out" "^0$" "no tables made"
for d in "$DB" "${DB}_2"; do
  PGPASSWORD=$(cat "$PW") psql -X -q "${URI%/*}/postgres" -c "DROP DATABASE IF EXISTS \"$d\" WITH (FORCE)" >/dev/null 2>&1
done
