/* custos_tpm against known answers (vectors/README.md): KDFa against
 * OpenSSL's SP 800-108 KBKDF, MakeCredential byte for byte against
 * tpm2_makecredential, the whole blob against what swtpm activated and
 * imported, the public-area parser, the Name, the registration id, the EK
 * match and the EK certificate check. */
#include "cu_test.h"
#include "kat_rng.h"

#include <custos/keyring.h>
#include <custos/tpmsvc.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define V CU_TPM_VECTORS "/"

static uint8_t *slurp(const char *name, size_t *_len)
{
    char path[1024];
    snprintf(path, sizeof path, V "%s", name);
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    uint8_t *b = malloc(65536);
    size_t n = b ? fread(b, 1, 65536, f) : 0;
    fclose(f);
    *_len = n;
    return b;
}

static cu_tpmsvc_pub *load_pub(const char *name)
{
    size_t n = 0;
    uint8_t *b = slurp(name, &n);
    cu_tpmsvc_pub *p = NULL;
    if (b != NULL && cu_tpmsvc_pub_parse(b, n, &p) != CU_OK)
        fprintf(stderr, "%s: %s\n", name, cu_err_last()->msg);
    free(b);
    return p;
}

static EVP_PKEY *load_pem(const char *name)
{
    char path[1024];
    snprintf(path, sizeof path, V "%s", name);
    FILE *f = fopen(path, "r");
    EVP_PKEY *k = f ? PEM_read_PrivateKey(f, NULL, NULL, NULL) : NULL;
    if (f)
        fclose(f);
    return k;
}

/* TPM2B_PUBLIC of a software key with the TCG default EK template (what
 * tpm2_makecredential -G assumes). */
static const uint8_t EK_POLICY[32] = {0x83, 0x71, 0x97, 0x67, 0x44, 0x84, 0xb3, 0xf8,
                                      0x1a, 0x90, 0xcc, 0x8d, 0x46, 0xa5, 0xd7, 0x24,
                                      0xfd, 0x52, 0xd7, 0x6e, 0x06, 0x52, 0x0b, 0x64,
                                      0xf2, 0xa1, 0xda, 0x1b, 0x33, 0x14, 0x69, 0xaa};
static size_t put16(uint8_t *p, unsigned v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
    return 2;
}
static cu_tpmsvc_pub *soft_ek(EVP_PKEY *k)
{
    uint8_t b[600];
    size_t o = 2;
    bool rsa = EVP_PKEY_is_a(k, "RSA");
    o += put16(b + o, rsa ? 0x0001 : 0x0023);
    o += put16(b + o, 0x000b);
    memcpy(b + o, "\x00\x03\x00\xb2", 4), o += 4;
    o += put16(b + o, 32);
    memcpy(b + o, EK_POLICY, 32), o += 32;
    o += put16(b + o, 0x0006), o += put16(b + o, 128), o += put16(b + o, 0x0043);
    o += put16(b + o, 0x0010);
    if (rsa) {
        BIGNUM *n = NULL;
        EVP_PKEY_get_bn_param(k, OSSL_PKEY_PARAM_RSA_N, &n);
        o += put16(b + o, 2048);
        memset(b + o, 0, 4), o += 4;
        o += put16(b + o, 256);
        BN_bn2binpad(n, b + o, 256), o += 256;
        BN_free(n);
    } else {
        uint8_t pt[65];
        size_t ptlen = 0;
        EVP_PKEY_get_octet_string_param(k, OSSL_PKEY_PARAM_PUB_KEY, pt, sizeof pt, &ptlen);
        o += put16(b + o, 0x0003), o += put16(b + o, 0x0010);
        o += put16(b + o, 32);
        memcpy(b + o, pt + 1, 32), o += 32;
        o += put16(b + o, 32);
        memcpy(b + o, pt + 33, 32), o += 32;
    }
    put16(b, (unsigned)(o - 2));
    cu_tpmsvc_pub *p = NULL;
    if (cu_tpmsvc_pub_parse(b, o, &p) != CU_OK)
        fprintf(stderr, "soft_ek: %s\n", cu_err_last()->msg);
    return p;
}

/* ---- KDFa = SP 800-108 counter-mode HMAC (OpenSSL KBKDF) ---- */
static void test_kdfa(void)
{
    static const uint8_t key[] = "0123456789abcdef0123456789abcdef";
    static const uint8_t u[] = {1, 2, 3, 4, 5}, v[] = {9, 8, 7};
    unsigned sizes[] = {128, 256, 264, 520};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        uint8_t mine[65], ref[65], ctx[8];
        CU_ASSERT_EQUAL_FATAL(cu_tpmsvc_kdfa(CU_TPM_ALG_SHA256, key, 32, "STORAGE", u, sizeof u, v,
                                             sizeof v, sizes[i], mine),
                              CU_OK);
        memcpy(ctx, u, sizeof u);
        memcpy(ctx + sizeof u, v, sizeof v);
        EVP_KDF *kdf = EVP_KDF_fetch(NULL, "KBKDF", NULL);
        EVP_KDF_CTX *kc = EVP_KDF_CTX_new(kdf);
        OSSL_PARAM p[] = {
            OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_MAC, "HMAC", 0),
            OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, "SHA256", 0),
            OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)key, 32),
            OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, "STORAGE", 7),
            OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, ctx, sizeof u + sizeof v),
            OSSL_PARAM_construct_end()};
        CU_ASSERT_EQUAL(EVP_KDF_derive(kc, ref, sizes[i] / 8, p), 1);
        CU_ASSERT_EQUAL(memcmp(mine, ref, sizes[i] / 8), 0);
        EVP_KDF_CTX_free(kc);
        EVP_KDF_free(kdf);
    }
    uint8_t out[32];
    CU_ASSERT_EQUAL(cu_tpmsvc_kdfa(0x1234, key, 32, "X", NULL, 0, NULL, 0, 128, out),
                    CU_E_INVALID_ARG);
    CU_ASSERT_EQUAL(cu_tpmsvc_kdfa(CU_TPM_ALG_SHA256, key, 32, "X", NULL, 0, NULL, 0, 12, out),
                    CU_E_INVALID_ARG);
}

/* ---- the public-area parser ---- */
static void test_pub_parse(void)
{
    size_t n = 0, nn = 0;
    uint8_t *ekb = slurp("ek-rsa.pub", &n);
    uint8_t *nameb = slurp("srk.name", &nn);
    CU_ASSERT_PTR_NOT_NULL_FATAL(ekb);
    CU_ASSERT_EQUAL(n, 316);
    cu_tpmsvc_pub *ek = NULL, *srk = load_pub("srk.pub"), *ecc = load_pub("ek-ecc.pub");
    CU_ASSERT_EQUAL_FATAL(cu_tpmsvc_pub_parse(ekb, n, &ek), CU_OK);
    CU_ASSERT_PTR_NOT_NULL_FATAL(srk);
    CU_ASSERT_PTR_NOT_NULL_FATAL(ecc);
    CU_ASSERT_EQUAL(cu_tpmsvc_pub_type(ek), CU_TPM_ALG_RSA);
    CU_ASSERT_EQUAL(cu_tpmsvc_pub_attributes(ek), 0x000300B2);
    CU_ASSERT_EQUAL(cu_tpmsvc_pub_attributes(srk), 0x00030472);
    CU_ASSERT_EQUAL(cu_tpmsvc_pub_key_bits(ek), 2048);
    CU_ASSERT_EQUAL(cu_tpmsvc_pub_type(ecc), CU_TPM_ALG_ECC);
    CU_ASSERT_EQUAL(cu_tpmsvc_pub_key_bits(ecc), 256);
    CU_ASSERT_EQUAL(cu_tpmsvc_pub_check(ek, CU_TPM_ROLE_EK), CU_OK);
    CU_ASSERT_EQUAL(cu_tpmsvc_pub_check(ecc, CU_TPM_ROLE_EK), CU_OK);
    CU_ASSERT_EQUAL(cu_tpmsvc_pub_check(srk, CU_TPM_ROLE_SRK), CU_OK);

    /* Name = nameAlg || SHA-256(TPMT_PUBLIC), as tpm2_readpublic says. */
    uint8_t name[CU_TPM_NAME_MAX];
    size_t name_len = 0;
    CU_ASSERT_EQUAL(cu_tpmsvc_pub_name(srk, name, &name_len), CU_OK);
    CU_ASSERT_EQUAL(name_len, nn);
    CU_ASSERT_EQUAL(memcmp(name, nameb, nn), 0);

    /* Malformed: every truncation, a trailing byte, a wrong size prefix,
     * an unknown type, an unknown symmetric algorithm. */
    cu_tpmsvc_pub *bad = NULL;
    for (size_t cut = 0; cut < n; cut += 7) {
        uint8_t t[400];
        memcpy(t, ekb, cut);
        if (cut >= 2)
            put16(t, (unsigned)(cut - 2));
        CU_ASSERT_EQUAL(cu_tpmsvc_pub_parse(t, cut, &bad), CU_E_INVALID_ARG);
        CU_ASSERT_PTR_NULL(bad);
    }
    uint8_t t[400];
    memcpy(t, ekb, n);
    t[n] = 0;
    put16(t, (unsigned)(n - 1));
    CU_ASSERT_EQUAL(cu_tpmsvc_pub_parse(t, n + 1, &bad), CU_E_INVALID_ARG);
    CU_ASSERT_PTR_NOT_NULL(strstr(cu_err_last()->msg, "trailing"));
    memcpy(t, ekb, n);
    t[1] ^= 1;
    CU_ASSERT_EQUAL(cu_tpmsvc_pub_parse(t, n, &bad), CU_E_INVALID_ARG);
    memcpy(t, ekb, n);
    t[3] = 0x7f; /* type */
    CU_ASSERT_EQUAL(cu_tpmsvc_pub_parse(t, n, &bad), CU_E_INVALID_ARG);
    memcpy(t, ekb, n);
    t[2 + 2 + 2 + 4 + 34 + 1] = 0x25; /* symmetric.algorithm */
    CU_ASSERT_EQUAL(cu_tpmsvc_pub_parse(t, n, &bad), CU_E_INVALID_ARG);
    CU_ASSERT_EQUAL(cu_tpmsvc_pub_parse_b64("not base64!", &bad), CU_E_INVALID_ARG);
    CU_ASSERT_EQUAL(cu_tpmsvc_pub_parse_b64(NULL, &bad), CU_E_INVALID_ARG);

    /* Roles: an SRK is not an EK-capable... it is (restricted decrypt), but
     * a signing key or a key without fixedTPM is refused. */
    memcpy(t, ekb, n);
    t[2 + 4 + 1] |= 0x04; /* attributes byte 1 (bits 16..23): sign */
    CU_ASSERT_EQUAL_FATAL(cu_tpmsvc_pub_parse(t, n, &bad), CU_OK);
    CU_ASSERT_EQUAL(cu_tpmsvc_pub_check(bad, CU_TPM_ROLE_EK), CU_E_INVALID_ARG);
    cu_tpmsvc_pub_free(bad);
    memcpy(t, ekb, n);
    t[2 + 4 + 3] &= (uint8_t)~0x02; /* fixedTPM */
    CU_ASSERT_EQUAL_FATAL(cu_tpmsvc_pub_parse(t, n, &bad), CU_OK);
    CU_ASSERT_EQUAL(cu_tpmsvc_pub_check(bad, CU_TPM_ROLE_EK), CU_E_INVALID_ARG);
    cu_tpmsvc_pub_free(bad);
    /* An ECC point off the curve. */
    size_t en = 0;
    uint8_t *eb = slurp("ek-ecc.pub", &en);
    eb[en - 1] ^= 1;
    CU_ASSERT_EQUAL_FATAL(cu_tpmsvc_pub_parse(eb, en, &bad), CU_OK);
    CU_ASSERT_EQUAL(cu_tpmsvc_pub_check(bad, CU_TPM_ROLE_EK), CU_E_INVALID_ARG);
    cu_tpmsvc_pub_free(bad);
    free(eb);

    cu_tpmsvc_pub_free(ek);
    cu_tpmsvc_pub_free(srk);
    cu_tpmsvc_pub_free(ecc);
    free(ekb);
    free(nameb);
}

/* ---- registration id and EK match ---- */
static void test_regid_match(void)
{
    const char *kinds[] = {"rsa", "ecc"};
    for (int i = 0; i < 2; i++) {
        char f[64], want[64] = {0}, got[CU_TPM_REGID_LEN + 1];
        size_t n = 0, wn = 0;
        snprintf(f, sizeof f, "ek-%s.pub", kinds[i]);
        uint8_t *b = slurp(f, &n);
        snprintf(f, sizeof f, "regid-%s.txt", kinds[i]);
        uint8_t *w = slurp(f, &wn);
        CU_ASSERT_PTR_NOT_NULL_FATAL(w);
        memcpy(want, w, wn < 60 ? wn : 60);
        CU_ASSERT_EQUAL(cu_tpmsvc_registration_id_raw(b, n, got), CU_OK);
        CU_ASSERT_EQUAL(strlen(got), CU_TPM_REGID_LEN);
        CU_ASSERT_STRING_EQUAL(got, want);
        free(b);
        free(w);
    }
    /* Same key, different bytes (attributes, exponent 0 vs 65537): match. */
    size_t n = 0;
    uint8_t *b = slurp("ek-rsa.pub", &n);
    uint8_t t[400];
    memcpy(t, b, n);
    t[2 + 4 + 3] ^= 0x40;                               /* userWithAuth */
    memcpy(t + 2 + 2 + 2 + 4 + 34 + 6 + 2 + 2, "\x00\x01\x00\x01", 4); /* exponent 65537 */
    cu_tpmsvc_pub *a = NULL, *c = NULL, *srk = load_pub("srk.pub"), *ecc = load_pub("ek-ecc.pub");
    CU_ASSERT_EQUAL_FATAL(cu_tpmsvc_pub_parse(b, n, &a), CU_OK);
    CU_ASSERT_EQUAL_FATAL(cu_tpmsvc_pub_parse(t, n, &c), CU_OK);
    CU_ASSERT_TRUE(cu_tpmsvc_pub_same_key(a, c));
    CU_ASSERT_FALSE(cu_tpmsvc_pub_same_key(a, srk));
    CU_ASSERT_FALSE(cu_tpmsvc_pub_same_key(a, ecc));
    CU_ASSERT_TRUE(cu_tpmsvc_pub_same_key(ecc, ecc));
    t[n - 1] ^= 1; /* another modulus */
    cu_tpmsvc_pub_free(c);
    CU_ASSERT_EQUAL_FATAL(cu_tpmsvc_pub_parse(t, n, &c), CU_OK);
    CU_ASSERT_FALSE(cu_tpmsvc_pub_same_key(a, c));
    /* The base64 form of the enrollment API. */
    char b64a[600], b64c[600];
    EVP_EncodeBlock((unsigned char *)b64a, b, (int)n);
    EVP_EncodeBlock((unsigned char *)b64c, t, (int)n);
    bool m = true;
    CU_ASSERT_EQUAL(cu_tpmsvc_ek_match(b64a, b64a, &m), CU_OK);
    CU_ASSERT_TRUE(m);
    CU_ASSERT_EQUAL(cu_tpmsvc_ek_match(b64a, b64c, &m), CU_OK);
    CU_ASSERT_FALSE(m);
    CU_ASSERT_EQUAL(cu_tpmsvc_ek_match(b64a, "AAAA", &m), CU_E_INVALID_ARG);
    CU_ASSERT_FALSE(m);
    cu_tpmsvc_pub_free(a);
    cu_tpmsvc_pub_free(c);
    cu_tpmsvc_pub_free(srk);
    cu_tpmsvc_pub_free(ecc);
    free(b);
}

/* ---- MakeCredential, byte for byte against tpm2_makecredential ---- */

static void mgf1_xor(const uint8_t *seed, size_t sl, uint8_t *buf, size_t len)
{
    for (uint32_t i = 0, done = 0; done < len; i++) {
        uint8_t c[4] = {(uint8_t)(i >> 24), (uint8_t)(i >> 16), (uint8_t)(i >> 8), (uint8_t)i},
                t[32];
        EVP_MD_CTX *m = EVP_MD_CTX_new();
        EVP_DigestInit_ex(m, EVP_sha256(), NULL);
        EVP_DigestUpdate(m, seed, sl);
        EVP_DigestUpdate(m, c, 4);
        EVP_DigestFinal_ex(m, t, NULL);
        EVP_MD_CTX_free(m);
        for (size_t j = 0; j < 32 && done < len; j++)
            buf[done++] ^= t[j];
    }
}

static void test_credential_rsa_exact(void)
{
    size_t n = 0, sn = 0, nn = 0;
    uint8_t *cred = slurp("cred-soft-rsa.blob", &n), *secret = slurp("secret.bin", &sn),
            *name = slurp("srk.name", &nn);
    EVP_PKEY *k = load_pem("soft-ek-rsa.pem");
    CU_ASSERT_PTR_NOT_NULL_FATAL(cred);
    CU_ASSERT_PTR_NOT_NULL_FATAL(k);
    CU_ASSERT_EQUAL_FATAL(n, 8 + 54 + 258);
    const uint8_t *idobj = cred + 8, *encsec = cred + 8 + 54;

    /* Recover both random values tpm2-tools used: the OAEP seed and the
     * credential seed, with the private key (raw RSA, OAEP undone here). */
    uint8_t em[256];
    size_t emlen = sizeof em;
    EVP_PKEY_CTX *c = EVP_PKEY_CTX_new(k, NULL);
    CU_ASSERT_FATAL(EVP_PKEY_decrypt_init(c) > 0 &&
                    EVP_PKEY_CTX_set_rsa_padding(c, RSA_NO_PADDING) > 0 &&
                    EVP_PKEY_decrypt(c, em, &emlen, encsec + 2, 256) > 0 && emlen == 256);
    EVP_PKEY_CTX_free(c);
    CU_ASSERT_EQUAL(em[0], 0);
    mgf1_xor(em + 33, 223, em + 1, 32); /* seed */
    mgf1_xor(em + 1, 32, em + 33, 223); /* DB */
    uint8_t lhash[32];
    EVP_Digest("IDENTITY", 9, lhash, NULL, EVP_sha256(), NULL);
    CU_ASSERT_EQUAL(memcmp(em + 33, lhash, 32), 0);
    size_t i = 33 + 32;
    while (i < 256 && em[i] == 0)
        i++;
    CU_ASSERT_EQUAL_FATAL(em[i], 1);
    size_t seed_len = 256 - i - 1;
    CU_ASSERT_EQUAL(seed_len, 32); /* tpm2-tools: the digest size, like our default */
    uint8_t stream[64];
    memcpy(stream, em + i + 1, seed_len); /* the credential seed first */
    memcpy(stream + seed_len, em + 1, 32); /* then the OAEP seed */

    kat_rng rng = {.label = KAT_LABEL, .prefix = stream, .prefix_len = seed_len + 32};
    cu_tpmsvc_blob_opts opts = {.rng = kat_rng_fill, .rng_ctx = &rng, .rsa_seed_len = seed_len};
    cu_tpmsvc_pub *ek = soft_ek(k);
    uint8_t *io = NULL, *es = NULL;
    size_t io_len = 0, es_len = 0;
    CU_ASSERT_EQUAL_FATAL(
        cu_tpmsvc_make_credential(ek, name, nn, secret, sn, &opts, &io, &io_len, &es, &es_len),
        CU_OK);
    CU_ASSERT_EQUAL(io_len, 54);
    CU_ASSERT_EQUAL(es_len, 258);
    CU_ASSERT_EQUAL(memcmp(io, idobj, 54), 0);
    CU_ASSERT_EQUAL(memcmp(es, encsec, 258), 0);
    CU_ASSERT_EQUAL(rng.prefix_len, 0); /* drew exactly those */

    /* Refusals: credential longer than the digest, empty name. */
    free(io);
    free(es);
    uint8_t big[33] = {0};
    CU_ASSERT_EQUAL(
        cu_tpmsvc_make_credential(ek, name, nn, big, 33, NULL, &io, &io_len, &es, &es_len),
        CU_E_INVALID_ARG);
    CU_ASSERT_EQUAL(
        cu_tpmsvc_make_credential(ek, name, 0, big, 16, NULL, &io, &io_len, &es, &es_len),
        CU_E_INVALID_ARG);
    cu_tpmsvc_pub_free(ek);
    EVP_PKEY_free(k);
    free(cred);
    free(secret);
    free(name);
}

/* The receiving side of an ECC credential, done in software with the EK's
 * private key: ECDH, KDFe, check the HMAC, decrypt. Returns the
 * credential's length or -1. */
static int ecc_activate(EVP_PKEY *k, const cu_tpmsvc_pub *ek, const uint8_t *name, size_t nn,
                        const uint8_t *idobj, size_t io_len, const uint8_t *encsec, uint8_t *out)
{
    /* encsec: size, TPM2B x, TPM2B y */
    uint8_t pt[65] = {4};
    memcpy(pt + 1, encsec + 4, 32);
    memcpy(pt + 33, encsec + 4 + 32 + 2, 32);
    EVP_PKEY *eph = NULL;
    EVP_PKEY_CTX *fc = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
    OSSL_PARAM p[] = {OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, "P-256", 0),
                      OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PUB_KEY, pt, 65),
                      OSSL_PARAM_construct_end()};
    EVP_PKEY_fromdata_init(fc);
    EVP_PKEY_fromdata(fc, &eph, EVP_PKEY_PUBLIC_KEY, p);
    EVP_PKEY_CTX_free(fc);
    uint8_t z[32], seed[32], sym[16], hk[32], mac[32], ekx[65];
    size_t zl = sizeof z, ekl = 0;
    EVP_PKEY_CTX *dc = EVP_PKEY_CTX_new(k, NULL);
    int ok = eph != NULL && EVP_PKEY_derive_init(dc) > 0 && EVP_PKEY_derive_set_peer(dc, eph) > 0 &&
             EVP_PKEY_derive(dc, z, &zl) > 0;
    EVP_PKEY_CTX_free(dc);
    EVP_PKEY_free(eph);
    EVP_PKEY_get_octet_string_param(k, OSSL_PKEY_PARAM_PUB_KEY, ekx, sizeof ekx, &ekl);
    (void)ek;
    if (!ok ||
        cu_tpmsvc_kdfe(CU_TPM_ALG_SHA256, z, 32, "IDENTITY", encsec + 4, 32, ekx + 1, 32, 256,
                       seed) != CU_OK ||
        cu_tpmsvc_kdfa(CU_TPM_ALG_SHA256, seed, 32, "STORAGE", name, nn, NULL, 0, 128, sym) !=
            CU_OK ||
        cu_tpmsvc_kdfa(CU_TPM_ALG_SHA256, seed, 32, "INTEGRITY", NULL, 0, NULL, 0, 256, hk) !=
            CU_OK)
        return -1;
    /* idobj: size, TPM2B hmac (32), encIdentity */
    const uint8_t *enc = idobj + 2 + 2 + 32;
    size_t enc_len = io_len - 36;
    uint8_t *buf = malloc(enc_len + nn);
    memcpy(buf, enc, enc_len);
    memcpy(buf + enc_len, name, nn);
    EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, hk, 32, buf, enc_len + nn, mac, 32, NULL);
    free(buf);
    if (memcmp(mac, idobj + 4, 32) != 0)
        return -1;
    uint8_t iv[16] = {0}, plain[64];
    int l1 = 0, l2 = 0;
    EVP_CIPHER_CTX *cc = EVP_CIPHER_CTX_new();
    EVP_DecryptInit_ex(cc, EVP_aes_128_cfb128(), NULL, sym, iv);
    EVP_DecryptUpdate(cc, plain, &l1, enc, (int)enc_len);
    EVP_DecryptFinal_ex(cc, plain + l1, &l2);
    EVP_CIPHER_CTX_free(cc);
    size_t cl = (size_t)plain[0] << 8 | plain[1];
    if (cl + 2 != enc_len)
        return -1;
    memcpy(out, plain + 2, cl);
    return (int)cl;
}

static void test_credential_ecc(void)
{
    size_t n = 0, sn = 0, nn = 0;
    uint8_t *cred = slurp("cred-soft-ecc.blob", &n), *secret = slurp("secret.bin", &sn),
            *name = slurp("srk.name", &nn);
    EVP_PKEY *k = load_pem("soft-ek-ecc.pem");
    CU_ASSERT_PTR_NOT_NULL_FATAL(cred);
    CU_ASSERT_PTR_NOT_NULL_FATAL(k);
    cu_tpmsvc_pub *ek = soft_ek(k);
    CU_ASSERT_PTR_NOT_NULL_FATAL(ek);
    uint8_t out[64];
    /* tpm2_makecredential's ECC credential opens with our KDFe/KDFa. */
    size_t io_len = (size_t)cred[8] << 8 | cred[9];
    CU_ASSERT_EQUAL(ecc_activate(k, ek, name, nn, cred + 8, io_len + 2, cred + 8 + 2 + io_len, out),
                    (int)sn);
    CU_ASSERT_EQUAL(memcmp(out, secret, sn), 0);
    /* ... and ours opens the same way. */
    uint8_t *io = NULL, *es = NULL;
    size_t il = 0, el = 0;
    CU_ASSERT_EQUAL_FATAL(
        cu_tpmsvc_make_credential(ek, name, nn, secret, sn, NULL, &io, &il, &es, &el), CU_OK);
    CU_ASSERT_EQUAL(el, 2 + 2 + 32 + 2 + 32);
    memset(out, 0, sizeof out);
    CU_ASSERT_EQUAL(ecc_activate(k, ek, name, nn, io, il, es, out), (int)sn);
    CU_ASSERT_EQUAL(memcmp(out, secret, sn), 0);
    /* A tampered credential does not open. */
    io[10] ^= 1;
    CU_ASSERT_EQUAL(ecc_activate(k, ek, name, nn, io, il, es, out), -1);
    free(io);
    free(es);
    cu_tpmsvc_pub_free(ek);
    EVP_PKEY_free(k);
    free(cred);
    free(secret);
    free(name);
}

/* ---- the whole blob, as swtpm activated and imported it ---- */
static void check_blob(const char *kind)
{
    char f[64];
    size_t bn = 0, wn = 0, hn = 0, mn = 0;
    snprintf(f, sizeof f, "blob-%s.bin", kind);
    uint8_t *want = slurp(f, &bn);
    snprintf(f, sizeof f, "w-%s.bin", kind);
    uint8_t *w = slurp(f, &wn);
    snprintf(f, sizeof f, "tpm-hmac-%s.bin", kind);
    uint8_t *tpm_mac = slurp(f, &hn);
    uint8_t *msg = slurp("msg.bin", &mn);
    bool ecc_srk = strcmp(kind, "rsa-eccsrk") == 0;
    snprintf(f, sizeof f, "ek-%s.pub", ecc_srk ? "rsa" : kind);
    cu_tpmsvc_pub *ek = load_pub(f), *srk = load_pub(ecc_srk ? "srk-ecc.pub" : "srk.pub");
    CU_ASSERT_PTR_NOT_NULL_FATAL(want);
    CU_ASSERT_PTR_NOT_NULL_FATAL(ek);
    uint8_t key[32];
    for (int i = 0; i < 32; i++)
        key[i] = (uint8_t)(0x20 + i);

    kat_rng rng = {.label = KAT_LABEL};
    cu_tpmsvc_blob_opts opts = {.rng = kat_rng_fill, .rng_ctx = &rng};
    uint8_t *blob = NULL;
    size_t len = 0;
    CU_ASSERT_EQUAL_FATAL(cu_tpmsvc_blob_build(ek, srk, key, sizeof key, &opts, &blob, &len),
                          CU_OK);
    CU_ASSERT_EQUAL(len, bn);
    CU_ASSERT(len == bn && memcmp(blob, want, len) == 0);

    /* The TPM recovered W = stream bytes 32..47 (after the seedValue). */
    kat_rng again = {.label = KAT_LABEL};
    uint8_t stream[48];
    kat_rng_fill(&again, stream, sizeof stream);
    CU_ASSERT_EQUAL(wn, 16);
    CU_ASSERT_EQUAL(memcmp(w, stream + 32, 16), 0);
    /* The TPM's HMAC with the imported key is HMAC(key). */
    uint8_t mac[32];
    EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, key, 32, msg, mn, mac, 32, NULL);
    CU_ASSERT_EQUAL(hn, 32);
    CU_ASSERT_EQUAL(memcmp(mac, tpm_mac, 32), 0);

    /* Field sizes of the real DPS blob (PROTOCOL.md §3.3) for RSA. */
    cu_tpmsvc_blob_fields fl;
    CU_ASSERT_EQUAL_FATAL(cu_tpmsvc_blob_split(blob, len, &fl), CU_OK);
    CU_ASSERT_EQUAL(fl.id_object_len, 2 + 52);
    CU_ASSERT_EQUAL(fl.dup_private_len, 2 + 142);
    CU_ASSERT_EQUAL(fl.sym_seed_len, ecc_srk ? 2u + 68 : 2u + 256);
    CU_ASSERT_EQUAL(fl.key_public_len, 2 + 48);
    CU_ASSERT_EQUAL(fl.uri_data_len, 2);
    CU_ASSERT_EQUAL(fl.enc_secret_len, strcmp(kind, "ecc") != 0 ? 2u + 256 : 2u + 68);
    CU_ASSERT_EQUAL(
        memcmp(fl.key_public,
               "\x00\x30\x00\x08\x00\x0b\x00\x04\x04\x40\x00\x00\x00\x05\x00\x0b\x00\x20", 18),
        0);

    free(blob);
    free(want);
    free(w);
    free(tpm_mac);
    free(msg);
    cu_tpmsvc_pub_free(ek);
    cu_tpmsvc_pub_free(srk);
}
static void test_blob_rsa(void)
{
    check_blob("rsa");
}
static void test_blob_ecc(void)
{
    check_blob("ecc");
}
static void test_blob_ecc_srk(void) { check_blob("rsa-eccsrk"); }

static void test_blob_split_refuses(void)
{
    size_t bn = 0;
    uint8_t *b = slurp("blob-rsa.bin", &bn);
    cu_tpmsvc_blob_fields f;
    CU_ASSERT_EQUAL(cu_tpmsvc_blob_split(b, bn, &f), CU_OK);
    for (size_t cut = 0; cut < bn; cut += 13)
        CU_ASSERT_EQUAL(cu_tpmsvc_blob_split(b, cut, &f), CU_E_INVALID_ARG);
    uint8_t *longer = malloc(bn + 1);
    memcpy(longer, b, bn);
    longer[bn] = 0;
    CU_ASSERT_EQUAL(cu_tpmsvc_blob_split(longer, bn + 1, &f), CU_E_INVALID_ARG);
    CU_ASSERT_PTR_NOT_NULL(strstr(cu_err_last()->msg, "trailing"));
    free(longer);
    free(b);
}

static void test_challenge(void)
{
    size_t en = 0, sn = 0;
    uint8_t *e = slurp("ek-rsa.pub", &en), *s = slurp("srk.pub", &sn);
    char eb[600], sb[600];
    EVP_EncodeBlock((unsigned char *)eb, e, (int)en);
    EVP_EncodeBlock((unsigned char *)sb, s, (int)sn);
    uint8_t key[CU_TPM_ID_KEY_LEN], key2[CU_TPM_ID_KEY_LEN];
    char *blob = NULL, *blob2 = NULL;
    CU_ASSERT_EQUAL_FATAL(cu_tpmsvc_challenge_new(eb, sb, NULL, key, &blob), CU_OK);
    CU_ASSERT_EQUAL_FATAL(cu_tpmsvc_challenge_new(eb, sb, NULL, key2, &blob2), CU_OK);
    CU_ASSERT_EQUAL(strlen(blob), (766 + 2) / 3 * 4);
    CU_ASSERT(memcmp(key, key2, sizeof key) != 0); /* fresh every time */
    CU_ASSERT(strcmp(blob, blob2) != 0);
    free(blob);
    free(blob2);
    /* EK and SRK swapped roles still parse, but a signing "SRK" or junk does not. */
    CU_ASSERT_EQUAL(cu_tpmsvc_challenge_new("", sb, NULL, key, &blob), CU_E_INVALID_ARG);
    CU_ASSERT_PTR_NOT_NULL(strstr(cu_err_last()->msg, "tpm.endorsementKey"));
    CU_ASSERT_EQUAL(cu_tpmsvc_challenge_new(eb, "AAAA", NULL, key, &blob), CU_E_INVALID_ARG);
    CU_ASSERT_PTR_NOT_NULL(strstr(cu_err_last()->msg, "tpm.storageRootKey"));
    s[2 + 4 + 1] |= 0x04; /* sign */
    EVP_EncodeBlock((unsigned char *)sb, s, (int)sn);
    CU_ASSERT_EQUAL(cu_tpmsvc_challenge_new(eb, sb, NULL, key, &blob), CU_E_INVALID_ARG);
    CU_ASSERT_PTR_NULL(blob);
    free(e);
    free(s);
}

/* ---- extension: EK certificate ---- */
static void test_ekcert(void)
{
    char *d = cu_test_mkdtemp("tpmcert");
    CU_ASSERT_PTR_NOT_NULL_FATAL(d);
    int rc = cu_test_sh(
        "cd '%s' && "
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key "
        "-subj /CN=tpm-vendor-root -days 2 -out ca.pem 2>/dev/null && "
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout o.key "
        "-subj /CN=other-root -days 2 -out other.pem 2>/dev/null && "
        "openssl req -new -key " V "soft-ek-rsa.pem -subj /CN=ek 2>/dev/null | "
        "openssl x509 -req -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -outform DER "
        "-out ek.der 2>/dev/null",
        d);
    CU_ASSERT_EQUAL_FATAL(rc, 0);
    char path[512];
    snprintf(path, sizeof path, "%s/ek.der", d);
    FILE *f = fopen(path, "rb");
    uint8_t der[4096];
    size_t n = fread(der, 1, sizeof der, f);
    fclose(f);
    EVP_PKEY *k = load_pem("soft-ek-rsa.pem");
    cu_tpmsvc_pub *ek = soft_ek(k), *other = load_pub("ek-rsa.pub");
    char ca[512], oca[512];
    snprintf(ca, sizeof ca, "%s/ca.pem", d);
    snprintf(oca, sizeof oca, "%s/other.pem", d);
    CU_ASSERT_EQUAL(cu_tpmsvc_ekcert_verify(ek, der, n, ca, NULL, NULL), CU_OK);
    CU_ASSERT_EQUAL(cu_tpmsvc_ekcert_verify(other, der, n, ca, NULL, NULL), CU_E_VERIFY);
    CU_ASSERT_PTR_NOT_NULL(strstr(cu_err_last()->msg, "another key"));
    CU_ASSERT_EQUAL(cu_tpmsvc_ekcert_verify(ek, der, n, oca, NULL, NULL), CU_E_VERIFY);
    CU_ASSERT_EQUAL(cu_tpmsvc_ekcert_verify(ek, der, n / 2, ca, NULL, NULL), CU_E_INVALID_ARG);
    cu_tpmsvc_pub_free(ek);
    cu_tpmsvc_pub_free(other);
    EVP_PKEY_free(k);
    cu_test_rmtree(d);
    free(d);
}

/* ---- the pending challenge (custosd between the 401 and the 2nd PUT) ---- */
static void test_pending(void)
{
    static const uint8_t mk[32] = "service keyring key for the test";
    cu_keyring *kr = NULL, *kr2 = NULL;
    CU_ASSERT_EQUAL_FATAL(cu_keyring_software_new(mk, sizeof mk, &kr), CU_OK);
    uint8_t other_mk[32] = {1};
    CU_ASSERT_EQUAL_FATAL(cu_keyring_software_new(other_mk, sizeof other_mk, &kr2), CU_OK);
    size_t en = 0, on = 0;
    uint8_t *e = slurp("ek-rsa.pub", &en), *o = slurp("ek-ecc.pub", &on);
    char ek[600], ek2[600];
    EVP_EncodeBlock((unsigned char *)ek, e, (int)en);
    EVP_EncodeBlock((unsigned char *)ek2, o, (int)on);
    uint8_t key[CU_TPM_ID_KEY_LEN], back[CU_TPM_ID_KEY_LEN];
    for (int i = 0; i < CU_TPM_ID_KEY_LEN; i++)
        key[i] = (uint8_t)(i * 3);
    const time_t t0 = 1900000000;
    char *sealed = NULL;
    CU_ASSERT_EQUAL_FATAL(
        cu_tpmsvc_challenge_seal(kr, "0ne00AB", "Dev-1", ek, t0 + 300, key, &sealed), CU_OK);
    CU_ASSERT_EQUAL(strncmp(sealed, "tpmc1:1900000300:cw1:", 21), 0);
    CU_ASSERT_PTR_NULL(strstr(sealed, "AAECAwQF")); /* no plaintext key */
    /* Opens for the same scope/id (any case) and EK, before expiry. */
    CU_ASSERT_EQUAL(cu_tpmsvc_challenge_open(kr, "0NE00ab", "dev-1", ek, t0 + 10, sealed, back),
                    CU_OK);
    CU_ASSERT_EQUAL(memcmp(key, back, sizeof key), 0);
    /* Refused: expired, other id, other scope, other EK, other keyring,
     * expiry edited, garbage. */
    CU_ASSERT_EQUAL(cu_tpmsvc_challenge_open(kr, "0ne00AB", "Dev-1", ek, t0 + 300, sealed, back),
                    CU_E_VERIFY);
    CU_ASSERT_PTR_NOT_NULL(strstr(cu_err_last()->msg, "expired"));
    CU_ASSERT_EQUAL(cu_tpmsvc_challenge_open(kr, "0ne00AB", "Dev-2", ek, t0, sealed, back),
                    CU_E_VERIFY);
    CU_ASSERT_EQUAL(cu_tpmsvc_challenge_open(kr, "0ne00AC", "Dev-1", ek, t0, sealed, back),
                    CU_E_VERIFY);
    CU_ASSERT_EQUAL(cu_tpmsvc_challenge_open(kr, "0ne00AB", "Dev-1", ek2, t0, sealed, back),
                    CU_E_VERIFY);
    CU_ASSERT_EQUAL(cu_tpmsvc_challenge_open(kr2, "0ne00AB", "Dev-1", ek, t0, sealed, back),
                    CU_E_VERIFY);
    char *edited = strdup(sealed);
    edited[15] = '9'; /* 1900000300 -> 1900000900 */
    CU_ASSERT_EQUAL(cu_tpmsvc_challenge_open(kr, "0ne00AB", "Dev-1", ek, t0, edited, back),
                    CU_E_VERIFY);
    free(edited);
    CU_ASSERT_EQUAL(cu_tpmsvc_challenge_open(kr, "0ne00AB", "Dev-1", ek, t0, "cw1:xx", back),
                    CU_E_INVALID_ARG);
    CU_ASSERT_EQUAL(cu_tpmsvc_challenge_seal(kr, "a|b", "Dev-1", ek, t0, key, &edited),
                    CU_E_INVALID_ARG);
    free(sealed);
    free(e);
    free(o);
    cu_keyring_free(kr);
    cu_keyring_free(kr2);
}

static const cu_test_case cases[] = {
    {"KDFa equals SP 800-108 KBKDF", test_kdfa},
    {"TPM2B_PUBLIC parse, Name, roles, refusals", test_pub_parse},
    {"registration id (base32) and EK match by key", test_regid_match},
    {"MakeCredential RSA byte-exact vs tpm2_makecredential", test_credential_rsa_exact},
    {"MakeCredential ECC opens like tpm2_makecredential's", test_credential_ecc},
    {"blob to RSA EK: swtpm-verified known answer", test_blob_rsa},
    {"blob to ECC EK: swtpm-verified known answer", test_blob_ecc},
    {"blob to an ECC SRK: swtpm-verified known answer", test_blob_ecc_srk},
    {"blob split refuses short and trailing", test_blob_split_refuses},
    {"challenge: fresh key, refusals name the field", test_challenge},
    {"EK certificate chain and key", test_ekcert},
    {"pending challenge: sealed, bound, expiring", test_pending},
    {NULL, NULL},
};

int main(void)
{
    if (cu_test_add_suite("tpm_kat", NULL, NULL, cases) != 0)
        return 2;
    return cu_test_run();
}
