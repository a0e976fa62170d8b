#!/usr/bin/env bash
# When custosd signs the audit chain head: every N records or S seconds, the
# period starting when custosd starts (not at the first record of each
# worker), plus once at shutdown. Counts the heads of short runs.
#   custosd_heads.sh path/to/bin
BIN=${1:?usage: custosd_heads.sh path/to/bin}
. "$(dirname "$0")/../server/lib.sh"
command -v jq >/dev/null || { echo "skipped: jq missing"; exit 77; }

V='api-version=2021-10-01'
J='Content-Type: application/json'
STATE=$T/var
want() { # description expected actual
  if [ "$2" = "$3" ]; then ok "$1 ($3)"; else bad "$1: wanted '$2', got '$3'"; fi
}
heads() { "$CUSTOS" audit export --state "$STATE" --heads | jq -r '.signedHead.seq' | tr '\n' ' ' | sed 's/ $//'; }
last_seq() { "$CUSTOS" audit export --state "$STATE" | tail -n 1 | jq -r .seq; }
enroll() { # id: one record (enrollment.create)
  local k; k=$(openssl rand -base64 32)
  expect_http 200 "enrollment $1" PUT "/enrollments/$1?$V" -H "$A" -H "$J" \
    -d "{\"registrationId\":\"$1\",\"attestation\":{\"type\":\"symmetricKey\",\"symmetricKey\":{\"primaryKey\":\"$k\",\"secondaryKey\":\"$k\"}}}"
}
# Key uses are written at each minute boundary: keep each run in one minute
# so that the records counted below are the requests' only.
early_in_minute() { local s; s=$(date +%S); s=${s#0}; [ "$s" -gt 40 ] && sleep $((61 - s)); }

# ---- 1. a short run, neither trigger due: one head, at shutdown ----
early_in_minute
start_server "$STATE" "workers = 2" "audit-sign-every = 1000" "audit-sign-seconds = 3600"
A="Authorization: $(svc_token)"
for i in 1 2 3 4 5 6; do enroll "h1-$i"; done
stop_server TERM
[ "$SRV_RC" = 0 ] && ok "custosd exits 0" || bad "custosd exit status $SRV_RC"
H1=$(last_seq)
want "no worker signs at its first record: one head, at shutdown, over the last record" "$H1" "$(heads)"

# ---- 2. every N records (N = 4), restarted on a signed log ----
early_in_minute
start_server "$STATE" "workers = 1" "audit-sign-every = 4" "audit-sign-seconds = 3600"
A="Authorization: $(svc_token)"
for i in 1 2 3 4 5 6 7 8 9; do enroll "h2-$i"; done
stop_server TERM
L2=$(last_seq)
want "a head every 4 records after the last one, and one at shutdown" "$H1 $((H1 + 4)) $((H1 + 8)) $L2" "$(heads)"

# ---- 3. every S seconds (S = 3), counted from custosd's start ----
early_in_minute
t0=$(date +%s.%N)
start_server "$STATE" "workers = 2" "audit-sign-every = 1000" "audit-sign-seconds = 3"
A="Authorization: $(svc_token)"
enroll h3-1
rec=$(last_seq)
for _ in $(seq 1 100); do
  [ "$("$CUSTOS" audit export --state "$STATE" --heads | tail -n 1 | jq -r .signedHead.seq)" = "$rec" ] && break
  sleep 0.1
done
at=$("$CUSTOS" audit export --state "$STATE" --heads | tail -n 1 | jq -r '"\(.signedHead.seq) \(.signedHead.at)"')
want "a quiet service signs its record within S seconds" "$rec" "${at%% *}"
secs=$(date -d "${at#* }" +%s.%N)
if awk -v a="$secs" -v b="$t0" 'BEGIN { exit !(a - b >= 2) }'; then
  ok "... but not before S seconds since custosd started ($(awk -v a="$secs" -v b="$t0" 'BEGIN { printf "%.1f", a - b }') s)"
else
  bad "the head was signed $(awk -v a="$secs" -v b="$t0" 'BEGIN { printf "%.1f", a - b }') s after the start (S = 3)"
fi
stop_server TERM
want "heads: the two runs', the timer's, and one at shutdown" "$H1 $((H1 + 4)) $((H1 + 8)) $L2 $rec $(last_seq)" "$(heads)"
expect_rc 0 "the log verifies" "$CUSTOS" audit verify --state "$STATE" --pubkey "$STATE/audit.pub"
# On PostgreSQL (audit_*_pg) the log is the database's, not a file of the state.
if [ -n "$PG_DB" ]; then
  [ ! -e "$STATE/custos.db" ] && ok "the log is in PostgreSQL ($PG_DB)" || bad "an SQLite store in $STATE"
fi
