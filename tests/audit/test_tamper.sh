#!/bin/bash
# Tampering with the audit log directly in the database: each change is
# found by `custos audit verify` at the right record, with a non-zero exit
# status; the clean log verifies. The database is each state's SQLite file
# (sqlite3), or with CUSTOS_TEST_STORE=postgresql a database of its own in
# the PostgreSQL fixture (CUSTOS_TEST_PG_DIR) per state, tampered with
# through psql (audit_tamper_pg).
#   test_tamper.sh path/to/custos
set -u
CUSTOS=${1:?usage: test_tamper.sh CUSTOS}
command -v openssl >/dev/null || { echo "openssl CLI missing"; exit 77; }
PG=
if [ "${CUSTOS_TEST_STORE:-}" = postgresql ]; then
    PG=1
    command -v psql >/dev/null || { echo "psql missing"; exit 77; }
    [ -s "${CUSTOS_TEST_PG_DIR:-}/uri" ] || { echo "no PostgreSQL fixture (CUSTOS_TEST_PG_DIR)"; exit 77; }
    PG_ADMIN=$(cat "$CUSTOS_TEST_PG_DIR/uri")
    export PGPASSWORD
    PGPASSWORD=$(cat "$CUSTOS_TEST_PG_DIR/password")
    export CUSTOS_STORE_PASSWORD_FILE=$CUSTOS_TEST_PG_DIR/password
else
    command -v sqlite3 >/dev/null || { echo "sqlite3 CLI missing"; exit 77; }
fi
unset CUSTOS_STORE
T=$(mktemp -d "${TMPDIR:-/tmp}/custos-tamper.XXXXXX")
DBS=()
cleanup() {
    for db in "${DBS[@]}"; do
        PGOPTIONS='-c client_min_messages=warning' psql -X -q "$PG_ADMIN" \
            -c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" >/dev/null 2>&1
    done
    rm -rf "$T"
}
trap cleanup EXIT
pass=0 fail=0
ok() { pass=$((pass + 1)); echo "ok - $1"; }
ko() { fail=$((fail + 1)); echo "FAIL - $1"; }

# A state's database on PostgreSQL: one per state directory of this run.
db_of() { echo "ta_$(basename "$T" | tr -c 'a-zA-Z0-9\n' _)_$(basename "$1" | tr -c 'a-zA-Z0-9\n' _)"; }
db_uri() { echo "${PG_ADMIN%/*}/$(db_of "$1")"; }
# at STATE COMMAND...: the command with STATE's store ($CUSTOS_STORE on PostgreSQL).
at() {
    local s=$1
    shift
    if [ -n "$PG" ]; then CUSTOS_STORE=$(db_uri "$s") "$@"; else "$@"; fi
}
# sql STATE STATEMENTS: straight on STATE's database, behind the store's back.
sql() {
    if [ -n "$PG" ]; then
        PGOPTIONS='-c client_min_messages=warning' psql -X -q -tA -v ON_ERROR_STOP=1 "$(db_uri "$1")" -c "$2"
    else
        sqlite3 "$1/custos.db" "$2"
    fi
}
# new_db STATE: an empty database for STATE. copy_state FROM TO: the state
# directory and its database copied.
new_db() {
    [ -n "$PG" ] || return 0
    DBS+=("$(db_of "$1")")
    PGOPTIONS='-c client_min_messages=warning' psql -X -q -v ON_ERROR_STOP=1 "$PG_ADMIN" \
        -c "DROP DATABASE IF EXISTS \"$(db_of "$1")\"" -c "CREATE DATABASE \"$(db_of "$1")\"" >/dev/null
}
copy_state() {
    rm -rf "$2"
    cp -r "$1" "$2"
    [ -n "$PG" ] || return 0
    DBS+=("$(db_of "$2")")
    PGOPTIONS='-c client_min_messages=warning' psql -X -q -v ON_ERROR_STOP=1 "$PG_ADMIN" \
        -c "DROP DATABASE IF EXISTS \"$(db_of "$2")\"" \
        -c "CREATE DATABASE \"$(db_of "$2")\" TEMPLATE \"$(db_of "$1")\"" >/dev/null
}
# A signature's bytes as a literal (x'..' is a bit string to PostgreSQL).
if [ -n "$PG" ]; then BAD_SIG="decode('3006020101020101','hex')"; else BAD_SIG="x'3006020101020101'"; fi

openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$T/audit.key" 2>/dev/null
openssl pkey -in "$T/audit.key" -pubout -out "$T/audit.pub" 2>/dev/null
openssl genpkey -algorithm ED25519 -out "$T/other.key" 2>/dev/null
openssl pkey -in "$T/other.key" -pubout -out "$T/other.pub" 2>/dev/null

# 10 records: the id scope, then nine hubs; the head signed at record 10.
S="$T/base"
new_db "$S"
for i in 1 2 3 4 5 6 7 8 9; do
    at "$S" "$CUSTOS" hub add "hub$i.example.net" --state "$S" >/dev/null || ko "hub add $i"
done
n=$(sql "$S" "select count(*) from audit_log")
[ "$n" = 10 ] && ok "ten records written" || ko "ten records written (got $n)"
if [ -n "$PG" ]; then
    [ ! -e "$S/custos.db" ] && ok "... in PostgreSQL, no $S/custos.db" || ko "an SQLite store in $S"
fi
at "$S" "$CUSTOS" audit sign --state "$S" --key "$T/audit.key" >/dev/null && ok "head signed" || ko "head signed"

# verify_case NAME SQL WANT_SEQ WANT_FAULT [extra verify args]
verify_case() {
    name=$1 sql=$2 seq=$3 fault=$4
    shift 4
    D="$T/$name"
    copy_state "$S" "$D"
    [ -n "$sql" ] && sql "$D" "$sql"
    out=$(at "$D" "$CUSTOS" audit verify --state "$D" --pubkey "$PUB" "$@" 2>&1)
    st=$?
    if [ "$seq" = 0 ]; then
        if [ $st = 0 ] && echo "$out" | grep -q "audit log verifies"; then ok "$name: verifies"
        else ko "$name: should verify (status $st): $out"; fi
        return
    fi
    if [ $st != 0 ] && echo "$out" | grep -q "first bad record: $seq ($fault)"; then
        ok "$name: found at record $seq ($fault)"
    else
        ko "$name: wanted record $seq ($fault), status $st: $out"
    fi
}

PUB="$T/audit.pub"
verify_case clean "" 0 ""
verify_case edit-payload \
    "update audit_log set payload=replace(payload,'\"allocationWeight\":1','\"allocationWeight\":9') where seq=4" 4 edited
verify_case edit-actor "update audit_log set actor='cli:someone-else@host' where seq=6" 6 edited
verify_case edit-time "update audit_log set at='2020-01-01T00:00:00.0000000Z' where seq=7" 7 edited
verify_case edit-type "update audit_log set type='hub.delete' where seq=3" 3 edited
verify_case delete "delete from audit_log where seq=4" 4 missing
verify_case delete-first "delete from audit_log where seq=1" 1 missing
verify_case delete-range "delete from audit_log where seq between 5 and 7" 5 missing
verify_case reorder \
    "update audit_log set seq=-1 where seq=5; update audit_log set seq=5 where seq=6; update audit_log set seq=6 where seq=-1" \
    5 "broken link"
verify_case insert \
    "insert into audit_log select 11, at, type, actor, payload, prev, hash from audit_log where seq=3" \
    11 "broken link"
verify_case truncate "delete from audit_log where seq >= 8" 8 truncated
verify_case truncate-one "delete from audit_log where seq = 10" 10 truncated
verify_case forged-head "update audit_heads set sig=$BAD_SIG" 10 "bad head signature"
verify_case moved-head "update audit_heads set seq=9" 9 "bad head signature"
PUB="$T/other.pub"
verify_case other-key "" 10 "bad head signature"
PUB="$T/audit.pub"

# Without a key: signed heads there and no STATE/audit.pub, verify fails
# (a forged head would pass unchecked), unless --no-signatures says so.
out=$(at "$S" "$CUSTOS" audit verify --state "$S" 2>&1)
[ $? = 1 ] && echo "$out" | grep -q "signed heads but no audit key was found" && ok "no key at all: refused" ||
    ko "no key at all: $out"
out=$(at "$S" "$CUSTOS" audit verify --state "$S" --no-signatures)
[ $? = 0 ] && echo "$out" | grep -q "signatures NOT checked (--no-signatures)" &&
    ok "--no-signatures: the chain alone, said so" || ko "--no-signatures: $out"
out=$(at "$T/forged-head" "$CUSTOS" audit verify --state "$T/forged-head" --no-signatures --json)
echo "$out" | grep -q '"ok":true,.*"signaturesChecked":false' && ok "--no-signatures --json says unchecked" ||
    ko "--no-signatures --json: $out"
at "$S" "$CUSTOS" audit verify --state "$S" --no-signatures --pubkey "$T/audit.pub" >/dev/null 2>&1
[ $? = 2 ] && ok "--no-signatures with a key: usage" || ko "--no-signatures with a key"
# The state's audit.pub (custosd writes it) is the default key: the clean
# log verifies with it, a forged or moved head fails without --pubkey.
for d in "$S" "$T/forged-head" "$T/moved-head" "$T/delete"; do cp "$T/audit.pub" "$d/audit.pub"; done
out=$(at "$S" "$CUSTOS" audit verify --state "$S")
[ $? = 0 ] && echo "$out" | grep -q "1 signatures verified" && echo "$out" | grep -q "audit key: $S/audit.pub" &&
    ok "no --pubkey: the state's audit.pub checks the signatures" || ko "clean log, state's audit.pub: $out"
out=$(at "$T/forged-head" "$CUSTOS" audit verify --state "$T/forged-head")
[ $? = 1 ] && echo "$out" | grep -q "first bad record: 10 (bad head signature)" &&
    ok "forged head without --pubkey: found" || ko "forged head without --pubkey: $out"
out=$(at "$T/moved-head" "$CUSTOS" audit verify --state "$T/moved-head")
[ $? = 1 ] && echo "$out" | grep -q "first bad record: 9 (bad head signature)" &&
    ok "moved head without --pubkey: found" || ko "moved head without --pubkey: $out"
# ... and so is a custosd config's audit-key (here the private key file).
printf 'state = %s\naudit-key = %s\n' "$T/forged-head" "$T/audit.key" >"$T/custosd.conf"
rm "$T/forged-head/audit.pub"
out=$(at "$T/forged-head" "$CUSTOS" audit verify --config "$T/custosd.conf")
[ $? = 1 ] && echo "$out" | grep -q "first bad record: 10 (bad head signature)" &&
    echo "$out" | grep -q "the config's audit-key" && ok "forged head, the config's audit-key: found" ||
    ko "forged head, config: $out"
printf 'state = %s\naudit-key = %s\n' "$S" "$T/other.key" >"$T/custosd.conf"
at "$S" "$CUSTOS" audit verify --config "$T/custosd.conf" >/dev/null; [ $? = 1 ] &&
    ok "the config's audit-key comes before STATE/audit.pub" || ko "config key order"
# A rotated key: several --pubkey, the right one among them.
at "$S" "$CUSTOS" audit verify --state "$S" --pubkey "$T/other.pub" --pubkey "$T/audit.pub" >/dev/null &&
    ok "key among several" || ko "key among several"
# JSON report.
out=$(at "$T/delete" "$CUSTOS" audit verify --state "$T/delete" --json)  # with its audit.pub
echo "$out" | grep -q '"ok":false,.*"fault":"missing","faultSeq":4' && ok "json report" || ko "json report: $out"
# Export: JSON lines from a seq, and since a time (all of today).
n=$(at "$S" "$CUSTOS" audit export --state "$S" --since-seq 8 | wc -l)
[ "$n" = 3 ] && ok "export --since-seq 8: 3 lines" || ko "export --since-seq 8: $n lines"
today=$(date -u +%Y-%m-%d)
n=$(at "$S" "$CUSTOS" audit export --state "$S" --since "$today" | wc -l)
[ "$n" = 10 ] && ok "export --since $today: 10 lines" || ko "export --since $today: $n lines"
n=$(at "$S" "$CUSTOS" audit export --state "$S" --since 2999-01-01T00:00:00Z | wc -l)
[ "$n" = 0 ] && ok "export --since the future: nothing" || ko "export --since the future: $n lines"
# A cutoff in the middle of the log: records before it left out, those
# after it in. (Whole seconds: a second apart on either side of it.)
D="$T/since"
copy_state "$S" "$D"
sleep 1.1
cut=$(date -u +%Y-%m-%dT%H:%M:%SZ)
sleep 1.1
at "$D" "$CUSTOS" hub add hub10.example.net --state "$D" >/dev/null
at "$D" "$CUSTOS" hub add hub11.example.net --state "$D" >/dev/null
out=$(at "$D" "$CUSTOS" audit export --state "$D" --since "$cut" | sed -n 's/^{"seq":\([0-9]*\),.*/\1/p' | tr '\n' ' ')
[ "$out" = "11 12 " ] && ok "export --since $cut (mid-log): records 11 and 12 only" ||
    ko "export --since mid-log: seqs $out"
# The same cutoff with a fraction: still the second it names.
n=$(at "$D" "$CUSTOS" audit export --state "$D" --since "${cut%Z}.999Z" | wc -l)
[ "$n" = 2 ] && ok "export --since with a fraction" || ko "export --since with a fraction: $n lines"
# A cutoff before the first record: everything.
n=$(at "$D" "$CUSTOS" audit export --state "$D" --since 2000-01-01T00:00:00Z | wc -l)
[ "$n" = 12 ] && ok "export --since the past: all 12" || ko "export --since the past: $n lines"
# --since and --since-seq together: refused.
at "$D" "$CUSTOS" audit export --state "$D" --since "$cut" --since-seq 3 >/dev/null 2>&1; [ $? = 2 ] &&
    ok "--since with --since-seq: usage" || ko "--since with --since-seq"
at "$S" "$CUSTOS" audit export --state "$S" | head -1 | grep -q '^{"seq":1,"at":"[0-9T:.-]*Z","type":"setting.update"' &&
    ok "export line form" || ko "export line form"
at "$S" "$CUSTOS" audit export --state "$S" --since yesterday >/dev/null 2>&1; [ $? = 2 ] && ok "bad --since: usage" ||
    ko "bad --since"
at "$T/nowhere" "$CUSTOS" audit verify --state "$T/nowhere" >/dev/null 2>&1; [ $? != 0 ] && [ ! -d "$T/nowhere" ] &&
    ok "verify does not create a state" || ko "verify of a missing state"

# A head kept from an earlier verify catches a tail deleted together with
# the heads signed over it.
kept=$(at "$S" "$CUSTOS" audit verify --state "$S" | sed -n 's/.*--head \([0-9]*:[0-9a-f]*\)$/\1/p')
[ -n "$kept" ] && ok "verify prints a head to keep ($kept)" || ko "no head to keep"
at "$S" "$CUSTOS" audit verify --state "$S" --head "$kept" >/dev/null && ok "kept head found" || ko "kept head"
D="$T/cut-with-heads"
copy_state "$S" "$D"
sql "$D" "delete from audit_log where seq >= 9; delete from audit_heads"
at "$D" "$CUSTOS" audit verify --state "$D" >/dev/null && ok "tail and heads deleted: the log alone cannot tell" ||
    ko "tail and heads deleted"
out=$(at "$D" "$CUSTOS" audit verify --state "$D" --head "$kept")
[ $? != 0 ] && echo "$out" | grep -q "first bad record: 9 (truncated)" && ok "... the kept head can" ||
    ko "kept head after truncation: $out"
at "$S" "$CUSTOS" audit verify --state "$S" --head 10:abc >/dev/null 2>&1; [ $? = 2 ] && ok "bad --head: usage" ||
    ko "bad --head"
n=$(at "$S" "$CUSTOS" audit export --state "$S" --heads | grep -c '^{"signedHead":{"seq":10,"at":"[^"]*","hash":"[0-9a-f]\{64\}","keyId":"[0-9a-f]\{64\}","signature":"[A-Za-z0-9+/=]*"}}$')
[ "$n" = 1 ] && ok "export --heads" || ko "export --heads: $n"

# An auditor's copy of the database alone (no service keyring) verifies,
# and verifying changes nothing (SQLite's own -wal/-shm of a reader aside).
mkdir "$T/auditor"
if [ -z "$PG" ]; then
    cp "$S/custos.db" "$T/auditor/"
    chmod 0444 "$T/auditor/custos.db"
    sum0=$(cksum <"$T/auditor/custos.db")
    out=$("$CUSTOS" audit verify --state "$T/auditor" --pubkey "$T/audit.pub")
    echo "$out" | grep -q "1 signatures verified" && [ ! -e "$T/auditor/keyring.key" ] &&
        [ "$(cksum <"$T/auditor/custos.db")" = "$sum0" ] &&
        ok "the database alone verifies" || ko "database alone: $out; $(ls "$T/auditor")"
else
    # The database and an empty state directory: no keyring at hand.
    log_sum="select md5(string_agg(encode(hash, 'hex'), '' order by seq)) || count(*) from audit_log"
    sum0=$(sql "$S" "$log_sum")
    out=$(at "$S" "$CUSTOS" audit verify --state "$T/auditor" --pubkey "$T/audit.pub")
    echo "$out" | grep -q "1 signatures verified" && [ -z "$(ls -A "$T/auditor")" ] &&
        [ "$(sql "$S" "$log_sum")" = "$sum0" ] &&
        ok "the database alone verifies" || ko "database alone: $out; $(ls "$T/auditor")"
fi

# Keys through OSSL_STORE (file: here; pkcs11: once the provider is configured).
D="$T/uri"
copy_state "$S" "$D"
at "$D" "$CUSTOS" hub add hub10.example.net --state "$D" >/dev/null
at "$D" "$CUSTOS" audit sign --state "$D" --key-uri "file:$T/audit.key" | grep -q "record 11 signed" &&
    ok "sign --key-uri file:" || ko "sign --key-uri file:"
out=$(at "$D" "$CUSTOS" audit verify --state "$D" --key-uri "file:$T/audit.pub")
echo "$out" | grep -q "2 signatures verified" && ok "verify --key-uri file:" || ko "verify --key-uri file: $out"
at "$D" "$CUSTOS" audit sign --state "$D" --key "$T/audit.pub" >/dev/null 2>&1; [ $? != 0 ] &&
    ok "sign with a public key: refused" || ko "sign with a public key"
# An export re-verifies with nothing but the canonical form (docs/audit.md).
if command -v python3 >/dev/null; then
    out=$(at "$D" "$CUSTOS" audit export --state "$D" | python3 "$(dirname "$0")/verify_export.py")
    [ "$out" = "11 records verified" ] && ok "export verified independently" || ko "independent verify: $out"
    out=$(at "$T/edit-payload" "$CUSTOS" audit export --state "$T/edit-payload" | python3 "$(dirname "$0")/verify_export.py" 2>&1)
    [ "$out" = "record 4: hash mismatch" ] && ok "independent verify finds the edit" || ko "independent: $out"
fi

echo "$pass passed, $fail failed"
[ $fail = 0 ]
