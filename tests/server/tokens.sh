#!/usr/bin/env bash
# Keys in tokens through the Custos OpenSSL provider: custosd's TLS key in
# SoftHSM2; a device's TLS client key and a device's HMAC key in SoftHSM2,
# used by `custos device register` by pkcs11: URI. Skipped (77) until the
# provider is built (build/lib/ossl-modules/custos.so).
BIN=${1:?usage: tokens.sh path/to/bin}
MODS=$(cd "$BIN/../lib/ossl-modules" 2>/dev/null && pwd)
if [ -z "$MODS" ] || [ ! -f "$MODS/custos.so" ]; then
  echo "skipped: no provider at $BIN/../lib/ossl-modules/custos.so"; exit 77
fi
. "$(dirname "$0")/lib.sh"
export OPENSSL_MODULES=$MODS CUSTOS_PIN=1234 CUSTOS_SO_PIN=12345678
openssl_for "$MODS"
expect_rc 0 "a SoftHSM2 token" "$CUSTOS" token init --kind softhsm2 --label custosd --dir "$T/tok"
export SOFTHSM2_CONF=$T/tok/softhsm2.conf
expect_rc 0 "the server key, made in the token" "$CUSTOS" token keygen --dir "$T/tok" --type ec-p256 --label server
SURI=$(tail -1 "$T/out")
STATE=$T/var
start_server "$STATE" "server-key = $SURI" "provider-path = $MODS" "retry-after = 1"
expect_http 200 "custosd serves with its key in the token" GET /healthz
openssl x509 -in "$STATE/server.crt" -noout -pubkey >"$T/certpub"
$OSSL pkey -provider custos -provider default -in "$SURI" -pubout >"$T/tokpub" 2>/dev/null
cmp -s "$T/certpub" "$T/tokpub" && ok "the server certificate is for the token's key" || bad "server certificate key differs from the token key"
[ -e "$STATE/server.key" ] && bad "a server key file was written" || ok "no server key file"
register() { "$CUSTOS" device register --scope "$SCOPE" --host "$HP" --ca "$CA" --timeout 30 "$@"; }

# A symmetric-key device whose key sits in the token.
head -c 32 /dev/urandom >"$T/dk.raw"; base64 -w0 "$T/dk.raw" >"$T/dk.b64"
expect_rc 0 "the device HMAC key, imported into the token" "$CUSTOS" token hmac-import --dir "$T/tok" --key-file "$T/dk.raw" --label dev-hmac
HURI=$(tail -1 "$T/out"); rm -f "$T/dk.raw"
expect_rc 0 "its enrollment" "$CUSTOS" enrollment create tok-sym --attestation symmetricKey --primary-key-file "$T/dk.b64" --state "$STATE"
expect_rc 0 "registration with the HMAC key in the token" register --symmetric-key "$HURI" --registration-id tok-sym
expect_rc 3 "the same token key for another id is refused" register --symmetric-key "$HURI" --registration-id tok-other

# An X.509 device whose TLS client key sits in the token.
expect_rc 0 "the device key, made in the token" "$CUSTOS" token keygen --dir "$T/tok" --type ec-p256 --label dev-x509
KURI=$(tail -1 "$T/out")
"$CUSTOS" pki issue --cn tok-ca --ca --out "$T/ca" >/dev/null
$OSSL req -new -provider custos -provider default -key "$KURI" -subj /CN=tok-x509 -out "$T/d.csr" 2>/dev/null
printf 'extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\n' >"$T/ext"
openssl x509 -req -in "$T/d.csr" -CA "$T/ca.pem" -CAkey "$T/ca.key" -CAcreateserial -days 2 -extfile "$T/ext" -out "$T/d.pem" 2>/dev/null
expect_rc 0 "a group on the device CA" "$CUSTOS" group create tok-grp --attestation x509 --cert "$T/ca.pem" --state "$STATE"
expect_rc 0 "registration with the TLS key in the token" register --x509 --cert "$T/d.pem" --key "$KURI"
contains "$T/out" "tok-x509 -> hub1.custos.local" "assigned to the hub"
# A key that is not there: said before anything is sent, and nothing recorded.
NOKEY=$(printf '%s' "$KURI" | sed -E 's/;id=[^;?]*//; s/object=[^;?]*/object=nothing/')
expect_rc 1 "a key URI naming no key is refused" register --x509 --cert "$T/d.pem" --key "$NOKEY"
contains "$T/err" "no private key at the URI" "and says so"
expect_rc 1 "a key file that does not exist is refused" register --x509 --cert "$T/d.pem" --key "$T/none.key"
contains "$T/err" "cannot open key file $T/none.key" "and says so"
expect_rc 1 "a file that is no PEM key is refused" register --x509 --cert "$T/d.pem" --key "$T/d.pem"
contains "$T/err" "$T/d.pem: " "and names the file"

# An X.509 device whose key sits in the software keystore (custos-soft).
if [ -f "$BIN/../lib/pkcs11/custos-soft.so" ]; then
  expect_rc 0 "a custos-soft token" "$CUSTOS" token init --kind soft --label dev-soft --dir "$T/soft"
  export CUSTOS_SOFT_DIR=$T/soft/store
  expect_rc 0 "the device key, made in the soft keystore" "$CUSTOS" token keygen --dir "$T/soft" --type ec-p256 --label dev
  SKURI=$(tail -1 "$T/out")
  $OSSL req -new -provider custos -provider default -key "$SKURI" -subj /CN=soft-x509 -out "$T/s.csr" 2>/dev/null
  openssl x509 -req -in "$T/s.csr" -CA "$T/ca.pem" -CAkey "$T/ca.key" -CAcreateserial -days 2 -extfile "$T/ext" -out "$T/s.pem" 2>/dev/null
  expect_rc 0 "registration with the TLS key in the soft keystore" register --x509 --cert "$T/s.pem" --key "$SKURI"
  contains "$T/out" "soft-x509 -> hub1.custos.local" "assigned to the hub"
fi

# The store's sealing key in the token too (keyring = pkcs11: URI).
stop_server TERM
head -c 32 /dev/urandom >"$T/kr.raw"
expect_rc 0 "the store key, imported into the token" "$CUSTOS" token hmac-import --dir "$T/tok" --key-file "$T/kr.raw" --label store-seal
KRURI=$(tail -1 "$T/out"); rm -f "$T/kr.raw"
STATE=$T/var-kr
new_pg_store   # a new state with another keyring: on PostgreSQL, a database of its own
start_server "$STATE" "server-key = $SURI" "keyring = $KRURI" "provider-path = $MODS" "retry-after = 1"
[ -e "$STATE/keyring.key" ] && bad "a keyring key file was written" || ok "no keyring key file: the store is sealed by the token"
K=$(openssl rand -base64 32)
expect_http 200 "an enrollment through the service API" PUT "/enrollments/kr-1?api-version=2021-10-01" \
  -H "Authorization: $("$CUSTOS" service token --state "$STATE" --config "$T/custosd.conf")" -H 'Content-Type: application/json' \
  -d "{\"registrationId\":\"kr-1\",\"attestation\":{\"type\":\"symmetricKey\",\"symmetricKey\":{\"primaryKey\":\"$K\"}}}"
echo "$K" >"$T/kr-1.key"
expect_rc 0 "a registration against a store sealed in the token" register --key-file "$T/kr-1.key" --registration-id kr-1
expect_http 200 "metrics" GET /metrics
if grep -q 'custos_token_operations_total{operation="keyring_mac"} [1-9]' "$T/body"; then ok "keyring MACs counted"; else bad "no keyring MACs counted"; fi
stop_server TERM
[ "$SRV_RC" = 0 ] && ok "custosd exits 0" || bad "custosd exit status $SRV_RC"
# The command line opens the same token-sealed store through the provider.
CUSTOS_KEYRING_URI=$KRURI expect_rc 0 "custos enrollment show on the token-sealed store" \
  "$CUSTOS" enrollment show kr-1 --state "$STATE"
contains "$T/out" "kr-1" "the enrollment is read back"
expect_rc 1 "without the token key the store is refused" "$CUSTOS" enrollment show kr-1 --state "$STATE"
