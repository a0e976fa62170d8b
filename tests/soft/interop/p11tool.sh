#!/usr/bin/env bash
# GnuTLS p11tool against custos-soft: list, generate, --test-sign on EC and
# RSA keys, import a secret key (HMAC) and check it against openssl.
. "$(dirname "$0")/common.sh"
export GNUTLS_PIN=1234 GNUTLS_SO_PIN=12345678
T11="$W p11tool --provider $M"
U="pkcs11:token=it"

check "init token" make_token
check "list tokens" bash -c "$T11 --list-tokens | grep -q 'Model: custos-soft'"
check "token URL" bash -c "$T11 --list-token-urls | grep -q 'token=it'"
check "generate EC key" $T11 --login --generate-privkey ECDSA --curve secp256r1 --label p11ec "$U"
check "generate RSA key" $T11 --login --generate-privkey RSA --bits 2048 --label p11rsa "$U"
check "list private keys" bash -c "$T11 --login --list-privkeys '$U' | grep -q p11ec && $T11 --login --list-privkeys '$U' | grep -q p11rsa"
check "test-sign EC" $T11 --login --test-sign "$U;object=p11ec;type=private"
check "test-sign RSA" $T11 --login --test-sign "$U;object=p11rsa;type=private"
check "private keys need a login to be listed" bash -c "! $T11 --list-privkeys '$U' | grep -q p11ec"
head -c 32 /dev/urandom > key.bin
check "import an HMAC key" $T11 --login --write --secret-key="$(xxd -p -c 256 key.bin)" --label=sas --mark-sign "$U"
check "HMAC equals openssl's" bash -c "
  id=\$($Q -O --type secrkey 2>/dev/null | awk '/ID:/{print \$2}');
  $Q --sign --mechanism SHA256-HMAC --id \$id -i msg -o mac &&
  openssl dgst -sha256 -mac HMAC -macopt hexkey:\$(xxd -p -c 256 key.bin) -binary msg > mac.ref &&
  cmp mac mac.ref"
check "imported key is not local" bash -c "$Q -O --type secrkey | grep 'Access:' | grep -vq local"
check "delete" bash -c "$T11 --login --batch --delete '$U;object=p11rsa' && ! $T11 --login --list-privkeys '$U' | grep -q p11rsa"
finish
