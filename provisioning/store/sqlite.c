/* The SQLite backend of the store: sealed documents plus index keys.
 * WAL journal, schema version in PRAGMA user_version, migrations in order. */
#include <custos/store.h>

#include "../core/prov_int.h"

#include <sqlite3.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The log's length, in pages, at which a commit checkpoints (or, deferred,
 * calls for a checkpoint): 16 MB, not SQLite's 1000 pages, so that the
 * audit record's page in every registration does not make them 1.5x as
 * frequent. */
#define SQ_CKPT_PAGES 4000
#define SQ_STR_(x) #x
#define SQ_STR(x) SQ_STR_(x)

typedef struct sq {
    sqlite3 *db;
    sqlite3_stmt *get, *put, *del, *delkeys, *addkey, *list, *find, *dockeys, *count, *metaget, *metaput, *audit;
    sqlite3_stmt *alast, *aappend, *aread, *hput, *hread;
    void (*due)(void *arg); /* sq_wal_defer */
    void *due_arg;
} sq;

/* Each entry moves the schema from version i to i+1. */
static const char *const MIGRATIONS[] = {
    "CREATE TABLE docs(kind INTEGER NOT NULL, id TEXT NOT NULL, body TEXT NOT NULL,"
    "  seal BLOB NOT NULL, PRIMARY KEY(kind, id)) WITHOUT ROWID;"
    /* Certificate fingerprints, subject names, SKIs, CA references. */
    "CREATE TABLE keys(kind INTEGER NOT NULL, key TEXT NOT NULL, id TEXT NOT NULL,"
    "  PRIMARY KEY(kind, key, id)) WITHOUT ROWID;"
    "CREATE INDEX keys_by_id ON keys(kind, id);"
    "CREATE TABLE meta(name TEXT PRIMARY KEY, value TEXT NOT NULL);"
    "CREATE TABLE audit(seq INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')), event TEXT NOT NULL);",
    /* 2: the hash-chained audit log (core/audit.c) and its signed heads.
     * Schema 1's unchained events stay in audit_v1, outside the chain. */
    "ALTER TABLE audit RENAME TO audit_v1;"
    "CREATE TABLE audit_log(seq INTEGER PRIMARY KEY, at TEXT NOT NULL, type TEXT NOT NULL,"
    "  actor TEXT NOT NULL, payload TEXT NOT NULL, prev BLOB NOT NULL, hash BLOB NOT NULL);"
    "CREATE TABLE audit_heads(seq INTEGER PRIMARY KEY, at TEXT NOT NULL, hash BLOB NOT NULL,"
    "  key_id TEXT NOT NULL, sig BLOB NOT NULL);",
    /* 3: documents in a rowid table with an index on (kind, id). WITHOUT
     * ROWID keeps whole rows (records, operations: 0.4-1 KB) in the
     * interior pages too, so the tree was deep and a registration's two
     * inserts rewrote 7 pages of it; now 2-3. */
    "CREATE TABLE docs_v3(kind INTEGER NOT NULL, id TEXT NOT NULL, body TEXT NOT NULL, seal BLOB NOT NULL);"
    "INSERT INTO docs_v3(kind, id, body, seal) SELECT kind, id, body, seal FROM docs ORDER BY kind, id;"
    "DROP TABLE docs;"
    "ALTER TABLE docs_v3 RENAME TO docs;"
    "CREATE UNIQUE INDEX docs_by_kind_id ON docs(kind, id);",
};

static cu_rc sqerr(sq *q, const char *what)
{
    return cu_err_set(CU_E_IO, "SQLite: %s: %s", what, sqlite3_errmsg(q->db));
}

static cu_rc exec(sq *q, const char *sql)
{
    char *msg = NULL;
    if (sqlite3_exec(q->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        cu_rc rc = cu_err_set(CU_E_IO, "SQLite: %s", msg ? msg : "error");
        sqlite3_free(msg);
        return rc;
    }
    return CU_OK;
}

static cu_rc sq_begin(void *b) { return exec(b, "BEGIN IMMEDIATE"); }
static cu_rc sq_commit(void *b) { return exec(b, "COMMIT"); }
static void sq_rollback(void *b) { (void)exec(b, "ROLLBACK"); }

static cu_rc sq_get(void *b, int kind, const char *id, char **_body, uint8_t seal[32])
{
    sq *q = b;
    cu_rc rc = CU_OK;
    sqlite3_bind_int(q->get, 1, kind);
    sqlite3_bind_text(q->get, 2, id, -1, SQLITE_STATIC);
    int s = sqlite3_step(q->get);
    if (s == SQLITE_DONE) {
        rc = cu_err_set(CU_E_OBJECT_NOT_FOUND, "'%s' not found", id);
    } else if (s != SQLITE_ROW) {
        rc = sqerr(q, "read");
    } else if (sqlite3_column_bytes(q->get, 1) != 32) {
        rc = cu_err_set(CU_E_VERIFY, "row '%s' has no valid seal", id);
    } else {
        memcpy(seal, sqlite3_column_blob(q->get, 1), 32);
        if ((*_body = strdup((const char *)sqlite3_column_text(q->get, 0))) == NULL)
            rc = cu_err_set(CU_E_NOMEM, "out of memory");
    }
    sqlite3_reset(q->get);
    sqlite3_clear_bindings(q->get);
    return rc;
}

static cu_rc step_done(sq *q, sqlite3_stmt *st, const char *what)
{
    int s = sqlite3_step(st);
    cu_rc rc = (s == SQLITE_DONE || s == SQLITE_ROW) ? CU_OK : sqerr(q, what);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return rc;
}

static cu_rc sq_put(void *b, int kind, const char *id, const char *body, const uint8_t seal[32],
                    const char *const *keys, size_t nkeys)
{
    sq *q = b;
    cu_rc rc;
    sqlite3_bind_int(q->put, 1, kind);
    sqlite3_bind_text(q->put, 2, id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q->put, 3, body, -1, SQLITE_STATIC);
    sqlite3_bind_blob(q->put, 4, seal, 32, SQLITE_STATIC);
    if ((rc = step_done(q, q->put, "write")) != CU_OK || keys == NULL)
        return rc;
    sqlite3_bind_int(q->delkeys, 1, kind);
    sqlite3_bind_text(q->delkeys, 2, id, -1, SQLITE_STATIC);
    if ((rc = step_done(q, q->delkeys, "write keys")) != CU_OK)
        return rc;
    for (size_t i = 0; i < nkeys; i++) {
        sqlite3_bind_int(q->addkey, 1, kind);
        sqlite3_bind_text(q->addkey, 2, keys[i], -1, SQLITE_STATIC);
        sqlite3_bind_text(q->addkey, 3, id, -1, SQLITE_STATIC);
        if ((rc = step_done(q, q->addkey, "write keys")) != CU_OK)
            return rc;
    }
    return CU_OK;
}

static cu_rc sq_del(void *b, int kind, const char *id)
{
    sq *q = b;
    cu_rc rc;
    sqlite3_bind_int(q->del, 1, kind);
    sqlite3_bind_text(q->del, 2, id, -1, SQLITE_STATIC);
    if ((rc = step_done(q, q->del, "delete")) != CU_OK)
        return rc;
    if (sqlite3_changes(q->db) == 0)
        return cu_err_set(CU_E_OBJECT_NOT_FOUND, "'%s' not found", id);
    sqlite3_bind_int(q->delkeys, 1, kind);
    sqlite3_bind_text(q->delkeys, 2, id, -1, SQLITE_STATIC);
    return step_done(q, q->delkeys, "delete keys");
}

static cu_rc collect(sq *q, sqlite3_stmt *st, char ***_ids, size_t *_n)
{
    size_t n = 0, cap = 16;
    char **ids = malloc(cap * sizeof *ids);
    cu_rc rc = CU_OK;
    int s;
    if (ids == NULL) {
        rc = cu_err_set(CU_E_NOMEM, "out of memory");
        goto cleanup;
    }
    while ((s = sqlite3_step(st)) == SQLITE_ROW) {
        if (n == cap) {
            char **t = realloc(ids, (cap *= 2) * sizeof *ids);
            if (t == NULL) {
                rc = cu_err_set(CU_E_NOMEM, "out of memory");
                goto cleanup;
            }
            ids = t;
        }
        if ((ids[n] = strdup((const char *)sqlite3_column_text(st, 0))) == NULL) {
            rc = cu_err_set(CU_E_NOMEM, "out of memory");
            goto cleanup;
        }
        n++;
    }
    if (s != SQLITE_DONE)
        rc = sqerr(q, "list");
cleanup:
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    if (rc != CU_OK) {
        cu_store_ids_free(ids, n);
        ids = NULL;
        n = 0;
    }
    *_ids = ids;
    *_n = n;
    return rc;
}

static cu_rc sq_list(void *b, int kind, const char *after, size_t limit, char ***_ids, size_t *_n)
{
    sq *q = b;
    sqlite3_bind_int(q->list, 1, kind);
    sqlite3_bind_text(q->list, 2, after ? after : "", -1, SQLITE_STATIC);
    sqlite3_bind_int64(q->list, 3, (sqlite3_int64)limit);
    return collect(q, q->list, _ids, _n);
}

static cu_rc sq_find(void *b, int kind, const char *key, const char *after, size_t limit, char ***_ids,
                     size_t *_n)
{
    sq *q = b;
    sqlite3_bind_int(q->find, 1, kind);
    sqlite3_bind_text(q->find, 2, key, -1, SQLITE_STATIC);
    sqlite3_bind_int64(q->find, 3, (sqlite3_int64)limit);
    sqlite3_bind_text(q->find, 4, after ? after : "", -1, SQLITE_STATIC);
    return collect(q, q->find, _ids, _n);
}

static cu_rc sq_doc_keys(void *b, int kind, const char *id, char ***_keys, size_t *_n)
{
    sq *q = b;
    sqlite3_bind_int(q->dockeys, 1, kind);
    sqlite3_bind_text(q->dockeys, 2, id, -1, SQLITE_STATIC);
    return collect(q, q->dockeys, _keys, _n);
}

static cu_rc sq_count(void *b, int kind, uint64_t *_n)
{
    sq *q = b;
    cu_rc rc = CU_OK;
    sqlite3_bind_int(q->count, 1, kind);
    if (sqlite3_step(q->count) == SQLITE_ROW)
        *_n = (uint64_t)sqlite3_column_int64(q->count, 0);
    else
        rc = sqerr(q, "count");
    sqlite3_reset(q->count);
    return rc;
}

static cu_rc sq_meta_get(void *b, const char *name, char **_value)
{
    sq *q = b;
    cu_rc rc = CU_OK;
    sqlite3_bind_text(q->metaget, 1, name, -1, SQLITE_STATIC);
    int s = sqlite3_step(q->metaget);
    if (s == SQLITE_ROW) {
        if ((*_value = strdup((const char *)sqlite3_column_text(q->metaget, 0))) == NULL)
            rc = cu_err_set(CU_E_NOMEM, "out of memory");
    } else if (s == SQLITE_DONE) {
        rc = cu_err_set(CU_E_OBJECT_NOT_FOUND, "setting '%s' not found", name);
    } else {
        rc = sqerr(q, "read setting");
    }
    sqlite3_reset(q->metaget);
    sqlite3_clear_bindings(q->metaget);
    return rc;
}

static cu_rc sq_meta_put(void *b, const char *name, const char *value)
{
    sq *q = b;
    sqlite3_bind_text(q->metaput, 1, name, -1, SQLITE_STATIC);
    sqlite3_bind_text(q->metaput, 2, value, -1, SQLITE_STATIC);
    return step_done(q, q->metaput, "write setting");
}

static cu_rc sq_audit(void *b, const char *event)
{
    sq *q = b;
    sqlite3_bind_text(q->audit, 1, event, -1, SQLITE_STATIC);
    return step_done(q, q->audit, "write audit");
}

/* ---- the audit log: rows only ---- */

static void blob32(sqlite3_stmt *st, int col, uint8_t out[32])
{
    int n = sqlite3_column_bytes(st, col);
    const void *p = sqlite3_column_blob(st, col);
    memset(out, 0, 32);
    if (p != NULL && n > 0)
        memcpy(out, p, n < 32 ? (size_t)n : 32);
}

static void text_into(sqlite3_stmt *st, int col, char *out, size_t size)
{
    const char *t = (const char *)sqlite3_column_text(st, col);
    snprintf(out, size, "%s", t ? t : "");
}

static cu_rc sq_audit_last(void *b, uint64_t *_seq, uint8_t hash[32])
{
    sq *q = b;
    cu_rc rc = CU_OK;
    int s = sqlite3_step(q->alast);
    *_seq = 0;
    memset(hash, 0, 32);
    if (s == SQLITE_ROW) {
        *_seq = (uint64_t)sqlite3_column_int64(q->alast, 0);
        blob32(q->alast, 1, hash);
    } else if (s != SQLITE_DONE) {
        rc = sqerr(q, "read the audit head");
    }
    sqlite3_reset(q->alast);
    return rc;
}

static cu_rc sq_audit_append(void *b, const cu_audit_record *r)
{
    sq *q = b;
    if (r->seq > INT64_MAX)
        return cu_err_set(CU_E_INVALID_ARG, "audit seq out of range");
    sqlite3_bind_int64(q->aappend, 1, (sqlite3_int64)r->seq);
    sqlite3_bind_text(q->aappend, 2, r->at, -1, SQLITE_STATIC);
    sqlite3_bind_text(q->aappend, 3, r->type, -1, SQLITE_STATIC);
    sqlite3_bind_text(q->aappend, 4, r->actor, -1, SQLITE_STATIC);
    sqlite3_bind_text(q->aappend, 5, r->payload, -1, SQLITE_STATIC);
    sqlite3_bind_blob(q->aappend, 6, r->prev, 32, SQLITE_STATIC);
    sqlite3_bind_blob(q->aappend, 7, r->hash, 32, SQLITE_STATIC);
    return step_done(q, q->aappend, "write audit");
}

static cu_rc sq_audit_read(void *b, uint64_t from, size_t limit, cu_audit_record **_r, size_t *_n)
{
    sq *q = b;
    cu_audit_record *r = NULL;
    size_t n = 0, cap = limit < 64 ? limit : 64;
    cu_rc rc = CU_OK;
    int s;
    *_r = NULL;
    *_n = 0;
    if ((r = calloc(cap, sizeof *r)) == NULL)
        return cu_err_set(CU_E_NOMEM, "out of memory");
    sqlite3_bind_int64(q->aread, 1, from > INT64_MAX ? INT64_MAX : (sqlite3_int64)from);
    sqlite3_bind_int64(q->aread, 2, limit > INT64_MAX ? INT64_MAX : (sqlite3_int64)limit);
    while ((s = sqlite3_step(q->aread)) == SQLITE_ROW) {
        if (n == cap) {
            cu_audit_record *t = realloc(r, (cap *= 2) * sizeof *r);
            if (t == NULL) {
                rc = cu_err_set(CU_E_NOMEM, "out of memory");
                goto cleanup;
            }
            r = t;
        }
        cu_audit_record *x = &r[n];
        memset(x, 0, sizeof *x);
        x->seq = (uint64_t)sqlite3_column_int64(q->aread, 0);
        text_into(q->aread, 1, x->at, sizeof x->at);
        text_into(q->aread, 2, x->type, sizeof x->type);
        text_into(q->aread, 3, x->actor, sizeof x->actor);
        const char *p = (const char *)sqlite3_column_text(q->aread, 4);
        n++;
        if ((x->payload = strdup(p ? p : "")) == NULL) {
            rc = cu_err_set(CU_E_NOMEM, "out of memory");
            goto cleanup;
        }
        blob32(q->aread, 5, x->prev);
        blob32(q->aread, 6, x->hash);
    }
    if (s != SQLITE_DONE)
        rc = sqerr(q, "read the audit log");
cleanup:
    sqlite3_reset(q->aread);
    if (rc != CU_OK) {
        cu_audit_records_free(r, n);
        return rc;
    }
    *_r = r;
    *_n = n;
    return CU_OK;
}

static cu_rc sq_audit_head_put(void *b, const cu_audit_head *h)
{
    sq *q = b;
    sqlite3_bind_int64(q->hput, 1, (sqlite3_int64)h->seq);
    sqlite3_bind_text(q->hput, 2, h->at, -1, SQLITE_STATIC);
    sqlite3_bind_blob(q->hput, 3, h->hash, 32, SQLITE_STATIC);
    sqlite3_bind_text(q->hput, 4, h->key_id, -1, SQLITE_STATIC);
    sqlite3_bind_blob(q->hput, 5, h->sig, (int)h->sig_len, SQLITE_STATIC);
    return step_done(q, q->hput, "write the audit head");
}

static cu_rc sq_audit_heads_read(void *b, uint64_t from, size_t limit, cu_audit_head **_h, size_t *_n)
{
    sq *q = b;
    cu_audit_head *h = NULL;
    size_t n = 0, cap = limit < 16 ? limit : 16;
    cu_rc rc = CU_OK;
    int s;
    *_h = NULL;
    *_n = 0;
    if ((h = calloc(cap, sizeof *h)) == NULL)
        return cu_err_set(CU_E_NOMEM, "out of memory");
    sqlite3_bind_int64(q->hread, 1, from > INT64_MAX ? INT64_MAX : (sqlite3_int64)from);
    sqlite3_bind_int64(q->hread, 2, limit > INT64_MAX ? INT64_MAX : (sqlite3_int64)limit);
    while ((s = sqlite3_step(q->hread)) == SQLITE_ROW) {
        if (n == cap) {
            cu_audit_head *t = realloc(h, (cap *= 2) * sizeof *h);
            if (t == NULL) {
                rc = cu_err_set(CU_E_NOMEM, "out of memory");
                goto cleanup;
            }
            h = t;
        }
        cu_audit_head *x = &h[n++];
        memset(x, 0, sizeof *x);
        x->seq = (uint64_t)sqlite3_column_int64(q->hread, 0);
        text_into(q->hread, 1, x->at, sizeof x->at);
        blob32(q->hread, 2, x->hash);
        text_into(q->hread, 3, x->key_id, sizeof x->key_id);
        int sl = sqlite3_column_bytes(q->hread, 4);
        const void *sp = sqlite3_column_blob(q->hread, 4);
        if (sl > 0 && sp != NULL) {
            if ((x->sig = malloc((size_t)sl)) == NULL) {
                rc = cu_err_set(CU_E_NOMEM, "out of memory");
                goto cleanup;
            }
            memcpy(x->sig, sp, (size_t)sl);
            x->sig_len = (size_t)sl;
        }
    }
    if (s != SQLITE_DONE)
        rc = sqerr(q, "read the audit heads");
cleanup:
    sqlite3_reset(q->hread);
    if (rc != CU_OK) {
        cu_audit_heads_free(h, n);
        return rc;
    }
    *_h = h;
    *_n = n;
    return CU_OK;
}

static void sq_close(void *b)
{
    sq *q = b;
    if (q == NULL)
        return;
    sqlite3_stmt *all[] = {q->get, q->put, q->del, q->delkeys, q->addkey, q->list, q->find, q->dockeys, q->count,
                           q->metaget, q->metaput, q->audit, q->alast, q->aappend, q->aread,
                           q->hput, q->hread};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        sqlite3_finalize(all[i]);
    sqlite3_close(q->db);
    free(q);
}

static int wal_due(void *arg, sqlite3 *db, const char *name, int pages)
{
    (void)db;
    (void)name;
    sq *q = arg;
    if (pages >= SQ_CKPT_PAGES)
        q->due(q->due_arg);
    return SQLITE_OK;
}

static cu_rc sq_wal_defer(void *b, void (*due)(void *arg), void *arg)
{
    sq *q = b;
    q->due = due;
    q->due_arg = arg;
    /* Replaces the auto-checkpoint, itself such a hook. */
    sqlite3_wal_hook(q->db, wal_due, q);
    return CU_OK;
}

static cu_rc sq_checkpoint(void *b, unsigned long *_left)
{
    sq *q = b;
    int log = 0, done = 0;
    /* PASSIVE: copies the frames no reader still needs; never waits.
     * BUSY: another connection is checkpointing. */
    int s = sqlite3_wal_checkpoint_v2(q->db, NULL, SQLITE_CHECKPOINT_PASSIVE, &log, &done);
    if (s != SQLITE_OK && s != SQLITE_BUSY)
        return sqerr(q, "checkpoint");
    *_left = s == SQLITE_OK && log > done ? (unsigned long)(log - done) : 0;
    return CU_OK;
}

static const cu_store_backend sqlite_backend = {
    "sqlite", sq_begin, sq_commit, sq_rollback, sq_get, sq_put, sq_del, sq_list, sq_find,
    sq_count, sq_meta_get, sq_meta_put, sq_audit, sq_close,
    sq_audit_last, sq_audit_append, sq_audit_read, sq_audit_head_put, sq_audit_heads_read,
    NULL, /* rate_hit: one node keeps its windows in memory */
    NULL, /* rate_undo */
    NULL, /* ping: in-process, always there */
    sq_wal_defer, sq_checkpoint, sq_doc_keys,
};

static cu_rc migrate(sq *q)
{
    sqlite3_stmt *st = NULL;
    int version = 0;
    cu_rc rc;
    if (sqlite3_prepare_v2(q->db, "PRAGMA user_version", -1, &st, NULL) != SQLITE_OK)
        return sqerr(q, "schema version");
    if (sqlite3_step(st) == SQLITE_ROW)
        version = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    int target = (int)(sizeof MIGRATIONS / sizeof MIGRATIONS[0]);
    if (version > target)
        return cu_err_set(CU_E_STATE, "the store has schema version %d; this Custos knows up to %d",
                          version, target);
    for (int v = version; v < target; v++) {
        char sql[64];
        if ((rc = exec(q, "BEGIN IMMEDIATE")) != CU_OK)
            return rc;
        snprintf(sql, sizeof sql, "PRAGMA user_version=%d", v + 1);
        if ((rc = exec(q, MIGRATIONS[v])) != CU_OK || (rc = exec(q, sql)) != CU_OK) {
            (void)exec(q, "ROLLBACK");
            return rc;
        }
        if ((rc = exec(q, "COMMIT")) != CU_OK)
            return rc;
    }
    return CU_OK;
}

/* Opens, migrates (unless read-only) and prepares; *_q is the backend. */
static cu_rc open_sq(const char *path, bool readonly, sq **_q)
{
    cu_rc rc = CU_OK;
    sq *q = calloc(1, sizeof *q);
    *_q = NULL;
    if (q == NULL)
        return cu_err_set(CU_E_NOMEM, "out of memory");
    int flags = (readonly ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE) | SQLITE_OPEN_NOMUTEX;
    if (sqlite3_open_v2(path, &q->db, flags, NULL) != SQLITE_OK) {
        rc = cu_err_set(CU_E_IO, "cannot open the store %s: %s", path,
                        q->db ? sqlite3_errmsg(q->db) : "out of memory");
        goto cleanup;
    }
    sqlite3_busy_timeout(q->db, 5000);
    if (readonly) {
        /* Nothing may change: the schema must already be the current one. */
        sqlite3_stmt *st = NULL;
        int version = 0;
        if (sqlite3_prepare_v2(q->db, "PRAGMA user_version", -1, &st, NULL) != SQLITE_OK) {
            rc = sqerr(q, "schema version");
            goto cleanup;
        }
        if (sqlite3_step(st) == SQLITE_ROW)
            version = sqlite3_column_int(st, 0);
        sqlite3_finalize(st);
        if (version != (int)(sizeof MIGRATIONS / sizeof MIGRATIONS[0])) {
            rc = cu_err_set(CU_E_STATE, "the store %s has schema version %d, not %d: open it once with this "
                                        "Custos to migrate it",
                            path, version, (int)(sizeof MIGRATIONS / sizeof MIGRATIONS[0]));
            goto cleanup;
        }
    } else if ((rc = exec(q, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;"
                             /* A checkpoint (and its fdatasync) runs in the
                              * committing writer unless the connection
                              * defers (sq_wal_defer). The file is cut back
                              * to 64 MB after a checkpoint that had to let
                              * it grow past that. */
                             "PRAGMA wal_autocheckpoint=" SQ_STR(SQ_CKPT_PAGES) ";"
                             " PRAGMA journal_size_limit=67108864;")) !=
                   CU_OK ||
               (rc = migrate(q)) != CU_OK) {
        goto cleanup;
    }
    struct {
        sqlite3_stmt **st;
        const char *sql;
    } prep[] = {
        {&q->get, "SELECT body, seal FROM docs WHERE kind=?1 AND id=?2"},
        /* In place: a replace would delete the row and add it anew at
         * the end of the table. */
        {&q->put, "INSERT INTO docs(kind, id, body, seal) VALUES(?1, ?2, ?3, ?4)"
                  " ON CONFLICT(kind, id) DO UPDATE SET body=excluded.body, seal=excluded.seal"},
        {&q->del, "DELETE FROM docs WHERE kind=?1 AND id=?2"},
        {&q->delkeys, "DELETE FROM keys WHERE kind=?1 AND id=?2"},
        {&q->addkey, "INSERT OR IGNORE INTO keys(kind, key, id) VALUES(?1, ?2, ?3)"},
        {&q->list, "SELECT id FROM docs WHERE kind=?1 AND id>?2 ORDER BY id LIMIT ?3"},
        {&q->find, "SELECT id FROM keys WHERE kind=?1 AND key=?2 AND id>?4 ORDER BY id LIMIT ?3"},
        {&q->dockeys, "SELECT key FROM keys WHERE kind=?1 AND id=?2 ORDER BY key"},
        {&q->count, "SELECT count(*) FROM docs WHERE kind=?1"},
        {&q->metaget, "SELECT value FROM meta WHERE name=?1"},
        {&q->metaput, "INSERT OR REPLACE INTO meta(name, value) VALUES(?1, ?2)"},
        {&q->audit, "INSERT INTO audit_v1(event) VALUES(?1)"},
        {&q->alast, "SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1"},
        {&q->aappend, "INSERT INTO audit_log(seq, at, type, actor, payload, prev, hash)"
                      " VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7)"},
        {&q->aread, "SELECT seq, at, type, actor, payload, prev, hash FROM audit_log"
                    " WHERE seq >= ?1 ORDER BY seq LIMIT ?2"},
        /* Never replaces a head: one that names another hash at this seq is
         * the evidence of a rewritten tail. */
        {&q->hput, "INSERT OR IGNORE INTO audit_heads(seq, at, hash, key_id, sig) VALUES(?1, ?2, ?3, ?4, ?5)"},
        {&q->hread, "SELECT seq, at, hash, key_id, sig FROM audit_heads WHERE seq >= ?1 ORDER BY seq LIMIT ?2"},
    };
    for (size_t i = 0; i < sizeof prep / sizeof prep[0]; i++)
        if (sqlite3_prepare_v3(q->db, prep[i].sql, -1, SQLITE_PREPARE_PERSISTENT, prep[i].st, NULL) != SQLITE_OK) {
            rc = sqerr(q, "prepare");
            goto cleanup;
        }
    *_q = q;
    q = NULL;
cleanup:
    sq_close(q);
    return rc;
}

cu_rc cu_store_open_sqlite(const char *path, cu_keyring *kr, cu_store **_out)
{
    cu_prov__return_val_if_fail(path != NULL && kr != NULL && _out != NULL, CU_E_INVALID_ARG);
    sq *q = NULL;
    *_out = NULL;
    cu_rc rc = open_sq(path, false, &q);
    if (rc != CU_OK)
        return rc;
    return cu_store_open_backend(&sqlite_backend, q, kr, _out); /* takes q, even on failure */
}

cu_rc cu_store_open_audit_only(const char *path, bool writable, cu_store **_out)
{
    cu_prov__return_val_if_fail(path != NULL && _out != NULL, CU_E_INVALID_ARG);
    sq *q = NULL;
    *_out = NULL;
    cu_rc rc = open_sq(path, !writable, &q);
    if (rc != CU_OK)
        return rc;
    return cu_prov__store_open_unbound(&sqlite_backend, q, _out);
}
