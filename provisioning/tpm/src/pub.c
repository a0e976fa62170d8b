/* TPM2B_PUBLIC: parse, check for a role, Name, key comparison, the default
 * registration id (PROTOCOL.md §3.1). */
#include "internal.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <stdlib.h>
#include <string.h>

void cu_tpmsvc_pub_free(cu_tpmsvc_pub *pub)
{
    if (pub == NULL)
        return;
    free(pub->raw);
    free(pub);
}

static bool known_hash(uint16_t alg)
{
    return alg == CU_TPM_ALG_SHA1 || alg == CU_TPM_ALG_SHA256 || alg == CU_TPM_ALG_SHA384 ||
           alg == CU_TPM_ALG_SHA512;
}

/* TPMT_SYM_DEF_OBJECT */
static cu_rc parse_sym(cu_tpmsvc_rd *r, cu_tpmsvc_pub *p)
{
    p->sym_alg = cu_tpmsvc__rd_u16(r, "symmetric.algorithm");
    if (r->fail || p->sym_alg == CU_TPM_ALG_NULL)
        return CU_OK;
    if (p->sym_alg != CU_TPM_ALG_AES)
        return cu_err_set(CU_E_INVALID_ARG,
                          "TPM public area: symmetric algorithm 0x%04x is not supported (AES only)",
                          p->sym_alg);
    p->sym_bits = cu_tpmsvc__rd_u16(r, "symmetric.keyBits");
    p->sym_mode = cu_tpmsvc__rd_u16(r, "symmetric.mode");
    if (!r->fail && p->sym_bits != 128 && p->sym_bits != 192 && p->sym_bits != 256)
        return cu_err_set(CU_E_INVALID_ARG, "TPM public area: AES key size %u", p->sym_bits);
    return CU_OK;
}

/* A scheme whose details are one hash algorithm (or nothing for NULL and
 * RSAES). ECDAA has a count too. */
static cu_rc parse_scheme(cu_tpmsvc_rd *r, cu_tpmsvc_pub *p, const char *what)
{
    p->scheme = cu_tpmsvc__rd_u16(r, what);
    if (r->fail)
        return CU_OK;
    switch (p->scheme) {
    case CU_TPM_ALG_NULL:
    case 0x0015: /* RSAES: no details */
        return CU_OK;
    case 0x0014: /* RSASSA */
    case 0x0016: /* RSAPSS */
    case 0x0017: /* OAEP */
    case 0x0018: /* ECDSA */
    case 0x0019: /* ECDH */
    case 0x001B: /* SM2 */
    case 0x001C: /* ECSCHNORR */
    case 0x001D: /* ECMQV */
    case CU_TPM_ALG_HMAC:
        p->scheme_hash = cu_tpmsvc__rd_u16(r, what);
        return CU_OK;
    case 0x001A: /* ECDAA: hash + count */
        p->scheme_hash = cu_tpmsvc__rd_u16(r, what);
        (void)cu_tpmsvc__rd_u16(r, what);
        return CU_OK;
    case 0x000A: /* XOR: hash + kdf */
        p->scheme_hash = cu_tpmsvc__rd_u16(r, what);
        (void)cu_tpmsvc__rd_u16(r, what);
        return CU_OK;
    default:
        return cu_err_set(CU_E_INVALID_ARG, "TPM public area: unknown %s 0x%04x", what, p->scheme);
    }
}

cu_rc cu_tpmsvc_pub_parse(const uint8_t *buf, size_t len, cu_tpmsvc_pub **_out)
{
    cu_rc rc = CU_OK;
    cu_tpmsvc_pub *p = NULL;

    if (_out == NULL || (buf == NULL && len > 0))
        return cu_err_set(CU_E_INVALID_ARG, "cu_tpmsvc_pub_parse: no input");
    *_out = NULL;
    if (len < 2 || len > CU_TPM_PUB_MAX + 2)
        return cu_err_set(CU_E_INVALID_ARG, "TPM public area: %zu bytes is not a TPM2B_PUBLIC",
                          len);
    size_t size = (size_t)buf[0] << 8 | buf[1];
    if (size != len - 2)
        return cu_err_set(CU_E_INVALID_ARG,
                          "TPM public area: size field says %zu bytes, %zu follow", size, len - 2);

    p = calloc(1, sizeof *p);
    if (p == NULL || (p->raw = malloc(len)) == NULL) {
        rc = cu_err_set(CU_E_NOMEM, "out of memory");
        goto cleanup;
    }
    memcpy(p->raw, buf, len);
    p->raw_len = len;

    cu_tpmsvc_rd r = {.p = p->raw, .len = len, .off = 2};
    p->type = cu_tpmsvc__rd_u16(&r, "type");
    p->name_alg = cu_tpmsvc__rd_u16(&r, "nameAlg");
    p->attrs = cu_tpmsvc__rd_u32(&r, "objectAttributes");
    (void)cu_tpmsvc__rd_2b(&r, &p->policy_len, "authPolicy");
    if (r.fail)
        goto short_input;
    if (!known_hash(p->name_alg)) {
        rc = cu_err_set(CU_E_INVALID_ARG, "TPM public area: nameAlg 0x%04x is not supported",
                        p->name_alg);
        goto cleanup;
    }
    if (p->policy_len != 0 &&
        p->policy_len != (size_t)EVP_MD_get_size(cu_tpmsvc__md(p->name_alg))) {
        rc = cu_err_set(CU_E_INVALID_ARG,
                        "TPM public area: authPolicy of %zu bytes does not fit nameAlg 0x%04x",
                        p->policy_len, p->name_alg);
        goto cleanup;
    }

    switch (p->type) {
    case CU_TPM_ALG_RSA:
        if ((rc = parse_sym(&r, p)) || (rc = parse_scheme(&r, p, "RSA scheme")))
            goto cleanup;
        p->rsa_bits = cu_tpmsvc__rd_u16(&r, "keyBits");
        p->exponent = cu_tpmsvc__rd_u32(&r, "exponent");
        p->modulus = cu_tpmsvc__rd_2b(&r, &p->modulus_len, "unique (modulus)");
        if (r.fail)
            goto short_input;
        if (p->rsa_bits < 1024 || p->rsa_bits > 4096 || p->rsa_bits % 8 != 0 ||
            (p->modulus_len != 0 && p->modulus_len != p->rsa_bits / 8u)) {
            rc = cu_err_set(CU_E_INVALID_ARG,
                            "TPM public area: RSA keyBits %u with a %zu-byte modulus", p->rsa_bits,
                            p->modulus_len);
            goto cleanup;
        }
        break;
    case CU_TPM_ALG_ECC:
        if ((rc = parse_sym(&r, p)) || (rc = parse_scheme(&r, p, "ECC scheme")))
            goto cleanup;
        p->curve = cu_tpmsvc__rd_u16(&r, "curveID");
        p->kdf = cu_tpmsvc__rd_u16(&r, "kdf");
        if (!r.fail && p->kdf != CU_TPM_ALG_NULL)
            p->kdf_hash = cu_tpmsvc__rd_u16(&r, "kdf.hashAlg");
        p->x = cu_tpmsvc__rd_2b(&r, &p->x_len, "unique.x");
        p->y = cu_tpmsvc__rd_2b(&r, &p->y_len, "unique.y");
        if (r.fail)
            goto short_input;
        break;
    case CU_TPM_ALG_KEYEDHASH:
        if ((rc = parse_scheme(&r, p, "keyedHash scheme")))
            goto cleanup;
        if (!r.fail && p->scheme != CU_TPM_ALG_NULL && p->scheme != CU_TPM_ALG_HMAC &&
            p->scheme != 0x000A) {
            rc = cu_err_set(CU_E_INVALID_ARG, "TPM public area: keyedHash scheme 0x%04x",
                            p->scheme);
            goto cleanup;
        }
        p->unique = cu_tpmsvc__rd_2b(&r, &p->unique_len, "unique");
        if (r.fail)
            goto short_input;
        break;
    case CU_TPM_ALG_SYMCIPHER:
        if ((rc = parse_sym(&r, p)))
            goto cleanup;
        p->unique = cu_tpmsvc__rd_2b(&r, &p->unique_len, "unique");
        if (r.fail)
            goto short_input;
        break;
    default:
        rc = cu_err_set(CU_E_INVALID_ARG, "TPM public area: object type 0x%04x is not supported",
                        p->type);
        goto cleanup;
    }
    if (r.off != len) {
        rc = cu_err_set(CU_E_INVALID_ARG,
                        "TPM public area: %zu trailing bytes after the unique field", len - r.off);
        goto cleanup;
    }
    *_out = p;
    p = NULL;
    goto cleanup;

short_input:
    rc = cu_err_set(CU_E_INVALID_ARG, "TPM public area: truncated at '%s' (offset %zu of %zu)",
                    r.what ? r.what : "?", r.off, len);
cleanup:
    cu_tpmsvc_pub_free(p);
    return rc;
}

cu_rc cu_tpmsvc_pub_parse_b64(const char *b64, cu_tpmsvc_pub **_out)
{
    uint8_t *raw = NULL;
    size_t len = 0;
    if (_out == NULL)
        return cu_err_set(CU_E_INVALID_ARG, "cu_tpmsvc_pub_parse_b64: no output");
    *_out = NULL;
    if (b64 == NULL)
        return cu_err_set(CU_E_INVALID_ARG, "TPM public area: missing");
    if (strlen(b64) > (CU_TPM_PUB_MAX + 2) * 4 / 3 + 4)
        return cu_err_set(CU_E_INVALID_ARG, "TPM public area: too long");
    cu_rc rc = cu_tpmsvc__b64_decode(b64, &raw, &len);
    if (rc != CU_OK)
        return cu_err_wrap(rc, "TPM public area");
    rc = cu_tpmsvc_pub_parse(raw, len, _out);
    free(raw);
    return rc;
}

uint16_t cu_tpmsvc_pub_type(const cu_tpmsvc_pub *pub)
{
    return pub ? pub->type : 0;
}
uint16_t cu_tpmsvc_pub_name_alg(const cu_tpmsvc_pub *pub)
{
    return pub ? pub->name_alg : 0;
}
uint32_t cu_tpmsvc_pub_attributes(const cu_tpmsvc_pub *pub)
{
    return pub ? pub->attrs : 0;
}

unsigned cu_tpmsvc_pub_key_bits(const cu_tpmsvc_pub *pub)
{
    if (pub == NULL)
        return 0;
    if (pub->type == CU_TPM_ALG_RSA)
        return pub->rsa_bits;
    if (pub->type == CU_TPM_ALG_ECC)
        return pub->curve == CU_TPM_ECC_NIST_P256   ? 256
               : pub->curve == CU_TPM_ECC_NIST_P384 ? 384
                                                    : 0;
    return 0;
}

const uint8_t *cu_tpmsvc_pub_get0_raw(const cu_tpmsvc_pub *pub, size_t *_len)
{
    if (_len != NULL)
        *_len = pub ? pub->raw_len : 0;
    return pub ? pub->raw : NULL;
}

cu_rc cu_tpmsvc_pub_name(const cu_tpmsvc_pub *pub, uint8_t *name, size_t *_len)
{
    if (pub == NULL || name == NULL || _len == NULL)
        return cu_err_set(CU_E_INVALID_ARG, "cu_tpmsvc_pub_name: NULL argument");
    const EVP_MD *md = cu_tpmsvc__md(pub->name_alg);
    unsigned dlen = 0;
    name[0] = (uint8_t)(pub->name_alg >> 8);
    name[1] = (uint8_t)pub->name_alg;
    if (md == NULL || !EVP_Digest(pub->raw + 2, pub->raw_len - 2, name + 2, &dlen, md, NULL))
        return cu_err_set(CU_E_CRYPTO, "TPM Name: digest failed");
    *_len = 2 + dlen;
    return CU_OK;
}

const char *cu_tpmsvc__curve_name(uint16_t curve)
{
    switch (curve) {
    case CU_TPM_ECC_NIST_P256:
        return "P-256";
    case CU_TPM_ECC_NIST_P384:
        return "P-384";
    default:
        return NULL;
    }
}

cu_rc cu_tpmsvc_pub_check(const cu_tpmsvc_pub *pub, cu_tpmsvc_role role)
{
    const char *who = role == CU_TPM_ROLE_EK ? "endorsement key" : "storage root key";
    if (pub == NULL || (role != CU_TPM_ROLE_EK && role != CU_TPM_ROLE_SRK))
        return cu_err_set(CU_E_INVALID_ARG, "cu_tpmsvc_pub_check: bad argument");
    if (pub->type == CU_TPM_ALG_RSA) {
        if (pub->rsa_bits != 2048)
            return cu_err_set(CU_E_KEY_TYPE, "%s: RSA-%u is not supported (RSA-2048 only)", who,
                              pub->rsa_bits);
        if (pub->modulus_len != 256)
            return cu_err_set(CU_E_INVALID_ARG, "%s: no RSA modulus", who);
        if (!(pub->modulus[0] & 0x80))
            return cu_err_set(CU_E_INVALID_ARG, "%s: RSA modulus is not 2048 bits", who);
        uint32_t e = pub->exponent ? pub->exponent : 65537;
        if (e < 3 || !(e & 1))
            return cu_err_set(CU_E_INVALID_ARG, "%s: bad RSA exponent %u", who, e);
    } else if (pub->type == CU_TPM_ALG_ECC) {
        size_t fl = pub->curve == CU_TPM_ECC_NIST_P256   ? 32
                    : pub->curve == CU_TPM_ECC_NIST_P384 ? 48
                                                         : 0;
        if (fl == 0)
            return cu_err_set(CU_E_KEY_TYPE,
                              "%s: ECC curve 0x%04x is not supported (NIST P-256, P-384)", who,
                              pub->curve);
        if (pub->x_len != fl || pub->y_len != fl)
            return cu_err_set(CU_E_INVALID_ARG,
                              "%s: ECC point of %zu/%zu bytes on a %zu-byte curve", who, pub->x_len,
                              pub->y_len, fl);
        if (pub->kdf != CU_TPM_ALG_NULL)
            return cu_err_set(CU_E_INVALID_ARG, "%s: ECC kdf must be NULL", who);
        /* The point must be on the curve: OpenSSL checks it on import. */
        EVP_PKEY *k = NULL;
        cu_rc rc = cu_tpmsvc__pub_pkey(pub, &k);
        EVP_PKEY_free(k);
        if (rc != CU_OK)
            return cu_err_wrap(CU_E_INVALID_ARG, "%s", who);
    } else {
        return cu_err_set(CU_E_KEY_TYPE, "%s: object type 0x%04x is not RSA or ECC", who,
                          pub->type);
    }
    if (pub->name_alg != CU_TPM_ALG_SHA256 && pub->name_alg != CU_TPM_ALG_SHA384)
        return cu_err_set(CU_E_KEY_TYPE, "%s: nameAlg 0x%04x (SHA-256 or SHA-384 expected)", who,
                          pub->name_alg);
    uint32_t need = CU_TPMA_RESTRICTED | CU_TPMA_DECRYPT | CU_TPMA_FIXED_TPM | CU_TPMA_FIXED_PARENT;
    if ((pub->attrs & need) != need)
        return cu_err_set(CU_E_INVALID_ARG,
                          "%s: attributes 0x%08x lack fixedTPM|fixedParent|restricted|decrypt", who,
                          pub->attrs);
    if (pub->attrs & CU_TPMA_SIGN)
        return cu_err_set(CU_E_INVALID_ARG, "%s: a signing key cannot be a %s", who,
                          role == CU_TPM_ROLE_EK ? "credential protector" : "parent");
    if (pub->sym_alg != CU_TPM_ALG_AES || pub->sym_mode != CU_TPM_ALG_CFB)
        return cu_err_set(CU_E_INVALID_ARG,
                          "%s: a restricted decryption key needs an AES-CFB symmetric definition",
                          who);
    if (pub->scheme != CU_TPM_ALG_NULL)
        return cu_err_set(CU_E_INVALID_ARG, "%s: scheme 0x%04x (NULL expected)", who, pub->scheme);
    return CU_OK;
}

cu_rc cu_tpmsvc__pub_pkey(const cu_tpmsvc_pub *pub, EVP_PKEY **_out)
{
    cu_rc rc = CU_OK;
    OSSL_PARAM_BLD *bld = NULL;
    OSSL_PARAM *params = NULL;
    EVP_PKEY_CTX *ctx = NULL;
    BIGNUM *n = NULL, *e = NULL;
    uint8_t point[1 + 2 * 66];

    *_out = NULL;
    if ((bld = OSSL_PARAM_BLD_new()) == NULL)
        return cu_err_set(CU_E_NOMEM, "out of memory");
    if (pub->type == CU_TPM_ALG_RSA && pub->modulus_len > 0) {
        n = BN_bin2bn(pub->modulus, (int)pub->modulus_len, NULL);
        e = BN_new();
        if (n == NULL || e == NULL || !BN_set_word(e, pub->exponent ? pub->exponent : 65537) ||
            !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, n) ||
            !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, e)) {
            rc = cu_err_set(CU_E_NOMEM, "out of memory");
            goto cleanup;
        }
        ctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL);
    } else if (pub->type == CU_TPM_ALG_ECC && cu_tpmsvc__curve_name(pub->curve) != NULL &&
               pub->x_len > 0 && pub->x_len == pub->y_len && pub->x_len <= 66) {
        point[0] = 0x04;
        memcpy(point + 1, pub->x, pub->x_len);
        memcpy(point + 1 + pub->x_len, pub->y, pub->y_len);
        if (!OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME,
                                             cu_tpmsvc__curve_name(pub->curve), 0) ||
            !OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, point,
                                              1 + 2 * pub->x_len)) {
            rc = cu_err_set(CU_E_NOMEM, "out of memory");
            goto cleanup;
        }
        ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
    } else {
        rc = cu_err_set(CU_E_KEY_TYPE, "TPM public area: not an RSA or ECC public key");
        goto cleanup;
    }
    if (ctx == NULL || (params = OSSL_PARAM_BLD_to_param(bld)) == NULL ||
        EVP_PKEY_fromdata_init(ctx) <= 0 ||
        EVP_PKEY_fromdata(ctx, _out, EVP_PKEY_PUBLIC_KEY, params) <= 0) {
        rc = cu_err_set(CU_E_CRYPTO, "TPM public area: OpenSSL refuses the public key");
        goto cleanup;
    }
    if (pub->type == CU_TPM_ALG_ECC) {
        /* fromdata does not insist on the point being on the curve. */
        EVP_PKEY_CTX *chk = EVP_PKEY_CTX_new_from_pkey(NULL, *_out, NULL);
        int ok = chk != NULL && EVP_PKEY_public_check(chk) == 1;
        EVP_PKEY_CTX_free(chk);
        if (!ok) {
            EVP_PKEY_free(*_out);
            *_out = NULL;
            rc = cu_err_set(CU_E_INVALID_ARG, "ECC point is not on the curve");
        }
    }
cleanup:
    BN_free(n);
    BN_free(e);
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
    EVP_PKEY_CTX_free(ctx);
    return rc;
}

bool cu_tpmsvc_pub_same_key(const cu_tpmsvc_pub *a, const cu_tpmsvc_pub *b)
{
    if (a == NULL || b == NULL || a->type != b->type)
        return false;
    if (a->type == CU_TPM_ALG_RSA) {
        uint32_t ea = a->exponent ? a->exponent : 65537, eb = b->exponent ? b->exponent : 65537;
        return a->modulus_len > 0 && a->modulus_len == b->modulus_len && ea == eb &&
               CRYPTO_memcmp(a->modulus, b->modulus, a->modulus_len) == 0;
    }
    if (a->type == CU_TPM_ALG_ECC)
        return a->curve == b->curve && a->x_len > 0 && a->x_len == b->x_len &&
               a->y_len == b->y_len && CRYPTO_memcmp(a->x, b->x, a->x_len) == 0 &&
               CRYPTO_memcmp(a->y, b->y, a->y_len) == 0;
    return false;
}

cu_rc cu_tpmsvc_ek_match(const char *enrolled_b64, const char *presented_b64, bool *_match)
{
    cu_tpmsvc_pub *a = NULL, *b = NULL;
    if (_match == NULL)
        return cu_err_set(CU_E_INVALID_ARG, "cu_tpmsvc_ek_match: no output");
    *_match = false;
    cu_rc rc = cu_tpmsvc_pub_parse_b64(enrolled_b64, &a);
    if (rc != CU_OK) {
        rc = cu_err_wrap(rc, "enrollment's endorsement key");
        goto cleanup;
    }
    if ((rc = cu_tpmsvc_pub_parse_b64(presented_b64, &b)) != CU_OK) {
        rc = cu_err_wrap(rc, "device's endorsement key");
        goto cleanup;
    }
    *_match = cu_tpmsvc_pub_same_key(a, b);
cleanup:
    cu_tpmsvc_pub_free(a);
    cu_tpmsvc_pub_free(b);
    return rc;
}

cu_rc cu_tpmsvc_registration_id_raw(const uint8_t *ek_tpm2b, size_t len, char *out)
{
    static const char alphabet[] = "abcdefghijklmnopqrstuvwxyz234567";
    uint8_t h[32];
    if (ek_tpm2b == NULL || len == 0 || out == NULL)
        return cu_err_set(CU_E_INVALID_ARG, "cu_tpmsvc_registration_id: NULL argument");
    if (!EVP_Digest(ek_tpm2b, len, h, NULL, EVP_sha256(), NULL))
        return cu_err_set(CU_E_CRYPTO, "SHA-256 failed");
    /* 32 bytes = 256 bits = 51 full 5-bit groups + 1 bit: 52 characters. */
    size_t o = 0;
    unsigned acc = 0, nbits = 0;
    for (size_t i = 0; i < sizeof h; i++) {
        acc = (acc << 8) | h[i];
        nbits += 8;
        while (nbits >= 5) {
            out[o++] = alphabet[(acc >> (nbits - 5)) & 31];
            nbits -= 5;
        }
    }
    if (nbits > 0)
        out[o++] = alphabet[(acc << (5 - nbits)) & 31];
    out[o] = '\0';
    return CU_OK;
}

cu_rc cu_tpmsvc_registration_id(const cu_tpmsvc_pub *ek, char *out)
{
    if (ek == NULL)
        return cu_err_set(CU_E_INVALID_ARG, "cu_tpmsvc_registration_id: no key");
    return cu_tpmsvc_registration_id_raw(ek->raw, ek->raw_len, out);
}
