#!/bin/bash
# Mutual TLS 1.2 and 1.3 through `openssl s_server` / `s_client` on a loopback
# port with both keys in tokens (EC on one side, RSA on the other, then the
# other way round). Each handshake must verify the peer on both sides.
#   usage: tls.sh softhsm2|tpm2
# A swtpm without a resource manager cannot serve two processes that both
# hold TPM objects (3 transient slots, TOKENS.md §5.2), so with tpm2 the peer
# of the TPM side keeps its key in a SoftHSM2 token.
. "$(dirname "$0")/lib.sh"
KIND=${1:?kind}

make_token "$KIND" "tls-$KIND" || { echo "cannot make a $KIND token"; exit 1; }
EC=$(keygen ec-p256 ec1 01) && RSA=$(keygen rsa2048 rsa1 02) || { echo "keygen failed"; exit 1; }
KIND_DIR=$TOKEN_DIR
PEER_EC=$EC
PEER_RSA=$RSA
if [ "$KIND" != softhsm2 ]; then
    make_token softhsm2 "tls-peer" || { echo "cannot make a softhsm2 token"; exit 1; }
    PEER_EC=$(keygen ec-p256 pec1 11) && PEER_RSA=$(keygen rsa2048 prsa1 12) || { echo "keygen failed"; exit 1; }
fi
cd "$W" || exit 1

# A software CA issues certificates for the two token keys.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -subj /CN=test-ca \
    -days 2 -out ca.crt 2>/dev/null
issue() { # KEY_URI CN
    ossl req "${PROV[@]}" -new -key "$1" -subj "/CN=$2" -out "$2.csr" &&
        openssl x509 -req -in "$2.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 -out "$2.crt" 2>/dev/null
}
check "certificate for the $KIND EC key" issue "$EC" ec-peer
check "certificate for the $KIND RSA key" issue "$RSA" rsa-peer
PEC=ec-peer
PRSA=rsa-peer
if [ "$KIND" != softhsm2 ]; then
    PEC=pec-peer
    PRSA=prsa-peer
    check "certificate for the peer's EC key" issue "$PEER_EC" $PEC
    check "certificate for the peer's RSA key" issue "$PEER_RSA" $PRSA
fi

handshake() { # PROTO SERVER_KEY SERVER_CN CLIENT_KEY CLIENT_CN [GROUPS [SERVER_CERT]]
    local proto=$1 skey=$2 scn=$3 ckey=$4 ccn=$5 groups=${6:-} scert=${7:-$3.crt}
    start_server srv.log -key "$skey" -cert "$scert" -CAfile ca.crt -Verify 2 -verify_return_error \
        -naccept 1 -www "-$proto" ${groups:+-groups $groups} || return 1
    printf 'GET / HTTP/1.0\r\n\r\n' | ossl s_client "${PROV[@]}" -connect "127.0.0.1:$PORT" -key "$ckey" -cert "$ccn.crt" -CAfile ca.crt \
        -verify_return_error -brief "-$proto" >cli.log 2>&1
    local rc=$?
    # The server ends by itself after its one connection; let it exit
    # cleanly (a TPM without resource manager keeps what a killed process
    # had loaded).
    local i
    for i in $(seq 1 100); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.05; done
    kill "$SERVER_PID" 2>/dev/null
    wait "$SERVER_PID" 2>/dev/null
    cat cli.log srv.log >"$W/err"
    [ $rc -eq 0 ] || return 1
    grep -q "Verification: OK" cli.log || return 1                        # client verified the server
    grep -q "Peer certificate: CN = $scn" cli.log || return 1
    grep -Eq "Protocol version: TLSv1\.${proto#tls1_}" cli.log || return 1
    if [ -n "$groups" ]; then                                  # a NIST curve, not X25519
        grep -Eq "Server Temp Key: ECDH, (prime256v1|secp384r1)" cli.log || return 1
    fi
    grep -q "depth=0 CN = $ccn" srv.log && grep -q "verify return:1" srv.log    # server verified the client
}

P=" (peer: softhsm2)"
[ "$KIND" = softhsm2 ] && P=
for proto in tls1_2 tls1_3; do
    check "$proto: server EC key in $KIND, client RSA key$P" handshake $proto "$EC" ec-peer "$PEER_RSA" $PRSA
    check "$proto: server RSA key in $KIND, client EC key$P" handshake $proto "$RSA" rsa-peer "$PEER_EC" $PEC
    check "$proto: client EC key in $KIND, server RSA key$P" handshake $proto "$PEER_RSA" $PRSA "$EC" ec-peer
    check "$proto: client RSA key in $KIND, server EC key$P" handshake $proto "$PEER_EC" $PEC "$RSA" rsa-peer
done
# The server's certificate from the token too.
check "import the server certificate into the token" "$CUSTOS_BIN" token import --cert ec-peer.crt --label ec1 \
    --id 01 --dir "$KIND_DIR" --pin-source "$W/pin"
CERT_URI="${EC/type=private/type=cert}"
check "tls1_3: server key and certificate both from the token" handshake tls1_3 "$EC" ec-peer "$PEER_RSA" $PRSA "" \
    "$CERT_URI"
# ECDHE on a NIST curve: the ephemeral keys come from custos's EC key manager.
check "tls1_3 with ECDHE P-256 and P-384" handshake tls1_3 "$EC" ec-peer "$PEER_RSA" $PRSA P-256:P-384
check "tls1_2 with ECDHE P-384" handshake tls1_2 "$RSA" rsa-peer "$PEER_EC" $PEC P-384:P-256

summary
