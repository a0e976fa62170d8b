#!/bin/sh
# Drives the provisioning commands end to end: the seed example through
# `enrollment explain`, etags, import with rejects, CA proof of possession.
set -u
C="$1"
REG="$2" # registers a device through the engine (register_helper.c)
T=$(mktemp -d "${TMPDIR:-/tmp}/cu-cli-XXXXXX")
trap 'rm -rf "$T"' EXIT
S="--state $T/var"
fails=0
ok()   { printf 'ok   %s\n' "$1"; }
bad()  { printf 'FAIL %s\n' "$1"; fails=$((fails + 1)); }
# expect STATUS PATTERN DESCRIPTION -- command...
expect() {
    want=$1 pat=$2 what=$3; shift 4
    out=$("$@" 2>&1); got=$?
    if [ "$got" -eq "$want" ] && { [ -z "$pat" ] || printf '%s' "$out" | grep -q -- "$pat"; }; then ok "$what"
    else bad "$what (exit $got, wanted $want; pattern '$pat')"; printf '%s\n' "$out" | sed 's/^/     /'; fi
}

expect 0 "usage: custos enrollment" "enrollment --help" -- "$C" enrollment --help
expect 0 "usage: custos group" "group --help" -- "$C" group --help
expect 0 "verification-code" "ca --help" -- "$C" ca --help
expect 0 "weight" "hub --help" -- "$C" hub --help
expect 0 "registration" "registration --help" -- "$C" registration --help
expect 0 "verification-cert" "pki --help" -- "$C" pki --help
expect 2 "unknown command" "unknown subcommand" -- "$C" enrollment frobnicate

expect 0 "device-1..3" "pki seed" -- "$C" pki seed --out "$T/pki"
expect 0 "hub1.example.net" "hub add" -- "$C" hub add hub1.example.net --weight 2 $S
expect 1 "unknown root" "nothing enrolled: refused" -- "$C" enrollment explain --cert "$T/pki/device-4-chain.pem" $S

# Seed step 1: one enabled group on the root.
expect 0 "root-group" "group on the root" -- "$C" group create root-group --cert "$T/pki/root.pem" $S
for d in 1 2 3 4 5; do
    expect 0 "outcome: provision" "step 1: device-$d provisions" -- "$C" enrollment explain --cert "$T/pki/device-$d-chain.pem" $S
done
# Step 2: B compromised.
expect 0 "disabled" "disabled group on B" -- "$C" group create group-b --cert "$T/pki/cert-b.pem" --disable $S
for d in 1 2 3; do
    expect 0 "outcome: provision" "step 2: device-$d provisions" -- "$C" enrollment explain --cert "$T/pki/device-$d-chain.pem" $S
done
for d in 4 5; do
    expect 1 "group-b' is disabled" "step 2: device-$d refused" -- "$C" enrollment explain --cert "$T/pki/device-$d-chain.pem" $S
done
# Step 3: device 3 compromised.
expect 0 "device-3" "disabled individual for device-3" -- "$C" enrollment create device-3 --cert "$T/pki/device-3.pem" --disable $S
expect 1 "individual enrollment 'device-3' is disabled" "step 3: device-3 refused" -- "$C" enrollment explain --cert "$T/pki/device-3-chain.pem" $S
expect 0 "outcome: provision" "step 3: device-1 provisions" -- "$C" enrollment explain --cert "$T/pki/device-1-chain.pem" $S
expect 0 "outcome: provision" "step 3: device-2 provisions" -- "$C" enrollment explain --cert "$T/pki/device-2-chain.pem" $S
expect 0 '"decidedBy"' "explain --json" -- "$C" enrollment explain --json --cert "$T/pki/device-1-chain.pem" $S
expect 1 "disabled" "explain by registration id" -- "$C" enrollment explain --registration-id device-3 $S

# Etags: a stale one is refused and nothing changes.
etag=$("$C" enrollment show device-3 --json $S | sed -n 's/.*"etag": "\(\\"[^\\]*\\"\)".*/\1/p' | sed 's/\\"/"/g')
[ -n "$etag" ] && ok "etag read ($etag)" || bad "etag read"
expect 0 "enabled" "update with the right etag" -- "$C" enrollment update device-3 --enable --etag "$etag" $S
expect 1 "stale etag" "update with a stale etag" -- "$C" enrollment update device-3 --disable --etag "$etag" $S
expect 0 "provisioningStatus:  enabled" "stale update changed nothing" -- "$C" enrollment show device-3 $S

# Symmetric keys come from files, are generated otherwise, never shown by default.
printf 'c3ltbWV0cmljLWtleS1mb3ItdGVzdHMtb25seS0zMmI=\n' > "$T/k1"
expect 0 "symmetricKey" "create symmetric-key enrollment" -- "$C" enrollment create sym-1 --primary-key-file "$T/k1" $S
if "$C" enrollment show sym-1 --json $S | grep -q c3ltbWV0; then bad "keys hidden by default"; else ok "keys hidden by default"; fi
expect 0 "c3ltbWV0" "--show-keys" -- "$C" enrollment show sym-1 --show-keys $S
if grep -q c3ltbWV0cmljLWtleS1mb3I "$T/var/custos.db" "$T/var/custos.db-wal" 2>/dev/null; then bad "key wrapped at rest"; else ok "key wrapped at rest"; fi

# From REST JSON.
cat > "$T/e.json" <<'J'
{"registrationId":"json-1","attestation":{"type":"symmetricKey"},"allocationPolicy":"static","iotHubs":["hub1.example.net"]}
J
expect 0 "json-1" "create --file" -- "$C" enrollment create --file "$T/e.json" $S
expect 1 "already exists" "create twice" -- "$C" enrollment create --file "$T/e.json" $S
printf '{"registrationId":"bad",' > "$T/bad.json"
expect 1 "malformed JSON at line 1" "malformed --file" -- "$C" enrollment create --file "$T/bad.json" $S

# Import: 3 good, 2 bad.
cat > "$T/bulk.jsonl" <<'J'
{"registrationId":"bulk-1","attestation":{"type":"symmetricKey"}}
{"registrationId":"bulk-2","attestation":{"type":"symmetricKey"}}
{"registrationId":"bad id!","attestation":{"type":"symmetricKey"}}
{"registrationId":"bulk-3","attestation":{"type":"symmetricKey"},"colour":"blue"}
{"registrationId":"bulk-4","attestation":{"type":"symmetricKey"}}
J
expect 1 "imported 3, rejected 2" "import with rejects" -- "$C" enrollment import "$T/bulk.jsonl" $S
expect 1 "line 4: colour: unknown field" "import says why" -- "$C" enrollment import "$T/bulk.jsonl" --create-only $S
expect 0 "bulk-4" "imported entry" -- "$C" enrollment show bulk-4 $S
expect 0 "(more: --after" "list paging" -- "$C" enrollment list --page-size 2 $S
expect 0 "continuation" "list --json paging" -- "$C" enrollment list --page-size 2 --json $S
expect 0 "deleted" "delete" -- "$C" enrollment delete bulk-4 $S
expect 1 "no enrollment 'bulk-4'" "show deleted" -- "$C" enrollment show bulk-4 $S

# CA proof of possession, and a group referencing the CA.
expect 0 "added" "ca add" -- "$C" ca add factory --cert "$T/pki/cert-a.pem" $S
expect 1 "not verified" "group on an unverified CA" -- "$C" group create by-ref --ca-ref factory $S
code=$("$C" ca verification-code factory $S)
expect 0 "" "verification cert" -- "$C" pki verification-cert --ca-cert "$T/pki/cert-a.pem" --ca-key "$T/pki/cert-a.key" --code "$code" --out "$T/proof.pem"
"$C" pki verification-cert --ca-cert "$T/pki/cert-b.pem" --ca-key "$T/pki/cert-b.key" --code "$code" --out "$T/wrong.pem" >/dev/null
expect 1 "not signed by" "proof by another key refused" -- "$C" ca verify factory --cert "$T/wrong.pem" $S
expect 1 "stale etag" "ca verify --etag stale" -- "$C" ca verify factory --cert "$T/proof.pem" --etag '"00000000-0000-0000-0000-000000000000"' $S
etag=$("$C" ca list --json $S | sed -n 's/.*"etag": *"\(\\"[^\\]*\\"\)".*/\1/p' | sed 's/\\"/"/g')
[ -n "$etag" ] && ok "the CA's etag" || bad "the CA's etag (none in ca list --json)"
expect 0 "verified" "ca verify --etag" -- "$C" ca verify factory --cert "$T/proof.pem" --etag "$etag" $S
"$C" pki verification-cert --ca-cert "$T/pki/cert-a.pem" --ca-key "$T/pki/cert-a.key" --code "$code" --out "$T/proof2.pem" >/dev/null
expect 1 "no verification code" "the code is one-time" -- "$C" ca verify factory --cert "$T/proof2.pem" $S
expect 0 "by-ref" "group on the verified CA" -- "$C" group create by-ref --ca-ref factory $S
expect 0 "verified" "ca list" -- "$C" ca list $S
expect 0 "hub1.example.net" "hub list" -- "$C" hub list $S
expect 0 "hashed" "default policy" -- "$C" hub default-policy $S
expect 0 "geoLatency" "set default policy" -- "$C" hub default-policy geoLatency $S
expect 2 "default-policy is" "custom cannot be the default" -- "$C" hub default-policy custom $S
expect 1 "not found\|no registration" "registration show (none yet)" -- "$C" registration show device-1 $S

# Deleting with --json prints a JSON result, as every other command does.
expect 0 "assigned" "a registration (through the engine)" -- "$REG" "$T/var" sym-1 "$T/k1"
expect 0 '"registrationId": *"sym-1"' "registration show --json" -- "$C" registration show sym-1 --json $S
expect 0 '^{"deleted":true}$' "registration delete --json" -- "$C" registration delete sym-1 --json $S
expect 1 "no registration" "registration deleted" -- "$C" registration show sym-1 $S
expect 0 "spare" "ca add (unreferenced)" -- "$C" ca add spare --cert "$T/pki/cert-b.pem" $S
expect 0 '^{"deleted":true}$' "ca delete --json" -- "$C" ca delete spare --json $S
expect 0 "hub9.example.net" "hub add (to delete)" -- "$C" hub add hub9.example.net $S
expect 0 '^{"deleted":true}$' "hub delete --json" -- "$C" hub delete hub9.example.net --json $S
expect 0 "hub8.example.net" "hub add (another)" -- "$C" hub add hub8.example.net $S
expect 0 "^deleted hub8.example.net$" "hub delete (text)" -- "$C" hub delete hub8.example.net $S

# The limit on symmetric-key groups (each is tried for an unknown device).
expect 0 "^1000$" "group symkey-limit (default)" -- "$C" group symkey-limit $S
expect 2 "a count" "group symkey-limit 0 refused" -- "$C" group symkey-limit 0 $S
expect 0 '^{"maxSymmetricKeyGroups":1}$' "group symkey-limit 1" -- "$C" group symkey-limit 1 --json $S
expect 0 "sym-a" "a symmetric-key group" -- "$C" group create sym-a --attestation symmetricKey $S
expect 1 "at their limit of 1" "one more refused" -- "$C" group create sym-b --attestation symmetricKey $S
expect 1 "no enrollmentGroup 'sym-b'" "nothing written" -- "$C" group show sym-b $S
expect 0 "symkey-limit" "group --help names it" -- "$C" group --help

# A test chain: root -> factory -> line -> devices.
expect 0 "2 factories" "pki chain" -- "$C" pki chain --out "$T/chain" --factories 2 --lines 1 --devices 2
[ -f "$T/chain/device-4-chain.pem" ] && [ "$(stat -c %a "$T/chain/device-4.key")" = 600 ] && ok "chain files, keys 0600" || bad "chain files"

echo "$fails failed"
[ "$fails" -eq 0 ]
