/* The PostgreSQL backend where it differs from SQLite: several connections
 * (nodes) writing at once, schema versions, rate windows shared by the
 * nodes, passwords kept out of messages, an SQLite store migrated into it. Runs only on PostgreSQL (CUSTOS_TEST_STORE=postgresql). */
#include "fixture.h"

#include <custos/audit.h>

#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static cu_enr *sym_enr(const char *id)
{
    char js[300], reason[256];
    cu_enr *e = NULL;
    int n = snprintf(js, sizeof js,
                     "{\"registrationId\":\"%s\",\"attestation\":{\"type\":\"symmetricKey\",\"symmetricKey\":"
                     "{\"primaryKey\":\"c3ltbWV0cmljLWtleS1mb3ItdGVzdHMtb25seS0zMmI=\"}}}", id);
    return cu_enr_parse(CU_ENR_INDIVIDUAL, js, (size_t)n, &e, reason, sizeof reason) == CU_OK ? e : NULL;
}

typedef struct racer {
    fx *f;
    const char *etag;
    cu_rc rc;
    int http;
} racer;

/* The second node: the same etag, a moment after the first wrote. */
static void *second_writer(void *arg)
{
    racer *r = arg;
    cu_store *s = NULL;
    cu_enr *e = sym_enr("race-1");
    char reason[256];
    r->rc = CU_E_INVALID_ARG;
    if (e != NULL && fx_store_reopen(r->f, r->f->kr, &s) == CU_OK) {
        r->rc = cu_store_enr_put(s, e, r->etag, 0, reason, sizeof reason);
        r->http = cu_store_last_http_status();
    }
    cu_enr_free(e);
    cu_store_close(s);
    return NULL;
}

static void test_etag_race_across_connections(void)
{
    fx f;
    char reason[256], etag[64];
    CU_ASSERT_FATAL(fx_open(&f, "race") == 0);
    cu_enr *e = sym_enr("race-1");
    CU_ASSERT_FATAL(e != NULL);
    CU_ASSERT_EQUAL_FATAL(cu_store_enr_put(f.store, e, NULL, CU_STORE_CREATE, reason, sizeof reason), CU_OK);
    snprintf(etag, sizeof etag, "%s", cu_enr_get0_etag(e));
    cu_enr_free(e);

    /* Node 1 updates under the etag and holds its transaction open while
     * node 2 reads the same etag and tries the same. */
    racer r = {.f = &f, .etag = etag};
    pthread_t t;
    e = sym_enr("race-1");
    CU_ASSERT_EQUAL_FATAL(cu_store_begin(f.store), CU_OK);
    CU_ASSERT_EQUAL(cu_store_enr_put(f.store, e, etag, 0, reason, sizeof reason), CU_OK);
    CU_ASSERT_EQUAL_FATAL(pthread_create(&t, NULL, second_writer, &r), 0);
    usleep(300000);
    CU_ASSERT_EQUAL(cu_store_commit(f.store), CU_OK);
    pthread_join(t, NULL);
    CU_ASSERT_EQUAL(r.rc, CU_E_STATE);
    CU_ASSERT_EQUAL(r.http, 409);
    /* What node 1 wrote stands, unchanged by node 2. */
    cu_enr *now = NULL;
    CU_ASSERT_EQUAL(cu_store_enr_get(f.store, CU_ENR_INDIVIDUAL, "race-1", &now), CU_OK);
    CU_ASSERT_STRING_EQUAL(cu_enr_get0_etag(now), cu_enr_get0_etag(e));
    cu_enr_free(now);
    cu_enr_free(e);

    /* Two creators of one new entry: exactly one wins. */
    e = sym_enr("race-2");
    CU_ASSERT_EQUAL_FATAL(cu_store_begin(f.store), CU_OK);
    CU_ASSERT_EQUAL(cu_store_enr_put(f.store, e, NULL, CU_STORE_CREATE, reason, sizeof reason), CU_OK);
    cu_store *s2 = NULL;
    CU_ASSERT_EQUAL_FATAL(fx_store_reopen(&f, f.kr, &s2), CU_OK);
    CU_ASSERT_EQUAL(cu_store_commit(f.store), CU_OK);
    cu_enr *e2 = sym_enr("race-2");
    CU_ASSERT_EQUAL(cu_store_enr_put(s2, e2, NULL, CU_STORE_CREATE, reason, sizeof reason), CU_E_STATE);
    CU_ASSERT_EQUAL(cu_store_last_http_status(), 409);
    cu_enr_free(e2);
    cu_enr_free(e);
    cu_store_close(s2);
    fx_close(&f);
}

typedef struct appender {
    fx *f;
    int n;
    int ok;
} appender;

static void *append_many(void *arg)
{
    appender *a = arg;
    cu_store *s = NULL;
    if (fx_store_reopen(a->f, a->f->kr, &s) != CU_OK)
        return NULL;
    for (int i = 0; i < a->n; i++)
        if (cu_audit_append(s, "test.event", "test", "{\"i\":1}", NULL) == CU_OK)
            a->ok++;
    cu_store_close(s);
    return NULL;
}

static void test_audit_chain_with_concurrent_writers(void)
{
    fx f;
    enum { THREADS = 4, EACH = 50 };
    CU_ASSERT_FATAL(fx_open(&f, "chain") == 0);
    pthread_t t[THREADS];
    appender a[THREADS];
    for (int i = 0; i < THREADS; i++) {
        a[i] = (appender){.f = &f, .n = EACH};
        CU_ASSERT_EQUAL_FATAL(pthread_create(&t[i], NULL, append_many, &a[i]), 0);
    }
    int total = 0;
    for (int i = 0; i < THREADS; i++) {
        pthread_join(t[i], NULL);
        total += a[i].ok;
    }
    CU_ASSERT_EQUAL(total, THREADS * EACH);
    cu_audit_report rep;
    CU_ASSERT_EQUAL(cu_audit_verify(f.store, NULL, 0, &rep), CU_OK);
    /* Every append is in the one chain (plus the fixture's own records). */
    CU_ASSERT_TRUE(rep.records >= (uint64_t)THREADS * EACH);
    CU_ASSERT_EQUAL(rep.records, rep.last_seq);
    CU_ASSERT_EQUAL(fx_sql(&f, "SELECT 1 FROM audit_log WHERE type='test.event'"), THREADS * EACH);
    fx_close(&f);
}

static void test_schema_version(void)
{
    fx f;
    cu_store *s = NULL;
    CU_ASSERT_FATAL(fx_open(&f, "schema") == 0);
    CU_ASSERT_EQUAL(fx_sql(&f, "SELECT 1 FROM custos_schema WHERE version=4"), 1);
    /* A second opening (another node) finds it current and migrates nothing. */
    CU_ASSERT_EQUAL(fx_store_reopen(&f, f.kr, &s), CU_OK);
    cu_store_close(s);
    s = NULL;
    CU_ASSERT_EQUAL(fx_sql(&f, "UPDATE custos_schema SET version=99"), 1);
    CU_ASSERT_EQUAL(fx_store_reopen(&f, f.kr, &s), CU_E_STATE);
    CU_ASSERT_PTR_NULL(s);
    CU_ASSERT_PTR_NOT_NULL(strstr(cu_err_last()->msg, "schema version 99"));
    CU_ASSERT_EQUAL(fx_sql(&f, "UPDATE custos_schema SET version=4"), 1);
    fx_close(&f);
}

/* Per-device request windows are rows of the database: two nodes (two
 * connections) count into one budget. */
static void test_rate_windows_shared(void)
{
    fx f;
    cu_store *s2 = NULL;
    unsigned wait = 99;
    CU_ASSERT_FATAL(fx_open(&f, "rate") == 0);
    CU_ASSERT_EQUAL_FATAL(fx_store_reopen(&f, f.kr, &s2), CU_OK);
    cu_store *node[2] = {f.store, s2};
    for (int i = 0; i < 3; i++) {
        CU_ASSERT_EQUAL(cu_store_rate_hit(node[i % 2], "dev-r", 10, 3, &wait), CU_OK);
        CU_ASSERT_EQUAL(wait, 0);
    }
    /* The fourth, on either node: over the budget, until the window ends. */
    CU_ASSERT_EQUAL(cu_store_rate_hit(node[1], "dev-r", 10, 3, &wait), CU_OK);
    CU_ASSERT_TRUE(wait >= 1 && wait <= 10);
    CU_ASSERT_EQUAL(cu_store_rate_hit(node[0], "dev-r", 10, 3, &wait), CU_OK);
    CU_ASSERT_TRUE(wait >= 1 && wait <= 10);
    /* Another device has a budget of its own. */
    CU_ASSERT_EQUAL(cu_store_rate_hit(node[1], "dev-other", 10, 3, &wait), CU_OK);
    CU_ASSERT_EQUAL(wait, 0);
    /* A window that is over starts a new one. */
    CU_ASSERT_EQUAL(cu_store_rate_hit(node[0], "dev-w", 1, 1, &wait), CU_OK);
    CU_ASSERT_EQUAL(wait, 0);
    CU_ASSERT_EQUAL(cu_store_rate_hit(node[1], "dev-w", 1, 1, &wait), CU_OK);
    CU_ASSERT_EQUAL(wait, 1);
    usleep(1100000);
    CU_ASSERT_EQUAL(cu_store_rate_hit(node[1], "dev-w", 1, 1, &wait), CU_OK);
    CU_ASSERT_EQUAL(wait, 0);
    CU_ASSERT_EQUAL(fx_sql(&f, "SELECT 1 FROM rate_windows WHERE key='dev-r' AND n=5"), 1);
    cu_store_close(s2);
    fx_close(&f);
}

static void test_passwords_stay_out_of_messages(void)
{
    fx f;
    cu_store *s = NULL;
    char dir[256], path[300], uri[400];
    CU_ASSERT_FATAL(fx_open(&f, "pw") == 0);
    snprintf(path, sizeof path, "%s/wrong-password", f.dir);
    FILE *fp = fopen(path, "w");
    CU_ASSERT_FATAL(fp != NULL);
    fputs("Sekrit-Wrong-Pw-123\n", fp);
    fclose(fp);
    CU_ASSERT_EQUAL(cu_store_open_postgres(f.spec, path, f.kr, &s), CU_E_IO);
    CU_ASSERT_PTR_NULL(s);
    CU_ASSERT_PTR_NULL(strstr(cu_err_last()->msg, "Sekrit"));
    CU_ASSERT_PTR_NOT_NULL(strstr(cu_err_last()->msg, "127.0.0.1"));
    CU_ASSERT_EQUAL(cu_store_last_http_status(), 503);
    /* A password in the URI itself, to a port nobody listens on. */
    snprintf(uri, sizeof uri, "postgresql://custos:Sekrit-In-Uri@127.0.0.1:1/custos");
    CU_ASSERT_EQUAL(cu_store_open_postgres(uri, NULL, f.kr, &s), CU_E_IO);
    CU_ASSERT_PTR_NULL(strstr(cu_err_last()->msg, "Sekrit"));
    /* A missing password file and nonsense are refused clearly. */
    snprintf(dir, sizeof dir, "%s/none", f.dir);
    CU_ASSERT_EQUAL(cu_store_open_postgres(f.spec, dir, f.kr, &s), CU_E_IO);
    CU_ASSERT_PTR_NOT_NULL(strstr(cu_err_last()->msg, "password file"));
    CU_ASSERT_EQUAL(cu_store_open_postgres("host='unterminated", NULL, f.kr, &s), CU_E_INVALID_ARG);
    CU_ASSERT_EQUAL(cu_store_open_spec("postgresql://u:Sekrit@127.0.0.1:1/x", NULL, f.kr, &s), CU_E_IO);
    CU_ASSERT_PTR_NULL(strstr(cu_err_last()->msg, "Sekrit"));
    fx_close(&f);
}

/* Changes the target behind the migration's back once the documents are
 * copied, before the verification pass reads them back. */
typedef struct tamper {
    fx *f;
    const char *sql;
    int changed; /* rows fx_sql changed; -1: not yet run */
} tamper;

static void tamper_after_copy(void *arg, const char *phase, uint64_t done, uint64_t total)
{
    tamper *t = arg;
    if (t->sql != NULL && t->changed < 0 && strcmp(phase, "documents") == 0 && done == total)
        t->changed = fx_sql(t->f, t->sql);
}

static void test_migrate_verifies_documents_and_keys(void)
{
    fx f;
    cu_store *src = NULL;
    sqlite3 *db = NULL;
    cu_store_migrate_report rep;
    char dir[300], path[320], reason[256];
    CU_ASSERT_FATAL(fx_open(&f, "migrate") == 0);
    snprintf(dir, sizeof dir, "%s/src", f.dir);
    snprintf(path, sizeof path, "%s/custos.db", dir);
    CU_ASSERT_EQUAL_FATAL(cu_store_open_dir(dir, f.kr, &src), CU_OK);
    for (int i = 0; i < 3; i++) {
        char id[16];
        snprintf(id, sizeof id, "dev-%c", 'a' + i);
        cu_enr *e = sym_enr(id);
        CU_ASSERT_FATAL(e != NULL);
        CU_ASSERT_EQUAL(cu_store_enr_put(src, e, NULL, CU_STORE_CREATE, reason, sizeof reason), CU_OK);
        cu_enr_free(e);
    }
    cu_store_close(src);
    /* More index keys on one document than the copy once carried (64). */
    CU_ASSERT_EQUAL_FATAL(sqlite3_open(path, &db), SQLITE_OK);
    CU_ASSERT_EQUAL_FATAL(sqlite3_exec(db, "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i<70)"
                                           " INSERT INTO keys(kind, key, id) SELECT 1, printf('k%03d', i), 'dev-a'"
                                           " FROM n", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    /* The fixture's store has a hub and audit records of its own: empty
     * it, as a new database is. */
    CU_ASSERT_FATAL(fx_sql(&f, "DELETE FROM audit_log") >= 0 && fx_sql(&f, "DELETE FROM docs") >= 0 &&
                    fx_sql(&f, "DELETE FROM keys") >= 0);

    cu_rc rc = cu_store_migrate_from_sqlite(path, f.store, NULL, NULL, &rep);
    if (rc != CU_OK)
        fprintf(stderr, "migrate: %s\n", cu_err_last()->msg);
    CU_ASSERT_EQUAL_FATAL(rc, CU_OK);
    CU_ASSERT_EQUAL(rep.docs, 3);
    CU_ASSERT_EQUAL(rep.keys, 70);
    CU_ASSERT_EQUAL(fx_sql(&f, "UPDATE keys SET key=key WHERE kind=1 AND id='dev-a'"), 70);

    /* Each change to the target between copy and verification is found,
     * and the message names what differs. */
    static const struct {
        const char *sql, *says;
    } cases[] = {
        {"DELETE FROM keys WHERE kind=1 AND id='dev-a' AND key='k070'",
         "the enrollment documents' index keys differ (source 70 keys"},
        {"INSERT INTO keys(kind, key, id) VALUES(1, 'k999', 'dev-b')", "the enrollment documents' index keys differ"},
        {"UPDATE keys SET id='dev-c' WHERE kind=1 AND id='dev-a' AND key='k001'",
         "the enrollment documents' index keys differ"},
        {"UPDATE docs SET body=body || ' ' WHERE kind=1 AND id='dev-b'", "the enrollment documents differ"},
        {"DELETE FROM docs WHERE kind=1 AND id='dev-c'", "the target has 2 enrollment documents, the source 3"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        tamper t = {&f, cases[i].sql, -1};
        CU_ASSERT_EQUAL(cu_store_migrate_from_sqlite(path, f.store, tamper_after_copy, &t, &rep), CU_E_VERIFY);
        CU_ASSERT_EQUAL(t.changed, 1);
        if (strstr(cu_err_last()->msg, cases[i].says) == NULL) {
            fprintf(stderr, "case %zu: %s\n", i, cu_err_last()->msg);
            CU_FAIL("the message does not name what differs");
        }
    }
    /* A re-run repairs the target. */
    CU_ASSERT_EQUAL(cu_store_migrate_from_sqlite(path, f.store, NULL, NULL, &rep), CU_OK);
    CU_ASSERT_EQUAL(rep.keys, 70);
    fx_close(&f);
}

int main(void)
{
    static const cu_test_case cases[] = {
        {"etags hold across connections", test_etag_race_across_connections},
        {"one audit chain under concurrent writers", test_audit_chain_with_concurrent_writers},
        {"schema version", test_schema_version},
        {"rate windows shared by the nodes", test_rate_windows_shared},
        {"passwords stay out of messages", test_passwords_stay_out_of_messages},
        {"migrate verifies documents and index keys", test_migrate_verifies_documents_and_keys},
        {NULL, NULL},
    };
    if (!fx_is_pg()) {
        printf("skipped: PostgreSQL only (CUSTOS_TEST_STORE=postgresql)\n");
        return 77;
    }
    if (cu_test_add_suite("prov_pg", NULL, NULL, cases) != 0)
        return 2;
    return cu_test_run();
}
