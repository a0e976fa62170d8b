#!/usr/bin/env bash
# `custos audit custody --state DIR` reads each key's last use from the store
# the other audit commands read: $CUSTOS_STORE when it is set (a PostgreSQL
# deployment, or an SQLite file outside the state), not STATE/custos.db.
# The CSV starts with its summary as # lines.
#   custody_store.sh sqlite|pg path/to/bin
# pg: a database in the PostgreSQL fixture (CUSTOS_TEST_PG_DIR).
MODE=${1:?usage: custody_store.sh sqlite|pg BIN}
BIN=${2:?usage: custody_store.sh sqlite|pg BIN}
CUSTOS=$(cd "$BIN" && pwd)/custos
command -v softhsm2-util >/dev/null || { echo "skipped: SoftHSM2 missing"; exit 77; }
command -v jq >/dev/null || { echo "skipped: jq missing"; exit 77; }
unset CUSTOS_STORE CUSTOS_STORE_PASSWORD_FILE
export CUSTOS_PIN=1234 CUSTOS_SO_PIN=12345678
T=$(mktemp -d "${TMPDIR:-/tmp}/custos-custody-store.XXXXXX")
. "$(dirname "$0")/../common/check.sh"
trap 'if [ "$fail" = 0 ]; then rm -rf "$T"; else echo "kept $T"; fi; summary; exit $?' EXIT
case $MODE in
sqlite)
    mkdir "$T/elsewhere"
    STORE=sqlite:$T/elsewhere/custos.db ;;
pg)
    PGF=$(cd "$(dirname "$0")/../common" && pwd)/pg_fixture.sh
    [ -s "${CUSTOS_TEST_PG_DIR:-}/uri" ] || { echo "skipped: no PostgreSQL fixture (CUSTOS_TEST_PG_DIR)"; exit 77; }
    STORE=$("$PGF" createdb "$CUSTOS_TEST_PG_DIR" "cs_$(basename "$T" | tr -c 'a-zA-Z0-9\n' _)") ||
        { bad "no database"; exit 1; }
    export CUSTOS_STORE_PASSWORD_FILE=$CUSTOS_TEST_PG_DIR/password ;;
*) echo "usage: custody_store.sh sqlite|pg BIN"; exit 2 ;;
esac

STATE=$T/var
TOK=$STATE/tokens/svc
mkdir -p "$STATE/tokens"
expect_rc 0 "the service's token under STATE/tokens" "$CUSTOS" token init --kind softhsm2 --label svc --dir "$TOK"
# Made with --state while $CUSTOS_STORE names the store: the keygen record goes there.
CUSTOS_STORE=$STORE expect_rc 0 "a key made with --state" \
    "$CUSTOS" token keygen --dir "$TOK" --type ec-p256 --label made --state "$STATE"
SEQ=$(CUSTOS_STORE=$STORE "$CUSTOS" audit export --state "$STATE" | jq -r 'select(.type == "token.keygen") | .seq')
[ -n "$SEQ" ] && ok "the keygen record is in \$CUSTOS_STORE's log (#$SEQ)" || bad "no keygen record in the store"
[ ! -e "$STATE/custos.db" ] && ok "no STATE/custos.db was made" || bad "STATE/custos.db exists"

CUSTOS_STORE=$STORE expect_rc 0 "custody --json, \$CUSTOS_STORE set" "$CUSTOS" audit custody --state "$STATE" --json
r=$(jq -r '.keys[] | select(.label == "made") | "\(.last_use.recorded) \(.last_use.record) \(.last_use.seq)"' "$T/out")
[ "$r" = "true token.keygen $SEQ" ] && ok "the last use comes from \$CUSTOS_STORE" || bad "last use: $r"
[ "$(jq -r .summary.keys_with_recorded_use "$T/out")" = 1 ] && ok "summary: 1 key with a recorded use" ||
    bad "summary: $(jq -c .summary "$T/out")"

# The CSV: the summary in # lines first, then the header and the rows.
CUSTOS_STORE=$STORE expect_rc 0 "custody --csv" "$CUSTOS" audit custody --state "$STATE" --csv
head -1 "$T/out" | grep -q '^# Custos key custody report, [0-9-]*T[0-9:]*Z$' && ok "CSV: the title line" ||
    bad "CSV line 1: $(head -1 "$T/out")"
sed -n 2p "$T/out" | grep -q '^# tokens: 1, keys: 1, flagged: 0 (software keystore 0, ever extractable 0, imported 0, not in a token 0), unreadable tokens: 0$' &&
    ok "CSV: the counts" || bad "CSV line 2: $(sed -n 2p "$T/out")"
sed -n 3p "$T/out" | grep -q "^# last use: from the audit log of $STATE: 1 of 1 key(s) have a recorded use$" &&
    ok "CSV: the last-use summary" || bad "CSV line 3: $(sed -n 3p "$T/out")"
sed -n 4p "$T/out" | grep -q '^token_kind,' && ok "CSV: then the header" || bad "CSV line 4: $(sed -n 4p "$T/out")"
grep '"made"' "$T/out" | grep -q "(token.keygen #$SEQ, " && ok "CSV: the key's last use" || bad "CSV row: $(cat "$T/out")"
[ "$(grep -vc '^#' "$T/out")" = 2 ] && ok "CSV: header and one row" || bad "CSV rows: $(cat "$T/out")"

# Without $CUSTOS_STORE the state has no database: no log to read.
expect_rc 0 "custody --json without \$CUSTOS_STORE" "$CUSTOS" audit custody --state "$STATE" --json
[ "$(jq -r .summary.audit_log "$T/out")" = null ] && ok "... no log read" || bad "without: $(jq -c .summary "$T/out")"
# A store that cannot be opened fails the report.
CUSTOS_STORE=sqlite:$T/nowhere/custos.db expect_rc 1 "an unreadable \$CUSTOS_STORE fails the report" \
    "$CUSTOS" audit custody --state "$STATE" --json
contains "$T/err" 'cannot read the audit log of \$CUSTOS_STORE' "... saying so"
