/* Signatures with token keys: ECDSA (DER output from the token's raw r||s),
 * RSA PKCS#1 v1.5 and RSA-PSS (every salt-length form), as raw sign over a
 * digest and as digest-sign, one-shot and streaming.
 *
 * Speed: the message is hashed here in software and the token signs the
 * digest (cu_sign_digest: C_SignInit + C_Sign on a pooled session), using the
 * cu_object cached in the key; nothing is looked up per signature.
 * Verification runs in software on the public half. */
#include "key.h"

#include "implementations.h"

#include <openssl/core_names.h>
#include <openssl/params.h>
#include <openssl/rsa.h>
#include <string.h>

#define MAX_DIGEST 64
#define MAX_RAW_SIG 1024 /* RSA-8192 or EC r||s */

typedef struct sig_ctx {
    cu_prov_ctx *pc;
    cu_key_type alg;     /* the table this context is of: EC or RSA */
    cu_prov_key *key;
    bool signing;
    cu_hash hash;        /* NONE until a digest is set */
    int pad;             /* RSA_PKCS1_PADDING or RSA_PKCS1_PSS_PADDING */
    cu_hash mgf1;        /* NONE: same as hash */
    int saltlen;         /* >= 0, or RSA_PSS_SALTLEN_DIGEST / _MAX / _AUTO */
    EVP_MD_CTX *md;      /* streaming digest-sign/verify */
    bool md_started;     /* md holds the digest of the updates so far */
    bool digesting;      /* initialized for digest-sign/verify */
    EVP_PKEY_CTX *sw;    /* software verify and AlgorithmIdentifier */
} sig_ctx;

static OSSL_FUNC_signature_newctx_fn ecdsa_newctx, rsa_newctx;
static OSSL_FUNC_signature_freectx_fn sig_freectx;
static OSSL_FUNC_signature_dupctx_fn sig_dupctx;
static OSSL_FUNC_signature_sign_init_fn sig_sign_init;
static OSSL_FUNC_signature_sign_fn sig_sign;
static OSSL_FUNC_signature_verify_init_fn sig_verify_init;
static OSSL_FUNC_signature_verify_fn sig_verify;
static OSSL_FUNC_signature_digest_sign_init_fn sig_digest_sign_init;
static OSSL_FUNC_signature_digest_sign_update_fn sig_digest_update;
static OSSL_FUNC_signature_digest_sign_final_fn sig_digest_sign_final;
static OSSL_FUNC_signature_digest_sign_fn sig_digest_sign;
static OSSL_FUNC_signature_digest_verify_init_fn sig_digest_verify_init;
static OSSL_FUNC_signature_digest_verify_final_fn sig_digest_verify_final;
static OSSL_FUNC_signature_digest_verify_fn sig_digest_verify;
static OSSL_FUNC_signature_get_ctx_params_fn sig_get_ctx_params;
static OSSL_FUNC_signature_gettable_ctx_params_fn ecdsa_gettable_ctx_params, rsa_gettable_ctx_params;
static OSSL_FUNC_signature_set_ctx_params_fn sig_set_ctx_params;
static OSSL_FUNC_signature_settable_ctx_params_fn ecdsa_settable_ctx_params, rsa_settable_ctx_params;

static void *newctx(void *provctx, cu_key_type alg)
{
    sig_ctx *c = OPENSSL_zalloc(sizeof *c);
    if (c == NULL)
        return NULL;
    c->pc = provctx;
    c->alg = alg;
    c->pad = RSA_PKCS1_PADDING;
    c->saltlen = RSA_PSS_SALTLEN_AUTO;
    return c;
}

static void *ecdsa_newctx(void *provctx, const char *propq)
{
    (void)propq;
    return newctx(provctx, CU_KEY_EC);
}

static void *rsa_newctx(void *provctx, const char *propq)
{
    (void)propq;
    return newctx(provctx, CU_KEY_RSA);
}

static void sig_freectx(void *vctx)
{
    sig_ctx *c = vctx;
    if (c == NULL)
        return;
    cu_prov_key_unref(c->key);
    EVP_MD_CTX_free(c->md);
    EVP_PKEY_CTX_free(c->sw);
    OPENSSL_free(c);
}

static void *sig_dupctx(void *vctx)
{
    sig_ctx *c = vctx, *d = OPENSSL_memdup(c, sizeof *c);
    if (d == NULL)
        return NULL;
    d->md = NULL;
    d->sw = NULL;
    cu_prov_key_ref(d->key);
    if (c->md != NULL && ((d->md = EVP_MD_CTX_new()) == NULL || !EVP_MD_CTX_copy_ex(d->md, c->md))) {
        sig_freectx(d);
        return NULL;
    }
    if (c->sw != NULL && (d->sw = EVP_PKEY_CTX_dup(c->sw)) == NULL) {
        sig_freectx(d);
        return NULL;
    }
    return d;
}

/* ---- Parameters ---- */

static int set_hash(sig_ctx *c, const char *name, cu_hash *_h)
{
    cu_hash h = cu_prov_hash_from_name(c->pc, name);
    if (h == CU_HASH_NONE) {
        CU_PROV_RAISE(c->pc, CU_E_MECHANISM, "digest %s is not supported (SHA-1, SHA-2 only)", name);
        return 0;
    }
    *_h = h;
    return 1;
}

static int set_pad(sig_ctx *c, const OSSL_PARAM *p)
{
    int pad = 0;
    const char *s = NULL;
    if (p->data_type == OSSL_PARAM_UTF8_STRING && OSSL_PARAM_get_utf8_string_ptr(p, &s)) {
        if (strcmp(s, OSSL_PKEY_RSA_PAD_MODE_PKCSV15) == 0)
            pad = RSA_PKCS1_PADDING;
        else if (strcmp(s, OSSL_PKEY_RSA_PAD_MODE_PSS) == 0)
            pad = RSA_PKCS1_PSS_PADDING;
    } else if (!OSSL_PARAM_get_int(p, &pad)) {
        pad = 0;
    }
    if (pad != RSA_PKCS1_PADDING && pad != RSA_PKCS1_PSS_PADDING) {
        CU_PROV_RAISE(c->pc, CU_E_MECHANISM, "RSA padding: only pkcs1 and pss are supported");
        return 0;
    }
    c->pad = pad;
    return 1;
}

static int set_saltlen(sig_ctx *c, const OSSL_PARAM *p)
{
    int v = 0;
    const char *s = NULL;
    if (p->data_type == OSSL_PARAM_UTF8_STRING && OSSL_PARAM_get_utf8_string_ptr(p, &s)) {
        if (strcmp(s, OSSL_PKEY_RSA_PSS_SALT_LEN_DIGEST) == 0)
            v = RSA_PSS_SALTLEN_DIGEST;
        else if (strcmp(s, OSSL_PKEY_RSA_PSS_SALT_LEN_MAX) == 0)
            v = RSA_PSS_SALTLEN_MAX;
        else if (strcmp(s, OSSL_PKEY_RSA_PSS_SALT_LEN_AUTO) == 0)
            v = RSA_PSS_SALTLEN_AUTO;
        else if (strcmp(s, "auto-digestmax") == 0)
            v = -4; /* RSA_PSS_SALTLEN_AUTO_DIGEST_MAX in OpenSSL 3.1 */
        else {
            char *end = NULL;
            long l = strtol(s, &end, 10);
            if (end == s || *end != '\0' || l < -4 || l > 4096)
                goto bad;
            v = (int)l;
        }
    } else if (!OSSL_PARAM_get_int(p, &v) || v < -4) {
        goto bad;
    }
    c->saltlen = v;
    return 1;
bad:
    CU_PROV_RAISE(c->pc, CU_PROV_R_BAD_PARAM, "PSS salt length: a number, digest, max or auto");
    return 0;
}

static int sig_set_ctx_params(void *vctx, const OSSL_PARAM params[])
{
    sig_ctx *c = vctx;
    const OSSL_PARAM *p;
    const char *s = NULL;
    if (c == NULL)
        return 0;
    if (params == NULL)
        return 1;
    if ((p = OSSL_PARAM_locate_const(params, OSSL_SIGNATURE_PARAM_DIGEST)) != NULL) {
        if (!OSSL_PARAM_get_utf8_string_ptr(p, &s) || !set_hash(c, s, &c->hash))
            return 0;
    }
    if (c->alg == CU_KEY_RSA) {
        if ((p = OSSL_PARAM_locate_const(params, OSSL_SIGNATURE_PARAM_PAD_MODE)) != NULL && !set_pad(c, p))
            return 0;
        if ((p = OSSL_PARAM_locate_const(params, OSSL_SIGNATURE_PARAM_PSS_SALTLEN)) != NULL
            && !set_saltlen(c, p))
            return 0;
        if ((p = OSSL_PARAM_locate_const(params, OSSL_SIGNATURE_PARAM_MGF1_DIGEST)) != NULL) {
            if (!OSSL_PARAM_get_utf8_string_ptr(p, &s) || !set_hash(c, s, &c->mgf1))
                return 0;
        }
    }
    /* The software context is rebuilt from the new settings when needed. */
    EVP_PKEY_CTX_free(c->sw);
    c->sw = NULL;
    return 1;
}

static const OSSL_PARAM *ecdsa_settable_ctx_params(void *vctx, void *provctx)
{
    (void)vctx;
    (void)provctx;
    static const OSSL_PARAM p[] = {
        OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_DIGEST, NULL, 0),
        OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_PROPERTIES, NULL, 0),
        OSSL_PARAM_END,
    };
    return p;
}

static const OSSL_PARAM *rsa_settable_ctx_params(void *vctx, void *provctx)
{
    (void)vctx;
    (void)provctx;
    static const OSSL_PARAM p[] = {
        OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_DIGEST, NULL, 0),
        OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_PROPERTIES, NULL, 0),
        OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_PAD_MODE, NULL, 0),
        OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_PSS_SALTLEN, NULL, 0),
        OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_MGF1_DIGEST, NULL, 0),
        OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_MGF1_PROPERTIES, NULL, 0),
        OSSL_PARAM_END,
    };
    return p;
}

/* The same operation in software: verification on the public half, the
 * AlgorithmIdentifier that certificate signing asks for, and signing with a
 * software key (key.h: keys made without a URI when custos is met first). */
static EVP_PKEY_CTX *software_ctx(sig_ctx *c)
{
    if (c->sw != NULL)
        return c->sw;
    if (c->key == NULL || c->key->pub == NULL)
        return NULL;
    EVP_PKEY_CTX *v = EVP_PKEY_CTX_new_from_pkey(c->pc->sw, c->key->pub, NULL);
    OSSL_PARAM p[5], *q = p;
    int pad = c->pad, salt = c->saltlen;
    if (c->hash != CU_HASH_NONE)
        *q++ = OSSL_PARAM_construct_utf8_string(OSSL_SIGNATURE_PARAM_DIGEST,
                                                (char *)cu_prov_hash_name(c->hash), 0);
    if (c->alg == CU_KEY_RSA) {
        *q++ = OSSL_PARAM_construct_int(OSSL_SIGNATURE_PARAM_PAD_MODE, &pad);
        if (pad == RSA_PKCS1_PSS_PADDING) {
            *q++ = OSSL_PARAM_construct_int(OSSL_SIGNATURE_PARAM_PSS_SALTLEN, &salt);
            if (c->mgf1 != CU_HASH_NONE)
                *q++ = OSSL_PARAM_construct_utf8_string(OSSL_SIGNATURE_PARAM_MGF1_DIGEST,
                                                        (char *)cu_prov_hash_name(c->mgf1), 0);
        }
    }
    *q = OSSL_PARAM_construct_end();
    bool soft_sign = c->signing && c->key->obj == NULL;
    if (v == NULL || (soft_sign ? EVP_PKEY_sign_init(v) : EVP_PKEY_verify_init(v)) <= 0
        || EVP_PKEY_CTX_set_params(v, p) <= 0) {
        EVP_PKEY_CTX_free(v);
        CU_PROV_RAISE(c->pc, CU_PROV_R_SOFTWARE, "cannot set up the software operation");
        return NULL;
    }
    c->sw = v;
    return v;
}

static int sig_get_ctx_params(void *vctx, OSSL_PARAM params[])
{
    sig_ctx *c = vctx;
    OSSL_PARAM *p;
    if (c == NULL)
        return 0;
    if ((p = OSSL_PARAM_locate(params, OSSL_SIGNATURE_PARAM_ALGORITHM_ID)) != NULL) {
        EVP_PKEY_CTX *v = software_ctx(c);
        OSSL_PARAM q[] = { *p, OSSL_PARAM_END };
        if (v == NULL || !EVP_PKEY_CTX_get_params(v, q))
            return 0;
        p->return_size = q[0].return_size;
    }
    if ((p = OSSL_PARAM_locate(params, OSSL_SIGNATURE_PARAM_DIGEST)) != NULL && c->hash != CU_HASH_NONE
        && !OSSL_PARAM_set_utf8_string(p, cu_prov_hash_name(c->hash)))
        return 0;
    if (c->alg != CU_KEY_RSA)
        return 1;
    if ((p = OSSL_PARAM_locate(params, OSSL_SIGNATURE_PARAM_PAD_MODE)) != NULL) {
        int ok = p->data_type == OSSL_PARAM_INTEGER
                     ? OSSL_PARAM_set_int(p, c->pad)
                     : OSSL_PARAM_set_utf8_string(p, c->pad == RSA_PKCS1_PSS_PADDING ? OSSL_PKEY_RSA_PAD_MODE_PSS
                                                                                    : OSSL_PKEY_RSA_PAD_MODE_PKCSV15);
        if (!ok)
            return 0;
    }
    if ((p = OSSL_PARAM_locate(params, OSSL_SIGNATURE_PARAM_PSS_SALTLEN)) != NULL) {
        int ok;
        if (p->data_type == OSSL_PARAM_INTEGER) {
            ok = OSSL_PARAM_set_int(p, c->saltlen);
        } else {
            char num[16];
            const char *s = c->saltlen == RSA_PSS_SALTLEN_DIGEST ? OSSL_PKEY_RSA_PSS_SALT_LEN_DIGEST
                            : c->saltlen == RSA_PSS_SALTLEN_MAX  ? OSSL_PKEY_RSA_PSS_SALT_LEN_MAX
                            : c->saltlen == RSA_PSS_SALTLEN_AUTO ? OSSL_PKEY_RSA_PSS_SALT_LEN_AUTO
                            : c->saltlen == -4                   ? "auto-digestmax"
                                                                 : NULL;
            if (s == NULL) {
                snprintf(num, sizeof num, "%d", c->saltlen);
                s = num;
            }
            ok = OSSL_PARAM_set_utf8_string(p, s);
        }
        if (!ok)
            return 0;
    }
    if ((p = OSSL_PARAM_locate(params, OSSL_SIGNATURE_PARAM_MGF1_DIGEST)) != NULL) {
        cu_hash m = c->mgf1 != CU_HASH_NONE ? c->mgf1 : c->hash;
        if (m != CU_HASH_NONE && !OSSL_PARAM_set_utf8_string(p, cu_prov_hash_name(m)))
            return 0;
    }
    return 1;
}

static const OSSL_PARAM *ecdsa_gettable_ctx_params(void *vctx, void *provctx)
{
    (void)vctx;
    (void)provctx;
    static const OSSL_PARAM p[] = {
        OSSL_PARAM_octet_string(OSSL_SIGNATURE_PARAM_ALGORITHM_ID, NULL, 0),
        OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_DIGEST, NULL, 0),
        OSSL_PARAM_END,
    };
    return p;
}

static const OSSL_PARAM *rsa_gettable_ctx_params(void *vctx, void *provctx)
{
    (void)vctx;
    (void)provctx;
    static const OSSL_PARAM p[] = {
        OSSL_PARAM_octet_string(OSSL_SIGNATURE_PARAM_ALGORITHM_ID, NULL, 0),
        OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_DIGEST, NULL, 0),
        OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_PAD_MODE, NULL, 0),
        OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_PSS_SALTLEN, NULL, 0),
        OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_MGF1_DIGEST, NULL, 0),
        OSSL_PARAM_END,
    };
    return p;
}

/* ---- Initialization ---- */

static int init(sig_ctx *c, void *provkey, bool signing, const OSSL_PARAM params[])
{
    cu_prov_key *k = provkey;
    if (k == NULL) {
        if (c->key == NULL) {
            CU_PROV_RAISE(c->pc, CU_PROV_R_OPERATION, "no key");
            return 0;
        }
        k = c->key; /* re-initialization with the same key */
    }
    if (k->type != c->alg) {
        CU_PROV_RAISE(c->pc, CU_E_KEY_TYPE, "a %s key cannot make %s signatures", cu_prov_key_type_name(k->type),
                      c->alg == CU_KEY_EC ? "ECDSA" : "RSA");
        return 0;
    }
    if (signing && k->obj == NULL && !k->soft_private) {
        CU_PROV_RAISE(c->pc, CU_PROV_R_NO_PRIVATE_KEY, "this key has no private half in a token");
        return 0;
    }
    if (!signing && k->pub == NULL) {
        CU_PROV_RAISE(c->pc, CU_PROV_R_OPERATION, "the key has no public half");
        return 0;
    }
    if (k != c->key) {
        cu_prov_key_ref(k);
        cu_prov_key_unref(c->key);
        c->key = k;
    }
    c->signing = signing;
    c->digesting = false;
    EVP_PKEY_CTX_free(c->sw);
    c->sw = NULL;
    return sig_set_ctx_params(c, params);
}

static int sig_sign_init(void *vctx, void *provkey, const OSSL_PARAM params[])
{
    return init(vctx, provkey, true, params);
}

static int sig_verify_init(void *vctx, void *provkey, const OSSL_PARAM params[])
{
    return init(vctx, provkey, false, params);
}

static int digest_init(sig_ctx *c, const char *mdname, void *provkey, bool signing, const OSSL_PARAM params[])
{
    if (!init(c, provkey, signing, params))
        return 0;
    c->digesting = true;
    if (mdname != NULL && mdname[0] != '\0' && !set_hash(c, mdname, &c->hash))
        return 0;
    if (c->hash == CU_HASH_NONE)
        c->hash = CU_HASH_SHA256;
    c->md_started = false; /* the digest starts with the first update: a
                            * one-shot digest-sign (TLS) needs none */
    return 1;
}

static int md_start(sig_ctx *c)
{
    if (c->md_started)
        return 1;
    if (c->md == NULL && (c->md = EVP_MD_CTX_new()) == NULL)
        return 0;
    if (!EVP_DigestInit_ex(c->md, cu_prov_md(c->pc, c->hash), NULL))
        return 0;
    c->md_started = true;
    return 1;
}

static int sig_digest_sign_init(void *vctx, const char *mdname, void *provkey, const OSSL_PARAM params[])
{
    return digest_init(vctx, mdname, provkey, true, params);
}

static int sig_digest_verify_init(void *vctx, const char *mdname, void *provkey, const OSSL_PARAM params[])
{
    return digest_init(vctx, mdname, provkey, false, params);
}

/* ---- Signing ---- */

/* Appends a DER INTEGER of the unsigned big-endian v. */
static size_t der_uint(uint8_t *out, const uint8_t *v, size_t n)
{
    while (n > 1 && v[0] == 0) {
        v++;
        n--;
    }
    size_t pad = (v[0] & 0x80) ? 1 : 0, body = n + pad, o = 0;
    out[o++] = 0x02;
    if (body >= 128)
        out[o++] = 0x81;
    out[o++] = (uint8_t)body;
    if (pad)
        out[o++] = 0;
    memcpy(out + o, v, n);
    return o + n;
}

/* ECDSA-Sig-Value ::= SEQUENCE { r INTEGER, s INTEGER } from r||s. */
static size_t ecdsa_der(uint8_t *out, const uint8_t *raw, size_t rawlen)
{
    uint8_t body[2 * (3 + 1 + MAX_RAW_SIG / 2)];
    size_t half = rawlen / 2, n = der_uint(body, raw, half);
    n += der_uint(body + n, raw + half, half);
    size_t o = 0;
    out[o++] = 0x30;
    if (n >= 128)
        out[o++] = 0x81;
    out[o++] = (uint8_t)n;
    memcpy(out + o, body, n);
    return o + n;
}

static int pss_salt(sig_ctx *c, size_t hlen)
{
    size_t emlen = (c->key->bits - 1 + 7) / 8;
    int max = (int)emlen - (int)hlen - 2;
    switch (c->saltlen) {
    case RSA_PSS_SALTLEN_DIGEST: return (int)hlen;
    case -4: return (int)hlen <= max ? (int)hlen : max; /* auto-digestmax */
    case RSA_PSS_SALTLEN_MAX:
    case RSA_PSS_SALTLEN_AUTO: return max;
    default: return c->saltlen;
    }
}

/* Signs a digest (or, for RSA PKCS#1 without digest, the given bytes). */
static int sign_digest(sig_ctx *c, unsigned char *sig, size_t *siglen, size_t sigsize, const unsigned char *tbs,
                       size_t tbslen)
{
    cu_prov_key *k = c->key;
    uint8_t raw[MAX_RAW_SIG];
    size_t rawlen = sizeof raw;
    cu_sig s = { 0 };
    cu_rc rc;

    if (k == NULL || !c->signing || (k->obj == NULL && !k->soft_private)) {
        CU_PROV_RAISE(c->pc, CU_PROV_R_OPERATION, "not initialized for signing with a private key");
        return 0;
    }
    if (sig == NULL) {
        *siglen = k->max_sig;
        return 1;
    }
    if (k->obj == NULL) { /* a software key */
        EVP_PKEY_CTX *v = software_ctx(c);
        *siglen = sigsize;
        return v != NULL && EVP_PKEY_sign(v, sig, siglen, tbs, tbslen) == 1;
    }
    if (sigsize < k->max_sig && !(c->alg == CU_KEY_RSA && sigsize >= (k->bits + 7) / 8)) {
        CU_PROV_RAISE(c->pc, CU_E_BUFFER_TOO_SMALL, "signature buffer of %zu bytes, %zu needed", sigsize,
                      k->max_sig);
        return 0;
    }
    s.hash = c->hash;
    if (c->alg == CU_KEY_EC) {
        s.alg = CU_SIG_ECDSA;
        if (s.hash == CU_HASH_NONE || cu_hash_size(s.hash) != tbslen) {
            /* CKM_ECDSA signs any digest; name one of its length. */
            s.hash = tbslen == 20 ? CU_HASH_SHA1 : tbslen == 28 ? CU_HASH_SHA224 : tbslen == 32 ? CU_HASH_SHA256
                   : tbslen == 48 ? CU_HASH_SHA384 : tbslen == 64 ? CU_HASH_SHA512 : CU_HASH_NONE;
        }
    } else if (c->pad == RSA_PKCS1_PSS_PADDING) {
        if (s.hash == CU_HASH_NONE) {
            CU_PROV_RAISE(c->pc, CU_E_MECHANISM, "RSA-PSS needs a digest");
            return 0;
        }
        s.alg = CU_SIG_RSA_PSS;
        s.mgf1 = c->mgf1 != CU_HASH_NONE ? c->mgf1 : c->hash;
        s.salt_len = pss_salt(c, cu_hash_size(s.hash));
    } else {
        s.alg = CU_SIG_RSA_PKCS1;
    }
    if (s.hash != CU_HASH_NONE && cu_hash_size(s.hash) != tbslen) {
        CU_PROV_RAISE(c->pc, CU_E_INVALID_ARG, "input of %zu bytes is not a %s digest", tbslen,
                      cu_prov_hash_name(s.hash));
        return 0;
    }
    if (c->alg == CU_KEY_RSA)
        rawlen = sigsize;
    rc = cu_sign_digest(k->obj, &s, tbs, tbslen, c->alg == CU_KEY_EC ? raw : sig, &rawlen);
    if (rc == CU_E_MECHANISM && s.alg == CU_SIG_RSA_PSS && c->saltlen == RSA_PSS_SALTLEN_AUTO
        && s.salt_len != (int)tbslen) {
        /* "auto" lets us choose: a TPM makes PSS only with salt = hash length. */
        s.salt_len = (int)tbslen;
        rawlen = sigsize;
        rc = cu_sign_digest(k->obj, &s, tbs, tbslen, sig, &rawlen);
    }
    if (rc != CU_OK)
        return CU_PROV_RAISE_RC(c->pc, rc, "signing on the token");
    if (c->alg == CU_KEY_EC)
        *siglen = ecdsa_der(sig, raw, rawlen);
    else
        *siglen = rawlen;
    return 1;
}

static int sig_sign(void *vctx, unsigned char *sig, size_t *siglen, size_t sigsize, const unsigned char *tbs,
                    size_t tbslen)
{
    sig_ctx *c = vctx;
    return sign_digest(c, sig, siglen, sig == NULL ? 0 : sigsize, tbs, tbslen);
}

static int sig_digest_update(void *vctx, const unsigned char *data, size_t datalen)
{
    sig_ctx *c = vctx;
    if (c == NULL || !c->digesting) {
        CU_PROV_RAISE(c != NULL ? c->pc : NULL, CU_PROV_R_OPERATION, "digest operation not initialized");
        return 0;
    }
    return md_start(c) && EVP_DigestUpdate(c->md, data, datalen);
}

static int sig_digest_sign_final(void *vctx, unsigned char *sig, size_t *siglen, size_t sigsize)
{
    sig_ctx *c = vctx;
    unsigned char dgst[MAX_DIGEST];
    unsigned int dlen = 0;
    if (c == NULL || !c->digesting || c->key == NULL)
        return 0;
    if (sig == NULL) {
        *siglen = c->key->max_sig;
        return 1;
    }
    if (!md_start(c) || !EVP_DigestFinal_ex(c->md, dgst, &dlen))
        return 0;
    c->md_started = false;
    return sign_digest(c, sig, siglen, sigsize, dgst, dlen);
}

static int sig_digest_sign(void *vctx, unsigned char *sig, size_t *siglen, size_t sigsize,
                           const unsigned char *tbs, size_t tbslen)
{
    sig_ctx *c = vctx;
    unsigned char dgst[MAX_DIGEST];
    unsigned int dlen = 0;
    if (c == NULL || c->key == NULL || c->hash == CU_HASH_NONE)
        return 0;
    if (sig == NULL) {
        *siglen = c->key->max_sig;
        return 1;
    }
    if (!EVP_Digest(tbs, tbslen, dgst, &dlen, cu_prov_md(c->pc, c->hash), NULL))
        return 0;
    return sign_digest(c, sig, siglen, sigsize, dgst, dlen);
}

/* ---- Verification (software, on the public half) ---- */

static int verify_digest(sig_ctx *c, const unsigned char *sig, size_t siglen, const unsigned char *tbs,
                         size_t tbslen)
{
    EVP_PKEY_CTX *v = software_ctx(c);
    if (v == NULL)
        return 0;
    return EVP_PKEY_verify(v, sig, siglen, tbs, tbslen) == 1;
}

static int sig_verify(void *vctx, const unsigned char *sig, size_t siglen, const unsigned char *tbs,
                      size_t tbslen)
{
    return verify_digest(vctx, sig, siglen, tbs, tbslen);
}

static int sig_digest_verify_final(void *vctx, const unsigned char *sig, size_t siglen)
{
    sig_ctx *c = vctx;
    unsigned char dgst[MAX_DIGEST];
    unsigned int dlen = 0;
    if (c == NULL || !c->digesting || !md_start(c) || !EVP_DigestFinal_ex(c->md, dgst, &dlen))
        return 0;
    c->md_started = false;
    return verify_digest(c, sig, siglen, dgst, dlen);
}

static int sig_digest_verify(void *vctx, const unsigned char *sig, size_t siglen, const unsigned char *tbs,
                             size_t tbslen)
{
    sig_ctx *c = vctx;
    unsigned char dgst[MAX_DIGEST];
    unsigned int dlen = 0;
    if (c == NULL || c->hash == CU_HASH_NONE
        || !EVP_Digest(tbs, tbslen, dgst, &dlen, cu_prov_md(c->pc, c->hash), NULL))
        return 0;
    return verify_digest(c, sig, siglen, dgst, dlen);
}

#define COMMON_FUNCTIONS                                                                       \
    { OSSL_FUNC_SIGNATURE_FREECTX, (void (*)(void))sig_freectx },                              \
    { OSSL_FUNC_SIGNATURE_DUPCTX, (void (*)(void))sig_dupctx },                                \
    { OSSL_FUNC_SIGNATURE_SIGN_INIT, (void (*)(void))sig_sign_init },                          \
    { OSSL_FUNC_SIGNATURE_SIGN, (void (*)(void))sig_sign },                                    \
    { OSSL_FUNC_SIGNATURE_VERIFY_INIT, (void (*)(void))sig_verify_init },                      \
    { OSSL_FUNC_SIGNATURE_VERIFY, (void (*)(void))sig_verify },                                \
    { OSSL_FUNC_SIGNATURE_DIGEST_SIGN_INIT, (void (*)(void))sig_digest_sign_init },            \
    { OSSL_FUNC_SIGNATURE_DIGEST_SIGN_UPDATE, (void (*)(void))sig_digest_update },             \
    { OSSL_FUNC_SIGNATURE_DIGEST_SIGN_FINAL, (void (*)(void))sig_digest_sign_final },          \
    { OSSL_FUNC_SIGNATURE_DIGEST_SIGN, (void (*)(void))sig_digest_sign },                      \
    { OSSL_FUNC_SIGNATURE_DIGEST_VERIFY_INIT, (void (*)(void))sig_digest_verify_init },        \
    { OSSL_FUNC_SIGNATURE_DIGEST_VERIFY_UPDATE, (void (*)(void))sig_digest_update },           \
    { OSSL_FUNC_SIGNATURE_DIGEST_VERIFY_FINAL, (void (*)(void))sig_digest_verify_final },      \
    { OSSL_FUNC_SIGNATURE_DIGEST_VERIFY, (void (*)(void))sig_digest_verify },                  \
    { OSSL_FUNC_SIGNATURE_GET_CTX_PARAMS, (void (*)(void))sig_get_ctx_params },                \
    { OSSL_FUNC_SIGNATURE_SET_CTX_PARAMS, (void (*)(void))sig_set_ctx_params }

const OSSL_DISPATCH cu_prov_ecdsa_signature_functions[] = {
    { OSSL_FUNC_SIGNATURE_NEWCTX, (void (*)(void))ecdsa_newctx },
    { OSSL_FUNC_SIGNATURE_GETTABLE_CTX_PARAMS, (void (*)(void))ecdsa_gettable_ctx_params },
    { OSSL_FUNC_SIGNATURE_SETTABLE_CTX_PARAMS, (void (*)(void))ecdsa_settable_ctx_params },
    COMMON_FUNCTIONS,
    { 0, NULL },
};

const OSSL_DISPATCH cu_prov_rsa_signature_functions[] = {
    { OSSL_FUNC_SIGNATURE_NEWCTX, (void (*)(void))rsa_newctx },
    { OSSL_FUNC_SIGNATURE_GETTABLE_CTX_PARAMS, (void (*)(void))rsa_gettable_ctx_params },
    { OSSL_FUNC_SIGNATURE_SETTABLE_CTX_PARAMS, (void (*)(void))rsa_settable_ctx_params },
    COMMON_FUNCTIONS,
    { 0, NULL },
};
