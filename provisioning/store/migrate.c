/* Copying an SQLite store into another backend (custos store migrate):
 * sealed documents with their index keys and seals as they are (the target
 * must run under the same keyring), settings, the audit log's rows and
 * signed heads; then a verification pass (counts, and SHA-256 checksums of
 * each kind's documents and of their index keys on both sides, and the
 * audit chain on the target).
 *
 * Re-runnable: documents and settings are upserted, audit records already
 * in the target are checked, not copied again. A target whose audit log
 * is not a prefix of the source's has been written to since (nodes serve
 * it): that is refused, since a copy would mix two histories. */
#include <custos/audit.h>
#include <custos/store.h>

#include "../core/prov_int.h"

#include <openssl/evp.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BATCH 1000
#define NKINDS 7

static cu_rc sq_fail(sqlite3 *db, const char *what)
{
    return cu_err_set(CU_E_IO, "SQLite (source): %s: %s", what, sqlite3_errmsg(db));
}

static cu_rc sq_count(sqlite3 *db, const char *sql, uint64_t *_n)
{
    sqlite3_stmt *st = NULL;
    cu_rc rc = CU_OK;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
        return sq_fail(db, "count");
    if (sqlite3_step(st) == SQLITE_ROW)
        *_n = (uint64_t)sqlite3_column_int64(st, 0);
    else
        rc = sq_fail(db, "count");
    sqlite3_finalize(st);
    return rc;
}

/* What the checksums name when they differ. */
static const char *const KIND_NAME[NKINDS + 1] = {
    "", "enrollment", "group", "CA certificate", "hub", "registration", "TPM challenge", "operation",
};

/* The checksums of one side: every document (the report's), and per kind
 * the documents and their index keys, so that a difference names its kind. */
typedef struct sums {
    EVP_MD_CTX *all, *docs[NKINDS + 1], *keys[NKINDS + 1];
    uint64_t nkeys[NKINDS + 1];
    char docs_hex[NKINDS + 1][65], keys_hex[NKINDS + 1][65];
} sums;

static void sums_free(sums *m)
{
    EVP_MD_CTX_free(m->all);
    for (int k = 0; k <= NKINDS; k++) {
        EVP_MD_CTX_free(m->docs[k]);
        EVP_MD_CTX_free(m->keys[k]);
    }
    memset(m, 0, sizeof *m);
}

static cu_rc sums_init(sums *m)
{
    bool ok = true;
    memset(m, 0, sizeof *m);
    ok = (m->all = EVP_MD_CTX_new()) != NULL && EVP_DigestInit_ex(m->all, EVP_sha256(), NULL);
    for (int k = 1; k <= NKINDS && ok; k++)
        ok = (m->docs[k] = EVP_MD_CTX_new()) != NULL && EVP_DigestInit_ex(m->docs[k], EVP_sha256(), NULL) &&
             (m->keys[k] = EVP_MD_CTX_new()) != NULL && EVP_DigestInit_ex(m->keys[k], EVP_sha256(), NULL);
    if (!ok) {
        sums_free(m);
        return cu_err_set(CU_E_CRYPTO, "SHA-256 unavailable");
    }
    return CU_OK;
}

static void sum_final(EVP_MD_CTX *md, char hex[65])
{
    uint8_t d[32];
    EVP_DigestFinal_ex(md, d, NULL);
    cu_prov__hex(d, 32, hex);
}

/* One document into the checksums: kind, id, body, seal; then its id with
 * its keys (counted, so that no two lists sum alike). */
static void sum_doc(sums *m, int kind, const char *id, const char *body, const uint8_t seal[32],
                    char *const *keys, size_t nkeys)
{
    uint8_t k = (uint8_t)kind;
    uint64_t n = nkeys;
    EVP_MD_CTX *md[] = {m->all, m->docs[kind]};
    for (size_t i = 0; i < 2; i++) {
        EVP_DigestUpdate(md[i], &k, 1);
        EVP_DigestUpdate(md[i], id, strlen(id) + 1);
        EVP_DigestUpdate(md[i], body, strlen(body) + 1);
        EVP_DigestUpdate(md[i], seal, 32);
    }
    EVP_DigestUpdate(m->keys[kind], id, strlen(id) + 1);
    EVP_DigestUpdate(m->keys[kind], &n, sizeof n);
    for (size_t i = 0; i < nkeys; i++)
        EVP_DigestUpdate(m->keys[kind], keys[i], strlen(keys[i]) + 1);
    m->nkeys[kind] += nkeys;
}

static void sums_final(sums *m, char all_hex[65])
{
    sum_final(m->all, all_hex);
    for (int k = 1; k <= NKINDS; k++) {
        sum_final(m->docs[k], m->docs_hex[k]);
        sum_final(m->keys[k], m->keys_hex[k]);
    }
}

static void progress(cu_store_progress_fn fn, void *arg, const char *phase, uint64_t done, uint64_t total)
{
    if (fn != NULL)
        fn(arg, phase, done, total);
}

/* A document's keys from the source, every one of them (*_keys grows). */
static cu_rc source_keys(sqlite3 *db, sqlite3_stmt *st, int kind, const char *id, char ***_keys, size_t *_cap,
                         size_t *_n)
{
    cu_rc rc = CU_OK;
    int s;
    sqlite3_bind_int(st, 1, kind);
    sqlite3_bind_text(st, 2, id, -1, SQLITE_STATIC);
    while ((s = sqlite3_step(st)) == SQLITE_ROW) {
        if (*_n == *_cap) {
            size_t cap = *_cap ? 2 * *_cap : 16;
            char **k = realloc(*_keys, cap * sizeof *k);
            if (k == NULL) {
                rc = cu_err_set(CU_E_NOMEM, "out of memory");
                break;
            }
            *_keys = k;
            *_cap = cap;
        }
        if (((*_keys)[*_n] = strdup((const char *)sqlite3_column_text(st, 0))) == NULL) {
            rc = cu_err_set(CU_E_NOMEM, "out of memory");
            break;
        }
        (*_n)++;
    }
    if (rc == CU_OK && s != SQLITE_DONE)
        rc = sq_fail(db, "read index keys");
    sqlite3_reset(st);
    return rc;
}

/* Documents of one kind, with their keys, in batches of one transaction. */
static cu_rc copy_docs(sqlite3 *db, const cu_store_backend *ops, void *tb, sums *m, cu_store_migrate_report *rep,
                       uint64_t total, cu_store_progress_fn fn, void *arg)
{
    sqlite3_stmt *docs = NULL, *keys = NULL;
    char **k = NULL;
    size_t nk = 0, cap = 0;
    bool in_tx = false;
    cu_rc rc = CU_OK;
    int s;
    if (sqlite3_prepare_v2(db, "SELECT kind, id, body, seal FROM docs ORDER BY kind, id", -1, &docs, NULL) !=
            SQLITE_OK ||
        sqlite3_prepare_v2(db, "SELECT key FROM keys WHERE kind=?1 AND id=?2 ORDER BY key", -1, &keys, NULL) !=
            SQLITE_OK) {
        rc = sq_fail(db, "read documents");
        goto cleanup;
    }
    while ((s = sqlite3_step(docs)) == SQLITE_ROW) {
        int kind = sqlite3_column_int(docs, 0);
        const char *id = (const char *)sqlite3_column_text(docs, 1);
        const char *body = (const char *)sqlite3_column_text(docs, 2);
        if (kind < 1 || kind > NKINDS) {
            rc = cu_err_set(CU_E_VERIFY, "source document '%s' is of an unknown kind (%d)", id, kind);
            goto cleanup;
        }
        if (sqlite3_column_bytes(docs, 3) != 32) {
            rc = cu_err_set(CU_E_VERIFY, "source document '%s' has no valid seal", id);
            goto cleanup;
        }
        const uint8_t *seal = sqlite3_column_blob(docs, 3);
        if ((rc = source_keys(db, keys, kind, id, &k, &cap, &nk)) != CU_OK)
            goto cleanup;
        if (!in_tx) {
            if ((rc = ops->begin(tb)) != CU_OK)
                goto cleanup;
            in_tx = true;
        }
        if ((rc = ops->put(tb, kind, id, body, seal, (const char *const *)k, nk)) != CU_OK)
            goto cleanup;
        sum_doc(m, kind, id, body, seal, k, nk);
        rep->keys += nk;
        while (nk > 0)
            free(k[--nk]);
        if (++rep->docs % BATCH == 0) {
            in_tx = false;
            if ((rc = ops->commit(tb)) != CU_OK)
                goto cleanup;
            progress(fn, arg, "documents", rep->docs, total);
        }
    }
    if (s != SQLITE_DONE)
        rc = sq_fail(db, "read documents");
    else if (in_tx) {
        in_tx = false;
        rc = ops->commit(tb);
    }
    progress(fn, arg, "documents", rep->docs, total);
cleanup:
    while (nk > 0)
        free(k[--nk]);
    free(k);
    if (in_tx)
        ops->rollback(tb);
    sqlite3_finalize(docs);
    sqlite3_finalize(keys);
    return rc;
}

static cu_rc copy_meta(sqlite3 *db, const cu_store_backend *ops, void *tb, cu_store_migrate_report *rep)
{
    sqlite3_stmt *st = NULL;
    cu_rc rc;
    int s;
    if (sqlite3_prepare_v2(db, "SELECT name, value FROM meta ORDER BY name", -1, &st, NULL) != SQLITE_OK)
        return sq_fail(db, "read settings");
    if ((rc = ops->begin(tb)) != CU_OK) {
        sqlite3_finalize(st);
        return rc;
    }
    while ((s = sqlite3_step(st)) == SQLITE_ROW) {
        if ((rc = ops->meta_put(tb, (const char *)sqlite3_column_text(st, 0),
                                (const char *)sqlite3_column_text(st, 1))) != CU_OK)
            break;
        rep->settings++;
    }
    if (rc == CU_OK && s != SQLITE_DONE)
        rc = sq_fail(db, "read settings");
    rc = rc == CU_OK ? ops->commit(tb) : (ops->rollback(tb), rc);
    sqlite3_finalize(st);
    return rc;
}

/* The audit rows past what the target has; what it has must be the
 * source's own beginning. */
static cu_rc copy_audit(cu_store *src, const cu_store_backend *ops, void *tb, cu_store_migrate_report *rep,
                        uint64_t total, cu_store_progress_fn fn, void *arg)
{
    uint64_t tlast = 0, from;
    uint8_t thash[32];
    cu_audit_record *r = NULL;
    size_t n = 0;
    cu_rc rc;
    if ((rc = ops->audit_last(tb, &tlast, thash)) != CU_OK)
        return rc;
    if (tlast > 0) {
        if ((rc = cu_audit_read(src, tlast, 1, &r, &n)) != CU_OK)
            return rc;
        bool same = n == 1 && r[0].seq == tlast && memcmp(r[0].hash, thash, 32) == 0;
        cu_audit_records_free(r, n);
        r = NULL;
        n = 0;
        if (!same)
            return cu_err_set(CU_E_STATE, "the target's audit log (%llu records) is not the beginning of the "
                                          "source's: it has been written to since (is a node serving it?); "
                                          "refusing to mix two histories",
                              (unsigned long long)tlast);
    }
    rep->audit_skipped = tlast;
    for (from = tlast + 1;; from = r[n - 1].seq + 1) {
        cu_audit_records_free(r, n);
        r = NULL;
        if ((rc = cu_audit_read(src, from, BATCH, &r, &n)) != CU_OK)
            return rc;
        if (n == 0)
            break;
        if ((rc = ops->begin(tb)) != CU_OK)
            break;
        for (size_t i = 0; i < n && rc == CU_OK; i++)
            rc = ops->audit_append(tb, &r[i]);
        rc = rc == CU_OK ? ops->commit(tb) : (ops->rollback(tb), rc);
        if (rc != CU_OK)
            break;
        rep->audit_records += n;
        progress(fn, arg, "audit log", tlast + rep->audit_records, total);
    }
    cu_audit_records_free(r, n);
    return rc;
}

static cu_rc copy_heads(cu_store *src, const cu_store_backend *ops, void *tb, cu_store_migrate_report *rep)
{
    cu_audit_head *h = NULL;
    size_t n = 0;
    cu_rc rc = CU_OK;
    for (uint64_t from = 0;; from = h[n - 1].seq + 1) {
        cu_audit_heads_free(h, n);
        h = NULL;
        if ((rc = cu_audit_heads_read(src, from, BATCH, &h, &n)) != CU_OK || n == 0)
            break;
        if ((rc = ops->begin(tb)) != CU_OK)
            break;
        for (size_t i = 0; i < n && rc == CU_OK; i++)
            rc = ops->audit_head_put(tb, &h[i]);
        rc = rc == CU_OK ? ops->commit(tb) : (ops->rollback(tb), rc);
        if (rc != CU_OK)
            break;
        rep->audit_heads += n;
    }
    cu_audit_heads_free(h, n);
    return rc;
}

/* ---- verification ---- */

/* The target's documents and keys read back and summed as the copy was. */
static cu_rc verify_docs(const cu_store_backend *ops, void *tb, const uint64_t src_count[NKINDS + 1],
                         const sums *src, const char *src_sum, cu_store_migrate_report *rep, cu_store_progress_fn fn,
                         void *arg)
{
    sums m;
    cu_rc rc;
    uint64_t done = 0;
    if ((rc = sums_init(&m)) != CU_OK)
        return rc;
    for (int kind = 1; kind <= NKINDS && rc == CU_OK; kind++) {
        uint64_t cnt = 0;
        if ((rc = ops->count(tb, kind, &cnt)) != CU_OK)
            break;
        if (cnt != src_count[kind]) {
            rc = cu_err_set(CU_E_VERIFY, "verification: the target has %llu %s documents, the source %llu",
                            (unsigned long long)cnt, KIND_NAME[kind], (unsigned long long)src_count[kind]);
            break;
        }
        char *after = NULL;
        for (;;) {
            char **ids = NULL;
            size_t n = 0;
            if ((rc = ops->list(tb, kind, after, BATCH, &ids, &n)) != CU_OK)
                break;
            for (size_t i = 0; i < n && rc == CU_OK; i++) {
                char *body = NULL, **keys = NULL;
                size_t nkeys = 0;
                uint8_t seal[32];
                if ((rc = ops->get(tb, kind, ids[i], &body, seal)) == CU_OK &&
                    (rc = ops->doc_keys(tb, kind, ids[i], &keys, &nkeys)) == CU_OK)
                    sum_doc(&m, kind, ids[i], body, seal, keys, nkeys);
                cu_store_ids_free(keys, nkeys);
                free(body);
            }
            free(after);
            after = n > 0 ? strdup(ids[n - 1]) : NULL;
            done += n;
            cu_store_ids_free(ids, n);
            progress(fn, arg, "verify", done, rep->docs);
            if (rc != CU_OK || n < BATCH || after == NULL)
                break;
        }
        free(after);
    }
    if (rc == CU_OK) {
        char hex[65];
        sums_final(&m, hex);
        for (int kind = 1; kind <= NKINDS && rc == CU_OK; kind++)
            if (strcmp(m.docs_hex[kind], src->docs_hex[kind]) != 0)
                rc = cu_err_set(CU_E_VERIFY, "verification: the %s documents differ (checksum source %.16s…, "
                                             "target %.16s…)", KIND_NAME[kind], src->docs_hex[kind],
                                m.docs_hex[kind]);
            else if (m.nkeys[kind] != src->nkeys[kind] || strcmp(m.keys_hex[kind], src->keys_hex[kind]) != 0)
                rc = cu_err_set(CU_E_VERIFY, "verification: the %s documents' index keys differ (source %llu "
                                             "keys, checksum %.16s…; target %llu keys, checksum %.16s…)",
                                KIND_NAME[kind], (unsigned long long)src->nkeys[kind], src->keys_hex[kind],
                                (unsigned long long)m.nkeys[kind], m.keys_hex[kind]);
        if (rc == CU_OK && strcmp(hex, src_sum) != 0)
            rc = cu_err_set(CU_E_VERIFY, "verification: the documents' checksum differs (source %.16s…, target "
                                         "%.16s…)", src_sum, hex);
    }
    sums_free(&m);
    return rc;
}

static cu_rc verify_meta(sqlite3 *db, const cu_store_backend *ops, void *tb)
{
    sqlite3_stmt *st = NULL;
    cu_rc rc = CU_OK;
    int s;
    if (sqlite3_prepare_v2(db, "SELECT name, value FROM meta ORDER BY name", -1, &st, NULL) != SQLITE_OK)
        return sq_fail(db, "read settings");
    while (rc == CU_OK && (s = sqlite3_step(st)) == SQLITE_ROW) {
        const char *name = (const char *)sqlite3_column_text(st, 0);
        char *v = NULL;
        if ((rc = ops->meta_get(tb, name, &v)) == CU_OK &&
            strcmp(v, (const char *)sqlite3_column_text(st, 1)) != 0)
            rc = cu_err_set(CU_E_VERIFY, "verification: setting '%.100s' differs in the target", name);
        free(v);
    }
    sqlite3_finalize(st);
    return rc;
}

static cu_rc verify_audit(cu_store *src, cu_store *dst, cu_store_migrate_report *rep)
{
    cu_audit_report a, b;
    cu_rc rc;
    if ((rc = cu_audit_verify(src, NULL, 0, &a)) != CU_OK)
        return cu_err_set(rc, "the source's audit log does not verify: %s", a.what);
    if ((rc = cu_audit_verify(dst, NULL, 0, &b)) != CU_OK)
        return cu_err_set(rc, "verification: the target's audit log does not verify: %s", b.what);
    if (a.records != b.records || a.last_seq != b.last_seq || memcmp(a.last_hash, b.last_hash, 32) != 0 ||
        a.heads != b.heads)
        return cu_err_set(CU_E_VERIFY, "verification: the audit logs differ (source %llu records, %llu heads; "
                                       "target %llu records, %llu heads)",
                          (unsigned long long)a.records, (unsigned long long)a.heads,
                          (unsigned long long)b.records, (unsigned long long)b.heads);
    cu_prov__hex(b.last_hash, 32, rep->audit_last_hash);
    return CU_OK;
}

cu_rc cu_store_migrate_from_sqlite(const char *sqlite_path, cu_store *dst, cu_store_progress_fn fn, void *arg,
                                   cu_store_migrate_report *_rep)
{
    cu_prov__return_val_if_fail(sqlite_path != NULL && dst != NULL && _rep != NULL, CU_E_INVALID_ARG);
    sqlite3 *db = NULL;
    cu_store *src = NULL;
    sums m = {0};
    void *tb = NULL;
    const cu_store_backend *ops = cu_prov__store_backend(dst, &tb);
    uint64_t counts[NKINDS + 1] = {0}, ndocs = 0, naudit = 0;
    cu_rc rc;

    memset(_rep, 0, sizeof *_rep);
    if (ops->doc_keys == NULL)
        return cu_err_set(CU_E_UNSUPPORTED, "the %s backend cannot read index keys back to verify a copy",
                          ops->name);
    /* The source's audit log through its backend (the schema must be the
     * current one); its documents straight from the file. */
    if ((rc = cu_store_open_audit_only(sqlite_path, false, &src)) != CU_OK)
        return rc;
    if (sqlite3_open_v2(sqlite_path, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK) {
        rc = cu_err_set(CU_E_IO, "cannot open %s", sqlite_path);
        goto cleanup;
    }
    sqlite3_busy_timeout(db, 5000);
    /* One snapshot of the source for the whole copy. */
    if (sqlite3_exec(db, "BEGIN", NULL, NULL, NULL) != SQLITE_OK) {
        rc = sq_fail(db, "begin");
        goto cleanup;
    }
    for (int kind = 1; kind <= NKINDS; kind++) {
        char sql[64];
        snprintf(sql, sizeof sql, "SELECT count(*) FROM docs WHERE kind=%d", kind);
        if ((rc = sq_count(db, sql, &counts[kind])) != CU_OK)
            goto cleanup;
        ndocs += counts[kind];
    }
    if ((rc = sq_count(db, "SELECT count(*) FROM audit_log", &naudit)) != CU_OK)
        goto cleanup;
    if ((rc = sums_init(&m)) != CU_OK)
        goto cleanup;
    if ((rc = copy_audit(src, ops, tb, _rep, naudit, fn, arg)) != CU_OK ||
        (rc = copy_docs(db, ops, tb, &m, _rep, ndocs, fn, arg)) != CU_OK ||
        (rc = copy_meta(db, ops, tb, _rep)) != CU_OK || (rc = copy_heads(src, ops, tb, _rep)) != CU_OK)
        goto cleanup;
    sums_final(&m, _rep->docs_sha256);
    if ((rc = verify_docs(ops, tb, counts, &m, _rep->docs_sha256, _rep, fn, arg)) != CU_OK ||
        (rc = verify_meta(db, ops, tb)) != CU_OK || (rc = verify_audit(src, dst, _rep)) != CU_OK)
        goto cleanup;
cleanup:
    sums_free(&m);
    if (db != NULL) {
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
        sqlite3_close(db);
    }
    cu_store_close(src);
    return rc;
}
