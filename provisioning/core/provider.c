/* Loading the Custos OpenSSL provider (beside the default one) in the
 * default library context, once per process: the keyring, the server's and
 * the device's token keys all reach their tokens through it; and loading
 * such a key (or one from a PEM file) by name. */
#include <custos/keyring.h>

#include <errno.h>
#include <limits.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/provider.h>
#include <openssl/store.h>
#include <stdio.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static bool loaded;

cu_rc cu_keyring_provider_load(const char *search_path)
{
    char dir[PATH_MAX];
    cu_rc rc = CU_OK;
    pthread_mutex_lock(&lock);
    if (loaded)
        goto out;
    if (search_path == NULL)
        search_path = getenv("OPENSSL_MODULES");
    if (search_path == NULL) {
        /* build/bin/<program> -> build/lib/ossl-modules */
        ssize_t n = readlink("/proc/self/exe", dir, sizeof dir - 32);
        char *slash = n > 0 ? (dir[n] = 0, strrchr(dir, '/')) : NULL;
        if (slash != NULL) {
            strcpy(slash, "/../lib/ossl-modules");
            search_path = dir;
        }
    }
    if (search_path != NULL && !OSSL_PROVIDER_set_default_search_path(NULL, search_path)) {
        rc = cu_err_set(CU_E_CRYPTO, "cannot set the OpenSSL provider search path %s", search_path);
        goto out;
    }
    /* Loading one provider explicitly turns off the implicit default. */
    if (OSSL_PROVIDER_load(NULL, "default") == NULL || OSSL_PROVIDER_load(NULL, "custos") == NULL) {
        char buf[256] = "";
        ERR_error_string_n(ERR_peek_last_error(), buf, sizeof buf);
        ERR_clear_error();
        rc = cu_err_set(CU_E_CRYPTO, "cannot load the custos OpenSSL provider from %s: %s",
                        search_path ? search_path : "OpenSSL's module directory", buf);
        goto out;
    }
    loaded = true;
out:
    pthread_mutex_unlock(&lock);
    return rc;
}

/* rc with what, and OpenSSL's reason when it gave one (then forgotten). */
static cu_rc ossl_err(cu_rc rc, const char *what)
{
    char buf[256];
    unsigned long e = ERR_peek_last_error();
    ERR_error_string_n(e, buf, sizeof buf);
    ERR_clear_error();
    return e ? cu_err_set(rc, "%s: %s", what, buf) : cu_err_set(rc, "%s", what);
}

/* The first key of type (OSSL_STORE_INFO_PKEY or _PUBKEY) at uri. */
static cu_rc store_key(const char *uri, int type, EVP_PKEY **_key)
{
    EVP_PKEY *key = NULL;
    OSSL_STORE_CTX *sc = OSSL_STORE_open_ex(uri, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
    if (sc == NULL)
        return ossl_err(CU_E_CRYPTO, "opening the key URI");
    OSSL_STORE_expect(sc, type);
    while (key == NULL && !OSSL_STORE_eof(sc)) {
        OSSL_STORE_INFO *info = OSSL_STORE_load(sc);
        if (info == NULL && ERR_peek_last_error() != 0)
            break; /* a wrong PIN, a token gone: not at the end, but no further */
        if (info != NULL && OSSL_STORE_INFO_get_type(info) == type)
            key = type == OSSL_STORE_INFO_PKEY ? OSSL_STORE_INFO_get1_PKEY(info) : OSSL_STORE_INFO_get1_PUBKEY(info);
        OSSL_STORE_INFO_free(info);
    }
    OSSL_STORE_close(sc);
    if (key == NULL)
        return ossl_err(CU_E_OBJECT_NOT_FOUND,
                        type == OSSL_STORE_INFO_PKEY ? "no private key at the URI" : "no public key at the URI");
    ERR_clear_error();
    *_key = key;
    return CU_OK;
}

cu_rc cu_keyring_load_key(const char *spec, const char *search_path, bool want_private, EVP_PKEY **_key)
{
    if (spec == NULL || _key == NULL)
        return cu_err_set(CU_E_INVALID_ARG, "no key named");
    *_key = NULL;
    if (strncmp(spec, "pkcs11:", 7) != 0) {
        FILE *f = fopen(spec, "r");
        if (f == NULL)
            return cu_err_set_sys(CU_E_IO, errno, "cannot open key file %s", spec);
        EVP_PKEY *k = PEM_read_PrivateKey(f, NULL, NULL, NULL);
        fclose(f);
        if (k == NULL)
            return ossl_err(CU_E_CRYPTO, spec);
        *_key = k;
        return CU_OK;
    }
    cu_rc rc = cu_keyring_provider_load(search_path);
    if (rc != CU_OK)
        return rc;
    if (!want_private && store_key(spec, OSSL_STORE_INFO_PUBKEY, _key) == CU_OK)
        return CU_OK;
    return store_key(spec, OSSL_STORE_INFO_PKEY, _key);
}
