/* Slots, tokens, PINs and login; loading token objects from the store.
 *
 * Keys at rest: each token has a random 256-bit data key (DEK) that seals
 * every secret. The DEK exists only wrapped (AES-256-GCM) under the key
 * PBKDF2-HMAC-SHA256 derives from the user PIN. The SO PIN protects only a
 * check value: the SO can re-initialize the user PIN but never reads the
 * user's keys, so C_InitPIN on a token whose user PIN is already set destroys
 * the objects sealed under the old DEK.
 *
 * C_SetPIN rotates the DEK and re-seals every secret, crash-safely: (1) the
 * token record gets the new DEK and keeps the old one, both wrapped under
 * the new PIN; (2) each object record is re-sealed under the new DEK; (3) the
 * old DEK is dropped. A login that finds two DEKs finishes steps 2 and 3.
 *
 * All of this runs under cs_g.lock held exclusively; file changes also hold
 * the token directory's flock, against other processes. */
#include "soft.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define TOKEN_FILE "token.der"

/* ---- configuration ---- */

static CK_RV parse_u32(const char *s, uint32_t *_v)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v > UINT32_MAX)
        return CKR_ARGUMENTS_BAD;
    *_v = (uint32_t)v;
    return CKR_OK;
}

static char *trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1]))
        *--e = '\0';
    return s;
}

static CK_RV config_file(cs_config *cfg, const char *path, bool *_memory)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        cs_log("cannot read config %s: %s", path, strerror(errno));
        return CKR_GENERAL_ERROR;
    }
    char line[PATH_MAX + 64];
    CK_RV rv = CKR_OK;
    unsigned lineno = 0;
    while (rv == CKR_OK && fgets(line, sizeof line, f) != NULL) {
        lineno++;
        char *s = trim(line);
        if (*s == '\0' || *s == '#')
            continue;
        char *eq = strchr(s, '=');
        if (eq == NULL) {
            cs_log("%s:%u: expected key = value", path, lineno);
            rv = CKR_GENERAL_ERROR;
            break;
        }
        *eq = '\0';
        char *key = trim(s), *val = trim(eq + 1);
        if (strcmp(key, "directory") == 0) {
            free(cfg->dir);
            cfg->dir = strdup(val);
            if (cfg->dir == NULL)
                rv = CKR_HOST_MEMORY;
        } else if (strcmp(key, "pbkdf2_iterations") == 0) {
            rv = parse_u32(val, &cfg->iterations);
        } else if (strcmp(key, "max_pin_attempts") == 0) {
            rv = parse_u32(val, &cfg->max_attempts);
        } else if (strcmp(key, "memory") == 0) {
            *_memory = strcmp(val, "yes") == 0 || strcmp(val, "true") == 0 || strcmp(val, "1") == 0;
        } else {
            cs_log("%s:%u: unknown key '%s'", path, lineno, key);
            rv = CKR_GENERAL_ERROR;
        }
        if (rv != CKR_OK && rv != CKR_HOST_MEMORY) {
            cs_log("%s:%u: bad value for '%s'", path, lineno, key);
            rv = CKR_GENERAL_ERROR;
        }
    }
    fclose(f);
    return rv;
}

CK_RV cs_config_load(cs_config *cfg)
{
    bool memory = false;
    CK_RV rv;
    memset(cfg, 0, sizeof *cfg);
    cfg->iterations = CS_DEFAULT_PBKDF2_ITERATIONS;
    cfg->max_attempts = CS_DEFAULT_MAX_PIN_ATTEMPTS;

    const char *conf = getenv("CUSTOS_SOFT_CONF");
    if (conf != NULL && *conf != '\0' && (rv = config_file(cfg, conf, &memory)) != CKR_OK)
        goto fail;
    const char *dir = getenv("CUSTOS_SOFT_DIR");
    if (dir != NULL && *dir != '\0') {
        free(cfg->dir);
        cfg->dir = strdup(dir);
        if (cfg->dir == NULL) {
            rv = CKR_HOST_MEMORY;
            goto fail;
        }
    }
    const char *it = getenv("CUSTOS_SOFT_PBKDF2_ITERATIONS");
    if (it != NULL && *it != '\0' && parse_u32(it, &cfg->iterations) != CKR_OK) {
        cs_log("CUSTOS_SOFT_PBKDF2_ITERATIONS: not a number");
        rv = CKR_GENERAL_ERROR;
        goto fail;
    }
    const char *ma = getenv("CUSTOS_SOFT_MAX_PIN_ATTEMPTS");
    if (ma != NULL && *ma != '\0' && parse_u32(ma, &cfg->max_attempts) != CKR_OK) {
        cs_log("CUSTOS_SOFT_MAX_PIN_ATTEMPTS: not a number");
        rv = CKR_GENERAL_ERROR;
        goto fail;
    }
    if (cfg->iterations < CS_MIN_PBKDF2_ITERATIONS) {
        cs_log("pbkdf2_iterations %u is below the floor %u", cfg->iterations,
               CS_MIN_PBKDF2_ITERATIONS);
        rv = CKR_GENERAL_ERROR;
        goto fail;
    }
    if (cfg->max_attempts < 1 || cfg->max_attempts > 1000) {
        cs_log("max_pin_attempts must be 1..1000");
        rv = CKR_GENERAL_ERROR;
        goto fail;
    }
    if (memory) {
        free(cfg->dir);
        cfg->dir = NULL;
    }
    return CKR_OK;
fail:
    cs_config_clear(cfg);
    return rv;
}

void cs_config_clear(cs_config *cfg)
{
    free(cfg->dir);
    memset(cfg, 0, sizeof *cfg);
}

/* ---- helpers ---- */

static CK_SLOT_ID slot_id_for(const char *serial)
{
    char buf[9];
    memcpy(buf, serial, 8);
    buf[8] = '\0';
    return (CK_SLOT_ID)(strtoul(buf, NULL, 16) & 0x7fffffffUL);
}

static bool slot_id_used(CK_SLOT_ID id)
{
    for (size_t i = 0; i < cs_g.nslots; i++)
        if (cs_g.slots[i].id == id)
            return true;
    return false;
}

static CK_RV new_serial(char serial[CS_SERIAL_LEN + 1])
{
    unsigned char b[CS_SERIAL_LEN / 2];
    for (int tries = 0; tries < 16; tries++) {
        if (cs_random(b, sizeof b) != CKR_OK)
            return CKR_FUNCTION_FAILED;
        for (size_t i = 0; i < sizeof b; i++)
            snprintf(serial + 2 * i, 3, "%02x", b[i]);
        CK_SLOT_ID id = slot_id_for(serial);
        if (id != 0 && !slot_id_used(id))
            return CKR_OK;
    }
    return CKR_FUNCTION_FAILED;
}

static void hexify(char *out, const unsigned char *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        snprintf(out + 2 * i, 3, "%02x", b[i]);
}

bool cs_token_logged_in(const cs_token *tok)
{
    return tok->login == CKU_USER || tok->login == CKU_SO;
}

/* Associated data for a wrapped key: binds it to token, role and generation. */
static size_t wrap_aad(char *buf, size_t n, const cs_token_rec *r, const char *who, uint32_t gen)
{
    int l = snprintf(buf, n, "custos-soft key|%s|%s|%u", r->serial, who, gen);
    return l > 0 ? (size_t)l : 0;
}

static CK_RV wrap_key(const unsigned char kek[CS_KEY_LEN], const cs_token_rec *r,
                      const char *who, uint32_t gen, const unsigned char key[CS_KEY_LEN],
                      cs_sealed *out)
{
    char aad[96];
    size_t al = wrap_aad(aad, sizeof aad, r, who, gen);
    return cs_seal(kek, gen, aad, al, key, CS_KEY_LEN, out);
}

static CK_RV unwrap_key(const unsigned char kek[CS_KEY_LEN], const cs_token_rec *r,
                        const char *who, const cs_sealed *s, unsigned char key[CS_KEY_LEN])
{
    char aad[96];
    unsigned char *pt = NULL;
    size_t len = 0;
    size_t al = wrap_aad(aad, sizeof aad, r, who, s->generation);
    CK_RV rv = cs_open(kek, aad, al, s, &pt, &len);
    if (rv != CKR_OK)
        return rv;
    if (len != CS_KEY_LEN) {
        OPENSSL_clear_free(pt, len);
        return CKR_ENCRYPTED_DATA_INVALID;
    }
    memcpy(key, pt, CS_KEY_LEN);
    OPENSSL_clear_free(pt, len);
    return CKR_OK;
}

static void pin_slot_clear(cs_pin_slot *p)
{
    for (size_t i = 0; i < 2; i++)
        cs_sealed_clear(&p->keys[i]);
    memset(p, 0, sizeof *p);
}

/* Fills a PIN slot: fresh salt, the configured iterations, keys wrapped. */
static CK_RV pin_slot_make(cs_pin_slot *p, const cs_token_rec *r, const char *who,
                           const unsigned char *pin, size_t pin_len, size_t nkeys,
                           const uint32_t *gens, unsigned char keys[][CS_KEY_LEN])
{
    unsigned char kek[CS_KEY_LEN];
    CK_RV rv;
    memset(p, 0, sizeof *p);
    p->present = true;
    p->iterations = cs_g.cfg.iterations;
    if ((rv = cs_random(p->salt, sizeof p->salt)) != CKR_OK)
        return rv;
    if ((rv = cs_pbkdf2(pin, pin_len, p->salt, p->iterations, kek)) != CKR_OK)
        return rv;
    for (size_t i = 0; i < nkeys; i++) {
        if ((rv = wrap_key(kek, r, who, gens[i], keys[i], &p->keys[i])) != CKR_OK)
            break;
        p->nkeys++;
    }
    OPENSSL_cleanse(kek, sizeof kek);
    if (rv != CKR_OK)
        pin_slot_clear(p);
    return rv;
}

static char *path_join(const char *a, const char *b)
{
    size_t n = strlen(a) + strlen(b) + 2;
    char *p = malloc(n);
    if (p != NULL)
        snprintf(p, n, "%s/%s", a, b);
    return p;
}

/* ---- token record I/O ---- */

static CK_RV rec_write(cs_token *tok)
{
    unsigned char *der = NULL;
    size_t len = 0;
    if (tok->dir == NULL)
        return CKR_OK;
    cs_rec_err e = cs_token_rec_encode(&tok->rec, &der, &len);
    if (e != CS_REC_OK)
        return CKR_HOST_MEMORY;
    CK_RV rv = cs_store_write(tok->dir, TOKEN_FILE, der, len);
    OPENSSL_free(der);
    if (rv == CKR_OK) {
        struct stat st;
        char *p = path_join(tok->dir, TOKEN_FILE);
        if (p != NULL && stat(p, &st) == 0) {
            tok->rec_ino = st.st_ino;
            tok->rec_mtime = st.st_mtim;
        }
        free(p);
    } else {
        cs_log("token %s: cannot write %s/%s", tok->rec.serial, tok->dir, TOKEN_FILE);
    }
    return rv;
}

/* Re-reads token.der if it changed (another process logged in, failed a
 * PIN, changed a PIN). */
static CK_RV rec_reload(cs_token *tok, bool force)
{
    unsigned char *der = NULL;
    size_t len = 0;
    struct stat st;
    cs_token_rec r;
    if (tok->dir == NULL || !tok->initialized)
        return CKR_OK;
    char *p = path_join(tok->dir, TOKEN_FILE);
    if (p == NULL)
        return CKR_HOST_MEMORY;
    if (!force && stat(p, &st) == 0 && st.st_ino == tok->rec_ino &&
        st.st_mtim.tv_sec == tok->rec_mtime.tv_sec &&
        st.st_mtim.tv_nsec == tok->rec_mtime.tv_nsec) {
        free(p);
        return CKR_OK;
    }
    CK_RV rv = cs_store_read(p, &der, &len, &st);
    if (rv == CKR_DATA_LEN_RANGE)
        cs_report("token %s: %s: empty or oversized (corrupt or truncated); token ignored",
                  tok->rec.serial, p);
    else if (rv != CKR_OK)
        cs_log("token %s: cannot read %s", tok->rec.serial, p);
    if (rv != CKR_OK) {
        free(p);
        return CKR_DEVICE_ERROR;
    }
    cs_rec_err e = cs_token_rec_decode(der, len, &r);
    free(der);
    if (e != CS_REC_OK || strcmp(r.serial, tok->rec.serial) != 0) {
        cs_report("token %s: %s: %s; token ignored", tok->rec.serial, p,
                  e != CS_REC_OK ? cs_rec_err_str(e) : "serial does not match its directory");
        free(p);
        if (e == CS_REC_OK)
            cs_token_rec_clear(&r);
        return CKR_DEVICE_ERROR;
    }
    free(p);
    cs_token_rec_clear(&tok->rec);
    tok->rec = r;
    tok->rec_ino = st.st_ino;
    tok->rec_mtime = st.st_mtim;
    return CKR_OK;
}

/* ---- objects on disk ---- */

static cs_object *token_find_id(cs_token *tok, const char *id)
{
    for (size_t i = 0; i < tok->nobjs; i++)
        if (strcmp(tok->objs[i]->id, id) == 0)
            return tok->objs[i];
    return NULL;
}

static const unsigned char *dek_for(cs_token *tok, uint32_t gen)
{
    for (size_t i = 0; i < tok->ndek; i++)
        if (tok->dek_gen[i] == gen)
            return tok->dek[i];
    return NULL;
}

static const char *obj_label(const cs_object *o, char *buf, size_t n)
{
    const cs_attr *l = cs_attrs_get(&o->attrs, CKA_LABEL);
    size_t len = l ? l->len : 0;
    if (len >= n)
        len = n - 1;
    for (size_t i = 0; i < len; i++)
        buf[i] = isprint(l->val[i]) ? (char)l->val[i] : '?';
    buf[len] = '\0';
    return buf;
}

/* Opens an object's sealed secret with the token's data key. */
static CK_RV open_secret(cs_token *tok, cs_object *o, const unsigned char *aad, size_t aad_len)
{
    unsigned char *pt = NULL;
    size_t len = 0;
    char lb[40];
    const unsigned char *dek = dek_for(tok, o->sealed.generation);
    if (dek == NULL) {
        /* Sealed under a data key we were not given (another process changed
         * the PIN since our login): keep what we had, if anything. */
        cs_log("token %s: object obj-%s ('%s'): sealed under key generation %u, not ours; "
               "log in again",
               tok->rec.serial, o->id, obj_label(o, lb, sizeof lb), o->sealed.generation);
        return CKR_USER_NOT_LOGGED_IN;
    }
    CK_RV rv = cs_open(dek, aad, aad_len, &o->sealed, &pt, &len);
    if (rv != CKR_OK) {
        o->broken = true;
        cs_report("token %s: object obj-%s ('%s'): secret fails authentication: record edited, "
                  "swapped or corrupt; object ignored",
                  tok->rec.serial, o->id, obj_label(o, lb, sizeof lb));
        return CKR_ENCRYPTED_DATA_INVALID;
    }
    rv = cs_object_set_secret(o, pt, len);
    if (rv != CKR_OK) {
        o->broken = true;
        cs_report("token %s: object obj-%s ('%s'): secret is not a valid key; object ignored",
                  tok->rec.serial, o->id, obj_label(o, lb, sizeof lb));
    } else {
        o->authentic = true;
    }
    return rv;
}

/* The associated data of a stored object's secret: its header's DER, which
 * re-encoding gives back exactly (DER is deterministic, attribute order is
 * kept from the file). */
static CK_RV object_aad(cs_token *tok, cs_object *o, unsigned char **_aad, size_t *_len)
{
    cs_object_rec r;
    unsigned char *der = NULL;
    size_t len = 0;
    memset(&r, 0, sizeof r);
    memcpy(r.serial, tok->rec.serial, CS_SERIAL_LEN);
    memcpy(r.id, o->id, CS_OBJID_LEN);
    r.attrs = o->attrs; /* borrowed */
    r.has_secret = true;
    r.secret = o->sealed; /* borrowed */
    cs_rec_err e = cs_object_rec_encode(&r, NULL, NULL, 0, &der, &len);
    OPENSSL_free(der);
    *_aad = r.aad;
    *_len = r.aad_len;
    return e == CS_REC_OK ? CKR_OK : CKR_HOST_MEMORY;
}

/* Loads (or reloads in place) one object file. */
static CK_RV load_object_file(cs_token *tok, const char *name, const char *id)
{
    unsigned char *der = NULL;
    size_t len = 0;
    struct stat st;
    cs_object_rec r;
    cs_object *o = token_find_id(tok, id);
    char *path = path_join(tok->dir, name);
    CK_RV rv;

    if (path == NULL)
        return CKR_HOST_MEMORY;
    if (o != NULL && stat(path, &st) == 0 && st.st_ino == o->ino && st.st_size == o->size &&
        st.st_mtim.tv_sec == o->mtime.tv_sec && st.st_mtim.tv_nsec == o->mtime.tv_nsec) {
        o->seen = true;
        free(path);
        return CKR_OK;
    }
    rv = cs_store_read(path, &der, &len, &st);
    if (rv != CKR_OK) {
        if (rv == CKR_DATA_LEN_RANGE)
            cs_report("token %s: object obj-%s (%s): empty or oversized (corrupt or truncated); "
                      "object ignored", tok->rec.serial, id, path);
        else if (rv != CKR_OBJECT_HANDLE_INVALID)
            cs_log("token %s: cannot read object file %s", tok->rec.serial, path);
        free(path);
        return rv;
    }
    cs_rec_err e = cs_object_rec_decode(der, len, &r);
    free(der);
    if (e == CS_REC_OK &&
        (strcmp(r.serial, tok->rec.serial) != 0 || strcmp(r.id, id) != 0)) {
        cs_report("token %s: object obj-%s (%s): record belongs to token %s object %s; ignored",
                  tok->rec.serial, id, path, r.serial, r.id);
        cs_object_rec_clear(&r);
        free(path);
        return CKR_DEVICE_ERROR;
    }
    if (e != CS_REC_OK) {
        cs_report("token %s: object obj-%s (%s): %s; object ignored", tok->rec.serial, id, path,
                  cs_rec_err_str(e));
        free(path);
        if (o != NULL)
            o->seen = false; /* drop the stale copy */
        return CKR_DEVICE_ERROR;
    }
    free(path);

    bool fresh = (o == NULL);
    if (fresh) {
        o = cs_object_new();
        if (o == NULL) {
            cs_object_rec_clear(&r);
            return CKR_HOST_MEMORY;
        }
        o->tok = tok;
        memcpy(o->id, id, CS_OBJID_LEN + 1);
    }
    /* A re-sealed copy of the same key (PIN change elsewhere) keeps our
     * plaintext if we cannot open the new one, and stays visible only if
     * its attributes are those we had authenticated. */
    bool still_authentic = !fresh && o->authentic && cs_attrs_equal(&o->attrs, &r.attrs);
    cs_attrs_clear(&o->attrs);
    o->attrs = r.attrs;
    memset(&r.attrs, 0, sizeof r.attrs);
    cs_sealed_clear(&o->sealed);
    o->has_secret = r.has_secret;
    o->sealed = r.secret;
    memset(&r.secret, 0, sizeof r.secret);
    o->broken = false;
    o->ino = st.st_ino;
    o->size = st.st_size;
    o->mtime = st.st_mtim;
    o->seen = true;
    o->authentic = false;
    if (o->has_secret && tok->login == CKU_USER) {
        CK_RV orv = open_secret(tok, o, r.aad, r.aad_len);
        if (orv == CKR_USER_NOT_LOGGED_IN)
            o->authentic = still_authentic && o->secret != NULL;
        else if (orv != CKR_OK)
            cs_object_forget_secret(o);
    } else if (!o->has_secret) {
        cs_object_forget_secret(o);
        /* public keys: cache the EVP_PKEY for verification */
        cs_object_set_secret(o, NULL, 0);
    }
    cs_object_rec_clear(&r);
    if (fresh) {
        rv = cs_token_add_object(tok, o);
        if (rv != CKR_OK) {
            cs_object_free(o);
            return rv;
        }
    }
    return CKR_OK;
}

static void remove_object_at(cs_token *tok, size_t i)
{
    cs_object *o = tok->objs[i];
    tok->objs[i] = tok->objs[--tok->nobjs];
    cs_handle_remove(o);
    cs_object_free(o);
}

/* Scans the token directory for objects added, changed or removed. */
static CK_RV scan_objects(cs_token *tok, bool force)
{
    struct stat st;
    if (tok->dir == NULL || !tok->initialized)
        return CKR_OK;
    if (stat(tok->dir, &st) != 0) {
        cs_log("token %s: directory %s is gone", tok->rec.serial, tok->dir);
        return CKR_DEVICE_ERROR;
    }
    if (!force && st.st_mtim.tv_sec == tok->dir_mtime.tv_sec &&
        st.st_mtim.tv_nsec == tok->dir_mtime.tv_nsec)
        return CKR_OK;
    DIR *d = opendir(tok->dir);
    if (d == NULL)
        return CKR_DEVICE_ERROR;
    for (size_t i = 0; i < tok->nobjs; i++)
        tok->objs[i]->seen = false;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        const char *n = e->d_name;
        size_t l = strlen(n);
        if (l != 4 + CS_OBJID_LEN + 4 || strncmp(n, "obj-", 4) != 0 ||
            strcmp(n + l - 4, ".der") != 0)
            continue;
        char id[CS_OBJID_LEN + 1];
        memcpy(id, n + 4, CS_OBJID_LEN);
        id[CS_OBJID_LEN] = '\0';
        load_object_file(tok, n, id); /* failures are logged; the object is skipped */
    }
    closedir(d);
    for (size_t i = tok->nobjs; i-- > 0;)
        if (!tok->objs[i]->seen)
            remove_object_at(tok, i);
    tok->dir_mtime = st.st_mtim;
    return CKR_OK;
}

CK_RV cs_token_sync(cs_token *tok)
{
    CK_RV rv = rec_reload(tok, false);
    if (rv != CKR_OK)
        return rv;
    return scan_objects(tok, false);
}

CK_RV cs_token_add_object(cs_token *tok, cs_object *o)
{
    if (tok->nobjs == tok->capobjs) {
        size_t cap = tok->capobjs ? tok->capobjs * 2 : 16;
        cs_object **n = realloc(tok->objs, cap * sizeof *n);
        if (n == NULL)
            return CKR_HOST_MEMORY;
        tok->objs = n;
        tok->capobjs = cap;
    }
    CK_RV rv = cs_handle_add(o);
    if (rv != CKR_OK)
        return rv;
    tok->objs[tok->nobjs++] = o;
    return CKR_OK;
}

/* Writes a token object's record; seals its secret with the current DEK.
 * Must hold the directory lock (done here). */
static CK_RV store_object_locked(cs_token *tok, cs_object *o)
{
    cs_object_rec r;
    unsigned char *der = NULL;
    size_t len = 0;
    CK_RV rv;
    memset(&r, 0, sizeof r);
    memcpy(r.serial, tok->rec.serial, CS_SERIAL_LEN);
    memcpy(r.id, o->id, CS_OBJID_LEN);
    r.attrs = o->attrs; /* borrowed */
    const unsigned char *key = NULL;
    if (o->has_secret) {
        if (tok->login != CKU_USER || tok->ndek == 0 || o->secret == NULL)
            return CKR_USER_NOT_LOGGED_IN;
        key = tok->dek[0];
        r.secret.generation = tok->dek_gen[0];
    }
    cs_rec_err e = cs_object_rec_encode(&r, key, o->secret, o->secret_len, &der, &len);
    memset(&r.attrs, 0, sizeof r.attrs);
    if (e != CS_REC_OK) {
        cs_object_rec_clear(&r);
        return CKR_HOST_MEMORY;
    }
    if (o->has_secret) {
        cs_sealed_clear(&o->sealed);
        o->sealed = r.secret;
        memset(&r.secret, 0, sizeof r.secret);
    }
    cs_object_rec_clear(&r);
    if (tok->dir != NULL) {
        char name[CS_OBJID_LEN + 16];
        snprintf(name, sizeof name, "obj-%s.der", o->id);
        rv = cs_store_write(tok->dir, name, der, len);
        if (rv == CKR_OK) {
            struct stat st;
            char *p = path_join(tok->dir, name);
            if (p != NULL && stat(p, &st) == 0) {
                o->ino = st.st_ino;
                o->size = st.st_size;
                o->mtime = st.st_mtim;
            }
            free(p);
        } else {
            cs_log("token %s: cannot store object obj-%s", tok->rec.serial, o->id);
        }
    } else {
        rv = CKR_OK;
    }
    OPENSSL_free(der);
    return rv;
}

/* Before writing a sealed record, check that no other process has rotated
 * the data key since our login (we would seal under a dropped key). */
static CK_RV check_generation(cs_token *tok)
{
    CK_RV rv = rec_reload(tok, false);
    if (rv != CKR_OK)
        return rv;
    if (tok->login == CKU_USER && tok->ndek > 0 && tok->dek_gen[0] != tok->rec.generation) {
        cs_log("token %s: the user PIN was changed by another process; log in again",
               tok->rec.serial);
        return CKR_USER_NOT_LOGGED_IN;
    }
    return CKR_OK;
}

CK_RV cs_token_store_object(cs_token *tok, cs_object *o)
{
    int lfd = -1;
    CK_RV rv;
    if (o->id[0] == '\0') {
        unsigned char b[CS_OBJID_LEN / 2];
        if ((rv = cs_random(b, sizeof b)) != CKR_OK)
            return rv;
        hexify(o->id, b, sizeof b);
    }
    if (tok->dir != NULL && (rv = cs_store_lock(tok->dir, &lfd)) != CKR_OK)
        return rv;
    rv = o->has_secret ? check_generation(tok) : CKR_OK;
    if (rv == CKR_OK)
        rv = store_object_locked(tok, o);
    cs_store_unlock(lfd);
    return rv;
}

CK_RV cs_token_delete_object(cs_token *tok, cs_object *o)
{
    CK_RV rv = CKR_OK;
    if (tok->dir != NULL) {
        char name[CS_OBJID_LEN + 16];
        snprintf(name, sizeof name, "obj-%s.der", o->id);
        rv = cs_store_unlink(tok->dir, name);
        if (rv != CKR_OK)
            return rv;
    }
    for (size_t i = 0; i < tok->nobjs; i++) {
        if (tok->objs[i] == o) {
            remove_object_at(tok, i);
            break;
        }
    }
    return rv;
}

/* ---- token lifecycle ---- */

static cs_token *token_new(void)
{
    cs_token *t = calloc(1, sizeof *t);
    if (t != NULL)
        t->login = (CK_USER_TYPE)-1;
    return t;
}

void cs_token_free(cs_token *tok)
{
    if (tok == NULL)
        return;
    for (size_t i = 0; i < tok->nobjs; i++) {
        cs_handle_remove(tok->objs[i]);
        cs_object_free(tok->objs[i]);
    }
    free(tok->objs);
    cs_token_rec_clear(&tok->rec);
    OPENSSL_cleanse(tok->dek, sizeof tok->dek);
    free(tok->dir);
    free(tok);
}

static CK_RV add_slot(cs_token *tok)
{
    cs_slot *n = realloc(cs_g.slots, (cs_g.nslots + 1) * sizeof *n);
    if (n == NULL)
        return CKR_HOST_MEMORY;
    cs_g.slots = n;
    CK_SLOT_ID id = slot_id_for(tok->rec.serial);
    while (id == 0 || slot_id_used(id))
        id = (id + 1) & 0x7fffffffUL; /* a 31-bit clash: practically never */
    cs_g.slots[cs_g.nslots].id = id;
    cs_g.slots[cs_g.nslots].tok = tok;
    cs_g.nslots++;
    return CKR_OK;
}

/* The one slot without a token, where C_InitToken makes a new one. Its
 * token serial (and so its slot ID) is chosen now, so the ID stays the same
 * before and after initialization. */
static CK_RV add_empty_slot(void)
{
    cs_token *t = token_new();
    if (t == NULL)
        return CKR_HOST_MEMORY;
    CK_RV rv = new_serial(t->rec.serial);
    if (rv == CKR_OK)
        rv = add_slot(t);
    if (rv != CKR_OK)
        cs_token_free(t);
    return rv;
}

static bool have_empty_slot(void)
{
    for (size_t i = 0; i < cs_g.nslots; i++)
        if (!cs_g.slots[i].tok->initialized)
            return true;
    return false;
}

static bool have_serial(const char *serial)
{
    for (size_t i = 0; i < cs_g.nslots; i++)
        if (strcmp(cs_g.slots[i].tok->rec.serial, serial) == 0)
            return true;
    return false;
}

/* Loads the token in store sub-directory `name`, if it is one. */
static CK_RV load_token_dir(const char *name)
{
    if (strlen(name) != CS_SERIAL_LEN || strspn(name, "0123456789abcdef") != CS_SERIAL_LEN ||
        have_serial(name))
        return CKR_OK;
    cs_token *t = token_new();
    if (t == NULL)
        return CKR_HOST_MEMORY;
    t->dir = path_join(cs_g.cfg.dir, name);
    if (t->dir == NULL) {
        cs_token_free(t);
        return CKR_HOST_MEMORY;
    }
    memcpy(t->rec.serial, name, CS_SERIAL_LEN + 1);
    t->initialized = true;
    CK_RV rv = rec_reload(t, true);
    if (rv != CKR_OK) {
        /* Not (yet) a token: half-made by a C_InitToken that is still
         * running or that crashed before writing token.der. */
        cs_token_free(t);
        return CKR_OK;
    }
    scan_objects(t, true);
    rv = add_slot(t);
    if (rv != CKR_OK)
        cs_token_free(t);
    return rv;
}

static CK_RV scan_store(void)
{
    if (cs_g.cfg.dir == NULL)
        return CKR_OK;
    DIR *d = opendir(cs_g.cfg.dir);
    if (d == NULL) {
        if (errno == ENOENT && cs_store_mkdir(cs_g.cfg.dir) == CKR_OK)
            return CKR_OK;
        cs_log("cannot open store %s: %s", cs_g.cfg.dir, strerror(errno));
        return CKR_OK; /* an unreadable store shows just the empty slot */
    }
    struct dirent *e;
    CK_RV rv = CKR_OK;
    /* Sorted, so that the slot order does not depend on the directory. */
    char **names = NULL;
    size_t n = 0;
    while ((e = readdir(d)) != NULL) {
        if (strlen(e->d_name) != CS_SERIAL_LEN)
            continue;
        char **nn = realloc(names, (n + 1) * sizeof *nn);
        if (nn == NULL)
            break;
        names = nn;
        names[n] = strdup(e->d_name);
        if (names[n] != NULL)
            n++;
    }
    closedir(d);
    for (size_t i = 0; i < n; i++)
        for (size_t j = i + 1; j < n; j++)
            if (strcmp(names[j], names[i]) < 0) {
                char *t = names[i];
                names[i] = names[j];
                names[j] = t;
            }
    for (size_t i = 0; i < n; i++) {
        if (rv == CKR_OK)
            rv = load_token_dir(names[i]);
        free(names[i]);
    }
    free(names);
    return rv;
}

CK_RV cs_slots_load(void)
{
    CK_RV rv = scan_store();
    if (rv == CKR_OK)
        rv = add_empty_slot();
    return rv;
}

CK_RV cs_slots_refresh(void)
{
    CK_RV rv = scan_store();
    if (rv == CKR_OK && !have_empty_slot())
        rv = add_empty_slot();
    /* Keep the empty slot last. */
    for (size_t i = 0; i + 1 < cs_g.nslots; i++) {
        if (!cs_g.slots[i].tok->initialized) {
            cs_slot s = cs_g.slots[i];
            memmove(&cs_g.slots[i], &cs_g.slots[i + 1], (cs_g.nslots - i - 1) * sizeof s);
            cs_g.slots[cs_g.nslots - 1] = s;
            break;
        }
    }
    return rv;
}

void cs_slots_free(void)
{
    for (size_t i = 0; i < cs_g.nslots; i++)
        cs_token_free(cs_g.slots[i].tok);
    free(cs_g.slots);
    cs_g.slots = NULL;
    cs_g.nslots = 0;
}

cs_slot *cs_slot_get(CK_SLOT_ID id)
{
    for (size_t i = 0; i < cs_g.nslots; i++)
        if (cs_g.slots[i].id == id)
            return &cs_g.slots[i];
    return NULL;
}

static CK_RV check_pin_len(size_t len)
{
    return (len < CS_MIN_PIN_LEN || len > CS_MAX_PIN_LEN) ? CKR_PIN_LEN_RANGE : CKR_OK;
}

/* Verifies a PIN against a slot, counting failures on disk. On success the
 * slot's wrapped keys are unwrapped into keys[] (if keys != NULL).
 * Caller holds the directory lock and has re-read the record. */
static CK_RV verify_pin(cs_token *tok, cs_pin_slot *p, const char *who, const unsigned char *pin,
                        size_t len, unsigned char keys[2][CS_KEY_LEN], uint32_t gens[2],
                        size_t *_n)
{
    unsigned char kek[CS_KEY_LEN];
    CK_RV rv;
    if (!p->present)
        return CKR_USER_PIN_NOT_INITIALIZED;
    if (p->failures >= tok->rec.max_attempts)
        return CKR_PIN_LOCKED;
    /* The attempt is counted as failed on disk before the PIN is tried, and
     * the count reset once it proves right: a store where the count cannot
     * be written refuses every login, or it would allow unlimited guesses
     * (also by a process killed between trying and counting). */
    p->failures++;
    if ((rv = rec_write(tok)) != CKR_OK) {
        p->failures--;
        cs_log("token %s: cannot record a %s login attempt; login refused", tok->rec.serial, who);
        return rv;
    }
    if ((rv = cs_pbkdf2(pin, len, p->salt, p->iterations, kek)) != CKR_OK)
        return rv;
    unsigned char tmp[2][CS_KEY_LEN];
    size_t n = 0;
    for (size_t i = 0; i < p->nkeys; i++) {
        rv = unwrap_key(kek, &tok->rec, who, &p->keys[i], tmp[i]);
        if (rv != CKR_OK)
            break;
        n++;
    }
    OPENSSL_cleanse(kek, sizeof kek);
    if (rv == CKR_ENCRYPTED_DATA_INVALID) {
        cs_log("token %s: wrong %s PIN (%u of %u)", tok->rec.serial, who, p->failures,
               tok->rec.max_attempts);
        OPENSSL_cleanse(tmp, sizeof tmp);
        return CKR_PIN_INCORRECT; /* already counted */
    }
    if (rv != CKR_OK) {
        OPENSSL_cleanse(tmp, sizeof tmp);
        return rv;
    }
    cs_pin_slot weak = *p;
    bool rewrapped = false;
    p->failures = 0;
    if (p->iterations < CS_MIN_PBKDF2_ITERATIONS) {
        /* Stored by an older version with a lower count: the PIN is right,
         * so wrap the same keys again with a fresh salt and today's count.
         * If that cannot be written, the login fails (docs/soft-keystore.md). */
        uint32_t g[2] = {0, 0};
        cs_pin_slot np;
        for (size_t i = 0; i < n; i++)
            g[i] = p->keys[i].generation;
        if ((rv = pin_slot_make(&np, &tok->rec, who, pin, len, n, g, tmp)) != CKR_OK) {
            p->failures = weak.failures;
            OPENSSL_cleanse(tmp, sizeof tmp);
            return rv;
        }
        cs_log("token %s: %s PIN was stored with %u PBKDF2 iterations; re-wrapped with %u",
               tok->rec.serial, who, p->iterations, np.iterations);
        *p = np;
        rewrapped = true;
    }
    if ((rv = rec_write(tok)) != CKR_OK) {
        /* as on disk: the attempt counted, the old slot */
        if (rewrapped)
            pin_slot_clear(p);
        *p = weak;
        OPENSSL_cleanse(tmp, sizeof tmp);
        return rv;
    }
    if (rewrapped)
        pin_slot_clear(&weak);
    if (keys != NULL) {
        memcpy(keys, tmp, sizeof tmp);
        for (size_t i = 0; i < n; i++)
            gens[i] = p->keys[i].generation;
        *_n = n;
    }
    OPENSSL_cleanse(tmp, sizeof tmp);
    return CKR_OK;
}

static void open_all_secrets(cs_token *tok)
{
    for (size_t i = 0; i < tok->nobjs; i++) {
        cs_object *o = tok->objs[i];
        if (!o->has_secret || o->broken)
            continue;
        unsigned char *aad = NULL;
        size_t aad_len = 0;
        object_aad(tok, o, &aad, &aad_len);
        if (aad != NULL)
            open_secret(tok, o, aad, aad_len);
        OPENSSL_free(aad);
    }
}

/* Steps 2 and 3 of a data-key rotation (see the top of this file). */
static CK_RV finish_rotation(cs_token *tok)
{
    CK_RV rv = CKR_OK;
    if (tok->rec.user.nkeys < 2)
        return CKR_OK;
    for (size_t i = 0; i < tok->nobjs; i++) {
        cs_object *o = tok->objs[i];
        if (!o->has_secret || o->broken || o->secret == NULL ||
            o->sealed.generation == tok->dek_gen[0])
            continue;
        if ((rv = store_object_locked(tok, o)) != CKR_OK)
            return rv;
    }
    cs_sealed_clear(&tok->rec.user.keys[1]);
    tok->rec.user.nkeys = 1;
    if ((rv = rec_write(tok)) != CKR_OK)
        return rv;
    OPENSSL_cleanse(tok->dek[1], CS_KEY_LEN);
    tok->ndek = 1;
    return CKR_OK;
}

CK_RV cs_token_login(cs_token *tok, CK_USER_TYPE who, const unsigned char *pin, size_t len)
{
    int lfd = -1;
    CK_RV rv;
    unsigned char keys[2][CS_KEY_LEN];
    uint32_t gens[2] = {0, 0};
    size_t n = 0;

    if (check_pin_len(len) != CKR_OK)
        return CKR_PIN_INCORRECT;
    if (tok->dir != NULL && (rv = cs_store_lock(tok->dir, &lfd)) != CKR_OK)
        return rv;
    if ((rv = rec_reload(tok, false)) != CKR_OK)
        goto cleanup;
    if (who == CKU_SO) {
        rv = verify_pin(tok, &tok->rec.so, "so", pin, len, NULL, NULL, NULL);
        if (rv == CKR_OK)
            tok->login = CKU_SO;
        goto cleanup;
    }
    if (!tok->rec.user.present) {
        rv = CKR_USER_PIN_NOT_INITIALIZED;
        goto cleanup;
    }
    rv = verify_pin(tok, &tok->rec.user, "user", pin, len, keys, gens, &n);
    if (rv != CKR_OK)
        goto cleanup;
    memcpy(tok->dek, keys, sizeof keys);
    memcpy(tok->dek_gen, gens, sizeof gens);
    tok->ndek = n;
    tok->login = CKU_USER;
    scan_objects(tok, false);
    open_all_secrets(tok);
    if (tok->rec.user.nkeys > 1) {
        cs_log("token %s: finishing an interrupted PIN change", tok->rec.serial);
        if (finish_rotation(tok) != CKR_OK)
            cs_log("token %s: could not finish an interrupted PIN change yet", tok->rec.serial);
    }
    rv = CKR_OK;
cleanup:
    OPENSSL_cleanse(keys, sizeof keys);
    cs_store_unlock(lfd);
    return rv;
}

void cs_token_logout(cs_token *tok)
{
    tok->login = (CK_USER_TYPE)-1;
    OPENSSL_cleanse(tok->dek, sizeof tok->dek);
    tok->ndek = 0;
    for (size_t i = 0; i < tok->nobjs; i++)
        if (tok->objs[i]->has_secret)
            cs_object_forget_secret(tok->objs[i]);
    /* PKCS#11: after a logout the application's handles to private objects
     * are invalid, even after the next login. Private session objects end
     * (every secret-bearing object is private, object.c refuses otherwise;
     * both are checked all the same); private token objects get new handles
     * (handles are never reused), as SoftHSM2 does. */
    for (size_t i = 0; i < cs_g.nhandles; i++) {
        cs_object *o = cs_g.handles[i];
        if (o != NULL && o->tok == tok && o->session != 0 &&
            (o->has_secret || cs_object_is_private(o))) {
            cs_g.handles[i] = NULL;
            cs_object_free(o);
        }
    }
    for (size_t i = tok->nobjs; i-- > 0;) {
        cs_object *o = tok->objs[i];
        if (!o->has_secret && !cs_object_is_private(o))
            continue;
        cs_handle_remove(o);
        if (cs_handle_add(o) != CKR_OK) {
            /* No memory for a handle: drop it; the next scan reloads it. */
            tok->objs[i] = tok->objs[--tok->nobjs];
            cs_object_free(o);
            memset(&tok->dir_mtime, 0, sizeof tok->dir_mtime);
        }
    }
}

CK_RV cs_token_init(cs_slot *slot, const unsigned char *so_pin, size_t so_len,
                    const unsigned char label[32])
{
    cs_token *tok = slot->tok;
    int lfd = -1;
    CK_RV rv;
    unsigned char check[1][CS_KEY_LEN];
    uint32_t gen0 = 0;

    if (check_pin_len(so_len) != CKR_OK)
        return CKR_PIN_LEN_RANGE;
    if (tok->initialized) {
        /* Re-initialization: the SO PIN must match; every object goes. */
        if (tok->dir != NULL && (rv = cs_store_lock(tok->dir, &lfd)) != CKR_OK)
            return rv;
        if ((rv = rec_reload(tok, false)) != CKR_OK)
            goto cleanup;
        if ((rv = verify_pin(tok, &tok->rec.so, "so", so_pin, so_len, NULL, NULL, NULL)) !=
            CKR_OK)
            goto cleanup;
        scan_objects(tok, true);
        while (tok->nobjs > 0) {
            cs_object *o = tok->objs[tok->nobjs - 1];
            if ((rv = cs_token_delete_object(tok, o)) != CKR_OK)
                goto cleanup;
        }
        cs_token_logout(tok);
    } else if (cs_g.cfg.dir != NULL) {
        char *dir = path_join(cs_g.cfg.dir, tok->rec.serial);
        if (dir == NULL)
            return CKR_HOST_MEMORY;
        rv = cs_store_mkdir(cs_g.cfg.dir);
        if (rv == CKR_OK)
            rv = cs_store_mkdir(dir);
        if (rv != CKR_OK) {
            free(dir);
            return rv;
        }
        tok->dir = dir;
        if ((rv = cs_store_lock(tok->dir, &lfd)) != CKR_OK)
            goto fail_new;
    }
    /* A fresh record: new SO PIN, no user PIN, no data key yet. */
    cs_token_rec r;
    memset(&r, 0, sizeof r);
    memcpy(r.serial, tok->rec.serial, sizeof r.serial);
    memcpy(r.label, label, sizeof r.label);
    r.max_attempts = cs_g.cfg.max_attempts;
    r.generation = 0;
    if ((rv = cs_random(check[0], CS_KEY_LEN)) != CKR_OK ||
        (rv = pin_slot_make(&r.so, &r, "so", so_pin, so_len, 1, &gen0, check)) != CKR_OK) {
        cs_token_rec_clear(&r);
        goto cleanup_new;
    }
    cs_token_rec_clear(&tok->rec);
    tok->rec = r;
    if ((rv = rec_write(tok)) != CKR_OK)
        goto cleanup_new;
    if (!tok->initialized && tok->dir != NULL) {
        struct stat st;
        if (stat(tok->dir, &st) == 0)
            tok->dir_mtime = st.st_mtim;
    }
    tok->initialized = true;
    rv = CKR_OK;
    goto cleanup;
cleanup_new:
    if (tok->initialized)
        goto cleanup;
fail_new:
    cs_store_unlock(lfd);
    lfd = -1;
    if (tok->dir != NULL) {
        cs_store_rmtree(tok->dir);
        free(tok->dir);
        tok->dir = NULL;
    }
cleanup:
    OPENSSL_cleanse(check, sizeof check);
    cs_store_unlock(lfd);
    return rv;
}

CK_RV cs_token_init_pin(cs_token *tok, const unsigned char *pin, size_t len)
{
    int lfd = -1;
    CK_RV rv;
    unsigned char dek[1][CS_KEY_LEN];
    if (check_pin_len(len) != CKR_OK)
        return CKR_PIN_LEN_RANGE;
    if (tok->dir != NULL && (rv = cs_store_lock(tok->dir, &lfd)) != CKR_OK)
        return rv;
    if ((rv = rec_reload(tok, false)) != CKR_OK)
        goto cleanup;
    if (tok->rec.user.present) {
        /* A reset: the SO never had the old data key, so the secrets sealed
         * under it are lost; remove their records rather than leave junk. */
        scan_objects(tok, true);
        for (size_t i = tok->nobjs; i-- > 0;) {
            if (tok->objs[i]->has_secret) {
                cs_log("token %s: user PIN reset by the SO: destroying obj-%s",
                       tok->rec.serial, tok->objs[i]->id);
                if ((rv = cs_token_delete_object(tok, tok->objs[i])) != CKR_OK)
                    goto cleanup;
            }
        }
    }
    uint32_t gen = tok->rec.generation + 1;
    cs_pin_slot p;
    if ((rv = cs_random(dek[0], CS_KEY_LEN)) != CKR_OK ||
        (rv = pin_slot_make(&p, &tok->rec, "user", pin, len, 1, &gen, dek)) != CKR_OK)
        goto cleanup;
    pin_slot_clear(&tok->rec.user);
    tok->rec.user = p;
    tok->rec.generation = gen;
    rv = rec_write(tok);
cleanup:
    OPENSSL_cleanse(dek, sizeof dek);
    cs_store_unlock(lfd);
    return rv;
}

CK_RV cs_token_set_pin(cs_token *tok, const unsigned char *old, size_t old_len,
                       const unsigned char *pin, size_t len)
{
    int lfd = -1;
    CK_RV rv;
    unsigned char keys[2][CS_KEY_LEN];
    uint32_t gens[2] = {0, 0};
    size_t n = 0;
    bool so = (tok->login == CKU_SO);
    bool temp_login = false;

    if (check_pin_len(len) != CKR_OK)
        return CKR_PIN_LEN_RANGE;
    if (check_pin_len(old_len) != CKR_OK)
        return CKR_PIN_INCORRECT;
    if (tok->dir != NULL && (rv = cs_store_lock(tok->dir, &lfd)) != CKR_OK)
        return rv;
    if ((rv = rec_reload(tok, false)) != CKR_OK)
        goto cleanup;
    if (so) {
        if ((rv = verify_pin(tok, &tok->rec.so, "so", old, old_len, keys, gens, &n)) != CKR_OK)
            goto cleanup;
        cs_pin_slot p;
        if ((rv = pin_slot_make(&p, &tok->rec, "so", pin, len, n, gens, keys)) != CKR_OK)
            goto cleanup;
        pin_slot_clear(&tok->rec.so);
        tok->rec.so = p;
        rv = rec_write(tok);
        goto cleanup;
    }
    if ((rv = verify_pin(tok, &tok->rec.user, "user", old, old_len, keys, gens, &n)) != CKR_OK)
        goto cleanup;
    /* Step 1: a new data key; the old one stays (wrapped under the new PIN)
     * until every record is re-sealed. */
    scan_objects(tok, false);
    if (tok->login != CKU_USER) {
        /* Not logged in (allowed by the spec): open secrets just for this. */
        memcpy(tok->dek, keys, sizeof keys);
        memcpy(tok->dek_gen, gens, sizeof gens);
        tok->ndek = n;
        tok->login = CKU_USER;
        open_all_secrets(tok);
        finish_rotation(tok);
        memcpy(keys, tok->dek, sizeof keys);
        memcpy(gens, tok->dek_gen, sizeof gens);
        n = tok->ndek;
        temp_login = true; /* log out again at the end */
    }
    unsigned char nk[2][CS_KEY_LEN];
    uint32_t ng[2];
    ng[0] = tok->rec.generation + 1;
    ng[1] = gens[0];
    memcpy(nk[1], keys[0], CS_KEY_LEN);
    if ((rv = cs_random(nk[0], CS_KEY_LEN)) != CKR_OK)
        goto cleanup_nk;
    cs_pin_slot p;
    if ((rv = pin_slot_make(&p, &tok->rec, "user", pin, len, 2, ng, nk)) != CKR_OK)
        goto cleanup_nk;
    cs_pin_slot saved = tok->rec.user;
    uint32_t saved_gen = tok->rec.generation;
    tok->rec.user = p;
    tok->rec.generation = ng[0];
    if ((rv = rec_write(tok)) != CKR_OK) {
        pin_slot_clear(&tok->rec.user);
        tok->rec.user = saved;
        tok->rec.generation = saved_gen;
        goto cleanup_nk;
    }
    pin_slot_clear(&saved);
    memcpy(tok->dek, nk, sizeof nk);
    memcpy(tok->dek_gen, ng, sizeof ng);
    tok->ndek = 2;
    /* Steps 2 and 3. If they fail half-way, the next login finishes. */
    rv = finish_rotation(tok);
cleanup_nk:
    OPENSSL_cleanse(nk, sizeof nk);
    if (temp_login)
        cs_token_logout(tok);
cleanup:
    OPENSSL_cleanse(keys, sizeof keys);
    cs_store_unlock(lfd);
    return rv;
}

void cs_token_info(cs_token *tok, CK_TOKEN_INFO *info)
{
    memset(info, 0, sizeof *info);
    memcpy(info->label, tok->rec.label, sizeof info->label);
    if (!tok->initialized)
        cs_pad(info->label, sizeof info->label, "");
    cs_pad(info->manufacturerID, sizeof info->manufacturerID, CS_MANUFACTURER);
    cs_pad(info->model, sizeof info->model, CS_MODEL);
    cs_pad(info->serialNumber, sizeof info->serialNumber, tok->rec.serial);
    info->flags = CKF_RNG | CKF_LOGIN_REQUIRED | CKF_RESTORE_KEY_NOT_NEEDED;
    if (tok->initialized) {
        info->flags |= CKF_TOKEN_INITIALIZED;
        const cs_pin_slot *u = &tok->rec.user, *s = &tok->rec.so;
        uint32_t max = tok->rec.max_attempts;
        if (u->present) {
            info->flags |= CKF_USER_PIN_INITIALIZED;
            if (u->failures >= max)
                info->flags |= CKF_USER_PIN_LOCKED;
            else if (u->failures + 1 == max)
                info->flags |= CKF_USER_PIN_FINAL_TRY;
            else if (u->failures > 0)
                info->flags |= CKF_USER_PIN_COUNT_LOW;
        }
        if (s->failures >= max)
            info->flags |= CKF_SO_PIN_LOCKED;
        else if (s->failures + 1 == max)
            info->flags |= CKF_SO_PIN_FINAL_TRY;
        else if (s->failures > 0)
            info->flags |= CKF_SO_PIN_COUNT_LOW;
    }
    info->ulMaxSessionCount = CK_EFFECTIVELY_INFINITE;
    info->ulMaxRwSessionCount = CK_EFFECTIVELY_INFINITE;
    info->ulSessionCount = CK_UNAVAILABLE_INFORMATION;
    info->ulRwSessionCount = CK_UNAVAILABLE_INFORMATION;
    info->ulMaxPinLen = CS_MAX_PIN_LEN;
    info->ulMinPinLen = CS_MIN_PIN_LEN;
    info->ulTotalPublicMemory = CK_UNAVAILABLE_INFORMATION;
    info->ulFreePublicMemory = CK_UNAVAILABLE_INFORMATION;
    info->ulTotalPrivateMemory = CK_UNAVAILABLE_INFORMATION;
    info->ulFreePrivateMemory = CK_UNAVAILABLE_INFORMATION;
    info->hardwareVersion.major = 0;
    info->hardwareVersion.minor = 1;
    info->firmwareVersion.major = 0;
    info->firmwareVersion.minor = 1;
}
