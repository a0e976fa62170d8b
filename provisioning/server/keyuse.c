/* custosd's own key uses for the audit log (docs/audit.md, "key.use"):
 * the TLS server key per full handshake, the keyring key per MAC and its
 * derived wrap key per wrap and unwrap (the TPM identity keys of pending
 * challenges told apart), the audit key per head signature, the service
 * policy key per service SAS checked. Uses are counted in memory
 * (cu_audit_key_count) and written as one record per key per minute by
 * worker 0's timer at each minute boundary, and at shutdown. */
#include "srv_int.h"

#include <custos/audit.h>

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static atomic_bool on;
/* Written before the workers start, read-only afterwards. */
static char names[CU_SRV_KEY__N][1024];
static const char *const ROLE[CU_SRV_KEY__N] = {"tls-server", "keyring", "audit", "service-policy"};
static char self_actor[CU_AUDIT_ACTOR_MAX] = "custosd";

static void policy_used(void) { cu_srv__keyuse_count(CU_SRV_KEY_POLICY, "verify"); }

void cu_srv__keyuse_enable(void)
{
#ifdef CUSTOS_AUDIT_BENCH_SWITCH
    /* Benchmark builds only: with the audit log off, nothing counted
     * either, so that "off" measures the whole of it (docs/audit.md). */
    if (getenv("CUSTOS_BENCH_AUDIT_OFF") != NULL)
        return;
#endif
    char host[128] = "localhost";
    if (gethostname(host, sizeof host) != 0)
        snprintf(host, sizeof host, "localhost");
    host[sizeof host - 1] = 0;
    snprintf(self_actor, sizeof self_actor, "custosd@%s", host);
    snprintf(names[CU_SRV_KEY_POLICY], sizeof names[0], "service-policy:%s", CU_SRV_POLICY);
    cu_srv__service_sas_key_used = policy_used;
    atomic_store(&on, true);
}

const char *cu_srv__self_actor(void) { return self_actor; }

/* A pkcs11: URI names itself (cu_audit_key_count removes PINs); a key
 * file is "file:PATH". */
void cu_srv__keyuse_name(int which, const char *spec)
{
    if (!atomic_load(&on) || which < 0 || which >= CU_SRV_KEY__N || spec == NULL)
        return;
    char abs[PATH_MAX];
    if (strncmp(spec, "pkcs11:", 7) == 0)
        snprintf(names[which], sizeof names[which], "%s", spec);
    else /* where the file is, whatever directory custosd was started in */
        snprintf(names[which], sizeof names[which], "file:%.1000s", realpath(spec, abs) ? abs : spec);
}

const char *cu_srv__keyuse_get0_name(int which)
{
    return which >= 0 && which < CU_SRV_KEY__N && names[which][0] ? names[which] : NULL;
}

void cu_srv__keyuse_count(int which, const char *op)
{
    if (!atomic_load_explicit(&on, memory_order_relaxed) || which < 0 || which >= CU_SRV_KEY__N ||
        names[which][0] == 0)
        return;
    cu_srv__metrics_key_use(which);
    /* Out of memory loses a count; it never fails the operation. */
    (void)cu_audit_key_count(names[which], ROLE[which], op, 1, 0);
}

static const char TPM_AAD[] = "custos tpm challenge";

static void keyring_use(void *ctx, cu_keyring_use what, const char *aad)
{
    (void)ctx;
    bool tpm = aad != NULL && strncmp(aad, TPM_AAD, sizeof TPM_AAD - 1) == 0;
    const char *op = what == CU_KEYRING_USE_WRAP     ? (tpm ? "tpm-identity-wrap" : "wrap")
                     : what == CU_KEYRING_USE_UNWRAP ? (tpm ? "tpm-identity-unwrap" : "unwrap")
                                                     : "mac";
    cu_srv__keyuse_count(CU_SRV_KEY_KEYRING, op);
}

void cu_srv__keyuse_watch_keyring(cu_keyring *kr, const char *spec)
{
    cu_srv__keyuse_name(CU_SRV_KEY_KEYRING, spec);
    cu_keyring_set_observer(kr, keyring_use, NULL);
}

/* ---- writing: each minute, and at shutdown ---- */

static void log_failure(const char *what)
{
    cu_srv__lf f[] = {CU_LF_S("error", cu_err_last()->msg)};
    cu_srv__log(CU_LOG_ERROR, what, f, 1);
}

void cu_srv__audit_flush(cu_srv__worker *w, bool all)
{
    cu_srv__srv *srv = w->srv;
    pthread_mutex_lock(&srv->write_lock);
    cu_store_set_actor(w->store, self_actor);
    if ((all ? cu_audit_key_use_flush(w->store) : cu_audit_key_use_flush_due(w->store)) != CU_OK)
        log_failure("key uses not written to the audit log");
    if (cu_srv__refusals_flush(w->store, all) != CU_OK)
        log_failure("refusal summaries not written to the audit log");
    pthread_mutex_unlock(&srv->write_lock);
}

void cu_srv__audit_final(cu_srv__worker *w)
{
    const char *audit = cu_srv__keyuse_get0_name(CU_SRV_KEY_AUDIT);
    bool count = atomic_load(&on) && audit != NULL;
    /* No automatic heads while the last records are written (their uses
     * of the audit key would come after its record): one explicit head
     * covers them all. */
    EVP_PKEY *key = cu_audit_get0_signer(w->store);
    if (key != NULL && cu_audit_set_signer(w->store, key, 0, 0) != CU_OK)
        log_failure("audit head signing not paused at shutdown");
    /* The last head signature is counted before it is made, so that the
     * record counting it is one the signature covers. */
    if (count)
        cu_srv__keyuse_count(CU_SRV_KEY_AUDIT, "sign");
    cu_srv__audit_flush(w, true);
    if (count)
        cu_audit_set_signer_name(w->store, NULL);
    if (cu_audit_sign_head(w->store, NULL, NULL) != CU_OK)
        log_failure(count ? "audit head not signed at shutdown (its key use was recorded)"
                          : "audit head not signed at shutdown");
}

struct cu_srv__minute {
    cu_srv__worker *w;
    struct event *ev;
};

/* Just past the next minute boundary: the minute that ended is complete. */
static void arm(cu_srv__minute *m)
{
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    long ms = (59 - now.tv_sec % 60) * 1000L + (1000 - now.tv_nsec / 1000000) + 100;
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    event_add(m->ev, &tv);
}

static void minute_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    cu_srv__minute *m = arg;
    cu_srv__audit_flush(m->w, false);
    arm(m);
}

cu_rc cu_srv__minute_start(cu_srv__worker *w, cu_srv__minute **_out)
{
    cu_srv__minute *m = calloc(1, sizeof *m);
    if (m == NULL || (m->ev = evtimer_new(w->base, minute_cb, m)) == NULL) {
        free(m);
        return cu_err_set(CU_E_NOMEM, "cannot create the audit minute timer");
    }
    m->w = w;
    arm(m);
    *_out = m;
    return CU_OK;
}

void cu_srv__minute_stop(cu_srv__minute *m)
{
    if (m == NULL)
        return;
    event_free(m->ev);
    free(m);
}
