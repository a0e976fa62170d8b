/* DER codec for the records of custos-soft.asn, with libtasn1.
 *
 * Decoding is strict: DER only, the whole input consumed, a known version,
 * every field within its range, and the trailing SHA-256 digest must match.
 * This file is also what the fuzz target drives (tests/fuzz/soft). */
#include "soft.h"

#include <libtasn1.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern const asn1_static_node cs_asn1_tab[];

#define REC_VERSION 1
#define DIGEST_LEN 32
#define MAX_ATTRS 256
#define MAX_ATTR_LEN (256u * 1024u)

static asn1_node defs;
static int defs_rc = ASN1_SUCCESS;
static pthread_once_t defs_once = PTHREAD_ONCE_INIT;

static void defs_load(void)
{
    char err[ASN1_MAX_ERROR_DESCRIPTION_SIZE];
    defs_rc = asn1_array2tree(cs_asn1_tab, &defs, err);
}

static cs_rec_err element(const char *type, asn1_node *_node)
{
    pthread_once(&defs_once, defs_load);
    if (defs_rc != ASN1_SUCCESS)
        return CS_REC_NOMEM;
    *_node = NULL;
    return asn1_create_element(defs, type, _node) == ASN1_SUCCESS ? CS_REC_OK : CS_REC_NOMEM;
}

const char *cs_rec_err_str(cs_rec_err e)
{
    switch (e) {
    case CS_REC_OK: return "ok";
    case CS_REC_NOMEM: return "out of memory";
    case CS_REC_DER: return "not a valid DER record";
    case CS_REC_DIGEST: return "digest mismatch (record corrupt or truncated)";
    case CS_REC_VERSION: return "unsupported record version";
    case CS_REC_FIELD: return "field out of range";
    }
    return "unknown";
}

/* ---- small writers / readers ---- */

static int write_ulong(asn1_node n, const char *name, uint64_t v)
{
    unsigned char b[9];
    int i = 9;
    do {
        b[--i] = (unsigned char)(v & 0xff);
        v >>= 8;
    } while (v != 0);
    if (b[i] & 0x80)
        b[--i] = 0; /* keep it positive */
    return asn1_write_value(n, name, b + i, 9 - i);
}

static cs_rec_err read_ulong(asn1_node n, const char *name, uint64_t max, uint64_t *_v)
{
    unsigned char b[16];
    int len = sizeof b;
    if (asn1_read_value(n, name, b, &len) != ASN1_SUCCESS || len < 1 || len > 9)
        return CS_REC_FIELD;
    if (b[0] & 0x80)
        return CS_REC_FIELD; /* negative */
    if (len == 9 && b[0] != 0)
        return CS_REC_FIELD;
    if (len > 1 && b[0] == 0 && !(b[1] & 0x80))
        return CS_REC_FIELD; /* not minimal: not DER (found by the fuzzer) */
    uint64_t v = 0;
    for (int i = 0; i < len; i++)
        v = (v << 8) | b[i];
    if (v > max)
        return CS_REC_FIELD;
    *_v = v;
    return CS_REC_OK;
}

static cs_rec_err read_u32(asn1_node n, const char *name, uint32_t *_v)
{
    uint64_t v;
    cs_rec_err e = read_ulong(n, name, UINT32_MAX, &v);
    if (e == CS_REC_OK)
        *_v = (uint32_t)v;
    return e;
}

/* Reads an OCTET STRING of exactly `len` bytes (or at most, if !exact). */
static cs_rec_err read_fixed(asn1_node n, const char *name, void *buf, int len, bool exact,
                             int *_got)
{
    int l = len;
    int rc = asn1_read_value(n, name, buf, &l);
    if (rc != ASN1_SUCCESS || (exact && l != len))
        return CS_REC_FIELD;
    if (_got)
        *_got = l;
    return CS_REC_OK;
}

/* Reads an OCTET STRING into a fresh buffer (at most max bytes). */
static cs_rec_err read_alloc(asn1_node n, const char *name, size_t max, unsigned char **_buf,
                             size_t *_len)
{
    int l = 0;
    int rc = asn1_read_value(n, name, NULL, &l);
    if (rc != ASN1_MEM_ERROR && rc != ASN1_SUCCESS)
        return CS_REC_FIELD;
    if (l < 0 || (size_t)l > max)
        return CS_REC_FIELD;
    unsigned char *b = OPENSSL_malloc(l ? (size_t)l : 1);
    if (b == NULL)
        return CS_REC_NOMEM;
    if (l > 0 && asn1_read_value(n, name, b, &l) != ASN1_SUCCESS) {
        OPENSSL_free(b);
        return CS_REC_FIELD;
    }
    *_buf = b;
    *_len = (size_t)l;
    return CS_REC_OK;
}

static cs_rec_err write_sealed(asn1_node n, const char *base, const cs_sealed *s)
{
    char name[128];
    snprintf(name, sizeof name, "%s.generation", base);
    if (write_ulong(n, name, s->generation) != ASN1_SUCCESS)
        return CS_REC_NOMEM;
    snprintf(name, sizeof name, "%s.nonce", base);
    if (asn1_write_value(n, name, s->nonce, CS_NONCE_LEN) != ASN1_SUCCESS)
        return CS_REC_NOMEM;
    snprintf(name, sizeof name, "%s.ciphertext", base);
    if (asn1_write_value(n, name, s->ct_len ? s->ct : (unsigned char *)"", (int)s->ct_len) !=
        ASN1_SUCCESS)
        return CS_REC_NOMEM;
    snprintf(name, sizeof name, "%s.tag", base);
    if (asn1_write_value(n, name, s->tag, CS_TAG_LEN) != ASN1_SUCCESS)
        return CS_REC_NOMEM;
    return CS_REC_OK;
}

static cs_rec_err read_sealed(asn1_node n, const char *base, cs_sealed *s)
{
    char name[128];
    cs_rec_err e;
    memset(s, 0, sizeof *s);
    snprintf(name, sizeof name, "%s.generation", base);
    if ((e = read_u32(n, name, &s->generation)) != CS_REC_OK)
        return e;
    snprintf(name, sizeof name, "%s.nonce", base);
    if ((e = read_fixed(n, name, s->nonce, CS_NONCE_LEN, true, NULL)) != CS_REC_OK)
        return e;
    snprintf(name, sizeof name, "%s.tag", base);
    if ((e = read_fixed(n, name, s->tag, CS_TAG_LEN, true, NULL)) != CS_REC_OK)
        return e;
    snprintf(name, sizeof name, "%s.ciphertext", base);
    return read_alloc(n, name, MAX_ATTR_LEN, &s->ct, &s->ct_len);
}

/* DER-encodes `n` (or its element `name`) into a fresh buffer. */
static cs_rec_err der_encode(asn1_node n, const char *name, unsigned char **_der, size_t *_len)
{
    char err[ASN1_MAX_ERROR_DESCRIPTION_SIZE];
    int len = 0;
    int rc = asn1_der_coding(n, name, NULL, &len, err);
    if (rc != ASN1_MEM_ERROR || len <= 0)
        return CS_REC_NOMEM;
    unsigned char *der = OPENSSL_malloc((size_t)len);
    if (der == NULL)
        return CS_REC_NOMEM;
    if (asn1_der_coding(n, name, der, &len, err) != ASN1_SUCCESS) {
        OPENSSL_free(der);
        return CS_REC_NOMEM;
    }
    *_der = der;
    *_len = (size_t)len;
    return CS_REC_OK;
}

/* Writes the digest: SHA-256 over the encoding with the digest's own
 * content zeroed. The digest is the last field, so its content is the last
 * DIGEST_LEN bytes. */
static void digest_fill(unsigned char *der, size_t len)
{
    memset(der + len - DIGEST_LEN, 0, DIGEST_LEN);
    unsigned char d[DIGEST_LEN];
    SHA256(der, len, d);
    memcpy(der + len - DIGEST_LEN, d, DIGEST_LEN);
}

static cs_rec_err digest_check(asn1_node n, const unsigned char *der, size_t len)
{
    unsigned char stored[DIGEST_LEN], calc[DIGEST_LEN];
    if (read_fixed(n, "digest", stored, DIGEST_LEN, true, NULL) != CS_REC_OK)
        return CS_REC_DIGEST;
    if (len < DIGEST_LEN || memcmp(der + len - DIGEST_LEN, stored, DIGEST_LEN) != 0)
        return CS_REC_DER;
    static const unsigned char zero[DIGEST_LEN];
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    bool ok = c != NULL && EVP_DigestInit_ex(c, EVP_sha256(), NULL) == 1 &&
              EVP_DigestUpdate(c, der, len - DIGEST_LEN) == 1 &&
              EVP_DigestUpdate(c, zero, DIGEST_LEN) == 1 &&
              EVP_DigestFinal_ex(c, calc, NULL) == 1;
    EVP_MD_CTX_free(c);
    if (!ok)
        return CS_REC_NOMEM;
#ifdef CUSTOS_FUZZING
    /* The fuzz build looks past the digest, or mutations never get deeper. */
    return CS_REC_OK;
#else
    return CRYPTO_memcmp(calc, stored, DIGEST_LEN) == 0 ? CS_REC_OK : CS_REC_DIGEST;
#endif
}

/* On a decoding error libtasn1 deletes the structure and NULLs *n. */
static cs_rec_err decode_strict(asn1_node *n, const unsigned char *der, size_t len)
{
    char err[ASN1_MAX_ERROR_DESCRIPTION_SIZE];
    if (len == 0 || len > CS_MAX_RECORD)
        return CS_REC_DER;
    int l = (int)len;
    if (asn1_der_decoding2(n, der, &l, ASN1_DECODE_FLAG_STRICT_DER, err) != ASN1_SUCCESS)
        return CS_REC_DER;
    if ((size_t)l != len)
        return CS_REC_DER; /* trailing bytes */
    return CS_REC_OK;
}

/* ---- object records ---- */

void cs_object_rec_clear(cs_object_rec *r)
{
    cs_attrs_clear(&r->attrs);
    cs_sealed_clear(&r->secret);
    OPENSSL_free(r->aad);
    memset(r, 0, sizeof *r);
}

static cs_rec_err write_attrs(asn1_node n, const cs_attrs *l)
{
    for (size_t i = 0; i < l->n; i++) {
        const cs_attr *a = &l->a[i];
        enum cs_attr_kind kind = CS_AK_BYTES;
        cs_attr_known(a->type, &kind);
        if (asn1_write_value(n, "header.attributes", "NEW", 1) != ASN1_SUCCESS ||
            write_ulong(n, "header.attributes.?LAST.type", a->type) != ASN1_SUCCESS)
            return CS_REC_NOMEM;
        int rc;
        if (kind == CS_AK_BOOL && a->len == sizeof(CK_BBOOL)) {
            rc = asn1_write_value(n, "header.attributes.?LAST.value", "bool", 1);
            if (rc == ASN1_SUCCESS)
                rc = asn1_write_value(n, "header.attributes.?LAST.value.bool",
                                      a->val[0] ? "TRUE" : "FALSE", 1);
        } else if (kind == CS_AK_ULONG && a->len == sizeof(CK_ULONG)) {
            CK_ULONG v;
            memcpy(&v, a->val, sizeof v);
            rc = asn1_write_value(n, "header.attributes.?LAST.value", "ulong", 1);
            if (rc == ASN1_SUCCESS)
                rc = write_ulong(n, "header.attributes.?LAST.value.ulong", v);
        } else {
            rc = asn1_write_value(n, "header.attributes.?LAST.value", "bytes", 1);
            if (rc == ASN1_SUCCESS)
                rc = asn1_write_value(n, "header.attributes.?LAST.value.bytes",
                                      a->len ? a->val : (unsigned char *)"", (int)a->len);
        }
        if (rc != ASN1_SUCCESS)
            return CS_REC_NOMEM;
    }
    return CS_REC_OK;
}

static cs_rec_err read_attrs(asn1_node n, cs_attrs *l)
{
    int count = 0;
    if (asn1_number_of_elements(n, "header.attributes", &count) != ASN1_SUCCESS)
        count = 0;
    if (count < 0 || count > MAX_ATTRS)
        return CS_REC_FIELD;
    for (int i = 1; i <= count; i++) {
        char name[96], choice[16];
        uint64_t type;
        cs_rec_err e;
        snprintf(name, sizeof name, "header.attributes.?%d.type", i);
        if ((e = read_ulong(n, name, UINT64_MAX, &type)) != CS_REC_OK)
            return e;
        if (cs_attrs_get(l, (CK_ATTRIBUTE_TYPE)type) != NULL)
            return CS_REC_FIELD; /* duplicate */
        enum cs_attr_kind kind;
        if (!cs_attr_known((CK_ATTRIBUTE_TYPE)type, &kind))
            return CS_REC_FIELD;
        snprintf(name, sizeof name, "header.attributes.?%d.value", i);
        int cl = sizeof choice - 1;
        if (asn1_read_value(n, name, choice, &cl) != ASN1_SUCCESS)
            return CS_REC_FIELD;
        choice[cl] = '\0';
        CK_RV rv;
        if (strcmp(choice, "bool") == 0 && kind == CS_AK_BOOL) {
            char b[8];
            int bl = sizeof b - 1;
            snprintf(name, sizeof name, "header.attributes.?%d.value.bool", i);
            if (asn1_read_value(n, name, b, &bl) != ASN1_SUCCESS)
                return CS_REC_FIELD;
            b[bl] = '\0';
            rv = cs_attrs_set_bool(l, (CK_ATTRIBUTE_TYPE)type, strcmp(b, "TRUE") == 0);
        } else if (strcmp(choice, "ulong") == 0 && kind == CS_AK_ULONG) {
            uint64_t v;
            snprintf(name, sizeof name, "header.attributes.?%d.value.ulong", i);
            if ((e = read_ulong(n, name, (CK_ULONG)-1, &v)) != CS_REC_OK)
                return e;
            rv = cs_attrs_set_ulong(l, (CK_ATTRIBUTE_TYPE)type, (CK_ULONG)v);
        } else if (strcmp(choice, "bytes") == 0 && kind == CS_AK_BYTES) {
            unsigned char *b = NULL;
            size_t bl = 0;
            snprintf(name, sizeof name, "header.attributes.?%d.value.bytes", i);
            if ((e = read_alloc(n, name, MAX_ATTR_LEN, &b, &bl)) != CS_REC_OK)
                return e;
            rv = cs_attrs_set(l, (CK_ATTRIBUTE_TYPE)type, b, bl);
            OPENSSL_free(b);
        } else {
            return CS_REC_FIELD; /* value of the wrong kind for its type */
        }
        if (rv != CKR_OK)
            return CS_REC_NOMEM;
    }
    return CS_REC_OK;
}

static bool is_hex(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return true;
}

cs_rec_err cs_object_rec_encode(cs_object_rec *r, const unsigned char *seal_key,
                                const unsigned char *secret_pt, size_t secret_len,
                                unsigned char **_der, size_t *_len)
{
    asn1_node n = NULL;
    unsigned char *der = NULL;
    size_t len = 0;
    static const unsigned char zero[DIGEST_LEN];
    cs_rec_err e = element("CustosSoft.ObjectRecord", &n);
    if (e != CS_REC_OK)
        return e;
    e = CS_REC_NOMEM;
    if (write_ulong(n, "version", REC_VERSION) != ASN1_SUCCESS ||
        asn1_write_value(n, "header.tokenSerial", r->serial, CS_SERIAL_LEN) != ASN1_SUCCESS ||
        asn1_write_value(n, "header.objectId", r->id, CS_OBJID_LEN) != ASN1_SUCCESS)
        goto cleanup;
    if ((e = write_attrs(n, &r->attrs)) != CS_REC_OK)
        goto cleanup;
    /* The header's exact DER is the associated data of the secret. */
    OPENSSL_free(r->aad);
    r->aad = NULL;
    if ((e = der_encode(n, "header", &r->aad, &r->aad_len)) != CS_REC_OK)
        goto cleanup;
    if (seal_key != NULL && secret_pt != NULL) {
        uint32_t gen = r->secret.generation;
        cs_sealed_clear(&r->secret);
        e = CS_REC_NOMEM;
        if (cs_seal(seal_key, gen, r->aad, r->aad_len, secret_pt, secret_len, &r->secret) !=
            CKR_OK)
            goto cleanup;
        r->has_secret = true;
    }
    e = CS_REC_NOMEM;
    if (r->has_secret) {
        if ((e = write_sealed(n, "secret", &r->secret)) != CS_REC_OK)
            goto cleanup;
    } else if (asn1_write_value(n, "secret", NULL, 0) != ASN1_SUCCESS) {
        goto cleanup;
    }
    if (asn1_write_value(n, "digest", zero, DIGEST_LEN) != ASN1_SUCCESS)
        goto cleanup;
    if ((e = der_encode(n, "", &der, &len)) != CS_REC_OK)
        goto cleanup;
    digest_fill(der, len);
    *_der = der;
    *_len = len;
    der = NULL;
    e = CS_REC_OK;
cleanup:
    OPENSSL_free(der);
    asn1_delete_structure(&n);
    return e;
}

/* Only canonical DER is accepted: libtasn1's strict mode lets some
 * non-DER forms through (a BOOLEAN of 0x20 read as TRUE, found by the
 * fuzzer), so the record must re-encode to exactly its own bytes. */
static cs_rec_err canonical_object(cs_object_rec *r, const unsigned char *der, size_t len)
{
    unsigned char *re = NULL;
    size_t rl = 0;
    unsigned char *aad = r->aad;
    size_t aad_len = r->aad_len;
    r->aad = NULL; /* the encoder replaces it: keep ours */
    cs_rec_err e = cs_object_rec_encode(r, NULL, NULL, 0, &re, &rl);
    OPENSSL_free(r->aad);
    r->aad = aad;
    r->aad_len = aad_len;
    if (e == CS_REC_OK && (rl != len || memcmp(re, der, len - DIGEST_LEN) != 0))
        e = CS_REC_DER;
    OPENSSL_free(re);
    return e;
}

cs_rec_err cs_object_rec_decode(const unsigned char *der, size_t len, cs_object_rec *_r)
{
    asn1_node n = NULL;
    cs_object_rec r;
    uint32_t version;
    int start = 0, end = 0;
    memset(&r, 0, sizeof r);
    cs_rec_err e = element("CustosSoft.ObjectRecord", &n);
    if (e != CS_REC_OK)
        return e;
    if ((e = decode_strict(&n, der, len)) != CS_REC_OK)
        goto cleanup;
    if ((e = digest_check(n, der, len)) != CS_REC_OK)
        goto cleanup;
    if ((e = read_u32(n, "version", &version)) != CS_REC_OK)
        goto cleanup;
    if (version != REC_VERSION) {
        e = CS_REC_VERSION;
        goto cleanup;
    }
    if ((e = read_fixed(n, "header.tokenSerial", r.serial, CS_SERIAL_LEN, true, NULL)) !=
            CS_REC_OK ||
        (e = read_fixed(n, "header.objectId", r.id, CS_OBJID_LEN, true, NULL)) != CS_REC_OK)
        goto cleanup;
    if (!is_hex(r.serial, CS_SERIAL_LEN) || !is_hex(r.id, CS_OBJID_LEN)) {
        e = CS_REC_FIELD;
        goto cleanup;
    }
    if ((e = read_attrs(n, &r.attrs)) != CS_REC_OK)
        goto cleanup;
    {
        char probe[8];
        int pl = sizeof probe;
        int rc = asn1_read_value(n, "secret", probe, &pl);
        r.has_secret = (rc != ASN1_ELEMENT_NOT_FOUND);
    }
    if (r.has_secret) {
        if ((e = read_sealed(n, "secret", &r.secret)) != CS_REC_OK)
            goto cleanup;
        e = CS_REC_DER;
        if (asn1_der_decoding_startEnd(n, der, (int)len, "header", &start, &end) !=
                ASN1_SUCCESS ||
            start < 0 || end < start || (size_t)end >= len)
            goto cleanup;
        e = CS_REC_NOMEM;
        r.aad_len = (size_t)(end - start + 1);
        r.aad = OPENSSL_malloc(r.aad_len);
        if (r.aad == NULL)
            goto cleanup;
        memcpy(r.aad, der + start, r.aad_len);
    }
    if ((e = canonical_object(&r, der, len)) != CS_REC_OK)
        goto cleanup;
    *_r = r;
    memset(&r, 0, sizeof r);
    e = CS_REC_OK;
cleanup:
    cs_object_rec_clear(&r);
    asn1_delete_structure(&n);
    return e;
}

/* ---- token records ---- */

void cs_token_rec_clear(cs_token_rec *r)
{
    for (size_t i = 0; i < 2; i++) {
        cs_sealed_clear(&r->so.keys[i]);
        cs_sealed_clear(&r->user.keys[i]);
    }
    memset(r, 0, sizeof *r);
}

static cs_rec_err write_pin(asn1_node n, const char *base, const cs_pin_slot *p)
{
    char name[64];
    snprintf(name, sizeof name, "%s.salt", base);
    if (asn1_write_value(n, name, p->salt, CS_SALT_LEN) != ASN1_SUCCESS)
        return CS_REC_NOMEM;
    snprintf(name, sizeof name, "%s.iterations", base);
    if (write_ulong(n, name, p->iterations) != ASN1_SUCCESS)
        return CS_REC_NOMEM;
    snprintf(name, sizeof name, "%s.failures", base);
    if (write_ulong(n, name, p->failures) != ASN1_SUCCESS)
        return CS_REC_NOMEM;
    snprintf(name, sizeof name, "%s.keys", base);
    for (size_t i = 0; i < p->nkeys; i++) {
        char sub[80];
        if (asn1_write_value(n, name, "NEW", 1) != ASN1_SUCCESS)
            return CS_REC_NOMEM;
        snprintf(sub, sizeof sub, "%s.?LAST", name);
        cs_rec_err e = write_sealed(n, sub, &p->keys[i]);
        if (e != CS_REC_OK)
            return e;
    }
    return CS_REC_OK;
}

static cs_rec_err read_pin(asn1_node n, const char *base, cs_pin_slot *p)
{
    char name[64];
    cs_rec_err e;
    int count = 0;
    p->present = true;
    snprintf(name, sizeof name, "%s.salt", base);
    if ((e = read_fixed(n, name, p->salt, CS_SALT_LEN, true, NULL)) != CS_REC_OK)
        return e;
    snprintf(name, sizeof name, "%s.iterations", base);
    if ((e = read_u32(n, name, &p->iterations)) != CS_REC_OK)
        return e;
    if (p->iterations < 1)
        return CS_REC_FIELD;
    snprintf(name, sizeof name, "%s.failures", base);
    if ((e = read_u32(n, name, &p->failures)) != CS_REC_OK)
        return e;
    snprintf(name, sizeof name, "%s.keys", base);
    if (asn1_number_of_elements(n, name, &count) != ASN1_SUCCESS)
        count = 0;
    if (count < 1 || count > 2)
        return CS_REC_FIELD;
    for (int i = 0; i < count; i++) {
        char sub[80];
        snprintf(sub, sizeof sub, "%s.?%d", name, i + 1);
        if ((e = read_sealed(n, sub, &p->keys[i])) != CS_REC_OK)
            return e;
        p->nkeys++;
        if (p->keys[i].ct_len != CS_KEY_LEN)
            return CS_REC_FIELD;
    }
    return CS_REC_OK;
}

cs_rec_err cs_token_rec_encode(const cs_token_rec *r, unsigned char **_der, size_t *_len)
{
    asn1_node n = NULL;
    unsigned char *der = NULL;
    size_t len = 0;
    static const unsigned char zero[DIGEST_LEN];
    cs_rec_err e = element("CustosSoft.TokenRecord", &n);
    if (e != CS_REC_OK)
        return e;
    e = CS_REC_NOMEM;
    if (write_ulong(n, "version", REC_VERSION) != ASN1_SUCCESS ||
        asn1_write_value(n, "serial", r->serial, CS_SERIAL_LEN) != ASN1_SUCCESS ||
        asn1_write_value(n, "label", r->label, sizeof r->label) != ASN1_SUCCESS ||
        write_ulong(n, "maxAttempts", r->max_attempts) != ASN1_SUCCESS ||
        write_ulong(n, "generation", r->generation) != ASN1_SUCCESS)
        goto cleanup;
    if ((e = write_pin(n, "so", &r->so)) != CS_REC_OK)
        goto cleanup;
    e = CS_REC_NOMEM;
    if (r->user.present) {
        if ((e = write_pin(n, "user", &r->user)) != CS_REC_OK)
            goto cleanup;
    } else if (asn1_write_value(n, "user", NULL, 0) != ASN1_SUCCESS) {
        goto cleanup;
    }
    e = CS_REC_NOMEM;
    if (asn1_write_value(n, "digest", zero, DIGEST_LEN) != ASN1_SUCCESS)
        goto cleanup;
    if ((e = der_encode(n, "", &der, &len)) != CS_REC_OK)
        goto cleanup;
    digest_fill(der, len);
    *_der = der;
    *_len = len;
    der = NULL;
    e = CS_REC_OK;
cleanup:
    OPENSSL_free(der);
    asn1_delete_structure(&n);
    return e;
}

cs_rec_err cs_token_rec_decode(const unsigned char *der, size_t len, cs_token_rec *_r)
{
    asn1_node n = NULL;
    cs_token_rec r;
    uint32_t version;
    memset(&r, 0, sizeof r);
    cs_rec_err e = element("CustosSoft.TokenRecord", &n);
    if (e != CS_REC_OK)
        return e;
    if ((e = decode_strict(&n, der, len)) != CS_REC_OK)
        goto cleanup;
    if ((e = digest_check(n, der, len)) != CS_REC_OK)
        goto cleanup;
    if ((e = read_u32(n, "version", &version)) != CS_REC_OK)
        goto cleanup;
    if (version != REC_VERSION) {
        e = CS_REC_VERSION;
        goto cleanup;
    }
    if ((e = read_fixed(n, "serial", r.serial, CS_SERIAL_LEN, true, NULL)) != CS_REC_OK ||
        (e = read_fixed(n, "label", r.label, sizeof r.label, true, NULL)) != CS_REC_OK ||
        (e = read_u32(n, "maxAttempts", &r.max_attempts)) != CS_REC_OK ||
        (e = read_u32(n, "generation", &r.generation)) != CS_REC_OK)
        goto cleanup;
    if (!is_hex(r.serial, CS_SERIAL_LEN) || r.max_attempts < 1) {
        e = CS_REC_FIELD;
        goto cleanup;
    }
    if ((e = read_pin(n, "so", &r.so)) != CS_REC_OK)
        goto cleanup;
    {
        char probe[8];
        int pl = sizeof probe;
        if (asn1_read_value(n, "user", probe, &pl) != ASN1_ELEMENT_NOT_FOUND &&
            (e = read_pin(n, "user", &r.user)) != CS_REC_OK)
            goto cleanup;
    }
    {
        /* Only canonical DER: it must re-encode to the same bytes. */
        unsigned char *re = NULL;
        size_t rl = 0;
        e = cs_token_rec_encode(&r, &re, &rl);
        if (e == CS_REC_OK && (rl != len || memcmp(re, der, len - DIGEST_LEN) != 0))
            e = CS_REC_DER;
        OPENSSL_free(re);
        if (e != CS_REC_OK)
            goto cleanup;
    }
    *_r = r;
    memset(&r, 0, sizeof r);
    e = CS_REC_OK;
cleanup:
    cs_token_rec_clear(&r);
    asn1_delete_structure(&n);
    return e;
}
