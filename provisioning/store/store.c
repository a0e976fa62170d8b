/* The common layer of the store: ids, etags, timestamps, wrapping of
 * secrets and seals, over any backend. */
#include <custos/store.h>
#include <custos/x509.h>

#include "../core/prov_int.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <stddef.h>
#include <string.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

struct cu_store {
    const cu_store_backend *ops;
    void *b;
    cu_keyring *kr;
    int depth; /* transaction nesting */
    bool failed; /* an inner step failed after writing: the outermost commit rolls back */
    unsigned long writes;     /* writes so far */
    unsigned long wmark[16];  /* writes when each nesting level began */
    cu_prov__audit_cfg audit; /* actor, signer (core/audit.c) */
};

/* The HTTP status a refusal maps to (404, 409, 412), for the service. */
static _Thread_local int last_http;

int cu_store_last_http_status(void) { return last_http; }

void cu_prov__store_set_last_http(int status) { last_http = status; }

static const char *kind_domain(int kind)
{
    switch (kind) {
    case CU_KIND_ENROLLMENT: return "enrollment";
    case CU_KIND_GROUP: return "enrollmentGroup";
    case CU_KIND_CA: return "caCertificate";
    case CU_KIND_HUB: return "hub";
    case CU_KIND_REGISTRATION: return "registration";
    case CU_KIND_TPM_CHALLENGE: return "tpmChallenge";
    case CU_KIND_OPERATION: return "operation";
    default: return "setting";
    }
}

/* The seal binds kind, id and body: a row cannot be edited, nor moved to
 * another id or kind. */
static cu_rc seal_row(cu_store *s, int kind, const char *id, const char *body, uint8_t out[32])
{
    size_t il = strlen(id), bl = strlen(body);
    uint8_t *buf = malloc(il + 1 + bl);
    if (buf == NULL)
        return cu_err_set(CU_E_NOMEM, "out of memory");
    memcpy(buf, id, il);
    buf[il] = 0;
    memcpy(buf + il + 1, body, bl);
    cu_rc rc = cu_keyring_seal(s->kr, kind_domain(kind), buf, il + 1 + bl, out);
    free(buf);
    return rc;
}

static cu_rc check_row(cu_store *s, int kind, const char *id, const char *body, const uint8_t seal[32])
{
    uint8_t mac[32];
    cu_rc rc = seal_row(s, kind, id, body, mac);
    if (rc == CU_OK && CRYPTO_memcmp(mac, seal, 32) != 0)
        rc = cu_err_set(CU_E_VERIFY, "the %s '%s' fails its seal: it was changed outside Custos "
                                     "or under another service key; refusing to use it",
                        kind_domain(kind), id);
    OPENSSL_cleanse(mac, sizeof mac);
    return rc;
}

static const char KEYRING_CHECK[] = "keyring-check";

cu_prov__audit_cfg *cu_prov__store_audit_cfg(cu_store *s) { return &s->audit; }

const cu_store_backend *cu_prov__store_backend(cu_store *s, void **_b)
{
    *_b = s->b;
    return s->ops;
}

void cu_prov__store_note_write(cu_store *s) { s->writes++; }

cu_rc cu_store_set_actor(cu_store *s, const char *actor)
{
    cu_prov__return_val_if_fail(s != NULL && actor != NULL && *actor != 0, CU_E_INVALID_ARG);
    snprintf(s->audit.actor, sizeof s->audit.actor, "%s", actor);
    return CU_OK;
}

const char *cu_store_get0_actor(const cu_store *s) { return s ? s->audit.actor : NULL; }

/* Until the caller says who it acts for: the local user of the process. */
static void default_actor(cu_store *s)
{
    char host[256] = "localhost", buf[1024];
    struct passwd pw, *res = NULL;
    const char *user = "uid";
    if (gethostname(host, sizeof host) != 0)
        snprintf(host, sizeof host, "localhost");
    host[sizeof host - 1] = 0;
    if (getpwuid_r(getuid(), &pw, buf, sizeof buf, &res) == 0 && res != NULL)
        user = res->pw_name;
    snprintf(s->audit.actor, sizeof s->audit.actor, "local:%.40s@%.100s", user, host);
}

cu_rc cu_store_open_backend(const cu_store_backend *ops, void *b, cu_keyring *kr, cu_store **_out)
{
    cu_rc rc = CU_OK;
    cu_store *s = NULL;
    char *have = NULL, hex[65];
    uint8_t mac[32];

    if (ops == NULL || b == NULL || kr == NULL || _out == NULL) {
        if (ops != NULL && b != NULL)
            ops->close(b);
        return cu_err_set(CU_E_INVALID_ARG, "%s: precondition failed", __func__);
    }
    *_out = NULL;
    if ((s = calloc(1, sizeof *s)) == NULL) {
        ops->close(b);
        return cu_err_set(CU_E_NOMEM, "out of memory");
    }
    s->ops = ops;
    s->b = b;
    s->kr = kr;
    default_actor(s);
#ifdef CUSTOS_AUDIT_BENCH_SWITCH
    /* Benchmark builds only (cmake -DCMAKE_C_FLAGS=-DCUSTOS_AUDIT_BENCH_SWITCH):
     * registrations without the audit log, to measure what it costs. Never
     * in a normal build: the log cannot be switched off. */
    s->audit.off = getenv("CUSTOS_BENCH_AUDIT_OFF") != NULL;
#endif
    /* A store is bound to its service key: opening it with another would
     * fail every seal later, so say it now. */
    if ((rc = cu_keyring_seal(kr, "keyring-check", (const uint8_t *)"custos", 6, mac)) != CU_OK)
        goto cleanup;
    cu_prov__hex(mac, 32, hex);
    rc = ops->meta_get(b, KEYRING_CHECK, &have);
    if (rc == CU_E_OBJECT_NOT_FOUND) {
        rc = ops->meta_put(b, KEYRING_CHECK, hex);
    } else if (rc == CU_OK && CRYPTO_memcmp(have, hex, 64) != 0) {
        rc = cu_err_set(CU_E_VERIFY, "this store was created with another service key (keyring '%s' "
                                     "does not match)", cu_keyring_name(kr));
    }
    if (rc != CU_OK)
        goto cleanup;
    *_out = s;
    s = NULL;
cleanup:
    free(have);
    cu_store_close(s);
    return rc;
}

cu_rc cu_prov__store_open_unbound(const cu_store_backend *ops, void *b, cu_store **_out)
{
    cu_store *s = calloc(1, sizeof *s);
    if (s == NULL) {
        ops->close(b);
        return cu_err_set(CU_E_NOMEM, "out of memory");
    }
    s->ops = ops;
    s->b = b;
    s->kr = NULL; /* every seal, wrap and check refuses: documents stay out of reach */
    default_actor(s);
    *_out = s;
    return CU_OK;
}

cu_rc cu_store_open_dir(const char *state_dir, cu_keyring *kr, cu_store **_out)
{
    cu_prov__return_val_if_fail(state_dir != NULL && kr != NULL && _out != NULL, CU_E_INVALID_ARG);
    char path[4096];
    if (mkdir(state_dir, 0700) != 0 && errno != EEXIST)
        return cu_err_set_sys(CU_E_IO, errno, "cannot create the state directory %s", state_dir);
    if (snprintf(path, sizeof path, "%s/custos.db", state_dir) >= (int)sizeof path)
        return cu_err_set(CU_E_INVALID_ARG, "state directory path too long");
    return cu_store_open_sqlite(path, kr, _out);
}

/* "postgresql:KEY=VALUE ..." carries a conninfo string after the scheme. */
static const char *pg_conninfo(const char *spec)
{
    return strncmp(spec, "postgresql:", 11) == 0 && strncmp(spec, "postgresql://", 13) != 0 ? spec + 11 : spec;
}

cu_rc cu_store_open_spec(const char *spec, const char *password_file, cu_keyring *kr, cu_store **_out)
{
    cu_prov__return_val_if_fail(spec != NULL && kr != NULL && _out != NULL, CU_E_INVALID_ARG);
    struct stat sb;
    if (cu_store_spec_is_postgres(spec))
        return cu_store_open_postgres(pg_conninfo(spec), password_file, kr, _out);
    if (strncmp(spec, "sqlite:", 7) == 0)
        return cu_store_open_sqlite(spec + 7, kr, _out);
    if (stat(spec, &sb) == 0 && S_ISDIR(sb.st_mode))
        return cu_store_open_dir(spec, kr, _out);
    return cu_store_open_sqlite(spec, kr, _out);
}

cu_rc cu_store_open_audit_only_spec(const char *spec, const char *password_file, bool writable,
                                    cu_store **_out)
{
    cu_prov__return_val_if_fail(spec != NULL && _out != NULL, CU_E_INVALID_ARG);
    if (cu_store_spec_is_postgres(spec))
        return cu_prov__store_open_postgres_audit(pg_conninfo(spec), password_file, _out);
    return cu_store_open_audit_only(strncmp(spec, "sqlite:", 7) == 0 ? spec + 7 : spec, writable, _out);
}

cu_rc cu_store_rate_hit(cu_store *s, const char *key, unsigned window, unsigned limit, unsigned *_wait)
{
    cu_prov__return_val_if_fail(s != NULL && key != NULL && _wait != NULL && window > 0, CU_E_INVALID_ARG);
    *_wait = 0;
    if (s->ops->rate_hit == NULL)
        return cu_err_set(CU_E_UNSUPPORTED, "the %s store keeps no shared rate windows", s->ops->name);
    return s->ops->rate_hit(s->b, key, window, limit, _wait);
}

cu_rc cu_store_rate_undo(cu_store *s, const char *key)
{
    cu_prov__return_val_if_fail(s != NULL && key != NULL, CU_E_INVALID_ARG);
    if (s->ops->rate_undo == NULL)
        return cu_err_set(CU_E_UNSUPPORTED, "the %s store keeps no shared rate windows", s->ops->name);
    return s->ops->rate_undo(s->b, key);
}

cu_rc cu_store_ping(cu_store *s)
{
    cu_prov__return_val_if_fail(s != NULL, CU_E_INVALID_ARG);
    return s->ops->ping == NULL ? CU_OK : s->ops->ping(s->b);
}

cu_rc cu_store_wal_defer(cu_store *s, void (*due)(void *arg), void *arg)
{
    cu_prov__return_val_if_fail(s != NULL && due != NULL, CU_E_INVALID_ARG);
    return s->ops->wal_defer == NULL ? CU_OK : s->ops->wal_defer(s->b, due, arg);
}

cu_rc cu_store_checkpoint(cu_store *s, unsigned long *_left)
{
    cu_prov__return_val_if_fail(s != NULL && _left != NULL, CU_E_INVALID_ARG);
    *_left = 0;
    return s->ops->checkpoint == NULL ? CU_OK : s->ops->checkpoint(s->b, _left);
}

void cu_store_close(cu_store *s)
{
    if (s == NULL)
        return;
    /* Finished minutes of key uses go to the log rather than away; the
     * current one stays for the process's other stores (or its final
     * cu_audit_key_use_flush), so that a minute makes one record. */
    (void)cu_prov__audit_key_use_flush_finished(s);
    EVP_PKEY_free(s->audit.signer);
    s->ops->close(s->b);
    free(s);
}

const char *cu_store_backend_name(const cu_store *s) { return s ? s->ops->name : NULL; }

cu_rc cu_store_begin(cu_store *s)
{
    cu_prov__return_val_if_fail(s != NULL && s->depth < 16, CU_E_INVALID_ARG);
    s->wmark[s->depth] = s->writes;
    last_http = 0;
    if (s->depth++ > 0)
        return CU_OK;
    s->failed = false;
    cu_rc rc = s->ops->begin(s->b);
    if (rc != CU_OK)
        s->depth = 0;
    return rc;
}

cu_rc cu_store_commit(cu_store *s)
{
    cu_prov__return_val_if_fail(s != NULL && s->depth > 0, CU_E_INVALID_ARG);
    if (--s->depth > 0)
        return CU_OK;
    if (s->failed) {
        s->ops->rollback(s->b);
        s->audit.signed_known = false;
        return cu_err_set(CU_E_STATE, "a step of the transaction failed; nothing was written");
    }
    cu_rc rc = s->ops->commit(s->b);
    if (rc != CU_OK) {
        s->ops->rollback(s->b);
        s->audit.signed_known = false;
    }
    return rc;
}

void cu_store_rollback(cu_store *s)
{
    if (s == NULL || s->depth == 0)
        return;
    if (--s->depth > 0) {
        /* A nested step refused before writing anything (a bad line in an
         * import) leaves the outer transaction intact; one that failed
         * half-way poisons it. */
        if (s->writes != s->wmark[s->depth])
            s->failed = true;
        return;
    }
    s->ops->rollback(s->b);
    /* A head signed in the rolled-back transaction is gone: reread. */
    s->audit.signed_known = false;
}

/* Ends an operation's own transaction: commit on success, else roll back. */
static cu_rc finish(cu_store *s, cu_rc rc)
{
    if (rc == CU_OK)
        return cu_store_commit(s);
    cu_store_rollback(s);
    return rc;
}

/* ---- sealed documents ---- */

static cu_rc doc_get(cu_store *s, int kind, const char *id, char **_body)
{
    uint8_t seal[32];
    char *lid = cu_prov__lower_dup(id), *body = NULL;
    cu_rc rc;
    *_body = NULL;
    if (lid == NULL)
        return cu_err_set(CU_E_NOMEM, "out of memory");
    rc = s->ops->get(s->b, kind, lid, &body, seal);
    if (rc == CU_E_OBJECT_NOT_FOUND)
        rc = cu_err_set(rc, "no %s '%s'", kind_domain(kind), id);
    if (rc == CU_OK && (rc = check_row(s, kind, lid, body, seal)) != CU_OK) {
        free(body);
        body = NULL;
    }
    free(lid);
    *_body = body;
    return rc;
}

static cu_rc doc_put(cu_store *s, int kind, const char *id, const char *body,
                     const char *const *keys, size_t nkeys)
{
    uint8_t seal[32];
    char *lid = cu_prov__lower_dup(id);
    cu_rc rc;
    if (lid == NULL)
        return cu_err_set(CU_E_NOMEM, "out of memory");
    s->writes++;
    if ((rc = seal_row(s, kind, lid, body, seal)) == CU_OK)
        rc = s->ops->put(s->b, kind, lid, body, seal, keys, nkeys);
    free(lid);
    return rc;
}

static cu_rc doc_del(cu_store *s, int kind, const char *id)
{
    char *lid = cu_prov__lower_dup(id);
    if (lid == NULL)
        return cu_err_set(CU_E_NOMEM, "out of memory");
    s->writes++;
    cu_rc rc = s->ops->del(s->b, kind, lid);
    if (rc == CU_E_OBJECT_NOT_FOUND)
        rc = cu_err_set(rc, "no %s '%s'", kind_domain(kind), id);
    free(lid);
    return rc;
}

cu_rc cu_store_setting_get(cu_store *s, const char *name, char **_value)
{
    cu_prov__return_val_if_fail(s != NULL && name != NULL && _value != NULL, CU_E_INVALID_ARG);
    char *v = NULL, *seal_hex = NULL, key[160];
    uint8_t mac[32];
    char hex[65];
    cu_rc rc;
    *_value = NULL;
    snprintf(key, sizeof key, "seal:%s", name);
    if ((rc = s->ops->meta_get(s->b, name, &v)) != CU_OK)
        goto cleanup;
    if ((rc = s->ops->meta_get(s->b, key, &seal_hex)) != CU_OK) {
        rc = cu_err_set(CU_E_VERIFY, "setting '%s' has no seal", name);
        goto cleanup;
    }
    if ((rc = cu_keyring_seal(s->kr, name, (const uint8_t *)v, strlen(v), mac)) != CU_OK)
        goto cleanup;
    cu_prov__hex(mac, 32, hex);
    if (strlen(seal_hex) != 64 || CRYPTO_memcmp(hex, seal_hex, 64) != 0) {
        rc = cu_err_set(CU_E_VERIFY, "setting '%s' fails its seal", name);
        goto cleanup;
    }
    *_value = v;
    v = NULL;
cleanup:
    free(v);
    free(seal_hex);
    return rc;
}

cu_rc cu_store_setting_put(cu_store *s, const char *name, const char *value)
{
    cu_prov__return_val_if_fail(s != NULL && name != NULL && value != NULL && strlen(name) < 100,
                           CU_E_INVALID_ARG);
    char key[160], hex[65];
    uint8_t mac[32];
    cu_rc rc;
    snprintf(key, sizeof key, "seal:%s", name);
    if ((rc = cu_keyring_seal(s->kr, name, (const uint8_t *)value, strlen(value), mac)) != CU_OK)
        return rc;
    cu_prov__hex(mac, 32, hex);
    if ((rc = cu_store_begin(s)) != CU_OK)
        return rc;
    char *old = NULL; /* for the audit record */
    if (s->ops->meta_get(s->b, name, &old) != CU_OK)
        old = NULL;
    s->writes++;
    rc = s->ops->meta_put(s->b, name, value);
    if (rc == CU_OK)
        rc = s->ops->meta_put(s->b, key, hex);
    if (rc == CU_OK) {
        /* Secrets (service policy keys, any wrapped value) show only that
         * they changed. */
        bool secret = strncmp(name, "policy:", 7) == 0 || strncmp(value, "cw1:", 4) == 0 ||
                      (old != NULL && strncmp(old, "cw1:", 4) == 0);
        json_t *before = old ? json_string(secret ? "(secret)" : old) : NULL;
        json_t *after = json_string(secret ? "(secret)" : value);
        rc = cu_prov__audit_change(s, "setting.update", name, before, after);
        json_decref(before);
        json_decref(after);
    }
    free(old);
    return finish(s, rc);
}

/* ---- index keys ---- */

typedef struct keyset {
    char *k[16];
    size_t n;
} keyset;

static cu_rc keyset_add(keyset *ks, const char *prefix, const char *val)
{
    if (ks->n == sizeof ks->k / sizeof ks->k[0])
        return CU_OK; /* bounded: at most 2 certs x a few keys */
    size_t n = strlen(prefix) + strlen(val) + 1;
    char *k = malloc(n);
    if (k == NULL)
        return cu_err_set(CU_E_NOMEM, "out of memory");
    snprintf(k, n, "%s%s", prefix, val);
    ks->k[ks->n++] = k;
    return CU_OK;
}

static void keyset_clear(keyset *ks)
{
    for (size_t i = 0; i < ks->n; i++)
        free(ks->k[i]);
    ks->n = 0;
}

/* fp:<sha256> and, for an anchor, subj:<sha256 of subject DER> of a
 * certificate. A group is the certificate it was enrolled with, as on the
 * public service: it is found by fingerprint in the verified path, whose
 * anchors come by subject (OpenSSL then matches issuer keys itself). No
 * subject key identifier key: the issuer chooses that value freely, so a
 * look-up by it could let another certificate stand for a group. */
static cu_rc cert_keys(keyset *ks, X509 *x, bool anchor)
{
    char hex[65];
    cu_rc rc;
    if ((rc = cu_x509_sha256_hex(x, hex)) != CU_OK || (rc = keyset_add(ks, "fp:", hex)) != CU_OK)
        return rc;
    if (!anchor)
        return CU_OK;
    if ((rc = cu_x509_name_key(X509_get_subject_name(x), hex)) != CU_OK ||
        (rc = keyset_add(ks, "subj:", hex)) != CU_OK)
        return rc;
    return CU_OK;
}

static cu_rc pem_keys(keyset *ks, const char *pem, bool anchor)
{
    X509 *x = NULL;
    cu_rc rc = cu_x509_decode(pem, strlen(pem), &x);
    if (rc == CU_OK)
        rc = cert_keys(ks, x, anchor);
    X509_free(x);
    return rc;
}

/* ---- CA documents (JSON) ---- */

static cu_rc ca_load(cu_store *s, const char *name, json_t **_j)
{
    char *body = NULL;
    json_error_t e;
    cu_rc rc = doc_get(s, CU_KIND_CA, name, &body);
    *_j = NULL;
    if (rc != CU_OK)
        return rc;
    if ((*_j = json_loads(body, 0, &e)) == NULL)
        rc = cu_err_set(CU_E_STATE, "CA '%s': stored JSON does not parse", name);
    free(body);
    return rc;
}

/* ---- enrollments ---- */

static int enr_kind(cu_enr_kind k) { return k == CU_ENR_GROUP ? CU_KIND_GROUP : CU_KIND_ENROLLMENT; }

/* Index keys of an enrollment; a group on caReferences is indexed under the
 * referenced CAs' certificates, which must exist and be verified. */
static cu_rc enr_keys(cu_store *s, cu_enr *e, keyset *ks, char *reason, size_t rlen)
{
    cu_rc rc = CU_OK;
    bool group = cu_enr_get_kind(e) == CU_ENR_GROUP;
    switch (cu_enr_get_att_type(e)) {
    case CU_ATT_X509:
        for (int slot = 0; slot < 2; slot++) {
            const char *pem = cu_enr_get0_cert(e, (cu_enr_slot)slot);
            const char *ref = group ? cu_enr_get0_ca_ref(e, (cu_enr_slot)slot) : NULL;
            if (pem != NULL && (rc = pem_keys(ks, pem, group)) != CU_OK)
                return rc;
            if (ref != NULL) {
                json_t *ca = NULL;
                if ((rc = ca_load(s, ref, &ca)) != CU_OK)
                    return cu_prov__refuse(rc == CU_E_OBJECT_NOT_FOUND ? CU_E_INVALID_ARG : rc, reason, rlen,
                                      "caReferences: %s", cu_err_last()->msg);
                bool verified = json_is_true(json_object_get(ca, "isVerified"));
                const char *capem = json_string_value(json_object_get(ca, "certificate"));
                if (!verified || capem == NULL) {
                    json_decref(ca);
                    return cu_prov__refuse(CU_E_INVALID_ARG, reason, rlen,
                                      "caReferences: CA certificate '%s' is not verified (proof of possession)", ref);
                }
                rc = pem_keys(ks, capem, true);
                char *lref = cu_prov__lower_dup(ref);
                if (rc == CU_OK)
                    rc = lref ? keyset_add(ks, "ca:", lref) : cu_err_set(CU_E_NOMEM, "out of memory");
                free(lref);
                json_decref(ca);
                if (rc != CU_OK)
                    return rc;
            }
        }
        break;
    case CU_ATT_SYMMETRIC_KEY:
        if (group)
            rc = keyset_add(ks, "att:", "symmetricKey");
        break;
    case CU_ATT_TPM: {
        const char *ek = cu_enr_get0_tpm_ek(e);
        unsigned char md[32];
        char hex[65];
        if (ek && EVP_Digest(ek, strlen(ek), md, NULL, EVP_sha256(), NULL) == 1) {
            cu_prov__hex(md, 32, hex);
            rc = keyset_add(ks, "ek:", hex);
        }
        break;
    }
    default:
        break;
    }
    return rc;
}

/* Every hub an enrollment names must be linked (cu_store_hub_put), as the
 * public service requires: otherwise a device could be assigned to a hub
 * the service was never told about. */
static cu_rc enr_hubs_linked(cu_store *s, const cu_enr *e, char *reason, size_t rlen)
{
    size_t n = cu_enr_get_hub_count(e);
    for (size_t i = 0; i < n; i++) {
        const char *name = cu_enr_get0_hub(e, i);
        char *body = NULL;
        cu_rc rc = doc_get(s, CU_KIND_HUB, name, &body);
        free(body);
        if (rc == CU_E_OBJECT_NOT_FOUND) {
            last_http = 400;
            return cu_prov__refuse(CU_E_INVALID_ARG, reason, rlen, "%s: hub '%s' is not linked to this service",
                                   json_object_get(cu_prov__enr_json(e), "iotHubs") ? "iotHubs" : "iotHubHostName",
                                   name);
        }
        if (rc != CU_OK)
            return cu_prov__refuse(rc, reason, rlen, "%s", cu_err_last()->msg);
    }
    return CU_OK;
}

/* The stored form: keys wrapped, bound to the entry. */
static cu_rc enr_body(cu_store *s, cu_enr *e, char **_body)
{
    cu_rc rc = CU_OK;
    json_t *c = json_deep_copy(cu_prov__enr_json(e));
    json_t *sym = json_object_get(json_object_get(c, "attestation"), "symmetricKey");
    char aad[200];
    *_body = NULL;
    if (c == NULL)
        return cu_err_set(CU_E_NOMEM, "out of memory");
    snprintf(aad, sizeof aad, "%s/%s", kind_domain(enr_kind(cu_enr_get_kind(e))), cu_enr_get0_id(e));
    for (size_t i = 0; aad[i]; i++)
        aad[i] = (char)((aad[i] >= 'A' && aad[i] <= 'Z') ? aad[i] + 32 : aad[i]);
    const char *names[] = {"primaryKey", "secondaryKey"};
    for (int i = 0; i < 2 && sym != NULL; i++) {
        const char *k = json_string_value(json_object_get(sym, names[i]));
        char *w = NULL;
        if (k == NULL)
            continue;
        if ((rc = cu_keyring_wrap(s->kr, (const uint8_t *)k, strlen(k), aad, &w)) != CU_OK)
            goto cleanup;
        OPENSSL_cleanse((void *)k, strlen(k));
        json_object_set_new(sym, names[i], json_string(w));
        free(w);
    }
    if ((*_body = json_dumps(c, JSON_COMPACT | JSON_PRESERVE_ORDER)) == NULL)
        rc = cu_err_set(CU_E_NOMEM, "out of memory");
cleanup:
    json_decref(c);
    return rc;
}

static cu_rc enr_unwrap(cu_store *s, int kind, const char *id, json_t *j)
{
    json_t *sym = json_object_get(json_object_get(j, "attestation"), "symmetricKey");
    const char *names[] = {"primaryKey", "secondaryKey"};
    char aad[200];
    snprintf(aad, sizeof aad, "%s/%s", kind_domain(kind), id);
    for (size_t i = 0; aad[i]; i++)
        aad[i] = (char)((aad[i] >= 'A' && aad[i] <= 'Z') ? aad[i] + 32 : aad[i]);
    for (int i = 0; i < 2 && sym != NULL; i++) {
        const char *w = json_string_value(json_object_get(sym, names[i]));
        uint8_t *k = NULL;
        size_t kl = 0;
        if (w == NULL)
            continue;
        cu_rc rc = cu_keyring_unwrap(s->kr, w, aad, &k, &kl);
        if (rc != CU_OK)
            return rc;
        json_object_set_new(sym, names[i], json_stringn((const char *)k, kl));
        cu_keyring_secret_free(k, kl);
    }
    return CU_OK;
}

cu_rc cu_store_enr_get(cu_store *s, cu_enr_kind kind, const char *id, cu_enr **_out)
{
    cu_prov__return_val_if_fail(s != NULL && id != NULL && _out != NULL, CU_E_INVALID_ARG);
    char *body = NULL;
    json_t *j = NULL;
    json_error_t e;
    cu_rc rc;
    *_out = NULL;
    if ((rc = doc_get(s, enr_kind(kind), id, &body)) != CU_OK)
        goto cleanup;
    if ((j = json_loads(body, 0, &e)) == NULL) {
        rc = cu_err_set(CU_E_STATE, "stored enrollment '%s' does not parse", id);
        goto cleanup;
    }
    if ((rc = enr_unwrap(s, enr_kind(kind), id, j)) != CU_OK)
        goto cleanup;
    rc = cu_prov__enr_wrap(kind, j, _out);
    j = NULL;
cleanup:
    json_decref(j);
    if (body != NULL)
        OPENSSL_clear_free(body, strlen(body));
    return rc;
}

static cu_rc symkey_room(cu_store *s, const cu_enr *e, const cu_enr *old, char *reason, size_t rlen);

cu_rc cu_store_enr_put(cu_store *s, cu_enr *e, const char *if_match, unsigned flags,
                       char *reason, size_t reason_len)
{
    cu_prov__return_val_if_fail(s != NULL && e != NULL, CU_E_INVALID_ARG);
    cu_rc rc;
    cu_enr *old = NULL;
    keyset ks = {{0}, 0};
    char *body = NULL, etag[48], now[32];
    const char *id = cu_enr_get0_id(e);
    int kind = enr_kind(cu_enr_get_kind(e));
    bool repair = false;
    json_t *before = NULL, *after = NULL;

    if ((rc = cu_store_begin(s)) != CU_OK)
        return rc;
    rc = cu_store_enr_get(s, cu_enr_get_kind(e), id, &old);
    /* A row that fails its seal may be overwritten by a full replacement
     * (no etag, not create-only): that is how an operator repairs it. */
    if (rc == CU_E_VERIFY && if_match == NULL && !(flags & CU_STORE_CREATE)) {
        rc = CU_OK;
        repair = true;
    }
    if (rc == CU_E_OBJECT_NOT_FOUND) {
        if (flags & CU_STORE_REPLACE) {
            last_http = 404;
            rc = cu_prov__refuse(CU_E_OBJECT_NOT_FOUND, reason, reason_len, "no %s '%s' to update",
                            kind_domain(kind), id);
            goto cleanup;
        }
        if (if_match != NULL && strcmp(if_match, "*") != 0) {
            last_http = 412;
            rc = cu_prov__refuse(CU_E_STATE, reason, reason_len,
                            "etag %s given but %s '%s' does not exist (412)", if_match, kind_domain(kind), id);
            goto cleanup;
        }
        rc = CU_OK;
    } else if (rc != CU_OK) {
        rc = cu_prov__refuse(rc, reason, reason_len, "%s", cu_err_last()->msg);
        goto cleanup;
    } else {
        if (flags & CU_STORE_CREATE) {
            last_http = 409;
            rc = cu_prov__refuse(CU_E_STATE, reason, reason_len, "%s '%s' already exists (409)",
                            kind_domain(kind), id);
            goto cleanup;
        }
        const char *cur = cu_enr_get0_etag(old);
        if (if_match != NULL && strcmp(if_match, "*") != 0 && (cur == NULL || strcmp(if_match, cur) != 0)) {
            last_http = 412;
            rc = cu_prov__refuse(CU_E_STATE, reason, reason_len,
                            "stale etag: %s '%s' is at %s, not %s (412 precondition failed)",
                            kind_domain(kind), id, cur ? cur : "(none)", if_match);
            goto cleanup;
        }
    }
    if ((rc = enr_hubs_linked(s, e, reason, reason_len)) != CU_OK)
        goto cleanup;
    if ((rc = symkey_room(s, e, old, reason, reason_len)) != CU_OK)
        goto cleanup;
    if ((rc = enr_keys(s, e, &ks, reason, reason_len)) != CU_OK)
        goto cleanup;
    cu_prov__etag_new(etag);
    cu_prov__timestamp(now);
    if ((rc = cu_prov__enr_set_str(e, "etag", etag)) != CU_OK ||
        (rc = cu_prov__enr_set_str(e, "createdDateTimeUtc", old && cu_enr_get0_created(old) ? cu_enr_get0_created(old) : now)) != CU_OK ||
        (rc = cu_prov__enr_set_str(e, "lastUpdatedDateTimeUtc", now)) != CU_OK)
        goto cleanup;
    if ((rc = cu_enr_set_enabled(e, cu_enr_is_enabled(e))) != CU_OK)
        goto cleanup;
    if ((rc = enr_body(s, e, &body)) != CU_OK)
        goto cleanup;
    if ((rc = doc_put(s, kind, id, body, (const char *const *)ks.k, ks.n)) != CU_OK)
        goto cleanup;
    {
        char type[48];
        snprintf(type, sizeof type, "%s.%s", kind_domain(kind), old ? "update" : repair ? "repair" : "create");
        before = old ? cu_prov__audit_enr_json(old) : NULL;
        after = cu_prov__audit_enr_json(e);
        rc = after && (old == NULL || before) ? cu_prov__audit_change(s, type, id, before, after)
                                              : cu_err_set(CU_E_NOMEM, "out of memory");
    }
cleanup:
    rc = finish(s, rc);
    json_decref(before);
    json_decref(after);
    if (body != NULL)
        OPENSSL_clear_free(body, strlen(body));
    keyset_clear(&ks);
    cu_enr_free(old);
    return rc;
}

cu_rc cu_store_enr_delete(cu_store *s, cu_enr_kind kind, const char *id, const char *if_match,
                          char *reason, size_t reason_len)
{
    cu_prov__return_val_if_fail(s != NULL && id != NULL, CU_E_INVALID_ARG);
    cu_enr *old = NULL;
    json_t *before = NULL;
    char type[48];
    cu_rc rc;
    if ((rc = cu_store_begin(s)) != CU_OK)
        return rc;
    rc = cu_store_enr_get(s, kind, id, &old);
    if (rc == CU_E_VERIFY && if_match == NULL) {
        /* A tampered row can always be removed. */
        if ((rc = doc_del(s, enr_kind(kind), id)) == CU_OK) {
            snprintf(type, sizeof type, "%s.delete", kind_domain(enr_kind(kind)));
            rc = cu_prov__audit_change(s, type, id, NULL, NULL);
        }
        goto cleanup;
    }
    if (rc != CU_OK) {
        rc = cu_prov__refuse(rc, reason, reason_len, "%s", cu_err_last()->msg);
        goto cleanup;
    }
    const char *cur = cu_enr_get0_etag(old);
    if (if_match != NULL && strcmp(if_match, "*") != 0 && (cur == NULL || strcmp(cur, if_match) != 0)) {
        last_http = 412;
        rc = cu_prov__refuse(CU_E_STATE, reason, reason_len, "stale etag: '%s' is at %s, not %s (412)", id,
                        cur ? cur : "(none)", if_match);
        goto cleanup;
    }
    if ((rc = doc_del(s, enr_kind(kind), id)) != CU_OK)
        goto cleanup;
    snprintf(type, sizeof type, "%s.delete", kind_domain(enr_kind(kind)));
    rc = (before = cu_prov__audit_enr_json(old)) != NULL ? cu_prov__audit_change(s, type, id, before, NULL)
                                                         : cu_err_set(CU_E_NOMEM, "out of memory");
cleanup:
    json_decref(before);
    cu_enr_free(old);
    return finish(s, rc);
}

cu_rc cu_store_list(cu_store *s, cu_store_kind kind, const char *after, size_t limit,
                    char ***_ids, size_t *_n)
{
    cu_prov__return_val_if_fail(s != NULL && _ids != NULL && _n != NULL && limit > 0, CU_E_INVALID_ARG);
    char *la = after ? cu_prov__lower_dup(after) : NULL;
    cu_rc rc = s->ops->list(s->b, kind, la, limit, _ids, _n);
    free(la);
    return rc;
}

void cu_store_ids_free(char **ids, size_t n)
{
    if (ids == NULL)
        return;
    for (size_t i = 0; i < n; i++)
        free(ids[i]);
    free(ids);
}

cu_rc cu_store_count(cu_store *s, cu_store_kind kind, uint64_t *_n)
{
    cu_prov__return_val_if_fail(s != NULL && _n != NULL, CU_E_INVALID_ARG);
    return s->ops->count(s->b, kind, _n);
}

cu_rc cu_store_groups_by_cert(cu_store *s, X509 *cert, char ***_ids, size_t *_n)
{
    cu_prov__return_val_if_fail(s != NULL && cert != NULL && _ids != NULL && _n != NULL, CU_E_INVALID_ARG);
    char hex[65], key[72];
    cu_rc rc = cu_x509_sha256_hex(cert, hex);
    if (rc != CU_OK)
        return rc;
    snprintf(key, sizeof key, "fp:%s", hex);
    return s->ops->find(s->b, CU_KIND_GROUP, key, NULL, 16, _ids, _n);
}

cu_rc cu_store_symkey_groups(cu_store *s, char ***_ids, size_t *_n)
{
    cu_prov__return_val_if_fail(s != NULL && _ids != NULL && _n != NULL, CU_E_INVALID_ARG);
    return s->ops->find(s->b, CU_KIND_GROUP, "att:symmetricKey", NULL, CU_STORE_MAX_SYMKEY_GROUPS_CEILING, _ids, _n);
}

#define SYMKEY_LIMIT_SETTING "maxSymmetricKeyGroups"

cu_rc cu_store_symkey_group_limit(cu_store *s, unsigned long *_max)
{
    cu_prov__return_val_if_fail(s != NULL && _max != NULL, CU_E_INVALID_ARG);
    char *v = NULL, *end = NULL;
    cu_rc rc = cu_store_setting_get(s, SYMKEY_LIMIT_SETTING, &v);
    if (rc == CU_E_OBJECT_NOT_FOUND) {
        cu_err_clear();
        *_max = CU_STORE_DEFAULT_MAX_SYMKEY_GROUPS;
        return CU_OK;
    }
    if (rc != CU_OK)
        return rc;
    unsigned long m = strtoul(v, &end, 10);
    if (end == v || *end != 0 || m == 0 || m > CU_STORE_MAX_SYMKEY_GROUPS_CEILING)
        rc = cu_err_set(CU_E_STATE, "setting " SYMKEY_LIMIT_SETTING " is not a count (1..%d): '%.32s'",
                        CU_STORE_MAX_SYMKEY_GROUPS_CEILING, v);
    else
        *_max = m;
    free(v);
    return rc;
}

cu_rc cu_store_set_symkey_group_limit(cu_store *s, unsigned long max)
{
    cu_prov__return_val_if_fail(s != NULL, CU_E_INVALID_ARG);
    char v[24];
    if (max == 0 || max > CU_STORE_MAX_SYMKEY_GROUPS_CEILING)
        return cu_err_set(CU_E_INVALID_ARG, "the symmetric-key group limit is 1..%d, not %lu",
                          CU_STORE_MAX_SYMKEY_GROUPS_CEILING, max);
    snprintf(v, sizeof v, "%lu", max);
    return cu_store_setting_put(s, SYMKEY_LIMIT_SETTING, v);
}

/* A new symmetric-key group must fit under the limit: every such group is
 * tried for each token no other entry verifies, so their number is what
 * one unknown device's request costs. Counted in the writing transaction;
 * e is not counted when it is one already (a replacement, or a repair). */
static cu_rc symkey_room(cu_store *s, const cu_enr *e, const cu_enr *old, char *reason, size_t rlen)
{
    unsigned long max = 0;
    char **ids = NULL;
    size_t n = 0;
    cu_rc rc;
    if (cu_enr_get_kind(e) != CU_ENR_GROUP || cu_enr_get_att_type(e) != CU_ATT_SYMMETRIC_KEY ||
        (old != NULL && cu_enr_get_att_type(old) == CU_ATT_SYMMETRIC_KEY))
        return CU_OK;
    if ((rc = cu_store_symkey_group_limit(s, &max)) != CU_OK ||
        (rc = s->ops->find(s->b, CU_KIND_GROUP, "att:symmetricKey", NULL, max + 1, &ids, &n)) != CU_OK)
        return cu_prov__refuse(rc, reason, rlen, "%s", cu_err_last()->msg);
    size_t others = n;
    for (size_t i = 0; i < n; i++)
        if (cu_prov__ieq(ids[i], cu_enr_get0_id(e)))
            others--;
    cu_store_ids_free(ids, n);
    if (others >= max) {
        last_http = 400;
        return cu_prov__refuse(CU_E_INVALID_ARG, reason, rlen,
                               "symmetric-key enrollment groups are at their limit of %lu (setting "
                               SYMKEY_LIMIT_SETTING ", custos group symkey-limit): each one is tried for "
                               "every token that no other entry verifies", max);
    }
    return CU_OK;
}

static bool in_stack(STACK_OF(X509) *st, X509 *x)
{
    for (int i = 0; i < sk_X509_num(st); i++)
        if (X509_cmp(sk_X509_value(st, i), x) == 0)
            return true;
    return false;
}

static cu_rc push_anchor_pem(STACK_OF(X509) *anchors, const char *pem, const char *subj_hex)
{
    X509 *x = NULL;
    char hex[65];
    cu_rc rc = cu_x509_decode(pem, strlen(pem), &x);
    if (rc != CU_OK)
        return rc;
    /* The index may list both certs of a group: keep the one that matches. */
    if (cu_x509_name_key(X509_get_subject_name(x), hex) == CU_OK && strcmp(hex, subj_hex) == 0 &&
        !in_stack(anchors, x) && sk_X509_push(anchors, x))
        x = NULL;
    X509_free(x);
    return CU_OK;
}

cu_rc cu_store_anchors_by_subject(cu_store *s, const X509_NAME *name, STACK_OF(X509) *anchors)
{
    cu_prov__return_val_if_fail(s != NULL && name != NULL && anchors != NULL, CU_E_INVALID_ARG);
    char hex[65], key[72];
    char **ids = NULL;
    size_t n = 0;
    cu_rc rc;
    if ((rc = cu_x509_name_key(name, hex)) != CU_OK)
        return rc;
    snprintf(key, sizeof key, "subj:%s", hex);
    /* Groups: their signing certificates (and the CAs they reference). */
    if ((rc = s->ops->find(s->b, CU_KIND_GROUP, key, NULL, 64, &ids, &n)) != CU_OK)
        return rc;
    for (size_t i = 0; i < n && rc == CU_OK; i++) {
        cu_enr *g = NULL;
        if ((rc = cu_store_enr_get(s, CU_ENR_GROUP, ids[i], &g)) != CU_OK)
            break;
        for (int slot = 0; slot < 2 && rc == CU_OK; slot++) {
            const char *pem = cu_enr_get0_cert(g, (cu_enr_slot)slot);
            if (pem != NULL)
                rc = push_anchor_pem(anchors, pem, hex);
        }
        cu_enr_free(g);
    }
    cu_store_ids_free(ids, n);
    ids = NULL;
    n = 0;
    if (rc != CU_OK)
        return rc;
    /* Verified CA certificates. */
    if ((rc = s->ops->find(s->b, CU_KIND_CA, key, NULL, 64, &ids, &n)) != CU_OK)
        return rc;
    for (size_t i = 0; i < n && rc == CU_OK; i++) {
        json_t *ca = NULL;
        if ((rc = ca_load(s, ids[i], &ca)) != CU_OK)
            break;
        const char *pem = json_string_value(json_object_get(ca, "certificate"));
        if (json_is_true(json_object_get(ca, "isVerified")) && pem != NULL)
            rc = push_anchor_pem(anchors, pem, hex);
        json_decref(ca);
    }
    cu_store_ids_free(ids, n);
    return rc;
}

/* ---- CA certificates ---- */

/* A CA document for the audit log: the one-time verification code left out. */
static json_t *ca_audit_json(json_t *ca)
{
    json_t *c = json_deep_copy(ca);
    if (c != NULL)
        json_object_del(c, "verificationCode");
    return c;
}

static cu_rc ca_audit(cu_store *s, const char *type, const char *name, json_t *before, json_t *after)
{
    json_t *b = before ? ca_audit_json(before) : NULL, *a = after ? ca_audit_json(after) : NULL;
    cu_rc rc = (before && !b) || (after && !a) ? cu_err_set(CU_E_NOMEM, "out of memory")
                                               : cu_prov__audit_change(s, type, name, b, a);
    json_decref(b);
    json_decref(a);
    return rc;
}

static cu_rc ca_save(cu_store *s, const char *name, json_t *ca)
{
    keyset ks = {{0}, 0};
    char etag[48], now[32], *body = NULL;
    cu_rc rc;
    cu_prov__etag_new(etag);
    cu_prov__timestamp(now);
    json_object_set_new(ca, "etag", json_string(etag));
    json_object_set_new(ca, "updated", json_string(now));
    if (json_object_get(ca, "created") == NULL)
        json_object_set_new(ca, "created", json_string(now));
    const char *pem = json_string_value(json_object_get(ca, "certificate"));
    if ((rc = pem_keys(&ks, pem, true)) != CU_OK)
        goto cleanup;
    if ((body = json_dumps(ca, JSON_COMPACT | JSON_PRESERVE_ORDER)) == NULL) {
        rc = cu_err_set(CU_E_NOMEM, "out of memory");
        goto cleanup;
    }
    rc = doc_put(s, CU_KIND_CA, name, body, (const char *const *)ks.k, ks.n);
cleanup:
    free(body);
    keyset_clear(&ks);
    return rc;
}

cu_rc cu_store_ca_add(cu_store *s, const char *name, const char *cert_text, bool verified,
                      char *reason, size_t reason_len)
{
    cu_prov__return_val_if_fail(s != NULL && name != NULL && cert_text != NULL, CU_E_INVALID_ARG);
    X509 *x = NULL;
    json_t *ca = NULL, *info = NULL, *old = NULL;
    char *pem = NULL;
    cu_rc rc;

    if (!cu_prov__regid_valid(name))
        return cu_prov__refuse(CU_E_INVALID_ARG, reason, reason_len, "CA name '%.64s' is not valid", name);
    if ((rc = cu_x509_decode(cert_text, strlen(cert_text), &x)) != CU_OK)
        return cu_prov__refuse(rc, reason, reason_len, "CA certificate: %s", cu_err_last()->msg);
    if (X509_check_ca(x) == 0) {
        rc = cu_prov__refuse(CU_E_INVALID_ARG, reason, reason_len,
                        "'%s' is not a CA certificate (no CA basic constraint or keyCertSign)", name);
        goto cleanup2;
    }
    if ((rc = cu_store_begin(s)) != CU_OK)
        goto cleanup2;
    if (ca_load(s, name, &old) == CU_OK) {
        last_http = 409;
        rc = cu_prov__refuse(CU_E_STATE, reason, reason_len, "CA certificate '%s' already exists (409)", name);
        goto cleanup;
    }
    if ((pem = cu_x509_to_pem(x)) == NULL || (info = cu_prov__x509_info(x)) == NULL) {
        rc = cu_err_set(CU_E_NOMEM, "out of memory");
        goto cleanup;
    }
    ca = json_pack("{s:s, s:s, s:O, s:O, s:O, s:b}", "name", name, "certificate", pem, "subject",
                   json_object_get(info, "subjectName"), "thumbprint", json_object_get(info, "sha1Thumbprint"),
                   "expiry", json_object_get(info, "notAfterUtc"), "isVerified", verified);
    if (ca == NULL) {
        rc = cu_err_set(CU_E_NOMEM, "out of memory");
        goto cleanup;
    }
    json_object_set(ca, "info", info);
    if ((rc = ca_save(s, name, ca)) == CU_OK)
        rc = ca_audit(s, "caCertificate.create", name, NULL, ca);
cleanup:
    rc = finish(s, rc);
cleanup2:
    json_decref(old);
    json_decref(ca);
    json_decref(info);
    free(pem);
    X509_free(x);
    return rc;
}

cu_rc cu_store_ca_get_json(cu_store *s, const char *name, char **_json)
{
    cu_prov__return_val_if_fail(s != NULL && name != NULL && _json != NULL, CU_E_INVALID_ARG);
    json_t *ca = NULL;
    cu_rc rc = ca_load(s, name, &ca);
    *_json = NULL;
    if (rc == CU_OK && (*_json = json_dumps(ca, JSON_INDENT(2) | JSON_PRESERVE_ORDER)) == NULL)
        rc = cu_err_set(CU_E_NOMEM, "out of memory");
    json_decref(ca);
    return rc;
}

cu_rc cu_store_ca_get_cert(cu_store *s, const char *name, X509 **_cert, bool *_verified)
{
    cu_prov__return_val_if_fail(s != NULL && name != NULL && _cert != NULL, CU_E_INVALID_ARG);
    json_t *ca = NULL;
    cu_rc rc = ca_load(s, name, &ca);
    *_cert = NULL;
    if (rc == CU_OK) {
        const char *pem = json_string_value(json_object_get(ca, "certificate"));
        rc = pem ? cu_x509_decode(pem, strlen(pem), _cert) : cu_err_set(CU_E_STATE, "CA without certificate");
        if (_verified != NULL)
            *_verified = json_is_true(json_object_get(ca, "isVerified"));
    }
    json_decref(ca);
    return rc;
}

static cu_rc etag_ok(json_t *doc, const char *if_match, char *reason, size_t rlen)
{
    const char *cur = json_string_value(json_object_get(doc, "etag"));
    if (if_match != NULL && strcmp(if_match, "*") != 0 && (cur == NULL || strcmp(cur, if_match) != 0)) {
        last_http = 412;
        return cu_prov__refuse(CU_E_STATE, reason, rlen, "stale etag: at %s, not %s (412)", cur ? cur : "(none)",
                               if_match);
    }
    return CU_OK;
}

cu_rc cu_store_ca_gen_code(cu_store *s, const char *name, const char *if_match, char **_code,
                           char *reason, size_t reason_len)
{
    cu_prov__return_val_if_fail(s != NULL && name != NULL && _code != NULL, CU_E_INVALID_ARG);
    json_t *ca = NULL, *before = NULL;
    uint8_t r[24];
    char hex[49];
    cu_rc rc;
    *_code = NULL;
    if ((rc = cu_store_begin(s)) != CU_OK)
        return rc;
    if ((rc = ca_load(s, name, &ca)) != CU_OK) {
        rc = cu_prov__refuse(rc, reason, reason_len, "%s", cu_err_last()->msg);
        goto cleanup;
    }
    if ((rc = etag_ok(ca, if_match, reason, reason_len)) != CU_OK)
        goto cleanup;
    if (RAND_bytes(r, sizeof r) != 1) {
        rc = cu_err_set(CU_E_CRYPTO, "no randomness");
        goto cleanup;
    }
    cu_prov__hex(r, sizeof r, hex);
    for (char *p = hex; *p; p++)
        if (*p >= 'a' && *p <= 'f')
            *p = (char)(*p - 32);
    before = json_deep_copy(ca);
    json_object_set_new(ca, "verificationCode", json_string(hex));
    if ((rc = ca_save(s, name, ca)) == CU_OK && (*_code = strdup(hex)) == NULL)
        rc = cu_err_set(CU_E_NOMEM, "out of memory");
    if (rc == CU_OK)
        rc = ca_audit(s, "caCertificate.verificationCode", name, before, ca);
cleanup:
    json_decref(before);
    json_decref(ca);
    return finish(s, rc);
}

cu_rc cu_store_ca_verify(cu_store *s, const char *name, const char *if_match,
                         const char *cert_text, char *reason, size_t reason_len)
{
    cu_prov__return_val_if_fail(s != NULL && name != NULL && cert_text != NULL, CU_E_INVALID_ARG);
    json_t *ca = NULL, *before = NULL;
    X509 *cax = NULL, *proof = NULL;
    EVP_PKEY *pub = NULL;
    char *cn = NULL;
    cu_rc rc;
    if ((rc = cu_store_begin(s)) != CU_OK)
        return rc;
    if ((rc = ca_load(s, name, &ca)) != CU_OK) {
        rc = cu_prov__refuse(rc, reason, reason_len, "%s", cu_err_last()->msg);
        goto cleanup;
    }
    if ((rc = etag_ok(ca, if_match, reason, reason_len)) != CU_OK)
        goto cleanup;
    const char *code = json_string_value(json_object_get(ca, "verificationCode"));
    const char *pem = json_string_value(json_object_get(ca, "certificate"));
    if (code == NULL) {
        rc = cu_prov__refuse(CU_E_STATE, reason, reason_len, "no verification code was issued for '%s'", name);
        goto cleanup;
    }
    if ((rc = cu_x509_decode(pem, strlen(pem), &cax)) != CU_OK)
        goto cleanup;
    if ((rc = cu_x509_decode(cert_text, strlen(cert_text), &proof)) != CU_OK) {
        rc = cu_prov__refuse(rc, reason, reason_len, "verification certificate: %s", cu_err_last()->msg);
        goto cleanup;
    }
    if ((rc = cu_x509_subject_cn(proof, &cn)) != CU_OK || strcmp(cn, code) != 0) {
        rc = cu_prov__refuse(CU_E_VERIFY, reason, reason_len,
                        "the verification certificate's subject CN is not the verification code");
        goto cleanup;
    }
    if ((pub = X509_get_pubkey(cax)) == NULL || X509_verify(proof, pub) != 1) {
        ERR_clear_error();
        rc = cu_prov__refuse(CU_E_VERIFY, reason, reason_len,
                        "the verification certificate is not signed by the key of CA '%s'", name);
        goto cleanup;
    }
    /* A proof outside its validity period proves nothing now (it may be an
     * old one, or one made for later). */
    char why[400];
    if (cu_x509_check_time(proof, 0, why, sizeof why) != CU_OK) {
        rc = cu_prov__refuse(CU_E_VERIFY, reason, reason_len, "the verification certificate: %s", why);
        goto cleanup;
    }
    before = json_deep_copy(ca);
    json_object_set_new(ca, "isVerified", json_true());
    json_object_del(ca, "verificationCode"); /* one use */
    if ((rc = ca_save(s, name, ca)) == CU_OK)
        rc = ca_audit(s, "caCertificate.verify", name, before, ca);
cleanup:
    json_decref(before);
    EVP_PKEY_free(pub);
    X509_free(cax);
    X509_free(proof);
    free(cn);
    json_decref(ca);
    return finish(s, rc);
}

cu_rc cu_store_ca_delete(cu_store *s, const char *name, const char *if_match, char *reason,
                         size_t reason_len)
{
    cu_prov__return_val_if_fail(s != NULL && name != NULL, CU_E_INVALID_ARG);
    json_t *ca = NULL;
    char **ids = NULL, *lname = NULL, key[160];
    size_t n = 0;
    cu_rc rc;
    if ((rc = cu_store_begin(s)) != CU_OK)
        return rc;
    if ((rc = ca_load(s, name, &ca)) != CU_OK) {
        rc = cu_prov__refuse(rc, reason, reason_len, "%s", cu_err_last()->msg);
        goto cleanup;
    }
    if ((rc = etag_ok(ca, if_match, reason, reason_len)) != CU_OK)
        goto cleanup;
    if ((lname = cu_prov__lower_dup(name)) == NULL) {
        rc = cu_err_set(CU_E_NOMEM, "out of memory");
        goto cleanup;
    }
    snprintf(key, sizeof key, "ca:%s", lname);
    if ((rc = s->ops->find(s->b, CU_KIND_GROUP, key, NULL, 1, &ids, &n)) != CU_OK)
        goto cleanup;
    if (n > 0) {
        last_http = 409;
        rc = cu_prov__refuse(CU_E_STATE, reason, reason_len, "CA '%s' is referenced by enrollment group '%s'",
                        name, ids[0]);
        goto cleanup;
    }
    if ((rc = doc_del(s, CU_KIND_CA, name)) == CU_OK)
        rc = ca_audit(s, "caCertificate.delete", name, ca, NULL);
cleanup:
    cu_store_ids_free(ids, n);
    free(lname);
    json_decref(ca);
    return finish(s, rc);
}

/* ---- hubs ---- */

cu_rc cu_store_hub_put(cu_store *s, const cu_hub *hub, char *reason, size_t reason_len)
{
    cu_prov__return_val_if_fail(s != NULL && hub != NULL, CU_E_INVALID_ARG);
    if (hub->name[0] == 0 || strlen(hub->name) >= sizeof hub->name || strchr(hub->name, '/') != NULL)
        return cu_prov__refuse(CU_E_INVALID_ARG, reason, reason_len, "hub name must be a host name");
    if (hub->weight < 1 || hub->weight > 1000)
        return cu_prov__refuse(CU_E_INVALID_ARG, reason, reason_len, "allocationWeight must be 1..1000");
    json_t *j = json_pack("{s:s, s:i, s:b}", "name", hub->name, "allocationWeight", (int)hub->weight,
                          "applyAllocationPolicy", hub->apply);
    json_t *before = NULL;
    char *body = j ? json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL, *old = NULL;
    cu_rc rc = cu_store_begin(s);
    if (rc != CU_OK)
        goto cleanup2;
    if (body == NULL) {
        rc = cu_err_set(CU_E_NOMEM, "out of memory");
        goto cleanup;
    }
    if (doc_get(s, CU_KIND_HUB, hub->name, &old) == CU_OK) {
        json_error_t e;
        before = json_loads(old, 0, &e);
    }
    if ((rc = doc_put(s, CU_KIND_HUB, hub->name, body, NULL, 0)) == CU_OK)
        rc = cu_prov__audit_change(s, before ? "hub.update" : "hub.create", hub->name, before, j);
cleanup:
    rc = finish(s, rc);
cleanup2:
    free(old);
    free(body);
    json_decref(before);
    json_decref(j);
    return rc;
}

static cu_rc hub_from_json(const char *body, cu_hub *h)
{
    json_error_t e;
    json_t *j = json_loads(body, 0, &e);
    const char *name = json_string_value(json_object_get(j, "name"));
    memset(h, 0, sizeof *h);
    if (name == NULL) {
        json_decref(j);
        return cu_err_set(CU_E_STATE, "stored hub does not parse");
    }
    snprintf(h->name, sizeof h->name, "%s", name);
    h->weight = (unsigned)json_integer_value(json_object_get(j, "allocationWeight"));
    h->apply = json_is_true(json_object_get(j, "applyAllocationPolicy"));
    json_decref(j);
    return CU_OK;
}

cu_rc cu_store_hub_get(cu_store *s, const char *name, cu_hub *_hub)
{
    cu_prov__return_val_if_fail(s != NULL && name != NULL && _hub != NULL, CU_E_INVALID_ARG);
    char *body = NULL;
    cu_rc rc = doc_get(s, CU_KIND_HUB, name, &body);
    if (rc == CU_OK)
        rc = hub_from_json(body, _hub);
    free(body);
    return rc;
}

cu_rc cu_store_hub_delete(cu_store *s, const char *name)
{
    cu_prov__return_val_if_fail(s != NULL && name != NULL, CU_E_INVALID_ARG);
    char *old = NULL;
    json_t *before = NULL;
    json_error_t e;
    cu_rc rc = cu_store_begin(s);
    if (rc != CU_OK)
        return rc;
    if (doc_get(s, CU_KIND_HUB, name, &old) == CU_OK)
        before = json_loads(old, 0, &e);
    if ((rc = doc_del(s, CU_KIND_HUB, name)) == CU_OK)
        rc = cu_prov__audit_change(s, "hub.delete", name, before, NULL);
    free(old);
    json_decref(before);
    return finish(s, rc);
}

cu_rc cu_store_hub_list(cu_store *s, cu_hub **_hubs, size_t *_n)
{
    cu_prov__return_val_if_fail(s != NULL && _hubs != NULL && _n != NULL, CU_E_INVALID_ARG);
    char **ids = NULL;
    size_t n = 0;
    cu_hub *hubs = NULL;
    cu_rc rc = s->ops->list(s->b, CU_KIND_HUB, NULL, 1000, &ids, &n);
    *_hubs = NULL;
    *_n = 0;
    if (rc != CU_OK)
        return rc;
    if (n > 0 && (hubs = calloc(n, sizeof *hubs)) == NULL)
        rc = cu_err_set(CU_E_NOMEM, "out of memory");
    for (size_t i = 0; i < n && rc == CU_OK; i++)
        rc = cu_store_hub_get(s, ids[i], &hubs[i]);
    cu_store_ids_free(ids, n);
    if (rc != CU_OK) {
        free(hubs);
        return rc;
    }
    *_hubs = hubs;
    *_n = n;
    return CU_OK;
}

/* ---- registration records ---- */

#define REC_STR(F) {#F, offsetof(cu_reg_record, F), sizeof(((cu_reg_record *)0)->F)}
static const struct {
    const char *json;
    size_t off, size;
} REC_FIELDS[] = {
    {"registrationId", offsetof(cu_reg_record, registration_id), sizeof(((cu_reg_record *)0)->registration_id)},
    {"deviceId", offsetof(cu_reg_record, device_id), sizeof(((cu_reg_record *)0)->device_id)},
    {"assignedHub", offsetof(cu_reg_record, assigned_hub), sizeof(((cu_reg_record *)0)->assigned_hub)},
    {"status", offsetof(cu_reg_record, status), sizeof(((cu_reg_record *)0)->status)},
    {"substatus", offsetof(cu_reg_record, substatus), sizeof(((cu_reg_record *)0)->substatus)},
    {"errorMessage", offsetof(cu_reg_record, error_message), sizeof(((cu_reg_record *)0)->error_message)},
    {"etag", offsetof(cu_reg_record, etag), sizeof(((cu_reg_record *)0)->etag)},
    {"createdDateTimeUtc", offsetof(cu_reg_record, created), sizeof(((cu_reg_record *)0)->created)},
    {"lastUpdatedDateTimeUtc", offsetof(cu_reg_record, updated), sizeof(((cu_reg_record *)0)->updated)},
    {"attestation", offsetof(cu_reg_record, attestation), sizeof(((cu_reg_record *)0)->attestation)},
    {"enrollmentGroupId", offsetof(cu_reg_record, enrollment_group_id), sizeof(((cu_reg_record *)0)->enrollment_group_id)},
    {"initialHub", offsetof(cu_reg_record, initial_hub), sizeof(((cu_reg_record *)0)->initial_hub)},
};

json_t *cu_prov__reg_record_json(const cu_reg_record *r, bool internal)
{
    json_t *j = json_object();
    if (j == NULL)
        return NULL;
    for (size_t i = 0; i < sizeof REC_FIELDS / sizeof REC_FIELDS[0]; i++) {
        const char *v = (const char *)r + REC_FIELDS[i].off;
        if (*v == 0)
            continue;
        if (!internal && (strcmp(REC_FIELDS[i].json, "attestation") == 0 ||
                          strcmp(REC_FIELDS[i].json, "enrollmentGroupId") == 0 ||
                          strcmp(REC_FIELDS[i].json, "initialHub") == 0))
            continue;
        json_object_set_new(j, REC_FIELDS[i].json, json_string(v));
    }
    if (r->error_code != 0)
        json_object_set_new(j, "errorCode", json_integer(r->error_code));
    if (!internal && r->enrollment_group_id[0] && r->attestation[0]) {
        /* The public shape: x509{enrollmentGroupId} / symmetricKey{...}. */
        json_object_set_new(j, r->attestation, json_pack("{s:s}", "enrollmentGroupId", r->enrollment_group_id));
    }
    if (r->payload_json != NULL) {
        json_error_t e;
        json_t *p = json_loads(r->payload_json, JSON_DECODE_ANY, &e);
        if (p != NULL)
            json_object_set_new(j, "payload", p);
    }
    return j;
}

static cu_rc reg_from_json(const char *body, cu_reg_record *r)
{
    json_error_t e;
    json_t *j = json_loads(body, 0, &e);
    memset(r, 0, sizeof *r);
    if (j == NULL)
        return cu_err_set(CU_E_STATE, "stored registration record does not parse");
    for (size_t i = 0; i < sizeof REC_FIELDS / sizeof REC_FIELDS[0]; i++) {
        const char *v = json_string_value(json_object_get(j, REC_FIELDS[i].json));
        if (v != NULL)
            snprintf((char *)r + REC_FIELDS[i].off, REC_FIELDS[i].size, "%s", v);
    }
    r->error_code = (int)json_integer_value(json_object_get(j, "errorCode"));
    json_t *p = json_object_get(j, "payload");
    if (p != NULL)
        r->payload_json = json_dumps(p, JSON_COMPACT | JSON_ENCODE_ANY);
    json_decref(j);
    return CU_OK;
}

cu_rc cu_store_reg_get(cu_store *s, const char *registration_id, cu_reg_record *_rec)
{
    cu_prov__return_val_if_fail(s != NULL && registration_id != NULL && _rec != NULL, CU_E_INVALID_ARG);
    char *body = NULL;
    memset(_rec, 0, sizeof *_rec);
    cu_rc rc = doc_get(s, CU_KIND_REGISTRATION, registration_id, &body);
    if (rc == CU_OK)
        rc = reg_from_json(body, _rec);
    free(body);
    return rc;
}

cu_rc cu_store_reg_put(cu_store *s, cu_reg_record *rec, const char *audit_json)
{
    cu_prov__return_val_if_fail(s != NULL && rec != NULL && rec->registration_id[0] != 0, CU_E_INVALID_ARG);
    cu_reg_record old;
    char now[32], *body = NULL;
    json_t *j = NULL;
    keyset ks = {{0}, 0};
    cu_rc rc;

    if ((rc = cu_store_begin(s)) != CU_OK)
        return rc;
    cu_prov__timestamp(now);
    rc = cu_store_reg_get(s, rec->registration_id, &old);
    snprintf(rec->created, sizeof rec->created, "%s", rc == CU_OK && old.created[0] ? old.created : now);
    cu_reg_record_clear(&old);
    snprintf(rec->updated, sizeof rec->updated, "%s", now);
    cu_prov__etag_new(rec->etag);
    if (rec->enrollment_group_id[0]) {
        char *lg = cu_prov__lower_dup(rec->enrollment_group_id);
        rc = lg ? keyset_add(&ks, "grp:", lg) : cu_err_set(CU_E_NOMEM, "out of memory");
        free(lg);
        if (rc != CU_OK)
            goto cleanup;
    }
    if ((j = cu_prov__reg_record_json(rec, true)) == NULL ||
        (body = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER)) == NULL) {
        rc = cu_err_set(CU_E_NOMEM, "out of memory");
        goto cleanup;
    }
    if ((rc = doc_put(s, CU_KIND_REGISTRATION, rec->registration_id, body, (const char *const *)ks.k, ks.n)) != CU_OK)
        goto cleanup;
    if (audit_json != NULL)
        rc = cu_audit_append(s, "registration", NULL, audit_json, NULL);
cleanup:
    keyset_clear(&ks);
    free(body);
    json_decref(j);
    return finish(s, rc);
}

cu_rc cu_store_reg_delete(cu_store *s, const char *registration_id, const char *if_match,
                          char *reason, size_t reason_len)
{
    cu_prov__return_val_if_fail(s != NULL && registration_id != NULL, CU_E_INVALID_ARG);
    cu_reg_record old;
    cu_rc rc;
    if ((rc = cu_store_begin(s)) != CU_OK)
        return rc;
    if ((rc = cu_store_reg_get(s, registration_id, &old)) != CU_OK) {
        rc = cu_prov__refuse(rc, reason, reason_len, "%s", cu_err_last()->msg);
        goto cleanup;
    }
    if (if_match != NULL && strcmp(if_match, "*") != 0 && strcmp(if_match, old.etag) != 0) {
        last_http = 412;
        rc = cu_prov__refuse(CU_E_STATE, reason, reason_len, "stale etag: record is at %s, not %s (412)", old.etag,
                        if_match);
        goto cleanup;
    }
    if ((rc = doc_del(s, CU_KIND_REGISTRATION, registration_id)) == CU_OK) {
        json_t *before = cu_prov__reg_record_json(&old, true);
        rc = before ? cu_prov__audit_change(s, "registration.delete", registration_id, before, NULL)
                    : cu_err_set(CU_E_NOMEM, "out of memory");
        json_decref(before);
    }
cleanup:
    cu_reg_record_clear(&old);
    return finish(s, rc);
}


cu_rc cu_store_reg_list_by_group(cu_store *s, const char *group_id, const char *after, size_t limit,
                                 char ***_ids, size_t *_n)
{
    cu_prov__return_val_if_fail(s != NULL && group_id != NULL && _ids != NULL && _n != NULL && limit > 0,
                                CU_E_INVALID_ARG);
    char *lg = cu_prov__lower_dup(group_id), *la = after ? cu_prov__lower_dup(after) : NULL, key[160];
    cu_rc rc;
    if (lg == NULL || (after != NULL && la == NULL)) {
        rc = cu_err_set(CU_E_NOMEM, "out of memory");
    } else {
        snprintf(key, sizeof key, "grp:%.150s", lg);
        rc = s->ops->find(s->b, CU_KIND_REGISTRATION, key, la, limit, _ids, _n);
    }
    free(lg);
    free(la);
    return rc;
}

/* ---- operations ---- */

cu_rc cu_store_op_put(cu_store *s, const char *registration_id, const char *text)
{
    cu_prov__return_val_if_fail(s != NULL && registration_id != NULL && text != NULL, CU_E_INVALID_ARG);
    cu_rc rc = cu_store_begin(s);
    return rc == CU_OK ? finish(s, doc_put(s, CU_KIND_OPERATION, registration_id, text, NULL, 0)) : rc;
}

cu_rc cu_store_op_get(cu_store *s, const char *registration_id, char **_text)
{
    cu_prov__return_val_if_fail(s != NULL && registration_id != NULL && _text != NULL, CU_E_INVALID_ARG);
    return doc_get(s, CU_KIND_OPERATION, registration_id, _text);
}

/* ---- TPM challenges ---- */

cu_keyring *cu_store_get0_keyring(cu_store *s) { return s ? s->kr : NULL; }

/* The value is already sealed by the keyring (custos/tpmsvc.h binds scope,
 * id, EK and expiry); the row itself is sealed like every other row. */
cu_rc cu_store_tpm_challenge_put(cu_store *s, const char *registration_id, const char *sealed)
{
    cu_prov__return_val_if_fail(s != NULL && registration_id != NULL && sealed != NULL, CU_E_INVALID_ARG);
    char *body = NULL, now[32];
    json_t *j = NULL;
    cu_rc rc;
    cu_prov__timestamp(now);
    j = json_pack("{s:s, s:s}", "sealed", sealed, "issued", now);
    if (j == NULL || (body = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER)) == NULL) {
        rc = cu_err_set(CU_E_NOMEM, "out of memory");
        goto cleanup;
    }
    if ((rc = cu_store_begin(s)) != CU_OK)
        goto cleanup;
    rc = finish(s, doc_put(s, CU_KIND_TPM_CHALLENGE, registration_id, body, NULL, 0));
cleanup:
    free(body);
    json_decref(j);
    return rc;
}

cu_rc cu_store_tpm_challenge_get(cu_store *s, const char *registration_id, char **_sealed)
{
    cu_prov__return_val_if_fail(s != NULL && registration_id != NULL && _sealed != NULL, CU_E_INVALID_ARG);
    char *body = NULL;
    json_t *j = NULL;
    json_error_t e;
    const char *v;
    cu_rc rc;
    *_sealed = NULL;
    if ((rc = doc_get(s, CU_KIND_TPM_CHALLENGE, registration_id, &body)) != CU_OK)
        goto cleanup;
    if ((j = json_loads(body, 0, &e)) == NULL) {
        rc = cu_err_set(CU_E_STATE, "stored TPM challenge does not parse");
    } else if ((v = json_string_value(json_object_get(j, "sealed"))) == NULL) {
        /* A challenge of an older format: as if none had been issued. */
        rc = cu_err_set(CU_E_OBJECT_NOT_FOUND, "no pending TPM challenge for '%.128s'", registration_id);
    } else if ((*_sealed = strdup(v)) == NULL) {
        rc = cu_err_set(CU_E_NOMEM, "out of memory");
    }
cleanup:
    json_decref(j);
    free(body);
    return rc;
}

cu_rc cu_store_tpm_challenge_del(cu_store *s, const char *registration_id)
{
    cu_prov__return_val_if_fail(s != NULL && registration_id != NULL, CU_E_INVALID_ARG);
    cu_rc rc = cu_store_begin(s);
    return rc == CU_OK ? finish(s, doc_del(s, CU_KIND_TPM_CHALLENGE, registration_id)) : rc;
}
