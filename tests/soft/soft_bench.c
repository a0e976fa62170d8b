/* Sign throughput of PKCS#11 modules beside plain OpenSSL, one thread:
 * ECDSA P-256 (C_SignInit + C_Sign with CKM_ECDSA over a SHA-256 digest)
 * and HMAC-SHA256 (CKM_SHA256_HMAC over 64 bytes).
 *
 *   soft_bench SECONDS MODULE...
 *
 * Each module must have a token labelled "bench" (user PIN 1234) holding a
 * P-256 private key labelled "ec" and a 32-byte generic secret labelled
 * "hmac" (tests/soft/bench.sh makes them on custos-soft and SoftHSM2).
 * The contestants run in turns of 0.1 s, round-robin, for SECONDS each, so
 * that a machine shared with other work slows them all alike and the
 * ratios hold. Prints "<who> <what> <ops/s>" lines. */
#include <dlfcn.h>
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
static const unsigned char hkey[32] = {7};

typedef struct contestant {
    char name[64];
    int kind; /* 0 module ecdsa, 1 module hmac, 2 openssl ecdsa, 3 openssl reused ctx, 4 openssl hmac */
    CK_FUNCTION_LIST *f;
    CK_SESSION_HANDLE h;
    CK_OBJECT_HANDLE k;
    EVP_PKEY *pk;
    EVP_PKEY_CTX *ctx;
    long n;
    double t;
} contestant;

/* One operation; returns 0 on success. */
static int once(contestant *c)
{
    unsigned char sig[128];
    size_t sl = sizeof sig;
    CK_ULONG cl = sizeof sig;
    unsigned ml;
    switch (c->kind) {
    case 0: {
        CK_MECHANISM m = {CKM_ECDSA, NULL, 0};
        return c->f->C_SignInit(c->h, &m, c->k) != CKR_OK ||
               c->f->C_Sign(c->h, (CK_BYTE_PTR)dgst, 32, sig, &cl) != CKR_OK;
    }
    case 1: {
        CK_MECHANISM m = {CKM_SHA256_HMAC, NULL, 0};
        return c->f->C_SignInit(c->h, &m, c->k) != CKR_OK ||
               c->f->C_Sign(c->h, data, sizeof data, sig, &cl) != CKR_OK;
    }
    case 2: { /* what an application does per signature */
        EVP_PKEY_CTX *x = EVP_PKEY_CTX_new_from_pkey(NULL, c->pk, NULL);
        int bad = x == NULL || EVP_PKEY_sign_init(x) != 1 || EVP_PKEY_sign(x, sig, &sl, dgst, 32) != 1;
        EVP_PKEY_CTX_free(x);
        return bad;
    }
    case 3:
        return EVP_PKEY_sign(c->ctx, sig, &sl, dgst, 32) != 1;
    default:
        return HMAC(EVP_sha256(), hkey, sizeof hkey, data, sizeof data, sig, &ml) == NULL;
    }
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

/* Opens the "bench" token of a module; adds its two contestants. */
static int add_module(const char *path, contestant *c)
{
    void *lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    CK_C_GetFunctionList gfl = lib ? (CK_C_GetFunctionList)dlsym(lib, "C_GetFunctionList") : NULL;
    CK_FUNCTION_LIST *f;
    if (gfl == NULL || gfl(&f) != CKR_OK) {
        fprintf(stderr, "cannot load %s\n", path);
        return -1;
    }
    CK_C_INITIALIZE_ARGS args = {.flags = CKF_OS_LOCKING_OK};
    CK_SLOT_ID slots[16];
    CK_ULONG ns = 16;
    if (f->C_Initialize(&args) != CKR_OK || f->C_GetSlotList(CK_TRUE, slots, &ns) != CKR_OK)
        return -1;
    CK_SESSION_HANDLE h = CK_INVALID_HANDLE;
    for (CK_ULONG i = 0; i < ns; i++) {
        CK_TOKEN_INFO ti;
        if (f->C_GetTokenInfo(slots[i], &ti) == CKR_OK && memcmp(ti.label, "bench ", 6) == 0) {
            f->C_OpenSession(slots[i], CKF_SERIAL_SESSION, NULL, NULL, &h);
            break;
        }
    }
    if (h == CK_INVALID_HANDLE || f->C_Login(h, CKU_USER, (CK_UTF8CHAR_PTR)"1234", 4) != CKR_OK) {
        fprintf(stderr, "%s: no token 'bench' or login failed\n", path);
        return -1;
    }
    const char *name = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
    for (int k = 0; k < 2; k++) {
        memset(&c[k], 0, sizeof c[k]);
        snprintf(c[k].name, sizeof c[k].name, "%s %s", name, k == 0 ? "ecdsa-p256" : "hmac-sha256");
        c[k].kind = k;
        c[k].f = f;
        c[k].h = h;
        c[k].k = k == 0 ? find(f, h, "ec", CKO_PRIVATE_KEY) : find(f, h, "hmac", CKO_SECRET_KEY);
        if (c[k].k == CK_INVALID_HANDLE) {
            fprintf(stderr, "%s: keys 'ec' / 'hmac' not found\n", path);
            return -1;
        }
    }
    return 2;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: soft_bench SECONDS [MODULE...]\n");
        return 2;
    }
    double secs = atof(argv[1]);
    contestant c[32];
    int n = 0;
    memset(data, 0x5a, sizeof data);
    for (int i = 2; i < argc && n < 28; i++) {
        int added = add_module(argv[i], &c[n]);
        if (added < 0)
            return 1;
        n += added;
    }
    EVP_PKEY *pk = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    const char *on[] = {"openssl ecdsa-p256", "openssl-reused-ctx ecdsa-p256", "openssl hmac-sha256"};
    for (int k = 0; k < 3; k++) {
        memset(&c[n], 0, sizeof c[n]);
        snprintf(c[n].name, sizeof c[n].name, "%s", on[k]);
        c[n].kind = 2 + k;
        c[n].pk = pk;
        if (k == 1) {
            c[n].ctx = EVP_PKEY_CTX_new_from_pkey(NULL, pk, NULL);
            EVP_PKEY_sign_init(c[n].ctx);
        }
        n++;
    }
    /* round-robin turns of 0.1 s until each has had `secs` */
    for (double done = 0; done < secs; done += 0.1) {
        for (int i = 0; i < n; i++) {
            double t0 = now(), t;
            long k = 0;
            do {
                for (int j = 0; j < 20; j++)
                    if (once(&c[i]) != 0) {
                        fprintf(stderr, "%s failed\n", c[i].name);
                        return 1;
                    }
                k += 20;
            } while ((t = now()) - t0 < 0.1);
            c[i].n += k;
            c[i].t += t - t0;
        }
    }
    for (int i = 0; i < n; i++)
        printf("%s %.0f\n", c[i].name, c[i].n / c[i].t);
    return 0;
}
