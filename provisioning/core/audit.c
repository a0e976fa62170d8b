/* The audit log's chain: canonical form, appends, signed heads, reading,
 * export and verification, over any store backend (which only keeps the
 * rows and serializes appends in its write transaction). */
#include <custos/audit.h>
#include <custos/store.h>

#include "prov_int.h"

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BATCH 1000

static const char RECORD_DOMAIN[] = "custos-audit-v1";
static const char HEAD_DOMAIN[] = "custos-audit-head-v1";

void cu_audit_records_free(cu_audit_record *r, size_t n)
{
    if (r == NULL)
        return;
    for (size_t i = 0; i < n; i++)
        free(r[i].payload);
    free(r);
}

void cu_audit_heads_free(cu_audit_head *h, size_t n)
{
    if (h == NULL)
        return;
    for (size_t i = 0; i < n; i++)
        free(h[i].sig);
    free(h);
}

/* ---- canonical bytes ---- */

static void put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = (uint8_t)(v & 0xff);
}

static uint8_t *put_lp(uint8_t *p, const char *s, size_t n)
{
    p[0] = (uint8_t)(n >> 24);
    p[1] = (uint8_t)(n >> 16);
    p[2] = (uint8_t)(n >> 8);
    p[3] = (uint8_t)n;
    memcpy(p + 4, s, n);
    return p + 4 + n;
}

cu_rc cu_audit_canonical(const cu_audit_record *r, uint8_t **_buf, size_t *_len)
{
    cu_prov__return_val_if_fail(r != NULL && _buf != NULL && _len != NULL, CU_E_INVALID_ARG);
    const char *payload = r->payload ? r->payload : "";
    size_t la = strnlen(r->at, sizeof r->at), lt = strnlen(r->type, sizeof r->type);
    size_t lc = strnlen(r->actor, sizeof r->actor), lp = strlen(payload);
    if (lp > 0x7fffffff)
        return cu_err_set(CU_E_INVALID_ARG, "audit payload too large");
    size_t len = sizeof RECORD_DOMAIN + 8 + 16 + la + lt + lc + lp + 32;
    uint8_t *buf = malloc(len), *p = buf;
    if (buf == NULL)
        return cu_err_set(CU_E_NOMEM, "out of memory");
    memcpy(p, RECORD_DOMAIN, sizeof RECORD_DOMAIN); /* with its NUL */
    p += sizeof RECORD_DOMAIN;
    put_u64(p, r->seq);
    p += 8;
    p = put_lp(p, r->at, la);
    p = put_lp(p, r->type, lt);
    p = put_lp(p, r->actor, lc);
    p = put_lp(p, payload, lp);
    memcpy(p, r->prev, 32);
    *_buf = buf;
    *_len = len;
    return CU_OK;
}

/* The same bytes as cu_audit_canonical, hashed as they go (no copy: this
 * runs on every append and every record verified). */
static int update_lp(EVP_MD_CTX *md, const char *s, size_t n)
{
    uint8_t len[4] = {(uint8_t)(n >> 24), (uint8_t)(n >> 16), (uint8_t)(n >> 8), (uint8_t)n};
    return EVP_DigestUpdate(md, len, 4) && EVP_DigestUpdate(md, s, n);
}

cu_rc cu_audit_record_hash(const cu_audit_record *r, uint8_t out[32])
{
    cu_prov__return_val_if_fail(r != NULL && out != NULL, CU_E_INVALID_ARG);
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    const char *payload = r->payload ? r->payload : "";
    uint8_t seq[8];
    size_t lp = strlen(payload);
    cu_rc rc = CU_OK;
    put_u64(seq, r->seq);
    if (lp > 0x7fffffff)
        rc = cu_err_set(CU_E_INVALID_ARG, "audit payload too large");
    else if (md == NULL || !EVP_DigestInit_ex(md, EVP_sha256(), NULL) ||
        !EVP_DigestUpdate(md, RECORD_DOMAIN, sizeof RECORD_DOMAIN) || !EVP_DigestUpdate(md, seq, 8) ||
        !update_lp(md, r->at, strnlen(r->at, sizeof r->at)) ||
        !update_lp(md, r->type, strnlen(r->type, sizeof r->type)) ||
        !update_lp(md, r->actor, strnlen(r->actor, sizeof r->actor)) || !update_lp(md, payload, lp) ||
        !EVP_DigestUpdate(md, r->prev, 32) || !EVP_DigestFinal_ex(md, out, NULL)) {
        ERR_clear_error();
        rc = cu_err_set(CU_E_CRYPTO, "SHA-256 failed");
    }
    EVP_MD_CTX_free(md);
    return rc;
}

cu_rc cu_audit_head_message(const cu_audit_head *h, uint8_t **_buf, size_t *_len)
{
    cu_prov__return_val_if_fail(h != NULL && _buf != NULL && _len != NULL, CU_E_INVALID_ARG);
    size_t la = strnlen(h->at, sizeof h->at);
    size_t len = sizeof HEAD_DOMAIN + 8 + 32 + 4 + la;
    uint8_t *buf = malloc(len), *p = buf;
    if (buf == NULL)
        return cu_err_set(CU_E_NOMEM, "out of memory");
    memcpy(p, HEAD_DOMAIN, sizeof HEAD_DOMAIN);
    p += sizeof HEAD_DOMAIN;
    put_u64(p, h->seq);
    p += 8;
    memcpy(p, h->hash, 32);
    put_lp(p + 32, h->at, la);
    *_buf = buf;
    *_len = len;
    return CU_OK;
}

cu_rc cu_audit_key_id(EVP_PKEY *key, char out[65])
{
    cu_prov__return_val_if_fail(key != NULL && out != NULL, CU_E_INVALID_ARG);
    unsigned char *der = NULL, md[32];
    int n = i2d_PUBKEY(key, &der);
    cu_rc rc = CU_OK;
    if (n <= 0 || EVP_Digest(der, (size_t)n, md, NULL, EVP_sha256(), NULL) != 1) {
        ERR_clear_error();
        rc = cu_err_set(CU_E_CRYPTO, "cannot encode the audit key's public part");
    } else {
        cu_prov__hex(md, 32, out);
    }
    OPENSSL_free(der);
    return rc;
}

/* ---- writing ---- */

static cu_rc end_txn(cu_store *s, cu_rc rc)
{
    if (rc == CU_OK)
        return cu_store_commit(s);
    cu_store_rollback(s);
    return rc;
}

/* SHA-256 for everything but the EdDSA keys, which hash internally. */
static const char *sig_digest(EVP_PKEY *key)
{
    return EVP_PKEY_is_a(key, "ED25519") || EVP_PKEY_is_a(key, "ED448") ? NULL : "SHA256";
}

/* Signs the head (seq, hash) at time now, inside the caller's transaction.
 * key_id: key's id, or NULL to compute it. */
static cu_rc sign_unlocked(cu_store *s, EVP_PKEY *key, const char *key_id, uint64_t seq, const uint8_t hash[32])
{
    void *b = NULL;
    const cu_store_backend *ops = cu_prov__store_backend(s, &b);
    cu_prov__audit_cfg *cfg = cu_prov__store_audit_cfg(s);
    cu_audit_head h;
    EVP_MD_CTX *md = NULL;
    uint8_t *msg = NULL;
    size_t msg_len = 0, sig_len = 0;
    cu_rc rc;

    memset(&h, 0, sizeof h);
    h.seq = seq;
    memcpy(h.hash, hash, 32);
    cu_prov__timestamp(h.at);
    if (key_id != NULL)
        snprintf(h.key_id, sizeof h.key_id, "%s", key_id);
    else if ((rc = cu_audit_key_id(key, h.key_id)) != CU_OK)
        goto cleanup;
    if ((rc = cu_audit_head_message(&h, &msg, &msg_len)) != CU_OK)
        goto cleanup;
    if ((md = EVP_MD_CTX_new()) == NULL ||
        EVP_DigestSignInit_ex(md, NULL, sig_digest(key), NULL, NULL, key, NULL) != 1 ||
        EVP_DigestSign(md, NULL, &sig_len, msg, msg_len) != 1 || (h.sig = malloc(sig_len)) == NULL ||
        EVP_DigestSign(md, h.sig, &sig_len, msg, msg_len) != 1) {
        unsigned long e = ERR_peek_last_error();
        rc = cu_err_set(CU_E_CRYPTO, "signing the audit head failed: %s",
                        e ? ERR_reason_error_string(e) : "no detail");
        ERR_clear_error();
        goto cleanup;
    }
    h.sig_len = sig_len;
    /* The signature was made: a use of the audit key, whatever becomes of
     * the transaction. */
    if (key == cfg->signer && cfg->signer_name[0])
        (void)cu_audit_key_count(cfg->signer_name, "audit", "sign", 1, 0);
    cu_prov__store_note_write(s);
    if ((rc = ops->audit_head_put(b, &h)) != CU_OK)
        goto cleanup;
    cfg->signed_known = true;
    cfg->last_signed_seq = seq;
    cfg->last_signed_time = time(NULL);
cleanup:
    EVP_MD_CTX_free(md);
    free(msg);
    free(h.sig);
    return rc;
}

/* What the last signed head is, once per store (another connection may
 * sign too; then this one signs a little more often than needed, which is
 * harmless). */
static cu_rc load_last_signed(cu_store *s)
{
    cu_prov__audit_cfg *cfg = cu_prov__store_audit_cfg(s);
    void *b = NULL;
    const cu_store_backend *ops = cu_prov__store_backend(s, &b);
    if (cfg->signed_known)
        return CU_OK;
    cfg->last_signed_seq = 0;
    cfg->last_signed_time = 0;
    uint64_t from = 1;
    for (;;) {
        cu_audit_head *h = NULL;
        size_t n = 0;
        cu_rc rc = ops->audit_heads_read(b, from, BATCH, &h, &n);
        if (rc != CU_OK)
            return rc;
        if (n > 0) {
            time_t t = 0;
            cfg->last_signed_seq = h[n - 1].seq;
            if (cu_prov__timestamp_parse(h[n - 1].at, &t) == CU_OK)
                cfg->last_signed_time = t;
            from = h[n - 1].seq + 1;
        }
        cu_audit_heads_free(h, n);
        if (n < BATCH)
            break;
    }
    /* The time trigger counts from the later of the last head and the
     * signer's start: a process that starts on an old (or no) head does
     * not sign at its first append, but every_secs after it started. */
    if (cfg->last_signed_time < cfg->signer_since)
        cfg->last_signed_time = cfg->signer_since;
    cfg->signed_known = true;
    return CU_OK;
}

static bool sign_due(cu_prov__audit_cfg *cfg, uint64_t seq, time_t now)
{
    if (cfg->signer == NULL || seq <= cfg->last_signed_seq || now < cfg->retry_at)
        return false;
    if (cfg->every_n > 0 && seq - cfg->last_signed_seq >= cfg->every_n)
        return true;
    return cfg->every_secs > 0 && now - cfg->last_signed_time >= (time_t)cfg->every_secs;
}

cu_rc cu_audit_append(cu_store *s, const char *type, const char *actor, const char *payload_json, uint64_t *_seq)
{
    cu_prov__return_val_if_fail(s != NULL && type != NULL && payload_json != NULL && *type != 0 &&
                                    strlen(type) < CU_AUDIT_TYPE_MAX,
                                CU_E_INVALID_ARG);
    cu_prov__audit_cfg *cfg = cu_prov__store_audit_cfg(s);
    void *b = NULL;
    const cu_store_backend *ops = cu_prov__store_backend(s, &b);
    cu_audit_record r;
    cu_rc rc;

    if (_seq != NULL)
        *_seq = 0;
    if (payload_json[0] != '{')
        return cu_err_set(CU_E_INVALID_ARG, "an audit payload is a JSON object");
    if (cfg->off)
        return CU_OK;
    if ((rc = cu_store_begin(s)) != CU_OK)
        return rc;
    memset(&r, 0, sizeof r);
    /* Inside the write transaction: no other writer can chain onto the
     * same predecessor. */
    if ((rc = ops->audit_last(b, &r.seq, r.prev)) != CU_OK)
        goto cleanup;
    r.seq++;
    cu_prov__timestamp(r.at);
    snprintf(r.type, sizeof r.type, "%s", type);
    snprintf(r.actor, sizeof r.actor, "%s", actor ? actor : cfg->actor);
    r.payload = (char *)payload_json;
    if ((rc = cu_audit_record_hash(&r, r.hash)) != CU_OK)
        goto cleanup;
    cu_prov__store_note_write(s);
    if ((rc = ops->audit_append(b, &r)) != CU_OK)
        goto cleanup;
    if (cfg->signer != NULL) {
        time_t now = time(NULL);
        if ((rc = load_last_signed(s)) != CU_OK)
            goto cleanup;
        if (sign_due(cfg, r.seq, now)) {
            cu_rc src = sign_unlocked(s, cfg->signer, cfg->signer_id, r.seq, r.hash);
            if (src == CU_E_CRYPTO) {
                /* The audit key failed (token logged out or gone): the
                 * change and its record stand, the head waits; retried in
                 * a while and reported by cu_audit_sign_if_due. */
                cfg->sign_rc = src;
                snprintf(cfg->sign_msg, sizeof cfg->sign_msg, "%.200s", cu_err_last()->msg);
                cfg->retry_at = now + 10;
                cu_err_clear();
            } else if (src != CU_OK) {
                rc = src;
                goto cleanup;
            } else {
                cfg->sign_rc = CU_OK;
            }
        }
    }
    if (_seq != NULL)
        *_seq = r.seq;
cleanup:
    return end_txn(s, rc);
}

cu_rc cu_audit_set_signer(cu_store *s, EVP_PKEY *key, unsigned every_n, unsigned every_secs)
{
    cu_prov__return_val_if_fail(s != NULL, CU_E_INVALID_ARG);
    cu_prov__audit_cfg *cfg = cu_prov__store_audit_cfg(s);
    char id[65] = "";
    cu_rc rc;
    if (key == cfg->signer && key != NULL) {
        /* The same key again (new periods only): keep its id. */
        snprintf(id, sizeof id, "%s", cfg->signer_id);
    } else if (key != NULL && (rc = cu_audit_key_id(key, id)) != CU_OK) {
        return rc;
    }
    if (key != NULL && EVP_PKEY_up_ref(key) != 1)
        return cu_err_set(CU_E_CRYPTO, "cannot take a reference to the audit key");
    EVP_PKEY_free(cfg->signer);
    cfg->signer = key;
    snprintf(cfg->signer_id, sizeof cfg->signer_id, "%s", id);
    cfg->every_n = every_n;
    cfg->every_secs = every_secs;
    cfg->signer_since = time(NULL);
    cfg->signed_known = false;
    cfg->retry_at = 0;
    cfg->sign_rc = CU_OK;
    return CU_OK;
}

EVP_PKEY *cu_audit_get0_signer(cu_store *s) { return s ? cu_prov__store_audit_cfg(s)->signer : NULL; }

cu_rc cu_audit_set_signer_name(cu_store *s, const char *key_name)
{
    cu_prov__return_val_if_fail(s != NULL && (key_name == NULL || strlen(key_name) < 256), CU_E_INVALID_ARG);
    cu_prov__audit_cfg *cfg = cu_prov__store_audit_cfg(s);
    snprintf(cfg->signer_name, sizeof cfg->signer_name, "%s", key_name ? key_name : "");
    return CU_OK;
}

cu_rc cu_audit_sign_head(cu_store *s, EVP_PKEY *key, uint64_t *_seq)
{
    cu_prov__return_val_if_fail(s != NULL, CU_E_INVALID_ARG);
    cu_prov__audit_cfg *cfg = cu_prov__store_audit_cfg(s);
    void *b = NULL;
    const cu_store_backend *ops = cu_prov__store_backend(s, &b);
    uint64_t seq = 0;
    uint8_t hash[32];
    cu_audit_head *h = NULL;
    size_t n = 0;
    cu_rc rc;

    if (key == NULL)
        key = cfg->signer;
    if (key == NULL)
        return cu_err_set(CU_E_INVALID_ARG, "no audit key to sign the head with");
    if (_seq != NULL)
        *_seq = 0;
    if ((rc = cu_store_begin(s)) != CU_OK)
        return rc;
    if ((rc = ops->audit_last(b, &seq, hash)) != CU_OK || seq == 0)
        goto cleanup;
    if ((rc = ops->audit_heads_read(b, seq, 1, &h, &n)) != CU_OK)
        goto cleanup;
    if (n == 0 || h[0].seq != seq)
        rc = sign_unlocked(s, key, key == cfg->signer ? cfg->signer_id : NULL, seq, hash);
    if (rc == CU_OK && _seq != NULL)
        *_seq = seq;
cleanup:
    cu_audit_heads_free(h, n);
    return end_txn(s, rc);
}

cu_rc cu_audit_sign_if_due(cu_store *s)
{
    cu_prov__return_val_if_fail(s != NULL, CU_E_INVALID_ARG);
    cu_prov__audit_cfg *cfg = cu_prov__store_audit_cfg(s);
    void *b = NULL;
    const cu_store_backend *ops = cu_prov__store_backend(s, &b);
    uint64_t seq = 0;
    uint8_t hash[32];
    cu_rc rc;
    if (cfg->signer == NULL)
        return CU_OK;
    if (cfg->sign_rc != CU_OK) {
        /* An automatic signature failed: try now, and say how it went. */
        if ((rc = cu_audit_sign_head(s, NULL, NULL)) == CU_OK) {
            cfg->sign_rc = CU_OK;
            cfg->retry_at = 0;
            return CU_OK;
        }
        return cu_err_set(rc, "the audit head could not be signed: %s (automatic signing failed before: %s)",
                          cu_err_last()->msg, cfg->sign_msg);
    }
    if (cfg->every_secs == 0)
        return CU_OK;
    /* The cached last head may be another connection's business: reread. */
    cfg->signed_known = false;
    if ((rc = load_last_signed(s)) != CU_OK || (rc = ops->audit_last(b, &seq, hash)) != CU_OK)
        return rc;
    if (seq > cfg->last_signed_seq && time(NULL) - cfg->last_signed_time >= (time_t)cfg->every_secs)
        return cu_audit_sign_head(s, NULL, NULL);
    return CU_OK;
}

/* ---- reading ---- */

cu_rc cu_audit_read(cu_store *s, uint64_t from_seq, size_t limit, cu_audit_record **_r, size_t *_n)
{
    cu_prov__return_val_if_fail(s != NULL && _r != NULL && _n != NULL && limit > 0, CU_E_INVALID_ARG);
    void *b = NULL;
    const cu_store_backend *ops = cu_prov__store_backend(s, &b);
    return ops->audit_read(b, from_seq, limit, _r, _n);
}

cu_rc cu_audit_heads_read(cu_store *s, uint64_t from_seq, size_t limit, cu_audit_head **_h, size_t *_n)
{
    cu_prov__return_val_if_fail(s != NULL && _h != NULL && _n != NULL && limit > 0, CU_E_INVALID_ARG);
    void *b = NULL;
    const cu_store_backend *ops = cu_prov__store_backend(s, &b);
    return ops->audit_heads_read(b, from_seq, limit, _h, _n);
}

char *cu_audit_record_to_json(const cu_audit_record *r)
{
    if (r == NULL)
        return NULL;
    char prev[65], hash[65];
    json_error_t e;
    cu_prov__hex(r->prev, 32, prev);
    cu_prov__hex(r->hash, 32, hash);
    /* The payload as the object it is; a row whose payload no longer parses
     * (tampered) is shown as the string it holds. */
    json_t *p = r->payload ? json_loads(r->payload, JSON_DECODE_ANY, &e) : NULL;
    if (p == NULL)
        p = json_string(r->payload ? r->payload : "");
    json_t *j = json_pack("{s:I, s:s, s:s, s:s, s:o, s:s, s:s}", "seq", (json_int_t)r->seq, "at", r->at, "type",
                          r->type, "actor", r->actor, "payload", p, "prev", prev, "hash", hash);
    char *out = j ? json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(j);
    return out;
}

cu_rc cu_audit_export(cu_store *s, uint64_t since_seq, time_t since, cu_rc (*line)(void *ctx, const char *json),
                      void *ctx)
{
    cu_prov__return_val_if_fail(s != NULL && line != NULL, CU_E_INVALID_ARG);
    uint64_t from = since_seq > 0 ? since_seq : 1;
    cu_rc rc = CU_OK;
    for (;;) {
        cu_audit_record *r = NULL;
        size_t n = 0;
        if ((rc = cu_audit_read(s, from, BATCH, &r, &n)) != CU_OK)
            return rc;
        for (size_t i = 0; i < n && rc == CU_OK; i++) {
            time_t t = 0;
            /* Times only grow along the chain, but a record with an
             * unreadable time is shown rather than hidden. */
            if (since != 0 && cu_prov__timestamp_parse(r[i].at, &t) == CU_OK && t < since)
                continue;
            char *js = cu_audit_record_to_json(&r[i]);
            rc = js ? line(ctx, js) : cu_err_set(CU_E_NOMEM, "out of memory");
            free(js);
        }
        if (n > 0)
            from = r[n - 1].seq + 1;
        cu_audit_records_free(r, n);
        if (rc != CU_OK || n < BATCH)
            return rc;
    }
}

/* ---- verifying ---- */

const char *cu_audit_fault_str(cu_audit_fault f)
{
    switch (f) {
    case CU_AUDIT_OK: return "ok";
    case CU_AUDIT_MISSING: return "missing";
    case CU_AUDIT_LINK: return "broken link";
    case CU_AUDIT_EDITED: return "edited";
    case CU_AUDIT_MALFORMED: return "malformed";
    case CU_AUDIT_HEAD_MISMATCH: return "rewritten since signed";
    case CU_AUDIT_HEAD_SIGNATURE: return "bad head signature";
    case CU_AUDIT_TRUNCATED: return "truncated";
    }
    return "unknown";
}

static cu_rc fault(cu_audit_report *rep, cu_audit_fault f, uint64_t seq, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static cu_rc fault(cu_audit_report *rep, cu_audit_fault f, uint64_t seq, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(rep->what, sizeof rep->what, fmt, ap);
    va_end(ap);
    rep->fault = f;
    rep->fault_seq = seq;
    return cu_err_set(CU_E_VERIFY, "audit record %llu: %s: %s", (unsigned long long)seq, cu_audit_fault_str(f),
                      rep->what);
}

/* All signed heads (their number is the records' over the signing period). */
static cu_rc load_heads(cu_store *s, cu_audit_head **_h, size_t *_n)
{
    cu_audit_head *all = NULL;
    size_t n = 0;
    uint64_t from = 1;
    cu_rc rc = CU_OK;
    for (;;) {
        cu_audit_head *h = NULL;
        size_t k = 0;
        if ((rc = cu_audit_heads_read(s, from, BATCH, &h, &k)) != CU_OK)
            break;
        cu_audit_head *t = k ? realloc(all, (n + k) * sizeof *all) : all;
        if (k && t == NULL) {
            cu_audit_heads_free(h, k);
            rc = cu_err_set(CU_E_NOMEM, "out of memory");
            break;
        }
        all = t;
        if (k) {
            memcpy(all + n, h, k * sizeof *h);
            n += k;
            from = h[k - 1].seq + 1;
        }
        free(h); /* the signatures moved into all */
        if (k < BATCH)
            break;
    }
    if (rc != CU_OK) {
        cu_audit_heads_free(all, n);
        all = NULL;
        n = 0;
    }
    *_h = all;
    *_n = n;
    return rc;
}

static void short_hex(const uint8_t h[32], char out[17])
{
    cu_prov__hex(h, 8, out);
}

/* Checks one head's signature: CU_OK, or a fault. ids: the keys' ids. */
static cu_rc check_sig(const cu_audit_head *h, EVP_PKEY *const *keys, char (*ids)[65], size_t nkeys,
                       cu_audit_report *rep)
{
    EVP_PKEY *key = NULL;
    for (size_t i = 0; i < nkeys && key == NULL; i++)
        if (strcmp(ids[i], h->key_id) == 0)
            key = keys[i];
    if (key == NULL)
        return fault(rep, CU_AUDIT_HEAD_SIGNATURE, h->seq,
                     "the head signed at %s is signed by key %.16s..., which is not a given audit key", h->at,
                     h->key_id);
    uint8_t *msg = NULL;
    size_t len = 0;
    cu_rc rc = cu_audit_head_message(h, &msg, &len);
    if (rc != CU_OK)
        return rc;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    int ok = md != NULL && EVP_DigestVerifyInit_ex(md, NULL, sig_digest(key), NULL, NULL, key, NULL) == 1 &&
             EVP_DigestVerify(md, h->sig, h->sig_len, msg, len) == 1;
    ERR_clear_error();
    EVP_MD_CTX_free(md);
    free(msg);
    if (!ok)
        return fault(rep, CU_AUDIT_HEAD_SIGNATURE, h->seq,
                     "the signature of the head signed at %s does not verify with audit key %.16s...: the head "
                     "was forged or altered",
                     h->at, h->key_id);
    rep->heads_verified++;
    return CU_OK;
}

cu_rc cu_audit_verify(cu_store *s, EVP_PKEY *const *keys, size_t nkeys, cu_audit_report *_rep)
{
    cu_prov__return_val_if_fail(s != NULL && _rep != NULL && (nkeys == 0 || keys != NULL), CU_E_INVALID_ARG);
    cu_audit_report *rep = _rep;
    char (*ids)[65] = NULL;
    cu_audit_head *heads = NULL;
    size_t nh = 0, hi = 0;
    uint64_t expect = 1, last_good_head = 0;
    uint8_t prev[32] = {0}, hash[32];
    char a[17], b[17];
    cu_rc rc;

    memset(rep, 0, sizeof *rep);
    if (nkeys > 0 && (ids = calloc(nkeys, sizeof *ids)) == NULL)
        return cu_err_set(CU_E_NOMEM, "out of memory");
    for (size_t i = 0; i < nkeys; i++)
        if ((rc = cu_audit_key_id(keys[i], ids[i])) != CU_OK) {
            free(ids);
            return rc;
        }
    if ((rc = load_heads(s, &heads, &nh)) != CU_OK) {
        free(ids);
        return rc;
    }
    rep->heads = nh;
    if (nh > 0) {
        rep->last_signed_seq = heads[nh - 1].seq;
        snprintf(rep->last_signed_at, sizeof rep->last_signed_at, "%s", heads[nh - 1].at);
        memcpy(rep->last_signed_hash, heads[nh - 1].hash, 32);
    }
    for (;;) {
        cu_audit_record *r = NULL;
        size_t n = 0;
        if ((rc = cu_audit_read(s, expect, BATCH, &r, &n)) != CU_OK)
            goto cleanup;
        for (size_t i = 0; i < n && rc == CU_OK; i++) {
            const cu_audit_record *x = &r[i];
            rep->records++;
            if (x->seq != expect) {
                rc = x->seq == expect + 1
                         ? fault(rep, CU_AUDIT_MISSING, expect, "record %llu is missing (deleted): the chain goes "
                                 "from record %llu to record %llu",
                                 (unsigned long long)expect, (unsigned long long)expect - 1,
                                 (unsigned long long)x->seq)
                         : fault(rep, CU_AUDIT_MISSING, expect, "records %llu to %llu are missing (deleted)",
                                 (unsigned long long)expect, (unsigned long long)x->seq - 1);
                break;
            }
            if (CRYPTO_memcmp(x->prev, prev, 32) != 0) {
                short_hex(x->prev, a);
                short_hex(prev, b);
                rc = expect == 1
                         ? fault(rep, CU_AUDIT_LINK, expect, "record 1 does not start the chain (prev %s..., not "
                                 "zero): records before it were removed, or it was inserted", a)
                         : fault(rep, CU_AUDIT_LINK, expect,
                                 "record %llu does not follow record %llu: it carries prev %s... but record %llu "
                                 "hashes to %s... (records reordered or inserted)",
                                 (unsigned long long)expect, (unsigned long long)expect - 1, a,
                                 (unsigned long long)expect - 1, b);
                break;
            }
            if ((rc = cu_audit_record_hash(x, hash)) != CU_OK)
                break;
            if (CRYPTO_memcmp(hash, x->hash, 32) != 0) {
                short_hex(hash, a);
                short_hex(x->hash, b);
                rc = fault(rep, CU_AUDIT_EDITED, expect,
                           "record %llu was edited: its content (type '%.40s', at %s) hashes to %s..., not to the "
                           "hash %s... it was written with",
                           (unsigned long long)expect, x->type, x->at, a, b);
                break;
            }
            /* Heads at this record: the chain up to here is what was signed. */
            for (; hi < nh && heads[hi].seq <= x->seq && rc == CU_OK; hi++) {
                if (heads[hi].seq < x->seq)
                    continue; /* unreachable: a gap was reported above */
                if (nkeys > 0 && (rc = check_sig(&heads[hi], keys, ids, nkeys, rep)) != CU_OK)
                    break;
                if (CRYPTO_memcmp(heads[hi].hash, x->hash, 32) != 0) {
                    short_hex(heads[hi].hash, a);
                    short_hex(x->hash, b);
                    rc = fault(rep, CU_AUDIT_HEAD_MISMATCH, x->seq,
                               "the head signed at %s says record %llu hashes to %s..., the chain has %s...: "
                               "records %llu to %llu were rewritten (and re-chained) after it was signed",
                               heads[hi].at, (unsigned long long)x->seq, a, b,
                               (unsigned long long)last_good_head + 1, (unsigned long long)x->seq);
                    break;
                }
                last_good_head = x->seq;
            }
            if (rc != CU_OK)
                break;
            memcpy(prev, x->hash, 32);
            memcpy(rep->last_hash, x->hash, 32);
            rep->last_seq = x->seq;
            expect++;
        }
        cu_audit_records_free(r, n);
        if (rc != CU_OK || n < BATCH)
            break;
    }
    if (rc != CU_OK)
        goto cleanup;
    /* A signed head past the last record: the tail was cut off. */
    if (hi < nh) {
        if (nkeys > 0 && (rc = check_sig(&heads[hi], keys, ids, nkeys, rep)) != CU_OK)
            goto cleanup;
        rc = fault(rep, CU_AUDIT_TRUNCATED, rep->last_seq + 1,
                   "the log ends at record %llu but the head signed at %s covers record %llu: records %llu to "
                   "%llu (at least) were deleted from the tail",
                   (unsigned long long)rep->last_seq, heads[hi].at, (unsigned long long)heads[hi].seq,
                   (unsigned long long)rep->last_seq + 1, (unsigned long long)heads[hi].seq);
    }
cleanup:
    cu_audit_heads_free(heads, nh);
    free(ids);
    return rc;
}

cu_rc cu_audit_check_kept_head(cu_store *s, uint64_t seq, const uint8_t hash[32], cu_audit_report *_rep)
{
    cu_prov__return_val_if_fail(s != NULL && hash != NULL && _rep != NULL && seq > 0, CU_E_INVALID_ARG);
    cu_audit_record *r = NULL;
    size_t n = 0;
    char a[17], b[17];
    cu_rc rc = cu_audit_read(s, seq, 1, &r, &n);
    if (rc != CU_OK)
        return rc;
    if (n == 0 || r[0].seq != seq) {
        /* _rep comes from cu_audit_verify: the log ends at last_seq. */
        uint64_t first = _rep->last_seq < seq ? _rep->last_seq + 1 : seq;
        rc = fault(_rep, CU_AUDIT_TRUNCATED, first,
                   "the log ends at record %llu but a kept head names record %llu: records %llu to %llu (at "
                   "least) were deleted, with the heads signed over them",
                   (unsigned long long)_rep->last_seq, (unsigned long long)seq, (unsigned long long)first,
                   (unsigned long long)seq);
    } else if (CRYPTO_memcmp(r[0].hash, hash, 32) != 0) {
        short_hex(hash, a);
        short_hex(r[0].hash, b);
        rc = fault(_rep, CU_AUDIT_HEAD_MISMATCH, seq,
                   "the kept head says record %llu hashes to %s..., the log has %s...: records up to %llu were "
                   "rewritten since",
                   (unsigned long long)seq, a, b, (unsigned long long)seq);
    }
    cu_audit_records_free(r, n);
    return rc;
}
