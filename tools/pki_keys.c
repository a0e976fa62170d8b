/* Keys of `custos pki` in files or in a token, and undo (pki_keys.h). */
#include "pki_keys.h"

#include "cli.h"
#include "token_util.h"

#include <custos/keyring.h>
#include <custos/pki.h>

#include <errno.h>
#include <openssl/err.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct made_key {
    EVP_PKEY *key;
    char *label; /* token: prefix + name; files: name */
    char *uri;   /* token: the key's URI, without PIN */
    char *file;  /* files: where it was written */
    uint8_t id[64];
    size_t id_len;
} made_key;

struct cu_pki_keys {
    bool token;
    cu_tok_target t;
    char *pin_query;    /* "pin-value=…" or "pin-source=…" for the provider, or NULL */
    const char *prefix; /* label prefix */
    made_key *keys;
    size_t n_keys, cap_keys;
    char **paths;       /* files then directories this run created, in order */
    bool *is_dir;
    size_t n_paths, cap_paths;
};

/* Percent-encodes everything but RFC 3986's unreserved characters. */
static char *pct(const char *s, size_t len)
{
    static const char hex[] = "0123456789ABCDEF";
    char *o = malloc(len * 3 + 1), *p = o;
    if (o == NULL)
        return NULL;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || strchr("-._~", c)) {
            *p++ = (char)c;
        } else {
            *p++ = '%';
            *p++ = hex[c >> 4];
            *p++ = hex[c & 15];
        }
    }
    *p = 0;
    return o;
}

static char *pct_bytes(const uint8_t *b, size_t n)
{
    char *o = malloc(n * 3 + 1), *p = o;
    if (o == NULL)
        return NULL;
    for (size_t i = 0; i < n; i++)
        p += sprintf(p, "%%%02X", b[i]);
    *p = 0;
    return o;
}

/* The pin-value/pin-source attribute of a URI's query, copied (or NULL). */
static char *query_pin(const char *uri)
{
    const char *q = strchr(uri, '?');
    while (q != NULL) {
        q++;
        if (strncmp(q, "pin-value=", 10) == 0 || strncmp(q, "pin-source=", 11) == 0)
            return strndup(q, strcspn(q, "&"));
        q = strchr(q, '&');
    }
    return NULL;
}

static bool add_path(cu_pki_keys *k, const char *path, bool dir)
{
    if (k->n_paths == k->cap_paths) {
        size_t cap = k->cap_paths ? k->cap_paths * 2 : 16;
        char **p = realloc(k->paths, cap * sizeof *p);
        if (p == NULL)
            return false;
        k->paths = p;
        bool *d = realloc(k->is_dir, cap * sizeof *d);
        if (d == NULL)
            return false;
        k->is_dir = d;
        k->cap_paths = cap;
    }
    if ((k->paths[k->n_paths] = strdup(path)) == NULL)
        return false;
    k->is_dir[k->n_paths++] = dir;
    return true;
}

/* Remembers path if it does not exist yet (an existing file is not ours to
 * remove on undo). */
static int note_new_file(cu_pki_keys *k, const char *path)
{
    if (access(path, F_OK) == 0)
        return CU_EXIT_OK;
    return add_path(k, path, false) ? CU_EXIT_OK : cu_cli_fail("out of memory");
}

int cu_pki_keys_open(const char *token_uri, const char *token_dir, const char *pin_source,
                     const char *label_prefix, cu_pki_keys **_out)
{
    cu_pki_keys *k = calloc(1, sizeof *k);
    int rc = CU_EXIT_OK;
    *_out = NULL;
    if (k == NULL)
        return cu_cli_fail("out of memory");
    k->prefix = label_prefix ? label_prefix : "";
    if (token_uri == NULL && token_dir == NULL) {
        /* Issuer keys given as pkcs11: URIs without a PIN get this one. */
        char *enc = pin_source ? pct(pin_source, strlen(pin_source)) : NULL;
        if (pin_source != NULL && (enc == NULL || asprintf(&k->pin_query, "pin-source=file:%s", enc) < 0)) {
            free(enc);
            free(k);
            return cu_cli_fail("out of memory");
        }
        free(enc);
        *_out = k;
        return CU_EXIT_OK;
    }
    if (token_uri != NULL && strncmp(token_uri, "pkcs11:", 7) != 0) {
        free(k);
        return cu_cli_usage("pki", "--token must be a pkcs11: URI");
    }
    if ((rc = cu_tok_target_open(token_dir, token_uri, pin_source, true, &k->t)) != CU_EXIT_OK) {
        free(k);
        return rc;
    }
    k->token = true;
    if (k->t.pin != NULL) {
        char *enc = pct(k->t.pin, strlen(k->t.pin));
        if (enc == NULL || asprintf(&k->pin_query, "pin-value=%s", enc) < 0)
            k->pin_query = NULL;
        if (enc != NULL) {
            OPENSSL_cleanse(enc, strlen(enc));
            free(enc);
        }
        if (k->pin_query == NULL)
            rc = cu_cli_fail("out of memory");
    } else {
        k->pin_query = query_pin(k->t.uri);
    }
    /* The provider reaches the token's keys for signing. */
    if (rc == CU_EXIT_OK && cu_keyring_provider_load(NULL) != CU_OK)
        rc = cu_cli_fail("%s", cu_err_last()->msg);
    if (rc != CU_EXIT_OK) {
        cu_pki_keys_free(k);
        return rc;
    }
    *_out = k;
    return CU_EXIT_OK;
}

bool cu_pki_keys_in_token(const cu_pki_keys *k)
{
    return k->token;
}

static char *label_of(const cu_pki_keys *k, const char *name)
{
    char *l = NULL;
    if (asprintf(&l, "%s%s", k->prefix, name) < 0)
        return NULL;
    return l;
}

int cu_pki_keys_check(cu_pki_keys *k, const char *name)
{
    if (!k->token)
        return CU_EXIT_OK;
    char *label = label_of(k, name), *enc = NULL, *uri = NULL;
    cu_object **objs = NULL;
    size_t n = 0;
    int rc = CU_EXIT_OK;
    if (label == NULL || (enc = pct(label, strlen(label))) == NULL || asprintf(&uri, "pkcs11:object=%s", enc) < 0) {
        uri = NULL;
        rc = cu_cli_fail("out of memory");
    } else if (strlen(label) > 128) {
        rc = cu_cli_fail("label '%s' is too long", label);
    } else if (cu_token_find_all(k->t.tok, uri, CU_CLASS_ANY, &objs, &n) != CU_OK) {
        rc = cu_cli_fail("%s", cu_err_last()->msg);
    } else if (n > 0) {
        rc = cu_cli_fail("token '%s' already holds %zu object%s labelled '%s' (a %s); choose another "
                         "--label-prefix or remove them",
                         cu_token_get0_desc(k->t.tok)->label, n, n == 1 ? "" : "s", label,
                         cu_class_str(cu_object_class(objs[0])));
    }
    cu_objects_free(objs, n);
    free(uri);
    free(enc);
    free(label);
    return rc;
}

/* A private key through the provider (NULL, with why said). */
static EVP_PKEY *store_load(const char *uri, char *why, size_t why_len)
{
    EVP_PKEY *key = NULL;
    if (cu_keyring_load_key(uri, NULL, true, &key) != CU_OK)
        snprintf(why, why_len, "%.*s", (int)why_len - 1, cu_err_last()->msg);
    return key;
}

/* uri with the run's PIN attribute added to its query (caller frees). */
static char *with_pin(const cu_pki_keys *k, const char *uri)
{
    char *out = NULL;
    if (k->pin_query == NULL || strstr(uri, "pin-value=") != NULL || strstr(uri, "pin-source=") != NULL)
        return strdup(uri);
    if (asprintf(&out, "%s%s%s", uri, strchr(uri, '?') ? "&" : "?", k->pin_query) < 0)
        return NULL;
    return out;
}

static void clear_free(char *s)
{
    if (s != NULL) {
        OPENSSL_cleanse(s, strlen(s));
        free(s);
    }
}

int cu_pki_keys_generate(cu_pki_keys *k, const char *name, EVP_PKEY **_key)
{
    *_key = NULL;
    if (k->n_keys == k->cap_keys) {
        size_t cap = k->cap_keys ? k->cap_keys * 2 : 16;
        made_key *p = realloc(k->keys, cap * sizeof *p);
        if (p == NULL)
            return cu_cli_fail("out of memory");
        k->keys = p;
        k->cap_keys = cap;
    }
    made_key *m = &k->keys[k->n_keys];
    memset(m, 0, sizeof *m);
    if (!k->token) {
        if (cu_pki_keygen(&m->key) != CU_OK)
            return cu_cli_fail("%s: %s", name, cu_err_last()->msg);
        if ((m->label = strdup(name)) == NULL) {
            EVP_PKEY_free(m->key);
            return cu_cli_fail("out of memory");
        }
        k->n_keys++;
        *_key = m->key;
        return CU_EXIT_OK;
    }
    cu_object *obj = NULL;
    char *full = NULL, why[256];
    int rc = CU_EXIT_OK;
    if ((m->label = label_of(k, name)) == NULL)
        return cu_cli_fail("out of memory");
    if (cu_token_keygen(k->t.tok, CU_KEYGEN_EC_P256, m->label, NULL, 0, &obj) != CU_OK) {
        rc = cu_cli_fail("%s: key generation on the token failed: %s", name, cu_err_last()->msg);
        free(m->label);
        return rc;
    }
    /* Counted from here on, so that an abort removes the new pair. */
    k->n_keys++;
    const uint8_t *id = cu_object_id(obj, &m->id_len);
    if (m->id_len > sizeof m->id)
        m->id_len = sizeof m->id;
    memcpy(m->id, id, m->id_len);
    if ((m->uri = cu_object_uri(obj)) == NULL || (full = with_pin(k, m->uri)) == NULL) {
        rc = cu_cli_fail("out of memory");
    } else if ((m->key = store_load(full, why, sizeof why)) == NULL) {
        rc = cu_cli_fail("%s: the custos provider cannot use the new key %s: %s", name, m->uri, why);
    }
    clear_free(full);
    cu_object_free(obj);
    *_key = m->key;
    return rc;
}

/* From the newest: the key asked for is nearly always one just made. */
static made_key *find_made(cu_pki_keys *k, const EVP_PKEY *key)
{
    for (size_t i = k->n_keys; i-- > 0;)
        if (k->keys[i].key == key)
            return &k->keys[i];
    return NULL;
}

void cu_pki_keys_release(cu_pki_keys *k, EVP_PKEY *key)
{
    made_key *m = find_made(k, key);
    if (m != NULL) {
        EVP_PKEY_free(m->key);
        m->key = NULL;
    }
}


int cu_pki_keys_write_cert(cu_pki_keys *k, const char *path, X509 *cert, bool append)
{
    int rc = note_new_file(k, path);
    if (rc == CU_EXIT_OK && cu_pki_write_cert(path, cert, append) != CU_OK)
        rc = cu_cli_fail("%s", cu_err_last()->msg);
    return rc;
}

int cu_pki_keys_mkdir(cu_pki_keys *k, const char *dir)
{
    if (mkdir(dir, 0755) == 0)
        return add_path(k, dir, true) ? CU_EXIT_OK : cu_cli_fail("out of memory");
    if (errno == EEXIST) {
        struct stat st;
        if (stat(dir, &st) == 0 && S_ISDIR(st.st_mode))
            return CU_EXIT_OK;
        return cu_cli_fail("cannot create %s: it exists and is not a directory", dir);
    }
    return cu_cli_fail("cannot create %s: %s", dir, strerror(errno));
}

int cu_pki_keys_save(cu_pki_keys *k, const char *path_prefix, X509 *cert, EVP_PKEY *key)
{
    char path[4096];
    int rc;
    made_key *m = find_made(k, key);
    if (m == NULL)
        return cu_cli_fail("internal error: a key this run did not make");
    snprintf(path, sizeof path, "%s.pem", path_prefix);
    if ((rc = cu_pki_keys_write_cert(k, path, cert, false)) != CU_EXIT_OK)
        return rc;
    if (!k->token) {
        snprintf(path, sizeof path, "%s.key", path_prefix);
        if ((rc = note_new_file(k, path)) == CU_EXIT_OK && cu_pki_write_key(path, key) != CU_OK)
            rc = cu_cli_fail("%s", cu_err_last()->msg);
        if (rc == CU_EXIT_OK && m->file == NULL && (m->file = strdup(path)) == NULL)
            rc = cu_cli_fail("out of memory");
        return rc;
    }
    unsigned char *der = NULL;
    int len = i2d_X509(cert, &der);
    cu_object *obj = NULL;
    if (len <= 0) {
        ERR_clear_error();
        return cu_cli_fail("cannot encode the certificate of %s", m->label);
    }
    /* The certificate beside its key: same label and CKA_ID, as PKCS#11
     * applications expect to find a key's certificate. */
    if (cu_token_import_cert(k->t.tok, der, (size_t)len, m->label, m->id, m->id_len, &obj) != CU_OK)
        rc = cu_cli_fail("%s: cannot store the certificate on the token: %s", m->label, cu_err_last()->msg);
    OPENSSL_free(der);
    cu_object_free(obj);
    if (rc != CU_EXIT_OK)
        return rc;
    snprintf(path, sizeof path, "%s.uri", path_prefix);
    if ((rc = note_new_file(k, path)) != CU_EXIT_OK)
        return rc;
    FILE *f = fopen(path, "w");
    if (f == NULL)
        return cu_cli_fail("cannot write %s: %s", path, strerror(errno));
    fprintf(f, "%s\n", m->uri);
    if (fclose(f) != 0)
        return cu_cli_fail("cannot write %s: %s", path, strerror(errno));
    return CU_EXIT_OK;
}

int cu_pki_keys_load(cu_pki_keys *k, const char *spec, EVP_PKEY **_key)
{
    char why[256];
    *_key = NULL;
    if (strncmp(spec, "pkcs11:", 7) != 0) {
        if (cu_pki_read_key(spec, _key) != CU_OK)
            return cu_cli_fail("%s", cu_err_last()->msg);
        return CU_EXIT_OK;
    }
    if (cu_keyring_provider_load(NULL) != CU_OK)
        return cu_cli_fail("%s", cu_err_last()->msg);
    char *full = with_pin(k, spec);
    if (full == NULL)
        return cu_cli_fail("out of memory");
    *_key = store_load(full, why, sizeof why);
    clear_free(full);
    if (*_key == NULL) {
        /* The URI without its query: no PIN in the message. */
        return cu_cli_fail("cannot load the key %.*s: %s", (int)strcspn(spec, "?"), spec, why);
    }
    return CU_EXIT_OK;
}

void cu_pki_keys_print(const cu_pki_keys *k, FILE *f)
{
    for (size_t i = 0; k->token && i < k->n_keys; i++)
        fprintf(f, "  %-24s %s\n", k->keys[i].label, k->keys[i].uri ? k->keys[i].uri : "");
}

void cu_pki_keys_print_json(const cu_pki_keys *k, FILE *f)
{
    fputs("[", f);
    for (size_t i = 0, n = 0; i < k->n_keys; i++) {
        const made_key *m = &k->keys[i];
        if ((k->token ? m->uri : m->file) == NULL)
            continue; /* a throw-away key (a proof's) */
        fprintf(f, "%s{\"%s\":", n++ ? "," : "", k->token ? "label" : "name");
        cu_cli_json_str(f, m->label);
        fprintf(f, ",\"%s\":", k->token ? "uri" : "file");
        cu_cli_json_str(f, k->token ? m->uri : m->file);
        fputs("}", f);
    }
    fputs("]", f);
}

void cu_pki_keys_abort(cu_pki_keys *k)
{
    if (k == NULL)
        return;
    for (size_t i = k->n_keys; k->token && i-- > 0;) {
        /* Every object with the key's CKA_ID: private, public, certificate. */
        made_key *m = &k->keys[i];
        char *enc = pct_bytes(m->id, m->id_len), *uri = NULL;
        cu_object **objs = NULL;
        size_t n = 0;
        if (m->id_len > 0 && enc != NULL && asprintf(&uri, "pkcs11:id=%s", enc) >= 0 &&
            cu_token_find_all(k->t.tok, uri, CU_CLASS_ANY, &objs, &n) == CU_OK) {
            for (size_t j = 0; j < n; j++)
                (void)cu_object_destroy(objs[j]);
        }
        cu_objects_free(objs, n);
        free(uri);
        free(enc);
    }
    for (size_t i = k->n_paths; i-- > 0;) {
        if (k->is_dir[i])
            (void)rmdir(k->paths[i]);
        else
            (void)unlink(k->paths[i]);
    }
}

void cu_pki_keys_free(cu_pki_keys *k)
{
    if (k == NULL)
        return;
    for (size_t i = 0; i < k->n_keys; i++) {
        EVP_PKEY_free(k->keys[i].key);
        free(k->keys[i].label);
        free(k->keys[i].uri);
        free(k->keys[i].file);
    }
    free(k->keys);
    for (size_t i = 0; i < k->n_paths; i++)
        free(k->paths[i]);
    free(k->paths);
    free(k->is_dir);
    clear_free(k->pin_query);
    if (k->token)
        cu_tok_target_free(&k->t);
    free(k);
}
