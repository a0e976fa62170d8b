/* Signatures and MACs with token-held keys: two PKCS#11 calls per signature
 * (C_SignInit + C_Sign) on a pooled session. */
#include "internal.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <stdlib.h>
#include <string.h>

size_t cu_hash_size(cu_hash h)
{
    switch (h) {
    case CU_HASH_SHA1: return 20;
    case CU_HASH_SHA224: return 28;
    case CU_HASH_SHA256: return 32;
    case CU_HASH_SHA384: return 48;
    case CU_HASH_SHA512: return 64;
    default: return 0;
    }
}

static const char *md_name(cu_hash h)
{
    switch (h) {
    case CU_HASH_SHA1: return "SHA1";
    case CU_HASH_SHA224: return "SHA224";
    case CU_HASH_SHA256: return "SHA256";
    case CU_HASH_SHA384: return "SHA384";
    case CU_HASH_SHA512: return "SHA512";
    default: return NULL;
    }
}

static CK_MECHANISM_TYPE ck_hash(cu_hash h)
{
    switch (h) {
    case CU_HASH_SHA1: return CKM_SHA_1;
    case CU_HASH_SHA224: return CKM_SHA224;
    case CU_HASH_SHA256: return CKM_SHA256;
    case CU_HASH_SHA384: return CKM_SHA384;
    default: return CKM_SHA512;
    }
}

static CK_RSA_PKCS_MGF_TYPE ck_mgf(cu_hash h)
{
    switch (h) {
    case CU_HASH_SHA1: return CKG_MGF1_SHA1;
    case CU_HASH_SHA224: return CKG_MGF1_SHA224;
    case CU_HASH_SHA256: return CKG_MGF1_SHA256;
    case CU_HASH_SHA384: return CKG_MGF1_SHA384;
    default: return CKG_MGF1_SHA512;
    }
}

/* The token mechanisms that hash and sign in one go, 0 if none. */
static CK_MECHANISM_TYPE combined_mech(cu_sig_alg alg, cu_hash h)
{
    static const CK_MECHANISM_TYPE table[3][6] = {
        /* NONE SHA1 SHA224 SHA256 SHA384 SHA512 */
        {0, CKM_ECDSA_SHA1, CKM_ECDSA_SHA224, CKM_ECDSA_SHA256, CKM_ECDSA_SHA384, CKM_ECDSA_SHA512},
        {0, CKM_SHA1_RSA_PKCS, CKM_SHA224_RSA_PKCS, CKM_SHA256_RSA_PKCS, CKM_SHA384_RSA_PKCS, CKM_SHA512_RSA_PKCS},
        {0, CKM_SHA1_RSA_PKCS_PSS, CKM_SHA224_RSA_PKCS_PSS, CKM_SHA256_RSA_PKCS_PSS, CKM_SHA384_RSA_PKCS_PSS,
         CKM_SHA512_RSA_PKCS_PSS},
    };
    if (alg < CU_SIG_ECDSA || alg > CU_SIG_RSA_PSS || h > CU_HASH_SHA512)
        return 0;
    return table[alg - CU_SIG_ECDSA][h];
}

static CK_MECHANISM_TYPE hmac_mech(cu_hash h)
{
    switch (h) {
    case CU_HASH_NONE: case CU_HASH_SHA256: return CKM_SHA256_HMAC;
    case CU_HASH_SHA384: return CKM_SHA384_HMAC;
    case CU_HASH_SHA512: return CKM_SHA512_HMAC;
    case CU_HASH_SHA1: return CKM_SHA_1_HMAC;
    default: return CKM_SHA224_HMAC;
    }
}

size_t cu_sig_max_size(const cu_object *key, const cu_sig *s)
{
    if (key == NULL || s == NULL)
        return 0;
    switch (s->alg) {
    case CU_SIG_ECDSA: return key->bits ? 2 * ((key->bits + 7) / 8) : 132;
    case CU_SIG_RSA_PKCS1: case CU_SIG_RSA_PSS: return key->bits ? (key->bits + 7) / 8 : 512;
    case CU_SIG_HMAC: return cu_hash_size(s->hash ? s->hash : CU_HASH_SHA256);
    default: return 0;
    }
}

/* DER prefixes of DigestInfo for RSASSA-PKCS1-v1_5 (RFC 8017 §9.2 note 1). */
static const uint8_t *digest_info_prefix(cu_hash h, size_t *_len)
{
    static const uint8_t sha1[] = {0x30, 0x21, 0x30, 0x09, 0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1a, 0x05, 0x00, 0x04, 0x14};
    static const uint8_t sha224[] = {0x30, 0x2d, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x04, 0x05, 0x00, 0x04, 0x1c};
    static const uint8_t sha256[] = {0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20};
    static const uint8_t sha384[] = {0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02, 0x05, 0x00, 0x04, 0x30};
    static const uint8_t sha512[] = {0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03, 0x05, 0x00, 0x04, 0x40};
    switch (h) {
    case CU_HASH_SHA1: *_len = sizeof sha1; return sha1;
    case CU_HASH_SHA224: *_len = sizeof sha224; return sha224;
    case CU_HASH_SHA256: *_len = sizeof sha256; return sha256;
    case CU_HASH_SHA384: *_len = sizeof sha384; return sha384;
    case CU_HASH_SHA512: *_len = sizeof sha512; return sha512;
    default: *_len = 0; return NULL;
    }
}

static cu_rc check_key(cu_object *key, const cu_sig *s, bool verifying)
{
    char name[160];
    if (key == NULL || s == NULL)
        return cu_err_set(CU_E_INVALID_ARG, "sign: no key or parameters");
    cu_key_type want = s->alg == CU_SIG_ECDSA ? CU_KEY_EC : s->alg == CU_SIG_HMAC ? CU_KEY_HMAC : CU_KEY_RSA;
    if (s->alg < CU_SIG_ECDSA || s->alg > CU_SIG_HMAC)
        return cu_err_set(CU_E_INVALID_ARG, "unknown signature algorithm %d", (int)s->alg);
    if (key->kt != want)
        return cu_err_set(CU_E_KEY_TYPE, "%s: a %s key cannot make %s signatures", cu__object_name(key, name, sizeof name),
                          cu_key_type_str(key->kt),
                          s->alg == CU_SIG_ECDSA ? "ECDSA" : s->alg == CU_SIG_HMAC ? "HMAC" : "RSA");
    bool ok_class = s->alg == CU_SIG_HMAC ? key->cls == CU_CLASS_SECRET_KEY
                                          : key->cls == CU_CLASS_PRIVATE_KEY ||
                                                (verifying && key->cls == CU_CLASS_PUBLIC_KEY);
    if (!ok_class)
        return cu_err_set(CU_E_KEY_TYPE, "%s cannot %s", cu__object_name(key, name, sizeof name),
                          verifying ? "verify" : "sign");
    return CU_OK;
}

/* One signature: C_SignInit + C_Sign, retrying once on a stale session,
 * handle or login (after fork, a token reset, or a session copy lost). */
static cu_rc sign_raw(cu_object *key, CK_MECHANISM *mech, const uint8_t *in, size_t inlen, uint8_t *out,
                      size_t *_outlen, size_t expect)
{
    cu_token *t = key->tok;
    char name[160];
    if (out == NULL) {
        *_outlen = expect;
        return CU_OK;
    }
    if (*_outlen < expect) {
        *_outlen = expect;
        return cu_err_set(CU_E_BUFFER_TOO_SMALL, "%s: signature needs %zu bytes",
                          cu__object_name(key, name, sizeof name), expect);
    }
    cu_rc rc = CU_OK;
    unsigned busy = 0;
    for (int attempt = 0; attempt < 2; attempt++) {
        CK_SESSION_HANDLE s;
        CK_OBJECT_HANDLE h;
        if ((rc = cu__session_get(t, &s)) != CU_OK)
            return rc;
        if ((rc = cu__object_handle(key, s, true, &h)) != CU_OK) {
            cu__session_put(t, s);
            return rc;
        }
        CK_ULONG len = *_outlen;
        /* One pass through the gate for the pair: on custos-soft an HMAC
         * costs ~270 ns, and each pass ~4. */
        cu__gate *g = cu__gate_enter();
        CK_RV rv = t->f->C_SignInit(s, mech, h);
        bool started = rv == CKR_OK;
        if (started)
            rv = t->f->C_Sign(s, (CK_BYTE_PTR)in, inlen, out, &len);
        cu__gate_leave(g);
        if (rv == CKR_OK) {
            cu__session_put(t, s);
            *_outlen = len;
            return CU_OK;
        }
        /* A session that is stale, or busy with an operation nobody here
         * started, is closed and the signature tried on a fresh one; kept
         * per thread, it would fail every later signature of that thread.
         * (tpm2-pkcs11 was seen to answer CKR_OPERATION_ACTIVE so, under a
         * heavily loaded sanitizer run.) */
        if (rv == CKR_SESSION_HANDLE_INVALID || rv == CKR_SESSION_CLOSED || rv == CKR_OPERATION_ACTIVE) {
            cu__session_drop(t, s);
            /* Each busy session is closed once: at most the pool's worth. */
            if (rv == CKR_OPERATION_ACTIVE && busy++ < t->max_sessions)
                attempt--;
            continue;
        }
        /* A failed C_Sign ends the operation by the standard; not every
         * module does, so the session is not reused. */
        if (started)
            cu__session_drop(t, s);
        else
            cu__session_put(t, s);
        if ((rv == CKR_KEY_HANDLE_INVALID || rv == CKR_OBJECT_HANDLE_INVALID) && attempt == 0) {
            pthread_mutex_lock(&key->lock);
            key->epoch = 0; /* forces a re-find and a fresh session copy */
            pthread_mutex_unlock(&key->lock);
            continue;
        }
        if (rv == CKR_USER_NOT_LOGGED_IN && attempt == 0 && cu__token_relogin(t) == CU_OK)
            continue;
        cu_rc mapped = cu_rc_from_ckr(rv);
        if (rv == CKR_USER_NOT_LOGGED_IN)
            mapped = CU_E_PIN_MISSING;
        return cu_err_set_ckr(mapped == CU_E_INVALID_ARG || mapped == CU_E_VERIFY ? CU_E_TOKEN : mapped, rv,
                              "%s: signing failed", cu__object_name(key, name, sizeof name));
    }
    return rc != CU_OK ? rc : cu_err_set(CU_E_TOKEN, "%s: signing failed after retry", cu__object_name(key, name, sizeof name));
}

static void pss_params(const cu_sig *s, CK_RSA_PKCS_PSS_PARAMS *p)
{
    p->hashAlg = ck_hash(s->hash);
    p->mgf = ck_mgf(s->mgf1 ? s->mgf1 : s->hash);
    p->sLen = s->salt_len < 0 ? cu_hash_size(s->hash) : (CK_ULONG)s->salt_len;
}

/* The input and mechanism for signing a digest with a raw mechanism. */
typedef struct prepared {
    CK_MECHANISM mech;
    CK_RSA_PKCS_PSS_PARAMS pss;
    uint8_t buf[19 + 64];
    const uint8_t *in;
    size_t inlen;
} prepared;

static cu_rc prepare_digest(cu_object *key, const cu_sig *s, const uint8_t *dig, size_t len, prepared *p)
{
    char name[160];
    memset(p, 0, sizeof *p);
    p->in = dig;
    p->inlen = len;
    if (s->hash != CU_HASH_NONE && len != cu_hash_size(s->hash))
        return cu_err_set(CU_E_INVALID_ARG, "digest is %zu bytes, %s needs %zu", len, md_name(s->hash),
                          cu_hash_size(s->hash));
    switch (s->alg) {
    case CU_SIG_ECDSA:
        p->mech.mechanism = CKM_ECDSA;
        return CU_OK;
    case CU_SIG_RSA_PKCS1: {
        p->mech.mechanism = CKM_RSA_PKCS;
        if (s->hash == CU_HASH_NONE)
            return CU_OK;
        size_t plen;
        const uint8_t *prefix = digest_info_prefix(s->hash, &plen);
        memcpy(p->buf, prefix, plen);
        memcpy(p->buf + plen, dig, len);
        p->in = p->buf;
        p->inlen = plen + len;
        return CU_OK;
    }
    case CU_SIG_RSA_PSS:
        if (s->hash == CU_HASH_NONE)
            return cu_err_set(CU_E_INVALID_ARG, "RSA-PSS needs a digest algorithm");
        pss_params(s, &p->pss);
        p->mech.mechanism = CKM_RSA_PKCS_PSS;
        p->mech.pParameter = &p->pss;
        p->mech.ulParameterLen = sizeof p->pss;
        return CU_OK;
    default:
        return cu_err_set(CU_E_INVALID_ARG, "%s: HMAC signs messages, not digests",
                          cu__object_name(key, name, sizeof name));
    }
}

cu_rc cu_sign_digest(cu_object *key, const cu_sig *s, const uint8_t *digest, size_t len, uint8_t *out,
                     size_t *_outlen)
{
    prepared p;
    cu_rc rc = check_key(key, s, false);
    if (rc != CU_OK)
        return rc;
    if (digest == NULL || _outlen == NULL)
        return cu_err_set(CU_E_INVALID_ARG, "sign: no input or output length");
    if ((rc = prepare_digest(key, s, digest, len, &p)) != CU_OK)
        return rc;
    return sign_raw(key, &p.mech, p.in, p.inlen, out, _outlen, cu_sig_max_size(key, s));
}

static cu_rc soft_digest(cu_hash h, const uint8_t *msg, size_t len, uint8_t *md, size_t *_mdlen)
{
    unsigned int n = 0;
    const char *name = md_name(h);
    if (name == NULL)
        return cu_err_set(CU_E_INVALID_ARG, "a message signature needs a digest algorithm");
    EVP_MD *m = EVP_MD_fetch(NULL, name, "provider=default");
    int ok = m != NULL && EVP_Digest(msg, len, md, &n, m, NULL);
    EVP_MD_free(m);
    if (!ok)
        return cu_err_set(CU_E_CRYPTO, "cannot compute %s", name);
    *_mdlen = n;
    return CU_OK;
}

cu_rc cu_sign(cu_object *key, const cu_sig *s, const uint8_t *msg, size_t len, uint8_t *out, size_t *_outlen)
{
    uint8_t md[64];
    size_t mdlen = 0;
    cu_rc rc = check_key(key, s, false);
    if (rc != CU_OK)
        return rc;
    if ((msg == NULL && len > 0) || _outlen == NULL)
        return cu_err_set(CU_E_INVALID_ARG, "sign: no input or output length");
    if (s->alg == CU_SIG_HMAC) {
        CK_MECHANISM mech = {hmac_mech(s->hash), NULL, 0};
        return sign_raw(key, &mech, msg, len, out, _outlen, cu_sig_max_size(key, s));
    }
    cu_token *t = key->tok;
    CK_MECHANISM_TYPE raw = s->alg == CU_SIG_ECDSA ? CKM_ECDSA : s->alg == CU_SIG_RSA_PKCS1 ? CKM_RSA_PKCS : CKM_RSA_PKCS_PSS;
    CK_MECHANISM_TYPE comb = combined_mech(s->alg, s->hash);
    /* Hash here and sign raw where the token can (fast, no data to the
     * token); else let the token hash with its combined mechanism. */
    if (comb != 0 && !cu__token_has_mech(t, raw) && cu__token_has_mech(t, comb)) {
        CK_RSA_PKCS_PSS_PARAMS pss;
        CK_MECHANISM mech = {comb, NULL, 0};
        if (s->alg == CU_SIG_RSA_PSS) {
            pss_params(s, &pss);
            mech.pParameter = &pss;
            mech.ulParameterLen = sizeof pss;
        }
        return sign_raw(key, &mech, msg, len, out, _outlen, cu_sig_max_size(key, s));
    }
    if ((rc = soft_digest(s->hash, msg, len, md, &mdlen)) != CU_OK)
        return rc;
    rc = cu_sign_digest(key, s, md, mdlen, out, _outlen);
    if (rc == CU_E_MECHANISM && comb != 0) {
        /* Some modules leave mechanisms they support out of their list
         * (tpm2-pkcs11 and PSS): try the combined one before giving up. */
        CK_RSA_PKCS_PSS_PARAMS pss;
        CK_MECHANISM mech = {comb, NULL, 0};
        if (s->alg == CU_SIG_RSA_PSS) {
            pss_params(s, &pss);
            mech.pParameter = &pss;
            mech.ulParameterLen = sizeof pss;
        }
        rc = sign_raw(key, &mech, msg, len, out, _outlen, cu_sig_max_size(key, s));
    }
    return rc;
}

/* Verifies in software with the key's public half. */
static cu_rc verify_soft(cu_object *key, const cu_sig *s, const uint8_t *md, size_t mdlen, const uint8_t *sig,
                         size_t siglen)
{
    uint8_t *der = NULL;
    size_t dlen = 0;
    EVP_PKEY *pk = NULL;
    EVP_PKEY_CTX *ctx = NULL;
    ECDSA_SIG *es = NULL;
    unsigned char *dsig = NULL;
    char name[160];
    cu_rc rc = cu_object_public_der(key, &der, &dlen);
    if (rc != CU_OK)
        return rc;
    const unsigned char *p = der;
    pk = d2i_PUBKEY(NULL, &p, (long)dlen);
    ctx = pk ? EVP_PKEY_CTX_new_from_pkey(NULL, pk, "provider=default") : NULL;
    EVP_MD *m = s->hash ? EVP_MD_fetch(NULL, md_name(s->hash), "provider=default") : NULL;
    if (ctx == NULL || EVP_PKEY_verify_init(ctx) <= 0) {
        rc = cu_err_set(CU_E_CRYPTO, "%s: cannot verify in software", cu__object_name(key, name, sizeof name));
        goto out;
    }
    if (m && EVP_PKEY_CTX_set_signature_md(ctx, m) <= 0) {
        rc = cu_err_set(CU_E_CRYPTO, "bad digest");
        goto out;
    }
    const uint8_t *vsig = sig;
    size_t vlen = siglen;
    if (s->alg == CU_SIG_ECDSA) {
        /* PKCS#11 r||s to the DER form OpenSSL verifies. */
        size_t half = siglen / 2;
        BIGNUM *r = BN_bin2bn(sig, (int)half, NULL), *ss = BN_bin2bn(sig + half, (int)half, NULL);
        es = ECDSA_SIG_new();
        if (!r || !ss || !es || !ECDSA_SIG_set0(es, r, ss)) {
            BN_free(r);
            BN_free(ss);
            rc = cu_err_set(CU_E_CRYPTO, "out of memory");
            goto out;
        }
        int n = i2d_ECDSA_SIG(es, &dsig);
        if (n <= 0) {
            rc = cu_err_set(CU_E_CRYPTO, "cannot encode the signature");
            goto out;
        }
        vsig = dsig;
        vlen = (size_t)n;
    } else if (s->alg == CU_SIG_RSA_PSS) {
        EVP_MD *mgf = EVP_MD_fetch(NULL, md_name(s->mgf1 ? s->mgf1 : s->hash), "provider=default");
        int ok = EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_PSS_PADDING) > 0 &&
                 EVP_PKEY_CTX_set_rsa_mgf1_md(ctx, mgf) > 0 &&
                 EVP_PKEY_CTX_set_rsa_pss_saltlen(ctx, s->salt_len < 0 ? (int)cu_hash_size(s->hash) : s->salt_len) > 0;
        EVP_MD_free(mgf);
        if (!ok) {
            rc = cu_err_set(CU_E_CRYPTO, "bad PSS parameters");
            goto out;
        }
    } else {
        EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_PADDING);
    }
    rc = EVP_PKEY_verify(ctx, vsig, vlen, md, mdlen) == 1
             ? CU_OK
             : cu_err_set(CU_E_VERIFY, "%s: signature does not verify", cu__object_name(key, name, sizeof name));
out:
    OPENSSL_free(dsig);
    ECDSA_SIG_free(es);
    EVP_MD_free(m);
    EVP_PKEY_CTX_free(ctx);
    EVP_PKEY_free(pk);
    free(der);
    return rc;
}

cu_rc cu_verify(cu_object *key, const cu_sig *s, const uint8_t *msg, size_t len, const uint8_t *sig, size_t siglen)
{
    uint8_t md[64];
    size_t mdlen = 0;
    char name[160];
    cu_rc rc = check_key(key, s, true);
    if (rc != CU_OK)
        return rc;
    if ((msg == NULL && len > 0) || sig == NULL)
        return cu_err_set(CU_E_INVALID_ARG, "verify: no input or signature");
    if (s->alg == CU_SIG_HMAC) {
        /* Recompute and compare in constant time: works whether or not the
         * token lets the key verify. */
        uint8_t mac[64];
        size_t maclen = sizeof mac;
        if ((rc = cu_sign(key, s, msg, len, mac, &maclen)) != CU_OK)
            return rc;
        bool ok = maclen == siglen && CRYPTO_memcmp(mac, sig, siglen) == 0;
        OPENSSL_cleanse(mac, sizeof mac);
        return ok ? CU_OK : cu_err_set(CU_E_VERIFY, "%s: MAC does not verify", cu__object_name(key, name, sizeof name));
    }
    if ((rc = soft_digest(s->hash, msg, len, md, &mdlen)) != CU_OK)
        return rc;
    return verify_soft(key, s, md, mdlen, sig, siglen);
}

struct cu_sign_op {
    cu_object *key;
    cu_sig sig;
    EVP_MD_CTX *md;          /* software hashing for ECDSA/RSA */
    CK_SESSION_HANDLE sess;  /* held session for HMAC in the token */
    bool active;
};

cu_rc cu_sign_init(cu_object *key, const cu_sig *s, cu_sign_op **_op)
{
    char name[160];
    cu_rc rc = check_key(key, s, false);
    if (rc != CU_OK)
        return rc;
    cu_sign_op *op = calloc(1, sizeof *op);
    if (op == NULL)
        return cu_err_set(CU_E_NOMEM, "out of memory");
    op->key = key;
    op->sig = *s;
    if (s->alg == CU_SIG_HMAC) {
        CK_OBJECT_HANDLE h;
        CK_MECHANISM mech = {hmac_mech(s->hash), NULL, 0};
        if ((rc = cu__session_get(key->tok, &op->sess)) != CU_OK) {
            free(op);
            return rc;
        }
        op->active = true;
        if ((rc = cu__object_handle(key, op->sess, true, &h)) == CU_OK) {
            CK_RV rv = CU__P11(key->tok->f, C_SignInit, op->sess, &mech, h);
            if (rv != CKR_OK)
                rc = cu_err_set_ckr(cu_rc_from_ckr(rv), rv, "%s: cannot start the MAC",
                                    cu__object_name(key, name, sizeof name));
        }
    } else {
        EVP_MD *m = md_name(s->hash) ? EVP_MD_fetch(NULL, md_name(s->hash), "provider=default") : NULL;
        op->md = EVP_MD_CTX_new();
        if (m == NULL || op->md == NULL || !EVP_DigestInit_ex(op->md, m, NULL))
            rc = cu_err_set(CU_E_INVALID_ARG, "streamed signing needs a digest algorithm");
        EVP_MD_free(m);
    }
    if (rc != CU_OK) {
        cu_sign_op_free(op);
        return rc;
    }
    *_op = op;
    return CU_OK;
}

cu_rc cu_sign_update(cu_sign_op *op, const uint8_t *data, size_t len)
{
    char name[160];
    if (op == NULL || (data == NULL && len > 0))
        return cu_err_set(CU_E_INVALID_ARG, "sign update: bad argument");
    if (op->md != NULL)
        return EVP_DigestUpdate(op->md, data, len) ? CU_OK : cu_err_set(CU_E_CRYPTO, "digest update failed");
    if (!op->active)
        return cu_err_set(CU_E_STATE, "sign update after final");
    CK_RV rv = CU__P11(op->key->tok->f, C_SignUpdate, op->sess, (CK_BYTE_PTR)data, len);
    if (rv != CKR_OK) {
        cu__session_drop(op->key->tok, op->sess);
        op->active = false;
        return cu_err_set_ckr(cu_rc_from_ckr(rv), rv, "%s: MAC update failed", cu__object_name(op->key, name, sizeof name));
    }
    return CU_OK;
}

cu_rc cu_sign_final(cu_sign_op *op, uint8_t *out, size_t *_outlen)
{
    char name[160];
    if (op == NULL || _outlen == NULL)
        return cu_err_set(CU_E_INVALID_ARG, "sign final: bad argument");
    size_t expect = cu_sig_max_size(op->key, &op->sig);
    if (out == NULL) {
        *_outlen = expect;
        return CU_OK;
    }
    if (*_outlen < expect) {
        *_outlen = expect;
        return cu_err_set(CU_E_BUFFER_TOO_SMALL, "signature needs %zu bytes", expect);
    }
    if (op->md != NULL) {
        uint8_t md[64];
        unsigned int mdlen = 0;
        if (!EVP_DigestFinal_ex(op->md, md, &mdlen))
            return cu_err_set(CU_E_CRYPTO, "digest final failed");
        EVP_MD_CTX_free(op->md);
        op->md = NULL;
        return cu_sign_digest(op->key, &op->sig, md, mdlen, out, _outlen);
    }
    if (!op->active)
        return cu_err_set(CU_E_STATE, "sign final called twice");
    CK_ULONG len = *_outlen;
    CK_RV rv = CU__P11(op->key->tok->f, C_SignFinal, op->sess, out, &len);
    op->active = false;
    if (rv != CKR_OK) {
        cu__session_drop(op->key->tok, op->sess);
        return cu_err_set_ckr(cu_rc_from_ckr(rv), rv, "%s: MAC final failed", cu__object_name(op->key, name, sizeof name));
    }
    cu__session_put(op->key->tok, op->sess);
    *_outlen = len;
    return CU_OK;
}

void cu_sign_op_free(cu_sign_op *op)
{
    if (op == NULL)
        return;
    /* An unfinished operation would stay active on the session: close it. */
    if (op->active)
        cu__session_drop(op->key->tok, op->sess);
    EVP_MD_CTX_free(op->md);
    free(op);
}
