/* Loading the Custos OpenSSL provider (beside the default one) in the
 * default library context, once per process: the keyring, the server's and
 * the device's token keys all reach their tokens through it. */
#include <custos/keyring.h>

#include <limits.h>
#include <openssl/err.h>
#include <openssl/provider.h>
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
