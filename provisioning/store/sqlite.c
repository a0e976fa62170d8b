/* The SQLite backend of the store: sealed documents plus index keys.
 * WAL journal, schema version in PRAGMA user_version, migrations in order. */
#include <custos/store.h>

#include "../core/prov_int.h"

#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>

typedef struct sq {
    sqlite3 *db;
    sqlite3_stmt *get, *put, *del, *delkeys, *addkey, *find, *count, *metaget, *metaput, *audit;
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
    if ((rc = step_done(q, q->put, "write")) != CU_OK)
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
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(q->db, "SELECT id FROM docs WHERE kind=?1 AND id>?2 ORDER BY id LIMIT ?3",
                           -1, &st, NULL) != SQLITE_OK)
        return sqerr(q, "list");
    sqlite3_bind_int(st, 1, kind);
    sqlite3_bind_text(st, 2, after ? after : "", -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, (sqlite3_int64)limit);
    cu_rc rc = collect(q, st, _ids, _n);
    sqlite3_finalize(st);
    return rc;
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

static void sq_close(void *b)
{
    sq *q = b;
    if (q == NULL)
        return;
    sqlite3_stmt *all[] = {q->get, q->put, q->del, q->delkeys, q->addkey, q->find, q->count,
                           q->metaget, q->metaput, q->audit};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        sqlite3_finalize(all[i]);
    sqlite3_close(q->db);
    free(q);
}

static const cu_store_backend sqlite_backend = {
    "sqlite", sq_begin, sq_commit, sq_rollback, sq_get, sq_put, sq_del, sq_list, sq_find,
    sq_count, sq_meta_get, sq_meta_put, sq_audit, sq_close,
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

cu_rc cu_store_open_sqlite(const char *path, cu_keyring *kr, cu_store **_out)
{
    cu_prov__return_val_if_fail(path != NULL && kr != NULL && _out != NULL, CU_E_INVALID_ARG);
    cu_rc rc = CU_OK;
    sq *q = calloc(1, sizeof *q);
    *_out = NULL;
    if (q == NULL)
        return cu_err_set(CU_E_NOMEM, "out of memory");
    if (sqlite3_open_v2(path, &q->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                        NULL) != SQLITE_OK) {
        rc = cu_err_set(CU_E_IO, "cannot open the store %s: %s", path,
                        q->db ? sqlite3_errmsg(q->db) : "out of memory");
        goto cleanup;
    }
    sqlite3_busy_timeout(q->db, 5000);
    if ((rc = exec(q, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;")) != CU_OK ||
        (rc = migrate(q)) != CU_OK)
        goto cleanup;
    struct {
        sqlite3_stmt **st;
        const char *sql;
    } prep[] = {
        {&q->get, "SELECT body, seal FROM docs WHERE kind=?1 AND id=?2"},
        {&q->put, "INSERT OR REPLACE INTO docs(kind, id, body, seal) VALUES(?1, ?2, ?3, ?4)"},
        {&q->del, "DELETE FROM docs WHERE kind=?1 AND id=?2"},
        {&q->delkeys, "DELETE FROM keys WHERE kind=?1 AND id=?2"},
        {&q->addkey, "INSERT OR IGNORE INTO keys(kind, key, id) VALUES(?1, ?2, ?3)"},
        {&q->find, "SELECT id FROM keys WHERE kind=?1 AND key=?2 AND id>?4 ORDER BY id LIMIT ?3"},
        {&q->count, "SELECT count(*) FROM docs WHERE kind=?1"},
        {&q->metaget, "SELECT value FROM meta WHERE name=?1"},
        {&q->metaput, "INSERT OR REPLACE INTO meta(name, value) VALUES(?1, ?2)"},
        {&q->audit, "INSERT INTO audit(event) VALUES(?1)"},
    };
    for (size_t i = 0; i < sizeof prep / sizeof prep[0]; i++)
        if (sqlite3_prepare_v3(q->db, prep[i].sql, -1, SQLITE_PREPARE_PERSISTENT, prep[i].st, NULL) != SQLITE_OK) {
            rc = sqerr(q, "prepare");
            goto cleanup;
        }
    rc = cu_store_open_backend(&sqlite_backend, q, kr, _out);
    q = NULL; /* taken, even on failure */
cleanup:
    sq_close(q);
    return rc;
}
