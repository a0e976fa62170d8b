/* The PostgreSQL backend of the store (libpq): the same sealed documents,
 * index keys, settings and audit rows as the SQLite backend, so that
 * several custosd nodes can share one database.
 *
 * Concurrency without a global lock (docs/scale-out.md):
 * - READ COMMITTED transactions; every document read inside a write
 *   transaction is remembered with its seal (or its absence), and the write
 *   of that document is conditional on it (UPDATE ... WHERE seal = the one
 *   read; INSERT ... ON CONFLICT DO NOTHING for one read as absent). A
 *   concurrent writer that got there first makes the write touch no row:
 *   the transaction fails as a conflict (HTTP 409 through
 *   cu_store_last_http_status) and writes nothing; the caller may retry.
 * - Audit appends take a transaction-scoped advisory lock on the log before
 *   reading its last record (a statement of its own, so that the read's
 *   snapshot is taken after the lock), which holds until commit.
 * - A write transaction is pipelined: BEGIN, the writes and the audit lock
 *   are sent without waiting; their answers are read with the next read's
 *   or the COMMIT's (one round trip each). A conditional write sent that
 *   way raises an error when it misses (custos_hit), aborting the
 *   transaction so that the COMMIT behind it commits nothing.
 * - A lost connection fails the call at once (HTTP 503) and is reset on a
 *   later call, at most once a second: no restart needed.
 * - Every wait for the server is bounded (connect_timeout, 5 s by
 *   default): a hung, stopped or partitioned server fails the call with
 *   503 like a lost connection, never holds the calling thread. */
#include <custos/store.h>

#include "../core/prov_int.h"

#include <arpa/inet.h>
#include <errno.h>
#include <libpq-fe.h>
#include <openssl/crypto.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Each entry moves the schema from version i to i+1 (custos_schema). The
 * versions count apart from SQLite's (PRAGMA user_version,
 * CU_STORE_SCHEMA_VERSION): 1 and 2 make the tables of SQLite's 1 and 2;
 * SQLite's 3 (a rowid table for its documents) has no counterpart here;
 * 3 and 4 are PostgreSQL's own. Ids and keys compare bytewise ("C"), as in
 * SQLite, so paging orders agree. */
static const char *const MIGRATIONS[] = {
    "CREATE TABLE docs(kind integer NOT NULL, id text COLLATE \"C\" NOT NULL, body text NOT NULL,"
    "  seal bytea NOT NULL, PRIMARY KEY(kind, id));"
    "CREATE TABLE keys(kind integer NOT NULL, key text COLLATE \"C\" NOT NULL,"
    "  id text COLLATE \"C\" NOT NULL, PRIMARY KEY(kind, key, id));"
    "CREATE INDEX keys_by_id ON keys(kind, id);"
    "CREATE TABLE meta(name text COLLATE \"C\" PRIMARY KEY, value text NOT NULL);"
    "CREATE TABLE audit(seq bigserial PRIMARY KEY, at text NOT NULL"
    "  DEFAULT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), event text NOT NULL);",
    "ALTER TABLE audit RENAME TO audit_v1;"
    "CREATE TABLE audit_log(seq bigint PRIMARY KEY, at text NOT NULL, type text NOT NULL,"
    "  actor text NOT NULL, payload text NOT NULL, prev bytea NOT NULL, hash bytea NOT NULL);"
    "CREATE TABLE audit_heads(seq bigint PRIMARY KEY, at text NOT NULL, hash bytea NOT NULL,"
    "  key_id text NOT NULL, sig bytea NOT NULL);",
    /* 3: per-device request windows shared by the nodes (server/limits.c).
     * Unlogged: no WAL, not replicated, emptied by a crash — all harmless
     * for a 10-second window. */
    "CREATE UNLOGGED TABLE rate_windows(key text COLLATE \"C\" PRIMARY KEY, start bigint NOT NULL,"
    "  n integer NOT NULL);",
    /* 4: a conditional write sent without waiting for its answer (a write
     * transaction is pipelined) must abort the transaction when it touches
     * no row, so that the COMMIT sent after it cannot commit the rest. */
    "CREATE FUNCTION custos_hit(n bigint) RETURNS bigint LANGUAGE plpgsql AS $$ BEGIN"
    "  IF n = 0 THEN RAISE EXCEPTION 'changed concurrently' USING ERRCODE = 'serialization_failure'; END IF;"
    "  RETURN n; END $$;",
};
#define NMIGRATIONS ((int)(sizeof MIGRATIONS / sizeof MIGRATIONS[0]))

/* The longest wait for the server (connect, or any answer) unless the
 * conninfo's connect_timeout says otherwise: docs/scale-out.md. */
#define CU_PG_TIMEOUT_S 5
#define CU_PG_TIMEOUT_STR "5"

static const struct {
    const char *name, *sql;
    int nparams;
} STMTS[] = {
    {"get", "SELECT body, seal FROM docs WHERE kind=$1::integer AND id=$2", 2},
    /* Blind upsert: a document not read in this transaction. */
    {"put", "INSERT INTO docs(kind, id, body, seal) VALUES($1::integer, $2, $3, $4)"
            " ON CONFLICT (kind, id) DO UPDATE SET body=EXCLUDED.body, seal=EXCLUDED.seal", 4},
    /* Conditional writes: a document read (as absent, or with seal $5). */
    {"ins", "INSERT INTO docs(kind, id, body, seal) VALUES($1::integer, $2, $3, $4) ON CONFLICT DO NOTHING", 4},
    {"upd", "UPDATE docs SET body=$3, seal=$4 WHERE kind=$1::integer AND id=$2 AND seal=$5", 5},
    {"del", "DELETE FROM docs WHERE kind=$1::integer AND id=$2", 2},
    {"delc", "DELETE FROM docs WHERE kind=$1::integer AND id=$2 AND seal=$3", 3},
    {"delkeys", "DELETE FROM keys WHERE kind=$1::integer AND id=$2 AND NOT (key = ANY($3::text[]))", 3},
    {"addkeys", "INSERT INTO keys(kind, key, id) SELECT $1::integer, k, $2 FROM unnest($3::text[]) AS k"
                " ON CONFLICT DO NOTHING", 3},
    {"find", "SELECT id FROM keys WHERE kind=$1::integer AND key=$2 AND id>$4 ORDER BY id LIMIT $3::bigint", 4},
    {"dockeys", "SELECT key FROM keys WHERE kind=$1::integer AND id=$2 ORDER BY key", 2},
    {"list", "SELECT id FROM docs WHERE kind=$1::integer AND id>$2 ORDER BY id LIMIT $3::bigint", 3},
    {"count", "SELECT count(*) FROM docs WHERE kind=$1::integer", 1},
    /* A setting with its seal ("seal:NAME") in one round trip: the two are
     * read from one snapshot, so a concurrent rewrite cannot pair a value
     * with another version's seal. */
    {"metaget", "SELECT name, value FROM meta WHERE name=$1 OR name='seal:' || $1", 1},
    {"metaput", "INSERT INTO meta(name, value) VALUES($1, $2) ON CONFLICT (name) DO UPDATE SET value=EXCLUDED.value", 2},
    /* A setting and its seal together (see pg_meta_put). */
    {"metaput2", "INSERT INTO meta(name, value) VALUES($1, $2), ($3, $4)"
                 " ON CONFLICT (name) DO UPDATE SET value=EXCLUDED.value", 4},
    {"audit", "INSERT INTO audit_v1(event) VALUES($1)", 1},
    {"alast", "SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1", 0},
    {"aappend", "INSERT INTO audit_log(seq, at, type, actor, payload, prev, hash)"
                " VALUES($1::bigint, $2, $3, $4, $5, $6, $7)", 7},
    {"aread", "SELECT seq, at, type, actor, payload, prev, hash FROM audit_log WHERE seq >= $1::bigint"
              " ORDER BY seq LIMIT $2::bigint", 2},
    /* Never replaces a head (see sqlite.c). */
    {"hput", "INSERT INTO audit_heads(seq, at, hash, key_id, sig) VALUES($1::bigint, $2, $3, $4, $5)"
             " ON CONFLICT DO NOTHING", 5},
    {"hread", "SELECT seq, at, hash, key_id, sig FROM audit_heads WHERE seq >= $1::bigint ORDER BY seq"
              " LIMIT $2::bigint", 2},
    /* One fixed window per key: a new one when the last is over. */
    {"rate", "INSERT INTO rate_windows(key, start, n) VALUES($1, $2::bigint, 1) ON CONFLICT (key) DO UPDATE SET"
             " start = CASE WHEN rate_windows.start + $3::bigint <= EXCLUDED.start THEN EXCLUDED.start"
             "   ELSE rate_windows.start END,"
             " n = CASE WHEN rate_windows.start + $3::bigint <= EXCLUDED.start THEN 1 ELSE rate_windows.n + 1 END"
             " RETURNING start, n", 3},
    {"rateundo", "UPDATE rate_windows SET n = n - 1 WHERE key = $1 AND n > 0", 1},
    {"ping", "SELECT 1", 0},
    /* Pipelined forms of the conditional writes (see custos_hit). */
    {"insq", "WITH w AS (INSERT INTO docs(kind, id, body, seal) VALUES($1::integer, $2, $3, $4) ON CONFLICT DO NOTHING"
             " RETURNING 1) SELECT custos_hit(count(*)) FROM w", 4},
    {"updq", "WITH w AS (UPDATE docs SET body=$3, seal=$4 WHERE kind=$1::integer AND id=$2 AND seal=$5 RETURNING 1)"
             " SELECT custos_hit(count(*)) FROM w", 5},
    {"alock", "SELECT pg_advisory_xact_lock(1129665364, 'audit_log'::regclass::oid::integer)", 0},
};

/* A document read in the current write transaction. */
typedef struct seen {
    char *id; /* NULL: free slot */
    int kind;
    bool exists;
    uint8_t seal[32];
    char *body; /* as read or written: a second read in the transaction costs no round trip */
} seen;

typedef struct pg {
    PGconn *c;
    char **kw, **val; /* connection parameters, kept for reconnecting */
    char where[300];  /* host:port/dbname for messages (never the password) */
    int timeout_ms;   /* the longest wait for an answer (connect_timeout); 0: none */
    char lost[160];   /* why the connection was dropped, while there is none */
    bool in_tx;
    time_t next_reset;
    bool ready; /* the schema exists: statements can be prepared */
    seen *seen;
    size_t cap, used;
    /* The seal fetched with the last setting read (see "metaget"). */
    char *pref_name, *pref_val;
    /* A setting written in the transaction and not sent yet: its seal
     * follows at once and goes with it in one statement. */
    char *pend_name, *pend_val;
    /* A write transaction is pipelined: BEGIN and the writes are sent
     * without waiting, and their answers read with the next read's (or the
     * COMMIT's) in one round trip. */
    bool pipe, begin_sent;
    struct sent {
        const char *what;
        ExecStatusType want;
    } q[32];
    size_t nq;
} pg;

static cu_rc flush_pending(pg *p);
static void pg_rollback(void *b);

/* ---- errors ---- */

static cu_rc unavailable(pg *p, const char *what)
{
    char msg[256];
    snprintf(msg, sizeof msg, "%s", p->c ? PQerrorMessage(p->c) : p->lost[0] ? p->lost : "no connection");
    msg[strcspn(msg, "\r\n")] = 0;
    cu_prov__store_set_last_http(503);
    return cu_err_set(CU_E_IO, "PostgreSQL at %s unavailable (%s): %s", p->where, what, msg);
}

static cu_rc conflict(const char *what, const char *id)
{
    cu_prov__store_set_last_http(409);
    return cu_err_set(CU_E_STATE, "%s '%.128s' was changed concurrently (another node or connection); "
                                  "nothing was written: retry", what, id);
}

static cu_rc result_error(pg *p, PGresult *r, const char *what)
{
    const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    if (PQstatus(p->c) != CONNECTION_OK)
        return unavailable(p, what);
    if (state != NULL && (!strcmp(state, "40001") || !strcmp(state, "40P01") || !strcmp(state, "23505")))
        return conflict(what, "row");
    /* Admin shutdown, too many connections, cannot connect now: transient. */
    if (state != NULL && (!strncmp(state, "57P", 3) || !strncmp(state, "08", 2) || !strcmp(state, "53300")))
        return unavailable(p, what);
    char msg[256];
    snprintf(msg, sizeof msg, "%s", r ? PQresultErrorMessage(r) : PQerrorMessage(p->c));
    msg[strcspn(msg, "\r\n")] = 0;
    return cu_err_set(CU_E_IO, "PostgreSQL: %s: %s", what, msg);
}

/* ---- connection ---- */

static int64_t now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* No answer in time: the connection is dropped, not cancelled (libpq's
 * PQcancel waits without a bound for the server to close the cancel
 * connection: a stopped server would hold the thread there instead).
 * Closing our end is enough: the backend sees it within a second
 * (client_connection_check_interval, set at connect) and rolls back,
 * releasing its locks. A later call reconnects, not before a second. */
static void give_up(pg *p, const char *what)
{
    snprintf(p->lost, sizeof p->lost, "no answer within %d ms (%s): connection dropped", p->timeout_ms, what);
    PQfinish(p->c);
    p->c = NULL;
    p->next_reset = time(NULL) + 1;
}

/* Waits until what was sent has gone out and an answer can be read
 * without blocking, for at most the deadline. false: none came in time,
 * and the connection is dropped. A connection found broken is not waited
 * on: PQgetResult reports it at once. */
static bool await(pg *p, const char *what)
{
    if (p->c == NULL)
        return false;
    int64_t end = now_ms() + p->timeout_ms;
    for (;;) {
        int f = PQflush(p->c);
        if (f < 0 || (f == 0 && !PQisBusy(p->c)))
            return true;
        int left = -1;
        if (p->timeout_ms > 0) {
            int64_t l = end - now_ms();
            if (l <= 0) {
                give_up(p, what);
                return false;
            }
            left = (int)l;
        }
        struct pollfd pfd = {.fd = PQsocket(p->c), .events = (short)(POLLIN | (f > 0 ? POLLOUT : 0))};
        int n = poll(&pfd, 1, left);
        if (n < 0 && errno != EINTR) {
            give_up(p, what);
            return false;
        }
        if (n > 0 && PQconsumeInput(p->c) != 1)
            return true;
    }
}

/* The next result, waited for at most the deadline; NULL also when none
 * came in time (then p->c is NULL). */
static PGresult *next_result(pg *p, const char *what)
{
    return await(p, what) ? PQgetResult(p->c) : NULL;
}

/* The answer to the one command just sent, as PQexec gives it (its last
 * result); NULL when none came in time or the command was not sent. */
static PGresult *answer(pg *p, bool sent, const char *what)
{
    PGresult *last = NULL, *r;
    if (!sent)
        return NULL;
    while ((r = next_result(p, what)) != NULL) {
        PQclear(last);
        last = r;
        if (PQstatus(p->c) == CONNECTION_BAD)
            break;
    }
    if (p->c == NULL) {
        PQclear(last);
        return NULL;
    }
    return last;
}

/* PQexec with the deadline. */
static PGresult *exec_sql(pg *p, const char *sql, const char *what)
{
    return p->c != NULL ? answer(p, PQsendQuery(p->c, sql) == 1, what) : NULL;
}

static cu_rc prepare_all(pg *p)
{
    for (size_t i = 0; i < sizeof STMTS / sizeof STMTS[0]; i++) {
        PGresult *r = answer(p, PQsendPrepare(p->c, STMTS[i].name, STMTS[i].sql, STMTS[i].nparams, NULL) == 1,
                             "prepare");
        cu_rc rc = PQresultStatus(r) == PGRES_COMMAND_OK ? CU_OK : result_error(p, r, "prepare");
        PQclear(r);
        if (rc != CU_OK)
            return rc;
    }
    return CU_OK;
}

/* libpq bounds the connect itself (connect_timeout, per address: a
 * multi-host URI moves on to the next host). Non-blocking from then on,
 * so that no send waits on a full socket either. A backend checks every
 * second while it runs a query whether we are still there (the way a
 * query abandoned at the deadline ends: see give_up); the setting is
 * PostgreSQL 14's, skipped on an older server. */
static cu_rc connect_now(pg *p)
{
    if (p->c != NULL)
        PQfinish(p->c);
    p->c = PQconnectdbParams((const char *const *)p->kw, (const char *const *)p->val, 0);
    if (p->c == NULL)
        return cu_err_set(CU_E_NOMEM, "out of memory");
    if (PQstatus(p->c) != CONNECTION_OK)
        return unavailable(p, "connect");
    p->lost[0] = 0;
    if (PQsetnonblocking(p->c, 1) != 0)
        return unavailable(p, "connect");
    PGresult *r = exec_sql(p, "SELECT set_config('client_min_messages', 'warning', false),"
                              " (SELECT set_config(name, '1s', false) FROM pg_settings"
                              "  WHERE name = 'client_connection_check_interval')", "connect");
    cu_rc rc = PQresultStatus(r) == PGRES_TUPLES_OK ? CU_OK : result_error(p, r, "connect");
    PQclear(r);
    if (rc != CU_OK)
        return rc;
    return p->ready ? prepare_all(p) : CU_OK;
}

/* A broken connection is reset outside a transaction (inside one, the
 * transaction is lost anyway: the caller's call fails and it rolls back),
 * at most once a second so that an outage costs each request one failed
 * connect, not a storm. */
static cu_rc ensure_conn(pg *p)
{
    if (p->c != NULL && PQstatus(p->c) == CONNECTION_OK)
        return CU_OK;
    if (p->in_tx)
        return unavailable(p, "connection lost in a transaction");
    if (time(NULL) < p->next_reset)
        return unavailable(p, "reconnecting");
    cu_rc rc = connect_now(p);
    /* From the end of the attempt: one that waited out connect_timeout
     * is not made again by the same request. */
    p->next_reset = time(NULL) + 1;
    return rc;
}

/* The pipeline lost its way (connection gone, or an answer out of order):
 * the connection is dropped and made again on a later call. */
static cu_rc broken(pg *p, const char *what)
{
    cu_rc rc = unavailable(p, what);
    if (p->c != NULL)
        PQfinish(p->c);
    p->c = NULL;
    p->pipe = p->begin_sent = false;
    p->nq = 0;
    return rc;
}

/* One answer of the pipeline (and the end-of-query marker after it); the
 * first failure is kept, later answers (aborted) only consumed. */
static cu_rc take(pg *p, ExecStatusType want, const char *what, PGresult **_r, cu_rc rc, bool *_lost)
{
    PGresult *r = next_result(p, what);
    if (r == NULL) {
        *_lost = true;
        return rc != CU_OK ? rc : unavailable(p, what);
    }
    PGresult *end = next_result(p, what);
    if (end != NULL) {
        PQclear(end);
        *_lost = true;
    }
    if (rc == CU_OK && PQresultStatus(r) != want)
        rc = result_error(p, r, what);
    if (rc == CU_OK && _r != NULL) {
        *_r = r;
        return CU_OK;
    }
    PQclear(r);
    return rc;
}

/* Sends a sync and reads every answer due: BEGIN's, the queued writes',
 * then (if _r) the statement just sent, whose result it returns. */
static cu_rc drain(pg *p, ExecStatusType want, const char *what, PGresult **_r)
{
    cu_rc rc = CU_OK;
    bool lost = false;
    if (PQpipelineSync(p->c) != 1)
        return broken(p, what);
    if (p->begin_sent)
        rc = take(p, PGRES_COMMAND_OK, "begin", NULL, rc, &lost);
    p->begin_sent = false;
    for (size_t i = 0; i < p->nq && !lost; i++)
        rc = take(p, p->q[i].want, p->q[i].what, NULL, rc, &lost);
    p->nq = 0;
    if (_r != NULL && !lost)
        rc = take(p, want, what, _r, rc, &lost);
    PGresult *s = lost ? NULL : next_result(p, what);
    if (s == NULL || PQresultStatus(s) != PGRES_PIPELINE_SYNC)
        lost = true;
    PQclear(s);
    if (lost) {
        if (_r != NULL && *_r != NULL) {
            PQclear(*_r);
            *_r = NULL;
        }
        cu_rc brc = broken(p, what);
        return rc != CU_OK ? rc : brc;
    }
    return rc;
}

/* Sends a prepared statement (NULL: COMMIT) into the pipeline without
 * reading its answer. */
static cu_rc send_one(pg *p, const char *stmt, int n, const char *const *v, const int *len, const int *fmt,
                      int result_binary)
{
    int ok = stmt != NULL ? PQsendQueryPrepared(p->c, stmt, n, v, len, fmt, result_binary)
                          : PQsendQueryParams(p->c, "COMMIT", 0, NULL, NULL, NULL, NULL, 0);
    return ok == 1 ? CU_OK : broken(p, stmt != NULL ? stmt : "commit");
}

/* A write whose answer can wait (inside a write transaction): queued.
 * Outside one it runs at once. A conditional write must be one of the
 * custos_hit forms, which abort the transaction when they miss. */
static cu_rc run(pg *p, const char *stmt, int n, const char *const *v, const int *len, const int *fmt,
                 int result_binary, ExecStatusType want, const char *what, PGresult **_r);
static cu_rc queue(pg *p, const char *stmt, int n, const char *const *v, const int *len, const int *fmt,
                   ExecStatusType want, const char *what)
{
    cu_rc rc = flush_pending(p);
    if (rc != CU_OK)
        return rc;
    if (p->nq == sizeof p->q / sizeof p->q[0] && (rc = drain(p, PGRES_COMMAND_OK, what, NULL)) != CU_OK)
        return rc;
    if ((rc = send_one(p, stmt, n, v, len, fmt, 0)) != CU_OK)
        return rc;
    p->q[p->nq].what = what;
    p->q[p->nq++].want = want;
    return CU_OK;
}

/* A write whose answer nothing waits for: queued in a write transaction,
 * else run at once. */
static cu_rc wr(pg *p, const char *stmt, int n, const char *const *v, const int *len, const int *fmt,
                const char *what)
{
    if (p->pipe)
        return queue(p, stmt, n, v, len, fmt, PGRES_COMMAND_OK, what);
    PGresult *r = NULL;
    cu_rc rc = run(p, stmt, n, v, len, fmt, 0, PGRES_COMMAND_OK, what, &r);
    PQclear(r);
    return rc;
}

/* Runs a prepared statement; want is the expected status. Outside a
 * transaction, a statement that finds the connection broken is retried
 * once on a fresh one (the first request after the database came back
 * then succeeds); one that got no answer in time is not (the server is
 * there but does not answer: a second wait would only double the
 * caller's). */
static cu_rc run(pg *p, const char *stmt, int n, const char *const *v, const int *len, const int *fmt,
                 int result_binary, ExecStatusType want, const char *what, PGresult **_r)
{
    *_r = NULL;
    cu_rc frc = flush_pending(p);
    if (frc != CU_OK)
        return frc;
    if (p->pipe) {
        if ((frc = send_one(p, stmt, n, v, len, fmt, result_binary)) != CU_OK)
            return frc;
        return drain(p, want, what, _r);
    }
    for (int attempt = 0; attempt < 2; attempt++) {
        cu_rc rc = ensure_conn(p);
        if (rc != CU_OK)
            return rc;
        PGresult *r = answer(p, PQsendQueryPrepared(p->c, stmt, n, v, len, fmt, result_binary) == 1, what);
        if (PQresultStatus(r) == want) {
            *_r = r;
            return CU_OK;
        }
        bool retry = p->c != NULL && PQstatus(p->c) != CONNECTION_OK && !p->in_tx && attempt == 0;
        if (!retry) {
            rc = result_error(p, r, what);
            PQclear(r);
            return rc;
        }
        PQclear(r);
        p->next_reset = 0;
    }
    return unavailable(p, what);
}

/* wr() without sending the pending setting first (it is in v). */
static cu_rc wr_now(pg *p, const char *stmt, int n, const char *const *v, const char *what)
{
    char *pn = p->pend_name, *pv = p->pend_val;
    p->pend_name = p->pend_val = NULL;
    cu_rc rc = wr(p, stmt, n, v, NULL, NULL, what);
    p->pend_name = pn;
    p->pend_val = pv;
    return rc;
}

static cu_rc exec_plain(pg *p, const char *sql, const char *what)
{
    PGresult *r = exec_sql(p, sql, what);
    ExecStatusType st = PQresultStatus(r);
    cu_rc rc = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK ? CU_OK : result_error(p, r, what);
    PQclear(r);
    return rc;
}

/* ---- values ---- */

static uint64_t be64(const char *b)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | (uint8_t)b[i];
    return v;
}

static uint64_t col_u64(PGresult *r, int row, int col)
{
    if (PQgetisnull(r, row, col))
        return 0;
    if (PQgetlength(r, row, col) == 8)
        return be64(PQgetvalue(r, row, col));
    if (PQgetlength(r, row, col) == 4)
        return (uint32_t)ntohl(*(const uint32_t *)(const void *)PQgetvalue(r, row, col));
    return 0;
}

static void col_blob32(PGresult *r, int row, int col, uint8_t out[32])
{
    int n = PQgetlength(r, row, col);
    memset(out, 0, 32);
    if (!PQgetisnull(r, row, col) && n > 0)
        memcpy(out, PQgetvalue(r, row, col), n < 32 ? (size_t)n : 32);
}

static void col_text(PGresult *r, int row, int col, char *out, size_t size)
{
    snprintf(out, size, "%s", PQgetisnull(r, row, col) ? "" : PQgetvalue(r, row, col));
}

/* A text[] literal: every element quoted, " and \ escaped. */
static char *array_literal(const char *const *keys, size_t n)
{
    size_t len = 3;
    for (size_t i = 0; i < n; i++)
        len += 2 * strlen(keys[i]) + 3;
    char *s = malloc(len), *o = s;
    if (s == NULL)
        return NULL;
    *o++ = '{';
    for (size_t i = 0; i < n; i++) {
        if (i > 0)
            *o++ = ',';
        *o++ = '"';
        for (const char *k = keys[i]; *k; k++) {
            if (*k == '"' || *k == '\\')
                *o++ = '\\';
            *o++ = *k;
        }
        *o++ = '"';
    }
    *o++ = '}';
    *o = 0;
    return s;
}

/* ---- documents read in the transaction ---- */

static size_t seen_hash(int kind, const char *id)
{
    uint64_t h = 1469598103934665603ull ^ (uint64_t)kind;
    for (; *id; id++)
        h = (h ^ (uint8_t)*id) * 1099511628211ull;
    return (size_t)h;
}

static seen *seen_find(pg *p, int kind, const char *id)
{
    if (p->cap == 0)
        return NULL;
    for (size_t i = seen_hash(kind, id) & (p->cap - 1);; i = (i + 1) & (p->cap - 1)) {
        if (p->seen[i].id == NULL)
            return NULL;
        if (p->seen[i].kind == kind && !strcmp(p->seen[i].id, id))
            return &p->seen[i];
    }
}

static void seen_clear(pg *p)
{
    for (size_t i = 0; i < p->cap && p->used > 0; i++)
        if (p->seen[i].id != NULL) {
            free(p->seen[i].id);
            free(p->seen[i].body);
            p->seen[i].id = NULL;
            p->seen[i].body = NULL;
            p->used--;
        }
    p->used = 0;
}

static cu_rc seen_note(pg *p, int kind, const char *id, bool exists, const uint8_t seal[32], const char *body)
{
    seen *e = seen_find(p, kind, id);
    if (e == NULL) {
        if (2 * (p->used + 1) > p->cap) {
            size_t ncap = p->cap ? 2 * p->cap : 16;
            seen *t = calloc(ncap, sizeof *t);
            if (t == NULL)
                return cu_err_set(CU_E_NOMEM, "out of memory");
            for (size_t i = 0; i < p->cap; i++)
                if (p->seen[i].id != NULL) {
                    size_t j = seen_hash(p->seen[i].kind, p->seen[i].id) & (ncap - 1);
                    while (t[j].id != NULL)
                        j = (j + 1) & (ncap - 1);
                    t[j] = p->seen[i];
                }
            free(p->seen);
            p->seen = t;
            p->cap = ncap;
        }
        size_t j = seen_hash(kind, id) & (p->cap - 1);
        while (p->seen[j].id != NULL)
            j = (j + 1) & (p->cap - 1);
        if ((p->seen[j].id = strdup(id)) == NULL)
            return cu_err_set(CU_E_NOMEM, "out of memory");
        p->seen[j].kind = kind;
        e = &p->seen[j];
        p->used++;
    }
    e->exists = exists;
    free(e->body);
    e->body = NULL;
    if (exists) {
        memcpy(e->seal, seal, 32);
        if ((e->body = strdup(body)) == NULL)
            return cu_err_set(CU_E_NOMEM, "out of memory");
    }
    return CU_OK;
}

/* ---- backend functions ---- */

/* Reads what the server sent an idle connection: a closing server's
 * FATAL message first, then the end of the stream (two non-blocking reads). */
static bool still_open(PGconn *c)
{
    for (int i = 0; i < 2; i++)
        if (PQconsumeInput(c) != 1 || PQstatus(c) != CONNECTION_OK)
            return false;
    return true;
}

static cu_rc pg_begin(void *b)
{
    pg *p = b;
    cu_rc rc = ensure_conn(p);
    /* A connection the server closed while idle (a restart) shows here, at
     * no round trip (BEGIN is not waited for): nothing has been done yet,
     * so a fresh one may start the transaction. */
    if (rc == CU_OK && !still_open(p->c)) {
        PQfinish(p->c);
        p->c = NULL;
        p->next_reset = 0;
        rc = ensure_conn(p);
    }
    if (rc != CU_OK)
        return rc;
    if (PQenterPipelineMode(p->c) != 1 || PQsendQueryParams(p->c, "BEGIN", 0, NULL, NULL, NULL, NULL, 0) != 1)
        return broken(p, "begin");
    p->pipe = p->begin_sent = true;
    p->nq = 0;
    p->in_tx = true;
    seen_clear(p);
    return CU_OK;
}

/* Ends the pipeline, its answers unread and unreported (a rollback keeps
 * the error that caused it). */
static void discard(pg *p)
{
    bool synced = false;
    if (p->c != NULL && PQpipelineSync(p->c) == 1)
        for (int i = 0; i < 4 * (int)(sizeof p->q / sizeof p->q[0]) + 8; i++) {
            PGresult *r = next_result(p, "rollback");
            if (r == NULL) {
                if (p->c == NULL || PQstatus(p->c) != CONNECTION_OK)
                    break;
                continue;
            }
            synced = PQresultStatus(r) == PGRES_PIPELINE_SYNC;
            PQclear(r);
            if (synced)
                break;
        }
    if (p->c != NULL && (!synced || PQexitPipelineMode(p->c) != 1)) {
        PQfinish(p->c);
        p->c = NULL;
    }
    p->pipe = p->begin_sent = false;
    p->nq = 0;
}

static void pending_drop(pg *p)
{
    free(p->pend_name);
    if (p->pend_val != NULL)
        OPENSSL_clear_free(p->pend_val, strlen(p->pend_val));
    p->pend_name = p->pend_val = NULL;
}

static cu_rc pg_commit(void *b)
{
    pg *p = b;
    PGresult *r = NULL;
    cu_rc rc = flush_pending(p);
    if (rc != CU_OK) {
        pg_rollback(p);
        return rc;
    }
    if (!p->pipe) {
        rc = unavailable(p, "connection lost in a transaction");
    } else if ((rc = send_one(p, NULL, 0, NULL, NULL, NULL, 0)) == CU_OK &&
               (rc = drain(p, PGRES_COMMAND_OK, "commit", &r)) == CU_OK &&
               strcmp(PQcmdStatus(r), "COMMIT") != 0) {
        /* A transaction aborted by an earlier error answers COMMIT with
         * "ROLLBACK": that is a failure, not a success. */
        rc = cu_err_set(CU_E_STATE, "PostgreSQL rolled the transaction back (a step of it failed)");
    }
    PQclear(r);
    if (p->pipe && p->c != NULL && PQexitPipelineMode(p->c) != 1) {
        PQfinish(p->c);
        p->c = NULL;
    }
    p->pipe = false;
    p->in_tx = false;
    seen_clear(p);
    return rc;
}

static void pg_rollback(void *b)
{
    pg *p = b;
    pending_drop(p);
    if (p->pipe)
        discard(p);
    if (p->c != NULL && PQstatus(p->c) == CONNECTION_OK)
        PQclear(exec_sql(p, "ROLLBACK", "rollback"));
    p->in_tx = false;
    seen_clear(p);
}

static cu_rc pg_get(void *b, int kind, const char *id, char **_body, uint8_t seal[32])
{
    pg *p = b;
    char k[16];
    PGresult *r = NULL;
    seen *e = p->in_tx ? seen_find(p, kind, id) : NULL;
    if (e != NULL) {
        /* Read (or written) before in this transaction: that version,
         * which the write of it is conditional on anyway. */
        if (!e->exists)
            return cu_err_set(CU_E_OBJECT_NOT_FOUND, "'%s' not found", id);
        memcpy(seal, e->seal, 32);
        return (*_body = strdup(e->body)) ? CU_OK : cu_err_set(CU_E_NOMEM, "out of memory");
    }
    snprintf(k, sizeof k, "%d", kind);
    const char *v[] = {k, id};
    cu_rc rc = run(p, "get", 2, v, NULL, NULL, 1, PGRES_TUPLES_OK, "read", &r);
    if (rc != CU_OK)
        return rc;
    if (PQntuples(r) == 0) {
        rc = cu_err_set(CU_E_OBJECT_NOT_FOUND, "'%s' not found", id);
        if (p->in_tx && seen_note(p, kind, id, false, NULL, NULL) != CU_OK)
            rc = CU_E_NOMEM;
    } else if (PQgetlength(r, 0, 1) != 32) {
        rc = cu_err_set(CU_E_VERIFY, "row '%s' has no valid seal", id);
    } else {
        memcpy(seal, PQgetvalue(r, 0, 1), 32);
        if ((*_body = strdup(PQgetvalue(r, 0, 0))) == NULL)
            rc = cu_err_set(CU_E_NOMEM, "out of memory");
        else if (p->in_tx && (rc = seen_note(p, kind, id, true, seal, *_body)) != CU_OK) {
            free(*_body);
            *_body = NULL;
        }
    }
    PQclear(r);
    return rc;
}

static cu_rc pg_put(void *b, int kind, const char *id, const char *body, const uint8_t seal[32],
                    const char *const *keys, size_t nkeys)
{
    pg *p = b;
    char k[16], *arr = NULL;
    PGresult *r = NULL;
    seen *e = p->in_tx ? seen_find(p, kind, id) : NULL;
    bool was_new = e != NULL && !e->exists;
    cu_rc rc;
    snprintf(k, sizeof k, "%d", kind);
    const char *v[] = {k, id, body, (const char *)seal, e && e->exists ? (const char *)e->seal : NULL};
    int len[] = {0, 0, 0, 32, 32}, fmt[] = {0, 0, 0, 1, 1};
    int nv = e && e->exists ? 5 : 4;
    if (p->pipe) {
        /* Sent without waiting: a conditional write that misses aborts
         * the transaction (custos_hit), reported by a later call. */
        if ((rc = queue(p, e == NULL ? "put" : e->exists ? "updq" : "insq", nv, v, len, fmt,
                        e == NULL ? PGRES_COMMAND_OK : PGRES_TUPLES_OK, "write")) != CU_OK)
            return rc;
    } else {
        const char *stmt = e == NULL ? "put" : e->exists ? "upd" : "ins";
        if ((rc = run(p, stmt, nv, v, len, fmt, 0, PGRES_COMMAND_OK, "write", &r)) != CU_OK)
            return rc;
        bool hit = strcmp(PQcmdTuples(r), "0") != 0;
        PQclear(r);
        if (!hit)
            return conflict("the document", id);
    }
    if (p->in_tx && (rc = seen_note(p, kind, id, true, seal, body)) != CU_OK)
        return rc;
    if (keys == NULL)
        return CU_OK;
    if ((arr = array_literal(keys, nkeys)) == NULL)
        return cu_err_set(CU_E_NOMEM, "out of memory");
    const char *kv[] = {k, id, arr};
    /* A document created in this transaction has no old keys to drop. */
    if (!was_new && (rc = wr(p, "delkeys", 3, kv, NULL, NULL, "write keys")) != CU_OK)
        goto cleanup;
    if (nkeys > 0)
        rc = wr(p, "addkeys", 3, kv, NULL, NULL, "write keys");
cleanup:
    free(arr);
    return rc;
}

static cu_rc pg_del(void *b, int kind, const char *id)
{
    pg *p = b;
    char k[16];
    PGresult *r = NULL;
    seen *e = p->in_tx ? seen_find(p, kind, id) : NULL;
    cu_rc rc;
    snprintf(k, sizeof k, "%d", kind);
    const char *v[] = {k, id, e && e->exists ? (const char *)e->seal : NULL};
    int len[] = {0, 0, 32}, fmt[] = {0, 0, 1};
    bool cond = e != NULL && e->exists;
    if ((rc = run(p, cond ? "delc" : "del", cond ? 3 : 2, v, len, fmt, 0, PGRES_COMMAND_OK, "delete", &r)) != CU_OK)
        return rc;
    bool hit = strcmp(PQcmdTuples(r), "0") != 0;
    PQclear(r);
    if (!hit)
        return cond ? conflict("the document", id) : cu_err_set(CU_E_OBJECT_NOT_FOUND, "'%s' not found", id);
    if (p->in_tx && (rc = seen_note(p, kind, id, false, NULL, NULL)) != CU_OK)
        return rc;
    const char *kv[] = {k, id, "{}"};
    if ((rc = run(p, "delkeys", 3, kv, NULL, NULL, 0, PGRES_COMMAND_OK, "delete keys", &r)) == CU_OK)
        PQclear(r);
    return rc;
}

static cu_rc collect(PGresult *r, char ***_ids, size_t *_n)
{
    int n = PQntuples(r);
    char **ids = calloc((size_t)n + 1, sizeof *ids);
    *_ids = NULL;
    *_n = 0;
    if (ids == NULL)
        return cu_err_set(CU_E_NOMEM, "out of memory");
    for (int i = 0; i < n; i++)
        if ((ids[i] = strdup(PQgetvalue(r, i, 0))) == NULL) {
            cu_store_ids_free(ids, (size_t)i);
            return cu_err_set(CU_E_NOMEM, "out of memory");
        }
    *_ids = ids;
    *_n = (size_t)n;
    return CU_OK;
}

static void limit_str(size_t limit, char out[24])
{
    snprintf(out, 24, "%llu", (unsigned long long)(limit > INT64_MAX ? INT64_MAX : limit));
}

static cu_rc pg_list(void *b, int kind, const char *after, size_t limit, char ***_ids, size_t *_n)
{
    pg *p = b;
    char k[16], l[24];
    PGresult *r = NULL;
    snprintf(k, sizeof k, "%d", kind);
    limit_str(limit, l);
    const char *v[] = {k, after ? after : "", l};
    cu_rc rc = run(p, "list", 3, v, NULL, NULL, 0, PGRES_TUPLES_OK, "list", &r);
    if (rc == CU_OK)
        rc = collect(r, _ids, _n);
    PQclear(r);
    return rc;
}

static cu_rc pg_find(void *b, int kind, const char *key, const char *after, size_t limit, char ***_ids,
                     size_t *_n)
{
    pg *p = b;
    char k[16], l[24];
    PGresult *r = NULL;
    snprintf(k, sizeof k, "%d", kind);
    limit_str(limit, l);
    const char *v[] = {k, key, l, after ? after : ""};
    cu_rc rc = run(p, "find", 4, v, NULL, NULL, 0, PGRES_TUPLES_OK, "find", &r);
    if (rc == CU_OK)
        rc = collect(r, _ids, _n);
    PQclear(r);
    return rc;
}

static cu_rc pg_doc_keys(void *b, int kind, const char *id, char ***_keys, size_t *_n)
{
    pg *p = b;
    char k[16];
    PGresult *r = NULL;
    snprintf(k, sizeof k, "%d", kind);
    const char *v[] = {k, id};
    cu_rc rc = run(p, "dockeys", 2, v, NULL, NULL, 0, PGRES_TUPLES_OK, "read keys", &r);
    if (rc == CU_OK)
        rc = collect(r, _keys, _n);
    PQclear(r);
    return rc;
}

static cu_rc pg_count(void *b, int kind, uint64_t *_n)
{
    pg *p = b;
    char k[16];
    PGresult *r = NULL;
    snprintf(k, sizeof k, "%d", kind);
    const char *v[] = {k};
    cu_rc rc = run(p, "count", 1, v, NULL, NULL, 1, PGRES_TUPLES_OK, "count", &r);
    if (rc == CU_OK)
        *_n = col_u64(r, 0, 0);
    PQclear(r);
    return rc;
}

static void pref_clear(pg *p)
{
    free(p->pref_name);
    free(p->pref_val);
    p->pref_name = p->pref_val = NULL;
}

static cu_rc pg_meta_get(void *b, const char *name, char **_value)
{
    pg *p = b;
    PGresult *r = NULL;
    cu_rc rc;
    /* The seal of the setting just read: from the same snapshot. */
    if (p->pref_name != NULL && !strcmp(p->pref_name, name)) {
        *_value = p->pref_val;
        p->pref_val = NULL;
        pref_clear(p);
        return *_value ? CU_OK : cu_err_set(CU_E_OBJECT_NOT_FOUND, "setting '%s' not found", name);
    }
    pref_clear(p);
    const char *v[] = {name};
    if ((rc = run(p, "metaget", 1, v, NULL, NULL, 0, PGRES_TUPLES_OK, "read setting", &r)) != CU_OK)
        return rc;
    const char *val = NULL, *sealv = NULL;
    for (int i = 0; i < PQntuples(r); i++) {
        if (!strcmp(PQgetvalue(r, i, 0), name))
            val = PQgetvalue(r, i, 1);
        else
            sealv = PQgetvalue(r, i, 1);
    }
    if (val == NULL) {
        rc = cu_err_set(CU_E_OBJECT_NOT_FOUND, "setting '%s' not found", name);
    } else if ((*_value = strdup(val)) == NULL) {
        rc = cu_err_set(CU_E_NOMEM, "out of memory");
    } else if (strncmp(name, "seal:", 5) != 0) {
        size_t nl = strlen(name) + 6;
        if ((p->pref_name = malloc(nl)) != NULL) {
            snprintf(p->pref_name, nl, "seal:%s", name);
            if (sealv != NULL && (p->pref_val = strdup(sealv)) == NULL)
                pref_clear(p);
        }
    }
    PQclear(r);
    return rc;
}

static cu_rc flush_pending(pg *p)
{
    if (p->pend_name == NULL)
        return CU_OK;
    char *n = p->pend_name, *val = p->pend_val;
    p->pend_name = p->pend_val = NULL;
    const char *v[] = {n, val};
    cu_rc rc = wr(p, "metaput", 2, v, NULL, NULL, "write setting");
    free(n);
    OPENSSL_clear_free(val, strlen(val));
    return rc;
}

/* Inside a transaction a setting waits for its seal ("seal:NAME", which
 * store.c writes next), and the two go in one round trip; anything else
 * sends it first. Outside one, every write is done when this returns. */
static cu_rc pg_meta_put(void *b, const char *name, const char *value)
{
    pg *p = b;
    PGresult *r = NULL;
    cu_rc rc;
    pref_clear(p);
    if (p->pend_name != NULL && !strncmp(name, "seal:", 5) && !strcmp(name + 5, p->pend_name)) {
        const char *v[] = {p->pend_name, p->pend_val, name, value};
        rc = wr_now(p, "metaput2", 4, v, "write setting");
        pending_drop(p);
        return rc;
    }
    if (p->in_tx && strncmp(name, "seal:", 5) != 0) {
        if ((rc = flush_pending(p)) != CU_OK)
            return rc;
        if ((p->pend_name = strdup(name)) == NULL || (p->pend_val = strdup(value)) == NULL) {
            pending_drop(p);
            return cu_err_set(CU_E_NOMEM, "out of memory");
        }
        return CU_OK;
    }
    const char *v[] = {name, value};
    rc = run(p, "metaput", 2, v, NULL, NULL, 0, PGRES_COMMAND_OK, "write setting", &r);
    PQclear(r);
    return rc;
}

static cu_rc pg_audit(void *b, const char *event)
{
    pg *p = b;
    PGresult *r = NULL;
    const char *v[] = {event};
    cu_rc rc = run(p, "audit", 1, v, NULL, NULL, 0, PGRES_COMMAND_OK, "write audit", &r);
    PQclear(r);
    return rc;
}

static cu_rc pg_audit_last(void *b, uint64_t *_seq, uint8_t hash[32])
{
    pg *p = b;
    PGresult *r = NULL;
    cu_rc rc;
    *_seq = 0;
    memset(hash, 0, 32);
    if ((rc = flush_pending(p)) != CU_OK)
        return rc;
    /* In a write transaction this precedes an append: serialize. The lock
     * and the read are two statements in one round trip, so the read's
     * snapshot is taken after the lock is granted and sees the last
     * committed append; the lock holds until commit. */
    if (p->pipe && (rc = queue(p, "alock", 0, NULL, NULL, NULL, PGRES_TUPLES_OK, "lock the audit log")) != CU_OK)
        return rc;
    if ((rc = run(p, "alast", 0, NULL, NULL, NULL, 1, PGRES_TUPLES_OK, "read the audit head", &r)) != CU_OK)
        return rc;
    if (PQntuples(r) > 0) {
        *_seq = col_u64(r, 0, 0);
        col_blob32(r, 0, 1, hash);
    }
    PQclear(r);
    return CU_OK;
}

static cu_rc pg_audit_append(void *b, const cu_audit_record *r)
{
    pg *p = b;
    char seq[24];
    if (r->seq > INT64_MAX)
        return cu_err_set(CU_E_INVALID_ARG, "audit seq out of range");
    snprintf(seq, sizeof seq, "%llu", (unsigned long long)r->seq);
    const char *v[] = {seq, r->at, r->type, r->actor, r->payload, (const char *)r->prev, (const char *)r->hash};
    int len[] = {0, 0, 0, 0, 0, 32, 32}, fmt[] = {0, 0, 0, 0, 0, 1, 1};
    return wr(p, "aappend", 7, v, len, fmt, "write audit");
}

/* Runs a prepared "rows with seq >= $1, at most $2" statement (binary
 * results: the audit rows carry hashes). */
static cu_rc read_from(pg *p, const char *stmt, uint64_t from, size_t limit, const char *what, PGresult **_res)
{
    char f[24], l[24];
    snprintf(f, sizeof f, "%llu", (unsigned long long)(from > INT64_MAX ? INT64_MAX : from));
    limit_str(limit, l);
    const char *v[] = {f, l};
    return run(p, stmt, 2, v, NULL, NULL, 1, PGRES_TUPLES_OK, what, _res);
}

static cu_rc pg_audit_read(void *b, uint64_t from, size_t limit, cu_audit_record **_r, size_t *_n)
{
    pg *p = b;
    PGresult *res = NULL;
    cu_rc rc;
    *_r = NULL;
    *_n = 0;
    if ((rc = read_from(p, "aread", from, limit, "read the audit log", &res)) != CU_OK)
        return rc;
    size_t n = (size_t)PQntuples(res);
    cu_audit_record *r = calloc(n ? n : 1, sizeof *r);
    if (r == NULL) {
        PQclear(res);
        return cu_err_set(CU_E_NOMEM, "out of memory");
    }
    for (size_t i = 0; i < n; i++) {
        cu_audit_record *x = &r[i];
        x->seq = col_u64(res, (int)i, 0);
        col_text(res, (int)i, 1, x->at, sizeof x->at);
        col_text(res, (int)i, 2, x->type, sizeof x->type);
        col_text(res, (int)i, 3, x->actor, sizeof x->actor);
        if ((x->payload = strdup(PQgetvalue(res, (int)i, 4))) == NULL) {
            cu_audit_records_free(r, i);
            PQclear(res);
            return cu_err_set(CU_E_NOMEM, "out of memory");
        }
        col_blob32(res, (int)i, 5, x->prev);
        col_blob32(res, (int)i, 6, x->hash);
    }
    PQclear(res);
    *_r = r;
    *_n = n;
    return CU_OK;
}

static cu_rc pg_audit_head_put(void *b, const cu_audit_head *h)
{
    pg *p = b;
    char seq[24];
    snprintf(seq, sizeof seq, "%llu", (unsigned long long)h->seq);
    const char *v[] = {seq, h->at, (const char *)h->hash, h->key_id, (const char *)h->sig};
    int len[] = {0, 0, 32, 0, (int)h->sig_len}, fmt[] = {0, 0, 1, 0, 1};
    return wr(p, "hput", 5, v, len, fmt, "write the audit head");
}

static cu_rc pg_audit_heads_read(void *b, uint64_t from, size_t limit, cu_audit_head **_h, size_t *_n)
{
    pg *p = b;
    PGresult *res = NULL;
    cu_rc rc;
    *_h = NULL;
    *_n = 0;
    if ((rc = read_from(p, "hread", from, limit, "read the audit heads", &res)) != CU_OK)
        return rc;
    size_t n = (size_t)PQntuples(res);
    cu_audit_head *h = calloc(n ? n : 1, sizeof *h);
    if (h == NULL) {
        PQclear(res);
        return cu_err_set(CU_E_NOMEM, "out of memory");
    }
    for (size_t i = 0; i < n; i++) {
        cu_audit_head *x = &h[i];
        x->seq = col_u64(res, (int)i, 0);
        col_text(res, (int)i, 1, x->at, sizeof x->at);
        col_blob32(res, (int)i, 2, x->hash);
        col_text(res, (int)i, 3, x->key_id, sizeof x->key_id);
        int sl = PQgetlength(res, (int)i, 4);
        if (sl > 0) {
            if ((x->sig = malloc((size_t)sl)) == NULL) {
                cu_audit_heads_free(h, i);
                PQclear(res);
                return cu_err_set(CU_E_NOMEM, "out of memory");
            }
            memcpy(x->sig, PQgetvalue(res, (int)i, 4), (size_t)sl);
            x->sig_len = (size_t)sl;
        }
    }
    PQclear(res);
    *_h = h;
    *_n = n;
    return CU_OK;
}

static cu_rc pg_rate_undo(void *b, const char *key)
{
    const char *v[] = {key};
    PGresult *r = NULL;
    cu_rc rc = run(b, "rateundo", 1, v, NULL, NULL, 0, PGRES_COMMAND_OK, "rate window", &r);
    PQclear(r);
    return rc;
}

static cu_rc pg_rate_hit(void *b, const char *key, unsigned window, unsigned limit, unsigned *_wait)
{
    pg *p = b;
    PGresult *r = NULL;
    char now[24], win[24];
    time_t t = time(NULL);
    snprintf(now, sizeof now, "%lld", (long long)t);
    snprintf(win, sizeof win, "%u", window);
    const char *v[] = {key, now, win};
    cu_rc rc = run(p, "rate", 3, v, NULL, NULL, 1, PGRES_TUPLES_OK, "rate window", &r);
    *_wait = 0;
    if (rc != CU_OK)
        return rc;
    if (PQntuples(r) == 1) {
        int64_t start = (int64_t)col_u64(r, 0, 0);
        uint64_t n = col_u64(r, 0, 1);
        if (n > limit) {
            int64_t w = start + (int64_t)window - (int64_t)t;
            *_wait = w < 1 ? 1 : (unsigned)w;
        }
    }
    PQclear(r);
    return CU_OK;
}

static cu_rc pg_ping(void *b)
{
    pg *p = b;
    PGresult *r = NULL;
    cu_rc rc = run(p, "ping", 0, NULL, NULL, NULL, 0, PGRES_TUPLES_OK, "ping", &r);
    PQclear(r);
    return rc;
}

static void free_params(pg *p)
{
    for (size_t i = 0; p->kw != NULL && p->kw[i] != NULL; i++) {
        free(p->kw[i]);
        if (p->val[i] != NULL)
            OPENSSL_clear_free(p->val[i], strlen(p->val[i]));
    }
    free(p->kw);
    free(p->val);
    p->kw = p->val = NULL;
}

static void pg_close(void *b)
{
    pg *p = b;
    if (p == NULL)
        return;
    if (p->c != NULL)
        PQfinish(p->c);
    free_params(p);
    seen_clear(p);
    free(p->seen);
    pref_clear(p);
    pending_drop(p);
    free(p);
}

static const cu_store_backend postgres_backend = {
    .name = "postgresql", .begin = pg_begin, .commit = pg_commit, .rollback = pg_rollback, .get = pg_get,
    .put = pg_put, .del = pg_del, .list = pg_list, .find = pg_find, .count = pg_count,
    .meta_get = pg_meta_get, .meta_put = pg_meta_put, .audit = pg_audit, .close = pg_close,
    .audit_last = pg_audit_last, .audit_append = pg_audit_append, .audit_read = pg_audit_read,
    .audit_head_put = pg_audit_head_put, .audit_heads_read = pg_audit_heads_read, .rate_hit = pg_rate_hit,
    .rate_undo = pg_rate_undo,
    .ping = pg_ping, .doc_keys = pg_doc_keys,
};

/* ---- opening ---- */

static cu_rc read_password(const char *path, char **_pw)
{
    char buf[1024];
    FILE *f = fopen(path, "r");
    *_pw = NULL;
    if (f == NULL)
        return cu_err_set_sys(CU_E_IO, errno, "cannot open the store password file %s", path);
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    buf[strcspn(buf, "\r\n")] = 0;
    if (buf[0] == 0) {
        OPENSSL_cleanse(buf, sizeof buf);
        return cu_err_set(CU_E_INVALID_ARG, "the store password file %s is empty", path);
    }
    *_pw = strdup(buf);
    OPENSSL_cleanse(buf, sizeof buf);
    return *_pw ? CU_OK : cu_err_set(CU_E_NOMEM, "out of memory");
}

/* The parsed conninfo plus our defaults: a short connect timeout, which
 * is also the deadline of every answer (an outage must fail requests
 * fast), keepalives and a TCP user timeout (a dead peer or path closes
 * the connection instead of leaving it waiting), an application name,
 * and the password from the file if one is given. */
static cu_rc set_params(pg *p, const char *conninfo, const char *password_file)
{
    char *err = NULL, *pw = NULL;
    PQconninfoOption *opts = PQconninfoParse(conninfo, &err);
    cu_rc rc = CU_OK;
    if (opts == NULL) {
        /* The message of libpq may quote the string: say only where. */
        PQfreemem(err);
        return cu_err_set(CU_E_INVALID_ARG, "the store is not a valid PostgreSQL URI or conninfo");
    }
    if (password_file != NULL && (rc = read_password(password_file, &pw)) != CU_OK)
        goto cleanup;
    size_t n = 0, i = 0;
    for (PQconninfoOption *o = opts; o->keyword != NULL; o++)
        n++;
    if ((p->kw = calloc(n + 8, sizeof *p->kw)) == NULL || (p->val = calloc(n + 8, sizeof *p->val)) == NULL) {
        rc = cu_err_set(CU_E_NOMEM, "out of memory");
        goto cleanup;
    }
    const char *host = "localhost", *port = "5432", *db = NULL, *user = NULL;
    bool has_timeout = false, has_app = false, has_ka = false, has_kai = false, has_kac = false, has_uto = false;
    p->timeout_ms = CU_PG_TIMEOUT_S * 1000;
    for (PQconninfoOption *o = opts; o->keyword != NULL; o++) {
        if (o->val == NULL)
            continue;
        if (!strcmp(o->keyword, "password") && pw != NULL)
            continue;
        if (!strcmp(o->keyword, "host"))
            host = o->val;
        else if (!strcmp(o->keyword, "port"))
            port = o->val;
        else if (!strcmp(o->keyword, "dbname"))
            db = o->val;
        else if (!strcmp(o->keyword, "user"))
            user = o->val;
        if (!strcmp(o->keyword, "connect_timeout")) {
            /* libpq's reading: whole seconds, 0 or less waits for ever,
             * 1 is taken as 2; libpq refuses what is not a number. */
            long t = strtol(o->val, NULL, 10);
            p->timeout_ms = t <= 0 ? 0 : t == 1 ? 2000 : t > 3600 ? 3600000 : (int)t * 1000;
            has_timeout = true;
        }
        has_app |= !strcmp(o->keyword, "application_name");
        has_ka |= !strcmp(o->keyword, "keepalives_idle");
        has_kai |= !strcmp(o->keyword, "keepalives_interval");
        has_kac |= !strcmp(o->keyword, "keepalives_count");
        has_uto |= !strcmp(o->keyword, "tcp_user_timeout");
        if ((p->kw[i] = strdup(o->keyword)) == NULL || (p->val[i++] = strdup(o->val)) == NULL) {
            rc = cu_err_set(CU_E_NOMEM, "out of memory");
            goto cleanup;
        }
    }
    snprintf(p->where, sizeof p->where, "%.100s:%.10s/%.100s", host, port, db ? db : user ? user : "postgres");
    /* Unacknowledged data or keepalives for as long as an answer may take:
     * the kernel gives the connection up too. */
    char uto[16];
    snprintf(uto, sizeof uto, "%d", p->timeout_ms);
    struct {
        bool skip;
        const char *k, *v;
    } add[] = {
        {has_timeout, "connect_timeout", CU_PG_TIMEOUT_STR},
        {has_app, "application_name", "custos"},
        {has_ka, "keepalives_idle", "10"},
        {has_kai, "keepalives_interval", "2"},
        {has_kac, "keepalives_count", "3"},
        {has_uto || p->timeout_ms == 0, "tcp_user_timeout", uto},
        {pw == NULL, "password", pw},
    };
    for (size_t a = 0; a < sizeof add / sizeof add[0]; a++) {
        if (add[a].skip)
            continue;
        if ((p->kw[i] = strdup(add[a].k)) == NULL || (p->val[i++] = strdup(add[a].v)) == NULL) {
            rc = cu_err_set(CU_E_NOMEM, "out of memory");
            goto cleanup;
        }
    }
cleanup:
    if (pw != NULL)
        OPENSSL_clear_free(pw, strlen(pw));
    PQconninfoFree(opts);
    return rc;
}

static cu_rc schema_version(pg *p, int *_v)
{
    PGresult *r = exec_sql(p, "SELECT version FROM custos_schema", "schema version");
    cu_rc rc = CU_OK;
    *_v = 0;
    if (PQresultStatus(r) == PGRES_TUPLES_OK) {
        if (PQntuples(r) > 0)
            *_v = atoi(PQgetvalue(r, 0, 0));
    } else {
        const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
        if (state == NULL || strcmp(state, "42P01") != 0) /* no such table: version 0 */
            rc = result_error(p, r, "schema version");
    }
    PQclear(r);
    return rc;
}

/* Migrations under a lock, so that nodes starting together migrate once. */
static cu_rc migrate(pg *p)
{
    char sql[96];
    int v = 0;
    cu_rc rc;
    if ((rc = schema_version(p, &v)) != CU_OK)
        return rc;
    if (v == NMIGRATIONS)
        return CU_OK;
    if (v > NMIGRATIONS)
        return cu_err_set(CU_E_STATE, "the store has schema version %d; this Custos knows up to %d", v, NMIGRATIONS);
    if ((rc = exec_plain(p, "BEGIN", "migrate")) != CU_OK)
        return rc;
    if ((rc = exec_plain(p, "SELECT pg_advisory_xact_lock(1129665364, 0)", "migrate")) != CU_OK ||
        (rc = exec_plain(p, "CREATE TABLE IF NOT EXISTS custos_schema(version integer NOT NULL)", "migrate")) !=
            CU_OK ||
        (rc = schema_version(p, &v)) != CU_OK)
        goto fail;
    if (v == 0 && (rc = exec_plain(p, "INSERT INTO custos_schema VALUES(0)", "migrate")) != CU_OK)
        goto fail;
    for (; v < NMIGRATIONS; v++) {
        snprintf(sql, sizeof sql, "UPDATE custos_schema SET version=%d", v + 1);
        if ((rc = exec_plain(p, MIGRATIONS[v], "migrate")) != CU_OK || (rc = exec_plain(p, sql, "migrate")) != CU_OK)
            goto fail;
    }
    return exec_plain(p, "COMMIT", "migrate");
fail:
    PQclear(exec_sql(p, "ROLLBACK", "migrate"));
    return rc;
}

static cu_rc open_pg(const char *conninfo, const char *password_file, pg **_p)
{
    pg *p = calloc(1, sizeof *p);
    cu_rc rc;
    *_p = NULL;
    if (p == NULL)
        return cu_err_set(CU_E_NOMEM, "out of memory");
    if ((rc = set_params(p, conninfo, password_file)) != CU_OK || (rc = connect_now(p)) != CU_OK ||
        (rc = migrate(p)) != CU_OK || (rc = prepare_all(p)) != CU_OK) {
        pg_close(p);
        return rc;
    }
    p->ready = true;
    *_p = p;
    return CU_OK;
}

cu_rc cu_store_open_postgres(const char *conninfo, const char *password_file, cu_keyring *kr, cu_store **_out)
{
    cu_prov__return_val_if_fail(conninfo != NULL && kr != NULL && _out != NULL, CU_E_INVALID_ARG);
    pg *p = NULL;
    *_out = NULL;
    cu_rc rc = open_pg(conninfo, password_file, &p);
    if (rc != CU_OK)
        return rc;
    return cu_store_open_backend(&postgres_backend, p, kr, _out); /* takes p */
}

cu_rc cu_prov__store_open_postgres_audit(const char *conninfo, const char *password_file, cu_store **_out)
{
    pg *p = NULL;
    *_out = NULL;
    cu_rc rc = open_pg(conninfo, password_file, &p);
    if (rc != CU_OK)
        return rc;
    return cu_prov__store_open_unbound(&postgres_backend, p, _out);
}

bool cu_store_spec_is_postgres(const char *spec)
{
    return spec != NULL && (!strncmp(spec, "postgresql://", 13) || !strncmp(spec, "postgres://", 11) ||
                            !strncmp(spec, "postgresql:", 11));
}
