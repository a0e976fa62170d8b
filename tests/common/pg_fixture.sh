#!/bin/bash
# A private PostgreSQL server for tests: Debian's binaries, a data directory
# under DIR, loopback TCP on a free port, run as an unprivileged user
# (PostgreSQL refuses root), stopped by its PID.
#
#   pg_fixture.sh start DIR      start (or restart a stale one); prints the URI
#   pg_fixture.sh stop DIR       stop the server started in DIR, remove DIR/data
#   pg_fixture.sh halt DIR       stop it but keep the data (see "resume")
#   pg_fixture.sh resume DIR     start the kept data again on the same port
#   pg_fixture.sh freeze DIR     SIGSTOP the server and its processes (a hung
#                                database: connections open, nothing answers)
#   pg_fixture.sh thaw DIR       SIGCONT them
#   pg_fixture.sh createdb DIR NAME   a fresh database; prints its URI
#
# Files in DIR: uri (postgresql://custos@127.0.0.1:PORT/postgres, no
# password), password (the role's password: pass it as a password file),
# pid, port, log, datadir (the data directory: /tmp/cu-pg-*, owned by the
# server's user, outside DIR so that DIR's parents need not be open to it). Fast rather than durable: fsync off (a killed server
# still loses nothing the OS has; a killed machine would).
set -euo pipefail

cmd=${1:-}
dir=${2:-}
usage="usage: $0 start|stop|halt|resume|freeze|thaw|createdb DIR [NAME]"
[ -n "$cmd" ] && [ -n "$dir" ] || { echo "$usage" >&2; exit 2; }

bindir=
for d in /usr/lib/postgresql/*/bin; do
    [ -x "$d/postgres" ] && bindir=$d
done
[ -n "$bindir" ] || { echo "pg_fixture: no PostgreSQL server (apt-get install postgresql)" >&2; exit 77; }

# As root, run the server as nobody (the data directory belongs to it).
as_user() {
    if [ "$(id -u)" = 0 ]; then
        # setpriv execs (runuser would fork and stay as the parent).
        setpriv --reuid=nobody --regid=nogroup --clear-groups -- "$@"
    else
        "$@"
    fi
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

data() { cat "$dir/datadir" 2>/dev/null; }

alive() {
    [ -f "$dir/pid" ] && kill -0 "$(cat "$dir/pid")" 2>/dev/null
}

thaw_server() {
    local c
    for c in $(ps -o pid= --ppid "$1"); do kill -CONT "$c" 2>/dev/null || true; done
    kill -CONT "$1" 2>/dev/null || true
}

stop_server() {
    if alive; then
        local pid
        pid=$(cat "$dir/pid")
        thaw_server "$pid"                      # a frozen one (see "freeze") cannot stop
        kill -INT "$pid" 2>/dev/null || true   # fast shutdown: rolls back, flushes
        for _ in $(seq 1 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$dir/pid"
}

launch() {
    local port=$1
    # PG_FIXTURE_DURABLE=1 (benchmarks): fsync and full pages on, as in production.
    local fsync=off fpw=off shared=32MB
    [ "${PG_FIXTURE_DURABLE:-0}" = 1 ] && { fsync=on; fpw=on; shared=1GB; }
    as_user "$bindir/postgres" -D "$(data)" -p "$port" -c listen_addresses=127.0.0.1 \
        -c unix_socket_directories= -c fsync=$fsync -c full_page_writes=$fpw -c synchronous_commit=on \
        -c shared_buffers=$shared -c max_connections=200 -c log_min_messages=warning \
        >>"$dir/log" 2>&1 </dev/null &
    echo $! >"$dir/pid"
    for _ in $(seq 1 200); do
        if PGPASSWORD=$(cat "$dir/password") PGCONNECT_TIMEOUT=2 \
            "$bindir/pg_isready" -q -h 127.0.0.1 -p "$port" -U custos -d postgres 2>/dev/null; then
            # The postmaster's own PID (the one above may be runuser's).
            head -1 "$(data)/postmaster.pid" >"$dir/pid"
            return 0
        fi
        alive || break
        sleep 0.1
    done
    echo "pg_fixture: the server did not start; its log:" >&2
    tail -20 "$dir/log" >&2 || true
    stop_server
    return 1
}

case $cmd in
start)
    mkdir -p "$dir"
    stop_server            # a server left by an aborted run
    [ -n "$(data)" ] && rm -rf "$(dirname "$(data)")"
    # The role's password: random, readable by the tests (root) only.
    (umask 077; python3 -c 'import secrets; print(secrets.token_hex(16))' >"$dir/password")
    top=$(mktemp -d /tmp/cu-pg-XXXXXX)
    chmod 0755 "$top"
    echo "$top/data" >"$dir/datadir"
    mkdir -m 0700 "$top/data"
    pwcopy=$top/pw
    cp "$dir/password" "$pwcopy"
    : >"$dir/log"          # opened by this shell: the server needs no access to DIR
    [ "$(id -u)" = 0 ] && chown nobody: "$top/data" "$pwcopy"
    trap 'rm -f "$pwcopy"; [ "${ok:-0}" = 1 ] || { stop_server; rm -rf "$top"; }' EXIT
    as_user "$bindir/initdb" -D "$top/data" -U custos -A scram-sha-256 --pwfile="$pwcopy" -E UTF8 \
        --locale=C -N >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; exit 1; }
    port=$(free_port)
    echo "$port" >"$dir/port"
    launch "$port"
    echo "postgresql://custos@127.0.0.1:$port/postgres" >"$dir/uri"
    ok=1
    cat "$dir/uri"
    ;;
halt)
    stop_server
    ;;
resume)
    alive || launch "$(cat "$dir/port")"
    ;;
freeze)
    # The postmaster first, so that it forks no process after the list is
    # taken; then its children (backends, checkpointer, ...), by PID.
    alive || { echo "pg_fixture: no server running in $dir" >&2; exit 1; }
    pid=$(cat "$dir/pid")
    kill -STOP "$pid"
    for c in $(ps -o pid= --ppid "$pid"); do kill -STOP "$c" 2>/dev/null || true; done
    ;;
thaw)
    alive || { echo "pg_fixture: no server running in $dir" >&2; exit 1; }
    thaw_server "$(cat "$dir/pid")"
    ;;
stop)
    stop_server
    [ -n "$(data)" ] && rm -rf "$(dirname "$(data)")"
    rm -f "$dir/datadir"
    ;;
createdb)
    name=${3:?database name}
    port=$(cat "$dir/port")
    PGPASSWORD=$(cat "$dir/password") PGOPTIONS='-c client_min_messages=warning' psql -X -q -v ON_ERROR_STOP=1 \
        "postgresql://custos@127.0.0.1:$port/postgres" -c "DROP DATABASE IF EXISTS \"$name\"" \
        -c "CREATE DATABASE \"$name\"" >/dev/null
    echo "postgresql://custos@127.0.0.1:$port/$name"
    ;;
*)
    echo "$usage" >&2
    exit 2
    ;;
esac
