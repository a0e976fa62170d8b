/* The audit log: canonical form, chain, signed heads (automatic and on
 * demand), a re-chained rewrite caught by a head, transactions, the seed's
 * five devices read back from the log, secrets never written, key uses per
 * minute, token events. On SQLite, or with CUSTOS_TEST_STORE=postgresql on
 * the PostgreSQL fixture (audit_log_pg): the tampering goes through fx_sql.
 * Tampering through the command line is test_tamper.sh. */
#include "fixture.h"

#include <custos/audit.h>
#include <custos/sas.h>

#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define DAY 86400L

static EVP_PKEY *ec_key(void) { return EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256"); }

static size_t count_records(cu_store *s)
{
    cu_audit_record *r = NULL;
    size_t n = 0;
    if (cu_audit_read(s, 1, 100000, &r, &n) != CU_OK)
        return (size_t)-1;
    cu_audit_records_free(r, n);
    return n;
}

static uint64_t last_seq(cu_store *s)
{
    cu_audit_record *r = NULL;
    size_t n = 0;
    uint64_t seq = 0;
    if (cu_audit_read(s, 1, 100000, &r, &n) == CU_OK && n > 0)
        seq = r[n - 1].seq;
    cu_audit_records_free(r, n);
    return seq;
}

/* ---- the fixture's database behind the store's back, on either backend ---- */

/* Bytes as an SQL literal of the fixture's backend. */
static void sql_blob(const uint8_t *b, size_t n, char *out, size_t size)
{
    size_t o = (size_t)snprintf(out, size, "%s", fx_is_pg() ? "decode('" : "X'");
    for (size_t i = 0; i < n && o + 3 < size; i++)
        o += (size_t)snprintf(out + o, size - o, "%02x", b[i]);
    snprintf(out + o, size - o, "%s", fx_is_pg() ? "','hex')" : "'");
}

/* Text as an SQL string literal (a quote doubled). */
static void sql_text(const char *t, char *out, size_t size)
{
    size_t o = 0;
    out[o++] = '\'';
    for (; *t && o + 3 < size; t++) {
        if (*t == '\'')
            out[o++] = '\'';
        out[o++] = *t;
    }
    out[o++] = '\'';
    out[o] = 0;
}

/* cu_audit_token_event writes to a state directory's store, or to the one
 * $CUSTOS_STORE names: here the fixture's (on PostgreSQL its schema). */
static cu_rc token_event(fx *f, const char *actor, const char *kind, const char *desc, const char *uri,
                         const char *result)
{
    const char *pgdir = getenv("CUSTOS_TEST_PG_DIR");
    char pw[4096];
    if (!fx_is_pg() || pgdir == NULL)
        return cu_audit_token_event(f->dir, actor, kind, desc, uri, result);
    snprintf(pw, sizeof pw, "%s/password", pgdir);
    setenv("CUSTOS_STORE", f->spec, 1);
    setenv("CUSTOS_STORE_PASSWORD_FILE", pw, 1);
    cu_rc rc = cu_audit_token_event(f->dir, actor, kind, desc, uri, result);
    unsetenv("CUSTOS_STORE");
    unsetenv("CUSTOS_STORE_PASSWORD_FILE");
    return rc;
}

/* ---- canonical form ---- */

static void test_canonical(void)
{
    cu_audit_record r;
    memset(&r, 0, sizeof r);
    r.seq = 0x0102030405060708ULL;
    snprintf(r.at, sizeof r.at, "2026-11-27T22:34:57.1234567Z");
    snprintf(r.type, sizeof r.type, "hub.create");
    snprintf(r.actor, sizeof r.actor, "cli:root@host");
    r.payload = "{\"id\":\"h\"}";
    memset(r.prev, 0xab, 32);
    /* The same bytes written out by hand. */
    uint8_t want[256], *p = want;
    memcpy(p, "custos-audit-v1", 16), p += 16; /* with the NUL */
    for (int i = 1; i <= 8; i++)
        *p++ = (uint8_t)i;
    const char *f[] = {r.at, r.type, r.actor, r.payload};
    for (int i = 0; i < 4; i++) {
        size_t n = strlen(f[i]);
        *p++ = 0, *p++ = 0, *p++ = 0, *p++ = (uint8_t)n;
        memcpy(p, f[i], n), p += n;
    }
    memset(p, 0xab, 32), p += 32;
    uint8_t *buf = NULL;
    size_t len = 0;
    CU_ASSERT_EQUAL_FATAL(cu_audit_canonical(&r, &buf, &len), CU_OK);
    CU_ASSERT_EQUAL(len, (size_t)(p - want));
    CU_ASSERT_EQUAL(memcmp(buf, want, len), 0);
    uint8_t h1[32], h2[32];
    CU_ASSERT_EQUAL(cu_audit_record_hash(&r, h1), CU_OK);
    EVP_Digest(want, len, h2, NULL, EVP_sha256(), NULL);
    CU_ASSERT_EQUAL(memcmp(h1, h2, 32), 0);
    /* Moving a byte between fields changes the hash (length prefixes). */
    snprintf(r.type, sizeof r.type, "hub.creat");
    snprintf(r.actor, sizeof r.actor, "ecli:root@host");
    CU_ASSERT_EQUAL(cu_audit_record_hash(&r, h2), CU_OK);
    CU_ASSERT_NOT_EQUAL(memcmp(h1, h2, 32), 0);
    free(buf);
}

/* ---- chain, heads ---- */

static void test_chain_and_signed_heads(void)
{
    fx f;
    EVP_PKEY *key = ec_key(), *other = ec_key();
    cu_audit_report rep;
    uint64_t seq = 0;
    CU_ASSERT_FATAL(fx_open(&f, "auchain") == 0 && key != NULL && other != NULL);
    /* An empty head is nothing to sign. */
    for (int i = 0; i < 6; i++) {
        char p[64];
        snprintf(p, sizeof p, "{\"i\":%d}", i);
        CU_ASSERT_EQUAL(cu_audit_append(f.store, "test.event", "test:unit", p, &seq), CU_OK);
    }
    CU_ASSERT_EQUAL(seq, 7); /* after the fixture's hub */
    CU_ASSERT_EQUAL(cu_audit_sign_head(f.store, key, &seq), CU_OK);
    CU_ASSERT_EQUAL(seq, 7);
    /* Signing an already signed head adds nothing. */
    CU_ASSERT_EQUAL(cu_audit_sign_head(f.store, key, &seq), CU_OK);
    cu_audit_head *h = NULL;
    size_t nh = 0;
    CU_ASSERT_EQUAL(cu_audit_heads_read(f.store, 1, 10, &h, &nh), CU_OK);
    CU_ASSERT_EQUAL(nh, 1);
    cu_audit_heads_free(h, nh);
    CU_ASSERT_EQUAL(cu_audit_verify(f.store, &key, 1, &rep), CU_OK);
    CU_ASSERT_EQUAL(rep.records, 7);
    CU_ASSERT_EQUAL(rep.heads_verified, 1);
    CU_ASSERT_EQUAL(cu_audit_verify(f.store, &other, 1, &rep), CU_E_VERIFY);
    CU_ASSERT_EQUAL(rep.fault, CU_AUDIT_HEAD_SIGNATURE);

    /* Automatic signing every 3 records. */
    CU_ASSERT_EQUAL(cu_audit_set_signer(f.store, key, 3, 0), CU_OK);
    for (int i = 0; i < 7; i++)
        CU_ASSERT_EQUAL(cu_audit_append(f.store, "test.event", NULL, "{}", NULL), CU_OK);
    CU_ASSERT_EQUAL(cu_audit_heads_read(f.store, 1, 10, &h, &nh), CU_OK);
    CU_ASSERT_EQUAL_FATAL(nh, 3); /* 7, then 10 and 13 */
    CU_ASSERT_EQUAL(h[1].seq, 10);
    CU_ASSERT_EQUAL(h[2].seq, 13);
    cu_audit_heads_free(h, nh);
    CU_ASSERT_EQUAL(cu_audit_verify(f.store, &key, 1, &rep), CU_OK);
    CU_ASSERT_EQUAL(rep.last_signed_seq, 13);
    CU_ASSERT_EQUAL(cu_audit_set_signer(f.store, NULL, 0, 0), CU_OK);

    /* Someone rewrites record 9 and re-chains everything after it: every
     * link holds, but the head signed at 10 no longer matches. */
    cu_audit_record *r = NULL;
    size_t n = 0;
    CU_ASSERT_EQUAL_FATAL(cu_audit_read(f.store, 1, 100, &r, &n), CU_OK);
    CU_ASSERT_EQUAL_FATAL(n, 14);
    free(r[8].payload);
    r[8].payload = strdup("{\"forged\":true}");
    for (size_t i = 8; i < n; i++) {
        if (i > 8)
            memcpy(r[i].prev, r[i - 1].hash, 32);
        CU_ASSERT_EQUAL(cu_audit_record_hash(&r[i], r[i].hash), CU_OK);
        char sql[1024], payload[256], prev[100], hash[100];
        sql_text(r[i].payload, payload, sizeof payload);
        sql_blob(r[i].prev, 32, prev, sizeof prev);
        sql_blob(r[i].hash, 32, hash, sizeof hash);
        snprintf(sql, sizeof sql, "UPDATE audit_log SET payload=%s, prev=%s, hash=%s WHERE seq=%llu", payload, prev,
                 hash, (unsigned long long)r[i].seq);
        CU_ASSERT_EQUAL(fx_sql(&f, sql), 1);
    }
    cu_audit_records_free(r, n);
    CU_ASSERT_EQUAL(cu_audit_verify(f.store, &key, 1, &rep), CU_E_VERIFY);
    CU_ASSERT_EQUAL(rep.fault, CU_AUDIT_HEAD_MISMATCH);
    CU_ASSERT_EQUAL(rep.fault_seq, 10);
    CU_ASSERT_PTR_NOT_NULL(strstr(rep.what, "records 8 to 10"));
    /* Without a key the head's hash is still compared. */
    CU_ASSERT_EQUAL(cu_audit_verify(f.store, NULL, 0, &rep), CU_E_VERIFY);
    CU_ASSERT_EQUAL(rep.fault, CU_AUDIT_HEAD_MISMATCH);

    EVP_PKEY_free(key);
    EVP_PKEY_free(other);
    fx_close(&f);
}

/* The tail deleted, and the service appends and signs on: the new head at
 * the same seq never replaces the old one, which stays as the evidence. */
static void test_head_kept_after_truncation(void)
{
    fx f;
    EVP_PKEY *key = ec_key();
    cu_audit_report rep;
    CU_ASSERT_FATAL(fx_open(&f, "autrunc") == 0 && key != NULL);
    for (int i = 0; i < 5; i++)
        CU_ASSERT_EQUAL(cu_audit_append(f.store, "test.event", NULL, "{\"v\":1}", NULL), CU_OK);
    CU_ASSERT_EQUAL(cu_audit_sign_head(f.store, key, NULL), CU_OK); /* head at 6 */
    CU_ASSERT_EQUAL(fx_sql(&f, "DELETE FROM audit_log WHERE seq >= 5"), 2);
    CU_ASSERT_EQUAL(cu_audit_verify(f.store, &key, 1, &rep), CU_E_VERIFY);
    CU_ASSERT_EQUAL(rep.fault, CU_AUDIT_TRUNCATED);
    CU_ASSERT_EQUAL(rep.fault_seq, 5);
    /* Appends go on at 5 and 6; the head at 6 is signed again. */
    CU_ASSERT_EQUAL(cu_audit_set_signer(f.store, key, 2, 0), CU_OK);
    CU_ASSERT_EQUAL(cu_audit_append(f.store, "test.event", NULL, "{\"v\":2}", NULL), CU_OK);
    CU_ASSERT_EQUAL(cu_audit_append(f.store, "test.event", NULL, "{\"v\":2}", NULL), CU_OK);
    CU_ASSERT_EQUAL(cu_audit_verify(f.store, &key, 1, &rep), CU_E_VERIFY);
    CU_ASSERT_EQUAL(rep.fault, CU_AUDIT_HEAD_MISMATCH);
    CU_ASSERT_EQUAL(rep.fault_seq, 6);
    EVP_PKEY_free(key);
    fx_close(&f);
}

/* A head signed in a transaction that rolls back is gone: the next
 * append signs again rather than trusting a cached "signed at seq". */
static void test_sign_rolled_back(void)
{
    fx f;
    EVP_PKEY *key = ec_key();
    cu_audit_report rep;
    CU_ASSERT_FATAL(fx_open(&f, "aurollb") == 0 && key != NULL);
    CU_ASSERT_EQUAL(cu_audit_set_signer(f.store, key, 1, 0), CU_OK);
    CU_ASSERT_EQUAL_FATAL(cu_store_begin(f.store), CU_OK);
    CU_ASSERT_EQUAL(cu_audit_append(f.store, "test.event", NULL, "{}", NULL), CU_OK); /* 2, signed */
    cu_store_rollback(f.store);
    CU_ASSERT_EQUAL(cu_audit_append(f.store, "test.event", NULL, "{}", NULL), CU_OK); /* 2 again */
    CU_ASSERT_EQUAL(cu_audit_verify(f.store, &key, 1, &rep), CU_OK);
    CU_ASSERT_EQUAL(rep.last_signed_seq, 2);
    CU_ASSERT_EQUAL(rep.heads_verified, 1);
    EVP_PKEY_free(key);
    fx_close(&f);
}

/* Ed25519 heads (no separate digest) verify too. */
static void test_ed25519_head(void)
{
    fx f;
    EVP_PKEY *key = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    cu_audit_report rep;
    CU_ASSERT_FATAL(fx_open(&f, "aued") == 0 && key != NULL);
    CU_ASSERT_EQUAL(cu_audit_sign_head(f.store, key, NULL), CU_OK);
    CU_ASSERT_EQUAL(cu_audit_verify(f.store, &key, 1, &rep), CU_OK);
    CU_ASSERT_EQUAL(rep.heads_verified, 1);
    EVP_PKEY_free(key);
    fx_close(&f);
}

/* A change and its record commit together or not at all. */
static void test_same_transaction(void)
{
    fx f;
    char reason[512];
    CU_ASSERT_FATAL(fx_open(&f, "autxn") == 0);
    size_t n0 = count_records(f.store);
    CU_ASSERT_EQUAL(n0, 1); /* hub.create of the fixture */
    cu_hub h = {"hub2.example.net", 2, true};
    CU_ASSERT_EQUAL_FATAL(cu_store_begin(f.store), CU_OK);
    CU_ASSERT_EQUAL(cu_store_hub_put(f.store, &h, reason, sizeof reason), CU_OK);
    cu_store_rollback(f.store);
    CU_ASSERT_EQUAL(count_records(f.store), n0);
    CU_ASSERT_NOT_EQUAL(cu_store_hub_get(f.store, "hub2.example.net", &h), CU_OK);
    /* A refused change writes no record. */
    CU_ASSERT_EQUAL(cu_store_hub_put(f.store, &(cu_hub){"hub3", 0, true}, reason, sizeof reason), CU_E_INVALID_ARG);
    CU_ASSERT_EQUAL(count_records(f.store), n0);
    /* The actor is the caller's. */
    CU_ASSERT_EQUAL(cu_store_set_actor(f.store, "service-api:registryWrite"), CU_OK);
    CU_ASSERT_EQUAL(cu_store_hub_delete(f.store, "hub1.example.net"), CU_OK);
    cu_audit_record *r = NULL;
    size_t n = 0;
    CU_ASSERT_EQUAL_FATAL(cu_audit_read(f.store, 2, 10, &r, &n), CU_OK);
    CU_ASSERT_EQUAL_FATAL(n, 1);
    CU_ASSERT_STRING_EQUAL(r[0].type, "hub.delete");
    CU_ASSERT_STRING_EQUAL(r[0].actor, "service-api:registryWrite");
    CU_ASSERT_PTR_NOT_NULL(strstr(r[0].payload, "\"before\":{\"name\":\"hub1.example.net\""));
    CU_ASSERT_PTR_NOT_NULL(strstr(r[0].payload, "\"after\":null"));
    cu_audit_records_free(r, n);
    fx_close(&f);
}

/* ---- the seed example, read back from the log ---- */

static fx_seed sd;

static int setup(void) { return fx_seed_make(&sd); }

static int teardown(void)
{
    fx_seed_free(&sd);
    return 0;
}

/* What the log says about one device's attempt in a stage. */
typedef struct seen {
    char type[48], outcome[16], kind[16], id[64], hub[64], leaf[65];
    bool enabled, decided;
} seen;

/* Runs the five devices, then reads their decisions from the log. */
static void run_stage(fx *f, seen out[5])
{
    uint64_t from = last_seq(f->store) + 1;
    char reason[512];
    for (int i = 0; i < 5; i++)
        (void)fx_register_x509(f, fx_seed_ids[i], sd.chain[i], reason, sizeof reason);
    memset(out, 0, 5 * sizeof *out);
    cu_audit_record *r = NULL;
    size_t n = 0;
    CU_ASSERT_EQUAL_FATAL(cu_audit_read(f->store, from, 100, &r, &n), CU_OK);
    CU_ASSERT_EQUAL(n, 5); /* one decision per attempt, nothing else */
    for (size_t k = 0; k < n; k++) {
        json_error_t e;
        json_t *j = json_loads(r[k].payload, 0, &e);
        const char *rid = json_string_value(json_object_get(j, "registrationId"));
        for (int i = 0; rid != NULL && i < 5; i++) {
            if (strcmp(rid, fx_seed_ids[i]) != 0)
                continue;
            seen *s = &out[i];
            json_t *d = json_object_get(j, "decidedBy");
            snprintf(s->type, sizeof s->type, "%s", r[k].type);
            snprintf(s->outcome, sizeof s->outcome, "%s", json_string_value(json_object_get(j, "outcome")));
            s->decided = json_is_object(d);
            snprintf(s->kind, sizeof s->kind, "%s", s->decided ? json_string_value(json_object_get(d, "kind")) : "");
            snprintf(s->id, sizeof s->id, "%s", s->decided ? json_string_value(json_object_get(d, "id")) : "");
            s->enabled = json_is_true(json_object_get(d, "enabled"));
            const char *hub = json_string_value(json_object_get(j, "assignedHub"));
            snprintf(s->hub, sizeof s->hub, "%s", hub ? hub : "");
            const char *leaf = json_string_value(json_array_get(json_object_get(j, "chain"), 0));
            snprintf(s->leaf, sizeof s->leaf, "%s", leaf ? leaf : "");
            char actor[160];
            snprintf(actor, sizeof actor, "device:%s", fx_seed_ids[i]);
            CU_ASSERT_STRING_EQUAL(r[k].actor, actor);
        }
        json_decref(j);
    }
    cu_audit_records_free(r, n);
}

static void expect_seen(const seen *s, int dev_i, const char *outcome, const char *kind, const char *id, bool enabled)
{
    char leaf[65];
    cu_x509_sha256_hex(sd.dev[dev_i].cert, leaf);
    if (strcmp(s->outcome, outcome) != 0 || strcmp(s->id, id) != 0)
        fprintf(stderr, "%s: log says %s by %s '%s', expected %s by %s '%s'\n", fx_seed_ids[dev_i], s->outcome, s->kind, s->id,
                outcome, kind, id);
    CU_ASSERT_STRING_EQUAL(s->outcome, outcome);
    CU_ASSERT_STRING_EQUAL(s->type, strcmp(outcome, "provision") == 0 ? "registration" : "registration.refused");
    CU_ASSERT_STRING_EQUAL(s->kind, kind);
    CU_ASSERT_STRING_EQUAL(s->id, id);
    CU_ASSERT_EQUAL(s->decided, *id != 0);
    if (*id)
        CU_ASSERT_EQUAL(s->enabled, enabled);
    CU_ASSERT_STRING_EQUAL(s->hub, strcmp(outcome, "provision") == 0 ? "hub1.example.net" : "");
    CU_ASSERT_STRING_EQUAL(s->leaf, leaf);
}

static void test_seed_from_log(void)
{
    fx f;
    seen s[5];
    CU_ASSERT_FATAL(fx_open(&f, "auseed") == 0);
    CU_ASSERT_EQUAL(cu_store_set_actor(f.store, "cli:operator@test"), CU_OK);

    /* Nothing enrolled: all refused, no entry decided. */
    run_stage(&f, s);
    for (int i = 0; i < 5; i++)
        expect_seen(&s[i], i, "refuse", "", "", false);

    /* 1. An enabled group on the root decides for all five. */
    CU_ASSERT_EQUAL_FATAL(fx_group_x509(&f, "root-group", &sd.root, true), CU_OK);
    run_stage(&f, s);
    for (int i = 0; i < 5; i++)
        expect_seen(&s[i], i, "provision", "group", "root-group", true);

    /* 2. A disabled group on B decides for 4 and 5. */
    CU_ASSERT_EQUAL_FATAL(fx_group_x509(&f, "group-b", &sd.ca_b, false), CU_OK);
    run_stage(&f, s);
    for (int i = 0; i < 3; i++)
        expect_seen(&s[i], i, "provision", "group", "root-group", true);
    for (int i = 3; i < 5; i++)
        expect_seen(&s[i], i, "refuse", "group", "group-b", false);

    /* 3. A disabled individual enrollment decides for device 3. */
    CU_ASSERT_EQUAL_FATAL(fx_individual_x509(&f, "device-3", &sd.dev[2], false), CU_OK);
    run_stage(&f, s);
    expect_seen(&s[0], 0, "provision", "group", "root-group", true);
    expect_seen(&s[1], 1, "provision", "group", "root-group", true);
    expect_seen(&s[2], 2, "refuse", "individual", "device-3", false);
    expect_seen(&s[3], 3, "refuse", "group", "group-b", false);
    expect_seen(&s[4], 4, "refuse", "group", "group-b", false);

    /* The enrollment changes are in the log with their actor. */
    cu_audit_record *r = NULL;
    size_t n = 0, changes = 0;
    CU_ASSERT_EQUAL_FATAL(cu_audit_read(f.store, 1, 1000, &r, &n), CU_OK);
    for (size_t i = 0; i < n; i++) {
        if (strcmp(r[i].type, "enrollmentGroup.create") == 0 || strcmp(r[i].type, "enrollment.create") == 0) {
            CU_ASSERT_STRING_EQUAL(r[i].actor, "cli:operator@test");
            changes++;
        }
        if (strncmp(r[i].type, "registration", 12) == 0)
            CU_ASSERT_EQUAL(strncmp(r[i].actor, "device:", 7), 0);
    }
    CU_ASSERT_EQUAL(changes, 3);
    CU_ASSERT_EQUAL(n, 1 + 4 * 5 + 3);
    cu_audit_records_free(r, n);
    cu_audit_report rep;
    CU_ASSERT_EQUAL(cu_audit_verify(f.store, NULL, 0, &rep), CU_OK);
    fx_close(&f);
}

/* ---- secrets ---- */

static bool file_contains(const char *path, const char *needle)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return false;
    static char buf[4 << 20];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    size_t m = strlen(needle);
    for (size_t i = 0; i + m <= n; i++)
        if (memcmp(buf + i, needle, m) == 0)
            return true;
    return false;
}

/* The tables of a PostgreSQL store (provisioning/store/postgres.c). */
static const char *const PG_TABLES[] = {"custos_schema", "docs", "keys", "meta", "audit_v1", "audit_log",
                                        "audit_heads", "rate_windows"};

/* Whether needle is anywhere in the fixture's database: in the bytes of the
 * SQLite file, or in any row of any table of the PostgreSQL schema as text
 * (a bytea as hex: so the needle's bytes are looked for in hex too). */
static bool db_contains(fx *f, const char *needle)
{
    char path[4096], lit[512], hexlit[1024], sql[2048];
    if (!fx_is_pg()) {
        snprintf(path, sizeof path, "%s/custos.db", f->dir);
        return file_contains(path, needle);
    }
    char hex[700] = "";
    for (size_t i = 0; needle[i] && 2 * i + 3 < sizeof hex; i++)
        snprintf(hex + 2 * i, 3, "%02x", (unsigned char)needle[i]);
    sql_text(needle, lit, sizeof lit);
    sql_text(hex, hexlit, sizeof hexlit);
    for (size_t i = 0; i < sizeof PG_TABLES / sizeof PG_TABLES[0]; i++) {
        snprintf(sql, sizeof sql, "SELECT 1 FROM %s t WHERE strpos(t::text, %s) > 0 OR strpos(t::text, %s) > 0",
                 PG_TABLES[i], lit, hexlit);
        int n = fx_sql(f, sql);
        if (n < 0)
            fprintf(stderr, "table %s cannot be searched\n", PG_TABLES[i]);
        if (n != 0)
            return true;
    }
    return false;
}

static void test_no_secrets(void)
{
    static const char *K1 = "cHJpbWFyeS1zZWNyZXQta2V5LWF1ZGl0LXRlc3QtMQ==";
    static const char *K2 = "c2Vjb25kYXJ5LXNlY3JldC1rZXktYXVkaXQtdGVzdDI=";
    static const char *K3 = "cmVwbGFjZWQtc2VjcmV0LWtleS1hdWRpdC10ZXN0LTM=";
    static const char *G1 = "Z3JvdXAtc2VjcmV0LWtleS1mb3ItdGhlLWF1ZGl0LXQ=";
    fx f;
    char reason[512];
    CU_ASSERT_FATAL(fx_open(&f, "ausecret") == 0);
    CU_ASSERT_EQUAL(fx_put_json(&f, CU_ENR_INDIVIDUAL, reason, sizeof reason,
                                "{\"registrationId\":\"sym-1\",\"attestation\":{\"type\":\"symmetricKey\","
                                "\"symmetricKey\":{\"primaryKey\":\"%s\",\"secondaryKey\":\"%s\"}},"
                                "\"allocationPolicy\":\"custom\",\"customAllocationDefinition\":{\"webhookUrl\":"
                                "\"https://alloc.example.net/api/x?code=WEBHOOKFUNCTIONKEY\",\"apiVersion\":"
                                "\"2021-10-01\"}}",
                                K1, K2),
                    CU_OK);
    CU_ASSERT_EQUAL(fx_put_json(&f, CU_ENR_INDIVIDUAL, reason, sizeof reason,
                                "{\"registrationId\":\"sym-1\",\"attestation\":{\"type\":\"symmetricKey\","
                                "\"symmetricKey\":{\"primaryKey\":\"%s\",\"secondaryKey\":\"%s\"}}}",
                                K3, K2),
                    CU_OK);
    CU_ASSERT_EQUAL(fx_put_json(&f, CU_ENR_GROUP, reason, sizeof reason,
                                "{\"enrollmentGroupId\":\"sym-group\",\"attestation\":{\"type\":\"symmetricKey\","
                                "\"symmetricKey\":{\"primaryKey\":\"%s\",\"secondaryKey\":\"%s\"}}}",
                                G1, K2),
                    CU_OK);
    /* A device of the group registers with its derived key (the SAS token
     * is a credential too: it must not be logged). */
    char *dk = NULL, *token = NULL;
    uint8_t *raw = NULL;
    size_t rl = 0;
    CU_ASSERT_EQUAL_FATAL(cu_sas_derive_key_b64(G1, "grp-dev-1", &dk), CU_OK);
    CU_ASSERT_EQUAL_FATAL(cu_sas_key_decode(dk, &raw, &rl), CU_OK);
    CU_ASSERT_EQUAL_FATAL(cu_sas_sign(raw, rl, "0ne00000001", "grp-dev-1", (uint64_t)time(NULL) + 3600, "registration",
                                      &token),
                          CU_OK);
    cu_prov_request req = {.registration_id = "grp-dev-1", .authorization = token};
    cu_prov_result res;
    CU_ASSERT_EQUAL(cu_prov_register(f.prov, &req, &res), CU_OK);
    CU_ASSERT_EQUAL(res.outcome, CU_PROV_PROVISION);
    cu_prov_result_clear(&res);
    CU_ASSERT_EQUAL(cu_store_enr_delete(f.store, CU_ENR_INDIVIDUAL, "sym-1", NULL, reason, sizeof reason), CU_OK);
    /* Settings: a service policy key (wrapped) shows only that it changed;
     * operation state is not audited. */
    char *wrapped = NULL;
    CU_ASSERT_EQUAL_FATAL(cu_keyring_wrap(f.kr, (const uint8_t *)"POLICYKEYSECRET!", 16, "policy:owner", &wrapped),
                          CU_OK);
    CU_ASSERT_EQUAL(cu_store_setting_put(f.store, "policy:owner", wrapped), CU_OK);
    CU_ASSERT_EQUAL(cu_store_op_put(f.store, "grp-dev-1", "{\"operationId\":\"op-x-1\"}"), CU_OK);
    CU_ASSERT_EQUAL(cu_audit_key_use(f.store, "pkcs11:token=svc;object=policy?pin-value=PINVALUESECRET"), CU_OK);
    CU_ASSERT_EQUAL(cu_audit_key_use_flush(f.store), CU_OK);
    cu_rc trc = token_event(&f, "cli:root@host", "keygen", "soft 'svc'",
                            "pkcs11:token=svc;object=audit;pin-value=PINVALUESECRET2", "ok");
    if (trc != CU_OK)
        fprintf(stderr, "token event: %s\n", cu_err_last()->msg);
    CU_ASSERT_EQUAL(trc, CU_OK);

    /* The records are there ... */
    cu_audit_record *r = NULL;
    size_t n = 0;
    int found = 0;
    CU_ASSERT_EQUAL_FATAL(cu_audit_read(f.store, 1, 100, &r, &n), CU_OK);
    for (size_t i = 0; i < n; i++) {
        found += strcmp(r[i].type, "enrollment.create") == 0 || strcmp(r[i].type, "enrollment.update") == 0 ||
                 strcmp(r[i].type, "enrollment.delete") == 0 || strcmp(r[i].type, "enrollmentGroup.create") == 0 ||
                 strcmp(r[i].type, "registration") == 0 || strcmp(r[i].type, "key.use") == 0 ||
                 strcmp(r[i].type, "token.keygen") == 0;
        if (strcmp(r[i].type, "enrollment.create") == 0)
            CU_ASSERT_PTR_NOT_NULL(strstr(r[i].payload, "https://alloc.example.net/api/x?(redacted)"));
        if (strcmp(r[i].type, "setting.update") == 0 && strstr(r[i].payload, "policy:owner") != NULL) {
            CU_ASSERT_STRING_EQUAL(r[i].payload, "{\"id\":\"policy:owner\",\"before\":null,\"after\":\"(secret)\"}");
            found++;
        }
        CU_ASSERT_PTR_NULL(strstr(r[i].payload, "op-x-1"));
        CU_ASSERT_PTR_NULL(strstr(r[i].payload, "cw1:"));
                if (strcmp(r[i].type, "token.keygen") == 0)
            CU_ASSERT_PTR_NOT_NULL(strstr(r[i].payload, "\"key\":\"pkcs11:token=svc;object=audit\""));
    }
    CU_ASSERT_EQUAL(found, 8);
    cu_audit_records_free(r, n);
    cu_store_close(f.store); /* checkpoints the WAL into the file */
    f.store = NULL;
    cu_prov_free(f.prov);
    f.prov = NULL;

    /* ... and no secret is in the database, anywhere: every table searched
     * (a table the list does not know fails the test rather than go unread). */
    if (fx_is_pg())
        CU_ASSERT_EQUAL(fx_sql(&f, "SELECT 1 FROM information_schema.tables WHERE table_schema = current_schema()"),
                        (int)(sizeof PG_TABLES / sizeof PG_TABLES[0]));
    /* The search finds what is there (the registration id is recorded). */
    CU_ASSERT_TRUE(db_contains(&f, "grp-dev-1"));
    const char *secrets[] = {K1, K2, K3, G1, dk, token, "WEBHOOKFUNCTIONKEY", "PINVALUESECRET", "POLICYKEYSECRET"};
    for (size_t i = 0; i < sizeof secrets / sizeof secrets[0]; i++) {
        bool in = db_contains(&f, secrets[i]);
        if (in)
            fprintf(stderr, "secret %zu is in the database\n", i);
        CU_ASSERT_FALSE(in);
    }
    /* The SAS signature part alone, too. */
    const char *sig = strstr(token, "sig=");
    CU_ASSERT_PTR_NOT_NULL_FATAL(sig);
    char sigv[80];
    snprintf(sigv, sizeof sigv, "%.40s", sig + 4);
    CU_ASSERT_FALSE(db_contains(&f, sigv));
    cu_sas_key_free(raw, rl);
    free(wrapped);
    free(dk);
    free(token);
    fx_close(&f);
}

/* ---- what change and decision records hold ---- */

/* A record read back: its type, actor, payload text and parsed payload. */
typedef struct rec {
    char type[64], actor[160];
    char *text;
    json_t *p;
} rec;

static size_t read_from(cu_store *s, uint64_t from, rec *out, size_t max)
{
    cu_audit_record *r = NULL;
    size_t n = 0;
    if (cu_audit_read(s, from, max, &r, &n) != CU_OK)
        return 0;
    for (size_t i = 0; i < n; i++) {
        json_error_t e;
        snprintf(out[i].type, sizeof out[i].type, "%s", r[i].type);
        snprintf(out[i].actor, sizeof out[i].actor, "%s", r[i].actor);
        out[i].text = strdup(r[i].payload);
        out[i].p = json_loads(r[i].payload, 0, &e);
    }
    cu_audit_records_free(r, n);
    return n;
}

static void recs_free(rec *r, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(r[i].text);
        json_decref(r[i].p);
    }
}

static const char *jstr(json_t *o, const char *path)
{
    char key[64];
    const char *dot = strchr(path, '.');
    if (dot == NULL)
        return json_string_value(json_object_get(o, path));
    snprintf(key, sizeof key, "%.*s", (int)(dot - path), path);
    return jstr(json_object_get(o, key), dot + 1);
}

static void test_ca_records(void)
{
    fx f;
    tcert ca, proof, wrong;
    rec r[8];
    char reason[512], *code = NULL;
    CU_ASSERT_FATAL(fx_open(&f, "auca") == 0);
    CU_ASSERT_FATAL(tc_make(&ca, "Audit CA", true, NULL, -100, 86400 * 30) == 0);
    char *pem = tc_pem(&ca);
    uint64_t from = last_seq(f.store) + 1;
    CU_ASSERT_EQUAL_FATAL(cu_store_ca_add(f.store, "factory", pem, false, reason, sizeof reason), CU_OK);
    CU_ASSERT_EQUAL_FATAL(cu_store_ca_gen_code(f.store, "factory", NULL, &code, reason, sizeof reason), CU_OK);
    /* A refused proof (not the code as CN) changes nothing and records nothing. */
    CU_ASSERT_FATAL(tc_make(&wrong, "not-the-code", false, &ca, -100, 86400) == 0);
    char *wpem = tc_pem(&wrong);
    CU_ASSERT_EQUAL(cu_store_ca_verify(f.store, "factory", NULL, wpem, reason, sizeof reason), CU_E_VERIFY);
    CU_ASSERT_FATAL(tc_make(&proof, code, false, &ca, -100, 86400) == 0);
    char *ppem = tc_pem(&proof);
    CU_ASSERT_EQUAL_FATAL(cu_store_ca_verify(f.store, "factory", NULL, ppem, reason, sizeof reason), CU_OK);
    CU_ASSERT_EQUAL_FATAL(cu_store_ca_delete(f.store, "factory", NULL, reason, sizeof reason), CU_OK);

    size_t n = read_from(f.store, from, r, 8);
    static const char *types[] = {"caCertificate.create", "caCertificate.verificationCode", "caCertificate.verify",
                                  "caCertificate.delete"};
    CU_ASSERT_EQUAL_FATAL(n, 4);
    for (size_t i = 0; i < n; i++) {
        CU_ASSERT_STRING_EQUAL(r[i].type, types[i]);
        CU_ASSERT_STRING_EQUAL(jstr(r[i].p, "id"), "factory");
    }
    json_t *b[4], *a[4];
    for (int i = 0; i < 4; i++) {
        b[i] = json_object_get(r[i].p, "before");
        a[i] = json_object_get(r[i].p, "after");
    }
    /* create: nothing before; the certificate, unverified, after. */
    CU_ASSERT_TRUE(json_is_null(b[0]));
    CU_ASSERT_FALSE(json_is_true(json_object_get(a[0], "isVerified")));
    CU_ASSERT_PTR_NOT_NULL(strstr(jstr(a[0], "certificate"), "BEGIN CERTIFICATE"));
    CU_ASSERT_PTR_NOT_NULL(jstr(a[0], "thumbprint"));
    /* the code issued: before = the created document; the code left out. */
    CU_ASSERT_TRUE(json_equal(b[1], a[0]));
    CU_ASSERT_PTR_NOT_NULL(a[1]);
    CU_ASSERT_PTR_NULL(json_object_get(a[1], "verificationCode"));
    CU_ASSERT_STRING_NOT_EQUAL(jstr(a[1], "etag"), jstr(b[1], "etag"));
    /* verified: before unverified, after verified. */
    CU_ASSERT_TRUE(json_equal(b[2], a[1]));
    CU_ASSERT_FALSE(json_is_true(json_object_get(b[2], "isVerified")));
    CU_ASSERT_TRUE(json_is_true(json_object_get(a[2], "isVerified")));
    /* deleted: before the verified document, nothing after. */
    CU_ASSERT_TRUE(json_equal(b[3], a[2]));
    CU_ASSERT_TRUE(json_is_null(a[3]));
    /* The one-time code and the CA's private key are in no record. */
    BIO *bio = BIO_new(BIO_s_mem());
    char *kp = NULL, kbody[48] = "";
    CU_ASSERT_FATAL(bio != NULL && PEM_write_bio_PrivateKey(bio, ca.key, NULL, NULL, 0, NULL, NULL) == 1);
    long kl = BIO_get_mem_data(bio, &kp);
    const char *nl = kl > 0 ? memchr(kp, '\n', (size_t)kl) : NULL;
    CU_ASSERT_PTR_NOT_NULL_FATAL(nl);
    snprintf(kbody, sizeof kbody, "%.40s", nl + 1);
    CU_ASSERT_EQUAL(strlen(kbody), 40);
    for (size_t i = 0; i < n; i++) {
        CU_ASSERT_PTR_NULL(strstr(r[i].text, code));
        CU_ASSERT_PTR_NULL(strstr(r[i].text, "PRIVATE"));
        CU_ASSERT_PTR_NULL(strstr(r[i].text, kbody));
    }
    BIO_free(bio);
    recs_free(r, n);
    free(pem);
    free(wpem);
    free(ppem);
    free(code);
    tc_free(&ca);
    tc_free(&wrong);
    tc_free(&proof);
    fx_close(&f);
}

/* Enrollment and group updates and deletes: before is what the previous
 * record left after, field for field. */
static void test_enrollment_changes(void)
{
    fx f;
    rec r[8];
    char reason[512];
    CU_ASSERT_FATAL(fx_open(&f, "auenr") == 0);
    CU_ASSERT_EQUAL(cu_store_set_actor(f.store, "cli:operator@test"), CU_OK);
    uint64_t from = last_seq(f.store) + 1;
    CU_ASSERT_EQUAL_FATAL(fx_group_x509(&f, "group-a", &sd.ca_a, true), CU_OK);
    CU_ASSERT_EQUAL_FATAL(fx_group_x509(&f, "group-a", &sd.ca_a, false), CU_OK);
    CU_ASSERT_EQUAL_FATAL(fx_individual_x509(&f, "device-1", &sd.dev[0], true), CU_OK);
    CU_ASSERT_EQUAL_FATAL(fx_individual_x509(&f, "device-1", &sd.dev[0], false), CU_OK);
    CU_ASSERT_EQUAL_FATAL(cu_store_enr_delete(f.store, CU_ENR_GROUP, "group-a", NULL, reason, sizeof reason), CU_OK);
    CU_ASSERT_EQUAL_FATAL(cu_store_enr_delete(f.store, CU_ENR_INDIVIDUAL, "device-1", NULL, reason, sizeof reason),
                          CU_OK);
    size_t n = read_from(f.store, from, r, 8);
    static const char *types[] = {"enrollmentGroup.create", "enrollmentGroup.update", "enrollment.create",
                                  "enrollment.update",      "enrollmentGroup.delete", "enrollment.delete"};
    static const char *ids[] = {"group-a", "group-a", "device-1", "device-1", "group-a", "device-1"};
    CU_ASSERT_EQUAL_FATAL(n, 6);
    for (size_t i = 0; i < n; i++) {
        CU_ASSERT_STRING_EQUAL(r[i].type, types[i]);
        CU_ASSERT_STRING_EQUAL(r[i].actor, "cli:operator@test");
        CU_ASSERT_STRING_EQUAL(jstr(r[i].p, "id"), ids[i]);
    }
    json_t *b[6], *a[6];
    for (int i = 0; i < 6; i++) {
        b[i] = json_object_get(r[i].p, "before");
        a[i] = json_object_get(r[i].p, "after");
    }
    CU_ASSERT_TRUE(json_is_null(b[0]) && json_is_null(b[2]));
    CU_ASSERT_TRUE(json_is_null(a[4]) && json_is_null(a[5]));
    /* The update: before = the created document, after = the new one. */
    CU_ASSERT_TRUE(json_equal(b[1], a[0]));
    CU_ASSERT_TRUE(json_equal(b[3], a[2]));
    CU_ASSERT_STRING_EQUAL(jstr(b[1], "provisioningStatus"), "enabled");
    CU_ASSERT_STRING_EQUAL(jstr(a[1], "provisioningStatus"), "disabled");
    CU_ASSERT_STRING_EQUAL(jstr(a[1], "enrollmentGroupId"), "group-a");
    CU_ASSERT_STRING_EQUAL(jstr(b[3], "provisioningStatus"), "enabled");
    CU_ASSERT_STRING_EQUAL(jstr(a[3], "provisioningStatus"), "disabled");
    CU_ASSERT_STRING_EQUAL(jstr(a[3], "registrationId"), "device-1");
    CU_ASSERT_STRING_NOT_EQUAL(jstr(a[1], "etag"), jstr(b[1], "etag"));
    CU_ASSERT_STRING_EQUAL(jstr(a[1], "attestation.type"), "x509");
    /* The delete: before = what the update left. */
    CU_ASSERT_TRUE(json_equal(b[4], a[1]));
    CU_ASSERT_TRUE(json_equal(b[5], a[3]));
    recs_free(r, n);
    fx_close(&f);
}

static void chain_is(json_t *chain, const tcert *leaf, const tcert *ca)
{
    char l[65], c[65];
    cu_x509_sha256_hex(leaf->cert, l);
    cu_x509_sha256_hex(ca->cert, c);
    CU_ASSERT_EQUAL(json_array_size(chain), 2);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_array_get(chain, 0)), l);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_array_get(chain, 1)), c);
}

/* A decision's evidence: attestation, reason, the whole chain the device
 * sent (the intermediate too), and for a TPM the EK's fingerprint on the
 * challenge (registration.challenge). */
static void test_decision_fields(void)
{
    fx f;
    rec r[4];
    char why_ok[512], why_no[512];
    CU_ASSERT_FATAL(fx_open(&f, "audec") == 0);
    CU_ASSERT_EQUAL_FATAL(fx_group_x509(&f, "group-a", &sd.ca_a, true), CU_OK);
    uint64_t from = last_seq(f.store) + 1;
    CU_ASSERT_EQUAL(fx_register_x509(&f, "device-1", sd.chain[0], why_ok, sizeof why_ok), CU_PROV_PROVISION);
    CU_ASSERT_EQUAL(fx_register_x509(&f, "device-4", sd.chain[3], why_no, sizeof why_no), CU_PROV_REFUSE);
    size_t n = read_from(f.store, from, r, 4);
    CU_ASSERT_EQUAL_FATAL(n, 2);
    CU_ASSERT_STRING_EQUAL(r[0].type, "registration");
    CU_ASSERT_STRING_EQUAL(jstr(r[0].p, "attestation"), "x509");
    CU_ASSERT_STRING_EQUAL(jstr(r[0].p, "reason"), why_ok);
    CU_ASSERT_STRING_EQUAL(jstr(r[0].p, "decidedBy.id"), "group-a");
    chain_is(json_object_get(r[0].p, "chain"), &sd.dev[0], &sd.ca_a);
    CU_ASSERT_STRING_EQUAL(r[1].type, "registration.refused");
    CU_ASSERT_STRING_EQUAL(jstr(r[1].p, "attestation"), "x509");
    CU_ASSERT_STRING_EQUAL(jstr(r[1].p, "reason"), why_no);
    CU_ASSERT_TRUE(json_is_null(json_object_get(r[1].p, "decidedBy")));
    chain_is(json_object_get(r[1].p, "chain"), &sd.dev[3], &sd.ca_b);
    recs_free(r, n);

    /* A TPM: the challenge's record, with the EK's SHA-256. */
    EVP_PKEY *ek = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
    EVP_PKEY *srk = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
    char *ek64 = ek ? fx_tpm_rsa_pub_b64(ek) : NULL, *srk64 = srk ? fx_tpm_rsa_pub_b64(srk) : NULL;
    CU_ASSERT_FATAL(ek64 != NULL && srk64 != NULL);
    CU_ASSERT_EQUAL_FATAL(fx_put_json(&f, CU_ENR_INDIVIDUAL, why_ok, sizeof why_ok,
                                      "{\"registrationId\":\"tpm-dev\",\"attestation\":{\"type\":\"tpm\",\"tpm\":"
                                      "{\"endorsementKey\":\"%s\"}}}",
                                      ek64),
                          CU_OK);
    from = last_seq(f.store) + 1;
    cu_prov_request req = {.registration_id = "tpm-dev", .tpm_ek = ek64, .tpm_srk = srk64};
    cu_prov_result res;
    CU_ASSERT_EQUAL_FATAL(cu_prov_register(f.prov, &req, &res), CU_OK);
    CU_ASSERT_EQUAL(res.outcome, CU_PROV_CHALLENGE);
    uint8_t raw[512], md[32];
    int rl = EVP_DecodeBlock(raw, (const unsigned char *)ek64, (int)strlen(ek64));
    size_t ekl = (size_t)rl - (ek64[strlen(ek64) - 1] == '=') - (ek64[strlen(ek64) - 2] == '=');
    char fp[65];
    CU_ASSERT_FATAL(rl > 0 && EVP_Digest(raw, ekl, md, NULL, EVP_sha256(), NULL) == 1);
    for (int i = 0; i < 32; i++)
        sprintf(fp + 2 * i, "%02x", md[i]);
    n = read_from(f.store, from, r, 4);
    CU_ASSERT_EQUAL_FATAL(n, 1);
    CU_ASSERT_STRING_EQUAL(r[0].type, "registration.challenge");
    CU_ASSERT_STRING_EQUAL(r[0].actor, "device:tpm-dev");
    CU_ASSERT_STRING_EQUAL(jstr(r[0].p, "attestation"), "tpm");
    CU_ASSERT_STRING_EQUAL(jstr(r[0].p, "outcome"), "challenge");
    CU_ASSERT_STRING_EQUAL(jstr(r[0].p, "decidedBy.id"), "tpm-dev");
    CU_ASSERT_STRING_EQUAL(jstr(r[0].p, "tpm.ekSha256"), fp);
    /* The credential made for the device is not in the log. */
    CU_ASSERT_PTR_NOT_NULL_FATAL(res.tpm_authentication_key);
    char blob[41];
    snprintf(blob, sizeof blob, "%.40s", res.tpm_authentication_key);
    CU_ASSERT_PTR_NULL(strstr(r[0].text, blob));
    recs_free(r, n);
    cu_prov_result_clear(&res);
    EVP_PKEY_free(ek);
    EVP_PKEY_free(srk);
    free(ek64);
    free(srk64);
    fx_close(&f);
}

/* ---- key uses per minute ---- */

static void test_key_use_per_minute(void)
{
    fx f;
    CU_ASSERT_FATAL(fx_open(&f, "aukey") == 0);
    CU_ASSERT_EQUAL(cu_audit_key_use_flush(f.store), CU_OK);
    uint64_t from = last_seq(f.store) + 1;
    time_t m = 1800000000; /* a minute boundary */
    CU_ASSERT_EQUAL(cu_audit_key_use_n(f.store, "tls-key", 1, m + 1), CU_OK);
    CU_ASSERT_EQUAL(cu_audit_key_use_n(f.store, "tls-key", 1, m + 30), CU_OK);
    CU_ASSERT_EQUAL(cu_audit_key_use_n(f.store, "policy-key", 5, m + 59), CU_OK);
    CU_ASSERT_EQUAL(last_seq(f.store) + 1, from); /* nothing yet: the minute is not over */
    /* The next minute's first use writes the finished minute: one record per key. */
    CU_ASSERT_EQUAL(cu_audit_key_use_n(f.store, "tls-key", 1, m + 61), CU_OK);
    cu_audit_record *r = NULL;
    size_t n = 0;
    CU_ASSERT_EQUAL_FATAL(cu_audit_read(f.store, from, 100, &r, &n), CU_OK);
    CU_ASSERT_EQUAL_FATAL(n, 2);
    CU_ASSERT_STRING_EQUAL(r[0].type, "key.use");
    CU_ASSERT_STRING_EQUAL(r[0].payload, "{\"key\":\"tls-key\",\"minute\":\"2027-01-15T08:00:00Z\",\"count\":2}");
    CU_ASSERT_STRING_EQUAL(r[1].payload, "{\"key\":\"policy-key\",\"minute\":\"2027-01-15T08:00:00Z\",\"count\":5}");
    cu_audit_records_free(r, n);
    CU_ASSERT_EQUAL(cu_audit_key_use_flush(f.store), CU_OK);
    CU_ASSERT_EQUAL_FATAL(cu_audit_read(f.store, from + 2, 100, &r, &n), CU_OK);
    CU_ASSERT_EQUAL_FATAL(n, 1);
    CU_ASSERT_STRING_EQUAL(r[0].payload, "{\"key\":\"tls-key\",\"minute\":\"2027-01-15T08:01:00Z\",\"count\":1}");
    cu_audit_records_free(r, n);
    fx_close(&f);
}

/* Counting without writing (any thread, no store), by role and operation,
 * written per key per minute when the minute is over; PINs never written. */
static void test_key_count_roles(void)
{
    fx f;
    CU_ASSERT_FATAL(fx_open(&f, "aucount") == 0);
    CU_ASSERT_EQUAL(cu_audit_key_use_flush(f.store), CU_OK);
    uint64_t from = last_seq(f.store) + 1;
    time_t m = 1700000040; /* 2023-11-14T22:14:00Z: over */
    const char *uri = "pkcs11:token=svc;object=keyring;type=secret-key?pin-value=1234&module-path=/x.so";
    CU_ASSERT_EQUAL(cu_audit_key_count(uri, "keyring", "mac", 3, m + 1), CU_OK);
    CU_ASSERT_EQUAL(cu_audit_key_count(uri, "keyring", "wrap", 2, m + 59), CU_OK);
    CU_ASSERT_EQUAL(cu_audit_key_count(uri, "keyring", "mac", 1, m + 2), CU_OK);
    /* Seven kinds of use: the sixth and seventh are "other". */
    const char *ops[] = {"a", "b", "c", "d", "e", "f", "g"};
    for (size_t i = 0; i < 7; i++)
        CU_ASSERT_EQUAL(cu_audit_key_count("many-ops", NULL, ops[i], 1, m + 3), CU_OK);
    CU_ASSERT_EQUAL(cu_audit_key_count("plain", NULL, NULL, 4, m + 4), CU_OK);
    /* The current minute is not over: not written by a due flush. */
    CU_ASSERT_EQUAL(cu_audit_key_count("now-key", "tls-server", "handshake", 1, 0), CU_OK);
    /* Refused: no key, a role or op longer than a word. */
    CU_ASSERT_EQUAL(cu_audit_key_count("", NULL, NULL, 1, m), CU_E_INVALID_ARG);
    CU_ASSERT_EQUAL(cu_audit_key_count("k", "a-role-longer-than-23-bytes", NULL, 1, m), CU_E_INVALID_ARG);
    CU_ASSERT_EQUAL(cu_audit_key_count("k", NULL, "", 1, m), CU_E_INVALID_ARG);
    CU_ASSERT_EQUAL(last_seq(f.store) + 1, from); /* counting never writes */

    CU_ASSERT_EQUAL(cu_audit_key_use_flush_due(f.store), CU_OK);
    cu_audit_record *r = NULL;
    size_t n = 0;
    CU_ASSERT_EQUAL_FATAL(cu_audit_read(f.store, from, 100, &r, &n), CU_OK);
    CU_ASSERT_EQUAL_FATAL(n, 3);
    CU_ASSERT_STRING_EQUAL(r[0].type, "key.use");
    CU_ASSERT_STRING_EQUAL(r[0].payload, "{\"key\":\"pkcs11:token=svc;object=keyring;type=secret-key?module-path=/x.so\","
                                         "\"role\":\"keyring\",\"minute\":\"2023-11-14T22:14:00Z\",\"count\":6,"
                                         "\"uses\":{\"mac\":4,\"wrap\":2}}");
    CU_ASSERT_STRING_EQUAL(r[1].payload, "{\"key\":\"many-ops\",\"minute\":\"2023-11-14T22:14:00Z\",\"count\":7,"
                                         "\"uses\":{\"a\":1,\"b\":1,\"c\":1,\"d\":1,\"e\":1,\"other\":2}}");
    CU_ASSERT_STRING_EQUAL(r[2].payload, "{\"key\":\"plain\",\"minute\":\"2023-11-14T22:14:00Z\",\"count\":4}");
    cu_audit_records_free(r, n);
    /* The current minute's count waits for the final flush. */
    CU_ASSERT_EQUAL(last_seq(f.store), from + 2);
    CU_ASSERT_EQUAL(cu_audit_key_use_flush(f.store), CU_OK);
    CU_ASSERT_EQUAL_FATAL(cu_audit_read(f.store, from + 3, 100, &r, &n), CU_OK);
    CU_ASSERT_EQUAL_FATAL(n, 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(r[0].payload, "\"key\":\"now-key\",\"role\":\"tls-server\""));
    CU_ASSERT_PTR_NOT_NULL(strstr(r[0].payload, "\"count\":1,\"uses\":{\"handshake\":1}"));
    cu_audit_records_free(r, n);
    fx_close(&f);
}

/* The audit key's signatures are its uses once the store names it. */
static void test_signer_uses_counted(void)
{
    fx f;
    EVP_PKEY *key = ec_key();
    uint64_t seq = 0;
    CU_ASSERT_FATAL(fx_open(&f, "ausigner") == 0 && key != NULL);
    CU_ASSERT_EQUAL(cu_audit_key_use_flush(f.store), CU_OK);
    CU_ASSERT_EQUAL(cu_audit_set_signer(f.store, key, 2, 0), CU_OK);
    CU_ASSERT_PTR_EQUAL(cu_audit_get0_signer(f.store), key);
    /* Unnamed: signatures are not counted. */
    CU_ASSERT_EQUAL(cu_audit_append(f.store, "test.event", NULL, "{}", NULL), CU_OK);
    CU_ASSERT_EQUAL(cu_audit_append(f.store, "test.event", NULL, "{}", NULL), CU_OK);
    CU_ASSERT_EQUAL(cu_audit_key_use_flush(f.store), CU_OK);
    uint64_t from = last_seq(f.store) + 1;
    CU_ASSERT_EQUAL(cu_audit_set_signer_name(f.store, "file:/state/audit.key"), CU_OK);
    for (int i = 0; i < 4; i++) /* heads at every second record: 2 */
        CU_ASSERT_EQUAL(cu_audit_append(f.store, "test.event", NULL, "{}", NULL), CU_OK);
    CU_ASSERT_EQUAL(cu_audit_sign_head(f.store, NULL, &seq), CU_OK); /* the last record: a third */
    CU_ASSERT_EQUAL(cu_audit_sign_head(f.store, NULL, &seq), CU_OK); /* signed already: no use */
    /* A key that is not the signer is not the audit key. */
    EVP_PKEY *other = ec_key();
    CU_ASSERT_EQUAL(cu_audit_append(f.store, "test.event", NULL, "{}", NULL), CU_OK);
    CU_ASSERT_EQUAL(cu_audit_sign_head(f.store, other, &seq), CU_OK);
    CU_ASSERT_EQUAL(cu_audit_set_signer(f.store, key, 0, 0), CU_OK); /* no head for the flush itself */
    CU_ASSERT_EQUAL(cu_audit_key_use_flush(f.store), CU_OK);
    cu_audit_record *r = NULL;
    size_t n = 0;
    CU_ASSERT_EQUAL_FATAL(cu_audit_read(f.store, from, 100, &r, &n), CU_OK);
    CU_ASSERT_EQUAL_FATAL(n, 6);
    CU_ASSERT_STRING_EQUAL(r[5].type, "key.use");
    CU_ASSERT_PTR_NOT_NULL(strstr(r[5].payload, "\"key\":\"file:/state/audit.key\",\"role\":\"audit\""));
    CU_ASSERT_PTR_NOT_NULL(strstr(r[5].payload, "\"count\":3,\"uses\":{\"sign\":3}}"));
    cu_audit_records_free(r, n);
    CU_ASSERT_EQUAL(cu_audit_set_signer_name(f.store, NULL), CU_OK);
    EVP_PKEY_free(other);
    EVP_PKEY_free(key);
    fx_close(&f);
}

/* Signing by time: the first append T seconds after the last head (or
 * after the signer was set, when that is later) signs; a service timer
 * signs a quiet log. */
static void test_sign_by_time(void)
{
    fx f;
    EVP_PKEY *key = ec_key();
    cu_audit_head *h = NULL;
    size_t nh = 0;
    CU_ASSERT_FATAL(fx_open(&f, "autime") == 0 && key != NULL);
    CU_ASSERT_EQUAL(cu_audit_set_signer(f.store, key, 0, 2), CU_OK);
    /* No head yet, but the period starts with the signer: the first
     * appends are not due (a service's first records are not each
     * signed at once by every worker). */
    uint64_t second = 0, third = 0;
    CU_ASSERT_EQUAL(cu_audit_append(f.store, "test.event", NULL, "{}", NULL), CU_OK);
    CU_ASSERT_EQUAL(cu_audit_append(f.store, "test.event", NULL, "{}", &second), CU_OK);
    CU_ASSERT_EQUAL(cu_audit_sign_if_due(f.store), CU_OK);
    CU_ASSERT_EQUAL(cu_audit_heads_read(f.store, 1, 10, &h, &nh), CU_OK);
    CU_ASSERT_EQUAL(nh, 0);
    cu_audit_heads_free(h, nh);
    sleep(2);
    CU_ASSERT_EQUAL(cu_audit_sign_if_due(f.store), CU_OK); /* due now */
    CU_ASSERT_EQUAL(cu_audit_append(f.store, "test.event", NULL, "{}", &third), CU_OK); /* not: just signed */
    CU_ASSERT_EQUAL(cu_audit_heads_read(f.store, 1, 10, &h, &nh), CU_OK);
    CU_ASSERT_EQUAL(nh, 1);
    if (nh == 1)
        CU_ASSERT_EQUAL(h[0].seq, second);
    cu_audit_heads_free(h, nh);
    /* Every second: the timer signs the unsigned record. */
    CU_ASSERT_EQUAL(cu_audit_set_signer(f.store, key, 0, 1), CU_OK);
    sleep(1);
    CU_ASSERT_EQUAL(cu_audit_sign_if_due(f.store), CU_OK);
    CU_ASSERT_EQUAL(cu_audit_heads_read(f.store, 1, 10, &h, &nh), CU_OK);
    CU_ASSERT_EQUAL(nh, 2);
    if (nh == 2)
        CU_ASSERT_EQUAL(h[1].seq, third);
    cu_audit_heads_free(h, nh);
    cu_audit_report rep;
    CU_ASSERT_EQUAL(cu_audit_verify(f.store, &key, 1, &rep), CU_OK);
    CU_ASSERT_EQUAL(rep.heads_verified, 2);

    /* An audit key that cannot sign (here: only its public half) fails no
     * change; the timer call reports it. */
    unsigned char *der = NULL;
    int len = i2d_PUBKEY(key, &der);
    const unsigned char *p = der;
    EVP_PKEY *pub = d2i_PUBKEY(NULL, &p, len);
    OPENSSL_free(der);
    CU_ASSERT_PTR_NOT_NULL_FATAL(pub);
    CU_ASSERT_EQUAL(cu_audit_set_signer(f.store, pub, 1, 0), CU_OK);
    cu_hub hub = {"hub9.example.net", 1, true};
    CU_ASSERT_EQUAL(cu_store_hub_put(f.store, &hub, NULL, 0), CU_OK);
    CU_ASSERT_EQUAL(cu_store_hub_get(f.store, "hub9.example.net", &hub), CU_OK);
    CU_ASSERT_EQUAL(cu_audit_sign_if_due(f.store), CU_E_CRYPTO);
    CU_ASSERT_EQUAL(cu_audit_heads_read(f.store, 1, 10, &h, &nh), CU_OK);
    CU_ASSERT_EQUAL(nh, 2);
    cu_audit_heads_free(h, nh);
    /* The key is back: the timer signs. */
    CU_ASSERT_EQUAL(cu_audit_set_signer(f.store, key, 1, 0), CU_OK);
    CU_ASSERT_EQUAL(cu_audit_append(f.store, "test.event", NULL, "{}", NULL), CU_OK);
    CU_ASSERT_EQUAL(cu_audit_verify(f.store, &key, 1, &rep), CU_OK);
    CU_ASSERT_EQUAL(rep.last_signed_seq, rep.last_seq);
    EVP_PKEY_free(pub);
    EVP_PKEY_free(key);
    fx_close(&f);
}

/* A schema 1 store: its unchained events move aside, the chain starts. */
static void test_migrate_v1(void)
{
    char *dir = cu_test_mkdtemp("auv1"), path[4096];
    static const unsigned char k[32] = "custos-test-keyring-key-32bytes!";
    cu_keyring *kr = NULL;
    cu_store *s = NULL;
    sqlite3 *db = NULL;
    snprintf(path, sizeof path, "%s/custos.db", dir);
    CU_ASSERT_EQUAL_FATAL(sqlite3_open(path, &db), SQLITE_OK);
    CU_ASSERT_EQUAL(sqlite3_exec(db,
                                 "CREATE TABLE docs(kind INTEGER NOT NULL, id TEXT NOT NULL, body TEXT NOT NULL,"
                                 "  seal BLOB NOT NULL, PRIMARY KEY(kind, id)) WITHOUT ROWID;"
                                 "CREATE TABLE keys(kind INTEGER NOT NULL, key TEXT NOT NULL, id TEXT NOT NULL,"
                                 "  PRIMARY KEY(kind, key, id)) WITHOUT ROWID;"
                                 "CREATE INDEX keys_by_id ON keys(kind, id);"
                                 "CREATE TABLE meta(name TEXT PRIMARY KEY, value TEXT NOT NULL);"
                                 "CREATE TABLE audit(seq INTEGER PRIMARY KEY AUTOINCREMENT,"
                                 "  at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')), event TEXT NOT NULL);"
                                 "INSERT INTO audit(event) VALUES('{\"event\":\"register\"}');"
                                 "PRAGMA user_version=1;",
                                 NULL, NULL, NULL),
                    SQLITE_OK);
    sqlite3_close(db);
    CU_ASSERT_EQUAL_FATAL(cu_keyring_software_new(k, sizeof k, &kr), CU_OK);
    CU_ASSERT_EQUAL_FATAL(cu_store_open_sqlite(path, kr, &s), CU_OK);
    CU_ASSERT_EQUAL(count_records(s), 0);
    cu_hub h = {"hub1.example.net", 1, true};
    CU_ASSERT_EQUAL(cu_store_hub_put(s, &h, NULL, 0), CU_OK);
    CU_ASSERT_EQUAL(count_records(s), 1);
    cu_audit_report rep;
    CU_ASSERT_EQUAL(cu_audit_verify(s, NULL, 0, &rep), CU_OK);
    cu_store_close(s);
    cu_keyring_free(kr);
    sqlite3_stmt *st = NULL;
    CU_ASSERT_EQUAL_FATAL(sqlite3_open(path, &db), SQLITE_OK);
    sqlite3_prepare_v2(db, "SELECT count(*) FROM audit_v1", -1, &st, NULL);
    CU_ASSERT_EQUAL(sqlite3_step(st), SQLITE_ROW);
    CU_ASSERT_EQUAL(sqlite3_column_int(st, 0), 1);
    sqlite3_finalize(st);
    sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL);
    CU_ASSERT_EQUAL(sqlite3_step(st), SQLITE_ROW);
    CU_ASSERT_EQUAL(sqlite3_column_int(st, 0), CU_STORE_SCHEMA_VERSION);
    sqlite3_finalize(st);
    sqlite3_close(db);
    cu_test_rmtree(dir);
    free(dir);
}

static cu_rc collect_line(void *ctx, const char *json)
{
    int *n = ctx;
    (*n)++;
    return strncmp(json, "{\"seq\":", 7) == 0 ? CU_OK : cu_err_set(CU_E_STATE, "bad line");
}

static void test_export_and_args(void)
{
    fx f;
    int n = 0;
    CU_ASSERT_FATAL(fx_open(&f, "auexp") == 0);
    for (int i = 0; i < 4; i++)
        CU_ASSERT_EQUAL(cu_audit_append(f.store, "test.event", NULL, "{\"x\":\"\\u00e9\\n\"}", NULL), CU_OK);
    CU_ASSERT_EQUAL(cu_audit_export(f.store, 0, 0, collect_line, &n), CU_OK);
    CU_ASSERT_EQUAL(n, 5);
    n = 0;
    CU_ASSERT_EQUAL(cu_audit_export(f.store, 4, 0, collect_line, &n), CU_OK);
    CU_ASSERT_EQUAL(n, 2);
    n = 0;
    CU_ASSERT_EQUAL(cu_audit_export(f.store, 0, time(NULL) + 3600, collect_line, &n), CU_OK);
    CU_ASSERT_EQUAL(n, 0);
    /* Refusals of the API. */
    CU_ASSERT_EQUAL(cu_audit_append(f.store, "", NULL, "{}", NULL), CU_E_INVALID_ARG);
    CU_ASSERT_EQUAL(cu_audit_append(f.store, "a-type-much-longer-than-forty-seven-bytes-allowed", NULL, "{}", NULL),
                    CU_E_INVALID_ARG);
    CU_ASSERT_EQUAL(cu_audit_sign_head(f.store, NULL, NULL), CU_E_INVALID_ARG); /* no key */
    CU_ASSERT_EQUAL(cu_audit_token_event(f.dir, NULL, "Key Gen", NULL, NULL, NULL), CU_E_INVALID_ARG);
    CU_ASSERT_EQUAL(count_records(f.store), 5);
    fx_close(&f);
}

/* Two threads, each with its own connection to the same store, append at
 * once (and count key uses at once): the write transaction serializes the
 * appends, so the chain stays whole; the per-minute count is exact. */
typedef struct worker {
    fx *f;
    cu_keyring *kr;
    int n;
    time_t now;
    cu_rc rc;
} worker;

static void *append_many(void *arg)
{
    worker *w = arg;
    cu_store *s = NULL;
    if ((w->rc = fx_store_reopen(w->f, w->kr, &s)) != CU_OK)
        return NULL;
    for (int i = 0; i < w->n && w->rc == CU_OK; i++) {
        w->rc = cu_audit_append(s, "test.concurrent", NULL, "{}", NULL);
        if (w->rc == CU_OK)
            w->rc = cu_audit_key_use_n(s, "shared-key", 1, w->now);
    }
    cu_store_close(s);
    return NULL;
}

static void test_concurrent_appends(void)
{
    fx f;
    pthread_t t[2];
    CU_ASSERT_FATAL(fx_open(&f, "auconc") == 0);
    CU_ASSERT_EQUAL(cu_audit_key_use_flush(f.store), CU_OK);
    /* A minute that is not over when the workers close their stores. */
    time_t later = time(NULL) + 3600;
    worker w[2] = {{&f, f.kr, 200, later, CU_OK}, {&f, f.kr, 200, later, CU_OK}};
    for (int i = 0; i < 2; i++)
        CU_ASSERT_EQUAL_FATAL(pthread_create(&t[i], NULL, append_many, &w[i]), 0);
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    CU_ASSERT_EQUAL(w[0].rc, CU_OK);
    CU_ASSERT_EQUAL(w[1].rc, CU_OK);
    /* The minute's count, kept across the workers' stores, in one record. */
    CU_ASSERT_EQUAL(cu_audit_key_use_flush(f.store), CU_OK);
    cu_audit_record *r = NULL;
    size_t n = 0, uses = 0;
    unsigned long count = 0;
    CU_ASSERT_EQUAL_FATAL(cu_audit_read(f.store, 1, 1000, &r, &n), CU_OK);
    CU_ASSERT_EQUAL(n, 1 + 400 + 1);
    for (size_t i = 0; i < n; i++)
        if (strcmp(r[i].type, "key.use") == 0) {
            uses++;
            const char *c = strstr(r[i].payload, "\"count\":");
            count += c ? strtoul(c + 8, NULL, 10) : 0;
        }
    CU_ASSERT_EQUAL(uses, 1);
    CU_ASSERT_EQUAL(count, 400);
    cu_audit_records_free(r, n);
    cu_audit_report rep;
    CU_ASSERT_EQUAL(cu_audit_verify(f.store, NULL, 0, &rep), CU_OK);
    CU_ASSERT_EQUAL(rep.last_seq, 402);
    fx_close(&f);
}

int main(void)
{
    static const cu_test_case cases[] = {
        {"canonical form", test_canonical},
        {"chain, signed heads, a re-chained rewrite", test_chain_and_signed_heads},
        {"Ed25519 head", test_ed25519_head},
        {"a truncated tail's head is never replaced", test_head_kept_after_truncation},
        {"a head signed in a rolled-back transaction", test_sign_rolled_back},
        {"a change and its record in one transaction", test_same_transaction},
        {"seed example: who decided, from the log", test_seed_from_log},
        {"no secret in the database", test_no_secrets},
        {"CA certificate records, the code never in them", test_ca_records},
        {"enrollment and group updates and deletes, before and after", test_enrollment_changes},
        {"a decision's attestation, reason, chain and TPM EK", test_decision_fields},
        {"key uses per key per minute", test_key_use_per_minute},
        {"key uses counted by role and operation", test_key_count_roles},
        {"the audit key's signatures counted", test_signer_uses_counted},
        {"signing by time, and from a timer", test_sign_by_time},
        {"a schema 1 store migrates", test_migrate_v1},
        {"export, and refused arguments", test_export_and_args},
        {"two writers at once", test_concurrent_appends},
        {NULL, NULL},
    };
    if (cu_test_add_suite("audit", setup, teardown, cases) != 0)
        return 2;
    return cu_test_run();
}
