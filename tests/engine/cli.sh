#!/bin/bash
# The provider under the real `openssl` command line, against one token kind
# (softhsm2 or tpm2): keys made on the token, signatures made through custos
# and verified by the default provider, certificates, the pkcs11: store, the
# HMAC MAC, and bad input that must fail with a clear error and no crash.
#   usage: cli.sh softhsm2|tpm2
. "$(dirname "$0")/lib.sh"
KIND=${1:?kind}

make_token "$KIND" "cli-$KIND" || { echo "cannot make a $KIND token"; exit 1; }
EC=$(keygen ec-p256 ec1 01) && EC384=$(keygen ec-p384 ec384 03) && RSA=$(keygen rsa2048 rsa1 02) \
    || { echo "keygen failed"; exit 1; }
MODULE=$(sed -n 's/^module=//p' "$TOKEN_DIR/custos-token.conf")
cd "$W" || exit 1
printf 'The quick brown fox jumps over the lazy dog\n' >msg
head -c 100000 /dev/urandom >big

# --- public keys and certificates
check "pkey -pubout EC" ossl pkey "${PROV[@]}" -in "$EC" -pubout -out ec1.pub
check "pkey -pubout EC P-384" ossl pkey "${PROV[@]}" -in "$EC384" -pubout -out ec384.pub
check "pkey -pubout RSA" ossl pkey "${PROV[@]}" -in "$RSA" -pubout -out rsa1.pub
check "public key is a software-readable SPKI" openssl pkey -pubin -in ec1.pub -noout
check "req -new -x509 EC" ossl req "${PROV[@]}" -new -x509 -key "$EC" -subj /CN=ec1 -days 2 -out ec1.crt
check "req -new -x509 RSA" ossl req "${PROV[@]}" -new -x509 -key "$RSA" -subj /CN=rsa1 -days 2 -out rsa1.crt
check "req -new -x509 RSA-PSS" ossl req "${PROV[@]}" -new -x509 -key "$RSA" -sigopt rsa_padding_mode:pss \
    -sigopt rsa_pss_saltlen:digest -subj /CN=pss -days 2 -out pss.crt
check "EC certificate verifies (default provider)" openssl verify -CAfile ec1.crt ec1.crt
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout leaf.key -subj /CN=leaf \
    -out leaf.csr 2>/dev/null
check "x509 -req -CAkey: the token key as a CA" ossl x509 "${PROV[@]}" -req -in leaf.csr -CA ec1.crt \
    -CAkey "$EC" -CAcreateserial -days 1 -out leaf.crt
check "  leaf verifies" openssl verify -CAfile ec1.crt leaf.crt
check "RSA certificate verifies" openssl verify -CAfile rsa1.crt rsa1.crt
check "RSA-PSS certificate verifies" openssl verify -CAfile pss.crt pss.crt
check "certificate key equals pkey -pubout" cmp <(openssl x509 -in ec1.crt -noout -pubkey) ec1.pub

# --- signatures: custos signs, the default provider verifies
check "dgst -sign ECDSA SHA-256 (streaming)" ossl dgst "${PROV[@]}" -sha256 -sign "$EC" -out ec.sig big
check "  verifies" openssl dgst -sha256 -verify ec1.pub -signature ec.sig big
check "dgst -sign ECDSA P-384 SHA-384" ossl dgst "${PROV[@]}" -sha384 -sign "$EC384" -out ec384.sig msg
check "  verifies" openssl dgst -sha384 -verify ec384.pub -signature ec384.sig msg
check "dgst -sign RSA PKCS#1 SHA-256" ossl dgst "${PROV[@]}" -sha256 -sign "$RSA" -out rsa.sig big
check "  verifies" openssl dgst -sha256 -verify rsa1.pub -signature rsa.sig big
SALTS="digest 32 max auto"
[ "$KIND" = tpm2 ] && SALTS="digest 32" # a TPM makes PSS with salt = hash length only
for md in sha256 sha384; do
    for salt in $SALTS; do
        [ "$md" = sha384 ] && [ "$salt" = 32 ] && continue
        check "dgst -sign RSA-PSS $md saltlen $salt" ossl dgst "${PROV[@]}" -$md -sigopt rsa_padding_mode:pss \
            -sigopt rsa_pss_saltlen:$salt -sign "$RSA" -out pss.sig msg
        check "  verifies" openssl dgst -$md -sigopt rsa_padding_mode:pss -sigopt rsa_pss_saltlen:auto \
            -verify rsa1.pub -signature pss.sig msg
    done
done
check "pkeyutl -rawin one-shot digest-sign ECDSA" ossl pkeyutl "${PROV[@]}" -sign -rawin -digest sha256 \
    -inkey "$EC" -in msg -out os.sig
check "  verifies" openssl dgst -sha256 -verify ec1.pub -signature os.sig msg
openssl dgst -sha256 -binary msg >msg.sha256
check "pkeyutl raw sign ECDSA over a digest" ossl pkeyutl "${PROV[@]}" -sign -inkey "$EC" -in msg.sha256 -out raw.sig
check "  verifies" openssl pkeyutl -verify -pubin -inkey ec1.pub -in msg.sha256 -sigfile raw.sig
check "pkeyutl raw sign RSA PKCS#1 with digest" ossl pkeyutl "${PROV[@]}" -sign -inkey "$RSA" \
    -pkeyopt digest:sha256 -in msg.sha256 -out raw2.sig
check "  verifies" openssl pkeyutl -verify -pubin -inkey rsa1.pub -pkeyopt digest:sha256 -in msg.sha256 \
    -sigfile raw2.sig
check "pkeyutl raw sign RSA-PSS" ossl pkeyutl "${PROV[@]}" -sign -inkey "$RSA" -pkeyopt rsa_padding_mode:pss \
    -pkeyopt digest:sha256 -in msg.sha256 -out raw3.sig
check "  verifies" openssl pkeyutl -verify -pubin -inkey rsa1.pub -pkeyopt rsa_padding_mode:pss \
    -pkeyopt digest:sha256 -in msg.sha256 -sigfile raw3.sig
head -c 36 /dev/urandom >md5sha1 # the TLS 1.0/1.1 MD5+SHA-1 input, signed as given
check "pkeyutl raw RSA PKCS#1 sign without digest (TLS 1.0 style)" ossl pkeyutl "${PROV[@]}" -sign -inkey "$RSA" \
    -in md5sha1 -out raw4.sig
check "  recovers the input" cmp <(openssl pkeyutl -verifyrecover -pubin -inkey rsa1.pub -in raw4.sig) md5sha1
check "dgst -verify with the token's key (software verify in custos)" ossl dgst "${PROV[@]}" -sha256 \
    -verify "$EC" -signature ec.sig big

# --- software keys beside custos (custos is met first): they keep working
check "genpkey EC software key with custos loaded" ossl genpkey "${PROV[@]}" -algorithm EC \
    -pkeyopt ec_paramgen_curve:P-256 -out sw.key
check "  signs (dgst -sign file key)" ossl dgst "${PROV[@]}" -sha256 -sign sw.key -out sw.sig msg
check "  verifies" openssl dgst -sha256 -prverify sw.key -signature sw.sig msg
check "req -x509 -newkey rsa with custos loaded" ossl req "${PROV[@]}" -x509 -newkey rsa:2048 -nodes \
    -keyout swrsa.key -subj /CN=sw -days 1 -out swrsa.crt
check "  verifies" openssl verify -CAfile swrsa.crt swrsa.crt

# --- the store: certificates and public keys on the token
check "import certificate" "$CUSTOS_BIN" token import --cert ec1.crt --label ec1 --id 01 --dir "$TOKEN_DIR" \
    --pin-source "$W/pin"
CERT_URI=$(with_pin "${TOKEN_URI%%\?*};object=ec1;type=cert?${TOKEN_URI#*\?}")
check "x509 -in pkcs11: certificate" ossl x509 "${PROV[@]}" -in "$CERT_URI" -noout -subject
check "  is the imported one" cmp <(ossl x509 "${PROV[@]}" -in "$CERT_URI") <(openssl x509 -in ec1.crt)
PUB_URI="${TOKEN_URI%%\?*};object=ec1;type=public?${TOKEN_URI#*\?}"
check "pkey -pubin from a public-key object (no PIN)" ossl pkey "${PROV[@]}" -pubin -in "$PUB_URI" -out pubobj.pem
check "  equals the private key's public half" cmp pubobj.pem ec1.pub
check "storeutl lists the token's certificates" ossl storeutl "${PROV[@]}" -certs "$(with_pin "$TOKEN_URI")"
grep -q "CN = ec1\|CN=ec1" out 2>/dev/null || grep -q "Total found: 1" "$W/out" || true

NOPIN="${TOKEN_URI%%\?*};object=ec1;type=private?${TOKEN_URI#*\?}"
check "PIN from the application's passphrase callback (-passin)" ossl pkey "${PROV[@]}" -in "$NOPIN" \
    -passin "file:$W/pin" -pubout -out passin.pub
check "  same key" cmp passin.pub ec1.pub
check_fails "an empty PIN from the passphrase callback: a PIN error" "custos:.*PIN" ossl pkey "${PROV[@]}" \
    -in "$NOPIN" -passin pass: -pubout

# --- HMAC (CUSTOS-HMAC) with a token secret key
if [ "$KIND" != tpm2 ]; then # tpm2-pkcs11 makes HMAC keys only with tpm2_ptool (engine_provider)
    HM=$(keygen hmac256 hmac1 04)
    check "openssl mac CUSTOS-HMAC" ossl mac "${PROV[@]}" -propquery provider=custos -macopt "key-uri:$HM" \
        -in msg -out mac.hex CUSTOS-HMAC
    preloaded pkcs11-tool --module "$MODULE" --token-label "cli-$KIND" --login --pin "$(cat "$W/pin")" \
        --sign --mechanism SHA256-HMAC --id 04 -i msg -o mac.bin >/dev/null 2>&1
    check "  equals C_Sign(CKM_SHA256_HMAC) on the token" test "$(tr -d '\n' <mac.hex | tr A-F a-f)" = "$(xxd -p -c 64 mac.bin)"
fi

# --- openssl.cnf: module path and PIN source from the provider's section
cat >openssl.cnf <<EOF
openssl_conf = openssl_init
[openssl_init]
providers = provider_sect
[provider_sect]
default = default_sect
custos = custos_sect
[default_sect]
activate = 1
[custos_sect]
module = $CUSTOS_OSSL_MODULES/custos.so
pkcs11-module-path = $MODULE
pkcs11-pin-source = file:$W/pin
log-level = error
activate = 1
EOF
SHORT="pkcs11:token=cli-$KIND;object=ec1"
export OPENSSL_CONF="$W/openssl.cnf"
PROV_SAVED=("${PROV[@]}")
PROV=()
check "openssl.cnf: pkey -pubout with a short URI" ossl pkey -in "$SHORT" -pubout -out cnf.pub
check "  same key" cmp cnf.pub ec1.pub
check "openssl.cnf: dgst -sign" ossl dgst -sha256 -sign "$SHORT" -out cnf.sig msg
check "  verifies" env -u OPENSSL_CONF openssl dgst -sha256 -verify ec1.pub -signature cnf.sig msg
sed -i 's/^log-level = error/log-level = loud/' openssl.cnf
check_fails "openssl.cnf: a bad log-level is refused" "log-level" ossl pkey -in "$SHORT" -pubout
unset OPENSSL_CONF
PROV=("${PROV_SAVED[@]}")

# --- bad input: each a clear OpenSSL error, no crash
BASE="${TOKEN_URI%%\?*}"
Q="${TOKEN_URI#*\?}&pin-source=$W/pin"
check_fails "malformed URI (bad escape)" "URI|uri" ossl pkey "${PROV[@]}" -in "pkcs11:token=%zz;object=ec1?$Q" -pubout
check_fails "malformed URI (unknown attribute)" "URI|uri|attribute" ossl pkey "${PROV[@]}" \
    -in "$BASE;object=ec1;colour=red?$Q" -pubout
check_fails "URI with no match" "no private key .*matches|not found" ossl pkey "${PROV[@]}" \
    -in "$BASE;object=nosuchkey?$Q" -pubout
keygen ec-p256 twin 21 >/dev/null && keygen ec-p256 twin 22 >/dev/null
check_fails "URI with several matches" "matches 2 private keys" ossl dgst "${PROV[@]}" -sha256 \
    -sign "$BASE;object=twin?$Q" msg
printf '%s\n' 999999 >"$W/badpin"
check_fails "wrong PIN" "PIN incorrect|PIN_INCORRECT" ossl dgst "${PROV[@]}" -sha256 \
    -sign "$BASE;object=ec1?${TOKEN_URI#*\?}&pin-source=$W/badpin" msg
check_fails "wrong key type: RSA padding on an EC key" "padding|parameter" ossl dgst "${PROV[@]}" -sha256 \
    -sigopt rsa_padding_mode:pss -sign "$EC" msg
check_fails "wrong key type: signing with a public key" "no private key|private" ossl dgst "${PROV[@]}" -sha256 \
    -sign "$(with_pin "$PUB_URI")" msg
if [ "$KIND" != tpm2 ]; then
    check_fails "wrong key type: EC key as HMAC key" "HMAC key|secret|not found" ossl mac "${PROV[@]}" \
        -propquery provider=custos -macopt "key-uri:$EC" -in msg CUSTOS-HMAC
fi
check_fails "no such token" "no .*token|TOKEN|not found" ossl pkey "${PROV[@]}" \
    -in "pkcs11:token=nosuchtoken;object=ec1?$Q" -pubout

no_pin_in_errors() {
    ossl pkey "${PROV[@]}" -in "pkcs11:token=nosuchtoken;object=ec1?${TOKEN_URI#*\?}&pin-value=S3CRETPIN" -pubout \
        >"$W/pinout" 2>&1
    grep -q "custos:" "$W/pinout" && ! grep "custos:" "$W/pinout" | grep -q S3CRETPIN
}
check "a pin-value never appears in custos's errors" no_pin_in_errors

summary
