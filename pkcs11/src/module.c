/* Loading PKCS#11 modules through p11-kit: one shared instance per module
 * path, re-initialized in a fork()ed child before its first use there. */
#include "internal.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <limits.h>
#include <p11-kit/p11-kit.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

atomic_ulong cu__fork_gen;

struct cu_login {
    CK_SLOT_ID slot;
    uint8_t pin_digest[32];
    struct cu_login *next;
};

/* Recursive, as every lock of the layer (fork.c takes it around a fork). */
pthread_mutex_t cu__registry_lock = PTHREAD_RECURSIVE_MUTEX_INITIALIZER_NP;
static cu_module *registry;
static cu_module *zombies; /* finalized but still referenced */

/* Bounded retries for the init-retry quirk (SoftHSM2 concurrent start-up). */
enum { INIT_RETRIES = 8 };

cu_rc cu_quirks_parse(const char *s, unsigned *_quirks)
{
    static const struct { const char *name; unsigned bit; } names[] = {
        {"no-finalize", CU_QUIRK_NO_FINALIZE},
        {"init-retry", CU_QUIRK_INIT_RETRY},
        {"no-session-copy", CU_QUIRK_NO_SESSION_COPY},
        {"fork-unsafe", CU_QUIRK_FORK_UNSAFE},
    };
    unsigned q = 0;
    if (_quirks == NULL)
        return cu_err_set(CU_E_INVALID_ARG, "no output for quirks");
    while (s != NULL && *s != '\0') {
        size_t n = strcspn(s, ", ");
        bool found = false;
        for (size_t i = 0; n > 0 && i < sizeof names / sizeof names[0]; i++) {
            if (strlen(names[i].name) == n && strncmp(s, names[i].name, n) == 0) {
                q |= names[i].bit;
                found = true;
            }
        }
        if (n > 0 && !found)
            return cu_err_set(CU_E_INVALID_ARG,
                              "unknown quirk '%.*s' (known: no-finalize, init-retry, no-session-copy, fork-unsafe)",
                              (int)n, s);
        s += n;
        s += strspn(s, ", ");
    }
    *_quirks = q;
    return CU_OK;
}

const char *cu_quirks_default(const char *module)
{
    const char *base = module != NULL ? strrchr(module, '/') : NULL;
    base = base != NULL ? base + 1 : module;
    if (base != NULL && strstr(base, "softhsm") != NULL)
        return "no-finalize,init-retry";
    if (base != NULL && strstr(base, "tpm2_pkcs11") != NULL)
        return "fork-unsafe";
    return NULL;
}

/* Resolves a p11-kit module name to its configured path. */
static char *path_for_name(const char *name)
{
    CK_FUNCTION_LIST **mods = p11_kit_modules_load(NULL, 0);
    char *path = NULL;
    if (mods == NULL)
        return NULL;
    CK_FUNCTION_LIST *m = p11_kit_module_for_name(mods, name);
    if (m != NULL)
        path = p11_kit_config_option(m, "module");
    p11_kit_modules_release(mods);
    if (path != NULL && path[0] != '/') {
        /* Relative module paths are relative to p11-kit's module directory. */
        char *full = NULL;
        if (asprintf(&full, "%s/%s", P11_MODULE_PATH, path) < 0)
            full = NULL;
        free(path);
        path = full;
    }
    return path;
}

static CK_RV initialize(CK_FUNCTION_LIST *f, unsigned quirks)
{
    cu__gate *g = cu__gate_enter();
    CK_RV rv = p11_kit_module_initialize(f);
    for (int i = 0; rv == CKR_GENERAL_ERROR && (quirks & CU_QUIRK_INIT_RETRY) && i < INIT_RETRIES; i++) {
        p11_kit_module_finalize(f);
        usleep(2000u * (unsigned)(i + 1));
        rv = p11_kit_module_initialize(f);
    }
    cu__gate_leave(g);
    return rv;
}

/* p11-kit's finalize and release (which finalizes) call into the module. */
static void finalize(CK_FUNCTION_LIST *f)
{
    cu__gate *g = cu__gate_enter();
    p11_kit_module_finalize(f);
    cu__gate_leave(g);
}

static void release(CK_FUNCTION_LIST *f)
{
    cu__gate *g = cu__gate_enter();
    p11_kit_module_release(f);
    cu__gate_leave(g);
}

cu_rc cu_module_load(const char *path_or_name, unsigned quirks, cu_module **_out)
{
    char *path = NULL;
    cu_module *m = NULL;
    cu_rc rc = CU_OK;
    bool initialized = false;

    if (path_or_name == NULL || *path_or_name == '\0' || _out == NULL)
        return cu_err_set(CU_E_INVALID_ARG, "no PKCS#11 module given");
    cu__fork_handlers_install();

    if (strchr(path_or_name, '/') != NULL) {
        char *real = realpath(path_or_name, NULL);
        if (real == NULL)
            return cu_err_set_sys(CU_E_MODULE, errno, "cannot load PKCS#11 module %s", path_or_name);
        /* Keep the name the user gave (a versioned file behind a symlink
         * changes on upgrades); compare instances by the real file. */
        free(real);
        path = path_or_name[0] == '/' ? strdup(path_or_name) : realpath(path_or_name, NULL);
        if (path == NULL)
            return cu_err_set(CU_E_NOMEM, "out of memory");
    } else {
        path = path_for_name(path_or_name);
        if (path == NULL)
            return cu_err_set(CU_E_MODULE, "no p11-kit module named '%s' is configured", path_or_name);
    }

    pthread_mutex_lock(&cu__registry_lock);
    char *real = realpath(path, NULL);
    for (m = registry; m != NULL; m = m->next) {
        char *mreal = realpath(m->path, NULL);
        bool same = strcmp(m->path, path) == 0 || (real && mreal && strcmp(real, mreal) == 0);
        free(mreal);
        if (same) {
            atomic_fetch_add(&m->refs, 1);
            m->quirks |= quirks;
            goto out;
        }
    }
    m = calloc(1, sizeof *m);
    if (m == NULL) {
        rc = cu_err_set(CU_E_NOMEM, "out of memory loading %s", path);
        goto out;
    }
    m->f = p11_kit_module_load(path, 0);
    if (m->f == NULL) {
        const char *why = p11_kit_message();
        rc = cu_err_set(CU_E_MODULE, "cannot load PKCS#11 module %s: %s", path, why ? why : "unknown reason");
        goto out;
    }
    CK_RV rv = initialize(m->f, quirks);
    if (rv != CKR_OK && rv != CKR_CRYPTOKI_ALREADY_INITIALIZED) {
        release(m->f);
        rc = cu_err_set_ckr(CU_E_MODULE, rv, "cannot initialize PKCS#11 module %s", path);
        goto out;
    }
    initialized = true;
    atomic_init(&m->refs, 1);
    cu__mutex_init_recursive(&m->lock);
    cu__live_link(&cu__live_modules, &m->live, &m->lock, NULL);
    pthread_mutex_init(&m->session_lock, NULL);
    m->quirks = quirks;
    m->fork_gen = atomic_load(&cu__fork_gen);
    m->path = path;
    path = NULL;
    m->next = registry;
    registry = m;

out:
    free(real);
    if (rc != CU_OK) {
        free(m);
        m = NULL;
    }
    pthread_mutex_unlock(&cu__registry_lock);
    free(path);
    if (initialized)
        cu__fork_handlers_after_init();
    *_out = m;
    return rc;
}

static void pin_digest(const char *pin, uint8_t out[32])
{
    unsigned int n = 32;
    EVP_Digest(pin, strlen(pin), out, &n, EVP_sha256(), NULL);
}

void cu__module_note_login(cu_module *m, CK_SLOT_ID slot, const char *pin)
{
    pthread_mutex_lock(&m->lock);
    struct cu_login *l;
    for (l = m->logins; l != NULL && l->slot != slot; l = l->next)
        ;
    if (l == NULL && (l = calloc(1, sizeof *l)) != NULL) {
        l->slot = slot;
        l->next = m->logins;
        m->logins = l;
    }
    if (l != NULL)
        pin_digest(pin, l->pin_digest);
    pthread_mutex_unlock(&m->lock);
}

bool cu__module_login_matches(cu_module *m, CK_SLOT_ID slot, const char *pin)
{
    uint8_t d[32];
    bool ok = true; /* logged in by someone else in the process: trust it */
    pin_digest(pin, d);
    pthread_mutex_lock(&m->lock);
    for (struct cu_login *l = m->logins; l != NULL; l = l->next)
        if (l->slot == slot)
            ok = CRYPTO_memcmp(l->pin_digest, d, sizeof d) == 0;
    pthread_mutex_unlock(&m->lock);
    return ok;
}

cu_rc cu__module_restart(cu_module *m, unsigned delay_us)
{
    cu_rc rc = CU_OK;
    pthread_mutex_lock(&m->lock);
    /* Our token under construction holds one reference: more means others
     * in this process have sessions that a restart would destroy. */
    if (atomic_load(&m->refs) > 1) {
        rc = cu_err_set(CU_E_STATE, "module %s is in use: not restarting it", m->path);
    } else {
        finalize(m->f);
        usleep(delay_us);
        CK_RV rv = initialize(m->f, m->quirks);
        if (rv != CKR_OK && rv != CKR_CRYPTOKI_ALREADY_INITIALIZED)
            rc = cu_err_set_ckr(CU_E_MODULE, rv, "cannot re-initialize %s", m->path);
    }
    pthread_mutex_unlock(&m->lock);
    return rc;
}

cu_module *cu__module_ref(cu_module *m)
{
    atomic_fetch_add(&m->refs, 1);
    return m;
}

static void module_free(cu_module *m)
{
    cu__live_unlink(&cu__live_modules, &m->live);
    release(m->f);
    pthread_mutex_destroy(&m->lock);
    pthread_mutex_destroy(&m->session_lock);
    free(m->path);
    free(m);
}

/* Modules stay loaded until cu_p11_shutdown: unloading a module that another
 * user in the process (a provider, an engine) still has is never safe. A
 * module finalized while still referenced is freed with its last reference. */
void cu_module_unref(cu_module *m)
{
    if (m == NULL || atomic_fetch_sub(&m->refs, 1) != 1 || !m->finalized)
        return;
    pthread_mutex_lock(&cu__registry_lock);
    for (cu_module **pp = &zombies; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == m) {
            *pp = m->next;
            module_free(m);
            break;
        }
    }
    pthread_mutex_unlock(&cu__registry_lock);
}

const char *cu_module_path(const cu_module *m)
{
    return m ? m->path : NULL;
}

void *cu_module_get0_functions(cu_module *m)
{
    return m ? m->f : NULL;
}

cu_rc cu__module_ready(cu_module *m)
{
    unsigned long gen = atomic_load(&cu__fork_gen);
    if (m->finalized)
        return cu_err_set(CU_E_MODULE, "PKCS#11 module %s was finalized", m->path);
    if (m->fork_gen == gen)
        return CU_OK;
    if (m->quirks & CU_QUIRK_FORK_UNSAFE)
        return cu_err_set(CU_E_STATE,
                          "%s cannot be used in a fork()ed child (quirk fork-unsafe): it would share the "
                          "parent's connection and sessions; open the token in a new process instead",
                          m->path);
    pthread_mutex_lock(&m->lock);
    cu_rc rc = CU_OK;
    bool initialized = false;
    if (m->fork_gen != gen) {
        /* A child of fork(): p11-kit forwards this to the module, which then
         * starts afresh instead of sharing the parent's state. A parent
         * thread that was opening or closing a session at the fork left
         * session_lock held for good in this copy: make it anew. */
        pthread_mutex_init(&m->session_lock, NULL);
        CK_RV rv = initialize(m->f, m->quirks);
        if (rv != CKR_OK && rv != CKR_CRYPTOKI_ALREADY_INITIALIZED)
            rc = cu_err_set_ckr(CU_E_MODULE, rv, "cannot re-initialize %s after fork", m->path);
        else {
            m->fork_gen = gen;
            initialized = true;
        }
    }
    pthread_mutex_unlock(&m->lock);
    if (initialized)
        cu__fork_handlers_after_init();
    return rc;
}

void cu__trim_copy(char *dst, size_t dst_size, const unsigned char *src, size_t src_len)
{
    size_t n = src_len < dst_size - 1 ? src_len : dst_size - 1;
    memcpy(dst, src, n);
    while (n > 0 && (dst[n - 1] == ' ' || dst[n - 1] == '\0'))
        n--;
    dst[n] = '\0';
}

void cu__hex(const uint8_t *in, size_t len, char *out, size_t out_size)
{
    static const char digits[] = "0123456789abcdef";
    size_t o = 0;
    for (size_t i = 0; i < len && o + 2 < out_size; i++) {
        out[o++] = digits[in[i] >> 4];
        out[o++] = digits[in[i] & 15];
    }
    if (out_size > 0)
        out[o] = '\0';
}

static void fill_desc(CK_FUNCTION_LIST *f, CK_SLOT_ID id, cu_token_desc *d)
{
    CK_SLOT_INFO si;
    CK_TOKEN_INFO ti;
    memset(d, 0, sizeof *d);
    d->slot_id = id;
    if (CU__P11(f, C_GetSlotInfo, id, &si) == CKR_OK) {
        cu__trim_copy(d->slot_description, sizeof d->slot_description, si.slotDescription,
                      sizeof si.slotDescription);
        d->present = (si.flags & CKF_TOKEN_PRESENT) != 0;
    }
    if (d->present && CU__P11(f, C_GetTokenInfo, id, &ti) == CKR_OK) {
        cu__trim_copy(d->label, sizeof d->label, ti.label, sizeof ti.label);
        cu__trim_copy(d->manufacturer, sizeof d->manufacturer, ti.manufacturerID, sizeof ti.manufacturerID);
        cu__trim_copy(d->model, sizeof d->model, ti.model, sizeof ti.model);
        cu__trim_copy(d->serial, sizeof d->serial, ti.serialNumber, sizeof ti.serialNumber);
        d->flags = ti.flags;
        d->initialized = (ti.flags & CKF_TOKEN_INITIALIZED) != 0;
    }
}

cu_rc cu_module_slots(cu_module *m, cu_token_desc **_slots, size_t *_n)
{
    CK_SLOT_ID *ids = NULL;
    cu_token_desc *slots = NULL;
    CK_ULONG n = 0;
    cu_rc rc = CU_OK;

    if (m == NULL || _slots == NULL || _n == NULL)
        return cu_err_set(CU_E_INVALID_ARG, "cu_module_slots: missing argument");
    if ((rc = cu__module_ready(m)) != CU_OK)
        return rc;
    CK_RV rv = CU__P11(m->f, C_GetSlotList, CK_FALSE, NULL, &n);
    if (rv == CKR_OK && n > 0) {
        ids = calloc(n, sizeof *ids);
        if (ids == NULL) {
            rc = cu_err_set(CU_E_NOMEM, "out of memory listing slots");
            goto out;
        }
        rv = CU__P11(m->f, C_GetSlotList, CK_FALSE, ids, &n);
    }
    if (rv != CKR_OK) {
        rc = cu_err_set_ckr(CU_E_MODULE, rv, "%s: cannot list slots", m->path);
        goto out;
    }
    slots = calloc(n ? n : 1, sizeof *slots);
    if (slots == NULL) {
        rc = cu_err_set(CU_E_NOMEM, "out of memory listing slots");
        goto out;
    }
    for (CK_ULONG i = 0; i < n; i++)
        fill_desc(m->f, ids[i], &slots[i]);
    *_slots = slots;
    *_n = n;
    slots = NULL;
out:
    free(ids);
    free(slots);
    return rc;
}

void cu__token_desc_read(cu_module *m, CK_SLOT_ID id, cu_token_desc *d)
{
    fill_desc(m->f, id, d);
}

cu_rc cu_module_init_token(cu_module *m, unsigned long slot_id, const char *label,
                           const char *so_pin, const char *user_pin)
{
    CK_UTF8CHAR lbl[32];
    CK_SESSION_HANDLE s = CK_INVALID_HANDLE;
    cu_rc rc = CU_OK;
    CK_RV rv;

    if (m == NULL || label == NULL || so_pin == NULL || user_pin == NULL)
        return cu_err_set(CU_E_INVALID_ARG, "init token: label, SO PIN and user PIN are required");
    if (strlen(label) > sizeof lbl)
        return cu_err_set(CU_E_INVALID_ARG, "token label '%s' is longer than 32 bytes", label);
    if ((rc = cu__module_ready(m)) != CU_OK)
        return rc;
    memset(lbl, ' ', sizeof lbl);
    memcpy(lbl, label, strlen(label));

    rv = CU__P11(m->f, C_InitToken, slot_id, (CK_UTF8CHAR_PTR)so_pin, strlen(so_pin), lbl);
    if (rv != CKR_OK)
        return cu_err_set_ckr(cu_rc_from_ckr(rv) == CU_E_PIN_INCORRECT ? CU_E_PIN_INCORRECT : CU_E_TOKEN,
                              rv, "cannot initialize the token in slot %lu of %s", slot_id, m->path);

    /* SoftHSM2 moves a freshly initialized token to a new slot id: find it
     * again by label. Prefer the one without a user PIN yet (older tokens may
     * carry the same label); tpm2-pkcs11 reports CKF_USER_PIN_INITIALIZED at
     * once, so a single token with the label is taken as well. */
    cu_token_desc *slots = NULL;
    size_t n = 0, fresh = 0, named = 0;
    if ((rc = cu_module_slots(m, &slots, &n)) != CU_OK)
        return rc;
    CK_SLOT_ID target = slot_id, any = slot_id;
    for (size_t i = 0; i < n; i++) {
        if (!slots[i].initialized || strcmp(slots[i].label, label) != 0)
            continue;
        named++;
        any = slots[i].slot_id;
        if (!(slots[i].flags & CKF_USER_PIN_INITIALIZED)) {
            fresh++;
            target = slots[i].slot_id;
        }
    }
    free(slots);
    if (fresh != 1 && named == 1) {
        fresh = 1;
        target = any;
    }
    if (fresh != 1)
        return cu_err_set(fresh ? CU_E_AMBIGUOUS : CU_E_TOKEN_NOT_FOUND,
                          "token '%s': %zu candidate tokens after C_InitToken in %s", label, fresh, m->path);

    rv = cu__open_session(m, target, &s);
    if (rv != CKR_OK)
        return cu_err_set_ckr(CU_E_TOKEN, rv, "token '%s': cannot open a session", label);
    rv = CU__P11(m->f, C_Login, s, CKU_SO, (CK_UTF8CHAR_PTR)so_pin, strlen(so_pin));
    if (rv != CKR_OK) {
        rc = cu_err_set_ckr(cu_rc_from_ckr(rv), rv, "token '%s': SO login failed", label);
        goto out;
    }
    rv = CU__P11(m->f, C_InitPIN, s, (CK_UTF8CHAR_PTR)user_pin, strlen(user_pin));
    if (rv != CKR_OK)
        rc = cu_err_set_ckr(cu_rc_from_ckr(rv), rv, "token '%s': cannot set the user PIN", label);
    CU__P11(m->f, C_Logout, s);
out:
    cu__close_session(m, s);
    return rc;
}

cu_rc cu_module_mechanisms(cu_module *m, unsigned long slot_id, cu_mech_desc **_mechs, size_t *_n)
{
    CK_MECHANISM_TYPE *types = NULL;
    cu_mech_desc *out = NULL;
    CK_ULONG n = 0;
    cu_rc rc = CU_OK;

    if (m == NULL || _mechs == NULL || _n == NULL)
        return cu_err_set(CU_E_INVALID_ARG, "cu_module_mechanisms: missing argument");
    if ((rc = cu__module_ready(m)) != CU_OK)
        return rc;
    CK_RV rv = CU__P11(m->f, C_GetMechanismList, slot_id, NULL, &n);
    if (rv == CKR_OK && n > 0) {
        if ((types = calloc(n, sizeof *types)) == NULL) {
            rc = cu_err_set(CU_E_NOMEM, "out of memory");
            goto out;
        }
        rv = CU__P11(m->f, C_GetMechanismList, slot_id, types, &n);
    }
    if (rv != CKR_OK) {
        rc = cu_err_set_ckr(CU_E_TOKEN, rv, "slot %lu of %s: cannot list mechanisms", slot_id, m->path);
        goto out;
    }
    if ((out = calloc(n ? n : 1, sizeof *out)) == NULL) {
        rc = cu_err_set(CU_E_NOMEM, "out of memory");
        goto out;
    }
    for (CK_ULONG i = 0; i < n; i++) {
        CK_MECHANISM_INFO mi;
        out[i].type = types[i];
        out[i].name = cu__mech_name(types[i]);
        if (CU__P11(m->f, C_GetMechanismInfo, slot_id, types[i], &mi) == CKR_OK) {
            out[i].min_key = mi.ulMinKeySize;
            out[i].max_key = mi.ulMaxKeySize;
            out[i].flags = mi.flags;
        }
    }
    *_mechs = out;
    *_n = n;
    out = NULL;
out:
    free(types);
    free(out);
    return rc;
}

void cu_p11_shutdown(void)
{
    pthread_mutex_lock(&cu__registry_lock);
    cu_module *m = registry;
    registry = NULL;
    pthread_mutex_unlock(&cu__registry_lock);
    cu_module *keep = NULL;
    while (m != NULL) {
        cu_module *next = m->next;
        if (!(m->quirks & CU_QUIRK_NO_FINALIZE) && !m->finalized)
            finalize(m->f);
        m->finalized = true;
        for (struct cu_login *l = m->logins, *ln; l != NULL; l = ln) {
            ln = l->next;
            free(l);
        }
        m->logins = NULL;
        if (atomic_load(&m->refs) == 0) {
            module_free(m);
        } else {
            /* Still referenced by open tokens: they now fail cleanly. */
            m->next = keep;
            keep = m;
        }
        m = next;
    }
    pthread_mutex_lock(&cu__registry_lock);
    while (keep != NULL) {
        cu_module *next = keep->next;
        keep->next = zombies;
        zombies = keep;
        keep = next;
    }
    pthread_mutex_unlock(&cu__registry_lock);
}

CK_RV cu__open_session(cu_module *m, CK_SLOT_ID slot, CK_SESSION_HANDLE *_s)
{
    pthread_mutex_lock(&m->session_lock);
    CK_RV rv = CU__P11(m->f, C_OpenSession, slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, _s);
    pthread_mutex_unlock(&m->session_lock);
    return rv;
}

CK_RV cu__close_session(cu_module *m, CK_SESSION_HANDLE s)
{
    pthread_mutex_lock(&m->session_lock);
    CK_RV rv = CU__P11(m->f, C_CloseSession, s);
    pthread_mutex_unlock(&m->session_lock);
    return rv;
}
