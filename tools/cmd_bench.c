/* custos bench sign: signatures per second through the token layer, side by
 * side with a raw C_Sign loop on the same key (token object and session copy),
 * the OpenSSL provider custos and, if given, another provider, in one run, so
 * that ratios compare like with like. */
#include "bench_prov.h"
#include "cli.h"
#include "token_util.h"

#include <custos/token.h>
#include <errno.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/provider.h>
#include <openssl/rand.h>
#include <openssl/store.h>
#include <openssl/ui.h>
#include <openssl/ec.h>
#include <openssl/rsa.h>
#include <p11-kit/pkcs11.h>
#include <pthread.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

int cu_cmd_bench(int argc, char **argv);
int cu_bench_load(int argc, char **argv);
int cu_bench_tls(int argc, char **argv);
int cu_bench_s_server(int argc, char **argv);

/* MODE_OTHER must follow MODE_PROV (plib[], pkey[] are indexed from it). */
typedef enum {
    MODE_LAYER, MODE_RAW, MODE_COPY, MODE_SOFT, MODE_SOFT_EVP, MODE_PROV, MODE_OTHER, MODE_PROV_KEPT, MODE__N
} mode;
static const char *mode_names[MODE__N] = {"custos",           "raw-C_Sign",           "raw-C_Sign-copy",
                                          "openssl-software", "openssl-software-evp", "provider",
                                          "other-provider",   "provider-kept-ctx"};

/* ---- Providers: shared with bench tls (bench_prov.h) ---- */

double cu_bench_clock(clockid_t c)
{
    struct timespec ts;
    clock_gettime(c, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

const char *cu_bench_provider_dir(char *buf, size_t len)
{
    const char *env = getenv("CUSTOS_OSSL_MODULES");
    if (env != NULL && *env != '\0')
        return env;
    /* The build tree and an installation both keep custos.so in
     * ../lib/ossl-modules beside bin/custos. */
    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0)
        return NULL;
    exe[n] = '\0';
    char *slash = strrchr(exe, '/');
    if (slash == NULL)
        return NULL;
    *slash = '\0';
    snprintf(buf, len, "%s/../lib/ossl-modules", exe);
    return buf;
}

OSSL_LIB_CTX *cu_bench_provider_lib(const char *module, char *err, size_t errlen)
{
    char dir[4096], name[4096];
    snprintf(dir, sizeof dir, "%s", module);
    char *slash = strrchr(dir, '/');
    snprintf(name, sizeof name, "%s", slash ? slash + 1 : dir);
    char *dot = strstr(name, ".so");
    if (dot != NULL)
        *dot = '\0';
    if (slash != NULL)
        *slash = '\0';
    if (access(module, R_OK) != 0) {
        snprintf(err, errlen, "provider module %s: %s", module, strerror(errno));
        return NULL;
    }
    OSSL_LIB_CTX *lib = OSSL_LIB_CTX_new();
    if (lib == NULL || !OSSL_PROVIDER_set_default_search_path(lib, slash ? dir : ".") ||
        OSSL_PROVIDER_load(lib, name) == NULL || OSSL_PROVIDER_load(lib, "default") == NULL) {
        unsigned long e = ERR_peek_last_error();
        snprintf(err, errlen, "cannot load the provider %s: %s", module, e ? ERR_reason_error_string(e) : "?");
        ERR_clear_error();
        cu_bench_provider_lib_free(lib);
        return NULL;
    }
    return lib;
}

typedef struct prov_list {
    OSSL_PROVIDER *p[8];
    int n;
} prov_list;

static int collect(OSSL_PROVIDER *p, void *arg)
{
    prov_list *l = arg;
    if (l->n < 8)
        l->p[l->n++] = p;
    return 1;
}

void cu_bench_provider_lib_free(OSSL_LIB_CTX *lib)
{
    prov_list l = {.n = 0};
    if (lib == NULL)
        return;
    /* Each provider was loaded once here: unload it once (freeing the
     * context alone keeps the loads' references). */
    OSSL_PROVIDER_do_all(lib, collect, &l);
    for (int i = 0; i < l.n; i++)
        OSSL_PROVIDER_unload(l.p[i]);
    OSSL_LIB_CTX_free(lib);
}

static int pin_cb(char *buf, int size, int rwflag, void *u)
{
    (void)rwflag;
    const char *pin = u;
    int n = pin ? (int)strlen(pin) : 0;
    if (n <= 0 || n >= size)
        return -1;
    memcpy(buf, pin, (size_t)n);
    return n;
}

EVP_PKEY *cu_bench_provider_key(OSSL_LIB_CTX *lib, const char *uri, const char *pin, char *err, size_t errlen)
{
    EVP_PKEY *pk = NULL;
    /* The PIN reaches the provider as the application's passphrase, never
     * in the URI. */
    UI_METHOD *ui = UI_UTIL_wrap_read_pem_callback(pin_cb, 0);
    OSSL_STORE_CTX *s = OSSL_STORE_open_ex(uri, lib, NULL, ui, (void *)pin, NULL, NULL, NULL);
    if (s != NULL && OSSL_STORE_expect(s, OSSL_STORE_INFO_PKEY)) {
        OSSL_STORE_INFO *i = OSSL_STORE_load(s);
        if (i != NULL)
            pk = OSSL_STORE_INFO_get1_PKEY(i);
        OSSL_STORE_INFO_free(i);
    }
    OSSL_STORE_close(s);
    UI_destroy_method(ui);
    if (pk == NULL) {
        unsigned long e = ERR_peek_last_error();
        const char *data = NULL;
        ERR_peek_last_error_data(&data, NULL);
        snprintf(err, errlen, "the provider cannot load the key: %s%s%s", e ? ERR_reason_error_string(e) : "no key",
                 data && *data ? ": " : "", data ? data : "");
        ERR_clear_error();
    }
    return pk;
}

typedef struct bench {
    cu_object *key;
    cu_sig sig;
    uint8_t input[64];   /* a SHA-256 digest, or the HMAC message */
    size_t input_len;
    CK_MECHANISM mech;   /* the raw mechanism, for the raw loops */
    uint8_t raw_in[64 + 19];
    size_t raw_in_len;
    CK_OBJECT_HANDLE raw_handle;   /* the handle the raw loop signs with now */
    CK_OBJECT_HANDLE token_handle; /* the token object */
    CK_OBJECT_HANDLE copy_handle;  /* a session copy of it, or 0 */
    EVP_PKEY *soft_key;  /* the software twin (same type and size), the ceiling */
    uint8_t hmac_key[32];
    OSSL_LIB_CTX *plib[2];   /* custos, other provider (MODE_PROV, MODE_OTHER) */
    EVP_PKEY *pkey[2];       /* the same key through each */
    char *key_uri;           /* for CUSTOS-HMAC */
    double seconds;
    mode m;
    atomic_bool failed;
    char err[600];
} bench;

typedef struct worker {
    bench *b;
    unsigned long count;
    CK_SESSION_HANDLE session; /* the raw loop's session, open for the whole run */
} worker;

static void fail(bench *b, const char *msg)
{
    if (!atomic_exchange(&b->failed, true))
        snprintf(b->err, sizeof b->err, "%s", msg);
}

/* The ceiling: the same operation with a key in memory, OpenSSL's default
 * provider, one context per thread, initialized once (EVP_PKEY_sign of the
 * digest). MODE_PROV_KEPT signs the same way with the token key through
 * custos: the provider's own cost without OpenSSL's per-signature
 * initialization. */
static void run_kept(worker *w)
{
    bench *b = w->b;
    uint8_t sig[1024];
    double end = cu_bench_clock(CLOCK_MONOTONIC) + b->seconds;
    EVP_PKEY_CTX *pctx = NULL;
    EVP_MAC *mac = NULL;
    EVP_MAC_CTX *mctx = NULL;
    if (b->sig.alg == CU_SIG_HMAC) {
        OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string("digest", "SHA256", 0), OSSL_PARAM_construct_end()};
        mac = EVP_MAC_fetch(NULL, "HMAC", "provider=default");
        mctx = mac ? EVP_MAC_CTX_new(mac) : NULL;
        if (mctx == NULL || !EVP_MAC_CTX_set_params(mctx, params)) {
            fail(b, "cannot set up a software HMAC");
            goto out;
        }
    } else {
        pctx = b->m == MODE_PROV_KEPT ? EVP_PKEY_CTX_new_from_pkey(b->plib[0], b->pkey[0], NULL)
                                      : EVP_PKEY_CTX_new_from_pkey(NULL, b->soft_key, "provider=default");
        if (pctx == NULL || EVP_PKEY_sign_init(pctx) <= 0 ||
            EVP_PKEY_CTX_set_signature_md(pctx, EVP_sha256()) <= 0 ||
            (b->sig.alg == CU_SIG_RSA_PKCS1 && EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PADDING) <= 0)) {
            fail(b, b->m == MODE_PROV_KEPT ? "cannot set up a signature context through custos"
                                           : "cannot set up a software signature");
            goto out;
        }
    }
    while (!atomic_load(&b->failed)) {
        for (int i = 0; i < 16; i++) {
            size_t len = sizeof sig;
            int ok = mctx ? EVP_MAC_init(mctx, b->hmac_key, sizeof b->hmac_key, NULL) &&
                                EVP_MAC_update(mctx, b->input, b->input_len) &&
                                EVP_MAC_final(mctx, sig, &len, sizeof sig)
                          : EVP_PKEY_sign(pctx, sig, &len, b->input, b->input_len) > 0;
            if (!ok) {
                fail(b, b->m == MODE_PROV_KEPT ? "signing through custos failed" : "software signature failed");
                break;
            }
            w->count++;
        }
        if (cu_bench_clock(CLOCK_MONOTONIC) >= end)
            break;
    }
out:
    EVP_PKEY_CTX_free(pctx);
    EVP_MAC_CTX_free(mctx);
    EVP_MAC_free(mac);
}

/* The same key through an OpenSSL provider, as an application signs:
 * EVP_DigestSignInit_ex + EVP_DigestSign per signature (the input is the
 * message, hashed by the provider); HMAC through EVP_MAC (CUSTOS-HMAC).
 * MODE_SOFT_EVP does the same with the software key in the default
 * provider: what OpenSSL's API costs any key, beside run_kept's
 * kept context. */
static void run_provider(worker *w, mode which)
{
    bench *b = w->b;
    uint8_t sig[1024];
    double end = cu_bench_clock(CLOCK_MONOTONIC) + b->seconds;
    OSSL_LIB_CTX *lib = which == MODE_SOFT_EVP ? NULL : b->plib[which - MODE_PROV];
    EVP_PKEY *pkey = which == MODE_SOFT_EVP ? b->soft_key : b->pkey[which - MODE_PROV];
    EVP_MD_CTX *m = EVP_MD_CTX_new();
    EVP_MAC *mac = NULL;
    EVP_MAC_CTX *mctx = NULL;
    if (b->sig.alg == CU_SIG_HMAC) {
        OSSL_PARAM p[] = {OSSL_PARAM_construct_utf8_string("key-uri", b->key_uri, 0), OSSL_PARAM_construct_end()};
        mac = EVP_MAC_fetch(lib, "CUSTOS-HMAC", NULL);
        mctx = mac ? EVP_MAC_CTX_new(mac) : NULL;
        if (mctx == NULL || !EVP_MAC_CTX_set_params(mctx, p)) {
            fail(b, "cannot set up CUSTOS-HMAC");
            goto out;
        }
    }
    while (!atomic_load(&b->failed)) {
        for (int i = 0; i < 16; i++) {
            size_t len = sizeof sig;
            int ok = mctx ? EVP_MAC_init(mctx, NULL, 0, NULL) && EVP_MAC_update(mctx, b->input, b->input_len) &&
                                EVP_MAC_final(mctx, sig, &len, sizeof sig)
                          : EVP_DigestSignInit_ex(m, NULL, "SHA256", lib, NULL, pkey, NULL) == 1 &&
                                EVP_DigestSign(m, sig, &len, b->input, b->input_len) == 1;
            if (!ok) {
                char msg[300];
                unsigned long e = ERR_peek_last_error();
                snprintf(msg, sizeof msg, "%s: signing failed: %s", mode_names[which],
                         e ? ERR_reason_error_string(e) : "?");
                fail(b, msg);
                break;
            }
            w->count++;
        }
        if (cu_bench_clock(CLOCK_MONOTONIC) >= end)
            break;
    }
out:
    EVP_MD_CTX_free(m);
    EVP_MAC_CTX_free(mctx);
    EVP_MAC_free(mac);
}

static void *run_worker(void *p)
{
    worker *w = p;
    bench *b = w->b;
    if (b->m == MODE_SOFT || b->m == MODE_PROV_KEPT) {
        run_kept(w);
        return NULL;
    }
    if (b->m == MODE_PROV || b->m == MODE_OTHER || b->m == MODE_SOFT_EVP) {
        run_provider(w, b->m);
        return NULL;
    }
    uint8_t sig[1024];
    double end = cu_bench_clock(CLOCK_MONOTONIC) + b->seconds;
    CK_FUNCTION_LIST *f = cu_module_get0_functions(cu_token_get0_module(cu_object_get0_token(b->key)));
    CK_SESSION_HANDLE s = w->session;
    while (!atomic_load(&b->failed)) {
        for (int i = 0; i < 16; i++) {
            size_t len = sizeof sig;
            if (b->m == MODE_LAYER) {
                cu_rc rc = b->sig.alg == CU_SIG_HMAC ? cu_sign(b->key, &b->sig, b->input, b->input_len, sig, &len)
                                                     : cu_sign_digest(b->key, &b->sig, b->input, b->input_len, sig, &len);
                if (rc != CU_OK) {
                    fail(b, cu_err_last()->msg);
                    break;
                }
            } else {
                CK_ULONG l = sizeof sig;
                CK_RV rv = f->C_SignInit(s, &b->mech, b->raw_handle);
                if (rv == CKR_OK)
                    rv = f->C_Sign(s, b->raw_in, b->raw_in_len, sig, &l);
                if (rv != CKR_OK) {
                    char m[96];
                    snprintf(m, sizeof m, "raw C_SignInit/C_Sign failed (%s)", cu_ckr_str(rv));
                    fail(b, m);
                    break;
                }
            }
            w->count++;
        }
        if (cu_bench_clock(CLOCK_MONOTONIC) >= end)
            break;
    }
    return NULL;
}

/* One turn of one contestant: T threads for b->seconds. Adds to the
 * contestant's count, time and process CPU time (only this contestant runs
 * during its turn, so the CPU is its own: on a busy machine CPU per
 * signature moves far less than the rate). */
static void run_turn(bench *b, mode m, int threads, const CK_SESSION_HANDLE *sessions, unsigned long *count,
                     double *elapsed, double *cpu)
{
    double c0 = cu_bench_clock(CLOCK_PROCESS_CPUTIME_ID);
    pthread_t th[64];
    worker w[64];
    b->m = m;
    b->raw_handle = m == MODE_COPY ? b->copy_handle : b->token_handle;
    double t0 = cu_bench_clock(CLOCK_MONOTONIC);
    for (int i = 0; i < threads; i++) {
        w[i] = (worker){b, 0, sessions[i]};
        pthread_create(&th[i], NULL, run_worker, &w[i]);
    }
    for (int i = 0; i < threads; i++) {
        pthread_join(th[i], NULL);
        *count += w[i].count;
    }
    *elapsed += cu_bench_clock(CLOCK_MONOTONIC) - t0;
    *cpu += cu_bench_clock(CLOCK_PROCESS_CPUTIME_ID) - c0;
}

/* Contestants take turns of TURN seconds until each has had its share, so
 * that a busy machine slows them alike and their ratios stay meaningful. */
enum { TURNS_PER_SECOND = 10 };

static void run_contest(bench *b, const bool active[MODE__N], double seconds, int threads, double rate[MODE__N],
                        double cpu_us[MODE__N])
{
    unsigned long count[MODE__N] = {0};
    double elapsed[MODE__N] = {0}, cpu[MODE__N] = {0};
    int turns = (int)(seconds * TURNS_PER_SECOND + 0.5);
    if (turns < 1)
        turns = 1;
    b->seconds = seconds / turns;
    /* The raw loops keep one session per thread for the whole run, as a
     * server would (and as the layer's pool does). */
    CK_SESSION_HANDLE sessions[64];
    cu_token *tok = cu_object_get0_token(b->key);
    CK_FUNCTION_LIST *f = cu_module_get0_functions(cu_token_get0_module(tok));
    for (int i = 0; i < threads; i++) {
        sessions[i] = CK_INVALID_HANDLE;
        if ((active[MODE_RAW] || active[MODE_COPY]) &&
            f->C_OpenSession(cu_token_get0_desc(tok)->slot_id, CKF_SERIAL_SESSION, NULL, NULL, &sessions[i]) != CKR_OK)
            fail(b, "C_OpenSession failed");
    }
    for (int t = 0; t < turns && !atomic_load(&b->failed); t++)
        for (int m = 0; m < MODE__N; m++)
            if (active[m])
                run_turn(b, (mode)m, threads, sessions, &count[m], &elapsed[m], &cpu[m]);
    for (int i = 0; i < threads; i++)
        if (sessions[i] != CK_INVALID_HANDLE)
            f->C_CloseSession(sessions[i]);
    for (int m = 0; m < MODE__N; m++) {
        rate[m] = active[m] && elapsed[m] > 0 && !atomic_load(&b->failed) ? (double)count[m] / elapsed[m] : 0;
        cpu_us[m] = rate[m] > 0 && count[m] > 0 ? cpu[m] / (double)count[m] * 1e6 : 0;
    }
}

/* Runs P copies of this command (one process each) and sums their rates. */
static int run_processes(int argc, char **argv, int procs, bool json)
{
    char *args[64];
    int n = 0;
    for (int i = 0; i < argc && n < 60; i++) {
        if (strcmp(argv[i], "--processes") == 0) {
            i++;
            continue;
        }
        if (strncmp(argv[i], "--processes=", 12) == 0 || strcmp(argv[i], "--json") == 0)
            continue;
        args[n++] = argv[i];
    }
    args[n++] = "--json";
    args[n++] = "--quiet-header";
    args[n] = NULL;
    char *full[70];
    full[0] = "custos";
    full[1] = "bench";
    memcpy(full + 2, args, sizeof(char *) * (size_t)(n + 1));
    pid_t pids[16];
    FILE *outs[16];
    for (int p = 0; p < procs; p++) {
        int fds[2];
        posix_spawn_file_actions_t fa;
        if (pipe(fds) != 0)
            return cu_cli_fail("pipe: %s", strerror(errno));
        posix_spawn_file_actions_init(&fa);
        posix_spawn_file_actions_adddup2(&fa, fds[1], STDOUT_FILENO);
        posix_spawn_file_actions_addclose(&fa, fds[0]);
        int e = posix_spawn(&pids[p], "/proc/self/exe", &fa, NULL, full, environ);
        posix_spawn_file_actions_destroy(&fa);
        close(fds[1]);
        if (e != 0)
            return cu_cli_fail("cannot start a benchmark process: %s", strerror(e));
        outs[p] = fdopen(fds[0], "r");
    }
    double sum[MODE__N] = {0};
    int bad = 0;
    for (int p = 0; p < procs; p++) {
        char line[1024] = "";
        if (fgets(line, sizeof line, outs[p]) == NULL)
            bad++;
        for (int m = 0; m < MODE__N; m++) {
            char keyname[64];
            snprintf(keyname, sizeof keyname, "\"%s\":", mode_names[m]);
            char *at = strstr(line, keyname);
            if (at != NULL)
                sum[m] += strtod(at + strlen(keyname), NULL);
        }
        fclose(outs[p]);
        int st = 0;
        waitpid(pids[p], &st, 0);
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
            bad++;
    }
    if (bad)
        return cu_cli_fail("%d benchmark process(es) failed", bad);
    if (json) {
        printf("{\"processes\":%d", procs);
        for (int m = 0; m < MODE__N; m++)
            printf(",\"%s\":%.1f", mode_names[m], sum[m]);
        printf("}\n");
    } else {
        printf("%d processes, total signatures per second:\n", procs);
        for (int m = 0; m < MODE__N; m++)
            if (sum[m] > 0)
                printf("  %-20s %10.0f/s\n", mode_names[m], sum[m]);
        if (sum[MODE_RAW] > 0)
            printf("  custos / raw C_Sign: %.3f\n", sum[MODE_LAYER] / sum[MODE_RAW]);
    }
    return CU_EXIT_OK;
}

static int bench_sign(int argc, char **argv)
{
    const char *uri = NULL, *dir = NULL, *pin_source = NULL, *secs = "3", *thr = "1", *procs = "1";
    const char *prov_path = NULL, *other = NULL;
    bool json = false, help = false, quiet = false, layer_only = false, with_prov = false;
    cu_cli_opt opts[] = {
        {"--uri", &uri, NULL, NULL, NULL, 0},         {"--dir", &dir, NULL, NULL, NULL, 0},
        {"--pin-source", &pin_source, NULL, NULL, NULL, 0},
        {"--seconds", &secs, NULL, NULL, NULL, 0},    {"--threads", &thr, NULL, NULL, NULL, 0},
        {"--processes", &procs, NULL, NULL, NULL, 0}, {"--layer-only", NULL, &layer_only, NULL, NULL, 0},
        {"--json", NULL, &json, NULL, NULL, 0},       {"--quiet-header", NULL, &quiet, NULL, NULL, 0},
        {"--provider", NULL, &with_prov, NULL, NULL, 0}, {"--provider-path", &prov_path, NULL, NULL, NULL, 0},
        {"--other-provider", &other, NULL, NULL, NULL, 0},
        {"--help", NULL, &help, NULL, NULL, 0},       {NULL, NULL, NULL, NULL, NULL, 0},
    };
    int rc = cu_cli_parse("bench sign", argc, argv, opts, NULL, 0, NULL);
    if (rc != CU_EXIT_OK)
        return rc;
    if (help) {
        printf("usage: custos bench sign --uri URI [--dir TOKEN_DIR] [--pin-source FILE]\n"
               "                         [--seconds S] [--threads T] [--processes P] [--layer-only] [--json]\n"
               "                         [--provider] [--provider-path DIR] [--other-provider MODULE.so]\n\n"
               "Signatures per second with the key the URI names (EC: ECDSA over a SHA-256\n"
               "digest; RSA: PKCS#1 v1.5 SHA-256; HMAC: HMAC-SHA256 of 64 bytes), through\n"
               "the token layer and, in the same run, through a raw C_SignInit+C_Sign loop\n"
               "on the token object and on a session copy of it, and with a software key\n"
               "of the same type in OpenSSL (the ceiling). The contestants take turns of\n"
               "0.1 s, S seconds each in all, so that a busy machine slows them alike;\n"
               "each also reports its process CPU time per signature (steadier than the\n"
               "rate when the machine is busy).\n"
               "T threads per process;\n"
               "P processes (each its own copy of this command), rates summed.\n"
               "--provider adds the OpenSSL provider custos (custos.so from --provider-path,\n"
               "$CUSTOS_OSSL_MODULES, or ../lib/ossl-modules beside this program) on the same\n"
               "key: EVP_DigestSignInit_ex + EVP_DigestSign of the input per signature, as\n"
               "TLS signs (HMAC: EVP_MAC CUSTOS-HMAC), and for EC and RSA keys also with one\n"
               "context initialized once (EVP_PKEY_sign of the digest, as the software key\n"
               "signs) beside the software key signed the first way; --other-provider adds\n"
               "another provider's module (loaded by path, with the default provider).\n");
        return CU_EXIT_OK;
    }
    double seconds = strtod(secs, NULL);
    int threads = atoi(thr), nproc = atoi(procs);
    if (seconds <= 0 || seconds > 600 || threads < 1 || threads > 64 || nproc < 1 || nproc > 16)
        return cu_cli_usage("bench sign", "--seconds 0..600, --threads 1..64, --processes 1..16");
    if (uri == NULL && dir == NULL)
        return cu_cli_usage("bench sign", "--uri URI is required");
    if (nproc > 1)
        return run_processes(argc, argv, nproc, json);

    cu_tok_target t;
    if ((rc = cu_tok_target_open(dir, uri, pin_source, true, &t)) != CU_EXIT_OK)
        return rc;
    bench *b = calloc(1, sizeof *b);
    cu_object *key = NULL;
    if (b == NULL || cu_token_find(t.tok, uri, CU_CLASS_ANY, &key) != CU_OK) {
        rc = cu_cli_fail("%s", b ? cu_err_last()->msg : "out of memory");
        goto out;
    }
    b->key = key;
    b->seconds = seconds;
    b->token_handle = cu_object_get_handle(key);
    unsigned int mdlen = 0;
    EVP_Digest("custos bench", 12, b->input, &mdlen, EVP_sha256(), NULL);
    b->input_len = mdlen;
    memcpy(b->raw_in, b->input, mdlen);
    b->raw_in_len = mdlen;
    switch (cu_object_key_type(key)) {
    case CU_KEY_EC:
        b->sig = (cu_sig){CU_SIG_ECDSA, CU_HASH_SHA256, 0, -1};
        b->mech.mechanism = CKM_ECDSA;
        break;
    case CU_KEY_RSA: {
        static const uint8_t prefix[] = {0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01,
                                         0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20};
        b->sig = (cu_sig){CU_SIG_RSA_PKCS1, CU_HASH_SHA256, 0, -1};
        b->mech.mechanism = CKM_RSA_PKCS;
        memcpy(b->raw_in, prefix, sizeof prefix);
        memcpy(b->raw_in + sizeof prefix, b->input, mdlen);
        b->raw_in_len = sizeof prefix + mdlen;
        break;
    }
    case CU_KEY_HMAC:
        b->sig = (cu_sig){CU_SIG_HMAC, CU_HASH_SHA256, 0, 0};
        b->mech.mechanism = CKM_SHA256_HMAC;
        memset(b->input, 0x5a, 64);
        memset(b->raw_in, 0x5a, 64);
        b->input_len = b->raw_in_len = 64;
        break;
    default:
        rc = cu_cli_fail("the URI names no EC, RSA or HMAC key");
        goto out;
    }
    const cu_token_desc *d = cu_token_get0_desc(t.tok);
    double rate[MODE__N] = {0}, cpu_us[MODE__N] = {0};
    /* Warm up (first use makes the session copy), then measure each mode. */
    {
        uint8_t sig[1024];
        size_t len = sizeof sig;
        cu_rc w = b->sig.alg == CU_SIG_HMAC ? cu_sign(key, &b->sig, b->input, b->input_len, sig, &len)
                                            : cu_sign_digest(key, &b->sig, b->input, b->input_len, sig, &len);
        if (w != CU_OK) {
            rc = cu_cli_fail("%s", cu_err_last()->msg);
            goto out;
        }
    }
    /* The contestants: the layer; raw C_Sign on the token object and on a
     * session copy (made by a session kept open for the run); a software key
     * of the same type in OpenSSL, the ceiling. */
    bool active[MODE__N] = {[MODE_LAYER] = true};
    CK_FUNCTION_LIST *f = cu_module_get0_functions(cu_token_get0_module(t.tok));
    CK_SESSION_HANDLE keep = CK_INVALID_HANDLE;
    if (!layer_only) {
        CK_BBOOL no = CK_FALSE;
        CK_ATTRIBUTE tmpl[] = {{CKA_TOKEN, &no, sizeof no}};
        active[MODE_RAW] = true;
        if (f->C_OpenSession(d->slot_id, CKF_SERIAL_SESSION, NULL, NULL, &keep) == CKR_OK &&
            f->C_CopyObject(keep, b->token_handle, tmpl, 1, &b->copy_handle) == CKR_OK)
            active[MODE_COPY] = true;
        if (b->sig.alg == CU_SIG_ECDSA)
            active[MODE_SOFT] = (b->soft_key = EVP_EC_gen(cu_object_bits(key) == 384 ? "P-384" : "P-256")) != NULL;
        else if (b->sig.alg == CU_SIG_RSA_PKCS1)
            active[MODE_SOFT] = (b->soft_key = EVP_RSA_gen(cu_object_bits(key) ? cu_object_bits(key) : 2048)) != NULL;
        else
            active[MODE_SOFT] = RAND_bytes(b->hmac_key, sizeof b->hmac_key) == 1;
    }
    if (with_prov || prov_path != NULL || other != NULL) {
        char err[600], dirbuf[4200], module[4300];
        const char *pdir = prov_path ? prov_path : cu_bench_provider_dir(dirbuf, sizeof dirbuf);
        const char *mods[2] = {NULL, other};
        if (with_prov || prov_path != NULL) {
            snprintf(module, sizeof module, "%s/custos.so", pdir ? pdir : ".");
            mods[0] = module;
        }
        if ((b->key_uri = cu_object_uri(key)) == NULL) {
            rc = cu_cli_fail("cannot make the key's URI");
            goto out;
        }
        /* CUSTOS-HMAC has no passphrase prompt: its PIN comes from the
         * environment of this process. */
        if (b->sig.alg == CU_SIG_HMAC && t.pin != NULL && getenv("CUSTOS_PIN") == NULL)
            setenv("CUSTOS_PIN", t.pin, 0);
        for (int i = 0; i < 2; i++) {
            if (mods[i] == NULL)
                continue;
            if ((b->plib[i] = cu_bench_provider_lib(mods[i], err, sizeof err)) == NULL) {
                rc = cu_cli_fail("%s", err);
                goto out;
            }
            if (b->sig.alg == CU_SIG_HMAC) {
                EVP_MAC *mac = EVP_MAC_fetch(b->plib[i], "CUSTOS-HMAC", NULL);
                active[MODE_PROV + i] = mac != NULL;
                EVP_MAC_free(mac);
                ERR_clear_error();
                if (mac == NULL && i == 0) {
                    rc = cu_cli_fail("the provider has no CUSTOS-HMAC");
                    goto out;
                }
                continue;
            }
            if ((b->pkey[i] = cu_bench_provider_key(b->plib[i], b->key_uri, t.pin, err, sizeof err)) == NULL) {
                rc = cu_cli_fail("%s: %s", mods[i], err);
                goto out;
            }
            active[MODE_PROV + i] = true;
        }
    }
    /* Beside the provider, the software key through the same EVP calls: the
     * difference to a kept context is what OpenSSL's API costs any key. */
    active[MODE_SOFT_EVP] = active[MODE_SOFT] && active[MODE_PROV] && b->sig.alg != CU_SIG_HMAC;
    active[MODE_PROV_KEPT] = active[MODE_PROV] && b->sig.alg != CU_SIG_HMAC;
    run_contest(b, active, seconds, threads, rate, cpu_us);
    if (keep != CK_INVALID_HANDLE)
        f->C_CloseSession(keep); /* also destroys the session copy */
    if (atomic_load(&b->failed)) {
        rc = cu_cli_fail("benchmark failed: %s", b->err);
        goto out;
    }
    if (json) {
        printf("{\"token\":");
        cu_cli_json_str(stdout, d->label);
        printf(",\"manufacturer\":");
        cu_cli_json_str(stdout, d->manufacturer);
        printf(",\"key\":\"%s-%u\",\"threads\":%d,\"seconds\":%.1f", cu_key_type_str(cu_object_key_type(key)),
               cu_object_bits(key), threads, seconds);
        for (int m = 0; m < MODE__N; m++)
            printf(",\"%s\":%.1f", mode_names[m], rate[m]);
        for (int m = 0; m < MODE__N; m++)
            if (cpu_us[m] > 0)
                printf(",\"%s_cpu_us\":%.3f", mode_names[m], cpu_us[m]);
        printf("}\n");
    } else {
        if (!quiet)
            printf("token '%s' (%s), key %s-%u '%s', %d thread(s), %.1f s each, in turns of 0.1 s\n", d->label, d->manufacturer,
                   cu_key_type_str(cu_object_key_type(key)), cu_object_bits(key), cu_object_label(key), threads,
                   seconds);
        for (int m = 0; m < MODE__N; m++)
            if (rate[m] > 0)
                printf("  %-20s %10.0f signatures/s   %8.2f us CPU each\n", mode_names[m], rate[m], cpu_us[m]);
        if (rate[MODE_RAW] > 0)
            printf("  custos / raw C_Sign: %.3f", rate[MODE_LAYER] / rate[MODE_RAW]);
        if (rate[MODE_COPY] > 0)
            printf("   custos / raw C_Sign on a session copy: %.3f", rate[MODE_LAYER] / rate[MODE_COPY]);
        if (rate[MODE_SOFT] > 0)
            printf("   custos / software key: %.3f", rate[MODE_LAYER] / rate[MODE_SOFT]);
        printf("\n");
        for (int i = 0; i < 2; i++) {
            if (rate[MODE_PROV + i] <= 0)
                continue;
            printf("  %s / raw C_Sign: %.3f", mode_names[MODE_PROV + i], rate[MODE_PROV + i] / rate[MODE_RAW]);
            if (rate[MODE_COPY] > 0)
                printf("   / raw C_Sign on a session copy: %.3f", rate[MODE_PROV + i] / rate[MODE_COPY]);
            printf("   / custos: %.3f\n", rate[MODE_PROV + i] / rate[MODE_LAYER]);
        }
        if (rate[MODE_PROV_KEPT] > 0)
            printf("  provider, kept context / raw C_Sign on a session copy: %.3f   / custos: %.3f\n",
                   rate[MODE_COPY] > 0 ? rate[MODE_PROV_KEPT] / rate[MODE_COPY] : 0,
                   rate[MODE_PROV_KEPT] / rate[MODE_LAYER]);
        if (rate[MODE_SOFT_EVP] > 0 && rate[MODE_PROV_KEPT] > 0)
            printf("  CPU of OpenSSL's EVP_DigestSignInit_ex + EVP_DigestSign over a kept context:"
                   " software key %+.2f us, through custos %+.2f us\n",
                   cpu_us[MODE_SOFT_EVP] - cpu_us[MODE_SOFT], cpu_us[MODE_PROV] - cpu_us[MODE_PROV_KEPT]);
    }
out:
    cu_object_free(key);
    if (b != NULL) {
        for (int i = 0; i < 2; i++) {
            EVP_PKEY_free(b->pkey[i]);
            cu_bench_provider_lib_free(b->plib[i]);
        }
        free(b->key_uri);
        EVP_PKEY_free(b->soft_key);
        OPENSSL_cleanse(b->hmac_key, sizeof b->hmac_key);
    }
    free(b);
    cu_tok_target_free(&t);
    return rc;
}

int cu_cmd_bench(int argc, char **argv)
{
    static const cu_cli_group cmds[] = {
        {"sign", "signatures per second: the token layer beside raw C_Sign", bench_sign},
        {"load", "registrations per second of a running custosd", cu_bench_load},
        {"tls", "server CPU per TLS 1.3 handshake: key in a file vs in a token", cu_bench_tls},
        {"s_server", "the same through real openssl s_server processes", cu_bench_s_server},
    };
    int rc = cu_cli_dispatch("bench", NULL, cmds, sizeof cmds / sizeof cmds[0], argc, argv);
    cu_p11_shutdown();
    return rc;
}
