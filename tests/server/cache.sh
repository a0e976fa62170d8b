#!/usr/bin/env bash
# custosd's caches never outlive a change: a group disabled, re-keyed (new
# certificate, new symmetric keys) or deleted by another process on the
# same store (the custos command) decides the very next registration, after
# registrations that warmed the decoded-certificate cache.
BIN=${1:?usage: cache.sh path/to/bin}
. "$(dirname "$0")/lib.sh"

STATE=$T/var
start_server "$STATE" "device-error-detail = true" "retry-after = 1"
register() { "$CUSTOS" device register --scope "$SCOPE" --host "$HP" --ca "$CA" --timeout 30 "$@"; }
grp() { "$CUSTOS" group "$@" --state "$STATE"; }

# ---- X.509: a group on CA 1, then on CA 2 ----
P=$T/pki; mkdir -p "$P"
expect_rc 0 "CA 1" "$CUSTOS" pki issue --cn "Cache CA 1" --ca --out "$P/ca1"
expect_rc 0 "CA 2" "$CUSTOS" pki issue --cn "Cache CA 2" --ca --out "$P/ca2"
expect_rc 0 "device x-1 under CA 1" "$CUSTOS" pki issue --issuer-cert "$P/ca1.pem" --issuer-key "$P/ca1.key" --cn x-1 --out "$P/x-1"
expect_rc 0 "device x-2 under CA 2" "$CUSTOS" pki issue --issuer-cert "$P/ca2.pem" --issuer-key "$P/ca2.key" --cn x-2 --out "$P/x-2"
x509() { register --x509 --cert "$P/$1.pem" --key "$P/$1.key"; }

expect_rc 0 "group x-grp on CA 1" grp create x-grp --attestation x509 --cert "$P/ca1.pem"
for i in 1 2 3; do expect_rc 0 "x-1 assigned (registration $i warms the cache)" x509 x-1; done
expect_rc 3 "x-2 refused: CA 2 is no group" x509 x-2
expect_rc 0 "x-grp disabled" grp update x-grp --disable
expect_rc 3 "x-1 refused at once: its group is disabled" x509 x-1
contains "$T/out" "disabled" "the refusal says disabled"
expect_rc 0 "x-grp enabled again" grp update x-grp --enable
expect_rc 0 "x-1 assigned again" x509 x-1
expect_rc 0 "x-grp moved to CA 2 (a new certificate)" grp update x-grp --cert "$P/ca2.pem"
expect_rc 3 "x-1 refused at once: CA 1 is no longer the group's" x509 x-1
expect_rc 0 "x-2 assigned through the new certificate" x509 x-2
expect_rc 0 "x-grp deleted" grp delete x-grp
expect_rc 3 "x-2 refused at once: no group" x509 x-2
expect_rc 0 "x-grp created again on CA 1" grp create x-grp --attestation x509 --cert "$P/ca1.pem"
expect_rc 0 "x-1 assigned again" x509 x-1

# ---- symmetric key: a group re-keyed, disabled, deleted ----
openssl rand 64 | base64 -w0 >"$T/k1"; openssl rand 64 | base64 -w0 >"$T/k2"
expect_rc 0 "group s-grp" grp create s-grp --attestation symmetricKey --primary-key-file "$T/k1" --secondary-key-file "$T/k1"
sym() { register --key-file "$1" --group --registration-id "$2"; }
for i in 1 2 3; do expect_rc 0 "s-1 assigned with a key derived from key 1 ($i)" sym "$T/k1" s-1; done
expect_rc 0 "s-grp disabled" grp update s-grp --disable
expect_rc 3 "s-1 refused at once: its group is disabled" sym "$T/k1" s-1
expect_rc 0 "s-grp enabled" grp update s-grp --enable
expect_rc 0 "s-1 assigned" sym "$T/k1" s-1
expect_rc 0 "s-grp re-keyed to key 2" grp update s-grp --primary-key-file "$T/k2" --secondary-key-file "$T/k2"
expect_rc 3 "s-1 refused at once with the old key" sym "$T/k1" s-1
expect_rc 0 "s-1 assigned with the new key" sym "$T/k2" s-1
expect_rc 0 "s-grp deleted" grp delete s-grp
expect_rc 3 "s-1 refused at once: no group" sym "$T/k2" s-1
stop_server TERM
[ "$SRV_RC" = 0 ] && ok "custosd exits 0" || bad "custosd exit status $SRV_RC"
