/* Scale benchmark: import N individual enrollments (symmetric key, the
 * `enrollment import` path: parse, wrap, seal, index, batched
 * transactions), add G X.509 enrollment groups, then resolve M random
 * registrations (SAS verification through the store, no writes) and R
 * full registrations (with the record written). Prints import rate,
 * resolution latency p50/p99 and the store's size.
 *
 *   bench_prov_scale [N [M [G [DIR]]]]     (defaults 1000000 100000 1000)
 *
 * Not part of the default ctest run (label "bench", disabled). */
#include "fixture.h"

#include <custos/sas.h>

#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Each device has its own key: HMAC(master, id). */
static void device_key(const char *id, uint8_t out[32])
{
    static const uint8_t master[] = "bench master key";
    unsigned int n = 0;
    HMAC(EVP_sha256(), master, sizeof master - 1, (const uint8_t *)id, strlen(id), out, &n);
}

static long long file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (long long)st.st_size : 0;
}

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 1000000, m = argc > 2 ? atol(argv[2]) : 100000;
    long g = argc > 3 ? atol(argv[3]) : 1000;
    const char *dir_arg = argc > 4 ? argv[4] : NULL;
    static const uint8_t kkey[32] = "bench keyring key bench keyring";
    cu_keyring *kr = NULL;
    cu_store *s = NULL;
    cu_prov *p = NULL;
    char *dir = dir_arg ? strdup(dir_arg) : cu_test_mkdtemp("bench");
    char path[4096], reason[512], id[64], js[512];
    uint8_t k[32];
    double t0, t1;

    /* CUSTOS_STORE: another store than DIR (PostgreSQL; the password in
     * the file CUSTOS_STORE_PASSWORD_FILE). BENCH_IMPORTED=N: N enrollments
     * are already there (an earlier run), import none. */
    const char *spec = getenv("CUSTOS_STORE"), *pwf = getenv("CUSTOS_STORE_PASSWORD_FILE");
    long imported = getenv("BENCH_IMPORTED") ? atol(getenv("BENCH_IMPORTED")) : 0;
    if (dir == NULL || cu_keyring_software_new(kkey, sizeof kkey, &kr) != CU_OK ||
        (spec ? cu_store_open_spec(spec, pwf, kr, &s) : cu_store_open_dir(dir, kr, &s)) != CU_OK) {
        fprintf(stderr, "setup: %s\n", cu_err_last()->msg);
        return 1;
    }
    cu_prov_config cfg = {.id_scope = "0ne00000001", .use_default_skew = true};
    cu_hub hubs[3] = {{"hub1.example.net", 1, true}, {"hub2.example.net", 2, true}, {"hub3.example.net", 1, true}};
    for (int i = 0; i < 3; i++)
        cu_store_hub_put(s, &hubs[i], NULL, 0);
    cu_prov_new(s, &cfg, &p);

    /* 1. Import. */
    printf("importing %ld enrollments into %s ...\n", imported ? 0 : n, spec ? "$CUSTOS_STORE" : dir);
    t0 = now_s();
    cu_store_begin(s);
    for (long i = 0; i < (imported ? 0 : n); i++) {
        snprintf(id, sizeof id, "bench-device-%08ld", i);
        device_key(id, k);
        char *b64 = NULL;
        uint8_t raw[32];
        memcpy(raw, k, 32);
        /* base64 by OpenSSL: 32 bytes -> 44 chars */
        char kb[64];
        EVP_EncodeBlock((unsigned char *)kb, raw, 32);
        (void)b64;
        int len = snprintf(js, sizeof js,
                           "{\"registrationId\":\"%s\",\"attestation\":{\"type\":\"symmetricKey\",\"symmetricKey\":"
                           "{\"primaryKey\":\"%s\",\"secondaryKey\":\"%s\"}}}", id, kb, kb);
        cu_enr *e = NULL;
        if (cu_enr_parse(CU_ENR_INDIVIDUAL, js, (size_t)len, &e, reason, sizeof reason) != CU_OK ||
            cu_store_enr_put(s, e, NULL, 0, reason, sizeof reason) != CU_OK) {
            fprintf(stderr, "import %s: %s\n", id, reason);
            return 1;
        }
        cu_enr_free(e);
        if ((i + 1) % 10000 == 0) {
            cu_store_commit(s);
            cu_store_begin(s);
        }
        if ((i + 1) % 100000 == 0) {
            fprintf(stderr, "  %ld (%.0f/s)\n", i + 1, (double)(i + 1) / (now_s() - t0));
        }
    }
    cu_store_commit(s);
    t1 = now_s();
    double import_rate = (double)n / (t1 - t0);

    /* 2. X.509 groups: distinct intermediate CAs under one root. */
    tcert root, ca, dev;
    tc_make(&root, "Bench Root", true, NULL, -3600, 86400 * 365);
    double tg0 = now_s();
    cu_store_begin(s);
    tcert last = {NULL, NULL};
    for (long i = 0; i < g; i++) {
        char cn[64];
        snprintf(cn, sizeof cn, "Bench Line %06ld", i);
        tc_make(&ca, cn, true, &root, -3600, 86400 * 365);
        snprintf(id, sizeof id, "bench-group-%06ld", i);
        if (fx_group_x509(&(fx){.store = s}, id, &ca, true) != CU_OK)
            return 1;
        if (i == g - 1)
            last = ca;
        else
            tc_free(&ca);
        if ((i + 1) % 5000 == 0) {
            cu_store_commit(s);
            cu_store_begin(s);
        }
    }
    cu_store_commit(s);
    double group_rate = g > 0 ? (double)g / (now_s() - tg0) : 0;

    /* 3. Resolve M random registrations (SAS). */
    double *lat = malloc(sizeof(double) * (size_t)(m > 0 ? m : 1));
    srand(42);
    long refused = 0;
    for (long i = 0; i < m; i++) {
        long r = ((long)rand() * 32768L + rand()) % n;
        snprintf(id, sizeof id, "bench-device-%08ld", r);
        device_key(id, k);
        char *tok = NULL;
        cu_sas_sign(k, 32, "0ne00000001", id, (uint64_t)time(NULL) + 3600, "registration", &tok);
        cu_prov_request req = {.registration_id = id, .authorization = tok};
        cu_prov_explain ex;
        double a = now_s();
        if (cu_prov_explain_request(p, &req, &ex) != CU_OK || ex.outcome != CU_PROV_PROVISION)
            refused++;
        lat[i] = now_s() - a;
        cu_prov_explain_clear(&ex);
        free(tok);
    }
    qsort(lat, (size_t)m, sizeof *lat, cmp_d);

    /* 4. Full registrations (record + audit written), and one X.509 device
     * through the last of G groups. */
    long full = m < 10000 ? m : 10000;
    double *flat = malloc(sizeof(double) * (size_t)(full > 0 ? full : 1));
    for (long i = 0; i < full; i++) {
        long r = ((long)rand() * 32768L + rand()) % n;
        snprintf(id, sizeof id, "bench-device-%08ld", r);
        device_key(id, k);
        char *tok = NULL;
        cu_sas_sign(k, 32, "0ne00000001", id, (uint64_t)time(NULL) + 3600, "registration", &tok);
        cu_prov_request req = {.registration_id = id, .authorization = tok};
        cu_prov_result res;
        double a = now_s();
        if (cu_prov_register(p, &req, &res) != CU_OK || res.outcome != CU_PROV_PROVISION)
            refused++;
        flat[i] = now_s() - a;
        cu_prov_result_clear(&res);
        free(tok);
    }
    qsort(flat, (size_t)full, sizeof *flat, cmp_d);
    double x509_lat = 0;
    if (g > 0) {
        tc_make(&dev, "bench-x509-device", false, &last, -3600, 86400);
        cu_x509_chain *ch = tc_chain(&dev, &last, NULL);
        cu_prov_request req = {.registration_id = "bench-x509-device", .chain = ch};
        cu_prov_explain ex;
        double a = now_s();
        for (int i = 0; i < 100; i++) {
            if (cu_prov_explain_request(p, &req, &ex) != CU_OK || ex.outcome != CU_PROV_PROVISION)
                refused++;
            cu_prov_explain_clear(&ex);
        }
        x509_lat = (now_s() - a) / 100;
        cu_x509_chain_free(ch);
        tc_free(&dev);
        tc_free(&last);
    }
    tc_free(&root);

    cu_prov_free(p);
    cu_store_close(s); /* checkpoints the WAL */
    snprintf(path, sizeof path, "%s/custos.db", dir);
    long long size = file_size(path);
    snprintf(path, sizeof path, "%s/custos.db-wal", dir);
    size += file_size(path);

    if (!imported)
        printf("enrollments imported:   %ld in %.1f s = %.0f/s\n", n, t1 - t0, import_rate);
    printf("x509 groups added:      %ld (%.0f/s)\n", g, group_rate);
    if (m > 0)
        printf("SAS resolution (%ld):   p50 %.1f us, p99 %.1f us\n", m, lat[m / 2] * 1e6, lat[m * 99 / 100] * 1e6);
    if (full > 0)
        printf("full registration (%ld): p50 %.1f us, p99 %.1f us\n", full, flat[full / 2] * 1e6,
               flat[full * 99 / 100] * 1e6);
    if (g > 0)
        printf("x509 resolution among %ld groups: %.1f us\n", g, x509_lat * 1e6);
    if (spec == NULL)
        printf("store size:             %.1f MiB (%.0f bytes/enrollment)\n", (double)size / 1048576.0,
               (double)size / (double)(n + g));
    printf("refused (must be 0):    %ld\n", refused);
    free(lat);
    free(flat);
    cu_keyring_free(kr);
    if (dir_arg == NULL)
        cu_test_rmtree(dir);
    free(dir);
    return refused == 0 ? 0 : 1;
}
