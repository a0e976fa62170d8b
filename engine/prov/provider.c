/* The provider's entry point: configuration, algorithm tables, reason strings,
 * error translation, logging and the cache of open tokens. */
#include "provider.h"

#include "implementations.h"

#include <ctype.h>
#include <errno.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/params.h>
#include <openssl/provider.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#ifndef CUSTOS_VERSION
#define CUSTOS_VERSION "0.1.0"
#endif

struct cu_prov_token_entry {
    char *key;      /* the URI's token and module part (objects: the URI) */
    cu_token *tok;
    cu_object *obj;
    cu_prov_token_entry *next;
};

/* ---- Errors ---- */

static const OSSL_ITEM reason_strings[] = {
    { CU_E_INVALID_ARG, "invalid argument" },
    { CU_E_NOMEM, "out of memory" },
    { CU_E_URI, "malformed pkcs11 URI" },
    { CU_E_MODULE, "PKCS#11 module error" },
    { CU_E_TOKEN_NOT_FOUND, "no token matches the URI" },
    { CU_E_OBJECT_NOT_FOUND, "no object matches the URI" },
    { CU_E_AMBIGUOUS, "the URI matches several objects" },
    { CU_E_PIN_MISSING, "PIN required" },
    { CU_E_PIN_INCORRECT, "PIN incorrect" },
    { CU_E_PIN_LOCKED, "PIN locked" },
    { CU_E_MECHANISM, "mechanism not supported" },
    { CU_E_KEY_TYPE, "wrong key type" },
    { CU_E_BUFFER_TOO_SMALL, "buffer too small" },
    { CU_E_VERIFY, "verification failed" },
    { CU_E_TOKEN, "token error" },
    { CU_E_IO, "I/O error" },
    { CU_E_CRYPTO, "crypto error" },
    { CU_E_UNSUPPORTED, "operation not supported by the token" },
    { CU_E_STATE, "object in wrong state" },
    { CU_PROV_R_NO_PRIVATE_KEY, "key has no private half in a token" },
    { CU_PROV_R_BAD_PARAM, "bad parameter" },
    { CU_PROV_R_CONFIG, "bad provider configuration" },
    { CU_PROV_R_NOT_A_PKCS11_URI, "not a pkcs11 URI" },
    { CU_PROV_R_NO_KEY_URI, "no key URI given" },
    { CU_PROV_R_RAW_KEY, "raw keys are not accepted, give a pkcs11 URI" },
    { CU_PROV_R_OPERATION, "operation not initialized" },
    { CU_PROV_R_SOFTWARE, "OpenSSL software operation failed" },
    { 0, NULL },
};

static void vraise(const cu_prov_ctx *pc, const char *file, int line, const char *func, int reason,
                   const char *fmt, va_list ap)
{
    if (pc != NULL && pc->up_new_error != NULL && pc->up_vset_error != NULL) {
        pc->up_new_error(pc->handle);
        if (pc->up_set_error_debug != NULL)
            pc->up_set_error_debug(pc->handle, file, line, func);
        pc->up_vset_error(pc->handle, reason, fmt, ap);
        return;
    }
    char buf[600];
    vsnprintf(buf, sizeof buf, fmt, ap);
    ERR_new();
    ERR_set_debug(file, line, func);
    ERR_set_error(ERR_LIB_PROV, reason, "%s", buf);
}

void cu_prov_raise(const cu_prov_ctx *pc, const char *file, int line, const char *func, int reason,
                   const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vraise(pc, file, line, func, reason, fmt, ap);
    va_end(ap);
    if (pc != NULL && pc->log_level >= CU_PROV_LOG_DEBUG) {
        va_start(ap, fmt);
        fprintf(stderr, "custos: error %d at %s:%d: ", reason, func, line);
        vfprintf(stderr, fmt, ap);
        fputc('\n', stderr);
        va_end(ap);
    }
}

int cu_prov_raise_rc(const cu_prov_ctx *pc, const char *file, int line, const char *func, cu_rc rc,
                     const char *what)
{
    const cu_err *e = cu_err_last();
    const char *msg = (e->rc == rc && e->msg[0] != '\0') ? e->msg : cu_rc_str(rc);
    int reason = (rc > CU_OK && rc < CU_E__COUNT) ? (int)rc : CU_E_TOKEN;
    cu_prov_raise(pc, file, line, func, reason, "%s: %s", what, msg);
    return 0;
}

void cu_prov_log_msg(const cu_prov_ctx *pc, cu_prov_log level, const char *fmt, ...)
{
    static const char *const names[] = { "error", "warning", "info", "debug" };
    if (pc == NULL || level > pc->log_level)
        return;
    va_list ap;
    va_start(ap, fmt);
    flockfile(stderr);
    fprintf(stderr, "custos: %s: ", names[level]);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    funlockfile(stderr);
    va_end(ap);
}

/* ---- Digests ---- */

static const char *const hash_names[CU_PROV_N_HASH] = {
    [CU_HASH_SHA1] = "SHA1",     [CU_HASH_SHA224] = "SHA2-224", [CU_HASH_SHA256] = "SHA2-256",
    [CU_HASH_SHA384] = "SHA2-384", [CU_HASH_SHA512] = "SHA2-512",
};

const EVP_MD *cu_prov_md(const cu_prov_ctx *pc, cu_hash h)
{
    return (h > CU_HASH_NONE && h < CU_PROV_N_HASH) ? pc->md[h] : NULL;
}

const char *cu_prov_hash_name(cu_hash h)
{
    return (h > CU_HASH_NONE && h < CU_PROV_N_HASH) ? hash_names[h] : NULL;
}

cu_hash cu_prov_hash_from_name(const cu_prov_ctx *pc, const char *name)
{
    /* The usual spellings first: EVP_MD_is_a takes a lock per call, and this
     * runs for every digest-sign (TLS names the digest each time). */
    static const struct {
        const char *name;
        cu_hash h;
    } fast[] = {
        { "SHA256", CU_HASH_SHA256 }, { "SHA2-256", CU_HASH_SHA256 }, { "SHA-256", CU_HASH_SHA256 },
        { "SHA384", CU_HASH_SHA384 }, { "SHA2-384", CU_HASH_SHA384 }, { "SHA-384", CU_HASH_SHA384 },
        { "SHA512", CU_HASH_SHA512 }, { "SHA2-512", CU_HASH_SHA512 }, { "SHA-512", CU_HASH_SHA512 },
        { "SHA224", CU_HASH_SHA224 }, { "SHA2-224", CU_HASH_SHA224 }, { "SHA-224", CU_HASH_SHA224 },
        { "SHA1", CU_HASH_SHA1 },     { "SHA-1", CU_HASH_SHA1 },
    };
    if (name == NULL)
        return CU_HASH_NONE;
    for (size_t i = 0; i < sizeof fast / sizeof fast[0]; i++)
        if (OPENSSL_strcasecmp(name, fast[i].name) == 0)
            return fast[i].h;
    for (int h = CU_HASH_SHA1; h < CU_PROV_N_HASH; h++)
        if (pc->md[h] != NULL && EVP_MD_is_a(pc->md[h], name))
            return (cu_hash)h;
    return CU_HASH_NONE;
}

/* ---- URIs and the token cache ---- */

bool cu_prov_is_pkcs11_uri(const char *uri)
{
    return uri != NULL && strncasecmp(uri, "pkcs11:", 7) == 0;
}

static int hexval(int c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

static int find_attr(const char *p, const char *end, char sep, const char *attr, char **_val, size_t *_len)
{
    size_t an = strlen(attr);
    while (p < end) {
        const char *next = memchr(p, sep, (size_t)(end - p));
        const char *stop = next != NULL ? next : end;
        if ((size_t)(stop - p) > an && strncmp(p, attr, an) == 0 && p[an] == '=') {
            const char *v = p + an + 1;
            char *out = OPENSSL_malloc((size_t)(stop - v) + 1);
            size_t o = 0;
            if (out == NULL)
                return 0;
            while (v < stop) {
                if (*v == '%') {
                    if (stop - v < 3 || hexval(v[1]) < 0 || hexval(v[2]) < 0) {
                        OPENSSL_free(out);
                        return 0;
                    }
                    out[o++] = (char)(hexval(v[1]) << 4 | hexval(v[2]));
                    v += 3;
                } else {
                    out[o++] = *v++;
                }
            }
            out[o] = '\0';
            *_val = out;
            *_len = o;
            return 1;
        }
        p = stop + (next != NULL);
    }
    return 0;
}

int cu_prov_uri_attr(const char *uri, const char *attr, char **_val, size_t *_len)
{
    if (!cu_prov_is_pkcs11_uri(uri))
        return 0;
    const char *p = uri + 7, *q = strchr(p, '?');
    return find_attr(p, q != NULL ? q : p + strlen(p), ';', attr, _val, _len);
}

int cu_prov_uri_query(const char *uri, const char *attr, char **_val, size_t *_len)
{
    const char *q = cu_prov_is_pkcs11_uri(uri) ? strchr(uri, '?') : NULL;
    return q != NULL && find_attr(q + 1, q + strlen(q), '&', attr, _val, _len);
}

/* Quirks of a module when openssl.cnf names none (docs/provider.md):
 * SoftHSM2 must not be finalized at exit; tpm2-pkcs11 must be (it flushes
 * its TPM sessions then), a session copy of a key takes one of the TPM's
 * three object slots, and a fork()ed child must not use the parent's TPM
 * connection; other modules get none. */
static const char *default_quirks(const char *module)
{
    if (module != NULL && strstr(module, "softhsm") != NULL)
        return "no-finalize,init-retry";
    if (module != NULL && strstr(module, "tpm2_pkcs11") != NULL)
        return "no-session-copy,fork-unsafe";
    return NULL;
}

int cu_prov_uri_split_pin(const char *uri, char **_clean, char **_pin)
{
    size_t n = strlen(uri), o = 0, len = 0;
    char *clean = OPENSSL_malloc(n + 1);
    *_pin = NULL;
    if (clean == NULL)
        return 0;
    const char *q = strchr(uri, '?');
    if (q == NULL) {
        memcpy(clean, uri, n + 1);
        *_clean = clean;
        return 1;
    }
    (void)cu_prov_uri_query(uri, "pin-value", _pin, &len);
    memcpy(clean, uri, (size_t)(q - uri));
    o = (size_t)(q - uri);
    char sep = '?';
    for (const char *p = q + 1; *p != '\0';) {
        const char *amp = strchr(p, '&');
        size_t l = amp != NULL ? (size_t)(amp - p) : strlen(p);
        if (!(l >= 10 && strncmp(p, "pin-value=", 10) == 0) && l > 0) {
            clean[o++] = sep;
            memcpy(clean + o, p, l);
            o += l;
            sep = '&';
        }
        p += l + (amp != NULL);
    }
    clean[o] = '\0';
    *_clean = clean;
    return 1;
}

/* True if the query of the URI has the attribute (e.g. "pin-value"). */
static bool uri_has_query(const char *uri, const char *attr)
{
    const char *q = strchr(uri, '?');
    size_t n = strlen(attr);
    while (q != NULL) {
        q++;
        if (strncmp(q, attr, n) == 0 && q[n] == '=')
            return true;
        q = strchr(q, '&');
    }
    return false;
}

/* The part of a URI that names the token: path attributes but object, id and
 * type; query attributes module-path and module-name. */
static char *token_key(const char *uri)
{
    size_t cap = strlen(uri) + 2;
    char *out = OPENSSL_zalloc(cap);
    if (out == NULL)
        return NULL;
    const char *p = uri + 7;
    const char *qm = strchr(p, '?');
    const char *end = qm != NULL ? qm : p + strlen(p);
    size_t o = 0;
    while (p < end) {
        const char *semi = memchr(p, ';', (size_t)(end - p));
        const char *stop = semi != NULL ? semi : end;
        size_t n = (size_t)(stop - p);
        if (!(n >= 7 && strncmp(p, "object=", 7) == 0) && !(n >= 3 && strncmp(p, "id=", 3) == 0)
            && !(n >= 5 && strncmp(p, "type=", 5) == 0) && n > 0) {
            memcpy(out + o, p, n);
            o += n;
            out[o++] = ';';
        }
        p = stop + (semi != NULL);
    }
    if (qm != NULL) {
        p = qm + 1;
        out[o++] = '?';
        while (*p != '\0') {
            const char *amp = strchr(p, '&');
            size_t n = amp != NULL ? (size_t)(amp - p) : strlen(p);
            /* The PIN's source is part of the key: a token opened with one
             * PIN is not handed out for a URI that carries another (the
             * token layer checks a second login's PIN). */
            if ((n >= 12 && strncmp(p, "module-path=", 12) == 0)
                || (n >= 12 && strncmp(p, "module-name=", 12) == 0)
                || (n >= 11 && strncmp(p, "pin-source=", 11) == 0)
                || (n >= 10 && strncmp(p, "pin-value=", 10) == 0)) {
                memcpy(out + o, p, n);
                o += n;
                out[o++] = '&';
            }
            p += n + (amp != NULL);
        }
    }
    out[o] = '\0';
    return out;
}

/* Reads a PIN from a pin-source ("file:" prefix allowed) into buf. */
static cu_rc read_pin_source(const char *src, char *buf, size_t cap)
{
    if (strncmp(src, "file://", 7) == 0)
        src += 7;
    else if (strncmp(src, "file:", 5) == 0)
        src += 5;
    FILE *f = fopen(src, "r");
    if (f == NULL)
        return cu_err_set_sys(CU_E_IO, errno, "cannot read the configured pin-source %s", src);
    size_t n = fread(buf, 1, cap - 1, f);
    fclose(f);
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
        n--;
    buf[n] = '\0';
    return CU_OK;
}

cu_rc cu_prov_token(cu_prov_ctx *pc, const char *uri, const char *pin, cu_token **_tok)
{
    cu_rc rc = CU_OK;
    char pinbuf[256];
    char *key = NULL;
    cu_token *tok = NULL;
    cu_prov_token_entry *e;
    char *uri_module = NULL;
    bool locked = false;

    if (!cu_prov_is_pkcs11_uri(uri))
        return cu_err_set(CU_E_URI, "not a pkcs11: URI");
    if ((key = token_key(uri)) == NULL)
        return cu_err_set(CU_E_NOMEM, "out of memory");
    if (pin != NULL) {
        /* A token opened with one PIN is not handed out for another. */
        unsigned char d[32];
        unsigned int dl = 0;
        char *k2 = OPENSSL_zalloc(strlen(key) + 2 * sizeof d + 8);
        if (k2 == NULL || !EVP_Digest(pin, strlen(pin), d, &dl, pc->md[CU_HASH_SHA256], NULL)) {
            OPENSSL_free(k2);
            OPENSSL_clear_free(key, strlen(key));
            return cu_err_set(CU_E_NOMEM, "out of memory");
        }
        size_t o = (size_t)sprintf(k2, "%s#pin=", key);
        for (unsigned int i = 0; i < dl; i++)
            o += (size_t)sprintf(k2 + o, "%02x", d[i]);
        OPENSSL_clear_free(key, strlen(key));
        key = k2;
    }

    pthread_mutex_lock(&pc->lock);
    locked = true;
    for (e = pc->tokens; e != NULL; e = e->next) {
        if (strcmp(e->key, key) == 0) {
            tok = cu_token_ref(e->tok);
            if (pin != NULL && !cu_token_logged_in(tok) && (rc = cu_token_login(tok, pin)) != CU_OK)
                goto out;
            goto out;
        }
    }

    cu_token_opts opts = { 0 };
    size_t ml = 0;
    (void)cu_prov_uri_query(uri, "module-path", &uri_module, &ml);
    opts.pin = pin;
    pinbuf[0] = '\0';
    if (pin == NULL && pc->pin_source != NULL && !uri_has_query(uri, "pin-value")
        && !uri_has_query(uri, "pin-source")) {
        if ((rc = read_pin_source(pc->pin_source, pinbuf, sizeof pinbuf)) != CU_OK)
            goto out;
        opts.pin = pinbuf;
    }
    bool named = uri_has_query(uri, "module-path") || uri_has_query(uri, "module-name");
    if (named || pc->n_modules == 0) {
        opts.quirks = pc->quirks != NULL ? pc->quirks : default_quirks(uri_module);
        rc = cu_token_open(uri, &opts, &tok);
    } else {
        for (size_t i = 0; i < pc->n_modules; i++) {
            opts.module = pc->modules[i];
            opts.quirks = pc->quirks != NULL ? pc->quirks : default_quirks(opts.module);
            rc = cu_token_open(uri, &opts, &tok);
            if (rc != CU_E_TOKEN_NOT_FOUND)
                break;
        }
    }
    if (rc != CU_OK)
        goto out;
    cu_prov_log_msg(pc, CU_PROV_LOG_DEBUG, "opened token \"%s\"", cu_token_get0_desc(tok)->label);
    if ((e = OPENSSL_zalloc(sizeof *e)) != NULL) {
        e->key = key;
        key = NULL;
        e->tok = cu_token_ref(tok);
        e->next = pc->tokens;
        pc->tokens = e;
    }
out:
    if (locked)
        pthread_mutex_unlock(&pc->lock);
    OPENSSL_free(uri_module);
    OPENSSL_cleanse(pinbuf, sizeof pinbuf);
    if (key != NULL)
        OPENSSL_clear_free(key, strlen(key));
    if (rc != CU_OK) {
        cu_token_unref(tok);
        return rc;
    }
    *_tok = tok;
    return CU_OK;
}

cu_rc cu_prov_cached_object(cu_prov_ctx *pc, const char *uri, const char *pin, cu_class cls, cu_object **_obj)
{
    cu_prov_token_entry *e;
    cu_token *tok = NULL;
    cu_object *obj = NULL;
    cu_rc rc;

    pthread_mutex_lock(&pc->lock);
    for (e = pc->objects; e != NULL; e = e->next) {
        if (strcmp(e->key, uri) == 0 && cu_object_class(e->obj) == cls) {
            *_obj = e->obj;
            pthread_mutex_unlock(&pc->lock);
            return CU_OK;
        }
    }
    pthread_mutex_unlock(&pc->lock);

    if ((rc = cu_prov_token(pc, uri, pin, &tok)) != CU_OK)
        return rc;
    rc = cu_token_find(tok, uri, cls, &obj);
    cu_token_unref(tok);
    if (rc != CU_OK)
        return rc;
    if ((e = OPENSSL_zalloc(sizeof *e)) == NULL || (e->key = OPENSSL_strdup(uri)) == NULL) {
        OPENSSL_free(e);
        cu_object_free(obj);
        return cu_err_set(CU_E_NOMEM, "out of memory");
    }
    e->obj = obj;
    pthread_mutex_lock(&pc->lock);
    e->next = pc->objects;
    pc->objects = e;
    pthread_mutex_unlock(&pc->lock);
    *_obj = obj;
    return CU_OK;
}

/* ---- Configuration ---- */

static int split_modules(cu_prov_ctx *pc, const char *list)
{
    char *copy = OPENSSL_strdup(list), *save = NULL;
    if (copy == NULL)
        return 0;
    for (char *tok = strtok_r(copy, ",", &save); tok != NULL; tok = strtok_r(NULL, ",", &save)) {
        while (isspace((unsigned char)*tok))
            tok++;
        size_t n = strlen(tok);
        while (n > 0 && isspace((unsigned char)tok[n - 1]))
            tok[--n] = '\0';
        if (n == 0)
            continue;
        char **m = OPENSSL_realloc(pc->modules, (pc->n_modules + 1) * sizeof *m);
        if (m == NULL)
            break;
        pc->modules = m;
        if ((m[pc->n_modules] = OPENSSL_strdup(tok)) != NULL)
            pc->n_modules++;
    }
    OPENSSL_free(copy);
    return 1;
}

static int parse_log_level(const char *s, cu_prov_log *_lvl)
{
    static const char *const names[] = { "error", "warn", "info", "debug" };
    for (int i = 0; i < 4; i++) {
        if (strcasecmp(s, names[i]) == 0 || (s[0] == '0' + i && s[1] == '\0')) {
            *_lvl = (cu_prov_log)i;
            return 1;
        }
    }
    if (strcasecmp(s, "warning") == 0) {
        *_lvl = CU_PROV_LOG_WARN;
        return 1;
    }
    return 0;
}

static const char *conf_or_env(const char *conf, const char *env)
{
    if (conf != NULL && conf[0] != '\0')
        return conf;
    const char *v = getenv(env);
    return (v != NULL && v[0] != '\0') ? v : NULL;
}

static int configure(cu_prov_ctx *pc, OSSL_FUNC_core_get_params_fn *get_params)
{
    const char *modules = NULL, *pin_source = NULL, *quirks = NULL, *log_level = NULL;
    OSSL_PARAM p[] = {
        OSSL_PARAM_utf8_ptr("pkcs11-module-path", (char **)&modules, 0),
        OSSL_PARAM_utf8_ptr("pkcs11-pin-source", (char **)&pin_source, 0),
        OSSL_PARAM_utf8_ptr("pkcs11-module-quirks", (char **)&quirks, 0),
        OSSL_PARAM_utf8_ptr("log-level", (char **)&log_level, 0),
        OSSL_PARAM_END,
    };
    if (get_params != NULL && !get_params(pc->handle, p))
        return 0;
    modules = conf_or_env(modules, "CUSTOS_PKCS11_MODULE");
    pin_source = conf_or_env(pin_source, "CUSTOS_PKCS11_PIN_SOURCE");
    quirks = conf_or_env(quirks, "CUSTOS_PKCS11_QUIRKS");
    log_level = conf_or_env(log_level, "CUSTOS_PROVIDER_LOG");

    /* A provider whose init fails is only missing later: say why on stderr
     * too, as applications rarely print the errors of config loading. */
    pc->log_level = CU_PROV_LOG_ERROR;
    if (log_level != NULL && !parse_log_level(log_level, &pc->log_level)) {
        CU_PROV_RAISE(pc, CU_PROV_R_CONFIG, "log-level \"%s\": use error, warn, info or debug", log_level);
        cu_prov_log_msg(pc, CU_PROV_LOG_ERROR, "log-level \"%s\": use error, warn, info or debug", log_level);
        return 0;
    }
    /* Unset: per module (default_quirks); "none": no quirk for any module. */
    if (quirks != NULL && strcmp(quirks, "none") == 0)
        quirks = "";
    if (quirks != NULL) {
        unsigned q;
        if (cu_quirks_parse(quirks, &q) != CU_OK) {
            CU_PROV_RAISE(pc, CU_PROV_R_CONFIG, "pkcs11-module-quirks \"%s\": %s", quirks, cu_err_last()->msg);
            cu_prov_log_msg(pc, CU_PROV_LOG_ERROR, "pkcs11-module-quirks \"%s\": %s", quirks, cu_err_last()->msg);
            return 0;
        }
        if ((pc->quirks = OPENSSL_strdup(quirks)) == NULL)
            return 0;
    }
    if (modules != NULL && !split_modules(pc, modules))
        return 0;
    if (pin_source != NULL && (pc->pin_source = OPENSSL_strdup(pin_source)) == NULL)
        return 0;
    cu_prov_log_msg(pc, CU_PROV_LOG_INFO, "%zu default module(s), quirks \"%s\"", pc->n_modules,
                    pc->quirks != NULL ? pc->quirks : "");
    return 1;
}

/* ---- Provider functions ---- */

static OSSL_FUNC_provider_teardown_fn prov_teardown;
static OSSL_FUNC_provider_gettable_params_fn prov_gettable_params;
static OSSL_FUNC_provider_get_params_fn prov_get_params;
static OSSL_FUNC_provider_query_operation_fn prov_query_operation;
static OSSL_FUNC_provider_get_reason_strings_fn prov_get_reason_strings;
static OSSL_FUNC_provider_get_capabilities_fn prov_get_capabilities;

/* Provider instances in this process (one per library context that loaded
 * custos.so); they share the token layer linked into it. */
static int instances;
static pthread_once_t exit_once = PTHREAD_ONCE_INIT;
/* Every live provider context, so that the exit handler can release their
 * caches (the teardown inside OPENSSL_cleanup comes later). */
static pthread_mutex_t live_lock = PTHREAD_RECURSIVE_MUTEX_INITIALIZER_NP;
static cu_prov_ctx *live;
static pthread_once_t fork_once = PTHREAD_ONCE_INIT;

/* fork(): the caches' locks are held around token opens, so they are taken
 * before the token layer's (cu_p11_atfork) and, like those, are recursive
 * (a module that forks inside an open) and made anew in the child. */
static void recursive_lock_init(pthread_mutex_t *mu)
{
    pthread_mutexattr_t rec;
    pthread_mutexattr_init(&rec);
    pthread_mutexattr_settype(&rec, PTHREAD_MUTEX_RECURSIVE);
    pthread_mutex_init(mu, &rec);
    pthread_mutexattr_destroy(&rec);
}

static void fork_prepare(void)
{
    pthread_mutex_lock(&live_lock);
    for (cu_prov_ctx *pc = live; pc != NULL; pc = pc->next_live)
        pthread_mutex_lock(&pc->lock);
}

static void fork_parent(void)
{
    for (cu_prov_ctx *pc = live; pc != NULL; pc = pc->next_live)
        pthread_mutex_unlock(&pc->lock);
    pthread_mutex_unlock(&live_lock);
}

static void fork_child(void)
{
    for (cu_prov_ctx *pc = live; pc != NULL; pc = pc->next_live)
        recursive_lock_init(&pc->lock);
    recursive_lock_init(&live_lock);
}

static void register_fork(void)
{
    /* Cannot fail: the token layer linked into custos.so has no other user. */
    (void)cu_p11_atfork(fork_prepare, fork_parent, fork_child);
}

static void release_caches(cu_prov_ctx *pc)
{
    pthread_mutex_lock(&pc->lock);
    cu_prov_token_entry *objects = pc->objects, *tokens = pc->tokens;
    pc->objects = pc->tokens = NULL;
    pthread_mutex_unlock(&pc->lock);
    for (cu_prov_token_entry *e = objects, *next; e != NULL; e = next) {
        next = e->next;
        cu_object_free(e->obj);
        OPENSSL_free(e->key);
        OPENSSL_free(e);
    }
    for (cu_prov_token_entry *e = tokens, *next; e != NULL; e = next) {
        next = e->next;
        cu_token_unref(e->tok);
        OPENSSL_clear_free(e->key, strlen(e->key));
        OPENSSL_free(e);
    }
}

/* Runs at exit() before OpenSSL's own exit-time clean-up (registered later,
 * so called earlier): modules are finalized while OpenSSL is still intact,
 * those with the no-finalize quirk are left alone, and every token is marked
 * so that the teardown inside OPENSSL_cleanup makes no PKCS#11 call at all
 * (SoftHSM2 crashes in C_CloseSession then: its C++ statics, registered when
 * it was loaded, are destroyed before this handler runs). */
static void at_exit(void)
{
    /* Shut down first: a module loaded after this handler was registered
     * (SoftHSM2's C++ statics) may already be destroyed, so no token may be
     * released (C_CloseSession) before the layer marks them finalized.
     * Modules still referenced by a cached token are kept by the token
     * layer (see the report on zombies in docs/provider.md). */
    cu_p11_shutdown();
    pthread_mutex_lock(&live_lock);
    for (cu_prov_ctx *pc = live; pc != NULL; pc = pc->next_live)
        release_caches(pc);
    pthread_mutex_unlock(&live_lock);
}

static void register_at_exit(void)
{
    atexit(at_exit);
}

static void prov_teardown(void *provctx)
{
    cu_prov_ctx *pc = provctx;
    if (pc == NULL)
        return;
    /* Tokens are released; when the last instance goes, the token layer
     * finalizes its modules except those with the no-finalize quirk
     * (SoftHSM2 crashes if C_Finalize runs inside OpenSSL's exit-time
     * clean-up, which is where this teardown usually runs). */
    if (pc->counted) {
        pthread_mutex_lock(&live_lock);
        for (cu_prov_ctx **pp = &live; *pp != NULL; pp = &(*pp)->next_live) {
            if (*pp == pc) {
                *pp = pc->next_live;
                break;
            }
        }
        pthread_mutex_unlock(&live_lock);
    }
    release_caches(pc);
    for (int h = 0; h < CU_PROV_N_HASH; h++)
        EVP_MD_free(pc->md[h]);
    EVP_KEYMGMT_free(pc->sw_ec);
    EVP_KEYMGMT_free(pc->sw_rsa);
    if (pc->sw_default != NULL)
        OSSL_PROVIDER_unload(pc->sw_default);
    OSSL_LIB_CTX_free(pc->sw);
    for (size_t i = 0; i < pc->n_modules; i++)
        OPENSSL_free(pc->modules[i]);
    OPENSSL_free(pc->modules);
    OPENSSL_free(pc->pin_source);
    OPENSSL_free(pc->quirks);
    pthread_mutex_destroy(&pc->lock);
    bool counted = pc->counted;
    OPENSSL_free(pc);
    if (counted && __atomic_sub_fetch(&instances, 1, __ATOMIC_ACQ_REL) == 0)
        cu_p11_shutdown();
}

static const OSSL_PARAM *prov_gettable_params(void *provctx)
{
    (void)provctx;
    static const OSSL_PARAM params[] = {
        OSSL_PARAM_DEFN(OSSL_PROV_PARAM_NAME, OSSL_PARAM_UTF8_PTR, NULL, 0),
        OSSL_PARAM_DEFN(OSSL_PROV_PARAM_VERSION, OSSL_PARAM_UTF8_PTR, NULL, 0),
        OSSL_PARAM_DEFN(OSSL_PROV_PARAM_BUILDINFO, OSSL_PARAM_UTF8_PTR, NULL, 0),
        OSSL_PARAM_DEFN(OSSL_PROV_PARAM_STATUS, OSSL_PARAM_INTEGER, NULL, 0),
        OSSL_PARAM_END,
    };
    return params;
}

static int prov_get_params(void *provctx, OSSL_PARAM params[])
{
    (void)provctx;
    OSSL_PARAM *p;
    if ((p = OSSL_PARAM_locate(params, OSSL_PROV_PARAM_NAME)) != NULL
        && !OSSL_PARAM_set_utf8_ptr(p, "Custos PKCS#11 provider"))
        return 0;
    if ((p = OSSL_PARAM_locate(params, OSSL_PROV_PARAM_VERSION)) != NULL
        && !OSSL_PARAM_set_utf8_ptr(p, CUSTOS_VERSION))
        return 0;
    if ((p = OSSL_PARAM_locate(params, OSSL_PROV_PARAM_BUILDINFO)) != NULL
        && !OSSL_PARAM_set_utf8_ptr(p, "custos " CUSTOS_VERSION " (" OPENSSL_VERSION_TEXT ")"))
        return 0;
    if ((p = OSSL_PARAM_locate(params, OSSL_PROV_PARAM_STATUS)) != NULL && !OSSL_PARAM_set_int(p, 1))
        return 0;
    return 1;
}

static const OSSL_ALGORITHM keymgmts[] = {
    { "EC:id-ecPublicKey:1.2.840.10045.2.1", CU_PROV_PROPS, cu_prov_ec_keymgmt_functions,
      "EC keys held in PKCS#11 tokens" },
    { "RSA:rsaEncryption:1.2.840.113549.1.1.1", CU_PROV_PROPS, cu_prov_rsa_keymgmt_functions,
      "RSA keys held in PKCS#11 tokens" },
    { NULL, NULL, NULL, NULL },
};

/* Signatures have names of their own, which only our key managers name for
 * signing (query_operation_name): a software key of the default provider then
 * never detours through custos, whatever the order of the providers. */
static const OSSL_ALGORITHM signatures[] = {
    { CU_PROV_SIG_ECDSA, CU_PROV_PROPS, cu_prov_ecdsa_signature_functions, "ECDSA in PKCS#11 tokens" },
    { CU_PROV_SIG_RSA, CU_PROV_PROPS, cu_prov_rsa_signature_functions,
      "RSA PKCS#1 v1.5 and PSS in PKCS#11 tokens" },
    { NULL, NULL, NULL, NULL },
};

static const OSSL_ALGORITHM stores[] = {
    { "pkcs11", CU_PROV_PROPS, cu_prov_pkcs11_store_functions, "keys and certificates by pkcs11: URI" },
    { NULL, NULL, NULL, NULL },
};

static const OSSL_ALGORITHM macs[] = {
    { "CUSTOS-HMAC", CU_PROV_PROPS, cu_prov_hmac_mac_functions,
      "HMAC-SHA256 with a token-held secret key (param key-uri)" },
    { NULL, NULL, NULL, NULL },
};

static const OSSL_ALGORITHM *prov_query_operation(void *provctx, int operation_id, int *no_cache)
{
    (void)provctx;
    *no_cache = 0;
    switch (operation_id) {
    case OSSL_OP_KEYMGMT: return keymgmts;
    case OSSL_OP_SIGNATURE: return signatures;
    case OSSL_OP_STORE: return stores;
    case OSSL_OP_MAC: return macs;
    default: return NULL;
    }
}

/* TLS groups whose keys our "EC" key manager makes. libssl keeps a group
 * only if EVP_KEYMGMT_fetch("EC") returns the manager of the provider that
 * announces it; when custos comes first in the provider list that is ours,
 * so we announce the NIST curves too (their ECDHE keys are software keys,
 * derived by the default provider). */
typedef struct tls_group {
    const char *name, *internal;
    unsigned int id, secbits;
} tls_group;

static const tls_group tls_groups[] = {
    { "secp256r1", "prime256v1", 23, 128 },
    { "secp384r1", "secp384r1", 24, 192 },
    { "secp521r1", "secp521r1", 25, 256 },
    { "P-256", "prime256v1", 23, 128 },
    { "P-384", "secp384r1", 24, 192 },
    { "P-521", "secp521r1", 25, 256 },
};

static int prov_get_capabilities(void *provctx, const char *capability, OSSL_CALLBACK *cb, void *arg)
{
    (void)provctx;
    if (OPENSSL_strcasecmp(capability, "TLS-GROUP") != 0)
        return 1;
    for (size_t i = 0; i < sizeof tls_groups / sizeof tls_groups[0]; i++) {
        const tls_group *g = &tls_groups[i];
        unsigned int id = g->id, secbits = g->secbits;
        int is_kem = 0, min_tls = 0x0301, max_tls = 0, min_dtls = (int)0xFEFF, max_dtls = 0;
        OSSL_PARAM p[] = {
            OSSL_PARAM_utf8_string(OSSL_CAPABILITY_TLS_GROUP_NAME, (char *)g->name, strlen(g->name)),
            OSSL_PARAM_utf8_string(OSSL_CAPABILITY_TLS_GROUP_NAME_INTERNAL, (char *)g->internal,
                                   strlen(g->internal)),
            OSSL_PARAM_utf8_string(OSSL_CAPABILITY_TLS_GROUP_ALG, "EC", 2),
            OSSL_PARAM_uint(OSSL_CAPABILITY_TLS_GROUP_ID, &id),
            OSSL_PARAM_uint(OSSL_CAPABILITY_TLS_GROUP_SECURITY_BITS, &secbits),
            OSSL_PARAM_int(OSSL_CAPABILITY_TLS_GROUP_IS_KEM, &is_kem),
            OSSL_PARAM_int(OSSL_CAPABILITY_TLS_GROUP_MIN_TLS, &min_tls),
            OSSL_PARAM_int(OSSL_CAPABILITY_TLS_GROUP_MAX_TLS, &max_tls),
            OSSL_PARAM_int(OSSL_CAPABILITY_TLS_GROUP_MIN_DTLS, &min_dtls),
            OSSL_PARAM_int(OSSL_CAPABILITY_TLS_GROUP_MAX_DTLS, &max_dtls),
            OSSL_PARAM_END,
        };
        if (!cb(p, arg))
            return 0;
    }
    return 1;
}

static const OSSL_ITEM *prov_get_reason_strings(void *provctx)
{
    (void)provctx;
    return reason_strings;
}

static const OSSL_DISPATCH provider_functions[] = {
    { OSSL_FUNC_PROVIDER_TEARDOWN, (void (*)(void))prov_teardown },
    { OSSL_FUNC_PROVIDER_GETTABLE_PARAMS, (void (*)(void))prov_gettable_params },
    { OSSL_FUNC_PROVIDER_GET_PARAMS, (void (*)(void))prov_get_params },
    { OSSL_FUNC_PROVIDER_QUERY_OPERATION, (void (*)(void))prov_query_operation },
    { OSSL_FUNC_PROVIDER_GET_REASON_STRINGS, (void (*)(void))prov_get_reason_strings },
    { OSSL_FUNC_PROVIDER_GET_CAPABILITIES, (void (*)(void))prov_get_capabilities },
    { 0, NULL },
};

OSSL_provider_init_fn OSSL_provider_init __attribute__((visibility("default")));

int OSSL_provider_init(const OSSL_CORE_HANDLE *handle, const OSSL_DISPATCH *in,
                       const OSSL_DISPATCH **out, void **provctx)
{
    OSSL_FUNC_core_get_params_fn *get_params = NULL;
    cu_prov_ctx *pc = OPENSSL_zalloc(sizeof *pc);
    if (pc == NULL)
        return 0;
    pc->handle = handle;
    recursive_lock_init(&pc->lock);
    for (; in->function_id != 0; in++) {
        switch (in->function_id) {
        case OSSL_FUNC_CORE_GET_PARAMS: get_params = OSSL_FUNC_core_get_params(in); break;
        case OSSL_FUNC_CORE_NEW_ERROR: pc->up_new_error = OSSL_FUNC_core_new_error(in); break;
        case OSSL_FUNC_CORE_SET_ERROR_DEBUG: pc->up_set_error_debug = OSSL_FUNC_core_set_error_debug(in); break;
        case OSSL_FUNC_CORE_VSET_ERROR: pc->up_vset_error = OSSL_FUNC_core_vset_error(in); break;
        default: break;
        }
    }
    if (!configure(pc, get_params))
        goto err;
    /* Public-key arithmetic, digests and verification run in software in a
     * private library context, so that they never come back to us. */
    if ((pc->sw = OSSL_LIB_CTX_new()) == NULL || (pc->sw_default = OSSL_PROVIDER_load(pc->sw, "default")) == NULL) {
        CU_PROV_RAISE(pc, CU_PROV_R_SOFTWARE, "cannot load the default provider in a private context");
        goto err;
    }
    for (int h = CU_HASH_SHA1; h < CU_PROV_N_HASH; h++)
        pc->md[h] = EVP_MD_fetch(pc->sw, hash_names[h], NULL);
    pc->sw_ec = EVP_KEYMGMT_fetch(pc->sw, "EC", NULL);
    pc->sw_rsa = EVP_KEYMGMT_fetch(pc->sw, "RSA", NULL);
    if (pc->sw_ec == NULL || pc->sw_rsa == NULL || pc->md[CU_HASH_SHA256] == NULL) {
        CU_PROV_RAISE(pc, CU_PROV_R_SOFTWARE, "the default provider lacks EC, RSA or SHA-256");
        goto err;
    }
    pthread_once(&exit_once, register_at_exit);
    pthread_once(&fork_once, register_fork);
    pthread_mutex_lock(&live_lock);
    pc->next_live = live;
    live = pc;
    pthread_mutex_unlock(&live_lock);
    pc->counted = true;
    __atomic_add_fetch(&instances, 1, __ATOMIC_ACQ_REL);
    *out = provider_functions;
    *provctx = pc;
    return 1;
err:
    prov_teardown(pc);
    return 0;
}
