/* custos-soft under bad input and faults: wrong PINs until locked, edited,
 * swapped and truncated records, an unwritable store, a PIN changed under
 * another session or process, several processes on one store, and a
 * process killed in the middle of a PIN change. */
#include "cu_test.h"
#include "soft.h"
#include "soft_helpers.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/ptrace.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static unsigned char *slurp(const char *path, size_t *len)
{
    *len = 0;
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    unsigned char *b = malloc(1 << 20);
    *len = fread(b, 1, 1 << 20, f);
    fclose(f);
    return b;
}

static bool spit(const char *path, const void *b, size_t len)
{
    FILE *f = fopen(path, "wb");
    if (f == NULL)
        return false;
    bool ok = fwrite(b, 1, len, f) == len;
    return fclose(f) == 0 && ok;
}

/* "obj-<id>" of a record file path */
static const char *obj_name(const char *path, char *out, size_t n)
{
    const char *b = strrchr(path, '/');
    snprintf(out, n, "%.36s", b ? b + 1 : path);
    return out;
}

static CK_RV sign_once(CK_SESSION_HANDLE h, CK_OBJECT_HANDLE k)
{
    unsigned char sig[128], dg[32] = {1, 2, 3};
    CK_ULONG sl = sizeof sig;
    CK_MECHANISM m = {CKM_ECDSA, NULL, 0};
    return tst_sign(h, &m, k, dg, sizeof dg, sig, &sl);
}

static void test_wrong_pin_until_locked(void)
{
    tst_store t;
    CK_SLOT_ID slot;
    CK_SESSION_HANDLE h;
    CK_TOKEN_INFO ti;
    CK_OBJECT_HANDLE pub, priv;
    CU_ASSERT_FATAL(tst_begin(&t, 3));
    CU_ASSERT_FATAL(tst_init_token("lock", &slot));
    CU_ASSERT_FATAL(tst_user_session(slot, &h));
    CU_ASSERT_FATAL(tst_gen_ec(h, 256, true, "k", &pub, &priv) == CKR_OK);
    CU_ASSERT_EQUAL(p11->C_Logout(h), CKR_OK);

    /* one wrong, then right: the counter resets */
    CU_ASSERT_EQUAL(p11->C_Login(h, CKU_USER, (CK_UTF8CHAR_PTR)"0000", 4), CKR_PIN_INCORRECT);
    CU_ASSERT_EQUAL(p11->C_GetTokenInfo(slot, &ti), CKR_OK);
    CU_ASSERT(ti.flags & CKF_USER_PIN_COUNT_LOW);
    CU_ASSERT_EQUAL(p11->C_Login(h, CKU_USER, (CK_UTF8CHAR_PTR)USER_PIN, 4), CKR_OK);
    CU_ASSERT_EQUAL(p11->C_GetTokenInfo(slot, &ti), CKR_OK);
    CU_ASSERT_FALSE(ti.flags & (CKF_USER_PIN_COUNT_LOW | CKF_USER_PIN_FINAL_TRY | CKF_USER_PIN_LOCKED));
    CU_ASSERT_EQUAL(p11->C_Logout(h), CKR_OK);

    /* three wrong: locked, even for the right PIN, and across a restart */
    CU_ASSERT_EQUAL(p11->C_Login(h, CKU_USER, (CK_UTF8CHAR_PTR)"0000", 4), CKR_PIN_INCORRECT);
    CU_ASSERT_EQUAL(p11->C_Login(h, CKU_USER, (CK_UTF8CHAR_PTR)"00000", 5), CKR_PIN_INCORRECT);
    CU_ASSERT_EQUAL(p11->C_GetTokenInfo(slot, &ti), CKR_OK);
    CU_ASSERT(ti.flags & CKF_USER_PIN_FINAL_TRY);
    CU_ASSERT_EQUAL(p11->C_Login(h, CKU_USER, (CK_UTF8CHAR_PTR)"000000", 6), CKR_PIN_INCORRECT);
    CU_ASSERT_EQUAL(p11->C_GetTokenInfo(slot, &ti), CKR_OK);
    CU_ASSERT(ti.flags & CKF_USER_PIN_LOCKED);
    CU_ASSERT_EQUAL(p11->C_Login(h, CKU_USER, (CK_UTF8CHAR_PTR)USER_PIN, 4), CKR_PIN_LOCKED);
    CU_ASSERT(tst_log_has(&t, "wrong user PIN (3 of 3)"));
    CU_ASSERT_FATAL(tst_restart());
    CU_ASSERT_EQUAL(p11->C_OpenSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &h), CKR_OK);
    CU_ASSERT_EQUAL(p11->C_Login(h, CKU_USER, (CK_UTF8CHAR_PTR)USER_PIN, 4), CKR_PIN_LOCKED);
    CU_ASSERT_EQUAL(p11->C_GetTokenInfo(slot, &ti), CKR_OK);
    CU_ASSERT(ti.flags & CKF_USER_PIN_LOCKED);

    /* the SO resets the PIN; the SO never held the user's keys, so the
     * keys sealed under the old PIN are gone (documented) */
    CU_ASSERT_EQUAL(p11->C_Login(h, CKU_SO, (CK_UTF8CHAR_PTR)"87654321", 8), CKR_PIN_INCORRECT);
    CU_ASSERT_EQUAL(p11->C_Login(h, CKU_SO, (CK_UTF8CHAR_PTR)SO_PIN, strlen(SO_PIN)), CKR_OK);
    CU_ASSERT_EQUAL(p11->C_InitPIN(h, (CK_UTF8CHAR_PTR)"4321", 4), CKR_OK);
    CU_ASSERT_EQUAL(p11->C_Logout(h), CKR_OK);
    CU_ASSERT_EQUAL(p11->C_GetTokenInfo(slot, &ti), CKR_OK);
    CU_ASSERT_FALSE(ti.flags & CKF_USER_PIN_LOCKED);
    CU_ASSERT_EQUAL(p11->C_Login(h, CKU_USER, (CK_UTF8CHAR_PTR)"4321", 4), CKR_OK);
    CU_ASSERT_EQUAL(tst_count(h, "k", CKO_PRIVATE_KEY), 0);
    CU_ASSERT_EQUAL(tst_count(h, "k/pub", CKO_PUBLIC_KEY), 1);
    CU_ASSERT_EQUAL(tst_gen_ec(h, 256, true, "k2", &pub, &priv), CKR_OK);
    CU_ASSERT_EQUAL(sign_once(h, priv), CKR_OK);
    tst_end(&t);
}

/* Makes a token with two keys, "victim" and "bystander"; returns the path
 * of the victim's private-key record. */
static bool two_keys(tst_store *t, CK_SLOT_ID *slot, char *path, size_t n)
{
    CK_SESSION_HANDLE h;
    CK_OBJECT_HANDLE pub, priv;
    if (!tst_begin(t, 0) || !tst_init_token("faults", slot) || !tst_user_session(*slot, &h))
        return false;
    if (tst_gen_ec(h, 256, true, "victim", &pub, &priv) != CKR_OK ||
        tst_gen_ec(h, 256, true, "bystander", &pub, &priv) != CKR_OK)
        return false;
    return tst_object_file(t, "victim", path, n);
}

/* After a restart: the victim is not usable, the bystander is. */
static void expect_victim_gone(tst_store *t, CK_SLOT_ID slot, const char *why, const char *path)
{
    CK_SESSION_HANDLE h;
    CK_OBJECT_HANDLE k;
    char name[64];
    CU_ASSERT_FATAL(tst_restart());
    CU_ASSERT_FATAL(tst_user_session(slot, &h));
    CU_ASSERT_EQUAL(tst_count(h, "victim", CKO_PRIVATE_KEY), 0);
    CU_ASSERT_FATAL(tst_find_one(h, "bystander", CKO_PRIVATE_KEY, &k));
    CU_ASSERT_EQUAL(sign_once(h, k), CKR_OK);
    /* the log names the object and says why */
    CU_ASSERT(tst_log_has(t, obj_name(path, name, sizeof name)));
    CU_ASSERT(tst_log_has(t, why));
}

static void test_flipped_byte(void)
{
    tst_store t;
    CK_SLOT_ID slot;
    char path[1024];
    size_t len = 0;
    CU_ASSERT_FATAL(two_keys(&t, &slot, path, sizeof path));
    unsigned char *orig = slurp(path, &len);
    CU_ASSERT_FATAL(orig != NULL && len > 100);
    size_t pos[] = {3, len / 3, len / 2, len - 40, len - 1};
    for (size_t i = 0; i < sizeof pos / sizeof pos[0]; i++) {
        unsigned char *b = malloc(len);
        memcpy(b, orig, len);
        b[pos[i]] ^= 0x01;
        CU_ASSERT_FATAL(spit(path, b, len));
        free(b);
        unlink(t.log);
        expect_victim_gone(&t, slot, "object ignored", path);
    }
    /* restored, it loads again */
    CU_ASSERT_FATAL(spit(path, orig, len));
    CK_SESSION_HANDLE h;
    CU_ASSERT_FATAL(tst_restart());
    CU_ASSERT_FATAL(tst_user_session(slot, &h));
    CU_ASSERT_EQUAL(tst_count(h, "victim", CKO_PRIVATE_KEY), 1);
    free(orig);
    tst_end(&t);
}

/* Integrity failures are reported with the debug log off (to syslog by
 * default; tst_begin points CUSTOS_SOFT_INTEGRITY_LOG at a file), naming
 * the object, once per C_Initialize; ordinary events are not reported. */
static void test_integrity_failures_reported(void)
{
    tst_store t;
    CK_SLOT_ID slot, s2;
    CK_SESSION_HANDLE h;
    char path[1024], name[64], tokpath[1100];
    size_t len = 0;
    CU_ASSERT_FATAL(two_keys(&t, &slot, path, sizeof path));
    obj_name(path, name, sizeof name);
    unsigned char *orig = slurp(path, &len);
    CU_ASSERT_FATAL(orig != NULL && len > 100);
    orig[len / 2] ^= 0x04;
    CU_ASSERT_FATAL(spit(path, orig, len));
    unsetenv("CUSTOS_SOFT_DEBUG");
    CU_ASSERT_FATAL(tst_restart());
    CU_ASSERT_EQUAL(p11->C_OpenSession(slot, CKF_SERIAL_SESSION, NULL, NULL, &h), CKR_OK);
    CU_ASSERT_EQUAL(p11->C_Login(h, CKU_USER, (CK_UTF8CHAR_PTR)"0000", 4), CKR_PIN_INCORRECT);
    CU_ASSERT_EQUAL(p11->C_Login(h, CKU_USER, (CK_UTF8CHAR_PTR)USER_PIN, 4), CKR_OK);
    CU_ASSERT_EQUAL(tst_count(h, "victim", CKO_PRIVATE_KEY), 0);
    CU_ASSERT_EQUAL(tst_count(h, "bystander", CKO_PRIVATE_KEY), 1);
    CU_ASSERT_EQUAL(tst_file_lines(t.integrity, name), 1);
    CU_ASSERT_EQUAL(tst_file_lines(t.integrity, "digest mismatch"), 1);
    CU_ASSERT_EQUAL(tst_file_lines(t.integrity, "PIN"), 0);
    CU_ASSERT_FALSE(tst_log_has(&t, name)); /* the debug log is off */
    /* re-scans do not repeat it; the next C_Initialize does */
    CU_ASSERT_FATAL(tst_user_session(slot, &h));
    CU_ASSERT_EQUAL(tst_count(h, NULL, CKO_PRIVATE_KEY), 1);
    CU_ASSERT_EQUAL(tst_file_lines(t.integrity, name), 1);
    CU_ASSERT_FATAL(tst_restart());
    CU_ASSERT_EQUAL(tst_file_lines(t.integrity, name), 2);
    /* a broken token record is named too */
    char *slash = strrchr(path, '/');
    snprintf(tokpath, sizeof tokpath, "%.*s/token.der", (int)(slash - path), path);
    CU_ASSERT_FATAL(spit(tokpath, "", 0));
    CU_ASSERT_FATAL(tst_restart());
    CU_ASSERT_FALSE(tst_find_token("faults", &s2));
    CU_ASSERT_EQUAL(tst_file_lines(t.integrity, tokpath), 1);
    free(orig);
    tst_end(&t);
}

/* Edits a record with a valid digest (what an attacker with write access
 * can do): the AES-GCM associated data catches it. */
static void test_forged_and_swapped_record(void)
{
    tst_store t;
    CK_SLOT_ID slot;
    char path[1024], other[1100];
    size_t len = 0;
    CU_ASSERT_FATAL(two_keys(&t, &slot, path, sizeof path));
    unsigned char *orig = slurp(path, &len);
    cs_object_rec r;
    CU_ASSERT_EQUAL_FATAL(cs_object_rec_decode(orig, len, &r), CS_REC_OK);
    CU_ASSERT_FATAL(r.has_secret);
    /* allow a use the key never had */
    cs_attrs_set_bool(&r.attrs, CKA_DECRYPT, CK_TRUE);
    unsigned char *der = NULL;
    size_t dl = 0;
    CU_ASSERT_EQUAL_FATAL(cs_object_rec_encode(&r, NULL, NULL, 0, &der, &dl), CS_REC_OK);
    CU_ASSERT_FATAL(spit(path, der, dl));
    OPENSSL_free(der);
    unlink(t.log);
    expect_victim_gone(&t, slot, "secret fails authentication", path);

    /* the same record under another object's name: refused */
    CU_ASSERT_FATAL(spit(path, orig, len));
    char *slash = strrchr(path, '/');
    snprintf(other, sizeof other, "%.*s/obj-ffffffffffffffffffffffffffffffff.der",
             (int)(slash - path), path);
    CU_ASSERT_FATAL(spit(other, orig, len));
    unlink(t.log);
    CK_SESSION_HANDLE h;
    CU_ASSERT_FATAL(tst_restart());
    CU_ASSERT_FATAL(tst_user_session(slot, &h));
    CU_ASSERT_EQUAL(tst_count(h, "victim", CKO_PRIVATE_KEY), 1); /* only the real one */
    CU_ASSERT(tst_log_has(&t, "obj-ffffffffffffffffffffffffffffffff"));
    CU_ASSERT(tst_log_has(&t, "record belongs to"));
    cs_object_rec_clear(&r);
    free(orig);
    tst_end(&t);
}

/* An imported key's record re-encoded (valid digest) as public and with
 * custody flags it never earned: neither listed nor readable before login
 * (only the secret's authentication vouches for attributes), and rejected
 * at login. */
static void test_forged_custody_hidden(void)
{
    tst_store t;
    CK_SLOT_ID slot;
    CK_SESSION_HANDLE h;
    CK_OBJECT_HANDLE k, pub, priv;
    char path[1024], name[64];
    size_t len = 0;
    unsigned char key[32] = {1};
    CU_ASSERT_FATAL(tst_begin(&t, 0));
    CU_ASSERT_FATAL(tst_init_token("forge", &slot));
    CU_ASSERT_FATAL(tst_user_session(slot, &h));
    CU_ASSERT_FATAL(tst_import_hmac(h, key, sizeof key, true, "imp", &k) == CKR_OK);
    CU_ASSERT_FATAL(tst_gen_ec(h, 256, true, "genuine", &pub, &priv) == CKR_OK);
    CU_ASSERT_EQUAL(tst_bool_attr(h, k, CKA_LOCAL), CK_FALSE);
    CU_ASSERT_FATAL(tst_object_file(&t, "imp", path, sizeof path));
    unsigned char *orig = slurp(path, &len);
    cs_object_rec r;
    CU_ASSERT_EQUAL_FATAL(cs_object_rec_decode(orig, len, &r), CS_REC_OK);
    cs_attrs_set_bool(&r.attrs, CKA_PRIVATE, CK_FALSE);
    cs_attrs_set_bool(&r.attrs, CKA_LOCAL, CK_TRUE);
    cs_attrs_set_bool(&r.attrs, CKA_ALWAYS_SENSITIVE, CK_TRUE);
    cs_attrs_set_bool(&r.attrs, CKA_NEVER_EXTRACTABLE, CK_TRUE);
    unsigned char *der = NULL;
    size_t dl = 0;
    CU_ASSERT_EQUAL_FATAL(cs_object_rec_encode(&r, NULL, NULL, 0, &der, &dl), CS_REC_OK);
    CU_ASSERT_FATAL(spit(path, der, dl));
    OPENSSL_free(der);
    cs_object_rec_clear(&r);
    unlink(t.log);

    CU_ASSERT_FATAL(tst_restart());
    CU_ASSERT_EQUAL(p11->C_OpenSession(slot, CKF_SERIAL_SESSION, NULL, NULL, &h), CKR_OK);
    CU_ASSERT_EQUAL(tst_count(h, "imp", (CK_ULONG)-1), 0);
    CU_ASSERT_EQUAL(tst_count(h, NULL, CKO_SECRET_KEY), 0);
    /* no handle reaches it either */
    for (CK_OBJECT_HANDLE o = 1; o < 64; o++) {
        CK_OBJECT_CLASS c = CKO_DATA;
        CK_ATTRIBUTE a = {CKA_CLASS, &c, sizeof c};
        if (p11->C_GetAttributeValue(h, o, &a, 1) == CKR_OK)
            CU_ASSERT_EQUAL(c, CKO_PUBLIC_KEY);
    }
    CU_ASSERT_EQUAL(tst_count(h, "genuine/pub", CKO_PUBLIC_KEY), 1);
    CU_ASSERT_EQUAL(p11->C_Login(h, CKU_USER, (CK_UTF8CHAR_PTR)USER_PIN, 4), CKR_OK);
    CU_ASSERT_EQUAL(tst_count(h, "imp", (CK_ULONG)-1), 0);
    CU_ASSERT_EQUAL(tst_count(h, "genuine", CKO_PRIVATE_KEY), 1);
    CU_ASSERT(tst_log_has(&t, obj_name(path, name, sizeof name)));
    CU_ASSERT(tst_log_has(&t, "secret fails authentication"));
    /* the genuine record, restored, shows its true custody after login only */
    CU_ASSERT_FATAL(spit(path, orig, len));
    CU_ASSERT_FATAL(tst_restart());
    CU_ASSERT_EQUAL(p11->C_OpenSession(slot, CKF_SERIAL_SESSION, NULL, NULL, &h), CKR_OK);
    CU_ASSERT_EQUAL(tst_count(h, "imp", (CK_ULONG)-1), 0);
    CU_ASSERT_EQUAL(p11->C_Login(h, CKU_USER, (CK_UTF8CHAR_PTR)USER_PIN, 4), CKR_OK);
    CU_ASSERT_FATAL(tst_find_one(h, "imp", CKO_SECRET_KEY, &k));
    CU_ASSERT_EQUAL(tst_bool_attr(h, k, CKA_LOCAL), CK_FALSE);
    CU_ASSERT_EQUAL(tst_bool_attr(h, k, CKA_NEVER_EXTRACTABLE), CK_FALSE);
    free(orig);
    tst_end(&t);
}

/* A PIN slot stored with fewer iterations than the floor (an older
 * version's test store): the right PIN still opens it, and the login
 * re-wraps the same data key with the configured count. */
/* The token's data key, as the user PIN opens it (what the module does at
 * login; nkeys == 1). The wrapping's associated data is token.c's. */
static bool user_dek(const char *tokpath, const char *pin, unsigned char dek[CS_KEY_LEN])
{
    size_t len = 0, dl = 0;
    unsigned char *der = slurp(tokpath, &len), kek[CS_KEY_LEN], *pt = NULL;
    cs_token_rec r;
    char aad[96];
    if (der == NULL || cs_token_rec_decode(der, len, &r) != CS_REC_OK) {
        free(der);
        return false;
    }
    free(der);
    int al = snprintf(aad, sizeof aad, "custos-soft key|%s|user|%u", r.serial,
                      r.user.keys[0].generation);
    bool ok = r.user.nkeys == 1 &&
              cs_pbkdf2((const unsigned char *)pin, strlen(pin), r.user.salt, r.user.iterations,
                        kek) == CKR_OK &&
              cs_open(kek, aad, (size_t)al, &r.user.keys[0], &pt, &dl) == CKR_OK &&
              dl == CS_KEY_LEN;
    if (ok)
        memcpy(dek, pt, CS_KEY_LEN);
    if (pt != NULL)
        OPENSSL_clear_free(pt, dl);
    OPENSSL_cleanse(kek, sizeof kek);
    cs_token_rec_clear(&r);
    return ok;
}

/* A key asking for a context-specific login, sealed with the right data
 * key (made by some other tool that has the PIN): the module has no such
 * login, so the key is listed but never signs. */
static void test_always_authenticate_key_does_not_sign(void)
{
    tst_store t;
    CK_SLOT_ID slot;
    CK_SESSION_HANDLE h;
    CK_OBJECT_HANDLE k;
    char path[1024], tokpath[1100];
    unsigned char dek[CS_KEY_LEN], *pt = NULL;
    size_t len = 0, pl = 0;
    CU_ASSERT_FATAL(two_keys(&t, &slot, path, sizeof path));
    p11->C_Finalize(NULL);
    snprintf(tokpath, sizeof tokpath, "%.*s/token.der", (int)(strrchr(path, '/') - path), path);
    CU_ASSERT_FATAL(user_dek(tokpath, USER_PIN, dek));
    unsigned char *der = slurp(path, &len);
    cs_object_rec r;
    CU_ASSERT_EQUAL_FATAL(cs_object_rec_decode(der, len, &r), CS_REC_OK);
    free(der);
    CU_ASSERT_EQUAL_FATAL(cs_open(dek, r.aad, r.aad_len, &r.secret, &pt, &pl), CKR_OK);
    cs_attrs_set_bool(&r.attrs, CKA_ALWAYS_AUTHENTICATE, CK_TRUE);
    der = NULL;
    CU_ASSERT_EQUAL_FATAL(cs_object_rec_encode(&r, dek, pt, pl, &der, &len), CS_REC_OK);
    CU_ASSERT_FATAL(spit(path, der, len));
    OPENSSL_free(der);
    OPENSSL_clear_free(pt, pl);
    OPENSSL_cleanse(dek, sizeof dek);
    cs_object_rec_clear(&r);
    CK_C_INITIALIZE_ARGS args = {.flags = CKF_OS_LOCKING_OK};
    CU_ASSERT_EQUAL_FATAL(p11->C_Initialize(&args), CKR_OK);
    CU_ASSERT_FATAL(tst_user_session(slot, &h));
    CU_ASSERT_FATAL(tst_find_one(h, "victim", CKO_PRIVATE_KEY, &k)); /* authentic */
    CU_ASSERT_EQUAL(tst_bool_attr(h, k, CKA_ALWAYS_AUTHENTICATE), CK_TRUE);
    CU_ASSERT_EQUAL(sign_once(h, k), CKR_USER_NOT_LOGGED_IN);
    CU_ASSERT_FATAL(tst_find_one(h, "bystander", CKO_PRIVATE_KEY, &k));
    CU_ASSERT_EQUAL(sign_once(h, k), CKR_OK);
    tst_end(&t);
}

static bool weaken_user_pin(const char *tokpath, const char *pin, uint32_t iterations)
{
    size_t len = 0;
    unsigned char *der = NULL, kek[CS_KEY_LEN], dek[CS_KEY_LEN];
    cs_token_rec r;
    char aad[96];
    bool ok = false;
    if (!user_dek(tokpath, pin, dek))
        return false;
    if ((der = slurp(tokpath, &len)) == NULL || cs_token_rec_decode(der, len, &r) != CS_REC_OK) {
        free(der);
        return false;
    }
    free(der);
    der = NULL;
    cs_sealed *k = &r.user.keys[0];
    uint32_t gen = k->generation;
    int al = snprintf(aad, sizeof aad, "custos-soft key|%s|user|%u", r.serial, gen);
    cs_sealed_clear(k);
    r.user.iterations = iterations;
    const unsigned char *pb = (const unsigned char *)pin;
    if (cs_pbkdf2(pb, strlen(pin), r.user.salt, iterations, kek) == CKR_OK &&
        cs_seal(kek, gen, aad, (size_t)al, dek, sizeof dek, k) == CKR_OK &&
        cs_token_rec_encode(&r, &der, &len) == CS_REC_OK)
        ok = spit(tokpath, der, len);
    OPENSSL_free(der);
    OPENSSL_cleanse(dek, sizeof dek);
    OPENSSL_cleanse(kek, sizeof kek);
    cs_token_rec_clear(&r);
    return ok;
}

static uint32_t user_iterations(const char *tokpath)
{
    size_t len = 0;
    unsigned char *der = slurp(tokpath, &len);
    cs_token_rec r;
    uint32_t it = 0;
    if (der != NULL && cs_token_rec_decode(der, len, &r) == CS_REC_OK) {
        it = r.user.iterations;
        cs_token_rec_clear(&r);
    }
    free(der);
    return it;
}

static void test_weak_pin_slot_rewrapped(void)
{
    tst_store t;
    CK_SLOT_ID slot;
    CK_SESSION_HANDLE h;
    CK_OBJECT_HANDLE pub, priv;
    char path[1024], tokpath[1100];
    CU_ASSERT_FATAL(tst_begin(&t, 0));
    CU_ASSERT_FATAL(tst_init_token("weak", &slot));
    CU_ASSERT_FATAL(tst_user_session(slot, &h));
    CU_ASSERT_FATAL(tst_gen_ec(h, 256, true, "k", &pub, &priv) == CKR_OK);
    CU_ASSERT_FATAL(tst_object_file(&t, "k", path, sizeof path));
    p11->C_Finalize(NULL);
    char *slash = strrchr(path, '/');
    snprintf(tokpath, sizeof tokpath, "%.*s/token.der", (int)(slash - path), path);
    CU_ASSERT_EQUAL(user_iterations(tokpath), 200000);
    CU_ASSERT_FATAL(weaken_user_pin(tokpath, USER_PIN, 1000));
    CU_ASSERT_EQUAL_FATAL(user_iterations(tokpath), 1000);
    /* a wrong PIN is still just wrong, and leaves the slot as it is */
    CK_C_INITIALIZE_ARGS args = {.flags = CKF_OS_LOCKING_OK};
    CU_ASSERT_EQUAL_FATAL(p11->C_Initialize(&args), CKR_OK);
    CU_ASSERT_EQUAL(p11->C_OpenSession(slot, CKF_SERIAL_SESSION, NULL, NULL, &h), CKR_OK);
    CU_ASSERT_EQUAL(p11->C_Login(h, CKU_USER, (CK_UTF8CHAR_PTR)"0000", 4), CKR_PIN_INCORRECT);
    CU_ASSERT_EQUAL(user_iterations(tokpath), 1000);
    CU_ASSERT_EQUAL(p11->C_Login(h, CKU_USER, (CK_UTF8CHAR_PTR)USER_PIN, 4), CKR_OK);
    CU_ASSERT_EQUAL(user_iterations(tokpath), 200000);
    CU_ASSERT(tst_log_has(&t, "stored with 1000 PBKDF2 iterations"));
    CU_ASSERT_FATAL(tst_find_one(h, "k", CKO_PRIVATE_KEY, &priv));
    CU_ASSERT_EQUAL(sign_once(h, priv), CKR_OK);
    /* the same PIN opens the re-wrapped slot after a restart */
    CU_ASSERT_FATAL(tst_restart());
    CU_ASSERT_FATAL(tst_user_session(slot, &h));
    CU_ASSERT_FATAL(tst_find_one(h, "k", CKO_PRIVATE_KEY, &priv));
    CU_ASSERT_EQUAL(sign_once(h, priv), CKR_OK);
    tst_end(&t);
}

static void test_truncated_record(void)
{
    tst_store t;
    CK_SLOT_ID slot;
    char path[1024], tmp[1100];
    size_t len = 0;
    CU_ASSERT_FATAL(two_keys(&t, &slot, path, sizeof path));
    unsigned char *orig = slurp(path, &len);
    size_t cuts[] = {0, 1, len / 2, len - 1};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        CU_ASSERT_FATAL(spit(path, orig, cuts[i]));
        unlink(t.log);
        expect_victim_gone(&t, slot, obj_name(path, tmp, sizeof tmp), path);
    }
    /* a temp file left by a crash mid-write is ignored */
    CU_ASSERT_FATAL(spit(path, orig, len));
    char *slash = strrchr(path, '/');
    snprintf(tmp, sizeof tmp, "%.*s/.tmp-0123456789abcdef", (int)(slash - path), path);
    CU_ASSERT_FATAL(spit(tmp, orig, len / 2));
    CK_SESSION_HANDLE h;
    CU_ASSERT_FATAL(tst_restart());
    CU_ASSERT_FATAL(tst_user_session(slot, &h));
    CU_ASSERT_EQUAL(tst_count(h, "victim", CKO_PRIVATE_KEY), 1);
    CU_ASSERT_EQUAL(tst_count(h, NULL, CKO_PRIVATE_KEY), 2);
    /* a truncated token record: the token is not offered */
    char tokpath[1100];
    snprintf(tokpath, sizeof tokpath, "%.*s/token.der", (int)(slash - path), path);
    size_t tl = 0;
    unsigned char *tok = slurp(tokpath, &tl);
    CU_ASSERT_FATAL(tok != NULL);
    CU_ASSERT_FATAL(spit(tokpath, tok, tl - 10));
    unlink(t.log);
    CU_ASSERT_FATAL(tst_restart());
    CK_SLOT_ID s2;
    CU_ASSERT_FALSE(tst_find_token("faults", &s2));
    CU_ASSERT(tst_log_has(&t, "token.der"));
    CU_ASSERT_FATAL(spit(tokpath, tok, tl));
    CU_ASSERT_FATAL(tst_restart());
    CU_ASSERT(tst_find_token("faults", &s2));
    free(tok);
    free(orig);
    tst_end(&t);
}

/* A record replaced by a symbolic link (to a valid copy elsewhere) is not
 * followed: the store's records are its own plain files. */
static void test_symlinked_record(void)
{
    tst_store t;
    CK_SLOT_ID slot;
    char path[1024], copy[1100];
    size_t len = 0;
    CU_ASSERT_FATAL(two_keys(&t, &slot, path, sizeof path));
    unsigned char *orig = slurp(path, &len);
    snprintf(copy, sizeof copy, "%s/elsewhere.der", t.dir);
    CU_ASSERT_FATAL(spit(copy, orig, len));
    CU_ASSERT_EQUAL_FATAL(unlink(path), 0);
    CU_ASSERT_EQUAL_FATAL(symlink(copy, path), 0);
    unlink(t.log);
    expect_victim_gone(&t, slot, "symbolic link", path);
    CU_ASSERT_EQUAL(tst_file_lines(t.integrity, "symbolic link"), 1);
    free(orig);
    tst_end(&t);
}

/* The store becomes read-only (a non-root process on a root-owned
 * store, or a read-only mount): public objects can be read, writes fail
 * cleanly, and logins are refused, since their attempts cannot be counted. */
static void test_unwritable_store(void)
{
    tst_store t;
    CK_SLOT_ID slot;
    char path[1024];
    CU_ASSERT_FATAL(two_keys(&t, &slot, path, sizeof path));
    p11->C_Finalize(NULL);
    struct passwd *nobody = getpwnam("nobody");
    bool drop = geteuid() == 0 && nobody != NULL;
    /* give the store to `nobody` (if we are root), then take the write bit */
    if (drop)
        CU_ASSERT_EQUAL(cu_test_sh("chown -R nobody '%s' && chmod o+x '%s'", t.store, t.dir), 0);
    char *slash = strrchr(path, '/');
    char tokdir[1024];
    snprintf(tokdir, sizeof tokdir, "%.*s", (int)(slash - path), path);
    CU_ASSERT_EQUAL_FATAL(chmod(tokdir, 0500), 0);
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        if (drop && (setgid(nobody->pw_gid) != 0 || setuid(nobody->pw_uid) != 0))
            _exit(10);
        setenv("CUSTOS_SOFT_DEBUG", "", 1); /* the log file is not ours now */
        CK_C_INITIALIZE_ARGS args = {.flags = CKF_OS_LOCKING_OK};
        if (p11->C_Initialize(&args) != CKR_OK)
            _exit(11);
        CK_SESSION_HANDLE h;
        CK_OBJECT_HANDLE k, d;
        CK_TOKEN_INFO ti;
        if (p11->C_OpenSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &h) != CKR_OK)
            _exit(12);
        /* public objects can be read */
        if (!tst_find_one(h, "victim/pub", CKO_PUBLIC_KEY, &k))
            _exit(13);
        /* a login attempt that cannot be counted is refused, right PIN or
         * wrong: otherwise guesses would be unlimited */
        if (p11->C_Login(h, CKU_USER, (CK_UTF8CHAR_PTR)"0000", 4) != CKR_DEVICE_ERROR ||
            p11->C_Login(h, CKU_USER, (CK_UTF8CHAR_PTR)USER_PIN, 4) != CKR_DEVICE_ERROR ||
            p11->C_Login(h, CKU_SO, (CK_UTF8CHAR_PTR)SO_PIN, strlen(SO_PIN)) != CKR_DEVICE_ERROR)
            _exit(14);
        if (p11->C_GetTokenInfo(slot, &ti) != CKR_OK ||
            (ti.flags & (CKF_USER_PIN_COUNT_LOW | CKF_USER_PIN_LOCKED)))
            _exit(15);
        /* writes fail cleanly and leave nothing behind */
        CK_OBJECT_CLASS data = CKO_DATA;
        CK_BBOOL yes = CK_TRUE;
        CK_ATTRIBUTE dt[] = {{CKA_CLASS, &data, sizeof data}, {CKA_TOKEN, &yes, 1},
                             {CKA_LABEL, "new", 3}};
        if (p11->C_CreateObject(h, dt, 3, &d) != CKR_DEVICE_ERROR ||
            tst_count(h, "new", (CK_ULONG)-1) != 0)
            _exit(16);
        if (p11->C_DestroyObject(h, k) == CKR_OK)
            _exit(17);
        /* session objects still work */
        dt[1].pValue = &(CK_BBOOL){CK_FALSE};
        if (p11->C_CreateObject(h, dt, 3, &d) != CKR_OK || tst_count(h, "new", (CK_ULONG)-1) != 1)
            _exit(18);
        p11->C_Finalize(NULL);
        _exit(0);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    CU_ASSERT(WIFEXITED(st));
    CU_ASSERT_EQUAL(WEXITSTATUS(st), 0);
    if (WEXITSTATUS(st) != 0)
        fprintf(stderr, "unwritable-store child exit %d\n", WEXITSTATUS(st));
    chmod(tokdir, 0700);
    CU_ASSERT_FATAL(tst_restart());
    tst_end(&t);
}

static void test_pin_change_other_session(void)
{
    tst_store t;
    CK_SLOT_ID slot;
    CK_SESSION_HANDLE a, b, ro;
    CK_OBJECT_HANDLE pub, k1, k2, k3;
    char path[1024];
    size_t l1 = 0, l2 = 0;
    CU_ASSERT_FATAL(tst_begin(&t, 0));
    CU_ASSERT_FATAL(tst_init_token("pin", &slot));
    CU_ASSERT_FATAL(tst_user_session(slot, &a));
    CU_ASSERT_FATAL(tst_user_session(slot, &b));
    CU_ASSERT_EQUAL(p11->C_OpenSession(slot, CKF_SERIAL_SESSION, NULL, NULL, &ro), CKR_OK);
    CU_ASSERT_FATAL(tst_gen_ec(b, 256, true, "k1", &pub, &k1) == CKR_OK);
    CU_ASSERT_FATAL(tst_gen_rsa(b, 2048, true, "k2", &pub, &k2) == CKR_OK);
    unsigned char hk[32] = {5};
    CU_ASSERT_FATAL(tst_import_hmac(b, hk, 32, true, "k3", &k3) == CKR_OK);
    CU_ASSERT_FATAL(tst_object_file(&t, "k1", path, sizeof path));
    unsigned char *before = slurp(path, &l1);

    /* session b is mid-operation while a changes the PIN */
    CK_MECHANISM m = {CKM_ECDSA_SHA256, NULL, 0};
    CU_ASSERT_EQUAL(p11->C_SignInit(b, &m, k1), CKR_OK);
    CU_ASSERT_EQUAL(p11->C_SignUpdate(b, (CK_BYTE_PTR)"abc", 3), CKR_OK);
    CU_ASSERT_EQUAL(p11->C_SetPIN(ro, (CK_UTF8CHAR_PTR)USER_PIN, 4, (CK_UTF8CHAR_PTR)"9999", 4),
                    CKR_SESSION_READ_ONLY);
    CU_ASSERT_EQUAL(p11->C_SetPIN(a, (CK_UTF8CHAR_PTR)"0000", 4, (CK_UTF8CHAR_PTR)"9999", 4),
                    CKR_PIN_INCORRECT);
    CU_ASSERT_EQUAL(p11->C_SetPIN(a, (CK_UTF8CHAR_PTR)USER_PIN, 4, (CK_UTF8CHAR_PTR)"12", 2),
                    CKR_PIN_LEN_RANGE);
    CU_ASSERT_EQUAL(p11->C_SetPIN(a, (CK_UTF8CHAR_PTR)USER_PIN, 4, (CK_UTF8CHAR_PTR)"9999", 4), CKR_OK);
    unsigned char sig[512];
    CK_ULONG sl = sizeof sig;
    CU_ASSERT_EQUAL(p11->C_SignFinal(b, sig, &sl), CKR_OK);
    CU_ASSERT_EQUAL(sign_once(b, k1), CKR_OK);
    CU_ASSERT_EQUAL(sign_once(a, k1), CKR_OK);
    /* every record was re-sealed under a new data key */
    unsigned char *after = slurp(path, &l2);
    CU_ASSERT(l1 != l2 || memcmp(before, after, l1) != 0);
    free(before);
    free(after);
    /* new keys after the change are fine too */
    CK_OBJECT_HANDLE k4;
    CU_ASSERT_EQUAL(tst_gen_ec(a, 256, true, "k4", &pub, &k4), CKR_OK);
    CU_ASSERT_EQUAL(p11->C_Logout(a), CKR_OK);
    CU_ASSERT_EQUAL(p11->C_Login(b, CKU_USER, (CK_UTF8CHAR_PTR)USER_PIN, 4), CKR_PIN_INCORRECT);
    CU_ASSERT_EQUAL(p11->C_Login(b, CKU_USER, (CK_UTF8CHAR_PTR)"9999", 4), CKR_OK);
    CU_ASSERT_FATAL(tst_restart());
    CK_SESSION_HANDLE h;
    CU_ASSERT_EQUAL(p11->C_OpenSession(slot, CKF_SERIAL_SESSION, NULL, NULL, &h), CKR_OK);
    CU_ASSERT_EQUAL(p11->C_Login(h, CKU_USER, (CK_UTF8CHAR_PTR)"9999", 4), CKR_OK);
    const char *labels[] = {"k1", "k2", "k4"};
    for (int i = 0; i < 3; i++) {
        CK_OBJECT_HANDLE k;
        CU_ASSERT_FATAL(tst_find_one(h, labels[i], CKO_PRIVATE_KEY, &k));
        CK_MECHANISM mm = {i == 1 ? CKM_SHA256_RSA_PKCS : CKM_ECDSA_SHA256, NULL, 0};
        sl = sizeof sig;
        CU_ASSERT_EQUAL(tst_sign(h, &mm, k, "x", 1, sig, &sl), CKR_OK);
    }
    CU_ASSERT_FATAL(tst_find_one(h, "k3", CKO_SECRET_KEY, &k3));
    CK_MECHANISM hm = {CKM_SHA256_HMAC, NULL, 0};
    sl = sizeof sig;
    CU_ASSERT_EQUAL(tst_sign(h, &hm, k3, "x", 1, sig, &sl), CKR_OK);
    CU_ASSERT_FALSE(tst_log_has(&t, "ignored"));
    tst_end(&t);
}

/* Another process changes the PIN while we are logged in. */
static void test_pin_change_other_process(void)
{
    tst_store t;
    CK_SLOT_ID slot;
    CK_SESSION_HANDLE h;
    CK_OBJECT_HANDLE pub, k1, k2;
    CU_ASSERT_FATAL(tst_begin(&t, 0));
    CU_ASSERT_FATAL(tst_init_token("pin2", &slot));
    CU_ASSERT_FATAL(tst_user_session(slot, &h));
    CU_ASSERT_FATAL(tst_gen_ec(h, 256, true, "k1", &pub, &k1) == CKR_OK);
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        CK_C_INITIALIZE_ARGS args = {.flags = CKF_OS_LOCKING_OK};
        CK_SESSION_HANDLE c;
        if (p11->C_Initialize(&args) != CKR_OK || !tst_user_session(slot, &c))
            _exit(1);
        if (p11->C_SetPIN(c, (CK_UTF8CHAR_PTR)USER_PIN, 4, (CK_UTF8CHAR_PTR)"7777", 4) != CKR_OK)
            _exit(2);
        p11->C_Finalize(NULL);
        _exit(0);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    CU_ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    /* our loaded keys keep working; a listing does not lose them */
    CU_ASSERT_EQUAL(tst_count(h, "k1", CKO_PRIVATE_KEY), 1);
    CU_ASSERT_EQUAL(sign_once(h, k1), CKR_OK);
    /* sealing a new key under the old data key is refused: log in again */
    CU_ASSERT_EQUAL(tst_gen_ec(h, 256, true, "k2", &pub, &k2), CKR_USER_NOT_LOGGED_IN);
    CU_ASSERT_EQUAL(p11->C_Logout(h), CKR_OK);
    CU_ASSERT_EQUAL(p11->C_Login(h, CKU_USER, (CK_UTF8CHAR_PTR)USER_PIN, 4), CKR_PIN_INCORRECT);
    CU_ASSERT_EQUAL(p11->C_Login(h, CKU_USER, (CK_UTF8CHAR_PTR)"7777", 4), CKR_OK);
    CU_ASSERT_FATAL(tst_find_one(h, "k1", CKO_PRIVATE_KEY, &k1));
    CU_ASSERT_EQUAL(sign_once(h, k1), CKR_OK);
    CU_ASSERT_EQUAL(tst_gen_ec(h, 256, true, "k2", &pub, &k2), CKR_OK);
    tst_end(&t);
}

static int child_worker(CK_SLOT_ID slot, int id, int n)
{
    CK_C_INITIALIZE_ARGS args = {.flags = CKF_OS_LOCKING_OK};
    CK_SESSION_HANDLE h;
    if (p11->C_Initialize(&args) != CKR_OK || !tst_user_session(slot, &h))
        return 1;
    for (int i = 0; i < n; i++) {
        char label[32];
        CK_OBJECT_HANDLE pub, priv;
        snprintf(label, sizeof label, "p%d-%d", id, i);
        if (tst_gen_ec(h, 256, true, label, &pub, &priv) != CKR_OK)
            return 2;
        if (sign_once(h, priv) != CKR_OK)
            return 3;
        if (tst_count(h, NULL, CKO_PRIVATE_KEY) < i + 1)
            return 4;
        /* churn: rename, and delete a temporary public object */
        CK_ATTRIBUTE lab = {CKA_SUBJECT, label, strlen(label)};
        if (p11->C_SetAttributeValue(h, priv, &lab, 1) != CKR_OK)
            return 5;
        if (p11->C_DestroyObject(h, pub) != CKR_OK)
            return 6;
    }
    p11->C_Finalize(NULL);
    return 0;
}

static void test_two_processes(void)
{
    tst_store t;
    CK_SLOT_ID slot;
    CK_SESSION_HANDLE h;
    CU_ASSERT_FATAL(tst_begin(&t, 0));
    CU_ASSERT_FATAL(tst_init_token("shared", &slot));
    p11->C_Finalize(NULL);
    fflush(stdout);
    pid_t pids[2];
    for (int i = 0; i < 2; i++) {
        pids[i] = fork();
        if (pids[i] == 0)
            _exit(child_worker(slot, i, 8));
    }
    for (int i = 0; i < 2; i++) {
        int st = 0;
        waitpid(pids[i], &st, 0);
        CU_ASSERT(WIFEXITED(st));
        CU_ASSERT_EQUAL(WEXITSTATUS(st), 0);
    }
    CK_C_INITIALIZE_ARGS args = {.flags = CKF_OS_LOCKING_OK};
    CU_ASSERT_EQUAL_FATAL(p11->C_Initialize(&args), CKR_OK);
    CU_ASSERT_FATAL(tst_user_session(slot, &h));
    CU_ASSERT_EQUAL(tst_count(h, NULL, CKO_PRIVATE_KEY), 16);
    CU_ASSERT_EQUAL(tst_count(h, NULL, CKO_PUBLIC_KEY), 0);
    for (int p = 0; p < 2; p++)
        for (int i = 0; i < 8; i++) {
            char label[32];
            CK_OBJECT_HANDLE k;
            snprintf(label, sizeof label, "p%d-%d", p, i);
            CU_ASSERT(tst_find_one(h, label, CKO_PRIVATE_KEY, &k) && sign_once(h, k) == CKR_OK);
        }
    CU_ASSERT_FALSE(tst_log_has(&t, "ignored"));
    tst_end(&t);
}

/* Wrong PINs from two processes at once are all counted (the counter is
 * read and written under the store lock). */
static void test_concurrent_wrong_pins(void)
{
    for (unsigned max = 6; max <= 7; max++) {
        tst_store t;
        CK_SLOT_ID slot;
        CK_SESSION_HANDLE h;
        CU_ASSERT_FATAL(tst_begin(&t, max));
        CU_ASSERT_FATAL(tst_init_token("count", &slot));
        p11->C_Finalize(NULL);
        fflush(stdout);
        pid_t pids[2];
        for (int i = 0; i < 2; i++) {
            pids[i] = fork();
            if (pids[i] == 0) {
                CK_C_INITIALIZE_ARGS args = {.flags = CKF_OS_LOCKING_OK};
                CK_SESSION_HANDLE c;
                if (p11->C_Initialize(&args) != CKR_OK ||
                    p11->C_OpenSession(slot, CKF_SERIAL_SESSION, NULL, NULL, &c) != CKR_OK)
                    _exit(1);
                for (int k = 0; k < 3; k++)
                    if (p11->C_Login(c, CKU_USER, (CK_UTF8CHAR_PTR)"0000", 4) != CKR_PIN_INCORRECT)
                        _exit(2);
                _exit(0);
            }
        }
        for (int i = 0; i < 2; i++) {
            int st = 0;
            waitpid(pids[i], &st, 0);
            CU_ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 0);
        }
        CK_C_INITIALIZE_ARGS args = {.flags = CKF_OS_LOCKING_OK};
        CU_ASSERT_EQUAL_FATAL(p11->C_Initialize(&args), CKR_OK);
        CU_ASSERT_EQUAL(p11->C_OpenSession(slot, CKF_SERIAL_SESSION, NULL, NULL, &h), CKR_OK);
        /* 6 failures: locked at 6, one try left at 7 */
        CU_ASSERT_EQUAL(p11->C_Login(h, CKU_USER, (CK_UTF8CHAR_PTR)USER_PIN, 4),
                        max == 6 ? CKR_PIN_LOCKED : CKR_OK);
        tst_end(&t);
    }
}

static bool try_login(CK_SLOT_ID slot, const char *pin, CK_SESSION_HANDLE *_h)
{
    if (p11->C_OpenSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, _h) != CKR_OK)
        return false;
    return p11->C_Login(*_h, CKU_USER, (CK_UTF8CHAR_PTR)pin, strlen(pin)) == CKR_OK;
}

/* Runs C_SetPIN(old -> next) in a child traced with ptrace, and kills it
 * right after its kill_after-th rename(2) (the commit point of each
 * crash-safe write), or before its first one when kill_after is 0, or lets
 * it finish when kill_after < 0. Returns the number of renames it made, or
 * -1 if the child failed otherwise. */
static int set_pin_killed_after(CK_SLOT_ID slot, const char *old, const char *next, int kill_after)
{
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        CK_C_INITIALIZE_ARGS args = {.flags = CKF_OS_LOCKING_OK};
        CK_SESSION_HANDLE c;
        if (p11->C_Initialize(&args) != CKR_OK || !try_login(slot, old, &c))
            _exit(1);
        /* traced from here: only C_SetPIN's renames count */
        if (ptrace(PTRACE_TRACEME, 0, NULL, NULL) != 0 || raise(SIGSTOP) != 0)
            _exit(8);
        if (p11->C_SetPIN(c, (CK_UTF8CHAR_PTR)old, strlen(old), (CK_UTF8CHAR_PTR)next,
                          strlen(next)) != CKR_OK)
            _exit(2);
        _exit(0);
    }
    int st = 0, renames = 0;
    long opts = PTRACE_O_TRACESYSGOOD | PTRACE_O_EXITKILL;
    if (pid < 0 || waitpid(pid, &st, 0) != pid || !WIFSTOPPED(st) ||
        ptrace(PTRACE_SETOPTIONS, pid, NULL, (void *)opts) != 0)
        return -1;
    int sig = 0;
    for (;;) {
        if (ptrace(PTRACE_SYSCALL, pid, NULL, (void *)(long)sig) != 0)
            return -1;
        sig = 0;
        if (waitpid(pid, &st, 0) != pid)
            return -1;
        if (WIFEXITED(st))
            return WEXITSTATUS(st) == 0 ? renames : -1;
        if (WIFSIGNALED(st))
            return -1;
        if (WSTOPSIG(st) != (SIGTRAP | 0x80)) {
            sig = WSTOPSIG(st) == SIGSTOP ? 0 : WSTOPSIG(st); /* pass signals on */
            continue;
        }
        struct __ptrace_syscall_info si;
        if (ptrace(PTRACE_GET_SYSCALL_INFO, pid, (void *)sizeof si, &si) <= 0)
            return -1;
        bool entry = si.op == PTRACE_SYSCALL_INFO_ENTRY;
        if (entry && (si.entry.nr == SYS_rename || si.entry.nr == SYS_renameat ||
                      si.entry.nr == SYS_renameat2)) {
            if (kill_after == 0)
                break;
            renames++;
        } else if (si.op == PTRACE_SYSCALL_INFO_EXIT && renames > 0 && renames == kill_after) {
            break; /* the kill_after-th rename is done */
        }
    }
    kill(pid, SIGKILL);
    waitpid(pid, &st, 0);
    return renames;
}

/* The token record and every record's secret, after a recovered PIN
 * change: one user key, every secret sealed under it. */
static void expect_one_generation(const char *tokdir)
{
    char path[1200];
    size_t len = 0;
    snprintf(path, sizeof path, "%s/token.der", tokdir);
    unsigned char *der = slurp(path, &len);
    cs_token_rec tr;
    CU_ASSERT_FATAL(der != NULL && cs_token_rec_decode(der, len, &tr) == CS_REC_OK);
    free(der);
    CU_ASSERT_EQUAL(tr.user.nkeys, 1);
    CU_ASSERT_EQUAL(tr.user.keys[0].generation, tr.generation);
    DIR *d = opendir(tokdir);
    CU_ASSERT_FATAL(d != NULL);
    struct dirent *e;
    int sealed = 0;
    while ((e = readdir(d)) != NULL) {
        if (strncmp(e->d_name, "obj-", 4) != 0)
            continue;
        if (snprintf(path, sizeof path, "%s/%s", tokdir, e->d_name) >= (int)sizeof path)
            continue;
        der = slurp(path, &len);
        cs_object_rec r;
        CU_ASSERT_FATAL(der != NULL && cs_object_rec_decode(der, len, &r) == CS_REC_OK);
        free(der);
        if (r.has_secret) {
            CU_ASSERT_EQUAL(r.secret.generation, tr.generation);
            sealed++;
        }
        cs_object_rec_clear(&r);
    }
    closedir(d);
    CU_ASSERT(sealed > 0);
    cs_token_rec_clear(&tr);
}

/* A process killed at any commit point of C_SetPIN leaves a token that opens
 * with exactly the PIN the last commit says (the old one before the first
 * rename, the new one after it), with every key intact, and the login
 * that finds a half-done change finishes it. */
static void test_killed_during_set_pin(void)
{
    tst_store t;
    CK_SLOT_ID slot;
    CK_SESSION_HANDLE h;
    CK_OBJECT_HANDLE pub, priv;
    char path[1024], tokdir[1024];
    enum { NKEYS = 6 };
    CU_ASSERT_FATAL(tst_begin(&t, 50));
    CU_ASSERT_FATAL(tst_init_token("crash", &slot));
    CU_ASSERT_FATAL(tst_user_session(slot, &h));
    for (int i = 0; i < NKEYS; i++) {
        char label[16];
        snprintf(label, sizeof label, "c%d", i);
        CU_ASSERT_FATAL(tst_gen_ec(h, 256, true, label, &pub, &priv) == CKR_OK);
    }
    CU_ASSERT_FATAL(tst_object_file(&t, "c0", path, sizeof path));
    snprintf(tokdir, sizeof tokdir, "%.*s", (int)(strrchr(path, '/') - path), path);
    p11->C_Finalize(NULL);
    char pin[16] = USER_PIN;
    /* An uninterrupted change renames: the token record twice (the old PIN's
     * attempt counted, then cleared), the token record with the new PIN and
     * both data keys (the first commit of the change), each secret
     * re-sealed, the token record with the new data key alone. */
    enum { FIRST_COMMIT = 3 };
    int total = set_pin_killed_after(slot, pin, "5000", -1);
    CU_ASSERT_EQUAL_FATAL(total, 2 + 1 + NKEYS + 1);
    snprintf(pin, sizeof pin, "5000");
    int resumed = 0;
    for (int k = 0; k < total; k++) {
        char next[16];
        snprintf(next, sizeof next, "%04d", 5001 + k);
        CU_ASSERT_EQUAL(set_pin_killed_after(slot, pin, next, k), k);
        /* before the first commit the old PIN holds; from it on, the new */
        bool changed = k >= FIRST_COMMIT;
        const char *want = changed ? next : pin, *other = changed ? pin : next;
        CK_C_INITIALIZE_ARGS args = {.flags = CKF_OS_LOCKING_OK};
        CU_ASSERT_EQUAL_FATAL(p11->C_Initialize(&args), CKR_OK);
        int before = tst_file_lines(t.log, "finishing an interrupted PIN change");
        CU_ASSERT_FALSE(try_login(slot, other, &h));
        if (!try_login(slot, want, &h)) {
            CU_FAIL("the expected PIN does not open the token");
            p11->C_Finalize(NULL);
            break;
        }
        resumed += tst_file_lines(t.log, "finishing an interrupted PIN change") - before;
        CU_ASSERT_EQUAL(tst_count(h, NULL, CKO_PRIVATE_KEY), NKEYS);
        for (int i = 0; i < NKEYS; i++) {
            char label[16];
            CK_OBJECT_HANDLE key;
            snprintf(label, sizeof label, "c%d", i);
            CU_ASSERT(tst_find_one(h, label, CKO_PRIVATE_KEY, &key) && sign_once(h, key) == CKR_OK);
        }
        expect_one_generation(tokdir);
        if (changed)
            snprintf(pin, sizeof pin, "%s", next);
        p11->C_Finalize(NULL);
    }
    /* every kill between the first commit and the last left two data keys */
    CU_ASSERT_EQUAL(resumed, total - FIRST_COMMIT);
    CU_ASSERT_FALSE(tst_log_has(&t, "ignored"));
    CU_ASSERT_FATAL(tst_restart());
    tst_end(&t);
}

int main(void)
{
    tst_load_module();
    static const cu_test_case cases[] = {
        {"wrong PIN until locked; count kept on disk; SO reset", test_wrong_pin_until_locked},
        {"record with a flipped byte fails to load, named in the log", test_flipped_byte},
        {"integrity failures reported with the debug log off", test_integrity_failures_reported},
        {"forged record (valid digest) and swapped record rejected", test_forged_and_swapped_record},
        {"forged custody attributes never shown, even before login", test_forged_custody_hidden},
        {"a PIN stored below the PBKDF2 floor is re-wrapped at login",
         test_weak_pin_slot_rewrapped},
        {"a key asking for context-specific login does not sign",
         test_always_authenticate_key_does_not_sign},
        {"truncated records and leftover temp files", test_truncated_record},
        {"a record that is a symbolic link is not followed", test_symlinked_record},
        {"store not writable: reads work, writes and logins refused", test_unwritable_store},
        {"PIN changed while another session is open", test_pin_change_other_session},
        {"PIN changed by another process", test_pin_change_other_process},
        {"two processes on one store", test_two_processes},
        {"wrong PINs from two processes all counted", test_concurrent_wrong_pins},
        {"process killed at each commit point of C_SetPIN", test_killed_during_set_pin},
        {NULL, NULL},
    };
    if (cu_test_add_suite("soft_faults", NULL, NULL, cases) != 0)
        return 2;
    return cu_test_run();
}
