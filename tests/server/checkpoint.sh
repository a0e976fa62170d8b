#!/usr/bin/env bash
# custosd copies SQLite's log back into the database from a thread of its
# own (checkpoint.c), not in a registration's commit: a quiet node's log is
# in the database file within a second or two (a commit-time checkpoint
# waits for 4000 pages), and under load the log stays bounded (it starts
# over after each checkpoint instead of growing with every registration).
BIN=${1:?usage: checkpoint.sh path/to/bin}
. "$(dirname "$0")/lib.sh"
command -v sqlite3 >/dev/null || { echo "sqlite3 missing: skipped"; exit 77; }

STATE=$T/var
start_server "$STATE" "log-level = warn"
load() { "$CUSTOS" bench load --state "$STATE" --json --mode symmetric --concurrency 8 "$@"; }
# The database file alone, without its log: what a checkpoint put there.
in_file() { # prefix
  cp "$STATE/custos.db" "$T/alone.db" && rm -f "$T/alone.db-wal" "$T/alone.db-shm"
  sqlite3 "$T/alone.db" "SELECT count(*) FROM docs WHERE kind = 5 AND id LIKE '$1%'"
}

expect_rc 0 "20 registrations" load --count 20 --prefix quiet-
n=0
for _ in $(seq 1 40); do
  n=$(in_file quiet-); [ "$n" = 20 ] && break
  sleep 0.1
done
[ "$n" = 20 ] && ok "a quiet node's log is in the database file without a commit calling for it" \
  || bad "$n of 20 registrations in the database file after 4 s"

# ~9 log pages a registration: 3,000 registrations would make a 110 MB log
# that nothing started over.
max=0
( while :; do stat -c %s "$STATE/custos.db-wal" 2>/dev/null; sleep 0.05; done ) >"$T/walsizes" &
watcher=$!
expect_rc 0 "3,000 registrations" load --count 3000 --prefix busy-
kill "$watcher"; wait "$watcher" 2>/dev/null
max=$(sort -n "$T/walsizes" | tail -1)
[ -n "$max" ] && [ "$max" -lt 50000000 ] && ok "the log stays bounded under load (at most $max bytes)" \
  || bad "the log grew to ${max:-?} bytes under load"
expect_http 200 "still healthy" GET /healthz
stop_server TERM
[ "$SRV_RC" = 0 ] && ok "custosd exits 0" || bad "custosd exit status $SRV_RC"
n=$(in_file busy-)
[ "$n" = 3000 ] && ok "every registration in the database file after a stop" || bad "$n of 3000 in the file after a stop"
