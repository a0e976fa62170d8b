#!/usr/bin/env bash
# OpenSC pkcs11-tool against custos-soft: slots, mechanisms, objects,
# key generation, signatures checked by openssl, objects written and read
# back, PIN change, and pkcs11-tool's own --test.
. "$(dirname "$0")/common.sh"
export -f pub_pem; export M W

check "list slots shows an uninitialized token" bash -c "$P -L | grep -q 'token state:   uninitialized'"
check "init token + init PIN" make_token
check "list slots shows the token" bash -c "$P -L | grep -q 'token label        : it'"
check "token flags" bash -c "$P -L | grep 'token flags' | grep -q 'PIN initialized'"
check "mechanisms listed" bash -c "$P -M | grep -q 'ECDSA-SHA256' && $P -M | grep -q 'SHA256-RSA-PKCS-PSS' && $P -M | grep -q 'SHA256-HMAC'"
check "EC P-256 keypairgen" $Q --keypairgen --key-type EC:prime256v1 --id 01 --label ec1
check "EC P-384 keypairgen" $Q --keypairgen --key-type EC:secp384r1 --id 04 --label ec384
check "RSA 2048 keypairgen" $Q --keypairgen --key-type rsa:2048 --id 02 --label rsa1
# (pkcs11-tool marks a generated secret key public unless --private; custos-soft
# refuses public keys, see docs/soft-keystore.md)
check "generic secret keygen" $Q --keygen --key-type GENERIC:32 --id 03 --label h1 --private
check "objects listed with custody flags" bash -c "$Q -O --type privkey | grep -q 'always sensitive, never extractable, local'"
check "read EC public keys (p11tool, see common.sh)" bash -c "pub_pem ec1 ec.pem && pub_pem ec384 ec384.pem"
check "read RSA public key" bash -c "$Q --read-object --type pubkey --id 02 -o rsa.der && openssl pkey -pubin -inform DER -in rsa.der -out rsa.pem"
check "ECDSA (raw) sign, openssl verifies" bash -c "$Q --sign --mechanism ECDSA --id 01 --signature-format openssl -i msg.sha256 -o s1 && openssl dgst -sha256 -verify ec.pem -signature s1 msg"
check "ECDSA-SHA256 sign, openssl verifies" bash -c "$Q --sign --mechanism ECDSA-SHA256 --id 01 --signature-format openssl -i msg -o s2 && openssl dgst -sha256 -verify ec.pem -signature s2 msg"
check "ECDSA-SHA384 on P-384, openssl verifies" bash -c "$Q --sign --mechanism ECDSA-SHA384 --id 04 --signature-format openssl -i msg -o s3 && openssl dgst -sha384 -verify ec384.pem -signature s3 msg"
check "ECDSA-SHA256 pkcs11-tool --verify" bash -c "$Q --verify --mechanism ECDSA-SHA256 --id 01 -i msg --signature-file s2 --signature-format openssl | grep -q 'Signature is valid'"
check "SHA256-RSA-PKCS sign, openssl verifies" bash -c "$Q --sign --mechanism SHA256-RSA-PKCS --id 02 -i msg -o s4 && openssl dgst -sha256 -verify rsa.pem -signature s4 msg"
check "SHA256-RSA-PKCS-PSS sign, openssl verifies" bash -c "$Q --sign --mechanism SHA256-RSA-PKCS-PSS --id 02 -i msg -o s5 && openssl dgst -sha256 -sigopt rsa_padding_mode:pss -sigopt rsa_pss_saltlen:32 -verify rsa.pem -signature s5 msg"
check "RSA-PKCS-PSS (raw) sign, openssl verifies" bash -c "$Q --sign --mechanism RSA-PKCS-PSS --hash-algorithm SHA256 --mgf MGF1-SHA256 --id 02 -i msg.sha256 -o s6 && openssl dgst -sha256 -sigopt rsa_padding_mode:pss -sigopt rsa_pss_saltlen:32 -verify rsa.pem -signature s6 msg"
# (pkcs11-tool exits 0 either way; it prints the verdict)
check "a bad signature does not verify" bash -c "cp s2 bad && printf XXXXXXXX | dd of=bad bs=1 seek=10 conv=notrunc 2>/dev/null && $Q --verify --mechanism ECDSA-SHA256 --id 01 -i msg --signature-file bad --signature-format openssl 2>&1 | grep -q 'Invalid signature'"
check "HMAC with the generated key" bash -c "$Q --sign --mechanism SHA256-HMAC --id 03 -i msg -o mac && [ \$(stat -c %s mac) = 32 ]"
check "generated secret is not readable" bash -c "! $Q --read-object --type secrkey --id 03 -o leaked"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout /dev/null \
    -subj /CN=interop -days 1 -outform DER -out cert.der 2>/dev/null
check "write a certificate" $Q --write-object cert.der --type cert --id 01 --label ec1
check "read the certificate back" bash -c "$Q --read-object --type cert --id 01 -o cert.back && cmp cert.der cert.back"
head -c 300 /dev/urandom > blob
check "write a private data object" $Q --write-object blob --type data --label blob --private
check "read the data object back" bash -c "$Q --read-object --type data --label blob -o blob.back && cmp blob blob.back"
check "private data hidden without login" bash -c "! $P --token-label it -O --type data | grep -q blob"
check "delete an object" bash -c "$Q --delete-object --type data --label blob && ! $Q -O --type data | grep -q blob"
check "change PIN" $Q --change-pin --new-pin 5678
check "old PIN refused" bash -c "! $P --token-label it --login --pin 1234 -O"
check "keys work under the new PIN" bash -c "$P --token-label it --login --pin 5678 --sign --mechanism ECDSA-SHA256 --id 01 --signature-format openssl -i msg -o s7 && openssl dgst -sha256 -verify ec.pem -signature s7 msg"
check "PIN back" $P --token-label it --login --pin 5678 --change-pin --new-pin 1234
check "pkcs11-tool --test: no errors" bash -c "$Q --test > test.out 2>&1; cat test.out; grep -q 'No errors' test.out"
check "nothing was corrupt" bash -c "! grep -q ignored $CUSTOS_SOFT_DEBUG"
finish
