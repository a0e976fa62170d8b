#include "soft_helpers.h"

#include "cu_test.h"

#include <dirent.h>
#include <dlfcn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

CK_FUNCTION_LIST *p11;

void tst_load_module(void)
{
    void *lib = dlopen(CUSTOS_SOFT_MODULE, RTLD_NOW | RTLD_LOCAL);
    if (lib == NULL) {
        fprintf(stderr, "dlopen %s: %s\n", CUSTOS_SOFT_MODULE, dlerror());
        exit(2);
    }
    CK_C_GetFunctionList gfl = (CK_C_GetFunctionList)dlsym(lib, "C_GetFunctionList");
    if (gfl == NULL || gfl(&p11) != CKR_OK) {
        fprintf(stderr, "no C_GetFunctionList\n");
        exit(2);
    }
}

static bool init_module(void)
{
    CK_C_INITIALIZE_ARGS args = {.flags = CKF_OS_LOCKING_OK};
    CK_RV rv = p11->C_Initialize(&args);
    if (rv != CKR_OK)
        fprintf(stderr, "C_Initialize: 0x%lx\n", rv);
    return rv == CKR_OK;
}

bool tst_begin(tst_store *t, unsigned max_attempts)
{
    memset(t, 0, sizeof *t);
    t->dir = cu_test_mkdtemp("soft");
    if (t->dir == NULL)
        return false;
    snprintf(t->store, sizeof t->store, "%s/store", t->dir);
    snprintf(t->log, sizeof t->log, "%s/debug.log", t->dir);
    snprintf(t->integrity, sizeof t->integrity, "%s/integrity.log", t->dir);
    char n[16];
    snprintf(n, sizeof n, "%u", max_attempts ? max_attempts : 10);
    setenv("CUSTOS_SOFT_DIR", t->store, 1);
    unsetenv("CUSTOS_SOFT_CONF");
    unsetenv("CUSTOS_SOFT_PBKDF2_ITERATIONS"); /* the default, 200,000 */
    setenv("CUSTOS_SOFT_MAX_PIN_ATTEMPTS", n, 1);
    setenv("CUSTOS_SOFT_DEBUG", t->log, 1);
    setenv("CUSTOS_SOFT_INTEGRITY_LOG", t->integrity, 1);
    return init_module();
}

bool tst_begin_memory(tst_store *t)
{
    memset(t, 0, sizeof *t);
    t->dir = cu_test_mkdtemp("softm");
    if (t->dir == NULL)
        return false;
    char conf[600];
    snprintf(conf, sizeof conf, "%s/soft.conf", t->dir);
    FILE *f = fopen(conf, "w");
    if (f == NULL)
        return false;
    fprintf(f, "# memory only\nmemory = yes\npbkdf2_iterations = 200000\n");
    fclose(f);
    snprintf(t->log, sizeof t->log, "%s/debug.log", t->dir);
    snprintf(t->integrity, sizeof t->integrity, "%s/integrity.log", t->dir);
    setenv("CUSTOS_SOFT_INTEGRITY_LOG", t->integrity, 1);
    unsetenv("CUSTOS_SOFT_DIR");
    unsetenv("CUSTOS_SOFT_PBKDF2_ITERATIONS");
    unsetenv("CUSTOS_SOFT_MAX_PIN_ATTEMPTS");
    setenv("CUSTOS_SOFT_CONF", conf, 1);
    setenv("CUSTOS_SOFT_DEBUG", t->log, 1);
    return init_module();
}

void tst_end(tst_store *t)
{
    p11->C_Finalize(NULL);
    if (t->dir != NULL) {
        cu_test_rmtree(t->dir);
        free(t->dir);
    }
    t->dir = NULL;
}

bool tst_restart(void)
{
    p11->C_Finalize(NULL);
    return init_module();
}

static bool find_slot(const char *label, bool uninit, CK_SLOT_ID *_slot)
{
    CK_ULONG n = 0;
    if (p11->C_GetSlotList(CK_TRUE, NULL, &n) != CKR_OK || n == 0)
        return false;
    CK_SLOT_ID ids[64];
    if (n > 64)
        n = 64;
    if (p11->C_GetSlotList(CK_TRUE, ids, &n) != CKR_OK)
        return false;
    for (CK_ULONG i = 0; i < n; i++) {
        CK_TOKEN_INFO ti;
        if (p11->C_GetTokenInfo(ids[i], &ti) != CKR_OK)
            continue;
        bool init = ti.flags & CKF_TOKEN_INITIALIZED;
        if (uninit && !init) {
            *_slot = ids[i];
            return true;
        }
        if (!uninit && init && label != NULL) {
            char l[33];
            memcpy(l, ti.label, 32);
            l[32] = '\0';
            for (int k = 31; k >= 0 && l[k] == ' '; k--)
                l[k] = '\0';
            if (strcmp(l, label) == 0) {
                *_slot = ids[i];
                return true;
            }
        }
    }
    return false;
}

bool tst_find_token(const char *label, CK_SLOT_ID *_slot)
{
    return find_slot(label, false, _slot);
}

bool tst_init_token(const char *label, CK_SLOT_ID *_slot)
{
    CK_SLOT_ID slot;
    CK_UTF8CHAR lab[32];
    CK_SESSION_HANDLE h;
    if (!find_slot(NULL, true, &slot))
        return false;
    memset(lab, ' ', sizeof lab);
    memcpy(lab, label, strlen(label));
    if (p11->C_InitToken(slot, (CK_UTF8CHAR_PTR)SO_PIN, strlen(SO_PIN), lab) != CKR_OK)
        return false;
    if (p11->C_OpenSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &h) != CKR_OK)
        return false;
    bool ok = p11->C_Login(h, CKU_SO, (CK_UTF8CHAR_PTR)SO_PIN, strlen(SO_PIN)) == CKR_OK &&
              p11->C_InitPIN(h, (CK_UTF8CHAR_PTR)USER_PIN, strlen(USER_PIN)) == CKR_OK &&
              p11->C_Logout(h) == CKR_OK;
    p11->C_CloseSession(h);
    *_slot = slot;
    return ok;
}

bool tst_user_session(CK_SLOT_ID slot, CK_SESSION_HANDLE *_h)
{
    if (p11->C_OpenSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, _h) != CKR_OK)
        return false;
    CK_RV rv = p11->C_Login(*_h, CKU_USER, (CK_UTF8CHAR_PTR)USER_PIN, strlen(USER_PIN));
    return rv == CKR_OK || rv == CKR_USER_ALREADY_LOGGED_IN;
}

static CK_BBOOL yes = CK_TRUE, no = CK_FALSE;

CK_RV tst_gen_ec(CK_SESSION_HANDLE h, int bits, bool token, const char *label,
                 CK_OBJECT_HANDLE *_pub, CK_OBJECT_HANDLE *_priv)
{
    static const CK_BYTE p256[] = {0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07};
    static const CK_BYTE p384[] = {0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22};
    char publabel[64], id[64];
    snprintf(publabel, sizeof publabel, "%s/pub", label);
    snprintf(id, sizeof id, "id:%s", label); /* not the label: tst_object_file greps labels */
    CK_MECHANISM m = {CKM_EC_KEY_PAIR_GEN, NULL, 0};
    CK_BBOOL tok = token ? CK_TRUE : CK_FALSE;
    CK_ATTRIBUTE pub[] = {
        {CKA_EC_PARAMS, (void *)(bits == 384 ? p384 : p256), bits == 384 ? sizeof p384 : sizeof p256},
        {CKA_TOKEN, &tok, sizeof tok},
        {CKA_VERIFY, &yes, sizeof yes},
        {CKA_LABEL, publabel, strlen(publabel)},
        {CKA_ID, id, strlen(id)},
    };
    CK_ATTRIBUTE priv[] = {
        {CKA_TOKEN, &tok, sizeof tok},
        {CKA_SIGN, &yes, sizeof yes},
        {CKA_SENSITIVE, &yes, sizeof yes},
        {CKA_EXTRACTABLE, &no, sizeof no},
        {CKA_LABEL, (void *)label, strlen(label)},
        {CKA_ID, id, strlen(id)},
    };
    return p11->C_GenerateKeyPair(h, &m, pub, 5, priv, 6, _pub, _priv);
}

CK_RV tst_gen_rsa(CK_SESSION_HANDLE h, CK_ULONG bits, bool token, const char *label,
                  CK_OBJECT_HANDLE *_pub, CK_OBJECT_HANDLE *_priv)
{
    static const CK_BYTE e[] = {1, 0, 1};
    char publabel[64];
    snprintf(publabel, sizeof publabel, "%s/pub", label);
    CK_MECHANISM m = {CKM_RSA_PKCS_KEY_PAIR_GEN, NULL, 0};
    CK_BBOOL tok = token ? CK_TRUE : CK_FALSE;
    CK_ATTRIBUTE pub[] = {
        {CKA_MODULUS_BITS, &bits, sizeof bits},
        {CKA_PUBLIC_EXPONENT, (void *)e, sizeof e},
        {CKA_TOKEN, &tok, sizeof tok},
        {CKA_VERIFY, &yes, sizeof yes},
        {CKA_LABEL, publabel, strlen(publabel)},
    };
    CK_ATTRIBUTE priv[] = {
        {CKA_TOKEN, &tok, sizeof tok},
        {CKA_SIGN, &yes, sizeof yes},
        {CKA_LABEL, (void *)label, strlen(label)},
    };
    return p11->C_GenerateKeyPair(h, &m, pub, 5, priv, 3, _pub, _priv);
}

CK_RV tst_gen_hmac(CK_SESSION_HANDLE h, CK_ULONG len, bool token, const char *label,
                   CK_OBJECT_HANDLE *_key)
{
    CK_MECHANISM m = {CKM_GENERIC_SECRET_KEY_GEN, NULL, 0};
    CK_BBOOL tok = token ? CK_TRUE : CK_FALSE;
    CK_ATTRIBUTE t[] = {
        {CKA_VALUE_LEN, &len, sizeof len},
        {CKA_TOKEN, &tok, sizeof tok},
        {CKA_SIGN, &yes, sizeof yes},
        {CKA_VERIFY, &yes, sizeof yes},
        {CKA_LABEL, (void *)label, strlen(label)},
    };
    return p11->C_GenerateKey(h, &m, t, 5, _key);
}

CK_RV tst_import_hmac(CK_SESSION_HANDLE h, const unsigned char *key, size_t len, bool token,
                      const char *label, CK_OBJECT_HANDLE *_key)
{
    CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
    CK_KEY_TYPE kt = CKK_GENERIC_SECRET;
    CK_BBOOL tok = token ? CK_TRUE : CK_FALSE;
    CK_ATTRIBUTE t[] = {
        {CKA_CLASS, &cls, sizeof cls},
        {CKA_KEY_TYPE, &kt, sizeof kt},
        {CKA_TOKEN, &tok, sizeof tok},
        {CKA_VALUE, (void *)key, len},
        {CKA_SIGN, &yes, sizeof yes},
        {CKA_VERIFY, &yes, sizeof yes},
        {CKA_SENSITIVE, &yes, sizeof yes},
        {CKA_EXTRACTABLE, &no, sizeof no},
        {CKA_LABEL, (void *)label, strlen(label)},
    };
    return p11->C_CreateObject(h, t, 9, _key);
}

EVP_PKEY *tst_pubkey(CK_SESSION_HANDLE h, CK_OBJECT_HANDLE o)
{
    unsigned char buf[4096];
    CK_ATTRIBUTE a = {CKA_PUBLIC_KEY_INFO, buf, sizeof buf};
    if (p11->C_GetAttributeValue(h, o, &a, 1) != CKR_OK)
        return NULL;
    const unsigned char *p = buf;
    return d2i_PUBKEY(NULL, &p, (long)a.ulValueLen);
}

CK_BBOOL tst_bool_attr(CK_SESSION_HANDLE h, CK_OBJECT_HANDLE o, CK_ATTRIBUTE_TYPE t)
{
    CK_BBOOL v = 0xff;
    CK_ATTRIBUTE a = {t, &v, sizeof v};
    if (p11->C_GetAttributeValue(h, o, &a, 1) != CKR_OK)
        return 0xff;
    return v;
}

static int find(CK_SESSION_HANDLE h, const char *label, CK_ULONG cls, CK_OBJECT_HANDLE *_o)
{
    CK_ATTRIBUTE t[2];
    CK_ULONG n = 0;
    if (label != NULL) {
        t[n].type = CKA_LABEL;
        t[n].pValue = (void *)label;
        t[n].ulValueLen = strlen(label);
        n++;
    }
    if (cls != (CK_ULONG)-1) {
        t[n].type = CKA_CLASS;
        t[n].pValue = &cls;
        t[n].ulValueLen = sizeof cls;
        n++;
    }
    if (p11->C_FindObjectsInit(h, t, n) != CKR_OK)
        return -1;
    CK_OBJECT_HANDLE objs[256];
    CK_ULONG got = 0;
    p11->C_FindObjects(h, objs, 256, &got);
    p11->C_FindObjectsFinal(h);
    if (got > 0 && _o != NULL)
        *_o = objs[0];
    return (int)got;
}

int tst_count(CK_SESSION_HANDLE h, const char *label, CK_ULONG cls)
{
    return find(h, label, cls, NULL);
}

bool tst_find_one(CK_SESSION_HANDLE h, const char *label, CK_ULONG cls, CK_OBJECT_HANDLE *_o)
{
    return find(h, label, cls, _o) == 1;
}

CK_RV tst_sign(CK_SESSION_HANDLE h, CK_MECHANISM *m, CK_OBJECT_HANDLE key, const void *data,
               size_t dlen, unsigned char *sig, CK_ULONG *len)
{
    CK_RV rv = p11->C_SignInit(h, m, key);
    if (rv != CKR_OK)
        return rv;
    return p11->C_Sign(h, (CK_BYTE_PTR)data, dlen, sig, len);
}

bool tst_ossl_verify_ecdsa(EVP_PKEY *pub, const unsigned char *dgst, size_t dlen,
                           const unsigned char *sig, size_t slen)
{
    ECDSA_SIG *es = ECDSA_SIG_new();
    BIGNUM *r = BN_bin2bn(sig, (int)(slen / 2), NULL);
    BIGNUM *s = BN_bin2bn(sig + slen / 2, (int)(slen / 2), NULL);
    unsigned char *der = NULL;
    bool ok = false;
    if (es == NULL || r == NULL || s == NULL || !ECDSA_SIG_set0(es, r, s)) {
        BN_free(r);
        BN_free(s);
        ECDSA_SIG_free(es);
        return false;
    }
    int dl = i2d_ECDSA_SIG(es, &der);
    EVP_PKEY_CTX *c = EVP_PKEY_CTX_new(pub, NULL);
    ok = dl > 0 && c != NULL && EVP_PKEY_verify_init(c) == 1 &&
         EVP_PKEY_verify(c, der, (size_t)dl, dgst, dlen) == 1;
    EVP_PKEY_CTX_free(c);
    OPENSSL_free(der);
    ECDSA_SIG_free(es);
    return ok;
}

bool tst_ossl_verify(EVP_PKEY *pub, const char *md, bool pss, const unsigned char *data,
                     size_t dlen, const unsigned char *sig, size_t slen)
{
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    EVP_PKEY_CTX *pc = NULL;
    bool ok = false;
    if (c == NULL)
        return false;
    if (EVP_DigestVerifyInit_ex(c, &pc, md, NULL, NULL, pub, NULL) != 1)
        goto out;
    if (pss && (EVP_PKEY_CTX_set_rsa_padding(pc, RSA_PKCS1_PSS_PADDING) != 1 ||
                EVP_PKEY_CTX_set_rsa_pss_saltlen(pc, RSA_PSS_SALTLEN_DIGEST) != 1))
        goto out;
    ok = EVP_DigestVerify(c, sig, slen, data, dlen) == 1;
out:
    EVP_MD_CTX_free(c);
    return ok;
}

bool tst_log_has(const tst_store *t, const char *needle)
{
    FILE *f = fopen(t->log, "r");
    if (f == NULL)
        return false;
    char line[2048];
    bool found = false;
    while (!found && fgets(line, sizeof line, f) != NULL)
        found = strstr(line, needle) != NULL;
    fclose(f);
    return found;
}

int tst_file_lines(const char *path, const char *needle)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return 0;
    char line[4096];
    int n = 0;
    while (fgets(line, sizeof line, f) != NULL)
        n += strstr(line, needle) != NULL;
    fclose(f);
    return n;
}

static bool file_has(const char *path, const unsigned char *needle, size_t n)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return false;
    unsigned char buf[65536];
    size_t len = fread(buf, 1, sizeof buf, f);
    fclose(f);
    for (size_t i = 0; i + n <= len; i++)
        if (memcmp(buf + i, needle, n) == 0)
            return true;
    return false;
}

bool tst_object_file(const tst_store *t, const char *label, char *path, size_t n)
{
    DIR *d = opendir(t->store);
    if (d == NULL)
        return false;
    struct dirent *e;
    bool found = false;
    unsigned char needle[80];
    size_t nl = 0;
    if (label != NULL) {
        /* the DER of the label attribute's value: OCTET STRING, short form */
        nl = strlen(label);
        needle[0] = 0x04;
        needle[1] = (unsigned char)nl;
        memcpy(needle + 2, label, nl);
        nl += 2;
    }
    while (!found && (e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char sub[1024];
        snprintf(sub, sizeof sub, "%s/%s", t->store, e->d_name);
        DIR *d2 = opendir(sub);
        if (d2 == NULL)
            continue;
        struct dirent *f;
        while (!found && (f = readdir(d2)) != NULL) {
            if (strncmp(f->d_name, "obj-", 4) != 0)
                continue;
            if (snprintf(path, n, "%s/%s", sub, f->d_name) >= (int)n)
                continue;
            found = label == NULL || file_has(path, needle, nl);
        }
        closedir(d2);
    }
    closedir(d);
    return found;
}
