/* TPM 2.0 attestation, service side: TPM2B_PUBLIC parsing and the
 * MakeCredential + duplication blob (PROTOCOL.md §3.3-3.5), in software. */
#include <custos/tpm.h>

#include "prov_int.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/param_build.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <stdlib.h>
#include <string.h>

#define TPM_ALG_RSA 0x0001
#define TPM_ALG_KEYEDHASH 0x0008
#define TPM_ALG_SHA256 0x000B
#define TPM_ALG_AES 0x0006
#define TPM_ALG_CFB 0x0043
#define TPM_ALG_NULL 0x0010
#define TPM_ALG_HMAC 0x0005

struct cu_tpm_pub {
    uint8_t *tpmt;   /* TPMT_PUBLIC bytes (no size prefix) */
    size_t tpmt_len;
    uint8_t *raw;    /* TPM2B_PUBLIC as received */
    size_t raw_len;
    uint8_t name[34];
    EVP_PKEY *rsa;
    uint16_t sym_bits;
    uint8_t modulus[512];
    size_t mod_len;
    uint32_t exponent;
};

/* ---- a bounded reader and writer of big-endian TPM structures ---- */

typedef struct rd {
    const uint8_t *p;
    size_t n, off;
    bool bad;
} rd;

static uint16_t u16(rd *r)
{
    if (r->bad || r->off + 2 > r->n) {
        r->bad = true;
        return 0;
    }
    uint16_t v = (uint16_t)(r->p[r->off] << 8 | r->p[r->off + 1]);
    r->off += 2;
    return v;
}

static uint32_t u32(rd *r)
{
    uint32_t hi = u16(r);
    return hi << 16 | u16(r);
}

static const uint8_t *bytes(rd *r, size_t len)
{
    if (r->bad || r->off + len > r->n) {
        r->bad = true;
        return NULL;
    }
    const uint8_t *p = r->p + r->off;
    r->off += len;
    return p;
}

typedef struct wr {
    uint8_t buf[1024];
    size_t n;
} wr;

static void w16(wr *w, uint16_t v)
{
    w->buf[w->n++] = (uint8_t)(v >> 8);
    w->buf[w->n++] = (uint8_t)v;
}

static void w32(wr *w, uint32_t v)
{
    w16(w, (uint16_t)(v >> 16));
    w16(w, (uint16_t)v);
}

static void wbytes(wr *w, const uint8_t *p, size_t len)
{
    memcpy(w->buf + w->n, p, len);
    w->n += len;
}

static void w2b(wr *w, const uint8_t *p, size_t len)
{
    w16(w, (uint16_t)len);
    wbytes(w, p, len);
}

/* ---- public keys ---- */

void cu_tpm_pub_free(cu_tpm_pub *pub)
{
    if (pub == NULL)
        return;
    free(pub->tpmt);
    free(pub->raw);
    EVP_PKEY_free(pub->rsa);
    free(pub);
}

static cu_rc make_rsa(cu_tpm_pub *pub)
{
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    OSSL_PARAM *params = NULL;
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL);
    BIGNUM *n = BN_bin2bn(pub->modulus, (int)pub->mod_len, NULL);
    BIGNUM *e = BN_new();
    cu_rc rc = CU_OK;
    if (bld == NULL || ctx == NULL || n == NULL || e == NULL || !BN_set_word(e, pub->exponent) ||
        !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, n) ||
        !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, e) || (params = OSSL_PARAM_BLD_to_param(bld)) == NULL ||
        EVP_PKEY_fromdata_init(ctx) != 1 || EVP_PKEY_fromdata(ctx, &pub->rsa, EVP_PKEY_PUBLIC_KEY, params) != 1) {
        ERR_clear_error();
        rc = cu_err_set(CU_E_CRYPTO, "cannot make an RSA key from the TPM public area");
    }
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
    EVP_PKEY_CTX_free(ctx);
    BN_free(n);
    BN_free(e);
    return rc;
}

cu_rc cu_tpm_pub_decode_raw(const uint8_t *buf, size_t len, cu_tpm_pub **_out)
{
    cu_prov__return_val_if_fail(buf != NULL && _out != NULL, CU_E_INVALID_ARG);
    cu_rc rc = CU_OK;
    cu_tpm_pub *pub = NULL;
    rd r = {buf, len, 0, false};

    *_out = NULL;
    uint16_t size = u16(&r);
    if (r.bad || size != len - 2) {
        rc = cu_err_set(CU_E_INVALID_ARG, "TPM2B_PUBLIC: size %u does not match %zu bytes", size, len);
        goto cleanup;
    }
    uint16_t type = u16(&r), name_alg = u16(&r);
    (void)u32(&r); /* objectAttributes: templates differ (EK vs SRK); not needed here */
    uint16_t pol = u16(&r);
    (void)bytes(&r, pol);
    uint16_t sym = u16(&r), sym_bits = 0;
    if (sym != TPM_ALG_NULL) {
        sym_bits = u16(&r);
        uint16_t mode = u16(&r);
        if (sym != TPM_ALG_AES || mode != TPM_ALG_CFB || (sym_bits != 128 && sym_bits != 256)) {
            rc = cu_err_set(CU_E_INVALID_ARG, "TPM2B_PUBLIC: symmetric is not AES-CFB");
            goto cleanup;
        }
    }
    uint16_t scheme = u16(&r);
    if (scheme != TPM_ALG_NULL)
        (void)u16(&r);
    uint16_t key_bits = u16(&r);
    uint32_t exponent = u32(&r);
    uint16_t mlen = u16(&r);
    const uint8_t *mod = bytes(&r, mlen);
    if (r.bad || r.off != r.n) {
        rc = cu_err_set(CU_E_INVALID_ARG, "TPM2B_PUBLIC: truncated or trailing bytes");
        goto cleanup;
    }
    if (type != TPM_ALG_RSA || name_alg != TPM_ALG_SHA256) {
        rc = cu_err_set(CU_E_INVALID_ARG, "TPM2B_PUBLIC: only RSA keys with a SHA-256 name are supported");
        goto cleanup;
    }
    if (key_bits != 2048 || mlen != 256 || sym == TPM_ALG_NULL) {
        rc = cu_err_set(CU_E_INVALID_ARG, "TPM2B_PUBLIC: expected a 2048-bit restricted decryption key");
        goto cleanup;
    }
    if ((pub = calloc(1, sizeof *pub)) == NULL || (pub->tpmt = malloc(len - 2)) == NULL ||
        (pub->raw = malloc(len)) == NULL) {
        rc = cu_err_set(CU_E_NOMEM, "out of memory");
        goto cleanup;
    }
    memcpy(pub->tpmt, buf + 2, len - 2);
    pub->tpmt_len = len - 2;
    memcpy(pub->raw, buf, len);
    pub->raw_len = len;
    memcpy(pub->modulus, mod, mlen);
    pub->mod_len = mlen;
    pub->exponent = exponent ? exponent : 65537;
    pub->sym_bits = sym_bits;
    pub->name[0] = 0x00;
    pub->name[1] = 0x0B;
    if (EVP_Digest(pub->tpmt, pub->tpmt_len, pub->name + 2, NULL, EVP_sha256(), NULL) != 1) {
        rc = cu_err_set(CU_E_CRYPTO, "SHA-256 failed");
        goto cleanup;
    }
    if ((rc = make_rsa(pub)) != CU_OK)
        goto cleanup;
    *_out = pub;
    pub = NULL;
cleanup:
    cu_tpm_pub_free(pub);
    return rc;
}

cu_rc cu_tpm_pub_decode(const char *b64, cu_tpm_pub **_out)
{
    cu_prov__return_val_if_fail(b64 != NULL && _out != NULL, CU_E_INVALID_ARG);
    uint8_t *raw = NULL;
    size_t n = 0;
    cu_rc rc = cu_prov__b64_decode(b64, strlen(b64), &raw, &n);
    if (rc != CU_OK)
        return cu_err_set(rc, "TPM public key is not base64");
    rc = cu_tpm_pub_decode_raw(raw, n, _out);
    OPENSSL_free(raw);
    return rc;
}

void cu_tpm_pub_name(const cu_tpm_pub *pub, uint8_t out[34]) { memcpy(out, pub->name, 34); }

int cu_tpm_pub_same_key(const cu_tpm_pub *a, const cu_tpm_pub *b)
{
    return a && b && a->mod_len == b->mod_len && a->exponent == b->exponent &&
           CRYPTO_memcmp(a->modulus, b->modulus, a->mod_len) == 0;
}

cu_rc cu_tpm_registration_id(const char *ek_b64, char **_id)
{
    cu_prov__return_val_if_fail(ek_b64 != NULL && _id != NULL, CU_E_INVALID_ARG);
    static const char alpha[] = "abcdefghijklmnopqrstuvwxyz234567";
    uint8_t *raw = NULL, md[32];
    size_t n = 0;
    cu_rc rc = cu_prov__b64_decode(ek_b64, strlen(ek_b64), &raw, &n);
    *_id = NULL;
    if (rc != CU_OK)
        return cu_err_set(rc, "endorsement key is not base64");
    EVP_Digest(raw, n, md, NULL, EVP_sha256(), NULL);
    OPENSSL_free(raw);
    char *out = malloc(53);
    if (out == NULL)
        return cu_err_set(CU_E_NOMEM, "out of memory");
    /* 256 bits -> 52 base32 characters (the last one carries 1 bit). */
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < 32; i++) {
        acc = acc << 8 | md[i];
        bits += 8;
        while (bits >= 5) {
            out[o++] = alpha[(acc >> (bits - 5)) & 31];
            bits -= 5;
        }
    }
    if (bits > 0)
        out[o++] = alpha[(acc << (5 - bits)) & 31];
    out[o] = 0;
    *_id = out;
    return CU_OK;
}

/* ---- KDFa, OAEP, CFB ---- */

cu_rc cu_tpm_kdfa(const uint8_t *key, size_t key_len, const char *label, const uint8_t *ctx_u,
                  size_t u_len, const uint8_t *ctx_v, size_t v_len, uint8_t *out, size_t bits)
{
    cu_prov__return_val_if_fail(key != NULL && label != NULL && out != NULL && bits % 8 == 0 && bits <= 1024,
                                CU_E_INVALID_ARG);
    size_t need = bits / 8, done = 0, ll = strlen(label) + 1;
    size_t mlen = 4 + ll + u_len + v_len + 4;
    uint8_t *msg = malloc(mlen);
    if (msg == NULL)
        return cu_err_set(CU_E_NOMEM, "out of memory");
    memcpy(msg + 4, label, ll);
    if (u_len)
        memcpy(msg + 4 + ll, ctx_u, u_len);
    if (v_len)
        memcpy(msg + 4 + ll + u_len, ctx_v, v_len);
    uint8_t *tail = msg + 4 + ll + u_len + v_len;
    tail[0] = (uint8_t)(bits >> 24), tail[1] = (uint8_t)(bits >> 16), tail[2] = (uint8_t)(bits >> 8);
    tail[3] = (uint8_t)bits;
    cu_rc rc = CU_OK;
    for (uint32_t i = 1; done < need; i++) {
        uint8_t blk[32];
        unsigned int l = 0;
        msg[0] = (uint8_t)(i >> 24), msg[1] = (uint8_t)(i >> 16), msg[2] = (uint8_t)(i >> 8), msg[3] = (uint8_t)i;
        if (HMAC(EVP_sha256(), key, (int)key_len, msg, mlen, blk, &l) == NULL) {
            rc = cu_err_set(CU_E_CRYPTO, "KDFa failed");
            break;
        }
        size_t take = need - done < 32 ? need - done : 32;
        memcpy(out + done, blk, take);
        done += take;
        OPENSSL_cleanse(blk, sizeof blk);
    }
    free(msg);
    return rc;
}

/* RSA-OAEP-SHA256 with the label including its NUL (IDENTITY\0, DUPLICATE\0). */
static cu_rc oaep(const cu_tpm_pub *pub, const char *label, const uint8_t *in, size_t in_len, uint8_t *out,
                  size_t *out_len)
{
    EVP_PKEY_CTX *c = EVP_PKEY_CTX_new_from_pkey(NULL, pub->rsa, NULL);
    size_t ll = strlen(label) + 1;
    unsigned char *lab = OPENSSL_malloc(ll);
    cu_rc rc = CU_OK;
    if (lab != NULL)
        memcpy(lab, label, ll);
    if (c == NULL || lab == NULL || EVP_PKEY_encrypt_init(c) != 1 ||
        EVP_PKEY_CTX_set_rsa_padding(c, RSA_PKCS1_OAEP_PADDING) != 1 ||
        EVP_PKEY_CTX_set_rsa_oaep_md(c, EVP_sha256()) != 1 || EVP_PKEY_CTX_set_rsa_mgf1_md(c, EVP_sha256()) != 1 ||
        EVP_PKEY_CTX_set0_rsa_oaep_label(c, lab, (int)ll) != 1) {
        OPENSSL_free(lab);
        rc = cu_err_set(CU_E_CRYPTO, "RSA-OAEP set-up failed");
        goto cleanup;
    }
    /* the context owns the label now */
    if (EVP_PKEY_encrypt(c, out, out_len, in, in_len) != 1)
        rc = cu_err_set(CU_E_CRYPTO, "RSA-OAEP failed");
cleanup:
    ERR_clear_error();
    EVP_PKEY_CTX_free(c);
    return rc;
}

/* AES-128-CFB (full block), zero IV. */
static cu_rc cfb(const uint8_t key[16], const uint8_t *in, size_t len, uint8_t *out)
{
    static const uint8_t iv[16] = {0};
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    int n = 0, ok = c != NULL && EVP_EncryptInit_ex(c, EVP_aes_128_cfb128(), NULL, key, iv) == 1 &&
                    EVP_EncryptUpdate(c, out, &n, in, (int)len) == 1 && EVP_EncryptFinal_ex(c, out + n, &n) == 1;
    EVP_CIPHER_CTX_free(c);
    return ok ? CU_OK : cu_err_set(CU_E_CRYPTO, "AES-CFB failed");
}

static cu_rc hmac256(const uint8_t *key, size_t kl, const uint8_t *a, size_t al, const uint8_t *b, size_t bl,
                     uint8_t out[32])
{
    uint8_t buf[512];
    unsigned int l = 0;
    if (al + bl > sizeof buf)
        return cu_err_set(CU_E_INVALID_ARG, "HMAC input too long");
    memcpy(buf, a, al);
    memcpy(buf + al, b, bl);
    return HMAC(EVP_sha256(), key, (int)kl, buf, al + bl, out, &l) ? CU_OK : cu_err_set(CU_E_CRYPTO, "HMAC failed");
}

static uint8_t *dupbuf(const wr *w, size_t *len)
{
    uint8_t *p = malloc(w->n);
    if (p != NULL) {
        memcpy(p, w->buf, w->n);
        *len = w->n;
    }
    return p;
}

void cu_tpm_activation_clear(cu_tpm_activation *a)
{
    if (a == NULL)
        return;
    free(a->cred_blob);
    free(a->enc_secret);
    free(a->dup_private);
    free(a->in_sym_seed);
    free(a->id_public);
    free(a->enc_uri);
    OPENSSL_cleanse(a, sizeof *a);
}

cu_rc cu_tpm_activation_make(const cu_tpm_pub *ek, const cu_tpm_pub *srk, cu_tpm_activation *act)
{
    cu_prov__return_val_if_fail(ek != NULL && srk != NULL && act != NULL, CU_E_INVALID_ARG);
    cu_rc rc = CU_OK;
    uint8_t seed_value[32], seed_d[32], seed_c[32], id_name[34], sym_key[16], hmac_key[32];
    uint8_t inner_plain[108], inner_enc[108], dup_sens[108], outer_hmac[32], inner_int[32];
    uint8_t enc_identity[18], integrity[32], oaep_out[512];
    size_t oaep_len;
    wr pubw = {.n = 0}, sens = {.n = 0}, w = {.n = 0};

    memset(act, 0, sizeof *act);
    if (RAND_bytes(act->key, 32) != 1 || RAND_bytes(act->wrap_key, 16) != 1 || RAND_bytes(seed_value, 32) != 1 ||
        RAND_bytes(seed_d, 32) != 1 || RAND_bytes(seed_c, 32) != 1) {
        rc = cu_err_set(CU_E_CRYPTO, "no randomness");
        goto cleanup;
    }

    /* (a) The identity key K as a KEYEDHASH object. */
    uint8_t unique[32];
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    int ok = md && EVP_DigestInit_ex(md, EVP_sha256(), NULL) && EVP_DigestUpdate(md, seed_value, 32) &&
             EVP_DigestUpdate(md, act->key, 32) && EVP_DigestFinal_ex(md, unique, NULL);
    EVP_MD_CTX_free(md);
    if (!ok) {
        rc = cu_err_set(CU_E_CRYPTO, "SHA-256 failed");
        goto cleanup;
    }
    w16(&pubw, TPM_ALG_KEYEDHASH);
    w16(&pubw, TPM_ALG_SHA256);
    w32(&pubw, 0x00040440); /* sign | userWithAuth | noDA */
    w16(&pubw, 0);          /* authPolicy: empty */
    w16(&pubw, TPM_ALG_HMAC);
    w16(&pubw, TPM_ALG_SHA256);
    w2b(&pubw, unique, 32);
    id_name[0] = 0x00;
    id_name[1] = 0x0B;
    EVP_Digest(pubw.buf, pubw.n, id_name + 2, NULL, EVP_sha256(), NULL);

    /* TPM2B_SENSITIVE: type, authValue (empty), seedValue, sensitive (K). */
    w16(&sens, 72);
    w16(&sens, TPM_ALG_KEYEDHASH);
    w16(&sens, 0);
    w2b(&sens, seed_value, 32);
    w2b(&sens, act->key, 32);

    /* (b) Inner wrapper under W. */
    md = EVP_MD_CTX_new();
    ok = md && EVP_DigestInit_ex(md, EVP_sha256(), NULL) && EVP_DigestUpdate(md, sens.buf, sens.n) &&
         EVP_DigestUpdate(md, id_name, 34) && EVP_DigestFinal_ex(md, inner_int, NULL);
    EVP_MD_CTX_free(md);
    if (!ok) {
        rc = cu_err_set(CU_E_CRYPTO, "SHA-256 failed");
        goto cleanup;
    }
    inner_plain[0] = 0x00;
    inner_plain[1] = 0x20;
    memcpy(inner_plain + 2, inner_int, 32);
    memcpy(inner_plain + 34, sens.buf, sens.n); /* 74 bytes */
    if ((rc = cfb(act->wrap_key, inner_plain, 108, inner_enc)) != CU_OK)
        goto cleanup;

    /* (c) Outer wrapper to the SRK. */
    oaep_len = sizeof oaep_out;
    if ((rc = oaep(srk, "DUPLICATE", seed_d, 32, oaep_out, &oaep_len)) != CU_OK)
        goto cleanup;
    w.n = 0;
    w2b(&w, oaep_out, oaep_len);
    if ((act->in_sym_seed = dupbuf(&w, &act->in_sym_seed_len)) == NULL)
        goto nomem;
    if ((rc = cu_tpm_kdfa(seed_d, 32, "STORAGE", id_name, 34, NULL, 0, sym_key, srk->sym_bits)) != CU_OK ||
        (rc = cfb(sym_key, inner_enc, 108, dup_sens)) != CU_OK ||
        (rc = cu_tpm_kdfa(seed_d, 32, "INTEGRITY", NULL, 0, NULL, 0, hmac_key, 256)) != CU_OK ||
        (rc = hmac256(hmac_key, 32, dup_sens, 108, id_name, 34, outer_hmac)) != CU_OK)
        goto cleanup;
    w.n = 0;
    w16(&w, 2 + 32 + 108);
    w2b(&w, outer_hmac, 32);
    wbytes(&w, dup_sens, 108);
    if ((act->dup_private = dupbuf(&w, &act->dup_private_len)) == NULL)
        goto nomem;
    w.n = 0;
    w2b(&w, pubw.buf, pubw.n);
    if ((act->id_public = dupbuf(&w, &act->id_public_len)) == NULL)
        goto nomem;

    /* (d) The credential W, to the EK, bound to the SRK's name. */
    uint8_t cred_plain[18] = {0x00, 0x10};
    memcpy(cred_plain + 2, act->wrap_key, 16);
    oaep_len = sizeof oaep_out;
    if ((rc = oaep(ek, "IDENTITY", seed_c, 32, oaep_out, &oaep_len)) != CU_OK)
        goto cleanup;
    w.n = 0;
    w2b(&w, oaep_out, oaep_len);
    if ((act->enc_secret = dupbuf(&w, &act->enc_secret_len)) == NULL)
        goto nomem;
    if ((rc = cu_tpm_kdfa(seed_c, 32, "STORAGE", srk->name, 34, NULL, 0, sym_key, ek->sym_bits)) != CU_OK ||
        (rc = cfb(sym_key, cred_plain, 18, enc_identity)) != CU_OK ||
        (rc = cu_tpm_kdfa(seed_c, 32, "INTEGRITY", NULL, 0, NULL, 0, hmac_key, 256)) != CU_OK ||
        (rc = hmac256(hmac_key, 32, enc_identity, 18, srk->name, 34, integrity)) != CU_OK)
        goto cleanup;
    OPENSSL_cleanse(cred_plain, sizeof cred_plain);
    w.n = 0;
    w16(&w, 2 + 32 + 18);
    w2b(&w, integrity, 32);
    wbytes(&w, enc_identity, 18);
    if ((act->cred_blob = dupbuf(&w, &act->cred_blob_len)) == NULL)
        goto nomem;
    /* (e) encUriData: present and empty. */
    w.n = 0;
    w16(&w, 0);
    if ((act->enc_uri = dupbuf(&w, &act->enc_uri_len)) == NULL)
        goto nomem;
    goto cleanup;
nomem:
    rc = cu_err_set(CU_E_NOMEM, "out of memory");
cleanup:
    OPENSSL_cleanse(seed_value, sizeof seed_value);
    OPENSSL_cleanse(seed_d, sizeof seed_d);
    OPENSSL_cleanse(seed_c, sizeof seed_c);
    OPENSSL_cleanse(sym_key, sizeof sym_key);
    OPENSSL_cleanse(hmac_key, sizeof hmac_key);
    OPENSSL_cleanse(inner_plain, sizeof inner_plain);
    OPENSSL_cleanse(&sens, sizeof sens);
    if (rc != CU_OK)
        cu_tpm_activation_clear(act);
    return rc;
}

char *cu_tpm_activation_blob(const cu_tpm_activation *a)
{
    if (a == NULL || a->cred_blob == NULL)
        return NULL;
    size_t n = a->cred_blob_len + a->enc_secret_len + a->dup_private_len + a->in_sym_seed_len +
               a->id_public_len + a->enc_uri_len;
    uint8_t *buf = malloc(n), *p = buf;
    if (buf == NULL)
        return NULL;
    const struct {
        const uint8_t *b;
        size_t l;
    } parts[] = {{a->cred_blob, a->cred_blob_len},     {a->enc_secret, a->enc_secret_len},
                 {a->dup_private, a->dup_private_len}, {a->in_sym_seed, a->in_sym_seed_len},
                 {a->id_public, a->id_public_len},     {a->enc_uri, a->enc_uri_len}};
    for (size_t i = 0; i < 6; i++) {
        memcpy(p, parts[i].b, parts[i].l);
        p += parts[i].l;
    }
    char *s = cu_prov__b64_encode(buf, n);
    free(buf);
    return s;
}
