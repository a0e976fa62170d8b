/* Sign throughput of a PKCS#11 module beside plain OpenSSL, one thread:
 * ECDSA P-256 (C_SignInit + C_Sign with CKM_ECDSA over a SHA-256 digest)
 * and HMAC-SHA256 (CKM_SHA256_HMAC over 64 bytes).
 *
 *   soft_bench MODULE TOKEN_LABEL PIN SECONDS    one module
 *   soft_bench --openssl SECONDS                  OpenSSL in software
 *
 * The module must hold a P-256 private key labelled "ec" and a 32-byte
 * generic secret labelled "hmac" (tests/soft/bench.sh makes both, on
 * custos-soft and on SoftHSM2). Prints "<what> <ops/s>" lines. */
#include <dlfcn.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <p11-kit/pkcs11.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static const unsigned char dgst[32] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16,
                                       17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32};
static unsigned char data[64];

static int openssl_bench(double secs)
{
    EVP_PKEY *pk = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    unsigned char sig[128];
    size_t sl;
    long n = 0;
    double t0 = now(), t;
    /* what an application does per signature: a context per operation */
    do {
        for (int i = 0; i < 100; i++) {
            EVP_PKEY_CTX *c = EVP_PKEY_CTX_new_from_pkey(NULL, pk, NULL);
            sl = sizeof sig;
            if (c == NULL || EVP_PKEY_sign_init(c) != 1 || EVP_PKEY_sign(c, sig, &sl, dgst, 32) != 1)
                return 1;
            EVP_PKEY_CTX_free(c);
        }
        n += 100;
    } while ((t = now()) - t0 < secs);
    printf("openssl ecdsa-p256 %.0f\n", n / (t - t0));
    /* the best case: one context reused */
    EVP_PKEY_CTX *c = EVP_PKEY_CTX_new_from_pkey(NULL, pk, NULL);
    EVP_PKEY_sign_init(c);
    n = 0;
    t0 = now();
    do {
        for (int i = 0; i < 100; i++) {
            sl = sizeof sig;
            if (EVP_PKEY_sign(c, sig, &sl, dgst, 32) != 1)
                return 1;
        }
        n += 100;
    } while ((t = now()) - t0 < secs);
    printf("openssl-reused-ctx ecdsa-p256 %.0f\n", n / (t - t0));
    EVP_PKEY_CTX_free(c);
    EVP_PKEY_free(pk);
    unsigned char key[32] = {7}, mac[32];
    unsigned ml;
    n = 0;
    t0 = now();
    do {
        for (int i = 0; i < 100; i++)
            if (HMAC(EVP_sha256(), key, 32, data, sizeof data, mac, &ml) == NULL)
                return 1;
        n += 100;
    } while ((t = now()) - t0 < secs);
    printf("openssl hmac-sha256 %.0f\n", n / (t - t0));
    return 0;
}

static CK_OBJECT_HANDLE find(CK_FUNCTION_LIST *f, CK_SESSION_HANDLE h, const char *label, CK_OBJECT_CLASS cls)
{
    CK_ATTRIBUTE t[] = {{CKA_LABEL, (void *)label, strlen(label)}, {CKA_CLASS, &cls, sizeof cls}};
    CK_OBJECT_HANDLE o = CK_INVALID_HANDLE;
    CK_ULONG n = 0;
    if (f->C_FindObjectsInit(h, t, 2) != CKR_OK)
        return CK_INVALID_HANDLE;
    f->C_FindObjects(h, &o, 1, &n);
    f->C_FindObjectsFinal(h);
    return n == 1 ? o : CK_INVALID_HANDLE;
}

static int module_bench(const char *path, const char *label, const char *pin, double secs)
{
    void *lib = dlopen(path, RTLD_NOW);
    CK_C_GetFunctionList gfl = lib ? (CK_C_GetFunctionList)dlsym(lib, "C_GetFunctionList") : NULL;
    CK_FUNCTION_LIST *f;
    if (gfl == NULL || gfl(&f) != CKR_OK) {
        fprintf(stderr, "cannot load %s\n", path);
        return 1;
    }
    CK_C_INITIALIZE_ARGS args = {.flags = CKF_OS_LOCKING_OK};
    CK_SLOT_ID slots[16];
    CK_ULONG ns = 16;
    if (f->C_Initialize(&args) != CKR_OK || f->C_GetSlotList(CK_TRUE, slots, &ns) != CKR_OK)
        return 1;
    CK_SESSION_HANDLE h = CK_INVALID_HANDLE;
    for (CK_ULONG i = 0; i < ns; i++) {
        CK_TOKEN_INFO ti;
        if (f->C_GetTokenInfo(slots[i], &ti) == CKR_OK && memcmp(ti.label, label, strlen(label)) == 0 &&
            ti.label[strlen(label)] == ' ') {
            f->C_OpenSession(slots[i], CKF_SERIAL_SESSION, NULL, NULL, &h);
            break;
        }
    }
    if (h == CK_INVALID_HANDLE || f->C_Login(h, CKU_USER, (CK_UTF8CHAR_PTR)pin, strlen(pin)) != CKR_OK) {
        fprintf(stderr, "no token %s or login failed\n", label);
        return 1;
    }
    CK_OBJECT_HANDLE ec = find(f, h, "ec", CKO_PRIVATE_KEY), hk = find(f, h, "hmac", CKO_SECRET_KEY);
    if (ec == CK_INVALID_HANDLE || hk == CK_INVALID_HANDLE) {
        fprintf(stderr, "keys 'ec' / 'hmac' not found\n");
        return 1;
    }
    const char *name = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
    struct {
        const char *what;
        CK_MECHANISM m;
        CK_OBJECT_HANDLE k;
        const unsigned char *in;
        CK_ULONG inl;
    } runs[] = {{"ecdsa-p256", {CKM_ECDSA, NULL, 0}, ec, dgst, 32},
                {"hmac-sha256", {CKM_SHA256_HMAC, NULL, 0}, hk, data, sizeof data}};
    for (size_t r = 0; r < 2; r++) {
        unsigned char sig[128];
        long n = 0;
        double t0 = now(), t;
        do {
            for (int i = 0; i < 100; i++) {
                CK_ULONG sl = sizeof sig;
                if (f->C_SignInit(h, &runs[r].m, runs[r].k) != CKR_OK ||
                    f->C_Sign(h, (CK_BYTE_PTR)runs[r].in, runs[r].inl, sig, &sl) != CKR_OK) {
                    fprintf(stderr, "%s failed\n", runs[r].what);
                    return 1;
                }
            }
            n += 100;
        } while ((t = now()) - t0 < secs);
        printf("%s %s %.0f\n", name, runs[r].what, n / (t - t0));
    }
    f->C_Finalize(NULL);
    return 0;
}

int main(int argc, char **argv)
{
    memset(data, 0x5a, sizeof data);
    if (argc == 3 && strcmp(argv[1], "--openssl") == 0)
        return openssl_bench(atof(argv[2]));
    if (argc == 5)
        return module_bench(argv[1], argv[2], argv[3], atof(argv[4]));
    fprintf(stderr, "usage: soft_bench MODULE TOKEN_LABEL PIN SECONDS | --openssl SECONDS\n");
    return 2;
}
