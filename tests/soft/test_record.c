/* custos-soft internals: the DER record codec, sealing, configuration. */
#include "cu_test.h"
#include "soft.h"

#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const unsigned char key[CS_KEY_LEN] = {1, 2, 3, 4, 5, 6, 7, 8, 9};

static void make_rec(cs_object_rec *r)
{
    memset(r, 0, sizeof *r);
    memcpy(r->serial, "0123456789abcdef", 16);
    memcpy(r->id, "00112233445566778899aabbccddeeff", 32);
    cs_attrs_set_ulong(&r->attrs, CKA_CLASS, CKO_PRIVATE_KEY);
    cs_attrs_set_ulong(&r->attrs, CKA_KEY_TYPE, CKK_EC);
    cs_attrs_set_bool(&r->attrs, CKA_SENSITIVE, CK_TRUE);
    cs_attrs_set_bool(&r->attrs, CKA_EXTRACTABLE, CK_FALSE);
    cs_attrs_set(&r->attrs, CKA_LABEL, "device-key", 10);
    cs_attrs_set(&r->attrs, CKA_ID, "", 0);
    cs_attrs_set_ulong(&r->attrs, CKA_KEY_GEN_MECHANISM, (CK_ULONG)-1); /* max ulong */
    r->secret.generation = 7;
}

static void encode(unsigned char **der, size_t *len)
{
    cs_object_rec r;
    make_rec(&r);
    static const unsigned char secret[] = "a private key in PKCS#8 form";
    CU_ASSERT_EQUAL_FATAL(cs_object_rec_encode(&r, key, secret, sizeof secret, der, len), CS_REC_OK);
    cs_object_rec_clear(&r);
}

static void test_object_roundtrip(void)
{
    unsigned char *der = NULL, *pt = NULL;
    size_t len = 0, ptl = 0;
    cs_object_rec r;
    encode(&der, &len);
    CU_ASSERT_EQUAL_FATAL(cs_object_rec_decode(der, len, &r), CS_REC_OK);
    CU_ASSERT_EQUAL(strcmp(r.serial, "0123456789abcdef"), 0);
    CU_ASSERT_EQUAL(strcmp(r.id, "00112233445566778899aabbccddeeff"), 0);
    CU_ASSERT_EQUAL(cs_attrs_ulong(&r.attrs, CKA_CLASS, 0), CKO_PRIVATE_KEY);
    CU_ASSERT_EQUAL(cs_attrs_ulong(&r.attrs, CKA_KEY_GEN_MECHANISM, 0), (CK_ULONG)-1);
    CU_ASSERT_EQUAL(cs_attrs_bool(&r.attrs, CKA_SENSITIVE, CK_FALSE), CK_TRUE);
    CU_ASSERT_EQUAL(cs_attrs_bool(&r.attrs, CKA_EXTRACTABLE, CK_TRUE), CK_FALSE);
    const cs_attr *l = cs_attrs_get(&r.attrs, CKA_LABEL);
    CU_ASSERT_FATAL(l != NULL);
    CU_ASSERT_EQUAL(l->len, 10);
    CU_ASSERT_PTR_NOT_NULL(cs_attrs_get(&r.attrs, CKA_ID));
    CU_ASSERT(r.has_secret);
    CU_ASSERT_EQUAL(r.secret.generation, 7);
    CU_ASSERT_EQUAL(cs_open(key, r.aad, r.aad_len, &r.secret, &pt, &ptl), CKR_OK);
    CU_ASSERT_EQUAL(ptl, sizeof "a private key in PKCS#8 form");
    CU_ASSERT_EQUAL(memcmp(pt, "a private key", 13), 0);
    OPENSSL_clear_free(pt, ptl);
    /* the wrong key does not open it */
    unsigned char other[CS_KEY_LEN] = {9};
    CU_ASSERT_EQUAL(cs_open(other, r.aad, r.aad_len, &r.secret, &pt, &ptl), CKR_ENCRYPTED_DATA_INVALID);
    /* a changed header (associated data) does not open it */
    r.aad[r.aad_len - 1] ^= 1;
    CU_ASSERT_EQUAL(cs_open(key, r.aad, r.aad_len, &r.secret, &pt, &ptl), CKR_ENCRYPTED_DATA_INVALID);
    cs_object_rec_clear(&r);
    /* deterministic: re-encoding without a key gives the same bytes */
    CU_ASSERT_EQUAL_FATAL(cs_object_rec_decode(der, len, &r), CS_REC_OK);
    unsigned char *der2 = NULL;
    size_t len2 = 0;
    CU_ASSERT_EQUAL(cs_object_rec_encode(&r, NULL, NULL, 0, &der2, &len2), CS_REC_OK);
    CU_ASSERT_EQUAL(len2, len);
    CU_ASSERT(der2 != NULL && memcmp(der, der2, len) == 0);
    OPENSSL_free(der2);
    cs_object_rec_clear(&r);
    OPENSSL_free(der);
}

/* Every single flipped bit and every truncation is rejected. */
static void test_object_every_flip_and_cut(void)
{
    unsigned char *der = NULL;
    size_t len = 0;
    cs_object_rec r;
    encode(&der, &len);
    unsigned bad = 0;
    for (size_t i = 0; i < len; i++) {
        for (int bit = 0; bit < 8; bit++) {
            der[i] ^= (unsigned char)(1u << bit);
            cs_rec_err e = cs_object_rec_decode(der, len, &r);
            if (e == CS_REC_OK) {
                bad++;
                cs_object_rec_clear(&r);
            }
            der[i] ^= (unsigned char)(1u << bit);
        }
    }
    CU_ASSERT_EQUAL(bad, 0);
    for (size_t cut = 0; cut < len; cut++) {
        cs_rec_err e = cs_object_rec_decode(der, cut, &r);
        CU_ASSERT_NOT_EQUAL(e, CS_REC_OK);
        if (e == CS_REC_OK)
            cs_object_rec_clear(&r);
    }
    /* trailing bytes */
    unsigned char *longer = malloc(len + 1);
    memcpy(longer, der, len);
    longer[len] = 0;
    CU_ASSERT_NOT_EQUAL(cs_object_rec_decode(longer, len + 1, &r), CS_REC_OK);
    free(longer);
    /* a flipped bit in the middle of the digest is called a digest mismatch */
    der[len - 5] ^= 1;
    CU_ASSERT_EQUAL(cs_object_rec_decode(der, len, &r), CS_REC_DIGEST);
    OPENSSL_free(der);
}

static void test_token_roundtrip_and_flips(void)
{
    cs_token_rec t, d;
    memset(&t, 0, sizeof t);
    memcpy(t.serial, "fedcba9876543210", 16);
    memset(t.label, ' ', 32);
    memcpy(t.label, "tok", 3);
    t.max_attempts = 5;
    t.generation = 3;
    t.so.present = true;
    t.so.iterations = 200000;
    t.so.failures = 2;
    t.so.nkeys = 1;
    unsigned char k[CS_KEY_LEN] = {4};
    CU_ASSERT_EQUAL_FATAL(cs_seal(key, 0, "x", 1, k, sizeof k, &t.so.keys[0]), CKR_OK);
    t.user = t.so;
    CU_ASSERT_EQUAL_FATAL(cs_sealed_copy(&t.user.keys[0], &t.so.keys[0]), CKR_OK);
    CU_ASSERT_EQUAL_FATAL(cs_sealed_copy(&t.user.keys[1], &t.so.keys[0]), CKR_OK);
    t.user.nkeys = 2;
    t.user.failures = 0;
    unsigned char *der = NULL;
    size_t len = 0;
    CU_ASSERT_EQUAL_FATAL(cs_token_rec_encode(&t, &der, &len), CS_REC_OK);
    CU_ASSERT_EQUAL_FATAL(cs_token_rec_decode(der, len, &d), CS_REC_OK);
    CU_ASSERT_EQUAL(strcmp(d.serial, t.serial), 0);
    CU_ASSERT_EQUAL(d.max_attempts, 5);
    CU_ASSERT_EQUAL(d.generation, 3);
    CU_ASSERT_EQUAL(d.so.iterations, 200000);
    CU_ASSERT_EQUAL(d.so.failures, 2);
    CU_ASSERT(d.user.present);
    CU_ASSERT_EQUAL(d.user.nkeys, 2);
    CU_ASSERT_EQUAL(memcmp(d.user.keys[1].tag, t.so.keys[0].tag, CS_TAG_LEN), 0);
    cs_token_rec_clear(&d);
    unsigned bad = 0;
    for (size_t i = 0; i < len; i++) {
        der[i] ^= 0x10;
        if (cs_token_rec_decode(der, len, &d) == CS_REC_OK) {
            bad++;
            cs_token_rec_clear(&d);
        }
        der[i] ^= 0x10;
    }
    CU_ASSERT_EQUAL(bad, 0);
    for (size_t cut = 0; cut < len; cut++)
        CU_ASSERT_NOT_EQUAL(cs_token_rec_decode(der, cut, &d), CS_REC_OK);
    /* an object record is not a token record, and vice versa */
    cs_object_rec r;
    CU_ASSERT_NOT_EQUAL(cs_object_rec_decode(der, len, &r), CS_REC_OK);
    OPENSSL_free(der);
    cs_token_rec_clear(&t);
}

static void clear_env(void)
{
    unsetenv("CUSTOS_SOFT_CONF");
    unsetenv("CUSTOS_SOFT_DIR");
    unsetenv("CUSTOS_SOFT_PBKDF2_ITERATIONS");
    unsetenv("CUSTOS_SOFT_MAX_PIN_ATTEMPTS");
}

static void test_config_defaults(void)
{
    cs_config c;
    clear_env();
    CU_ASSERT_EQUAL_FATAL(cs_config_load(&c), CKR_OK);
    /* production defaults: never below 200,000 PBKDF2 iterations */
    CU_ASSERT_EQUAL(c.iterations, 200000);
    CU_ASSERT(CS_DEFAULT_PBKDF2_ITERATIONS >= 200000);
    CU_ASSERT_EQUAL(c.max_attempts, 10);
    CU_ASSERT_PTR_NULL(c.dir); /* memory-only when nothing is set */
    cs_config_clear(&c);
    /* below the floor (200,000, the minimum) is an error, never clamped */
    CU_ASSERT(CS_MIN_PBKDF2_ITERATIONS >= 200000);
    setenv("CUSTOS_SOFT_PBKDF2_ITERATIONS", "1", 1);
    CU_ASSERT_NOT_EQUAL(cs_config_load(&c), CKR_OK);
    setenv("CUSTOS_SOFT_PBKDF2_ITERATIONS", "199999", 1);
    CU_ASSERT_NOT_EQUAL(cs_config_load(&c), CKR_OK);
    setenv("CUSTOS_SOFT_PBKDF2_ITERATIONS", "200000", 1);
    CU_ASSERT_EQUAL_FATAL(cs_config_load(&c), CKR_OK);
    CU_ASSERT_EQUAL(c.iterations, 200000);
    cs_config_clear(&c);
    setenv("CUSTOS_SOFT_PBKDF2_ITERATIONS", "lots", 1);
    CU_ASSERT_NOT_EQUAL(cs_config_load(&c), CKR_OK);
    clear_env();

    char *dir = cu_test_mkdtemp("softcfg");
    CU_ASSERT_FATAL(dir != NULL);
    char path[512];
    snprintf(path, sizeof path, "%s/soft.conf", dir);
    FILE *f = fopen(path, "w");
    fprintf(f, "# store\ndirectory = %s/store\npbkdf2_iterations = 300000\nmax_pin_attempts = 3\n", dir);
    fclose(f);
    setenv("CUSTOS_SOFT_CONF", path, 1);
    CU_ASSERT_EQUAL_FATAL(cs_config_load(&c), CKR_OK);
    CU_ASSERT_EQUAL(c.iterations, 300000);
    CU_ASSERT_EQUAL(c.max_attempts, 3);
    CU_ASSERT(c.dir != NULL && strstr(c.dir, "/store") != NULL);
    cs_config_clear(&c);
    /* CUSTOS_SOFT_DIR wins over the file */
    setenv("CUSTOS_SOFT_DIR", "/elsewhere", 1);
    CU_ASSERT_EQUAL_FATAL(cs_config_load(&c), CKR_OK);
    CU_ASSERT_STRING_EQUAL(c.dir, "/elsewhere");
    cs_config_clear(&c);
    unsetenv("CUSTOS_SOFT_DIR");
    f = fopen(path, "w");
    fprintf(f, "pbkdf2_iterations = 1000\n");
    fclose(f);
    CU_ASSERT_NOT_EQUAL(cs_config_load(&c), CKR_OK);
    f = fopen(path, "w");
    fprintf(f, "directroy = /typo\n");
    fclose(f);
    CU_ASSERT_NOT_EQUAL(cs_config_load(&c), CKR_OK); /* unknown keys are errors */
    f = fopen(path, "w");
    fprintf(f, "memory = yes\ndirectory = /x\n");
    fclose(f);
    CU_ASSERT_EQUAL_FATAL(cs_config_load(&c), CKR_OK);
    CU_ASSERT_PTR_NULL(c.dir);
    cs_config_clear(&c);
    clear_env();
    cu_test_rmtree(dir);
    free(dir);
}

static void test_seal_nonces(void)
{
    cs_sealed a, b;
    CU_ASSERT_EQUAL_FATAL(cs_seal(key, 1, NULL, 0, "same", 4, &a), CKR_OK);
    CU_ASSERT_EQUAL_FATAL(cs_seal(key, 1, NULL, 0, "same", 4, &b), CKR_OK);
    CU_ASSERT_NOT_EQUAL(memcmp(a.nonce, b.nonce, CS_NONCE_LEN), 0);
    CU_ASSERT_NOT_EQUAL(memcmp(a.ct, b.ct, 4), 0);
    cs_sealed_clear(&a);
    cs_sealed_clear(&b);
}

int main(void)
{
    static const cu_test_case cases[] = {
        {"object record round trip and sealing", test_object_roundtrip},
        {"object record: every bit flip and truncation rejected", test_object_every_flip_and_cut},
        {"token record round trip, flips, truncations", test_token_roundtrip_and_flips},
        {"configuration defaults and file", test_config_defaults},
        {"sealing uses fresh nonces", test_seal_nonces},
        {NULL, NULL},
    };
    if (cu_test_add_suite("soft_record", NULL, NULL, cases) != 0)
        return 2;
    return cu_test_run();
}
