/* custos-soft through its PKCS#11 interface: token life cycle, keys,
 * signatures checked with OpenSSL in software, objects and attributes,
 * persistence, memory mode, threads and fork. */
#include "cu_test.h"
#include "soft_helpers.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/param_build.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static const unsigned char msg[] = "custos device registration payload";

static void sha(const char *md, const void *d, size_t n, unsigned char *out, unsigned *olen)
{
    EVP_Digest(d, n, out, olen, EVP_get_digestbyname(md), NULL);
}

static void test_slots_and_init(void)
{
    tst_store t;
    CK_ULONG n = 0;
    CK_SLOT_ID ids[8], slot, slot2, again;
    CK_TOKEN_INFO ti;
    CK_SESSION_HANDLE h;
    CU_ASSERT_FATAL(tst_begin(&t, 0));
    CU_ASSERT_EQUAL(p11->C_GetSlotList(CK_TRUE, NULL, &n), CKR_OK);
    CU_ASSERT_EQUAL(n, 1);
    n = 8;
    CU_ASSERT_EQUAL(p11->C_GetSlotList(CK_TRUE, ids, &n), CKR_OK);
    CU_ASSERT_EQUAL(p11->C_GetTokenInfo(ids[0], &ti), CKR_OK);
    CU_ASSERT_FALSE(ti.flags & CKF_TOKEN_INITIALIZED);
    CU_ASSERT_EQUAL(p11->C_OpenSession(ids[0], CKF_SERIAL_SESSION, NULL, NULL, &h),
                    CKR_TOKEN_NOT_RECOGNIZED);

    /* InitToken alone: initialized, no user PIN yet */
    CK_UTF8CHAR lab[32];
    memset(lab, ' ', 32);
    memcpy(lab, "alpha", 5);
    CU_ASSERT_EQUAL(p11->C_InitToken(ids[0], (CK_UTF8CHAR_PTR)SO_PIN, 3, lab), CKR_PIN_LEN_RANGE);
    CU_ASSERT_EQUAL(p11->C_InitToken(ids[0], (CK_UTF8CHAR_PTR)SO_PIN, strlen(SO_PIN), lab), CKR_OK);
    CU_ASSERT_EQUAL(p11->C_GetTokenInfo(ids[0], &ti), CKR_OK);
    CU_ASSERT(ti.flags & CKF_TOKEN_INITIALIZED);
    CU_ASSERT_FALSE(ti.flags & CKF_USER_PIN_INITIALIZED);
    CU_ASSERT_EQUAL(p11->C_OpenSession(ids[0], CKF_SERIAL_SESSION, NULL, NULL, &h), CKR_OK);
    CU_ASSERT_EQUAL(p11->C_Login(h, CKU_USER, (CK_UTF8CHAR_PTR)USER_PIN, 4),
                    CKR_USER_PIN_NOT_INITIALIZED);
    p11->C_CloseSession(h);
    slot = ids[0];

    /* a new empty slot appears; the token keeps its slot ID */
    n = 0;
    CU_ASSERT_EQUAL(p11->C_GetSlotList(CK_TRUE, NULL, &n), CKR_OK);
    CU_ASSERT_EQUAL(n, 2);
    CU_ASSERT_FATAL(tst_init_token("beta", &slot2));
    CU_ASSERT_NOT_EQUAL(slot, slot2);
    CU_ASSERT_FATAL(tst_restart());
    CU_ASSERT_FATAL(tst_find_token("alpha", &again));
    CU_ASSERT_EQUAL(again, slot);
    CU_ASSERT_FATAL(tst_find_token("beta", &again));
    CU_ASSERT_EQUAL(again, slot2);

    /* serials differ */
    CK_TOKEN_INFO t1, t2;
    CU_ASSERT_EQUAL(p11->C_GetTokenInfo(slot, &t1), CKR_OK);
    CU_ASSERT_EQUAL(p11->C_GetTokenInfo(slot2, &t2), CKR_OK);
    CU_ASSERT_NOT_EQUAL(memcmp(t1.serialNumber, t2.serialNumber, 16), 0);
    CU_ASSERT_EQUAL(memcmp(t2.model, "custos-soft     ", 16), 0);
    tst_end(&t);
}

static void test_login_rules(void)
{
    tst_store t;
    CK_SLOT_ID slot;
    CK_SESSION_HANDLE ro, rw;
    CK_SESSION_INFO si;
    CK_OBJECT_HANDLE pub, priv;
    CU_ASSERT_FATAL(tst_begin(&t, 0));
    CU_ASSERT_FATAL(tst_init_token("rules", &slot));
    CU_ASSERT_EQUAL(p11->C_OpenSession(slot, CKF_SERIAL_SESSION, NULL, NULL, &ro), CKR_OK);
    CU_ASSERT_EQUAL(p11->C_OpenSession(slot, 0, NULL, NULL, &rw), CKR_SESSION_PARALLEL_NOT_SUPPORTED);
    CU_ASSERT_EQUAL(p11->C_OpenSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &rw),
                    CKR_OK);
    CU_ASSERT_EQUAL(p11->C_GetSessionInfo(ro, &si), CKR_OK);
    CU_ASSERT_EQUAL(si.state, CKS_RO_PUBLIC_SESSION);
    /* SO with a read-only session open */
    CU_ASSERT_EQUAL(p11->C_Login(rw, CKU_SO, (CK_UTF8CHAR_PTR)SO_PIN, strlen(SO_PIN)),
                    CKR_SESSION_READ_ONLY_EXISTS);
    CU_ASSERT_EQUAL(p11->C_Login(rw, 7, (CK_UTF8CHAR_PTR)USER_PIN, 4), CKR_USER_TYPE_INVALID);
    /* key generation needs a login */
    CU_ASSERT_EQUAL(tst_gen_ec(rw, 256, true, "k", &pub, &priv), CKR_USER_NOT_LOGGED_IN);
    CU_ASSERT_EQUAL(p11->C_Login(ro, CKU_USER, (CK_UTF8CHAR_PTR)USER_PIN, 4), CKR_OK);
    CU_ASSERT_EQUAL(p11->C_Login(rw, CKU_USER, (CK_UTF8CHAR_PTR)USER_PIN, 4),
                    CKR_USER_ALREADY_LOGGED_IN);
    CU_ASSERT_EQUAL(p11->C_GetSessionInfo(ro, &si), CKR_OK);
    CU_ASSERT_EQUAL(si.state, CKS_RO_USER_FUNCTIONS);
    CU_ASSERT_EQUAL(p11->C_GetSessionInfo(rw, &si), CKR_OK);
    CU_ASSERT_EQUAL(si.state, CKS_RW_USER_FUNCTIONS);
    /* token objects need a R/W session */
    CU_ASSERT_EQUAL(tst_gen_ec(ro, 256, true, "k", &pub, &priv), CKR_SESSION_READ_ONLY);
    CU_ASSERT_EQUAL(tst_gen_ec(rw, 256, true, "k", &pub, &priv), CKR_OK);
    CU_ASSERT_EQUAL(tst_count(ro, "k", CKO_PRIVATE_KEY), 1);
    /* private objects vanish at logout, public ones stay */
    CU_ASSERT_EQUAL(p11->C_Logout(ro), CKR_OK);
    CU_ASSERT_EQUAL(p11->C_Logout(ro), CKR_USER_NOT_LOGGED_IN);
    CU_ASSERT_EQUAL(tst_count(ro, "k", CKO_PRIVATE_KEY), 0);
    CU_ASSERT_EQUAL(tst_count(ro, "k/pub", CKO_PUBLIC_KEY), 1);
    unsigned char v[64];
    CK_ATTRIBUTE a = {CKA_LABEL, v, sizeof v};
    CU_ASSERT_EQUAL(p11->C_GetAttributeValue(ro, priv, &a, 1), CKR_OBJECT_HANDLE_INVALID);
    CU_ASSERT_EQUAL(p11->C_CloseSession(ro), CKR_OK);
    CU_ASSERT_EQUAL(p11->C_CloseSession(ro), CKR_SESSION_HANDLE_INVALID);
    tst_end(&t);
}

/* PKCS#11: C_Logout ends private session objects for good, and no key is
 * ever usable without a login (a key cannot be made or copied public). */
static void test_logout_ends_private_session_objects(void)
{
    tst_store t;
    CK_SLOT_ID slot;
    CK_SESSION_HANDLE h;
    CK_OBJECT_HANDLE pub, priv, hk, cp, d;
    CK_BBOOL no = CK_FALSE, yes = CK_TRUE;
    CK_OBJECT_CLASS data = CKO_DATA;
    unsigned char sig[64], dg[32] = {9};
    CK_ULONG sl = sizeof sig;
    CK_MECHANISM m = {CKM_ECDSA, NULL, 0}, hm = {CKM_SHA256_HMAC, NULL, 0};
    CU_ASSERT_FATAL(tst_begin(&t, 0));
    CU_ASSERT_FATAL(tst_init_token("logout", &slot));
    CU_ASSERT_FATAL(tst_user_session(slot, &h));
    CU_ASSERT_FATAL(tst_gen_ec(h, 256, false, "sess", &pub, &priv) == CKR_OK);
    CU_ASSERT_FATAL(tst_gen_hmac(h, 32, false, "sessmac", &hk) == CKR_OK);
    CK_OBJECT_HANDLE tpub, tpriv, tnew;
    CU_ASSERT_FATAL(tst_gen_ec(h, 256, true, "tok", &tpub, &tpriv) == CKR_OK);
    CK_ATTRIBUTE pd[] = {{CKA_CLASS, &data, sizeof data}, {CKA_PRIVATE, &yes, 1},
                         {CKA_LABEL, "sessdata", 8}, {CKA_VALUE, "v", 1}};
    CU_ASSERT_EQUAL(p11->C_CreateObject(h, pd, 4, &d), CKR_OK);
    /* a copy cannot make a key (or any private object) public */
    CK_ATTRIBUTE ct[] = {{CKA_PRIVATE, &no, 1}, {CKA_LABEL, "pubcopy", 7}};
    CU_ASSERT_EQUAL(p11->C_CopyObject(h, priv, ct, 2, &cp), CKR_ATTRIBUTE_READ_ONLY);
    CU_ASSERT_EQUAL(p11->C_CopyObject(h, hk, ct, 2, &cp), CKR_ATTRIBUTE_READ_ONLY);
    CU_ASSERT_EQUAL(p11->C_CopyObject(h, d, ct, 2, &cp), CKR_ATTRIBUTE_READ_ONLY);
    CU_ASSERT_EQUAL(tst_count(h, "pubcopy", (CK_ULONG)-1), 0);
    /* nor can a template make one public */
    CK_MECHANISM em = {CKM_EC_KEY_PAIR_GEN, NULL, 0};
    static const CK_BYTE p256[] = {0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07};
    CK_ATTRIBUTE pt[] = {{CKA_EC_PARAMS, (void *)p256, sizeof p256}};
    CK_ATTRIBUTE kt[] = {{CKA_PRIVATE, &no, 1}, {CKA_SIGN, &yes, 1}};
    CU_ASSERT_EQUAL(p11->C_GenerateKeyPair(h, &em, pt, 1, kt, 2, &pub, &cp),
                    CKR_ATTRIBUTE_VALUE_INVALID);
    CK_OBJECT_CLASS sk = CKO_SECRET_KEY;
    CK_KEY_TYPE gk = CKK_GENERIC_SECRET;
    unsigned char key[32] = {1};
    CK_ATTRIBUTE st[] = {{CKA_CLASS, &sk, sizeof sk}, {CKA_KEY_TYPE, &gk, sizeof gk},
                         {CKA_VALUE, key, sizeof key}, {CKA_PRIVATE, &no, 1}};
    CU_ASSERT_EQUAL(p11->C_CreateObject(h, st, 4, &cp), CKR_ATTRIBUTE_VALUE_INVALID);
    /* no context-specific login: keys that would need one are refused */
    CK_ATTRIBUTE aa[] = {{CKA_ALWAYS_AUTHENTICATE, &yes, 1}, {CKA_SIGN, &yes, 1}};
    CU_ASSERT_EQUAL(p11->C_GenerateKeyPair(h, &em, pt, 1, aa, 2, &pub, &cp),
                    CKR_ATTRIBUTE_VALUE_INVALID);
    CK_ATTRIBUTE aa_off[] = {{CKA_ALWAYS_AUTHENTICATE, &no, 1}, {CKA_SIGN, &yes, 1}};
    CK_OBJECT_HANDLE p2, k2;
    CU_ASSERT_EQUAL(p11->C_GenerateKeyPair(h, &em, pt, 1, aa_off, 2, &p2, &k2), CKR_OK);
    CU_ASSERT_EQUAL(tst_bool_attr(h, k2, CKA_ALWAYS_AUTHENTICATE), CK_FALSE);
    CK_ATTRIBUTE aa_set = {CKA_ALWAYS_AUTHENTICATE, &yes, 1};
    CU_ASSERT_EQUAL(p11->C_SetAttributeValue(h, k2, &aa_set, 1), CKR_ATTRIBUTE_READ_ONLY);
    CU_ASSERT_EQUAL(p11->C_CopyObject(h, k2, &aa_set, 1, &cp), CKR_ATTRIBUTE_READ_ONLY);
    CK_OBJECT_CLASS pk = CKO_PRIVATE_KEY;
    CK_KEY_TYPE ek = CKK_EC;
    CK_ATTRIBUTE ia[] = {{CKA_CLASS, &pk, sizeof pk}, {CKA_KEY_TYPE, &ek, sizeof ek},
                         {CKA_EC_PARAMS, (void *)p256, sizeof p256}, {CKA_VALUE, key, sizeof key},
                         {CKA_ALWAYS_AUTHENTICATE, &yes, 1}};
    CU_ASSERT_EQUAL(p11->C_CreateObject(h, ia, 5, &cp), CKR_ATTRIBUTE_VALUE_INVALID);
    CU_ASSERT_EQUAL(p11->C_Login(h, CKU_CONTEXT_SPECIFIC, (CK_UTF8CHAR_PTR)USER_PIN, 4),
                    CKR_OPERATION_NOT_INITIALIZED);
    /* a public object copied as private is private from then on */
    CK_ATTRIBUTE pubd[] = {{CKA_CLASS, &data, sizeof data}, {CKA_PRIVATE, &no, 1},
                           {CKA_LABEL, "open", 4}, {CKA_VALUE, "w", 1}};
    CK_ATTRIBUTE mkpriv[] = {{CKA_PRIVATE, &yes, 1}, {CKA_LABEL, "closed", 6}};
    CK_OBJECT_HANDLE od, cd;
    CU_ASSERT_EQUAL(p11->C_CreateObject(h, pubd, 4, &od), CKR_OK);
    CU_ASSERT_EQUAL(p11->C_CopyObject(h, od, mkpriv, 2, &cd), CKR_OK);
    char v[8];
    CK_ATTRIBUTE va = {CKA_VALUE, v, sizeof v};
    CU_ASSERT_EQUAL(p11->C_GetAttributeValue(h, cd, &va, 1), CKR_OK);
    CU_ASSERT(va.ulValueLen == 1 && v[0] == 'w');

    CU_ASSERT_EQUAL(p11->C_Logout(h), CKR_OK);
    CU_ASSERT_EQUAL(p11->C_Login(h, CKU_USER, (CK_UTF8CHAR_PTR)USER_PIN, 4), CKR_OK);
    /* gone, and the old handles stay invalid after the new login */
    CU_ASSERT_EQUAL(tst_count(h, "sess", CKO_PRIVATE_KEY), 0);
    CU_ASSERT_EQUAL(tst_count(h, "sessmac", (CK_ULONG)-1), 0);
    CU_ASSERT_EQUAL(tst_count(h, "sessdata", (CK_ULONG)-1), 0);
    CU_ASSERT_EQUAL(tst_count(h, "closed", (CK_ULONG)-1), 0);
    CU_ASSERT_EQUAL(p11->C_SignInit(h, &m, priv), CKR_KEY_HANDLE_INVALID);
    CU_ASSERT_EQUAL(p11->C_SignInit(h, &hm, hk), CKR_KEY_HANDLE_INVALID);
    CU_ASSERT_EQUAL(p11->C_GetAttributeValue(h, d, &va, 1), CKR_OBJECT_HANDLE_INVALID);
    CU_ASSERT_EQUAL(tst_sign(h, &m, priv, dg, 32, sig, &sl), CKR_KEY_HANDLE_INVALID);
    /* a private token object is found again, under a new handle */
    CU_ASSERT_EQUAL(p11->C_SignInit(h, &m, tpriv), CKR_KEY_HANDLE_INVALID);
    CU_ASSERT_FATAL(tst_find_one(h, "tok", CKO_PRIVATE_KEY, &tnew));
    CU_ASSERT_NOT_EQUAL(tnew, tpriv);
    sl = sizeof sig;
    CU_ASSERT_EQUAL(tst_sign(h, &m, tnew, dg, 32, sig, &sl), CKR_OK);
    CU_ASSERT(tst_find_one(h, "tok/pub", CKO_PUBLIC_KEY, &tnew) && tnew == tpub);
    /* public session objects live on */
    CU_ASSERT_EQUAL(tst_count(h, "sess/pub", CKO_PUBLIC_KEY), 1);
    CU_ASSERT_EQUAL(tst_count(h, "open", CKO_DATA), 1);
    tst_end(&t);
}

/* EC: raw and hashing mechanisms, single- and multi-part, checked by OpenSSL. */
static void ec_case(CK_SESSION_HANDLE h, int bits)
{
    CK_OBJECT_HANDLE pub, priv;
    unsigned char sig[256], dg[64];
    unsigned dl;
    CK_ULONG sl;
    CU_ASSERT_FATAL(tst_gen_ec(h, bits, false, "ec", &pub, &priv) == CKR_OK);
    EVP_PKEY *pk = tst_pubkey(h, pub);
    CU_ASSERT_FATAL(pk != NULL);
    CU_ASSERT_EQUAL(EVP_PKEY_get_bits(pk), bits);
    size_t want = bits == 256 ? 64 : 96;

    /* CKM_ECDSA over a digest, with a size query first */
    sha(bits == 256 ? "SHA256" : "SHA384", msg, sizeof msg, dg, &dl);
    CK_MECHANISM m = {CKM_ECDSA, NULL, 0};
    CU_ASSERT_EQUAL(p11->C_SignInit(h, &m, priv), CKR_OK);
    CU_ASSERT_EQUAL(p11->C_Sign(h, dg, dl, NULL, &sl), CKR_OK);
    CU_ASSERT_EQUAL(sl, want);
    sl = 10;
    CU_ASSERT_EQUAL(p11->C_Sign(h, dg, dl, sig, &sl), CKR_BUFFER_TOO_SMALL);
    sl = sizeof sig;
    CU_ASSERT_EQUAL(p11->C_Sign(h, dg, dl, sig, &sl), CKR_OK);
    CU_ASSERT_EQUAL(sl, want);
    CU_ASSERT(tst_ossl_verify_ecdsa(pk, dg, dl, sig, sl));
    /* operation ended */
    CU_ASSERT_EQUAL(p11->C_Sign(h, dg, dl, sig, &sl), CKR_OPERATION_NOT_INITIALIZED);
    CU_ASSERT_EQUAL(p11->C_VerifyInit(h, &m, pub), CKR_OK);
    CU_ASSERT_EQUAL(p11->C_Verify(h, dg, dl, sig, sl), CKR_OK);
    sig[5] ^= 1;
    CU_ASSERT_EQUAL(p11->C_VerifyInit(h, &m, pub), CKR_OK);
    CU_ASSERT_EQUAL(p11->C_Verify(h, dg, dl, sig, sl), CKR_SIGNATURE_INVALID);
    CU_ASSERT_EQUAL(p11->C_VerifyInit(h, &m, pub), CKR_OK);
    CU_ASSERT_EQUAL(p11->C_Verify(h, dg, dl, sig, sl - 1), CKR_SIGNATURE_LEN_RANGE);

    /* hashing mechanisms, twice each (the cached context is reused) */
    const struct { CK_MECHANISM_TYPE t; const char *md; } hm[] = {
        {CKM_ECDSA_SHA256, "SHA256"}, {CKM_ECDSA_SHA384, "SHA384"}, {CKM_ECDSA_SHA256, "SHA256"}};
    for (size_t i = 0; i < 3; i++) {
        CK_MECHANISM mm = {hm[i].t, NULL, 0};
        sl = sizeof sig;
        CU_ASSERT_EQUAL(tst_sign(h, &mm, priv, msg, sizeof msg, sig, &sl), CKR_OK);
        sha(hm[i].md, msg, sizeof msg, dg, &dl);
        CU_ASSERT(tst_ossl_verify_ecdsa(pk, dg, dl, sig, sl));
        /* multi-part */
        CU_ASSERT_EQUAL(p11->C_SignInit(h, &mm, priv), CKR_OK);
        CU_ASSERT_EQUAL(p11->C_SignUpdate(h, (CK_BYTE_PTR)msg, 10), CKR_OK);
        CU_ASSERT_EQUAL(p11->C_SignUpdate(h, (CK_BYTE_PTR)msg + 10, sizeof msg - 10), CKR_OK);
        sl = sizeof sig;
        CU_ASSERT_EQUAL(p11->C_SignFinal(h, sig, &sl), CKR_OK);
        CU_ASSERT(tst_ossl_verify_ecdsa(pk, dg, dl, sig, sl));
        CU_ASSERT_EQUAL(p11->C_VerifyInit(h, &mm, pub), CKR_OK);
        CU_ASSERT_EQUAL(p11->C_VerifyUpdate(h, (CK_BYTE_PTR)msg, sizeof msg), CKR_OK);
        CU_ASSERT_EQUAL(p11->C_VerifyFinal(h, sig, sl), CKR_OK);
    }
    /* wrong key kind / mechanism */
    CK_MECHANISM rsa = {CKM_SHA256_RSA_PKCS, NULL, 0};
    CU_ASSERT_EQUAL(p11->C_SignInit(h, &rsa, priv), CKR_KEY_TYPE_INCONSISTENT);
    CK_MECHANISM bad = {0x12345678UL, NULL, 0};
    CU_ASSERT_EQUAL(p11->C_SignInit(h, &bad, priv), CKR_MECHANISM_INVALID);
    CU_ASSERT_EQUAL(p11->C_SignInit(h, &m, pub), CKR_KEY_TYPE_INCONSISTENT);
    EVP_PKEY_free(pk);
}

static void test_ec_sign(void)
{
    tst_store t;
    CK_SLOT_ID slot;
    CK_SESSION_HANDLE h;
    CU_ASSERT_FATAL(tst_begin(&t, 0));
    CU_ASSERT_FATAL(tst_init_token("ec", &slot));
    CU_ASSERT_FATAL(tst_user_session(slot, &h));
    ec_case(h, 256);
    ec_case(h, 384);
    tst_end(&t);
}

static void test_rsa_sign(void)
{
    tst_store t;
    CK_SLOT_ID slot;
    CK_SESSION_HANDLE h;
    CK_OBJECT_HANDLE pub, priv;
    unsigned char sig[512], dg[64], di[19 + 32];
    unsigned dl;
    CK_ULONG sl;
    CU_ASSERT_FATAL(tst_begin(&t, 0));
    CU_ASSERT_FATAL(tst_init_token("rsa", &slot));
    CU_ASSERT_FATAL(tst_user_session(slot, &h));
    CK_ULONG bits = 1024;
    CU_ASSERT_EQUAL(tst_gen_rsa(h, bits, false, "r", &pub, &priv), CKR_KEY_SIZE_RANGE);
    CU_ASSERT_FATAL(tst_gen_rsa(h, 2048, false, "r", &pub, &priv) == CKR_OK);
    EVP_PKEY *pk = tst_pubkey(h, pub);
    CU_ASSERT_FATAL(pk != NULL);
    CU_ASSERT_EQUAL(EVP_PKEY_get_bits(pk), 2048);
    CK_ULONG mb = 0;
    CK_ATTRIBUTE a = {CKA_MODULUS_BITS, &mb, sizeof mb};
    CU_ASSERT_EQUAL(p11->C_GetAttributeValue(h, pub, &a, 1), CKR_OK);
    CU_ASSERT_EQUAL(mb, 2048);

    /* CKM_RSA_PKCS over a DigestInfo == SHA256 with PKCS#1 v1.5 */
    static const unsigned char prefix[19] = {0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01,
                                             0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20};
    sha("SHA256", msg, sizeof msg, dg, &dl);
    memcpy(di, prefix, 19);
    memcpy(di + 19, dg, 32);
    CK_MECHANISM m = {CKM_RSA_PKCS, NULL, 0};
    sl = sizeof sig;
    CU_ASSERT_EQUAL(tst_sign(h, &m, priv, di, sizeof di, sig, &sl), CKR_OK);
    CU_ASSERT_EQUAL(sl, 256);
    CU_ASSERT(tst_ossl_verify(pk, "SHA256", false, msg, sizeof msg, sig, sl));
    CU_ASSERT_EQUAL(p11->C_VerifyInit(h, &m, pub), CKR_OK);
    CU_ASSERT_EQUAL(p11->C_Verify(h, di, sizeof di, sig, sl), CKR_OK);
    unsigned char big[250];
    memset(big, 1, sizeof big);
    sl = sizeof sig;
    CU_ASSERT_EQUAL(tst_sign(h, &m, priv, big, sizeof big, sig, &sl), CKR_DATA_LEN_RANGE);

    /* hash-and-sign PKCS#1 v1.5, single and multi-part */
    CK_MECHANISM m2 = {CKM_SHA256_RSA_PKCS, NULL, 0};
    sl = sizeof sig;
    CU_ASSERT_EQUAL(tst_sign(h, &m2, priv, msg, sizeof msg, sig, &sl), CKR_OK);
    CU_ASSERT(tst_ossl_verify(pk, "SHA256", false, msg, sizeof msg, sig, sl));
    CU_ASSERT_EQUAL(p11->C_SignInit(h, &m2, priv), CKR_OK);
    CU_ASSERT_EQUAL(p11->C_SignUpdate(h, (CK_BYTE_PTR)msg, 5), CKR_OK);
    CU_ASSERT_EQUAL(p11->C_SignUpdate(h, (CK_BYTE_PTR)msg + 5, sizeof msg - 5), CKR_OK);
    sl = sizeof sig;
    CU_ASSERT_EQUAL(p11->C_SignFinal(h, sig, &sl), CKR_OK);
    CU_ASSERT(tst_ossl_verify(pk, "SHA256", false, msg, sizeof msg, sig, sl));

    /* PSS: raw over a digest, and hash-and-sign */
    CK_RSA_PKCS_PSS_PARAMS pp = {CKM_SHA256, CKG_MGF1_SHA256, 32};
    CK_MECHANISM m3 = {CKM_RSA_PKCS_PSS, &pp, sizeof pp};
    sl = sizeof sig;
    CU_ASSERT_EQUAL(tst_sign(h, &m3, priv, dg, dl, sig, &sl), CKR_OK);
    CU_ASSERT(tst_ossl_verify(pk, "SHA256", true, msg, sizeof msg, sig, sl));
    CU_ASSERT_EQUAL(p11->C_VerifyInit(h, &m3, pub), CKR_OK);
    CU_ASSERT_EQUAL(p11->C_Verify(h, dg, dl, sig, sl), CKR_OK);
    sl = sizeof sig;
    CU_ASSERT_EQUAL(tst_sign(h, &m3, priv, dg, 20, sig, &sl), CKR_DATA_LEN_RANGE);
    CK_MECHANISM m4 = {CKM_SHA256_RSA_PKCS_PSS, &pp, sizeof pp};
    sl = sizeof sig;
    CU_ASSERT_EQUAL(tst_sign(h, &m4, priv, msg, sizeof msg, sig, &sl), CKR_OK);
    CU_ASSERT(tst_ossl_verify(pk, "SHA256", true, msg, sizeof msg, sig, sl));
    CU_ASSERT_EQUAL(p11->C_VerifyInit(h, &m4, pub), CKR_OK);
    CU_ASSERT_EQUAL(p11->C_Verify(h, (CK_BYTE_PTR)msg, sizeof msg, sig, sl), CKR_OK);
    sig[0] ^= 0x40;
    CU_ASSERT_EQUAL(p11->C_VerifyInit(h, &m4, pub), CKR_OK);
    CU_ASSERT_EQUAL(p11->C_Verify(h, (CK_BYTE_PTR)msg, sizeof msg, sig, sl), CKR_SIGNATURE_INVALID);
    /* bad PSS parameters */
    CK_MECHANISM m5 = {CKM_SHA256_RSA_PKCS_PSS, NULL, 0};
    CU_ASSERT_EQUAL(p11->C_SignInit(h, &m5, priv), CKR_MECHANISM_PARAM_INVALID);
    CK_RSA_PKCS_PSS_PARAMS bad = {CKM_SHA384, CKG_MGF1_SHA256, 32};
    CK_MECHANISM m6 = {CKM_SHA256_RSA_PKCS_PSS, &bad, sizeof bad};
    CU_ASSERT_EQUAL(p11->C_SignInit(h, &m6, priv), CKR_MECHANISM_PARAM_INVALID);
    EVP_PKEY_free(pk);
    tst_end(&t);
}

static void test_hmac(void)
{
    tst_store t;
    CK_SLOT_ID slot;
    CK_SESSION_HANDLE h;
    CK_OBJECT_HANDLE k, g;
    unsigned char key[64], mac[64], ref[64];
    unsigned rl;
    CK_ULONG ml;
    CU_ASSERT_FATAL(tst_begin(&t, 0));
    CU_ASSERT_FATAL(tst_init_token("hmac", &slot));
    CU_ASSERT_FATAL(tst_user_session(slot, &h));
    RAND_bytes(key, sizeof key);
    CU_ASSERT_FATAL(tst_import_hmac(h, key, 32, true, "sas", &k) == CKR_OK);
    CK_MECHANISM m = {CKM_SHA256_HMAC, NULL, 0};
    HMAC(EVP_sha256(), key, 32, msg, sizeof msg, ref, &rl);
    for (int i = 0; i < 3; i++) { /* also exercises the cached HMAC context */
        ml = sizeof mac;
        CU_ASSERT_EQUAL(tst_sign(h, &m, k, msg, sizeof msg, mac, &ml), CKR_OK);
        CU_ASSERT_EQUAL(ml, 32);
        CU_ASSERT_EQUAL(memcmp(mac, ref, 32), 0);
    }
    CU_ASSERT_EQUAL(p11->C_SignInit(h, &m, k), CKR_OK);
    CU_ASSERT_EQUAL(p11->C_SignUpdate(h, (CK_BYTE_PTR)msg, 3), CKR_OK);
    CU_ASSERT_EQUAL(p11->C_SignUpdate(h, (CK_BYTE_PTR)msg + 3, sizeof msg - 3), CKR_OK);
    ml = sizeof mac;
    CU_ASSERT_EQUAL(p11->C_SignFinal(h, mac, &ml), CKR_OK);
    CU_ASSERT_EQUAL(memcmp(mac, ref, 32), 0);
    CU_ASSERT_EQUAL(p11->C_VerifyInit(h, &m, k), CKR_OK);
    CU_ASSERT_EQUAL(p11->C_Verify(h, (CK_BYTE_PTR)msg, sizeof msg, ref, 32), CKR_OK);
    ref[31] ^= 1;
    CU_ASSERT_EQUAL(p11->C_VerifyInit(h, &m, k), CKR_OK);
    CU_ASSERT_EQUAL(p11->C_Verify(h, (CK_BYTE_PTR)msg, sizeof msg, ref, 32), CKR_SIGNATURE_INVALID);
    CU_ASSERT_EQUAL(p11->C_VerifyInit(h, &m, k), CKR_OK);
    CU_ASSERT_EQUAL(p11->C_Verify(h, (CK_BYTE_PTR)msg, sizeof msg, ref, 31), CKR_SIGNATURE_LEN_RANGE);
    /* 64-byte key (DPS individual enrollment) and SHA-512 */
    CK_OBJECT_HANDLE k64;
    CU_ASSERT_FATAL(tst_import_hmac(h, key, 64, false, "sas64", &k64) == CKR_OK);
    CK_MECHANISM m512 = {CKM_SHA512_HMAC, NULL, 0};
    HMAC(EVP_sha512(), key, 64, msg, sizeof msg, ref, &rl);
    ml = sizeof mac;
    CU_ASSERT_EQUAL(tst_sign(h, &m512, k64, msg, sizeof msg, mac, &ml), CKR_OK);
    CU_ASSERT_EQUAL(ml, 64);
    CU_ASSERT_EQUAL(memcmp(mac, ref, 64), 0);
    /* a key that is too short is refused at SignInit */
    CK_OBJECT_HANDLE k8;
    CU_ASSERT_FATAL(tst_import_hmac(h, key, 8, false, "short", &k8) == CKR_OK);
    CU_ASSERT_EQUAL(p11->C_SignInit(h, &m, k8), CKR_KEY_SIZE_RANGE);
    /* generated: sign/verify round trip, value not readable */
    CU_ASSERT_FATAL(tst_gen_hmac(h, 32, true, "gen", &g) == CKR_OK);
    ml = sizeof mac;
    CU_ASSERT_EQUAL(tst_sign(h, &m, g, msg, sizeof msg, mac, &ml), CKR_OK);
    CU_ASSERT_EQUAL(p11->C_VerifyInit(h, &m, g), CKR_OK);
    CU_ASSERT_EQUAL(p11->C_Verify(h, (CK_BYTE_PTR)msg, sizeof msg, mac, ml), CKR_OK);
    unsigned char v[64];
    CK_ATTRIBUTE a = {CKA_VALUE, v, sizeof v};
    CU_ASSERT_EQUAL(p11->C_GetAttributeValue(h, g, &a, 1), CKR_ATTRIBUTE_SENSITIVE);
    CU_ASSERT_EQUAL(a.ulValueLen, CK_UNAVAILABLE_INFORMATION);
    CK_ULONG vl = 0;
    CK_ATTRIBUTE b = {CKA_VALUE_LEN, &vl, sizeof vl};
    CU_ASSERT_EQUAL(p11->C_GetAttributeValue(h, g, &b, 1), CKR_OK);
    CU_ASSERT_EQUAL(vl, 32);
    CU_ASSERT_EQUAL(tst_gen_hmac(h, 4, false, "tiny", &g), CKR_KEY_SIZE_RANGE);
    tst_end(&t);
}

/* Imports an EC P-256 private key with a known scalar (not sensitive).
 * With leading_zero the scalar's first byte is 0 (one key in 256), the
 * case where a minimal big integer would come back one byte short. */
static CK_RV import_ec_scalar(CK_SESSION_HANDLE h, EVP_PKEY **_pk, unsigned char scalar[32],
                              bool leading_zero, CK_OBJECT_HANDLE *_o)
{
    static const CK_BYTE p256[] = {0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07};
    EVP_PKEY *pk = NULL;
    for (int tries = 0; tries < 100000; tries++) {
        EVP_PKEY_free(pk);
        pk = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
        BIGNUM *d = NULL;
        EVP_PKEY_get_bn_param(pk, OSSL_PKEY_PARAM_PRIV_KEY, &d);
        BN_bn2binpad(d, scalar, 32);
        BN_clear_free(d);
        if (!leading_zero || scalar[0] == 0)
            break;
    }
    if (leading_zero && scalar[0] != 0) {
        EVP_PKEY_free(pk);
        return CKR_GENERAL_ERROR;
    }
    CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
    CK_KEY_TYPE kt = CKK_EC;
    CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
    CK_ATTRIBUTE t[] = {
        {CKA_CLASS, &cls, sizeof cls}, {CKA_KEY_TYPE, &kt, sizeof kt},
        {CKA_TOKEN, &yes, sizeof yes}, {CKA_EC_PARAMS, (void *)p256, sizeof p256},
        {CKA_VALUE, scalar, 32},       {CKA_SIGN, &yes, sizeof yes},
        {CKA_SENSITIVE, &no, sizeof no}, {CKA_EXTRACTABLE, &yes, sizeof yes},
        {CKA_LABEL, "imported", 8},
    };
    *_pk = pk;
    return p11->C_CreateObject(h, t, 9, _o);
}

static CK_RV import_ec(CK_SESSION_HANDLE h, EVP_PKEY **_pk, unsigned char scalar[32], CK_OBJECT_HANDLE *_o)
{
    return import_ec_scalar(h, _pk, scalar, false, _o);
}

static void test_custody_attrs(void)
{
    tst_store t;
    CK_SLOT_ID slot;
    CK_SESSION_HANDLE h;
    CK_OBJECT_HANDLE pub, priv, sec, imp;
    CU_ASSERT_FATAL(tst_begin(&t, 0));
    CU_ASSERT_FATAL(tst_init_token("custody", &slot));
    CU_ASSERT_FATAL(tst_user_session(slot, &h));
    CU_ASSERT_FATAL(tst_gen_ec(h, 256, true, "gen", &pub, &priv) == CKR_OK);
    CU_ASSERT_EQUAL(tst_bool_attr(h, priv, CKA_LOCAL), CK_TRUE);
    CU_ASSERT_EQUAL(tst_bool_attr(h, priv, CKA_ALWAYS_SENSITIVE), CK_TRUE);
    CU_ASSERT_EQUAL(tst_bool_attr(h, priv, CKA_NEVER_EXTRACTABLE), CK_TRUE);
    CU_ASSERT_EQUAL(tst_bool_attr(h, pub, CKA_LOCAL), CK_TRUE);
    CK_MECHANISM_TYPE gm = 0;
    CK_ATTRIBUTE a = {CKA_KEY_GEN_MECHANISM, &gm, sizeof gm};
    CU_ASSERT_EQUAL(p11->C_GetAttributeValue(h, priv, &a, 1), CKR_OK);
    CU_ASSERT_EQUAL(gm, CKM_EC_KEY_PAIR_GEN);
    unsigned char v[64];
    CK_ATTRIBUTE val = {CKA_VALUE, v, sizeof v};
    CU_ASSERT_EQUAL(p11->C_GetAttributeValue(h, priv, &val, 1), CKR_ATTRIBUTE_SENSITIVE);

    /* never back to non-sensitive or extractable */
    CK_BBOOL no = CK_FALSE, yes = CK_TRUE;
    CK_ATTRIBUTE s0 = {CKA_SENSITIVE, &no, sizeof no};
    CU_ASSERT_EQUAL(p11->C_SetAttributeValue(h, priv, &s0, 1), CKR_ATTRIBUTE_READ_ONLY);
    CK_ATTRIBUTE e1 = {CKA_EXTRACTABLE, &yes, sizeof yes};
    CU_ASSERT_EQUAL(p11->C_SetAttributeValue(h, priv, &e1, 1), CKR_ATTRIBUTE_READ_ONLY);
    CK_ATTRIBUTE l1 = {CKA_LOCAL, &no, sizeof no};
    CU_ASSERT_EQUAL(p11->C_SetAttributeValue(h, priv, &l1, 1), CKR_ATTRIBUTE_READ_ONLY);
    CK_ATTRIBUTE lab = {CKA_LABEL, "renamed", 7};
    CU_ASSERT_EQUAL(p11->C_SetAttributeValue(h, priv, &lab, 1), CKR_OK);
    CU_ASSERT_EQUAL(tst_count(h, "renamed", CKO_PRIVATE_KEY), 1);
    /* computed attributes cannot come from a template */
    CK_MECHANISM km = {CKM_GENERIC_SECRET_KEY_GEN, NULL, 0};
    CK_ULONG len = 32;
    CK_ATTRIBUTE bad[] = {{CKA_VALUE_LEN, &len, sizeof len}, {CKA_LOCAL, &yes, sizeof yes}};
    CU_ASSERT_EQUAL(p11->C_GenerateKey(h, &km, bad, 2, &sec), CKR_ATTRIBUTE_READ_ONLY);

    /* imported keys are not local, never "always sensitive" */
    unsigned char key[32] = {1, 2, 3};
    CU_ASSERT_FATAL(tst_import_hmac(h, key, 32, true, "imp", &sec) == CKR_OK);
    CU_ASSERT_EQUAL(tst_bool_attr(h, sec, CKA_LOCAL), CK_FALSE);
    CU_ASSERT_EQUAL(tst_bool_attr(h, sec, CKA_ALWAYS_SENSITIVE), CK_FALSE);
    CU_ASSERT_EQUAL(tst_bool_attr(h, sec, CKA_NEVER_EXTRACTABLE), CK_FALSE);
    CU_ASSERT_EQUAL(tst_bool_attr(h, sec, CKA_SENSITIVE), CK_TRUE);
    EVP_PKEY *pk;
    unsigned char scalar[32], got[32];
    CU_ASSERT_FATAL(import_ec_scalar(h, &pk, scalar, true, &imp) == CKR_OK);
    CU_ASSERT_EQUAL(tst_bool_attr(h, imp, CKA_LOCAL), CK_FALSE);
    /* not sensitive + extractable: the value reads back, at the curve's
     * width even with a leading zero byte; then lock it down */
    CK_ATTRIBUTE gv = {CKA_VALUE, got, sizeof got};
    CU_ASSERT_EQUAL(p11->C_GetAttributeValue(h, imp, &gv, 1), CKR_OK);
    CU_ASSERT_EQUAL(gv.ulValueLen, 32);
    CU_ASSERT_EQUAL(memcmp(got, scalar, 32), 0);
    CK_ATTRIBUTE s1 = {CKA_SENSITIVE, &yes, sizeof yes};
    CU_ASSERT_EQUAL(p11->C_SetAttributeValue(h, imp, &s1, 1), CKR_OK);
    CU_ASSERT_EQUAL(p11->C_GetAttributeValue(h, imp, &gv, 1), CKR_ATTRIBUTE_SENSITIVE);
    CU_ASSERT_EQUAL(tst_bool_attr(h, imp, CKA_ALWAYS_SENSITIVE), CK_FALSE);
    /* the imported key signs, and OpenSSL's copy verifies */
    unsigned char sig[64], dg[32];
    unsigned dl;
    CK_ULONG sl = sizeof sig;
    sha("SHA256", msg, sizeof msg, dg, &dl);
    CK_MECHANISM m = {CKM_ECDSA, NULL, 0};
    CU_ASSERT_EQUAL(tst_sign(h, &m, imp, dg, dl, sig, &sl), CKR_OK);
    CU_ASSERT(tst_ossl_verify_ecdsa(pk, dg, dl, sig, sl));
    /* persisted custody: the same after a restart */
    CU_ASSERT_FATAL(tst_restart());
    CU_ASSERT_FATAL(tst_user_session(slot, &h));
    CU_ASSERT_FATAL(tst_find_one(h, "renamed", CKO_PRIVATE_KEY, &priv));
    CU_ASSERT_EQUAL(tst_bool_attr(h, priv, CKA_LOCAL), CK_TRUE);
    CU_ASSERT_EQUAL(tst_bool_attr(h, priv, CKA_NEVER_EXTRACTABLE), CK_TRUE);
    CU_ASSERT_FATAL(tst_find_one(h, "imported", CKO_PRIVATE_KEY, &imp));
    CU_ASSERT_EQUAL(tst_bool_attr(h, imp, CKA_LOCAL), CK_FALSE);
    CU_ASSERT_EQUAL(tst_bool_attr(h, imp, CKA_SENSITIVE), CK_TRUE);
    EVP_PKEY_free(pk);
    tst_end(&t);
}

static bool any_file_has(const tst_store *t, const unsigned char *needle, size_t n)
{
    char cmd[1024];
    /* grep -F on binary data is awkward; hex-dump every record instead */
    char hex[200];
    for (size_t i = 0; i < n; i++)
        snprintf(hex + 2 * i, 3, "%02x", needle[i]);
    snprintf(cmd, sizeof cmd,
             "for f in %s/*/*; do od -An -v -tx1 \"$f\" | tr -d ' \\n'; echo; done | grep -q %s",
             t->store, hex);
    return cu_test_sh("%s", cmd) == 0;
}

static void test_persistence_and_encryption(void)
{
    tst_store t;
    CK_SLOT_ID slot;
    CK_SESSION_HANDLE h;
    CK_OBJECT_HANDLE pub, priv, sk, imp;
    unsigned char key[32], scalar[32], sig[64], dg[32];
    unsigned dl;
    CK_ULONG sl;
    CU_ASSERT_FATAL(tst_begin(&t, 0));
    CU_ASSERT_FATAL(tst_init_token("persist", &slot));
    CU_ASSERT_FATAL(tst_user_session(slot, &h));
    CU_ASSERT_FATAL(tst_gen_ec(h, 256, true, "tok", &pub, &priv) == CKR_OK);
    CU_ASSERT_FATAL(tst_gen_ec(h, 256, false, "ses", &pub, &priv) == CKR_OK);
    RAND_bytes(key, sizeof key);
    CU_ASSERT_FATAL(tst_import_hmac(h, key, 32, true, "sas", &sk) == CKR_OK);
    EVP_PKEY *ipk;
    CU_ASSERT_FATAL(import_ec(h, &ipk, scalar, &imp) == CKR_OK);
    /* the secrets are not in any file in the clear */
    CU_ASSERT(any_file_has(&t, (const unsigned char *)"persist", 7)); /* the check works */
    CU_ASSERT_FALSE(any_file_has(&t, key, 32));
    CU_ASSERT_FALSE(any_file_has(&t, scalar, 32));
    EVP_PKEY_free(ipk);

    CU_ASSERT_FATAL(tst_restart());
    CU_ASSERT_FATAL(tst_user_session(slot, &h));
    CU_ASSERT_EQUAL(tst_count(h, "ses", CKO_PRIVATE_KEY), 0);
    CU_ASSERT_FATAL(tst_find_one(h, "tok", CKO_PRIVATE_KEY, &priv));
    CU_ASSERT_FATAL(tst_find_one(h, "tok/pub", CKO_PUBLIC_KEY, &pub));
    EVP_PKEY *pk = tst_pubkey(h, pub);
    sha("SHA256", msg, sizeof msg, dg, &dl);
    CK_MECHANISM m = {CKM_ECDSA, NULL, 0};
    sl = sizeof sig;
    CU_ASSERT_EQUAL(tst_sign(h, &m, priv, dg, dl, sig, &sl), CKR_OK);
    CU_ASSERT(tst_ossl_verify_ecdsa(pk, dg, dl, sig, sl));
    EVP_PKEY_free(pk);
    unsigned char mac[32], ref[32];
    unsigned rl;
    CU_ASSERT_FATAL(tst_find_one(h, "sas", CKO_SECRET_KEY, &sk));
    CK_MECHANISM hm = {CKM_SHA256_HMAC, NULL, 0};
    sl = sizeof mac;
    CU_ASSERT_EQUAL(tst_sign(h, &hm, sk, msg, sizeof msg, mac, &sl), CKR_OK);
    HMAC(EVP_sha256(), key, 32, msg, sizeof msg, ref, &rl);
    CU_ASSERT_EQUAL(memcmp(mac, ref, 32), 0);
    /* destroy is persistent */
    CU_ASSERT_EQUAL(p11->C_DestroyObject(h, sk), CKR_OK);
    CU_ASSERT_FATAL(tst_restart());
    CU_ASSERT_FATAL(tst_user_session(slot, &h));
    CU_ASSERT_EQUAL(tst_count(h, "sas", (CK_ULONG)-1), 0);
    CU_ASSERT_EQUAL(tst_count(h, "tok", (CK_ULONG)-1), 1);
    tst_end(&t);
}

static void test_objects(void)
{
    tst_store t;
    CK_SLOT_ID slot;
    CK_SESSION_HANDLE h;
    CK_OBJECT_HANDLE d1, d2, c1, cp, pub, priv;
    CU_ASSERT_FATAL(tst_begin(&t, 0));
    CU_ASSERT_FATAL(tst_init_token("objs", &slot));
    CU_ASSERT_FATAL(tst_user_session(slot, &h));
    CK_OBJECT_CLASS data = CKO_DATA, cert = CKO_CERTIFICATE;
    CK_CERTIFICATE_TYPE x509 = CKC_X_509;
    CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
    CK_ATTRIBUTE pubdata[] = {{CKA_CLASS, &data, sizeof data}, {CKA_TOKEN, &yes, 1},
                              {CKA_PRIVATE, &no, 1},         {CKA_LABEL, "pd", 2},
                              {CKA_APPLICATION, "app", 3},   {CKA_VALUE, "public value", 12}};
    CK_ATTRIBUTE privdata[] = {{CKA_CLASS, &data, sizeof data}, {CKA_TOKEN, &yes, 1},
                               {CKA_PRIVATE, &yes, 1},        {CKA_LABEL, "sd", 2},
                               {CKA_VALUE, "secret value", 12}};
    CU_ASSERT_EQUAL(p11->C_CreateObject(h, pubdata, 6, &d1), CKR_OK);
    CU_ASSERT_EQUAL(p11->C_CreateObject(h, privdata, 5, &d2), CKR_OK);
    CK_ATTRIBUTE certt[] = {{CKA_CLASS, &cert, sizeof cert}, {CKA_CERTIFICATE_TYPE, &x509, sizeof x509},
                            {CKA_TOKEN, &yes, 1}, {CKA_LABEL, "crt", 3}, {CKA_SUBJECT, "\x30\x00", 2},
                            {CKA_VALUE, "\x30\x03\x02\x01\x01", 5}, {CKA_ID, "\x01", 1}};
    CU_ASSERT_EQUAL(p11->C_CreateObject(h, certt, 7, &c1), CKR_OK);
    CU_ASSERT_EQUAL(p11->C_CreateObject(h, certt, 4, &cp), CKR_TEMPLATE_INCOMPLETE);
    CK_ATTRIBUTE unknown[] = {{CKA_CLASS, &data, sizeof data}, {0x7fff0001UL, "x", 1}};
    CU_ASSERT_EQUAL(p11->C_CreateObject(h, unknown, 2, &cp), CKR_ATTRIBUTE_TYPE_INVALID);
    CK_ATTRIBUTE badbool[] = {{CKA_CLASS, &data, sizeof data}, {CKA_TOKEN, "xx", 2}};
    CU_ASSERT_EQUAL(p11->C_CreateObject(h, badbool, 2, &cp), CKR_ATTRIBUTE_VALUE_INVALID);
    CU_ASSERT_EQUAL(p11->C_CreateObject(h, unknown + 1, 1, &cp), CKR_TEMPLATE_INCOMPLETE);

    CU_ASSERT_FATAL(tst_restart());
    CU_ASSERT_EQUAL(p11->C_OpenSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &h), CKR_OK);
    CU_ASSERT_EQUAL(tst_count(h, NULL, CKO_DATA), 1); /* the private one is hidden */
    CU_ASSERT_FATAL(tst_find_one(h, "pd", CKO_DATA, &d1));
    char buf[64];
    CK_ATTRIBUTE v = {CKA_VALUE, buf, sizeof buf};
    CU_ASSERT_EQUAL(p11->C_GetAttributeValue(h, d1, &v, 1), CKR_OK);
    CU_ASSERT_EQUAL(v.ulValueLen, 12);
    CU_ASSERT_EQUAL(memcmp(buf, "public value", 12), 0);
    /* size query and too-small buffer */
    CK_ATTRIBUTE q = {CKA_VALUE, NULL, 0};
    CU_ASSERT_EQUAL(p11->C_GetAttributeValue(h, d1, &q, 1), CKR_OK);
    CU_ASSERT_EQUAL(q.ulValueLen, 12);
    CK_ATTRIBUTE small = {CKA_VALUE, buf, 3};
    CU_ASSERT_EQUAL(p11->C_GetAttributeValue(h, d1, &small, 1), CKR_BUFFER_TOO_SMALL);
    CK_ATTRIBUTE none = {CKA_MODULUS, buf, sizeof buf};
    CU_ASSERT_EQUAL(p11->C_GetAttributeValue(h, d1, &none, 1), CKR_ATTRIBUTE_TYPE_INVALID);
    CU_ASSERT_EQUAL(p11->C_Login(h, CKU_USER, (CK_UTF8CHAR_PTR)USER_PIN, 4), CKR_OK);
    CU_ASSERT_FATAL(tst_find_one(h, "sd", CKO_DATA, &d2));
    v.ulValueLen = sizeof buf;
    CU_ASSERT_EQUAL(p11->C_GetAttributeValue(h, d2, &v, 1), CKR_OK);
    CU_ASSERT_EQUAL(v.ulValueLen, 12);
    CU_ASSERT_EQUAL(memcmp(buf, "secret value", 12), 0);
    CU_ASSERT_FATAL(tst_find_one(h, "crt", CKO_CERTIFICATE, &c1));
    /* find by several attributes */
    CK_ATTRIBUTE ft[] = {{CKA_CLASS, &cert, sizeof cert}, {CKA_ID, "\x01", 1}};
    CK_OBJECT_HANDLE found[4];
    CK_ULONG nf = 0;
    CU_ASSERT_EQUAL(p11->C_FindObjectsInit(h, ft, 2), CKR_OK);
    CU_ASSERT_EQUAL(p11->C_FindObjectsInit(h, ft, 2), CKR_OPERATION_ACTIVE);
    CU_ASSERT_EQUAL(p11->C_FindObjects(h, found, 4, &nf), CKR_OK);
    CU_ASSERT_EQUAL(nf, 1);
    CU_ASSERT_EQUAL(p11->C_FindObjectsFinal(h), CKR_OK);
    /* copy a token key to a session object; it signs like the original */
    CU_ASSERT_FATAL(tst_gen_ec(h, 256, true, "orig", &pub, &priv) == CKR_OK);
    CK_ATTRIBUTE ct[] = {{CKA_TOKEN, &no, 1}, {CKA_LABEL, "copy", 4}};
    CU_ASSERT_EQUAL(p11->C_CopyObject(h, priv, ct, 2, &cp), CKR_OK);
    CU_ASSERT_EQUAL(tst_bool_attr(h, cp, CKA_TOKEN), CK_FALSE);
    CU_ASSERT_EQUAL(tst_bool_attr(h, cp, CKA_LOCAL), CK_TRUE);
    CK_ATTRIBUTE cbad[] = {{CKA_SENSITIVE, &no, 1}};
    CK_OBJECT_HANDLE cp2;
    CU_ASSERT_EQUAL(p11->C_CopyObject(h, priv, cbad, 1, &cp2), CKR_ATTRIBUTE_READ_ONLY);
    unsigned char sig[64], dg[32];
    unsigned dl;
    CK_ULONG sl = sizeof sig;
    sha("SHA256", msg, sizeof msg, dg, &dl);
    CK_MECHANISM m = {CKM_ECDSA, NULL, 0};
    CU_ASSERT_EQUAL(tst_sign(h, &m, cp, dg, dl, sig, &sl), CKR_OK);
    EVP_PKEY *pk = tst_pubkey(h, pub);
    CU_ASSERT(tst_ossl_verify_ecdsa(pk, dg, dl, sig, sl));
    EVP_PKEY_free(pk);
    /* a read-only session cannot destroy token objects */
    CK_SESSION_HANDLE ro;
    CU_ASSERT_EQUAL(p11->C_OpenSession(slot, CKF_SERIAL_SESSION, NULL, NULL, &ro), CKR_OK);
    CU_ASSERT_EQUAL(p11->C_DestroyObject(ro, d1), CKR_SESSION_READ_ONLY);
    CU_ASSERT_EQUAL(p11->C_DestroyObject(h, d1), CKR_OK);
    CU_ASSERT_EQUAL(p11->C_DestroyObject(h, d1), CKR_OBJECT_HANDLE_INVALID);
    /* closing the session that made it drops a session object */
    CK_SESSION_HANDLE h2;
    CK_OBJECT_HANDLE so;
    CK_ATTRIBUTE sess[] = {{CKA_CLASS, &data, sizeof data}, {CKA_LABEL, "tmp", 3}};
    CU_ASSERT_EQUAL(p11->C_OpenSession(slot, CKF_SERIAL_SESSION, NULL, NULL, &h2), CKR_OK);
    CU_ASSERT_EQUAL(p11->C_CreateObject(h2, sess, 2, &so), CKR_OK);
    CU_ASSERT_EQUAL(tst_count(h, "tmp", CKO_DATA), 1);
    CU_ASSERT_EQUAL(p11->C_CloseSession(h2), CKR_OK);
    CU_ASSERT_EQUAL(tst_count(h, "tmp", CKO_DATA), 0);
    tst_end(&t);
}

static void test_memory_mode(void)
{
    tst_store t;
    CK_SLOT_ID slot;
    CK_SESSION_HANDLE h;
    CK_OBJECT_HANDLE pub, priv;
    CU_ASSERT_FATAL(tst_begin_memory(&t));
    CU_ASSERT_FATAL(tst_init_token("mem", &slot));
    CU_ASSERT_FATAL(tst_user_session(slot, &h));
    CU_ASSERT_EQUAL(tst_gen_ec(h, 256, true, "k", &pub, &priv), CKR_OK);
    CU_ASSERT_EQUAL(tst_count(h, "k", CKO_PRIVATE_KEY), 1);
    CU_ASSERT_EQUAL(p11->C_Logout(h), CKR_OK);
    CU_ASSERT_EQUAL(p11->C_Login(h, CKU_USER, (CK_UTF8CHAR_PTR)USER_PIN, 4), CKR_OK);
    unsigned char sig[64], dg[32] = {1};
    CK_ULONG sl = sizeof sig;
    CK_MECHANISM m = {CKM_ECDSA, NULL, 0};
    CU_ASSERT_FATAL(tst_find_one(h, "k", CKO_PRIVATE_KEY, &priv)); /* a new handle */
    CU_ASSERT_EQUAL(tst_sign(h, &m, priv, dg, 32, sig, &sl), CKR_OK);
    CU_ASSERT_EQUAL(p11->C_SetPIN(h, (CK_UTF8CHAR_PTR)USER_PIN, 4, (CK_UTF8CHAR_PTR)"5678", 4), CKR_OK);
    sl = sizeof sig;
    CU_ASSERT_EQUAL(tst_sign(h, &m, priv, dg, 32, sig, &sl), CKR_OK);
    /* nothing was written: a restart starts empty */
    CU_ASSERT_FATAL(tst_restart());
    CK_ULONG n = 0;
    CU_ASSERT_EQUAL(p11->C_GetSlotList(CK_TRUE, NULL, &n), CKR_OK);
    CU_ASSERT_EQUAL(n, 1);
    CU_ASSERT_FALSE(tst_find_token("mem", &slot));
    tst_end(&t);
}

struct thr {
    CK_SLOT_ID slot;
    CK_OBJECT_HANDLE priv;
    EVP_PKEY *pub;
    int ok;
};

static void *signer(void *arg)
{
    struct thr *a = arg;
    CK_SESSION_HANDLE h;
    if (p11->C_OpenSession(a->slot, CKF_SERIAL_SESSION, NULL, NULL, &h) != CKR_OK)
        return NULL;
    CK_MECHANISM m = {CKM_ECDSA_SHA256, NULL, 0};
    unsigned char dg[32], sig[64];
    unsigned dl;
    sha("SHA256", msg, sizeof msg, dg, &dl);
    for (int i = 0; i < 200; i++) {
        CK_ULONG sl = sizeof sig;
        if (tst_sign(h, &m, a->priv, msg, sizeof msg, sig, &sl) != CKR_OK)
            break;
        if (i % 50 == 0 && !tst_ossl_verify_ecdsa(a->pub, dg, dl, sig, sl))
            break;
        a->ok++;
    }
    p11->C_CloseSession(h);
    return NULL;
}

static void test_threads(void)
{
    tst_store t;
    CK_SLOT_ID slot;
    CK_SESSION_HANDLE h;
    CK_OBJECT_HANDLE pub, priv;
    CU_ASSERT_FATAL(tst_begin(&t, 0));
    CU_ASSERT_FATAL(tst_init_token("thr", &slot));
    CU_ASSERT_FATAL(tst_user_session(slot, &h));
    CU_ASSERT_FATAL(tst_gen_ec(h, 256, true, "k", &pub, &priv) == CKR_OK);
    EVP_PKEY *pk = tst_pubkey(h, pub);
    struct thr a[4];
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        a[i] = (struct thr){slot, priv, pk, 0};
        pthread_create(&th[i], NULL, signer, &a[i]);
    }
    /* meanwhile: object churn on the main session */
    for (int i = 0; i < 20; i++) {
        CK_OBJECT_HANDLE p2, k2;
        CU_ASSERT_EQUAL(tst_gen_ec(h, 256, false, "churn", &p2, &k2), CKR_OK);
        CU_ASSERT_EQUAL(p11->C_DestroyObject(h, k2), CKR_OK);
        CU_ASSERT_EQUAL(p11->C_DestroyObject(h, p2), CKR_OK);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        CU_ASSERT_EQUAL(a[i].ok, 200);
    }
    EVP_PKEY_free(pk);
    tst_end(&t);
}

static void test_fork(void)
{
    tst_store t;
    CK_SLOT_ID slot;
    CK_SESSION_HANDLE h;
    CK_OBJECT_HANDLE pub, priv;
    CU_ASSERT_FATAL(tst_begin(&t, 0));
    CU_ASSERT_FATAL(tst_init_token("fork", &slot));
    CU_ASSERT_FATAL(tst_user_session(slot, &h));
    CU_ASSERT_FATAL(tst_gen_ec(h, 256, true, "k", &pub, &priv) == CKR_OK);
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        /* the copy works as it is ... */
        unsigned char sig[64], dg[32] = {7};
        CK_ULONG sl = sizeof sig;
        CK_MECHANISM m = {CKM_ECDSA, NULL, 0};
        if (tst_sign(h, &m, priv, dg, 32, sig, &sl) != CKR_OK)
            _exit(1);
        /* ... and C_Initialize starts afresh */
        CK_C_INITIALIZE_ARGS args = {.flags = CKF_OS_LOCKING_OK};
        if (p11->C_Initialize(&args) != CKR_OK)
            _exit(2);
        if (p11->C_GetSessionInfo(h, &(CK_SESSION_INFO){0}) != CKR_SESSION_HANDLE_INVALID)
            _exit(3);
        CK_SESSION_HANDLE h2;
        CK_OBJECT_HANDLE k;
        if (!tst_user_session(slot, &h2) || !tst_find_one(h2, "k", CKO_PRIVATE_KEY, &k))
            _exit(4);
        sl = sizeof sig;
        if (tst_sign(h2, &m, k, dg, 32, sig, &sl) != CKR_OK)
            _exit(5);
        p11->C_Finalize(NULL);
        _exit(0);
    }
    int st = 0;
    CU_ASSERT_FATAL(pid > 0);
    waitpid(pid, &st, 0);
    CU_ASSERT(WIFEXITED(st));
    CU_ASSERT_EQUAL(WEXITSTATUS(st), 0);
    /* the parent is unaffected */
    CK_C_INITIALIZE_ARGS args = {.flags = CKF_OS_LOCKING_OK};
    CU_ASSERT_EQUAL(p11->C_Initialize(&args), CKR_CRYPTOKI_ALREADY_INITIALIZED);
    unsigned char sig[64], dg[32] = {7};
    CK_ULONG sl = sizeof sig;
    CK_MECHANISM m = {CKM_ECDSA, NULL, 0};
    CU_ASSERT_EQUAL(tst_sign(h, &m, priv, dg, 32, sig, &sl), CKR_OK);
    tst_end(&t);
}

/* C_Finalize after OpenSSL has cleaned up (an application's atexit order,
 * a provider's teardown) must not crash, as SoftHSM2 does (the token
 * layer's no-finalize quirk): freeing our keys then is still safe with
 * OpenSSL 3.0, and wipes them. */
static void test_finalize_after_openssl_cleanup(void)
{
    tst_store t;
    CK_SLOT_ID slot;
    CK_SESSION_HANDLE h;
    CK_OBJECT_HANDLE pub, priv, hk;
    CU_ASSERT_FATAL(tst_begin(&t, 0));
    CU_ASSERT_FATAL(tst_init_token("late", &slot));
    CU_ASSERT_FATAL(tst_user_session(slot, &h));
    CU_ASSERT_FATAL(tst_gen_ec(h, 256, true, "k", &pub, &priv) == CKR_OK);
    CU_ASSERT_FATAL(tst_gen_hmac(h, 32, false, "h", &hk) == CKR_OK);
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        unsigned char sig[64], dg[32] = {1};
        CK_ULONG sl = sizeof sig;
        CK_MECHANISM m = {CKM_ECDSA, NULL, 0}, hm = {CKM_SHA256_HMAC, NULL, 0};
        if (tst_sign(h, &m, priv, dg, 32, sig, &sl) != CKR_OK)
            _exit(1);
        sl = sizeof sig;
        if (tst_sign(h, &hm, hk, dg, 32, sig, &sl) != CKR_OK)
            _exit(2);
        OPENSSL_cleanup();
        _exit(p11->C_Finalize(NULL) == CKR_OK ? 0 : 3);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    CU_ASSERT(WIFEXITED(st));
    CU_ASSERT_EQUAL(WEXITSTATUS(st), 0);
    tst_end(&t);
}

static void test_info_and_mechanisms(void)
{
    tst_store t;
    CK_INFO info;
    CK_SLOT_ID slot;
    CU_ASSERT_EQUAL(p11->C_GetInfo(&info), CKR_CRYPTOKI_NOT_INITIALIZED);
    /* C_Initialize arguments: reserved must be NULL, mutex callbacks all or
     * none, and callbacks without CKF_OS_LOCKING_OK cannot be honoured */
    CK_C_INITIALIZE_ARGS bad = {.pReserved = &info};
    CU_ASSERT_EQUAL(p11->C_Initialize(&bad), CKR_ARGUMENTS_BAD);
    CK_C_INITIALIZE_ARGS part = {.CreateMutex = (CK_CREATEMUTEX)1};
    CU_ASSERT_EQUAL(p11->C_Initialize(&part), CKR_ARGUMENTS_BAD);
    CK_C_INITIALIZE_ARGS cbs = {.CreateMutex = (CK_CREATEMUTEX)1, .DestroyMutex = (CK_DESTROYMUTEX)1,
                                .LockMutex = (CK_LOCKMUTEX)1, .UnlockMutex = (CK_UNLOCKMUTEX)1};
    CU_ASSERT_EQUAL(p11->C_Initialize(&cbs), CKR_CANT_LOCK);
    CU_ASSERT_EQUAL(p11->C_Finalize(NULL), CKR_CRYPTOKI_NOT_INITIALIZED);
    CU_ASSERT_FATAL(tst_begin(&t, 0));
    CU_ASSERT_EQUAL(p11->C_Finalize(&info), CKR_ARGUMENTS_BAD);
    CU_ASSERT_EQUAL(p11->C_GetInfo(&info), CKR_OK);
    CU_ASSERT_EQUAL(info.cryptokiVersion.major, 2);
    CU_ASSERT_EQUAL(info.cryptokiVersion.minor, 40);
    CU_ASSERT_FATAL(tst_init_token("mech", &slot));
    CK_ULONG n = 0;
    CK_MECHANISM_TYPE list[64];
    CU_ASSERT_EQUAL(p11->C_GetMechanismList(slot, NULL, &n), CKR_OK);
    CU_ASSERT(n >= 10 && n <= 64);
    CU_ASSERT_EQUAL(p11->C_GetMechanismList(slot, list, &n), CKR_OK);
    const CK_MECHANISM_TYPE must[] = {CKM_ECDSA, CKM_ECDSA_SHA256, CKM_ECDSA_SHA384, CKM_RSA_PKCS,
                                      CKM_SHA256_RSA_PKCS, CKM_RSA_PKCS_PSS, CKM_SHA256_RSA_PKCS_PSS,
                                      CKM_SHA256_HMAC, CKM_EC_KEY_PAIR_GEN, CKM_RSA_PKCS_KEY_PAIR_GEN,
                                      CKM_GENERIC_SECRET_KEY_GEN};
    for (size_t i = 0; i < sizeof must / sizeof must[0]; i++) {
        bool found = false;
        for (CK_ULONG j = 0; j < n; j++)
            found |= list[j] == must[i];
        CU_ASSERT(found);
        CK_MECHANISM_INFO mi;
        CU_ASSERT_EQUAL(p11->C_GetMechanismInfo(slot, must[i], &mi), CKR_OK);
    }
    CK_MECHANISM_INFO mi;
    CU_ASSERT_EQUAL(p11->C_GetMechanismInfo(slot, CKM_ECDSA, &mi), CKR_OK);
    CU_ASSERT(mi.flags & CKF_SIGN);
    CU_ASSERT_FALSE(mi.flags & CKF_DECRYPT);
    CU_ASSERT_EQUAL(p11->C_GetMechanismInfo(slot, CKM_AES_CBC, &mi), CKR_MECHANISM_INVALID);
    CU_ASSERT_EQUAL(p11->C_GetMechanismInfo(0x7fffffff, CKM_ECDSA, &mi), CKR_SLOT_ID_INVALID);
    /* everything not listed is refused, not faked */
    CK_MECHANISM enc = {CKM_RSA_PKCS, NULL, 0};
    CU_ASSERT_EQUAL(p11->C_EncryptInit(1, &enc, 1), CKR_FUNCTION_NOT_SUPPORTED);
    /* the legacy parallel-session functions answer as v2.40 asks */
    CU_ASSERT_EQUAL(p11->C_GetFunctionStatus(1), CKR_FUNCTION_NOT_PARALLEL);
    CU_ASSERT_EQUAL(p11->C_CancelFunction(1), CKR_FUNCTION_NOT_PARALLEL);
    unsigned char rnd[32] = {0}, zero[32] = {0};
    CK_SESSION_HANDLE h;
    CU_ASSERT_EQUAL(p11->C_OpenSession(slot, CKF_SERIAL_SESSION, NULL, NULL, &h), CKR_OK);
    CU_ASSERT_EQUAL(p11->C_GenerateRandom(h, rnd, sizeof rnd), CKR_OK);
    CU_ASSERT_NOT_EQUAL(memcmp(rnd, zero, 32), 0);
    tst_end(&t);
}

/* ---- every listed signing mechanism does what C_GetMechanismInfo says ---- */

static const CK_BYTE oid_p256[] = {0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07};
static const CK_BYTE oid_p384[] = {0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22};
static const CK_BYTE oid_p521[] = {0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x23};
static const CK_BYTE oid_p224[] = {0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x21};

static CK_RV gen_ec_oid(CK_SESSION_HANDLE h, const CK_BYTE *oid, size_t n, CK_OBJECT_HANDLE *_pub,
                        CK_OBJECT_HANDLE *_priv)
{
    CK_MECHANISM m = {CKM_EC_KEY_PAIR_GEN, NULL, 0};
    CK_ATTRIBUTE pt[] = {{CKA_EC_PARAMS, (void *)oid, n}};
    return p11->C_GenerateKeyPair(h, &m, pt, 1, NULL, 0, _pub, _priv);
}

/* Imports an RSA key pair made by OpenSSL (any size). */
static CK_RV import_rsa(CK_SESSION_HANDLE h, EVP_PKEY *pk, CK_OBJECT_HANDLE *_priv)
{
    static const char *names[] = {
        OSSL_PKEY_PARAM_RSA_N,         OSSL_PKEY_PARAM_RSA_E,         OSSL_PKEY_PARAM_RSA_D,
        OSSL_PKEY_PARAM_RSA_FACTOR1,   OSSL_PKEY_PARAM_RSA_FACTOR2,   OSSL_PKEY_PARAM_RSA_EXPONENT1,
        OSSL_PKEY_PARAM_RSA_EXPONENT2, OSSL_PKEY_PARAM_RSA_COEFFICIENT1};
    static const CK_ATTRIBUTE_TYPE types[] = {
        CKA_MODULUS, CKA_PUBLIC_EXPONENT, CKA_PRIVATE_EXPONENT, CKA_PRIME_1,
        CKA_PRIME_2, CKA_EXPONENT_1,      CKA_EXPONENT_2,       CKA_COEFFICIENT};
    unsigned char buf[8][1024];
    CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
    CK_KEY_TYPE kt = CKK_RSA;
    CK_ATTRIBUTE t[10] = {{CKA_CLASS, &cls, sizeof cls}, {CKA_KEY_TYPE, &kt, sizeof kt}};
    for (int i = 0; i < 8; i++) {
        BIGNUM *bn = NULL;
        if (EVP_PKEY_get_bn_param(pk, names[i], &bn) != 1)
            return CKR_GENERAL_ERROR;
        int n = BN_bn2bin(bn, buf[i]);
        BN_clear_free(bn);
        t[2 + i] = (CK_ATTRIBUTE){types[i], buf[i], (CK_ULONG)n};
    }
    CK_RV rv = p11->C_CreateObject(h, t, 10, _priv);
    OPENSSL_cleanse(buf, sizeof buf);
    return rv;
}

typedef struct mkey {
    CK_ULONG size;              /* bits (EC, RSA) or bytes (HMAC) */
    CK_OBJECT_HANDLE priv, pub; /* pub == priv for HMAC */
    EVP_PKEY *pk;
    unsigned char hkey[512];
} mkey;

static const char *mech_md(CK_MECHANISM_TYPE t)
{
    switch (t) {
    case CKM_ECDSA_SHA1: case CKM_SHA1_RSA_PKCS: case CKM_SHA1_RSA_PKCS_PSS: return "SHA1";
    case CKM_ECDSA_SHA224: case CKM_SHA224_RSA_PKCS: case CKM_SHA224_RSA_PKCS_PSS: return "SHA224";
    case CKM_ECDSA_SHA256: case CKM_SHA256_RSA_PKCS: case CKM_SHA256_RSA_PKCS_PSS:
    case CKM_SHA256_HMAC: return "SHA256";
    case CKM_ECDSA_SHA384: case CKM_SHA384_RSA_PKCS: case CKM_SHA384_RSA_PKCS_PSS:
    case CKM_SHA384_HMAC: return "SHA384";
    case CKM_ECDSA_SHA512: case CKM_SHA512_RSA_PKCS: case CKM_SHA512_RSA_PKCS_PSS:
    case CKM_SHA512_HMAC: return "SHA512";
    default: return NULL; /* raw: the caller hashes */
    }
}

/* Signs msg (or, for raw mechanisms, what they take) single- and, if the
 * mechanism hashes, multi-part; checks with OpenSSL and with C_Verify. */
static void check_mechanism(CK_SESSION_HANDLE h, CK_MECHANISM_TYPE t, CK_KEY_TYPE kt, const mkey *k)
{
    static const unsigned char sha256_prefix[19] = {0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60,
                                                    0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                                                    0x01, 0x05, 0x00, 0x04, 0x20};
    const char *md = mech_md(t);
    bool pss = t == CKM_RSA_PKCS_PSS || t == CKM_SHA1_RSA_PKCS_PSS ||
               t == CKM_SHA224_RSA_PKCS_PSS || t == CKM_SHA256_RSA_PKCS_PSS ||
               t == CKM_SHA384_RSA_PKCS_PSS || t == CKM_SHA512_RSA_PKCS_PSS;
    const char *hmd = md ? md : "SHA256"; /* the hash behind the signature */
    unsigned char dg[64], tbs[19 + 64], sig[1024], ref[64];
    unsigned dl = 0, rl = 0;
    sha(hmd, msg, sizeof msg, dg, &dl);
    /* what the mechanism is given: the message, a digest, or a DigestInfo */
    const unsigned char *in = msg;
    size_t inl = sizeof msg;
    if (md == NULL && t == CKM_RSA_PKCS) {
        memcpy(tbs, sha256_prefix, 19);
        memcpy(tbs + 19, dg, dl);
        in = tbs;
        inl = 19 + dl;
    } else if (md == NULL) {
        in = dg;
        inl = dl;
    }
    static const struct { const char *md; CK_MECHANISM_TYPE h, mgf; } pm[] = {
        {"SHA1", CKM_SHA_1, CKG_MGF1_SHA1}, {"SHA224", CKM_SHA224, CKG_MGF1_SHA224},
        {"SHA256", CKM_SHA256, CKG_MGF1_SHA256}, {"SHA384", CKM_SHA384, CKG_MGF1_SHA384},
        {"SHA512", CKM_SHA512, CKG_MGF1_SHA512}};
    CK_RSA_PKCS_PSS_PARAMS pp = {0, 0, dl};
    for (size_t i = 0; i < 5; i++)
        if (strcmp(pm[i].md, hmd) == 0) {
            pp.hashAlg = pm[i].h;
            pp.mgf = pm[i].mgf;
        }
    CK_MECHANISM m = {t, pss ? &pp : NULL, pss ? sizeof pp : 0};
    for (int multi = 0; multi <= (md != NULL); multi++) {
        CK_ULONG sl = sizeof sig;
        CK_RV rv;
        if (!multi) {
            rv = tst_sign(h, &m, k->priv, in, inl, sig, &sl);
        } else {
            rv = p11->C_SignInit(h, &m, k->priv);
            if (rv == CKR_OK)
                rv = p11->C_SignUpdate(h, (CK_BYTE_PTR)in, 7);
            if (rv == CKR_OK)
                rv = p11->C_SignUpdate(h, (CK_BYTE_PTR)in + 7, inl - 7);
            if (rv == CKR_OK)
                rv = p11->C_SignFinal(h, sig, &sl);
        }
        CU_ASSERT_EQUAL(rv, CKR_OK);
        if (rv != CKR_OK) {
            fprintf(stderr, "mechanism 0x%lx, key size %lu, %s-part: 0x%lx\n", t, k->size,
                    multi ? "multi" : "single", rv);
            continue;
        }
        bool ok;
        if (kt == CKK_EC) {
            ok = sl == 2 * ((k->size + 7) / 8) && tst_ossl_verify_ecdsa(k->pk, dg, dl, sig, sl);
        } else if (kt == CKK_RSA) {
            ok = sl == k->size / 8 && tst_ossl_verify(k->pk, hmd, pss, msg, sizeof msg, sig, sl);
        } else {
            HMAC(EVP_get_digestbyname(hmd), k->hkey, (int)k->size, msg, sizeof msg, ref, &rl);
            ok = sl == rl && memcmp(sig, ref, rl) == 0;
        }
        CU_ASSERT(ok);
        if (!ok)
            fprintf(stderr, "mechanism 0x%lx, key size %lu: OpenSSL disagrees\n", t, k->size);
        CU_ASSERT_EQUAL(p11->C_VerifyInit(h, &m, k->pub), CKR_OK);
        if (!multi) {
            CU_ASSERT_EQUAL(p11->C_Verify(h, (CK_BYTE_PTR)in, inl, sig, sl), CKR_OK);
        } else {
            CU_ASSERT_EQUAL(p11->C_VerifyUpdate(h, (CK_BYTE_PTR)in, inl), CKR_OK);
            CU_ASSERT_EQUAL(p11->C_VerifyFinal(h, sig, sl), CKR_OK);
        }
    }
    if (md == NULL) { /* raw mechanisms are single-part only */
        CU_ASSERT_EQUAL(p11->C_SignInit(h, &m, k->priv), CKR_OK);
        CU_ASSERT_NOT_EQUAL(p11->C_SignUpdate(h, (CK_BYTE_PTR)in, inl), CKR_OK);
    }
}

static void test_mechanisms_truthful(void)
{
    tst_store t;
    CK_SLOT_ID slot;
    CK_SESSION_HANDLE h;
    CK_MECHANISM_TYPE list[64];
    CK_ULONG n = 64, checked = 0;
    CU_ASSERT_FATAL(tst_begin(&t, 0));
    CU_ASSERT_FATAL(tst_init_token("truth", &slot));
    CU_ASSERT_FATAL(tst_user_session(slot, &h));
    CU_ASSERT_EQUAL_FATAL(p11->C_GetMechanismList(slot, list, &n), CKR_OK);
    mkey keys[8];
    size_t nkeys = 0;
    memset(keys, 0, sizeof keys);
    for (CK_ULONG i = 0; i < n; i++) {
        CK_MECHANISM_INFO mi;
        CU_ASSERT_EQUAL_FATAL(p11->C_GetMechanismInfo(slot, list[i], &mi), CKR_OK);
        /* nothing but signing and generation is claimed */
        CU_ASSERT_EQUAL(mi.flags & ~(CKF_SIGN | CKF_VERIFY | CKF_GENERATE | CKF_GENERATE_KEY_PAIR |
                                     CKF_EC_F_P | CKF_EC_NAMEDCURVE | CKF_EC_UNCOMPRESS), 0);
        if (!(mi.flags & CKF_SIGN)) {
            CU_ASSERT(mi.flags & (CKF_GENERATE | CKF_GENERATE_KEY_PAIR));
            continue;
        }
        CU_ASSERT(mi.flags & CKF_VERIFY);
        CK_KEY_TYPE kt;
        if (list[i] >= CKM_ECDSA && list[i] <= CKM_ECDSA_SHA512)
            kt = CKK_EC;
        else if (list[i] == CKM_SHA256_HMAC || list[i] == CKM_SHA384_HMAC ||
                 list[i] == CKM_SHA512_HMAC)
            kt = CKK_GENERIC_SECRET;
        else
            kt = CKK_RSA;
        CK_ULONG sizes[2] = {mi.ulMinKeySize, mi.ulMaxKeySize};
        for (int e = 0; e < 2; e++) {
            mkey *k = NULL;
            for (size_t j = 0; j < nkeys; j++)
                if (keys[j].size == sizes[e] && (kt == CKK_GENERIC_SECRET) == (keys[j].pk == NULL))
                    k = &keys[j];
            if (k == NULL) {
                CU_ASSERT_FATAL(nkeys < 8);
                k = &keys[nkeys++];
                k->size = sizes[e];
                CK_RV rv;
                if (kt == CKK_EC) {
                    CU_ASSERT_FATAL(k->size == 256 || k->size == 384);
                    rv = tst_gen_ec(h, (int)k->size, false, "m", &k->pub, &k->priv);
                } else if (kt == CKK_RSA) {
                    rv = tst_gen_rsa(h, k->size, false, "m", &k->pub, &k->priv);
                } else {
                    CU_ASSERT_FATAL(k->size <= sizeof k->hkey);
                    RAND_bytes(k->hkey, (int)k->size);
                    rv = tst_import_hmac(h, k->hkey, k->size, false, "m", &k->priv);
                    k->pub = k->priv;
                }
                CU_ASSERT_EQUAL_FATAL(rv, CKR_OK);
                if (kt != CKK_GENERIC_SECRET) {
                    k->pk = tst_pubkey(h, k->pub);
                    CU_ASSERT_FATAL(k->pk != NULL);
                    CU_ASSERT_EQUAL(EVP_PKEY_get_bits(k->pk), (int)k->size);
                }
            }
            check_mechanism(h, list[i], kt, k);
        }
        checked++;
    }
    CU_ASSERT(checked >= 20);

    /* just outside the advertised sizes: refused */
    CK_OBJECT_HANDLE pub, priv;
    CU_ASSERT_EQUAL(gen_ec_oid(h, oid_p256, sizeof oid_p256, &pub, &priv), CKR_OK);
    CU_ASSERT_EQUAL(gen_ec_oid(h, oid_p384, sizeof oid_p384, &pub, &priv), CKR_OK);
    CU_ASSERT_EQUAL(gen_ec_oid(h, oid_p224, sizeof oid_p224, &pub, &priv), CKR_CURVE_NOT_SUPPORTED);
    CU_ASSERT_EQUAL(gen_ec_oid(h, oid_p521, sizeof oid_p521, &pub, &priv), CKR_CURVE_NOT_SUPPORTED);
    CU_ASSERT_EQUAL(tst_gen_rsa(h, 2047, false, "x", &pub, &priv), CKR_KEY_SIZE_RANGE);
    CU_ASSERT_EQUAL(tst_gen_rsa(h, 4097, false, "x", &pub, &priv), CKR_KEY_SIZE_RANGE);
    CK_MECHANISM rm = {CKM_SHA256_RSA_PKCS, NULL, 0}, hm = {CKM_SHA256_HMAC, NULL, 0};
    EVP_PKEY *small = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2040);
    CU_ASSERT_FATAL(small != NULL);
    CU_ASSERT_EQUAL_FATAL(import_rsa(h, small, &priv), CKR_OK);
    CU_ASSERT_EQUAL(p11->C_SignInit(h, &rm, priv), CKR_KEY_SIZE_RANGE);
    EVP_PKEY_free(small);
    unsigned char hk[513] = {3};
    CK_OBJECT_HANDLE k15, k513, g;
    CU_ASSERT_EQUAL_FATAL(tst_import_hmac(h, hk, 15, false, "h15", &k15), CKR_OK);
    CU_ASSERT_EQUAL_FATAL(tst_import_hmac(h, hk, 513, false, "h513", &k513), CKR_OK);
    CU_ASSERT_EQUAL(p11->C_SignInit(h, &hm, k15), CKR_KEY_SIZE_RANGE);
    CU_ASSERT_EQUAL(p11->C_SignInit(h, &hm, k513), CKR_KEY_SIZE_RANGE);
    /* generic secret generation: sizes in bits, as advertised */
    CK_MECHANISM_INFO gi;
    CU_ASSERT_EQUAL(p11->C_GetMechanismInfo(slot, CKM_GENERIC_SECRET_KEY_GEN, &gi), CKR_OK);
    CU_ASSERT_EQUAL(tst_gen_hmac(h, gi.ulMinKeySize / 8, false, "g", &g), CKR_OK);
    CU_ASSERT_EQUAL(tst_gen_hmac(h, gi.ulMaxKeySize / 8, false, "g", &g), CKR_OK);
    CU_ASSERT_EQUAL(tst_gen_hmac(h, gi.ulMinKeySize / 8 - 1, false, "g", &g), CKR_KEY_SIZE_RANGE);
    CU_ASSERT_EQUAL(tst_gen_hmac(h, gi.ulMaxKeySize / 8 + 1, false, "g", &g), CKR_KEY_SIZE_RANGE);
    CK_MECHANISM_INFO ri;
    CU_ASSERT_EQUAL(p11->C_GetMechanismInfo(slot, CKM_RSA_PKCS_KEY_PAIR_GEN, &ri), CKR_OK);
    CU_ASSERT_EQUAL(ri.ulMinKeySize, 2048);
    CU_ASSERT_EQUAL(ri.ulMaxKeySize, 4096);
    for (size_t j = 0; j < nkeys; j++)
        EVP_PKEY_free(keys[j].pk);
    tst_end(&t);
}

int main(void)
{
    tst_load_module();
    static const cu_test_case cases[] = {
        {"info and mechanisms", test_info_and_mechanisms},
        {"every listed signing mechanism works at its smallest and largest key size",
         test_mechanisms_truthful},
        {"slots and token init", test_slots_and_init},
        {"login and session rules", test_login_rules},
        {"logout ends private session objects; no public or always-authenticate keys",
         test_logout_ends_private_session_objects},
        {"EC P-256/P-384 sign and verify (checked by OpenSSL)", test_ec_sign},
        {"RSA PKCS#1 and PSS sign and verify (checked by OpenSSL)", test_rsa_sign},
        {"HMAC equals OpenSSL's HMAC", test_hmac},
        {"custody attributes are truthful and persist", test_custody_attrs},
        {"persistence; secrets never on disk in the clear", test_persistence_and_encryption},
        {"data, certificate, copy, destroy, find", test_objects},
        {"memory-only mode", test_memory_mode},
        {"four threads signing while objects churn", test_threads},
        {"fork: the child re-initializes", test_fork},
        {"C_Finalize after OPENSSL_cleanup does not crash", test_finalize_after_openssl_cleanup},
        {NULL, NULL},
    };
    if (cu_test_add_suite("soft_module", NULL, NULL, cases) != 0)
        return 2;
    return cu_test_run();
}
