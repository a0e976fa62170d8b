#!/bin/bash
# Mutual TLS 1.2 and 1.3 through `openssl s_server` / `s_client` on a loopback
# port, both keys in the token (EC on one side, RSA on the other, then the
# other way round). Each handshake must verify the peer on both sides.
#   usage: tls.sh softhsm2|tpm2
. "$(dirname "$0")/lib.sh"
KIND=${1:?kind}

make_token "$KIND" "tls-$KIND" || { echo "cannot make a $KIND token"; exit 1; }
EC=$(keygen ec-p256 ec1 01) && RSA=$(keygen rsa2048 rsa1 02) || { echo "keygen failed"; exit 1; }
cd "$W" || exit 1

# A software CA issues certificates for the two token keys.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -subj /CN=test-ca \
    -days 2 -out ca.crt 2>/dev/null
issue() { # KEY_URI CN
    ossl req "${PROV[@]}" -new -key "$1" -subj "/CN=$2" -out "$2.csr" &&
        openssl x509 -req -in "$2.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 -out "$2.crt" 2>/dev/null
}
check "certificate for the EC key" issue "$EC" ec-peer
check "certificate for the RSA key" issue "$RSA" rsa-peer

handshake() { # PROTO SERVER_KEY SERVER_CN CLIENT_KEY CLIENT_CN
    local proto=$1 skey=$2 scn=$3 ckey=$4 ccn=$5
    start_server srv.log -key "$skey" -cert "$scn.crt" -CAfile ca.crt -Verify 2 -verify_return_error \
        -naccept 1 -www "-$proto" || return 1
    printf 'GET / HTTP/1.0\r\n\r\n' | ossl s_client "${PROV[@]}" -connect "127.0.0.1:$PORT" -key "$ckey" -cert "$ccn.crt" -CAfile ca.crt \
        -verify_return_error -brief "-$proto" >cli.log 2>&1
    local rc=$?
    kill "$SERVER_PID" 2>/dev/null # gone already after its one connection
    wait "$SERVER_PID" 2>/dev/null
    cat cli.log srv.log >"$W/err"
    [ $rc -eq 0 ] || return 1
    grep -q "Verification: OK" cli.log || return 1                        # client verified the server
    grep -q "Peer certificate: CN = $scn" cli.log || return 1
    grep -Eq "Protocol version: TLSv1\.${proto#tls1_}" cli.log || return 1
    grep -q "depth=0 CN = $ccn" srv.log && grep -q "verify return:1" srv.log    # server verified the client
}

for proto in tls1_2 tls1_3; do
    check "$proto: EC server key, RSA client key, both in the token" handshake $proto "$EC" ec-peer "$RSA" rsa-peer
    check "$proto: RSA server key, EC client key, both in the token" handshake $proto "$RSA" rsa-peer "$EC" ec-peer
done

finish
