/* custosd configuration: defaults, `key = value` files, command-line
 * overrides. Every key is documented in docs/custosd.md. */
#include <custos/server.h>

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void cu_srv_config_init(cu_srv_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->max_body = 96 * 1024;
    cfg->max_headers = 16 * 1024;
    cfg->timeout = 30;
    cfg->retry_after = 2;
    cfg->sas_skew = 300;
    cfg->shutdown_grace = 10;
    cfg->tls_tickets = 1;
    cfg->audit_sign_every = 1000;
    cfg->audit_sign_seconds = 60;
    cfg->log_level = 2;
}

static void free_list(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i]);
}

void cu_srv_config_clear(cu_srv_config *cfg)
{
    if (cfg == NULL)
        return;
    free(cfg->state_dir);
    free_list(cfg->listen, cfg->n_listen);
    free_list(cfg->names, cfg->n_names);
    free_list(cfg->hubs, cfg->n_hubs);
    free(cfg->id_scope);
    free(cfg->store);
    free(cfg->store_password_file);
    free(cfg->server_key);
    free(cfg->server_cert);
    free(cfg->keyring);
    free(cfg->provider_path);
    free(cfg->audit_key);
    free(cfg->log_file);
    memset(cfg, 0, sizeof *cfg);
}

static cu_rc set_str(char **dst, const char *key, const char *v)
{
    char *c = strdup(v);
    if (c == NULL)
        return cu_err_set(CU_E_NOMEM, "out of memory");
    if (*v == 0) {
        free(c);
        return cu_err_set(CU_E_INVALID_ARG, "%s: empty value", key);
    }
    free(*dst);
    *dst = c;
    return CU_OK;
}

static cu_rc add_str(char **list, size_t *n, size_t max, const char *key, const char *v)
{
    if (*n >= max)
        return cu_err_set(CU_E_INVALID_ARG, "%s: at most %zu values", key, max);
    if (*v == 0)
        return cu_err_set(CU_E_INVALID_ARG, "%s: empty value", key);
    if ((list[*n] = strdup(v)) == NULL)
        return cu_err_set(CU_E_NOMEM, "out of memory");
    (*n)++;
    return CU_OK;
}

static cu_rc set_uint(unsigned long long *out, const char *key, const char *v, unsigned long long lo,
                      unsigned long long hi)
{
    char *end = NULL;
    errno = 0;
    if (!isdigit((unsigned char)*v))
        return cu_err_set(CU_E_INVALID_ARG, "%s: '%s' is not a number", key, v);
    unsigned long long x = strtoull(v, &end, 10);
    if (errno != 0 || *end != 0 || x < lo || x > hi)
        return cu_err_set(CU_E_INVALID_ARG, "%s: '%s' is not a number in %llu..%llu", key, v, lo, hi);
    *out = x;
    return CU_OK;
}

static cu_rc set_bool(bool *out, const char *key, const char *v)
{
    if (!strcmp(v, "true") || !strcmp(v, "yes") || !strcmp(v, "on") || !strcmp(v, "1"))
        *out = true;
    else if (!strcmp(v, "false") || !strcmp(v, "no") || !strcmp(v, "off") || !strcmp(v, "0"))
        *out = false;
    else
        return cu_err_set(CU_E_INVALID_ARG, "%s: '%s' is not true or false", key, v);
    return CU_OK;
}

/* ADDR:PORT with ADDR an IPv4 address, [IPv6] or a name. */
static cu_rc check_listen(const char *v)
{
    const char *colon = strrchr(v, ':');
    unsigned long long port;
    if (colon == NULL || colon == v)
        return cu_err_set(CU_E_INVALID_ARG, "listen: '%s' is not ADDR:PORT", v);
    return set_uint(&port, "listen port", colon + 1, 0, 65535);
}

cu_rc cu_srv_config_set(cu_srv_config *cfg, const char *key, const char *v)
{
    unsigned long long x = 0;
    cu_rc rc;
    if (cfg == NULL || key == NULL || v == NULL)
        return cu_err_set(CU_E_INVALID_ARG, "cu_srv_config_set: NULL argument");
    if (!strcmp(key, "state"))
        return set_str(&cfg->state_dir, key, v);
    if (!strcmp(key, "listen")) {
        if ((rc = check_listen(v)) != CU_OK)
            return rc;
        return add_str(cfg->listen, &cfg->n_listen, CU_SRV_MAX_LISTEN, key, v);
    }
    if (!strcmp(key, "host-name"))
        return add_str(cfg->names, &cfg->n_names, CU_SRV_MAX_NAMES, key, v);
    if (!strcmp(key, "hub"))
        return add_str(cfg->hubs, &cfg->n_hubs, CU_SRV_MAX_HUBS, key, v);
    if (!strcmp(key, "id-scope"))
        return set_str(&cfg->id_scope, key, v);
    if (!strcmp(key, "store"))
        return set_str(&cfg->store, key, v);
    if (!strcmp(key, "store-password-file"))
        return set_str(&cfg->store_password_file, key, v);
    if (!strcmp(key, "server-key"))
        return set_str(&cfg->server_key, key, v);
    if (!strcmp(key, "server-cert"))
        return set_str(&cfg->server_cert, key, v);
    if (!strcmp(key, "keyring"))
        return set_str(&cfg->keyring, key, v);
    if (!strcmp(key, "provider-path"))
        return set_str(&cfg->provider_path, key, v);
    if (!strcmp(key, "audit-key"))
        return set_str(&cfg->audit_key, key, v);
    if (!strcmp(key, "log-file"))
        return set_str(&cfg->log_file, key, v);
    if (!strcmp(key, "log-format")) {
        if (!strcmp(v, "text"))
            cfg->log_format = CU_SRV_LOG_TEXT;
        else if (!strcmp(v, "json"))
            cfg->log_format = CU_SRV_LOG_JSON;
        else
            return cu_err_set(CU_E_INVALID_ARG, "log-format: '%s' is not text or json", v);
        return CU_OK;
    }
    if (!strcmp(key, "log-level")) {
        static const char *const L[] = {"error", "warn", "info", "debug"};
        for (int i = 0; i < 4; i++)
            if (!strcmp(v, L[i])) {
                cfg->log_level = i;
                return CU_OK;
            }
        return cu_err_set(CU_E_INVALID_ARG, "log-level: '%s' is not error, warn, info or debug", v);
    }
    if (!strcmp(key, "register-reply")) {
        if (!strcmp(v, "assigning"))
            cfg->reply_final = false;
        else if (!strcmp(v, "final"))
            cfg->reply_final = true;
        else
            return cu_err_set(CU_E_INVALID_ARG, "register-reply: '%s' is not assigning or final", v);
        return CU_OK;
    }
    if (!strcmp(key, "device-error-detail"))
        return set_bool(&cfg->error_detail, key, v);

    struct {
        const char *k;
        unsigned long long lo, hi;
        size_t size;
        void *dst;
    } nums[] = {
        {"workers", 0, 64, sizeof cfg->workers, &cfg->workers},
        {"max-body", 1024, 16u << 20, sizeof cfg->max_body, &cfg->max_body},
        {"max-headers", 1024, 1u << 20, sizeof cfg->max_headers, &cfg->max_headers},
        {"timeout", 1, 3600, sizeof cfg->timeout, &cfg->timeout},
        {"retry-after", 1, 300, sizeof cfg->retry_after, &cfg->retry_after},
        {"rate-global", 0, 10000000, sizeof cfg->rate_global, &cfg->rate_global},
        {"rate-device", 0, 100000, sizeof cfg->rate_device, &cfg->rate_device},
        {"sas-skew", 0, 86400, sizeof cfg->sas_skew, &cfg->sas_skew},
        {"shutdown-grace", 0, 3600, sizeof cfg->shutdown_grace, &cfg->shutdown_grace},
        {"tls-tickets", 0, 4, sizeof cfg->tls_tickets, &cfg->tls_tickets},
        {"audit-sign-every", 1, 1000000, sizeof cfg->audit_sign_every, &cfg->audit_sign_every},
        {"audit-sign-seconds", 1, 86400, sizeof cfg->audit_sign_seconds, &cfg->audit_sign_seconds},
    };
    for (size_t i = 0; i < sizeof nums / sizeof nums[0]; i++) {
        if (strcmp(key, nums[i].k) != 0)
            continue;
        if ((rc = set_uint(&x, key, v, nums[i].lo, nums[i].hi)) != CU_OK)
            return rc;
        if (nums[i].size == sizeof(unsigned))
            *(unsigned *)nums[i].dst = (unsigned)x;
        else
            *(size_t *)nums[i].dst = (size_t)x;
        return CU_OK;
    }
    return cu_err_set(CU_E_INVALID_ARG, "unknown setting '%s'", key);
}

static char *trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    size_t n = strlen(s);
    while (n > 0 && isspace((unsigned char)s[n - 1]))
        s[--n] = 0;
    return s;
}

cu_rc cu_srv_config_load(cu_srv_config *cfg, const char *path)
{
    FILE *f = fopen(path, "r");
    char line[4096];
    unsigned lineno = 0;
    cu_rc rc = CU_OK;
    if (f == NULL)
        return cu_err_set_sys(CU_E_IO, errno, "cannot open config file %s", path);
    while (fgets(line, sizeof line, f) != NULL) {
        lineno++;
        if (strchr(line, '\n') == NULL && !feof(f)) {
            rc = cu_err_set(CU_E_INVALID_ARG, "%s:%u: line too long", path, lineno);
            break;
        }
        char *s = trim(line);
        if (*s == 0 || *s == '#')
            continue;
        char *eq = strchr(s, '=');
        if (eq == NULL) {
            rc = cu_err_set(CU_E_INVALID_ARG, "%s:%u: expected key = value", path, lineno);
            break;
        }
        *eq = 0;
        char *k = trim(s), *v = trim(eq + 1);
        if ((rc = cu_srv_config_set(cfg, k, v)) != CU_OK) {
            char msg[512];
            snprintf(msg, sizeof msg, "%s", cu_err_last()->msg);
            rc = cu_err_set(rc, "%s:%u: %s", path, lineno, msg);
            break;
        }
    }
    fclose(f);
    return rc;
}
