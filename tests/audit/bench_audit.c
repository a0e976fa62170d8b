/* What the audit log costs a registration: the engine registers devices
 * with the audit log on, off, and on with a signed head every 1000
 * records (software P-256 key), in alternating rounds within one run so
 * that the machine's drift hits every mode alike. Symmetric-key devices
 * (the cheapest attestation, so the audit's share is largest), X.509
 * devices through a group, and refusals (which wrote nothing before the
 * audit log).
 *
 *   bench_audit [BLOCK [ROUNDS [DIR]]]     (defaults 100 30)
 *
 * Each round runs one block of BLOCK registrations per mode and kind, the
 * modes' order rotating. The rate of a mode is taken from the median block
 * CPU time of the process (and, for comparison, the median wall time), so
 * that other processes on a shared machine weigh on no mode. Prints registrations/s per mode and the cost of
 * the audit in percent.
 * Not part of the default ctest run (label "bench"). */
#include "fixture.h"

#include <custos/audit.h>
#include <custos/sas.h>

#include "prov_int.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { OFF, ON, SIGNED, NMODES };
static const char *const MODE[NMODES] = {"audit off", "audit on", "audit on + head signed every 1000"};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* CPU time of the process (user + system): what a registration costs,
 * whatever else the machine runs (the store is in WAL mode with
 * synchronous=NORMAL: a commit does not wait for the disk). */
static double cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void device_key(const char *id, uint8_t out[32])
{
    static const uint8_t master[] = "bench master key";
    unsigned int n = 0;
    HMAC(EVP_sha256(), master, sizeof master - 1, (const uint8_t *)id, strlen(id), out, &n);
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Sorts v in place. */
static double median(double *v, long n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_d);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static void set_mode(cu_store *s, int mode, EVP_PKEY *key)
{
    cu_prov__store_audit_cfg(s)->off = mode == OFF;
    cu_audit_set_signer(s, mode == SIGNED ? key : NULL, 1000, 0);
}

int main(int argc, char **argv)
{
    long per = argc > 1 ? atol(argv[1]) : 100, rounds = argc > 2 ? atol(argv[2]) : 30;
    const char *dir_arg = argc > 3 ? argv[3] : NULL;
    static const uint8_t kkey[32] = "bench keyring key bench keyring";
    long ndev = per * rounds * NMODES;
    cu_keyring *kr = NULL;
    cu_store *s = NULL;
    cu_prov *p = NULL;
    char *dir = dir_arg ? strdup(dir_arg) : cu_test_mkdtemp("benchaudit");
    char reason[512], id[64], js[512];
    double *t_sym[NMODES], *t_x509[NMODES], *t_ref[NMODES], *t_wall[NMODES];
    long bad = 0;
    EVP_PKEY *audit_key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");

    if (per < 1 || rounds < 1 || dir == NULL || audit_key == NULL ||
        cu_keyring_software_new(kkey, sizeof kkey, &kr) != CU_OK || cu_store_open_dir(dir, kr, &s) != CU_OK) {
        fprintf(stderr, "setup: %s\n", cu_err_last()->msg);
        return 1;
    }
    for (int m = 0; m < NMODES; m++) {
        t_sym[m] = calloc((size_t)rounds, sizeof(double));
        t_x509[m] = calloc((size_t)rounds, sizeof(double));
        t_ref[m] = calloc((size_t)rounds, sizeof(double));
        t_wall[m] = calloc((size_t)rounds, sizeof(double));
    }
    cu_prov_config cfg = {.id_scope = "0ne00000001", .use_default_skew = true};
    cu_hub hubs[3] = {{"hub1.example.net", 1, true}, {"hub2.example.net", 2, true}, {"hub3.example.net", 1, true}};
    for (int i = 0; i < 3; i++)
        cu_store_hub_put(s, &hubs[i], NULL, 0);
    cu_prov_new(s, &cfg, &p);

    /* Every mode registers devices never seen before, so that each does
     * the same work (first registration, record created). */
    printf("enrolling %ld symmetric-key devices and %ld X.509 devices in %s ...\n", ndev, ndev, dir);
    cu_store_begin(s);
    for (long i = 0; i < ndev; i++) {
        uint8_t k[32];
        char kb[64];
        snprintf(id, sizeof id, "sym-%07ld", i);
        device_key(id, k);
        EVP_EncodeBlock((unsigned char *)kb, k, 32);
        int len = snprintf(js, sizeof js,
                           "{\"registrationId\":\"%s\",\"attestation\":{\"type\":\"symmetricKey\",\"symmetricKey\":"
                           "{\"primaryKey\":\"%s\",\"secondaryKey\":\"%s\"}}}",
                           id, kb, kb);
        cu_enr *e = NULL;
        if (cu_enr_parse(CU_ENR_INDIVIDUAL, js, (size_t)len, &e, reason, sizeof reason) != CU_OK ||
            cu_store_enr_put(s, e, NULL, 0, reason, sizeof reason) != CU_OK) {
            fprintf(stderr, "enroll %s: %s\n", id, reason);
            return 1;
        }
        cu_enr_free(e);
    }
    cu_store_commit(s);
    tcert root, line;
    tc_make(&root, "Bench Root", true, NULL, -3600, 86400 * 30);
    tc_make(&line, "Bench Line", true, &root, -3600, 86400 * 30);
    if (fx_group_x509(&(fx){.store = s}, "bench-line", &line, true) != CU_OK)
        return 1;
    cu_x509_chain **chains = calloc((size_t)ndev, sizeof *chains);
    char **tokens = calloc((size_t)ndev, sizeof *tokens), **badtok = calloc((size_t)ndev, sizeof *badtok);
    for (long i = 0; i < ndev; i++) {
        tcert d;
        uint8_t k[32];
        snprintf(id, sizeof id, "x509-%07ld", i);
        tc_make(&d, id, false, &line, -3600, 86400);
        chains[i] = tc_chain(&d, &line, NULL);
        tc_free(&d);
        snprintf(id, sizeof id, "sym-%07ld", i);
        device_key(id, k);
        cu_sas_sign(k, 32, "0ne00000001", id, (uint64_t)time(NULL) + 3600, "registration", &tokens[i]);
        k[0] ^= 1; /* the wrong key: refused */
        cu_sas_sign(k, 32, "0ne00000001", id, (uint64_t)time(NULL) + 3600, "registration", &badtok[i]);
    }

    for (long r = 0; r < rounds; r++) {
        for (int m0 = 0; m0 < NMODES; m0++) {
            int mode = (int)((m0 + r) % NMODES); /* rotate the order */
            long base = (r * NMODES + mode) * per;
            set_mode(s, mode, audit_key);
            double w = now_s(), a = cpu_s();
            for (long i = base; i < base + per; i++) {
                snprintf(id, sizeof id, "sym-%07ld", i);
                cu_prov_request req = {.registration_id = id, .authorization = tokens[i]};
                cu_prov_result res;
                if (cu_prov_register(p, &req, &res) != CU_OK || res.outcome != CU_PROV_PROVISION)
                    bad++;
                cu_prov_result_clear(&res);
            }
            double b = cpu_s(), wb = now_s();
            for (long i = base; i < base + per; i++) {
                snprintf(id, sizeof id, "x509-%07ld", i);
                cu_prov_request req = {.registration_id = id, .chain = chains[i]};
                cu_prov_result res;
                if (cu_prov_register(p, &req, &res) != CU_OK || res.outcome != CU_PROV_PROVISION)
                    bad++;
                cu_prov_result_clear(&res);
            }
            double c = cpu_s();
            for (long i = base; i < base + per; i++) {
                snprintf(id, sizeof id, "sym-%07ld", i);
                cu_prov_request req = {.registration_id = id, .authorization = badtok[i]};
                cu_prov_result res;
                if (cu_prov_register(p, &req, &res) != CU_OK || res.outcome != CU_PROV_REFUSE)
                    bad++;
                cu_prov_result_clear(&res);
            }
            double d = cpu_s();
            t_sym[mode][r] = b - a;
            t_wall[mode][r] = wb - w;
            t_x509[mode][r] = c - b;
            t_ref[mode][r] = d - c;
        }
    }
    set_mode(s, ON, NULL);
    cu_audit_report rep;
    double tv0 = now_s();
    cu_rc vr = cu_audit_verify(s, &audit_key, 1, &rep);
    double tv = now_s() - tv0;

    double sym[NMODES], x509[NMODES], ref[NMODES], sum[NMODES];
    for (int m = 0; m < NMODES; m++) {
        sum[m] = median(t_wall[m], rounds);
        sym[m] = median(t_sym[m], rounds);
        x509[m] = median(t_x509[m], rounds);
        ref[m] = median(t_ref[m], rounds);
    }
    printf("\n%ld rounds x %ld registrations per mode and kind (modes rotate within each round);\n"
           "rates per CPU second from the median block CPU time (last column: wall time)\n", rounds, per);
    printf("%-36s %14s %14s %14s %16s\n", "", "symmetric key", "X.509 (group)", "refusals", "sym. key (wall)");
    for (int m = 0; m < NMODES; m++)
        printf("%-36s %12.0f/s %12.0f/s %12.0f/s %14.0f/s\n", MODE[m], per / sym[m], per / x509[m], per / ref[m],
               per / sum[m]);
    for (int m = ON; m < NMODES; m++)
        printf("cost: %-30s %12.1f %% %12.1f %% %12.1f %% %14.1f %%\n", MODE[m], 100.0 * (1 - sym[OFF] / sym[m]),
               100.0 * (1 - x509[OFF] / x509[m]), 100.0 * (1 - ref[OFF] / ref[m]), 100.0 * (1 - sum[OFF] / sum[m]));
    printf("(cost = 1 - rate with the audit / rate without it)\n");
    printf("verify: %llu records, %llu signed heads checked in %.2f s (%.0f records/s): %s\n",
           (unsigned long long)rep.records, (unsigned long long)rep.heads_verified, tv, (double)rep.records / tv,
           vr == CU_OK ? "ok" : rep.what);
    if (bad > 0)
        printf("UNEXPECTED outcomes: %ld\n", bad);

    for (long i = 0; i < ndev; i++) {
        cu_x509_chain_free(chains[i]);
        free(tokens[i]);
        free(badtok[i]);
    }
    for (int m = 0; m < NMODES; m++) {
        free(t_sym[m]);
        free(t_x509[m]);
        free(t_ref[m]);
        free(t_wall[m]);
    }
    free(chains);
    free(tokens);
    free(badtok);
    tc_free(&line);
    tc_free(&root);
    EVP_PKEY_free(audit_key);
    cu_prov_free(p);
    cu_store_close(s);
    cu_keyring_free(kr);
    if (dir_arg == NULL)
        cu_test_rmtree(dir);
    free(dir);
    return bad == 0 && vr == CU_OK ? 0 : 1;
}
