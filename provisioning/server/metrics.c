/* Prometheus metrics: registrations by mechanism and result, registration
 * latency histogram, HTTP responses by class, TLS handshakes, store errors,
 * keyring (token) operations. Lock-free counters, rendered on demand. */
#include "srv_int.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const MECH[CU_MECH__N] = {"x509", "symmetricKey", "tpm", "none"};
static const char *const RES[CU_RES__N] = {"assigned", "failed", "refused", "invalid", "throttled", "error"};
/* Seconds; the last bucket is +Inf. */
static const double BUCKETS[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5};
#define NB (sizeof BUCKETS / sizeof BUCKETS[0])

static atomic_ullong regs[CU_MECH__N][CU_RES__N];
static atomic_ullong lat_bucket[NB + 1];
static atomic_ullong lat_count;
static atomic_ullong lat_sum_us;
static atomic_ullong http_by_code[6]; /* 1xx..5xx, other */
static atomic_ullong tls_ok, tls_fail, store_errors, keyring_ops;
static atomic_llong inflight;
/* 1 until a probe (/healthz, /metrics) or a worker finds the database out. */
static atomic_int store_up = 1;
static atomic_ullong key_uses[CU_SRV_KEY__N];
static const char *const KEY_ROLE[CU_SRV_KEY__N] = {"tls-server", "keyring", "audit", "service-policy"};

void cu_srv__metrics_registration(int mech, int result, double seconds)
{
    if (mech < 0 || mech >= CU_MECH__N)
        mech = CU_MECH_NONE;
    atomic_fetch_add_explicit(&regs[mech][result], 1, memory_order_relaxed);
    size_t b = 0;
    while (b < NB && seconds > BUCKETS[b])
        b++;
    atomic_fetch_add_explicit(&lat_bucket[b], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&lat_count, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&lat_sum_us, (unsigned long long)(seconds * 1e6), memory_order_relaxed);
}

void cu_srv__metrics_http(int status)
{
    int c = status / 100;
    atomic_fetch_add_explicit(&http_by_code[c >= 1 && c <= 5 ? c - 1 : 5], 1, memory_order_relaxed);
}

void cu_srv__metrics_tls(bool ok) { atomic_fetch_add_explicit(ok ? &tls_ok : &tls_fail, 1, memory_order_relaxed); }
void cu_srv__metrics_store_error(void) { atomic_fetch_add_explicit(&store_errors, 1, memory_order_relaxed); }
void cu_srv__metrics_keyring_op(void) { atomic_fetch_add_explicit(&keyring_ops, 1, memory_order_relaxed); }
void cu_srv__metrics_store_up(bool up) { atomic_store_explicit(&store_up, up ? 1 : 0, memory_order_relaxed); }
void cu_srv__metrics_inflight(int d) { atomic_fetch_add_explicit(&inflight, d, memory_order_relaxed); }
void cu_srv__metrics_key_use(int which)
{
    if (which >= 0 && which < CU_SRV_KEY__N)
        atomic_fetch_add_explicit(&key_uses[which], 1, memory_order_relaxed);
}

typedef struct sbuf {
    char *p;
    size_t len, cap;
    bool failed;
} sbuf;

static void sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf *b, const char *fmt, ...)
{
    if (b->failed)
        return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->failed = true;
            return;
        }
        if ((size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        char *np = realloc(b->p, b->cap * 2 + (size_t)n);
        if (np == NULL) {
            b->failed = true;
            return;
        }
        b->p = np;
        b->cap = b->cap * 2 + (size_t)n;
    }
}

char *cu_srv__metrics_render(void)
{
    sbuf b = {.p = malloc(4096), .cap = 4096};
    if (b.p == NULL)
        return NULL;
    b.p[0] = 0;
    sb_printf(&b, "# HELP custos_registrations_total Device registration requests by attestation mechanism and result.\n"
                  "# TYPE custos_registrations_total counter\n");
    for (int m = 0; m < CU_MECH__N; m++)
        for (int r = 0; r < CU_RES__N; r++)
            sb_printf(&b, "custos_registrations_total{mechanism=\"%s\",result=\"%s\"} %llu\n", MECH[m], RES[r],
                      atomic_load(&regs[m][r]));
    sb_printf(&b, "# HELP custos_registration_duration_seconds Time to answer a registration request.\n"
                  "# TYPE custos_registration_duration_seconds histogram\n");
    unsigned long long cum = 0;
    for (size_t i = 0; i < NB; i++) {
        cum += atomic_load(&lat_bucket[i]);
        sb_printf(&b, "custos_registration_duration_seconds_bucket{le=\"%g\"} %llu\n", BUCKETS[i], cum);
    }
    cum += atomic_load(&lat_bucket[NB]);
    sb_printf(&b, "custos_registration_duration_seconds_bucket{le=\"+Inf\"} %llu\n", cum);
    sb_printf(&b, "custos_registration_duration_seconds_sum %.6f\n", (double)atomic_load(&lat_sum_us) / 1e6);
    sb_printf(&b, "custos_registration_duration_seconds_count %llu\n", atomic_load(&lat_count));
    sb_printf(&b, "# HELP custos_http_responses_total HTTP responses by status class.\n"
                  "# TYPE custos_http_responses_total counter\n");
    static const char *const CLS[6] = {"1xx", "2xx", "3xx", "4xx", "5xx", "other"};
    for (int i = 0; i < 6; i++)
        sb_printf(&b, "custos_http_responses_total{code=\"%s\"} %llu\n", CLS[i], atomic_load(&http_by_code[i]));
    sb_printf(&b, "# HELP custos_tls_handshakes_total TLS handshakes by result.\n"
                  "# TYPE custos_tls_handshakes_total counter\n"
                  "custos_tls_handshakes_total{result=\"ok\"} %llu\n"
                  "custos_tls_handshakes_total{result=\"failed\"} %llu\n",
              atomic_load(&tls_ok), atomic_load(&tls_fail));
    sb_printf(&b, "# HELP custos_store_errors_total Store operations that failed.\n"
                  "# TYPE custos_store_errors_total counter\ncustos_store_errors_total %llu\n",
              atomic_load(&store_errors));
    sb_printf(&b, "# HELP custos_store_up Whether the store answered this node's last probe (1) or not (0).\n"
                  "# TYPE custos_store_up gauge\ncustos_store_up %d\n",
              atomic_load(&store_up));
    sb_printf(&b, "# HELP custos_token_operations_total MAC operations of the service key (keyring).\n"
                  "# TYPE custos_token_operations_total counter\n"
                  "custos_token_operations_total{operation=\"keyring_mac\"} %llu\n",
              atomic_load(&keyring_ops));
    sb_printf(&b, "# HELP custos_key_uses_total Uses of the service's own keys (the audit log's key.use records).\n"
                  "# TYPE custos_key_uses_total counter\n");
    for (int k = 0; k < CU_SRV_KEY__N; k++)
        sb_printf(&b, "custos_key_uses_total{role=\"%s\"} %llu\n", KEY_ROLE[k], atomic_load(&key_uses[k]));
    sb_printf(&b, "# HELP custos_requests_in_flight Requests being handled.\n"
                  "# TYPE custos_requests_in_flight gauge\ncustos_requests_in_flight %lld\n",
              atomic_load(&inflight));
    if (b.failed) {
        free(b.p);
        return NULL;
    }
    return b.p;
}

/* ---- a keyring that counts ---- */

static cu_rc count_mac(void *ctx, const uint8_t *data, size_t len, uint8_t out[32])
{
    cu_srv__metrics_keyring_op();
    return cu_keyring_mac(ctx, data, len, out);
}

static const cu_keyring_ops COUNTING = {"counting", count_mac, NULL};

cu_rc cu_srv__metrics_keyring(cu_keyring *inner, cu_keyring **_out)
{
    return cu_keyring_new(&COUNTING, inner, _out);
}
