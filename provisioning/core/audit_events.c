/* What goes into the audit log: change records, decision records, the
 * service's key uses (counted per key per minute) and token administration
 * events. The chain itself is core/audit.c. Nothing here ever writes a key:
 * enrollments lose their symmetric keys, URIs their PINs. */
#include <custos/audit.h>
#include <custos/store.h>
#include <custos/x509.h>

#include "prov_int.h"

#include <errno.h>
#include <limits.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

static cu_rc append_json(cu_store *s, const char *type, const char *actor, json_t *j)
{
    char *p = j ? json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    cu_rc rc = p ? cu_audit_append(s, type, actor, p, NULL) : cu_err_set(CU_E_NOMEM, "out of memory");
    free(p);
    return rc;
}

cu_rc cu_prov__audit_change(cu_store *s, const char *type, const char *id, json_t *before, json_t *after)
{
    json_t *j = json_pack("{s:s, s:O?, s:O?}", "id", id, "before", before, "after", after);
    cu_rc rc = append_json(s, type, NULL, j);
    json_decref(j);
    return rc;
}

json_t *cu_prov__audit_enr_json(const struct cu_enr *e)
{
    json_t *c = json_deep_copy(cu_prov__enr_json(e));
    if (c == NULL)
        return NULL;
    cu_prov__strip_keys(c);
    /* Webhook URLs often carry a function key in their query. */
    json_t *def = json_object_get(c, "customAllocationDefinition");
    const char *url = json_string_value(json_object_get(def, "webhookUrl"));
    const char *q = url ? strchr(url, '?') : NULL;
    if (q != NULL) {
        char *red = NULL;
        if (asprintf(&red, "%.*s?(redacted)", (int)(q - url), url) < 0) {
            json_decref(c);
            return NULL;
        }
        json_object_set_new(def, "webhookUrl", json_string(red));
        free(red);
    }
    return c;
}

/* ---- decisions ---- */

static const char *outcome_word(cu_prov_outcome o)
{
    switch (o) {
    case CU_PROV_PROVISION: return "provision";
    case CU_PROV_REFUSE: return "refuse";
    case CU_PROV_CHALLENGE: return "challenge";
    default: return "undecided";
    }
}

/* SHA-256 of every certificate the device sent, leaf first. */
static json_t *chain_json(const cu_x509_chain *ch)
{
    json_t *a = json_array();
    char hex[65];
    if (a == NULL || ch == NULL)
        return a;
    if (cu_x509_chain_get0_leaf(ch) != NULL && cu_x509_sha256_hex(cu_x509_chain_get0_leaf(ch), hex) == CU_OK)
        json_array_append_new(a, json_string(hex));
    STACK_OF(X509) *extra = cu_x509_chain_get0_extra(ch);
    for (int i = 0; i < sk_X509_num(extra); i++)
        if (cu_x509_sha256_hex(sk_X509_value(extra, i), hex) == CU_OK)
            json_array_append_new(a, json_string(hex));
    return a;
}

/* Built straight from the explanation (not through its JSON text): this
 * runs on every registration. */
static json_t *candidates_json(const cu_prov_explain *ex)
{
    json_t *a = json_array();
    for (size_t i = 0; a != NULL && i < ex->n; i++) {
        const cu_prov_candidate *c = &ex->cand[i];
        json_t *o = json_object();
        if (o == NULL || json_array_append_new(a, o) != 0)
            break;
        json_object_set_new(o, "kind", json_string(c->kind));
        json_object_set_new(o, "id", c->exists ? json_string(c->id) : json_null());
        json_object_set_new(o, "exists", json_boolean(c->exists));
        json_object_set_new(o, "matched", json_boolean(c->matched));
        json_object_set_new(o, "enabled", json_boolean(c->enabled));
        json_object_set_new(o, "decided", json_boolean(c->decided));
        if (c->cert_subject[0]) {
            json_object_set_new(o, "depth", json_integer(c->depth));
            json_object_set_new(o, "certificateSubject", json_string(c->cert_subject));
            json_object_set_new(o, "certificateSha256", json_string(c->cert_sha256));
        }
        json_object_set_new(o, "note", json_string(c->note));
    }
    return a;
}

json_t *cu_prov__audit_decision(const cu_prov_request *req, const cu_prov_result *res)
{
    const cu_prov_explain *ex = &res->explain;
    json_t *j = json_object();
    if (j == NULL)
        return NULL;
    json_object_set_new(j, "registrationId", json_string(req->registration_id));
    json_object_set_new(j, "attestation", json_string(ex->attestation));
    json_object_set_new(j, "outcome", json_string(outcome_word(res->outcome)));
    if (ex->decided >= 0 && (size_t)ex->decided < ex->n) {
        const cu_prov_candidate *c = &ex->cand[ex->decided];
        json_object_set_new(j, "decidedBy", json_pack("{s:i, s:s, s:s, s:b}", "index", ex->decided, "kind", c->kind,
                                                      "id", c->id, "enabled", c->enabled));
    } else {
        json_object_set_new(j, "decidedBy", json_null());
    }
    json_object_set_new(j, "reason", json_string(ex->reason));
    json_object_set_new(j, "candidates", candidates_json(ex));
    if (req->chain != NULL)
        json_object_set_new(j, "chain", chain_json(req->chain));
    if (req->tpm_ek != NULL) {
        /* SHA-256 of the EK's TPM2B_PUBLIC (what the default registration
         * id is made of); an EK that is not base64 gets none. */
        uint8_t *ek = NULL, md[32];
        size_t len = 0;
        char fp[65];
        if (cu_prov__b64_decode(req->tpm_ek, strlen(req->tpm_ek), &ek, &len) == CU_OK &&
            EVP_Digest(ek, len, md, NULL, EVP_sha256(), NULL) == 1) {
            cu_prov__hex(md, 32, fp);
            json_object_set_new(j, "tpm", json_pack("{s:s}", "ekSha256", fp));
        }
        if (ek != NULL)
            OPENSSL_clear_free(ek, len);
        cu_err_clear();
    }
    if (res->outcome == CU_PROV_PROVISION) {
        const cu_reg_record *r = &res->record;
        json_object_set_new(j, "status", json_string(r->status));
        json_object_set_new(j, "deviceId", json_string(r->device_id));
        if (r->assigned_hub[0])
            json_object_set_new(j, "assignedHub", json_string(r->assigned_hub));
        if (r->substatus[0])
            json_object_set_new(j, "substatus", json_string(r->substatus));
        if (r->error_code)
            json_object_set_new(j, "errorCode", json_integer(r->error_code));
        if (r->error_message[0])
            json_object_set_new(j, "errorMessage", json_string(r->error_message));
    } else {
        json_object_set_new(j, "httpStatus", json_integer(res->http_status));
        if (res->error_code)
            json_object_set_new(j, "errorCode", json_integer(res->error_code));
    }
    return j;
}

/* ---- the service's key uses ---- */

#define KU_OPS 6   /* operations told apart per key and minute; more go to "other" */
#define KU_WORD 24 /* bytes of a role or operation name, with the NUL */

typedef struct ku {
    char key[256];
    char role[KU_WORD];
    long long minute; /* time / 60 */
    unsigned long count;
    size_t nops;
    char op[KU_OPS][KU_WORD];
    unsigned long op_count[KU_OPS];
} ku;

/* Process-wide: every thread's uses of a key in a minute make one record. */
static pthread_mutex_t ku_lock = PTHREAD_MUTEX_INITIALIZER;
static ku *ku_tab;
static size_t ku_n, ku_cap;

static void ku_add_op(ku *e, const char *op, unsigned long count)
{
    size_t i = 0;
    if (op == NULL || *op == 0)
        return;
    for (; i < e->nops; i++)
        if (strcmp(e->op[i], op) == 0)
            break;
    if (i == e->nops) {
        if (e->nops == KU_OPS) {
            i = KU_OPS - 1; /* the last slot becomes "other" */
            snprintf(e->op[i], KU_WORD, "other");
        } else {
            snprintf(e->op[i], KU_WORD, "%s", op);
            e->op_count[i] = 0;
            e->nops++;
        }
    }
    e->op_count[i] += count;
}

static ku *ku_find_unlocked(const char *key, long long minute)
{
    for (size_t i = 0; i < ku_n; i++)
        if (ku_tab[i].minute == minute && strcmp(ku_tab[i].key, key) == 0)
            return &ku_tab[i];
    if (ku_n == ku_cap) {
        size_t cap = ku_cap ? ku_cap * 2 : 16;
        ku *t = realloc(ku_tab, cap * sizeof *t);
        if (t == NULL)
            return NULL;
        ku_tab = t;
        ku_cap = cap;
    }
    ku *e = &ku_tab[ku_n++];
    memset(e, 0, sizeof *e);
    snprintf(e->key, sizeof e->key, "%s", key);
    e->minute = minute;
    return e;
}

static int ku_add_unlocked(const char *key, const char *role, const char *op, long long minute,
                           unsigned long count)
{
    ku *e = ku_find_unlocked(key, minute);
    if (e == NULL)
        return -1;
    if (e->role[0] == 0 && role != NULL)
        snprintf(e->role, sizeof e->role, "%s", role);
    e->count += count;
    ku_add_op(e, op, count);
    return 0;
}

/* Puts back an entry that could not be written. */
static void ku_merge_unlocked(const ku *done)
{
    ku *e = ku_find_unlocked(done->key, done->minute);
    if (e == NULL)
        return; /* out of memory: those counts are lost, as an unwritable log loses them */
    if (e->role[0] == 0)
        memcpy(e->role, done->role, sizeof e->role);
    e->count += done->count;
    for (size_t i = 0; i < done->nops; i++)
        ku_add_op(e, done->op[i], done->op_count[i]);
}

/* Moves the entries of minutes before `before` (all when before is
 * LLONG_MAX) out of the table into *_out (caller frees). */
static cu_rc ku_take_unlocked(long long before, ku **_out, size_t *_n)
{
    size_t n = 0, k = 0;
    *_out = NULL;
    *_n = 0;
    for (size_t i = 0; i < ku_n; i++)
        n += ku_tab[i].minute < before;
    if (n == 0)
        return CU_OK;
    ku *out = malloc(n * sizeof *out);
    if (out == NULL)
        return cu_err_set(CU_E_NOMEM, "out of memory");
    n = 0;
    for (size_t i = 0; i < ku_n; i++) {
        if (ku_tab[i].minute < before)
            out[n++] = ku_tab[i];
        else
            ku_tab[k++] = ku_tab[i];
    }
    ku_n = k;
    *_out = out;
    *_n = n;
    return CU_OK;
}

/* {"key", "role"?, "minute", "count", "uses"?}: role and the uses by
 * operation only when the counter said them. */
static json_t *ku_json(const ku *e)
{
    char at[32];
    time_t t = (time_t)(e->minute * 60);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(at, sizeof at, "%Y-%m-%dT%H:%M:00Z", &tm);
    json_t *j = json_object();
    if (j == NULL)
        return NULL;
    json_object_set_new(j, "key", json_string(e->key));
    if (e->role[0])
        json_object_set_new(j, "role", json_string(e->role));
    json_object_set_new(j, "minute", json_string(at));
    json_object_set_new(j, "count", json_integer((json_int_t)e->count));
    if (e->nops > 0) {
        json_t *u = json_object();
        for (size_t i = 0; u != NULL && i < e->nops; i++)
            json_object_set_new(u, e->op[i], json_integer((json_int_t)e->op_count[i]));
        json_object_set_new(j, "uses", u);
    }
    return j;
}

static cu_rc ku_write(cu_store *s, ku *done, size_t n)
{
    cu_rc rc = CU_OK;
    size_t i = 0;
    for (; i < n && rc == CU_OK; i++) {
        json_t *j = ku_json(&done[i]);
        rc = append_json(s, "key.use", NULL, j);
        json_decref(j);
    }
    if (rc != CU_OK) {
        /* Not written: keep the counts for the next flush. */
        pthread_mutex_lock(&ku_lock);
        for (size_t k = i - 1; k < n; k++)
            ku_merge_unlocked(&done[k]);
        pthread_mutex_unlock(&ku_lock);
    }
    return rc;
}

/* pkcs11: URIs lose pin-value and pin-source; other names are kept. */
static void strip_pin(const char *in, char *out, size_t size)
{
    if (strncmp(in, "pkcs11:", 7) != 0 || strstr(in, "pin-") == NULL) {
        snprintf(out, size, "%s", in);
        return;
    }
    const char *q = strchr(in, '?');
    size_t plen = q ? (size_t)(q - in) : strlen(in), o = 0;
    bool first = true;
    o = (size_t)snprintf(out, size, "pkcs11:");
    for (const char *p = in + 7; p < in + plen && o < size;) {
        const char *end = memchr(p, ';', (size_t)(in + plen - p));
        size_t n = end ? (size_t)(end - p) : (size_t)(in + plen - p);
        if (n > 0 && strncmp(p, "pin-value=", 10) != 0 && strncmp(p, "pin-source=", 11) != 0) {
            o += (size_t)snprintf(out + o, size - o, "%s%.*s", first ? "" : ";", (int)n, p);
            first = false;
        }
        p += n + (end ? 1 : 0);
        if (end == NULL)
            break;
    }
    first = true;
    for (const char *p = q ? q + 1 : NULL; p != NULL && *p && o < size;) {
        const char *end = strchr(p, '&');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        if (n > 0 && strncmp(p, "pin-value=", 10) != 0 && strncmp(p, "pin-source=", 11) != 0) {
            o += (size_t)snprintf(out + o, size - o, "%s%.*s", first ? "?" : "&", (int)n, p);
            first = false;
        }
        p = end ? end + 1 : NULL;
    }
}

static bool word_ok(const char *w)
{
    return w == NULL || (*w != 0 && strlen(w) < KU_WORD);
}

cu_rc cu_audit_key_count(const char *key_id, const char *role, const char *op, unsigned long n, time_t now)
{
    cu_prov__return_val_if_fail(key_id != NULL && *key_id != 0 && strlen(key_id) < 1024 && word_ok(role) &&
                                    word_ok(op),
                                CU_E_INVALID_ARG);
    char key[256];
    cu_rc rc = CU_OK;
    strip_pin(key_id, key, sizeof key);
    pthread_mutex_lock(&ku_lock);
    /* The clock is read under the lock: a use counted after a flush took
     * its minute is in a later minute, so a minute makes one record. */
    if (now == 0)
        now = time(NULL);
    if (ku_add_unlocked(key, role, op, (long long)now / 60, n) != 0)
        rc = cu_err_set(CU_E_NOMEM, "out of memory");
    pthread_mutex_unlock(&ku_lock);
    return rc;
}

static cu_rc flush_before(cu_store *s, long long minute)
{
    ku *done = NULL;
    size_t n = 0;
    pthread_mutex_lock(&ku_lock);
    cu_rc rc = ku_take_unlocked(minute, &done, &n);
    pthread_mutex_unlock(&ku_lock);
    if (rc == CU_OK && n > 0)
        rc = ku_write(s, done, n);
    free(done);
    return rc;
}

cu_rc cu_audit_key_use_n(cu_store *s, const char *key_id, unsigned long count, time_t now)
{
    cu_prov__return_val_if_fail(s != NULL, CU_E_INVALID_ARG);
    if (now == 0)
        now = time(NULL);
    cu_rc rc = cu_audit_key_count(key_id, NULL, NULL, count, now);
    return rc == CU_OK ? flush_before(s, (long long)now / 60) : rc;
}

cu_rc cu_audit_key_use(cu_store *s, const char *key_id) { return cu_audit_key_use_n(s, key_id, 1, 0); }

cu_rc cu_audit_key_use_flush(cu_store *s)
{
    cu_prov__return_val_if_fail(s != NULL, CU_E_INVALID_ARG);
    return flush_before(s, LLONG_MAX);
}

cu_rc cu_audit_key_use_flush_due(cu_store *s)
{
    cu_prov__return_val_if_fail(s != NULL, CU_E_INVALID_ARG);
    return flush_before(s, (long long)time(NULL) / 60);
}

cu_rc cu_prov__audit_key_use_flush_finished(cu_store *s) { return flush_before(s, (long long)time(NULL) / 60); }

/* ---- token administration ---- */

static cu_rc token_kind_check(const char *kind)
{
    for (const char *p = kind; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || *p == '-'))
            return cu_err_set(CU_E_INVALID_ARG, "token event kind '%.32s': lower-case letters and '-' only", kind);
    return CU_OK;
}

cu_rc cu_audit_token_event_to(cu_store *s, const char *actor, const char *kind, const char *token_desc,
                              const char *key_uri, const char *result)
{
    cu_prov__return_val_if_fail(s != NULL && kind != NULL && *kind != 0 && strlen(kind) < 32, CU_E_INVALID_ARG);
    if (token_kind_check(kind) != CU_OK)
        return CU_E_INVALID_ARG;
    char type[48], key[1024];
    if (key_uri != NULL)
        strip_pin(key_uri, key, sizeof key);
    snprintf(type, sizeof type, "token.%s", kind);
    json_t *j = json_pack("{s:s?, s:s?, s:s}", "token", token_desc, "key", key_uri ? key : NULL, "result",
                          result ? result : "ok");
    cu_rc rc = append_json(s, type, actor, j);
    json_decref(j);
    return rc;
}

cu_rc cu_audit_token_event(const char *state_dir, const char *actor, const char *kind, const char *token_desc,
                           const char *key_uri, const char *result)
{
    cu_prov__return_val_if_fail(state_dir != NULL && kind != NULL && *kind != 0 && strlen(kind) < 32,
                                CU_E_INVALID_ARG);
    cu_store *s = NULL;
    char path[4096];
    cu_rc rc;
    if ((rc = token_kind_check(kind)) != CU_OK)
        return rc;
    /* The audit log only: no keyring needed, so a token command can record
     * its event whatever token the service keyring lives in. */
    if (mkdir(state_dir, 0700) != 0 && errno != EEXIST)
        return cu_err_set_sys(CU_E_IO, errno, "cannot create the state directory %s", state_dir);
    if (snprintf(path, sizeof path, "%s/custos.db", state_dir) >= (int)sizeof path)
        return cu_err_set(CU_E_INVALID_ARG, "state directory path too long");
    /* $CUSTOS_STORE names the store elsewhere, as in custos/state.h. */
    const char *spec = getenv("CUSTOS_STORE"), *pw = getenv("CUSTOS_STORE_PASSWORD_FILE");
    if ((rc = spec && *spec ? cu_store_open_audit_only_spec(spec, pw && *pw ? pw : NULL, true, &s)
                            : cu_store_open_audit_only(path, true, &s)) != CU_OK)
        return rc;
    rc = cu_audit_token_event_to(s, actor, kind, token_desc, key_uri, result);
    cu_store_close(s);
    return rc;
}
