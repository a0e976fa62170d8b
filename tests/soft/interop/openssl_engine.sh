#!/usr/bin/env bash
# The libp11 OpenSSL engine (libengine-pkcs11-openssl) over custos-soft,
# driven by the openssl command line: sign with EC and RSA keys by URI.
. "$(dirname "$0")/common.sh"
export PKCS11_MODULE_PATH=$M

check "init token" make_token
check "EC key" $Q --keypairgen --key-type EC:prime256v1 --id 01 --label ec1
check "RSA key" $Q --keypairgen --key-type rsa:2048 --id 02 --label rsa1
pub_pem ec1 ec.pem >/dev/null 2>&1
$Q --read-object --type pubkey --id 02 -o rsa.der >/dev/null 2>&1
openssl pkey -pubin -inform DER -in rsa.der -out rsa.pem 2>/dev/null
EC="pkcs11:token=it;object=ec1;type=private;pin-value=1234"
RSA="pkcs11:token=it;object=rsa1;type=private;pin-value=1234"
check "pkeyutl -sign with the EC key" bash -c "$W openssl pkeyutl -engine pkcs11 -keyform engine -inkey '$EC' -sign -in msg.sha256 -out ec.sig && openssl pkeyutl -verify -pubin -inkey ec.pem -in msg.sha256 -sigfile ec.sig"
check "dgst -sign with the RSA key" bash -c "$W openssl dgst -engine pkcs11 -keyform engine -sign '$RSA' -sha256 -out rsa.sig msg && openssl dgst -sha256 -verify rsa.pem -signature rsa.sig msg"
check "self-signed certificate with the EC key" bash -c "$W openssl req -engine pkcs11 -keyform engine -key '$EC' -new -x509 -subj /CN=engine -days 1 -sha256 -out ec.crt && openssl verify -CAfile ec.crt ec.crt && openssl x509 -in ec.crt -noout -pubkey | cmp - ec.pem"
check "self-signed certificate with the RSA key" bash -c "$W openssl req -engine pkcs11 -keyform engine -key '$RSA' -new -x509 -subj /CN=engine -days 1 -sha256 -out rsa.crt && openssl verify -CAfile rsa.crt rsa.crt"
check "a wrong PIN is refused" bash -c "! $W openssl pkeyutl -engine pkcs11 -keyform engine -inkey 'pkcs11:token=it;object=ec1;type=private;pin-value=9999' -sign -in msg.sha256 -out x.sig"
finish
