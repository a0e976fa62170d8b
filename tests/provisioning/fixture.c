#include "fixture.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <sqlite3.h>
#include <unistd.h>

bool fx_is_pg(void)
{
    const char *s = getenv("CUSTOS_TEST_STORE");
    return s != NULL && strcmp(s, "postgresql") == 0;
}

static char pg_uri[512], pg_pwfile[512];

/* The server's URI (pg_fixture.sh start wrote it). */
static int pg_server(void)
{
    const char *d = getenv("CUSTOS_TEST_PG_DIR");
    char path[600];
    if (pg_uri[0])
        return 0;
    if (d == NULL) {
        fprintf(stderr, "CUSTOS_TEST_STORE=postgresql needs CUSTOS_TEST_PG_DIR\n");
        return -1;
    }
    snprintf(path, sizeof path, "%s/uri", d);
    FILE *fp = fopen(path, "r");
    if (fp == NULL || fgets(pg_uri, sizeof pg_uri, fp) == NULL) {
        fprintf(stderr, "no PostgreSQL fixture in %s\n", d);
        if (fp)
            fclose(fp);
        return -1;
    }
    fclose(fp);
    pg_uri[strcspn(pg_uri, "\r\n")] = 0;
    snprintf(pg_pwfile, sizeof pg_pwfile, "%s/password", d);
    return 0;
}

static PGconn *pg_admin(void)
{
    char pw[128] = "";
    FILE *fp = fopen(pg_pwfile, "r");
    if (fp != NULL) {
        if (fgets(pw, sizeof pw, fp) == NULL)
            pw[0] = 0;
        fclose(fp);
    }
    pw[strcspn(pw, "\r\n")] = 0;
    const char *kw[] = {"dbname", "password", NULL}, *val[] = {pg_uri, pw, NULL};
    PGconn *c = PQconnectdbParams(kw, val, 1);
    if (PQstatus(c) != CONNECTION_OK) {
        fprintf(stderr, "PostgreSQL: %s\n", PQerrorMessage(c));
        PQfinish(c);
        return NULL;
    }
    PQclear(PQexec(c, "SET client_min_messages = warning"));
    return c;
}

static int pg_exec(const char *sql, const char *schema)
{
    PGconn *c = pg_admin();
    int n = -1;
    if (c == NULL)
        return -1;
    if (schema != NULL) {
        char set[200];
        snprintf(set, sizeof set, "SET search_path = %s", schema);
        PQclear(PQexec(c, set));
    }
    PGresult *r = PQexec(c, sql);
    if (PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK)
        n = atoi(PQcmdTuples(r));
    else
        fprintf(stderr, "PostgreSQL: %s\n", PQresultErrorMessage(r));
    PQclear(r);
    PQfinish(c);
    return n;
}

static int fx_spec(fx *f, const char *tag)
{
    static unsigned counter;
    char sch[96], sql[160], spec[800];
    if (!fx_is_pg())
        return (f->spec = strdup(f->dir)) ? 0 : -1;
    if (pg_server() != 0)
        return -1;
    snprintf(sch, sizeof sch, "fx_%.20s_%ld_%u", tag, (long)getpid(), counter++);
    for (char *p = sch; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9')))
            *p = '_';
    snprintf(sql, sizeof sql, "CREATE SCHEMA %s", sch);
    if (pg_exec(sql, NULL) < 0)
        return -1;
    snprintf(spec, sizeof spec, "%s%coptions=-csearch_path%%3D%s", pg_uri, strchr(pg_uri, '?') ? '&' : '?', sch);
    f->schema = strdup(sch);
    f->spec = strdup(spec);
    return f->schema && f->spec ? 0 : -1;
}

cu_rc fx_store_reopen(fx *f, cu_keyring *kr, cu_store **_s)
{
    return fx_is_pg() ? cu_store_open_postgres(f->spec, pg_pwfile, kr, _s) : cu_store_open_dir(f->dir, kr, _s);
}

int fx_sql(fx *f, const char *sql)
{
    if (fx_is_pg())
        return pg_exec(sql, f->schema);
    char path[4096];
    sqlite3 *db = NULL;
    int n = -1;
    snprintf(path, sizeof path, "%s/custos.db", f->dir);
    if (sqlite3_open(path, &db) == SQLITE_OK && sqlite3_exec(db, sql, NULL, NULL, NULL) == SQLITE_OK)
        n = sqlite3_changes(db);
    sqlite3_close(db);
    return n;
}

int fx_open(fx *f, const char *tag)
{
    static const unsigned char key[32] = "custos-test-keyring-key-32bytes!";
    memset(f, 0, sizeof *f);
    if ((f->dir = cu_test_mkdtemp(tag)) == NULL)
        return -1;
    if (cu_keyring_software_new(key, sizeof key, &f->kr) != CU_OK)
        return -1;
    if (fx_spec(f, tag) != 0)
        return -1;
    if (fx_store_reopen(f, f->kr, &f->store) != CU_OK) {
        fprintf(stderr, "store: %s\n", cu_err_last()->msg);
        return -1;
    }
    cu_prov_config cfg = {.id_scope = "0ne00000001", .sas_skew = 60, .webhook_timeout_ms = 800};
    if (cu_prov_new(f->store, &cfg, &f->prov) != CU_OK)
        return -1;
    cu_hub h = {"hub1.example.net", 1, true};
    return cu_store_hub_put(f->store, &h, NULL, 0) == CU_OK ? 0 : -1;
}

void fx_close(fx *f)
{
    cu_prov_free(f->prov);
    cu_store_close(f->store);
    cu_keyring_free(f->kr);
    cu_test_rmtree(f->dir);
    if (f->schema != NULL) {
        char sql[160];
        snprintf(sql, sizeof sql, "DROP SCHEMA %s CASCADE", f->schema);
        (void)pg_exec(sql, NULL);
    }
    free(f->dir);
    free(f->spec);
    free(f->schema);
    memset(f, 0, sizeof *f);
}

int tc_make(tcert *out, const char *cn, bool ca, const tcert *issuer, long nb, long na)
{
    memset(out, 0, sizeof *out);
    if (cu_pki_keygen(&out->key) != CU_OK)
        return -1;
    cu_pki_spec s = {.cn = cn, .ca = ca, .pathlen = -1, .not_before = nb, .not_after = na,
                     .client_auth = !ca};
    return cu_pki_issue(&s, out->key, issuer ? issuer->cert : NULL, issuer ? issuer->key : out->key,
                        &out->cert) == CU_OK ? 0 : -1;
}

void tc_free(tcert *t)
{
    X509_free(t->cert);
    EVP_PKEY_free(t->key);
    memset(t, 0, sizeof *t);
}

int tc_set_ext(tcert *t, const tcert *issuer, int nid, const char *value)
{
    const tcert *by = issuer ? issuer : t;
    int loc = X509_get_ext_by_NID(t->cert, nid, -1);
    if (loc >= 0)
        X509_EXTENSION_free(X509_delete_ext(t->cert, loc));
    if (value != NULL) {
        X509V3_CTX ctx;
        X509V3_set_ctx_nodb(&ctx);
        X509V3_set_ctx(&ctx, by->cert, t->cert, NULL, NULL, 0);
        X509_EXTENSION *ex = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
        int ok = ex != NULL && X509_add_ext(t->cert, ex, -1);
        X509_EXTENSION_free(ex);
        if (!ok)
            return -1;
    }
    if (X509_sign(t->cert, by->key, EVP_sha256()) <= 0)
        return -1;
    /* Parse it again: OpenSSL caches what it read of the extensions. */
    unsigned char *der = NULL;
    int n = i2d_X509(t->cert, &der);
    const unsigned char *q = der;
    X509 *fresh = n > 0 ? d2i_X509(NULL, &q, n) : NULL;
    OPENSSL_free(der);
    if (fresh == NULL)
        return -1;
    X509_free(t->cert);
    t->cert = fresh;
    return 0;
}

char *tc_pem(const tcert *t) { return cu_x509_to_pem(t->cert); }

cu_x509_chain *tc_chain(const tcert *leaf, ...)
{
    STACK_OF(X509) *st = sk_X509_new_null();
    va_list ap;
    va_start(ap, leaf);
    const tcert *c;
    while ((c = va_arg(ap, const tcert *)) != NULL)
        sk_X509_push(st, c->cert);
    va_end(ap);
    cu_x509_chain *ch = NULL;
    if (cu_x509_chain_from_certs(leaf->cert, st, &ch) != CU_OK)
        ch = NULL;
    sk_X509_free(st); /* references were taken by the chain */
    return ch;
}

cu_rc fx_put_json(fx *f, cu_enr_kind kind, char *reason, size_t rlen, const char *fmt, ...)
{
    char *js = NULL;
    va_list ap;
    va_start(ap, fmt);
    int n = vasprintf(&js, fmt, ap);
    va_end(ap);
    if (n < 0)
        return CU_E_NOMEM;
    cu_enr *e = NULL;
    cu_rc rc = cu_enr_parse(kind, js, (size_t)n, &e, reason, rlen);
    if (rc == CU_OK)
        rc = cu_store_enr_put(f->store, e, NULL, 0, reason, rlen);
    cu_enr_free(e);
    free(js);
    return rc;
}

static char *json_escape_pem(const char *pem)
{
    size_t n = strlen(pem);
    char *o = malloc(2 * n + 1), *q = o;
    for (const char *p = pem; *p; p++) {
        if (*p == '\n') {
            *q++ = '\\';
            *q++ = 'n';
        } else {
            *q++ = *p;
        }
    }
    *q = 0;
    return o;
}

char *tc_pem_json(const tcert *t)
{
    char *pem = tc_pem(t), *esc = pem ? json_escape_pem(pem) : NULL;
    free(pem);
    return esc;
}

cu_rc fx_group_x509(fx *f, const char *id, const tcert *ca, bool enabled)
{
    char *pem = tc_pem(ca), *esc = json_escape_pem(pem);
    char reason[512] = "";
    cu_rc rc = fx_put_json(f, CU_ENR_GROUP, reason, sizeof reason,
                           "{\"enrollmentGroupId\":\"%s\",\"provisioningStatus\":\"%s\","
                           "\"attestation\":{\"type\":\"x509\",\"x509\":{\"signingCertificates\":"
                           "{\"primary\":{\"certificate\":\"%s\"}}}}}",
                           id, enabled ? "enabled" : "disabled", esc);
    if (rc != CU_OK)
        fprintf(stderr, "group %s: %s\n", id, reason);
    free(pem);
    free(esc);
    return rc;
}

cu_rc fx_individual_x509(fx *f, const char *regid, const tcert *leaf, bool enabled)
{
    char *pem = tc_pem(leaf), *esc = json_escape_pem(pem);
    char reason[512] = "";
    cu_rc rc = fx_put_json(f, CU_ENR_INDIVIDUAL, reason, sizeof reason,
                           "{\"registrationId\":\"%s\",\"provisioningStatus\":\"%s\","
                           "\"attestation\":{\"type\":\"x509\",\"x509\":{\"clientCertificates\":"
                           "{\"primary\":{\"certificate\":\"%s\"}}}}}",
                           regid, enabled ? "enabled" : "disabled", esc);
    if (rc != CU_OK)
        fprintf(stderr, "individual %s: %s\n", regid, reason);
    free(pem);
    free(esc);
    return rc;
}

cu_prov_outcome fx_register_x509(fx *f, const char *regid, const cu_x509_chain *chain, char *reason,
                                 size_t rlen)
{
    cu_prov_request req = {.registration_id = regid, .chain = chain};
    cu_prov_result res;
    if (cu_prov_register(f->prov, &req, &res) != CU_OK) {
        snprintf(reason, rlen, "error: %s", cu_err_last()->msg);
        return CU_PROV_UNDECIDED;
    }
    snprintf(reason, rlen, "%s", res.explain.reason);
    cu_prov_outcome o = res.outcome;
    cu_prov_result_clear(&res);
    return o;
}

bool fx_has_record(fx *f, const char *regid)
{
    cu_reg_record r;
    bool have = cu_store_reg_get(f->store, regid, &r) == CU_OK;
    cu_reg_record_clear(&r);
    return have;
}

size_t fx_tpm_rsa_pub(EVP_PKEY *rsa, uint8_t out[FX_TPM_PUB_LEN])
{
    /* type RSA, nameAlg SHA-256, restricted|decrypt|fixedTPM|fixedParent|
     * sensitiveDataOrigin|adminWithPolicy, a 32-byte policy; AES-128-CFB,
     * no scheme, 2048 bits, exponent 0 (65537). */
    static const uint8_t head[] = {0x00, 0x01, 0x00, 0x0B, 0x00, 0x03, 0x00, 0xB2, 0x00, 0x20};
    static const uint8_t parms[] = {0x00, 0x06, 0x00, 0x80, 0x00, 0x43, 0x00, 0x10,
                                    0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00};
    BIGNUM *bn = NULL;
    size_t n = 2;
    if (EVP_PKEY_get_bn_param(rsa, OSSL_PKEY_PARAM_RSA_N, &bn) != 1 || BN_num_bytes(bn) != 256) {
        BN_free(bn);
        return 0;
    }
    memcpy(out + n, head, sizeof head);
    n += sizeof head;
    memset(out + n, 0x5A, 32);
    n += 32;
    memcpy(out + n, parms, sizeof parms);
    n += sizeof parms;
    BN_bn2binpad(bn, out + n, 256);
    BN_free(bn);
    n += 256;
    out[0] = (uint8_t)((n - 2) >> 8);
    out[1] = (uint8_t)(n - 2);
    return n;
}

char *fx_b64(const uint8_t *p, size_t n)
{
    char *b = malloc(4 * ((n + 2) / 3) + 1);
    if (b != NULL)
        EVP_EncodeBlock((unsigned char *)b, p, (int)n);
    return b;
}

char *fx_tpm_rsa_pub_b64(EVP_PKEY *rsa)
{
    uint8_t out[FX_TPM_PUB_LEN];
    size_t n = fx_tpm_rsa_pub(rsa, out);
    return n ? fx_b64(out, n) : NULL;
}

const char *const fx_seed_ids[5] = {"device-1", "device-2", "device-3", "device-4", "device-5"};

int fx_seed_make(fx_seed *s)
{
    const long day = 86400L;
    memset(s, 0, sizeof *s);
    if (tc_make(&s->root, "Custos Test Root", true, NULL, -day, 3650 * day) ||
        tc_make(&s->ca_a, "Certificate A", true, &s->root, -day, 1000 * day) ||
        tc_make(&s->ca_b, "Certificate B", true, &s->root, -day, 1000 * day))
        goto fail;
    for (int i = 0; i < 5; i++) {
        const tcert *ca = i < 3 ? &s->ca_a : &s->ca_b;
        if (tc_make(&s->dev[i], fx_seed_ids[i], false, ca, -day, 365 * day) ||
            (s->chain[i] = tc_chain(&s->dev[i], ca, NULL)) == NULL)
            goto fail;
    }
    return 0;
fail:
    fx_seed_free(s);
    return -1;
}

void fx_seed_free(fx_seed *s)
{
    for (int i = 0; i < 5; i++) {
        cu_x509_chain_free(s->chain[i]);
        s->chain[i] = NULL;
        tc_free(&s->dev[i]);
    }
    tc_free(&s->ca_a);
    tc_free(&s->ca_b);
    tc_free(&s->root);
}
