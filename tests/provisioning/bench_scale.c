/* Scale benchmark: G X.509 enrollment groups, then N individual
 * enrollments imported (symmetric key, the `enrollment import` path: parse,
 * wrap, seal, index, batched transactions); at each checkpoint of the
 * import (e.g. 1,000,000 and 10,000,000) the import pauses and the same
 * look-ups are measured, so that their cost at two sizes is compared in one
 * run:
 *   - SAS resolution of M random registrations among those imported so far
 *     (seal check, unwrap, HMAC verify; nothing written);
 *   - the X.509 store look-ups of M random groups: by certificate
 *     fingerprint, and the trust anchors by subject name;
 *   - X.509 resolution (chain verification, precedence walk) of devices of
 *     random groups;
 * then R full registrations (record + audit written) at the end.
 *
 *   bench_prov_scale [N [M [G [DIR [CHECKPOINTS [reuse]]]]]]
 *       defaults 1000000 100000 1000, a temporary DIR, checkpoint N;
 *       CHECKPOINTS: comma-separated enrollment counts, e.g. 1000000,10000000;
 *       reuse: DIR holds the store of an earlier run with these N and G:
 *       nothing is written, only the look-ups are timed at each checkpoint
 *       (SAS among the first CHECKPOINT enrollments; the groups' look-ups;
 *       no X.509 resolution, the groups' CA keys are gone)
 *
 *   bench_prov_scale symkey [COUNTS [M]]
 *       symmetric-key groups (each with a primary and a secondary key) added
 *       up to each of COUNTS (default 100,10000), and at each count the cost
 *       of a token the groups cannot verify (an unknown registration id:
 *       every group tried), as an explanation and as a registration (its
 *       refusal audited), and of a device of the group tried last; M of each
 *       (default 100)
 *
 * CUSTOS_STORE (and CUSTOS_STORE_PASSWORD_FILE) names another store than
 * DIR, e.g. postgresql://…; DIR then only names the run (store size is
 * not reported).
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

enum { SAMPLE_GROUPS = 1000, X509_RESOLUTIONS = 1000, MAX_CHECKPOINTS = 16 };

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

static long rnd(long n)
{
    return ((long)rand() * 32768L + rand()) % n;
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

static long long store_size(const char *dir)
{
    if (getenv("CUSTOS_STORE") != NULL && *getenv("CUSTOS_STORE") != 0)
        return 0; /* not a file here */
    char path[4096];
    snprintf(path, sizeof path, "%s/custos.db", dir);
    long long size = file_size(path);
    snprintf(path, sizeof path, "%s/custos.db-wal", dir);
    return size + file_size(path);
}

typedef struct lat {
    double *v;
    long n;
} lat;

static double pct(lat *l, int p)
{
    if (l->n == 0)
        return 0;
    qsort(l->v, (size_t)l->n, sizeof *l->v, cmp_d);
    return l->v[l->n * p / 100] * 1e6;
}

typedef struct sample {
    tcert ca;                 /* a group's CA */
    char id[64];              /* its group id */
    tcert dev;                /* a device under it */
    cu_x509_chain *chain;
} sample;

typedef struct run {
    cu_store *s;
    cu_prov *p;
    const char *dir;
    sample *smp;
    long nsmp, m;
    long refused;
} run;

/* The look-ups at one size: imported enrollments so far. */
static void checkpoint(run *r, long imported, double import_s, long seg_n, double seg_s)
{
    lat sas = {malloc(sizeof(double) * (size_t)r->m), 0}, fp = {malloc(sizeof(double) * (size_t)r->m), 0};
    lat subj = {malloc(sizeof(double) * (size_t)r->m), 0}, x5 = {malloc(sizeof(double) * X509_RESOLUTIONS), 0};
    char id[64];
    uint8_t k[32];
    for (long i = 0; i < r->m; i++) {
        snprintf(id, sizeof id, "bench-device-%08ld", rnd(imported));
        device_key(id, k);
        char *tok = NULL;
        cu_sas_sign(k, 32, "0ne00000001", id, (uint64_t)time(NULL) + 3600, "registration", &tok);
        cu_prov_request req = {.registration_id = id, .authorization = tok};
        cu_prov_explain ex;
        double a = now_s();
        if (cu_prov_explain_request(r->p, &req, &ex) != CU_OK || ex.outcome != CU_PROV_PROVISION)
            r->refused++;
        sas.v[sas.n++] = now_s() - a;
        cu_prov_explain_clear(&ex);
        free(tok);
    }
    for (long i = 0; r->nsmp > 0 && i < r->m; i++) {
        sample *g = &r->smp[rnd(r->nsmp)];
        char **ids = NULL;
        size_t n = 0;
        double a = now_s();
        if (cu_store_groups_by_cert(r->s, g->ca.cert, &ids, &n) != CU_OK || n != 1 || strcmp(ids[0], g->id) != 0)
            r->refused++;
        fp.v[fp.n++] = now_s() - a;
        cu_store_ids_free(ids, n);
        STACK_OF(X509) *anchors = sk_X509_new_null();
        a = now_s();
        if (cu_store_anchors_by_subject(r->s, X509_get_subject_name(g->ca.cert), anchors) != CU_OK ||
            sk_X509_num(anchors) != 1)
            r->refused++;
        subj.v[subj.n++] = now_s() - a;
        sk_X509_pop_free(anchors, X509_free);
    }
    for (long i = 0; r->nsmp > 0 && r->smp[0].chain != NULL && i < X509_RESOLUTIONS; i++) {
        sample *g = &r->smp[rnd(r->nsmp)];
        cu_prov_request req = {.registration_id = "bench-x509-device", .chain = g->chain};
        cu_prov_explain ex;
        double a = now_s();
        if (cu_prov_explain_request(r->p, &req, &ex) != CU_OK || ex.outcome != CU_PROV_PROVISION)
            r->refused++;
        x5.v[x5.n++] = now_s() - a;
        cu_prov_explain_clear(&ex);
    }
    long long size = store_size(r->dir);
    if (seg_n > 0)
        printf("checkpoint %ld enrollments: import %.1f s total, last %ld at %.0f/s; store %.1f MiB\n", imported,
               import_s, seg_n, (double)seg_n / seg_s, (double)size / 1048576.0);
    else
        printf("look-ups among the first %ld enrollments (store %.1f MiB):\n", imported, (double)size / 1048576.0);
    printf("  SAS resolution (%ld random):           p50 %.1f us, p99 %.1f us\n", sas.n, pct(&sas, 50), pct(&sas, 99));
    if (r->nsmp > 0) {
        printf("  group by fingerprint (%ld random):     p50 %.1f us, p99 %.1f us\n", fp.n, pct(&fp, 50),
               pct(&fp, 99));
        printf("  anchors by subject (%ld random):       p50 %.1f us, p99 %.1f us\n", subj.n, pct(&subj, 50),
               pct(&subj, 99));
        if (x5.n > 0)
            printf("  X.509 resolution (%ld random groups):  p50 %.1f us, p99 %.1f us\n", x5.n, pct(&x5, 50),
                   pct(&x5, 99));
    }
    fflush(stdout);
    free(sas.v);
    free(fp.v);
    free(subj.v);
    free(x5.v);
}

/* reuse: the look-ups only, on the store an earlier run left in dir. */
static int lookups_only(cu_store *s, cu_prov *p, char *dir, long n, long m, long g, const long *cps, int ncp,
                        cu_keyring *kr)
{
    uint64_t have = 0;
    long every = g > SAMPLE_GROUPS ? g / SAMPLE_GROUPS : 1;
    sample *smp = calloc((size_t)(g / every + 1), sizeof *smp);
    long nsmp = 0;
    if (cu_store_count(s, CU_KIND_ENROLLMENT, &have) != CU_OK || (long)have < n) {
        fprintf(stderr, "reuse: %s holds %llu enrollments, fewer than %ld\n", dir, (unsigned long long)have, n);
        return 1;
    }
    for (long i = 0; i < g; i += every) {
        sample *x = &smp[nsmp];
        cu_enr *e = NULL;
        snprintf(x->id, sizeof x->id, "bench-group-%06ld", i);
        const char *pem = NULL;
        if (cu_store_enr_get(s, CU_ENR_GROUP, x->id, &e) != CU_OK || (pem = cu_enr_get0_cert(e, CU_ENR_PRIMARY)) == NULL ||
            cu_x509_decode(pem, strlen(pem), &x->ca.cert) != CU_OK) {
            fprintf(stderr, "reuse: group %s: %s\n", x->id, cu_err_last()->msg);
            return 1;
        }
        cu_enr_free(e);
        nsmp++;
    }
    run r = {.s = s, .p = p, .dir = dir, .smp = smp, .nsmp = nsmp, .m = m};
    for (int i = 0; i < ncp; i++)
        checkpoint(&r, cps[i], 0, 0, 1);
    printf("refused (must be 0):    %ld\n", r.refused);
    for (long i = 0; i < nsmp; i++)
        X509_free(smp[i].ca.cert);
    free(smp);
    cu_prov_free(p);
    cu_store_close(s);
    cu_keyring_free(kr);
    free(dir);
    return r.refused == 0 ? 0 : 1;
}

/* symkey: what a token costs that no symmetric-key group verifies, against
 * the number of such groups (resolve_sas tries each). */
static int symkey_groups(cu_store *s, cu_prov *p, const long *counts, int nc, long m)
{
    char id[64], js[512], reason[512], kb[64], kb2[64], limit[32];
    uint8_t k[32], k2[32], dk[32];
    long have = 0, bad = 0;
    unsigned int dl = 0;
    snprintf(limit, sizeof limit, "%ld", counts[nc - 1]);
    if (cu_store_setting_put(s, "maxSymmetricKeyGroups", limit) != CU_OK) {
        fprintf(stderr, "setting: %s\n", cu_err_last()->msg);
        return 1;
    }
    for (int c = 0; c < nc; c++) {
        double t0 = now_s();
        cu_store_begin(s);
        for (; have < counts[c]; have++) {
            snprintf(id, sizeof id, "sym-group-%06ld", have);
            device_key(id, k);
            k2[0] = 1;
            HMAC(EVP_sha256(), k, 32, (const uint8_t *)"secondary", 9, k2, &dl);
            EVP_EncodeBlock((unsigned char *)kb, k, 32);
            EVP_EncodeBlock((unsigned char *)kb2, k2, 32);
            int len = snprintf(js, sizeof js,
                               "{\"enrollmentGroupId\":\"%s\",\"attestation\":{\"type\":\"symmetricKey\","
                               "\"symmetricKey\":{\"primaryKey\":\"%s\",\"secondaryKey\":\"%s\"}}}", id, kb, kb2);
            cu_enr *e = NULL;
            if (cu_enr_parse(CU_ENR_GROUP, js, (size_t)len, &e, reason, sizeof reason) != CU_OK ||
                cu_store_enr_put(s, e, NULL, 0, reason, sizeof reason) != CU_OK) {
                fprintf(stderr, "group %s: %s\n", id, reason);
                return 1;
            }
            cu_enr_free(e);
        }
        cu_store_commit(s);
        printf("%ld symmetric-key groups (added in %.1f s):\n", have, now_s() - t0);
        /* The device of the group tried last (ids in order; first
         * registration, so no last group to try first). */
        snprintf(id, sizeof id, "sym-group-%06ld", have - 1);
        device_key(id, k);
        HMAC(EVP_sha256(), k, 32, (const uint8_t *)"bench-sym-device", 16, dk, &dl);
        lat un = {malloc(sizeof(double) * (size_t)m), 0}, reg = {malloc(sizeof(double) * (size_t)m), 0};
        lat last = {malloc(sizeof(double) * (size_t)m), 0};
        for (long i = 0; i < m; i++) {
            uint8_t rk[32];
            char rid[64], *tok = NULL;
            snprintf(rid, sizeof rid, "unknown-%ld-%ld", have, i);
            device_key(rid, rk);
            cu_sas_sign(rk, 32, "0ne00000001", rid, (uint64_t)time(NULL) + 3600, "registration", &tok);
            cu_prov_request req = {.registration_id = rid, .authorization = tok};
            cu_prov_explain ex;
            double a = now_s();
            if (cu_prov_explain_request(p, &req, &ex) != CU_OK || ex.outcome != CU_PROV_REFUSE)
                bad++;
            un.v[un.n++] = now_s() - a;
            cu_prov_explain_clear(&ex);
            cu_prov_result res;
            a = now_s();
            if (cu_prov_register(p, &req, &res) != CU_OK || res.outcome != CU_PROV_REFUSE)
                bad++;
            reg.v[reg.n++] = now_s() - a;
            cu_prov_result_clear(&res);
            free(tok);
            cu_sas_sign(dk, 32, "0ne00000001", "bench-sym-device", (uint64_t)time(NULL) + 3600, "registration", &tok);
            cu_prov_request ok = {.registration_id = "bench-sym-device", .authorization = tok};
            a = now_s();
            if (cu_prov_explain_request(p, &ok, &ex) != CU_OK || ex.outcome != CU_PROV_PROVISION)
                bad++;
            last.v[last.n++] = now_s() - a;
            cu_prov_explain_clear(&ex);
            free(tok);
        }
        printf("  unknown id, explained (%ld):            p50 %.1f us, p99 %.1f us (%.2f us per group)\n", un.n,
               pct(&un, 50), pct(&un, 99), pct(&un, 50) / (double)have);
        printf("  unknown id, registration refused (%ld): p50 %.1f us, p99 %.1f us\n", reg.n, pct(&reg, 50),
               pct(&reg, 99));
        printf("  device of the last group, explained (%ld): p50 %.1f us, p99 %.1f us\n", last.n, pct(&last, 50),
               pct(&last, 99));
        fflush(stdout);
        free(un.v);
        free(reg.v);
        free(last.v);
    }
    printf("wrong outcomes (must be 0): %ld\n", bad);
    return bad == 0 ? 0 : 1;
}

static int parse_checkpoints(const char *s, long n, long *out, int *_k)
{
    int k = 0;
    while (s != NULL && *s && k < MAX_CHECKPOINTS) {
        char *end = NULL;
        long v = strtol(s, &end, 10);
        if (end == s || v < 1 || v > n || (k > 0 && v <= out[k - 1]))
            return -1;
        out[k++] = v;
        s = *end == ',' ? end + 1 : end;
        if (*end != ',' && *end != 0)
            return -1;
    }
    if (k == 0 || out[k - 1] != n)
        out[k++] = n;
    *_k = k;
    return 0;
}

static int symkey_main(int argc, char **argv)
{
    static const uint8_t kkey[32] = "bench keyring key bench keyring";
    long counts[MAX_CHECKPOINTS + 1], m = argc > 3 ? atol(argv[3]) : 100;
    int nc = 0;
    cu_keyring *kr = NULL;
    cu_store *s = NULL;
    cu_prov *p = NULL;
    if (parse_checkpoints(argc > 2 ? argv[2] : "100,10000", 100000000, counts, &nc) != 0 || m < 1) {
        fprintf(stderr, "usage: bench_prov_scale symkey [COUNTS [M]] (counts ascending, below 100000000)\n");
        return 2;
    }
    nc--; /* parse_checkpoints appends its bound */
    char *dir = cu_test_mkdtemp("bench-symkey");
    cu_prov_config cfg = {.id_scope = "0ne00000001", .use_default_skew = true};
    cu_hub hub = {"hub1.example.net", 1, true};
    if (dir == NULL || cu_keyring_software_new(kkey, sizeof kkey, &kr) != CU_OK ||
        cu_store_open_dir(dir, kr, &s) != CU_OK || cu_store_hub_put(s, &hub, NULL, 0) != CU_OK ||
        cu_prov_new(s, &cfg, &p) != CU_OK) {
        fprintf(stderr, "setup: %s\n", cu_err_last()->msg);
        return 1;
    }
    int rc = symkey_groups(s, p, counts, nc, m);
    cu_prov_free(p);
    cu_store_close(s);
    cu_keyring_free(kr);
    cu_test_rmtree(dir);
    free(dir);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "symkey") == 0)
        return symkey_main(argc, argv);
    long n = argc > 1 ? atol(argv[1]) : 1000000, m = argc > 2 ? atol(argv[2]) : 100000;
    long g = argc > 3 ? atol(argv[3]) : 1000;
    const char *dir_arg = argc > 4 && *argv[4] ? argv[4] : NULL; /* "": temporary */
    bool reuse = argc > 6 && strcmp(argv[6], "reuse") == 0;
    long cps[MAX_CHECKPOINTS + 1];
    int ncp = 0;
    static const uint8_t kkey[32] = "bench keyring key bench keyring";
    cu_keyring *kr = NULL;
    cu_store *s = NULL;
    cu_prov *p = NULL;
    char reason[512], id[64], js[512];
    uint8_t k[32];

    if (n < 1 || m < 1 || g < 0 || parse_checkpoints(argc > 5 ? argv[5] : NULL, n, cps, &ncp) != 0 ||
        (argc > 6 && !reuse) || (reuse && dir_arg == NULL)) {
        fprintf(stderr, "usage: bench_prov_scale [N [M [G [DIR [CHECKPOINTS]]]]] (checkpoints ascending, <= N)\n");
        return 2;
    }
    char *dir = dir_arg ? strdup(dir_arg) : cu_test_mkdtemp("bench");
    const char *spec = getenv("CUSTOS_STORE"), *pwf = getenv("CUSTOS_STORE_PASSWORD_FILE");
    if (spec != NULL && *spec == 0)
        spec = NULL;
    if (dir == NULL || cu_keyring_software_new(kkey, sizeof kkey, &kr) != CU_OK ||
        (spec ? cu_store_open_spec(spec, pwf, kr, &s) : cu_store_open_dir(dir, kr, &s)) != CU_OK) {
        fprintf(stderr, "setup: %s\n", cu_err_last()->msg);
        return 1;
    }
    cu_prov_config cfg = {.id_scope = "0ne00000001", .use_default_skew = true};
    cu_hub hubs[3] = {{"hub1.example.net", 1, true}, {"hub2.example.net", 2, true}, {"hub3.example.net", 1, true}};
    for (int i = 0; !reuse && i < 3; i++)
        cu_store_hub_put(s, &hubs[i], NULL, 0);
    cu_prov_new(s, &cfg, &p);
    srand(42);
    if (reuse)
        return lookups_only(s, p, dir, n, m, g, cps, ncp, kr);

    /* 1. X.509 groups: distinct intermediate CAs under one root; every
     * (G / SAMPLE_GROUPS)-th kept, with a device, for the look-ups. */
    tcert root, ca;
    tc_make(&root, "Bench Root", true, NULL, -3600, 86400 * 365);
    long every = g > SAMPLE_GROUPS ? g / SAMPLE_GROUPS : 1;
    sample *smp = calloc((size_t)(g / every + 1), sizeof *smp);
    long nsmp = 0;
    printf("adding %ld X.509 groups ...\n", g);
    fflush(stdout);
    double tg0 = now_s();
    cu_store_begin(s);
    for (long i = 0; i < g; i++) {
        char cn[64];
        snprintf(cn, sizeof cn, "Bench Line %06ld", i);
        tc_make(&ca, cn, true, &root, -3600, 86400 * 365);
        snprintf(id, sizeof id, "bench-group-%06ld", i);
        if (fx_group_x509(&(fx){.store = s}, id, &ca, true) != CU_OK)
            return 1;
        if (i % every == 0) {
            sample *x = &smp[nsmp++];
            x->ca = ca;
            snprintf(x->id, sizeof x->id, "%s", id);
            tc_make(&x->dev, "bench-x509-device", false, &x->ca, -3600, 86400);
            x->chain = tc_chain(&x->dev, &x->ca, NULL);
        } else {
            tc_free(&ca);
        }
        if ((i + 1) % 5000 == 0) {
            cu_store_commit(s);
            cu_store_begin(s);
        }
    }
    cu_store_commit(s);
    double group_s = now_s() - tg0;
    printf("x509 groups added:      %ld in %.1f s (%.0f/s, each CA certificate and key made here too)\n", g,
           group_s, g > 0 ? (double)g / group_s : 0);
    fflush(stdout);

    /* 2. Import, pausing at each checkpoint to measure. */
    run r = {.s = s, .p = p, .dir = dir, .smp = smp, .nsmp = nsmp, .m = m};
    printf("importing %ld enrollments into %s ...\n", n, dir);
    fflush(stdout);
    double import_s = 0, t0 = now_s(), seg_s = 0;
    long seg_n = 0;
    int next = 0;
    cu_store_begin(s);
    for (long i = 0; i < n; i++) {
        snprintf(id, sizeof id, "bench-device-%08ld", i);
        device_key(id, k);
        char kb[64];
        EVP_EncodeBlock((unsigned char *)kb, k, 32);
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
        seg_n++;
        bool cp = i + 1 == cps[next];
        if ((i + 1) % 10000 == 0 || cp) {
            cu_store_commit(s);
            if (!cp)
                cu_store_begin(s);
        }
        if ((i + 1) % 1000000 == 0) {
            fprintf(stderr, "  %ld (%.0f/s)\n", i + 1, (double)seg_n / (now_s() - t0));
        }
        if (cp) {
            double seg = now_s() - t0;
            import_s += seg;
            seg_s = seg;
            checkpoint(&r, i + 1, import_s, seg_n, seg_s);
            next++;
            seg_n = 0;
            t0 = now_s();
            if (i + 1 < n)
                cu_store_begin(s);
        }
    }

    /* 3. Full registrations (record + audit written). */
    long full = m < 10000 ? m : 10000;
    lat flat = {malloc(sizeof(double) * (size_t)full), 0};
    for (long i = 0; i < full; i++) {
        snprintf(id, sizeof id, "bench-device-%08ld", rnd(n));
        device_key(id, k);
        char *tok = NULL;
        cu_sas_sign(k, 32, "0ne00000001", id, (uint64_t)time(NULL) + 3600, "registration", &tok);
        cu_prov_request req = {.registration_id = id, .authorization = tok};
        cu_prov_result res;
        double a = now_s();
        if (cu_prov_register(p, &req, &res) != CU_OK || res.outcome != CU_PROV_PROVISION)
            r.refused++;
        flat.v[flat.n++] = now_s() - a;
        cu_prov_result_clear(&res);
        free(tok);
    }
    for (long i = 0; i < nsmp; i++) {
        cu_x509_chain_free(smp[i].chain);
        tc_free(&smp[i].dev);
        tc_free(&smp[i].ca);
    }
    free(smp);
    tc_free(&root);
    cu_prov_free(p);
    cu_store_close(s); /* checkpoints the WAL */
    long long size = store_size(dir);

    printf("enrollments imported:   %ld in %.1f s = %.0f/s\n", n, import_s, (double)n / import_s);
    printf("full registration (%ld): p50 %.1f us, p99 %.1f us\n", full, pct(&flat, 50), pct(&flat, 99));
    printf("store size:             %.1f MiB (%.0f bytes/entry)\n", (double)size / 1048576.0,
           (double)size / (double)(n + g));
    printf("refused (must be 0):    %ld\n", r.refused);
    free(flat.v);
    cu_keyring_free(kr);
    if (dir_arg == NULL)
        cu_test_rmtree(dir);
    free(dir);
    return r.refused == 0 ? 0 : 1;
}
