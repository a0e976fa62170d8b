/* The last use of each key, from the audit log (cmd_audit_lastuse.h). */
#include "cmd_audit_lastuse.h"
#include "cli.h"

#include <custos/audit.h>
#include <custos/store.h>

#include <ctype.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* One key name of the log with the last record naming it. */
typedef struct entry {
    char *key;
    cu_lastuse_hit hit;
} entry;

struct cu_lastuse {
    bool have_log;
    size_t records;
    entry *e;
    size_t n, cap;
};

bool cu_lastuse_have_log(const cu_lastuse *lu) { return lu != NULL && lu->have_log; }
size_t cu_lastuse_records(const cu_lastuse *lu) { return lu ? lu->records : 0; }

void cu_lastuse_free(cu_lastuse *lu)
{
    if (lu == NULL)
        return;
    for (size_t i = 0; i < lu->n; i++)
        free(lu->e[i].key);
    free(lu->e);
    free(lu);
}

static bool wanted(const char *type)
{
    return !strcmp(type, "key.use") || !strcmp(type, "token.keygen") || !strcmp(type, "token.import");
}

/* Records come in seq order: the later one replaces what a key had. */
static int note(cu_lastuse *lu, const cu_audit_record *r)
{
    json_error_t e;
    json_t *j = json_loads(r->payload ? r->payload : "", 0, &e);
    const char *key = json_string_value(json_object_get(j, "key"));
    const char *result = json_string_value(json_object_get(j, "result"));
    int rc = CU_EXIT_OK;
    /* A failed keygen or import made no key. */
    if (key == NULL || (strncmp(key, "pkcs11:", 7) != 0 && strncmp(key, "file:", 5) != 0) ||
        (result != NULL && strcmp(result, "ok") != 0))
        goto out;
    lu->records++;
    size_t i = 0;
    while (i < lu->n && strcmp(lu->e[i].key, key) != 0)
        i++;
    if (i == lu->n) {
        if (lu->n == lu->cap) {
            size_t cap = lu->cap ? 2 * lu->cap : 16;
            entry *ne = realloc(lu->e, cap * sizeof *ne);
            if (ne == NULL) {
                rc = cu_cli_fail("out of memory");
                goto out;
            }
            lu->e = ne;
            lu->cap = cap;
        }
        memset(&lu->e[i], 0, sizeof lu->e[i]);
        if ((lu->e[i].key = strdup(key)) == NULL) {
            rc = cu_cli_fail("out of memory");
            goto out;
        }
        lu->n++;
    }
    cu_lastuse_hit *h = &lu->e[i].hit;
    memset(h, 0, sizeof *h);
    h->found = true;
    h->seq = r->seq;
    snprintf(h->type, sizeof h->type, "%s", r->type);
    snprintf(h->actor, sizeof h->actor, "%s", r->actor);
    const char *minute = json_string_value(json_object_get(j, "minute"));
    const char *role = json_string_value(json_object_get(j, "role"));
    snprintf(h->at, sizeof h->at, "%s", minute && !strcmp(r->type, "key.use") ? minute : r->at);
    snprintf(h->role, sizeof h->role, "%s", role ? role : "");
    json_int_t c = json_integer_value(json_object_get(j, "count"));
    h->count = c > 0 ? (unsigned long)c : 0;
out:
    json_decref(j);
    return rc;
}

int cu_lastuse_load(const char *state_dir, cu_lastuse **_out)
{
    return cu_lastuse_load_spec(state_dir, NULL, NULL, _out);
}

int cu_lastuse_load_spec(const char *state_dir, const char *spec, const char *pw, cu_lastuse **_out)
{
    char path[4096];
    struct stat sb;
    cu_store *s = NULL;
    cu_lastuse *lu = calloc(1, sizeof *lu);
    int rc = CU_EXIT_OK;
    *_out = NULL;
    if (lu == NULL)
        return cu_cli_fail("out of memory");
    /* The store the other audit commands read: $CUSTOS_STORE (PostgreSQL
     * shared by nodes, as custos/state.h says), else STATE/custos.db. */
    const char *named = "the config's store";
    if (spec == NULL || *spec == 0) {
        spec = getenv("CUSTOS_STORE");
        pw = pw ? pw : getenv("CUSTOS_STORE_PASSWORD_FILE");
        named = "$CUSTOS_STORE";
    }
    if (spec != NULL && *spec != 0) {
        if (cu_store_open_audit_only_spec(spec, pw && *pw ? pw : NULL, false, &s) != CU_OK) {
            free(lu);
            return cu_cli_fail("cannot read the audit log of %s: %s", named, cu_err_last()->msg);
        }
    } else {
        if (snprintf(path, sizeof path, "%s/custos.db", state_dir) >= (int)sizeof path) {
            free(lu);
            return cu_cli_fail("state directory path too long");
        }
        if (stat(path, &sb) != 0) { /* no store yet: nothing recorded */
            *_out = lu;
            return CU_EXIT_OK;
        }
        if (cu_store_open_audit_only(path, false, &s) != CU_OK) {
            free(lu);
            return cu_cli_fail("cannot read the audit log of %s: %s", state_dir, cu_err_last()->msg);
        }
    }
    lu->have_log = true;
    for (uint64_t from = 1; rc == CU_EXIT_OK;) {
        cu_audit_record *r = NULL;
        size_t n = 0;
        if (cu_audit_read(s, from, 1000, &r, &n) != CU_OK) {
            rc = cu_cli_fail("cannot read the audit log of %s: %s", state_dir, cu_err_last()->msg);
            break;
        }
        for (size_t i = 0; i < n && rc == CU_EXIT_OK; i++)
            if (wanted(r[i].type))
                rc = note(lu, &r[i]);
        if (n > 0)
            from = r[n - 1].seq + 1;
        cu_audit_records_free(r, n);
        if (n < 1000)
            break;
    }
    cu_store_close(s);
    if (rc != CU_EXIT_OK) {
        cu_lastuse_free(lu);
        return rc;
    }
    *_out = lu;
    return CU_EXIT_OK;
}

/* ---- matching a record's URI to a key ---- */

static int hexval(int c)
{
    return isdigit(c) ? c - '0' : isxdigit(c) ? tolower(c) - 'a' + 10 : -1;
}

/* Percent-decodes v (len bytes) into out; false if malformed or too long. */
static bool pct(const char *v, size_t len, char *out, size_t size, size_t *_n)
{
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        if (o + 1 >= size)
            return false;
        if (v[i] == '%') {
            if (i + 2 >= len)
                return false;
            int a = hexval((unsigned char)v[i + 1]), b = hexval((unsigned char)v[i + 2]);
            if (a < 0 || b < 0)
                return false;
            out[o++] = (char)(a * 16 + b);
            i += 2;
        } else {
            out[o++] = v[i];
        }
    }
    out[o] = 0;
    *_n = o;
    return true;
}

/* Walks the URI's path attributes: false as soon as one is not the key's
 * (token_only: only the token's are compared). *_names_object: it has
 * object= or id=; *_names_token: token=, serial=, manufacturer= or model=. */
static bool uri_walk(const char *uri, const cu_token_desc *tok, const char *label, const char *id_hex, cu_class cls,
                     bool token_only, bool *_names_object, bool *_names_token)
{
    const char *p = uri + 7, *end = p + strcspn(p, "?");
    bool names_object = false, names_token = false;
    *_names_object = *_names_token = false;
    if (strncmp(uri, "pkcs11:", 7) != 0)
        return false;
    while (p < end) {
        size_t n = strcspn(p, ";");
        if (p + n > end)
            n = (size_t)(end - p);
        const char *eq = memchr(p, '=', n);
        char v[512];
        size_t vl = 0;
        if (eq != NULL) {
            size_t kl = (size_t)(eq - p);
            if (!pct(eq + 1, n - kl - 1, v, sizeof v, &vl))
                return false;
#define IS(k) (kl == sizeof(k) - 1 && !strncmp(p, k, kl))
            names_token = names_token || IS("token") || IS("serial") || IS("manufacturer") || IS("model");
            if (IS("token") && strcmp(v, tok->label) != 0)
                return false;
            if (IS("serial") && strcmp(v, tok->serial) != 0)
                return false;
            if (IS("manufacturer") && strcmp(v, tok->manufacturer) != 0)
                return false;
            if (IS("model") && strcmp(v, tok->model) != 0)
                return false;
            if (token_only) {
                p += n + 1;
                continue;
            }
            if (IS("object")) {
                if (strcmp(v, label) != 0)
                    return false;
                names_object = true;
            }
            if (IS("id")) {
                char hx[2 * sizeof v + 1] = "";
                for (size_t i = 0; i < vl; i++)
                    snprintf(hx + 2 * i, 3, "%02x", (unsigned char)v[i]);
                if (strcmp(hx, id_hex) != 0)
                    return false;
                names_object = true;
            }
            /* A key pair is one key: its private or public half names it. */
            if (IS("type") && !((cls == CU_CLASS_PRIVATE_KEY && (!strcmp(v, "private") || !strcmp(v, "public"))) ||
                                (cls == CU_CLASS_SECRET_KEY && !strcmp(v, "secret-key"))))
                return false;
#undef IS
        }
        p += n + 1;
    }
    *_names_object = names_object;
    *_names_token = names_token;
    return true;
}

bool cu_lastuse_uri_names_key(const char *uri, const cu_token_desc *tok, const char *label, const char *id_hex,
                              cu_class cls)
{
    bool obj, tk;
    return uri_walk(uri, tok, label, id_hex, cls, false, &obj, &tk) && obj;
}

bool cu_lastuse_uri_names_token(const char *uri, const cu_token_desc *tok)
{
    bool obj, tk;
    return uri_walk(uri, tok, "", "", CU_CLASS_ANY, true, &obj, &tk) && tk;
}

void cu_lastuse_find(const cu_lastuse *lu, const cu_token_desc *tok, const char *label, const char *id_hex,
                     cu_class cls, cu_lastuse_hit *_hit)
{
    memset(_hit, 0, sizeof *_hit);
    for (size_t i = 0; lu != NULL && i < lu->n; i++)
        if (lu->e[i].hit.seq > _hit->seq && cu_lastuse_uri_names_key(lu->e[i].key, tok, label, id_hex, cls))
            *_hit = lu->e[i].hit;
}

void cu_lastuse_find_file(const cu_lastuse *lu, const char *path, cu_lastuse_hit *_hit)
{
    memset(_hit, 0, sizeof *_hit);
    for (size_t i = 0; lu != NULL && i < lu->n; i++)
        if (lu->e[i].hit.seq > _hit->seq && !strncmp(lu->e[i].key, "file:", 5) && !strcmp(lu->e[i].key + 5, path))
            *_hit = lu->e[i].hit;
}

void cu_lastuse_text(const cu_lastuse *lu, const cu_lastuse_hit *h, char *out, size_t size)
{
    if (!cu_lastuse_have_log(lu)) {
        snprintf(out, size, "unknown (no audit log read: give --state DIR)");
    } else if (!h->found) {
        snprintf(out, size, "never recorded");
    } else if (!strcmp(h->type, "key.use")) {
        /* The minute without its seconds: the use was within it. */
        snprintf(out, size, "%.16sZ: %lu use%s that minute (key.use #%llu%s%s, %s)", h->at, h->count,
                 h->count == 1 ? "" : "s", (unsigned long long)h->seq, h->role[0] ? ", " : "", h->role, h->actor);
    } else {
        snprintf(out, size, "%s %.19sZ, no use recorded since (%s #%llu, %s)",
                 !strcmp(h->type, "token.import") ? "imported" : "generated", h->at, h->type,
                 (unsigned long long)h->seq, h->actor);
    }
}
