/* The state directory: what custosd keeps between runs and creates on
 * first start (keyring key, store, id scope, service policy key, CA, server
 * certificate, one linked hub). Layout in docs/custosd.md. */
#include "srv_int.h"

#include <custos/audit.h>
#include <custos/keyring.h>
#include <custos/pki.h>
#include <custos/token.h>

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define PATHLEN 4096

struct cu_srv_state {
    char dir[PATHLEN];
    char db[PATHLEN];          /* the store: an SQLite path or a PostgreSQL URI */
    char db_password[PATHLEN]; /* PostgreSQL: the password file, or "" */
    char ca_file[PATHLEN];
    char ca_key[PATHLEN];
    char cert_file[PATHLEN];
    char key_spec[PATHLEN];
    char audit_key_spec[PATHLEN];
    /* The audit key was not configured: in the service's token (made there
     * on first start, label CU_SRV_AUDIT_LABEL), or a file in STATE. */
    bool audit_in_token;
    char endpoint_file[PATHLEN];
    cu_keyring *inner;     /* the real keyring */
    cu_keyring *kr;        /* counting wrapper handed to stores */
    char id_scope[64];
    uint8_t policy_key[32];
    size_t policy_len;
    char *names[CU_SRV_MAX_NAMES + 3];
    size_t n_names;
    /* The id scope, policy key and hubs come from the store. A node whose
     * database is out at start leaves them to the first worker that
     * reaches it (cu_srv__state_load); until then nothing reads them. */
    atomic_bool loaded;
    pthread_mutex_t load_lock;
};

static cu_rc path_in(char out[PATHLEN], const char *dir, const char *name)
{
    if (snprintf(out, PATHLEN, "%s/%s", dir, name) >= PATHLEN)
        return cu_err_set(CU_E_INVALID_ARG, "state path too long");
    return CU_OK;
}

static bool exists(const char *p)
{
    struct stat sb;
    return stat(p, &sb) == 0;
}

/* The software keyring's key: 32 random bytes in a 0600 file. */
static cu_rc file_keyring(const char *path, bool create, cu_keyring **_out)
{
    uint8_t key[32];
    cu_rc rc = CU_OK;
    int fd = open(path, O_RDONLY);
    if (fd < 0 && errno == ENOENT && create) {
        if (RAND_bytes(key, sizeof key) != 1)
            return cu_err_set(CU_E_CRYPTO, "no randomness for the keyring key");
        fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
        if (fd < 0)
            return cu_err_set_sys(CU_E_IO, errno, "cannot create %s", path);
        ssize_t w = write(fd, key, sizeof key);
        if (fsync(fd) != 0 || w != (ssize_t)sizeof key)
            rc = cu_err_set_sys(CU_E_IO, errno, "cannot write %s", path);
        close(fd);
    } else if (fd < 0) {
        return cu_err_set_sys(CU_E_IO, errno, "cannot open the keyring key %s", path);
    } else {
        ssize_t r = read(fd, key, sizeof key);
        close(fd);
        if (r != (ssize_t)sizeof key)
            rc = cu_err_set(CU_E_STATE, "%s is not a 32-byte keyring key", path);
    }
    if (rc == CU_OK)
        rc = cu_keyring_software_new(key, sizeof key, _out);
    OPENSSL_cleanse(key, sizeof key);
    return rc;
}

static cu_rc ensure_scope(cu_srv_state *st, cu_store *s, const cu_srv_config *cfg, bool create)
{
    char *v = NULL;
    cu_rc rc = cu_store_setting_get(s, "idScope", &v);
    if (rc == CU_OK) {
        snprintf(st->id_scope, sizeof st->id_scope, "%s", v);
        free(v);
        if (cfg->id_scope != NULL && !cu_srv__ieq(cfg->id_scope, st->id_scope))
            return cu_err_set(CU_E_STATE, "the state in %s has id scope %s, the config says %s", st->dir,
                              st->id_scope, cfg->id_scope);
        return CU_OK;
    }
    if (rc != CU_E_OBJECT_NOT_FOUND || !create)
        return rc;
    if (cfg->id_scope != NULL) {
        size_t n = strlen(cfg->id_scope);
        if (n < 3 || n >= sizeof st->id_scope || strspn(cfg->id_scope,
            "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789") != n)
            return cu_err_set(CU_E_INVALID_ARG, "id-scope must be 3..63 letters and digits");
        snprintf(st->id_scope, sizeof st->id_scope, "%s", cfg->id_scope);
    } else {
        uint8_t r[4];
        if (RAND_bytes(r, sizeof r) != 1)
            return cu_err_set(CU_E_CRYPTO, "no randomness");
        snprintf(st->id_scope, sizeof st->id_scope, "0ne%02X%02X%02X%02X", r[0], r[1], r[2], r[3]);
    }
    return cu_store_setting_put(s, "idScope", st->id_scope);
}

static cu_rc ensure_policy(cu_srv_state *st, cu_store *s, bool create)
{
    static const char NAME[] = "policy:" CU_SRV_POLICY;
    char *wrapped = NULL;
    uint8_t *key = NULL;
    size_t len = 0;
    cu_rc rc = cu_store_setting_get(s, NAME, &wrapped);
    if (rc == CU_E_OBJECT_NOT_FOUND && create) {
        uint8_t fresh[32];
        if (RAND_bytes(fresh, sizeof fresh) != 1)
            return cu_err_set(CU_E_CRYPTO, "no randomness");
        rc = cu_keyring_wrap(st->kr, fresh, sizeof fresh, NAME, &wrapped);
        OPENSSL_cleanse(fresh, sizeof fresh);
        if (rc == CU_OK)
            rc = cu_store_setting_put(s, NAME, wrapped);
    }
    if (rc != CU_OK)
        goto cleanup;
    if ((rc = cu_keyring_unwrap(st->kr, wrapped, NAME, &key, &len)) != CU_OK)
        goto cleanup;
    if (len != sizeof st->policy_key) {
        rc = cu_err_set(CU_E_STATE, "the service policy key has the wrong size");
        goto cleanup;
    }
    memcpy(st->policy_key, key, len);
    st->policy_len = len;
cleanup:
    if (key != NULL)
        cu_keyring_secret_free(key, len);
    free(wrapped);
    return rc;
}

static cu_rc ensure_hubs(cu_store *s, const cu_srv_config *cfg, bool create)
{
    char why[256];
    cu_rc rc;
    for (size_t i = 0; i < cfg->n_hubs; i++) {
        cu_hub h = {.weight = 1, .apply = true};
        snprintf(h.name, sizeof h.name, "%s", cfg->hubs[i]);
        char *comma = strchr(h.name, ',');
        if (comma != NULL) {
            *comma = 0;
            h.weight = (unsigned)atoi(comma + 1);
        }
        if ((rc = cu_store_hub_put(s, &h, why, sizeof why)) != CU_OK)
            return cu_err_set(rc, "hub %s: %s", h.name, why);
    }
    if (!create)
        return CU_OK;
    cu_hub *hubs = NULL;
    size_t n = 0;
    if ((rc = cu_store_hub_list(s, &hubs, &n)) != CU_OK)
        return rc;
    free(hubs);
    if (n > 0)
        return CU_OK;
    /* One linked hub so that the first registration works out of the box. */
    cu_hub h = {.name = "hub1.custos.local", .weight = 1, .apply = true};
    return cu_store_hub_put(s, &h, why, sizeof why);
}

/* The token a key URI names: its path attributes but the object's
 * (object, id, type); *_query: its query ("?..."), or NULL. */
static cu_rc token_attrs(const char *key_uri, char out[PATHLEN], const char **_query)
{
    const char *q = strchr(key_uri, '?');
    size_t plen = q ? (size_t)(q - key_uri) : strlen(key_uri), o = 7;
    memcpy(out, "pkcs11:", 8);
    for (const char *a = key_uri + 7; a < key_uri + plen;) {
        const char *e = memchr(a, ';', (size_t)(key_uri + plen - a));
        size_t len = e ? (size_t)(e - a) : (size_t)(key_uri + plen - a);
        if (len > 0 && strncmp(a, "object=", 7) != 0 && strncmp(a, "id=", 3) != 0 && strncmp(a, "type=", 5) != 0) {
            if (o + len + 2 >= PATHLEN)
                return cu_err_set(CU_E_INVALID_ARG, "key URI too long");
            if (o > 7)
                out[o++] = ';';
            memcpy(out + o, a, len);
            o += len;
        }
        a += len + 1;
    }
    out[o] = 0;
    if (_query != NULL)
        *_query = q;
    return CU_OK;
}

/* The audit key's URI in the token a key URI names: the same token,
 * module and PIN source, with the object named CU_SRV_AUDIT_LABEL. */
static cu_rc token_audit_uri(const char *key_uri, char out[PATHLEN])
{
    char tok[PATHLEN];
    const char *q = NULL;
    cu_rc rc = token_attrs(key_uri, tok, &q);
    if (rc != CU_OK)
        return rc;
    if (snprintf(out, PATHLEN, "%s%sobject=%s;type=private%s", tok, tok[7] ? ";" : "", CU_SRV_AUDIT_LABEL,
                 q ? q : "") >= PATHLEN)
        return cu_err_set(CU_E_INVALID_ARG, "key URI too long");
    return CU_OK;
}

/* A PIN custosd's token refused at start-up (what: "keyring", "server-key",
 * "audit-key") as a token.login-failed record, in the store if it opens
 * (for its audit log only: the keyring may be what failed). Best effort:
 * the start fails either way. */
static void record_login_failed(const cu_srv_state *st, const char *what, const char *uri, const char *why)
{
    cu_store *s = NULL;
    char tok[PATHLEN], result[600];
    if (token_attrs(uri, tok, NULL) != CU_OK)
        tok[0] = 0;
    snprintf(result, sizeof result, "custosd's %s: %.500s", what, why);
    if ((cu_store_spec_is_postgres(st->db)
             ? cu_store_open_audit_only_spec(st->db, st->db_password[0] ? st->db_password : NULL, true, &s)
             : cu_store_open_audit_only(st->db, true, &s)) == CU_OK &&
        cu_audit_token_event_to(s, cu_srv__self_actor(), "login-failed", tok[0] ? tok : NULL, uri, result) !=
            CU_OK) {
        cu_srv__lf f[] = {CU_LF_S("error", cu_err_last()->msg)};
        cu_srv__log(CU_LOG_WARN, "cannot record the failed token login in the audit log", f, 1);
    }
    cu_store_close(s);
}

/* Logs in to the token of one of custosd's keys before the provider does:
 * a PIN the token refuses is recorded (above) and said plainly, at the cost
 * of that one attempt. Other failures are left to the provider to report. */
static cu_rc check_login(const cu_srv_state *st, const char *what, const char *uri)
{
    if (uri == NULL || strncmp(uri, "pkcs11:", 7) != 0)
        return CU_OK;
    cu_token_opts o = {0};
    cu_token *t = NULL;
    cu_rc rc = cu_token_open(uri, &o, &t);
    cu_token_unref(t);
    if (rc != CU_E_PIN_INCORRECT && rc != CU_E_PIN_LOCKED && rc != CU_E_PIN_MISSING) {
        cu_err_clear();
        return CU_OK;
    }
    char why[512];
    snprintf(why, sizeof why, "%s", cu_err_last()->msg);
    record_login_failed(st, what, uri, why);
    return cu_err_set(rc, "cannot log in to the token of the %s: %s", what, why);
}

/* The audit key in the service's token: the one there, or an EC P-256 key
 * made there now (sensitive, never extractable). */
static cu_rc ensure_token_audit_key(cu_srv_state *st)
{
    cu_token_opts o = {0};
    cu_object *key = NULL;
    cu_token *t = NULL;
    cu_rc rc = cu_object_open(st->audit_key_spec, &o, CU_CLASS_PRIVATE_KEY, &key);
    if (rc == CU_E_OBJECT_NOT_FOUND) {
        cu_err_clear();
        if ((rc = cu_token_open(st->audit_key_spec, &o, &t)) == CU_OK)
            rc = cu_token_keygen(t, CU_KEYGEN_EC_P256, CU_SRV_AUDIT_LABEL, NULL, 0, &key);
        if (rc == CU_OK) {
            cu_srv__lf f[] = {CU_LF_S("label", CU_SRV_AUDIT_LABEL)};
            cu_srv__log(CU_LOG_INFO, "audit key made in the service's token", f, 1);
        }
    }
    if (rc != CU_OK)
        rc = cu_err_set(rc, "the audit key in the service's token (%s): %s", CU_SRV_AUDIT_LABEL, cu_err_last()->msg);
    cu_object_free(key);
    cu_token_unref(t);
    return rc;
}

/* The key that signs audit chain heads: a pkcs11: URI (through the
 * provider), or a file made on first start. Its public half is written to
 * STATE/audit.pub so that `custos audit verify --pubkey` needs nothing else. */
static cu_rc ensure_audit_key(cu_srv_state *st, const char *dir)
{
    EVP_PKEY *key = NULL;
    char pub[PATHLEN];
    cu_rc rc = path_in(pub, dir, "audit.pub");
    if (rc != CU_OK)
        return rc;
    if (st->audit_in_token && (rc = ensure_token_audit_key(st)) != CU_OK)
        return rc;
    if (strncmp(st->audit_key_spec, "pkcs11:", 7) != 0 && !exists(st->audit_key_spec)) {
        if ((rc = cu_pki_keygen(&key)) != CU_OK || (rc = cu_pki_write_key(st->audit_key_spec, key)) != CU_OK)
            goto cleanup;
    } else if ((rc = cu_keyring_load_key(st->audit_key_spec, NULL, false, &key)) != CU_OK) {
        goto cleanup;
    }
    if (strncmp(st->audit_key_spec, "pkcs11:", 7) != 0) {
        /* Anyone who can read STATE can sign a rewritten chain. */
        cu_srv__lf f[] = {CU_LF_S("auditKey", st->audit_key_spec)};
        cu_srv__log(CU_LOG_WARN, "audit chain heads are signed by a key in a file, not in a token", f, 1);
    }
    FILE *f = fopen(pub, "w");
    if (f == NULL || !PEM_write_PUBKEY(f, key)) {
        rc = cu_err_set_sys(CU_E_IO, errno, "cannot write %s", pub);
        if (f != NULL)
            fclose(f);
        goto cleanup;
    }
    if (fclose(f) != 0)
        rc = cu_err_set_sys(CU_E_IO, errno, "cannot write %s", pub);
cleanup:
    EVP_PKEY_free(key);
    return rc;
}

static cu_rc ensure_certs(cu_srv_state *st, bool create)
{
    EVP_PKEY *ca_key = NULL, *key = NULL;
    X509 *ca = NULL, *cert = NULL;
    cu_rc rc = CU_OK;
    bool key_is_file = strncmp(st->key_spec, "pkcs11:", 7) != 0;

    if (!exists(st->ca_file)) {
        if (!create)
            return cu_err_set(CU_E_STATE, "%s is missing (start custosd once to create it)", st->ca_file);
        char cn[128];
        snprintf(cn, sizeof cn, "Custos CA %s", st->id_scope);
        cu_pki_spec spec = {.cn = cn, .org = "Custos", .ca = true, .pathlen = 0,
                            .not_before = -3600, .not_after = 3650L * 86400};
        if ((rc = cu_pki_keygen(&ca_key)) != CU_OK || (rc = cu_pki_issue(&spec, ca_key, NULL, ca_key, &ca)) != CU_OK ||
            (rc = cu_pki_write_key(st->ca_key, ca_key)) != CU_OK ||
            (rc = cu_pki_write_cert(st->ca_file, ca, false)) != CU_OK)
            goto cleanup;
    }
    if (!create) /* clients of the state (service info, bench) need only the CA */
        goto cleanup;
    if (key_is_file && !exists(st->key_spec)) {
        if ((rc = cu_pki_keygen(&key)) != CU_OK || (rc = cu_pki_write_key(st->key_spec, key)) != CU_OK)
            goto cleanup;
        unlink(st->cert_file); /* a new key needs a new certificate */
    }
    bool need = true;
    if (exists(st->cert_file) && cu_pki_read_cert(st->cert_file, &cert) == CU_OK)
        need = !cu_srv__srv_cert_covers(cert, (const char *const *)st->names, st->n_names);
    if (!need)
        goto cleanup;
    /* (Re)issue: first start, a new host name, or expiry. */
    X509_free(cert);
    cert = NULL;
    if (ca == NULL && (rc = cu_pki_read_cert(st->ca_file, &ca)) != CU_OK)
        goto cleanup;
    if (ca_key == NULL && (rc = cu_pki_read_key(st->ca_key, &ca_key)) != CU_OK) {
        rc = cu_err_set(rc, "the server certificate must be (re)issued but the CA key %s is unavailable",
                        st->ca_key);
        goto cleanup;
    }
    if (key == NULL && (rc = cu_keyring_load_key(st->key_spec, NULL, false, &key)) != CU_OK)
        goto cleanup;
    if ((rc = cu_srv__srv_issue_server_cert(key, ca, ca_key, (const char *const *)st->names, st->n_names, &cert)) !=
            CU_OK ||
        (rc = cu_pki_write_cert(st->cert_file, cert, false)) != CU_OK)
        goto cleanup;
    rc = cu_pki_write_cert(st->cert_file, ca, true); /* send the chain */
cleanup:
    EVP_PKEY_free(ca_key);
    EVP_PKEY_free(key);
    X509_free(ca);
    X509_free(cert);
    return rc;
}

/* What the service keeps in its store (st->load_lock held, or no other
 * thread yet). */
static cu_rc load_unlocked(cu_srv_state *st, cu_store *s, const cu_srv_config *cfg, bool create)
{
    cu_rc rc;
    if ((rc = ensure_scope(st, s, cfg, create)) != CU_OK || (rc = ensure_policy(st, s, create)) != CU_OK ||
        (rc = ensure_hubs(s, cfg, create)) != CU_OK)
        return rc;
    atomic_store(&st->loaded, true);
    return CU_OK;
}

cu_rc cu_srv__state_load(cu_srv_state *st, const cu_srv_config *cfg, cu_store *s)
{
    if (atomic_load(&st->loaded))
        return CU_OK;
    pthread_mutex_lock(&st->load_lock);
    cu_rc rc = atomic_load(&st->loaded) ? CU_OK : load_unlocked(st, s, cfg, true);
    pthread_mutex_unlock(&st->load_lock);
    return rc;
}

bool cu_srv__state_loaded(const cu_srv_state *st) { return atomic_load(&st->loaded); }

static cu_rc add_name(cu_srv_state *st, const char *n)
{
    for (size_t i = 0; i < st->n_names; i++)
        if (cu_srv__ieq(st->names[i], n))
            return CU_OK;
    if (st->n_names >= sizeof st->names / sizeof st->names[0])
        return cu_err_set(CU_E_INVALID_ARG, "too many host names");
    if ((st->names[st->n_names] = strdup(n)) == NULL)
        return cu_err_set(CU_E_NOMEM, "out of memory");
    st->n_names++;
    return CU_OK;
}

/* mkdir -p: the missing parents with the usual mode (umask applies), the
 * state directory itself 0700. */
static int make_dirs(const char *dir)
{
    char p[PATHLEN];
    size_t n = strlen(dir);
    if (n >= sizeof p) {
        errno = ENAMETOOLONG;
        return -1;
    }
    memcpy(p, dir, n + 1);
    for (char *q = p + 1; *q; q++) {
        if (*q != '/')
            continue;
        *q = 0;
        if (mkdir(p, 0755) != 0 && errno != EEXIST)
            return -1;
        *q = '/';
    }
    return mkdir(p, 0700) != 0 && errno != EEXIST ? -1 : 0;
}

cu_rc cu_srv_state_open(const cu_srv_config *cfg, bool create, cu_srv_state **_out)
{
    cu_srv_state *st = calloc(1, sizeof *st);
    cu_store *s = NULL;
    cu_rc rc;
    if (st == NULL)
        return cu_err_set(CU_E_NOMEM, "out of memory");
    pthread_mutex_init(&st->load_lock, NULL);
    const char *dir = cfg->state_dir ? cfg->state_dir : "./var";
    snprintf(st->dir, sizeof st->dir, "%s", dir);
    if (create && make_dirs(dir) != 0) {
        rc = cu_err_set_sys(CU_E_IO, errno, "cannot create the state directory %s", dir);
        goto fail;
    }
    if (!exists(dir)) {
        rc = cu_err_set(CU_E_STATE, "no state directory %s (start custosd once to create it)", dir);
        goto fail;
    }
    if ((rc = path_in(st->ca_file, dir, "ca.crt")) != CU_OK || (rc = path_in(st->ca_key, dir, "ca.key")) != CU_OK ||
        (rc = path_in(st->endpoint_file, dir, "endpoint")) != CU_OK)
        goto fail;
    if (cfg->server_cert)
        snprintf(st->cert_file, sizeof st->cert_file, "%s", cfg->server_cert);
    else if ((rc = path_in(st->cert_file, dir, "server.crt")) != CU_OK)
        goto fail;
    if (cfg->server_key)
        snprintf(st->key_spec, sizeof st->key_spec, "%s", cfg->server_key);
    else if ((rc = path_in(st->key_spec, dir, "server.key")) != CU_OK)
        goto fail;
    /* As on the command line (custos/state.h): the config, else
     * $CUSTOS_STORE, else STATE/custos.db. */
    const char *spec = cfg->store, *pwf = cfg->store_password_file;
    if (spec == NULL && getenv("CUSTOS_STORE") != NULL && *getenv("CUSTOS_STORE") != 0)
        spec = getenv("CUSTOS_STORE");
    if (pwf == NULL && getenv("CUSTOS_STORE_PASSWORD_FILE") != NULL && *getenv("CUSTOS_STORE_PASSWORD_FILE") != 0)
        pwf = getenv("CUSTOS_STORE_PASSWORD_FILE");
    if (spec != NULL) {
        bool pg = cu_store_spec_is_postgres(spec);
        if (!pg && strncmp(spec, "sqlite:", 7) != 0) {
            /* Not echoed: a URI may carry a password. */
            rc = cu_err_set(CU_E_UNSUPPORTED, "store: expected sqlite:PATH or postgresql://...");
            goto fail;
        }
        if (snprintf(st->db, sizeof st->db, "%s", pg ? spec : spec + 7) >= (int)sizeof st->db) {
            rc = cu_err_set(CU_E_INVALID_ARG, "store: too long");
            goto fail;
        }
        if (pwf != NULL)
            snprintf(st->db_password, sizeof st->db_password, "%s", pwf);
    } else if ((rc = path_in(st->db, dir, "custos.db")) != CU_OK) {
        goto fail;
    }
    for (size_t i = 0; i < cfg->n_names; i++)
        if ((rc = add_name(st, cfg->names[i])) != CU_OK)
            goto fail;
    if (!create && cfg->n_names == 0) {
        /* A client of the state (service info, token, bench) uses the host
         * name the running custosd announced. */
        char ep[300] = "", host[256];
        FILE *f = fopen(st->endpoint_file, "r");
        if (f != NULL) {
            if (fgets(ep, sizeof ep, f) != NULL && sscanf(ep, "https://%255[^:/]", host) == 1 &&
                (rc = add_name(st, host)) != CU_OK) {
                fclose(f);
                goto fail;
            }
            fclose(f);
        }
    }
    if ((rc = add_name(st, "localhost")) != CU_OK || (rc = add_name(st, "127.0.0.1")) != CU_OK ||
        (rc = add_name(st, "::1")) != CU_OK)
        goto fail;

    /* The same rule as the command line (custos/state.h): a pkcs11: URI in
     * the config or $CUSTOS_KEYRING_URI, else the software key file. */
    const char *kuri = cfg->keyring;
    if (kuri == NULL && getenv("CUSTOS_KEYRING_URI") != NULL && *getenv("CUSTOS_KEYRING_URI") != 0)
        kuri = getenv("CUSTOS_KEYRING_URI");
    if (create && ((rc = check_login(st, "keyring", kuri)) != CU_OK ||
                   (rc = check_login(st, "server-key", st->key_spec)) != CU_OK ||
                   (rc = check_login(st, "audit-key", cfg->audit_key)) != CU_OK))
        goto fail;
    if (kuri != NULL && strncmp(kuri, "pkcs11:", 7) == 0) {
        if ((rc = cu_keyring_provider_load(cfg->provider_path)) != CU_OK ||
            (rc = cu_keyring_evp_mac_new(NULL, "provider=custos", kuri, &st->inner)) != CU_OK)
            goto fail;
    } else {
        char kp[PATHLEN];
        if (cfg->keyring != NULL)
            snprintf(kp, sizeof kp, "%s", cfg->keyring);
        else if ((rc = path_in(kp, dir, "keyring.key")) != CU_OK)
            goto fail;
        if ((rc = file_keyring(kp, create, &st->inner)) != CU_OK)
            goto fail;
    }
    if ((rc = cu_srv__metrics_keyring(st->inner, &st->kr)) != CU_OK)
        goto fail;
    /* Not configured: in the service's token when it has one (the keyring's,
     * else the server key's), else STATE/audit.key. An audit.key made by an
     * earlier version keeps signing, so that the heads it signed still
     * verify with STATE/audit.pub. */
    {
        const char *tok = kuri != NULL && strncmp(kuri, "pkcs11:", 7) == 0 ? kuri
                          : strncmp(st->key_spec, "pkcs11:", 7) == 0     ? st->key_spec
                                                                          : NULL;
        if (cfg->audit_key)
            snprintf(st->audit_key_spec, sizeof st->audit_key_spec, "%s", cfg->audit_key);
        else if ((rc = path_in(st->audit_key_spec, dir, "audit.key")) != CU_OK)
            goto fail;
        else if (tok != NULL && !exists(st->audit_key_spec)) {
            if ((rc = token_audit_uri(tok, st->audit_key_spec)) != CU_OK)
                goto fail;
            st->audit_in_token = true;
        }
    }
    /* The keyring's uses are the service's key uses (audit log). */
    {
        char kname[PATHLEN];
        if (kuri != NULL && strncmp(kuri, "pkcs11:", 7) == 0)
            snprintf(kname, sizeof kname, "%s", kuri);
        else if (cfg->keyring != NULL)
            snprintf(kname, sizeof kname, "%s", cfg->keyring);
        else if ((rc = path_in(kname, dir, "keyring.key")) != CU_OK)
            goto fail;
        cu_srv__keyuse_watch_keyring(st->kr, kname);
    }
    if ((strncmp(st->key_spec, "pkcs11:", 7) == 0 || strncmp(st->audit_key_spec, "pkcs11:", 7) == 0) &&
        (rc = cu_keyring_provider_load(cfg->provider_path)) != CU_OK)
        goto fail;
    if ((rc = cu_srv_state_store_open(st, &s)) == CU_OK) {
        if ((rc = load_unlocked(st, s, cfg, create)) != CU_OK)
            goto fail;
    } else if (!create || !cu_srv__state_shared_store(st) || cu_store_last_http_status() != 503) {
        goto fail;
    } else if (!exists(st->ca_file)) {
        /* The id scope names the CA made now, and the scope, policy key and
         * hub are made in the store: a first start needs the database. */
        char why[300];
        snprintf(why, sizeof why, "%.299s", cu_err_last()->msg);
        rc = cu_err_set(rc, "first start in %s: the database must be reachable to create the id scope, "
                            "the service policy key and the hub in it (%s)", dir, why);
        goto fail;
    }
    /* else: a node that has run (or joined) before starts without its
     * database and loads the rest when it answers. */
    if ((rc = ensure_certs(st, create)) != CU_OK || (create && (rc = ensure_audit_key(st, dir)) != CU_OK))
        goto fail;
    cu_store_close(s);
    *_out = st;
    return CU_OK;
fail:
    cu_store_close(s);
    cu_srv_state_free(st);
    return rc;
}

void cu_srv_state_free(cu_srv_state *st)
{
    if (st == NULL)
        return;
    cu_keyring_free(st->kr);
    cu_keyring_free(st->inner);
    for (size_t i = 0; i < st->n_names; i++)
        free(st->names[i]);
    OPENSSL_cleanse(st->policy_key, sizeof st->policy_key);
    pthread_mutex_destroy(&st->load_lock);
    free(st);
}

const char *cu_srv_state_id_scope(const cu_srv_state *st) { return st->id_scope; }
const char *cu_srv_state_dir(const cu_srv_state *st) { return st->dir; }
cu_keyring *cu_srv_state_keyring(cu_srv_state *st) { return st->kr; }
const char *cu_srv_state_ca_file(const cu_srv_state *st) { return st->ca_file; }
const char *cu_srv_state_cert_file(const cu_srv_state *st) { return st->cert_file; }
const char *cu_srv_state_key_spec(const cu_srv_state *st) { return st->key_spec; }
const char *cu_srv_state_audit_key_spec(const cu_srv_state *st) { return st->audit_key_spec; }
const char *cu_srv_state_host(const cu_srv_state *st) { return st->names[0]; }
void *cu_srv_state_libctx(cu_srv_state *st) { (void)st; return NULL; }

size_t cu_srv_state_names(const cu_srv_state *st, const char *const **_names)
{
    *_names = (const char *const *)st->names;
    return st->n_names;
}

const uint8_t *cu_srv_state_policy_key(const cu_srv_state *st, size_t *_len)
{
    *_len = st->policy_len;
    return st->policy_key;
}

cu_rc cu_srv_state_store_open(cu_srv_state *st, cu_store **_out)
{
    if (cu_store_spec_is_postgres(st->db))
        return cu_store_open_spec(st->db, st->db_password[0] ? st->db_password : NULL, st->kr, _out);
    return cu_store_open_sqlite(st->db, st->kr, _out);
}

bool cu_srv__state_shared_store(const cu_srv_state *st) { return cu_store_spec_is_postgres(st->db); }

/* custosd writes where it listens, so `custos service info` can say. */
cu_rc cu_srv__state_write_endpoint(cu_srv_state *st, const char *endpoint)
{
    char tmp[PATHLEN + 8];
    snprintf(tmp, sizeof tmp, "%s.tmp", st->endpoint_file);
    FILE *f = fopen(tmp, "w");
    if (f == NULL)
        return cu_err_set_sys(CU_E_IO, errno, "cannot write %s", tmp);
    fprintf(f, "%s\n", endpoint);
    if (fclose(f) != 0 || rename(tmp, st->endpoint_file) != 0)
        return cu_err_set_sys(CU_E_IO, errno, "cannot write %s", st->endpoint_file);
    return CU_OK;
}

cu_rc cu_srv_info_get(cu_srv_state *st, cu_srv_info *_info)
{
    memset(_info, 0, sizeof *_info);
    snprintf(_info->id_scope, sizeof _info->id_scope, "%s", st->id_scope);
    snprintf(_info->ca_file, sizeof _info->ca_file, "%s", st->ca_file);
    snprintf(_info->state_dir, sizeof _info->state_dir, "%s", st->dir);
    FILE *f = fopen(st->endpoint_file, "r");
    if (f == NULL || fgets(_info->endpoint, sizeof _info->endpoint, f) == NULL)
        snprintf(_info->endpoint, sizeof _info->endpoint, "https://%s:8443", st->names[0]);
    if (f != NULL)
        fclose(f);
    _info->endpoint[strcspn(_info->endpoint, "\r\n")] = 0;
    unsigned char b64[64];
    EVP_EncodeBlock(b64, st->policy_key, (int)st->policy_len);
    snprintf(_info->connection_string, sizeof _info->connection_string,
             "HostName=%s;SharedAccessKeyName=%s;SharedAccessKey=%s", st->names[0], CU_SRV_POLICY, b64);
    OPENSSL_cleanse(b64, sizeof b64);
    return CU_OK;
}
