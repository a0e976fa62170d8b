/* bench_engine: the provider's speed, side by side in one run on one SoftHSM2
 * token and key (docs/benchmarks.md, issue 4 "Speed").
 *
 *   bench_engine [--seconds S] [--rounds R] [--threads T] [--other-provider PATH] [--no-engine] [--no-tls]
 *
 * Rates (operations per second, median of R rounds, modes interleaved):
 *   ECDSA P-256 / RSA-2048 (PKCS#1 v1.5, SHA-256), T threads (1):
 *     software   the default provider with the key in memory (the ceiling)
 *     custos     EVP_DigestSignInit_ex + EVP_DigestSign through custos
 *     raw        C_SignInit + C_Sign on the token object (digest precomputed)
 *     raw copy   the same on a session copy of the key (C_CopyObject)
 *     libp11     the libp11 engine (libengine-pkcs11-openssl), same EVP calls
 *     other      another provider's module (--other-provider), same EVP calls
 *   HMAC-SHA256 of 64 bytes: CUSTOS-HMAC vs raw C_SignInit + C_Sign (object
 *   and session copy).
 *   TLS 1.3 full handshakes (in-process client, P-256 server key in a file vs
 *   in the token): handshakes/s and server CPU per handshake.
 * Every mode runs in its own child process, so no two PKCS#11 users share a
 * module instance. The token is made with the custos command line
 * ($CUSTOS_BIN, default build/bin/custos); CUSTOS_OSSL_MODULES points at
 * custos.so's directory. */
#define OPENSSL_SUPPRESS_DEPRECATED /* the libp11 engine is an ENGINE */
#include <dlfcn.h>
#include <openssl/core_names.h>
#include <openssl/engine.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/provider.h>
#include <openssl/sha.h>
#include <openssl/ssl.h>
#include <openssl/store.h>
#include <openssl/x509.h>
#include <p11-kit/p11-kit.h>
#include <p11-kit/pkcs11.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PIN "12345678"
#define LABEL "bench"
#define SOFTHSM "/usr/lib/softhsm/libsofthsm2.so"
#define LIBP11_ENGINE "/usr/lib/x86_64-linux-gnu/engines-3/pkcs11.so"

static double seconds = 2.0;
static const char *other_provider;
static char token_uri[2048], dir[256];
static const unsigned char msg[64] = "custos benchmark message, 64 bytes long ........................";

static double loop_cpu_us; /* process CPU per operation of the last loop */

static double proc_cpu(void)
{
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void key_uri(char *out, size_t n, const char *label)
{
    const char *q = strchr(token_uri, '?');
    snprintf(out, n, "%.*s;object=%s%s&pin-value=" PIN, (int)(q - token_uri), token_uri, label, q);
}

/* ---- EVP signing loops ---- */

static int nthreads = 1;

typedef struct loop_arg {
    OSSL_LIB_CTX *lib;
    EVP_PKEY *pk;
    CK_OBJECT_HANDLE h;
    CK_MECHANISM_TYPE mech;
    const unsigned char *in;
    size_t len;
    int copy;
    double end;
    long n;
} loop_arg;

/* Runs fn on nthreads threads until a.end; the rate of all of them. */
static double threaded(void *(*fn)(void *), loop_arg *proto)
{
    pthread_t th[16];
    loop_arg a[16];
    double t0 = now(), c0 = proc_cpu();
    long n = 0;
    proto->end = t0 + seconds;
    for (int i = 0; i < nthreads; i++) {
        a[i] = *proto;
        pthread_create(&th[i], NULL, fn, &a[i]);
    }
    for (int i = 0; i < nthreads; i++) {
        pthread_join(th[i], NULL);
        if (a[i].n < 0)
            return -1;
        n += a[i].n;
    }
    double t = now() - t0;
    loop_cpu_us = n > 0 ? (proc_cpu() - c0) / (double)n * 1e6 : 0;
    return (double)n / t;
}

static void *evp_thread(void *arg)
{
    loop_arg *a = arg;
    unsigned char sig[512];
    EVP_MD_CTX *m = EVP_MD_CTX_new();
    do {
        for (int i = 0; i < 32; i++, a->n++) {
            size_t sl = sizeof sig;
            if (EVP_DigestSignInit_ex(m, NULL, "SHA256", a->lib, NULL, a->pk, NULL) != 1
                || EVP_DigestSign(m, sig, &sl, msg, sizeof msg) != 1) {
                ERR_print_errors_fp(stderr);
                a->n = -1;
                EVP_MD_CTX_free(m);
                return NULL;
            }
        }
    } while (now() < a->end);
    EVP_MD_CTX_free(m);
    return NULL;
}

static double evp_loop(OSSL_LIB_CTX *lib, EVP_PKEY *pk)
{
    loop_arg a = { .lib = lib, .pk = pk };
    return threaded(evp_thread, &a);
}

static EVP_PKEY *store_load(OSSL_LIB_CTX *lib, const char *uri)
{
    EVP_PKEY *pk = NULL;
    OSSL_STORE_CTX *s = OSSL_STORE_open_ex(uri, lib, NULL, NULL, NULL, NULL, NULL, NULL);
    if (s == NULL)
        return NULL;
    OSSL_STORE_expect(s, OSSL_STORE_INFO_PKEY);
    OSSL_STORE_INFO *i = OSSL_STORE_load(s);
    if (i != NULL)
        pk = OSSL_STORE_INFO_get1_PKEY(i);
    OSSL_STORE_INFO_free(i);
    OSSL_STORE_close(s);
    return pk;
}

static OSSL_LIB_CTX *lib_with(const char *path, const char *name)
{
    OSSL_LIB_CTX *lib = OSSL_LIB_CTX_new();
    if (lib == NULL || !OSSL_PROVIDER_set_default_search_path(lib, path) || OSSL_PROVIDER_load(lib, name) == NULL
        || OSSL_PROVIDER_load(lib, "default") == NULL) {
        ERR_print_errors_fp(stderr);
        return NULL;
    }
    return lib;
}

static double mode_software(const char *alg)
{
    EVP_PKEY *pk = strcmp(alg, "ec") == 0 ? EVP_EC_gen("P-256") : EVP_RSA_gen(2048);
    return pk ? evp_loop(NULL, pk) : -1;
}

static double mode_custos(const char *alg)
{
    char uri[2200];
    key_uri(uri, sizeof uri, strcmp(alg, "ec") == 0 ? "ec" : "rsa");
    OSSL_LIB_CTX *lib = lib_with(getenv("CUSTOS_OSSL_MODULES"), "custos");
    EVP_PKEY *pk = lib ? store_load(lib, uri) : NULL;
    return pk ? evp_loop(lib, pk) : -1;
}

static double mode_other(const char *alg)
{
    char uri[2200], path[512], name[512];
    key_uri(uri, sizeof uri, strcmp(alg, "ec") == 0 ? "ec" : "rsa");
    snprintf(path, sizeof path, "%s", other_provider);
    char *slash = strrchr(path, '/'), *base = slash ? slash + 1 : path;
    snprintf(name, sizeof name, "%s", base);
    char *dot = strstr(name, ".so");
    if (dot)
        *dot = '\0';
    if (slash)
        *slash = '\0';
    OSSL_LIB_CTX *lib = lib_with(slash ? path : ".", name);
    EVP_PKEY *pk = lib ? store_load(lib, uri) : NULL;
    return pk ? evp_loop(lib, pk) : -1;
}

static double mode_libp11(const char *alg)
{
    char uri[2200];
    key_uri(uri, sizeof uri, strcmp(alg, "ec") == 0 ? "ec" : "rsa");
    ENGINE_load_dynamic();
    ENGINE *e = ENGINE_by_id("dynamic");
    if (e == NULL || !ENGINE_ctrl_cmd_string(e, "SO_PATH", LIBP11_ENGINE, 0)
        || !ENGINE_ctrl_cmd_string(e, "ID", "pkcs11", 0) || !ENGINE_ctrl_cmd_string(e, "LOAD", NULL, 0)
        || !ENGINE_ctrl_cmd_string(e, "MODULE_PATH", SOFTHSM, 0) || !ENGINE_init(e)) {
        ERR_print_errors_fp(stderr);
        return -1;
    }
    char *q = strchr(uri, '?');
    if (q)
        *q = '\0'; /* libp11 takes the module from MODULE_PATH */
    ENGINE_ctrl_cmd_string(e, "PIN", PIN, 0);
    EVP_PKEY *pk = ENGINE_load_private_key(e, uri, NULL, NULL);
    if (pk == NULL) {
        ERR_print_errors_fp(stderr);
        return -1;
    }
    return evp_loop(NULL, pk);
}

/* ---- raw PKCS#11 ---- */

static CK_FUNCTION_LIST *f;
static CK_SESSION_HANDLE sess;
static CK_SLOT_ID raw_slot;

static int raw_open(void)
{
    CK_SLOT_ID slots[16];
    CK_ULONG ns = 16;
    if ((f = p11_kit_module_load(SOFTHSM, 0)) == NULL || p11_kit_module_initialize(f) != CKR_OK
        || f->C_GetSlotList(CK_TRUE, slots, &ns) != CKR_OK)
        return 0;
    for (CK_ULONG i = 0; i < ns; i++) {
        CK_TOKEN_INFO ti;
        if (f->C_GetTokenInfo(slots[i], &ti) == CKR_OK && memcmp(ti.label, LABEL, strlen(LABEL)) == 0
            && ti.label[strlen(LABEL)] == ' ') {
            raw_slot = slots[i];
            if (f->C_OpenSession(slots[i], CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &sess) != CKR_OK)
                return 0;
            CK_RV rv = f->C_Login(sess, CKU_USER, (CK_UTF8CHAR_PTR)PIN, strlen(PIN));
            return rv == CKR_OK || rv == CKR_USER_ALREADY_LOGGED_IN;
        }
    }
    return 0;
}

static CK_OBJECT_HANDLE raw_find(const char *label, CK_OBJECT_CLASS cls)
{
    CK_ATTRIBUTE t[] = { { CKA_LABEL, (void *)label, strlen(label) }, { CKA_CLASS, &cls, sizeof cls } };
    CK_OBJECT_HANDLE h = CK_INVALID_HANDLE;
    CK_ULONG n = 0;
    f->C_FindObjectsInit(sess, t, 2);
    f->C_FindObjects(sess, &h, 1, &n);
    f->C_FindObjectsFinal(sess);
    return n == 1 ? h : CK_INVALID_HANDLE;
}

/* One thread of raw signing: its own session (and session copy). */
static void *raw_thread(void *arg)
{
    loop_arg *a = arg;
    CK_MECHANISM m = { a->mech, NULL, 0 };
    CK_SESSION_HANDLE s;
    CK_OBJECT_HANDLE h = a->h;
    unsigned char sig[512];
    if (f->C_OpenSession(raw_slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &s) != CKR_OK) {
        a->n = -1;
        return NULL;
    }
    if (a->copy) {
        CK_BBOOL no = CK_FALSE;
        CK_ATTRIBUTE t[] = { { CKA_TOKEN, &no, sizeof no } };
        if (f->C_CopyObject(s, a->h, t, 1, &h) != CKR_OK) {
            a->n = -1;
            return NULL;
        }
    }
    do {
        for (int i = 0; i < 32; i++, a->n++) {
            CK_ULONG sl = sizeof sig;
            if (f->C_SignInit(s, &m, h) != CKR_OK || f->C_Sign(s, (CK_BYTE_PTR)a->in, a->len, sig, &sl) != CKR_OK) {
                a->n = -1;
                return NULL;
            }
        }
    } while (now() < a->end);
    f->C_CloseSession(s);
    return NULL;
}

static double raw_loop(CK_OBJECT_HANDLE h, CK_MECHANISM_TYPE mech, const unsigned char *in, size_t len, int copy)
{
    loop_arg a = { .h = h, .mech = mech, .in = in, .len = len, .copy = copy };
    return threaded(raw_thread, &a);
}

static const unsigned char sha256_prefix[] = { 0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01,
                                               0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20 };

static double mode_raw(const char *alg, int copy)
{
    unsigned char in[19 + 32];
    size_t len;
    CK_MECHANISM_TYPE mech;
    bool ec = strcmp(alg, "ec") == 0, hmac = strcmp(alg, "hmac") == 0;
    if (!raw_open())
        return -1;
    CK_OBJECT_HANDLE h = raw_find(hmac ? "sas" : ec ? "ec" : "rsa", hmac ? CKO_SECRET_KEY : CKO_PRIVATE_KEY);
    if (h == CK_INVALID_HANDLE)
        return -1;
    if (hmac)
        return raw_loop(h, CKM_SHA256_HMAC, msg, sizeof msg, copy);
    memcpy(in, sha256_prefix, sizeof sha256_prefix);
    SHA256(msg, sizeof msg, in + sizeof sha256_prefix);
    if (ec) {
        mech = CKM_ECDSA;
        len = 32;
        return raw_loop(h, mech, in + sizeof sha256_prefix, len, copy);
    }
    return raw_loop(h, CKM_RSA_PKCS, in, sizeof in, copy);
}

static double mode_custos_hmac(void)
{
    char uri[2200];
    key_uri(uri, sizeof uri, "sas");
    OSSL_LIB_CTX *lib = lib_with(getenv("CUSTOS_OSSL_MODULES"), "custos");
    EVP_MAC *mac = lib ? EVP_MAC_fetch(lib, "CUSTOS-HMAC", "provider=custos") : NULL;
    EVP_MAC_CTX *c = mac ? EVP_MAC_CTX_new(mac) : NULL;
    OSSL_PARAM p[] = { OSSL_PARAM_utf8_string("key-uri", uri, 0), OSSL_PARAM_END };
    unsigned char out[32];
    size_t ol;
    if (c == NULL || !EVP_MAC_init(c, NULL, 0, p)) {
        ERR_print_errors_fp(stderr);
        return -1;
    }
    long n = 0;
    double t0 = now(), t, c0 = proc_cpu();
    bool first = true;
    do {
        for (int i = 0; i < 32; i++, n++) {
            if ((!first && !EVP_MAC_init(c, NULL, 0, NULL)) || !EVP_MAC_update(c, msg, sizeof msg)
                || !EVP_MAC_final(c, out, &ol, sizeof out))
                return -1;
            first = false;
        }
    } while ((t = now() - t0) < seconds);
    loop_cpu_us = (proc_cpu() - c0) / (double)n * 1e6;
    return (double)n / t;
}

/* ---- TLS 1.3 handshakes ---- */

static SSL_CTX *tls_server, *tls_client;
static int tls_sv[2];
static volatile int tls_stop;
static double tls_server_cpu;

static double thread_cpu(void)
{
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void *tls_server_thread(void *arg)
{
    (void)arg;
    double c0 = thread_cpu();
    while (!tls_stop) {
        int sv[2];
        if (read(tls_sv[0], sv, sizeof sv) != sizeof sv)
            break;
        SSL *s = SSL_new(tls_server);
        SSL_set_fd(s, sv[1]);
        if (SSL_accept(s) != 1 || SSL_write(s, "1", 1) != 1)
            ERR_print_errors_fp(stderr);
        SSL_free(s);
        close(sv[1]);
    }
    tls_server_cpu = thread_cpu() - c0;
    return NULL;
}

static double mode_tls(int token, double *_cpu_us)
{
    X509 *cert = NULL;
    EVP_PKEY *key = NULL;
    OSSL_LIB_CTX *lib = NULL;
    char uri[2200];
    if (token) {
        key_uri(uri, sizeof uri, "ec");
        lib = lib_with(getenv("CUSTOS_OSSL_MODULES"), "custos");
        key = lib ? store_load(lib, uri) : NULL;
    } else {
        key = EVP_EC_gen("P-256");
    }
    if (key == NULL) {
        fprintf(stderr, "tls: no server key\n");
        ERR_print_errors_fp(stderr);
        return -1;
    }
    cert = X509_new();
    X509_NAME *n = X509_NAME_new();
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)"bench", -1, -1, 0);
    X509_set_version(cert, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(cert), 1);
    X509_gmtime_adj(X509_getm_notBefore(cert), -60);
    X509_gmtime_adj(X509_getm_notAfter(cert), 3600);
    X509_set_subject_name(cert, n);
    X509_set_issuer_name(cert, n);
    X509_set_pubkey(cert, key);
    X509_sign(cert, key, EVP_sha256());
    tls_server = SSL_CTX_new_ex(lib, NULL, TLS_server_method());
    SSL_CTX_set_min_proto_version(tls_server, TLS1_3_VERSION);
    SSL_CTX_set_options(tls_server, SSL_OP_NO_TICKET);
    SSL_CTX_set_session_cache_mode(tls_server, SSL_SESS_CACHE_OFF);
    if (SSL_CTX_use_certificate(tls_server, cert) != 1 || SSL_CTX_use_PrivateKey(tls_server, key) != 1) {
        ERR_print_errors_fp(stderr);
        return -1;
    }
    tls_client = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_min_proto_version(tls_client, TLS1_3_VERSION);
    SSL_CTX_set_session_cache_mode(tls_client, SSL_SESS_CACHE_OFF);
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, tls_sv) != 0) {
        perror("socketpair");
        return -1;
    }
    pthread_t th;
    pthread_create(&th, NULL, tls_server_thread, NULL);
    long count = 0;
    double t0 = now(), t;
    do {
        int sv[2];
        socketpair(AF_UNIX, SOCK_STREAM, 0, sv);
        if (write(tls_sv[1], sv, sizeof sv) != sizeof sv) {
            perror("write");
            return -1;
        }
        SSL *c = SSL_new(tls_client);
        SSL_set_fd(c, sv[0]);
        char b;
        if (SSL_connect(c) != 1 || SSL_read(c, &b, 1) != 1) {
            ERR_print_errors_fp(stderr);
            return -1;
        }
        SSL_free(c);
        close(sv[0]);
        count++;
    } while ((t = now() - t0) < seconds);
    tls_stop = 1;
    close(tls_sv[1]);
    pthread_join(th, NULL);
    *_cpu_us = tls_server_cpu / (double)count * 1e6;
    return (double)count / t;
}

/* ---- driver ---- */

typedef struct result {
    double rate, cpu;
} result;

/* Runs one mode in a child; -1 if it failed. */
static result run(const char *mode, const char *alg)
{
    int p[2];
    result r = { -1, 0 };
    if (pipe(p) != 0)
        return r;
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        close(p[0]);
        result c = { -1, 0 };
        if (strcmp(mode, "software") == 0)
            c.rate = mode_software(alg);
        else if (strcmp(mode, "custos") == 0)
            c.rate = strcmp(alg, "hmac") == 0 ? mode_custos_hmac() : mode_custos(alg);
        else if (strcmp(mode, "raw") == 0)
            c.rate = mode_raw(alg, 0);
        else if (strcmp(mode, "raw copy") == 0)
            c.rate = mode_raw(alg, 1);
        else if (strcmp(mode, "libp11") == 0)
            c.rate = mode_libp11(alg);
        else if (strcmp(mode, "other") == 0)
            c.rate = mode_other(alg);
        else if (strcmp(mode, "tls file") == 0)
            c.rate = mode_tls(0, &c.cpu);
        else if (strcmp(mode, "tls token") == 0)
            c.rate = mode_tls(1, &c.cpu);
        if (strncmp(mode, "tls", 3) != 0)
            c.cpu = loop_cpu_us;
        if (write(p[1], &c, sizeof c) != sizeof c)
            _exit(1);
        _exit(0);
    }
    close(p[1]);
    if (read(p[0], &r, sizeof r) != sizeof r)
        r.rate = -1;
    close(p[0]);
    waitpid(pid, NULL, 0);
    return r;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static int sh(const char *cmd, char *out, size_t n)
{
    FILE *p = popen(cmd, "r");
    if (p == NULL)
        return -1;
    size_t got = out ? fread(out, 1, n - 1, p) : 0;
    if (out)
        out[got] = '\0';
    return pclose(p);
}

int main(int argc, char **argv)
{
    int rounds = 3, no_engine = 0, no_tls = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--seconds") == 0 && i + 1 < argc)
            seconds = atof(argv[++i]);
        else if (strcmp(argv[i], "--rounds") == 0 && i + 1 < argc)
            rounds = atoi(argv[++i]);
        else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc)
            nthreads = atoi(argv[++i]);
        else if (strcmp(argv[i], "--other-provider") == 0 && i + 1 < argc)
            other_provider = argv[++i];
        else if (strcmp(argv[i], "--no-engine") == 0)
            no_engine = 1;
        else if (strcmp(argv[i], "--no-tls") == 0)
            no_tls = 1;
        else {
            fprintf(stderr, "usage: %s [--seconds S] [--rounds R] [--threads T] [--other-provider PATH] [--no-engine] "
                            "[--no-tls]\n",
                    argv[0]);
            return 2;
        }
    }
    signal(SIGPIPE, SIG_IGN);
    if (rounds < 1 || rounds > 15)
        rounds = 3;
    if (nthreads < 1 || nthreads > 16)
        nthreads = 1;
    if (getenv("CUSTOS_OSSL_MODULES") == NULL) {
        fprintf(stderr, "set CUSTOS_OSSL_MODULES to the directory of custos.so\n");
        return 2;
    }
    const char *bin = getenv("CUSTOS_BIN") ? getenv("CUSTOS_BIN") : "build/bin/custos";
    if (access(LIBP11_ENGINE, R_OK) != 0)
        no_engine = 1;

    /* A SoftHSM2 token with the three keys, made by the command line. */
    char cmd[4096], out[4096];
    snprintf(dir, sizeof dir, "/tmp/cubench.XXXXXX");
    if (mkdtemp(dir) == NULL)
        return 1;
    snprintf(cmd, sizeof cmd,
             "cd %s && printf '%s\\n' > pin && printf '87654321\\n' > sopin && %s token init --kind softhsm2 "
             "--label " LABEL " --dir %s/t --pin-source pin --so-pin-source sopin",
             dir, PIN, bin, dir);
    if (sh(cmd, out, sizeof out) != 0) {
        fprintf(stderr, "token init failed\n");
        return 1;
    }
    char *nl = strchr(out, '\n');
    if (nl == NULL)
        return 1;
    *nl = '\0';
    snprintf(token_uri, sizeof token_uri, "%.2000s", out);
    for (char *l = nl + 1, *e; *l && (e = strchr(l, '\n')) != NULL; l = e + 1) {
        *e = '\0';
        putenv(strdup(l));
    }
    const char *types[][2] = { { "ec-p256", "ec" }, { "rsa2048", "rsa" }, { "hmac256", "sas" } };
    for (int i = 0; i < 3; i++) {
        snprintf(cmd, sizeof cmd, "%s token keygen --type %s --label %s --id 0%d --dir %s/t --pin-source %s/pin >/dev/null",
                 bin, types[i][0], types[i][1], i + 1, dir, dir);
        if (sh(cmd, NULL, 0) != 0) {
            fprintf(stderr, "keygen %s failed\n", types[i][0]);
            return 1;
        }
    }

    if (getenv("BENCH_ONLY") != NULL) { /* profiling aid: "MODE:ALG" in this process */
        char m[64];
        snprintf(m, sizeof m, "%s", getenv("BENCH_ONLY"));
        char *alg = strchr(m, ':');
        if (alg == NULL)
            return 2;
        *alg++ = '\0';
        double cpu = 0, r = strcmp(m, "tls") == 0 ? mode_tls(strcmp(alg, "token") == 0, &cpu)
                            : strcmp(m, "custos") == 0 ? (strcmp(alg, "hmac") == 0 ? mode_custos_hmac() : mode_custos(alg))
                            : strcmp(m, "software") == 0 ? mode_software(alg)
                            : strcmp(m, "libp11") == 0 ? mode_libp11(alg)
                            : mode_raw(alg, strcmp(m, "rawcopy") == 0);
        printf("%s %s: %.0f/s, %.1f us CPU/op\n", m, alg, r, loop_cpu_us);
        if (cpu > 0)
            printf("server CPU %.0f us/handshake\n", cpu);
        snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
        sh(cmd, NULL, 0);
        return 0;
    }
    printf("# custos provider benchmark: SoftHSM2, %d thread(s), %.1f s per mode, median of %d rounds\n", nthreads,
           seconds, rounds);
    const char *algs[] = { "ec", "rsa", "hmac" };
    const char *names[] = { "ECDSA P-256 (SHA-256)", "RSA-2048 PKCS#1 v1.5 (SHA-256)", "HMAC-SHA256 (64 bytes)" };
    for (int a = 0; a < 3; a++) {
        const char *modes[8];
        int nm = 0;
        if (a < 2)
            modes[nm++] = "software";
        modes[nm++] = "custos";
        modes[nm++] = "raw";
        modes[nm++] = "raw copy";
        if (a < 2) {
            if (!no_engine)
                modes[nm++] = "libp11";
            if (other_provider)
                modes[nm++] = "other";
        }
        double rates[8][15], cpus[8][15];
        for (int r = 0; r < rounds; r++)
            for (int m = 0; m < nm; m++) {
                result x = run(modes[m], algs[a]);
                rates[m][r] = x.rate;
                cpus[m][r] = x.cpu;
            }
        printf("\n%s\n", names[a]);
        printf("  %-10s %10s   %8s   %s\n", "mode", "rate", "CPU/op", "rate: custos ÷ this   CPU/op: this ÷ custos");
        double med[8], cmed[8];
        for (int m = 0; m < nm; m++) {
            qsort(rates[m], (size_t)rounds, sizeof(double), cmp);
            qsort(cpus[m], (size_t)rounds, sizeof(double), cmp);
            med[m] = rates[m][rounds / 2];
            cmed[m] = cpus[m][rounds / 2];
        }
        int ci = a < 2 ? 1 : 0;
        for (int m = 0; m < nm; m++)
            printf("  %-10s %8.0f/s   %6.1f us   %5.2f   %5.2f\n", modes[m], med[m], cmed[m],
                   med[m] > 0 ? med[ci] / med[m] : 0, cmed[ci] > 0 ? cmed[m] / cmed[ci] : 0);
    }
    if (!no_tls) {
        double rate[2][15], cpu[2][15];
        for (int r = 0; r < rounds; r++)
            for (int m = 0; m < 2; m++) {
                result x = run(m ? "tls token" : "tls file", "ec");
                rate[m][r] = x.rate;
                cpu[m][r] = x.cpu;
            }
        printf("\nTLS 1.3 full handshakes (in-process client), P-256 server key\n");
        for (int m = 0; m < 2; m++) {
            qsort(rate[m], (size_t)rounds, sizeof(double), cmp);
            qsort(cpu[m], (size_t)rounds, sizeof(double), cmp);
        }
        for (int m = 0; m < 2; m++)
            printf("  %-10s %8.0f handshakes/s   server CPU %6.0f us/handshake\n", m ? "token" : "file",
                   rate[m][rounds / 2], cpu[m][rounds / 2]);
        printf("  server CPU token ÷ file: %.3f\n", cpu[1][rounds / 2] / cpu[0][rounds / 2]);
    }
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    sh(cmd, NULL, 0);
    return 0;
}
