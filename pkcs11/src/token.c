/* Opening a token, logging in, and the session pool. */
#include "internal.h"

#include <p11-kit/uri.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

enum { DEFAULT_MAX_SESSIONS = 64 };

const char *cu__token_name(const cu_token *t, char *buf, size_t len)
{
    snprintf(buf, len, "token '%s' (serial %s)", t->desc.label, t->desc.serial);
    return buf;
}

static int cmp_mech(const void *a, const void *b)
{
    CK_MECHANISM_TYPE x = *(const CK_MECHANISM_TYPE *)a, y = *(const CK_MECHANISM_TYPE *)b;
    return x < y ? -1 : x > y;
}

bool cu__token_has_mech(const cu_token *t, CK_MECHANISM_TYPE m)
{
    return bsearch(&m, t->mechs, t->n_mechs, sizeof m, cmp_mech) != NULL;
}

static void load_mechs(cu_token *t)
{
    CK_ULONG n = 0;
    if (CU__P11(t->f, C_GetMechanismList, t->slot, NULL, &n) != CKR_OK || n == 0)
        return;
    t->mechs = calloc(n, sizeof *t->mechs);
    if (t->mechs == NULL)
        return;
    if (CU__P11(t->f, C_GetMechanismList, t->slot, t->mechs, &n) != CKR_OK) {
        free(t->mechs);
        t->mechs = NULL;
        return;
    }
    qsort(t->mechs, n, sizeof *t->mechs, cmp_mech);
    t->n_mechs = n;
}

static cu_rc login_on(cu_token *t, CK_SESSION_HANDLE s, const char *pin)
{
    char name[96];
    CK_RV rv = CU__P11(t->f, C_Login, s, CKU_USER, (CK_UTF8CHAR_PTR)pin, strlen(pin));
    if (rv == CKR_USER_ALREADY_LOGGED_IN && !cu__module_login_matches(t->mod, t->slot, pin))
        return cu_err_set_ckr(CU_E_PIN_INCORRECT, CKR_PIN_INCORRECT,
                              "%s: PIN differs from the one this process logged in with",
                              cu__token_name(t, name, sizeof name));
    if (rv == CKR_OK || rv == CKR_USER_ALREADY_LOGGED_IN) {
        if (rv == CKR_OK)
            cu__module_note_login(t->mod, t->slot, pin);
        t->logged_in = true;
        return CU_OK;
    }
    cu_rc rc = cu_rc_from_ckr(rv);
    if (rc != CU_E_PIN_INCORRECT && rc != CU_E_PIN_LOCKED)
        rc = CU_E_TOKEN;
    return cu_err_set_ckr(rc, rv, "%s: login failed", cu__token_name(t, name, sizeof name));
}

/* Called with t->lock held: after fork() every handle of the parent is
 * unusable here; forget them (closing them could disturb the parent's
 * connection) and start afresh. */
static cu_rc reset_after_fork_unlocked(cu_token *t)
{
    cu_rc rc = cu__module_ready(t->mod);
    if (rc != CU_OK)
        return rc;
    t->n_idle = 0;
    t->n_open = 0;
    atomic_store(&t->n_owned, 0); /* sessions threads kept are the parent's */
    t->logged_in = false;
    t->keeper = CK_INVALID_HANDLE;
    CK_RV rv = cu__open_session(t->mod, t->slot, &t->keeper);
    if (rv != CKR_OK) {
        char name[96];
        return cu_err_set_ckr(CU_E_TOKEN, rv, "%s: cannot open a session after fork",
                              cu__token_name(t, name, sizeof name));
    }
    if (t->pin != NULL && (rc = login_on(t, t->keeper, t->pin)) != CU_OK)
        return rc;
    t->fork_gen = atomic_load(&cu__fork_gen);
    atomic_fetch_add(&t->epoch, 1);
    return CU_OK;
}

/* Token identities for the per-thread caches (0 is "none"). */
static atomic_ullong next_serial = 1;

cu_rc cu__session_get(cu_token *t, CK_SESSION_HANDLE *_s)
{
    if (cu__tcache_take(t, _s))
        return CU_OK;
    cu_rc rc = CU_OK;
    pthread_mutex_lock(&t->lock);
    if (t->fork_gen != atomic_load(&cu__fork_gen) && (rc = reset_after_fork_unlocked(t)) != CU_OK)
        goto out;
    if (t->mod->finalized) {
        rc = cu_err_set(CU_E_MODULE, "PKCS#11 module %s was finalized", t->mod->path);
        goto out;
    }
    while (t->n_idle == 0 && t->n_open >= t->max_sessions)
        pthread_cond_wait(&t->cond, &t->lock);
    if (t->n_idle > 0) {
        *_s = t->idle[--t->n_idle];
        goto out;
    }
    t->n_open++;
    pthread_mutex_unlock(&t->lock);

    CK_SESSION_HANDLE s;
    CK_RV rv = cu__open_session(t->mod, t->slot, &s);
    if (rv == CKR_OK) {
        *_s = s;
        return CU_OK;
    }
    char name[96];
    rc = cu_err_set_ckr(CU_E_TOKEN, rv, "%s: cannot open a session", cu__token_name(t, name, sizeof name));
    pthread_mutex_lock(&t->lock);
    t->n_open--;
    pthread_cond_signal(&t->cond);
out:
    pthread_mutex_unlock(&t->lock);
    return rc;
}

void cu__pool_put(cu_token *t, CK_SESSION_HANDLE s)
{
    pthread_mutex_lock(&t->lock);
    /* A session from before a fork belongs to the parent: forget it. */
    if (t->fork_gen == atomic_load(&cu__fork_gen) && t->n_idle < t->max_sessions)
        t->idle[t->n_idle++] = s;
    pthread_cond_signal(&t->cond);
    pthread_mutex_unlock(&t->lock);
}

void cu__session_put(cu_token *t, CK_SESSION_HANDLE s)
{
    if (!cu__tcache_park(t, s))
        cu__pool_put(t, s);
}

void cu__session_drop(cu_token *t, CK_SESSION_HANDLE s)
{
    cu__tcache_dropped(t, s);
    cu__close_session(t->mod, s);
    pthread_mutex_lock(&t->lock);
    if (t->n_open > 0)
        t->n_open--;
    pthread_cond_signal(&t->cond);
    pthread_mutex_unlock(&t->lock);
}

static cu_rc resolve_pin(P11KitUri *u, const cu_token_opts *o, char **_pin)
{
    *_pin = NULL;
    if (o && o->pin) {
        *_pin = strdup(o->pin);
        return *_pin ? CU_OK : cu_err_set(CU_E_NOMEM, "out of memory");
    }
    const char *v = u ? p11_kit_uri_get_pin_value(u) : NULL;
    if (v != NULL) {
        *_pin = strdup(v);
        return *_pin ? CU_OK : cu_err_set(CU_E_NOMEM, "out of memory");
    }
    const char *src = u ? p11_kit_uri_get_pin_source(u) : NULL;
    if (src != NULL)
        return cu__pin_from_source(src, _pin);
    const char *env = getenv("CUSTOS_PIN");
    if (env != NULL && *env != '\0') {
        *_pin = strdup(env);
        return *_pin ? CU_OK : cu_err_set(CU_E_NOMEM, "out of memory");
    }
    return CU_OK;
}

/* Picks the one initialized token of the module that the URI names. */
static cu_rc select_slot(cu_module *m, P11KitUri *u, const char *uri, CK_SLOT_ID *_slot, cu_token_desc *_d)
{
    cu_token_desc *slots = NULL;
    size_t n = 0, hits = 0;
    cu_rc rc = cu_module_slots(m, &slots, &n);
    if (rc != CU_OK)
        return rc;
    CK_SLOT_ID want_slot = p11_kit_uri_get_slot_id(u);
    for (size_t i = 0; i < n; i++) {
        if (!slots[i].present || !slots[i].initialized)
            continue;
        if (want_slot != (CK_SLOT_ID)-1 && slots[i].slot_id != want_slot)
            continue;
        CK_TOKEN_INFO ti;
        if (CU__P11(m->f, C_GetTokenInfo, slots[i].slot_id, &ti) != CKR_OK || !p11_kit_uri_match_token_info(u, &ti))
            continue;
        CK_SLOT_INFO si;
        if (CU__P11(m->f, C_GetSlotInfo, slots[i].slot_id, &si) != CKR_OK || !p11_kit_uri_match_slot_info(u, &si))
            continue;
        if (hits++ == 0) {
            *_slot = slots[i].slot_id;
            *_d = slots[i];
        }
    }
    free(slots);
    char shown[256];
    if (hits == 0)
        return cu_err_set(CU_E_TOKEN_NOT_FOUND, "no initialized token of %s matches %s", m->path,
                          cu__uri_for_message(uri, shown, sizeof shown));
    if (hits > 1)
        return cu_err_set(CU_E_AMBIGUOUS, "%zu tokens of %s match %s: name one by token= or serial=", hits,
                          m->path, cu__uri_for_message(uri, shown, sizeof shown));
    return CU_OK;
}

/* Bounded restarts of the init-retry quirk when opening a token. */
enum { OPEN_RETRIES = 8 };

/* Whether the failure just recorded is one SoftHSM2 shows while another
 * process reads the same token (init-retry): the token not seen, or seen
 * but refusing a session or login as if broken or without a user PIN. */
static bool passing_failure(void)
{
    const cu_err *e = cu_err_last();
    return e->rc == CU_E_TOKEN_NOT_FOUND ||
           (e->origin == CU_ORIGIN_PKCS11 && (e->ckr == CKR_GENERAL_ERROR || e->ckr == CKR_USER_PIN_NOT_INITIALIZED));
}

/* 5, 10 ... 40 ms, plus up to 5 ms of jitter so that processes that failed
 * together do not start again together. */
static unsigned backoff_us(int attempt)
{
    static _Thread_local unsigned seed;
    if (seed == 0)
        seed = (unsigned)getpid() * 2654435761u ^ (unsigned)time(NULL);
    return 5000u * (unsigned)(attempt + 1) + (unsigned)rand_r(&seed) % 5000u;
}

static void close_keeper(cu_token *t)
{
    if (t->keeper != CK_INVALID_HANDLE)
        cu__close_session(t->mod, t->keeper);
    t->keeper = CK_INVALID_HANDLE;
    t->logged_in = false;
    free(t->mechs);
    t->mechs = NULL;
    t->n_mechs = 0;
}

/* Selects the token the URI names, opens the keeper session and logs in. */
static cu_rc open_on_slot(cu_token *t, P11KitUri *u, const char *uri, const cu_token_opts *opts, const char *pin)
{
    cu_rc rc = select_slot(t->mod, u, uri, &t->slot, &t->desc);
    if (rc != CU_OK)
        return rc;
    t->login_required = (t->desc.flags & CKF_LOGIN_REQUIRED) != 0;
    load_mechs(t);

    char name[96];
    CK_RV rv = cu__open_session(t->mod, t->slot, &t->keeper);
    if (rv != CKR_OK) {
        t->keeper = CK_INVALID_HANDLE;
        return cu_err_set_ckr(CU_E_TOKEN, rv, "%s: cannot open a session", cu__token_name(t, name, sizeof name));
    }
    if (pin != NULL && !(opts && opts->no_login))
        return login_on(t, t->keeper, pin);
    return CU_OK;
}

cu_rc cu_token_open(const char *uri, const cu_token_opts *opts, cu_token **_out)
{
    P11KitUri *u = NULL;
    cu_module *m = NULL;
    cu_token *t = NULL;
    char *pin = NULL;
    unsigned quirks = 0;
    cu_rc rc;

    if (_out == NULL)
        return cu_err_set(CU_E_INVALID_ARG, "cu_token_open: no output");
    *_out = NULL;
    if ((rc = cu__uri_parse(uri, &u)) != CU_OK)
        goto out;
    const char *mod = p11_kit_uri_get_module_path(u);
    if (mod == NULL)
        mod = p11_kit_uri_get_module_name(u);
    if (mod == NULL && opts)
        mod = opts->module;
    if (mod == NULL) {
        rc = cu_err_set(CU_E_URI, "the URI names no module: add ?module-path=/path/to/module.so");
        goto out;
    }
    const char *named = opts && opts->quirks ? opts->quirks : cu_quirks_default(mod);
    if (named != NULL && (rc = cu_quirks_parse(named, &quirks)) != CU_OK)
        goto out;
    if ((rc = cu_module_load(mod, quirks, &m)) != CU_OK)
        goto out;
    if ((rc = resolve_pin(u, opts, &pin)) != CU_OK)
        goto out;

    if ((t = calloc(1, sizeof *t)) == NULL) {
        rc = cu_err_set(CU_E_NOMEM, "out of memory");
        goto out;
    }
    atomic_init(&t->refs, 1);
    atomic_init(&t->epoch, 1);
    atomic_init(&t->n_owned, 0);
    t->serial = atomic_fetch_add(&next_serial, 1);
    cu__mutex_init_recursive(&t->lock);
    pthread_cond_init(&t->cond, NULL);
    cu__live_link(&cu__live_tokens, &t->live, &t->lock, &t->cond);
    t->mod = m;
    t->f = m->f;
    m = NULL;
    t->max_sessions = (opts && opts->max_sessions) ? opts->max_sessions : DEFAULT_MAX_SESSIONS;
    t->fork_gen = t->mod->fork_gen;
    t->keeper = CK_INVALID_HANDLE;
    if ((t->idle = calloc(t->max_sessions, sizeof *t->idle)) == NULL) {
        rc = cu_err_set(CU_E_NOMEM, "out of memory");
        goto out;
    }
    for (int i = 0;; i++) {
        rc = open_on_slot(t, u, uri, opts, pin);
        if (rc == CU_OK || !(t->mod->quirks & CU_QUIRK_INIT_RETRY) || i >= OPEN_RETRIES || !passing_failure())
            break;
        /* init-retry: SoftHSM2 misread the token while another process
         * was reading it; start the module afresh and open again. */
        cu_err why = *cu_err_last();
        close_keeper(t);
        if (cu__module_restart(t->mod, backoff_us(i)) != CU_OK) {
            rc = cu__err_restore(&why); /* the reason that matters */
            break;
        }
    }
    if (rc != CU_OK)
        goto out;
    if (pin != NULL && t->logged_in) {
        t->pin = pin;
        pin = NULL;
    }
    *_out = t;
    t = NULL;
out:
    cu__secret_free(pin);
    cu_module_unref(m);
    cu_token_unref(t);
    if (u)
        p11_kit_uri_free(u);
    return rc;
}

cu_token *cu_token_ref(cu_token *t)
{
    if (t)
        atomic_fetch_add(&t->refs, 1);
    return t;
}

void cu_token_unref(cu_token *t)
{
    if (t == NULL || atomic_fetch_sub(&t->refs, 1) != 1)
        return;
    cu__tcache_forget(t); /* closes the sessions threads keep for it */
    cu__live_unlink(&cu__live_tokens, &t->live);
    bool same_process = t->fork_gen == atomic_load(&cu__fork_gen) && !t->mod->finalized;
    if (same_process) {
        for (size_t i = 0; i < t->n_idle; i++)
            cu__close_session(t->mod, t->idle[i]);
        if (t->keeper != CK_INVALID_HANDLE)
            cu__close_session(t->mod, t->keeper);
    }
    cu__secret_free(t->pin);
    free(t->idle);
    free(t->mechs);
    pthread_mutex_destroy(&t->lock);
    pthread_cond_destroy(&t->cond);
    cu_module_unref(t->mod);
    free(t);
}

const cu_token_desc *cu_token_get0_desc(const cu_token *t)
{
    return t ? &t->desc : NULL;
}

cu_module *cu_token_get0_module(const cu_token *t)
{
    return t ? t->mod : NULL;
}

bool cu_token_logged_in(const cu_token *t)
{
    return t && t->logged_in;
}

cu_rc cu_token_login(cu_token *t, const char *pin)
{
    if (t == NULL || pin == NULL)
        return cu_err_set(CU_E_INVALID_ARG, "login: no PIN");
    pthread_mutex_lock(&t->lock);
    cu_rc rc = login_on(t, t->keeper, pin);
    if (rc == CU_OK) {
        char *copy = strdup(pin);
        cu__secret_free(t->pin);
        t->pin = copy;
    }
    pthread_mutex_unlock(&t->lock);
    return rc;
}

void cu_token_session_counts(cu_token *t, cu_session_counts *_c)
{
    if (t == NULL || _c == NULL)
        return;
    pthread_mutex_lock(&t->lock);
    _c->open = t->n_open;
    _c->idle = (unsigned)t->n_idle;
    pthread_mutex_unlock(&t->lock);
    _c->kept = atomic_load(&t->n_owned);
}

cu_rc cu__token_relogin(cu_token *t)
{
    pthread_mutex_lock(&t->lock);
    cu_rc rc = t->pin ? login_on(t, t->keeper, t->pin) : cu_err_set(CU_E_PIN_MISSING, "no PIN to log in again");
    pthread_mutex_unlock(&t->lock);
    return rc;
}

cu_rc cu_token_set_pin(cu_token *t, const char *old_pin, const char *new_pin)
{
    char name[96];
    if (t == NULL || old_pin == NULL || new_pin == NULL)
        return cu_err_set(CU_E_INVALID_ARG, "set PIN: old and new PIN are required");
    pthread_mutex_lock(&t->lock);
    CK_RV rv = CU__P11(t->f, C_SetPIN, t->keeper, (CK_UTF8CHAR_PTR)old_pin, strlen(old_pin),
                              (CK_UTF8CHAR_PTR)new_pin, strlen(new_pin));
    cu_rc rc = CU_OK;
    if (rv != CKR_OK) {
        rc = cu_err_set_ckr(cu_rc_from_ckr(rv), rv, "%s: cannot change the PIN", cu__token_name(t, name, sizeof name));
    } else {
        char *copy = strdup(new_pin);
        cu__secret_free(t->pin);
        t->pin = copy;
        cu__module_note_login(t->mod, t->slot, new_pin);
    }
    pthread_mutex_unlock(&t->lock);
    return rc;
}

char *cu_token_uri(const cu_token *t)
{
    char *out = NULL;
    if (t == NULL)
        return NULL;
    P11KitUri *u = p11_kit_uri_new();
    if (u == NULL)
        return NULL;
    CK_TOKEN_INFO *ti = p11_kit_uri_get_token_info(u);
    if (CU__P11(t->f, C_GetTokenInfo, t->slot, ti) == CKR_OK) {
        /* Only the identifying fields; the rest must not constrain matching. */
        cu__uri_token_fields(ti);
        p11_kit_uri_set_module_path(u, t->mod->path);
        if (p11_kit_uri_format(u, P11_KIT_URI_FOR_TOKEN | P11_KIT_URI_FOR_MODULE, &out) != P11_KIT_URI_OK)
            out = NULL;
    }
    p11_kit_uri_free(u);
    return out;
}
