/* The token layer suite, run once per token kind (argv[1]): softhsm2, tpm2, soft.
 * Every signature is verified by OpenSSL in software, every HMAC compared with
 * OpenSSL's; the failure paths are asserted with their error codes. */
#include "cu_test.h"
#include "p11_backend.h"
#include "../../pkcs11/src/internal.h" /* the module lock, for test_fork_while_locked */

#include <CUnit/CUnit.h>
#include <custos/token.h>
#include <p11-kit/pkcs11.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static p11_backend be;
static cu_token *tok;
static cu_object *ec256, *ec384, *rsa2048, *rsa3072, *hmac;

static const uint8_t msg[] = "the quick brown fox jumps over the lazy dog";

/* ---- software cross-checks ---- */

static EVP_PKEY *public_key(cu_object *k)
{
    uint8_t *der = NULL;
    size_t len = 0;
    if (cu_object_public_der(k, &der, &len) != CU_OK)
        return NULL;
    const unsigned char *p = der;
    EVP_PKEY *pk = d2i_PUBKEY(NULL, &p, (long)len);
    free(der);
    return pk;
}

/* Verifies sig (raw r||s for ECDSA) over msg with OpenSSL's default provider. */
static int soft_verify(cu_object *k, const cu_sig *s, const uint8_t *m, size_t mlen, const uint8_t *sig, size_t slen)
{
    EVP_PKEY *pk = public_key(k);
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    EVP_PKEY_CTX *pctx = NULL;
    unsigned char *der = NULL;
    int ok = 0;
    const char *md = s->hash == CU_HASH_SHA384 ? "SHA384" : "SHA256";
    if (pk == NULL || ctx == NULL || EVP_DigestVerifyInit_ex(ctx, &pctx, md, NULL, "provider=default", pk, NULL) != 1)
        goto out;
    const uint8_t *v = sig;
    size_t vlen = slen;
    if (s->alg == CU_SIG_ECDSA) {
        ECDSA_SIG *es = ECDSA_SIG_new();
        ECDSA_SIG_set0(es, BN_bin2bn(sig, (int)slen / 2, NULL), BN_bin2bn(sig + slen / 2, (int)slen / 2, NULL));
        int n = i2d_ECDSA_SIG(es, &der);
        ECDSA_SIG_free(es);
        v = der;
        vlen = (size_t)n;
    } else if (s->alg == CU_SIG_RSA_PSS) {
        EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING);
        EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, s->salt_len < 0 ? RSA_PSS_SALTLEN_DIGEST : s->salt_len);
    }
    ok = EVP_DigestVerify(ctx, v, vlen, m, mlen) == 1;
out:
    OPENSSL_free(der);
    EVP_MD_CTX_free(ctx);
    EVP_PKEY_free(pk);
    return ok;
}

static int sign_and_check(cu_object *k, const cu_sig *s)
{
    uint8_t sig[512];
    size_t slen = sizeof sig;
    cu_rc rc = cu_sign(k, s, msg, sizeof msg, sig, &slen);
    if (rc != CU_OK) {
        fprintf(stderr, "sign: %s\n", cu_err_last()->msg);
        return 0;
    }
    return soft_verify(k, s, msg, sizeof msg, sig, slen) && cu_verify(k, s, msg, sizeof msg, sig, slen) == CU_OK;
}

/* ---- suite set-up: one token with one key of each kind ---- */

static int suite_init(void)
{
    if (p11_backend_create(&be) != 0)
        return -1;
    cu_token_opts o = {.pin = be.pin, .quirks = be.quirks};
    if (cu_token_open(be.uri, &o, &tok) != CU_OK) {
        fprintf(stderr, "open %s: %s\n", be.uri, cu_err_last()->msg);
        return -1;
    }
    if (cu_token_keygen(tok, CU_KEYGEN_EC_P256, "ec256", (const uint8_t *)"\x01", 1, &ec256) != CU_OK ||
        cu_token_keygen(tok, CU_KEYGEN_EC_P384, "ec384", (const uint8_t *)"\x02", 1, &ec384) != CU_OK ||
        cu_token_keygen(tok, CU_KEYGEN_RSA2048, "rsa2048", (const uint8_t *)"\x03", 1, &rsa2048) != CU_OK ||
        cu_token_keygen(tok, CU_KEYGEN_RSA3072, "rsa3072", (const uint8_t *)"\x04", 1, &rsa3072) != CU_OK) {
        fprintf(stderr, "keygen: %s\n", cu_err_last()->msg);
        return -1;
    }
    if (be.hmac_keygen) {
        if (cu_token_keygen(tok, CU_KEYGEN_HMAC256, "hmac", (const uint8_t *)"\x05", 1, &hmac) != CU_OK)
            return -1;
    } else if (cu_token_find(tok, "pkcs11:object=hmac", CU_CLASS_SECRET_KEY, &hmac) != CU_OK) {
        fprintf(stderr, "find hmac: %s\n", cu_err_last()->msg);
        return -1;
    }
    return 0;
}

static int suite_cleanup(void)
{
    cu_object_free(ec256);
    cu_object_free(ec384);
    cu_object_free(rsa2048);
    cu_object_free(rsa3072);
    cu_object_free(hmac);
    cu_token_unref(tok);
    cu_p11_shutdown();
    p11_backend_destroy(&be);
    return 0;
}

/* ---- tests ---- */

static void test_keygen_custody(void)
{
    cu_object *keys[] = {ec256, ec384, rsa2048, rsa3072};
    unsigned bits[] = {256, 384, 2048, 3072};
    for (size_t i = 0; i < 4; i++) {
        cu_custody c;
        CU_ASSERT_EQUAL_FATAL(cu_object_custody(keys[i], &c), CU_OK);
        CU_ASSERT_EQUAL(c.cls, CU_CLASS_PRIVATE_KEY);
        CU_ASSERT_EQUAL(c.sensitive, 1);
        CU_ASSERT_EQUAL(c.extractable, 0);
        CU_ASSERT_EQUAL(c.always_sensitive, 1);
        CU_ASSERT_EQUAL(c.never_extractable, 1);
        CU_ASSERT_EQUAL(c.local, 1);
        CU_ASSERT_FALSE(cu_custody_flagged(&c));
        CU_ASSERT_EQUAL(cu_object_bits(keys[i]), bits[i]);
    }
    cu_custody c;
    CU_ASSERT_EQUAL_FATAL(cu_object_custody(hmac, &c), CU_OK);
    CU_ASSERT_EQUAL(c.cls, CU_CLASS_SECRET_KEY);
    CU_ASSERT_EQUAL(c.type, CU_KEY_HMAC);
    CU_ASSERT_EQUAL(c.sensitive, 1);
    CU_ASSERT_EQUAL(c.extractable, 0);
}

static void test_hmac_keygen_support(void)
{
    cu_object *k = NULL;
    cu_rc rc = cu_token_keygen(tok, CU_KEYGEN_HMAC256, "hmac-gen", NULL, 0, &k);
    if (be.hmac_keygen) {
        CU_ASSERT_EQUAL(rc, CU_OK);
        CU_ASSERT_EQUAL(cu_object_destroy(k), CU_OK);
    } else {
        /* tpm2-pkcs11 has no secret-key generation through PKCS#11: say so. */
        CU_ASSERT_EQUAL(rc, CU_E_UNSUPPORTED);
        CU_ASSERT_PTR_NOT_NULL(strstr(cu_err_last()->msg, "cannot generate"));
    }
    cu_object_free(k);
}

static void test_import_flagged(void)
{
    uint8_t key[32];
    memset(key, 0x42, sizeof key);
    cu_object *k = NULL;
    cu_rc rc = cu_token_import_hmac(tok, key, sizeof key, "imported", NULL, 0, &k);
    if (!be.hmac_import) {
        CU_ASSERT_EQUAL(rc, CU_E_UNSUPPORTED);
        return;
    }
    CU_ASSERT_EQUAL_FATAL(rc, CU_OK);
    cu_custody c;
    CU_ASSERT_EQUAL(cu_object_custody(k, &c), CU_OK);
    CU_ASSERT_EQUAL(c.local, 0);
    CU_ASSERT_TRUE(cu_custody_flagged(&c));
    CU_ASSERT_EQUAL(cu_object_destroy(k), CU_OK);
    cu_object_free(k);
}

static void test_sign_ecdsa(void)
{
    cu_sig s256 = {CU_SIG_ECDSA, CU_HASH_SHA256, 0, -1};
    cu_sig s384 = {CU_SIG_ECDSA, CU_HASH_SHA384, 0, -1};
    CU_ASSERT_TRUE(sign_and_check(ec256, &s256));
    CU_ASSERT_TRUE(sign_and_check(ec384, &s384));
    CU_ASSERT_TRUE(sign_and_check(ec384, &s256));
}

static void test_sign_rsa(void)
{
    cu_sig pkcs1 = {CU_SIG_RSA_PKCS1, CU_HASH_SHA256, 0, -1};
    cu_sig pss = {CU_SIG_RSA_PSS, CU_HASH_SHA256, CU_HASH_SHA256, -1};
    cu_sig pss384 = {CU_SIG_RSA_PSS, CU_HASH_SHA384, CU_HASH_SHA384, -1};
    CU_ASSERT_TRUE(sign_and_check(rsa2048, &pkcs1));
    CU_ASSERT_TRUE(sign_and_check(rsa3072, &pkcs1));
    CU_ASSERT_TRUE(sign_and_check(rsa2048, &pss));
    CU_ASSERT_TRUE(sign_and_check(rsa3072, &pss384));
}

static void test_sign_digest(void)
{
    uint8_t md[32], sig[512];
    unsigned int mdlen;
    EVP_Digest(msg, sizeof msg, md, &mdlen, EVP_sha256(), NULL);
    cu_sig s = {CU_SIG_RSA_PKCS1, CU_HASH_SHA256, 0, -1};
    size_t slen = sizeof sig;
    CU_ASSERT_EQUAL_FATAL(cu_sign_digest(rsa2048, &s, md, mdlen, sig, &slen), CU_OK);
    CU_ASSERT_TRUE(soft_verify(rsa2048, &s, msg, sizeof msg, sig, slen));
    /* A digest of the wrong length is refused, not signed. */
    slen = sizeof sig;
    CU_ASSERT_EQUAL(cu_sign_digest(rsa2048, &s, md, 20, sig, &slen), CU_E_INVALID_ARG);
}

static void test_hmac(void)
{
    cu_sig s = {CU_SIG_HMAC, CU_HASH_SHA256, 0, 0};
    uint8_t mac[32], mac2[32];
    size_t len = sizeof mac;
    CU_ASSERT_EQUAL_FATAL(cu_sign(hmac, &s, msg, sizeof msg, mac, &len), CU_OK);
    CU_ASSERT_EQUAL(len, 32);
    CU_ASSERT_EQUAL(cu_verify(hmac, &s, msg, sizeof msg, mac, len), CU_OK);
    if (be.hmac_value_len > 0) {
        unsigned int n = 0;
        HMAC(EVP_sha256(), be.hmac_value, (int)be.hmac_value_len, msg, sizeof msg, mac2, &n);
        CU_ASSERT_EQUAL(memcmp(mac, mac2, 32), 0);
    }
    /* Where the token takes a secret key, a known key's MAC must equal
     * OpenSSL's too (a generated key can only be checked against itself). */
    CU_ASSERT_TRUE(be.hmac_import || be.hmac_value_len > 0);
    if (be.hmac_import) {
        uint8_t key[32], known[32], want[32];
        unsigned int n = 0;
        size_t klen = sizeof known;
        for (size_t i = 0; i < sizeof key; i++)
            key[i] = (uint8_t)(0xa5 ^ (i * 29));
        cu_object *k = NULL;
        CU_ASSERT_EQUAL_FATAL(cu_token_import_hmac(tok, key, sizeof key, "hmac-known", NULL, 0, &k), CU_OK);
        CU_ASSERT_EQUAL(cu_sign(k, &s, msg, sizeof msg, known, &klen), CU_OK);
        HMAC(EVP_sha256(), key, sizeof key, msg, sizeof msg, want, &n);
        CU_ASSERT_EQUAL(klen, 32);
        CU_ASSERT_EQUAL(n, 32);
        CU_ASSERT_EQUAL(memcmp(known, want, 32), 0);
        CU_ASSERT_EQUAL(cu_object_destroy(k), CU_OK);
        cu_object_free(k);
    }
    mac[0] ^= 1;
    CU_ASSERT_EQUAL(cu_verify(hmac, &s, msg, sizeof msg, mac, len), CU_E_VERIFY);
    /* Streamed MAC equals the one-shot MAC. */
    cu_sign_op *op = NULL;
    CU_ASSERT_EQUAL_FATAL(cu_sign_init(hmac, &s, &op), CU_OK);
    CU_ASSERT_EQUAL(cu_sign_update(op, msg, 10), CU_OK);
    CU_ASSERT_EQUAL(cu_sign_update(op, msg + 10, sizeof msg - 10), CU_OK);
    len = sizeof mac2;
    CU_ASSERT_EQUAL(cu_sign_final(op, mac2, &len), CU_OK);
    cu_sign_op_free(op);
    mac[0] ^= 1;
    CU_ASSERT_EQUAL(memcmp(mac, mac2, 32), 0);
}

static void test_streamed_ecdsa(void)
{
    cu_sig s = {CU_SIG_ECDSA, CU_HASH_SHA256, 0, -1};
    cu_sign_op *op = NULL;
    uint8_t sig[132];
    size_t len = sizeof sig;
    CU_ASSERT_EQUAL_FATAL(cu_sign_init(ec256, &s, &op), CU_OK);
    CU_ASSERT_EQUAL(cu_sign_update(op, msg, 7), CU_OK);
    CU_ASSERT_EQUAL(cu_sign_update(op, msg + 7, sizeof msg - 7), CU_OK);
    CU_ASSERT_EQUAL(cu_sign_final(op, sig, &len), CU_OK);
    cu_sign_op_free(op);
    CU_ASSERT_TRUE(soft_verify(ec256, &s, msg, sizeof msg, sig, len));
    /* An abandoned operation releases its session. */
    CU_ASSERT_EQUAL_FATAL(cu_sign_init(hmac, &(cu_sig){CU_SIG_HMAC, CU_HASH_SHA256, 0, 0}, &op), CU_OK);
    cu_sign_op_free(op);
}

static void test_wrong_key_type(void)
{
    cu_sig ecdsa = {CU_SIG_ECDSA, CU_HASH_SHA256, 0, -1};
    cu_sig rsa = {CU_SIG_RSA_PKCS1, CU_HASH_SHA256, 0, -1};
    cu_sig mac = {CU_SIG_HMAC, CU_HASH_SHA256, 0, 0};
    uint8_t sig[512];
    size_t len = sizeof sig;
    CU_ASSERT_EQUAL(cu_sign(rsa2048, &ecdsa, msg, sizeof msg, sig, &len), CU_E_KEY_TYPE);
    CU_ASSERT_PTR_NOT_NULL(strstr(cu_err_last()->msg, "rsa2048"));
    CU_ASSERT_EQUAL(cu_sign(ec256, &rsa, msg, sizeof msg, sig, &len), CU_E_KEY_TYPE);
    CU_ASSERT_EQUAL(cu_sign(ec256, &mac, msg, sizeof msg, sig, &len), CU_E_KEY_TYPE);
    CU_ASSERT_EQUAL(cu_sign(hmac, &ecdsa, msg, sizeof msg, sig, &len), CU_E_KEY_TYPE);
}

static void test_buffer_too_small(void)
{
    cu_sig s = {CU_SIG_ECDSA, CU_HASH_SHA256, 0, -1};
    uint8_t sig[512];
    size_t len = 0;
    CU_ASSERT_EQUAL(cu_sign(ec256, &s, msg, sizeof msg, NULL, &len), CU_OK);
    CU_ASSERT_EQUAL(len, 64);
    len = 10;
    CU_ASSERT_EQUAL(cu_sign(ec256, &s, msg, sizeof msg, sig, &len), CU_E_BUFFER_TOO_SMALL);
    CU_ASSERT_EQUAL(len, 64);
    cu_sig r = {CU_SIG_RSA_PKCS1, CU_HASH_SHA256, 0, -1};
    len = 255;
    CU_ASSERT_EQUAL(cu_sign(rsa2048, &r, msg, sizeof msg, sig, &len), CU_E_BUFFER_TOO_SMALL);
    CU_ASSERT_EQUAL(len, 256);
    /* The key still works after a refused call. */
    len = sizeof sig;
    CU_ASSERT_EQUAL(cu_sign(ec256, &s, msg, sizeof msg, sig, &len), CU_OK);
}

static void test_wrong_pin(void)
{
    cu_token *t = NULL;
    cu_token_opts o = {.pin = "99999999"};
    CU_ASSERT_EQUAL(cu_token_open(be.uri, &o, &t), CU_E_PIN_INCORRECT);
    CU_ASSERT_PTR_NULL(t);
    CU_ASSERT_PTR_NULL(strstr(cu_err_last()->msg, "99999999"));
    CU_ASSERT_PTR_NOT_NULL(strstr(cu_err_last()->msg, be.label));
    CU_ASSERT_EQUAL(cu_err_last()->ckr, 0xa0UL /* CKR_PIN_INCORRECT */);
}

static void test_pin_sources(void)
{
    char path[512], uri[2048];
    snprintf(path, sizeof path, "%s/pinfile", be.dir);
    FILE *f = fopen(path, "w");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    fprintf(f, "%s\n", be.pin);
    fclose(f);
    snprintf(uri, sizeof uri, "%s&pin-source=file:%s", be.uri, path);
    cu_token *t = NULL;
    CU_ASSERT_EQUAL(cu_token_open(uri, NULL, &t), CU_OK);
    CU_ASSERT_TRUE(cu_token_logged_in(t));
    cu_token_unref(t);
    t = NULL;
    setenv("CUSTOS_PIN", be.pin, 1);
    CU_ASSERT_EQUAL(cu_token_open(be.uri, NULL, &t), CU_OK);
    CU_ASSERT_TRUE(cu_token_logged_in(t));
    unsetenv("CUSTOS_PIN");
    cu_token_unref(t);
    t = NULL;
    snprintf(uri, sizeof uri, "%s&pin-source=%s/missing", be.uri, be.dir);
    CU_ASSERT_EQUAL(cu_token_open(uri, NULL, &t), CU_E_IO);
}

static void test_token_not_found(void)
{
    char uri[1024];
    cu_token *t = NULL;
    snprintf(uri, sizeof uri, "pkcs11:token=no-such-token?module-path=%s&pin-value=s3cr3t-pin", be.module);
    CU_ASSERT_EQUAL(cu_token_open(uri, NULL, &t), CU_E_TOKEN_NOT_FOUND);
    CU_ASSERT_PTR_NOT_NULL(strstr(cu_err_last()->msg, "no-such-token"));
    CU_ASSERT_PTR_NOT_NULL(strstr(cu_err_last()->msg, "module-path="));
    CU_ASSERT_PTR_NULL(strstr(cu_err_last()->msg, "s3cr3t-pin")); /* never the PIN */
    CU_ASSERT_EQUAL(cu_token_open("pkcs11:token=x?module-path=/nonexistent/module.so", NULL, &t), CU_E_MODULE);
}

static void test_malformed_uris(void)
{
    /* Each bad URI with what its message must say: where p11-kit only says
     * "unknown attribute or an invalid value", the layer names the attribute. */
    static const struct {
        const char *uri, *says;
    } bad[] = {
        {"", "is not a pkcs11: URI"},
        {"pkcs11", "is not a pkcs11: URI"},
        {"http://example.com", "is not a pkcs11: URI"},
        {"PKCS#11:token=x", "is not a pkcs11: URI"},
        {"pkcs11:token=%zz", "encoding invalid or corrupted at 'token=%zz'"},
        {"pkcs11:foo=bar", "unknown attribute 'foo'"},
        {"pkcs11:token=a;colour=blue;object=b", "unknown attribute 'colour'"},
        {"pkcs11:type=bogus", "invalid value 'bogus' for 'type'"},
        {"pkcs11:token=a?module-path", "syntax is invalid at 'module-path'"},
        {"pkcs11:id=%1", "encoding invalid or corrupted at 'id=%1'"},
        {"pkcs11:slot-id=abc", "syntax is invalid at 'slot-id=abc'"},
        {"pkcs11:token=a?pin-value=%zzs3cr3t", "at 'pin-value='"},
        {"pkcs11:token=x", "names no module: add ?module-path="},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cu_token *t = NULL;
        cu_rc rc = cu_token_open(bad[i].uri, NULL, &t);
        CU_ASSERT_EQUAL(rc, CU_E_URI);
        CU_ASSERT_PTR_NULL(t);
        if (rc != CU_E_URI || strstr(cu_err_last()->msg, bad[i].says) == NULL)
            fprintf(stderr, "URI '%s' gave %s: %s\n", bad[i].uri, cu_rc_str(rc), cu_err_last()->msg);
        CU_ASSERT_PTR_NOT_NULL(strstr(cu_err_last()->msg, bad[i].says));
        CU_ASSERT_PTR_NULL(strstr(cu_err_last()->msg, "s3cr3t")); /* never the PIN */
    }
    cu_object *o = NULL;
    CU_ASSERT_EQUAL(cu_token_find(tok, "pkcs11:object=ec256;bogus=1", CU_CLASS_ANY, &o), CU_E_URI);
    CU_ASSERT_PTR_NOT_NULL(strstr(cu_err_last()->msg, "unknown attribute 'bogus'"));
}

/* be.uri with path attributes added and a query tail (both may be ""). */
static void uri_with(char *out, size_t len, const char *attrs, const char *query)
{
    const char *q = strchr(be.uri, '?');
    snprintf(out, len, "%.*s%s%s%s", (int)(q - be.uri), be.uri, attrs, q, query);
}

static void test_uri_slot_and_pin(void)
{
    char uri[2048], attrs[64], query[256];
    cu_token *t = NULL;
    unsigned long slot = cu_token_get0_desc(tok)->slot_id;

    /* slot-id: the token's own slot opens it, another finds nothing. */
    snprintf(attrs, sizeof attrs, ";slot-id=%lu", slot);
    uri_with(uri, sizeof uri, attrs, "");
    cu_token_opts o = {.pin = be.pin, .quirks = be.quirks};
    CU_ASSERT_EQUAL(cu_token_open(uri, &o, &t), CU_OK);
    CU_ASSERT_EQUAL(t ? cu_token_get0_desc(t)->slot_id : 0, slot);
    cu_token_unref(t);
    t = NULL;
    snprintf(attrs, sizeof attrs, ";slot-id=%lu", slot + 1000);
    uri_with(uri, sizeof uri, attrs, "");
    CU_ASSERT_EQUAL(cu_token_open(uri, &o, &t), CU_E_TOKEN_NOT_FOUND);
    CU_ASSERT_PTR_NOT_NULL(strstr(cu_err_last()->msg, attrs + 1));

    /* pin-value logs in. */
    snprintf(query, sizeof query, "&pin-value=%s", be.pin);
    uri_with(uri, sizeof uri, "", query);
    CU_ASSERT_EQUAL(cu_token_open(uri, NULL, &t), CU_OK);
    CU_ASSERT_TRUE(cu_token_logged_in(t));
    cu_token_unref(t);
    t = NULL;

    /* The documented order: opts.pin, pin-value, pin-source, CUSTOS_PIN. */
    cu_token_opts wrong = {.pin = "99999999"};
    CU_ASSERT_EQUAL(cu_token_open(uri, &wrong, &t), CU_E_PIN_INCORRECT); /* opts.pin over pin-value */
    CU_ASSERT_PTR_NULL(t);
    uri_with(uri, sizeof uri, "", "&pin-value=99999999");
    cu_token_opts right = {.pin = be.pin};
    CU_ASSERT_EQUAL(cu_token_open(uri, &right, &t), CU_OK);
    cu_token_unref(t);
    t = NULL;
    setenv("CUSTOS_PIN", be.pin, 1); /* pin-value over CUSTOS_PIN */
    CU_ASSERT_EQUAL(cu_token_open(uri, NULL, &t), CU_E_PIN_INCORRECT);
    unsetenv("CUSTOS_PIN");
    CU_ASSERT_PTR_NULL(t);
    snprintf(query, sizeof query, "&pin-value=%s&pin-source=%s/missing", be.pin, be.dir);
    uri_with(uri, sizeof uri, "", query); /* pin-value over pin-source: the file is never read */
    CU_ASSERT_EQUAL(cu_token_open(uri, NULL, &t), CU_OK);
    cu_token_unref(t);
}

/* Runs last: it adds a second token to the module. */
static void test_ambiguous_token(void)
{
    cu_module *m = cu_token_get0_module(tok);
    cu_token_desc *slots = NULL;
    size_t n = 0, i;
    CU_ASSERT_EQUAL_FATAL(cu_module_slots(m, &slots, &n), CU_OK);
    for (i = 0; i < n && (!slots[i].present || slots[i].initialized); i++)
        ;
    CU_ASSERT_TRUE_FATAL(i < n); /* every kind offers a free slot */
    unsigned long free_slot = slots[i].slot_id;
    free(slots);
    cu_rc rc = cu_module_init_token(m, free_slot, "second", "second-so", "second-user");
    if (rc != CU_OK)
        fprintf(stderr, "init a second token: %s\n", cu_err_last()->msg);
    CU_ASSERT_EQUAL_FATAL(rc, CU_OK);

    char uri[1024];
    cu_token *t = NULL;
    cu_token_opts o = {.no_login = true, .quirks = be.quirks};
    snprintf(uri, sizeof uri, "pkcs11:?module-path=%s", be.module);
    CU_ASSERT_EQUAL(cu_token_open(uri, &o, &t), CU_E_AMBIGUOUS);
    CU_ASSERT_PTR_NULL(t);
    CU_ASSERT_PTR_NOT_NULL(strstr(cu_err_last()->msg, "2 tokens"));
    CU_ASSERT_PTR_NOT_NULL(strstr(cu_err_last()->msg, "token= or serial="));
    /* Named, each opens. */
    CU_ASSERT_EQUAL(cu_token_open(be.uri, &o, &t), CU_OK);
    cu_token_unref(t);
    t = NULL;
    snprintf(uri, sizeof uri, "pkcs11:token=second?module-path=%s", be.module);
    CU_ASSERT_EQUAL(cu_token_open(uri, &o, &t), CU_OK);
    cu_token_unref(t);
}

static void test_find(void)
{
    cu_object *o = NULL;
    if (cu_token_find(tok, "pkcs11:object=ec256;type=private", CU_CLASS_ANY, &o) != CU_OK)
        fprintf(stderr, "find: %s\n", cu_err_last()->msg);
    CU_ASSERT_PTR_NOT_NULL_FATAL(o);
    CU_ASSERT_EQUAL(cu_object_key_type(o), CU_KEY_EC);
    cu_object_free(o);
    o = NULL;
    CU_ASSERT_EQUAL(cu_token_find(tok, "pkcs11:object=no-such-key?pin-value=s3cr3t-pin", CU_CLASS_PRIVATE_KEY, &o),
                    CU_E_OBJECT_NOT_FOUND);
    CU_ASSERT_PTR_NOT_NULL(strstr(cu_err_last()->msg, "no-such-key"));
    CU_ASSERT_PTR_NULL(strstr(cu_err_last()->msg, "s3cr3t-pin"));
    /* Private and public halves share the label: ambiguous without a type. */
    CU_ASSERT_EQUAL(cu_token_find(tok, "pkcs11:object=ec256", CU_CLASS_ANY, &o), CU_E_AMBIGUOUS);
    CU_ASSERT_EQUAL(cu_token_find(tok, "pkcs11:object=ec256", CU_CLASS_PUBLIC_KEY, &o), CU_OK);
    cu_object_free(o);
    o = NULL;
    CU_ASSERT_EQUAL(cu_token_find(tok, "pkcs11:object=ec256;type=cert", CU_CLASS_PRIVATE_KEY, &o),
                    CU_E_OBJECT_NOT_FOUND);
    /* A URI for another token does not match this one. */
    CU_ASSERT_EQUAL(cu_token_find(tok, "pkcs11:token=other;object=ec256", CU_CLASS_ANY, &o), CU_E_TOKEN_NOT_FOUND);
}

static void test_object_uri_roundtrip(void)
{
    char *uri = cu_object_uri(rsa2048);
    CU_ASSERT_PTR_NOT_NULL_FATAL(uri);
    CU_ASSERT_PTR_NULL(strstr(uri, "pin-value"));
    cu_object *o = NULL;
    cu_token_opts opts = {.pin = be.pin};
    if (cu_object_open(uri, &opts, CU_CLASS_ANY, &o) != CU_OK)
        fprintf(stderr, "open %s: %s\n", uri, cu_err_last()->msg);
    CU_ASSERT_PTR_NOT_NULL_FATAL(o);
    CU_ASSERT_EQUAL(cu_object_key_type(o), CU_KEY_RSA);
    CU_ASSERT_STRING_EQUAL(cu_object_label(o), "rsa2048");
    cu_object_free(o);
    free(uri);
}

static void test_cert_import(void)
{
    EVP_PKEY *pk = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 7);
    X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC, (const unsigned char *)"dev", -1, -1, 0);
    X509_set_issuer_name(x, X509_get_subject_name(x));
    X509_gmtime_adj(X509_getm_notBefore(x), 0);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600);
    X509_set_pubkey(x, pk);
    X509_sign(x, pk, EVP_sha256());
    unsigned char *der = NULL;
    int len = i2d_X509(x, &der);
    cu_object *c = NULL;
    CU_ASSERT_EQUAL_FATAL(cu_token_import_cert(tok, der, (size_t)len, "devcert", NULL, 0, &c), CU_OK);
    uint8_t *val = NULL;
    size_t vlen = 0;
    CU_ASSERT_EQUAL(cu_object_value(c, &val, &vlen), CU_OK);
    CU_ASSERT_EQUAL(vlen, (size_t)len);
    CU_ASSERT_TRUE(val && memcmp(val, der, vlen) == 0);
    cu_object *found = NULL;
    CU_ASSERT_EQUAL(cu_token_find(tok, "pkcs11:object=devcert", CU_CLASS_CERTIFICATE, &found), CU_OK);
    cu_object_free(found);
    found = NULL;
    CU_ASSERT_EQUAL(cu_object_destroy(c), CU_OK);
    CU_ASSERT_EQUAL(cu_token_find(tok, "pkcs11:object=devcert", CU_CLASS_CERTIFICATE, &found), CU_E_OBJECT_NOT_FOUND);
    /* Garbage is not stored. */
    cu_object *bad = NULL;
    CU_ASSERT_EQUAL(cu_token_import_cert(tok, (const uint8_t *)"junk", 4, "junk", NULL, 0, &bad), CU_E_INVALID_ARG);
    cu_object_free(found);
    cu_object_free(c);
    free(val);
    OPENSSL_free(der);
    X509_free(x);
    EVP_PKEY_free(pk);
}

enum { THREADS = 8, PER_THREAD = 50 };

static void *signer(void *arg)
{
    cu_object *k = arg;
    cu_sig s = {cu_object_key_type(k) == CU_KEY_EC ? CU_SIG_ECDSA : CU_SIG_RSA_PSS, CU_HASH_SHA256, CU_HASH_SHA256, -1};
    intptr_t good = 0;
    for (int i = 0; i < PER_THREAD; i++) {
        uint8_t m[16], sig[512];
        size_t len = sizeof sig;
        memcpy(m, &i, sizeof i);
        memcpy(m + 4, &arg, sizeof arg);
        if (cu_sign(k, &s, m, sizeof m, sig, &len) != CU_OK)
            fprintf(stderr, "signer %d: %s\n", i, cu_err_last()->msg);
        else if (!soft_verify(k, &s, m, sizeof m, sig, len))
            fprintf(stderr, "signer %d: the signature does not verify\n", i);
        else
            good++;
    }
    return (void *)good;
}

static void test_threads(void)
{
    pthread_t th[THREADS];
    for (int i = 0; i < THREADS; i++)
        pthread_create(&th[i], NULL, signer, i % 2 ? rsa2048 : ec256);
    intptr_t total = 0;
    for (int i = 0; i < THREADS; i++) {
        void *r;
        pthread_join(th[i], &r);
        total += (intptr_t)r;
    }
    CU_ASSERT_EQUAL(total, THREADS * PER_THREAD);
}

/* ---- sessions kept per thread ---- */

/* The module's own count of open sessions on the token, or -1 if it does not
 * say (SoftHSM2 does not). */
static long module_sessions(cu_token *t)
{
    CK_FUNCTION_LIST *f = cu_module_get0_functions(cu_token_get0_module(t));
    CK_TOKEN_INFO ti;
    if (f->C_GetTokenInfo(cu_token_get0_desc(t)->slot_id, &ti) != CKR_OK ||
        ti.ulSessionCount == CK_UNAVAILABLE_INFORMATION || ti.ulSessionCount == CK_EFFECTIVELY_INFINITE)
        return -1;
    return (long)ti.ulSessionCount;
}

typedef struct wave_arg {
    cu_object *key;
    int rounds;
    pthread_barrier_t *hold; /* if set: wait here after signing, twice */
    cu_object *after;        /* then sign with this key too */
    intptr_t good;
} wave_arg;

static intptr_t sign_rounds(cu_object *k, int rounds, const void *tag)
{
    cu_sig s = {CU_SIG_ECDSA, CU_HASH_SHA256, 0, -1};
    intptr_t good = 0;
    for (int i = 0; i < rounds; i++) {
        uint8_t m[8], sig[132];
        size_t len = sizeof sig;
        memcpy(m, &i, sizeof i);
        memcpy(m + 4, &tag, 4);
        if (cu_sign(k, &s, m, sizeof m, sig, &len) == CU_OK && soft_verify(k, &s, m, sizeof m, sig, len))
            good++;
    }
    return good;
}

static void *wave_signer(void *p)
{
    wave_arg *a = p;
    a->good = sign_rounds(a->key, a->rounds, a);
    if (a->hold != NULL) {
        pthread_barrier_wait(a->hold); /* signed: the main thread looks */
        pthread_barrier_wait(a->hold); /* and lets us go */
    }
    if (a->after != NULL)
        a->good += sign_rounds(a->after, a->rounds, a);
    return NULL;
}

/* A second handle on the test token with a small pool, and its P-256 key. */
static int small_pool(unsigned max_sessions, cu_token **_t, cu_object **_k)
{
    cu_token_opts o = {.pin = be.pin, .quirks = be.quirks, .max_sessions = max_sessions};
    if (cu_token_open(be.uri, &o, _t) != CU_OK)
        return 0;
    return cu_token_find(*_t, "pkcs11:object=ec256;type=private", CU_CLASS_ANY, _k) == CU_OK;
}

static void test_kept_sessions_threads(void)
{
    enum { WAVES = 3, PER_WAVE = 6, ROUNDS = 4 };
    cu_token *t = NULL;
    cu_object *k = NULL;
    cu_session_counts c;
    CU_ASSERT_FATAL(small_pool(4, &t, &k));
    /* The main thread keeps the session it found the key with. */
    cu_token_session_counts(t, &c);
    CU_ASSERT_EQUAL_FATAL(c.kept, 1);
    CU_ASSERT_EQUAL(c.open, 1);
    /* Threads come and go, more of them than the pool has sessions: each
     * thread that kept a session gives it back when it exits. */
    for (int w = 0; w < WAVES; w++) {
        pthread_t th[PER_WAVE];
        wave_arg a[PER_WAVE];
        for (int i = 0; i < PER_WAVE; i++) {
            a[i] = (wave_arg){k, ROUNDS, NULL, NULL, 0};
            pthread_create(&th[i], NULL, wave_signer, &a[i]);
        }
        for (int i = 0; i < PER_WAVE; i++) {
            pthread_join(th[i], NULL);
            CU_ASSERT_EQUAL(a[i].good, ROUNDS);
        }
        cu_token_session_counts(t, &c);
        CU_ASSERT_EQUAL(c.kept, 1);
        CU_ASSERT_TRUE(c.open >= 2 && c.open <= 4);
        /* A lost session would starve the next wave: fail, do not hang. */
        CU_ASSERT_EQUAL_FATAL(c.idle, c.open - 1);
    }
    /* Live threads keep sessions (at most 4 / 2, the main thread's counted),
     * and give them back when they end. */
    pthread_barrier_t hold;
    pthread_barrier_init(&hold, NULL, 4);
    pthread_t th[3];
    wave_arg a[3];
    for (int i = 0; i < 3; i++) {
        a[i] = (wave_arg){k, ROUNDS, &hold, NULL, 0};
        pthread_create(&th[i], NULL, wave_signer, &a[i]);
    }
    pthread_barrier_wait(&hold);
    cu_token_session_counts(t, &c);
    CU_ASSERT_EQUAL(c.kept, 2);
    CU_ASSERT_TRUE(c.open <= 4);
    /* The main thread signs too, with the session it keeps. */
    cu_sig s = {CU_SIG_ECDSA, CU_HASH_SHA256, 0, -1};
    uint8_t sig[132];
    size_t len = sizeof sig;
    CU_ASSERT_EQUAL(cu_sign(k, &s, msg, sizeof msg, sig, &len), CU_OK);
    CU_ASSERT_TRUE(soft_verify(k, &s, msg, sizeof msg, sig, len));
    pthread_barrier_wait(&hold);
    for (int i = 0; i < 3; i++) {
        pthread_join(th[i], NULL);
        CU_ASSERT_EQUAL(a[i].good, ROUNDS);
    }
    pthread_barrier_destroy(&hold);
    cu_token_session_counts(t, &c);
    CU_ASSERT_EQUAL(c.kept, 1);
    CU_ASSERT_EQUAL(c.idle, c.open - 1);
    cu_object_free(k);
    cu_token_unref(t);
}

static void test_kept_sessions_pool_of_two(void)
{
    /* max_sessions 2: one may be kept, the other serves everyone else;
     * eight threads at once must all finish. */
    enum { N = 8, ROUNDS = 5 };
    cu_token *t = NULL;
    cu_object *k = NULL;
    CU_ASSERT_FATAL(small_pool(2, &t, &k));
    pthread_t th[N];
    wave_arg a[N];
    for (int i = 0; i < N; i++) {
        a[i] = (wave_arg){k, ROUNDS, NULL, NULL, 0};
        pthread_create(&th[i], NULL, wave_signer, &a[i]);
    }
    for (int i = 0; i < N; i++) {
        pthread_join(th[i], NULL);
        CU_ASSERT_EQUAL(a[i].good, ROUNDS);
    }
    cu_session_counts c;
    cu_token_session_counts(t, &c);
    CU_ASSERT_TRUE(c.open <= 2);
    cu_object_free(k);
    cu_token_unref(t);
}

static void test_kept_session_token_freed(void)
{
    /* A thread keeps a session of a token that is then freed: the session is
     * closed (the module's count says so, where it keeps one), and the
     * thread goes on with another token and exits cleanly. */
    cu_token *t = NULL;
    cu_object *k = NULL;
    long before = module_sessions(tok);
    CU_ASSERT_FATAL(small_pool(8, &t, &k));
    pthread_barrier_t hold;
    pthread_barrier_init(&hold, NULL, 2);
    wave_arg a = {k, 3, &hold, NULL, 0};
    pthread_t th;
    pthread_create(&th, NULL, wave_signer, &a);
    pthread_barrier_wait(&hold);
    cu_session_counts c;
    cu_token_session_counts(t, &c);
    CU_ASSERT_EQUAL(c.kept, 2); /* the thread's and the main thread's */
    CU_ASSERT_EQUAL(a.good, 3);
    cu_object_free(k);
    cu_token_unref(t); /* closes the session the thread keeps */
    if (before >= 0)
        CU_ASSERT_EQUAL(module_sessions(tok), before);
    a.after = ec256; /* released, the thread signs with the suite's token */
    pthread_barrier_wait(&hold);
    pthread_join(th, NULL);
    pthread_barrier_destroy(&hold);
    CU_ASSERT_EQUAL(a.good, 6);
    /* The thread's slot for the freed token is empty; the suite's token is
     * whole: the main thread signs. */
    cu_sig s = {CU_SIG_ECDSA, CU_HASH_SHA256, 0, -1};
    uint8_t sig[132];
    size_t len = sizeof sig;
    CU_ASSERT_EQUAL(cu_sign(ec256, &s, msg, sizeof msg, sig, &len), CU_OK);
    CU_ASSERT_TRUE(soft_verify(ec256, &s, msg, sizeof msg, sig, len));
}

static void test_busy_sessions(void)
{
    /* Every session of the module is left inside a signing operation that
     * nobody finishes (a module that did not end one, or another user of the
     * handle): the layer closes such sessions and signs on fresh ones, on
     * this thread (whose kept session is one of them) and on a new one. */
    if (strcmp(be.kind, "tpm2") == 0) {
        /* tpm2-pkcs11 1.9 aborts when its sessions are driven this way
         * from outside; the recovery path is the same code. */
        fprintf(stderr, "skipped on tpm2 ... ");
        return;
    }
    CK_FUNCTION_LIST *f = cu_module_get0_functions(cu_token_get0_module(tok));
    CK_SESSION_HANDLE raw;
    CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
    CK_ATTRIBUTE q[] = {{CKA_CLASS, &cls, sizeof cls}, {CKA_LABEL, "ec256", 5}};
    CK_OBJECT_HANDLE kh = CK_INVALID_HANDLE;
    CK_ULONG nfound = 0;
    CK_MECHANISM ecdsa = {CKM_ECDSA, NULL, 0};
    cu_sig s = {CU_SIG_ECDSA, CU_HASH_SHA256, 0, -1};
    uint8_t sig[132];
    size_t len = sizeof sig;
    CU_ASSERT_EQUAL_FATAL(cu_sign(ec256, &s, msg, sizeof msg, sig, &len), CU_OK); /* a kept session */
    CU_ASSERT_EQUAL_FATAL(f->C_OpenSession(cu_token_get0_desc(tok)->slot_id, CKF_SERIAL_SESSION, NULL, NULL, &raw),
                          CKR_OK);
    CU_ASSERT_EQUAL(f->C_FindObjectsInit(raw, q, 2), CKR_OK);
    CU_ASSERT_EQUAL(f->C_FindObjects(raw, &kh, 1, &nfound), CKR_OK);
    f->C_FindObjectsFinal(raw);
    CU_ASSERT_EQUAL_FATAL(nfound, 1);
    /* Handles are small numbers, above a per-token base in tpm2-pkcs11
     * (the token's id in the high byte). */
    CK_SESSION_HANDLE base = raw & ~(CK_SESSION_HANDLE)0xfffff;
    int busy = 0;
    for (CK_SESSION_HANDLE h = base + 1; h <= base + 4096; h++)
        if (h != raw && f->C_SignInit(h, &ecdsa, kh) == CKR_OK)
            busy++;
    f->C_CloseSession(raw);
    CU_ASSERT_TRUE(busy >= 1); /* at least the kept one */
    len = sizeof sig;
    CU_ASSERT_EQUAL(cu_sign(ec256, &s, msg, sizeof msg, sig, &len), CU_OK);
    CU_ASSERT_TRUE(soft_verify(ec256, &s, msg, sizeof msg, sig, len));
    wave_arg a = {ec256, 3, NULL, NULL, 0};
    pthread_t th;
    pthread_create(&th, NULL, wave_signer, &a);
    pthread_join(th, NULL);
    CU_ASSERT_EQUAL(a.good, 3);
}

static void test_err_wrap(void)
{
    /* The cause stays in the message, after what the caller was doing, even
     * when it fills the buffer. */
    char long_cause[400];
    memset(long_cause, 'x', sizeof long_cause - 1);
    long_cause[sizeof long_cause - 1] = 0;
    cu_err_set(CU_E_TOKEN_NOT_FOUND, "no token 'a'");
    CU_ASSERT_EQUAL(cu_err_wrap(CU_E_STATE, "opening %s", "the EK"), CU_E_STATE);
    CU_ASSERT_EQUAL(cu_err_last()->rc, CU_E_STATE);
    CU_ASSERT_STRING_EQUAL(cu_err_last()->msg, "opening the EK: no token 'a'");
    cu_err_set(CU_E_IO, "%s", long_cause);
    cu_err_wrap(CU_E_IO, "outer");
    CU_ASSERT_EQUAL(strncmp(cu_err_last()->msg, "outer: xxx", 10), 0);
    cu_err_clear();
}

static void test_fork(void)
{
    cu_sig s = {CU_SIG_ECDSA, CU_HASH_SHA256, 0, -1};
    uint8_t sig[132];
    size_t len = sizeof sig;
    CU_ASSERT_EQUAL_FATAL(cu_sign(ec256, &s, msg, sizeof msg, sig, &len), CU_OK);
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0 && !be.fork_ok) {
        /* The module cannot start afresh here: refused, not shared. */
        len = sizeof sig;
        cu_rc rc = cu_sign(ec256, &s, msg, sizeof msg, sig, &len);
        _exit(rc == CU_E_STATE && strstr(cu_err_last()->msg, "fork-unsafe") ? 0 : 4);
    }
    if (pid == 0) {
        int ok = 1;
        for (int i = 0; i < 5; i++) {
            len = sizeof sig;
            ok &= cu_sign(ec256, &s, msg, sizeof msg, sig, &len) == CU_OK && soft_verify(ec256, &s, msg, sizeof msg, sig, len);
        }
        /* The session the parent's thread kept is not the child's: the
         * child keeps one of its own, and only that one. */
        cu_session_counts c;
        cu_token_session_counts(tok, &c);
        _exit(ok ? (c.kept == 1 && c.open >= 1 ? 0 : 5) : 3);
    }
    int st = 0;
    CU_ASSERT_EQUAL_FATAL(waitpid(pid, &st, 0), pid);
    CU_ASSERT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    /* The parent is undisturbed. */
    len = sizeof sig;
    CU_ASSERT_EQUAL(cu_sign(ec256, &s, msg, sizeof msg, sig, &len), CU_OK);
    CU_ASSERT_TRUE(soft_verify(ec256, &s, msg, sizeof msg, sig, len));
}

/* fork() while another thread holds one of the layer's locks (the module's:
 * noting a login, restarting the module; the token's pool lock: taking a
 * session; a key's: refreshing its handle): the child must still start afresh, not wait forever on the
 * lock's copy (alarm: a stuck child dies of it). */
/* In a fork()ed child: signs with ec256 and exits 0 if that verifies; a
 * child stuck on a lock dies of its alarm. */
static _Noreturn void child_signs(void)
{
    cu_sig s = {CU_SIG_ECDSA, CU_HASH_SHA256, 0, -1};
    uint8_t sig[132];
    size_t len = sizeof sig;
    alarm(10);
    bool ok = cu_sign(ec256, &s, msg, sizeof msg, sig, &len) == CU_OK && soft_verify(ec256, &s, msg, sizeof msg, sig, len);
    _exit(ok ? 0 : 3);
}

/* A thread that holds a lock of the layer, or stays inside a module (the
 * module gate: lock NULL), for hold_ms once started; it ends only when told
 * (holder_end). */
typedef struct {
    pthread_mutex_t *lock;
    unsigned hold_ms;
    int ready[2], done[2]; /* pipes: it holds; the fork is over */
    pthread_t th;
} holder;

static void *holder_run(void *p)
{
    holder *h = p;
    char c;
    cu__gate *g = NULL;
    if (h->lock != NULL)
        pthread_mutex_lock(h->lock);
    else
        g = cu__gate_enter();
    if (write(h->ready[1], "x", 1) != 1)
        abort();
    usleep(h->hold_ms * 1000);
    if (h->lock != NULL)
        pthread_mutex_unlock(h->lock);
    else
        cu__gate_leave(g);
    /* Not ending while the fork is under way: a thread's exit holds the
     * sanitizer runtime's own locks, which the child would inherit. */
    if (read(h->done[0], &c, 1) != 1)
        abort();
    return NULL;
}

/* Returns once the thread holds. */
static void holder_start(holder *h)
{
    char c;
    CU_ASSERT_FATAL(pipe(h->ready) == 0 && pipe(h->done) == 0);
    CU_ASSERT_FATAL(pthread_create(&h->th, NULL, holder_run, h) == 0);
    CU_ASSERT_EQUAL_FATAL(read(h->ready[0], &c, 1), 1);
}

static void holder_end(holder *h)
{
    CU_ASSERT_EQUAL(write(h->done[1], "x", 1), 1);
    pthread_join(h->th, NULL);
    for (int i = 0; i < 2; i++) {
        close(h->ready[i]);
        close(h->done[i]);
    }
}

static void fork_while_locked(pthread_mutex_t *lock)
{
    if (!be.fork_ok)
        return; /* refused in a child anyway (test_fork) */
    holder h = {.lock = lock, .hold_ms = 300};
    holder_start(&h);
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0)
        child_signs();
    holder_end(&h);
    int st = 0;
    CU_ASSERT_EQUAL_FATAL(waitpid(pid, &st, 0), pid);
    CU_ASSERT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    if (WIFSIGNALED(st))
        fprintf(stderr, "the child died of signal %d (SIGALRM: stuck on a lock)\n", WTERMSIG(st));
}

static void test_fork_while_locked(void)
{
    fork_while_locked(&cu_token_get0_module(tok)->lock);
    fork_while_locked(&tok->lock);
    fork_while_locked(&ec256->lock);
}

/* A fork from inside the layer's lock, as from a module's C_Initialize that
 * spawns a helper while the layer loads it: neither side may hang (alarm). */
static void test_fork_inside_lock(void)
{
    cu_sig s = {CU_SIG_ECDSA, CU_HASH_SHA256, 0, -1};
    uint8_t sig[132];
    size_t len;
    cu_module *m = cu_token_get0_module(tok);
    if (!be.fork_ok)
        return;
    fflush(NULL);
    alarm(20);
    pthread_mutex_lock(&m->lock);
    pid_t pid = fork();
    if (pid == 0)
        child_signs();
    pthread_mutex_unlock(&m->lock);
    alarm(0);
    int st = 0;
    CU_ASSERT_EQUAL_FATAL(waitpid(pid, &st, 0), pid);
    CU_ASSERT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    len = sizeof sig;
    CU_ASSERT_EQUAL(cu_sign(ec256, &s, msg, sizeof msg, sig, &len), CU_OK);
}

/* fork() while other threads sign, each on its kept session, without any of
 * the layer's locks: the fork must wait until none is inside the module
 * (SoftHSM2 holds its own mutexes during a call: a child forked then hangs
 * at its first call; alarm: it dies of that). */
static atomic_bool signers_stop;

static void *busy_signer(void *p)
{
    cu_sig s = {CU_SIG_ECDSA, CU_HASH_SHA256, 0, -1};
    uint8_t digest[32] = {1}, sig[132];
    (void)p;
    while (!atomic_load(&signers_stop)) {
        size_t len = sizeof sig;
        if (cu_sign_digest(ec256, &s, digest, sizeof digest, sig, &len) != CU_OK)
            return (void *)1;
    }
    return NULL;
}

static void test_fork_while_signing(void)
{
    enum { THREADS = 2, FORKS = 40 };
    pthread_t th[THREADS];
    int good = 0;
    if (!be.fork_ok)
        return;
#ifdef __SANITIZE_ADDRESS__
    /* GCC 12's AddressSanitizer takes no lock of its allocator around fork:
     * a child forked while another thread allocates hangs inside it. */
    return;
#endif
    atomic_store(&signers_stop, false);
    for (int i = 0; i < THREADS; i++)
        CU_ASSERT_FATAL(pthread_create(&th[i], NULL, busy_signer, NULL) == 0);
    for (int i = 0; i < FORKS; i++) {
        fflush(NULL);
        pid_t pid = fork();
        if (pid == 0)
            child_signs();
        int st = -1;
        if (pid > 0 && waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0)
            good++;
        else if (WIFSIGNALED(st))
            fprintf(stderr, "fork %d: the child died of signal %d (SIGALRM: stuck)\n", i, WTERMSIG(st));
    }
    atomic_store(&signers_stop, true);
    for (int i = 0; i < THREADS; i++) {
        void *ret;
        pthread_join(th[i], &ret);
        CU_ASSERT_PTR_NULL(ret);
    }
    CU_ASSERT_EQUAL(good, FORKS);
}

/* The gate itself: a fork waits for a thread inside a module to come out,
 * and does not wait when the forking thread is inside one itself (a module
 * forking a helper), whatever the others do. */
static double fork_seconds(bool forker_inside, unsigned inside_ms)
{
    struct timespec t0, t1;
    holder h = {.lock = NULL, .hold_ms = inside_ms};
    holder_start(&h);
    cu__gate *g = forker_inside ? cu__gate_enter() : NULL;
    fflush(NULL);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    pid_t pid = fork();
    if (pid == 0)
        _exit(0);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    cu__gate_leave(g);
    holder_end(&h);
    int st = 0;
    CU_ASSERT_EQUAL(waitpid(pid, &st, 0), pid);
    CU_ASSERT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    return (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
}

static void test_fork_gate(void)
{
    /* The other thread stays inside 400 ms after it said so. */
    double waited = fork_seconds(false, 400);
    CU_ASSERT(waited >= 0.3 && waited < 5);
    /* Inside itself, the forking thread goes ahead at once though the other
     * thread stays inside for 3 s. */
    double went = fork_seconds(true, 3000);
    CU_ASSERT(went < 1.5);
}

/* cu_p11_atfork: a user's handlers run around the layer's, parent and
 * child after the fork; a ninth set is refused. */
static int atfork_prepared, atfork_parented, atfork_childed;

static void user_prepare(void) { atfork_prepared++; }
static void user_parent(void) { atfork_parented++; }
static void user_child(void) { atfork_childed++; }
static void noop(void) {}

static void test_atfork_users(void)
{
    CU_ASSERT_EQUAL_FATAL(cu_p11_atfork(user_prepare, user_parent, user_child), CU_OK);
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0)
        _exit(atfork_prepared == 1 && atfork_childed == 1 && atfork_parented == 0 ? 0 : 4);
    int st = 0;
    CU_ASSERT_EQUAL_FATAL(waitpid(pid, &st, 0), pid);
    CU_ASSERT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    CU_ASSERT_EQUAL(atfork_prepared, 1);
    CU_ASSERT_EQUAL(atfork_parented, 1);
    cu_rc rc = CU_OK;
    int added = 1;
    while (added < 9 && (rc = cu_p11_atfork(noop, NULL, NULL)) == CU_OK)
        added++;
    CU_ASSERT_EQUAL(added, 8);
    CU_ASSERT_EQUAL(rc, CU_E_STATE);
    CU_ASSERT_PTR_NOT_NULL(strstr(cu_err_last()->msg, "at most 8"));
}

static void test_module_by_name(void)
{
    char uri[1024];
    cu_token *t = NULL;
    cu_object *o = NULL;
    if (be.p11kit_name == NULL)
        return; /* not registered with p11-kit */
    snprintf(uri, sizeof uri, "pkcs11:token=%s?module-name=%s", be.label, be.p11kit_name);
    cu_token_opts opts = {.pin = be.pin, .quirks = be.quirks};
    CU_ASSERT_EQUAL_FATAL(cu_token_open(uri, &opts, &t), CU_OK);
    /* The same module instance as the one loaded by path. */
    CU_ASSERT_PTR_EQUAL(cu_token_get0_module(t), cu_token_get0_module(tok));
    CU_ASSERT_EQUAL(cu_token_find(t, "pkcs11:object=ec256;type=private", CU_CLASS_ANY, &o), CU_OK);
    cu_object_free(o);
    cu_token_unref(t);
    CU_ASSERT_EQUAL(cu_token_open("pkcs11:token=x?module-name=no-such-module", NULL, &t), CU_E_MODULE);
    CU_ASSERT_PTR_NOT_NULL(strstr(cu_err_last()->msg, "no-such-module"));
}

static void test_quirks(void)
{
    unsigned q = 0;
    CU_ASSERT_EQUAL(cu_quirks_parse("no-finalize,init-retry,fork-unsafe", &q), CU_OK);
    CU_ASSERT_EQUAL(q, CU_QUIRK_NO_FINALIZE | CU_QUIRK_INIT_RETRY | CU_QUIRK_FORK_UNSAFE);
    CU_ASSERT_EQUAL(cu_quirks_parse("no-such-quirk", &q), CU_E_INVALID_ARG);
    CU_ASSERT_PTR_NOT_NULL(strstr(cu_err_last()->msg, "no-such-quirk"));
}

static const cu_test_case cases[] = {
    {"keygen and custody attributes", test_keygen_custody},
    {"HMAC key generation support", test_hmac_keygen_support},
    {"imported key is flagged", test_import_flagged},
    {"ECDSA P-256/P-384 verified by OpenSSL", test_sign_ecdsa},
    {"RSA PKCS#1 and PSS verified by OpenSSL", test_sign_rsa},
    {"sign a digest", test_sign_digest},
    {"HMAC-SHA256 equals OpenSSL", test_hmac},
    {"streamed signatures", test_streamed_ecdsa},
    {"wrong key type for mechanism", test_wrong_key_type},
    {"too-small output buffer", test_buffer_too_small},
    {"wrong PIN", test_wrong_pin},
    {"PIN from pin-source and environment", test_pin_sources},
    {"token not found", test_token_not_found},
    {"malformed URIs", test_malformed_uris},
    {"find: not found, ambiguous, type", test_find},
    {"object URI round trip", test_object_uri_roundtrip},
    {"certificate import", test_cert_import},
    {"8 threads signing, all verified", test_threads},
    {"threads keep sessions and give them back", test_kept_sessions_threads},
    {"kept sessions with a pool of two", test_kept_sessions_pool_of_two},
    {"token freed while a thread keeps its session", test_kept_session_token_freed},
    {"sessions left busy are closed, not reused", test_busy_sessions},
    {"an error wrapped keeps its cause", test_err_wrap},
    {"forked child signs", test_fork},
    {"fork while another thread holds the module's, the token's or a key's lock", test_fork_while_locked},
    {"fork from inside the module lock", test_fork_inside_lock},
    {"fork while threads are inside the module", test_fork_while_signing},
    {"fork waits at the module gate, unless the forking thread is inside", test_fork_gate},
    {"fork handlers of the layer's users", test_atfork_users},
    {"module by p11-kit name", test_module_by_name},
    {"named quirks", test_quirks},
    {"URI slot-id, pin-value and the PIN order", test_uri_slot_and_pin},
    {"two matching tokens are ambiguous", test_ambiguous_token},
    {NULL, NULL},
};

int main(int argc, char **argv)
{
    if (argc < 2 || p11_backend_select(&be, argv[1]) != 0) {
        fprintf(stderr, "usage: %s softhsm2|tpm2|soft\n", argv[0]);
        return 2;
    }
    char name[64];
    snprintf(name, sizeof name, "token layer on %s", argv[1]);
    if (cu_test_add_suite(name, suite_init, suite_cleanup, cases) != 0)
        return 2;
    return cu_test_run();
}
